"""The ``cardkit`` command line.

This package is the only place that imports click, prints, or maps errors to exit codes. Subcommands are
imported lazily so ``cardkit --help`` starts fast (no pyscard or cryptography import at start-up).
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from cardkit import __version__
from cardkit.cli.errors import exit_code_for, one_line

# name -> (module, attribute, short help). Imported only when the command runs or its --help is shown.
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "readers": ("cardkit.cli.basic", "readers", "List PC/SC readers (and the virtual ones)."),
    "atr": ("cardkit.cli.basic", "atr", "Decode an ATR (given, or of the card in the reader)."),
    "apdu": ("cardkit.cli.basic", "apdu", "Send raw APDUs and show the responses."),
    "tlv": ("cardkit.cli.basic", "tlv", "Decode BER-TLV data and print it as a tree."),
    "demo": ("cardkit.cli.basic", "demo", "Issue and verify sample cards on virtual cards (TEST keys)."),
    # issuance (one card) — cardkit/cli/issue.py, cardkit/cli/issue_ops.py (pin, card, ssc)
    "layout": ("cardkit.cli.issue", "layout", "Validate a profile or show its file tree, rules and record schema."),
    "personalize": ("cardkit.cli.issue", "personalize", "Personalize one card from a record and verify it."),
    "verify": ("cardkit.cli.issue", "verify", "Read a card back and compare it with a profile and record."),
    "dump": ("cardkit.cli.issue", "dump", "Decode every file of a card with the profile's field names."),
    "pin": ("cardkit.cli.issue_ops", "pin", "PIN operations: status, change, unblock."),
    "card": ("cardkit.cli.issue_ops", "card", "Card life cycle: block, unblock, terminate."),
    "ssc": ("cardkit.cli.issue_ops", "ssc", "Social security card operations (bind-family, ...)."),
    "plan": ("cardkit.cli.plan", "plan", "Prepare personalization plans in bulk (encrypted); run them later."),
    # batches — cardkit/cli/batch.py
    "batch": ("cardkit.cli.batch", "batch", "Issuance batches: validate, run, status, report, resume, cancel."),
    "audit": ("cardkit.cli.batch", "audit", "Verify a hash-chained audit journal."),
    # technician / integrator tools — cardkit/cli/info.py, cardkit/cli/script.py, cardkit/cli/shell.py
    "info": ("cardkit.cli.info", "info", "Diagnose a card: ATR, CPLC, GP data, applications, files, PINs."),
    "snapshot": ("cardkit.cli.info", "snapshot", "Write everything readable on a card as JSON."),
    "diff": ("cardkit.cli.info", "diff", "Compare two snapshots, or a snapshot with a profile and record."),
    "script": ("cardkit.cli.script", "script", "Run APDU scripts (a superset of scriptor files)."),
    "trace": ("cardkit.cli.script", "trace", "Show a trace file; turn it into a replay transcript."),
    "shell": ("cardkit.cli.shell", "shell", "Interactive APDU shell over the script language."),
    # keys — cardkit/cli/keys.py ; GlobalPlatform — cardkit/cli/gp.py ; virtual card — cardkit/cli/virtual.py
    "keys": ("cardkit.cli.keys", "keys", "Keys: kcv, derive, identify, generate, import, list, wrap, unwrap, delete."),
    "gp": ("cardkit.cli.gp", "gp", "GlobalPlatform: info, list, put-key, set-status, store-data."),
    "virtual": ("cardkit.cli.virtual", "virtual", "Virtual cards: serve to pcscd, create, show."),
}


def register(name: str, module: str, attr: str, short_help: str) -> None:
    """Add a lazily imported subcommand (used by later command modules)."""
    _COMMANDS[name] = (module, attr, short_help)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        spec = _COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module = importlib.import_module(spec[0])
        cmd = getattr(module, spec[1])
        if not isinstance(cmd, click.Command):  # pragma: no cover - programming error
            raise TypeError(f"{spec[0]}.{spec[1]} is not a click command")
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in sorted(_COMMANDS)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class Options:
    """Global options, passed to subcommands through the click context."""

    def __init__(self, reader: str | None, trace: str | None, json_out: bool, verbose: int) -> None:
        self.reader = reader
        self.trace = trace
        self.json = json_out
        self.verbose = verbose


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--reader", "-r", metavar="NAME", envvar="CARDKIT_READER",
              help="Reader: a PC/SC name (fuzzy), 'virtual', 'virtual:IMAGE' or 'replay:FILE'. "
                   "Default: the first PC/SC reader with a card, else the virtual card.")
@click.option("--trace", metavar="FILE", help="Append a redacted APDU trace (JSON Lines) to FILE.")
@click.option("--json", "json_out", is_flag=True, help="Machine-readable JSON output.")
@click.option("-v", "--verbose", count=True, help="More logging; -vv shows APDUs; tracebacks on errors.")
@click.version_option(__version__, prog_name="cardkit")
@click.pass_context
def cli(ctx: click.Context, reader: str | None, trace: str | None, json_out: bool, verbose: int) -> None:
    """cardkit — issue, personalize and diagnose smart cards.

    \b
    Examples:
      cardkit readers
      cardkit atr 3B8D800180540102030473F621C0829000AA
      cardkit --reader virtual apdu 00A4040008A000000151000000
      cardkit tlv 6F108408A000000151000000A5049F6501FF
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else 5
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Options(reader, trace, json_out, verbose)


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point: run the CLI, print errors as one line, exit with a stable code."""
    try:
        return cli.main(args=argv, prog_name="cardkit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:
        verbose = "-v" in (argv or sys.argv) or "-vv" in (argv or sys.argv) or "--verbose" in (argv or sys.argv)
        if verbose:
            import traceback

            traceback.print_exc()
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(exit_code_for(exc))


if __name__ == "__main__":  # pragma: no cover
    main()
