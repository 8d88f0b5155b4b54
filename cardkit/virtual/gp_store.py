"""STORE DATA to the virtual ISD and to its applications, and GET DATA on applications.

STORE DATA (GPCS 2.3.1 §11.11; P1 coding GPCS 2.3 Table 11-89, EMV CPS v1.1 §4.3.4):

* P1 b8 last block; b7-b6 encryption (00 none, 11 "encrypted": every DGI of the command has its data
  encrypted; 01 application-dependent and 10 are refused, 6A86); b5-b4 structure (01 DGI, 10 BER-TLV; 00 and 11
  refused by the application model, 6A86); b3-b2 must be 0; b1 "response expected" (nothing is returned).
  P2 is the block number: 00 for the first command of a sequence, then +1 (else 6A86). The last block ends the
  sequence: block numbering restarts at 00 and the INSTALL [for personalization] target is forgotten.
* Target: after INSTALL [for personalization] the application; otherwise the ISD itself, which takes BER-TLV
  ``42`` (IIN) and ``45`` (CIN) only. An application selected directly (EMV CPS style) with its own secure
  channel takes STORE DATA too.
* DGIs (EMV CPS: 2-byte DGI ‖ length 1 byte or FF + 2 bytes ‖ data) may span commands when not encrypted; an
  encrypted command holds whole DGIs. Encrypted DGI data is ISO/IEC 9797-1 method 2 padded, then encrypted with
  the SCP02 session DEK (3DES-ECB) or the SCP03 static K-DEK (AES-CBC, zero ICV) — the keys PUT KEY uses.
  Wrong padding / length → 6A80. Each command is stored atomically.

GET DATA on an application (cardkit's application model; P1-P2 = the DGI number or the BER-TLV tag):

* a DGI stored in clear: its data; a BER-TLV object: tag ‖ length ‖ value — readable by anyone (public data,
  like EMV records);
* a DGI stored encrypted (keys, PINs): never in clear. Under an authenticated secure channel the application
  answers :func:`sensitive_digest` (HMAC-SHA-256 keyed with the static K-DEK of the session's key set over
  DGI ‖ data), so a host holding the keys can check it; without a session 6982.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg, unpad_m2
from cardkit.errors import PaddingError, TlvError
from cardkit.sm.putkey import PutKeyError, decrypt_with_dek
from cardkit.tlv import ber_decode, ber_encode
from cardkit.virtual.card import VirtualCard
from cardkit.virtual.fs import SwError
from cardkit.virtual.gp import IssuerSecurityDomain
from cardkit.virtual.gp_registry import APP_PERSONALIZED, APP_SELECTABLE, CARD_LOCKED, AppInstance

__all__ = ["HANDLERS", "app_get_data", "parse_dgis_partial", "sensitive_digest", "store_data"]

log = logging.getLogger(__name__)

# GPCS 2.3 Table 11-89: STORE DATA P1 bits.
_LAST = 0x80
_ENC_MASK, _ENC_APP, _ENC_RFU, _ENC_ALL = 0x60, 0x20, 0x40, 0x60
_STRUCT_MASK, _STRUCT_DGI, _STRUCT_TLV = 0x18, 0x08, 0x10
_RFU_BITS = 0x06
# EMV CPS v1.1: a DGI length of FF announces a 2-byte length.
_DGI_LONG = 0xFF
_ISD_TAGS = {0x42: "IIN", 0x45: "CIN"}


def sensitive_digest(dek: bytes, ident: int, value: bytes) -> bytes:
    """cardkit's read-back proof of a sensitive DGI: HMAC-SHA-256(K-DEK, DGI (2 bytes) ‖ data)."""
    return hmac.new(dek, ident.to_bytes(2, "big") + value, hashlib.sha256).digest()


