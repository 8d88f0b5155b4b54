"""``cardkit batch`` (validate, run, status, report, resume, cancel) and ``cardkit audit verify``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cardkit.cli.errors import EXIT_BATCH_REJECTS, VerificationFailed
from cardkit.cli.main import Options
from cardkit.errors import RecordError

if TYPE_CHECKING:
    from cardkit.batch.ledger import Ledger
    from cardkit.batch.progress import Progress
    from cardkit.batch.runner import CardSlot, RunEvent, RunResult, TraceSink
    from cardkit.keys.store import Keystore
    from cardkit.profiles.model import Profile

DEFAULT_VIRTUAL_READERS = 4
MAX_VIRTUAL_READERS = 256
_SHOWN_DUPLICATES = 50


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


def _profile(name: str, algorithm: str | None) -> Profile:
    from cardkit.profiles.model import find_profile, load_profile

    return load_profile(find_profile(name), algorithm=algorithm)


def _default_station() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "station")[:60] or "station"


def _default_out(batch_id: str) -> Path:
    from cardkit.readers import cardkit_home

    return cardkit_home() / "batches" / batch_id


def _safe_url(url: str) -> str:
    """A ledger URL fit for messages: any password removed."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _check_batch_id(batch_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", batch_id):
        raise click.BadParameter("a batch id is 1-100 letters, digits, '_', '.', '-' (starting with a letter or "
                                 "digit)", param_hint="--batch-id")
    return batch_id


@contextmanager
def _user_errors() -> Iterator[None]:
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
def _ledger(url: str) -> Iterator[Ledger]:
    from cardkit.batch.ledger import Ledger

    with _user_errors(), Ledger.open(url) as ledger:
        yield ledger


def _pseudonymizer(ledger: Ledger, key_file: str | None) -> Any:
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


def _reader_slots(readers: tuple[str, ...], make_virtual: Callable[[int], list[CardSlot]],
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
class _Display:
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

    def __enter__(self) -> _Display:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.show(final=True)


# ------------------------------------------------------------------------------------------- options
def _run_options(f: Any) -> Any:
    """Options shared by ``run`` and ``resume``."""
    opts = [
        click.option("--readers", multiple=True, metavar="SPEC",
                     help="virtual:N (N in-process virtual readers), 'all' (every PC/SC reader) or PC/SC reader "
                          "names (repeat the option). Default: the PC/SC readers holding a card, else "
                          f"{DEFAULT_VIRTUAL_READERS} virtual readers."),
        click.option("--station", metavar="NAME", help="This station's name in the ledger (default: host name)."),
        click.option("--stop-after-failures", type=click.IntRange(0), default=0, show_default=True,
                     help="Stop after this many failed cards (0: never)."),
        click.option("--max-remakes", type=click.IntRange(0), default=None,
                     help="Failed cards a record may have before it is rejected. [default: 2; resume: the batch's]"),
        click.option("--on-bad-record", type=click.Choice(["skip", "stop"]), default=None,
                     help="A record whose values fail validation: reject it and go on (skip) or refuse the file "
                          "/ stop (stop). [default: stop; resume: the batch's]"),
        click.option("--keys", metavar="FILE|URI", help="Keystore with the master keys (file:, store:, pkcs11:)."),
        click.option("--allow-test-keys", is_flag=True, help="Accept a TEST key file (never for real cards)."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                     help="Output directory: report, journal, card images (default: "
                          "$CARDKIT_HOME/batches/BATCH_ID, or the SQLite ledger's directory)."),
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
    for opt in reversed(opts):
        f = opt(f)
    return f


def _profile_options(f: Any) -> Any:
    f = click.option("--algorithm", type=click.Choice(["sm4", "3des", "aes"]),
                     help="Card key algorithm (default: the profile's).")(f)
    return click.option("--profile", "profile_name", required=True, metavar="NAME|PATH",
                        help="Profile (applets/NAME/profile.toml or a path).")(f)


def _source_options(f: Any) -> Any:
    f = click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]),
                     help="Source format (default: from the file extension).")(f)
    f = click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
                     help="Processes checking field values.")(f)
    return click.option("--encoding", type=click.Choice(["utf-8", "gb18030"]), default="utf-8", show_default=True,
                        help="Character encoding of the source file.")(f)


