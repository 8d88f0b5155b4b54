"""Personalization and read-back verification of one card, from a profile and a prepared record.

The plan (:func:`plan_card`, built at card time because card keys depend on the chip serial) runs on a
:class:`~cardkit.session.CardSession` in the order :func:`cardkit.issuance.plan.traversal` gives: open the issuer
channel (ISO 7816-4 secure messaging after mutual authentication with the MF transport key 00), replace the
transport key with the diversified issuer key at once (a card taken from the line mid-run no longer opens with the
shared transport key), create the DF/EF tree — each DF's keys and PINs loaded right after its creation
(cardkit's proprietary PUT KEY, always under SM), each EF written right after its creation while it is the current
file (no SELECT), transparent files in the largest chunk one APDU carries — and finally prove the new issuer key
with a fresh mutual authentication. The APDU count equals :func:`cardkit.issuance.plan.minimum_apdus` for the
record; both numbers go in the manifest.

Verification reads every written file back *through the protection the profile sets* (external authentication,
PIN verification — only with a PIN value that is known, never a guess — under the issuer channel), compares bytes,
and returns the manifest with per-file SHA-256 digests. A manifest is signed detached with ECDSA P-256 by a
station key (:class:`ManifestSigner`); :func:`verify_manifest_signature` checks it.

Records of record files are SIMPLE-TLV with tag = the profile's record number, appended in number order (records
of fixed-size files zero-padded to the record size).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cardkit.apdu import CommandApdu
from cardkit.commands import iso
from cardkit.crypto import Alg, cmac
from cardkit.errors import CardkitError, KeystoreError
from cardkit.errors import VerificationError as _VerificationError
from cardkit.issuance.plan import (
    CardLimits,
    Plan,
    Step,
    fcp_for,
    keys_in,
    minimum_apdus,
    path_fids,
    satisfy,
    select_command,
    sm_block,
    traversal,
)
from cardkit.issuance.prepare import PreparedRecord
from cardkit.keys.store import Keystore, alg_of
from cardkit.profiles.model import FileSpec, Profile
from cardkit.session import CardSession
from cardkit.sm.auth import external_authenticate, mutual_authenticate
from cardkit.sm.iso import IsoSmChannel
from cardkit.sm.seed import static_sm_keys
from cardkit.tlv import compact_decode

__all__ = [
    "SSC_RID", "TEST_STATION_KEY", "CardResult", "EcdsaSigner", "ManifestSignatureError", "ManifestSigner",
    "VerificationError", "card_key", "chip_serial", "expected_content", "manifest_bytes", "open_issuer_channel",
    "open_key_channel",
    "personalize", "plan_card", "put_key", "run_plan", "sign_manifest", "verify", "verify_manifest_signature",
    "write_manifest",
]

log = logging.getLogger(__name__)

#: Registered application provider identifier of the social security application (ssc.md "Identifiers").
SSC_RID = bytes.fromhex("D156000005")
# cardkit's PUT KEY algorithm codes (cardkit.virtual.security KEY_ALGS).
_ALG_CODE = {Alg.DES3: 0x01, Alg.AES: 0x02, Alg.SM4: 0x03}
# cardkit's PUT KEY object types and key usages (cardkit.virtual.security).
_OBJ_KEY, _OBJ_PIN, _OBJ_PUK = 0x01, 0x02, 0x03
_USAGE_EXTERNAL, _USAGE_SM = 0x01, 0x02
#: The repository's TEST manifest-signing key (never for real cards).
TEST_STATION_KEY = Path(__file__).resolve().parents[2] / "keys" / "test" / "station.toml"
_SIG_FORMAT = "cardkit-manifest-signature/1"


class VerificationError(_VerificationError):
    """What was read back differs from what was written, or could not be read (names the file, never the data)."""


class ManifestSignatureError(VerificationError):
    """A manifest signature that does not verify, or that no trusted key made."""


@dataclass
class CardResult:
    """Outcome of personalizing (and verifying) one card: the manifest, and the sealed PIN values."""

    serial: str
    atr: str
    manifest: dict[str, Any] = field(default_factory=dict)
    pins: dict[str, bytes] = field(default_factory=dict, repr=False)
    apdus: int = 0


def chip_serial(atr: bytes) -> bytes:
    """The 4-byte chip serial from the ATR's historical bytes (COMPACT-TLV tag 5, card issuer's data)."""
    from cardkit.atr import Atr

    hist = Atr.parse(atr).historical
    if hist[:1] == b"\x80":
        for tag, value in compact_decode(hist[1:]):
            if tag == 5 and len(value) == 4:
                return value
    raise CardkitError("the card's ATR carries no 4-byte chip serial (historical bytes, tag 5)")


def _level(value: str | bytes) -> bytes:
    """8 bytes of diversification data: binary left-padded with zeros; digits as BCD, left-padded."""
    if isinstance(value, str):
        digits = value if len(value) % 2 == 0 else "0" + value
        raw = bytes.fromhex(digits) if digits.isdigit() else value.encode("ascii")
    else:
        raw = value
    return raw[-8:].rjust(8, b"\x00")


def card_key(keystore: Keystore, profile: Profile, name: str, serial: bytes,
             fields: Mapping[str, str], prepared: PreparedRecord | None = None) -> bytes:
    """The value of the profile's key ``name`` for this card: computed from the record (key hook), or the
    master key diversified level by level (record fields, ``serial`` = the chip serial)."""
    if prepared is not None and name in prepared.record_keys:
        return prepared.record_keys[name]
    spec = profile.key(name)
    levels = [_level(serial if lv == "serial" else fields.get(lv, "")) for lv in spec.diversify]
    return keystore.derive(spec.master, alg_of(profile.algorithm), levels).value


def put_key(obj_type: int, ref: int, alg: Alg | None, usage: int, tries: int, value: bytes) -> CommandApdu:
    """cardkit's proprietary key/PIN loading command (see :mod:`cardkit.virtual.security`)."""
    data = bytes((obj_type, ref, _ALG_CODE[alg] if alg else 0, usage, tries)) + value
    return CommandApdu(0x80, 0xD8, 0x00, 0x00, data, name="PUT KEY (ISO DF)", sensitive=True)


