"""Reconciliation report: counts, cross-checks, throughput, timings, files, and no personal data in outputs."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardkit.batch import Journal, Ledger, Pseudonymizer, ReportError, build_report, write_report
from cardkit.batch.report import CSV_COLUMNS, REPORT_FILES

from .conftest import Clock

BATCH = "2025-06-15-A"


def people(n: int) -> list[tuple[int, dict[str, str]]]:
    return [(i + 2, {"citizen_id": f"44030420041215{7900 + i:04d}", "name": f"许燕霞{i}号",
                     "phone": f"1509478{i:04d}"}) for i in range(n)]


@pytest.fixture
def scenario(tmp_path: Path, clock: Clock) -> Iterator[tuple[Ledger, Path, dict[str, object]]]:
    """A small production day on SQLite: 2 stations x 2 readers, failures, remakes, rejects, leftovers."""
    url = f"sqlite:///{tmp_path}/bureau.db"
    lg = Ledger.open(url, clock=clock)
    pz = Pseudonymizer.for_ledger(tmp_path / "bureau.db")
    recs = people(12)
    journal = Journal(tmp_path / "audit.jsonl", clock=clock)
    lg.create_batch(BATCH, "ssc", "ab" * 32, recs, lambda f: pz.of(f["citizen_id"]),
                    rejected=[(14, "bad check digit"), (15, "birth date in the future")], options={"max_remakes": 1})
    journal.append("batch.loaded", batch=BATCH, records=14)
    durations: list[float] = []
    readers = [("st-1", "r0"), ("st-1", "r1"), ("st-2", "r0"), ("st-2", "r1")]
    serial = 0
    # 3 rounds, each claims on every reader in turn; 1 record is rejected by the runner, some cards fail,
    # 2 records are left pending
    for rnd in range(3):
        for st_name, rd in readers:
            c = lg.claim(BATCH, st_name, rd)
            if c is None:
                continue
            serial += 1
            chip = serial.to_bytes(4, "big")
            clock.advance(7 + rnd)
            lg.card_started(c, chip)
            lg.card_written(c, chip)
            if c.seq == 3:
                lg.reject_record(BATCH, c.seq, "name does not fit GBK")
                journal.append("record.rejected", batch=BATCH, record=c.seq, identity=c.identity)
            elif c.seq in (2, 5) and c.attempt <= (2 if c.seq == 5 else 1):
                out = lg.card_failed(c, chip, f"verify mismatch EF06/{c.seq:02d}", max_remakes=1)
                journal.append("card.failed", batch=BATCH, record=c.seq, chip_serial=chip.hex(), outcome=out,
                               identity=c.identity)
            else:
                clock.advance(3)
                lg.card_verified(c, chip, {"chip": chip.hex(), "files": 3})
                durations.append(clock.now - c.claimed_at)
                journal.append("card.verified", batch=BATCH, record=c.seq, chip_serial=chip.hex(),
                               identity=c.identity, reader=f"{st_name}/{rd}")
            clock.advance(1)
    journal.close()
    yield lg, tmp_path, {"durations": durations, "records": recs}
    lg.close()


def test_counts_and_reconciliation(scenario: tuple[Ledger, Path, dict[str, object]]) -> None:
    lg, tmp, facts = scenario
    rep = build_report(lg, BATCH, journal=tmp / "audit.jsonl")
    st = lg.status(BATCH)
    assert rep["records"] == st
    rec = rep["reconciliation"]
    assert rec["input"] == 14 and rec["reconciles"] is True
    assert rec["done"] + rec["rejected"] + rec["outstanding"] == 14
    assert (rec["done"], rec["rejected"]) == (st["done"], st["rejected"])
    assert rec["outstanding"] == st["pending"] + st["claimed"] + st["written"] > 0
    assert all(c["ok"] for c in rec["checks"]) and len(rec["checks"]) == 5
    # record 5 failed twice with max_remakes=1: rejected by the remake limit; record 2 failed once: remade
    rejected = {r["seq"]: r["reason"] for r in rep["rejected_records"]}
    assert rejected[5].startswith("remake limit reached (1)") and rejected[3] == "name does not fit GBK"
    assert rejected[13] == "bad check digit"
    assert rep["remakes"] == {"total": 3, "records_remade": 2, "max_per_record": 2}
    spoiled = rep["spoiled_cards"]
    assert sorted((s["seq"], s["reason"]) for s in spoiled) == [
        (2, "verify mismatch EF06/02"), (3, "record rejected: name does not fit GBK"),
        (5, "verify mismatch EF06/05"), (5, "verify mismatch EF06/05")]
    assert all(len(s["chip_serial"]) == 8 and s["line"] == s["seq"] + 1 for s in spoiled)
    assert rep["cards"]["verified"] == st["done"] and rep["cards"]["spoiled"] == 4
    # throughput: every verified card in exactly one bucket of its reader and of its station
    tp = rep["throughput"]
    assert sum(sum(v) for v in tp["per_reader"].values()) == st["done"]
    assert sum(sum(v) for v in tp["per_station"].values()) == st["done"]
    assert set(tp["per_reader"]) <= {"st-1/r0", "st-1/r1", "st-2/r0", "st-2/r1"}
    assert all(len(v) == tp["buckets"] for v in tp["per_reader"].values()) and tp["buckets"] >= 2
    for name in ("st-1", "st-2"):
        assert tp["per_station"][name] == [sum(x) for x in zip(*(v for k, v in tp["per_reader"].items()
                                                                if k.startswith(name + "/")), strict=True)]
    durations = facts["durations"]
    assert isinstance(durations, list)
    t = rep["timings"]
    assert t["cards_verified"] == len(durations) == st["done"]
    assert t["mean_s_per_card"] == pytest.approx(statistics.fmean(durations), abs=1e-3)
    assert t["median_s_per_card"] == pytest.approx(statistics.median(durations), abs=1e-3)
    assert t["start"] < t["end"]
    j = rep["journal"]
    assert j["ok"] and j["lines"] > 10 and len(j["head"]) == 64
    assert len(rep["record_list"]) == 14
    assert {r["state"] for r in rep["record_list"]} <= {"pending", "done", "rejected", "claimed", "written"}


def test_broken_ledger_does_not_reconcile(scenario: tuple[Ledger, Path, dict[str, object]]) -> None:
    lg, _, _ = scenario
    done = [r for r in lg.records(BATCH) if r.state == "done"]
    with lg._db.transaction(write=True) as tx:  # simulate damage: a verified card row vanishes
        tx.execute("DELETE FROM cards WHERE batch_id = ? AND seq = ? AND state = 'verified'", (BATCH, done[0].seq))
    rep = build_report(lg, BATCH)
    failed = [c for c in rep["reconciliation"]["checks"] if not c["ok"]]
    assert rep["reconciliation"]["reconciles"] is False
    assert [c["name"] for c in failed] == ["every done record has exactly one verified card, with its chip serial"]
    assert f"records {done[0].seq}" in failed[0]["detail"]
    with lg._db.transaction(write=True) as tx:  # and a record row vanishes
        tx.execute("DELETE FROM records WHERE batch_id = ? AND seq = ?", (BATCH, 14))
    rep = build_report(lg, BATCH)
    names = [c["name"] for c in rep["reconciliation"]["checks"] if not c["ok"]]
    assert "input = done + rejected + outstanding" in names and "every input record is in the ledger" in names


def test_written_files(scenario: tuple[Ledger, Path, dict[str, object]]) -> None:
    lg, tmp, _ = scenario
    rep = build_report(lg, BATCH, journal=tmp / "audit.jsonl")
    old = os.umask(0)  # even with a permissive umask the files are private
    try:
        paths = write_report(rep, tmp / "out" / "day1")
    finally:
        os.umask(old)
    assert sorted(paths) == sorted(REPORT_FILES)
    assert stat.S_IMODE((tmp / "out" / "day1").stat().st_mode) == 0o700
    for p in paths.values():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name
    assert json.loads(paths["report.json"].read_text(encoding="utf-8")) == rep
    rows = list(csv.reader(io.StringIO(paths["records.csv"].read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 15
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 15))
    done = {r.seq: r for r in lg.records(BATCH) if r.state == "done"}
    for r in rows[1:]:
        if int(r[0]) in done:
            assert r[2] == "done" and bytes.fromhex(r[3]) == done[int(r[0])].chip_serial
            assert r[4] == done[int(r[0])].identity
    html = paths["report.html"].read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "<polyline" in html and "reconciles" in html
    for external in ("http://", "https://", "<script", "src=", "<link", "url(", "@import"):
        assert external not in html
    summary = paths["summary.txt"].read_text(encoding="utf-8")
    assert "Reconciles      YES" in summary and "Input records   14" in summary
    assert "verify mismatch EF06/02" in summary
    # rewriting replaces the files and keeps them private
    write_report(rep, tmp / "out" / "day1")
    assert stat.S_IMODE(paths["records.csv"].stat().st_mode) == 0o600


def test_no_personal_data_in_report_or_journal(scenario: tuple[Ledger, Path, dict[str, object]]) -> None:
    lg, tmp, facts = scenario
    write_report(build_report(lg, BATCH, journal=tmp / "audit.jsonl"), tmp / "out")
    recs = facts["records"]
    assert isinstance(recs, list)
    needles = {v for _, fields in recs for k, v in fields.items() if k in ("citizen_id", "name", "phone")}
    needles |= {v[:-4] for v in needles if v.isdigit()}  # no ID prefix either (birth date and region)
    outputs = [*(tmp / "out").iterdir(), tmp / "audit.jsonl"]
    assert len(outputs) == 5
    for path in outputs:
        text = path.read_text(encoding="utf-8")
        for needle in needles:
            assert needle not in text, (path.name, "leaks a record value")
    # ... while the ledger itself does hold the data (it is the private store)
    assert any(r.fields and r.fields["name"].startswith("许燕霞") for r in lg.records(BATCH, include_data=True))


def test_csv_cells_cannot_become_formulas(tmp_path: Path, clock: Clock) -> None:
    with Ledger.open(f"sqlite:///{tmp_path}/l.db", clock=clock) as lg:
        lg.create_batch("B", "ssc", "00" * 32, [], lambda f: "x", rejected=[(2, "=HYPERLINK(\"x\")"), (3, "+1")])
        rep = build_report(lg, "B")
    paths = write_report(rep, tmp_path / "out")
    rows = list(csv.reader(io.StringIO(paths["records.csv"].read_text(encoding="utf-8"))))
    assert [r[5] for r in rows[1:]] == ["'=HYPERLINK(\"x\")", "'+1"]
    assert rep["batch"]["state"] == "finished" and rep["reconciliation"]["reconciles"]
    assert rep["throughput"]["per_reader"] == {} and rep["timings"]["start"] is None
    assert "No verified cards yet" in paths["report.html"].read_text(encoding="utf-8")


def test_report_on_both_databases(ledger_url: str, clock: Clock) -> None:
    with Ledger.open(ledger_url, clock=clock) as lg:
        lg.create_batch("B", "ssc", "00" * 32, people(3), lambda f: f["citizen_id"][-6:])
        for i in range(2):
            c = lg.claim("B", "s", "r")
            assert c is not None
            clock.advance(30)
            lg.card_verified(c, bytes([i + 1]), {})
        rep = build_report(lg, "B", bucket_s=30)
        with pytest.raises(ReportError):
            build_report(lg, "B", bucket_s=0)
    assert rep["throughput"]["per_reader"] == {"s/r": [0, 1, 1]}
    assert rep["timings"]["mean_s_per_card"] == 30 and rep["reconciliation"]["outstanding"] == 1
    assert rep["reconciliation"]["reconciles"]
