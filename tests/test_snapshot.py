"""`cardkit snapshot` and `cardkit diff`: snapshots are 0600 JSON with every readable byte; a snapshot diffed
with itself is empty; changed bytes, rules, sizes and missing files are named by file and field; golden cards
from a profile and record; exit code 8 on differences; no full citizen ID in any output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_info import ROOT, issue_card, sample_rows, ssc_keys

from cardkit.acl import AccessRules
from cardkit.apps.diagnose import DiagnoseOptions
from cardkit.apps.snapshot import (
    NOTICE,
    SnapshotError,
    diff_snapshots,
    expected_snapshot,
    load_snapshot,
    save_snapshot,
    take_snapshot,
)
from cardkit.cli.errors import EXIT_VERIFY, VerificationFailed, exit_code_for
from cardkit.cli.main import cli
from cardkit.readers import TEST_KEYS
from cardkit.session import CardSession
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual.fs import EF

KEYS = ["--keys", str(TEST_KEYS), "--allow-test-keys"]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def snap(card: Any, keys: bool = True) -> dict[str, Any]:
    session = CardSession(VirtualTransport(card))
    try:
        return take_snapshot(session, DiagnoseOptions(keystore=ssc_keys() if keys else None))
    finally:
        session.close()


def ef(card: Any, path_fids: tuple[int, ...]) -> Any:
    """The virtual card's file node at the FID path (below the MF)."""
    node = card.mf
    for fid in path_fids:
        node = node.child(fid)
    return node


def lines_of(res: Result) -> str:
    return res.output + (str(res.exception) if res.exception else "")


def test_snapshot_file_is_private_and_complete(tmp_path: Path) -> None:
    _, prepared, card = issue_card()
    image = tmp_path / "card.json"
    card.save(image)
    out = tmp_path / "snap.json"
    res = run("--reader", f"virtual:{image}", "snapshot", "--out", str(out), *KEYS)
    assert res.exit_code == 0, res.output
    assert "PERSONAL DATA" in res.stdout and "0600" in res.stdout
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    doc = load_snapshot(out)
    assert doc["notice"] == NOTICE and doc["format"] == "cardkit-snapshot"
    ef06 = next(f for f in doc["files"] if f["path"] == "SSSE/EF06")
    assert [r["field"] for r in ef06["records"]][:2] == ["citizen_id", "name"]
    assert all(r["raw"] for r in ef06["records"])  # every readable byte is in the snapshot...
    assert prepared.identity not in out.read_text(encoding="utf-8")  # ...but decoded identifiers are masked
    assert prepared.identity not in res.output


def test_same_card_diffs_empty(tmp_path: Path) -> None:
    _, _, card = issue_card()
    a, b = save_snapshot(snap(card), tmp_path / "a.json"), save_snapshot(snap(card), tmp_path / "b.json")
    res = run("diff", str(a), str(b))
    assert res.exit_code == 0, lines_of(res)
    assert "0 difference(s)" in res.stdout
    assert diff_snapshots(load_snapshot(a), load_snapshot(b)).same


def test_changed_bytes_are_named_by_file_and_field(tmp_path: Path) -> None:
    _, prepared, card = issue_card()
    a = save_snapshot(snap(card), tmp_path / "a.json")
    ef05 = ef(card, (0xDDF1, 0xEF05))
    ef05.records[4][3] ^= 0x01  # record 5 = issue date 2020-11-11 -> 2021-11-11 (BCD byte 20 -> 21)
    ef06 = ef(card, (0xDDF1, 0xEF06))
    ef06.records[0][5] ^= 0x01  # record 8 = citizen ID: never shown
    b = save_snapshot(snap(card), tmp_path / "b.json")
    res = run("diff", str(a), str(b))
    assert isinstance(res.exception, VerificationFailed) and exit_code_for(res.exception) == EXIT_VERIFY
    out = res.stdout
    assert "SSSE/EF05: record 5 (issue_date) differs: byte 3: '20201111' → '20211111'" in out
    assert "SSSE/EF06: record 1 (citizen_id) differs: byte 5" in out
    assert prepared.identity not in lines_of(res)
    changed = prepared.identity[:3] + chr(ord(prepared.identity[3]) ^ 1) + prepared.identity[4:]
    assert changed not in lines_of(res)
    data = json.loads(run("--json", "diff", str(a), str(b)).stdout)
    assert len(data["differences"]) == 2 and not data["same"]


