"""Crash safety of ``cardkit batch run``: the real console script killed with SIGKILL at random points —
before, between and during card writes — and resumed, again and again; then nothing is lost, nothing is
issued twice, every spoiled card is accounted for and the journal verifies."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cardkit.batch import Ledger, build_report, verify_journal
from cardkit.profiles.synthetic import SSC_FIELDS, csv_text, ssc_people

ROOT = Path(__file__).resolve().parents[2]
CARDKIT = str(Path(sys.executable).with_name("cardkit"))
RECORDS = 48
KILLS = 12


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "CARDKIT_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _in_flight(url: str) -> set[str]:
    """Chip serials of the cards a kill left started or written but not finished."""
    if not _loaded(url):
        return set()
    with Ledger.open(url) as ledger:
        return {c.chip_serial.hex().upper() for st in ("claimed", "written") for c in ledger.cards("B", state=st)}


def test_sigkill_at_random_points_then_resume(tmp_path: Path) -> None:
    rng = random.Random(20250101)
    src = tmp_path / "people.csv"
    rows = list(ssc_people(RECORDS, seed=21))
    src.write_text(csv_text(rows, SSC_FIELDS), encoding="utf-8")
    out, home = tmp_path / "out", tmp_path / "home"
    url = f"sqlite:///{out}/ledger.db"
    common = ["--readers", "virtual:4", "--keys", str(ROOT / "keys/test/ssc.toml"), "--allow-test-keys",
              "--out", str(out), "--station", "line-1", "--latency-ms", "3", "--progress-interval", "60"]
    first = [CARDKIT, "batch", "run", str(src), "--profile", "ssc", "--batch-id", "B", *common]
    again = [CARDKIT, "batch", "resume", "B", "--ledger", url, *common]
    expected_spoiled: set[str] = set()
    mid_card_kills = 0
    journal = out / "journal.jsonl"
    for k in range(KILLS):
        cmd = again if _loaded(url) and k % 3 else first  # `run` again continues the same batch too
        before = _lines(journal)
        proc = subprocess.Popen(cmd, env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if k % 2 == 0:  # journal trigger: right after the n-th new line (card started / written / verified)
            target = before + rng.randint(2, 14)
            deadline = time.monotonic() + 30
            while _lines(journal) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
        else:  # timing trigger: anywhere — start-up, loading, recovery, mid-APDU
            time.sleep(rng.uniform(0.3, 1.4))
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            assert proc.returncode == 0, err  # it finished before the trigger: fine, but it must succeed
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
        left = _in_flight(url)
        mid_card_kills += bool(left - expected_spoiled)
        expected_spoiled |= left
    final = subprocess.run(again, env=_env(home), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert k >= 9 and mid_card_kills >= 3, (k, mid_card_kills)  # enough kills, several in the middle of cards

    with Ledger.open(url) as ledger:
        status = ledger.status("B")
        cards = ledger.cards("B")
        report = build_report(ledger, "B", journal=journal)
    assert status["done"] == RECORDS and status["total"] == RECORDS  # 0 lost
    verified = [c for c in cards if c.state == "verified"]
    assert sorted(c.seq for c in verified) == list(range(1, RECORDS + 1))  # 0 issued twice
    spoiled = [c for c in cards if c.state == "spoiled"]
    assert {c.chip_serial.hex().upper() for c in spoiled} == expected_spoiled  # exactly the cards in flight
    assert all(c.reason == "unknown state after crash" for c in spoiled)
    assert report["reconciliation"]["reconciles"], report["reconciliation"]
    # every spoiled card is in the journal, and its image (if it got one) is set aside
    events = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    journaled = {e["chip_serial"] for e in events if e["event"] in ("card.spoiled", "card.failed")}
    assert {c.chip_serial.hex().upper() for c in spoiled} <= journaled
    assert {p.stem for p in (out / "cards").glob("*.json")} == {c.chip_serial.hex().upper() for c in verified}
    assert not list((out / "cards").glob(".pending-*"))
    assert {e["chip_serial"] for e in events if e["event"] == "card.verified"} >= {p.stem for p in
                                                                                  (out / "cards").glob("*.json")}
    assert verify_journal(journal, expect_head=report["journal"]["head"]).ok
    audit = subprocess.run([CARDKIT, "audit", "verify", str(journal)], env=_env(home), capture_output=True,
                           text=True)
    assert audit.returncode == 0 and "intact" in audit.stdout
    # the feeder handed out every serial once: verified, spoiled, or never written (still blank)
    issued = json.loads((home / "feeder" / "feeder.json").read_text())["next"] - 1
    assert len(cards) <= issued
    # the report of the resumed batch reconciles through the CLI too (exit 0: nothing rejected)
    rep = subprocess.run([CARDKIT, "batch", "report", "B", "--ledger", url], env=_env(home), capture_output=True,
                         text=True)
    assert rep.returncode == 0, rep.stderr
    assert "Reconciles      YES" in rep.stdout
    for r in rows:
        assert r["citizen_id"] not in rep.stdout + final.stderr + journal.read_text(encoding="utf-8")


def _loaded(url: str) -> bool:
    if not Path(url.removeprefix("sqlite:///")).exists():
        return False
    with Ledger.open(url) as ledger:
        return any(b.id == "B" for b in ledger.batches())


pytestmark = pytest.mark.timeout(280)
