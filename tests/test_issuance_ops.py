"""Engine (plan at the APDU minimum, chunked writes, PIN-protected read-back, signed manifests) and the
post-issuance operations, on the in-process virtual card."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from cardkit.commands import iso
from cardkit.crypto import Alg
from cardkit.errors import AuthenticationError, KeystoreError, ProfileError, RecordError
from cardkit.issuance import operations as ops
from cardkit.issuance.engine import (
    EcdsaSigner,
    ManifestSignatureError,
    VerificationError,
    manifest_bytes,
    open_issuer_channel,
    personalize,
    plan_card,
    sign_manifest,
    verify,
    verify_manifest_signature,
    write_manifest,
)
from cardkit.issuance.plan import CardLimits, minimum_apdus
from cardkit.issuance.prepare import PreparedRecord, prepare
from cardkit.keys.store import TestKeyFile, alg_of
from cardkit.profiles.model import Profile, load_profile
from cardkit.readers import TEST_KEYS, new_virtual_card
from cardkit.session import CardSession
from cardkit.sw import AuthenticationBlocked, InvalidPin, SecurityStatusNotSatisfied
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual.card import VirtualCard

ROOT = Path(__file__).resolve().parents[1]
MEMBER = "120101196310210289"  # a sample-batch citizen ID (synthetic)


@pytest.fixture(scope="module")
def keystore() -> TestKeyFile:
    return TestKeyFile(TEST_KEYS, allow_test_keys=True)


def rows(n: int) -> list[dict[str, str]]:
    with open(ROOT / "applets/ssc/sample-batch.csv", encoding="utf-8", newline="") as fh:
        return [r for _, r in zip(range(n), csv.DictReader(fh), strict=False)]


class Issued:
    def __init__(self, keystore: TestKeyFile, profile: Profile, row: dict[str, str], *, extended: bool = False,
                 trace: io.StringIO | None = None) -> None:
        self.profile = profile
        self.prepared: PreparedRecord = prepare(profile, row)
        alg = alg_of(profile.algorithm)
        self.card: VirtualCard = new_virtual_card(alg=alg, seed=3,
                                                  transport_key=keystore.key(profile.transport_key, alg).value)
        self.session = CardSession(VirtualTransport(self.card), extended=extended, trace=trace)
        self.result = personalize(self.session, profile, self.prepared, keystore)
        self.written = self.session.apdu_count
        self.pin = self.result.pins["pin"]
        self.puk = self.result.pins["puk"]

    def pin_tries(self) -> int:
        ssse = self.card.mf.children[0]
        return ssse.pins[1].tries_left  # type: ignore[attr-defined, no-any-return]


def keystore_with(tmp_path: Path, name: str, alg: str, value: str) -> TestKeyFile:
    """The TEST keys with one master key replaced (a wrong key set)."""
    import tomllib

    doc = tomllib.loads(TEST_KEYS.read_text(encoding="utf-8"))
    lines = ["test_only = true"]
    for k in doc["key"]:
        v = value if (k["name"], k["alg"]) == (name, alg) else k["value"]
        lines += ["[[key]]", f'name = "{k["name"]}"', f'alg = "{k["alg"]}"', f'value = "{v}"']
    path = tmp_path / "wrong.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return TestKeyFile(path, allow_test_keys=True)


@pytest.fixture
def issued(keystore: TestKeyFile) -> Issued:
    return Issued(keystore, load_profile(ROOT / "applets/ssc"), rows(1)[0])


# ------------------------------------------------------------------------------------------ engine


@pytest.mark.parametrize("algorithm", ["sm4", "3des"])
def test_ssc_is_personalized_in_the_minimum_number_of_apdus(keystore: TestKeyFile, algorithm: str) -> None:
    profile = load_profile(ROOT / "applets/ssc", algorithm=algorithm)
    trace = io.StringIO()
    it = Issued(keystore, profile, rows(2)[1], trace=trace)
    budget = minimum_apdus(profile, it.prepared)
    assert it.written == it.result.apdus == budget.total == 36
    assert budget.as_dict() == {"channel": 3, "rotation": 3, "create": 10, "keys_pins": 5, "write": 14,
                                "navigation": 1, "total": 36}
    assert it.result.manifest["apdus"] == {"personalize": 36, "minimum": 36}
    manifest = verify(it.session, profile, it.prepared, keystore, it.result)
    assert manifest["algorithm"] == algorithm and manifest["apdus"]["verify"] == it.session.apdu_count - 36
    names = [json.loads(line)["name"] for line in trace.getvalue().splitlines()[:36]]
    assert names.count("SELECT") == 2  # the issuer channel's SELECT MF and one return from DF01 to SSSE
    assert names.count("CREATE FILE") == 10 and names.count("APPEND RECORD") == 14
    secrets = [keystore.key(n, alg_of(algorithm)).value.hex().upper()
               for n in ("ssc-transport", "ssc-issuer", "ssc-irk", "ssc-rkssse", "ssc-sm")]
    for needle in [*secrets, it.pin.decode(), it.puk.decode(), it.prepared.identity]:
        assert needle not in trace.getvalue()
    # the card keeps the diversified issuer key: the transport key opens nothing
    with pytest.raises(AuthenticationError, match=r"6300|refused"):
        open_issuer_channel(it.session, alg_of(algorithm), keystore.key("ssc-transport", alg_of(algorithm)).value)


def test_plan_holds_secrets_but_never_shows_them(keystore: TestKeyFile) -> None:
    profile = load_profile(ROOT / "applets/ssc")
    prepared = prepare(profile, rows(1)[0])
    plan = plan_card(profile, prepared, keystore, b"\x01\x02\x03\x04")
    text = repr(plan) + repr(plan.steps) + "\n".join(plan.summary())
    assert "load key rkssse" in plan.summary() and "prove the issuer key (fresh mutual authentication)" in text
    assert prepared.pins["pin"].decode() not in text and prepared.identity not in text
    assert keystore.key("ssc-transport", Alg.SM4).value.hex() not in text.lower()
    assert sum(1 if s.kind == "command" else 3 if s.kind == "channel" else 2 for s in plan.steps) == \
        minimum_apdus(profile, prepared).total


@pytest.fixture
def photo_profile(tmp_path: Path) -> Path:
    folder = tmp_path / "ssc"
    folder.mkdir()
    shutil.copy(ROOT / "applets/ssc/profile.toml", folder / "profile.toml")
    (folder / "face.bin").write_bytes(bytes(range(256)) * 15 + b"\xee" * 160)  # 4000 bytes
    (folder / "finger.bin").write_bytes(b"\x5a" * 1000)
    return folder


@pytest.mark.parametrize(("extended", "photo_apdus"), [(False, math.ceil(4000 / 239)), (True, 1)])
def test_transparent_files_are_written_in_the_largest_chunk(keystore: TestKeyFile, photo_profile: Path,
                                                            extended: bool, photo_apdus: int) -> None:
    profile = load_profile(photo_profile)
    row = dict(rows(1)[0], photo="face.bin", fingerprint="finger.bin")
    it = Issued(keystore, profile, row, extended=extended)
    limits = CardLimits(extended=extended)
    assert CardLimits.of(it.session) == limits  # the virtual card's ATR announces extended lengths
    fingerprint_apdus = 1 if extended else math.ceil(1000 / 239)
    assert it.written == 36 + photo_apdus + fingerprint_apdus == minimum_apdus(profile, it.prepared,
                                                                               limits=limits).total
    manifest = verify(it.session, profile, it.prepared, keystore, it.result)
    assert set(manifest["files"]) >= {"SSSE/EF07", "SSSE/EF08"}
    ef08 = next(n for n in it.card.files() if getattr(n, "fid", None) == 0xEF08 and n.parent.fid == 0xDDF1)
    ef08.data[3999] ^= 1  # type: ignore[attr-defined]
    with pytest.raises(VerificationError, match="SSSE/EF08: read-back differs"):
        verify(it.session, profile, it.prepared, keystore, it.result)


def test_pin_protected_files_are_read_back_only_with_a_known_pin(keystore: TestKeyFile) -> None:
    profile = load_profile(ROOT / "applets/ssc")
    row = dict(rows(1)[0], medical_insurance_id="MI4403000012", insured_since="20200101")
    it = Issued(keystore, profile, row)
    manifest = verify(it.session, profile, it.prepared, keystore, it.result)
    assert "SSSE/DF04/EF05" in manifest["files"] and it.pin_tries() == 3
    fresh = prepare(profile, row)  # a new preparation: its generated PIN is not the card's
    with pytest.raises(VerificationError, match=r"SSSE/DF04/EF05: cannot read it back: read needs PIN 01 \(pin\)"):
        verify(it.session, profile, fresh, keystore)
    assert it.pin_tries() == 3  # no guess was sent
    again = verify(it.session, profile, fresh, keystore, pins={"pin": it.pin})
    assert again["files"] == manifest["files"]


def test_verify_checks_the_layout_not_only_the_contents(keystore: TestKeyFile) -> None:
    from cardkit.acl import AccessRules
    from cardkit.virtual.fs import DF

    profile = load_profile(ROOT / "applets/ssc")
    it = Issued(keystore, profile, rows(1)[0])
    manifest = verify(it.session, profile, it.prepared, keystore, it.result)
    assert manifest["layout"] == {"files": 10, "pins": {"pin": 3}}
    assert manifest["apdus"]["verify"] == 30  # channel 3 + 10 FCP selects + 1 PIN counter + 2 ext-auth + 14 reads
    ssse = it.card.mf.children[0]
    assert isinstance(ssse, DF)
    df04 = next(c for c in ssse.children if c.fid == 0xDF04)
    assert isinstance(df04, DF)
    ef06 = df04.children.pop()  # the (empty) family-binding file: no content to compare, still checked
    with pytest.raises(VerificationError, match="file SSSE/DF04/EF06 is missing"):
        verify(it.session, profile, it.prepared, keystore, it.result)
    df04.children.append(ef06)
    ef06.rules = AccessRules({"read": "always", "append": "always"})
    with pytest.raises(VerificationError, match="SSSE/DF04/EF06: security attributes differs"):
        verify(it.session, profile, it.prepared, keystore, it.result)


def test_minimum_without_a_record_and_for_gp_profiles(tmp_path: Path) -> None:
    profile = load_profile(ROOT / "applets/ssc")
    assert minimum_apdus(profile).total == 36  # required + computed records, no optional contents
    text = (ROOT / "applets/ssc/profile.toml").read_text(encoding="utf-8").replace('channel = "iso-sm"',
                                                                                  'channel = "scp03"')
    (tmp_path / "p.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError, match="no ISO layout budget"):
        minimum_apdus(load_profile(tmp_path / "p.toml"))


# ------------------------------------------------------------------------------------------ manifests


def test_manifest_signature_round_trip_and_tampering(keystore: TestKeyFile, issued: Issued, tmp_path: Path) -> None:
    manifest = verify(issued.session, issued.profile, issued.prepared, keystore, issued.result)
    signer = EcdsaSigner.test_station(allow_test_keys=True)
    sig = sign_manifest(manifest, signer)
    assert sig["key_id"].startswith("TEST-") and sig["alg"] == "ES256"
    assert verify_manifest_signature(manifest, sig, [signer.public_key_pem()]) == signer.key_id
    changed = dict(manifest, chip_serial="00000000")
    with pytest.raises(ManifestSignatureError, match="changed after signing"):
        verify_manifest_signature(changed, sig, [signer.public_key_pem()])
    forged = dict(sig, manifest_sha256=__import__("hashlib").sha256(manifest_bytes(changed)).hexdigest())
    with pytest.raises(ManifestSignatureError, match="does not verify"):
        verify_manifest_signature(changed, forged, [signer.public_key_pem()])
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = EcdsaSigner(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ManifestSignatureError, match="not trusted"):
        verify_manifest_signature(manifest, sign_manifest(manifest, other), [signer.public_key_pem()])
    with pytest.raises(ManifestSignatureError, match="ES256"):
        verify_manifest_signature(manifest, {"format": "x"}, [signer.public_key_pem()])
    sig_path = write_manifest(tmp_path / "m.json", manifest, signer)
    assert sig_path is not None and (tmp_path / "m.json").stat().st_mode & 0o777 == 0o600
    assert issued.prepared.identity not in (tmp_path / "m.json").read_text(encoding="utf-8")


def test_test_station_key_is_refused_without_the_flag() -> None:
    with pytest.raises(KeystoreError, match="TEST station key"):
        EcdsaSigner.test_station()
    with pytest.raises(KeystoreError, match=r"P-256|PEM"):
        EcdsaSigner(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


# ------------------------------------------------------------------------------------------ PINs


def test_pin_status_change_and_unblock(keystore: TestKeyFile, issued: Issued) -> None:
    s, p = issued.session, issued.profile
    assert ops.pin_status(s, p) == ops.PinStatus("pin", "SSSE", 3, 3, False, False)
    ops.change_pin(s, p, keystore, issued.pin, b"135790")
    with pytest.raises(InvalidPin) as ei:
        ops.change_pin(s, p, keystore, issued.pin, b"246802")  # the initial PIN is gone
    assert ei.value.attempts_left == 2 and issued.pin.decode() not in str(ei.value)
    assert ops.pin_status(s, p).tries_left == 2
    for _ in range(2):
        with pytest.raises(InvalidPin):
            ops.change_pin(s, p, keystore, b"000000", b"246802")
    assert ops.pin_status(s, p).blocked
    with pytest.raises(AuthenticationBlocked):
        ops.change_pin(s, p, keystore, b"135790", b"246802")
    before = s.apdu_count
    with pytest.raises(RecordError, match=r"new PIN must be 6\.\.6 digits"):
        ops.unblock_pin(s, p, keystore, issued.puk, b"12ab56")
    assert s.apdu_count == before  # refused before touching the card
    with pytest.raises(InvalidPin):
        ops.unblock_pin(s, p, keystore, b"00000000", b"246802")
    ops.unblock_pin(s, p, keystore, issued.puk, b"246802")
    assert ops.pin_status(s, p).tries_left == 3
    ops.change_pin(s, p, keystore, b"246802", b"112233")
    with pytest.raises(RecordError, match="equals the current one"):
        ops.change_pin(s, p, keystore, b"112233", b"112233")


def test_pin_change_needs_the_cardholder_sm_key(issued: Issued, tmp_path: Path) -> None:
    s, p = issued.session, issued.profile
    bad = keystore_with(tmp_path, "ssc-sm", "sm4", "00" * 16)  # a wrong master key: the card refuses the channel
    with pytest.raises(AuthenticationError, match=r"refused|6300|63C"):
        ops.change_pin(s, p, bad, issued.pin, b"135790")
    assert ops.pin_status(s, p).tries_left == 3  # the PIN was never sent


# ------------------------------------------------------------------------------------------ operations


def test_bind_family_appends_under_pin_and_sm_once(keystore: TestKeyFile, issued: Issued) -> None:
    s, p = issued.session, issued.profile
    values = {"member_ssn": MEMBER, "relationship": "10", "member_name": "邓佳"}
    res = ops.run_operation(s, p, keystore, "bind-family", values, {"pin": issued.pin})
    assert res.records == (1,) and res.file == "SSSE/DF04/EF06"
    with pytest.raises(ops.OperationError, match="already on the card") as ei:
        ops.run_operation(s, p, keystore, "bind-family", values, {"pin": issued.pin})
    assert MEMBER not in str(ei.value)
    second = {"member_ssn": rows(3)[2]["citizen_id"], "relationship": "20"}
    assert ops.run_operation(s, p, keystore, "bind-family", second, {"pin": issued.pin}).records == (2,)
    with pytest.raises(InvalidPin):
        ops.run_operation(s, p, keystore, "bind-family", {"member_ssn": rows(4)[3]["citizen_id"],
                                                         "relationship": "10"}, {"pin": b"999999"})
    with pytest.raises(RecordError, match="member_ssn"):
        ops.run_operation(s, p, keystore, "bind-family", {"member_ssn": MEMBER[:-1] + "0", "relationship": "10"},
                          {"pin": issued.pin})
    with pytest.raises(ops.OperationError, match="needs PIN 'pin'"):
        ops.run_operation(s, p, keystore, "bind-family", values, {})
    # the issuer alone cannot bind: the rule is "pin:01 and sm"
    ops.open_issuer(s, p, keystore)
    s.send(iso.select_path(bytes.fromhex("DDF1DF04"), p2_fci="none"))
    with pytest.raises(SecurityStatusNotSatisfied):
        s.send(iso.append_record(ops.encode_operation(p.operation("bind-family"), values, 48), sfi=6))
    dump = ops.read_card(s, p, keystore=keystore, pins={"pin": issued.pin}).as_dict()
    family = next(f for f in dump["files"] if f["path"] == "SSSE/DF04/EF06")["records"]
    assert [r["fields"]["relationship"] for r in family] == ["10", "20"]
    assert family[0]["fields"]["member_ssn"] == "1201************89" and family[0]["fields"]["member_name"] == "邓佳"


def test_operation_records_encode_and_decode() -> None:
    op = load_profile(ROOT / "applets/ssc").operation("bind-family")
    rec = ops.encode_operation(op, {"member_ssn": MEMBER, "relationship": "00"}, 48)
    assert len(rec) == 48 and rec.startswith(b"\x01\x12" + MEMBER.encode() + b"\x02\x01\x00")
    assert ops.decode_operation_record(op, rec) == {"member_ssn": MEMBER, "relationship": "00"}
    with pytest.raises(RecordError, match="missing"):
        ops.encode_operation(op, {"member_ssn": MEMBER}, 48)
    with pytest.raises(RecordError, match="takes no such field"):
        ops.encode_operation(op, {"member_ssn": MEMBER, "relationship": "10", "colour": "red"})


def test_diversification_levels_come_from_the_card(issued: Issued) -> None:
    assert ops.card_fields_from_card(issued.session, issued.profile, ("region", "serial")) == {
        "region": rows(1)[0]["region"]}
    with pytest.raises(ops.OperationError, match="'phone' cannot be read"):
        ops.card_fields_from_card(issued.session, issued.profile, ("phone",))


# ------------------------------------------------------------------------------------------ life cycle


def test_block_unblock_terminate(keystore: TestKeyFile, issued: Issued) -> None:
    s, p = issued.session, issued.profile
    ops.block_card(s, p, keystore)
    assert ops.pin_status(s, p).df_deactivated
    assert ops.read_card(s, p).state == "blocked"
    with pytest.raises(ops.OperationError, match="deactivated"):
        ops.change_pin(s, p, keystore, issued.pin, b"135790")
    with pytest.raises(Exception, match="6985"):
        s.send(iso.read_record(1, sfi=5))
    ops.unblock_card(s, p, keystore)
    assert not ops.pin_status(s, p).df_deactivated
    verify(s, p, issued.prepared, keystore, issued.result)
    ops.terminate_card(s, p, keystore)
    assert ops.read_card(s, p).state == "terminated"
    assert s.transmit(iso.select_mf(p2_fci="none")).sw == 0x6A81


def test_life_cycle_needs_the_issuer_keys(issued: Issued, tmp_path: Path) -> None:
    wrong = keystore_with(tmp_path, "ssc-issuer", "sm4", bytes(range(16)).hex())
    with pytest.raises(AuthenticationError, match=r"refused|6300|63C"):
        ops.block_card(issued.session, issued.profile, wrong)
    assert ops.read_card(issued.session, issued.profile).state == "operational"


# ------------------------------------------------------------------------------------------ dump


def test_dump_masks_identifiers_and_explains_what_it_cannot_read(keystore: TestKeyFile, issued: Issued) -> None:
    s, p = issued.session, issued.profile
    row = rows(1)[0]
    plain = ops.read_card(s, p).as_dict()
    by_path: dict[str, Any] = {f["path"]: f for f in plain["files"]}
    assert by_path["SSSE/EF06"]["not_read"] == "read needs external authentication with key 02 (rkssse): give --keys"
    assert by_path["SSSE/DF04/EF06"]["not_read"] == "read needs PIN 01 (pin)"
    ef05 = {r["field"]: r["value"] for r in by_path["SSSE/EF05"]["records"]}
    assert ef05["card_number"] == row["card_number"][:4] + "***" + row["card_number"][-2:]
    assert ef05["card_id_code"].startswith(row["region"] + "D156000005" + issued.card.serial.hex().upper())
    full = ops.read_card(s, p, keystore=keystore, pins={"pin": issued.pin}).as_dict()
    text = json.dumps(full, ensure_ascii=False)
    assert row["citizen_id"] not in text and row["card_number"] not in text and "4403************29" in text
    assert row["name"] in text and full["channel"] == "secure messaging (ssse-sm)"
    unmasked = json.dumps(ops.read_card(s, p, keystore=keystore, unmask=True).as_dict(), ensure_ascii=False)
    assert row["citizen_id"] in unmasked
    assert issued.pin_tries() == 3


def test_mrtd_profile_reaches_its_minimum_and_verifies_through_bac() -> None:
    """The generic engine on the eMRTD profile: files read back under BAC (mutual authentication, key 01)."""
    mrtd = pytest.importorskip("cardkit.apps.mrtd")
    if not (ROOT / "applets/mrtd/profile.toml").exists() or not hasattr(mrtd, "prepare_mrtd"):
        pytest.skip("the mrtd profile is not shipped yet")
    profile = load_profile(ROOT / "applets/mrtd")
    ks = TestKeyFile(ROOT / "keys/test/mrtd.toml", allow_test_keys=True)
    with open(ROOT / "applets/mrtd/sample-batch.csv", encoding="utf-8", newline="") as fh:
        row = next(csv.DictReader(fh))
    prepared = mrtd.prepare_mrtd(profile, row, keystore=ks)
    alg = alg_of(profile.algorithm)
    card = new_virtual_card(alg=alg, transport_key=ks.key(profile.transport_key, alg).value, seed=4)
    session = CardSession(VirtualTransport(card))
    result = personalize(session, profile, prepared, ks)
    assert result.apdus == minimum_apdus(profile, prepared).total
    manifest = verify(session, profile, prepared, ks, result)
    assert len(manifest["files"]) == 4


def test_dump_of_a_blank_card_says_so(keystore: TestKeyFile) -> None:
    card = new_virtual_card(alg=Alg.SM4, transport_key=keystore.key("ssc-transport", Alg.SM4).value, seed=9)
    dump = ops.read_card(CardSession(VirtualTransport(card)), load_profile(ROOT / "applets/ssc"), keystore=keystore)
    assert dump.state == "not personalized (no file of the profile)" and dump.files == []
    assert "not personalized" in dump.lines()[0]