def test_rules_sizes_and_missing_files_are_reported(tmp_path: Path) -> None:
    _, _, card = issue_card()
    a = snap(card)
    ef(card, (0xDDF1, 0xEF05)).rules = AccessRules({"read": "never", "update": "issuer", "append": "issuer"})
    photo = ef(card, (0xDDF1, 0xEF08))
    photo.size, photo.data = 2048, bytearray(2048)
    df01 = ef(card, (0xDDF1, 0xDF01))
    df01.parent.children.remove(df01)
    b = snap(card)
    result = diff_snapshots(a, b, a_name="before", b_name="after")
    found = {(d["where"], d["what"]): (d.get("a"), d.get("b")) for d in result.differences}
    assert found[("SSSE/EF05", "access rule 'read'")] == ("always", "never")
    assert found[("SSSE/EF08", "size")] == (4096, 2048)
    assert ("SSSE/DF01", "missing in after") in found and ("SSSE/DF01/EF05", "missing in after") in found
    assert ("SSSE/EF05", "records not compared: after could not read them (read refused: 6982 security status "
                         "not satisfied — read needs a condition no one can meet (never allowed))") in \
        {(n["where"], n["why"]) for n in result.not_compared}
    strict = diff_snapshots(a, b, strict=True)
    assert any(d["what"].startswith("records not compared") for d in strict.differences)


def test_pin_counter_and_atr_differences(tmp_path: Path) -> None:
    from test_info import block_pin

    _, prepared, card = issue_card()
    a = snap(card, keys=False)
    block_pin(card, prepared.pins["pin"])
    result = diff_snapshots(a, snap(card, keys=False))
    pin = next(d for d in result.differences if d["where"] == "PIN pin")
    assert pin["a"].startswith("3 of 3") and pin["b"].startswith("blocked")


def test_golden_card_from_profile_and_record(tmp_path: Path) -> None:
    row = sample_rows(2)[1]
    _profile, _prepared, card = issue_card(row)
    s = save_snapshot(snap(card), tmp_path / "card.json")
    record = tmp_path / "person.json"
    record.write_text(json.dumps(row, ensure_ascii=False), encoding="utf-8")
    res = run("diff", str(s), "--profile", "ssc", "--record", str(record), *KEYS)
    assert res.exit_code == 0, lines_of(res)
    assert "0 difference(s)" in res.stdout
    # without keys the card identification code (MAC under a card key) cannot be computed: said, not failed
    res = run("diff", str(s), "--profile", "ssc", "--record", str(record))
    assert res.exit_code == 0, lines_of(res)
    assert "record 1 (card_id_code)" in res.stdout and "not computed" in res.stdout
    # another person's record: every differing field by name, identifiers never in clear
    other = tmp_path / "other.csv"
    other.write_text((ROOT / "applets/ssc/sample-batch.csv").read_text(encoding="utf-8"), encoding="utf-8")
    res = run("diff", str(s), "--profile", "ssc", "--record", str(other), "--index", "1", *KEYS)
    assert isinstance(res.exception, VerificationFailed)
    for name in ("citizen_id", "name", "card_number", "issue_date", "card_id_code"):
        assert f"({name}) differs" in res.stdout
    for r in (row, sample_rows(1)[0]):
        assert r["citizen_id"] not in lines_of(res) and r["card_number"] not in lines_of(res)


