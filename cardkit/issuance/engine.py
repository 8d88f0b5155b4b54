"""Personalization and read-back verification of one card, from a profile and a prepared record.

The plan runs on a :class:`~cardkit.session.CardSession` in the order a card OS needs it: open the issuer
channel (ISO 7816-4 secure messaging after mutual authentication with the MF transport key), create the
DF/EF tree with its access rules, load keys and PINs (cardkit's PUT KEY, protected), write every record and
transparent file, then rotate the MF transport key to the diversified issuer key and prove it by opening a
fresh channel with it. Verification reads every written file back *through the protection the profile
sets* (external authentication where the read rule demands it) and compares bytes; the result is a
manifest with per-file SHA-256 digests.

Records of record files are SIMPLE-TLV with tag = the profile's record number, appended in number order.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cardkit.acl import AccessRules, encode_expanded, parse_rule
from cardkit.apdu import CommandApdu
from cardkit.commands import iso
from cardkit.crypto import Alg, cmac
from cardkit.errors import CardkitError
from cardkit.issuance.prepare import PreparedRecord
from cardkit.keys.store import Keystore, alg_of
from cardkit.profiles.model import FileSpec, Profile
from cardkit.session import CardSession
from cardkit.sm.auth import external_authenticate, mutual_authenticate
from cardkit.sm.iso import IsoSmChannel
from cardkit.sm.seed import static_sm_keys
from cardkit.tlv import compact_decode

__all__ = ["CardResult", "VerificationError", "chip_serial", "personalize", "verify"]

log = logging.getLogger(__name__)

#: Registered application provider identifier of the social security application (ssc.md "Identifiers").
SSC_RID = bytes.fromhex("D156000005")
_STRUCT = {"transparent": "transparent", "linear-fixed": "linear-fixed", "linear-variable": "linear-variable",
           "cyclic": "cyclic"}
_ALG_CODE = {Alg.DES3: 0x01, Alg.AES: 0x02, Alg.SM4: 0x03}


class VerificationError(CardkitError):
    """What was read back differs from what was written (names the file, never the data)."""


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


def _path_fids(profile: Profile, path: str) -> bytes:
    out = b""
    parts = path.split("/")
    for i in range(len(parts)):
        out += profile.file("/".join(parts[: i + 1])).fid
    return out


def _select(session: CardSession, profile: Profile, path: str) -> None:
    if path == "MF":
        session.send(iso.select_mf(p2_fci="none"), context={"file": "MF"})
    else:
        session.send(iso.select_path(_path_fids(profile, path), p2_fci="none"), context={"file": path})


def _fcp(fs: FileSpec) -> bytes:
    rules = AccessRules({op: parse_rule(text) for op, text in fs.rules.items()})
    security = encode_expanded(rules, fs.is_df)
    if fs.is_df:
        return iso.fcp_template(fid=fs.fid, df_name=fs.name, descriptor=iso.file_descriptor("df"), security=security)
    if fs.type == "transparent":
        return iso.fcp_template(fid=fs.fid, sfi=fs.sfi, size=fs.size, descriptor=iso.file_descriptor("transparent"),
                                security=security)
    return iso.fcp_template(fid=fs.fid, sfi=fs.sfi, descriptor=iso.file_descriptor(
        _STRUCT[fs.type], fs.record_size, fs.records), security=security)  # type: ignore[arg-type]


def put_key(obj_type: int, ref: int, alg: Alg | None, usage: int, tries: int, value: bytes) -> CommandApdu:
    """cardkit's proprietary key/PIN loading command (see :mod:`cardkit.virtual.security`)."""
    data = bytes((obj_type, ref, _ALG_CODE[alg] if alg else 0, usage, tries)) + value
    return CommandApdu(0x80, 0xD8, 0x00, 0x00, data, name="PUT KEY (ISO DF)", sensitive=True)


def open_issuer_channel(session: CardSession, alg: Alg, key: bytes) -> IsoSmChannel:
    """SELECT MF, mutual authentication with MF key 00, secure messaging pushed on the session."""
    for proc in session.processors:
        session.remove(proc)
    session.send(iso.select_mf(p2_fci="none"), context={"file": "MF"})
    suite, k_enc, k_mac = static_sm_keys(alg, key)
    state = mutual_authenticate(session.transmit, suite, k_enc, k_mac, key_ref=0)
    channel = IsoSmChannel(state)
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


