"""GP personalization of the gp-store-data profile (SCP03 / SCP02 / DES→AES migration) on the virtual ISD."""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from pathlib import Path
from typing import Any

import pytest

from cardkit.commands import gp
from cardkit.crypto import Alg
from cardkit.errors import AuthenticationError, KeystoreError, ProfileError
from cardkit.issuance.engine import CardResult, VerificationError, personalize, verify
from cardkit.issuance.gp import GpOptions, get_status_all, gp_keyset, open_gp_channel, profile_dgis
from cardkit.issuance.prepare import PreparedRecord, prepare
from cardkit.keys.store import TestKeyFile
from cardkit.profiles.model import Profile, load_profile
from cardkit.session import CardSession
from cardkit.sm.gp import GpKeySet
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual.card import VirtualCard
from cardkit.virtual.gp import IssuerSecurityDomain, install_isd

ROOT = Path(__file__).resolve().parents[1]
APPLET = ROOT / "applets" / "gp-store-data"
APP = bytes.fromhex("F0434B495444530101")
# TEST ONLY key values, written to a temporary TEST key file.
_KEYS = {
    ("gp-transport", "aes"): "404142434445464748494A4B4C4D4E4F",
    ("gp-transport", "3des"): "404142434445464748494A4B4C4D4E4F",
    ("gp-issuer-enc", "aes"): "6E1D2A55F1C79B2E8A43C0D5B7E16F90",
    ("gp-issuer-mac", "aes"): "0B83A1E4D22C79F5186D3E4A9C57B2F1",
    ("gp-issuer-dek", "aes"): "9A4C1E7B3D25F08C6B1A94E2D7C35F48",
    ("gp-issuer", "3des"): "3C5A71E8D02B9F46A1C8E35B7D90F264",
    ("gp-app-master", "aes"): "D4E3F2A1B0C9D8E7F6A5B4C3D2E1F0A9",
    ("gp-app-master", "3des"): "1F2E3D4C5B6A79880123456789ABCDEF",
    ("half-enc", "aes"): "00112233445566778899AABBCCDDEEFF",
}


@pytest.fixture(scope="module")
def keystore(tmp_path_factory: pytest.TempPathFactory) -> TestKeyFile:
    path = tmp_path_factory.mktemp("keys") / "gp-test.toml"
    body = "".join(f'[[key]]\nname = "{n}"\nalg = "{a}"\nvalue = "{v}"\n' for (n, a), v in _KEYS.items())
    path.write_text("test_only = true\n" + body, encoding="utf-8")
    return TestKeyFile(path, allow_test_keys=True)


