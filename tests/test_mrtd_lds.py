"""ICAO 9303 LDS1 objects (EF.COM, DG1, DG2), EF.SOD and passive authentication (cardkit.apps.lds / .sod /
.mrtd hooks), checked against the published Part 11 Appendix D bytes, asn1crypto + cryptography, and the
independent ``openssl cms -verify``."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from asn1crypto import cms
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.apps import lds, sod
from cardkit.apps.mrtd import (
    bac_seed_hook,
    document_signer,
    lds_paths,
    mrtd_content,
    prepare_mrtd,
    td3_from_record,
    validate_mrtd_record,
)
from cardkit.errors import KeystoreError, ProfileError
from cardkit.issuance import hooks
from cardkit.issuance.prepare import RecordProblems
from cardkit.keys.store import TestKeyFile
from cardkit.profiles.model import load_profile
from cardkit.profiles.mrz import Td3

ROOT = Path(__file__).resolve().parents[1]
BAC = json.loads((ROOT / "vectors" / "icao9303_bac.json").read_text(encoding="utf-8"))
CODECS = json.loads((ROOT / "vectors" / "codecs.json").read_text(encoding="utf-8"))
PKI = ROOT / "keys" / "test" / "mrtd-pki"
FACE = (ROOT / "applets" / "mrtd" / "face.jpg").read_bytes()
SM = {case["ref"]: case for case in BAC["secure_messaging"]}
# ICAO 9303-11 Appendix D.4.2 + D.4.3: the plaintext of EF.COM (first 4 bytes, then the remaining 18).
EF_COM_APPENDIX_D = bytes.fromhex(SM["D.4.2"]["response"])[:-2] + bytes.fromhex(SM["D.4.3"]["response"])[:-2]
# The Appendix D.2 document (doc number L898902C<, born 690806, expires 940623) with the specimen's other data.
APPENDIX_D_RECORD = {"document_number": "L898902C", "surname": "ERIKSSON", "given_names": "ANNA MARIA",
                     "nationality": "UTO", "birth_date": "690806", "sex": "F", "expiry_date": "940623",
                     "issuing_state": "UTO"}


@pytest.fixture(scope="module")
def signer() -> sod.PemDocumentSigner:
    return sod.load_test_document_signer()


@pytest.fixture(scope="module")
def groups() -> dict[int, bytes]:
    return {1: lds.dg1(td3_from_record(APPENDIX_D_RECORD)), 2: lds.dg2(FACE)}


@pytest.fixture(scope="module")
def sod_bytes(signer: sod.PemDocumentSigner, groups: dict[int, bytes]) -> bytes:
    return sod.build_sod(groups, signer)


def _temp_ca(common_name: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "UT"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=365 * 30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))


def _issue(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, key: rsa.RSAPrivateKey) -> x509.Certificate:
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DS RSA")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=365 * 20)).sign(ca_key, hashes.SHA256()))


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------------------------- EF.COM


def test_ef_com_is_the_appendix_d_file_byte_for_byte() -> None:
    assert EF_COM_APPENDIX_D.hex().upper() == "60145F0104303130365F36063034303030305C026175"
    assert lds.ef_com([1, 2], lds_version="0106") == EF_COM_APPENDIX_D
    assert lds.parse_ef_com(EF_COM_APPENDIX_D) == lds.EfCom("0106", "040000", (1, 2))


def test_ef_com_default_versions_and_tag_list() -> None:
    com = lds.ef_com([1, 2, 14, 15])
    assert com.hex().upper() == "60165F0104303130375F36063034303030305C0461756E6F"
    assert lds.parse_ef_com(com).data_groups == (1, 2, 14, 15)


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    ([17], {}, "data group 17 is not 1..16"),
    ([1, 1], {}, "listed twice"),
    ([1], {"lds_version": "1.7"}, "LDS version must be 4 digits"),
    ([1], {"unicode_version": "4000"}, "Unicode version must be 6 digits"),
])
def test_ef_com_refuses_bad_input(args: list[int], kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(lds.LdsError, match=match):
        lds.ef_com(args, **kwargs)


@pytest.mark.parametrize(("hexdata", "match"), [
    ("61035C0161", "must start with tag 60"),
    ("60145F0104303130365F36063034303030305C02617500", "1 byte\\(s\\) after its data object"),
    ("600E5F0104303130365F360430343030", "Unicode version \\(tag 5F36\\) must be 6 ASCII digits"),
    ("60105F0104303130365F3606303430303030", "has no data object 5C"),
    ("60135F0104303130365F36063034303030305C0177", "tag 77 is not a data group tag"),
    ("6014", "not BER-TLV"),
])
def test_parse_ef_com_names_what_is_wrong(hexdata: str, match: str) -> None:
    with pytest.raises(lds.LdsError, match=match):
        lds.parse_ef_com(bytes.fromhex(hexdata))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 16), unique=True, max_size=16))
def test_ef_com_round_trips(groups: list[int]) -> None:
    assert lds.parse_ef_com(lds.ef_com(groups)).data_groups == tuple(groups)


# ---------------------------------------------------------------------------------------------- DG1


def test_dg1_of_the_td3_specimen() -> None:
    spec = CODECS["td3_specimen"]
    data = lds.dg1(Td3(**spec["fields"]))
    # ICAO 9303-10 §4.7.1: 61 5B { 5F1F 58 <88 MRZ characters> }
    assert data == bytes.fromhex("615B5F1F58") + (spec["line1"] + spec["line2"]).encode("ascii")
    assert lds.parse_dg1(data) == Td3(**spec["fields"])


def test_dg1_gives_the_appendix_d_mrz_information_and_key_seed() -> None:
    td3 = lds.parse_dg1(lds.dg1(td3_from_record(APPENDIX_D_RECORD)))
    assert td3.mrz_information() == BAC["mrz"]["mrz_information"] == "L898902C<369080619406236"
    profile = load_profile(ROOT / "applets" / "mrtd")
    seed = bac_seed_hook(profile, profile.key("bac"), APPENDIX_D_RECORD)
    assert seed.hex().upper() == BAC["mrz"]["k_seed"]


def test_parse_dg1_rejects_a_wrong_check_digit_without_showing_the_mrz() -> None:
    data = bytearray(lds.dg1(td3_from_record(APPENDIX_D_RECORD)))
    data[5 + 44 + 9] = ord("9")  # the document number's check digit
    with pytest.raises(lds.LdsError, match="document number check digit") as ei:
        lds.parse_dg1(bytes(data))
    assert "L898902C" not in str(ei.value) and "ERIKSSON" not in str(ei.value)
    with pytest.raises(lds.LdsError, match="only TD3"):
        lds.parse_dg1(bytes.fromhex("61065F1F03414243"))


# ---------------------------------------------------------------------------------------------- DG2


def test_dg2_structure_and_round_trip() -> None:
    data = lds.dg2(FACE)
    assert lds.image_size(FACE) == ("jpeg", 90, 120)
    (face,) = lds.parse_dg2(data)
    assert (face.image, face.image_type, face.width, face.height) == (FACE, "jpeg", 90, 120)
    assert "bytes)" in repr(face) and FACE.hex() not in repr(face)
    from cardkit.tlv import ber_decode_one

    outer = ber_decode_one(data)[0]
    group = outer.find(0x7F61)
    assert outer.tag == 0x75 and group is not None
    assert group.find(0x02).value == b"\x01"  # type: ignore[union-attr]
    bit = group.find(0x7F60)
    header = bit.find(0xA1)  # type: ignore[union-attr]
    assert {c.tag: c.value.hex() for c in header.children} == {  # type: ignore[union-attr]
        0x80: "0101", 0x81: "02", 0x87: "0101", 0x88: "0008"}
    bdb = bit.find(0x5F2E).value  # type: ignore[union-attr]
    # ISO/IEC 19794-5:2005 general header: "FAC\0" "010\0", record length, one image.
    assert bdb[:8] == b"FAC\x00010\x00"
    assert int.from_bytes(bdb[8:12], "big") == len(bdb) and bdb[12:14] == b"\x00\x01"
    assert bdb.endswith(FACE)


def test_dg2_with_two_images_and_jpeg2000_headers() -> None:
    jp2 = (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x2djp2h" + b"\x00\x00\x00\x16ihdr"
           + (40).to_bytes(4, "big") + (30).to_bytes(4, "big") + b"\x00\x03\x07\x07\x00\x00")
    assert lds.image_size(jp2) == ("jpeg2000", 30, 40)
    faces = lds.parse_dg2(lds.dg2([FACE, jp2]))
    assert [(f.image_type, f.width, f.height) for f in faces] == [("jpeg", 90, 120), ("jpeg2000", 30, 40)]
    with pytest.raises(lds.LdsError, match="neither JPEG nor JPEG 2000"):
        lds.dg2(b"GIF89a....")
    with pytest.raises(lds.LdsError, match=r"1\.\.255 face images"):
        lds.dg2([])


def test_parse_dg2_checks_the_instance_count_and_the_format() -> None:
    data = bytearray(lds.dg2(FACE))
    at = data.index(b"\x02\x01\x01")
    data[at + 2] = 2
    with pytest.raises(lds.LdsError, match="announces 2 instance"):
        lds.parse_dg2(bytes(data))
    data[at + 2] = 1
    at = data.index(b"\x88\x02\x00\x08")
    data[at + 3] = 0x09
    with pytest.raises(lds.LdsError, match="is not an ISO/IEC 19794-5 face"):
        lds.parse_dg2(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_parsers_raise_only_their_typed_error(data: bytes) -> None:
    for parse in (lds.parse_ef_com, lds.parse_dg1, lds.parse_dg2, sod.parse_sod):
        try:
            parse(data)
        except lds.LdsError:
            pass


# ---------------------------------------------------------------------------------------------- EF.SOD


def test_sod_parsed_with_asn1crypto_and_signature_checked_with_cryptography(
        sod_bytes: bytes, groups: dict[int, bytes]) -> None:
    assert sod_bytes[0] == 0x77
    from cardkit.tlv import ber_decode_one

    info = cms.ContentInfo.load(ber_decode_one(sod_bytes)[0].value)
    assert info["content_type"].native == "signed_data"
    sd = info["content"]
    assert sd["version"].native == "v3"
    assert sd["encap_content_info"]["content_type"].dotted == "2.23.136.1.1.1"
    lso = sod.LdsSecurityObject.load(sd["encap_content_info"]["content"].contents)
    assert lso["version"].native == 0
    assert lso["hash_algorithm"]["algorithm"].native == "sha256"
    assert {e["data_group_number"].native: e["data_group_hash_value"].native
            for e in lso["data_group_hash_values"]} == {n: hashlib.sha256(d).digest() for n, d in groups.items()}
    (si,) = list(sd["signer_infos"])
    assert si["version"].native == "v1" and si["digest_algorithm"]["algorithm"].native == "sha256"
    assert si["signature_algorithm"]["algorithm"].native == "sha256_ecdsa"
    attrs = {a["type"].native: a["values"][0] for a in si["signed_attrs"]}
    assert attrs["content_type"].dotted == "2.23.136.1.1.1"
    assert attrs["message_digest"].native == hashlib.sha256(lso.dump()).digest()
    # the DS certificate is in the SOD and is the TEST document signer's
    (cert,) = [c.chosen.dump() for c in sd["certificates"]]
    assert cert == sod.load_certificate(PKI / "ds-cert.pem")
    # independent check: cryptography verifies the ECDSA signature over the DER SET OF signed attributes
    public = x509.load_der_x509_certificate(cert).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    signed = b"\x31" + si["signed_attrs"].dump()[1:]
    public.verify(si["signature"].native, signed, ec.ECDSA(hashes.SHA256()))
    # and the DS certificate chains to the TEST CSCA
    csca = x509.load_der_x509_certificate(sod.load_test_csca())
    x509.load_der_x509_certificate(cert).verify_directly_issued_by(csca)


def _openssl_verify(tmp_path: Path, sod_value: bytes, ca_pem: bytes) -> subprocess.CompletedProcess[bytes]:
    (tmp_path / "sod.der").write_bytes(sod_value)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    return subprocess.run(
        ["openssl", "cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "sod.der"), "-binary",
         "-CAfile", str(tmp_path / "ca.pem"), "-purpose", "any", "-out", str(tmp_path / "econtent.bin")],
        capture_output=True, timeout=30, check=False)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")
def test_openssl_cms_verify_accepts_the_sod_and_outputs_the_econtent(tmp_path: Path, sod_bytes: bytes) -> None:
    from cardkit.tlv import ber_decode_one

    value = ber_decode_one(sod_bytes)[0].value
    run = _openssl_verify(tmp_path, value, (PKI / "csca-cert.pem").read_bytes())
    assert run.returncode == 0, run.stderr.decode()
    assert b"Verification successful" in run.stderr
    assert (tmp_path / "econtent.bin").read_bytes() == sod.parse_sod(sod_bytes).econtent


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")
def test_openssl_cms_verify_refuses_wrong_csca_and_tampered_signature(tmp_path: Path, sod_bytes: bytes) -> None:
    from cardkit.tlv import ber_decode_one

    value = ber_decode_one(sod_bytes)[0].value
    other = _temp_ca("cardkit TEST CSCA", ec.generate_private_key(ec.SECP256R1()))
    run = _openssl_verify(tmp_path, value, other.public_bytes(serialization.Encoding.PEM))
    assert run.returncode != 0 and b"Verification successful" not in run.stderr
    tampered = bytearray(value)
    tampered[-3] ^= 0x01  # inside the ECDSA signature, the last element of the SignerInfo
    run = _openssl_verify(tmp_path, bytes(tampered), (PKI / "csca-cert.pem").read_bytes())
    assert run.returncode != 0 and b"Verification successful" not in run.stderr


def test_build_sod_refuses_bad_data_groups(signer: sod.PemDocumentSigner) -> None:
    with pytest.raises(sod.SodError, match=r"2\.\.16 data groups"):
        sod.build_sod({1: lds.dg1(td3_from_record(APPENDIX_D_RECORD))}, signer)
    with pytest.raises(sod.SodError, match="DG2 content must be the whole data group"):
        sod.build_sod({1: lds.dg1(td3_from_record(APPENDIX_D_RECORD)), 2: b"\x61\x00"}, signer)
    with pytest.raises(sod.SodError, match="hash algorithm 'md5'"):
        sod.lds_security_object({1: b"\x61\x00", 2: b"\x75\x00"}, hash_algorithm="md5")


# ---------------------------------------------------------------------------------------------- passive authentication


def _files(groups: dict[int, bytes], sod_bytes: bytes) -> dict[str, bytes]:
    return {"EF.COM": lds.ef_com(sorted(groups)), "EF.SOD": sod_bytes, **{f"DG{n}": d for n, d in groups.items()}}


def test_passive_authentication_passes(groups: dict[int, bytes], sod_bytes: bytes) -> None:
    report = sod.passive_authenticate(_files(groups, sod_bytes), [PKI / "csca-cert.pem"])
    assert report.ok and report.check() is report
    assert report.data_groups == {"DG1": "ok", "DG2": "ok"}
    assert report.signature_valid and report.chain_valid and report.dates_valid
    assert "Document Signer" in (report.document_signer or "") and "CSCA" in (report.csca or "")


def test_passive_authentication_tampered_data_group(groups: dict[int, bytes], sod_bytes: bytes) -> None:
    files = _files(groups, sod_bytes)
    dg2 = bytearray(files["DG2"])
    dg2[-10] ^= 0x40
    files["DG2"] = bytes(dg2)
    report = sod.passive_authenticate(files, [sod.load_test_csca()])
    assert not report.ok
    assert report.problems == ["DG2: its sha256 hash differs from the one in EF.SOD (data altered)"]
    assert report.data_groups == {"DG1": "ok", "DG2": "hash mismatch"}
    with pytest.raises(sod.PassiveAuthenticationError, match="DG2: its sha256 hash differs"):
        report.check()


def test_passive_authentication_wrong_csca(groups: dict[int, bytes], sod_bytes: bytes) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    same_name = _temp_ca("x", key)
    # a CSCA with the right name but another key (a forged or rolled-over CSCA) ...
    forged = (x509.CertificateBuilder().subject_name(x509.load_der_x509_certificate(sod.load_test_csca()).subject)
              .issuer_name(x509.load_der_x509_certificate(sod.load_test_csca()).subject).public_key(key.public_key())
              .serial_number(1).not_valid_before(same_name.not_valid_before_utc)
              .not_valid_after(same_name.not_valid_after_utc)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))
    report = sod.passive_authenticate(_files(groups, sod_bytes), [_der(forged)])
    assert not report.chain_valid and report.signature_valid
    assert len(report.problems) == 1 and "DS certificate signature under" in report.problems[0]
    assert report.problems[0].endswith("signature does not verify")
    # ... and a CSCA of another issuer
    report = sod.passive_authenticate(_files(groups, sod_bytes), [_der(same_name)])
    assert report.problems == ["no trusted CSCA certificate has the DS certificate's issuer (Common Name: cardkit "
                               "TEST CSCA, Organizational Unit: TEST ONLY - not for real documents, Organization: "
                               "cardkit TEST, Country: UT)"]


def test_passive_authentication_tampered_signature_and_content(groups: dict[int, bytes], sod_bytes: bytes) -> None:
    tampered = bytearray(sod_bytes)
    tampered[-3] ^= 0x01
    report = sod.passive_authenticate(_files(groups, bytes(tampered)), [sod.load_test_csca()])
    assert report.problems == ["EF.SOD signature by the document signer: signature does not verify"]
    # change the DG1 hash inside the LDS security object: the message digest no longer matches
    digest = hashlib.sha256(groups[1]).digest()
    changed = sod_bytes.replace(digest, bytes(32))
    assert changed != sod_bytes
    report = sod.passive_authenticate(_files(groups, changed), [sod.load_test_csca()])
    assert "DG1: its sha256 hash differs from the one in EF.SOD (data altered)" in report.problems
    assert "signed attribute message-digest does not match the LDS security object" in report.problems


def test_passive_authentication_dates_missing_and_extra_files(groups: dict[int, bytes], sod_bytes: bytes) -> None:
    files = _files(groups, sod_bytes)
    report = sod.passive_authenticate(files, [sod.load_test_csca()], at=dt.datetime(2050, 6, 1, tzinfo=dt.UTC))
    assert report.problems == ["document signer certificate is not valid on 2050-06-01 (valid 2025-01-01 to "
                               "2045-01-01)"]
    assert not report.dates_valid and report.signature_valid and report.chain_valid
    report = sod.passive_authenticate({**files, "DG3": b"\x63\x00"}, [sod.load_test_csca()])
    assert report.problems == ["DG3 was read but EF.SOD holds no hash for it"]
    files.pop("DG2")
    report = sod.passive_authenticate(files, [sod.load_test_csca()])
    assert report.ok and report.notes == ["DG2 is listed in EF.SOD but was not read"]
    assert sod.passive_authenticate({"DG1": groups[1]}, []).problems == ["EF.SOD was not read"]
    assert sod.passive_authenticate({"EF.SOD": b"\x77\x03\x30\x01\x00"}, []).problems[0].startswith(
        "EF.SOD is not a well-formed CMS SignedData")


def test_rsa_document_signer_verified_by_pa_and_openssl(tmp_path: Path, groups: dict[int, bytes]) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _temp_ca("temp CSCA", ca_key)
    ds_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = sod.PemDocumentSigner(ds_key, _der(_issue(ca, ca_key, ds_key)))
    data = sod.build_sod(groups, signer)
    report = sod.passive_authenticate(_files(groups, data), [_der(ca)])
    assert report.ok, report.problems
    from cardkit.tlv import ber_decode_one

    if shutil.which("openssl"):
        run = _openssl_verify(tmp_path, ber_decode_one(data)[0].value, ca.public_bytes(serialization.Encoding.PEM))
        assert run.returncode == 0, run.stderr.decode()
    # the RSA signature is PKCS#1 v1.5 with SHA-256, checked here independently
    (si,) = list(sod.parse_sod(data).signed_data["signer_infos"])
    assert si["signature_algorithm"]["algorithm"].native == "sha256_rsa"
    ds_key.public_key().verify(si["signature"].native, b"\x31" + si["signed_attrs"].dump()[1:], padding.PKCS1v15(),
                               hashes.SHA256())


# ---------------------------------------------------------------------------------------------- signers


class _Signer:
    """A keystore signing key (the shape of cardkit.keys.store.Signer) over a private key held here."""

    def __init__(self, name: str, key: ec.EllipticCurvePrivateKey) -> None:
        self.name, self._key, self.calls = name, key, 0

    def public_key_der(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, data: bytes, *, pss: bool = True) -> bytes:
        self.calls += 1
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))


class _SigningKeystore:
    """A keystore offering ``signer(name)`` (cardkit.keys.store.KeyCustody) for one EC key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self.signers: list[_Signer] = []

    def signer(self, name: str) -> _Signer:
        self.signers.append(_Signer(name, self._key))
        return self.signers[-1]


