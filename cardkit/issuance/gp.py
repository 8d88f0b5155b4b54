"""GlobalPlatform personalization: the ``scp03`` / ``scp02`` channel handlers of the issuance engine, and the
host-side GP verbs they (and ``cardkit gp``) use.

**Key sets in a keystore.** A GP key set named ``NAME`` is either three keys ``NAME-enc``, ``NAME-mac`` and
``NAME-dek``, or one key ``NAME`` used as ENC, MAC and DEK (the way GP test keys are distributed) — AES for
SCP03, 3DES for SCP02 (:func:`gp_keyset`). The key version number comes from the profile, not the keystore.

**Personalization** (:class:`GpChannelHandler`, profile ``[personalization] channel = "scp03" | "scp02"``):
SELECT the ISD → read CPLC (the chip serial is its IC serial number) → open the secure channel at the profile's
level with the transport key set (``transport_key``, version ``options.transport_key_version``, 00 = the
card's default) → optionally STORE DATA IIN/CIN to the ISD → optionally INSTALL [for install and make
selectable] the application (``options.install``) → INSTALL [for personalization] → STORE DATA of every DGI
(clear DGIs first with P1 08, then the sensitive ones encrypted under the DEK with P1 68, EMV CPS style; the
last block has b8 set) → optionally PUT KEY replacing the transport key set with the issuer key set (master
``rotate_transport_key`` from the keystore, diversified with the card's KDD by ``options.diversification``,
version ``options.issuer_key_version``, algorithm ``options.issuer_algorithm`` — an AES issuer set on an SCP02
card migrates it to SCP03) and proving it with a fresh channel → SET STATUS to ``options.final_state``
(default SECURED, through INITIALIZED).

**DGIs from a profile.** A transparent file of the profile is DGI = its FID, holding the encoded field; a
record file's record *n* is DGI = SFI ‖ *n* (EMV CPS record DGIs) holding the SIMPLE-TLV record. Keys of the
profile (``[[keys]]``, diversified like the ISO engine does) are sensitive DGIs ``81`` ‖ ref, PINs sensitive
DGIs ``82`` ‖ ref holding max tries (1 byte) ‖ the PIN digits (ASCII); ``options.dgis`` can rename them
(``{ NAME = "8010" }``).

**Verification** reads back through the card: GET STATUS of the ISD (card life cycle) and of the application
(life cycle, personalized), GET DATA E0 (the expected key version), then SELECT the application, a secure
channel through it, and GET DATA of every DGI — clear DGIs compared byte for byte, sensitive DGIs through the
application's keyed digest (:func:`cardkit.virtual.gp_store.sensitive_digest`). The manifest lists SHA-256
digests of the clear DGIs only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cardkit.apdu import CommandApdu
from cardkit.commands import gp
from cardkit.commands.gpdata import CardData, Cplc, GetStatusEntry, KeyInfo, RegistryKind, parse_get_status
from cardkit.crypto import Alg, pad_m2
from cardkit.errors import CardkitError, CryptoError, KeystoreError, ProfileError, SecureChannelError
from cardkit.issuance.engine import CardResult, VerificationError, card_key
from cardkit.issuance.hooks import register_channel
from cardkit.issuance.prepare import PreparedRecord
from cardkit.keys.store import Keystore, alg_of
from cardkit.profiles.model import Profile
from cardkit.session import CardSession
from cardkit.sm.gp import Diversification, GpKeySet, diversify
from cardkit.sm.putkey import check_put_key_response, encrypt_with_dek, put_key_apdu, put_key_data
from cardkit.sm.scp02 import Scp02Channel, Scp02Host
from cardkit.sm.scp03 import Scp03Channel, Scp03Host
from cardkit.sw import check
from cardkit.tlv import ber_encode

__all__ = ["GpChannel", "GpChannelHandler", "GpOptions", "auto_level", "card_state_path", "get_status_all",
           "gp_keyset", "open_gp_channel", "probe_kdd", "profile_dgis", "put_key_set", "read_card_data",
           "set_card_state", "store_dgis"]

log = logging.getLogger(__name__)

GpChannel = Scp02Channel | Scp03Channel
# GPCS 2.3.1 §5.1.1: the card life cycle walked forward by SET STATUS.
_FORWARD = (0x01, 0x07, 0x0F)
_STATE_NAMES = {"op-ready": 0x01, "initialized": 0x07, "secured": 0x0F}
# GPCS 2.3 Table 11-89: STORE DATA structure/encryption bits.
_P1_DGI, _P1_TLV, _P1_ENC, _P1_LAST = 0x08, 0x10, 0x60, 0x80
_SW_MORE = 0x6310  # GPCS 2.3.1 §11.4.3.2
_DEFAULT_I = {3: 0x70, 2: 0x55}
_APP_PERSONALIZED = 0x0F


# ------------------------------------------------------------------------------------------------ keys


def gp_keyset(keystore: Keystore, name: str, alg: Alg, version: int = 0) -> GpKeySet:
    """The GP key set ``name`` (``NAME-enc``/``-mac``/``-dek``, or one key ``NAME``) with key version ``version``."""
    parts: dict[str, bytes] = {}
    for part in ("enc", "mac", "dek"):
        try:
            parts[part] = keystore.key(f"{name}-{part}", alg).value
        except KeystoreError:
            continue
    try:
        if len(parts) == 3:
            return GpKeySet(parts["enc"], parts["mac"], parts["dek"], version, alg=alg)
        if parts:
            missing = ", ".join(f"{name}-{p}" for p in ("enc", "mac", "dek") if p not in parts)
            raise KeystoreError(f"GP key set {name!r} ({alg.value}) is incomplete: {missing} missing")
        return GpKeySet.single(keystore.key(name, alg).value, alg=alg, version=version)
    except CryptoError as exc:
        raise KeystoreError(f"GP key set {name!r}: {exc}") from None


# ------------------------------------------------------------------------------------ card access


def _drop_channels(session: CardSession) -> None:
    for proc in session.processors:
        session.remove(proc)


def _get_data(session: CardSession, tag: int) -> bytes | None:
    resp = session.transmit(gp.get_data_gp(tag))
    return resp.data if resp.sw == 0x9000 else None


def read_card_data(session: CardSession) -> CardData | None:
    """Card recognition data (GET DATA 66), or None when the card has none."""
    raw = _get_data(session, gp.TAG_CARD_DATA)
    return CardData.parse(raw) if raw else None


def read_cplc(session: CardSession) -> Cplc:
    raw = _get_data(session, gp.TAG_CPLC)
    if raw is None:
        raise CardkitError("the card answers no CPLC (GET DATA 9F7F): cannot learn the chip serial")
    return Cplc.parse(raw)


def auto_level(scp: int, i: int) -> int:
    """The strongest security level the i parameter offers: 33/13/03 (SCP03), 13/03 (SCP02)."""
    if scp == 3:
        return 0x33 if i & 0x60 == 0x60 else 0x13 if i & 0x20 else 0x03
    return 0x13 if i & 0x20 else 0x03


def _i_for(card_data: CardData | None, scp: int) -> int | None:
    if card_data is not None:
        for n, i in card_data.scp:
            if n == scp:
                return i
    return None


def open_gp_channel(session: CardSession, keys: GpKeySet, *, level: int | None = None, key_version: int = 0,
                    i: int | None = None, isd_aid: bytes = gp.DEFAULT_ISD_AID,
                    card_data: CardData | None = None) -> GpChannel:
    """Open SCP03 (AES key set) or SCP02 (3DES key set) with the selected ISD or application and push it on the
    session. ``i`` defaults to what the card data (GET DATA 66) announces, else 70 / 55; ``level`` to the
    strongest that i offers. Raises :class:`~cardkit.errors.AuthenticationError` on wrong keys (with nothing
    sent after INITIALIZE UPDATE when the card cryptogram does not verify)."""
    scp = 3 if keys.alg is Alg.AES else 2
    if i is None:
        i = _i_for(card_data, scp)
    if i is None:
        i = _DEFAULT_I[scp]
    lvl = auto_level(scp, i) if level is None else level
    channel: GpChannel
    if scp == 3:
        channel = Scp03Host.open(session.transmit, keys, level=lvl, key_version=key_version, isd_aid=isd_aid,
                                 s16=bool(i & 0x01))
    else:
        channel = Scp02Host.open(session.transmit, keys, level=lvl, key_version=key_version, i=i)
    session.push(channel)
    return channel


def probe_kdd(session: CardSession, key_version: int = 0) -> bytes:
    """The key diversification data of a key set: one INITIALIZE UPDATE that is not followed up (the card counts
    it as an attempt; the next successful authentication gives the try back)."""
    cmd = gp.initialize_update(b"\x00" * 8, key_version)
    resp = session.transmit(cmd)
    if resp.sw == 0x6700:  # SCP03 in S16 mode wants a 16-byte host challenge
        cmd = gp.initialize_update(b"\x00" * 16, key_version)
        resp = session.transmit(cmd)
    data = check(resp, cmd).data
    if len(data) < 10:
        raise SecureChannelError(f"INITIALIZE UPDATE answered {len(data)} bytes: no key diversification data")
    return data[:10]


def get_status_all(session: CardSession, subset: RegistryKind) -> list[GetStatusEntry]:
    """Every registry entry of ``subset`` (E3 format), following 6310 pages; [] when nothing matches (6A88)."""
    out: list[GetStatusEntry] = []
    nxt = False
    for _ in range(256):
        cmd = gp.get_status(subset, next=nxt)
        resp = session.transmit(cmd)
        if resp.sw == 0x6A88 and not nxt:
            return []
        if resp.sw not in (0x9000, _SW_MORE):
            check(resp, cmd)
        out += parse_get_status(resp.data, subset)
        if resp.sw == 0x9000:
            return out
        nxt = True
    raise CardkitError("GET STATUS still announced more data after 256 pages")


def put_key_set(session: CardSession, channel: GpChannel, new_keys: GpKeySet, *, replace_version: int = 0) -> None:
    """PUT KEY of a whole key set (added, or replacing ``replace_version``), keys encrypted under the channel's
    DEK; the card's KCVs are checked. The new set is *not* proven here: open a channel with it."""
    dek_alg = Alg.AES if isinstance(channel, Scp03Channel) else Alg.DES3
    data = put_key_data(new_keys, new_keys.version, channel.dek, dek_alg)
    resp = session.send(put_key_apdu(replace_version, data), context={"step": "put key",
                                                                      "key set": f"{new_keys.version:02X}"})
    check_put_key_response(resp.data, new_keys.kcvs(), expected_version=new_keys.version)


