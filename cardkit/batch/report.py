"""The reconciliation report of a batch: where every record and every card went.

:func:`build_report` reads the ledger (never the record fields) and returns a JSON-ready dict:

* ``records``: counts by state; ``reconciliation``: input = done + rejected + outstanding, plus cross-checks
  (every done record has exactly one verified card, no verified card belongs to any other record, nothing
  outstanding in a finished batch), and ``reconciles`` — true only when every check passes;
* ``remakes`` and ``spoiled_cards`` (chip serials, reasons, where and when);
* ``throughput``: verified cards per time bucket (default one minute) per reader and per station;
* ``timings``: first claim, last card, mean and median seconds from claim to verified card;
* ``journal`` (when a journal path is given): its verification and head hash, the anchor for later checks;
* ``record_list``: one row per record — sequence, line, state, chip serial, identity pseudonym, reason.

:func:`write_report` writes ``report.json``, ``records.csv``, ``summary.txt`` and a self-contained
``report.html`` (inline SVG chart, no external assets), each created 0600. Cardholders appear only as
pseudonyms: names and identifiers never enter a report.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cardkit.batch.journal import verify_journal
from cardkit.batch.ledger import Ledger
from cardkit.batch.ledger_model import CardRow, RecordRow
from cardkit.errors import CardkitError
from cardkit.fsutil import write_private

__all__ = ["CSV_COLUMNS", "REPORT_FILES", "ReportError", "build_report", "report_html", "summary_text",
           "write_report"]

#: Files written by :func:`write_report`.
REPORT_FILES: Final = ("report.json", "records.csv", "summary.txt", "report.html")
#: Columns of records.csv.
CSV_COLUMNS: Final = ("seq", "line", "state", "chip_serial", "pseudonym", "reason", "attempts", "remakes",
                      "station", "reader")
_REPORT_VERSION: Final = 1
# Spreadsheet formula injection (OWASP "CSV Injection"): cells starting with these are prefixed with "'".
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_PALETTE: Final = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf")


class ReportError(CardkitError):
    """A report that cannot be built or written as asked."""


def _iso(t: float | None) -> str | None:
    # RFC 3339 §5.6, UTC.
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _hex(chip: bytes | None) -> str | None:
    return None if chip is None else chip.hex().upper()


def build_report(ledger: Ledger, batch_id: str, *, bucket_s: int = 60,
                 journal: str | os.PathLike[str] | None = None, now: float | None = None) -> dict[str, Any]:
    """The reconciliation report of ``batch_id`` (see the module docstring)."""
    if not isinstance(bucket_s, int) or bucket_s < 1:
        raise ReportError("bucket_s must be a positive integer number of seconds")
    info = ledger.batch(batch_id)
    records = list(ledger.records(batch_id))
    cards = ledger.cards(batch_id)
    counts = dict.fromkeys(("pending", "claimed", "written", "done", "rejected"), 0)
    counts.update(Counter(r.state for r in records))
    counts["total"] = len(records)
    outstanding = counts["pending"] + counts["claimed"] + counts["written"]
    verified = [c for c in cards if c.state == "verified"]
    spoiled = [c for c in cards if c.state == "spoiled"]
    by_seq = {r.seq: r for r in records}

    report: dict[str, Any] = {
        "report_version": _REPORT_VERSION,
        "generated": _iso(now if now is not None else datetime.now(UTC).timestamp()),
        "batch": {"id": info.id, "profile": info.profile, "source_digest": info.source_digest, "state": info.state,
                  "created": _iso(info.created_at), "updated": _iso(info.updated_at), "options": info.options},
        "records": counts,
        "reconciliation": _reconcile(info.input_count, info.state, counts, outstanding, records, cards),
        "remakes": {"total": sum(r.remakes for r in records),
                    "records_remade": sum(1 for r in records if r.remakes),
                    "max_per_record": max((r.remakes for r in records), default=0)},
        "cards": {s: sum(1 for c in cards if c.state == s) for s in ("claimed", "written", "verified", "spoiled")},
        "spoiled_cards": [
            {"chip_serial": _hex(c.chip_serial), "seq": c.seq, "line": by_seq[c.seq].line if c.seq in by_seq else None,
             "attempt": c.attempt, "reason": c.reason, "station": c.station, "reader": c.reader,
             "time": _iso(c.spoiled_at)} for c in spoiled],
        "rejected_records": [{"seq": r.seq, "line": r.line, "reason": r.reason} for r in records
                             if r.state == "rejected"],
        "throughput": _throughput(verified, bucket_s),
        "timings": _timings(cards, verified),
        "record_list": [
            {"seq": r.seq, "line": r.line, "state": r.state, "chip_serial": _hex(r.chip_serial),
             "pseudonym": r.identity, "reason": r.reason, "attempts": r.attempts, "remakes": r.remakes,
             "station": r.station, "reader": r.reader} for r in records],
    }
    if journal is not None:
        jr = verify_journal(journal)
        report["journal"] = {"file": Path(journal).name, "lines": jr.lines, "last_seq": jr.last_seq,
                             "head": jr.head, "ok": jr.ok,
                             "problems": [{"line": p.line, "kind": p.kind, "message": p.message}
                                          for p in jr.problems]}
    return report


def _reconcile(input_count: int, batch_state: str, counts: dict[str, int], outstanding: int,
               records: list[RecordRow], cards: list[CardRow]) -> dict[str, Any]:
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"name": name, "ok": ok, "detail": detail})

    total = counts["done"] + counts["rejected"] + outstanding
    check("input = done + rejected + outstanding", total == input_count,
          f"{input_count} = {counts['done']} + {counts['rejected']} + {outstanding}"
          + ("" if total == input_count else f" (sum is {total})"))
    check("every input record is in the ledger", counts["total"] == input_count,
          f"{counts['total']} records stored for {input_count} input records")
    verified_by_seq: dict[int, list[CardRow]] = defaultdict(list)
    live_by_seq: dict[int, int] = Counter()
    for c in cards:
        if c.state == "verified":
            verified_by_seq[c.seq].append(c)
        if c.state != "spoiled":
            live_by_seq[c.seq] += 1
    bad_done = [r.seq for r in records if r.state == "done" and (
        len(verified_by_seq.get(r.seq, [])) != 1 or verified_by_seq[r.seq][0].chip_serial != r.chip_serial)]
    check("every done record has exactly one verified card, with its chip serial", not bad_done,
          _seqs(bad_done))
    states = {r.seq: r.state for r in records}
    stray = sorted(seq for seq in verified_by_seq if states.get(seq) != "done")
    check("no verified card belongs to a record that is not done", not stray, _seqs(stray))
    multi = sorted(seq for seq, n in live_by_seq.items() if n > 1)
    check("no record has more than one live card", not multi, _seqs(multi))
    if batch_state == "finished":
        check("a finished batch has nothing outstanding", outstanding == 0, f"{outstanding} outstanding")
    return {"input": input_count, "done": counts["done"], "rejected": counts["rejected"],
            "outstanding": outstanding, "reconciles": all(c["ok"] for c in checks), "checks": checks}


def _seqs(seqs: list[int]) -> str:
    if not seqs:
        return "no exceptions"
    shown = ", ".join(str(s) for s in seqs[:20])
    return f"records {shown}" + (f" and {len(seqs) - 20} more" if len(seqs) > 20 else "")


def _throughput(verified: list[CardRow], bucket_s: int) -> dict[str, Any]:
    times = [c.verified_at for c in verified if c.verified_at is not None]
    if not times:
        return {"bucket_s": bucket_s, "start": None, "buckets": 0, "per_reader": {}, "per_station": {}}
    start = min(c.claimed_at for c in verified)
    n = int((max(times) - start) // bucket_s) + 1
    per_reader: dict[str, list[int]] = {}
    per_station: dict[str, list[int]] = {}
    for c in verified:
        if c.verified_at is None:
            continue
        i = int((c.verified_at - start) // bucket_s)
        per_reader.setdefault(f"{c.station}/{c.reader}", [0] * n)[i] += 1
        per_station.setdefault(c.station, [0] * n)[i] += 1
    return {"bucket_s": bucket_s, "start": _iso(start), "buckets": n,
            "per_reader": dict(sorted(per_reader.items())), "per_station": dict(sorted(per_station.items()))}


def _timings(cards: list[CardRow], verified: list[CardRow]) -> dict[str, Any]:
    if not cards:
        return {"start": None, "end": None, "elapsed_s": None, "cards_verified": 0, "mean_s_per_card": None,
                "median_s_per_card": None, "cards_per_minute": None}
    start = min(c.claimed_at for c in cards)
    end = max(t for c in cards for t in (c.created_at, c.written_at, c.verified_at, c.spoiled_at) if t is not None)
    durations = [c.verified_at - c.claimed_at for c in verified if c.verified_at is not None]
    elapsed = end - start
    return {"start": _iso(start), "end": _iso(end), "elapsed_s": round(elapsed, 3), "cards_verified": len(verified),
            "mean_s_per_card": round(statistics.fmean(durations), 3) if durations else None,
            "median_s_per_card": round(statistics.median(durations), 3) if durations else None,
            "cards_per_minute": round(len(verified) * 60 / elapsed, 2) if elapsed > 0 else None}


# ---------------------------------------------------------------------------------------------- writing
def write_report(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the four report files into ``out_dir`` (created 0700 if absent), each 0600; return their paths."""
    out = Path(out_dir)
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create the report directory {out.name!r}: {exc.strerror}") from exc
    texts = {
        "report.json": json.dumps(report, ensure_ascii=False, indent=2, sort_keys=False) + "\n",
        "records.csv": _records_csv(report.get("record_list", [])),
        "summary.txt": summary_text(report),
        "report.html": report_html(report),
    }
    try:
        return {name: write_private(out / name, text.encode("utf-8")) for name, text in texts.items()}
    except OSError as exc:
        raise ReportError(f"cannot write the report into {out.name!r}: {exc.strerror}") from exc




