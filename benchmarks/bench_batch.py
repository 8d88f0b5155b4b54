"""Batch issuance figures, all measured in one run (ratios against baselines of the same run):

1. scaling — SSC cards per minute on 1, 2, 4, 8, 16, 32, 64 in-process virtual readers whose card answers
   every APDU after 5 ms (a contact card's order of magnitude), through the whole runner (ledger on SQLite,
   journal, card images); efficiency = rate(n) / (n x rate(1));
2. data preparation — validating and encoding 1,000,000 records (``--quick``: 100,000) on 2 worker processes:
   records/s and peak RSS (parent and workers), against one process on a prefix;
3. ledger overhead per card — the four ledger transactions of a card (claim, started, written, verified with
   a manifest) and the three journal lines, on SQLite and on PostgreSQL (a throwaway server is started when
   PostgreSQL is installed; skipped with a message otherwise).

Run: ``python -m benchmarks bench_batch`` (``CARDKIT_BENCH_QUICK=1`` for the quick mode) or
``python -m benchmarks.bench_batch [--quick]``.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cardkit.batch import Journal, Ledger, Pseudonymizer
from cardkit.batch.runner import BatchRunner, RunConfig, VirtualSlot, make_feeder
from cardkit.batch.validate import BatchValidator, load_batch, prepare_file
from cardkit.keys.store import TestKeyFile
from cardkit.profiles.model import find_profile, load_profile
from cardkit.profiles.synthetic import SSC_FIELDS, csv_text, ssc_people
from cardkit.readers import TEST_KEYS

READERS = (1, 2, 4, 8, 16, 32, 64)
LATENCY_S = 0.005
PZ = Pseudonymizer(b"benchmark pseudonym key, 32 byte")


def _quick() -> bool:
    return "--quick" in sys.argv or os.environ.get("CARDKIT_BENCH_QUICK") == "1"


def _write_people(path: Path, n: int, seed: int = 1) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(SSC_FIELDS) + "\n")
        batch: list[dict[str, str]] = []
        for row in ssc_people(n, seed=seed):
            batch.append(row)
            if len(batch) == 10_000:
                fh.write(csv_text(batch, SSC_FIELDS).split("\n", 1)[1])
                batch.clear()
        if batch:
            fh.write(csv_text(batch, SSC_FIELDS).split("\n", 1)[1])


# ------------------------------------------------------------------------------------------- 1. scaling
def scaling(work: Path, quick: bool) -> None:
    profile = load_profile(find_profile("ssc"))
    keys = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    print(f"cards/min vs virtual readers ({LATENCY_S * 1000:.0f} ms per APDU, SQLite ledger, journal, images)")
    base = None
    for n in READERS:
        cards = max(8 if quick else 16, (3 if quick else 6) * n)
        d = work / f"scale-{n}"
        d.mkdir()
        src = d / "b.csv"
        src.write_text(csv_text(ssc_people(cards, seed=n), SSC_FIELDS), encoding="utf-8")
        url = f"sqlite:///{d}/ledger.db"
        with Ledger.open(url) as ledger:
            load_batch(ledger, src, profile, "B", PZ)
        feeder = make_feeder(profile, keys, d / "feeder", latency_s=LATENCY_S)
        slots = [VirtualSlot(f"v{i}", feeder) for i in range(n)]
        t0 = time.perf_counter()
        result = BatchRunner(RunConfig(url, "B", "bench", d), profile, keys, slots).run()
        dt = time.perf_counter() - t0
        if result.verified != cards:
            raise SystemExit(f"scaling run with {n} readers verified {result.verified} of {cards} cards")
        rate = cards * 60 / dt
        base = base or rate
        print(f"  {n:3d} readers: {cards:4d} cards in {dt:6.2f} s = {rate:8.1f} cards/min, "
              f"x{rate / base:5.2f} vs 1 reader, efficiency {rate / (n * base):5.1%}")
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------------- 2. preparation
def _rss_kib() -> tuple[int, int]:
    status = Path("/proc/self/status").read_text()
    m = re.search(r"VmHWM:\s+(\d+)", status)
    own = int(m.group(1)) if m else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def preparation(work: Path, quick: bool) -> None:
    n = 100_000 if quick else 1_000_000
    prefix = 20_000
    profile = load_profile(find_profile("ssc"))
    src = work / "people.csv"
    t0 = time.perf_counter()
    _write_people(src, n)
    print(f"data preparation: {n:,} synthetic records ({src.stat().st_size / 1e6:.0f} MB CSV, written in "
          f"{time.perf_counter() - t0:.1f} s)")
    head = work / "head.csv"
    with open(src, encoding="utf-8") as fin, open(head, "w", encoding="utf-8") as fout:
        for i, line in enumerate(fin):
            if i > prefix:
                break
            fout.write(line)
    t0 = time.perf_counter()
    one = sum(1 for _, p in prepare_file(head, profile) if not isinstance(p, str))
    single = one / (time.perf_counter() - t0)
    print(f"  prepare, 1 process, first {prefix:,}: {single:10,.0f} records/s")
    t0 = time.perf_counter()
    ok = sum(1 for _, p in prepare_file(src, profile, jobs=2) if not isinstance(p, str))
    dt = time.perf_counter() - t0
    own, child = _rss_kib()
    print(f"  prepare, 2 processes, all {n:,}:   {ok / dt:10,.0f} records/s ({dt:.1f} s, x{ok / dt / single:.2f} vs 1 "
          f"process); peak RSS parent {own / 1024:.0f} MiB, workers <= {child / 1024:.0f} MiB (ru_maxrss: includes "
          "the parent at fork)")
    if ok != n:
        raise SystemExit(f"{n - ok} synthetic records failed preparation")
    v = BatchValidator(profile, jobs=2)
    t0 = time.perf_counter()
    problems = sum(1 for _ in v.problems(src))
    dt = time.perf_counter() - t0
    own, child = _rss_kib()
    print(f"  validate (fields + duplicates), 2 processes: {n / dt:10,.0f} records/s ({dt:.1f} s, {problems} "
          f"problems); peak RSS parent {own / 1024:.0f} MiB, largest worker {child / 1024:.0f} MiB")
    src.unlink()


# ------------------------------------------------------------------------------------------- 3. ledger
def _ledger_per_card(url: str, work: Path, n: int) -> tuple[float, float]:
    rows = [(i + 2, r) for i, r in enumerate(ssc_people(n, seed=7))]
    manifest = {"profile": "ssc", "algorithm": "sm4", "atr": "3B" * 18, "files": {f"SSSE/EF0{i}": "ab" * 32
                                                                                     for i in range(5, 9)},
                "personalize_ms": 12.3, "verify_ms": 3.4}
    with Ledger.open(url) as ledger, Journal(work / f"j-{abs(hash(url))}.jsonl") as journal:
        ledger.create_batch("L", "ssc", "0" * 64, rows, identity_of=lambda f: PZ.of(f["citizen_id"]))
        t0 = time.perf_counter()
        for k in range(n):
            claim = ledger.claim("L", "bench", "r0")
            assert claim is not None
            chip = (0xB0000000 + k).to_bytes(4, "big")
            ledger.card_started(claim, chip)
            ledger.card_written(claim, chip)
            ledger.card_verified(claim, chip, manifest)
        led = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for k in range(n):
            for event in ("card.started", "card.written", "card.verified"):
                journal.append(event, batch="L", record=k, attempt=1, chip_serial=f"{k:08X}", reader="r0")
        jour = (time.perf_counter() - t0) / n
    return led * 1000, jour * 1000


@contextmanager
def _postgres() -> Iterator[str | None]:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    bindir = found[-1].parent if found else None
    try:
        import psycopg
    except ImportError:
        bindir = None
    if bindir is None:
        yield None
        return
    base = Path(tempfile.mkdtemp(prefix="ckbench-"))
    user: dict[str, int] = {}
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            yield None
            return
        user = {"user": pw.pw_uid, "group": pw.pw_gid}
        os.chown(base, pw.pw_uid, pw.pw_gid)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}
    proc = None
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(base / "d"), "-U", "cardkit", "--auth=trust",
                        "--encoding=UTF8", "--no-locale", "--no-sync"], cwd=base, env=env, capture_output=True,
                       check=True, **user)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([str(bindir / "postgres"), "-D", str(base / "d"), "-k", str(base), "-h", "127.0.0.1",
                                 "-p", str(port)], cwd=base, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, **user)
        admin = f"postgresql://cardkit@/postgres?host={base}&port={port}"
        for _ in range(300):
            try:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute("CREATE DATABASE bench")
                break
            except psycopg.OperationalError:
                time.sleep(0.1)
        yield f"postgresql://cardkit@/bench?host={base}&port={port}"
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)


def ledger_overhead(work: Path, quick: bool) -> None:
    n = 200 if quick else 1000
    print(f"ledger overhead per card ({n} cards: claim + started + written + verified; 3 journal lines)")
    ms, jms = _ledger_per_card(f"sqlite:///{work}/ledger-bench.db", work, n)
    print(f"  SQLite (WAL, synchronous=FULL): {ms:6.2f} ms/card ledger, {jms:5.2f} ms/card journal (fsync each)")
    with _postgres() as url:
        if url is None:
            print("  PostgreSQL: skipped (server binaries, psycopg or the postgres user not available)")
            return
        ms_pg, _ = _ledger_per_card(url, work, n)
        print(f"  PostgreSQL (local socket, default durability): {ms_pg:6.2f} ms/card ledger "
              f"(x{ms_pg / ms:.2f} vs SQLite)")


def main() -> None:
    quick = _quick()
    work = Path(tempfile.mkdtemp(prefix="cardkit-bench-batch-"))
    old = os.environ.get("CARDKIT_HOME")
    os.environ["CARDKIT_HOME"] = str(work / "home")
    import logging

    logging.getLogger("cardkit").setLevel(logging.ERROR)
    try:
        preparation(work, quick)  # first: its peak RSS figures must not include the other parts
        scaling(work, quick)
        ledger_overhead(work, quick)
    finally:
        if old is None:
            os.environ.pop("CARDKIT_HOME", None)
        else:
            os.environ["CARDKIT_HOME"] = old
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
