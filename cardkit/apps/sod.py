"""EF.SOD, the document security object (ICAO 9303-10 §4.6.2), and passive authentication (9303-11 §5.1).

EF.SOD is ``77 { ContentInfo { SignedData } }`` (CMS, RFC 5652) whose encapsulated content, of type
``id-icao-mrtd-security-ldsSecurityObject`` (2.23.136.1.1.1), is::

    LDSSecurityObject ::= SEQUENCE {
        version             INTEGER (v0 = 0, v1 = 1),
        hashAlgorithm       DigestAlgorithmIdentifier,
        dataGroupHashValues SEQUENCE SIZE (2..16) OF DataGroupHash,
        ldsVersionInfo      LDSVersionInfo OPTIONAL }          -- v1 only
    DataGroupHash ::= SEQUENCE { dataGroupNumber INTEGER, dataGroupHashValue OCTET STRING }

cardkit writes version 0 with SHA-256, one SignerInfo (version 1, issuer and serial number) with the signed
attributes contentType and messageDigest (+ signingTime), signed by the document signer (DS) whose
certificate is included; the DS certificate is issued by the country signing CA (CSCA) (ICAO 9303-12, PKI).
ASN.1 goes through asn1crypto classes; signatures through ``cryptography``. Foreign exceptions never escape:
building raises :class:`SodError`, passive authentication reports every problem in a :class:`PaReport`.

The TEST PKI in ``keys/test/mrtd-pki/`` (made by its ``make_pki.py``) is for tests and demos only.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from asn1crypto import algos, cms, core, pem, x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from cardkit.apps.lds import DG_TAGS, TAG_SOD, LdsError
from cardkit.errors import CardkitError
from cardkit.tlv import ber_encode

__all__ = [
    "LDS_SECURITY_OBJECT_OID", "TEST_PKI", "DocumentSigner", "KeystoreDocumentSigner", "LdsSecurityObject",
    "PaReport", "PassiveAuthenticationError", "PemDocumentSigner", "Sod", "SodError", "build_sod",
    "lds_security_object", "load_certificate", "load_test_csca", "load_test_document_signer", "parse_sod",
    "passive_authenticate",
]

log = logging.getLogger(__name__)

#: ICAO 9303-10 §4.6.2: id-icao-mrtd-security-ldsSecurityObject.
LDS_SECURITY_OBJECT_OID = "2.23.136.1.1.1"
#: The repository's TEST CSCA and document signer (never for real documents).
TEST_PKI = Path(__file__).resolve().parents[2] / "keys" / "test" / "mrtd-pki"
# Hash algorithms an LDS security object may name (ICAO 9303-12: the SHA-2 family; SHA-1 in old documents).
_HASHES = {"sha1": hashlib.sha1, "sha224": hashlib.sha224, "sha256": hashlib.sha256, "sha384": hashlib.sha384,
           "sha512": hashlib.sha512}
_CRYPTO_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512}
# 9303-10 §4.6.2: dataGroupHashValues SIZE (2..ub-DataGroups), ub-DataGroups = 16.
_MIN_GROUPS, _MAX_GROUPS = 2, 16


class SodError(LdsError):
    """EF.SOD (or the inputs to build one) that is not well formed; names the element."""


class PassiveAuthenticationError(CardkitError):
    """Passive authentication failed; ``report`` holds every problem found."""

    def __init__(self, report: PaReport) -> None:
        self.report = report
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        super().__init__(f"passive authentication failed: {report.problems[0]}{more}")


# ---------------------------------------------------------------------------------------------- ASN.1


class DataGroupHash(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("data_group_number", core.Integer),
        ("data_group_hash_value", core.OctetString),
    ]


class DataGroupHashValues(core.SequenceOf):  # type: ignore[misc]
    _child_spec: ClassVar[type] = DataGroupHash


class LdsVersionInfo(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("lds_version", core.PrintableString),
        ("unicode_version", core.PrintableString),
    ]


class LdsSecurityObject(core.Sequence):  # type: ignore[misc]
    """ICAO 9303-10 §4.6.2 LDSSecurityObject."""

    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("version", core.Integer),
        ("hash_algorithm", algos.DigestAlgorithm),
        ("data_group_hash_values", DataGroupHashValues),
        ("lds_version_info", LdsVersionInfo, {"optional": True}),
    ]


# ---------------------------------------------------------------------------------------------- signers


class DocumentSigner(Protocol):
    """Signs for EF.SOD: ``certificate`` is the DS certificate (DER); ``sign(data)`` returns the signature of
    ``data`` with SHA-256 — an ECDSA ``Ecdsa-Sig-Value`` (DER) for EC keys, RSASSA-PKCS1-v1_5 for RSA keys."""

    @property
    def certificate(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


def load_certificate(source: bytes | str | Path) -> bytes:
    """A certificate as DER, from PEM or DER bytes or a file (text before the PEM block is allowed)."""
    if isinstance(source, (str, Path)):
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:
            raise SodError(f"cannot read certificate {source}: {exc.strerror}") from None
    else:
        raw = bytes(source)
    start = raw.find(b"-----BEGIN")
    if start >= 0:
        try:
            _, _, raw = pem.unarmor(raw[start:])
        except ValueError as exc:
            raise SodError(f"certificate PEM is not valid: {exc}") from None
    try:
        x509.Certificate.load(raw).native  # noqa: B018 - parse completely to reject malformed DER now
    except (ValueError, TypeError) as exc:
        raise SodError(f"not an X.509 certificate: {exc}") from None
    return raw


def _private_key(path: Path, password: bytes | None) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password)
    except OSError as exc:
        raise SodError(f"cannot read the document signer key {path.name}: {exc.strerror}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SodError(f"{path.name} is not a usable PEM private key (wrong password?)") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise SodError(f"{path.name}: document signer keys are EC or RSA, not {type(key).__name__}")
    return key


class PemDocumentSigner:
    """A document signer from a PEM private key and its certificate (the TEST PKI uses this)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, certificate: bytes) -> None:
        self._key = key
        self._certificate = load_certificate(certificate)
        public = serialization.load_der_public_key(x509.Certificate.load(self._certificate).public_key.dump())
        mine = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        if public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != mine:
            raise SodError("the document signer key does not match its certificate")

    @classmethod
    def from_files(cls, key_path: str | Path, certificate_path: str | Path, *,
                   password: bytes | None = None) -> PemDocumentSigner:
        return cls(_private_key(Path(key_path), password), load_certificate(certificate_path))

    @property
    def certificate(self) -> bytes:
        return self._certificate

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def __repr__(self) -> str:
        return f"PemDocumentSigner({_subject(self._certificate)})"