# ------------------------------------------------------------------------------------------- commands
@click.group()
def batch() -> None:
    """Issuance batches: validate a file, run it on parallel readers, follow, report, resume, cancel.

    \b
    Examples:
      cardkit batch validate people.csv --profile ssc
      cardkit batch run people.csv --profile ssc --readers virtual:8 --keys keys/test/ssc.toml --allow-test-keys
      cardkit batch status people-1a2b3c4d --ledger sqlite:///$HOME/.cardkit/batches/people-1a2b3c4d/ledger.db
    """


@batch.command("validate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_source_options
@_profile_options
@click.pass_obj
def validate(opts: Options, file: Path, profile_name: str, algorithm: str | None, encoding: str, jobs: int,
             fmt: str | None) -> None:
    """Check every record of FILE against a profile and the batch rules, in one streaming pass.

    Reports ALL problems with their line numbers — field values (codecs, validators such as the GB 11643
    check digit), duplicates of the profile's unique fields, missing or unknown columns, bad bytes for the
    encoding, malformed or truncated files — and exits 6 if there is any. Values are never printed.

    \b
    Examples:
      cardkit batch validate applets/ssc/sample-batch.csv --profile ssc
      cardkit batch validate export.csv --profile ssc --encoding gb18030 --jobs 2
    """
    from cardkit.batch.validate import BadBatchError, BatchValidator

    profile = _profile(profile_name, algorithm)
    validator = BatchValidator(profile, encoding=encoding, fmt=fmt, jobs=jobs)
    shown: list[dict[str, Any]] = []
    with _user_errors():
        for problem in validator.problems(file):
            if opts.json:
                shown.append({"line": problem.line, "kind": problem.kind, "field": problem.field,
                              "message": problem.message})
            else:
                click.echo(str(problem))
    s = validator.summary
    if opts.json:
        click.echo(json.dumps({"file": file.name, "profile": profile.name, "records": s.records, "valid": s.valid,
                               "problems": s.problems, "by_kind": dict(s.by_kind), "items": shown}, indent=2,
                              ensure_ascii=False))
    else:
        click.echo(f"{file.name}: {s.describe()}")
    if not s.ok:
        raise BadBatchError(f"{file.name}: {s.problems} problem(s) in {s.records} records", s)


@batch.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_source_options
@_run_options
@click.option("--batch-id", help="Batch id (default: FILE's name and the start of its SHA-256).")
@click.option("--ledger", "ledger_url", metavar="URL",
              help="sqlite:///PATH or postgresql://… (default: sqlite:///OUT/ledger.db).")
@click.option("--pseudonym-key", type=click.Path(dir_okay=False),
              help="Key file for cardholder pseudonyms (default: beside a SQLite ledger, else "
                   "$CARDKIT_HOME/pseudonym.key).")
@_profile_options
@click.pass_context
def run(ctx: click.Context, /, file: Path, profile_name: str, algorithm: str | None, encoding: str, jobs: int,
        fmt: str | None, batch_id: str | None, ledger_url: str | None, pseudonym_key: str | None,
        **run_opts: Any) -> None:
    """Validate FILE, load it into the ledger (all or nothing) and personalize one card per record on
    parallel readers: claim → personalize → verify → done, failed cards remade up to --max-remakes.

    Progress goes to stderr; at the end the report (report.json, records.csv, summary.txt, report.html)
    is written to --out and its summary printed. Exit 9 if any record was rejected or the station stopped
    early (--stop-after-failures, --on-bad-record stop). Running the same command again after an
    interruption continues the batch (like `cardkit batch resume`). With --on-bad-record skip, records whose
    values fail validation are rejected at load; problems of the file itself (encoding, structure,
    columns, duplicates) always refuse it.

    \b
    Examples:
      cardkit batch run applets/ssc/sample-batch.csv --profile ssc --readers virtual:8 \\
          --keys keys/test/ssc.toml --allow-test-keys --out /tmp/b1
      cardkit batch run people.csv --profile ssc --readers all --keys store:/srv/bureau.cks \\
          --ledger postgresql://bureau@db/ledger --station line-3
    """
    from cardkit.batch.sources import source_digest
    from cardkit.batch.validate import load_batch

    profile = _profile(profile_name, algorithm)
    keystore = open_keystore_option(run_opts["keys"], run_opts["allow_test_keys"])
    with _user_errors():
        digest = source_digest(file)
    batch_id = _check_batch_id(batch_id or f"{re.sub(r'[^A-Za-z0-9_.-]', '_', file.stem)[:80]}-{digest[:8]}")
    out: Path = run_opts.pop("out") or _default_out(batch_id)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = ledger_url or f"sqlite:///{out.resolve()}/ledger.db"
    max_remakes = run_opts.pop("max_remakes")
    max_remakes = 2 if max_remakes is None else max_remakes
    on_bad = run_opts.pop("on_bad_record") or "stop"
    with _ledger(url) as ledger:
        pz = _pseudonymizer(ledger, pseudonym_key)
        options = {"source": file.name, "encoding": encoding, "profile_path": profile.source,
                   "algorithm": profile.algorithm, "max_remakes": max_remakes, "on_bad_record": on_bad}
        loaded = load_batch(ledger, file, profile, batch_id, pz, encoding=encoding, fmt=fmt, on_bad_record=on_bad,
                            options=options, jobs=jobs, on_problem=lambda p: click.echo(str(p), err=True))
    if loaded.created:
        click.echo(f"batch {batch_id}: {loaded.count} records loaded ({loaded.rejected} rejected at load) into "
                   f"{_safe_url(url)}", err=True)
    else:
        click.echo(f"batch {batch_id}: loaded earlier from the same file; continuing", err=True)
    _run_station(ctx, profile, keystore, url, batch_id, out, max_remakes=max_remakes, on_bad_record=on_bad,
                 **run_opts)


@batch.command("resume")
@click.argument("batch_id")
@_run_options
@click.option("--ledger", "ledger_url", required=True, metavar="URL", help="The batch's ledger.")
@click.option("--algorithm", type=click.Choice(["sm4", "3des", "aes"]), help="Card key algorithm (default: the "
              "batch's).")
@click.option("--profile", "profile_name", metavar="NAME|PATH", help="Profile (default: the one the batch was "
              "loaded with).")
@click.pass_context
def resume(ctx: click.Context, /, batch_id: str, ledger_url: str, profile_name: str | None, algorithm: str | None,
           **run_opts: Any) -> None:
    """Recover this station's leftovers of BATCH_ID (half-written cards are spoiled and their records
    requeued) and go on personalizing until the batch is finished.

    \b
    Example:
      cardkit batch resume people-1a2b3c4d --ledger sqlite:///tmp/b1/ledger.db --readers virtual:8 \\
          --keys keys/test/ssc.toml --allow-test-keys --station line-1
    """
    with _ledger(ledger_url) as ledger:
        info = ledger.batch(batch_id)
        path = _ledger_dir(ledger)
    saved = info.options
    if saved.get("kind") == "plan":
        raise click.UsageError(f"batch {batch_id!r} was loaded from a stored plan: continue it with "
                               f"`cardkit plan run {saved.get('plan_file', 'PLAN')} ...`")
    profile = _profile(profile_name or str(saved.get("profile_path") or info.profile),
                       algorithm or saved.get("algorithm"))
    if profile.name != info.profile:
        raise click.UsageError(f"batch {batch_id!r} was loaded for profile {info.profile!r}, not {profile.name!r}")
    keystore = open_keystore_option(run_opts["keys"], run_opts["allow_test_keys"])
    out: Path = run_opts.pop("out") or path or _default_out(batch_id)
    max_remakes = run_opts.pop("max_remakes")
    max_remakes = int(saved.get("max_remakes", 2)) if max_remakes is None else max_remakes
    on_bad = run_opts.pop("on_bad_record") or str(saved.get("on_bad_record", "stop"))
    _run_station(ctx, profile, keystore, ledger_url, batch_id, out, max_remakes=max_remakes, on_bad_record=on_bad,
                 **run_opts)


def _ledger_dir(ledger: Ledger) -> Path | None:
    return ledger.path.parent if ledger.path is not None else None


def _run_station(ctx: click.Context, profile: Profile, keystore: Keystore, url: str, batch_id: str, out: Path, *,
                 max_remakes: int, on_bad_record: str, **o: Any) -> None:
    from cardkit.batch.progress import Progress
    from cardkit.batch.runner import BatchRunner, RunConfig, TraceSink, VirtualSlot, make_feeder
    from cardkit.readers import cardkit_home

    station = o["station"] or _default_station()
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,100}", station):
        raise click.BadParameter("a station name is 1-100 letters, digits, '_', '.', ':', '-'", param_hint="--station")
    cfg = RunConfig(url, batch_id, station, out, max_remakes=max_remakes,
                    stop_after_failures=o["stop_after_failures"], on_bad_record=on_bad_record,
                    stale_after_s=o["stale_after"], journal=o["journal"])
    with _ledger(url) as ledger:
        status = ledger.status(batch_id)
        saved = ledger.batch(batch_id).options.get("algorithm")
    if saved and saved != profile.algorithm:
        raise click.UsageError(f"batch {batch_id!r} is issued with {saved}, not {profile.algorithm}: every card of a "
                               "batch uses one algorithm")
    progress = Progress(status["pending"] + status["claimed"] + status["written"])
    display = _Display(progress, o["progress_interval"])

    opts: Options | None = ctx.obj
    with contextlib.ExitStack() as stack:
        trace = None
        if opts is not None and opts.trace:
            fh = stack.enter_context(os.fdopen(os.open(opts.trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
                                               "a", encoding="utf-8"))
            trace = TraceSink(fh)

        def make_virtual(n: int) -> list[CardSlot]:
            feeder = make_feeder(profile, keystore, o["feeder"] or cardkit_home() / "feeder",
                                 latency_s=o["latency_ms"] / 1000.0)
            return [VirtualSlot(f"virtual-{i}", feeder, trace=trace) for i in range(n)]

        slots = _reader_slots(o["readers"], make_virtual, display.notify, cfg.poll_s, trace)
        runner = BatchRunner(cfg, profile, keystore, slots, events=display.event)
        click.echo(f"station {station}: batch {batch_id}, {len(slots)} reader(s), {progress.remaining()} records "
                   f"to go; output in {out}", err=True)
        with display, _user_errors():
            result = runner.run()
    _finish(ctx, result, url, batch_id, out, cfg.journal_path)


def _finish(ctx: click.Context, result: RunResult, url: str, batch_id: str, out: Path, journal: Path) -> None:
    from cardkit.batch.report import build_report, summary_text, write_report

    with _ledger(url) as ledger:
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
    if result.stopped == "interrupted":
        click.echo("interrupted: run `cardkit batch resume` to go on", err=True)
        ctx.exit(130)
    if result.stopped:
        click.echo(f"stopped before the batch was finished: {result.stopped}", err=True)
        ctx.exit(EXIT_BATCH_REJECTS)
    if not report["reconciliation"]["reconciles"]:
        raise VerificationFailed(f"batch {batch_id!r} does not reconcile; see {out / 'summary.txt'}")
    if report["records"]["rejected"]:
        click.echo(f"{report['records']['rejected']} record(s) rejected", err=True)
        ctx.exit(EXIT_BATCH_REJECTS)


@batch.command("status")
@click.argument("batch_id")
@click.option("--ledger", "ledger_url", required=True, metavar="URL", help="The batch's ledger.")
@click.pass_obj
def status(opts: Options, batch_id: str, ledger_url: str) -> None:
    """Show a batch's state, record counts by state and the stations' last heartbeats.

    \b
    Example:
      cardkit batch status people-1a2b3c4d --ledger sqlite:///tmp/b1/ledger.db
    """
    from cardkit.batch.progress import format_duration

    with _ledger(ledger_url) as ledger:
        info = ledger.batch(batch_id)
        counts = ledger.status(batch_id)
        holders = {r.station for st in ("claimed", "written") for r in ledger.records(batch_id, state=st)}
        beats = ledger.stations()
    now = time.time()
    if opts.json:
        click.echo(json.dumps({"batch": batch_id, "profile": info.profile, "state": info.state,
                               "input": info.input_count, "records": counts,
                               "stations": {k: round(now - v, 1) for k, v in beats.items()}}, indent=2))
        return
    click.echo(f"batch {batch_id} (profile {info.profile}): {info.state}")
    click.echo(f"  input {info.input_count}: done {counts['done']}, rejected {counts['rejected']}, pending "
               f"{counts['pending']}, claimed {counts['claimed']}, written {counts['written']}")
    for name, beat in sorted(beats.items()):
        if name in holders or now - beat < 3600:
            held = " (holds records)" if name in holders else ""
            click.echo(f"  station {name}: last heartbeat {format_duration(now - beat)} ago{held}")


@batch.command("report")
@click.argument("batch_id")
@click.option("--ledger", "ledger_url", required=True, metavar="URL", help="The batch's ledger.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the report files (default: the SQLite ledger's directory).")
@click.option("--journal", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Journal to verify and anchor in the report (default: OUT/journal.jsonl if present).")
@click.option("--bucket", type=click.IntRange(1), default=60, show_default=True, help="Throughput bucket, seconds.")
@click.pass_context
def report(ctx: click.Context, batch_id: str, ledger_url: str, out: Path | None, journal: Path | None,
           bucket: int) -> None:
    """Reconcile a batch — input = done + rejected + outstanding, one verified card per done record —
    and write report.json, records.csv, summary.txt and report.html. Exit 8 if it does not reconcile,
    9 if records were rejected.

    \b
    Example:
      cardkit batch report people-1a2b3c4d --ledger sqlite:///tmp/b1/ledger.db
    """
    from cardkit.batch.report import build_report, summary_text, write_report

    with _ledger(ledger_url) as ledger:
        target = out or _ledger_dir(ledger) or _default_out(batch_id)
        jpath = journal or (target / "journal.jsonl")
        rep = build_report(ledger, batch_id, bucket_s=bucket, journal=jpath if jpath.exists() else None)
    write_report(rep, target)
    click.echo(summary_text(rep), nl=False)
    click.echo(f"report: {target / 'report.html'}")
    if not rep["reconciliation"]["reconciles"]:
        raise VerificationFailed(f"batch {batch_id!r} does not reconcile")
    if "journal" in rep and not rep["journal"]["ok"]:
        raise VerificationFailed(f"the journal of batch {batch_id!r} is damaged")
    if rep["records"]["rejected"]:
        ctx.exit(EXIT_BATCH_REJECTS)


@batch.command("cancel")
@click.argument("batch_id")
@click.option("--ledger", "ledger_url", required=True, metavar="URL", help="The batch's ledger.")
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path),
              help="Journal to record the cancellation in (default: beside a SQLite ledger).")
