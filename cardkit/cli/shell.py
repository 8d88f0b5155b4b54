"""``cardkit shell``: an interactive APDU shell over the script language (``cardkit.script``).

Every line is a script statement (hex APDUs, select, read, verify, open, ls/cd/cat, …), so a session can be
saved as a script with ``save FILE`` and run again with ``cardkit script run FILE``. Shell-only commands:
``help``, ``save FILE``, ``history``, ``vars``, ``exit``. With a terminal: tab completion (commands, files of
the current DF and of the profile, ``open`` parameters and key names) and a history file (0600); lines with
secret data are kept out of both. With piped input the lines are read one by one; the exit code is that of the
last failing line (0 when every line succeeded).
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cardkit.cli.main import Options
from cardkit.cli.script import event_printer, open_keys, parse_vars, script_session, tty_prompt

if TYPE_CHECKING:
    from cardkit.script.runner import ScriptRunner

SHELL_COMMANDS = {
    "help": "help [COMMAND] — this list, or the syntax of one command",
    "save": "save FILE — write the lines that ran successfully as a script (0600)",
    "history": "history — the lines of this session",
    "vars": "vars — variables (secret ones are not shown)",
}
HELP = {
    "apdu": "HEX [=> PATTERN] or apdu HEX — send an APDU (61xx/6Cxx completed automatically in the shell)",
    "select": "select MF|..|FID|aid:HEX|ef:FID|df:FID|/PATH|NAME [fci=fcp|fci|none] [=> PATTERN]",
    "read": "read binary [OFFSET [LENGTH]] | read record N [=> PATTERN]",
    "verify": "verify pin REF ${NAME}|env:VAR|prompt|status [format=ascii|bcd|hex]",
    "open": "open scp03|scp02 keyset=NAME [level=01] [kvn=HEX] | open bac mrz=SOURCE | open sm key=NAME "
            "[ref=00] [alg=..] [diversify=serial,HEX]",
    "auth": "auth external key=NAME ref=HEX [alg=..] [diversify=..] — GET CHALLENGE + EXTERNAL AUTHENTICATE",
    "close": "close — drop the open secure channels",
    "reset": "reset [warm|cold] — reset the card (secure channels end)",
    "ls": "ls [scan FROM-TO] — files of the current DF (probed with SELECT)",
    "cd": "cd TARGET — select a DF", "cat": "cat TARGET — read and decode a whole EF", "pwd": "pwd — current DF",
    "profile": "profile NAME — use a profile's file and field names", "echo": "echo TEXT",
    "set": "set NAME=VALUE|env:VAR|prompt", "option": "option get-response=auto|manual",
    "include": "include FILE — run a script", "exit": "exit — leave the shell",
}
_OPEN_KINDS = ("bac", "scp02", "scp03", "sm")


class Completer:
    """Tab completion for the shell (pure: :meth:`candidates` takes the line up to the cursor)."""

    def __init__(self, runner: ScriptRunner) -> None:
        self.runner = runner
        self._matches: list[str] = []

    def _key_names(self) -> list[str]:
        names = getattr(self.runner.keystore, "names", None)
        if not callable(names):
            return []
        try:
            return sorted({str(n[0] if isinstance(n, tuple) else n) for n in names()})
        except Exception:  # a keystore that cannot list (token gone, …) just completes nothing
            return []

    def _files(self) -> list[str]:
        fs = self.runner.fs
        out = {"..", "MF"}
        out |= set(fs.seen.get(tuple(fs.cwd), {}))
        here = fs.profile_path()
        if fs.profile is not None:
            for spec in fs.profile.files:
                if here is not None and spec.parent == here:
                    out.add(spec.fid.hex().upper())
                    out.add(spec.path.rsplit("/", 1)[-1])
                if spec.is_df and spec.name:
                    out.add(f"aid:{spec.name.hex().upper()}")
        return sorted(out)

    def candidates(self, line: str) -> list[str]:
        """Completions for the last word of ``line`` (the text before the cursor)."""
        from cardkit.script.parser import KEYWORDS, OPEN_PARAMS

        words = line.split()
        fresh = not words or line[-1:].isspace()
        prefix = "" if fresh else words[-1]
        index = len(words) if fresh else len(words) - 1
        if index == 0:
            pool: Iterable[str] = sorted((KEYWORDS - {"quit"}) | set(SHELL_COMMANDS))
        else:
            cmd = words[0].lower()
            pool = []
            if cmd in ("select", "cd", "cat") and index == 1:
                pool = self._files()
            elif cmd == "open" and index == 1:
                pool = _OPEN_KINDS
            elif cmd == "open" and index >= 2 and words[1].lower() in OPEN_PARAMS:
                if prefix.startswith(("keyset=", "key=")):
                    key, _, _ = prefix.partition("=")
                    pool = [f"{key}={n}" for n in self._key_names()]
                else:
                    pool = [f"{p}=" for p in sorted(OPEN_PARAMS[words[1].lower()])]
            elif cmd == "auth":
                pool = ["external"] if index == 1 else (
                    [f"key={n}" for n in self._key_names()] if prefix.startswith("key=") else ["key=", "ref=",
                                                                                               "alg=", "diversify="])
            elif cmd == "verify":
                pool = {1: ["pin"], 3: ["prompt", "status", "env:"]}.get(index, [])
            elif cmd == "read" and index == 1:
                pool = ["binary", "record"]
            elif cmd == "reset" and index == 1:
                pool = ["cold", "warm"]
            elif cmd == "option" and index == 1:
                pool = ["get-response=auto", "get-response=manual"]
            elif cmd == "ls" and index == 1:
                pool = ["scan"]
            elif cmd in ("include", "save") and index == 1:
                pool = [p + ("/" if os.path.isdir(p) else "") for p in glob.glob(prefix + "*")]
            elif cmd == "profile" and index == 1:
                pool = [p.parent.name for p in Path("applets").glob("*/profile.toml")]
            elif cmd == "help" and index == 1:
                pool = sorted(set(HELP) | set(SHELL_COMMANDS))
        low = prefix.lower()
        return [c for c in pool if c.lower().startswith(low)]

    def complete(self, text: str, state: int) -> str | None:  # pragma: no cover - called by readline (pty test)
        if state == 0:
            import readline

            self._matches = self.candidates(readline.get_line_buffer()[: readline.get_endidx()])
        return self._matches[state] if state < len(self._matches) else None


def _secret_line(line: str) -> bool:
    """A raw APDU line whose data is secret (VERIFY, PUT KEY …): kept out of history and saved scripts."""
    from cardkit.script.parser import Location as Loc
    from cardkit.script.parser import ScriptError, parse_line
    from cardkit.script.tracefile import SECRET_INS

    try:
        stmt = parse_line(line, Loc("<shell>", 0))
    except ScriptError:
        return False
    if stmt is None or stmt.kind != "apdu":
        return False
    text = stmt.args[0]
    return len(text) >= 4 and text[2:4].upper() in {f"{i:02X}" for i in SECRET_INS} and len(text) > 10


class _Input:
    """Lines from a terminal (readline prompt) or a pipe."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive

    def read(self, prompt: str) -> str | None:
        if self.interactive:
            try:
                return input(prompt)
            except EOFError:
                click.echo()
                return None
        line = sys.stdin.readline()
        return None if not line else line.rstrip("\n")