def card_state_path(current: int, target: int) -> list[int]:
    """The SET STATUS steps from ``current`` to ``target`` (forward only: OP_READY → INITIALIZED → SECURED)."""
    if current == target:
        return []
    if current not in _FORWARD or target not in _FORWARD or _FORWARD.index(target) < _FORWARD.index(current):
        raise CardkitError(f"the card life cycle cannot go from {current:02X} to {target:02X} step by step")
    return list(_FORWARD[_FORWARD.index(current) + 1:_FORWARD.index(target) + 1])


def set_card_state(session: CardSession, target: int) -> int:
    """Bring the card life cycle to ``target``: forward through INITIALIZED when needed, anything else (lock,
    unlock, terminate) in one SET STATUS that the card accepts or refuses. Returns the state found before."""
    entries = get_status_all(session, "isd")
    if not entries:
        raise CardkitError("GET STATUS answered no ISD entry: the card life cycle is unknown")
    current = entries[0].life_cycle
    try:
        steps = card_state_path(current, target)
    except CardkitError:
        steps = [target]  # not a forward walk (lock, unlock, terminate, or refused): the card decides
    for state in steps:
        session.send(gp.set_status("isd", state), context={"step": "set status", "state": f"{state:02X}"})
    return current


def store_dgis(session: CardSession, channel: GpChannel, dgis: list[tuple[int, bytes, bool]], *,
               block: int = 200, first_block: int = 0) -> int:
    """STORE DATA of ``(dgi, data, sensitive)`` items: clear DGIs first (P1 08, the stream cut in ``block``-byte
    pieces), then sensitive ones (P1 68, whole DGIs, data method-2 padded and encrypted under the channel's DEK);
    the last command has b8. Returns the number of commands."""
    clear = b"".join(gp.dgi(t, v) for t, v, s in dgis if not s)
    pieces: list[tuple[int, bytes]] = [(_P1_DGI, clear[i:i + block]) for i in range(0, len(clear), block)]
    secret = [(t, v) for t, v, s in dgis if s]
    if secret:
        dek_alg = Alg.AES if isinstance(channel, Scp03Channel) else Alg.DES3
        bs = 16 if dek_alg is Alg.AES else 8
        chunk = b""
        for t, v in secret:
            enc = gp.dgi(t, encrypt_with_dek(channel.dek, pad_m2(v, bs), dek_alg))
            if chunk and len(chunk) + len(enc) > block:
                pieces.append((_P1_DGI | _P1_ENC, chunk))
                chunk = b""
            chunk += enc
        pieces.append((_P1_DGI | _P1_ENC, chunk))
    if not pieces:
        raise CardkitError("nothing to STORE DATA: the record gives no DGI")
    if len(pieces) + first_block > 256:
        raise CardkitError(f"{len(pieces)} STORE DATA blocks exceed the 256 block numbers of one sequence")
    for n, (p1, data) in enumerate(pieces):
        last = n == len(pieces) - 1
        cmd = CommandApdu(gp.CLA_GP, 0xE2, p1 | (_P1_LAST if last else 0), first_block + n, data,
                          name="STORE DATA", sensitive=True)
        session.send(cmd, context={"step": "store data", "block": f"{first_block + n:02X}"})
    return len(pieces)