class KeystoreDocumentSigner:
    """A document signer whose private key stays in a keystore: ``signer`` is the keystore's signing key
    (:meth:`cardkit.keys.store.KeyCustody.signer`: ``public_key_der()`` and ``sign(data, *, pss)``). RSA keys
    sign RSASSA-PKCS1-v1_5 with SHA-256. The key must belong to the certificate (checked up front), and every
    signature is verified with the certificate before an EF.SOD is built with it."""

    def __init__(self, signer: Any, certificate: bytes) -> None:
        if not callable(getattr(signer, "sign", None)):
            raise SodError("the keystore's signing key offers no sign operation")
        self._signer = signer
        self.key_name = str(getattr(signer, "name", "?"))
        self._certificate = load_certificate(certificate)
        cert = x509.Certificate.load(self._certificate)
        public = getattr(signer, "public_key_der", None)
        if callable(public) and bytes(public()) != bytes(cert.public_key.dump()):
            raise SodError(f"keystore key {self.key_name!r} does not belong to the DS certificate "
                           f"({cert.subject.human_friendly})")

    @property
    def certificate(self) -> bytes:
        return self._certificate

    def sign(self, data: bytes) -> bytes:
        cert = x509.Certificate.load(self._certificate)
        algorithm = _signature_algorithm(cert)
        signature = bytes(self._signer.sign(data, pss=False))
        problem = _verify_signature(cert.public_key.dump(), algos.SignedDigestAlgorithm({"algorithm": algorithm}),
                                    signature, data)
        if problem is not None:
            raise SodError(f"keystore key {self.key_name!r} does not sign for the DS certificate: {problem}")
        return signature

    def __repr__(self) -> str:
        return f"KeystoreDocumentSigner({self.key_name!r}, {_subject(self._certificate)})"