def open_issuer_channel(session: CardSession, alg: Alg, key: bytes, *, select: bool = True) -> IsoSmChannel:
    """(SELECT MF,) mutual authentication with MF key 00, secure messaging pushed on the session.

    Key 00 is named with P2 = 00, a global reference (ISO 7816-4:2020 §7.5.1), so the SELECT is needed only to
    leave the session in a known place.
    """
    for proc in session.processors:
        session.remove(proc)
    if select:
        session.send(iso.select_mf(p2_fci="none"), context={"file": "MF"})
    suite, k_enc, k_mac = static_sm_keys(alg, key)
    state = mutual_authenticate(session.transmit, suite, k_enc, k_mac, key_ref=0)
    channel = IsoSmChannel(state)
    session.push(channel)
    return channel


def open_key_channel(session: CardSession, alg: Alg, key: bytes, p2: int) -> IsoSmChannel:
    """Secure messaging by mutual authentication with the key named by ``p2`` (replaces any open channel)."""
    for proc in session.processors:
        session.remove(proc)
    suite, k_enc, k_mac = static_sm_keys(alg, key)
    channel = IsoSmChannel(mutual_authenticate(session.transmit, suite, k_enc, k_mac, key_ref=p2))
    session.push(channel)
    return channel


def _card_id_code(keystore: Keystore, profile: Profile, serial: bytes, fields: Mapping[str, str]) -> bytes:
    region = bytes.fromhex(fields.get("region", "000000")[:6].ljust(6, "0"))
    body = region + SSC_RID + serial
    irk = card_key(keystore, profile, "irk", serial, fields)
    return body + cmac(alg_of(profile.algorithm), irk, body)[:4]


def expected_content(profile: Profile, prepared: PreparedRecord, keystore: Keystore,
                     serial: bytes) -> tuple[dict[str, dict[int, bytes]], dict[str, bytes]]:
    """The records and binaries the card must hold, with card-time computed fields filled in."""
    from cardkit.profiles.codecs import simple_tlv_record

    records = {k: dict(v) for k, v in prepared.records.items()}
    for fs in profile.files:
        for spec in fs.fields:
            if spec.computed == "ssc-card-id" and spec.number is not None:
                code = _card_id_code(keystore, profile, serial, prepared.card_fields)
                records.setdefault(fs.path, {})[spec.number] = simple_tlv_record(spec.number, code)
    return records, dict(prepared.binaries)