# --------------------------------------------------------------------------------------- profile options


@dataclass(frozen=True)
class GpOptions:
    """``[personalization] options`` of a GP profile (see the module docstring and applets/gp-store-data)."""

    application_aid: bytes
    isd_aid: bytes = gp.DEFAULT_ISD_AID
    level: int | None = None
    i: int | None = None
    transport_key_version: int = 0
    issuer_key_version: int = 0
    issuer_algorithm: str | None = None
    diversification: Diversification = Diversification.NONE
    final_state: int = 0x0F
    install: tuple[bytes, bytes, bytes] | None = None  # load file, module, privileges
    iin: bytes | None = None
    cin_serial: bool = False
    dgis: Mapping[str, int] = field(default_factory=dict)
    block: int = 200

    @classmethod
    def of(cls, profile: Profile) -> GpOptions:
        o = dict(profile.options)

        def err(key: str, message: str) -> ProfileError:
            return ProfileError(message, file=profile.source or None, key=f"personalization.options.{key}")

        def hexopt(key: str, lo: int, hi: int, default: bytes | None = None) -> bytes | None:
            v = o.pop(key, None)
            if v is None:
                return default
            try:
                raw = bytes.fromhex(v) if isinstance(v, str) else b""
            except ValueError:
                raw = b""
            if not lo <= len(raw) <= hi:
                raise err(key, f"must be {lo}..{hi} bytes of hex, got {v!r}")
            return raw

        def intopt(key: str, lo: int, hi: int, default: int | None) -> int | None:
            v = o.pop(key, default)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi):
                raise err(key, f"must be an integer {lo:#04x}..{hi:#04x}, got {v!r}")
            return v

        aid = hexopt("application_aid", 5, 16)
        if aid is None:
            raise err("application_aid", "the AID of the application to personalize is required")
        isd_aid = hexopt("isd_aid", 5, 16, gp.DEFAULT_ISD_AID)
        level, i = intopt("level", 0, 0x33, None), intopt("i", 0, 0x7F, None)
        tkv, ikv = intopt("transport_key_version", 0, 0x7F, 0), intopt("issuer_key_version", 1, 0x7F, None)
        if profile.rotate_transport_key and ikv is None:
            raise err("issuer_key_version", "rotate_transport_key needs the issuer key set's version (01..7F)")
        issuer_alg = o.pop("issuer_algorithm", None)
        if issuer_alg is not None and issuer_alg not in ("aes", "3des"):
            raise err("issuer_algorithm", f"must be 'aes' or '3des', got {issuer_alg!r}")
        div_name = o.pop("diversification", "none")
        try:
            div = Diversification(div_name)
        except ValueError:
            raise err("diversification", f"must be one of {', '.join(d.value for d in Diversification)}, got "
                                         f"{div_name!r}") from None
        final = o.pop("final_state", "secured")
        if final not in _STATE_NAMES:
            raise err("final_state", f"must be one of {', '.join(_STATE_NAMES)}, got {final!r}")
        install = o.pop("install", None)
        inst: tuple[bytes, bytes, bytes] | None = None
        if install is not None:
            if not isinstance(install, dict) or set(install) - {"load_file", "module", "privileges"}:
                raise err("install", "must be a table with load_file, module and optional privileges (hex)")
            try:
                inst = (bytes.fromhex(install["load_file"]), bytes.fromhex(install["module"]),
                        bytes.fromhex(install.get("privileges", "00")))
            except (KeyError, ValueError, TypeError):
                raise err("install", "load_file and module must be hex AIDs, privileges hex") from None
        cin = o.pop("cin", None)
        if cin not in (None, "serial"):
            raise err("cin", f"only 'serial' (the chip serial) is supported, got {cin!r}")
        raw_dgis = o.pop("dgis", {})
        names = {k.name for k in profile.keys} | {p.name for p in profile.pins}
        dgis: dict[str, int] = {}
        if not isinstance(raw_dgis, dict):
            raise err("dgis", "must be a table NAME = \"DGI hex\"")
        for name, v in raw_dgis.items():
            if name not in names:
                raise err("dgis", f"{name!r} is not a key or PIN of the profile")
            try:
                dgis[name] = int.from_bytes(bytes.fromhex(v), "big") if len(v) == 4 else -1
            except (ValueError, TypeError):
                dgis[name] = -1
            if dgis[name] < 0:
                raise err("dgis", f"{name}: a DGI is 2 bytes of hex, got {v!r}")
        block = intopt("block", 16, 239, 200)
        iin = hexopt("iin", 1, 16)
        if o:
            raise err(sorted(o)[0], "unknown option (known: application_aid, isd_aid, level, i, "
                                    "transport_key_version, issuer_key_version, issuer_algorithm, diversification, "
                                    "final_state, install, iin, cin, dgis, block)")
        return cls(aid, isd_aid or gp.DEFAULT_ISD_AID, level, i, tkv or 0, ikv or 0, issuer_alg, div,
                   _STATE_NAMES[final], inst, iin, cin == "serial", dgis, block or 200)