@functools.lru_cache(maxsize=4)
def load_test_document_signer(pki: Path = TEST_PKI) -> PemDocumentSigner:
    """The TEST document signer (``keys/test/mrtd-pki``). Logs a warning: never for real documents.

    Loaded once per process and folder (a batch signs thousands of EF.SODs; the signer holds no state).
    """
    log.warning("signing EF.SOD with the TEST document signer from %s — never for real documents", pki.name)
    return PemDocumentSigner.from_files(pki / "ds-key.pem", pki / "ds-cert.pem")


def load_test_csca(pki: Path = TEST_PKI) -> bytes:
    """The TEST CSCA certificate (DER)."""
    return load_certificate(pki / "csca-cert.pem")


def _subject(der: bytes) -> str:
    return str(x509.Certificate.load(der).subject.human_friendly)


def _signature_algorithm(cert: x509.Certificate) -> str:
    kind = cert.public_key.algorithm
    if kind == "ec":
        return "sha256_ecdsa"
    if kind == "rsa":
        return "sha256_rsa"
    raise SodError(f"document signer key type {kind!r} is not supported (EC or RSA)")


# ---------------------------------------------------------------------------------------------- build


def _check_groups(data_groups: Mapping[int, bytes]) -> None:
    if not _MIN_GROUPS <= len(data_groups) <= _MAX_GROUPS:
        raise SodError(f"an LDS security object covers {_MIN_GROUPS}..{_MAX_GROUPS} data groups, "
                       f"got {len(data_groups)}")
    for number, content in data_groups.items():
        if number not in DG_TAGS:
            raise SodError(f"data group {number!r} is not 1..16")
        if not isinstance(content, (bytes, bytearray)) or not content or content[0] != DG_TAGS[number]:
            raise SodError(f"DG{number} content must be the whole data group, starting with tag "
                           f"{DG_TAGS[number]:02X}")


def lds_security_object(data_groups: Mapping[int, bytes], *, hash_algorithm: str = "sha256") -> bytes:
    """The DER LDSSecurityObject (version 0) with the hash of every data group given (number -> content)."""
    _check_groups(data_groups)
    digest = _HASHES.get(hash_algorithm)
    if digest is None:
        raise SodError(f"hash algorithm {hash_algorithm!r} is not one of {', '.join(_HASHES)}")
    return bytes(LdsSecurityObject({
        "version": 0,
        "hash_algorithm": {"algorithm": hash_algorithm},
        "data_group_hash_values": [
            {"data_group_number": n, "data_group_hash_value": digest(bytes(data_groups[n])).digest()}
            for n in sorted(data_groups)
        ],
    }).dump())


def build_sod(data_groups: Mapping[int, bytes], signer: DocumentSigner, *, hash_algorithm: str = "sha256",
              signing_time: _dt.datetime | None = None) -> bytes:
    """EF.SOD (``77`` ‖ ContentInfo) over ``data_groups`` (number -> whole data group), signed by ``signer``."""
    econtent = lds_security_object(data_groups, hash_algorithm=hash_algorithm)
    cert = x509.Certificate.load(signer.certificate)
    when = signing_time or _dt.datetime.now(_dt.UTC)
    # RFC 5652 §11: content-type and message-digest are mandatory signed attributes; signing-time is optional.
    signed_attrs = cms.CMSAttributes([
        cms.CMSAttribute({"type": "content_type", "values": [LDS_SECURITY_OBJECT_OID]}),
        cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(econtent).digest()]}),
        cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": when})]}),
    ])
    # RFC 5652 §5.4: the signature covers the DER of the attributes with the SET OF tag (asn1crypto sorts them).
    try:
        signature = signer.sign(signed_attrs.dump())
    except SodError:
        raise
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SodError(f"the document signer failed: {type(exc).__name__}") from None
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": cert.issuer, "serial_number": cert.serial_number})}),
        "digest_algorithm": {"algorithm": "sha256"},
        "signed_attrs": signed_attrs,
        "signature_algorithm": {"algorithm": _signature_algorithm(cert)},
        "signature": signature,
    })
    signed_data = cms.SignedData({
        "version": "v3",  # RFC 5652 §5.1: eContentType other than id-data
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": LDS_SECURITY_OBJECT_OID,
                               "content": cms.ParsableOctetString(econtent)},
        "certificates": [cert],
        "signer_infos": [signer_info],
    })
    info = cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
    return ber_encode(TAG_SOD, bytes(info.dump()))


