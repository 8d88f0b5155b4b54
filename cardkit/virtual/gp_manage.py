"""Card-management commands of the virtual ISD: GET STATUS, SET STATUS, PUT KEY, INSTALL, DELETE.

Every command here needs the authenticated secure channel of the channel (:meth:`IssuerSecurityDomain.session`,
6982 otherwise) and, except GET STATUS and SET STATUS, is refused in CARD_LOCKED (6985). Changes go through
``card.eeprom.commit`` so power-loss faults tear them like any other card write (each is atomic).

* GET STATUS (GPCS 2.3.1 §11.4): P1 80 ISD, 40 applications, 20 load files, 10 load files and modules; P2 b2
  tag-list (E3) or GP 2.1.1 format, b1 next occurrence. Search criterion ``4F`` (AID prefix; empty matches all).
  A response carries at most ``page_bytes`` of entries; more → 6310, continue with P2 b1 = 1.
* SET STATUS (GPCS 2.3.1 §11.10, card life cycle §5.1.1): P1 80 — OP_READY → INITIALIZED → SECURED,
  SECURED ⇄ CARD_LOCKED, any state → TERMINATED; nothing else (6985). P1 40 — application: P2 80 lock, 00
  unlock, 0xxxx111 an application-specific state.
* PUT KEY (GPCS 2.3.1 §11.8, Amendment D §7.2): P1 00 adds a key set, P1 = KVN replaces it (b8 = more
  commands: not supported, 6A86); P2 = first key id (01..03) with b8 = several keys. The keys are decrypted
  with the DEK of the session (:func:`cardkit.sm.putkey.decode_put_key_data`: KCVs checked, 9485 when wrong);
  the answer is the new KVN and the KCVs. A key set holds three keys of one algorithm: AES → SCP03, 3DES →
  SCP02, so an AES key set put under an SCP02 session migrates the card from DES to AES.
* INSTALL (GPCS 2.3.1 §11.5): [for install (and make selectable)] from a load file held by the card,
  [for make selectable], [for personalization] (sets the STORE DATA target; answer ``00``). [for load] is not
  supported (6A81): the virtual card runs no loaded code.
* DELETE (GPCS 2.3.1 §11.2): an application, or a load file (P2 80 also deletes its applications).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.errors import KeyError_, TlvError
from cardkit.sm.gp import GpKeySet
from cardkit.sm.putkey import PutKeyError, decode_put_key_data, put_key_response
from cardkit.tlv import ber_decode
from cardkit.virtual.card import VirtualCard
from cardkit.virtual.fs import SwError
from cardkit.virtual.gp import IssuerSecurityDomain
from cardkit.virtual.gp_registry import (
    APP_INSTALLED,
    APP_LOCKED,
    APP_SELECTABLE,
    CARD_INITIALIZED,
    CARD_LOCKED,
    CARD_OP_READY,
    CARD_SECURED,
    CARD_STATES,
    CARD_TERMINATED,
    AppInstance,
    KeySetEntry,
    app_entry,
    elf_entry,
    isd_entry,
    legacy_entry,
)

__all__ = ["CARD_TRANSITIONS", "HANDLERS"]

log = logging.getLogger(__name__)

#: GPCS 2.3.1 §5.1.1 (Figure 5-1): allowed card life-cycle transitions through SET STATUS.
CARD_TRANSITIONS: dict[int, frozenset[int]] = {
    CARD_OP_READY: frozenset({CARD_INITIALIZED, CARD_TERMINATED}),
    CARD_INITIALIZED: frozenset({CARD_SECURED, CARD_TERMINATED}),
    CARD_SECURED: frozenset({CARD_LOCKED, CARD_TERMINATED}),
    CARD_LOCKED: frozenset({CARD_SECURED, CARD_TERMINATED}),
}
# GPCS 2.3.1 §11.4.2: GET STATUS P1 subsets; P2 b2 tag list, b1 next occurrence.
_P1_ISD, _P1_APPS, _P1_ELF, _P1_ELF_MODULES = 0x80, 0x40, 0x20, 0x10
_SW_MORE = 0x6310  # GPCS 2.3.1 §11.4.3.2: more data available
# GPCS 2.3.1 §11.5.2.1: INSTALL P1 values.
_INSTALL_LOAD, _INSTALL_INSTALL, _INSTALL_SELECTABLE, _INSTALL_PERSO = 0x02, 0x04, 0x08, 0x20
_MAX_KVN = 0x7F  # GPCS 2.3.1 §11.1.8: key version numbers 01..7F


def _not_locked(isd: IssuerSecurityDomain, what: str) -> None:
    if isd.life_cycle == CARD_LOCKED:
        raise SwError(0x6985, f"{what} is refused while the card is CARD_LOCKED")


def _ok(data: bytes = b"") -> ResponseApdu:
    return ResponseApdu.of(0x9000, data)


# ------------------------------------------------------------------------------------------ GET STATUS


def _criteria(data: bytes) -> bytes:
    try:
        objs = ber_decode(data)
    except TlvError:
        raise SwError(0x6A80, "GET STATUS search criteria are not BER-TLV") from None
    if not objs or objs[0].tag != 0x4F:
        raise SwError(0x6A80, "GET STATUS search criteria must start with 4F (AID)")
    return objs[0].value


def _entries(isd: IssuerSecurityDomain, p1: int, prefix: bytes, tag_list: bool) -> list[bytes]:
    out: list[bytes] = []
    if p1 == _P1_ISD:
        if isd.aid.startswith(prefix):
            out.append(isd_entry(isd.aid, isd.life_cycle, isd.privileges) if tag_list
                       else legacy_entry(isd.aid, isd.life_cycle, isd.privileges))
    elif p1 == _P1_APPS:
        for app in isd.apps.values():
            if app.aid.startswith(prefix):
                out.append(app_entry(app, isd.aid) if tag_list
                           else legacy_entry(app.aid, app.life_cycle, app.privileges))
    else:
        modules = p1 == _P1_ELF_MODULES
        for elf in isd.load_files.values():
            if elf.aid.startswith(prefix):
                out.append(elf_entry(elf, isd.aid, modules=modules) if tag_list
                           else legacy_entry(elf.aid, elf.life_cycle, b"\x00", elf.modules if modules else None))
    return out


def get_status(isd: IssuerSecurityDomain, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu:
    isd.session(card, "GET STATUS")
    st = isd.state(card)
    p1, p2 = apdu.p1, apdu.p2
    if p1 not in (_P1_ISD, _P1_APPS, _P1_ELF, _P1_ELF_MODULES):
        raise SwError(0x6A86, f"GET STATUS P1 {p1:02X} (80 ISD, 40 applications, 20/10 load files)")
    if p2 & ~0x03:
        raise SwError(0x6A86, f"GET STATUS P2 {p2:02X}: only b2 (tag list) and b1 (next) are defined")
    prefix, tag_list = _criteria(apdu.data), bool(p2 & 0x02)
    start = 0
    if p2 & 0x01:
        if st.status is None or st.status[:3] != (p1, prefix, tag_list):
            raise SwError(0x6985, "GET STATUS 'next occurrence' without a matching previous GET STATUS")
        start = st.status[3]
    entries = _entries(isd, p1, prefix, tag_list)
    if not entries:
        raise SwError(0x6A88, "no registry entry matches the search criteria")
    page = bytearray()
    n = start
    while n < len(entries) and (not page or len(page) + len(entries[n]) <= isd.page_bytes):
        page += entries[n]
        n += 1
    if n < len(entries):
        st.status = (p1, prefix, tag_list, n)
        return ResponseApdu.of(_SW_MORE, bytes(page))
    st.status = None
    return _ok(bytes(page))


# ------------------------------------------------------------------------------------------ SET STATUS


def set_status(isd: IssuerSecurityDomain, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu:
    isd.session(card, "SET STATUS")
    if apdu.p1 == 0x80:
        if apdu.data and apdu.data != isd.aid:
            raise SwError(0x6A80, "SET STATUS for the ISD takes no AID or the ISD's own AID")
        new = apdu.p2
        if new not in CARD_STATES or new == CARD_OP_READY:
            raise SwError(0x6A80, f"{new:02X} is not a card life-cycle state SET STATUS can set")
        allowed = CARD_TRANSITIONS.get(isd.life_cycle, frozenset())
        if new not in allowed:
            raise SwError(0x6985, f"card life cycle {CARD_STATES[isd.life_cycle]} cannot go to {CARD_STATES[new]}")

        def move() -> None:
            isd.life_cycle = new

        card.eeprom.commit(move, 1)
        log.info("card life cycle -> %s", CARD_STATES[new])
        if new in (CARD_LOCKED, CARD_TERMINATED):
            isd.force_isd_everywhere(card)
        isd.sync(card)
        return _ok()
    if apdu.p1 == 0x40:
        _not_locked(isd, "SET STATUS of an application")
        app = isd.apps.get(apdu.data)
        if app is None:
            raise SwError(0x6A88, "no application with this AID")
        p2 = apdu.p2
        if p2 == APP_LOCKED:
            new = app.life_cycle | APP_LOCKED
        elif p2 == 0x00:
            if not app.life_cycle & APP_LOCKED:
                raise SwError(0x6985, "the application is not locked")
            new = app.life_cycle & ~APP_LOCKED
        elif p2 & 0x87 == 0x07 and app.selectable:
            new = p2
        else:
            raise SwError(0x6A80, f"application state {p2:02X} cannot be set (80 lock, 00 unlock, 0xxxx111)")

        def move_app() -> None:
            app.life_cycle = new

        card.eeprom.commit(move_app, 1)
        isd.sync(card)
        for ch in card.channels.values():
            if ch.app is app and not app.selectable:
                ch.app, ch.app_aid = None, None
        return _ok()
    raise SwError(0x6A86, f"SET STATUS P1 {apdu.p1:02X} (80 card, 40 application) not supported")


# ---------------------------------------------------------------------------------------------- PUT KEY


def put_key(isd: IssuerSecurityDomain, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu:
    session = isd.session(card, "PUT KEY")
    _not_locked(isd, "PUT KEY")
    if apdu.p1 & 0x80:
        raise SwError(0x6A86, "PUT KEY split over several commands (P1 b8) is not supported")
    old, first = apdu.p1 & 0x7F, apdu.p2 & 0x7F
    if not 1 <= first <= 3:
        raise SwError(0x6A86, f"PUT KEY key identifier {first:02X}: key sets hold keys 01 (ENC), 02 (MAC), 03 (DEK)")
    dek, dek_alg = session.sensitive_key()
    try:
        decoded = decode_put_key_data(apdu.data, dek, dek_alg=dek_alg)
    except PutKeyError as exc:
        log.info("PUT KEY refused: %s", exc)
        raise SwError(exc.sw, str(exc)) from None
    version, algs = decoded.version, set(decoded.algs)
    if not 1 <= version <= _MAX_KVN:
        raise SwError(0x6A80, f"new key version {version:02X} outside 01..7F")
    if len(algs) != 1 or first + len(decoded.keys) - 1 > 3:
        raise SwError(0x6A80, "a key set holds up to three keys of one algorithm")
    (alg,) = algs
    existing = isd.key_sets.get(old) if old else None
    if old and existing is None:
        raise SwError(0x6A88, f"key set {old:02X} to replace not found")
    if version in isd.key_sets and version != old:
        raise SwError(0x6A80, f"key set {version:02X} already exists")
    if existing is not None and (first, len(decoded.keys)) != (1, 3):
        if version != old or existing.keys.alg is not alg:
            raise SwError(0x6A80, "replacing some keys of a set keeps its version and algorithm")
        values = [existing.keys.enc, existing.keys.mac, existing.keys.dek]
        values[first - 1:first - 1 + len(decoded.keys)] = decoded.keys
    elif (first, len(decoded.keys)) == (1, 3):
        values = list(decoded.keys)
    else:
        raise SwError(0x6A80, "a new key set needs its three keys (ENC, MAC, DEK)")
    if not old and len(isd.key_sets) >= isd.max_key_sets:
        raise SwError(0x6A84, f"the ISD holds at most {isd.max_key_sets} key sets")
    try:
        keys = GpKeySet(values[0], values[1], values[2], version, alg=alg)
    except KeyError_ as exc:  # the keys differ in length
        raise SwError(0x6A80, f"the keys do not form a key set: {exc}") from None
    entry = KeySetEntry(keys, isd.max_tries, isd.max_tries)

    def store() -> None:
        if old:
            del isd.key_sets[old]
        isd.key_sets[version] = entry

    card.eeprom.commit(store, len(apdu.data))
    log.info("PUT KEY: key set %02X (%s) %s", version, alg.value, f"replaces {old:02X}" if old else "added")
    return _ok(put_key_response(version, decoded.kcvs))


# ---------------------------------------------------------------------------------------- INSTALL, DELETE


def _lv_fields(data: bytes, n: int) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    for _ in range(n):
        if pos >= len(data) or pos + 1 + data[pos] > len(data):
            raise SwError(0x6A80, f"INSTALL data truncated in field {len(out) + 1}")
        out.append(data[pos + 1:pos + 1 + data[pos]])
        pos += 1 + data[pos]
    if pos != len(data):
        raise SwError(0x6A80, f"{len(data) - pos} unexpected bytes after the INSTALL fields")
    return out


def _aid(value: bytes, what: str) -> bytes:
    if not 5 <= len(value) <= 16:
        raise SwError(0x6A80, f"{what} must be 5..16 bytes, got {len(value)}")
    return value


def install(isd: IssuerSecurityDomain, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu:
    isd.session(card, "INSTALL")
    _not_locked(isd, "INSTALL")
    p1 = apdu.p1
    if p1 == _INSTALL_LOAD:
        raise SwError(0x6A81, "INSTALL [for load]: the virtual card does not load executable code")
    if p1 not in (_INSTALL_INSTALL, _INSTALL_INSTALL | _INSTALL_SELECTABLE, _INSTALL_SELECTABLE, _INSTALL_PERSO):
        raise SwError(0x6A86, f"INSTALL P1 {p1:02X} not supported (04, 0C, 08, 20)")
    if p1 == _INSTALL_PERSO:
        _, _, aid, _, _, _ = _lv_fields(apdu.data, 6)
        app = isd.apps.get(aid)
        if app is None:
            raise SwError(0x6A88, "INSTALL [for personalization]: no application with this AID")
        if app.life_cycle & APP_LOCKED:
            raise SwError(0x6985, "INSTALL [for personalization]: the application is locked")
        st = isd.state(card)
        st.perso, st.next_block, st.buffer = app, 0, bytearray()
        return _ok(b"\x00")
    if p1 == _INSTALL_SELECTABLE:
        _, _, aid, _, _, _ = _lv_fields(apdu.data, 6)
        target = isd.apps.get(aid)
        if target is None:
            raise SwError(0x6A88, "INSTALL [for make selectable]: no application with this AID")
        if target.life_cycle != APP_INSTALLED:
            raise SwError(0x6985, "INSTALL [for make selectable]: the application is not in state INSTALLED")

        def selectable() -> None:
            target.life_cycle = APP_SELECTABLE

        card.eeprom.commit(selectable, 1)
        isd.sync(card)
        return _ok(b"\x00")
    elf_aid, module, aid, privileges, params, _token = _lv_fields(apdu.data, 6)
    elf = isd.load_files.get(_aid(elf_aid, "load file AID"))
    if elf is None:
        raise SwError(0x6A88, "INSTALL [for install]: load file not found")
    if _aid(module, "module AID") not in elf.modules:
        raise SwError(0x6A88, "INSTALL [for install]: the load file has no such module")
    if _aid(aid, "application AID") in isd.apps or aid == isd.aid:
        raise SwError(0x6985, "INSTALL [for install]: an application with this AID exists")
    if len(privileges) not in (1, 3):
        raise SwError(0x6A80, "privileges are 1 or 3 bytes (GPCS 2.3.1 §11.1.2)")
    if privileges[0] & 0x80:
        raise SwError(0x6A80, "the virtual card's load file cannot install security domains")
    if len(isd.apps) >= isd.max_apps:
        raise SwError(0x6A84, f"the registry holds at most {isd.max_apps} applications")
    state = APP_SELECTABLE if p1 & _INSTALL_SELECTABLE else APP_INSTALLED
    app = AppInstance(isd, aid, load_file=elf.aid, module=module, privileges=privileges, life_cycle=state,
                      params=params)

    def add() -> None:
        isd.apps[aid] = app

    card.eeprom.commit(add, 32 + len(params))
    isd.sync(card)
    log.info("INSTALL: application %s from module %s", aid.hex().upper(), module.hex().upper())
    return _ok(b"\x00")


def delete(isd: IssuerSecurityDomain, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu:
    isd.session(card, "DELETE")
    _not_locked(isd, "DELETE")
    if apdu.p1 != 0x00 or apdu.p2 not in (0x00, 0x80):
        raise SwError(0x6A86, "DELETE P1 must be 00 and P2 00 or 80")
    aid = _criteria(apdu.data)
    if aid == isd.aid:
        raise SwError(0x6985, "the ISD cannot be deleted")
    gone: list[bytes] = []
    if aid in isd.apps:
        gone = [aid]
        elf = None
    elif aid in isd.load_files:
        elf = aid
        gone = [a.aid for a in isd.apps.values() if a.load_file == aid]
        if gone and apdu.p2 != 0x80:
            raise SwError(0x6985, "the load file has applications: DELETE with P2 80 removes them too")
    else:
        raise SwError(0x6A88, "nothing with this AID in the registry")

    def remove() -> None:
        for a in gone:
            del isd.apps[a]
        if elf is not None:
            del isd.load_files[elf]

    card.eeprom.commit(remove, 1)
    for ch in card.channels.values():
        if isinstance(ch.app, AppInstance) and ch.app.aid in gone:
            ch.app, ch.app_aid = None, None
    isd.sync(card)
    return _ok(b"\x00")


Handler = Callable[[IssuerSecurityDomain, VirtualCard, CommandApdu], ResponseApdu]
HANDLERS: dict[int, Handler] = {0xF2: get_status, 0xF0: set_status, 0xD8: put_key, 0xE6: install, 0xE4: delete}
