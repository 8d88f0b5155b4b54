"""Batch validation and all-or-nothing loading: a corpus of bad inputs, each with a precise error, nothing
half-loaded, no value in any message; ``cardkit batch validate`` on the same corpus."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cardkit.batch import Ledger, Pseudonymizer
from cardkit.batch.validate import BadBatchError, BatchValidator, load_batch, prepare_file
from cardkit.cli.errors import exit_code_for
from cardkit.cli.main import cli
from cardkit.issuance.prepare import PreparedRecord
from cardkit.profiles.model import find_profile, load_profile
from cardkit.profiles.synthetic import SSC_FIELDS, csv_text, ssc_people

PZ = Pseudonymizer(b"test pseudonym key, not secret!!")


@pytest.fixture(scope="module")
def profile():  # type: ignore[no-untyped-def]
    return load_profile(find_profile("ssc"))


def people(n: int, seed: int = 11) -> list[dict[str, str]]:
    return list(ssc_people(n, seed=seed))


def write_csv(path: Path, rows: list[dict[str, str]], fields: tuple[str, ...] = SSC_FIELDS,
              encoding: str = "utf-8") -> Path:
    path.write_bytes(csv_text(rows, fields).encode(encoding))
    return path


def problems(profile, path: Path, **kw):  # type: ignore[no-untyped-def]
    v = BatchValidator(profile, **kw)
    found = list(v.problems(path))
    return found, v.summary


def assert_not_loaded(tmp_path: Path, profile, path: Path, *, on_bad_record: str = "stop",  # type: ignore[no-untyped-def]
                      encoding: str = "utf-8") -> BadBatchError:
    with Ledger.open(f"sqlite:///{tmp_path}/l.db") as ledger:
        with pytest.raises(BadBatchError) as ei:
            load_batch(ledger, path, profile, "B", PZ, on_bad_record=on_bad_record, encoding=encoding)
        assert ledger.batches() == []  # nothing half-loaded
    return ei.value


def no_values(text: str, rows: list[dict[str, str]]) -> None:
    for r in rows:
        for key in ("citizen_id", "name", "household_registration", "phone"):
            assert r[key] not in text, f"{key} value leaked"


# ------------------------------------------------------------------------------------------------ corpus
def test_clean_file_has_no_problems(tmp_path: Path, profile) -> None:  # type: ignore[no-untyped-def]
    path = write_csv(tmp_path / "ok.csv", people(50))
    found, s = problems(profile, path)
    assert found == [] and s.records == s.valid == 50 and s.ok


def test_wrong_check_digit_invalid_date_overlong_and_unencodable_names(tmp_path: Path, profile) -> None:  # type: ignore[no-untyped-def]
    rows = people(8)
    cid = rows[1]["citizen_id"]
    rows[1]["citizen_id"] = cid[:-1] + ("0" if cid[-1] != "0" else "1")
    rows[2]["birth_date"] = "19990230"
    rows[3]["issue_date"] = "2021-13-01"
    rows[4]["name"] = "王" * 16  # 32 GBK bytes > 30
    rows[5]["name"] = "王\U0001F600"  # an emoji: not in GBK
    rows[6]["gender"] = "7"
    path = write_csv(tmp_path / "bad.csv", rows)
    found, s = problems(profile, path)
    by_line = {p.line: p for p in reversed(found)}  # the first problem of each line
    assert set(by_line) == {3, 4, 5, 6, 7, 8}  # header is line 1, record i is line i + 2
    assert by_line[3].field == "citizen_id" and "check character does not match" in by_line[3].message
    assert by_line[4].field == "birth_date" and "not a real calendar date" in by_line[4].message
    assert by_line[5].field == "issue_date"
    assert by_line[6].field == "name" and "too long by 2 bytes (maximum 30)" in by_line[6].message
    assert by_line[7].field == "name" and "U+1F600" in by_line[7].message and "not encodable" in by_line[7].message
    assert by_line[8].field == "gender" and "GB/T 2261.1" in by_line[8].message
    assert all(p.kind == "field" for p in found)
    assert s.records == 8 and s.valid == 2 and s.value_only == 6
    no_values("\n".join(map(str, found)), rows)
    err = assert_not_loaded(tmp_path, profile, path)
    assert f"{len(found)} problem(s)" in str(err) and "--on-bad-record skip" in str(err)
    assert len(found) == 7, found  # the bad gender also contradicts the citizen ID


def test_skip_loads_valid_records_and_rejects_bad_ones_in_one_transaction(tmp_path: Path, profile) -> None:  # type: ignore[no-untyped-def]
    rows = people(6)
    rows[2]["birth_date"] = "20231340"
    path = write_csv(tmp_path / "b.csv", rows)
    with Ledger.open(f"sqlite:///{tmp_path}/l.db") as ledger:
        res = load_batch(ledger, path, profile, "B", PZ, on_bad_record="skip")
        assert (res.count, res.rejected, res.created) == (6, 1, True)
        status = ledger.status("B")
        assert status["pending"] == 5 and status["rejected"] == 1
        (rej,) = list(ledger.records("B", state="rejected"))
        assert rej.line == 4 and "birth_date" in (rej.reason or "") and rows[2]["birth_date"] not in (rej.reason or "")
        again = load_batch(ledger, path, profile, "B", PZ, on_bad_record="skip")  # same file: a no-op
        assert not again.created and ledger.status("B")["total"] == 6


def test_missing_and_unknown_columns_are_reported_once(tmp_path: Path, profile) -> None:  # type: ignore[no-untyped-def]
    rows = people(5)
    fields = (*tuple(f for f in SSC_FIELDS if f not in ("name", "birth_date")), "nickname")
    for r in rows:
        r["nickname"] = "x"
    path = write_csv(tmp_path / "cols.csv", [{k: r[k] for k in fields} for r in rows], fields)
    found, s = problems(profile, path)
    assert sorted((p.line, p.kind, p.field) for p in found) == [
        (1, "column", "birth_date"), (1, "column", "name"), (1, "column", "nickname")]
    assert "required column is missing" in str(found[0]) and s.valid == 0
    err = assert_not_loaded(tmp_path, profile, path, on_bad_record="skip")  # columns refuse even with skip
    assert "3 column" in str(err)


def test_duplicates_name_both_lines_and_refuse_the_file(tmp_path: Path, profile) -> None:  # type: ignore[no-untyped-def]
    rows = people(6)
    rows.append(dict(rows[1]))  # full duplicate: citizen_id and card_number
    rows[5]["card_number"] = rows[0]["card_number"]
    path = write_csv(tmp_path / "dup.csv", rows)
    found, _ = problems(profile, path)
    got = sorted((p.line, p.field, p.message) for p in found)
    assert got == [(7, "card_number", "duplicate value: the same card_number as line 2"),
                   (8, "card_number", "duplicate value: the same card_number as line 3"),
                   (8, "citizen_id", "duplicate value: the same citizen_id as line 3")]
    assert all(p.kind == "duplicate" for p in found)
    assert_not_loaded(tmp_path, profile, path, on_bad_record="skip")


def test_truncated_files(tmp_path: Path, profile) -> None:  # type: ignore[no-untyped-def]
    rows = people(4)
    text = csv_text(rows, SSC_FIELDS)
    cut = tmp_path / "cut.csv"
    cut.write_text(text[: text.rindex(rows[3]["name"]) + 1], encoding="utf-8")  # mid-line: too few columns
    found, _ = problems(profile, cut)
    assert [(p.line, p.kind) for p in found] == [(5, "source")] and "expected 13 columns, found 2" in found[0].message
    assert_not_loaded(tmp_path, profile, cut, on_bad_record="skip")
    quoted = tmp_path / "quoted.csv"
    quoted.write_text(text + '"' + rows[0]["citizen_id"][:5], encoding="utf-8")  # an opened quote at EOF
    found, _ = problems(profile, quoted)
    assert found[-1].kind == "source" and "truncated file?" in found[-1].message and found[-1].line == 6
    assert rows[0]["citizen_id"][:5] not in str(found[-1])
    jsonl = tmp_path / "cut.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    jsonl.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40], encoding="utf-8")
    found, _ = problems(profile, jsonl)
    assert [(p.line, p.kind) for p in found] == [(4, "source")] and "truncated file?" in found[0].message
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    found, s = problems(profile, empty)
    assert s.fatal and "empty file" in found[0].message


def test_gb18030_file_needs_its_encoding(tmp_path: Path, profile) -> None:  # type: ignore[no-untyped-def]
    rows = people(5)
    path = write_csv(tmp_path / "gbk.csv", rows, encoding="gb18030")
    found, s = problems(profile, path)
    assert len(found) == 5 and {p.kind for p in found} == {"source"}  # every row holds Chinese text
    assert all("not valid UTF-8" in p.message and "--encoding gb18030" in p.message for p in found)
    assert_not_loaded(tmp_path, profile, path, on_bad_record="skip")
    found, s = problems(profile, path, encoding="gb18030")
    assert found == [] and s.valid == 5
    with Ledger.open(f"sqlite:///{tmp_path}/ok.db") as ledger:
        assert load_batch(ledger, path, profile, "G", PZ, encoding="gb18030").count == 5
        rec = next(ledger.records("G", include_data=True))
        assert rec.fields is not None and rec.fields["name"] == rows[0]["name"]


def test_jsonl_unknown_keys_and_non_string_values(tmp_path: Path, profile) -> None:  # type: ignore[no-untyped-def]
    rows = people(3)
    lines = [json.dumps(rows[0], ensure_ascii=False), json.dumps({**rows[1], "extra": "1"}, ensure_ascii=False),
             json.dumps({**rows[2], "gender": None}, ensure_ascii=False)]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found, s = problems(profile, path)
    assert [(p.line, p.kind, p.field) for p in found] == [(2, "column", "extra"), (3, "source", None)]
    assert "must be a string or a number, found null" in found[1].message
    assert s.valid == 1


def test_parallel_jobs_find_the_same_problems(tmp_path: Path, profile) -> None:  # type: ignore[no-untyped-def]
    rows = people(700)
    rows[10]["birth_date"] = "20230230"
    rows[650]["name"] = "王" * 20
    rows.append(dict(rows[3]))
    path = write_csv(tmp_path / "p.csv", rows)
    one, s1 = problems(profile, path)
    two, s2 = problems(profile, path, jobs=2)
    assert one == two and len(one) == 4 and s1.describe() == s2.describe()
    prepared = list(prepare_file(path, profile, jobs=2))
    assert len(prepared) == 701 and isinstance(prepared[0][1], PreparedRecord)
    assert isinstance(prepared[10][1], str) and "birth_date" in prepared[10][1]
    assert [line for line, _ in prepared] == list(range(2, 703))


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_validate_lists_every_problem_and_exits_6(tmp_path: Path) -> None:
    rows = people(6)
    rows[1]["birth_date"] = "20230230"
    rows[4]["citizen_id"] = rows[4]["citizen_id"][:-1] + ("0" if rows[4]["citizen_id"][-1] != "0" else "1")
    rows.append(dict(rows[0]))
    path = write_csv(tmp_path / "v.csv", rows)
    res = CliRunner().invoke(cli, ["batch", "validate", str(path), "--profile", "ssc"])
    assert res.exception is not None and exit_code_for(res.exception) == 6
    out = res.output
    assert "line 3, field 'birth_date': not a real calendar date" in out
    assert "line 6, field 'citizen_id': citizen ID check character does not match" in out
    assert "line 8, field 'citizen_id': duplicate value: the same citizen_id as line 2" in out
    assert "7 records, 4 valid, 4 problem(s) (2 duplicate, 2 field)" in out
    no_values(out + str(res.exception), rows)
    ok = write_csv(tmp_path / "ok.csv", people(3))
    res = CliRunner().invoke(cli, ["--json", "batch", "validate", str(ok), "--profile", "ssc"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["valid"] == 3


def test_cli_validate_help_has_an_example() -> None:
    res = CliRunner().invoke(cli, ["batch", "validate", "--help"])
    assert res.exit_code == 0 and "cardkit batch validate" in res.output


@pytest.mark.slow
def test_validation_memory_stays_flat(tmp_path: Path) -> None:
    """Peak RSS validating 120k records is within a few MiB of validating 20k (a subprocess each)."""
    # VmHWM (peak RSS of this address space, reset by exec) — ru_maxrss would include the forking parent.
    code = (
        "import re, sys\n"
        "from cardkit.batch.validate import BatchValidator\n"
        "from cardkit.profiles.model import find_profile, load_profile\n"
        "v = BatchValidator(load_profile(find_profile('ssc')))\n"
        "n = sum(1 for _ in v.problems(sys.argv[1]))\n"
        "assert n == 0 and v.summary.valid == int(sys.argv[2]), v.summary\n"
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n")
    peaks = []
    for n in (20_000, 120_000):
        path = write_csv(tmp_path / f"{n}.csv", list(ssc_people(n, seed=5)))
        out = subprocess.run([sys.executable, "-c", code, str(path), str(n)], capture_output=True, text=True,
                             check=True)
        peaks.append(int(out.stdout.strip()))
    assert peaks[1] - peaks[0] < 12 * 1024, peaks  # KiB