def _test_ds_key() -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key((PKI / "ds-key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def test_keystore_signer_signs_and_must_belong_to_the_certificate(groups: dict[int, bytes]) -> None:
    profile = load_profile(ROOT / "applets" / "mrtd")
    with_cert = replace(profile, options={**profile.options,
                                          "document_signer_certificate": "../../keys/test/mrtd-pki/ds-cert.pem"})
    keystore = _SigningKeystore(_test_ds_key())
    signer = document_signer(with_cert, keystore)  # type: ignore[arg-type]
    assert isinstance(signer, sod.KeystoreDocumentSigner)
    data = sod.build_sod(groups, signer)
    assert [(s.name, s.calls) for s in keystore.signers] == [("mrtd-ds", 1)]
    assert sod.passive_authenticate(_files(groups, data), [sod.load_test_csca()]).ok
    stranger = _SigningKeystore(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(sod.SodError, match="keystore key 'mrtd-ds' does not belong to the DS certificate"):
        document_signer(with_cert, stranger)  # type: ignore[arg-type]

    class Liar(_Signer):  # claims the certificate's public key but signs with another key
        def public_key_der(self) -> bytes:
            return _test_ds_key().public_key().public_bytes(serialization.Encoding.DER,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo)

    liar = sod.KeystoreDocumentSigner(Liar("mrtd-ds", ec.generate_private_key(ec.SECP256R1())),
                                      sod.load_certificate(PKI / "ds-cert.pem"))
    with pytest.raises(sod.SodError, match="does not sign for the DS certificate: signature does not verify"):
        sod.build_sod(groups, liar)
    with pytest.raises(ProfileError, match="document_signer_certificate names no DS certificate"):
        document_signer(profile, keystore)  # type: ignore[arg-type]


def test_signer_choice_test_pki_and_refusal() -> None:
    profile = load_profile(ROOT / "applets" / "mrtd")
    assert isinstance(document_signer(profile, None), sod.PemDocumentSigner)
    keys = TestKeyFile(ROOT / "keys" / "test" / "mrtd.toml", allow_test_keys=True)
    assert isinstance(document_signer(profile, keys), sod.PemDocumentSigner)

    class NoSigning:
        def key(self, name: str, alg: object) -> None: ...

    with pytest.raises(KeystoreError, match=r"NoSigning offers no signing keys; .* 'mrtd-ds'"):
        document_signer(profile, NoSigning())  # type: ignore[arg-type]
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(sod.SodError, match="does not match its certificate"):
        sod.PemDocumentSigner(other, sod.load_certificate(PKI / "ds-cert.pem"))


def test_test_pki_certificates_are_labelled_and_chain() -> None:
    for name in ("csca-cert.pem", "ds-cert.pem", "csca-key.pem", "ds-key.pem"):
        assert (PKI / name).read_text(encoding="ascii").startswith("# TEST ONLY")
    ds = ax509.Certificate.load(sod.load_certificate(PKI / "ds-cert.pem"))
    csca = ax509.Certificate.load(sod.load_test_csca())
    assert ds.issuer == csca.subject and csca.ca and "TEST" in csca.subject.native["common_name"]
    assert ds.key_usage_value.native == {"digital_signature"}


# ---------------------------------------------------------------------------------------------- hooks


def test_hooks_are_registered_by_name() -> None:
    assert hooks.content_hook("mrtd") is mrtd_content
    assert hooks.key_hook("bac-seed") is bac_seed_hook


def test_content_hook_gives_the_four_files_of_the_profile() -> None:
    profile = load_profile(ROOT / "applets" / "mrtd")
    out = mrtd_content(profile, APPENDIX_D_RECORD, None)
    paths = lds_paths(profile)
    assert set(out) == {paths[n].path for n in ("EF.COM", "DG1", "DG2", "EF.SOD")}
    assert lds.parse_ef_com(out[paths["EF.COM"].path]).data_groups == (1, 2)
    assert lds.parse_dg1(out[paths["DG1"].path]) == td3_from_record(APPENDIX_D_RECORD)
    files = {"EF.SOD": out[paths["EF.SOD"].path], "DG1": out[paths["DG1"].path], "DG2": out[paths["DG2"].path]}
    assert sod.passive_authenticate(files, [sod.load_test_csca()]).ok
    small = replace(profile, files=tuple(replace(f, size=512) if f.path == paths["DG2"].path else f
                                         for f in profile.files))
    with pytest.raises(ProfileError, match=r"eMRTD/DG2 \(DG2\) needs 1\d{3} bytes but the profile gives it 512"):
        mrtd_content(small, APPENDIX_D_RECORD, None)
    no_face = replace(profile, options={})
    with pytest.raises(ProfileError, match="face_image names no face image"):
        mrtd_content(no_face, APPENDIX_D_RECORD, None)


def test_record_validation_reports_every_problem_without_the_document_number() -> None:
    row = dict(APPENDIX_D_RECORD, nationality="XYZ", birth_date="691306", surname="", sex="Q", bogus="1")
    problems = validate_mrtd_record(row, line=4)
    assert {p.field for p in problems} == {"nationality", "surname", "bogus"}
    assert all(p.line == 4 for p in problems)
    row = dict(APPENDIX_D_RECORD, birth_date="691306")
    (problem,) = validate_mrtd_record(row, line=5)
    assert problem.field == "birth_date" and "month 13" in str(problem)
    profile = load_profile(ROOT / "applets" / "mrtd")
    with pytest.raises(RecordProblems) as ei:
        prepare_mrtd(profile, dict(APPENDIX_D_RECORD, document_number="L8989-02C"), line=9)
    assert "document_number" in str(ei.value) and "L8989-02C" not in str(ei.value)
