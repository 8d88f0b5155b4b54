"""Four ``cardkit batch run`` station processes share one PostgreSQL ledger; one is killed (SIGKILL) mid-way.
The survivors take back its claims once its heartbeat is stale and finish the batch: every record done once,
the dead station's half-written cards spoiled and journaled, every journal intact, the report reconciles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cardkit.batch import Ledger, build_report, verify_journal
from cardkit.profiles.synthetic import SSC_FIELDS, csv_text, ssc_people

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
CARDKIT = str(Path(sys.executable).with_name("cardkit"))
RECORDS = 72
STATIONS = 4
VICTIM = 1


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_four_stations_one_killed(tmp_path: Path, pg_url: str) -> None:
    src = tmp_path / "people.csv"
    rows = list(ssc_people(RECORDS, seed=41))
    src.write_text(csv_text(rows, SSC_FIELDS), encoding="utf-8")
    env = {**os.environ, "CARDKIT_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    outs = [tmp_path / f"station-{i}" for i in range(STATIONS)]
    procs = []
    for i, out in enumerate(outs):
        cmd = [CARDKIT, "batch", "run", str(src), "--profile", "ssc", "--batch-id", "B", "--ledger", pg_url,
               "--station", f"s{i}", "--out", str(out), "--readers", "virtual:3", "--latency-ms", "3",
               "--stale-after", "2", "--keys", str(ROOT / "keys/test/ssc.toml"), "--allow-test-keys",
               "--progress-interval", "60"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    victim_journal = outs[VICTIM] / "journal.jsonl"
    deadline = time.monotonic() + 60
    while _lines(victim_journal) < 12:  # started, written and verified cards: it is mid-way
        assert procs[VICTIM].poll() is None and time.monotonic() < deadline, procs[VICTIM].communicate()
        time.sleep(0.005)
    procs[VICTIM].send_signal(signal.SIGKILL)
    procs[VICTIM].communicate()
    with Ledger.open(pg_url) as ledger:
        left = {c.chip_serial.hex().upper() for st in ("claimed", "written") for c in ledger.cards("B", state=st)
                if c.station == f"s{VICTIM}"}
        done_before = ledger.status("B")["done"]
    assert done_before < RECORDS
    results = {}
    for i, p in enumerate(procs):
        if i != VICTIM:
            stdout, stderr = p.communicate(timeout=180)
            results[i] = (p.returncode, stdout, stderr)
    for i, (code, _stdout, stderr) in results.items():
        assert code == 0, f"station s{i}: {stderr[-3000:]}"

    with Ledger.open(pg_url) as ledger:
        status = ledger.status("B")
        cards = ledger.cards("B")
        report = build_report(ledger, "B")
    assert status["done"] == RECORDS == status["total"]
    verified = [c for c in cards if c.state == "verified"]
    assert sorted(c.seq for c in verified) == list(range(1, RECORDS + 1))  # exactly once
    assert len({c.chip_serial for c in cards}) == len(cards)
    spoiled = {c.chip_serial.hex().upper() for c in cards if c.state == "spoiled"}
    assert spoiled == left and left  # exactly the victim's cards in flight
    assert {c.station for c in verified} >= {f"s{i}" for i in results}
    assert report["reconciliation"]["reconciles"], report["reconciliation"]
    journaled: set[str] = set()
    for out in outs:
        rep = verify_journal(out / "journal.jsonl")
        assert rep.ok, (out.name, rep.problems)
        for line in (out / "journal.jsonl").read_text(encoding="utf-8").splitlines():
            e = json.loads(line)
            if e["event"] == "card.spoiled":
                journaled.add(e["chip_serial"])
    assert spoiled <= journaled  # the survivor that took the claims back journaled the spoiled cards
    images = {p.stem for out in outs for p in (out / "cards").glob("*.json")}
    pending = {p.name[len(".pending-"):-5] for p in (outs[VICTIM] / "cards").glob(".pending-*.json")}
    chips = {c.chip_serial.hex().upper() for c in verified}
    assert images <= chips <= images | pending
    rep = subprocess.run([CARDKIT, "batch", "report", "B", "--ledger", pg_url, "--out", str(tmp_path / "report"),
                          "--journal", str(outs[0] / "journal.jsonl")], env=env, capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    assert "Reconciles      YES" in rep.stdout and f"spoiled {len(spoiled)}" in rep.stdout
    everything = rep.stdout + "".join(o + e for _, o, e in results.values())
    for r in rows:
        assert r["citizen_id"] not in everything and r["name"] not in everything
