"""Audit journal: chaining, privacy refusals, tamper detection, concurrent appends."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from cardkit.batch.journal import (
    GENESIS,
    Journal,
    JournalError,
    JournalPrivacyError,
    canonical_json,
    line_hash,
    verify_journal,
)

from .conftest import Clock


def make(path: Path, n: int, clock: Clock | None = None) -> list[str]:
    with Journal(path, clock=clock or Clock()) as j:
        for i in range(n):
            j.append("card.verified", batch="B1", record=i + 1, chip_serial=f"CA{i:06X}", identity=f"{i:016x}")
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_lines_are_chained_and_private(tmp_path: Path, clock: Clock) -> None:
    p = tmp_path / "audit.jsonl"
    with Journal(p, clock=clock) as j:
        e1 = j.append("batch.loaded", batch="B1", records=3, note="许")
        clock.advance(1.5)
        e2 = j.append("card.verified", batch="B1", record=1, ok=True, ratio=0.25, sw=[144, 0], extra=None)
        assert j.head == e2
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    lines = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()]
    assert [x["seq"] for x in lines] == [1, 2] and (e1.seq, e2.seq) == (1, 2)
    assert lines[0]["prev"] == GENESIS and lines[1]["prev"] == lines[0]["hash"] == e1.hash
    assert lines[0]["time"] == "2025-06-15T15:06:40.000000Z" and lines[1]["time"].endswith("41.500000Z")
    assert list(lines[1]) == ["seq", "time", "event", "batch", "record", "ok", "ratio", "sw", "extra", "prev", "hash"]
    assert lines[0]["note"] == "许" and "许" in p.read_text(encoding="utf-8")  # UTF-8, not \\u escapes
    for obj in lines:
        body = {k: v for k, v in obj.items() if k != "hash"}
        assert hashlib.sha256(canonical_json(body)).hexdigest() == obj["hash"] == line_hash(obj)
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    report = verify_journal(p)
    assert report.ok and report.lines == 2 and report.last_seq == 2 and report.head == e2.hash


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    make(p, 3)
    with Journal(p) as j:
        assert j.head.seq == 3
        e = j.append("station.started", station="s1")
    assert e.seq == 4 and verify_journal(p).ok


def test_two_writers_in_one_process_interleave(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    with Journal(p) as a, Journal(p) as b:
        a.append("x")
        b.append("y")
        a.append("z")  # a must notice b's line and chain onto it
    r = verify_journal(p)
    assert r.ok and r.last_seq == 3


@pytest.mark.parametrize("facts", [
    {"pin": "1234"}, {"user_pin": "1"}, {"key": "00"}, {"enc_key": "00"}, {"name": "x"}, {"holder_name": "x"},
    {"citizen_id": "x"}, {"citizenId": "x"}, {"birthDate": "x"}, {"surname": "x"}, {"Password": "x"},
    {"card_number": "x"}, {"phone": "x"}, {"mrz": "x"}, {"holder": {"given_names": "x"}},
    {"rows": [{"address": "x"}]},
])
def test_secret_or_personal_keys_are_refused(tmp_path: Path, facts: dict[str, Any]) -> None:
    with Journal(tmp_path / "j.jsonl") as j, pytest.raises(JournalPrivacyError, match="pseudonym"):
        j.append("x", **facts)
    assert (tmp_path / "j.jsonl").read_bytes() == b""  # nothing written


def test_safe_keys_and_bad_values(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.jsonl") as j:
        j.append("keys.loaded", key_version=1, kcv="A1B2C3", reader_name="ACS 00 00", identity="0123abcd")
        cases: list[tuple[dict[str, Any], str]] = [
            ({"seq": 1}, "reserved"), ({"hash": "x"}, "reserved"), ({"data": b"\x00"}, "hex-encode"),
            ({"v": float("nan")}, "finite"), ({"v": object()}, "not a JSON value")]
        for bad, msg in cases:
            with pytest.raises(JournalError, match=msg):
                j.append("x", **bad)
        with pytest.raises(JournalError, match="non-empty"):
            j.append("")
    with pytest.raises(JournalError, match="sync_every"):
        Journal(tmp_path / "k.jsonl", sync_every=0)
    j2 = Journal(tmp_path / "k.jsonl")
    j2.close()
    with pytest.raises(JournalError, match="closed"):
        j2.append("x")


# ------------------------------------------------------------------------------------------------ tampering
def _rewrite(p: Path, lines: list[str]) -> None:
    p.write_text("".join(lines), encoding="utf-8")


def kinds(p: Path, **kw: Any) -> list[tuple[int, str]]:
    return [(x.line, x.kind) for x in verify_journal(p, **kw).problems]


def test_edited_line(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    lines = make(p, 5)
    lines[2] = lines[2].replace("CA000002", "CA0000FF")
    _rewrite(p, lines)
    assert kinds(p) == [(3, "edited")]
    assert "line 3 does not match its hash" in verify_journal(p).problems[0].message


def test_edited_line_with_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    lines = make(p, 4)
    obj = json.loads(lines[1])
    obj["chip_serial"] = "DEADBEEF"
    obj["hash"] = line_hash(obj)
    lines[1] = json.dumps(obj, separators=(",", ":")) + "\n"
    _rewrite(p, lines)
    assert kinds(p) == [(3, "chain")]


def test_removed_line(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    lines = make(p, 5)
    del lines[2]
    _rewrite(p, lines)
    problems = verify_journal(p).problems
    assert [(x.line, x.kind) for x in problems] == [(3, "chain"), (3, "sequence")]
    assert "1 line(s) missing" in problems[1].message


def test_removed_last_line_needs_the_anchor(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    lines = make(p, 4)
    head = verify_journal(p).head
    _rewrite(p, lines[:-1])
    assert kinds(p) == []                      # a clean cut at the end is invisible without an anchor ...
    assert kinds(p, expect_head=head) == [(3, "head")]  # ... and caught with one
    assert verify_journal(p, expect_head=verify_journal(p).head).ok


def test_swapped_lines(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    lines = make(p, 5)
    lines[1], lines[2] = lines[2], lines[1]
    _rewrite(p, lines)
    assert kinds(p) == [(2, "chain"), (2, "sequence"), (3, "chain"), (3, "sequence"), (4, "chain"), (4, "sequence")]


def test_inserted_line(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    lines = make(p, 4)
    prev = json.loads(lines[1])
    forged: dict[str, Any] = {"seq": 3, "time": prev["time"], "event": "card.verified", "prev": prev["hash"]}
    forged["hash"] = line_hash(forged)
    lines.insert(2, json.dumps(forged) + "\n")
    _rewrite(p, lines)
    assert kinds(p) == [(4, "chain"), (4, "sequence")]  # the forged line fits; the original next one does not
    assert "repeats or goes back" in verify_journal(p).problems[1].message


def test_truncated_last_line(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    lines = make(p, 3)
    _rewrite(p, [*lines[:2], lines[2][:40]])
    r = verify_journal(p)
    assert [(x.line, x.kind) for x in r.problems] == [(3, "truncated")] and r.lines == 2
    with pytest.raises(JournalError, match="truncated line"):
        Journal(p).append("x")
    _rewrite(p, [*lines[:2], lines[2][:-1]])  # only the line feed is missing
    assert kinds(p) == [(3, "truncated")]


def test_garbage_and_duplicate_keys(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    lines = make(p, 3)
    lines[1] = lines[1].replace('"seq":2,', '"seq":2,"seq":2,')
    lines.insert(0, "not json\n")
    _rewrite(p, lines)
    assert kinds(p) == [(1, "invalid"), (3, "invalid"), (4, "sequence")]
    with pytest.raises(JournalError, match="cannot read"):
        verify_journal(tmp_path / "none.jsonl")


def test_damaged_tail_refuses_append(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    lines = make(p, 2)
    _rewrite(p, [lines[0], lines[1].replace("CA000001", "CA000009")])
    with pytest.raises(JournalError, match="does not match its hash"):
        Journal(p).append("x")


# ------------------------------------------------------------------------------------------------ concurrency
def _appender(path: str, k: int, n: int) -> None:
    with Journal(path) as j:
        for i in range(n):
            j.append("card.verified", station=f"p{k}", i=i)


def test_processes_and_threads_append_safely(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_appender, args=(str(p), k, 40)) for k in range(4)]
    threads = [threading.Thread(target=_appender, args=(str(p), 10 + k, 20)) for k in range(2)]
    for x in procs + threads:
        x.start()
    for t in threads:
        t.join(timeout=60)
    for pr in procs:
        pr.join(timeout=60)
        assert pr.exitcode == 0
    r = verify_journal(p)
    assert r.ok, r.problems[:3]
    assert r.last_seq == r.lines == 4 * 40 + 2 * 20
    stations = [json.loads(x)["station"] for x in p.read_text().splitlines()]
    assert {s: stations.count(s) for s in set(stations)} == {**{f"p{k}": 40 for k in range(4)},
                                                             **{f"p{10 + k}": 20 for k in range(2)}}


def test_sync_every_batches_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    with Journal(tmp_path / "j.jsonl", sync_every=10) as j:
        created = len(calls)  # the directory entry of the new file
        for _ in range(25):
            j.append("x")
        assert len(calls) - created == 2
    assert len(calls) - created == 3  # close syncs the rest
    calls.clear()
    with Journal(tmp_path / "j.jsonl") as j:
        j.append("x")
        j.append("y")
    assert len(calls) == 2  # default: every append
