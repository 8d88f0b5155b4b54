"""``cardkit script run`` (APDU scripts) and ``cardkit trace show|to-replay`` (trace files)."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import click

from cardkit.cli.main import Options
from cardkit.fsutil import open_private_append

if TYPE_CHECKING:
    from cardkit.keys.store import Keystore
    from cardkit.script.runner import Event, Variable
    from cardkit.session import CardSession
    from cardkit.transport.replay import RecordingTransport, ReplayTransport

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# ------------------------------------------------------------------------------------------ shared helpers


def tty_prompt() -> Callable[[str], str] | None:
    """A no-echo prompt when stdin is a terminal, else None (the runner then asks for env:/--var-file)."""
    if not sys.stdin.isatty():
        return None

    def ask(label: str) -> str:
        return str(click.prompt(label, hide_input=True, err=True))

    return ask


def parse_vars(pairs: tuple[str, ...], var_file: str | None) -> dict[str, Variable]:
    """``--var NAME=VALUE`` (origin argv: never a secret source) and ``--var-file`` lines (secret-capable)."""
    from cardkit.script.parser import Location, ScriptError
    from cardkit.script.runner import Variable

    out: dict[str, Variable] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not _NAME.match(name):
            raise click.BadParameter(f"expected NAME=VALUE, got {name!r}…", param_hint="--var")
        out[name] = Variable(value, "argv")
    if var_file:
        mode = os.stat(var_file).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            click.echo(f"warning: {var_file} is readable by others (chmod 600 it: it may hold PINs)", err=True)
        with open(var_file, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                name, eq, value = text.partition("=")
                name = name.strip()
                if not eq or not _NAME.match(name):
                    raise ScriptError("expected NAME=VALUE", Location(var_file, n))
                out[name] = Variable(value.strip(), "file", secret=True)
    return out


def open_keys(keys: str | None, allow_test_keys: bool) -> Keystore | None:
    """A keystore from ``--keys``: a key URI (file:, store:, pkcs11:) or a TEST key file path."""
    if not keys:
        return None
    try:
        from cardkit.keys.uri import open_keystore
    except ImportError:  # pragma: no cover - the keystore URIs arrive with the key-custody work
        from cardkit.keys.store import TestKeyFile

        return TestKeyFile(keys.removeprefix("file:"), allow_test_keys=allow_test_keys)
    uri = keys if re.match(r"(file|store|pkcs11):", keys) else f"file:{keys}"
    return open_keystore(uri, allow_test_keys=allow_test_keys, prompt=tty_prompt())


@contextmanager
def script_session(opts: Options, *, replay: str | None = None, record: str | None = None,
                   extended: bool = False) -> Iterator[tuple[CardSession, ReplayTransport | None]]:
    """A session on ``--reader`` (or on the recording ``replay``), optionally recording a full transcript."""
    from cardkit.readers import open_transport
    from cardkit.session import CardSession
    from cardkit.transport.replay import RecordingTransport, ReplayTransport

    sink: IO[str] | None = None
    if opts.trace:
        sink = open_private_append(opts.trace)
    replayer: ReplayTransport | None = None
    recorder: RecordingTransport | None = None
    try:
        transport: Any
        if replay:
            transport = replayer = ReplayTransport(replay)
        else:
            transport = open_transport(opts.reader)
        if record:
            transport = recorder = RecordingTransport(transport)
        session = CardSession(transport, extended=extended, trace=sink)
        try:
            yield session, replayer
        finally:
            session.close()
            if recorder is not None:
                recorder.save(record)  # type: ignore[arg-type]
    finally:
        if sink is not None:
            sink.close()


def event_printer(opts: Options, collected: list[dict[str, Any]], *, headers: bool, failures_too: bool,
                  json_lines: bool = False) -> Callable[[Event], None]:
    """Print events as they come (or, with ``--json``, collect them — or print one JSON object per line)."""

    def on_event(event: Event) -> None:
        if opts.json:
            record = {"kind": event.kind, "where": event.where, **event.detail}
            if json_lines:
                click.echo(json.dumps(record, ensure_ascii=False))
            else:
                collected.append(record)
            return
        if event.kind == "failure":
            if failures_too:
                click.echo(f"FAILED {event.text}", err=True)
            return
        if event.kind == "exchange" and headers:
            click.echo(f"[{event.where}] {event.detail.get('name', '')}")
        click.echo(event.text)

    return on_event


# ------------------------------------------------------------------------------------------ script


@click.group()
def script() -> None:
    """Run APDU scripts: pcsc-tools' scriptor files, plus expectations, variables and secure channels.

    \b
    Examples:
      cardkit --reader virtual:card.json script run scripts/ssc-read-basic.apdu
      cardkit script run scripts/gp-list-apps.apdu --keys keys/gp.toml --allow-test-keys
    """


@script.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--var", "var_pairs", multiple=True, metavar="NAME=VALUE",
              help="Set a variable (never a secret: PINs and MRZ come from --var-file, env:VAR or a prompt).")
@click.option("--var-file", type=click.Path(exists=True, dir_okay=False),
              help="NAME=VALUE lines (0600); these may hold secrets such as PINs.")
@click.option("--keys", metavar="FILE|URI", help="Keystore for 'open'/'auth' (file:, store:, pkcs11: or a path).")
@click.option("--allow-test-keys", is_flag=True, help="Allow a TEST key file (never for real cards).")
@click.option("--continue", "keep_going", is_flag=True, help="Report every unmet expectation instead of stopping.")
@click.option("--dry-run", is_flag=True, help="Run against the recording given by --replay and show the APDUs as "
              "sent on the wire (secure channel applied).")
@click.option("--replay", metavar="FILE", help="Use a recorded transcript (from --record) as the card.")
@click.option("--record", metavar="FILE", help="Record the full raw session (secrets included; written 0600).")
@click.option("--wire", is_flag=True, help="Also show each APDU as sent on the wire.")
@click.option("--show-data", is_flag=True, help="Print file contents in full (they may be personal data).")
@click.option("--check", "check_only", is_flag=True, help="Only parse the script (and its includes).")
@click.option("--profile", "profile_name", metavar="NAME", help="Profile for file names (select SSSE/EF05).")
@click.option("--get-response", type=click.Choice(["auto", "manual"]), default=None,
              help="Complete 61xx/6Cxx answers to hex lines (default: manual, as scriptor does).")
@click.option("--extended/--no-extended", default=False, help="Send long data as extended APDUs (else chaining).")
@click.pass_obj
def run(opts: Options, file: str, var_pairs: tuple[str, ...], var_file: str | None, keys: str | None,
        allow_test_keys: bool, keep_going: bool, dry_run: bool, replay: str | None, record: str | None, wire: bool,
        show_data: bool, check_only: bool, profile_name: str | None, get_response: str | None,
        extended: bool) -> None:
    """Run an APDU script; stop at the first unmet expectation (exit 3) with file:line and the card's answer.

    The language (see scripts/*.apdu): hex APDUs, reset, # comments and \\ continuations as in scriptor files;
    '=> 9000', '=> 61??', '=> 6F ?? 84 08 A000000151000000 * 9000' expectations ('?' nibble, '*' any bytes,
    '$NAME:4' captures); ${NAME} variables; select AID|FID|path; read binary|record; verify pin REF
    ${PIN}|env:VAR|prompt; open scp03|scp02 keyset=NAME level=33; open bac mrz=${MRZ}; open sm key=NAME;
    include FILE; echo TEXT.

    \b
    Examples:
      cardkit --reader virtual:card.json script run scripts/ssc-read-basic.apdu
      cardkit script run scripts/pin-counter.apdu --var PIN_REF=81
      cardkit script run s.apdu --record s.json && cardkit script run s.apdu --dry-run --replay s.json
    """
    from cardkit.profiles.model import find_profile, load_profile
    from cardkit.script.parser import parse_file
    from cardkit.script.runner import ExpectationsUnmet, ScriptRunner

    if dry_run and not replay:
        raise click.UsageError("--dry-run needs --replay FILE (a transcript recorded with --record)")
    if record and replay:
        raise click.UsageError("--record and --replay do not go together")
    statements = parse_file(file)
    if check_only:
        click.echo(f"{file}: {len(statements)} statements, syntax OK")
        return
    variables = parse_vars(var_pairs, var_file)
    keystore = open_keys(keys, allow_test_keys)
    profile = load_profile(find_profile(profile_name)) if profile_name else None
    collected: list[dict[str, Any]] = []
    with script_session(opts, replay=replay, record=record, extended=extended) as (session, replayer):
        runner = ScriptRunner(session, keystore=keystore, variables=variables, prompt=tty_prompt(),
                              on_event=event_printer(opts, collected, headers=True, failures_too=keep_going),
                              continue_on_failure=keep_going, show_data=show_data, show_wire=wire or dry_run,
                              replay=replayer, profile=profile, get_response=get_response or "manual")
        if replayer is not None and not opts.json:
            click.echo(f"{'dry run' if dry_run else 'replay'} against {replay} ({len(replayer.transcript)} "
                       "recorded exchanges)")
        result = runner.run(statements)
        left = replayer.remaining if replayer is not None else 0
    if opts.json:
        click.echo(json.dumps({"events": collected, "statements": result.statements, "apdus": result.apdus,
                               "failures": [str(f) for f in result.failures], "exited": result.exited,
                               "replay_left": left}, indent=2, ensure_ascii=False))
    else:
        note = f", {left} recorded exchanges not replayed" if left else ""
        click.echo(f"done: {result.statements} statements, {result.apdus} APDUs, "
                   f"{len(result.failures)} unmet expectations{note}")
    if result.failures:
        raise ExpectationsUnmet(result.failures)


# ------------------------------------------------------------------------------------------ trace


@click.group()
def trace() -> None:
    """Trace files (written by --trace FILE): show them decoded; turn them into replay transcripts.

    \b
    Examples:
      cardkit --trace t.jsonl --reader virtual apdu 00A4040000
      cardkit trace show t.jsonl
      cardkit trace to-replay t.jsonl -o t.replay.json && cardkit --reader replay:t.replay.json apdu 00A4040000
    """


@trace.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--summary", "summary_only", is_flag=True, help="Only the summary (counts, timing, status words).")
@click.pass_obj
def show(opts: Options, file: str, summary_only: bool) -> None:
    """Show a trace with decoded command names, status-word meanings and timing.

    \b
    Example:
      cardkit trace show session.jsonl
    """
    from cardkit.script.tracefile import command_name, read_trace, render_trace, summarize

    records = read_trace(file)
    summary = summarize(records)
    if opts.json:
        click.echo(json.dumps({"exchanges": [{"line": r.line, "t": r.t, "name": command_name(r.header), "c": r.c,
                                              "r": r.r, "sw": f"{r.sw:04X}", "meaning": r.meaning, "ms": r.ms}
                                             for r in records], "summary": summary}, indent=2, ensure_ascii=False))
        return
    if not summary_only:
        for line in render_trace(records):
            click.echo(line)
    commands = ", ".join(f"{k} ×{v}" for k, v in summary["commands"].items())  # type: ignore[attr-defined]
    click.echo(f"{summary['exchanges']} exchanges, {summary['total_ms']} ms on the card, span {summary['span_ms']} ms, "
               f"{summary['redacted']} redacted")
    if commands:
        click.echo(f"commands: {commands}")
    for sw, count in summary["status_words"].items():  # type: ignore[attr-defined]
        click.echo(f"status {sw}: ×{count}")


@trace.command("to-replay")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, metavar="FILE", help="The transcript to write (JSON, mode 0600).")
@click.option("--atr", metavar="HEX", default="", help="ATR to put in the transcript (traces do not hold it).")
@click.option("--until-redacted", is_flag=True, help="Keep the exchanges before the first redacted one.")
@click.pass_obj
def to_replay(opts: Options, file: str, output: str, atr: str, until_redacted: bool) -> None:
    """Turn a trace into a replay transcript (for --reader replay:FILE).

    Only exchanges in clear can be replayed: a trace redacts PINs, keys, cryptograms and file contents, so a
    session with VERIFY, authentication, secure messaging or READ RECORD cannot be rebuilt from it. Record a
    full transcript with 'cardkit script run --record FILE' instead.

    \b
    Example:
      cardkit trace to-replay session.jsonl -o session.replay.json --atr 3B8D80018054...
    """
    from cardkit.script.tracefile import read_trace, to_transcript

    try:
        atr_bytes = bytes.fromhex("".join(atr.split()))
    except ValueError:
        raise click.BadParameter("ATR must be hex bytes", param_hint="--atr") from None
    records = read_trace(file)
    transcript, kept = to_transcript(records, atr=atr_bytes, until_redacted=until_redacted)
    transcript.save(output)
    dropped = len(records) - kept
    if opts.json:
        click.echo(json.dumps({"output": output, "exchanges": kept, "dropped": dropped}))
    else:
        click.echo(f"wrote {kept} exchanges to {output}" + (f" ({dropped} from the first redacted one on were left "
                                                            "out)" if dropped else ""))
