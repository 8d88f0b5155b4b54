"""The virtual card: an ISO/IEC 7816-4/-9 card OS that enforces every access rule.

:class:`VirtualCard` implements :class:`cardkit.transport.virtual.CardLike`. ``transmit`` answers a status word
to any input bytes and never raises — except :class:`~cardkit.virtual.faults.CardGone` when the card is not
powered or an injected fault cut the power or pulled the card (see :mod:`cardkit.virtual.faults`).

Processing of one APDU, in order: CLA (logical channel 0..3, secure messaging, chaining; ISO 7816-4:2020
§5.4.1) → GET RESPONSE → command chaining (§5.3.3) → secure messaging unwrap when CLA b4-b3 ≠ 00 and a
session is open (failure: 6988 and the session closes; no session: 6882) → the channel's selected
application (``register_application``), which may answer or return None → the ISO OS → SM wrap → response
length handling (T=1 style: data directly, 61xx when longer than Le; ``t0_style``: 61xx/6Cxx as on T=0).

Card objects for GET DATA (even INS CA; the response is the object's value): ``5F52`` historical bytes,
``0045`` card issuer's data (the 4-byte serial, as in the ATR) — read-only; ``0042`` issuer identification
number, ``5F50`` issuer URL, ``0101``..``0104`` proprietary — written by PUT DATA under the issuer condition.

After TERMINATE CARD USAGE every command answers 6A81. Files are created operational (LCS 05) unless the FCP
says otherwise; access rules are enforced in every life-cycle state.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Protocol

from cardkit.acl import AccessRules, Issuer
from cardkit.apdu import LE_MAX_EXTENDED, LE_MAX_SHORT, CommandApdu, ResponseApdu
from cardkit.crypto import Alg
from cardkit.errors import ApduFormatError
from cardkit.virtual import fs, security
from cardkit.virtual.faults import CardGone, Eeprom, Fault, PowerCut
from cardkit.virtual.fs import DF, EF, MF_FID, FileNode, Lcs, SwError, VirtualCardError, build_fcp, parse_fcp
from cardkit.virtual.security import KeyObject, KeyUsage, MutualAuthHandler, SecurityState, SmSession

__all__ = ["BLANK_MF_RULES", "Application", "CardOptions", "Channel", "VirtualCard", "atr_for"]

log = logging.getLogger(__name__)

#: MF rules of a blank card: the issuer creates and deletes; nothing else is allowed.
BLANK_MF_RULES = AccessRules({"create-ef": "issuer", "create-df": "issuer", "delete-child": "issuer",
                              "terminate": "issuer", "deactivate": "never", "activate": "never",
                              "delete": "never"})
# ISO 7816-4:2020 §11.4.1: GET DATA / PUT DATA objects of this card.
_READONLY_DOS = (0x5F52, 0x0045)
_WRITABLE_DOS = (0x0042, 0x5F50, 0x0101, 0x0102, 0x0103, 0x0104)
_MAX_DO = 255
_CHANNELS = 4  # basic channel + 3 (ISO 7816-4:2020 §5.4.2 first interindustry class: b2-b1)


def atr_for(serial: bytes) -> bytes:
    """``3B 8D 80 01 80 54 <serial> 73 F6 21 C0 82 90 00`` + TCK (ISO 7816-3:2006 §8.2, 7816-4:2020 §12.1.1)."""
    body = bytes.fromhex("3B8D800180 54") + serial + bytes.fromhex("73F621C0 829000")
    return body + bytes((reduce(lambda a, b: a ^ b, body[1:], 0),))


@dataclass(frozen=True)
class CardOptions:
    """Behaviour switches of the virtual card."""

    #: Answer 61xx / 6Cxx as a T=0 card does instead of returning the data directly.
    t0_style: bool = False
    #: Accept extended-length APDUs (6700 when off).
    extended_length: bool = True
    #: Largest command data (after chaining) the card takes.
    max_command: int = 65535
    #: Largest response data in one R-APDU; the rest is given out with 61xx / GET RESPONSE.
    max_response: int = 65536
    #: Seconds spent on every APDU, and per byte written to EEPROM (benchmarks).
    apdu_latency_s: float = 0.0
    write_latency_per_byte_s: float = 0.0
    #: EEPROM available for files, PINs and keys (6A84 beyond).
    memory_size: int = 65536

    def __post_init__(self) -> None:
        if not 1 <= self.max_command <= 65535:
            raise VirtualCardError(f"max_command {self.max_command} outside 1..65535")
        if not 1 <= self.max_response <= LE_MAX_EXTENDED:
            raise VirtualCardError(f"max_response {self.max_response} outside 1..65536")
        if self.apdu_latency_s < 0 or self.write_latency_per_byte_s < 0 or self.memory_size < 0:
            raise VirtualCardError("latencies and memory size must not be negative")


class Application(Protocol):
    """An application plugged into the card (GlobalPlatform security domain, eMRTD ...)."""

    def select(self, card: VirtualCard) -> bytes:
        """The FCI answered to SELECT by this application's AID."""
        ...

    def process(self, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu | None:
        """Answer the command, or None to let the ISO OS handle it (``card.channel`` is the channel)."""
        ...


@dataclass(eq=False)
class Channel:
    """A logical channel: current DF/EF, selected application, security state, pending response."""

    number: int
    current_df: DF
    current_ef: EF | None = None
    app: Application | None = None
    app_aid: bytes | None = None
    security: SecurityState = field(default_factory=SecurityState)
    pending: bytes = b""
    pending_sw: int = 0x9000
    chain: tuple[bytes, bytearray] | None = None
    pending_session: tuple[SmSession, bool] | None = None

    def select(self, node: FileNode) -> None:
        if isinstance(node, DF):
            self.current_df, self.current_ef = node, None
        elif isinstance(node, EF):
            self.current_df, self.current_ef = node.df, node
        self.security.on_select(self.current_df)


Handler = Callable[["VirtualCard", Channel, CommandApdu], ResponseApdu]


class VirtualCard:
    """An in-process ISO 7816-4 card. See the module docstring."""

    def __init__(self, serial: bytes, *, options: CardOptions | None = None, seed: int | None = None,
                 mf_rules: AccessRules | None = None) -> None:
        if not isinstance(serial, bytes) or len(serial) != 4:
            raise VirtualCardError("serial must be 4 bytes")
        self.serial = serial
        self.options = options or CardOptions()
        self.mf = DF(fid=MF_FID, rules=mf_rules if mf_rules is not None else BLANK_MF_RULES)
        self.rng: random.Random = random.Random(seed) if seed is not None else secrets.SystemRandom()
        self.eeprom = Eeprom(self.options.write_latency_per_byte_s)
        self.data_objects: dict[int, bytes] = {}
        self.terminated = False
        self.mutual_auth_handler: MutualAuthHandler | None = None
        self.applications: dict[bytes, Application] = {}
        self.powered = False
        self.present = True
        self.apdu_count = 0
        self.channels: dict[int, Channel] = {}
        #: The channel of the command being processed (for applications and handlers).
        self.channel: Channel = Channel(0, self.mf)
        self._fault: Fault | None = None
        #: The application selected implicitly after reset, on new logical channels, and by SELECT with an
        #: empty AID (GPCS 2.3.1: the ISD unless another application holds the Card Reset privilege).
        self.default_application: bytes | None = None
        self._install_default_handlers()

    def _install_default_handlers(self) -> None:
        """cardkit's ISO mutual authentication (opens SM) and the eMRTD application (BAC on the LDS1 DF).

        Handlers are code, not image data: every constructed or loaded card gets them.
        """
        from cardkit.virtual.isoauth import mutual_auth_handler
        from cardkit.virtual.mrtd import enable_mrtd

        self.mutual_auth_handler = mutual_auth_handler
        enable_mrtd(self)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def blank(cls, serial: bytes, transport_key: bytes, alg: Alg = Alg.AES, *, options: CardOptions | None = None,
              seed: int | None = None, max_tries: int = 10) -> VirtualCard:
        """A blank card: MF with :data:`BLANK_MF_RULES` and key 00 (usage 02, the transport key)."""
        card = cls(serial, options=options, seed=seed)
        card.mf.set_key(0, alg, KeyUsage.SM, transport_key, max_tries=max_tries)
        return card

    def save(self, path: str | Path) -> None:
        """Write the card image (JSON, mode 0600 — it holds keys and PINs)."""
        from cardkit.virtual.image import save_image

        save_image(self, path)

    @classmethod
    def load(cls, path: str | Path) -> VirtualCard:
        from cardkit.virtual.image import load_image

        return load_image(path)

    def register_application(self, aid: bytes, handler: Application) -> None:
        if not isinstance(aid, bytes) or not 1 <= len(aid) <= fs.MAX_NAME:
            raise VirtualCardError("an application AID is 1..16 bytes")
        self.applications[bytes(aid)] = handler

    def unregister_application(self, aid: bytes) -> None:
        self.applications.pop(bytes(aid), None)

    def inject_fault(self, fault: Fault) -> None:
        self._fault = fault

    # ------------------------------------------------------------------ CardLike
    @property
    def atr(self) -> bytes:
        return atr_for(self.serial)

    def power_on(self) -> bytes:
        if not self.present:
            raise CardGone("no card in the reader", removed=True)
        self._reset_volatile()
        self.powered = True
        return self.atr

    def power_off(self) -> None:
        self.powered = False
        self._reset_volatile()

    def insert(self) -> None:
        """Put a removed card back (it still needs :meth:`power_on`)."""
        self.present = True

    def new_channel(self, number: int) -> Channel:
        """A fresh logical channel: the MF current, the default application (if any) selected."""
        ch = Channel(number, self.mf)
        aid = self.default_application
        if aid is not None and aid in self.applications:
            ch.app, ch.app_aid = self.applications[aid], aid
        return ch

    def _reset_volatile(self) -> None:
        self.channels = {0: self.new_channel(0)}
        self.channel = self.channels[0]

    def transmit(self, apdu: bytes) -> bytes:
        if not self.present:
            raise CardGone("the card was removed", removed=True)
        if not self.powered:
            raise CardGone("the card is not powered", removed=False)
        if self.options.apdu_latency_s:
            time.sleep(self.options.apdu_latency_s)
        self.apdu_count += 1
        fault = self._fault
        if fault is not None:
            fault.countdown -= 1
            if fault.countdown > 0:
                fault = None
            else:
                self._fault = None
                self.eeprom.tear = fault
        try:
            out = self._transmit(bytes(apdu))
        except PowerCut:
            out = b""
        except Exception:  # the card answers everything; a bug must not look like a transport failure
            log.exception("virtual card internal error")
            out = b"\x6f\x00"
        finally:
            self.eeprom.tear = None
        if fault is not None:
            self.power_off()
            if fault.removed:
                self.present = False
            raise CardGone("card removed during the command" if fault.removed else "power lost during the command",
                           removed=fault.removed)
        return out

    # ------------------------------------------------------------------ processing
    def _transmit(self, raw: bytes) -> bytes:
        if len(raw) < 4:
            return b"\x67\x00"
        cla, ins = raw[0], raw[1]
        if cla == 0xFF or cla & 0xE0 == 0x20:  # ISO 7816-4:2020 §5.4.1: FF invalid, 001x xxxx RFU
            return b"\x6e\x00"
        if ins & 0xF0 in (0x60, 0x90):  # ISO 7816-3:2006 §10.3.2: 6X and 9X are not instructions
            return b"\x6d\x00"
        try:
            cmd = CommandApdu.from_bytes(raw)
        except ApduFormatError:
            return b"\x67\x00"
        if cmd.is_extended and not self.options.extended_length:
            return b"\x67\x00"
        if self.terminated:
            return b"\x6a\x81"
        if cla & 0x40:  # further interindustry / proprietary classes: channels 4..19 are not offered
            return b"\x68\x81"
        ch = self.channels.get(cla & 0x03)
        if ch is None:
            return b"\x68\x81"
        self.channel = ch
        if ins == 0xC0 and not cla & 0x10:
            return self._get_response(ch, cmd)
        ch.pending, ch.pending_sw = b"", 0x9000
        # command chaining (ISO 7816-4:2020 §5.3.3): CLA b5 set on every command but the last
        header = bytes((cla & ~0x10 & 0xFF, ins, cmd.p1, cmd.p2))
        if cla & 0x10:
            if ch.chain is not None and ch.chain[0] != header:
                ch.chain = None
                return b"\x68\x83"
            buf = ch.chain[1] if ch.chain else bytearray()
            buf += cmd.data
            if len(buf) > self.options.max_command:
                ch.chain = None
                return b"\x67\x00"
            ch.chain = (header, buf)
            return b"\x90\x00"
        if ch.chain is not None:
            head, buf = ch.chain
            ch.chain = None
            if head != header:
                return b"\x68\x83"
            cmd = cmd.replace(data=bytes(buf) + cmd.data)
        if len(cmd.data) > self.options.max_command:
            return b"\x67\x00"
        outer = cmd
        st = ch.security
        session = None
        if cla & 0x0C:
            session = st.session
            if session is None and ch.app is not None and ch.app_aid is not None:
                # An application may start a session implicitly with this very command (GPCS Appendix E,
                # SCP02 implicit initiation): it stands a gate on the channel that the unwrap below opens.
                offer = getattr(ch.app, "offer_implicit", None)
                if callable(offer):
                    offer(self, ch.app_aid, st)
                    session = st.session
            if session is None:
                return b"\x68\x82"
            try:
                cmd = session.unwrap_command(cmd)
            except PowerCut:
                raise
            except Exception as exc:
                sw = getattr(exc, "sw", 0x6988)
                st.close_sm()
                log.info("secure messaging failed on channel %d: session closed", ch.number)
                return (sw if sw in (0x6987, 0x6988) else 0x6988).to_bytes(2, "big")
            st.sm = True
        try:
            resp = self._dispatch(ch, cmd)
        finally:
            st.sm = False
        if ins not in (0x84,):  # a challenge is valid for the next command only (ISO 7816-4:2020 §11.5.5)
            st.challenge = None
        if session is not None and st.session is session:
            try:
                resp = session.wrap_response(resp)
            except Exception:
                st.close_sm()
                return b"\x69\x88"
        if ch.pending_session is not None:
            new_session, issuer = ch.pending_session
            ch.pending_session = None
            st.open_sm(new_session, issuer=issuer)
        return self._format(ch, outer, resp)

    def _dispatch(self, ch: Channel, cmd: CommandApdu) -> ResponseApdu:
        try:
            if ch.app is not None:
                answer = ch.app.process(self, cmd)
                if answer is not None:
                    return answer
            handler = _COMMANDS.get(cmd.ins)
            if handler is None:
                return ResponseApdu.of(0x6D00)
            proprietary = cmd.ins == 0xD8
            if bool(cmd.cla & 0x80) != proprietary:
                return ResponseApdu.of(0x6E00 if not proprietary else 0x6D00)
            return handler(self, ch, cmd)
        except SwError as exc:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("INS %02X -> %04X %s", cmd.ins, exc.sw, exc.reason)
            return ResponseApdu.of(exc.sw)

    def _format(self, ch: Channel, cmd: CommandApdu, resp: ResponseApdu) -> bytes:
        data, sw = resp.data, resp.sw
        if not data:
            return sw.to_bytes(2, "big")
        opts = self.options
        if opts.t0_style:
            if cmd.case == 2 and cmd.le is not None and cmd.le < LE_MAX_SHORT and not cmd.is_extended:
                if cmd.le == len(data):
                    return data + sw.to_bytes(2, "big")
                if len(data) <= LE_MAX_SHORT:
                    return bytes((0x6C, len(data) & 0xFF))
            ch.pending, ch.pending_sw = data, sw
            return bytes((0x61, min(len(data), LE_MAX_SHORT) & 0xFF))
        ne = cmd.le if cmd.le is not None else (LE_MAX_EXTENDED if cmd.is_extended else LE_MAX_SHORT)
        limit = min(ne, opts.max_response)
        if len(data) <= limit:
            return data + sw.to_bytes(2, "big")
        ch.pending, ch.pending_sw = data[limit:], sw
        return data[:limit] + bytes((0x61, min(len(data) - limit, LE_MAX_SHORT) & 0xFF))

    def _get_response(self, ch: Channel, cmd: CommandApdu) -> bytes:
        """GET RESPONSE (ISO 7816-4:2020 §11.6.1)."""
        if not ch.pending:
            return b"\x69\x85"
        if cmd.p1 or cmd.p2 or cmd.data:
            return b"\x6a\x86"
        if cmd.le is None:
            return b"\x67\x00"
        left = len(ch.pending)
        if self.options.t0_style and cmd.le != LE_MAX_SHORT and cmd.le > left:
            return bytes((0x6C, left & 0xFF))
        n = min(cmd.le, left, self.options.max_response)
        chunk, ch.pending = ch.pending[:n], ch.pending[n:]
        if ch.pending:
            return chunk + bytes((0x61, min(len(ch.pending), LE_MAX_SHORT) & 0xFF))
        sw, ch.pending_sw = ch.pending_sw, 0x9000
        return chunk + sw.to_bytes(2, "big")

    # ------------------------------------------------------------------ services for handlers/applications
    @property
    def security(self) -> SecurityState:
        """The security state of the channel being processed."""
        return self.channel.security

    def random_bytes(self, n: int) -> bytes:
        return bytes(self.rng.getrandbits(8) for _ in range(n))

    def find_key(self, ref: int) -> KeyObject:
        """The key for P2-style ``ref`` (00..1F: the MF's; 80|n: current DF, then parents). SwError 6A88."""
        _, key = security.find_key(self.channel.current_df, ref)
        return key

    def memory_used(self) -> int:
        return sum(node.memory() for node in self.mf.walk())

    def check_memory(self, extra: int) -> None:
        if self.memory_used() + extra > self.options.memory_size:
            raise SwError(0x6A84, "card memory full")

    def files(self) -> list[FileNode]:
        return list(self.mf.walk())

    def __repr__(self) -> str:
        return f"VirtualCard(serial={self.serial.hex().upper()}, files={len(self.files())})"


# ---------------------------------------------------------------------------------------- commands


def _fid(data: bytes) -> int:
    if len(data) != 2:
        raise SwError(0x6A87, "a file identifier is 2 bytes")
    return int.from_bytes(data, "big")


def _find_by_fid(ch: Channel, fid: int) -> FileNode:
    """P1=00 search order (ISO 7816-4:2020 §7.3.2): MF, children of the current DF, the current DF,
    its parent, the parent's children."""
    cur = ch.current_df
    if fid == MF_FID:
        return cur.root()
    found = cur.child(fid)
    if found is not None:
        return found
    if cur.fid == fid:
        return cur
    parent = cur.parent
    if parent is not None:
        if parent.fid == fid:
            return parent
        found = parent.child(fid)
        if found is not None:
            return found
    raise SwError(0x6A82, f"file {fid:04X} not found")


def _by_path(start: DF, data: bytes) -> FileNode:
    if not data or len(data) % 2:
        raise SwError(0x6A87, "a path is a sequence of 2-byte file identifiers")
    fids = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    node: FileNode = start
    for i, fid in enumerate(fids):
        if i == 0 and fid == MF_FID and start.parent is None:
            continue
        if not isinstance(node, DF):
            raise SwError(0x6A82, "path goes through an EF")
        nxt = node.child(fid)
        if nxt is None:
            raise SwError(0x6A82, f"file {fid:04X} not found on the path")
        node = nxt
    return node


def _by_name(card: VirtualCard, ch: Channel, name: bytes, occurrence: int) -> tuple[FileNode | None, bytes]:
    """DF name / AID selection with first, last, next, previous occurrence (ISO 7816-4:2020 §11.2.2)."""
    if not 1 <= len(name) <= fs.MAX_NAME:
        raise SwError(0x6A82 if name else 0x6A87, "DF name of 1..16 bytes")
    cands: list[tuple[bytes, DF | None]] = []
    for node in card.mf.walk():
        if isinstance(node, DF) and node.name and node.name.startswith(name):
            cands.append((node.name, node))
    for aid, handler in card.applications.items():
        # An application may decline selection (e.g. the eMRTD handler when its DF is not on the card).
        present = getattr(handler, "present", None)
        if aid.startswith(name) and all(aid != c[0] for c in cands) and (present is None or present(card)):
            cands.append((aid, None))
    cands.sort(key=lambda c: c[0] != name)  # an exact match comes first
    if not cands:
        raise SwError(0x6A82, "no DF or application with this name")
    if occurrence == 0x00:
        pick = 0
    elif occurrence == 0x01:
        pick = len(cands) - 1
    else:
        current = ch.app_aid or ch.current_df.name
        idx = next((i for i, c in enumerate(cands) if c[0] == current), None)
        if idx is None:
            pick = 0 if occurrence == 0x02 else len(cands) - 1
        else:
            pick = idx + 1 if occurrence == 0x02 else idx - 1
        if not 0 <= pick < len(cands):
            raise SwError(0x6A82, "no further occurrence")
    return cands[pick][1], cands[pick][0]


def cmd_select(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """SELECT (ISO 7816-4:2020 §11.2.2): P1 00/01/02/03/04/08/09; P2 response 00 FCI, 04 FCP, 0C none."""
    p1, p2, data = apdu.p1, apdu.p2, apdu.data
    kind, occurrence = p2 & 0xFC, p2 & 0x03
    if kind not in (0x00, 0x04, 0x0C) or (occurrence and p1 != 0x04):
        raise SwError(0x6A86, f"P2 {p2:02X} not supported")
    app: Application | None = None
    aid: bytes | None = None
    target: FileNode | None
    if p1 == 0x00:
        target = card.mf if not data else _find_by_fid(ch, _fid(data))
    elif p1 in (0x01, 0x02):
        target = ch.current_df.child(_fid(data))
        if target is None or target.is_df != (p1 == 0x01):
            raise SwError(0x6A82, "no such child")
    elif p1 == 0x03:
        if data:
            raise SwError(0x6A87, "SELECT parent takes no data")
        target = ch.current_df.parent
        if target is None:
            raise SwError(0x6A82, "the MF has no parent")
    elif p1 == 0x04 and not data and card.default_application in card.applications:
        # GPCS 2.3.1 §11.9.2: SELECT by name with no data selects the default (implicitly selectable) application
        target, aid = None, card.default_application
        app = card.applications[aid]
    elif p1 == 0x04:
        target, aid = _by_name(card, ch, data, occurrence)
        app = card.applications.get(aid)
    elif p1 in (0x08, 0x09):
        target = _by_path(card.mf if p1 == 0x08 else ch.current_df, data)
    else:
        raise SwError(0x6A86, f"P1 {p1:02X} not supported")
    keep_app = p1 in (0x00, 0x01, 0x02, 0x03, 0x09) and target is not card.mf
    if app is not None or not keep_app:
        old = ch.app
        if old is not None and old is not app:
            deselect = getattr(old, "deselect", None)
            if callable(deselect):
                deselect(card)
        ch.app, ch.app_aid = app, (aid if app is not None else None)
    if target is not None:
        ch.select(target)
    else:
        ch.current_ef = None
    sw = 0x9000
    if target is not None and target.lcs is Lcs.DEACTIVATED:
        sw = 0x6283
    elif target is not None and target.lcs is Lcs.TERMINATED:
        sw = 0x6285
    if kind == 0x0C:
        return ResponseApdu.of(sw)
    if app is not None:
        return ResponseApdu.of(sw, app.select(card))
    if target is None:
        raise SwError(0x6A82, "no file to describe")
    fcp = build_fcp(target)
    if kind == 0x00:  # FCI: the FCP objects inside '6F' (ISO 7816-4:2020 §7.4.1)
        from cardkit.tlv import ber_decode_one, ber_encode

        inner = ber_decode_one(fcp)[0].value
        fcp = ber_encode(fs.TAG_FCI, inner)
    return ResponseApdu.of(sw, fcp)


def cmd_create_file(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """CREATE FILE (ISO 7816-9:2017 §8.3): data = FCP; the new file becomes current."""
    if apdu.p1 or apdu.p2:
        raise SwError(0x6A86)
    if not apdu.data:
        raise SwError(0x6700)
    parent = ch.current_df
    spec = parse_fcp(apdu.data)
    op = "create-df" if spec.is_df else "create-ef"
    ch.security.require(parent.rules.rule(op), parent, op)
    if not parent.usable:
        raise SwError(0x6985, "the current DF is not operational")
    parent.check_new_child(spec.fid, spec.name, spec.sfi)
    if spec.is_df and parent.depth() + 1 >= fs.MAX_DEPTH:
        raise SwError(0x6A84, "DF nesting too deep")
    node = spec.build()
    card.check_memory(node.memory())
    def attach() -> None:
        parent.attach(node)

    card.eeprom.commit(attach, node.memory())
    ch.select(node)
    log.info("CREATE FILE %s", node.path)
    return ResponseApdu.of(0x9000)


def _target(ch: Channel, apdu: CommandApdu, want: str) -> FileNode:
    """The file a DELETE / ACTIVATE / DEACTIVATE / TERMINATE addresses: a child FID in the data, else current."""
    if apdu.p1 or apdu.p2:
        raise SwError(0x6A86)
    if apdu.data:
        node = ch.current_df.child(_fid(apdu.data))
        if node is None:
            raise SwError(0x6A82, "no such child")
    elif want == "df":
        node = ch.current_df
    elif want == "ef":
        if ch.current_ef is None:
            raise SwError(0x6986, "no current EF")
        node = ch.current_ef
    else:
        node = ch.current_ef or ch.current_df
    if (want == "df" and not node.is_df) or (want == "ef" and node.is_df):
        raise SwError(0x6981, "wrong file type for this command")
    return node


def cmd_delete_file(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """DELETE FILE (ISO 7816-9:2017 §8.4): needs the file's ``delete`` and the parent's ``delete-child``."""
    node = _target(ch, apdu, "any")
    parent = node.parent
    if parent is None:
        raise SwError(0x6985, "the MF cannot be deleted")
    ch.security.require(node.rules.rule("delete"), node.df, "delete")
    ch.security.require(parent.rules.rule("delete-child"), parent, "delete-child")
    card.eeprom.commit(lambda: parent.children.remove(node), 1)
    gone = set(node.walk()) if isinstance(node, DF) else {node}
    for other in card.channels.values():
        if other.current_df in gone or other.current_ef in gone:
            other.select(parent)
    log.info("DELETE FILE %s", node.path)
    return ResponseApdu.of(0x9000)


_LCS_MOVES: dict[int, tuple[str, dict[Lcs, Lcs]]] = {
    # ISO 7816-9:2017 §8.5-8.8 and ISO 7816-4:2020 §7.4.10 state transitions.
    0x44: ("activate", {Lcs.CREATION: Lcs.ACTIVATED, Lcs.INITIALISATION: Lcs.ACTIVATED,
                        Lcs.DEACTIVATED: Lcs.ACTIVATED, Lcs.ACTIVATED: Lcs.ACTIVATED}),
    0x04: ("deactivate", {Lcs.ACTIVATED: Lcs.DEACTIVATED, Lcs.DEACTIVATED: Lcs.DEACTIVATED}),
    0xE6: ("terminate", {s: Lcs.TERMINATED for s in Lcs if s is not Lcs.TERMINATED}),
    0xE8: ("terminate", {s: Lcs.TERMINATED for s in Lcs if s is not Lcs.TERMINATED}),
}


def cmd_lifecycle(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """ACTIVATE (44), DEACTIVATE (04), TERMINATE DF (E6), TERMINATE EF (E8)."""
    op, moves = _LCS_MOVES[apdu.ins]
    node = _target(ch, apdu, {0xE6: "df", 0xE8: "ef"}.get(apdu.ins, "any"))
    ch.security.require(node.rules.rule(op), node.df, op)
    new = moves.get(node.lcs)
    if new is None:
        raise SwError(0x6985, f"cannot {op} a file in state {node.lcs.name}")
    if new is not node.lcs:
        def move() -> None:
            node.lcs = new

        card.eeprom.commit(move, 1)
    return ResponseApdu.of(0x9000)


def cmd_terminate_card(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """TERMINATE CARD USAGE (ISO 7816-9:2017 §8.9): the MF's ``terminate`` rule; irreversible."""
    if apdu.p1 or apdu.p2 or apdu.data:
        raise SwError(0x6A86)
    ch.security.require(card.mf.rules.rule("terminate"), card.mf, "terminate card usage")

    def term() -> None:
        card.terminated = True

    card.eeprom.commit(term, 1)
    log.warning("card %s terminated", card.serial.hex().upper())
    return ResponseApdu.of(0x9000)


def cmd_manage_channel(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """MANAGE CHANNEL (ISO 7816-4:2020 §11.1.2): P1 00 open (P2 00 = card assigns), P1 80 close P2."""
    if apdu.data:
        raise SwError(0x6700)
    if apdu.p1 == 0x00:
        if apdu.p2 == 0:
            free = [n for n in range(1, _CHANNELS) if n not in card.channels]
            if not free:
                raise SwError(0x6A81, "no logical channel available")
            number = free[0]
        else:
            number = apdu.p2
            if not 1 <= number < _CHANNELS:
                raise SwError(0x6A86)
            if number in card.channels:
                raise SwError(0x6985, f"channel {number} already open")
        new = card.new_channel(number)
        if ch.number != 0:  # opened from another channel: inherit its current DF and EF
            new.current_df, new.current_ef = ch.current_df, ch.current_ef
        card.channels[number] = new
        return ResponseApdu.of(0x9000, bytes((number,)) if apdu.p2 == 0 else b"")
    if apdu.p1 == 0x80:
        number = apdu.p2 or ch.number
        if not 1 <= number < _CHANNELS:
            raise SwError(0x6A86, "the basic channel cannot be closed")
        if number not in card.channels:
            raise SwError(0x6A88, f"channel {number} is not open")
        del card.channels[number]
        return ResponseApdu.of(0x9000)
    raise SwError(0x6A86)


def cmd_get_data(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """GET DATA (ISO 7816-4:2020 §11.4.3), even INS: P1-P2 = tag; answers the value."""
    if apdu.data:
        raise SwError(0x6A80)
    tag = (apdu.p1 << 8) | apdu.p2
    if tag == 0x5F52:
        value = card.atr[5:-1]
    elif tag == 0x0045:
        value = card.serial
    else:
        got = card.data_objects.get(tag)
        if got is None:
            raise SwError(0x6A88, f"no data object {tag:04X}")
        value = got
    return ResponseApdu.of(0x9000, value)


def cmd_put_data(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """PUT DATA (ISO 7816-4:2020 §11.4.6), even INS: P1-P2 = tag; issuer only; empty data deletes."""
    tag = (apdu.p1 << 8) | apdu.p2
    if tag in _READONLY_DOS:
        raise SwError(0x6985, "read-only data object")
    if tag not in _WRITABLE_DOS:
        raise SwError(0x6A88, f"data object {tag:04X} not supported")
    ch.security.require(Issuer(), card.mf, "PUT DATA")
    if len(apdu.data) > _MAX_DO:
        raise SwError(0x6700)
    value = apdu.data

    def put() -> None:
        if value:
            card.data_objects[tag] = value
        else:
            card.data_objects.pop(tag, None)

    card.eeprom.commit(put, len(value) or 1)
    return ResponseApdu.of(0x9000)


_COMMANDS: dict[int, Handler] = {
    0xA4: cmd_select,
    0xB0: fs.cmd_read_binary,
    0xD6: fs.cmd_update_binary,
    0xD0: fs.cmd_write_binary,
    0x0E: fs.cmd_erase_binary,
    0xB2: fs.cmd_read_record,
    0xDC: fs.cmd_update_record,
    0xE2: fs.cmd_append_record,
    0xA2: fs.cmd_search_record,
    0xCA: cmd_get_data,
    0xDA: cmd_put_data,
    0x20: security.cmd_verify,
    0x24: security.cmd_change_reference_data,
    0x2C: security.cmd_reset_retry_counter,
    0x84: security.cmd_get_challenge,
    0x82: security.cmd_authenticate,
    0x70: cmd_manage_channel,
    0xE0: cmd_create_file,
    0xE4: cmd_delete_file,
    0x44: cmd_lifecycle,
    0x04: cmd_lifecycle,
    0xE6: cmd_lifecycle,
    0xE8: cmd_lifecycle,
    0xFE: cmd_terminate_card,
    0xD8: security.cmd_put_key,
}