def profile_dgis(profile: Profile, prepared: PreparedRecord, keystore: Keystore, serial: bytes,
                 options: GpOptions) -> list[tuple[int, bytes, bool]]:
    """``(DGI, data, sensitive)`` for one record (see the module docstring for the mapping)."""
    out: dict[int, tuple[bytes, bool]] = {}
    for fs in profile.files:
        if fs.path in prepared.binaries:
            out[int.from_bytes(fs.fid, "big")] = (prepared.binaries[fs.path], False)
        for number, rec in prepared.records.get(fs.path, {}).items():
            if fs.sfi is None:
                raise ProfileError(f"record file {fs.path} needs an SFI: its records are DGIs SFI ‖ record number",
                                   file=profile.source or None)
            out[(fs.sfi << 8) | number] = (rec, False)
    for spec in profile.keys:
        value = card_key(keystore, profile, spec.name, serial, prepared.card_fields, prepared)
        out[options.dgis.get(spec.name, 0x8100 | spec.ref)] = (value, True)
    for pin in profile.pins:
        out[options.dgis.get(pin.name, 0x8200 | (pin.ref & 0xFF))] = (bytes((pin.max_tries,)) + prepared.pins[pin.name],
                                                                       True)
    return [(t, v, s) for t, (v, s) in sorted(out.items())]


