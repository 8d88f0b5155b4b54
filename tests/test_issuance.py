"""Personalize and verify the SSC profile on the virtual card, in-process; access rules hold afterwards."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cardkit.commands import iso
from cardkit.crypto import Alg
from cardkit.errors import ProfileError
from cardkit.issuance.engine import VerificationError, chip_serial, open_issuer_channel, personalize, verify
from cardkit.issuance.prepare import RecordProblems, prepare, validate_record
from cardkit.keys.store import TestKeyFile, alg_of
from cardkit.profiles.model import load_profile
from cardkit.readers import TEST_KEYS, new_virtual_card
from cardkit.session import CardSession
from cardkit.sw import SecurityStatusNotSatisfied
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual.fs import EF

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def keystore() -> TestKeyFile:
    return TestKeyFile(TEST_KEYS, allow_test_keys=True)


def rows(n: int) -> list[dict[str, str]]:
    with open(ROOT / "applets/ssc/sample-batch.csv", encoding="utf-8", newline="") as fh:
        return [r for _, r in zip(range(n), csv.DictReader(fh), strict=False)]


def issue(keystore: TestKeyFile, algorithm: str, row: dict[str, str]):  # type: ignore[no-untyped-def]
    profile = load_profile(ROOT / "applets/ssc", algorithm=algorithm)
    prepared = prepare(profile, row)
    alg = alg_of(algorithm)
    card = new_virtual_card(alg=alg, transport_key=keystore.key(profile.transport_key, alg).value, seed=7)
    session = CardSession(VirtualTransport(card))
    result = personalize(session, profile, prepared, keystore)
    return profile, prepared, card, session, result


@pytest.mark.parametrize("algorithm", ["sm4", "3des"])
def test_personalize_and_verify(keystore: TestKeyFile, algorithm: str) -> None:
    profile, prepared, card, session, result = issue(keystore, algorithm, rows(1)[0])
    manifest = verify(session, profile, prepared, keystore, result)
    assert manifest["chip_serial"] == card.serial.hex().upper() == chip_serial(card.atr).hex().upper()
    assert set(manifest["files"]) == {"SSSE/EF05", "SSSE/EF06", "SSSE/DF01/EF05"}
    assert all(len(h) == 64 for h in manifest["files"].values())
    assert prepared.identity not in repr(prepared) and prepared.identity not in str(manifest)


def test_planted_wrong_byte_fails_verification_naming_the_file(keystore: TestKeyFile) -> None:
    profile, prepared, card, session, result = issue(keystore, "sm4", rows(2)[1])
    ef06 = next(n for n in card.files() if isinstance(n, EF) and n.fid == 0xEF06)
    ef06.records[1][5] ^= 0x01
    with pytest.raises(VerificationError, match="SSSE/EF06 record 9"):
        verify(session, profile, prepared, keystore, result)


def test_access_rules_hold_after_issuance(keystore: TestKeyFile) -> None:
    profile, _prepared, _card, session, _result = issue(keystore, "sm4", rows(3)[2])
    session.reset(cold=True)
    session.send(iso.select_aid(bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF"), p2_fci="none"))
    # EF05 (card issuance data) is free to read; EF06 (cardholder data) needs external authentication.
    session.send(iso.select_child_ef(bytes.fromhex("EF05"), p2_fci="none"))
    assert session.send(iso.read_record(1)).data[:1] == b"\x01"
    session.send(iso.select_child_ef(bytes.fromhex("EF06"), p2_fci="none"))
    with pytest.raises(SecurityStatusNotSatisfied):
        session.send(iso.read_record(1))
    # writing is refused without secure messaging, and the old transport key no longer opens the card
    with pytest.raises(SecurityStatusNotSatisfied):
        session.send(iso.update_record(1, b"\x08\x01X"))
    alg = Alg.SM4
    with pytest.raises(Exception, match=r"6300|authentication|6982"):
        open_issuer_channel(session, alg, keystore.key(profile.transport_key, alg).value)


def test_bad_records_report_every_problem() -> None:
    profile = load_profile(ROOT / "applets/ssc")
    row = dict(rows(1)[0])
    row["citizen_id"] = row["citizen_id"][:-1] + ("0" if row["citizen_id"][-1] != "0" else "1")
    row["birth_date"] = "20231340"
    row["name"] = "名" * 20
    row["bogus"] = "x"
    problems = validate_record(profile, row, line=7)
    fields = {p.field for p in problems}
    assert {"citizen_id", "birth_date", "name", "bogus"} <= fields
    assert all(p.line == 7 for p in problems)
    with pytest.raises(RecordProblems) as ei:
        prepare(profile, row, line=7)
    assert row["citizen_id"] not in str(ei.value)


def test_profile_errors_are_located(tmp_path: Path) -> None:
    text = (ROOT / "applets/ssc/profile.toml").read_text(encoding="utf-8").replace('sfi = 6\n', 'sfi = 31\n', 1)
    bad = tmp_path / "profile.toml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as ei:
        load_profile(bad)
    assert ei.value.line is not None and "sfi" in str(ei.value) and "1..30" in str(ei.value)
    assert text.splitlines()[ei.value.line - 1].startswith("sfi = 31")
