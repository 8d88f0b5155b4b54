"""``cardkit plan`` (prepare, show, run): personalization plans prepared in bulk, sensitive parts encrypted.

``prepare`` validates a whole source file like ``batch validate`` (every problem reported, nothing written if there
is one), prepares every record and writes an encrypted plan (:mod:`cardkit.issuance.planstore`). ``run`` loads the
plan into a batch ledger (batch id from the plan; each ledger record holds only the plan's sequence number) and
runs the batch runner on parallel readers (``--readers`` as for ``batch run``; default: the PC/SC reader of the
global ``--reader``, else virtual readers), each card's data read from the plan, with the ledger's exactly-once
bookkeeping: running the same command again continues, cards left half-written by an interruption are spoiled
and their records remade. ``batch status`` / ``batch report`` work on the plan's batch; ``batch resume`` does not
(it prepares records from source fields, which a plan batch does not keep — use ``plan run``).

The plan passphrase comes from ``CARDKIT_PLAN_PASSPHRASE`` or a hidden prompt, never from the command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import click

from cardkit.cli.batch_common import (
    DEFAULT_VIRTUAL_READERS,
    check_batch_id,
    check_station,
    open_keystore_option,
    open_ledger,
    pseudonymizer,
    run_station,
    safe_url,
    station_options,
    user_errors,
)
from cardkit.cli.main import Options
from cardkit.errors import KeystoreError, RecordError

if TYPE_CHECKING:
    from cardkit.batch.ledger import Ledger
    from cardkit.batch.ledger_model import Claim
    from cardkit.batch.runner import PrepareRecord
    from cardkit.issuance.planstore import PlanHeader, PlanProtection, PlanReader
    from cardkit.issuance.prepare import PreparedRecord
    from cardkit.keys.store import KeyCustody, Keystore
    from cardkit.profiles.model import Profile

#: The one field a plan batch keeps per record in the ledger: the record's sequence number in the plan.
PLAN_SEQ_FIELD: Final = "plan_seq"
_ALGS = click.Choice(["sm4", "3des", "aes"])


def _prompt(what: str) -> str:
    return str(click.prompt(what, hide_input=True, err=True))


def _profile(name: str, algorithm: str | None) -> Profile:
    from cardkit.profiles.model import find_profile, load_profile

    return load_profile(find_profile(name), algorithm=algorithm)


def _passphrase(*, new: bool) -> PlanProtection:
    """The plan passphrase from CARDKIT_PLAN_PASSPHRASE or the prompt (asked twice for a new plan)."""
    from cardkit.issuance.planstore import PASSPHRASE_ENV, PassphraseProtection, PlanKeyError
    from cardkit.keys.entry import obtain_secret

    try:
        text = obtain_secret("plan passphrase", PASSPHRASE_ENV, _prompt)
        if new and os.environ.get(PASSPHRASE_ENV) is None and obtain_secret("plan passphrase (again)", None,
                                                                            _prompt) != text:
            raise PlanKeyError("the two passphrases differ; nothing was written")
    except PlanKeyError:
        raise
    except KeystoreError as exc:
        raise PlanKeyError(str(exc)) from None
    return PassphraseProtection(text)


def _kek(kek: str, keystore: Keystore | None, allow_test_keys: bool, stack: contextlib.ExitStack) -> PlanProtection:
    """``--kek NAME`` (in the --keys keystore) or ``--kek URI`` (store:PATH#NAME, pkcs11:token=T;object=NAME)."""
    from cardkit.issuance.planstore import KekProtection

    if re.match(r"^(file|store|pkcs11):", kek):
        from cardkit.keys.uri import open_keystore, parse_key_uri

        uri = parse_key_uri(kek)
        if not uri.object:
            raise click.BadParameter("a KEK URI names the key: store:PATH#NAME or pkcs11:token=T;object=NAME",
                                     param_hint="--kek")
        store = open_keystore(uri, allow_test_keys=allow_test_keys, prompt=_prompt)
        stack.callback(store.close)
        return KekProtection(store, uri.object)
    if keystore is None:
        raise click.UsageError(f"--kek {kek} names a key of the --keys keystore: give --keys URI (or --kek "
                               "store:PATH#NAME)")
    return KekProtection(cast("KeyCustody", keystore), kek)


def _keystore(keys: str | None, allow_test_keys: bool, stack: contextlib.ExitStack) -> Keystore:
    store = open_keystore_option(keys, allow_test_keys)
    close = getattr(store, "close", None)
    if close is not None:
        stack.callback(close)
    return store


def _unlock(keystore: Keystore | None, kek: str | None, allow_test_keys: bool,
            stack: contextlib.ExitStack) -> Callable[[PlanHeader], PlanProtection]:
    """Chooses how to open a plan once its header says how the data key is protected."""

    def unlock(header: PlanHeader) -> PlanProtection:
        if header.protection == "passphrase":
            return _passphrase(new=False)
        if kek is not None:
            return _kek(kek, keystore, allow_test_keys, stack)
        from cardkit.issuance.planstore import KekProtection
        from cardkit.keys.store import TestKeyFile

        if keystore is None or isinstance(keystore, TestKeyFile):
            raise click.UsageError(f"the plan's data key is wrapped under KEK {header.kek} (in {header.keystore}): "
                                   "give --kek with the KEK's URI, or --keys with its keystore")

        return KekProtection(cast("KeyCustody", keystore), None)

    return unlock


def _key_options(f: Any, *, new: bool = False,
                 what: str = "with the card master keys, and the KEK named by --kek NAME") -> Any:
    default = ("Without it the plan is protected by a passphrase (env CARDKIT_PLAN_PASSPHRASE, else a prompt)."
               if new else "Default: the KEK named in the plan, in --keys; a passphrase plan asks for its passphrase "
               "(env CARDKIT_PLAN_PASSPHRASE, else a prompt).")
    f = click.option("--kek", metavar="NAME|URI",
                     help="Key-encryption key wrapping the plan's data key: a key of --keys, or a key URI "
                          f"(store:PATH#NAME, pkcs11:token=T;object=NAME). {default}")(f)
    f = click.option("--allow-test-keys", is_flag=True, help="Accept a TEST key file (never for real cards).")(f)
    return click.option("--keys", metavar="FILE|URI", help=f"Keystore (file:, store:, pkcs11:) {what}.")(f)


def _new_key_options(f: Any) -> Any:
    return _key_options(f, new=True, what="for content hooks that sign (the eMRTD EF.SOD), and the KEK "
                        "named by --kek NAME")


def _show_key_options(f: Any) -> Any:
    return _key_options(f, what="holding the plan's KEK")


def _describe(header: PlanHeader) -> dict[str, Any]:
    out: dict[str, Any] = {
        "plan_id": header.plan_id, "created": header.created, "cardkit": header.cardkit, "profile": header.profile,
        "algorithm": header.algorithm, "profile_sha256": header.profile_sha256, "source": header.source_name,
        "source_sha256": header.source_sha256, "records": header.records, "protection": header.protection}
    if header.protection == "kek":
        out.update(kek=header.kek, kek_kcv=header.kek_kcv, keystore=header.keystore)
    else:
        kdf = header.raw["data_key"].get("kdf", {})
        out["kdf"] = {k: kdf.get(k) for k in ("name", "n", "r", "p")}
    return out


def _protection_text(header: PlanHeader) -> str:
    if header.protection == "kek":
        return f"data key wrapped under KEK {header.kek} (KCV {header.kek_kcv}) in {header.keystore}"
    kdf = header.raw["data_key"].get("kdf", {})
    return f"data key protected by a passphrase (scrypt N={kdf.get('n')}, r={kdf.get('r')}, p={kdf.get('p')})"


# ------------------------------------------------------------------------------------------- commands
@click.group()
def plan() -> None:
    """Personalization plans: prepare a batch in bulk now (personal data, PINs and keys encrypted with
    AES-256-GCM), personalize the cards later.

    \b
    Examples:
      cardkit plan prepare people.csv --profile ssc --out people.plan          # passphrase from the prompt
      cardkit plan prepare people.csv --profile ssc --out people.plan --keys store:/srv/bureau.cks --kek plan-kek
      cardkit plan show people.plan
      cardkit plan run people.plan --profile ssc --keys keys/test/ssc.toml --allow-test-keys --out /tmp/p1
    """


@plan.command("prepare")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--profile", "profile_name", required=True, metavar="NAME|PATH", help="Profile (applets/NAME or a path).")
@click.option("--algorithm", type=_ALGS, help="Card key algorithm (default: the profile's).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The plan file to write (created 0600; never overwritten).")
@_new_key_options
@click.option("--encoding", type=click.Choice(["utf-8", "gb18030"]), default="utf-8", show_default=True,
              help="Character encoding of the source file.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Source format (default: from the "
              "file extension).")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True, help="Processes preparing records.")
