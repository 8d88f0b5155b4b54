"""The eMRTD on the virtual card (cardkit.virtual.mrtd) and the inspection-system reader (cardkit.apps.mrtd):
ICAO 9303-11 Appendix D replayed byte for byte, BAC before any read, the ICAO session rules, and the mrtd
profile personalized with the issuance engine and verified with BAC + passive authentication — in process
and through the real PC/SC stack."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cardkit.acl import AccessRules
from cardkit.apdu import CommandApdu
from cardkit.apps import lds
from cardkit.apps.mrtd import lds_paths, prepare_mrtd, read_mrtd, td3_from_record, verify_mrtd
from cardkit.apps.sod import load_test_csca, passive_authenticate
from cardkit.commands import iso
from cardkit.crypto import Alg
from cardkit.issuance.engine import CardResult, VerificationError, personalize
from cardkit.issuance.prepare import PreparedRecord
from cardkit.keys.store import TestKeyFile
from cardkit.profiles.model import Profile, load_profile
from cardkit.readers import load_virtual_card, new_virtual_card
from cardkit.session import CardSession
from cardkit.sm.auth import AuthenticationRefused
from cardkit.sm.bac import bac_authenticate, bac_key_seed
from cardkit.sm.iso import IsoSmChannel, SmError
from cardkit.sw import SecurityStatusNotSatisfied, SmDataObjectsMissing, StatusWordError
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual.card import VirtualCard
from cardkit.virtual.fs import DF
from cardkit.virtual.mrtd import MrtdApplication, enable_mrtd

ROOT = Path(__file__).resolve().parents[1]
BAC = json.loads((ROOT / "vectors" / "icao9303_bac.json").read_text(encoding="utf-8"))
KEYS = ROOT / "keys" / "test" / "mrtd.toml"


def h(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.fixture(scope="module")
def keystore() -> TestKeyFile:
    return TestKeyFile(KEYS, allow_test_keys=True)


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile(ROOT / "applets" / "mrtd")


def rows(n: int) -> list[dict[str, str]]:
    with open(ROOT / "applets" / "mrtd" / "sample-batch.csv", encoding="utf-8", newline="") as fh:
        return [r for _, r in zip(range(n), csv.DictReader(fh), strict=False)]


def issue(profile: Profile, keystore: TestKeyFile, row: dict[str, str], seed: int = 1,
          ) -> tuple[VirtualCard, CardSession, PreparedRecord, CardResult]:
    prepared = prepare_mrtd(profile, row, keystore=keystore)
    card = new_virtual_card(alg=Alg.DES3, transport_key=keystore.key(profile.transport_key, Alg.DES3).value,
                            seed=seed)
    enable_mrtd(card)
    session = CardSession(VirtualTransport(card))
    result = personalize(session, profile, prepared, keystore)
    return card, session, prepared, result


def mrz_info(row: dict[str, str]) -> str:
    return td3_from_record(row).mrz_information()


# ---------------------------------------------------------------------------------------------- Appendix D


def _fixed(*values: bytes) -> Callable[[int], bytes]:
    queue = list(values)

    def rng(n: int) -> bytes:
        value = queue.pop(0)
        assert len(value) == n
        return value

    return rng


def test_appendix_d_transcript_byte_for_byte() -> None:
    """ICAO 9303-11 Appendix D: the virtual eMRTD answers the published APDUs with the published bytes."""
    auth, sm = BAC["authentication"], BAC["secure_messaging"]
    card = VirtualCard(h("01020304"), seed=1)
    rules = AccessRules(read="key:01 and sm")
    df = card.mf.add_df(0x4D52, name=lds.AID)
    df.add_ef(0x011E, size=64, sfi=0x1E, rules=rules, data=lds.ef_com([1, 2], lds_version="0106"))
    df.set_key(1, Alg.DES3, 2, bac_key_seed(BAC["mrz"]["mrz_information"]), max_tries=15)
    enable_mrtd(card, rng=_fixed(h(auth["rnd_icc"]), h(auth["k_icc"])))
    card.power_on()

    def exchange(command: str) -> str:
        return card.transmit(h(command)).hex().upper()

    assert exchange("00A4040C07A0000002471001") == "9000"
    assert exchange(auth["get_challenge"]) == auth["rnd_icc"] + "9000"
    assert exchange(auth["command"]) == auth["response"]
    for step in sm:
        assert exchange(step["protected_command"]) == step["protected_response"], step["ref"]


# ---------------------------------------------------------------------------------------------- access rules


def test_bac_is_required_before_reading(profile: Profile, keystore: TestKeyFile) -> None:
    row = rows(1)[0]
    card, session, _, _ = issue(profile, keystore, row)
    session.reset()
    session.send(iso.select_aid(lds.AID, p2_fci="none"))
    session.send(iso.select_child_ef(lds.COM.fid, p2_fci="none"))
    with pytest.raises(SecurityStatusNotSatisfied) as ei:
        session.send(iso.read_binary(0, 4))
    assert ei.value.sw == 0x6982
    # a wrong MRZ is refused (6300) and neither the BAC key nor the MF's issuer key counts down
    mf_key, bac_key = card.mf.keys[0], next(n for n in card.files() if isinstance(n, DF) and n.name == lds.AID).keys[1]
    tries = (mf_key.tries_left, bac_key.tries_left)
    wrong = dict(row, birth_date="010101")
    for _ in range(3):
        with pytest.raises(AuthenticationRefused) as refused:
            bac_authenticate(session.transmit, mrz_info(wrong))
        assert refused.value.sw == 0x6300
    assert (mf_key.tries_left, bac_key.tries_left) == tries
    # EXTERNAL AUTHENTICATE without a challenge
    response = session.transmit(CommandApdu(0x00, 0x82, 0x00, 0x00, bytes(40), le=40))
    assert response.sw == 0x6985


def test_read_mrtd_reads_everything_and_passive_authentication_passes(profile: Profile,
                                                                       keystore: TestKeyFile) -> None:
    row = rows(2)[1]
    _, session, prepared, _ = issue(profile, keystore, row, seed=2)
    session.reset()
    n0 = session.apdu_count
    files = read_mrtd(session, mrz_info(row))
    paths = lds_paths(profile)
    assert files == {name: prepared.binaries[paths[name].path] for name in ("EF.COM", "DG1", "DG2", "EF.SOD")}
    # SELECT AID + BAC (2) + per file SELECT + header read + ceil(rest / 223) chunks
    expected = 1 + 2 + sum(2 + -(-(len(d) - 4) // 0xDF) for d in files.values())
    assert session.apdu_count - n0 == expected
    assert lds.parse_dg1(files["DG1"]) == td3_from_record(row)
    report = passive_authenticate(files, [load_test_csca()])
    assert report.ok, report.problems


def test_plain_command_after_bac_ends_the_session(profile: Profile, keystore: TestKeyFile) -> None:
    row = rows(3)[2]
    _, session, _, _ = issue(profile, keystore, row, seed=3)
    session.reset()
    session.send(iso.select_aid(lds.AID, p2_fci="none"))
    channel = IsoSmChannel(bac_authenticate(session.transmit, mrz_info(row)))
    session.push(channel)
    session.send(iso.select_child_ef(lds.lds_file("DG1").fid, p2_fci="none"))
    session.remove(channel)
    # ICAO 9303-11 §9.8: a plain APDU during the session is refused and ends it
    with pytest.raises(SmDataObjectsMissing):
        session.send(iso.read_binary(0, 4))
    # the host's keys are now useless: the card has no session any more (6882 for an SM command)
    session.push(channel)
    with pytest.raises(StatusWordError) as ei:
        session.send(iso.read_binary(0, 4))
    assert ei.value.sw == 0x6882
    # and without BAC the files are closed again
    session.remove(channel)
    with pytest.raises(SecurityStatusNotSatisfied):
        session.send(iso.read_binary(0, 4))


def test_leaving_the_application_ends_the_bac_session(profile: Profile, keystore: TestKeyFile) -> None:
    row = rows(4)[3]
    _, session, _, _ = issue(profile, keystore, row, seed=4)
    session.reset()
    session.send(iso.select_aid(lds.AID, p2_fci="none"))
    session.push(IsoSmChannel(bac_authenticate(session.transmit, mrz_info(row))))
    session.send(iso.select_mf(p2_fci="none"))  # answered under SM
    with pytest.raises((SmError, StatusWordError)) as ei:
        session.send(iso.select_aid(lds.AID, p2_fci="none"))
    assert "6988" in str(ei.value)


def test_the_application_exists_only_with_its_df(profile: Profile, keystore: TestKeyFile) -> None:
    transport = keystore.key(profile.transport_key, Alg.DES3).value
    blank = new_virtual_card(alg=Alg.DES3, transport_key=transport)
    app = enable_mrtd(blank)
    assert isinstance(app, MrtdApplication) and not app.present(blank)
    # an eMRTD DF without its BAC key: BAC must not fall through to the MF's key 00 (the issuer key)
    half = new_virtual_card(alg=Alg.DES3, transport_key=transport)
    half.mf.add_df(0x4D52, name=lds.AID)
    enable_mrtd(half)
    assert app.present(half)
    session = CardSession(VirtualTransport(half))
    session.send(iso.select_aid(lds.AID, p2_fci="none"))
    tries = half.mf.keys[0].tries_left
    with pytest.raises(StatusWordError) as ei:
        bac_authenticate(session.transmit, mrz_info(rows(1)[0]))
    assert ei.value.sw == 0x6A88 and half.mf.keys[0].tries_left == tries
    # SELECT with FCI: the DF's FCI
    _, session, _, _ = issue(profile, keystore, rows(1)[0], seed=5)
    session.reset()
    fci = session.send(iso.select_aid(lds.AID)).data
    assert fci[0] == 0x6F and lds.AID in fci


# ---------------------------------------------------------------------------------------------- the profile


def test_profile_personalized_and_verified(profile: Profile, keystore: TestKeyFile) -> None:
    for i, row in enumerate(rows(3)):
        card, session, prepared, result = issue(profile, keystore, row, seed=10 + i)
        manifest = verify_mrtd(session, profile, prepared, keystore=keystore, result=result)
        assert manifest["chip_serial"] == card.serial.hex().upper()
        assert set(manifest["files"]) == {"eMRTD/COM", "eMRTD/DG1", "eMRTD/DG2", "eMRTD/SOD"}
        pa = manifest["passive_authentication"]
        assert pa["ok"] and pa["data_groups"] == {"DG1": "ok", "DG2": "ok"} and "TEST CSCA" in pa["csca"]
        assert row["document_number"] not in json.dumps(manifest)
        assert row["document_number"] not in repr(prepared)
    # the transport key no longer opens the card; the issuer key does not read the LDS files either
    session.reset()
    from cardkit.issuance.engine import open_issuer_channel

    with pytest.raises(AuthenticationRefused):
        open_issuer_channel(session, Alg.DES3, keystore.key(profile.transport_key, Alg.DES3).value)


def test_verification_names_the_altered_file_and_failed_pa(profile: Profile, keystore: TestKeyFile,
                                                           tmp_path: Path) -> None:
    row = rows(5)[4]
    card, session, prepared, result = issue(profile, keystore, row, seed=20)
    dg2 = next(n for n in card.files() if not isinstance(n, DF) and n.fid == 0x0102)
    dg2.data[300] ^= 0x01  # type: ignore[attr-defined]
    with pytest.raises(VerificationError, match="file eMRTD/DG2: read-back differs"):
        verify_mrtd(session, profile, prepared, result=result)
    dg2.data[300] ^= 0x01  # type: ignore[attr-defined]
    # the right document, but a verifier that trusts another CSCA
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another CSCA")])
    other = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
             .serial_number(7).not_valid_before(card_time()).not_valid_after(card_time(30))
             .sign(key, hashes.SHA256())).public_bytes(serialization.Encoding.DER)
    with pytest.raises(VerificationError, match="passive authentication failed: no trusted CSCA"):
        verify_mrtd(session, profile, prepared, csca_certs=[other])
    # the image keeps the document; the application is code and is applied again after loading
    image = tmp_path / "mrtd.json"
    card.save(image)
    assert image.stat().st_mode & 0o777 == 0o600
    loaded = load_virtual_card(image)
    enable_mrtd(loaded)
    again = CardSession(VirtualTransport(loaded))
    assert verify_mrtd(again, profile, prepared)["passive_authentication"]["ok"]


def card_time(years: int = 0):  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=365 * years)


# ---------------------------------------------------------------------------------------------- real PC/SC


@pytest.mark.pcsc
def test_border_reader_through_pcscd_and_vpcd(profile: Profile, keystore: TestKeyFile,
                                              vpcd_card: Callable[..., tuple[str, object]]) -> None:
    from cardkit.transport.pcsc import PcscTransport

    row = rows(6)[5]
    card, session, prepared, result = issue(profile, keystore, row, seed=30)
    session.close()
    reader, _ = vpcd_card(card)
    with CardSession(PcscTransport(reader)) as pcsc:
        files = read_mrtd(pcsc, mrz_info(row))
        assert passive_authenticate(files, [load_test_csca()]).ok
        manifest = verify_mrtd(pcsc, profile, prepared, result=result)
    assert manifest["passive_authentication"]["ok"]
