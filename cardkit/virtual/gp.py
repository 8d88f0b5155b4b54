"""The GlobalPlatform issuer security domain (ISD) of the virtual card.

:func:`install_isd` plugs an :class:`IssuerSecurityDomain` into a :class:`~cardkit.virtual.card.VirtualCard`
(``register_application``, AID ``A000000151000000``). What it does, with the GPCS 2.3.1 / Amendment D rules:

* **Selection.** SELECT by the ISD AID, or SELECT by name with an empty AID (GPCS 2.3.1 §11.9), selects it. The
  ISD is also implicitly selected on the basic channel after every reset and on channels opened by MANAGE
  CHANNEL while it is selected. The FCI is ``6F {84 AID, A5 {9F70 card life cycle, 9F65 FF}}`` (``9F70``
  in the FCI is a cardkit addition so that the life cycle is readable without keys).
* **Secure channel** (SCP02 for 3DES key sets, SCP03 for AES key sets, with the card sides of
  :mod:`cardkit.sm.scp02` / :mod:`cardkit.sm.scp03`): INITIALIZE UPDATE with P1 = key version (00 = the
  default key set: the lowest version held). Every INITIALIZE UPDATE counts down the key set's try counter
  *before* the cryptogram is computed (anti-tearing); a successful EXTERNAL AUTHENTICATE restores it. A host
  that finds a wrong card cryptogram and stops (as cardkit's host does) therefore still spends a try, as on
  deployed cards; at 0 the key set is locked and INITIALIZE UPDATE answers 6983. The sequence counter is
  persistent. Once EXTERNAL AUTHENTICATE succeeds the session is opened on the channel with
  ``card.security.open_sm(session, issuer=True)``: commands of the ISO file system sent under the channel meet
  the ``issuer`` access condition. Card-management commands need the session, and need the C-MAC when the
  session's level asks for it (an unprotected one closes the session, 6982).
* **SCP02 implicit initiation** (``install_isd(card, des_keys, scp=2, i=0x1A)``, or ``0A``/``0B``/``1B``;
  :mod:`cardkit.virtual.gp_session`): INITIALIZE UPDATE is refused (6985, no try spent); the first C-MAC'd
  command sent to the selected ISD (or one of its applications) opens a session with the default key set at
  level C-MAC — same rights as an explicit session — with ICV = MAC over the selected AID. Each attempt spends
  a try, a success restores them and increments the persistent counter; a command that does not verify is
  answered 6988 and not run, and secure messaging ends on the channel. The card takes the first command once
  the application has been selected, or has seen any plain command on the channel (GET DATA ``00C1`` does);
  right after a reset or a failed attempt it answers 6882 until then.
* **SELECT of another application or of a DF/MF that deselects the ISD ends the session on that channel**
  (GPCS 2.3.1 §10.2.3: a secure channel session is bound to the application that opened it). A SELECT sent
  under the session still gets a protected response; every later command under it fails (6988) and closes it.
  SELECT of files by FID keeps the ISD selected and the session open.
* Applications (:class:`~cardkit.virtual.gp_registry.AppInstance`) accept INITIALIZE UPDATE / EXTERNAL
  AUTHENTICATE themselves through their security domain (the EMV CPS way: SELECT the application, open the
  channel, STORE DATA), besides STORE DATA forwarded by the ISD after INSTALL [for personalization].
* GET DATA (no authentication): ``9F7F`` CPLC (IC serial = the card serial), ``66`` card data (GP 2.3.1,
  SCP OIDs with i), ``E0`` key information, ``C1`` sequence counter of the default key set, ``42`` IIN and
  ``45`` CIN once personalized (STORE DATA BER-TLV to the ISD). With CLA 00 and an object the ISD does not
  hold, the ISO OS answers (its ``0045`` is the card serial).
* Card management (see :mod:`cardkit.virtual.gp_manage`, :mod:`cardkit.virtual.gp_store`): GET STATUS, SET
  STATUS (card life cycle OP_READY → INITIALIZED → SECURED ⇄ CARD_LOCKED, any → TERMINATED), PUT KEY,
  INSTALL, DELETE, STORE DATA. GP commands are recognised by their proprietary class (CLA b8 = 1), so ISO
  commands with the same INS (APPEND RECORD E2, DELETE FILE E4, TERMINATE DF E6) keep reaching the ISO OS;
  PUT KEY with P1 = P2 = 00 is cardkit's ISO PUT KEY (``cardkit.virtual.security``), not the GP one.
* Life cycle: in CARD_LOCKED only the ISD can be selected (6A81) and only secure-channel, GET DATA, GET
  STATUS and SET STATUS commands are processed (else 6985); in TERMINATED only GET DATA is answered (else 6A81).
  Locking or terminating forces the ISD on every open channel.

Persistence: :func:`gp_to_dict` / :func:`gp_from_dict` give the ISD state for card images (keys in clear hex,
like the rest of an image).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.commands.gp import DEFAULT_ISD_AID
from cardkit.crypto import Alg
from cardkit.errors import CardkitError
from cardkit.sm.gp import GpKeySet, SecurityLevel
from cardkit.sm.scp02 import Scp02Card, check_i, is_implicit
from cardkit.sm.scp03 import I_S16, Scp03Card
from cardkit.tlv import ber_build, ber_encode
from cardkit.virtual.card import Channel, VirtualCard, cmd_manage_channel
from cardkit.virtual.fs import SwError, VirtualCardError
from cardkit.virtual.gp_registry import (
    CARD_LOCKED,
    CARD_OP_READY,
    CARD_STATES,
    CARD_TERMINATED,
    AppInstance,
    GpImageError,
    KeySetEntry,
    LoadFile,
    app_from_dict,
    app_to_dict,
    default_cplc,
    elf_from_dict,
    elf_to_dict,
    gp_oid,
    hexval,
    intval,
    keyset_from_dict,
    keyset_to_dict,
)
from cardkit.virtual.gp_session import ChannelState, GpSession, Handshake, ImplicitGate, start_implicit
from cardkit.virtual.security import SecurityState

__all__ = ["CARDKIT_LOAD_FILE", "CARDKIT_MODULE", "GP_IMAGE_VERSION", "ISD_PRIVILEGES", "ChannelState", "GpSession",
           "IssuerSecurityDomain", "default_cplc", "find_isd", "gp_from_dict", "gp_to_dict", "install_isd"]

log = logging.getLogger(__name__)

# GPCS 2.3.1 §11.1.2 (privileges): Security Domain, Card Lock, Card Terminate, Card Reset, CVM Management;
# Trusted Path, Authorized Management, Token Verification, Global Delete/Lock/Registry, Final Application;
# Receipt Generation — the privileges of a typical ISD.
ISD_PRIVILEGES = bytes.fromhex("9EFE80")
#: The executable load file the virtual card holds "in ROM": a generic data-store application (proprietary
#: AIDs, ISO/IEC 7816-5 category F, so they cannot collide with registered ones).
CARDKIT_LOAD_FILE = bytes.fromhex("F0434B4954445300")
CARDKIT_MODULE = bytes.fromhex("F0434B495444530001")
_GP_VERSION = (2, 3, 1)
# GPCS 2.3.1 §11.3 GET DATA tags answered by the ISD.
_TAG_CPLC, _TAG_CARD_DATA, _TAG_KEY_INFO, _TAG_SEQ, _TAG_IIN, _TAG_CIN = 0x9F7F, 0x0066, 0x00E0, 0x00C1, 0x42, 0x45
# ISO 7816-4:2020 §7.4.1 / GPCS 2.3.1 §11.9.3.1: FCI template, DF name, proprietary data, max command data.
_TAG_FCI, _TAG_DF_NAME, _TAG_PROPRIETARY, _TAG_MAX_DATA, _TAG_LCS = 0x6F, 0x84, 0xA5, 0x9F65, 0x9F70
# Default i parameters (SCP03 Amendment D §5.1: 70 = pseudo-random challenge, R-MAC, R-ENC; SCP02 GPCS 2.3.1
# §E.1.1: 55 = 3 keys, explicit initiation, ICV encryption, well-known pseudo-random algorithm).
_DEFAULT_I = {0x02: 0x55, 0x03: 0x70}
_SEQ_LEN = {0x02: 2, 0x03: 3}
# Key type coding (GPCS 2.3.1 §11.1.8): 80 DES (3DES), 88 AES.
_KEY_TYPE = {Alg.DES3: 0x80, Alg.AES: 0x88}
# GP instructions (GPCS 2.3.1 §11): the ISD handles these with a proprietary class byte.
_INS_INIT_UPDATE, _INS_EXT_AUTH, _INS_GET_DATA, _INS_SELECT, _INS_MANAGE_CHANNEL = 0x50, 0x82, 0xCA, 0xA4, 0x70
_LOCKED_ALLOWED = frozenset({0x50, 0x82, 0xCA, 0xF2, 0xF0, 0xA4, 0x70})


class IssuerSecurityDomain:
    """The ISD application (see the module docstring). Build it with :func:`install_isd`."""

    def __init__(self, *, aid: bytes, scp: int, i: dict[int, int], key_sets: Sequence[KeySetEntry],
                 serial: bytes, life_cycle: int = CARD_OP_READY, max_tries: int = 10, max_key_sets: int = 8,
                 max_apps: int = 16, app_memory: int = 8192, page_bytes: int = 200, cplc: bytes | None = None,
                 load_files: Sequence[LoadFile] = ()) -> None:
        self.aid = bytes(aid)
        self.scp = scp
        self.i = dict(i)
        self.key_sets: dict[int, KeySetEntry] = {e.version: e for e in key_sets}
        self.life_cycle = life_cycle
        self.privileges = ISD_PRIVILEGES
        self.max_tries = max_tries
        self.max_key_sets = max_key_sets
        self.max_apps = max_apps
        self.app_memory = app_memory
        self.page_bytes = page_bytes
        self.cplc = cplc if cplc is not None else default_cplc(serial)
        self.load_files: dict[bytes, LoadFile] = {e.aid: e for e in load_files}
        self.apps: dict[bytes, AppInstance] = {}
        self.iin: bytes | None = None
        self.cin: bytes | None = None
        self._channels: weakref.WeakKeyDictionary[Channel, ChannelState] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return (f"IssuerSecurityDomain(aid={self.aid.hex().upper()}, {CARD_STATES.get(self.life_cycle, '?')}, "
                f"key sets {sorted(self.key_sets)}, apps {len(self.apps)})")

    # ------------------------------------------------------------------------------------ helpers
    @property
    def kdd(self) -> bytes:
        """Key diversification data (10 bytes): ISD AID[-2:] ‖ IC fabricator ‖ IC serial ‖ IC batch — so EMV CPS
        (KDD[4..9]) and VISA2 (KDD[0..1] ‖ KDD[4..7]) both see the IC serial."""
        c = self.cplc
        return self.aid[-2:] + c[0:2] + c[12:16] + c[16:18]

    def state(self, card: VirtualCard) -> ChannelState:
        st = self._channels.get(card.channel)
        if st is None:
            st = self._channels[card.channel] = ChannelState()
        return st

    def default_key_set(self) -> KeySetEntry | None:
        return self.key_sets[min(self.key_sets)] if self.key_sets else None

    def scps(self) -> list[int]:
        """The SCPs offered: the configured one first, then the other if a key set of its algorithm exists."""
        out = [self.scp]
        out += sorted({e.scp for e in self.key_sets.values()} - {self.scp})
        return out

    def sync(self, card: VirtualCard) -> None:
        """Keep ``card.applications`` in step with the registry: the ISD always; applications while selectable
        and the card is not CARD_LOCKED/TERMINATED."""
        card.register_application(self.aid, self)
        locked = self.life_cycle in (CARD_LOCKED, CARD_TERMINATED)
        for aid, app in self.apps.items():
            if app.selectable and not locked:
                card.register_application(aid, app)
            else:
                card.unregister_application(aid)
        for aid, obj in list(card.applications.items()):
            if isinstance(obj, AppInstance) and aid not in self.apps:
                card.unregister_application(aid)

    def reset_channel(self, card: VirtualCard) -> None:
        """Forget the channel's volatile state; close a GP session or handshake open on it."""
        st = self._channels.pop(card.channel, None)
        sec = card.security
        current = sec.session
        if isinstance(current, GpSession) and sec.sm and current.scp.session_open:
            current.ending = True  # this command came under it: its response is still protected, then it ends
        elif isinstance(current, GpSession | Handshake | ImplicitGate):
            sec.close_sm()
        if st is not None and st.session is not None and st.session is not current:
            st.session.scp.close()

    def session(self, card: VirtualCard, what: str) -> GpSession:
        """The authenticated session of this channel, with its C-MAC rule enforced (SwError 6982 otherwise)."""
        st = self.state(card)
        s = st.session
        if s is None or s.closed or card.security.session is not s:
            raise SwError(0x6982, f"{what} needs an authenticated secure channel")
        if s.level & SecurityLevel.C_MAC and not card.security.sm:
            self.reset_channel(card)
            raise SwError(0x6982, f"{what} arrived without the C-MAC the session requires: session closed")
        return s

    def offer_implicit(self, card: VirtualCard, owner: bytes, sec: SecurityState | None = None) -> None:
        """With SCP02 implicit initiation, stand an :class:`ImplicitGate` for ``owner`` on a channel (``sec``, by
        default the current one) that has no secure-messaging session, so its first C-MAC'd command can open one."""
        if not is_implicit(self.i.get(0x02, _DEFAULT_I[0x02])):
            return
        sec = card.security if sec is None else sec
        entry = self.default_key_set()
        if sec.session is not None or entry is None or entry.scp != 0x02:
            return

        def start(command: CommandApdu) -> CommandApdu:
            return start_implicit(self, card, command, owner)

        sec.open_sm(ImplicitGate(owner, start), issuer=False)

    def force_isd_everywhere(self, card: VirtualCard) -> None:
        for ch in card.channels.values():
            if ch.app is not self:
                ch.app, ch.app_aid = self, self.aid
                ch.select(card.mf)

    # ----------------------------------------------------------------------------- Application API
    def select(self, card: VirtualCard) -> bytes:
        """The FCI (GPCS 2.3.1 §11.9.3.1); the channel's GP state starts afresh."""
        self.reset_channel(card)
        self.offer_implicit(card, self.aid)
        proprietary = ber_encode(_TAG_LCS, bytes((self.life_cycle,))) + ber_encode(_TAG_MAX_DATA, b"\xff")
        return ber_build(_TAG_FCI, [ber_encode(_TAG_DF_NAME, self.aid), ber_encode(_TAG_PROPRIETARY, proprietary)])

    def deselect(self, card: VirtualCard) -> None:
        self.reset_channel(card)

    def process(self, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu | None:
        from cardkit.virtual import gp_manage, gp_store

        ins, proprietary = apdu.ins, bool(apdu.cla & 0x80)
        self.offer_implicit(card, self.aid)
        if self.life_cycle == CARD_TERMINATED and ins != _INS_GET_DATA:
            raise SwError(0x6A81, "the card is TERMINATED: only GET DATA is answered")
        if ins == _INS_SELECT and not proprietary:
            return self._select_command(card, apdu, self)
        if self.life_cycle == CARD_LOCKED and ins not in _LOCKED_ALLOWED:
            raise SwError(0x6985, "the card is CARD_LOCKED")
        if ins == _INS_MANAGE_CHANNEL and not proprietary:
            return self._manage_channel(card, apdu)
        if ins == _INS_GET_DATA:
            return self._get_data(card, apdu)
        if not proprietary:
            return None  # an ISO command for the card OS
        if ins == _INS_INIT_UPDATE:
            return self.initialize_update(card, apdu, self.aid)
        if ins == _INS_EXT_AUTH:
            return self.external_authenticate(card, apdu)
        if ins == 0xD8 and apdu.p1 == 0 and apdu.p2 == 0:
            return None  # cardkit's ISO PUT KEY (cardkit.virtual.security)
        handler = gp_manage.HANDLERS.get(ins) or gp_store.HANDLERS.get(ins)
        if handler is None:
            raise SwError(0x6D00, f"INS {ins:02X} is not a GP command of this ISD")
        return handler(self, card, apdu)

    # ---------------------------------------------------------------------------- app instances
    def app_selected(self, card: VirtualCard, app: AppInstance) -> bytes:
        self.reset_channel(card)
        self.offer_implicit(card, app.aid)
        return ber_build(_TAG_FCI, [ber_encode(_TAG_DF_NAME, app.aid),
                                    ber_encode(_TAG_PROPRIETARY, ber_encode(_TAG_MAX_DATA, b"\xff"))])

    def deselected(self, card: VirtualCard) -> None:
        self.reset_channel(card)

    def app_process(self, card: VirtualCard, app: AppInstance, apdu: CommandApdu) -> ResponseApdu | None:
        from cardkit.virtual import gp_store

        ins, proprietary = apdu.ins, bool(apdu.cla & 0x80)
        self.offer_implicit(card, app.aid)
        if ins == _INS_SELECT and not proprietary:
            return self._select_command(card, apdu, app)
        if ins == _INS_GET_DATA:
            return gp_store.app_get_data(self, card, app, apdu)
        if not proprietary:
            return None
        if ins == _INS_INIT_UPDATE:
            return self.initialize_update(card, apdu, app.aid)
        if ins == _INS_EXT_AUTH:
            return self.external_authenticate(card, apdu)
        if ins == 0xE2:
            return gp_store.store_data(self, card, apdu, app)
        raise SwError(0x6D00, f"INS {ins:02X} is not supported by the application")

    # ---------------------------------------------------------------------------------- SELECT
    def _select_command(self, card: VirtualCard, apdu: CommandApdu, current: object) -> ResponseApdu | None:
        """SELECT seen by the selected ISD or application: empty AID → the ISD; exact re-selection of the current
        application (also with P2 0C); CARD_LOCKED/TERMINATED: nothing but the ISD."""
        empty = apdu.p1 == 0x04 and not apdu.data
        own_aid = self.aid if current is self else getattr(current, "aid", b"")
        is_isd = empty or (apdu.p1 == 0x04 and apdu.data == self.aid)
        if self.life_cycle in (CARD_LOCKED, CARD_TERMINATED):
            if not (empty or (apdu.p1 == 0x04 and self.aid.startswith(apdu.data))):
                raise SwError(0x6A81, f"the card is {CARD_STATES[self.life_cycle]}: only the ISD can be selected")
            is_isd = True
        if not is_isd and not (apdu.p1 == 0x04 and apdu.data == own_aid):
            return None
        kind = apdu.p2 & 0xFC
        if kind not in (0x00, 0x04, 0x0C) or apdu.p2 & 0x03:
            raise SwError(0x6A86, f"P2 {apdu.p2:02X} not supported for this selection")
        ch = card.channel
        target: Any = self if is_isd else current
        if ch.app is not None and ch.app is not target:
            deselect = getattr(ch.app, "deselect", None)
            if callable(deselect):
                deselect(card)
        ch.app, ch.app_aid = target, (self.aid if is_isd else own_aid)
        ch.current_ef = None
        fci = target.select(card)
        return ResponseApdu.of(0x9000, b"" if kind == 0x0C else fci)

    def _manage_channel(self, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu:
        """MANAGE CHANNEL through the card OS; a channel opened from here starts with the ISD selected."""
        before = set(card.channels)
        resp = cmd_manage_channel(card, card.channel, apdu)
        for number in set(card.channels) - before:
            ch = card.channels[number]
            ch.app, ch.app_aid = self, self.aid
            self.offer_implicit(card, self.aid, ch.security)
        return resp

    # ------------------------------------------------------------------------- secure channel
    def _key_set_for(self, p1: int) -> KeySetEntry:
        entry = self.default_key_set() if p1 == 0 else self.key_sets.get(p1)
        if entry is None:
            raise SwError(0x6A88, f"key set {p1:02X} not found")
        return entry

    def initialize_update(self, card: VirtualCard, apdu: CommandApdu, owner: bytes) -> ResponseApdu:
        """INITIALIZE UPDATE (GPCS 2.3.1 §E.5.1, Amendment D §7.1.1): ends any session on the channel."""
        self.reset_channel(card)
        st = self.state(card)
        if apdu.p2 != 0:
            raise SwError(0x6A86, "INITIALIZE UPDATE P2 (key identifier) must be 00")
        entry = self._key_set_for(apdu.p1)
        scp_id = entry.scp
        i = self.i.get(scp_id, _DEFAULT_I[scp_id])
        if scp_id == 0x02 and is_implicit(i):  # GPCS 2.3.1 Table E-1: no explicit handshake with this i
            raise SwError(0x6985, f"this security domain initiates SCP02 implicitly (i={i:02X}): no INITIALIZE UPDATE")
        if entry.blocked:
            raise SwError(0x6983, f"key set {entry.version:02X} is locked (too many failed authentications)")
        scp: Scp02Card | Scp03Card
        if scp_id == 0x02:
            if len(apdu.data) != 8:
                raise SwError(0x6700, "SCP02 host challenge is 8 bytes")
            scp = Scp02Card(entry.keys, entry.counter, i=i, rng=card.random_bytes, kdd=self.kdd)
        else:
            s16 = bool(i & I_S16)
            if len(apdu.data) != (16 if s16 else 8):
                raise SwError(0x6700, f"SCP03 host challenge is {16 if s16 else 8} bytes (i={i:02X})")
            scp = Scp03Card(entry.keys, entry.counter, self.aid, i=i, rng=card.random_bytes, s16=s16,
                            kdd=self.kdd)

        def spend() -> None:
            entry.tries_left -= 1

        card.eeprom.commit(spend, 1, must=True)
        resp = scp.initialize_update(apdu.replace(p1=entry.version))
        if resp.sw == 0x9000 and scp.sequence_counter != entry.counter:
            counter = scp.sequence_counter

            def advance() -> None:
                entry.counter = counter

            card.eeprom.commit(advance, 3)
        if resp.sw != 0x9000:
            return resp
        st.handshake = Handshake(scp, entry, owner)
        card.security.open_sm(st.handshake, issuer=False)
        log.debug("INITIALIZE UPDATE: key set %02X (SCP%02X), %d tries left", entry.version, scp_id, entry.tries_left)
        return resp

    def external_authenticate(self, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu:
        """EXTERNAL AUTHENTICATE (GPCS 2.3.1 §E.5.2, Amendment D §7.1.2): on success the session opens with the
        issuer condition and the key set's try counter is restored."""
        st = self.state(card)
        hs, st.handshake = st.handshake, None
        if hs is None or card.security.session is not hs:
            raise SwError(0x6985, "EXTERNAL AUTHENTICATE without INITIALIZE UPDATE")
        resp = hs.scp.external_authenticate(apdu)
        entry = hs.entry
        if resp.sw != 0x9000:
            card.security.close_sm()
            log.info("EXTERNAL AUTHENTICATE with key set %02X failed (%04X), %d tries left", entry.version, resp.sw,
                     entry.tries_left)
            return resp
        counter = hs.scp.sequence_counter

        def restore() -> None:
            entry.tries_left = entry.max_tries
            entry.counter = counter

        card.eeprom.commit(restore, 4)
        st.session = GpSession(hs.scp, entry, hs.owner)
        card.security.open_sm(st.session, issuer=True)
        return resp

    # ------------------------------------------------------------------------------- GET DATA
    def card_data(self) -> bytes:
        """Card recognition data (GPCS 2.3.1 Appendix H): ``66 {73 {06 OID, 60 version, 63 scheme, 64 SCP}}``."""
        scp_oids = b"".join(ber_encode(0x06, gp_oid((4, n, self.i.get(n, _DEFAULT_I[n])))) for n in self.scps())
        inner = [ber_encode(0x06, gp_oid((1,))), ber_encode(0x60, ber_encode(0x06, gp_oid((2, *_GP_VERSION)))),
                 ber_encode(0x63, ber_encode(0x06, gp_oid((3,)))), ber_encode(0x64, scp_oids)]
        return ber_build(0x66, [ber_build(0x73, inner)])

    def key_info(self) -> bytes:
        """Key information template E0 (GPCS 2.3.1 §11.3.3.1): C0 = key id ‖ version ‖ type ‖ length."""
        items = [ber_encode(0xC0, bytes((kid, e.version, _KEY_TYPE[e.keys.alg], e.keys.key_length)))
                 for _, e in sorted(self.key_sets.items()) for kid in (1, 2, 3)]
        return ber_build(0xE0, items) if items else ber_encode(0xE0, b"")

    def _get_data(self, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu | None:
        """GET DATA (GPCS 2.3.1 §11.3): the object with its tag."""
        if apdu.data:
            raise SwError(0x6A80, "GET DATA takes no command data")
        tag = (apdu.p1 << 8) | apdu.p2
        value: bytes | None = None
        if tag == _TAG_CPLC:
            value = ber_encode(_TAG_CPLC, self.cplc)
        elif tag == _TAG_CARD_DATA:
            value = self.card_data()
        elif tag == _TAG_KEY_INFO:
            value = self.key_info()
        elif tag == _TAG_SEQ:
            entry = self.default_key_set()
            if entry is not None:
                value = ber_encode(0xC1, entry.counter.to_bytes(_SEQ_LEN[entry.scp], "big"))
        elif tag == _TAG_IIN and self.iin is not None:
            value = ber_encode(_TAG_IIN, self.iin)
        elif tag == _TAG_CIN and self.cin is not None:
            value = ber_encode(_TAG_CIN, self.cin)
        if value is not None:
            return ResponseApdu.of(0x9000, value)
        if not apdu.cla & 0x80:
            return None  # the ISO OS's own data objects
        raise SwError(0x6A88, f"no data object {tag:04X}")


# ------------------------------------------------------------------------------------------ install


def find_isd(card: VirtualCard) -> IssuerSecurityDomain | None:
    for app in card.applications.values():
        if isinstance(app, IssuerSecurityDomain):
            return app
    return None


def _hook_reset(card: VirtualCard, isd: IssuerSecurityDomain) -> None:
    """Make the ISD the card's default application: selected implicitly after every reset and on new
    logical channels, and by SELECT with an empty AID (GPCS 2.3.1 §6.7: the ISD is the implicitly
    selected application when no application holds the Card Reset privilege)."""
    card.default_application = isd.aid
    if card.powered and card.channels.get(0) is not None and card.channels[0].app is None:
        card.channels[0].app, card.channels[0].app_aid = isd, isd.aid


def _entries(keys: GpKeySet | Sequence[GpKeySet], max_tries: int) -> list[KeySetEntry]:
    sets = [keys] if isinstance(keys, GpKeySet) else list(keys)
    if not sets:
        raise VirtualCardError("an ISD needs at least one key set")
    out: list[KeySetEntry] = []
    for k in sets:
        if not isinstance(k, GpKeySet):
            raise VirtualCardError(f"key sets must be GpKeySet, got {type(k).__name__}")
        if not 1 <= k.version <= 0xFF:
            raise VirtualCardError(f"key set version {k.version} is reserved (00 means 'default' in INITIALIZE "
                                   "UPDATE); use 01..7F or FF")
        if any(e.version == k.version for e in out):
            raise VirtualCardError(f"two key sets with version {k.version:02X}")
        out.append(KeySetEntry(k, max_tries, max_tries))
    return out


def install_isd(card: VirtualCard, keys: GpKeySet | Sequence[GpKeySet], scp: int = 3, i: int | None = None, *,
                aid: bytes = DEFAULT_ISD_AID, max_tries: int = 10, life_cycle: int = CARD_OP_READY,
                load_files: Sequence[LoadFile] | None = None, page_bytes: int = 200,
                max_apps: int = 16) -> IssuerSecurityDomain:
    """Install an issuer security domain on ``card`` and return it.

    ``keys``: the initial key set(s) (explicit versions 01..7F/FF); AES sets serve SCP03, 3DES sets SCP02.
    ``scp`` (2 or 3) is the protocol announced first in the card data, with ``i`` (default 70 for SCP03, 55
    for SCP02). ``max_tries`` failed authentications lock a key set. ``load_files`` defaults to cardkit's
    data-store load file (:data:`CARDKIT_LOAD_FILE` with module :data:`CARDKIT_MODULE`). ``page_bytes`` is the
    most registry data one GET STATUS response carries before answering 6310.
    """
    if scp not in (2, 3):
        raise VirtualCardError(f"scp must be 2 or 3, got {scp!r}")
    if not 1 <= max_tries <= 255:
        raise VirtualCardError(f"max_tries {max_tries} outside 1..255")
    if life_cycle not in CARD_STATES:
        raise VirtualCardError(f"card life cycle {life_cycle:#04x} is not a GP card state")
    if not 5 <= len(aid) <= 16:
        raise VirtualCardError("an ISD AID is 5..16 bytes")
    if not 40 <= page_bytes <= 255:
        raise VirtualCardError(f"page_bytes {page_bytes} outside 40..255")
    entries = _entries(keys, max_tries)
    want = Alg.AES if scp == 3 else Alg.DES3
    if entries[0].keys.alg is not want:
        raise VirtualCardError(f"SCP{scp:02X} needs {want.value} key sets, the first is {entries[0].keys.alg.value}")
    params = {0x02: _DEFAULT_I[0x02], 0x03: _DEFAULT_I[0x03]}
    if i is not None:
        if scp == 2:
            try:
                check_i(i)
            except CardkitError as exc:
                raise VirtualCardError(str(exc)) from None
        elif not 0 <= i <= 0x7F:
            raise VirtualCardError(f"SCP03 i parameter {i!r} outside 00..7F")
        params[scp] = i
    if find_isd(card) is not None:
        raise VirtualCardError("the card already has an issuer security domain")
    elfs = list(load_files) if load_files is not None else [LoadFile(CARDKIT_LOAD_FILE, (CARDKIT_MODULE,))]
    isd = IssuerSecurityDomain(aid=aid, scp=scp, i=params, key_sets=entries, serial=card.serial,
                               life_cycle=life_cycle, max_tries=max_tries, max_apps=max_apps, page_bytes=page_bytes,
                               load_files=elfs)
    isd.sync(card)
    _hook_reset(card, isd)
    return isd


# ------------------------------------------------------------------------------------------- images

GP_IMAGE_VERSION = 1


def gp_to_dict(card: VirtualCard) -> dict[str, Any] | None:
    """The ISD's persistent state for a card image (None without an ISD). Holds keys in clear hex."""
    isd = find_isd(card)
    if isd is None:
        return None
    return {
        "version": GP_IMAGE_VERSION, "aid": isd.aid.hex().upper(), "scp": isd.scp,
        "i": {f"{k:02X}": v for k, v in sorted(isd.i.items())}, "life_cycle": isd.life_cycle,
        "max_tries": isd.max_tries, "max_apps": isd.max_apps, "page_bytes": isd.page_bytes,
        "cplc": isd.cplc.hex().upper(), "iin": isd.iin.hex().upper() if isd.iin is not None else None,
        "cin": isd.cin.hex().upper() if isd.cin is not None else None,
        "key_sets": [keyset_to_dict(e) for _, e in sorted(isd.key_sets.items())],
        "load_files": [elf_to_dict(e) for e in isd.load_files.values()],
        "applications": [app_to_dict(a) for a in isd.apps.values()],
    }


def gp_from_dict(card: VirtualCard, d: object) -> IssuerSecurityDomain:
    """Re-install an ISD from :func:`gp_to_dict` output (raises :class:`GpImageError`)."""
    if not isinstance(d, dict) or d.get("version") != GP_IMAGE_VERSION:
        raise GpImageError(f"gp image: not a version {GP_IMAGE_VERSION} ISD record")
    if find_isd(card) is not None:
        raise GpImageError("gp image: the card already has an issuer security domain")
    key_sets = d.get("key_sets")
    if not isinstance(key_sets, list):
        raise GpImageError("gp image: key_sets must be a list")
    raw_i = d.get("i", {})
    if not isinstance(raw_i, dict):
        raise GpImageError("gp image: i must be an object")
    params = {int.from_bytes(hexval(k, "SCP number", 1, 1), "big"): v for k, v in raw_i.items()}
    if not all(k in (2, 3) and isinstance(v, int) and 0 <= v <= 0x7F for k, v in params.items()):
        raise GpImageError("gp image: i holds SCP02/SCP03 parameters 00..7F")
    if 2 in params:
        try:
            check_i(params[2])
        except CardkitError as exc:
            raise GpImageError(f"gp image: {exc}") from None
    life_cycle = intval(d, "life_cycle", 0, 0xFF)
    if life_cycle not in CARD_STATES:
        raise GpImageError(f"gp image: card life cycle {life_cycle:02X} is not a GP card state")
    scp = intval(d, "scp", 2, 3)
    isd = IssuerSecurityDomain(
        aid=hexval(d.get("aid"), "ISD AID", 5, 16), scp=scp, i=params,
        key_sets=[keyset_from_dict(e) for e in key_sets], serial=card.serial, life_cycle=life_cycle,
        max_tries=intval(d, "max_tries", 1, 255), max_apps=intval(d, "max_apps", 0, 255),
        page_bytes=intval(d, "page_bytes", 40, 255), cplc=hexval(d.get("cplc"), "CPLC", 42, 42),
        load_files=[elf_from_dict(e) for e in d.get("load_files", [])])
    for name in ("iin", "cin"):
        if d.get(name) is not None:
            setattr(isd, name, hexval(d.get(name), name.upper(), 1, 16))
    apps = d.get("applications", [])
    if not isinstance(apps, list):
        raise GpImageError("gp image: applications must be a list")
    for raw in apps:
        app = app_from_dict(isd, raw)
        isd.apps[app.aid] = app
    isd.sync(card)
    _hook_reset(card, isd)
    return isd
