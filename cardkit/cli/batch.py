"""``cardkit batch`` (validate, run, status, report, resume, cancel) and ``cardkit audit verify``.

What ``cardkit plan`` shares with these commands is in :mod:`cardkit.cli.batch_common`."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cardkit.cli.batch_common import (
    DEFAULT_VIRTUAL_READERS,
    MAX_VIRTUAL_READERS,
    check_batch_id,
    default_out,
    ledger_dir,
    open_keystore_option,
    open_ledger,
    pseudonymizer,
    run_options,
    run_station,
    safe_url,
    user_errors,
)
from cardkit.cli.errors import EXIT_BATCH_REJECTS, VerificationFailed
from cardkit.cli.main import Options

if TYPE_CHECKING:
    from cardkit.profiles.model import Profile

__all__ = ["DEFAULT_VIRTUAL_READERS", "MAX_VIRTUAL_READERS", "audit", "batch", "open_keystore_option"]


def _profile(name: str, algorithm: str | None) -> Profile:
    from cardkit.profiles.model import find_profile, load_profile

    return load_profile(find_profile(name), algorithm=algorithm)


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
    with user_errors():
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
@run_options
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
    with user_errors():
        digest = source_digest(file)
    batch_id = check_batch_id(batch_id or f"{re.sub(r'[^A-Za-z0-9_.-]', '_', file.stem)[:80]}-{digest[:8]}")
    out: Path = run_opts.pop("out") or default_out(batch_id)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = ledger_url or f"sqlite:///{out.resolve()}/ledger.db"
    max_remakes = run_opts.pop("max_remakes")
    max_remakes = 2 if max_remakes is None else max_remakes
    on_bad = run_opts.pop("on_bad_record") or "stop"
    with open_ledger(url) as ledger:
        pz = pseudonymizer(ledger, pseudonym_key)
        options = {"source": file.name, "encoding": encoding, "profile_path": profile.source,
                   "algorithm": profile.algorithm, "max_remakes": max_remakes, "on_bad_record": on_bad}
        loaded = load_batch(ledger, file, profile, batch_id, pz, encoding=encoding, fmt=fmt, on_bad_record=on_bad,
                            options=options, jobs=jobs, on_problem=lambda p: click.echo(str(p), err=True))
    if loaded.created:
        click.echo(f"batch {batch_id}: {loaded.count} records loaded ({loaded.rejected} rejected at load) into "
                   f"{safe_url(url)}", err=True)
    else:
        click.echo(f"batch {batch_id}: loaded earlier from the same file; continuing", err=True)
    run_station(ctx, profile, keystore, url, batch_id, out, max_remakes=max_remakes, on_bad_record=on_bad,
                **run_opts)


@batch.command("resume")
@click.argument("batch_id")
@run_options
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
    with open_ledger(ledger_url) as ledger:
        info = ledger.batch(batch_id)
        path = ledger_dir(ledger)
    saved = info.options
    if saved.get("kind") == "plan":
        raise click.UsageError(f"batch {batch_id!r} was loaded from a stored plan: continue it with "
                               f"`cardkit plan run {saved.get('plan_file', 'PLAN')} ...`")
    profile = _profile(profile_name or str(saved.get("profile_path") or info.profile),
                       algorithm or saved.get("algorithm"))
    if profile.name != info.profile:
        raise click.UsageError(f"batch {batch_id!r} was loaded for profile {info.profile!r}, not {profile.name!r}")
    keystore = open_keystore_option(run_opts["keys"], run_opts["allow_test_keys"])
    out: Path = run_opts.pop("out") or path or default_out(batch_id)
    max_remakes = run_opts.pop("max_remakes")
    max_remakes = int(saved.get("max_remakes", 2)) if max_remakes is None else max_remakes
    on_bad = run_opts.pop("on_bad_record") or str(saved.get("on_bad_record", "stop"))
    run_station(ctx, profile, keystore, ledger_url, batch_id, out, max_remakes=max_remakes, on_bad_record=on_bad,
                **run_opts)


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

    with open_ledger(ledger_url) as ledger:
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

    with open_ledger(ledger_url) as ledger:
        target = out or ledger_dir(ledger) or default_out(batch_id)
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

    with open_ledger(ledger_url) as ledger:
        ledger.cancel(batch_id)
        counts = ledger.status(batch_id)
        jpath = journal or ((ledger_dir(ledger) or Path()) / "journal.jsonl" if ledger.path else None)
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