def test_golden_snapshot_api_detects_a_planted_byte() -> None:
    profile, prepared, card = issue_card()
    ef(card, (0xDDF1, 0xDF01, 0xEF05)).records[0][4] ^= 0x40
    golden = expected_snapshot(profile, prepared, ssc_keys(), card.serial)
    result = diff_snapshots(snap(card), golden)
    assert [d["where"] for d in result.differences] == ["SSSE/DF01/EF05"]
    assert "record 1 (household_registration) differs: byte 4" in result.differences[0]["what"]


def test_bad_snapshot_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"files": []}', encoding="utf-8")
    with pytest.raises(SnapshotError, match="not a cardkit snapshot"):
        load_snapshot(bad)
    res = run("diff", str(bad), str(tmp_path / "missing.json"))
    assert exit_code_for(res.exception) == 6 and "not a cardkit snapshot" in str(res.exception)
    res = run("diff", str(tmp_path / "missing.json"), str(bad))
    assert "cannot read snapshot" in str(res.exception)
    res = run("diff", str(bad))
    assert res.exit_code == 2 and "--profile P and --record FILE" in res.output
    res = run("diff", str(bad), str(bad), "--profile", "ssc")
    assert res.exit_code == 2 and "not both" in res.output
    res = run("--reader", f"virtual:{tmp_path / 'c.json'}", "snapshot", "--out", str(tmp_path / "no" / "s.json"))
    assert res.exit_code == 2 and "does not exist" in res.output


def test_end_to_end_with_the_console_script(tmp_path: Path) -> None:
    _, prepared, card = issue_card()
    image = tmp_path / "card.json"
    card.save(image)
    exe = str(Path(sys.executable).with_name("cardkit"))

    def cardkit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, "--reader", f"virtual:{image}", *args], capture_output=True, text=True,
                              timeout=60)

    assert cardkit("snapshot", "--out", str(tmp_path / "a.json")).returncode == 0
    card = type(card).load(image)
    ef(card, (0xDDF1, 0xEF05)).records[6][4] ^= 0x01  # card number
    card.save(image)
    assert cardkit("snapshot", "--out", str(tmp_path / "b.json")).returncode == 0
    proc = cardkit("diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert proc.returncode == EXIT_VERIFY, proc.stderr
    assert "record 7 (card_number) differs: byte 4" in proc.stdout
    assert proc.stderr.strip().startswith("error: 1 difference(s)")
    assert prepared.identity not in proc.stdout + proc.stderr


def test_snapshot_of_a_blank_card(tmp_path: Path) -> None:
    from cardkit.readers import new_virtual_card

    card = new_virtual_card()
    doc = snap(card, keys=False)
    assert [f["path"] for f in doc["files"]] == ["MF"] and doc["profile"]["name"] is None
    assert diff_snapshots(doc, snap(card, keys=False)).same
    assert isinstance(ef(card, ()), object) and not isinstance(card.mf, EF)


def test_globalplatform_changes_are_reported(tmp_path: Path) -> None:
    from test_info import _gp_card

    from cardkit.keys.store import TestKeyFile

    card, keyfile = _gp_card(tmp_path, 3)
    ks = TestKeyFile(keyfile, allow_test_keys=True)

    def gp_snap() -> dict[str, Any]:
        session = CardSession(VirtualTransport(card))
        return take_snapshot(session, DiagnoseOptions(keystore=ks, gp_keyset="gp-isd"))

    a = gp_snap()
    assert a["gp"]["registry"]["card_life_cycle"] == "OP_READY"
    assert diff_snapshots(a, gp_snap()).same  # the sequence counter moves on, and is not a difference
    from cardkit.virtual.gp import find_isd

    isd = find_isd(card)
    assert isd is not None
    isd.life_cycle = 0x07  # INITIALIZED (GPCS 2.3.1 §5.1.1), as SET STATUS would leave it
    result = diff_snapshots(a, gp_snap())
    entry = next(d for d in result.differences if d["where"] == "GlobalPlatform isd A000000151000000")
    assert (entry["a"], entry["b"]) == ("OP_READY", "INITIALIZED")