def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _records_csv(rows: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # RFC 4180 §2: CRLF line breaks
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([_cell(r.get(col)) for col in CSV_COLUMNS])
    return buf.getvalue()


def summary_text(report: dict[str, Any]) -> str:
    """A human summary of the report."""
    b, c, rec = report["batch"], report["records"], report["reconciliation"]
    t, rm = report["timings"], report["remakes"]
    lines = [
        f"Batch {b['id']} (profile {b['profile']}) — {b['state']}",
        f"Source SHA-256 {b['source_digest']}",
        f"Report generated {report['generated']}",
        "",
        f"Input records   {rec['input']}",
        f"  done          {c['done']}",
        f"  rejected      {c['rejected']}",
        f"  outstanding   {rec['outstanding']} (pending {c['pending']}, claimed {c['claimed']}, "
        f"written {c['written']})",
        f"Reconciles      {'YES' if rec['reconciles'] else 'NO'}",
    ]
    lines += [f"  [{'ok' if ch['ok'] else 'FAIL'}] {ch['name']}: {ch['detail']}" for ch in rec["checks"]]
    lines += [
        "",
        f"Cards verified  {report['cards']['verified']}, spoiled {report['cards']['spoiled']}",
        f"Remakes         {rm['total']} on {rm['records_remade']} records (max {rm['max_per_record']} per record)",
        f"Started         {t['start'] or '-'}",
        f"Ended           {t['end'] or '-'}",
        f"Per card        mean {_num(t['mean_s_per_card'])} s, median {_num(t['median_s_per_card'])} s",
        f"Throughput      {_num(t['cards_per_minute'])} cards/min overall",
    ]
    tp = report["throughput"]
    for reader, series in tp["per_reader"].items():
        lines.append(f"  {reader}: {sum(series)} cards, peak {max(series)} per {tp['bucket_s']} s")
    if report["spoiled_cards"]:
        lines += ["", "Spoiled cards:"]
        lines += [f"  {s['chip_serial']}  record {s['seq']} (line {s['line']})  {s['station']}/{s['reader']}  "
                  f"{s['reason']}" for s in report["spoiled_cards"]]
    if report["rejected_records"]:
        lines += ["", "Rejected records:"]
        lines += [f"  record {r['seq']} (line {r['line']}): {r['reason']}" for r in report["rejected_records"]]
    if "journal" in report:
        j = report["journal"]
        lines += ["", f"Journal {j['file']}: {j['lines']} lines, {'intact' if j['ok'] else 'DAMAGED'}, "
                      f"head {j['head']}"]
        lines += [f"  line {p['line']}: {p['message']}" for p in j["problems"]]
    return "\n".join(lines) + "\n"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def report_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page: summary tables and an inline SVG chart of per-reader throughput."""
    e = html.escape
    b, rec, c = report["batch"], report["reconciliation"], report["records"]
    rows = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in c.items())
    checks = "".join(f"<tr class=\"{'ok' if ch['ok'] else 'fail'}\"><td>{'ok' if ch['ok'] else 'FAIL'}</td>"
                     f"<td>{e(ch['name'])}</td><td>{e(ch['detail'])}</td></tr>" for ch in rec["checks"])
    spoiled = "".join(f"<tr><td>{e(str(s['chip_serial']))}</td><td>{s['seq']}</td><td>{s['line']}</td>"
                      f"<td>{e(s['station'])}/{e(s['reader'])}</td><td>{e(str(s['reason']))}</td>"
                      f"<td>{e(str(s['time']))}</td></tr>" for s in report["spoiled_cards"])
    t = report["timings"]
    verdict = "reconciles" if rec["reconciles"] else "DOES NOT RECONCILE"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Batch {e(b['id'])}</title>
<style>
body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}} .ok td:first-child{{color:#2a2}}
.fail td{{color:#c22;font-weight:bold}} .verdict{{font-size:1.3em}} svg text{{font-size:11px}}
</style></head><body>
<h1>Batch {e(b['id'])}</h1>
<p>Profile {e(b['profile'])}, state <b>{e(b['state'])}</b>, source SHA-256 <code>{e(b['source_digest'])}</code>,
generated {e(str(report['generated']))}.</p>
<p class="verdict">Input {rec['input']} = done {rec['done']} + rejected {rec['rejected']} + outstanding
{rec['outstanding']}: <b>{verdict}</b></p>
<table><tr><th>check</th><th>what</th><th>detail</th></tr>{checks}</table>
<h2>Records</h2><table><tr><th>state</th><th>count</th></tr>{rows}</table>
<h2>Throughput per reader</h2>
{_svg_chart(report['throughput'])}
<p>Started {e(str(t['start']))}, ended {e(str(t['end']))}; per card mean {_num(t['mean_s_per_card'])} s,
median {_num(t['median_s_per_card'])} s; {_num(t['cards_per_minute'])} cards/min overall.
Remakes {report['remakes']['total']}.</p>
<h2>Spoiled cards ({len(report['spoiled_cards'])})</h2>
<table><tr><th>chip serial</th><th>record</th><th>line</th><th>where</th><th>reason</th><th>time</th></tr>
{spoiled}</table>
</body></html>
"""


def _svg_chart(tp: dict[str, Any]) -> str:
    """Inline SVG (SVG 1.1 §5.1, embedded in HTML5 without a namespace declaration): one line per reader,
    verified cards per bucket."""
    e = html.escape
    series: dict[str, list[int]] = tp["per_reader"]
    if not series:
        return "<p>No verified cards yet.</p>"
    w, h, left, bottom, top, right = 760, 280, 48, 36, 12, 180
    n = max(int(tp["buckets"]), 1)
    peak = max(max(s) for s in series.values()) or 1
    pw, ph = w - left - right, h - top - bottom

    def x(i: int) -> float:
        return left + (pw * (i + 0.5) / n)

    def y(v: int) -> float:
        return top + ph - ph * v / peak

    parts = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
             f'aria-label="verified cards per {tp["bucket_s"]} s per reader">',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#444"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#444"/>',
             f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak}</text>',
             f'<text x="{left - 6}" y="{top + ph}" text-anchor="end">0</text>',
             f'<text x="{left + pw / 2:.0f}" y="{h - 6}" text-anchor="middle">time from first claim '
             f'({tp["bucket_s"]} s buckets, {n} buckets)</text>']
    for k, (name, counts) in enumerate(series.items()):
        color = _PALETTE[k % len(_PALETTE)]
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(counts))
        if n == 1:
            parts.append(f'<circle cx="{x(0):.1f}" cy="{y(counts[0]):.1f}" r="3" fill="{color}"/>')
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        ly = top + 14 * k + 10
        parts.append(f'<rect x="{left + pw + 12}" y="{ly - 8}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{left + pw + 26}" y="{ly + 1}">{e(name)} ({sum(counts)})</text>')
    parts.append("</svg>")
    return "\n".join(parts)
