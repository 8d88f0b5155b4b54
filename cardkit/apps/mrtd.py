"""The eMRTD application (ICAO Doc 9303, LDS1 with BAC): issuance hooks, a border-terminal reader, and
read-back verification with passive authentication.

* content hook ``"mrtd"`` (``[profile] content = "mrtd"``): EF.COM, DG1 (the TD3 MRZ), DG2 (the face image of
  ``[personalization.options] face_image``) and EF.SOD signed by the document signer;
* key hook ``"bac-seed"`` (``master = "record:bac-seed"``): K_seed of the MRZ information, stored on the card
  as the 3DES key of usage SM from which K_Enc/K_MAC derive exactly as BAC derives them
  (:func:`cardkit.sm.seed.static_sm_keys`);
* :func:`read_mrtd` reads a document as an inspection system does: SELECT the LDS1 AID, BAC, then SELECT and
  READ BINARY of EF.COM, every data group it lists, and EF.SOD under secure messaging, in chunks;
* :func:`verify_mrtd` proves a personalized document the same way and runs passive authentication.

**The document signer key.** With no keystore, or a TEST key file, the TEST PKI in ``keys/test/mrtd-pki/``
signs (with a warning). Otherwise the keystore's signing key (``keystore.signer(name)``, see
:class:`cardkit.keys.store.KeyCustody`) named by ``[personalization.options] document_signer_key`` (default
``mrtd-ds``) signs, with the certificate of ``document_signer_certificate`` (a path relative to the profile
folder) — the key must belong to it. A keystore without signing keys is refused.

The MRZ and the MRZ information identify a person: they never appear in logs or error messages.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cardkit.apps.lds import AID, COM, SOD, LdsError, dg1, dg2, ef_com, lds_file, parse_dg1, parse_ef_com
from cardkit.apps.sod import (
    DocumentSigner,
    KeystoreDocumentSigner,
    PassiveAuthenticationError,
    build_sod,
    load_certificate,
    load_test_csca,
    load_test_document_signer,
    passive_authenticate,
)
from cardkit.commands import iso
from cardkit.errors import KeystoreError, ProfileError, RecordError
from cardkit.issuance.hooks import register_content, register_key
from cardkit.profiles.mrz import Td3
from cardkit.profiles.validators import VALIDATORS
from cardkit.sm.bac import bac_authenticate, bac_key_seed
from cardkit.sm.iso import IsoSmChannel
from cardkit.sw import SecurityStatusNotSatisfied

if TYPE_CHECKING:
    from cardkit.issuance.prepare import PreparedRecord
    from cardkit.keys.store import Keystore
    from cardkit.profiles.model import FileSpec, KeySpec, Profile
    from cardkit.session import CardSession

__all__ = [
    "AID",
    "MRTD_FIELDS",
    "READ_CHUNK",
    "bac_seed_hook",
    "document_signer",
    "lds_paths",
    "mrtd_content",
    "prepare_mrtd",
    "read_mrtd",
    "td3_from_record",
    "validate_mrtd_record",
    "verify_mrtd",
]

log = logging.getLogger(__name__)

#: Record columns of an eMRTD record (``cardkit.profiles.synthetic.MRTD_FIELDS``) plus the optional ones.
MRTD_FIELDS = ("document_number", "surname", "given_names", "nationality", "birth_date", "sex", "expiry_date",
               "issuing_state")
_OPTIONAL_FIELDS = ("given_names", "document_code", "optional_data")
#: READ BINARY chunk: 223 plaintext bytes give a 3DES-protected response of 242 bytes, within one short APDU.
READ_CHUNK = 0xDF
# The first READ BINARY of a file: tag and length field (ICAO 9303-11 Appendix D.4 reads 4 bytes).
_HEADER_READ = 4
# ISO 7816-4:2020 §11.3.3: READ BINARY with even INS addresses offsets 0..32767.
_MAX_EVEN_OFFSET = 0x7FFF
# Data groups an inspection system without EAC cannot read (ICAO 9303-11 §7: DG3 fingerprints, DG4 irises).
_EAC_GROUPS = frozenset({3, 4})


# ------------------------------------------------------------------------------------------- records


def td3_from_record(fields: Mapping[str, str]) -> Td3:
    """The TD3 MRZ data of a record (columns :data:`MRTD_FIELDS`; ``document_code`` defaults to ``P``).

    Raises :class:`~cardkit.errors.RecordError` naming the first field that fails.
    """
    for name in MRTD_FIELDS:
        if name not in _OPTIONAL_FIELDS and not fields.get(name):
            raise RecordError("required field is missing or empty", field=name)
    return Td3(
        document_code=fields.get("document_code") or "P", issuing_state=fields["issuing_state"],
        surname=fields["surname"], given_names=fields.get("given_names", ""),
        document_number=fields["document_number"], nationality=fields["nationality"],
        birth_date=fields["birth_date"], sex=fields["sex"], expiry_date=fields["expiry_date"],
        optional_data=fields.get("optional_data", ""),
    )


_FIELD_CHECKS = (
    ("document_number", "document-number"),
    ("surname", "mrz-name"),
    ("nationality", "country"),
    ("issuing_state", "country"),
)


def validate_mrtd_record(fields: Mapping[str, str], *, line: int | None = None) -> list[RecordError]:
    """Every problem of one eMRTD record (empty list = valid); never raises for bad data."""
    problems: list[RecordError] = []
    failed: set[str] = set()

    def add(message: str, name: str | None) -> None:
        problems.append(RecordError(message, field=name, line=line))
        if name:
            failed.add(name)

    for name in MRTD_FIELDS:
        if name not in _OPTIONAL_FIELDS and not fields.get(name):
            add("required field is missing or empty", name)
    for name, check in _FIELD_CHECKS:
        if fields.get(name) and name not in failed:
            try:
                VALIDATORS[check](fields[name])
            except RecordError as exc:
                add(_message(exc), name)
    if fields.get("given_names"):
        try:
            VALIDATORS["mrz-name"](fields["given_names"])
        except RecordError as exc:
            add(_message(exc), "given_names")
    for name in fields:
        if name not in MRTD_FIELDS and name not in _OPTIONAL_FIELDS:
            add("unknown column (not used by the mrtd profile)", name)
    if not failed:
        try:
            td3_from_record(fields)
        except RecordError as exc:
            add(_message(exc), exc.field)
    return problems


def _message(exc: RecordError) -> str:
    text = str(exc)
    return text.partition(": ")[2] or text if exc.field is not None or exc.line is not None else text


# ------------------------------------------------------------------------------------------- hooks


def lds_paths(profile: Profile) -> dict[str, FileSpec]:
    """The profile's files of the LDS1 application DF (the DF named with the LDS1 AID), by LDS name."""
    dfs = [fs for fs in profile.files if fs.is_df and fs.name == AID]
    if len(dfs) != 1:
        raise ProfileError(f"profile {profile.name!r} must have exactly one DF named {AID.hex().upper()} "
                           f"(the LDS1 eMRTD application), found {len(dfs)}", file=profile.source or None)
    out: dict[str, FileSpec] = {}
    for fs in profile.files:
        if fs.is_df or fs.parent != dfs[0].path:
            continue
        for name in ("EF.COM", "EF.SOD", *(f"DG{n}" for n in range(1, 17))):
            if lds_file(name).fid == fs.fid:
                if fs.type != "transparent":
                    raise ProfileError(f"{fs.path} ({name}) must be a transparent EF", file=profile.source or None)
                out[name] = fs
    return out