def cancel(batch_id: str, ledger_url: str, journal: Path | None) -> None:
    """Stop handing out records of a batch (cards being written still finish). Final.

    \b
    Example:
      cardkit batch cancel people-1a2b3c4d --ledger sqlite:///tmp/b1/ledger.db
    """
    from cardkit.batch.journal import Journal

    with _ledger(ledger_url) as ledger:
        ledger.cancel(batch_id)
        counts = ledger.status(batch_id)
        jpath = journal or ((_ledger_dir(ledger) or Path()) / "journal.jsonl" if ledger.path else None)
    if jpath is not None:
        with Journal(jpath) as j:
            j.append("batch.cancelled", batch=batch_id, user=os.environ.get("USER", ""),
                     outstanding=counts["pending"] + counts["claimed"] + counts["written"])
    click.echo(f"batch {batch_id} cancelled: {counts['done']} done, {counts['pending']} pending records will not "
               f"be issued, {counts['claimed'] + counts['written']} card(s) in flight may still finish")


@click.group()
def audit() -> None:
    """Audit journals.

    \b
    Example:
      cardkit audit verify /tmp/b1/journal.jsonl
    """


@audit.command("verify")
@click.argument("journal", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--expect-head", metavar="HASH", help="The head hash kept elsewhere (e.g. in report.json): catches "
              "lines cut from the end and rewritten journals.")
