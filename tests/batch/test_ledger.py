"""Ledger tests, run on SQLite and (marked ``postgres``) on PostgreSQL through the ``ledger_url`` fixture."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardkit.batch import (
    CRASH_REASON,
    AlreadyDoneError,
    BatchConflictError,
    BatchStateError,
    ChipInUseError,
    DuplicateIdentityError,
    Ledger,
    LedgerError,
    LedgerUrlError,
    Pseudonymizer,
    RecordStateError,
    SchemaVersionError,
    StaleClaimError,
    UnknownBatchError,
    UnknownRecordError,
)
from cardkit.batch.ledger_sql import SCHEMA_VERSION
from cardkit.errors import KeyError_, KeystoreError

from .conftest import Clock

PZ = Pseudonymizer(b"test pseudonym key, not secret!!")
DIGEST = "ab" * 32


def people(n: int, start: int = 0) -> list[tuple[int, dict[str, str]]]:
    """Synthetic records: (line, fields); line = index + 2 as in a CSV with a header."""
    return [(i + 2, {"citizen_id": f"11010119900101{i:04d}", "name": f"Person {i}", "card_number": f"C{i:08d}"})
            for i in range(start, start + n)]


def ident(fields: dict[str, str]) -> str:
    return PZ.of(fields["citizen_id"])


def load(ledger: Ledger, batch_id: str = "B1", n: int = 5, start: int = 0, **kw: object) -> int:
    return ledger.create_batch(batch_id, "ssc", kw.pop("digest", DIGEST), people(n, start), ident,  # type: ignore[arg-type]
                               **kw)  # type: ignore[arg-type]


def chip(i: int) -> bytes:
    return bytes.fromhex(f"CA{i:06X}")


@pytest.fixture
def ledger(ledger_url: str, clock: Clock) -> Iterator[Ledger]:
    with Ledger.open(ledger_url, clock=clock) as lg:
        yield lg


# ------------------------------------------------------------------------------------------------ opening
def test_sqlite_files_are_private(tmp_path: Path) -> None:
    with Ledger.open(f"sqlite:///{tmp_path}/l.db") as lg:
        load(lg)
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == ["l.db", "l.db-shm", "l.db-wal"]
        for p in tmp_path.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name
        assert lg.dialect == "sqlite" and lg.path == tmp_path / "l.db"
        with lg._db.transaction(write=False) as tx:
            assert tx.scalar("PRAGMA journal_mode") == "wal"
            assert tx.scalar("PRAGMA synchronous") == 2  # FULL
            assert tx.scalar("PRAGMA foreign_keys") == 1
            assert tx.scalar("PRAGMA busy_timeout") == 30_000


def test_relative_and_bare_sqlite_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Ledger.open("sqlite:///rel.db") as lg:
        assert lg.path == Path("rel.db")
    with Ledger.open("bare.db"):
        pass
    assert (tmp_path / "rel.db").exists() and (tmp_path / "bare.db").exists()


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite:/x.db", "sqlite:///", ""])
def test_bad_urls(url: str) -> None:
    with pytest.raises(LedgerUrlError):
        Ledger.open(url)


def test_psycopg_not_imported_for_sqlite(tmp_path: Path) -> None:
    code = ("import sys; from cardkit.batch import Ledger; "
            f"Ledger.open('sqlite:///{tmp_path}/x.db').close(); print('psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_reopen_keeps_data_and_newer_schema_is_refused(ledger_url: str, clock: Clock) -> None:
    with Ledger.open(ledger_url, clock=clock) as lg:
        load(lg)
    with Ledger.open(ledger_url, clock=clock) as lg:  # migrations are idempotent
        assert lg.status("B1")["pending"] == 5
        with lg._db.transaction(write=True) as tx:
            tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (SCHEMA_VERSION + 1, 0.0))
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade cardkit"):
        Ledger.open(ledger_url, clock=clock)


# ------------------------------------------------------------------------------------------------ pseudonyms
def test_pseudonym_is_truncated_hmac_sha256() -> None:
    # RFC 4231 §4.2 test case 1: HMAC-SHA-256(key = 0x0b * 20, "Hi There") = b0344c61d8db3853...
    assert Pseudonymizer(b"\x0b" * 20).of("Hi There") == "b0344c61d8db3853"
    pz = Pseudonymizer(b"k" * 32)
    assert pz.of("440304200412157929") == pz.of("440304200412157929") != pz.of("440304200412157928")
    assert "k" * 16 not in repr(pz) and len(pz.key_id) == 8
    with pytest.raises(KeyError_):
        Pseudonymizer(b"short")


def test_pseudonym_key_file_beside_the_ledger(tmp_path: Path) -> None:
    db = tmp_path / "bureau.db"
    a = Pseudonymizer.for_ledger(db)
    key_file = tmp_path / "bureau.db.pseudonym-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_bytes()) == 32
    assert Pseudonymizer.for_ledger(db).of("x") == a.of("x")  # same key on the next run
    assert Pseudonymizer.for_ledger(tmp_path / "other.db").of("x") != a.of("x")
    key_file.chmod(0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        Pseudonymizer.for_ledger(db)
    with pytest.raises(KeystoreError, match="does not exist"):
        Pseudonymizer.from_key_file(tmp_path / "none", create=False)
    (tmp_path / "tiny").write_bytes(b"123")
    (tmp_path / "tiny").chmod(0o600)
    with pytest.raises(KeystoreError, match="at least 16"):
        Pseudonymizer.from_key_file(tmp_path / "tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bureau.db.pseudonym-key", "other.db.pseudonym-key",
                                                          "tiny"]  # no temporary files left


# ------------------------------------------------------------------------------------------------ loading
def test_create_batch_counts_and_idempotent_reload(ledger: Ledger) -> None:
    n = ledger.create_batch("B1", "ssc", DIGEST, people(4), ident, rejected=[(7, "bad check digit")],
                            options={"max_remakes": 2})
    assert n == 5
    assert ledger.status("B1") == {"pending": 4, "claimed": 0, "written": 0, "done": 0, "rejected": 1, "total": 5}
    info = ledger.batch("B1")
    assert (info.state, info.input_count, info.options, info.profile) == ("loaded", 5, {"max_remakes": 2}, "ssc")
    # same digest and profile: a no-op returning the stored count
    assert ledger.create_batch("B1", "ssc", DIGEST, people(99), ident) == 5
    with pytest.raises(BatchConflictError, match="source digest"):
        ledger.create_batch("B1", "ssc", "cd" * 32, people(4), ident)
    with pytest.raises(BatchConflictError, match="profile"):
        ledger.create_batch("B1", "mrtd", DIGEST, people(4), ident)
    rej = list(ledger.records("B1", state="rejected"))
    assert [(r.line, r.reason, r.identity) for r in rej] == [(7, "bad check digit", None)]
    assert [b.id for b in ledger.batches()] == ["B1"]


def test_batch_of_only_rejected_records_is_finished(ledger: Ledger) -> None:
    ledger.create_batch("B0", "ssc", DIGEST, [], ident, rejected=[(2, "x"), (3, "y")])
    assert ledger.batch("B0").state == "finished"
    assert ledger.claim("B0", "s", "r") is None


def _failing_records(n_ok: int) -> Iterator[tuple[int, dict[str, str]]]:
    yield from people(n_ok)
    raise RuntimeError("source went away")


@pytest.mark.parametrize("fail_at", [3, 1201])  # inside the first chunk, and after two chunks were inserted
def test_load_is_all_or_nothing(ledger: Ledger, fail_at: int) -> None:
    with pytest.raises(RuntimeError, match="source went away"):
        ledger.create_batch("B1", "ssc", DIGEST, _failing_records(fail_at), ident)
    with pytest.raises(UnknownBatchError):
        ledger.status("B1")
    assert ledger.batches() == []
    assert list(ledger.records("B1")) == []
    assert load(ledger, n=3) == 3  # the id is free again


def test_identity_of_failure_rolls_back(ledger: Ledger) -> None:
    def bad(fields: dict[str, str]) -> str:
        if fields["citizen_id"].endswith("0003"):
            raise KeyError("citizen_id")
        return ident(fields)

    with pytest.raises(KeyError):
        ledger.create_batch("B1", "ssc", DIGEST, people(10), bad)
    assert ledger.batches() == []
    with pytest.raises(LedgerError, match="line 2: identity_of must return"):
        ledger.create_batch("B1", "ssc", DIGEST, people(3), lambda f: "")
    assert ledger.batches() == []


def test_duplicates_within_batch_are_listed_with_lines(ledger: Ledger) -> None:
    recs = people(6)
    recs[3] = (5, dict(recs[0][1]))  # line 5 repeats line 2
    recs[5] = (7, dict(recs[0][1]))  # line 7 too
    recs[4] = (6, dict(recs[1][1]))  # line 6 repeats line 3
    with pytest.raises(DuplicateIdentityError) as ei:
        ledger.create_batch("B1", "ssc", DIGEST, recs, ident)
    got = [(d.line, d.other_line, d.other_batch) for d in ei.value.duplicates]
    assert got == [(5, 2, "B1"), (6, 3, "B1"), (7, 2, "B1")]
    assert "3 duplicate identities (3 within the batch" in str(ei.value)
    assert "Person" not in str(ei.value) and "110101" not in str(ei.value)
    assert ledger.batches() == []


def _finish_all(ledger: Ledger, batch_id: str, first_chip: int = 0) -> None:
    i = first_chip
    while (c := ledger.claim(batch_id, "s1", "r0")) is not None:
        ledger.card_written(c, chip(i))
        ledger.card_verified(c, chip(i), {"n": i})
        i += 1


def test_duplicates_against_other_batches(ledger: Ledger) -> None:
    load(ledger, "A", n=3)                       # identities 0..2, pending (live)
    with pytest.raises(DuplicateIdentityError) as ei:
        load(ledger, "B", n=3, start=2, digest="01" * 32)  # 2 overlaps A's pending record
    assert [(d.line, d.other_batch, d.other_line, d.other_state) for d in ei.value.duplicates] == \
        [(4, "A", 4, "pending")]
    _finish_all(ledger, "A")
    assert ledger.identity_done(PZ.of(people(1)[0][1]["citizen_id"]))
    with pytest.raises(DuplicateIdentityError) as ei:
        load(ledger, "B", n=3, start=2, digest="01" * 32)
    assert ei.value.duplicates[0].other_state == "done"
    # a reissue is allowed only when asked for
    assert load(ledger, "B", n=3, start=2, digest="01" * 32, allow_reissue=True) == 3


def test_cancelled_and_rejected_records_do_not_block(ledger: Ledger) -> None:
    load(ledger, "A", n=2)
    ledger.cancel("A")
    assert load(ledger, "B", n=2, digest="02" * 32) == 2     # A's pending records are in a cancelled batch
    c = ledger.claim("B", "s", "r")
    assert c is not None
    ledger.reject_record("B", c.seq, "photo missing")
    ledger.cancel("B")
    assert load(ledger, "C", n=1, digest="03" * 32) == 1     # B's record 1 is rejected, not live


# ------------------------------------------------------------------------------------------------ transitions
def test_happy_path(ledger: Ledger, clock: Clock) -> None:
    load(ledger, n=2)
    c = ledger.claim("B1", "st", "rd")
    assert c is not None and (c.seq, c.line, c.attempt, c.station, c.reader) == (1, 2, 1, "st", "rd")
    assert c.fields["name"] == "Person 0" and "Person" not in repr(c)
    assert ledger.batch("B1").state == "running"
    ledger.card_started(c, chip(1))
    ledger.card_started(c, chip(1))  # idempotent
    assert ledger.cards("B1")[0].state == "claimed"
    clock.advance(2)
    ledger.card_written(c, chip(1))
    ledger.card_written(c, chip(1))  # idempotent
    assert next(iter(ledger.records("B1"))).state == "written"
    clock.advance(1)
    ledger.card_verified(c, chip(1), {"atr": "3B00", "files": {"EF05": "aa"}})
    ledger.card_verified(c, chip(1), {"atr": "3B00"})  # idempotent repeat: nothing changes
    assert ledger.manifest(chip(1)) == {"atr": "3B00", "files": {"EF05": "aa"}}
    assert ledger.manifest(chip(2)) is None
    card = ledger.cards("B1", seq=1)[0]
    assert (card.state, card.written_at, card.verified_at, card.chip_serial) == \
        ("verified", clock.now - 1, clock.now, chip(1))
    rec = next(iter(ledger.records("B1")))
    assert (rec.state, rec.chip_serial, rec.attempts, rec.remakes) == ("done", chip(1), 1, 0)
    assert ledger.batch("B1").state == "running"
    c2 = ledger.claim("B1", "st", "rd")
    assert c2 is not None and c2.seq == 2
    ledger.card_verified(c2, chip(2), {})  # verify without an explicit card_written
    assert ledger.batch("B1").state == "finished"
    assert ledger.claim("B1", "st", "rd") is None
    assert ledger.status("B1")["done"] == 2


def test_claims_are_in_order_and_end(ledger: Ledger) -> None:
    load(ledger, n=3)
    seqs = [ledger.claim("B1", "s", "r") for _ in range(3)]
    assert [c.seq for c in seqs if c] == [1, 2, 3]
    assert ledger.claim("B1", "s", "r") is None
    with pytest.raises(UnknownBatchError):
        ledger.claim("nope", "s", "r")
    with pytest.raises(LedgerError, match="station name"):
        ledger.claim("B1", "", "r")


def test_illegal_transitions_are_refused(ledger: Ledger) -> None:
    load(ledger, n=3)
    c = ledger.claim("B1", "s", "r")
    assert c is not None
    ledger.card_started(c, chip(1))
    with pytest.raises(RecordStateError, match="another card"):
        ledger.card_started(c, chip(2))
    with pytest.raises(RecordStateError, match="another chip serial"):
        ledger.card_written(c, chip(2))
    ledger.card_written(c, chip(1))
    with pytest.raises(RecordStateError, match="record state 'written'"):
        ledger.card_started(c, chip(1))
    with pytest.raises(RecordStateError, match="another chip serial"):
        ledger.card_verified(c, chip(2), {})
    c2 = ledger.claim("B1", "s", "r")
    assert c2 is not None
    with pytest.raises(ChipInUseError, match="CA000001"):
        ledger.card_written(c2, chip(1))  # chip 1 is live on record 1
    ledger.card_verified(c, chip(1), {})
    with pytest.raises(ChipInUseError):
        ledger.card_verified(c2, chip(1), {})  # ... and then verified there
    with pytest.raises(AlreadyDoneError):
        ledger.card_failed(c, chip(1), "late failure", max_remakes=3)
    with pytest.raises(RecordStateError, match="done records cannot be rejected"):
        ledger.reject_record("B1", c.seq, "x")
    with pytest.raises(UnknownRecordError):
        ledger.reject_record("B1", 99, "x")
    with pytest.raises(LedgerError, match="chip serial"):
        ledger.card_written(c2, b"")
    with pytest.raises(LedgerError, match="JSON"):
        ledger.card_verified(c2, chip(5), {"raw": b"\x00"})
    with pytest.raises(LedgerError, match="max_remakes"):
        ledger.card_failed(c2, None, "x", max_remakes=-1)


def test_card_failed_requeues_then_rejects_at_limit(ledger: Ledger) -> None:
    load(ledger, n=1)
    outcomes = []
    for i in range(3):
        c = ledger.claim("B1", "s", "r")
        assert c is not None and c.attempt == i + 1
        ledger.card_written(c, chip(i))
        outcomes.append(ledger.card_failed(c, chip(i), f"SW 6581 on attempt {i + 1}", max_remakes=2))
        assert ledger.card_failed(c, chip(i), "repeat", max_remakes=2) == outcomes[-1]  # idempotent
        expected = StaleClaimError if i < 2 else RecordStateError
        with pytest.raises(expected, match="released" if i < 2 else "'rejected'"):
            ledger.card_written(c, chip(i))
    assert outcomes == ["requeued", "requeued", "rejected"]
    rec = next(iter(ledger.records("B1")))
    assert (rec.state, rec.remakes, rec.attempts) == ("rejected", 3, 3)
    assert rec.reason == "remake limit reached (2); last failure: SW 6581 on attempt 3"
    cards = ledger.cards("B1")
    assert [(c.state, c.chip_serial, c.reason) for c in cards] == [
        ("spoiled", chip(0), "SW 6581 on attempt 1"), ("spoiled", chip(1), "SW 6581 on attempt 2"),
        ("spoiled", chip(2), "SW 6581 on attempt 3")]
    assert ledger.batch("B1").state == "finished"


def test_card_failed_without_card_and_with_unknown_chip(ledger: Ledger) -> None:
    load(ledger, n=2)
    c = ledger.claim("B1", "s", "r")
    assert c is not None
    assert ledger.card_failed(c, None, "no card in reader", max_remakes=5) == "requeued"
    assert ledger.cards("B1") == []
    c = ledger.claim("B1", "s", "r")
    assert c is not None and (c.seq, c.attempt) == (1, 2)  # the oldest pending record comes first again
    assert ledger.card_failed(c, chip(7), "ATR not recognised", max_remakes=1) == "rejected"
    assert [(k.state, k.chip_serial, k.attempt) for k in ledger.cards("B1")] == [("spoiled", chip(7), 2)]
    c = ledger.claim("B1", "s", "r")
    assert c is not None and (c.seq, c.attempt) == (2, 1)
    ledger.card_started(c, chip(7))  # a spoiled chip may be tried again


def test_stale_claim_and_double_verify_refused(ledger: Ledger, clock: Clock) -> None:
    load(ledger, n=1)
    a = ledger.claim("B1", "station-a", "r0")
    assert a is not None
    ledger.card_written(a, chip(1))
    clock.advance(300)
    ledger.heartbeat("station-b")
    rec = ledger.recover("B1", stale_after_s=120)
    assert [(r.seq, r.station, r.previous_state, r.spoiled_chip) for r in rec] == [(1, "station-a", "written", chip(1))]
    b = ledger.claim("B1", "station-b", "r0")
    assert b is not None and b.attempt == 2
    # station A wakes up: everything it tries with its old claim is refused
    with pytest.raises(StaleClaimError, match="claimed again"):
        ledger.card_written(a, chip(1))
    with pytest.raises(StaleClaimError):
        ledger.card_failed(a, chip(1), "x", max_remakes=3)
    ledger.card_verified(b, chip(2), {"by": "b"})
    with pytest.raises(AlreadyDoneError, match="never verified"):
        ledger.card_verified(a, chip(1), {"by": "a"})
    with pytest.raises(AlreadyDoneError):
        ledger.card_verified(b, chip(3), {"by": "b again"})
    verified = ledger.cards("B1", state="verified")
    assert [(c.chip_serial, c.attempt) for c in verified] == [(chip(2), 2)]
    spoiled = ledger.cards("B1", state="spoiled")
    assert [(c.chip_serial, c.reason) for c in spoiled] == [(chip(1), CRASH_REASON)]


def test_recover_dead_station_only(ledger: Ledger, clock: Clock) -> None:
    load(ledger, n=4)
    dead = ledger.claim("B1", "dead", "r0")
    dead2 = ledger.claim("B1", "dead", "r1")
    live = ledger.claim("B1", "live", "r0")
    assert dead and dead2 and live
    ledger.card_started(dead, chip(1))
    clock.advance(200)
    ledger.heartbeat("live")
    assert ledger.stations() == {"dead": clock.now - 200, "live": clock.now}
    got = ledger.recover("B1", stale_after_s=60)
    assert sorted((r.seq, r.previous_state, r.spoiled_chip) for r in got) == [(1, "claimed", chip(1)),
                                                                             (2, "claimed", None)]
    recs = {r.seq: r for r in ledger.records("B1")}
    assert (recs[1].state, recs[1].remakes) == ("pending", 1)   # a card was spoiled: a remake
    assert (recs[2].state, recs[2].remakes) == ("pending", 0)   # nothing was written: no remake
    assert recs[3].state == "claimed" and recs[3].station == "live"
    assert ledger.recover("B1", stale_after_s=60) == []          # nothing more to take back
    # the live station restarts: its own leftover claims are recovered at start-up whatever its heartbeat
    ledger.card_written(live, chip(3))
    got = ledger.recover("B1", stale_after_s=60, station="live")
    assert [(r.seq, r.spoiled_chip) for r in got] == [(3, chip(3))]
    assert "restart" in (next(r for r in ledger.records("B1") if r.seq == 3).reason or "")
    assert ledger.status("B1")["pending"] == 4
    with pytest.raises(UnknownBatchError):
        ledger.recover("nope", stale_after_s=1)


def test_reject_record_spoils_live_card(ledger: Ledger) -> None:
    load(ledger, n=2)
    c = ledger.claim("B1", "s", "r")
    assert c is not None
    ledger.card_written(c, chip(4))
    ledger.reject_record("B1", c.seq, "name does not fit GBK")
    ledger.reject_record("B1", c.seq, "again")  # idempotent
    card = ledger.cards("B1")[0]
    assert (card.state, card.reason) == ("spoiled", "record rejected: name does not fit GBK")
    with pytest.raises(RecordStateError, match="'rejected'"):
        ledger.card_verified(c, chip(4), {})
    ledger.reject_record("B1", 2, "withdrawn")   # pending record
    assert ledger.batch("B1").state == "finished"


def test_cancel(ledger: Ledger) -> None:
    load(ledger, n=3)
    c = ledger.claim("B1", "s", "r")
    assert c is not None
    ledger.cancel("B1")
    ledger.cancel("B1")  # idempotent
    assert ledger.claim("B1", "s", "r") is None
    ledger.card_verified(c, chip(1), {})  # a card in flight may still finish
    assert ledger.batch("B1").state == "cancelled"
    load(ledger, "B2", n=1, start=10, digest="05" * 32)
    _finish_all(ledger, "B2", 10)
    with pytest.raises(BatchStateError):
        ledger.cancel("B2")
    with pytest.raises(UnknownBatchError):
        ledger.cancel("B9")


def test_records_paging_and_data(ledger: Ledger) -> None:
    load(ledger, n=7)
    rows = list(ledger.records("B1", page_size=3))
    assert [r.seq for r in rows] == list(range(1, 8)) and all(r.fields is None for r in rows)
    with_data = list(ledger.records("B1", include_data=True, page_size=2))
    assert with_data[6].fields == people(7)[6][1]
    assert "Person" not in repr(with_data[6])


# ------------------------------------------------------------------------------------------------ concurrency
def test_concurrent_claims_never_share_a_record(ledger_url: str, clock: Clock) -> None:
    n, threads = 120, 8
    with Ledger.open(ledger_url, clock=clock) as lg:
        load(lg, n=n)
    got: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker(k: int) -> None:
        try:
            with Ledger.open(ledger_url, clock=clock) as lg:
                barrier.wait()
                while (c := lg.claim("B1", f"station-{k}", "r0")) is not None:
                    got[k].append(c.seq)
                    lg.card_verified(c, bytes([k]) + c.seq.to_bytes(4, "big"), {"k": k})
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not errors, errors
    claimed = [s for g in got for s in g]
    assert sorted(claimed) == list(range(1, n + 1))          # every record once, none twice
    with Ledger.open(ledger_url, clock=clock) as lg:
        assert lg.status("B1")["done"] == n
        assert lg.batch("B1").state == "finished"
        assert Counter(c.seq for c in lg.cards("B1", state="verified")) == Counter(range(1, n + 1))


def test_one_ledger_shared_between_threads(ledger: Ledger) -> None:
    load(ledger, n=40)
    got: list[int] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        while (c := ledger.claim("B1", "s", f"r{k}")) is not None:
            with lock:
                got.append(c.seq)
            ledger.card_verified(c, bytes([k, c.seq]), {})

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert sorted(got) == list(range(1, 41))


def test_busy_sqlite_raises_typed_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/busy.db"
    with Ledger.open(url) as a, Ledger.open(url, busy_timeout_s=0.05) as b:
        load(a, n=1)
        with a._db.transaction(write=True):  # hold the write lock
            with pytest.raises(LedgerError, match="locked"):
                b.claim("B1", "s", "r")
    assert os.path.exists(tmp_path / "busy.db")