def rows() -> list[dict[str, str]]:
    with open(APPLET / "sample-batch.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def scp02_profile(profile: Profile, **options: Any) -> Profile:
    opts = {**profile.options, "diversification": "emv", "level": 0x03, **options}
    return dataclasses.replace(profile, channel="scp02", algorithm="3des", algorithms=("3des",), options=opts)


def blank(keystore: TestKeyFile, alg: Alg = Alg.AES, serial: bytes = b"\xC0\x00\x00\x07") -> tuple[
        VirtualCard, IssuerSecurityDomain, CardSession]:
    card = VirtualCard(serial, seed=5)
    keys = GpKeySet.single(keystore.key("gp-transport", alg).value, alg=alg, version=0x01)
    isd = install_isd(card, keys, 3 if alg is Alg.AES else 2)
    return card, isd, CardSession(VirtualTransport(card))


def fresh(session: CardSession) -> None:
    """Drop the secure channels left on the session and select the ISD."""
    for proc in session.processors:
        session.remove(proc)
    session.send(gp.select_isd())


def issue(keystore: TestKeyFile, profile: Profile, alg: Alg = Alg.AES, row: int = 0) -> tuple[
        VirtualCard, IssuerSecurityDomain, CardSession, PreparedRecord, CardResult]:
    card, isd, session = blank(keystore, alg)
    prepared = prepare(profile, rows()[row])
    result = personalize(session, profile, prepared, keystore)
    return card, isd, session, prepared, result


def test_sample_batch_prepares() -> None:
    profile = load_profile(APPLET)
    assert [prepare(profile, r).identity for r in rows()] == [r["member_id"] for r in rows()]


def test_scp03_personalize_and_verify(keystore: TestKeyFile, caplog: pytest.LogCaptureFixture) -> None:
    profile = load_profile(APPLET)
    caplog.set_level(5)  # TRACE: APDUs too
    card, isd, session, prepared, result = issue(keystore, profile)
    manifest = verify(session, profile, prepared, keystore, result)
    assert manifest["chip_serial"] == card.serial.hex().upper() == result.serial
    assert set(manifest["files"]) == {"DGI 0101", "DGI 0102", "DGI 0103", "DGI 0201"}
    assert manifest["sensitive_dgis"] == ["8010", "8101"]
    assert (manifest["card_life_cycle"], manifest["application_life_cycle"], manifest["level"]) == ("0F", "0F", "33")
    assert sorted(isd.key_sets) == [2] and isd.key_sets[2].keys != isd.key_sets[2].keys.with_version(1)
    assert isd.iin == bytes.fromhex("0F434B") and isd.cin == card.serial
    app = isd.apps[APP]
    assert app.data[0x8010] == b"\x03" + result.pins["pin"] and len(result.pins["pin"]) == 6
    assert result.apdus <= 20, result.apdus
    # no secret and no cardholder identity in the manifest or in any log line (APDU traces included)
    pin, key = result.pins["pin"].decode(), app.data[0x8101].hex().upper()
    text = str(manifest) + caplog.text
    assert pin not in text and key not in text.upper() and prepared.identity not in text
    # the transport key set is gone: it opens nothing any more
    fresh(session)
    transport = gp_keyset(keystore, "gp-transport", Alg.AES, 1)
    with pytest.raises(Exception, match="6A88"):
        open_gp_channel(session, transport, key_version=1)


def test_verification_catches_tampering(keystore: TestKeyFile) -> None:
    profile = load_profile(APPLET)
    _, isd, session, prepared, result = issue(keystore, profile, row=1)
    app = isd.apps[APP]
    app.data[0x0201] = app.data[0x0201][:-1] + b"?"
    with pytest.raises(VerificationError, match="DGI 0201"):
        verify(session, profile, prepared, keystore, result)
    app.data[0x0201] = prepared.binaries["HOLDER"]
    app.data[0x8010] = b"\x03000000"
    with pytest.raises(VerificationError, match="sensitive DGI 8010") as ei:
        verify(session, profile, prepared, keystore, result)
    assert result.pins["pin"].decode() not in str(ei.value)


def test_verify_without_the_personalization_result_probes_the_kdd(keystore: TestKeyFile) -> None:
    profile = load_profile(APPLET)
    _, isd, session, prepared, _ = issue(keystore, profile, row=2)
    manifest = verify(session, profile, prepared, keystore)
    assert manifest["key_version"] == "02" and isd.key_sets[2].tries_left == isd.max_tries


def test_scp02_profile(keystore: TestKeyFile) -> None:
    profile = scp02_profile(load_profile(APPLET))
    _card, isd, session, prepared, result = issue(keystore, profile, Alg.DES3, row=3)
    manifest = verify(session, profile, prepared, keystore, result)
    assert manifest["scp"] == "02" and isd.key_sets[2].keys.alg is Alg.DES3 and len(manifest["files"]) == 4


def test_des_to_aes_migration_during_personalization(keystore: TestKeyFile) -> None:
    profile = scp02_profile(load_profile(APPLET), issuer_algorithm="aes", diversification="kdf3")
    _card, isd, session, prepared, result = issue(keystore, profile, Alg.DES3, row=4)
    assert isd.key_sets[2].keys.alg is Alg.AES and isd.key_sets[2].scp == 3
    manifest = verify(session, profile, prepared, keystore, result)
    assert manifest["scp"] == "03"


def test_without_key_rotation_and_without_install(keystore: TestKeyFile) -> None:
    base = load_profile(APPLET)
    opts = {k: v for k, v in base.options.items() if k not in ("install", "issuer_key_version", "iin", "cin")}
    profile = dataclasses.replace(base, rotate_transport_key=None, options={**opts, "final_state": "initialized"})
    _card, isd, session = blank(keystore)
    open_gp_channel(session, gp_keyset(keystore, "gp-transport", Alg.AES, 1))
    session.send(gp.install_for_install(bytes.fromhex("F0434B4954445300"), bytes.fromhex("F0434B495444530001"), APP))
    prepared = prepare(profile, rows()[0])
    result = personalize(session, profile, prepared, keystore)
    manifest = verify(session, profile, prepared, keystore, result)
    assert manifest["key_version"] == "01" and manifest["card_life_cycle"] == "07" and isd.iin is None


def test_wrong_transport_keys_write_nothing(keystore: TestKeyFile) -> None:
    profile = dataclasses.replace(load_profile(APPLET), transport_key="half-enc")
    _card, isd, session = blank(keystore)
    with pytest.raises(AuthenticationError):
        personalize(session, profile, prepare(profile, rows()[0]), keystore)
    assert not isd.apps and isd.key_sets[1].tries_left == isd.max_tries - 1 and isd.life_cycle == 0x01


def test_trace_shows_no_dgi_content(keystore: TestKeyFile) -> None:
    profile = load_profile(APPLET)
    card, _isd, _ = blank(keystore)
    sink = io.StringIO()
    session = CardSession(VirtualTransport(card), trace=sink)
    prepared = prepare(profile, rows()[0])
    personalize(session, profile, prepared, keystore)
    trace = sink.getvalue()
    assert "STORE DATA" in trace and "bytes secret" in trace
    assert prepared.binaries["HOLDER"].hex().upper() not in trace.upper()


@pytest.mark.parametrize(("change", "message"), [
    ({"application_aid": None}, "application_aid"),
    ({"colour": "blue"}, "unknown option"),
    ({"diversification": "rot13"}, "diversification"),
    ({"final_state": "locked"}, "final_state"),
    ({"level": 0x99}, "level"),
    ({"dgis": {"nobody": "8010"}}, "not a key or PIN"),
    ({"dgis": {"pin": "80"}}, "2 bytes"),
    ({"issuer_key_version": None}, "issuer_key_version"),
])
def test_option_errors_are_specific(change: dict[str, Any], message: str) -> None:
    base = load_profile(APPLET)
    opts = {**base.options, **change}
    opts = {k: v for k, v in opts.items() if v is not None}
    with pytest.raises(ProfileError, match=message) as ei:
        GpOptions.of(dataclasses.replace(base, options=opts))
    assert "personalization.options" in str(ei.value)


def test_channel_and_algorithm_must_agree(keystore: TestKeyFile) -> None:
    profile = dataclasses.replace(load_profile(APPLET), algorithm="3des", algorithms=("3des",))
    _card, _isd, session = blank(keystore)
    with pytest.raises(ProfileError, match="scp03 needs algorithm aes"):
        personalize(session, profile, prepare(profile, rows()[0]), keystore)


def test_gp_keyset_naming(keystore: TestKeyFile) -> None:
    three = gp_keyset(keystore, "gp-issuer", Alg.AES, 2)
    assert three.enc != three.mac != three.dek and three.version == 2
    single = gp_keyset(keystore, "gp-transport", Alg.DES3)
    assert single.enc == single.mac == single.dek
    with pytest.raises(KeystoreError, match="half-mac, half-dek missing"):
        gp_keyset(keystore, "half", Alg.AES)
    with pytest.raises(KeystoreError, match="nothing-here"):
        gp_keyset(keystore, "nothing-here", Alg.AES)


def test_dgi_mapping(keystore: TestKeyFile) -> None:
    profile = load_profile(APPLET)
    prepared = prepare(profile, rows()[0])
    dgis = profile_dgis(profile, prepared, keystore, b"\x01\x02\x03\x04", GpOptions.of(profile))
    assert [(f"{d:04X}", s) for d, _, s in dgis] == [("0101", False), ("0102", False), ("0103", False),
                                                     ("0201", False), ("8010", True), ("8101", True)]
    assert dgis[0][1] == prepared.records["MEMBER"][1] and dgis[3][1] == b"Ada Example"


def test_registry_after_personalization(keystore: TestKeyFile, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    profile = load_profile(APPLET)
    _card, isd, session, _prepared, _result = issue(keystore, profile)
    fresh(session)
    issuer = gp_keyset(keystore, "gp-issuer", Alg.AES, 2)
    from cardkit.sm.gp import Diversification, diversify

    open_gp_channel(session, diversify(issuer, Diversification.KDF3, isd.kdd), key_version=2)
    apps = get_status_all(session, "apps")
    assert [(e.aid, e.life_cycle) for e in apps] == [(APP, 0x0F)]