@click.pass_obj
def audit_verify(opts: Options, journal: Path, expect_head: str | None) -> None:
    """Verify a hash-chained journal: every line's hash, the chain and the sequence (exit 8 if damaged).

    \b
    Examples:
      cardkit audit verify /tmp/b1/journal.jsonl
      cardkit audit verify journal.jsonl --expect-head 3f5c…
    """
    from cardkit.batch.journal import verify_journal

    if expect_head is not None and not re.fullmatch(r"[0-9a-f]{64}", expect_head):
        raise click.BadParameter("a head hash is 64 lower-case hex digits", param_hint="--expect-head")
    rep = verify_journal(journal, expect_head=expect_head)
    if opts.json:
        click.echo(json.dumps({"file": journal.name, "lines": rep.lines, "last_seq": rep.last_seq, "head": rep.head,
                               "ok": rep.ok, "problems": [{"line": p.line, "kind": p.kind, "message": p.message}
                                                          for p in rep.problems]}, indent=2))
    else:
        for p in rep.problems:
            click.echo(f"line {p.line}: {p.kind}: {p.message}")
        click.echo(f"{journal.name}: {rep.lines} lines, {'intact' if rep.ok else 'DAMAGED'}, head {rep.head}")
    if not rep.ok:
        raise VerificationFailed(f"journal {journal.name} is damaged: {len(rep.problems)} problem(s)")