def _record_bytes(fs: FileSpec, data: bytes) -> bytes:
    """A record as written: fixed-size structures take exactly ``record_size`` bytes (zero padding)."""
    if fs.type in ("linear-fixed", "cyclic") and fs.record_size:
        return data.ljust(fs.record_size, b"\x00")
    return data


# ------------------------------------------------------------------------------------------ personalize


def plan_card(profile: Profile, prepared: PreparedRecord, keystore: Keystore, serial: bytes, *,
              limits: CardLimits | None = None) -> Plan:
    """The steps that personalize this card (card keys diversified with ``serial``). Holds secrets."""
    limits = limits or CardLimits()
    alg = alg_of(profile.algorithm)
    fields = prepared.card_fields
    records, binaries = expected_content(profile, prepared, keystore, serial)
    plan = Plan(profile.name, serial)
    if profile.channel == "iso-sm":
        plan.steps.append(Step("channel", "open the issuer channel (transport key)",
                               key=keystore.key(profile.transport_key, alg).value))
    else:
        plan.add("select MF", select_command(profile, "MF"), file="MF")
    issuer = profile.issuer_key
    issuer_value = b""
    if issuer is not None:
        issuer_value = card_key(keystore, profile, issuer.name, serial, fields, prepared)
        plan.add("replace the transport key", put_key(_OBJ_KEY, 0, alg, _USAGE_SM, issuer.max_tries, issuer_value),
                 step="rotate transport key")
    chunk = limits.chunk(sm_block(profile))
    for visit in traversal(profile):
        if visit.kind == "select":
            plan.add(f"select {visit.path}", select_command(profile, visit.path), step="select", file=visit.path)
        elif visit.kind == "create":
            plan.add(f"create {visit.path}", iso.create_file(fcp_for(profile.file(visit.path))), step="create",
                     file=visit.path)
        elif visit.kind == "keys":
            keys, pins = keys_in(profile, visit.path)
            for spec in keys:
                value = card_key(keystore, profile, spec.name, serial, fields, prepared)
                usage = _USAGE_SM if spec.usage == "sm" else _USAGE_EXTERNAL
                plan.add(f"load key {spec.name}", put_key(_OBJ_KEY, spec.ref, alg, usage, spec.max_tries, value),
                         step="load key", key=spec.name)
            for pin in pins:
                plan.add(f"load {pin.kind} {pin.name}", put_key(_OBJ_PUK if pin.kind == "puk" else _OBJ_PIN, pin.ref,
                                                                None, 0, pin.max_tries, prepared.pins[pin.name]),
                         step=f"load {pin.kind.upper()}", pin=pin.name)
        else:
            fs = profile.file(visit.path)
            recs = records.get(fs.path, {})
            for number in sorted(recs):
                plan.add(f"write {fs.path} record {number}", iso.append_record(_record_bytes(fs, recs[number])),
                         step="write", file=fs.path, record=str(number))
            data = binaries.get(fs.path, b"")
            for off in range(0, len(data), chunk):
                plan.add(f"write {fs.path} at {off}", iso.update_binary(data[off:off + chunk], off), step="write",
                         file=fs.path)
    if issuer is not None:
        plan.steps.append(Step("prove", "prove the issuer key (fresh mutual authentication)", key=issuer_value))
    return plan


def run_plan(session: CardSession, profile: Profile, plan: Plan) -> None:
    """Send every step; raises at the first failure with the step, file and status word meaning."""
    alg = alg_of(profile.algorithm)
    for step in plan.steps:
        if step.kind == "command" and step.command is not None:
            session.send(step.command, context=dict(step.context))
        else:
            open_issuer_channel(session, alg, step.key, select=step.kind == "channel")