def parse_dgis_partial(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Whole DGIs at the start of ``data`` and the bytes of an incomplete last one."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if pos + 3 > len(data):
            break
        n, head = data[pos + 2], 3
        if n == _DGI_LONG:
            if pos + 5 > len(data):
                break
            n, head = int.from_bytes(data[pos + 3:pos + 5], "big"), 5
        if pos + head + n > len(data):
            break
        out.append((int.from_bytes(data[pos:pos + 2], "big"), data[pos + head:pos + head + n]))
        pos += head + n
    return out, data[pos:]


def _decrypt(key: bytes, alg: Alg, ident: int, value: bytes) -> bytes:
    block = 16 if alg is Alg.AES else 8
    try:
        return unpad_m2(decrypt_with_dek(key, value, alg), block)
    except (PutKeyError, PaddingError):
        raise SwError(0x6A80, f"DGI {ident:04X}: encrypted data does not decrypt to padded data") from None


def _store_isd(isd: IssuerSecurityDomain, card: VirtualCard, data: bytes, enc: int, struct: int) -> None:
    if struct != _STRUCT_TLV or enc:
        raise SwError(0x6A80, "the ISD takes BER-TLV data objects (42 IIN, 45 CIN), not encrypted")
    try:
        objs = ber_decode(data)
    except TlvError:
        raise SwError(0x6A80, "STORE DATA to the ISD: not BER-TLV") from None
    updates: dict[int, bytes] = {}
    for obj in objs:
        if obj.tag not in _ISD_TAGS:
            raise SwError(0x6A88, f"the ISD stores no data object {obj.tag:X} (42 IIN, 45 CIN)")
        if not 1 <= len(obj.value) <= 16:
            raise SwError(0x6A80, f"{_ISD_TAGS[obj.tag]} must be 1..16 bytes")
        updates[obj.tag] = obj.value

    def apply() -> None:
        for tag, value in updates.items():
            setattr(isd, _ISD_TAGS[tag].lower(), value)

    card.eeprom.commit(apply, len(data))


def store_data(isd: IssuerSecurityDomain, card: VirtualCard, apdu: CommandApdu,
               target: AppInstance | None) -> ResponseApdu:
    """STORE DATA to ``target`` (an application) or, with None, to the ISD. See the module docstring."""
    session = isd.session(card, "STORE DATA")
    if isd.life_cycle == CARD_LOCKED:
        raise SwError(0x6985, "STORE DATA is refused while the card is CARD_LOCKED")
    st = isd.state(card)
    p1 = apdu.p1
    last, enc, struct = bool(p1 & _LAST), p1 & _ENC_MASK, p1 & _STRUCT_MASK
    if p1 & _RFU_BITS:
        raise SwError(0x6A86, f"STORE DATA P1 {p1:02X}: b3-b2 are RFU")
    if apdu.p2 != st.next_block:
        raise SwError(0x6A86, f"STORE DATA block {apdu.p2:02X}, expected {st.next_block:02X}")
    if not apdu.data:
        raise SwError(0x6700, "STORE DATA without data")
    if target is None:
        _store_isd(isd, card, apdu.data, enc, struct)
    else:
        if enc in (_ENC_APP, _ENC_RFU):
            raise SwError(0x6A86, "STORE DATA: only 'no encryption' and 'encrypted' (P1 b7-b6 11) are supported")
        if struct not in (_STRUCT_DGI, _STRUCT_TLV):
            raise SwError(0x6A86, "STORE DATA to an application needs the DGI or BER-TLV structure")
        items: list[tuple[int, bytes, bool, bool]] = []  # (id, value, sensitive, tlv)
        rest = b""
        if struct == _STRUCT_TLV:
            if enc or st.buffer:
                raise SwError(0x6A86, "encrypted or split BER-TLV STORE DATA is not supported")
            try:
                objs = ber_decode(apdu.data)
            except TlvError:
                raise SwError(0x6A80, "STORE DATA: not BER-TLV") from None
            for obj in objs:
                if obj.tag > 0xFFFF:
                    raise SwError(0x6A80, f"tag {obj.tag:X}: the application stores tags of up to two bytes")
                items.append((obj.tag, obj.value, False, True))
        else:
            if enc and st.buffer:
                raise SwError(0x6A80, "an encrypted STORE DATA must start with a whole DGI")
            dgis, rest = parse_dgis_partial(bytes(st.buffer) + apdu.data)
            if enc and rest:
                raise SwError(0x6A80, "an encrypted STORE DATA must hold whole DGIs")
            if enc:
                key, alg = session.sensitive_key()
                dgis = [(ident, _decrypt(key, alg, ident, value)) for ident, value in dgis]
            items = [(ident, value, bool(enc), False) for ident, value in dgis]
        if last and rest:
            raise SwError(0x6A80, "the last STORE DATA block ends inside a DGI")
        grow = sum(len(v) + 4 for _, v, _, _ in items) - sum(len(target.data.get(i, b"")) + 4 for i, _, _, _ in items
                                                              if i in target.data)
        if target.memory() + grow > isd.app_memory:
            raise SwError(0x6A84, f"the application holds at most {isd.app_memory} bytes of data")
        app = target

        def apply() -> None:
            for ident, value, sensitive, tlv in items:
                app.data[ident] = value
                (app.sensitive.add if sensitive else app.sensitive.discard)(ident)
                (app.tlv.add if tlv else app.tlv.discard)(ident)
            st.buffer = bytearray(rest)
            if last and app.life_cycle == APP_SELECTABLE:
                app.life_cycle = APP_PERSONALIZED

        card.eeprom.commit(apply, len(apdu.data))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("STORE DATA block %02X: %d object(s)%s", apdu.p2, len(items), " (encrypted)" if enc else "")
    if last:
        st.next_block, st.buffer, st.perso = 0, bytearray(), None
    else:
        st.next_block += 1
    return ResponseApdu.of(0x9000)


def _store_isd_cmd(isd: IssuerSecurityDomain, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu:
    return store_data(isd, card, apdu, isd.state(card).perso)


def app_get_data(isd: IssuerSecurityDomain, card: VirtualCard, app: AppInstance,
                 apdu: CommandApdu) -> ResponseApdu | None:
    """GET DATA on an application: P1-P2 = DGI or tag (see the module docstring)."""
    if apdu.data:
        raise SwError(0x6A80, "GET DATA takes no command data")
    ident = (apdu.p1 << 8) | apdu.p2
    value = app.data.get(ident)
    if value is None:
        if apdu.cla & 0x80:
            raise SwError(0x6A88, f"the application holds no DGI or tag {ident:04X}")
        return None  # the ISO OS's data objects
    if ident in app.sensitive:
        session = isd.session(card, f"reading back sensitive DGI {ident:04X}")
        return ResponseApdu.of(0x9000, sensitive_digest(session.entry.keys.dek, ident, value))
    if ident in app.tlv:
        return ResponseApdu.of(0x9000, ber_encode(ident, value))
    return ResponseApdu.of(0x9000, value)


HANDLERS = {0xE2: _store_isd_cmd}