def _profile_dir(profile: Profile) -> Path:
    return Path(profile.source).parent if profile.source else Path.cwd()


def _option_path(profile: Profile, key: str) -> Path | None:
    value = profile.options.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProfileError(f"[personalization.options] {key} must be a path string", file=profile.source or None)
    path = Path(value)
    return path if path.is_absolute() else _profile_dir(profile) / path


def document_signer(profile: Profile, keystore: Keystore | None) -> DocumentSigner:
    """The signer of EF.SOD for this profile and keystore (see the module docstring)."""
    from cardkit.keys.store import TestKeyFile

    name = str(profile.options.get("document_signer_key", "mrtd-ds"))
    if keystore is None or isinstance(keystore, TestKeyFile):
        return load_test_document_signer()
    signer_of = getattr(keystore, "signer", None)
    if not callable(signer_of):
        raise KeystoreError(f"{type(keystore).__name__} offers no signing keys; EF.SOD cannot be signed with "
                            f"{name!r} (only TEST key files fall back to the TEST PKI)")
    cert = _option_path(profile, "document_signer_certificate")
    if cert is None:
        raise ProfileError("the keystore signs EF.SOD but [personalization.options] document_signer_certificate "
                           "names no DS certificate", file=profile.source or None)
    return KeystoreDocumentSigner(signer_of(name), load_certificate(cert))


