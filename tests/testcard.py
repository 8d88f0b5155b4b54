"""A small scripted test card (a :class:`~cardkit.transport.virtual.CardLike`) for transport tests.

It stands in for the full virtual card until that exists. Everything it answers is deterministic, so the
tests can compute the expected responses themselves:

* ``00 A4 04 xx`` SELECT by DF name (ISO 7816-4:2020 §11.2.2): :data:`TEST_AID` → 9000, any other → 6A82.
* The proprietary commands below (CLA 80, ISO 7816-4:2020 §5.4.1 "proprietary class") need the test
  application to be selected first, otherwise 6985 (conditions of use not satisfied, §5.6).
  - ``80 10`` ECHO: answers its command data (any length, short or extended) and 9000.
  - ``80 12 P1P2`` LONG: a response of ``P1P2`` bytes (:func:`long_payload`), given out T=0 style in
    pieces of :data:`PIECE` bytes: the command answers ``61xx`` and GET RESPONSE (``00 C0``, §11.6.1)
    gives the next piece, ``61xx`` while more remain (§5.6, ISO 7816-3:2006 §12.2.2).
  - ``80 14`` EXACT: answers ``6C xx`` (wrong Le, xx = the exact length, ISO 7816-3 §12.2.2) unless Le
    equals ``len(EXACT_DATA)``, then the data and 9000.
  - ``80 16`` HASH: answers SHA-256 of its command data (extended APDUs of any length; command chaining
    with CLA b5 set is accepted too, ISO 7816-4:2020 §5.3.3).
* Anything else → 6D00 (instruction not supported); a malformed APDU → 6700 (wrong length).
"""

from __future__ import annotations

import hashlib
import threading
from functools import reduce

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.errors import ApduFormatError

__all__ = [
    "ATR", "ATR_BODY", "EXACT_DATA", "PIECE", "TEST_AID", "ScriptedCard", "long_payload", "tck",
]


def tck(atr_without_tck: bytes) -> int:
    """The ATR check byte: XOR of T0 .. the last historical byte (ISO 7816-3:2006 §8.2.5)."""
    return reduce(lambda a, b: a ^ b, atr_without_tck[1:], 0)


# ISO 7816-3:2006 §8.2: TS=3B (direct convention), T0=8D (TD1 present, 13 historical bytes),
# TD1=80 (TD2 present, T=0), TD2=01 (T=1 — so TCK is present, §8.2.5). Historical bytes
# (ISO 7816-4:2020 §12.1.1): category 80 then COMPACT-TLV: 54 issuer data 01020304; 73 card
# capabilities F6 21 C0 (third byte: command chaining and extended Lc/Le supported, §12.1.1.9);
# 82 status indicator 9000 (§12.1.1.11).
ATR_BODY = bytes.fromhex("3B 8D 80 01 80 54 01 02 03 04 73 F6 21 C0 82 90 00")
ATR = ATR_BODY + bytes((tck(ATR_BODY),))

#: The test application's AID. An RID starting with F is a proprietary, unregistered AID
#: (ISO/IEC 7816-5:2004 §5.1 category 'F'), so it cannot collide with a real application.
TEST_AID = b"\xf0CKIT"
#: Size of each piece the LONG command hands out through GET RESPONSE.
PIECE = 100
#: The data the EXACT command returns when Le is right.
EXACT_DATA = bytes(range(0x30, 0x30 + 23))

_SW_OK = 0x9000
_SW_WRONG_LENGTH = 0x6700          # ISO 7816-4:2020 §5.6 table 6
_SW_CONDITIONS = 0x6985            # conditions of use not satisfied
_SW_NOT_FOUND = 0x6A82             # file or application not found
_SW_INS_NOT_SUPPORTED = 0x6D00
_SW_CLA_NOT_SUPPORTED = 0x6E00
_SW_NO_PRECISE_DIAGNOSIS = 0x6F00


def long_payload(n: int) -> bytes:
    """The deterministic ``n``-byte response of the LONG command."""
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