def _setup_readline(completer: Completer, history: str | None) -> Callable[[], None]:
    try:
        import readline
    except ImportError:  # pragma: no cover - Python built without readline
        return lambda: None
    readline.set_completer(completer.complete)
    readline.set_completer_delims(" \t")
    readline.parse_and_bind("tab: complete")
    if history and os.path.exists(history):
        readline.read_history_file(history)

    def save() -> None:
        if history:
            fd = os.open(history, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
            readline.write_history_file(history)
            os.chmod(history, 0o600)

    return save


def _forget_last_history_line() -> None:
    try:
        import readline

        n = readline.get_current_history_length()
        if n:
            readline.remove_history_item(n - 1)
    except (ImportError, ValueError):  # pragma: no cover
        pass


@click.command()
@click.option("--keys", metavar="FILE|URI", help="Keystore for 'open'/'auth' (file:, store:, pkcs11: or a path).")
@click.option("--allow-test-keys", is_flag=True, help="Allow a TEST key file (never for real cards).")
@click.option("--profile", "profile_name", metavar="NAME", help="Profile for file and field names (e.g. ssc).")
@click.option("--var", "var_pairs", multiple=True, metavar="NAME=VALUE", help="Set a variable (not a secret).")
@click.option("--var-file", type=click.Path(exists=True, dir_okay=False), help="NAME=VALUE lines; may hold PINs.")
@click.option("--show-data", is_flag=True, help="Print file contents in full (they may be personal data).")
@click.option("--wire", is_flag=True, help="Also show each APDU as sent on the wire (after secure messaging).")
@click.option("--record", metavar="FILE", help="Record the full raw session (secrets included; written 0600).")
@click.option("--history", "history_file", metavar="FILE", help="History file (default $CARDKIT_HOME/shell_history).")
@click.option("--no-history", is_flag=True, help="Keep no history file.")
@click.pass_obj
def shell(opts: Options, keys: str | None, allow_test_keys: bool, profile_name: str | None,
          var_pairs: tuple[str, ...], var_file: str | None, show_data: bool, wire: bool, record: str | None,
          history_file: str | None, no_history: bool) -> None:
    """Interactive APDU shell: the script language line by line, with completion, history and 'save FILE'.

    \b
    Examples:
      cardkit --reader virtual:card.json shell --profile ssc
        cardkit /> cd SSSE
        cardkit /SSSE> ls
        cardkit /SSSE> cat EF05
        cardkit /SSSE> verify pin 81 prompt
        cardkit /SSSE> save session.apdu
      printf 'select aid:A000000151000000\\n80CA9F7F00\\n' | cardkit --reader virtual shell
    """
    from cardkit.cli.errors import exit_code_for, one_line
    from cardkit.errors import CardkitError
    from cardkit.profiles.model import find_profile, load_profile
    from cardkit.readers import cardkit_home
    from cardkit.script.parser import parse_text
    from cardkit.script.runner import ScriptRunner

    interactive = sys.stdin.isatty()
    variables = parse_vars(var_pairs, var_file)
    keystore = open_keys(keys, allow_test_keys)
    profile = load_profile(find_profile(profile_name)) if profile_name else None
    collected: list[dict[str, Any]] = []
    lines_ok: list[str] = []
    all_lines: list[str] = []
    last_error = 0
    with script_session(opts, record=record) as (session, _):
        runner = ScriptRunner(session, keystore=keystore, variables=variables, prompt=tty_prompt(),
                              on_event=event_printer(opts, collected, headers=False, failures_too=False,
                                                     json_lines=True),
                              show_data=show_data, show_wire=wire, profile=profile, get_response="auto")
        completer = Completer(runner)
        save_history: Callable[[], None] = lambda: None  # noqa: E731
        if interactive:
            history = None if no_history else (history_file or str(cardkit_home() / "shell_history"))
            save_history = _setup_readline(completer, history)
            click.echo(f"cardkit shell on {session.transport.name}: 'help' lists the commands, 'exit' leaves")
        source = _Input(interactive)
        n = 0
        try:
            while True:
                try:
                    line = source.read(f"cardkit {runner.fs.display()}> ")
                except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line, as shells do
                    click.echo("^C")
                    continue
                if line is None:
                    break
                while line.rstrip().endswith("\\"):
                    more = source.read("... ")
                    if more is None:
                        break
                    line = line.rstrip()[:-1] + " " + more
                n += 1
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                secret = _secret_line(text)
                if secret and interactive:
                    _forget_last_history_line()
                all_lines.append("# (APDU with secret data)" if secret else text)
                word = text.split()[0].lower()
                try:
                    if word in SHELL_COMMANDS:
                        _shell_command(word, text, runner, lines_ok, all_lines, profile_name)
                        continue
                    statements = parse_text(text, "<shell>", first_line=n)
                    stop = False
                    for stmt in statements:
                        if not runner.execute(stmt):
                            stop = True
                            break
                    if not secret:
                        lines_ok.append(text)
                    if stop:
                        break
                except (CardkitError, ValueError, OSError) as exc:
                    last_error = exit_code_for(exc)
                    click.echo(f"error: {one_line(exc)}", err=True)
                except KeyboardInterrupt:
                    click.echo("interrupted", err=True)
        finally:
            save_history()
    if last_error and not interactive:
        raise click.exceptions.Exit(last_error)


def _shell_command(word: str, text: str, runner: ScriptRunner, lines_ok: list[str], all_lines: list[str],
                   profile_name: str | None) -> None:
    from cardkit.script.parser import ScriptError

    rest = text.split(None, 1)[1].strip() if len(text.split(None, 1)) > 1 else ""
    if word == "help":
        if rest:
            entry = HELP.get(rest.lower()) or SHELL_COMMANDS.get(rest.lower())
            if entry is None:
                raise ScriptError(f"no command {rest!r} (type 'help')")
            click.echo(entry)
            return
        for name in sorted(set(HELP) | set(SHELL_COMMANDS)):
            click.echo(f"  {(HELP.get(name) or SHELL_COMMANDS[name])}")
        return
    if word == "history":
        for i, line in enumerate(all_lines, start=1):
            click.echo(f"{i:4}  {line}")
        return
    if word == "vars":
        for name, var in sorted(runner.vars.items()):
            click.echo(f"  {name} = {runner.display_value(var)}  ({var.origin})")
        return
    if not rest:
        raise ScriptError("save needs a file name")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"# cardkit shell session, saved {stamp}", "option get-response=auto"]
    if profile_name:
        body.append(f"profile {profile_name}")
    body += lines_ok
    fd = os.open(rest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(body) + "\n")
    click.echo(f"saved {len(lines_ok)} lines to {rest}")
