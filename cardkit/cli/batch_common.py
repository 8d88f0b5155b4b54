"""What ``cardkit batch`` and ``cardkit plan`` share: ledger and keystore options, user errors, readers,
the progress display, running a station and finishing it with the report."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cardkit.cli.errors import EXIT_BATCH_REJECTS, VerificationFailed
from cardkit.cli.main import Options
from cardkit.errors import RecordError
from cardkit.fsutil import open_private_append

if TYPE_CHECKING:
    from cardkit.batch.ledger import Ledger
    from cardkit.batch.progress import Progress
    from cardkit.batch.runner import CardSlot, PrepareRecord, RunEvent, RunResult, TraceSink
    from cardkit.keys.store import Keystore
    from cardkit.profiles.model import Profile

DEFAULT_VIRTUAL_READERS = 4
MAX_VIRTUAL_READERS = 256
_SHOWN_DUPLICATES = 50
_AGAIN = "run `cardkit batch resume` to go on"

# ------------------------------------------------------------------------------------------- helpers
def open_keystore_option(keys: str | None, allow_test_keys: bool) -> Keystore:
    """The keystore named by ``--keys`` — the one place batch commands turn the option into a keystore.

    ``--keys`` takes a key URI (``file:PATH`` TEST key file, ``store:PATH``, ``pkcs11:…``) or a plain path
    (a TEST key file). TEST key files are refused without ``--allow-test-keys``. Passphrases and PINs come
    from the environment or a prompt, never from the command line.
    """
    if not keys:
        raise click.UsageError("a keystore is needed: --keys FILE|URI (a TEST key file such as keys/test/ssc.toml "
                               "also needs --allow-test-keys)")
    scheme = keys.split(":", 1)[0] if re.match(r"^[a-z][a-z0-9+]*:", keys) else ""
    try:
        from cardkit.keys.uri import open_keystore
    except ImportError:  # pragma: no cover - only the TEST key files exist
        from cardkit.keys.store import TestKeyFile

        return TestKeyFile(keys.removeprefix("file:"), allow_test_keys=allow_test_keys)
    uri = keys if scheme in ("file", "store", "pkcs11") else f"file:{keys}"

    def prompt(what: str) -> str:
        return str(click.prompt(what, hide_input=True, err=True))

    return open_keystore(uri, allow_test_keys=allow_test_keys, prompt=prompt)


def default_station() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "station")[:60] or "station"


def default_out(batch_id: str) -> Path:
    from cardkit.readers import cardkit_home

    return cardkit_home() / "batches" / batch_id


def safe_url(url: str) -> str:
    """A ledger URL fit for messages: any password removed."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def check_batch_id(batch_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", batch_id):
        raise click.BadParameter("a batch id is 1-100 letters, digits, '_', '.', '-' (starting with a letter or "
                                 "digit)", param_hint="--batch-id")
    return batch_id


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors a user causes: unknown batch, bad ledger URL, wrong state → usage (exit 2); duplicates, an
    unreadable source file (format, encoding name, I/O) → bad input (exit 6)."""
    from cardkit.batch.ledger_model import (
        BatchConflictError,
        BatchStateError,
        DuplicateIdentityError,
        LedgerUrlError,
        UnknownBatchError,
    )
    from cardkit.batch.sources import SourceError

    try:
        yield
    except (LedgerUrlError, UnknownBatchError, BatchConflictError, BatchStateError) as exc:
        raise click.UsageError(str(exc)) from None
    except SourceError as exc:
        raise RecordError(str(exc)) from None
    except DuplicateIdentityError as exc:
        for d in exc.duplicates[:_SHOWN_DUPLICATES]:
            where = "earlier in this batch" if d.other_batch == exc.batch_id else f"in batch {d.other_batch!r}"
            click.echo(f"line {d.line}: the same identity as line {d.other_line} {where} ({d.other_state})",
                       err=True)
        if len(exc.duplicates) > _SHOWN_DUPLICATES:
            click.echo(f"… and {len(exc.duplicates) - _SHOWN_DUPLICATES} more duplicates", err=True)
        raise RecordError(str(exc)) from None


@contextmanager
def open_ledger(url: str) -> Iterator[Ledger]:
    from cardkit.batch.ledger import Ledger

    with user_errors(), Ledger.open(url) as ledger:
        yield ledger


def pseudonymizer(ledger: Ledger, key_file: str | None) -> Any:
    from cardkit.batch.pseudonym import Pseudonymizer
    from cardkit.readers import cardkit_home

    if key_file:
        return Pseudonymizer.from_key_file(key_file, create=True)
    if ledger.path is not None:
        return Pseudonymizer.for_ledger(ledger.path)
    # A database server: stations loading batches on this machine share one key file.
    return Pseudonymizer.from_key_file(cardkit_home() / "pseudonym.key", create=True)


# ------------------------------------------------------------------------------------------- readers
def _pcsc_readers_with_card() -> list[str]:
    try:
        from cardkit.transport.pcsc import list_readers, wait_for_card
    except ImportError:
        return []
    from cardkit.errors import TransportError

    try:
        names = list_readers()
    except TransportError:
        return []
    out = []
    for name in names:
        try:
            wait_for_card(name, 0)
            out.append(name)
        except TransportError:
            continue
    return out


def reader_slots(readers: tuple[str, ...], make_virtual: Callable[[int], list[CardSlot]],
                  notify: Callable[[str, str], None], poll_s: float, trace: TraceSink | None) -> list[CardSlot]:
    from cardkit.batch.runner import PcscSlot
    from cardkit.errors import NoReaderError

    names = [r.strip() for spec in readers for r in ([spec] if spec.startswith("virtual") else spec.split(","))
             if r.strip()]
    if not names:
        found = _pcsc_readers_with_card()
        if found:
            click.echo(f"using the PC/SC readers holding a card: {', '.join(found)}", err=True)
            return [PcscSlot(n, poll_s=poll_s, notify=notify, trace=trace) for n in found]
        click.echo(f"no PC/SC reader with a card: using {DEFAULT_VIRTUAL_READERS} virtual readers "
                   "(no physical card is written)", err=True)
        return make_virtual(DEFAULT_VIRTUAL_READERS)
    virtual = [n for n in names if n == "virtual" or n.startswith("virtual:")]
    if virtual:
        if len(names) != 1:
            raise click.BadParameter("give one virtual:N, not several, and do not mix virtual and PC/SC readers",
                                     param_hint="--readers")
        count = names[0].partition(":")[2] or str(DEFAULT_VIRTUAL_READERS)
        if not count.isdigit() or not 1 <= int(count) <= MAX_VIRTUAL_READERS:
            raise click.BadParameter(f"virtual:N takes N = 1..{MAX_VIRTUAL_READERS}, got {count!r}",
                                     param_hint="--readers")
        return make_virtual(int(count))
    from cardkit.transport.pcsc import find_reader, list_readers

    if names == ["all"]:
        found = list_readers()
        if not found:
            raise NoReaderError("no PC/SC reader is connected (--readers all)")
        resolved = found
    else:
        resolved = [find_reader(n) for n in names]
    if len(set(resolved)) != len(resolved):
        raise click.BadParameter("the same reader is named twice", param_hint="--readers")
    return [PcscSlot(n, poll_s=poll_s, notify=notify, trace=trace) for n in resolved]


# ------------------------------------------------------------------------------------------- progress
class Display:
    """Prints progress on stderr: a refreshed line on a terminal, plain lines every interval otherwise."""

    def __init__(self, progress: Progress, interval: float | None) -> None:
        self.progress = progress
        self.tty = sys.stderr.isatty()
        self.interval = interval if interval is not None else (1.0 if self.tty else 10.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._lock = threading.Lock()

    def event(self, ev: RunEvent) -> None:
        line = self.progress.apply(ev)
        if line is not None:
            self.note(line)

    def notify(self, reader: str, text: str) -> None:
        self.progress.set_state(reader, text)
        if not self.tty or text.startswith(("remove", "waiting")):
            self.note(f"{reader}: {text}")

    def note(self, text: str) -> None:
        with self._lock:
            click.echo(("\r\x1b[K" if self.tty else "") + text, err=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.show()

    def show(self, final: bool = False) -> None:
        lines = self.progress.render(tty=self.tty, final=final)
        with self._lock:
            if self.tty and not final:
                click.echo("\r\x1b[K" + lines[0], err=True, nl=False)
            else:
                click.echo(("\r\x1b[K" if self.tty else "") + "\n".join(lines), err=True)

    def __enter__(self) -> Display:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.show(final=True)


# ------------------------------------------------------------------------------------------- options
def run_options(f: Any) -> Any:
    """Options of ``batch run`` and ``batch resume``."""
    return station_options()(f)


def station_options(*, keys: bool = True, on_bad_record: bool = True,
                    out_default: str = "$CARDKIT_HOME/batches/BATCH_ID, or the SQLite ledger's directory",
                    readers_default: str = "") -> Callable[[Any], Any]:
    """Options of a station run (``batch run``, ``batch resume``, ``plan run``). ``keys``: add --keys and
    --allow-test-keys (``plan run`` has its own, with --kek); ``on_bad_record``: add --on-bad-record."""
    readers_default = readers_default or (f"the PC/SC readers holding a card, else {DEFAULT_VIRTUAL_READERS} virtual "
                                          "readers")
    opts = [
        click.option("--readers", multiple=True, metavar="SPEC",
                     help="virtual:N (N in-process virtual readers), 'all' (every PC/SC reader) or PC/SC reader "
                          f"names (repeat the option). Default: {readers_default}."),
        click.option("--station", metavar="NAME", help="This station's name in the ledger (default: host name)."),
        click.option("--stop-after-failures", type=click.IntRange(0), default=0, show_default=True,
                     help="Stop after this many failed cards (0: never)."),
        click.option("--max-remakes", type=click.IntRange(0), default=None,
                     help="Failed cards a record may have before it is rejected. [default: 2; a batch loaded "
                          "earlier: its own]"),
        *([click.option("--on-bad-record", type=click.Choice(["skip", "stop"]), default=None,
                        help="A record whose values fail validation: reject it and go on (skip) or refuse the file "
                             "/ stop (stop). [default: stop; resume: the batch's]")] if on_bad_record else []),
        *([click.option("--keys", metavar="FILE|URI", help="Keystore with the master keys (file:, store:, pkcs11:)."),
           click.option("--allow-test-keys", is_flag=True, help="Accept a TEST key file (never for real cards).")]
          if keys else []),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                     help=f"Output directory: report, journal, card images (default: {out_default})."),
        click.option("--journal", type=click.Path(dir_okay=False, path_type=Path),
                     help="Audit journal (default: OUT/journal.jsonl)."),
        click.option("--latency-ms", type=click.FloatRange(0, 10_000), default=0.0, show_default=True,
                     help="Per-APDU latency of the virtual cards."),
        click.option("--stale-after", type=click.FloatRange(0.5), default=120.0, show_default=True,
                     help="Seconds without heartbeat after which another station's claims are taken back."),
        click.option("--feeder", type=click.Path(file_okay=False, path_type=Path),
                     help="Blank virtual card feeder directory (unique serials; default $CARDKIT_HOME/feeder)."),
        click.option("--progress-interval", type=click.FloatRange(0.1), default=None,
                     help="Seconds between progress lines (default 1 on a terminal, else 10)."),
    ]

    def decorate(f: Any) -> Any:
        for opt in reversed(opts):
            f = opt(f)
        return f

    return decorate


def ledger_dir(ledger: Ledger) -> Path | None:
    return ledger.path.parent if ledger.path is not None else None


def check_station(station: str | None) -> str:
    station = station or default_station()
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,100}", station):
        raise click.BadParameter("a station name is 1-100 letters, digits, '_', '.', ':', '-'", param_hint="--station")
    return station


def run_station(ctx: click.Context, profile: Profile, keystore: Keystore, url: str, batch_id: str, out: Path, *,
                max_remakes: int, on_bad_record: str, prepare: PrepareRecord | None = None, max_cards: int = 0,
                facts: Mapping[str, str] | None = None, again: str = _AGAIN, **o: Any) -> None:
    """Run this station on the batch (readers from ``o["readers"]``, see :func:`reader_slots`), then
    :func:`finish`. ``prepare``/``max_cards``/``facts`` go to the runner; ``again`` says how to continue the
    batch (in the hints)."""
    from cardkit.batch.progress import Progress
    from cardkit.batch.runner import BatchRunner, RunConfig, TraceSink, VirtualSlot, make_feeder
    from cardkit.readers import cardkit_home

    station = check_station(o["station"])
    cfg = RunConfig(url, batch_id, station, out, max_remakes=max_remakes,
                    stop_after_failures=o["stop_after_failures"], on_bad_record=on_bad_record,
                    stale_after_s=o["stale_after"], journal=o["journal"], max_cards=max_cards, facts=dict(facts or {}))
    with open_ledger(url) as ledger:
        status = ledger.status(batch_id)
        saved = ledger.batch(batch_id).options.get("algorithm")
    if saved and saved != profile.algorithm:
        raise click.UsageError(f"batch {batch_id!r} is issued with {saved}, not {profile.algorithm}: every card of a "
                               "batch uses one algorithm")
    todo = status["pending"] + status["claimed"] + status["written"]
    progress = Progress(min(todo, max_cards) if max_cards else todo)
    display = Display(progress, o["progress_interval"])

    opts: Options | None = ctx.obj
    with contextlib.ExitStack() as stack:
        trace = None
        if opts is not None and opts.trace:
            fh = stack.enter_context(open_private_append(opts.trace))
            trace = TraceSink(fh)

        def make_virtual(n: int) -> list[CardSlot]:
            feeder = make_feeder(profile, keystore, o["feeder"] or cardkit_home() / "feeder",
                                 latency_s=o["latency_ms"] / 1000.0)
            return [VirtualSlot(f"virtual-{i}", feeder, trace=trace) for i in range(n)]

        slots = reader_slots(o["readers"], make_virtual, display.notify, cfg.poll_s, trace)
        runner = BatchRunner(cfg, profile, keystore, slots, events=display.event, prepare=prepare)
        limit = f" (at most {max_cards} in this run)" if max_cards else ""
        click.echo(f"station {station}: batch {batch_id}, {len(slots)} reader(s), {todo} records to go{limit}; "
                   f"output in {out}", err=True)
        with display, user_errors():
            result = runner.run()
    finish(ctx, result, url, batch_id, out, cfg.journal_path, again=again)


def finish(ctx: click.Context, result: RunResult, url: str, batch_id: str, out: Path, journal: Path, *,
           again: str = _AGAIN) -> None:
    """Write the report, print its summary and exit as the run ended: 130 interrupted, 9 stopped early or
    records rejected, 8 the batch does not reconcile. A run that stopped at its ``max_cards`` limit is no
    failure: it says how many records are pending and that ``again`` goes on."""
    from cardkit.batch.report import build_report, summary_text, write_report

    with open_ledger(url) as ledger:
        report = build_report(ledger, batch_id, journal=journal if journal.exists() else None)
    write_report(report, out)
    obj: Options = ctx.obj
    if obj is not None and obj.json:
        click.echo(json.dumps({k: report[k] for k in ("batch", "records", "reconciliation", "remakes", "cards",
                                                      "timings")}, indent=2, ensure_ascii=False))
    else:
        click.echo(summary_text(report), nl=False)
        click.echo(f"report: {out / 'report.html'}")
    if result.recovered:
        click.echo(f"recovered {len(result.recovered)} claim(s) left by an earlier run", err=True)
    pending = result.status.get("pending", 0)
    if result.stopped == "interrupted":
        click.echo(f"interrupted: {pending} record(s) pending; {again} (half-written cards are then spoiled and "
                   "their records remade)", err=True)
        ctx.exit(130)
    if result.stopped and result.max_cards_reached:
        click.echo(f"stopped at the card limit of this run: {pending} record(s) pending; {again}", err=True)
    elif result.stopped:
        click.echo(f"stopped before the batch was finished: {result.stopped}", err=True)
        ctx.exit(EXIT_BATCH_REJECTS)
    if not report["reconciliation"]["reconciles"]:
        raise VerificationFailed(f"batch {batch_id!r} does not reconcile; see {out / 'summary.txt'}")
    if report["records"]["rejected"]:
        click.echo(f"{report['records']['rejected']} record(s) rejected", err=True)
        ctx.exit(EXIT_BATCH_REJECTS)