# ---------------------------------------------------------------------------------------------- parse


@dataclass(frozen=True)
class Sod:
    """A parsed EF.SOD. ``hashes`` maps data group numbers to the hash the document signer signed."""

    hash_algorithm: str
    hashes: Mapping[int, bytes]
    econtent: bytes
    signed_data: Any = field(repr=False)
    certificates: tuple[bytes, ...] = ()
    lds_version: str | None = None


def parse_sod(data: bytes) -> Sod:
    """Decode EF.SOD down to the LDS security object; SodError names the layer that is wrong."""
    from cardkit.tlv import ber_decode_one

    try:
        obj, used = ber_decode_one(bytes(data))
    except (LdsError, ValueError) as exc:
        raise SodError(f"EF.SOD is not BER-TLV: {exc}") from None
    if obj.tag != TAG_SOD:
        raise SodError(f"EF.SOD must start with tag 77, found {obj.tag:02X}")
    if used != len(data):
        raise SodError(f"EF.SOD has {len(data) - used} byte(s) after its data object")
    try:
        info = cms.ContentInfo.load(obj.value)
        if info["content_type"].native != "signed_data":
            raise SodError(f"EF.SOD holds CMS {info['content_type'].native}, not signed data")
        sd = info["content"]
        encap = sd["encap_content_info"]
        if encap["content_type"].dotted != LDS_SECURITY_OBJECT_OID:
            raise SodError(f"EF.SOD content type is {encap['content_type'].dotted}, not the LDS security object "
                           f"({LDS_SECURITY_OBJECT_OID})")
        if encap["content"].native is None:
            raise SodError("EF.SOD carries no encapsulated content (detached signatures are not allowed)")
        econtent = bytes(encap["content"].contents)
        lso = LdsSecurityObject.load(econtent)
        version = lso["version"].native
        if version not in (0, 1):
            raise SodError(f"LDS security object version {version} (expected 0 or 1)")
        algorithm = lso["hash_algorithm"]["algorithm"].native
        hashes_: dict[int, bytes] = {}
        for entry in lso["data_group_hash_values"]:
            number = entry["data_group_number"].native
            if number not in DG_TAGS or number in hashes_:
                raise SodError(f"LDS security object lists data group {number} (not 1..16, or twice)")
            hashes_[number] = entry["data_group_hash_value"].native
        info_v = lso["lds_version_info"]
        lds_version = info_v["lds_version"].native if info_v.native is not None else None
        certs = tuple(bytes(c.chosen.dump()) for c in sd["certificates"] if c.name == "certificate") \
            if sd["certificates"].native is not None else ()
        _ = sd["signer_infos"].native  # parse everything now so later access cannot raise
    except SodError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise SodError(f"EF.SOD is not a well-formed CMS SignedData / LDS security object: {exc}") from None
    if algorithm not in _HASHES:
        raise SodError(f"LDS security object hash algorithm {algorithm!r} is not supported")
    if not _MIN_GROUPS <= len(hashes_) <= _MAX_GROUPS:
        raise SodError(f"LDS security object lists {len(hashes_)} data groups ({_MIN_GROUPS}..{_MAX_GROUPS})")
    return Sod(algorithm, hashes_, econtent, sd, certs, lds_version)


# ---------------------------------------------------------------------------------------------- verify