@click.pass_obj
def prepare(opts: Options, file: Path, profile_name: str, algorithm: str | None, out: Path, keys: str | None,
            allow_test_keys: bool, kek: str | None, encoding: str, fmt: str | None, jobs: int) -> None:
    """Validate every record of FILE (all problems reported with line numbers, nothing written if there is
    one), prepare them all and write the encrypted plan --out. The data key is wrapped under --kek, or
    protected by a passphrase.

    \b
    Examples:
      CARDKIT_PLAN_PASSPHRASE=… cardkit plan prepare applets/ssc/sample-batch.csv --profile ssc --out ssc.plan
      cardkit plan prepare people.csv --profile ssc --out people.plan --kek store:/srv/bureau.cks#plan-kek
      cardkit plan prepare mrtd.csv --profile mrtd --out mrtd.plan --keys pkcs11:token=bureau --kek plan-kek
    """
    from cardkit.batch.sources import source_digest
    from cardkit.batch.validate import BadBatchError, BatchValidator, prepare_file
    from cardkit.issuance.planstore import write_plan

    profile = _profile(profile_name, algorithm)
    if out.exists():
        raise click.UsageError(f"--out {out} exists: a plan is never overwritten")
    with user_errors():
        digest = source_digest(file)
        validator = BatchValidator(profile, encoding=encoding, fmt=fmt, jobs=jobs)
        for problem in validator.problems(file):
            click.echo(str(problem), err=True)
    summary = validator.summary
    if not summary.ok:
        raise BadBatchError(f"{file.name}: {summary.describe()}; no plan was written", summary)
    with contextlib.ExitStack() as stack:
        keystore = _keystore(keys, allow_test_keys, stack) if keys else None
        protection = _kek(kek, keystore, allow_test_keys, stack) if kek else _passphrase(new=True)

        def records() -> Iterator[tuple[int, Any]]:
            # Content hooks that sign (eMRTD EF.SOD) need the keystore, which worker processes do not have.
            n = 1 if profile.content else jobs
            for line, prepared in prepare_file(file, profile, encoding=encoding, fmt=fmt, jobs=n, keystore=keystore):
                if isinstance(prepared, str):
                    raise RecordError(f"{prepared}; no plan was written", line=line)
                yield line, prepared
            if source_digest(file) != digest:
                raise RecordError(f"{file.name} changed while the plan was prepared; no plan was written")

        t0 = time.perf_counter()
        with user_errors():
            header = write_plan(out, profile, records(), protection, source_name=file.name, source_sha256=digest)
        elapsed = time.perf_counter() - t0
    if opts.json:
        click.echo(json.dumps({**_describe(header), "file": str(out), "seconds": round(elapsed, 3)}, indent=2))
        return
    click.echo(f"plan {header.plan_id}: {header.records} records of {file.name} for {profile.name} "
               f"({profile.algorithm}) written to {out} (mode 0600) in {elapsed:.2f} s")
    click.echo(_protection_text(header))