# ------------------------------------------------------------------------------------------- handler


class GpChannelHandler:
    """The engine's channel handler for ``scp03`` / ``scp02`` profiles (registered on import)."""

    def __init__(self, scp: int) -> None:
        self.scp = scp

    def _check(self, profile: Profile) -> Alg:
        alg = alg_of(profile.algorithm)
        want = Alg.AES if self.scp == 3 else Alg.DES3
        if alg is not want:
            raise ProfileError(f"channel scp0{self.scp} needs algorithm {'aes' if self.scp == 3 else '3des'}, the "
                               f"profile uses {profile.algorithm}", file=profile.source or None)
        return alg

    def _issuer_keys(self, profile: Profile, keystore: Keystore, options: GpOptions, alg: Alg,
                     kdd: bytes) -> GpKeySet:
        issuer_alg = alg_of(options.issuer_algorithm) if options.issuer_algorithm else alg
        master = gp_keyset(keystore, str(profile.rotate_transport_key), issuer_alg, options.issuer_key_version)
        return diversify(master, options.diversification, kdd)

    def _select(self, session: CardSession, aid: bytes) -> None:
        _drop_channels(session)
        session.send(gp.select_isd(aid), context={"step": "select", "aid": aid.hex().upper()})

    def personalize(self, session: CardSession, profile: Profile, prepared: PreparedRecord,
                    keystore: Keystore) -> CardResult:
        t0 = time.perf_counter()
        alg = self._check(profile)
        options = GpOptions.of(profile)
        start = session.apdu_count
        self._select(session, options.isd_aid)
        serial = read_cplc(session).ic_serial_number
        card_data = read_card_data(session)
        dgis = profile_dgis(profile, prepared, keystore, serial, options)
        transport = gp_keyset(keystore, profile.transport_key, alg, options.transport_key_version)
        channel = open_gp_channel(session, transport, level=options.level, key_version=options.transport_key_version,
                                  i=options.i, isd_aid=options.isd_aid, card_data=card_data)
        kdd = channel.init_response.kdd
        isd_objects = (ber_encode(0x42, options.iin) if options.iin else b"") + \
            (ber_encode(0x45, serial) if options.cin_serial else b"")
        if isd_objects:
            session.send(gp.store_data(0, isd_objects, last=True, structure="ber-tlv"),
                         context={"step": "store data", "target": "ISD"})
        if options.install is not None:
            elf, module, privileges = options.install
            session.send(gp.install_for_install(elf, module, options.application_aid, privileges=privileges),
                         context={"step": "install", "aid": options.application_aid.hex().upper()})
        session.send(gp.install_for_personalization(options.application_aid),
                     context={"step": "install for personalization"})
        blocks = store_dgis(session, channel, dgis, block=options.block)
        key_version = channel.key_version
        if profile.rotate_transport_key:
            issuer = self._issuer_keys(profile, keystore, options, alg, kdd)
            put_key_set(session, channel, issuer, replace_version=channel.key_version)
            _drop_channels(session)
            session.send(gp.select_isd(options.isd_aid), context={"step": "select"})
            if issuer.alg is not transport.alg:  # DES → AES migration: the card now also announces SCP03
                card_data = read_card_data(session)
            channel = open_gp_channel(session, issuer, level=options.level, key_version=issuer.version,
                                      i=options.i, isd_aid=options.isd_aid, card_data=card_data)
            key_version = issuer.version  # proven by the fresh channel
        previous = set_card_state(session, options.final_state)
        result = CardResult(serial.hex().upper(), session.atr.hex().upper(), pins=dict(prepared.pins))
        result.apdus = session.apdu_count - start
        result.manifest.update({
            "personalize_ms": round((time.perf_counter() - t0) * 1000, 1), "kdd": kdd.hex().upper(),
            "key_version": f"{key_version:02X}", "store_data_blocks": blocks,
            "card_life_cycle_before": f"{previous:02X}",
        })
        log.info("GP personalization of chip %s: %d DGIs in %d STORE DATA blocks", result.serial, len(dgis), blocks)
        return result

    def verify(self, session: CardSession, profile: Profile, prepared: PreparedRecord, keystore: Keystore,
               result: CardResult | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        alg = self._check(profile)
        options = GpOptions.of(profile)
        self._select(session, options.isd_aid)
        serial = read_cplc(session).ic_serial_number
        card_data = read_card_data(session)
        if profile.rotate_transport_key:
            kdd_hex = (result.manifest.get("kdd") if result else None) or probe_kdd(session).hex()
            keys = self._issuer_keys(profile, keystore, options, alg, bytes.fromhex(str(kdd_hex)))
            version = keys.version
        else:
            keys = gp_keyset(keystore, profile.transport_key, alg, options.transport_key_version)
            version = options.transport_key_version
        channel = open_gp_channel(session, keys, level=options.level, key_version=version, i=options.i,
                                  isd_aid=options.isd_aid, card_data=card_data)
        isd = get_status_all(session, "isd")
        if not isd or isd[0].life_cycle != options.final_state:
            found = f"{isd[0].life_cycle:02X}" if isd else "none"
            raise VerificationError(f"card life cycle is {found}, expected {options.final_state:02X}")
        apps = {e.aid: e for e in get_status_all(session, "apps")}
        app = apps.get(options.application_aid)
        if app is None:
            raise VerificationError(f"application {options.application_aid.hex().upper()} is not in the registry")
        if app.life_cycle != _APP_PERSONALIZED:
            raise VerificationError(f"application life cycle is {app.life_cycle:02X}, expected "
                                    f"{_APP_PERSONALIZED:02X} (personalized)")
        info = _get_data(session, gp.TAG_KEY_INFO)
        versions = KeyInfo.parse(info).versions() if info else ()
        if channel.key_version not in versions:
            raise VerificationError(f"key information does not list key set {channel.key_version:02X}")
        _drop_channels(session)
        session.send(gp.select_isd(options.application_aid), context={"step": "select application"})
        app_channel = open_gp_channel(session, keys, level=options.level, key_version=version, i=options.i,
                                      isd_aid=options.isd_aid, card_data=card_data)
        files: dict[str, str] = {}
        sensitive: list[str] = []
        for dgi, want, secret in profile_dgis(profile, prepared, keystore, serial, options):
            cmd = CommandApdu(gp.CLA_GP, 0xCA, dgi >> 8, dgi & 0xFF, le=256, name="GET DATA (DGI)", sensitive=True)
            got = session.send(cmd, context={"step": "verify", "dgi": f"{dgi:04X}"}).data
            if secret:
                expected = hmac.new(keys.dek, dgi.to_bytes(2, "big") + want, hashlib.sha256).digest()
                if not hmac.compare_digest(got, expected):
                    raise VerificationError(f"sensitive DGI {dgi:04X}: the card's digest does not match what was "
                                            "written")
                sensitive.append(f"{dgi:04X}")
            else:
                if got != want:
                    raise VerificationError(f"DGI {dgi:04X}: read-back differs from what was written")
                files[f"DGI {dgi:04X}"] = hashlib.sha256(want).hexdigest()
        manifest = dict(result.manifest) if result else {}
        manifest.update({
            "profile": profile.name, "algorithm": profile.algorithm, "chip_serial": serial.hex().upper(),
            "atr": session.atr.hex().upper(), "files": files, "sensitive_dgis": sensitive,
            "application": options.application_aid.hex().upper(), "application_life_cycle": f"{app.life_cycle:02X}",
            "card_life_cycle": f"{isd[0].life_cycle:02X}", "scp": f"{3 if keys.alg is Alg.AES else 2:02X}",
            "level": f"{int(app_channel.level):02X}", "key_version": f"{channel.key_version:02X}",
            "verify_ms": round((time.perf_counter() - t0) * 1000, 1),
        })
        return manifest


register_channel("scp03", GpChannelHandler(3))
register_channel("scp02", GpChannelHandler(2))