def _verify_signature(public_key_der: bytes, algo: Any, signature: bytes, data: bytes) -> str | None:
    """None when ``signature`` over ``data`` verifies, else why not (never raises)."""
    try:
        key = serialization.load_der_public_key(public_key_der)
        kind = algo.signature_algo
        if kind == "rsassa_pss":
            params = algo["parameters"]
            hash_cls = _CRYPTO_HASHES[params["hash_algorithm"]["algorithm"].native]
            mgf_hash = _CRYPTO_HASHES[params["mask_gen_algorithm"]["parameters"]["algorithm"].native]
            pad: padding.AsymmetricPadding = padding.PSS(padding.MGF1(mgf_hash()), params["salt_length"].native)
        else:
            hash_cls = _CRYPTO_HASHES[algo.hash_algo]
            pad = padding.PKCS1v15()
        if kind == "ecdsa":
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return "signature algorithm is ECDSA but the key is not an EC key"
            key.verify(signature, data, ec.ECDSA(hash_cls()))
        elif kind in ("rsassa_pkcs1v15", "rsassa_pss"):
            if not isinstance(key, rsa.RSAPublicKey):
                return "signature algorithm is RSA but the key is not an RSA key"
            key.verify(signature, data, pad, hash_cls())
        else:
            return f"signature algorithm {kind} is not supported"
    except InvalidSignature:
        return "signature does not verify"
    except (KeyError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return f"cannot check the signature ({type(exc).__name__}: {exc})"
    return None


@dataclass
class PaReport:
    """The outcome of passive authentication. ``ok`` is True only when ``problems`` is empty.

    ``data_groups`` maps "DG1".. to "ok", "hash mismatch", "not in EF.SOD" or "not read"; ``notes`` hold
    observations that are not failures (data groups listed in EF.SOD but not read, e.g. EAC-protected ones).
    """

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data_groups: dict[str, str] = field(default_factory=dict)
    hash_algorithm: str | None = None
    signature_valid: bool = False
    chain_valid: bool = False
    dates_valid: bool = False
    document_signer: str | None = None
    csca: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.signature_valid and self.chain_valid and self.dates_valid

    def check(self) -> PaReport:
        """Return self, or raise :class:`PassiveAuthenticationError` listing the problems."""
        if not self.ok:
            if not self.problems:
                self.problems.append("passive authentication is incomplete")
            raise PassiveAuthenticationError(self)
        return self


def _signer_cert(sd: Any, si: Any, extra: Iterable[bytes]) -> x509.Certificate | None:
    sid = si["sid"]
    candidates = [c.chosen for c in sd["certificates"] if c.name == "certificate"] \
        if sd["certificates"].native is not None else []
    candidates += [x509.Certificate.load(c) for c in extra]
    for cert in candidates:
        if sid.name == "issuer_and_serial_number":
            if cert.issuer == sid.chosen["issuer"] and cert.serial_number == sid.chosen["serial_number"].native:
                return cert
        elif cert.key_identifier == sid.chosen.native:
            return cert
    return None


def _check_signer_info(sod: Sod, report: PaReport, ds_certificates: Iterable[bytes]) -> x509.Certificate | None:
    sd = sod.signed_data
    infos = list(sd["signer_infos"])
    if len(infos) != 1:
        report.problems.append(f"EF.SOD has {len(infos)} signer infos; ICAO 9303-10 §4.6.2 requires exactly one")
        return None
    si = infos[0]
    cert = _signer_cert(sd, si, ds_certificates)
    if cert is None:
        report.problems.append("the document signer certificate named by the signer info is not in EF.SOD "
                               "and was not supplied")
        return None
    report.document_signer = cert.subject.human_friendly
    attrs = si["signed_attrs"]
    if attrs.native is None:
        report.problems.append("the signer info has no signed attributes (ICAO 9303-10 §4.6.2 requires them)")
        return cert
    found = {a["type"].native: a["values"] for a in attrs}
    digest_name = si["digest_algorithm"]["algorithm"].native
    if digest_name not in _HASHES:
        report.problems.append(f"signer info digest algorithm {digest_name!r} is not supported")
        return cert
    if "content_type" not in found or found["content_type"][0].dotted != LDS_SECURITY_OBJECT_OID:
        report.problems.append("signed attribute content-type is missing or not the LDS security object")
    if "message_digest" not in found:
        report.problems.append("signed attribute message-digest is missing")
    elif found["message_digest"][0].native != _HASHES[digest_name](sod.econtent).digest():
        report.problems.append("signed attribute message-digest does not match the LDS security object")
    # RFC 5652 §5.4: the signature covers the signed attributes re-tagged as SET OF.
    signed = b"\x31" + bytes(attrs.dump())[1:]
    problem = _verify_signature(cert.public_key.dump(), si["signature_algorithm"], si["signature"].native, signed)
    if problem is None:
        report.signature_valid = True
    else:
        report.problems.append(f"EF.SOD signature by the document signer: {problem}")
    return cert


def _check_chain(ds: x509.Certificate, cscas: list[x509.Certificate], report: PaReport) -> list[x509.Certificate]:
    issuers = [c for c in cscas if c.subject == ds.issuer]
    if not issuers:
        report.problems.append(f"no trusted CSCA certificate has the DS certificate's issuer "
                               f"({ds.issuer.human_friendly})")
        return []
    reasons = []
    for csca in issuers:
        if not csca.ca:
            reasons.append(f"{csca.subject.human_friendly} is not a CA certificate (basicConstraints)")
            continue
        if csca.key_usage_value is not None and "key_cert_sign" not in csca.key_usage_value.native:
            reasons.append(f"{csca.subject.human_friendly} may not sign certificates (keyUsage)")
            continue
        problem = _verify_signature(csca.public_key.dump(), ds["signature_algorithm"], ds["signature_value"].native,
                                    bytes(ds["tbs_certificate"].dump()))
        if problem is None:
            report.chain_valid = True
            report.csca = csca.subject.human_friendly
            return [csca]
        reasons.append(f"DS certificate signature under {csca.subject.human_friendly}: {problem}")
    report.problems.extend(reasons)
    return []


def _check_dates(certs: list[tuple[str, x509.Certificate]], at: _dt.datetime, report: PaReport) -> None:
    ok = True
    for label, cert in certs:
        validity = cert["tbs_certificate"]["validity"]
        start, end = validity["not_before"].native, validity["not_after"].native
        if not start <= at <= end:
            ok = False
            report.problems.append(f"{label} certificate is not valid on {at:%Y-%m-%d} "
                                   f"(valid {start:%Y-%m-%d} to {end:%Y-%m-%d})")
    report.dates_valid = ok and bool(certs)


def passive_authenticate(files: Mapping[str, bytes], csca_certs: Iterable[bytes | str | Path], *,
                         at: _dt.datetime | None = None, ds_certificates: Iterable[bytes] = ()) -> PaReport:
    """Passive authentication (ICAO 9303-11 §5.1) of the files read from a chip.

    ``files`` maps "EF.SOD" and "DG1".."DG16" to their whole contents (other keys, e.g. "EF.COM", are
    ignored: EF.COM is not signed). Checks, reporting every failure: the EF.SOD structure; each data group
    read against its hash in EF.SOD; the signed attributes and the signature with the DS certificate; the DS
    certificate against ``csca_certs`` (issuer, CA flag, key usage, signature); both certificates valid at
    ``at`` (default now). Never raises for bad data; call :meth:`PaReport.check` to raise.
    """
    report = PaReport()
    sod_bytes = files.get("EF.SOD")
    if not sod_bytes:
        report.problems.append("EF.SOD was not read")
        return report
    try:
        sod = parse_sod(sod_bytes)
    except SodError as exc:
        report.problems.append(str(exc))
        return report
    report.hash_algorithm = sod.hash_algorithm
    digest = _HASHES[sod.hash_algorithm]
    for name, content in sorted(files.items()):
        if not name.startswith("DG"):
            continue
        number = int(name[2:]) if name[2:].isdigit() else 0
        if number not in sod.hashes:
            report.data_groups[name] = "not in EF.SOD"
            report.problems.append(f"{name} was read but EF.SOD holds no hash for it")
        elif digest(bytes(content)).digest() != sod.hashes[number]:
            report.data_groups[name] = "hash mismatch"
            report.problems.append(f"{name}: its {sod.hash_algorithm} hash differs from the one in EF.SOD "
                                   "(data altered)")
        else:
            report.data_groups[name] = "ok"
    for number in sorted(sod.hashes):
        if f"DG{number}" not in files:
            report.data_groups[f"DG{number}"] = "not read"
            report.notes.append(f"DG{number} is listed in EF.SOD but was not read")
    ds = _check_signer_info(sod, report, list(ds_certificates))
    if ds is None:
        return report
    trusted = []
    for c in csca_certs:
        try:
            trusted.append(x509.Certificate.load(load_certificate(c)))
        except SodError as exc:
            report.problems.append(f"a CSCA certificate is unusable: {exc}")
    chain = _check_chain(ds, trusted, report)
    when = at or _dt.datetime.now(_dt.UTC)
    _check_dates([("document signer", ds)] + [("CSCA", c) for c in chain], when, report)
    if report.ok:
        log.info("passive authentication passed (%d data groups)", sum(v == "ok" for v in report.data_groups.values()))
    return report