class ScriptedCard:
    """A deterministic :class:`~cardkit.transport.virtual.CardLike` for transport tests (thread-safe)."""

    def __init__(self, atr: bytes = ATR) -> None:
        self._atr = atr
        self._lock = threading.Lock()
        self.powered = False
        self.selected = False
        self._pending = b""            # response bytes waiting for GET RESPONSE
        self._chain_ins: int | None = None
        self._chain_data = bytearray()
        #: Every C-APDU received, in order (for assertions).
        self.history: list[bytes] = []
        self.power_ons = 0
        self.power_offs = 0

    # ---------------------------------------------------------------- CardLike
    @property
    def atr(self) -> bytes:
        return self._atr

    def power_on(self) -> bytes:
        with self._lock:
            self.powered = True
            self.power_ons += 1
            self._clear()
            return self._atr

    def power_off(self) -> None:
        with self._lock:
            self.powered = False
            self.power_offs += 1
            self._clear()

    def transmit(self, apdu: bytes) -> bytes:
        with self._lock:
            self.history.append(bytes(apdu))
            return self._dispatch(bytes(apdu)).to_bytes()

    # ---------------------------------------------------------------- internals
    def _clear(self) -> None:
        self.selected = False
        self._pending = b""
        self._chain_ins = None
        self._chain_data.clear()

    def _dispatch(self, raw: bytes) -> ResponseApdu:
        if len(raw) >= 2 and raw[1] & 0xF0 in (0x60, 0x90):
            return ResponseApdu.of(_SW_INS_NOT_SUPPORTED)
        try:
            cmd = CommandApdu.from_bytes(raw)
        except ApduFormatError:
            return ResponseApdu.of(_SW_WRONG_LENGTH)
        if cmd.cla == 0xFF:
            return ResponseApdu.of(_SW_CLA_NOT_SUPPORTED)
        if cmd.ins != 0xC0:
            self._pending = b""
        # Command chaining (ISO 7816-4:2020 §5.3.3): collect the pieces, run the command on the last one.
        if cmd.cla & 0x10:
            if self._chain_ins not in (None, cmd.ins):
                self._chain_ins = None
                self._chain_data.clear()
                return ResponseApdu.of(0x6883)  # last command of the chain expected
            self._chain_ins = cmd.ins
            self._chain_data += cmd.data
            return ResponseApdu.of(_SW_OK)
        if self._chain_ins is not None:
            if self._chain_ins != cmd.ins:
                self._chain_ins = None
                self._chain_data.clear()
                return ResponseApdu.of(0x6883)
            cmd = cmd.replace(data=bytes(self._chain_data) + cmd.data, cla=cmd.cla & ~0x10 & 0xFF)
            self._chain_ins = None
            self._chain_data.clear()
        return self._command(cmd)

    def _command(self, cmd: CommandApdu) -> ResponseApdu:
        if cmd.cla & 0x80 == 0 and cmd.ins == 0xA4 and cmd.p1 == 0x04:
            self.selected = cmd.data == TEST_AID
            return ResponseApdu.of(_SW_OK if self.selected else _SW_NOT_FOUND)
        if cmd.cla & 0x80 == 0 and cmd.ins == 0xC0:
            return self._get_response(cmd)
        if cmd.cla & 0xF0 != 0x80 or cmd.ins not in (0x10, 0x12, 0x14, 0x16):
            return ResponseApdu.of(_SW_INS_NOT_SUPPORTED)
        if not self.selected:
            return ResponseApdu.of(_SW_CONDITIONS)
        if cmd.ins == 0x10:
            return ResponseApdu.of(_SW_OK, cmd.data)
        if cmd.ins == 0x12:
            self._pending = long_payload((cmd.p1 << 8) | cmd.p2)
            return self._announce()
        if cmd.ins == 0x14:
            if cmd.le != len(EXACT_DATA):
                return ResponseApdu(b"", 0x6C, len(EXACT_DATA))
            return ResponseApdu.of(_SW_OK, EXACT_DATA)
        return ResponseApdu.of(_SW_OK, hashlib.sha256(cmd.data).digest())

    def _announce(self) -> ResponseApdu:
        if not self._pending:
            return ResponseApdu.of(_SW_OK)
        return ResponseApdu(b"", 0x61, min(len(self._pending), PIECE))

    def _get_response(self, cmd: CommandApdu) -> ResponseApdu:
        if not self._pending or cmd.data:
            return ResponseApdu.of(_SW_CONDITIONS if not self._pending else _SW_WRONG_LENGTH)
        available = min(len(self._pending), PIECE)
        if cmd.le != available:
            return ResponseApdu(b"", 0x6C, available)
        piece, self._pending = self._pending[:available], self._pending[available:]
        status = self._announce()
        return ResponseApdu(piece, status.sw1, status.sw2)