@plan.command("show")
@click.argument("plan_file", metavar="PLAN", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--check", is_flag=True, help="Authenticate the header and every record (needs the key or passphrase).")
@_show_key_options
@click.pass_obj
def show(opts: Options, plan_file: Path, check: bool, keys: str | None, allow_test_keys: bool,
         kek: str | None) -> None:
    """Show a plan: id, profile, counts, digests, how its data key is protected — never personal data.

    Without --check the header is shown as read (not authenticated); --check authenticates it and every
    record (exit 8 if anything was changed).

    \b
    Examples:
      cardkit plan show people.plan
      cardkit plan show people.plan --check --keys store:/srv/bureau.cks
    """
    from cardkit.issuance.planstore import PlanReader, read_header

    header = read_header(plan_file)
    checked = None
    if check:
        with contextlib.ExitStack() as stack:
            keystore = _keystore(keys, allow_test_keys, stack) if keys else None
            with PlanReader.open(plan_file, unlock=_unlock(keystore, kek, allow_test_keys, stack)) as reader:
                checked = reader.verify()
    doc = {**_describe(header), "file": str(plan_file), "authenticated": checked is not None}
    if opts.json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"plan {header.plan_id} ({plan_file.name}): {header.records} records for profile {header.profile} "
               f"({header.algorithm}), prepared {header.created} by cardkit {header.cardkit}")
    click.echo(f"  source {header.source_name} sha256 {header.source_sha256}")
    click.echo(f"  profile file sha256 {header.profile_sha256}")
    click.echo(f"  {_protection_text(header)}")
    click.echo(f"  authenticated: header and {checked} records" if checked is not None
               else "  not authenticated (use --check)")