def personalize(session: CardSession, profile: Profile, prepared: PreparedRecord, keystore: Keystore) -> CardResult:
    """Write one card. Raises at the first failure with the step, file and status word meaning."""
    if profile.channel in ("scp03", "scp02"):
        from cardkit.issuance.hooks import channel_handler

        return channel_handler(profile.channel).personalize(session, profile, prepared, keystore)  # type: ignore[no-any-return]
    t0 = time.perf_counter()
    alg = alg_of(profile.algorithm)
    serial = chip_serial(session.atr)
    fields = prepared.card_fields
    records, binaries = expected_content(profile, prepared, keystore, serial)
    transport = keystore.key(profile.transport_key, alg).value
    open_issuer_channel(session, alg, transport)
    for fs in profile.files:
        _select(session, profile, fs.parent)
        session.send(iso.create_file(_fcp(fs)), context={"step": "create", "file": fs.path})
    for spec in profile.keys:
        if spec.df == "MF" and spec.ref == 0:
            continue  # the transport key is rotated last
        _select(session, profile, spec.df)
        value = card_key(keystore, profile, spec.name, serial, fields, prepared)
        session.send(put_key(1, spec.ref, alg, 2 if spec.usage == "sm" else 1, spec.max_tries, value),
                     context={"step": "load key", "key": spec.name})
    for pin in profile.pins:
        _select(session, profile, pin.df)
        session.send(put_key(3 if pin.kind == "puk" else 2, pin.ref & 0x1F, None, 0, pin.max_tries,
                             prepared.pins[pin.name]), context={"step": "load PIN", "pin": pin.name})
    for path, recs in records.items():
        _select(session, profile, path)
        for number in sorted(recs):
            session.send(iso.append_record(recs[number]), context={"step": "write", "file": path,
                                                                   "record": str(number)})
    for path, data in binaries.items():
        _select(session, profile, path)
        for off in range(0, len(data), 240):
            session.send(iso.update_binary(data[off:off + 240], off), context={"step": "write", "file": path})
    if profile.rotate_transport_key:
        issuer = card_key(keystore, profile, "issuer", serial, fields)
        _select(session, profile, "MF")
        session.send(put_key(1, 0, alg, 2, 10, issuer), context={"step": "rotate transport key"})
        open_issuer_channel(session, alg, issuer)  # proves the new key before the card counts as done
    result = CardResult(serial.hex().upper(), session.atr.hex().upper(), pins=dict(prepared.pins))
    result.manifest["personalize_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return result


def verify(session: CardSession, profile: Profile, prepared: PreparedRecord, keystore: Keystore,
           result: CardResult | None = None) -> dict[str, Any]:
    """Read every written file back through its access rules and compare; return the manifest."""
    if profile.channel in ("scp03", "scp02"):
        from cardkit.issuance.hooks import channel_handler

        return channel_handler(profile.channel).verify(session, profile, prepared, keystore, result)  # type: ignore[no-any-return]
    t0 = time.perf_counter()
    alg = alg_of(profile.algorithm)
    serial = chip_serial(session.atr)
    records, binaries = expected_content(profile, prepared, keystore, serial)
    key_name = "issuer" if profile.rotate_transport_key else profile.transport_key
    mf_key = (card_key(keystore, profile, "issuer", serial, prepared.card_fields) if profile.rotate_transport_key
              else keystore.key(key_name, alg).value)
    open_issuer_channel(session, alg, mf_key)
    files: dict[str, str] = {}
    authenticated: set[int] = set()
    for fs in profile.files:
        if fs.path not in records and fs.path not in binaries:
            continue
        _select(session, profile, fs.path)
        read_rule = fs.rules.get("read", "never")
        for spec in profile.keys:
            if spec.usage == "external-auth" and f"key:{spec.ref:02X}" in read_rule.upper().replace("KEY:", "key:") \
                    and spec.ref not in authenticated:
                external_authenticate(session.transmit, alg, card_key(keystore, profile, spec.name, serial,
                                                                       prepared.card_fields, prepared),
                                      spec.ref | (0x80 if spec.df != "MF" else 0))  # ISO 7816-4 §7.5.1 b8
                authenticated.add(spec.ref)
        digest = hashlib.sha256()
        if fs.path in records:
            for i, number in enumerate(sorted(records[fs.path]), start=1):
                got = session.send(iso.read_record(i), context={"step": "verify", "file": fs.path}).data
                want = records[fs.path][number]
                if got[: len(want)] != want or any(got[len(want):]):
                    raise VerificationError(f"file {fs.path} record {number}: read-back differs from what was "
                                            "written")
                digest.update(want)
        else:
            want = binaries[fs.path]
            got = session.send(iso.read_binary(0, len(want)), context={"step": "verify", "file": fs.path}).data
            if got != want:
                raise VerificationError(f"file {fs.path}: read-back differs from what was written")
            digest.update(want)
        files[fs.path] = digest.hexdigest()
    manifest = dict(result.manifest) if result else {}
    manifest.update({
        "profile": profile.name, "algorithm": profile.algorithm, "chip_serial": serial.hex().upper(),
        "atr": session.atr.hex().upper(), "files": files,
        "verify_ms": round((time.perf_counter() - t0) * 1000, 1),
    })
    return manifest