def personalize(session: CardSession, profile: Profile, prepared: PreparedRecord, keystore: Keystore, *,
                limits: CardLimits | None = None) -> CardResult:
    """Write one card. Raises at the first failure with the step, file and status word meaning.

    ``limits`` default: what the session and the card's ATR allow (:meth:`CardLimits.of`).
    """
    if profile.channel in ("scp03", "scp02"):
        from cardkit.issuance.hooks import channel_handler

        return channel_handler(profile.channel).personalize(session, profile, prepared, keystore)  # type: ignore[no-any-return]
    t0 = time.perf_counter()
    start = session.apdu_count
    limits = limits or CardLimits.of(session)
    serial = chip_serial(session.atr)
    plan = plan_card(profile, prepared, keystore, serial, limits=limits)
    run_plan(session, profile, plan)
    sent = session.apdu_count - start
    minimum = minimum_apdus(profile, prepared, limits=limits).total
    result = CardResult(serial.hex().upper(), session.atr.hex().upper(), pins=dict(prepared.pins), apdus=sent)
    result.manifest["personalize_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    result.manifest["apdus"] = {"personalize": sent, "minimum": minimum}
    log.info("card %s personalized in %d APDUs (minimum %d)", result.serial, sent, minimum)
    return result


# ------------------------------------------------------------------------------------------ verify


def _known_pins(profile: Profile, prepared: PreparedRecord, result: CardResult | None,
                pins: Mapping[str, bytes] | None) -> dict[str, bytes]:
    if pins is not None:
        return dict(pins)
    if result is not None:
        return dict(result.pins)
    # A generated initial PIN of a fresh preparation is not the card's: only record/fixed PINs are known.
    return {p.name: prepared.pins[p.name] for p in profile.pins if p.initial != "generate" and p.name in prepared.pins}


def _holder(profile: Profile, action: tuple[str, str]) -> str:
    return profile.pin(action[1]).df if action[0] == "verify" else profile.key(action[1]).df


def _chain(profile: Profile, df: str) -> set[str]:
    out = {df, "MF"}
    while df != "MF":
        df = profile.file(df).parent
        out.add(df)
    return out


def verify(session: CardSession, profile: Profile, prepared: PreparedRecord, keystore: Keystore,
           result: CardResult | None = None, *, pins: Mapping[str, bytes] | None = None,
           limits: CardLimits | None = None) -> dict[str, Any]:
    """Check the card against the profile and record; return the manifest.

    Every file of the profile is selected with its FCP and compared (FID, structure, sizes, SFI, DF name,
    life cycle, security attributes — so a missing file or a wrong access rule fails, ISO 7816-4:2020 §7.4.3),
    every PIN must answer its retry counter (VERIFY without data), and every written file is read back through
    its access rules and compared byte for byte. PIN-protected files are read with ``pins`` (else
    ``result.pins``, else the record's non-generated PINs); a file whose read rule cannot be met raises
    :class:`VerificationError` naming the file and the condition.
    """
    if profile.channel in ("scp03", "scp02"):
        from cardkit.issuance.hooks import channel_handler

        return channel_handler(profile.channel).verify(session, profile, prepared, keystore, result)  # type: ignore[no-any-return]
    t0 = time.perf_counter()
    start = session.apdu_count
    alg = alg_of(profile.algorithm)
    limits = limits or CardLimits.of(session)
    serial = chip_serial(session.atr)
    records, binaries = expected_content(profile, prepared, keystore, serial)
    known = _known_pins(profile, prepared, result, pins)
    secure = profile.channel == "iso-sm"
    if secure:
        issuer = profile.issuer_key
        mf_key = (card_key(keystore, profile, issuer.name, serial, prepared.card_fields, prepared) if issuer
                  else keystore.key(profile.transport_key, alg).value)
        open_issuer_channel(session, alg, mf_key)
    else:
        session.send(select_command(profile, "MF"), context={"file": "MF"})
    chunk = limits.read_chunk(sm_block(profile))
    files: dict[str, str] = {}
    counters: dict[str, int] = {}
    done: set[tuple[str, str]] = set()
    issuer_open = secure
    _check_pins(session, profile, "MF", counters)
    for fs in profile.files:
        _check_fcp(session, profile, fs)
        scope = _chain(profile, fs.path if fs.is_df else fs.parent)
        done = {a for a in done if _holder(profile, a) in scope}
        if fs.is_df:
            _check_pins(session, profile, fs.path, counters)
            continue
        if fs.path not in records and fs.path not in binaries:
            continue
        actions, why = satisfy(profile, fs.rules.get("read", "never"), fs.parent, issuer=issuer_open, sm=secure,
                               keys=True, pins=known)
        if actions is None:
            raise VerificationError(f"file {fs.path}: cannot read it back: read {why}")
        for action in actions:
            if action not in done:
                if action[0] == "mutual-auth":  # a new channel: earlier authentications are gone
                    issuer_open, done = False, set()
                _authenticate(session, profile, keystore, alg, serial, prepared, action, known)
                done.add(action)
        digest = hashlib.sha256()
        if fs.path in records:
            numbers = sorted(records[fs.path])
            order = list(reversed(numbers)) if fs.type == "cyclic" else numbers
            for i, number in enumerate(order, start=1):
                got = session.send(iso.read_record(i), context={"step": "verify", "file": fs.path}).data
                want = records[fs.path][number]
                if got[: len(want)] != want or any(got[len(want):]):
                    raise VerificationError(f"file {fs.path} record {number}: read-back differs from what was "
                                            "written")
            for number in numbers:
                digest.update(records[fs.path][number])
        else:
            want = binaries[fs.path]
            got = b""
            for off in range(0, len(want), chunk):
                got += session.send(iso.read_binary(off, min(chunk, len(want) - off)),
                                    context={"step": "verify", "file": fs.path}).data
            if got != want:
                raise VerificationError(f"file {fs.path}: read-back differs from what was written")
            digest.update(want)
        files[fs.path] = digest.hexdigest()
    manifest = dict(result.manifest) if result else {}
    apdus = dict(manifest.get("apdus", {}))
    apdus["verify"] = session.apdu_count - start
    manifest.update({
        "profile": profile.name, "algorithm": profile.algorithm, "chip_serial": serial.hex().upper(),
        "atr": session.atr.hex().upper(), "layout": {"files": len(profile.files), "pins": counters},
        "files": files, "apdus": apdus, "verify_ms": round((time.perf_counter() - t0) * 1000, 1),
    })
    return manifest


def _check_fcp(session: CardSession, profile: Profile, fs: FileSpec) -> None:
    """SELECT ``fs`` with its FCP and compare it with the profile (the file becomes current)."""
    from cardkit.errors import ParseError
    from cardkit.sw import FileNotFound

    try:
        data = session.send(iso.select_path(path_fids(profile, fs.path), p2_fci="fcp"),
                            context={"step": "verify", "file": fs.path}).data
    except FileNotFound:
        raise VerificationError(f"file {fs.path} is missing") from None
    try:
        fcp = iso.parse_fcp(data)
    except ParseError:
        raise VerificationError(f"file {fs.path}: the card's FCP is malformed") from None
    want = iso.parse_fcp(fcp_for(fs))
    checks: list[tuple[str, object, object]] = [
        ("file identifier", fcp.fid, fs.fid), ("structure", fcp.structure, want.structure),
        ("DF name", fcp.df_name, want.df_name), ("security attributes", fcp.security_expanded, want.security_expanded),
        ("life cycle", fcp.lcs, "operational-activated")]
    if fs.sfi is not None:
        checks.append(("SFI", fcp.sfi, fs.sfi))
    if fs.type == "transparent":
        checks.append(("size", fcp.size, fs.size))
    elif fs.is_record:
        checks += [("record size", fcp.record_size, fs.record_size), ("records", fcp.record_count, fs.records)]
    for what, got, expected in checks:
        if got != expected:
            raise VerificationError(f"file {fs.path}: {what} differs from the profile")


def _check_pins(session: CardSession, profile: Profile, df: str, counters: dict[str, int]) -> None:
    """Every PIN of ``df`` (its DF is current) answers VERIFY without data with its counter (no try spent)."""
    for pin in profile.pins:
        if pin.df != df or pin.kind != "pin":
            continue
        resp = session.transmit(iso.verify(pin.p2, None))
        if resp.sw == 0x6983:
            counters[pin.name] = 0
        elif resp.sw1 == 0x63 and resp.sw2 & 0xF0 == 0xC0:
            counters[pin.name] = resp.sw2 & 0x0F
        elif resp.sw != 0x9000:
            raise VerificationError(f"PIN {pin.name!r} in {df}: the card answers {resp.sw:04X} (not loaded?)")


def _authenticate(session: CardSession, profile: Profile, keystore: Keystore, alg: Alg, serial: bytes,
                  prepared: PreparedRecord, action: tuple[str, str], pins: Mapping[str, bytes]) -> None:
    kind, name = action
    if kind in ("external-auth", "mutual-auth"):
        spec = profile.key(name)
        value = card_key(keystore, profile, name, serial, prepared.card_fields, prepared)
        if kind == "external-auth":
            external_authenticate(session.transmit, alg, value, spec.p2)
        else:
            open_key_channel(session, alg, value, spec.p2)
    else:
        pin = profile.pin(name)
        session.send(iso.verify(pin.p2, pins[name]), context={"step": "verify PIN", "pin": name})


# ------------------------------------------------------------------------------------------ manifests


class ManifestSigner(Protocol):
    """Signs manifests: ECDSA P-256 with SHA-256, DER signature (an HSM-backed signer implements the same)."""

    @property
    def key_id(self) -> str: ...

    def public_key_pem(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


def _key_id(public_pem: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(public_pem)
    except ValueError:
        raise ManifestSignatureError("the public key is not a PEM SubjectPublicKeyInfo") from None
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16].upper()


class EcdsaSigner:
    """A :class:`ManifestSigner` over an ECDSA P-256 private key held in memory (PEM, PKCS#8)."""

    def __init__(self, private_pem: bytes, *, test: bool = False) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            key = serialization.load_pem_private_key(private_pem, password=None)
        except (ValueError, TypeError):
            raise KeystoreError("the station key is not an unencrypted PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise KeystoreError("the station key must be an ECDSA P-256 key")
        self._key = key
        self._public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
        self._id = ("TEST-" if test else "") + _key_id(self._public)

    @classmethod
    def test_station(cls, path: str | Path = TEST_STATION_KEY, *, allow_test_keys: bool = False) -> EcdsaSigner:
        """The TEST station key of ``keys/test/station.toml`` (refused unless explicitly allowed)."""
        if not allow_test_keys:
            raise KeystoreError(f"{Path(path).name} is a TEST station key; refusing it without --allow-test-keys")
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise KeystoreError(f"cannot read the test station key {path}: {type(exc).__name__}") from None
        if doc.get("test_only") is not True or not isinstance(doc.get("private_key"), str):
            raise KeystoreError(f"{path} is not a test station key file (test_only = true, private_key)")
        log.warning("signing manifests with the TEST station key — never for real cards")
        return cls(doc["private_key"].strip().encode("ascii"), test=True)

    @property
    def key_id(self) -> str:
        return self._id

    def public_key_pem(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def __repr__(self) -> str:
        return f"EcdsaSigner(key_id={self._id})"


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The signed form of a manifest: canonical JSON (sorted keys, no spaces, UTF-8)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_manifest(manifest: Mapping[str, Any], signer: ManifestSigner) -> dict[str, str]:
    """A detached signature document for ``manifest`` (ES256 over :func:`manifest_bytes`)."""
    data = manifest_bytes(manifest)
    return {
        "format": _SIG_FORMAT, "alg": "ES256", "key_id": signer.key_id,
        "public_key": signer.public_key_pem().decode("ascii"),
        "manifest_sha256": hashlib.sha256(data).hexdigest(),
        "signature": base64.b64encode(signer.sign(data)).decode("ascii"),
    }


def verify_manifest_signature(manifest: Mapping[str, Any], signature: Mapping[str, Any],
                              trusted: Sequence[bytes]) -> str:
    """Check a detached signature against the PEM public keys in ``trusted``; return the signer's key id.

    Raises :class:`ManifestSignatureError` when the document is malformed, the manifest was changed, the
    signature does not verify, or the signing key is not one of ``trusted``.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if signature.get("format") != _SIG_FORMAT or signature.get("alg") != "ES256":
        raise ManifestSignatureError(f"not a {_SIG_FORMAT} ES256 signature document")
    data = manifest_bytes(manifest)
    if signature.get("manifest_sha256") != hashlib.sha256(data).hexdigest():
        raise ManifestSignatureError("the manifest does not match the signed digest (changed after signing)")
    pem = str(signature.get("public_key", "")).encode("ascii", "replace")
    kid = _key_id(pem)
    trusted_ids = {_key_id(t) for t in trusted}
    if kid not in trusted_ids:
        raise ManifestSignatureError(f"the manifest was signed by key {kid}, which is not trusted here")
    try:
        raw = base64.b64decode(str(signature.get("signature", "")), validate=True)
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ManifestSignatureError("the signing key is not an ECDSA key")
        key.verify(raw, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise ManifestSignatureError("the manifest signature does not verify") from None
    return str(signature.get("key_id", kid))


def write_manifest(path: str | Path, manifest: Mapping[str, Any], signer: ManifestSigner | None = None) -> Path | None:
    """Write ``manifest`` as JSON (mode 0600) and, with ``signer``, ``PATH.sig``; return the signature path."""
    p = Path(path)
    _write_private(p, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    if signer is None:
        return None
    sig = p.with_name(p.name + ".sig")
    _write_private(sig, json.dumps(sign_manifest(manifest, signer), indent=2) + "\n")
    return sig


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