def _face_image(profile: Profile) -> bytes:
    path = _option_path(profile, "face_image")
    if path is None:
        raise ProfileError("[personalization.options] face_image names no face image for DG2",
                           file=profile.source or None)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read the DG2 face image {path.name}: {exc.strerror}",
                           file=profile.source or None) from None


def mrtd_content(profile: Profile, fields: Mapping[str, str], keystore: Keystore | None) -> dict[str, bytes]:
    """Content hook ``"mrtd"``: {profile path: bytes} for EF.COM, DG1, DG2 and EF.SOD."""
    paths = lds_paths(profile)
    missing = [n for n in ("EF.COM", "DG1", "DG2", "EF.SOD") if n not in paths]
    if missing:
        raise ProfileError(f"profile {profile.name!r} lacks LDS file(s) {', '.join(missing)} in the eMRTD DF",
                           file=profile.source or None)
    mrz = td3_from_record(fields)
    try:
        groups = {1: dg1(mrz), 2: dg2(_face_image(profile))}
    except LdsError as exc:
        raise ProfileError(f"DG2 face image: {exc}", file=profile.source or None) from None
    content = {
        "EF.COM": ef_com(sorted(groups)),
        "DG1": groups[1],
        "DG2": groups[2],
        "EF.SOD": build_sod(groups, document_signer(profile, keystore)),
    }
    out: dict[str, bytes] = {}
    for name, data in content.items():
        spec = paths[name]
        if spec.size is not None and len(data) > spec.size:
            raise ProfileError(f"{spec.path} ({name}) needs {len(data)} bytes but the profile gives it {spec.size}",
                               file=profile.source or None)
        out[spec.path] = data
    return out


def bac_seed_hook(profile: Profile, key: KeySpec, fields: Mapping[str, str]) -> bytes:
    """Key hook ``"bac-seed"``: K_seed (16 bytes) of the record's MRZ information (ICAO 9303-11 §9.7.2)."""
    return bac_key_seed(td3_from_record(fields).mrz_information())


register_content("mrtd", mrtd_content, fields=MRTD_FIELDS, validate=validate_mrtd_record)
register_key("bac-seed", bac_seed_hook)


def prepare_mrtd(profile: Profile, fields: Mapping[str, str], *, keystore: Keystore | None = None,
                 line: int | None = None) -> PreparedRecord:
    """Validate an eMRTD record and prepare it for :func:`cardkit.issuance.engine.personalize`.

    This is the mrtd profile's preparation while the generic :func:`cardkit.issuance.prepare.prepare` does not
    know record fields that only a content hook consumes. Raises
    :class:`~cardkit.issuance.prepare.RecordProblems` listing every problem.
    """
    from cardkit.issuance.prepare import PreparedRecord, RecordProblems

    problems = validate_mrtd_record(fields, line=line)
    if problems:
        raise RecordProblems(problems, line=line)
    binaries = mrtd_content(profile, fields, keystore)
    record_keys = {k.name: bac_seed_hook(profile, k, fields) for k in profile.keys if k.master == "record:bac-seed"}
    return PreparedRecord(profile.name, profile.algorithm, fields["document_number"], {}, binaries, {}, {},
                          record_keys)


# ------------------------------------------------------------------------------------------- reading


def _read_file(session: CardSession, name: str, chunk: int) -> bytes:
    spec = lds_file(name)
    ctx = {"file": name}
    session.send(iso.select_child_ef(spec.fid, p2_fci="none"), context=ctx)
    head = session.send(iso.read_binary(0, _HEADER_READ), context=ctx, allow_warnings=True).data
    if len(head) >= 2 and head[1] == 0x83:  # a 3-byte length needs one more byte of header
        head += session.send(iso.read_binary(len(head), 1), context=ctx).data
    if not head or head[0] != spec.tag:
        found = f"{head[0]:02X}" if head else "nothing"
        raise LdsError(f"{name} starts with {found}, expected tag {spec.tag:02X}")
    total = _tlv_total(head, name)
    data = bytearray(head[:total])
    while len(data) < total:
        offset = len(data)
        if offset > _MAX_EVEN_OFFSET:
            raise LdsError(f"{name} is {total} bytes; offsets beyond 32767 need READ BINARY with odd INS, "
                           "which this reader does not implement")
        part = session.send(iso.read_binary(offset, min(chunk, total - offset)), context=ctx,
                            allow_warnings=True).data
        if not part:
            raise LdsError(f"{name} ended at byte {offset} of the {total} its header announces")
        data += part
    return bytes(data[:total])


