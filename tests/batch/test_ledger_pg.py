"""PostgreSQL-only ledger tests: several processes at once (SKIP LOCKED claims, serialized loads).

The state-machine tests in test_ledger.py run on PostgreSQL too (the ``ledger_url`` fixture)."""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections import Counter
from typing import Any

import pytest

from cardkit.batch import DuplicateIdentityError, Ledger, LedgerBusyError, LedgerDatabaseError, Pseudonymizer

pytestmark = pytest.mark.postgres

PZ = Pseudonymizer(b"test pseudonym key, not secret!!")
DIGEST = "ab" * 32
_CTX = mp.get_context("fork")  # the children only use what they open themselves


def _records(n: int, start: int = 0) -> list[tuple[int, dict[str, str]]]:
    return [(i + 2, {"citizen_id": f"32010219800101{i:04d}", "name": f"P{i}"}) for i in range(start, start + n)]


def _ident(fields: Any) -> str:
    return PZ.of(fields["citizen_id"])


def _claimer(url: str, k: int, start: Any, out: Any) -> None:
    got: list[int] = []
    try:
        with Ledger.open(url) as lg:
            start.wait(30)
            while (c := lg.claim("B1", f"proc-{k}", "r0")) is not None:
                got.append(c.seq)
                lg.card_written(c, k.to_bytes(1, "big") + c.seq.to_bytes(4, "big"))
                lg.card_verified(c, k.to_bytes(1, "big") + c.seq.to_bytes(4, "big"), {"proc": k})
        out.put((k, got, None))
    except BaseException as exc:
        out.put((k, got, repr(exc)))


def test_four_processes_never_claim_one_record_twice(pg_url: str) -> None:
    n, procs = 200, 4
    with Ledger.open(pg_url) as lg:
        assert lg.dialect == "postgresql" and lg.path is None
        lg.create_batch("B1", "ssc", DIGEST, _records(n), _ident)
    start, out = _CTX.Event(), _CTX.Queue()
    ps = [_CTX.Process(target=_claimer, args=(pg_url, k, start, out)) for k in range(procs)]
    for p in ps:
        p.start()
    start.set()
    results = []
    for _ in ps:
        try:
            results.append(out.get(timeout=120))
        except queue.Empty:
            pytest.fail("a claimer process did not report")
    for p in ps:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert [r[2] for r in results] == [None] * procs, results
    claimed = [s for r in results for s in r[1]]
    assert sorted(claimed) == list(range(1, n + 1))   # each record exactly once
    with Ledger.open(pg_url) as lg:
        assert lg.status("B1") == {"pending": 0, "claimed": 0, "written": 0, "done": n, "rejected": 0, "total": n}
        assert lg.batch("B1").state == "finished"
        verified = lg.cards("B1", state="verified")
        assert Counter(c.seq for c in verified) == Counter(range(1, n + 1))
        assert {c.station for c in verified} == {f"proc-{r[0]}" for r in results if r[1]}


def _loader(url: str, batch_id: str, digest: str, start: Any, out: Any) -> None:
    try:
        with Ledger.open(url) as lg:
            start.wait(30)
            out.put((batch_id, lg.create_batch(batch_id, "ssc", digest, _records(300), _ident)))
    except DuplicateIdentityError as exc:
        out.put((batch_id, f"dup:{len(exc.duplicates)}"))
    except BaseException as exc:
        out.put((batch_id, repr(exc)))


def test_concurrent_loads_of_the_same_people_admit_one(pg_url: str) -> None:
    Ledger.open(pg_url).close()  # schema in place before the race
    start, out = _CTX.Event(), _CTX.Queue()
    ps = [_CTX.Process(target=_loader, args=(pg_url, f"L{k}", f"{k:02d}" * 32, start, out)) for k in range(3)]
    for p in ps:
        p.start()
    start.set()
    results = dict(out.get(timeout=120) for _ in ps)
    for p in ps:
        p.join(timeout=30)
    assert sorted(results.values(), key=str) == [300, "dup:300", "dup:300"], results
    with Ledger.open(pg_url) as lg:
        assert len(lg.batches()) == 1


def test_concurrent_first_open_migrates_once(pg_url: str) -> None:
    start, out = _CTX.Event(), _CTX.Queue()

    def opener() -> None:
        try:
            start.wait(30)
            Ledger.open(pg_url).close()
            out.put(None)
        except BaseException as exc:
            out.put(repr(exc))

    ps = [_CTX.Process(target=opener) for _ in range(4)]
    for p in ps:
        p.start()
    start.set()
    assert [out.get(timeout=60) for _ in ps] == [None] * 4
    for p in ps:
        p.join(timeout=30)
    with Ledger.open(pg_url) as lg, lg._db.transaction(write=False) as tx:
        assert tx.execute("SELECT version FROM schema_version") == [(1,)]


def test_unreachable_server_is_a_ledger_error(postgres_url: str) -> None:
    import re
    import socket

    with socket.socket() as s:  # a port nobody listens on (and so no socket file for it)
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    bad = re.sub(r"port=\d+", f"port={free}", postgres_url)
    with pytest.raises(LedgerDatabaseError, match="cannot connect"):
        Ledger.open(bad, busy_timeout_s=2)


def test_lock_wait_is_bounded(pg_url: str) -> None:
    with Ledger.open(pg_url) as a, Ledger.open(pg_url, busy_timeout_s=0.2) as b:
        a.create_batch("B1", "ssc", DIGEST, _records(2), _ident)
        with a._db.transaction(write=True) as tx:
            tx.execute("SELECT state FROM batches WHERE id = ? FOR UPDATE", ("B1",))  # a stuck station
            with pytest.raises(LedgerBusyError, match="LockNotAvailable"):
                b.cancel("B1")
        b.cancel("B1")  # the lock is gone: works, and the connection is still usable
        assert b.batch("B1").state == "cancelled"
