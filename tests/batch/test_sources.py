"""Record sources: CSV and JSON Lines edge cases, encodings, problem collection, streaming."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardkit.batch.sources import (
    SourceError,
    SourceProblem,
    SourceRecord,
    detect_format,
    iter_records,
    source_digest,
)
from cardkit.errors import RecordError

HEADER = "citizen_id,name,card_number\n"


def write(tmp_path: Path, name: str, data: bytes | str, encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return p


def collect(path: Path, **kw: object) -> list[SourceRecord | SourceProblem]:
    return list(iter_records(path, errors="collect", **kw))  # type: ignore[call-overload]


def problems(items: list[SourceRecord | SourceProblem]) -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in items if isinstance(p, SourceProblem)]


# ------------------------------------------------------------------------------------------------ CSV
def test_csv_records_lines_and_indexes(tmp_path: Path) -> None:
    p = write(tmp_path, "b.csv", HEADER + "1,Ann,C1\n\n2,\"Bo, Jr\",C2\r\n3,\"multi\nline\",C3\n4,Dee,C4")
    recs = list(iter_records(p))
    assert [(r.line, r.index) for r in recs] == [(2, 0), (4, 1), (5, 2), (7, 3)]
    assert recs[1].fields == {"citizen_id": "2", "name": "Bo, Jr", "card_number": "C2"}
    assert recs[2].fields["name"] == "multi\nline"
    assert recs[3].fields["card_number"] == "C4"  # last line without a line end


def test_csv_utf8_bom_is_dropped(tmp_path: Path) -> None:
    p = write(tmp_path, "b.csv", "\ufeff" + HEADER + "1,张三,C1\n")
    (rec,) = iter_records(p)
    assert list(rec.fields) == ["citizen_id", "name", "card_number"]
    assert rec.fields["name"] == "张三"
    assert [r.fields for r in iter_records(p, encoding="utf-8-sig")] == [rec.fields]


def test_csv_gb18030(tmp_path: Path) -> None:
    text = HEADER + "1,许燕霞,C1\n2,邓佳,C2\n"
    p = write(tmp_path, "gb.csv", text, "gb18030")
    assert [r.fields["name"] for r in iter_records(p, encoding="gb18030")] == ["许燕霞", "邓佳"]
    # GB 18030 BOM (84 31 95 33) is dropped too
    p2 = write(tmp_path, "gbbom.csv", "\ufeff" + text, "gb18030")
    assert p2.read_bytes()[:4] == bytes.fromhex("84319533")
    assert next(iter_records(p2, encoding="GB18030")).fields["citizen_id"] == "1"


def test_gb18030_file_read_as_utf8_names_line_and_option(tmp_path: Path) -> None:
    p = write(tmp_path, "gb.csv", HEADER + "1,Ann,C1\n2,许燕霞,C2\n3,Bo,C3\n", "gb18030")
    with pytest.raises(RecordError) as ei:
        list(iter_records(p))
    assert ei.value.line == 3
    assert "--encoding gb18030" in str(ei.value) and str(ei.value).startswith("line 3: byte 3 of the line")
    items = collect(p)
    assert [i.line for i in items if isinstance(i, SourceRecord)] == [2, 4]
    assert [(line, "gb18030" in msg) for line, msg in problems(items)] == [(3, True)]
    bad = next(i for i in items if isinstance(i, SourceProblem))
    assert bad.index == 1 and not bad.fatal


def test_bad_utf8_inside_a_multiline_record(tmp_path: Path) -> None:
    data = (HEADER + '1,"two\n').encode() + b"lines \xff here" + b'",C1\n2,Bo,C2\n'
    items = collect(write(tmp_path, "b.csv", data))
    assert problems(items)[0][0] == 3
    assert [(i.line, i.index) for i in items if isinstance(i, SourceRecord)] == [(4, 1)]


def test_csv_truncated_quoted_field(tmp_path: Path) -> None:
    p = write(tmp_path, "b.csv", HEADER + "1,Ann,C1\n2,\"Bo\nb")
    with pytest.raises(RecordError, match=r"line 3: .*not closed before the end of the file \(truncated"):
        list(iter_records(p))
    items = collect(p)
    assert [i.line for i in items if isinstance(i, SourceRecord)] == [2]


def test_csv_structural_problems_all_in_one_pass(tmp_path: Path) -> None:
    p = write(tmp_path, "b.csv", HEADER + "1,Ann\n2,Bo,C2\n3,\"Cy\"x,C3\n4,Di,C4,extra\n5,Ed,C5\n")
    items = collect(p)
    assert problems(items) == [
        (2, "expected 3 columns, found 2"),
        (4, "malformed CSV: characters after a closing quote (a quote inside a field must be doubled)"),
        (5, "expected 3 columns, found 4"),
    ]
    assert [(i.line, i.index) for i in items if isinstance(i, SourceRecord)] == [(3, 1), (6, 4)]
    with pytest.raises(RecordError, match="line 2: expected 3 columns"):
        list(iter_records(p))


def test_problem_messages_never_quote_values(tmp_path: Path) -> None:
    secret = "440304200412157929"
    p = write(tmp_path, "b.csv", HEADER + f"{secret},Ann\n{secret},\"x\"y,C\n")
    for _, msg in problems(collect(p)):
        assert secret not in msg
    j = write(tmp_path, "b.jsonl", f'{{"citizen_id": "{secret}", "name": null}}\n[\"{secret}\"]\n')
    for _, msg in problems(collect(j)):
        assert secret not in msg


@pytest.mark.parametrize(("text", "message"), [
    ("", "line 1: empty file: no header row"),
    ("\n\n", "line 2: empty file: no header row"),
    ("a,b,a\n1,2,3\n", "line 1: duplicate header name 'a' (column 3)"),
    ("a,,c\n1,2,3\n", "line 1: header column 2 has no name"),
    ('a,"b\n', "line 1: malformed CSV: a quoted field is not closed"),
])
def test_csv_header_problems_are_fatal(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, "b.csv", text)
    with pytest.raises(RecordError) as ei:
        list(iter_records(p))
    assert str(ei.value).startswith(message)
    items = collect(p)
    assert len(items) == 1 and isinstance(items[0], SourceProblem) and items[0].fatal


def test_cr_only_line_ends_are_explained(tmp_path: Path) -> None:
    p = write(tmp_path, "mac.csv", "a,b\r1,2\r3,4\r")
    with pytest.raises(RecordError, match=r"line 1: .*CR-only"):
        list(iter_records(p))


def test_header_names_are_stripped_and_blank_lines_skipped(tmp_path: Path) -> None:
    p = write(tmp_path, "b.csv", "\n a , b \n\n1,2\n  \n3,4\n")
    assert [(r.line, r.fields) for r in iter_records(p)] == [(4, {"a": "1", "b": "2"}), (6, {"a": "3", "b": "4"})]


# ------------------------------------------------------------------------------------------------ JSONL
def test_jsonl_records(tmp_path: Path) -> None:
    p = write(tmp_path, "b.jsonl", '{"id": "1", "amount": 12.50, "n": 7, "big": 123456789012345678901}\n\n'
                                   '  {"id": "2", "name": "许"}  \r\n')
    recs = list(iter_records(p))
    assert [(r.line, r.index) for r in recs] == [(1, 0), (3, 1)]
    assert recs[0].fields == {"id": "1", "amount": "12.50", "n": "7", "big": "123456789012345678901"}
    assert recs[1].fields == {"id": "2", "name": "许"}


def test_jsonl_problems(tmp_path: Path) -> None:
    lines = ['{"a": "1"}', '{"a": ', '["a"]', "5", '"s"', '{"a": null}', '{"a": true}', '{"a": {"b": "c"}}',
             '{"a": "1", "a": "2"}', '{"a": NaN}', '{"a": "ok"}', '{"a": "cut']
    p = write(tmp_path, "b.ndjson", "\n".join(lines))
    items = collect(p)
    assert problems(items) == [
        (2, "invalid JSON: Expecting value at column 6"),
        (3, "expected a JSON object, found an array"),
        (4, "expected a JSON object, found a number"),
        (5, "expected a JSON object, found a string"),
        (6, "field 'a' must be a string or a number, found null"),
        (7, "field 'a' must be a string or a number, found a boolean"),
        (8, "field 'a' must be a string or a number, found an object"),
        (9, "duplicate key 'a' in the object"),
        (10, "invalid JSON: NaN is not a JSON number"),
        (12, "invalid JSON: Unterminated string starting at at column 7 (the last line looks cut off: "
             "truncated file?)"),
    ]
    assert [(i.line, i.index) for i in items if isinstance(i, SourceRecord)] == [(1, 0), (11, 10)]


def test_jsonl_empty_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="line 1: empty file"):
        list(iter_records(write(tmp_path, "e.jsonl", "\n")))
    p = write(tmp_path, "g.jsonl", '{"a": "1"}\n{"name": "邓佳"}\n'.encode("gb18030"))
    with pytest.raises(RecordError, match=r"line 2: .*--encoding gb18030"):
        list(iter_records(p))
    assert [r.fields for r in iter_records(p, encoding="gb18030")][1] == {"name": "邓佳"}


# ------------------------------------------------------------------------------------------------ options
def test_formats_and_options(tmp_path: Path) -> None:
    assert detect_format("x.CSV") == "csv" and detect_format("x.ndjson") == "jsonl"
    with pytest.raises(SourceError, match="cannot tell the format"):
        detect_format("x.txt")
    p = write(tmp_path, "data.txt", HEADER + "1,A,C\n")
    assert len(list(iter_records(p, fmt="csv"))) == 1
    with pytest.raises(SourceError, match="unknown source format"):
        iter_records(p, fmt="xml")
    with pytest.raises(SourceError, match="unsupported encoding"):
        iter_records(p, fmt="csv", encoding="latin-1")
    with pytest.raises(SourceError, match="unsupported encoding"):
        iter_records(p, fmt="csv", encoding="no-such-codec")
    assert len(list(iter_records(p, fmt="csv", encoding="UTF8"))) == 1
    with pytest.raises(SourceError, match=r"cannot read 'missing\.csv'"):
        iter_records(tmp_path / "missing.csv")
    with pytest.raises(SourceError, match="errors must be"):
        iter_records(p, fmt="csv", errors="ignore")  # type: ignore[call-overload]


def test_source_digest(tmp_path: Path) -> None:
    # FIPS 180-2 Appendix B.1 example: SHA-256("abc")
    assert source_digest(write(tmp_path, "abc.csv", "abc")) == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = write(tmp_path, "big.csv", b"x" * (3 * (1 << 20) + 5))
    assert source_digest(big) == hashlib.sha256(big.read_bytes()).hexdigest()
    with pytest.raises(SourceError):
        source_digest(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------------------------ properties
_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_text, _text, _text), min_size=1, max_size=8),
       encoding=st.sampled_from(["utf-8", "gb18030"]))
def test_csv_round_trip(tmp_path: Path, rows: list[tuple[str, str, str]], encoding: str) -> None:
    # Lines made only of blanks (a single empty/blank field) read as blank lines: give each row a marker.
    rows = [(f"r{i}{a}", b, c) for i, (a, b, c) in enumerate(rows)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # RFC 4180: CRLF, and fields holding CR or LF are quoted
    w.writerow(["a", "b", "c"])
    w.writerows(rows)
    p = write(tmp_path, "rt.csv", buf.getvalue(), encoding)
    got = list(iter_records(p, encoding=encoding))
    assert [tuple(r.fields.values()) for r in got] == rows
    assert [r.index for r in got] == list(range(len(rows)))
    assert got[0].line == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(objs=st.lists(st.dictionaries(_text, _text | st.integers(), max_size=4), min_size=1, max_size=6))
def test_jsonl_round_trip(tmp_path: Path, objs: list[dict[str, str | int]]) -> None:
    p = write(tmp_path, "rt.jsonl", "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs))
    got = list(iter_records(p))
    assert [r.fields for r in got] == [{k: str(v) for k, v in o.items()} for o in objs]
    assert [r.line for r in got] == list(range(1, len(objs) + 1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), fmt=st.sampled_from(["csv", "jsonl"]),
       encoding=st.sampled_from(["utf-8", "gb18030"]))
def test_any_bytes_give_records_or_problems(tmp_path: Path, data: bytes, fmt: str, encoding: str) -> None:
    p = write(tmp_path, "fuzz.dat", data)
    items = list(iter_records(p, fmt=fmt, encoding=encoding, errors="collect"))
    assert all(isinstance(i, SourceRecord | SourceProblem) for i in items)
    assert all(i.line >= 1 for i in items)
    try:
        list(iter_records(p, fmt=fmt, encoding=encoding))
    except RecordError as exc:
        assert exc.line is not None and exc.line >= 1


# ------------------------------------------------------------------------------------------------ streaming
def _big_csv(path: Path, n: int) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.write(HEADER)
        for i in range(n):
            f.write(f"11010119900101{i % 10000:04d},Name {i},C{i:08d}\n")
    return path


def test_memory_stays_flat(tmp_path: Path) -> None:
    p = _big_csv(tmp_path / "m.csv", 20_000)
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_records(p))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 512 * 1024, peak  # holding 20,000 records would take several MB


@pytest.mark.slow
def test_memory_flat_for_a_million_lines(tmp_path: Path) -> None:
    p = _big_csv(tmp_path / "m.csv", 1_000_000)
    code = ("import resource, sys; from cardkit.batch.sources import iter_records; "
            "n = sum(1 for _ in iter_records(sys.argv[1], errors='collect')); "
            "print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    small = _big_csv(tmp_path / "s.csv", 1_000)
    base = subprocess.run([sys.executable, "-c", code, str(small)], capture_output=True, text=True, check=True)
    big = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, check=True)
    n, rss = map(int, big.stdout.split())
    assert n == 1_000_000
    assert rss - int(base.stdout.split()[1]) < 16 * 1024, (rss, base.stdout)  # KiB: under 16 MB growth