def _tlv_total(head: bytes, name: str) -> int:
    """Tag (one byte for LDS files) + length field + value length, from the first bytes of a file."""
    if len(head) < 2:
        raise LdsError(f"{name}: the file is shorter than a data object header")
    first = head[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if not 1 <= count <= 3 or len(head) < 2 + count:
        raise LdsError(f"{name}: length field {first:02X} is not supported")
    return 2 + count + int.from_bytes(head[2:2 + count], "big")


def read_mrtd(session: CardSession, mrz_information: str, *, chunk: int = READ_CHUNK) -> dict[str, bytes]:
    """Read an eMRTD as an inspection system does; returns {"EF.COM", "DG1", ..., "EF.SOD": whole file}.

    SELECT the LDS1 application (``00 A4 04 0C``), Basic Access Control with ``mrz_information``, then under
    secure messaging SELECT (``P1 02``) and READ BINARY each file: the header first, the rest in ``chunk``-byte
    pieces. Data groups that need Extended Access Control (DG3, DG4) and refuse with 6982 are skipped. The
    BAC channel stays pushed on ``session``.
    """
    if not 1 <= chunk <= 0xFF:
        raise ValueError(f"READ BINARY chunk must be 1..255 bytes, got {chunk}")
    session.send(iso.select_aid(AID, p2_fci="none"), context={"application": "eMRTD (LDS1)"})
    state = bac_authenticate(session.transmit, mrz_information)
    session.push(IsoSmChannel(state))
    files = {COM.name: _read_file(session, COM.name, chunk)}
    for number in parse_ef_com(files[COM.name]).data_groups:
        name = f"DG{number}"
        try:
            files[name] = _read_file(session, name, chunk)
        except SecurityStatusNotSatisfied:
            if number not in _EAC_GROUPS:
                raise
            log.info("%s needs Extended Access Control: skipped", name)
    files[SOD.name] = _read_file(session, SOD.name, chunk)
    return files


def verify_mrtd(session: CardSession, profile: Profile, prepared: PreparedRecord, mrz_information: str | None = None,
                *, keystore: Keystore | None = None, result: Any = None,
                csca_certs: list[bytes] | None = None) -> dict[str, Any]:
    """Read a personalized eMRTD back as an inspection system would and return the manifest.

    The card is reset first (no issuer channel survives), then :func:`read_mrtd` with the MRZ information
    (default: from the DG1 that was written); every file must equal what was written and passive
    authentication must pass against ``csca_certs`` (default: ``[personalization.options] csca_certificate``,
    else the TEST CSCA). Raises :class:`~cardkit.issuance.engine.VerificationError` naming the file or the
    passive-authentication failure. ``keystore`` is accepted for the engine's calling convention.
    """
    from cardkit.issuance.engine import VerificationError, chip_serial

    t0 = time.perf_counter()
    paths = lds_paths(profile)
    written = {name: prepared.binaries[spec.path] for name, spec in paths.items() if spec.path in prepared.binaries}
    if "DG1" not in written:
        raise VerificationError("the prepared record holds no DG1")
    if mrz_information is None:
        mrz_information = parse_dg1(written["DG1"]).mrz_information()
    session.reset()
    files = read_mrtd(session, mrz_information)
    for name, data in written.items():
        if files.get(name) != data:
            raise VerificationError(f"file {paths[name].path}: read-back differs from what was written")
    extra = sorted(set(files) - set(written))
    if extra:
        raise VerificationError(f"the document holds file(s) that were not written: {', '.join(extra)}")
    if csca_certs is None:
        path = _option_path(profile, "csca_certificate")
        csca_certs = [load_certificate(path) if path is not None else load_test_csca()]
    report = passive_authenticate(files, csca_certs)
    try:
        report.check()
    except PassiveAuthenticationError as exc:
        raise VerificationError(str(exc)) from None
    manifest = dict(result.manifest) if result is not None else {}
    manifest.update({
        "profile": profile.name, "algorithm": profile.algorithm,
        "chip_serial": chip_serial(session.atr).hex().upper(), "atr": session.atr.hex().upper(),
        "files": {paths[n].path: hashlib.sha256(d).hexdigest() for n, d in written.items()},
        "passive_authentication": {"ok": True, "hash_algorithm": report.hash_algorithm,
                                   "document_signer": report.document_signer, "csca": report.csca,
                                   "data_groups": dict(report.data_groups)},
        "verify_ms": round((time.perf_counter() - t0) * 1000, 1),
    })
    return manifest