@plan.command("run")
@click.argument("plan_file", metavar="PLAN", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--profile", "profile_name", required=True, metavar="NAME|PATH", help="Profile (must be the one the "
              "plan was prepared with: same file content).")
@click.option("--algorithm", type=_ALGS, help="Card key algorithm (default: the plan's).")
@_key_options
@station_options(keys=False, on_bad_record=False, out_default="$CARDKIT_HOME/plans/BATCH_ID",
                 readers_default=f"the PC/SC reader of the global --reader, else {DEFAULT_VIRTUAL_READERS} virtual "
                                 "readers")
@click.option("--ledger", "ledger_url", metavar="URL", help="sqlite:///PATH or postgresql://… (default: "
              "sqlite:///OUT/ledger.db).")
@click.option("--batch-id", help="Batch id in the ledger (default: the plan file's name and plan id).")
@click.option("--pseudonym-key", type=click.Path(dir_okay=False), help="Key file for cardholder pseudonyms.")
@click.option("--count", type=click.IntRange(1), help="Personalize at most this many cards in this run (remakes "
              "count), then stop; run again to go on.")
@click.pass_context
def run(ctx: click.Context, /, plan_file: Path, profile_name: str, algorithm: str | None, keys: str | None,
        allow_test_keys: bool, kek: str | None, ledger_url: str | None, batch_id: str | None,
        pseudonym_key: str | None, count: int | None, **run_opts: Any) -> None:
    """Personalize the plan's records on parallel readers (--readers, as for `cardkit batch run`), each card
    written, read back and booked exactly once in the ledger. Run it again to go on after an interruption or
    --count: half-written cards are then spoiled and their records remade. Exit 9 if records were rejected or
    the station stopped early, 8 if the plan or the batch does not check.

    \b
    Examples:
      cardkit plan run ssc.plan --profile ssc --keys keys/test/ssc.toml --allow-test-keys --out /tmp/p1
      cardkit plan run ssc.plan --profile ssc --readers virtual:8 --count 100 --keys keys/test/ssc.toml \\
          --allow-test-keys --out /tmp/p1
      cardkit plan run people.plan --profile ssc --readers all --keys pkcs11:token=bureau \\
          --ledger postgresql://bureau@db/ledger --station line-2
    """
    from cardkit.issuance.planstore import PlanReader, read_header
    from cardkit.readers import cardkit_home

    opts: Options | None = ctx.obj
    header = read_header(plan_file)
    profile = _profile(profile_name, algorithm or header.algorithm)
    batch_id = check_batch_id(batch_id or f"{re.sub(r'[^A-Za-z0-9_.-]', '_', plan_file.stem)[:80]}-"
                                          f"{header.plan_id[:8]}")
    run_opts["station"] = check_station(run_opts["station"])
    run_opts["readers"] = _readers(run_opts["readers"], opts.reader if opts is not None else None)
    out: Path = run_opts.pop("out") or cardkit_home() / "plans" / batch_id
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = ledger_url or f"sqlite:///{out.resolve()}/ledger.db"
    max_remakes: int | None = run_opts.pop("max_remakes")
    with contextlib.ExitStack() as stack:
        keystore = _keystore(keys, allow_test_keys, stack)
        reader = stack.enter_context(PlanReader.open(plan_file, profile=profile,
                                                     unlock=_unlock(keystore, kek, allow_test_keys, stack)))
        with open_ledger(url) as ledger:
            created = _load(ledger, reader, pseudonymizer(ledger, pseudonym_key), batch_id, profile,
                            2 if max_remakes is None else max_remakes)
            saved = ledger.batch(batch_id).options
        if max_remakes is None:
            max_remakes = int(saved.get("max_remakes", 2))
        click.echo(f"plan {header.plan_id}: {header.records} records {'loaded into' if created else 'continuing in'} "
                   f"batch {batch_id} ({safe_url(url)}); output in {out}", err=True)
        run_station(ctx, profile, keystore, url, batch_id, out, max_remakes=max_remakes, on_bad_record="stop",
                    prepare=plan_records(reader, batch_id), max_cards=count or 0, facts={"plan": header.plan_id},
                    again="run the same `cardkit plan run` again to go on", **run_opts)


def plan_records(reader: PlanReader, batch_id: str) -> PrepareRecord:
    """The runner's ``prepare`` for a batch loaded from a plan: the claimed record's prepared data, read from the
    plan by its sequence number (authenticated as it is read; thread-safe)."""
    from cardkit.issuance.planstore import PlanError

    def prepare(claim: Claim) -> PreparedRecord:
        seq = claim.fields.get(PLAN_SEQ_FIELD, "")
        if not seq.isdigit():
            raise PlanError(f"batch {batch_id!r} was not loaded from a plan (record {claim.seq} has no plan "
                            "sequence number): use 'cardkit batch resume'")
        return reader.get(int(seq))[1]

    return prepare


def _readers(readers: tuple[str, ...], global_reader: str | None) -> tuple[str, ...]:
    """--readers as given; without it the global --reader (a PC/SC reader; 'virtual': virtual readers), else the
    default number of virtual readers. A plan never goes to one card image or a replay."""
    if readers:
        return readers
    spec = global_reader or "virtual"
    if spec.startswith(("virtual:", "replay:")):
        raise click.UsageError(f"plan run writes many cards: use --readers virtual:N (fresh blank virtual cards) or "
                               f"PC/SC readers, not --reader {spec.split(':')[0]}:FILE")
    return (f"virtual:{DEFAULT_VIRTUAL_READERS}",) if spec == "virtual" else (spec,)


def _load(ledger: Ledger, reader: PlanReader, pz: Any, batch_id: str, profile: Profile, max_remakes: int) -> bool:
    """Load the plan as a batch (all or nothing; the plan is authenticated as it loads) — or, if it is loaded
    already, authenticate it. Returns True when the batch was created now."""
    from cardkit.batch.ledger_model import BatchConflictError, UnknownBatchError

    digest = reader.header.records_sha256
    try:
        info = ledger.batch(batch_id)
    except UnknownBatchError:
        info = None
    if info is not None:
        if info.source_digest != digest or info.profile != profile.name:
            raise BatchConflictError(f"batch {batch_id!r} exists already for another plan or profile; choose "
                                     "another --batch-id")
        reader.verify()
        return False
    pseudonyms: dict[str, str] = {}

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        for seq, line, prepared in reader.records():
            pseudonyms[str(seq)] = pz.of(prepared.identity)
            yield line, {PLAN_SEQ_FIELD: str(seq)}

    options = {"kind": "plan", "plan_id": reader.header.plan_id, "plan_file": reader.path.name,
               "source": reader.header.source_name, "profile_path": profile.source, "algorithm": profile.algorithm,
               "max_remakes": max_remakes, "on_bad_record": "stop"}
    ledger.create_batch(batch_id, profile.name, digest, rows(), identity_of=lambda f: pseudonyms.pop(f[PLAN_SEQ_FIELD]),
                        options=options)
    return True
