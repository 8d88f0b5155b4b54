"""Answer-to-reset: parse, explain and identify (ISO/IEC 7816-3:2006 §8, ISO/IEC 7816-4:2020 §8.1.1).

:class:`Atr` parses strictly (lengths consistent, TCK present exactly when a protocol other than T=0 is
indicated, and correct) and explains every byte for a technician. :class:`AtrList` identifies a card from a
list of ATR patterns in the format of pcsc-tools' ``smartcard_list.txt``.

The ATR as delivered by a reader is already in logical values: TS '3F' (inverse convention) is reported,
not undone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from cardkit.errors import AtrError, TlvError
from cardkit.tags import COMPACT_TAGS, explain_compact
from cardkit.tlv import compact_decode

logger = logging.getLogger(__name__)

__all__ = ["DI_TABLE", "FI_TABLE", "SYSTEM_ATR_LIST", "Atr", "AtrEntry", "AtrList", "InterfaceBytes",
           "PcscStorageCard"]

# ISO 7816-3:2006 §8.1: TS then at most 32 characters.
MAX_ATR_LENGTH = 33
# ISO 7816-3:2006 §8.1: TS '3B' direct convention, '3F' inverse convention.
TS_DIRECT, TS_INVERSE = 0x3B, 0x3F
# A reader that decoded an inverse-convention TS with direct convention sees '03'.
_TS_MISREAD_INVERSE = 0x03
# ISO 7816-3:2006 §8.3, Table 7: FI -> (Fi, f(max) in MHz). Other values are RFU.
FI_TABLE: Mapping[int, tuple[int, float]] = MappingProxyType({
    0x0: (372, 4.0), 0x1: (372, 5.0), 0x2: (558, 6.0), 0x3: (744, 8.0), 0x4: (1116, 12.0),
    0x5: (1488, 16.0), 0x6: (1860, 20.0), 0x9: (512, 5.0), 0xA: (768, 7.5), 0xB: (1024, 10.0),
    0xC: (1536, 15.0), 0xD: (2048, 20.0),
})
# ISO 7816-3:2006 §8.3, Table 8: DI -> Di. Other values are RFU.
DI_TABLE: Mapping[int, int] = MappingProxyType({
    0x1: 1, 0x2: 2, 0x3: 4, 0x4: 8, 0x5: 16, 0x6: 32, 0x7: 64, 0x8: 12, 0x9: 20,
})
# ISO 7816-3:2006 §8.3: without TA1, Fi = 372, Di = 1, f(max) = 5 MHz (the values of TA1 = '11').
DEFAULT_TA1 = 0x11
# ISO 7816-3:2006 §10.2: WI default 10; §11.4: IFSC default 32, CWI 13, BWI 4.
DEFAULT_WI, DEFAULT_IFSC, DEFAULT_CWI, DEFAULT_BWI = 10, 32, 13, 4
# ISO 7816-3:2006 §8.3 Table 9 (clock stop indicator X in the first TA for T=15).
_CLOCK_STOP = {0: "not supported", 1: "state L", 2: "state H", 3: "no preference"}
# ISO 7816-3:2006 §8.3 Table 10 (class indicator Y in the first TA for T=15): bit -> class.
_CLASSES = ((0x01, "A (5 V)"), (0x02, "B (3 V)"), (0x04, "C (1.8 V)"))

# ISO 7816-4:2020 §8.1.1.1: category indicator (first historical byte).
CATEGORY_STATUS_AT_END = 0x00  # COMPACT-TLV objects, then LCS + SW1-SW2 (3 bytes, not TLV)
CATEGORY_DIR_REFERENCE = 0x10  # next byte is a DIR data reference
CATEGORY_COMPACT_TLV = 0x80    # COMPACT-TLV objects; a status indicator may be one of them
# PC/SC Part 3 §3.1.3.2.3.1 and its supplement: storage cards seen by a contactless reader.
PCSC_RID = bytes.fromhex("A000000306")
_PCSC_STANDARDS = {0x03: "ISO/IEC 14443 A, part 3"}
_PCSC_CARD_NAMES = {0x0001: "MIFARE Classic 1K", 0x0002: "MIFARE Classic 4K", 0x0003: "MIFARE Ultralight",
                    0x0026: "MIFARE Mini"}

# pcsc-tools' list, read when present; never downloaded.
SYSTEM_ATR_LIST = Path("/usr/share/pcsc/smartcard_list.txt")


@dataclass(frozen=True)
class InterfaceBytes:
    """Interface bytes of group ``index`` (TAi, TBi, TCi, TDi), ISO 7816-3:2006 §8.2.3."""

    index: int
    ta: int | None = None
    tb: int | None = None
    tc: int | None = None
    td: int | None = None

    @property
    def next_protocol(self) -> int | None:
        """The protocol T announced by TDi (bits 4-1), or None without TDi."""
        return None if self.td is None else self.td & 0x0F


@dataclass(frozen=True)
class PcscStorageCard:
    """A storage card as described by a PC/SC v2 contactless reader (PC/SC Part 3 §3.1.3.2.3.1)."""

    rid: bytes
    standard: int
    card_name: int

    @property
    def standard_name(self) -> str | None:
        return _PCSC_STANDARDS.get(self.standard)

    @property
    def card_name_text(self) -> str | None:
        return _PCSC_CARD_NAMES.get(self.card_name)


def _hex(b: bytes) -> str:
    return b.hex(" ").upper()


@dataclass(frozen=True)
class Atr:
    """A parsed answer-to-reset (ISO 7816-3:2006 §8.2). Build with :meth:`parse`."""

    raw: bytes
    ts: int
    t0: int
    interface: tuple[InterfaceBytes, ...]
    historical: bytes
    tck: int | None

    # ------------------------------------------------------------------------------------ parsing

    @classmethod
    def parse(cls, raw: bytes) -> Atr:
        """Parse strictly; AtrError (with the offset) on any inconsistency."""
        if isinstance(raw, (bytearray, memoryview)):
            raw = bytes(raw)
        if not isinstance(raw, bytes):
            raise AtrError(f"ATR must be bytes, not {type(raw).__name__}")
        n = len(raw)
        if n < 2:
            raise AtrError("ATR too short: TS and T0 are mandatory", offset=n)
        if n > MAX_ATR_LENGTH:
            raise AtrError(f"ATR of {n} bytes exceeds {MAX_ATR_LENGTH} (TS + 32 characters)",
                           offset=MAX_ATR_LENGTH)
        ts = raw[0]
        if ts not in (TS_DIRECT, TS_INVERSE):
            hint = (" (an inverse-convention TS read with direct convention)"
                    if ts == _TS_MISREAD_INVERSE else "")
            raise AtrError(f"TS '{ts:02X}' is neither '3B' (direct) nor '3F' (inverse){hint}", offset=0)
        t0 = raw[1]
        y, k = t0 >> 4, t0 & 0x0F
        pos, index = 2, 1
        groups: list[InterfaceBytes] = []
        needs_tck = False
        while True:
            values: list[int | None] = []
            for bit, label in ((0x1, "TA"), (0x2, "TB"), (0x4, "TC"), (0x8, "TD")):
                if y & bit:
                    if pos >= n:
                        raise AtrError(f"truncated ATR: {label}{index} announced but missing", offset=pos)
                    values.append(raw[pos])
                    pos += 1
                else:
                    values.append(None)
            group = InterfaceBytes(index, *values)
            groups.append(group)
            if group.td is None:
                break
            t = group.td & 0x0F
            if index == 1 and t == 0x0F:
                # ISO 7816-3:2006 §8.2.3: T=15 is invalid in TD1.
                raise AtrError("TD1 indicates T=15, which is invalid in TD1", offset=pos - 1)
            if t != 0:
                needs_tck = True
            y = group.td >> 4
            index += 1
        if pos + k > n:
            raise AtrError(f"truncated ATR: {k} historical bytes announced, {n - pos} present", offset=pos)
        historical = raw[pos:pos + k]
        pos += k
        tck: int | None = None
        # ISO 7816-3:2006 §8.2.5: TCK is absent if only T=0 is indicated, present otherwise.
        if needs_tck:
            if pos >= n:
                raise AtrError("TCK missing: a protocol other than T=0 is indicated", offset=pos)
            tck = raw[pos]
            check = 0
            for b in raw[1:pos + 1]:
                check ^= b
            if check:
                raise AtrError(f"TCK '{tck:02X}' is wrong (expected '{tck ^ check:02X}')", offset=pos)
            pos += 1
        if pos < n:
            what = ("but only T=0 is indicated, so there is no TCK" if not needs_tck else "after TCK")
            raise AtrError(f"{n - pos} unexpected byte(s) after the historical bytes, {what}", offset=pos)
        # Keep only the groups that carry at least one byte (a TDi announcing nothing leaves an empty one).
        return cls(raw, ts, t0, tuple(g for g in groups if _count(g)), historical, tck)

    @classmethod
    def from_hex(cls, text: str) -> Atr:
        """Parse an ATR written in hex (spaces and colons allowed): for CLI and vector edges."""
        cleaned = re.sub(r"[\s:]", "", text)
        try:
            raw = bytes.fromhex(cleaned)
        except ValueError:
            raise AtrError("ATR text is not hexadecimal") from None
        return cls.parse(raw)

    # --------------------------------------------------------------------------------- accessors

    def group(self, index: int) -> InterfaceBytes | None:
        """Interface bytes of group ``index`` (1-based), or None when absent."""
        for g in self.interface:
            if g.index == index:
                return g
        return None

    def _group_protocol(self, index: int) -> int | None:
        """The protocol T the bytes of group ``index`` >= 3 belong to (T of TD(index-1)); §8.2.3."""
        prev = self.group(index - 1)
        return None if prev is None else prev.next_protocol

    def _first_specific_at(self, t: int, kind: str) -> tuple[int, int] | None:
        """(group index, value) of the first TA/TB/TC (``kind``) specific to protocol ``t`` (§8.2.3)."""
        for g in self.interface:
            value: int | None = getattr(g, kind)
            if value is not None and g.index >= 3 and self._group_protocol(g.index) == t:
                return g.index, value
        return None

    def _first_specific(self, t: int, kind: str) -> int | None:
        found = self._first_specific_at(t, kind)
        return None if found is None else found[1]

    @property
    def convention(self) -> str:
        """'direct' (TS '3B') or 'inverse' (TS '3F'), ISO 7816-3:2006 §8.1."""
        return "direct" if self.ts == TS_DIRECT else "inverse"

    @property
    def protocols(self) -> tuple[int, ...]:
        """Transmission protocols offered, in ATR order; T=0 when TD1 is absent (§8.2.3). T=15 excluded."""
        seen: list[int] = []
        for g in self.interface:
            t = g.next_protocol
            if t is not None and t != 0x0F and t not in seen:
                seen.append(t)
        return tuple(seen) if seen else (0,)

    @property
    def ta1(self) -> int:
        """TA1, or its default '11' when absent (§8.3)."""
        g = self.group(1)
        return DEFAULT_TA1 if g is None or g.ta is None else g.ta

    @property
    def fi(self) -> int:
        """Clock rate conversion integer Fi (Table 7); AtrError when FI is RFU."""
        return self._fi_entry()[0]

    @property
    def f_max_mhz(self) -> float:
        """Maximum clock frequency f(max) in MHz (Table 7); AtrError when FI is RFU."""
        return self._fi_entry()[1]

    def _fi_entry(self) -> tuple[int, float]:
        code = self.ta1 >> 4
        entry = FI_TABLE.get(code)
        if entry is None:
            raise AtrError(f"TA1 '{self.ta1:02X}': FI={code:X} is reserved for future use", offset=2)
        return entry

    @property
    def di(self) -> int:
        """Baud rate adjustment integer Di (Table 8); AtrError when DI is RFU."""
        code = self.ta1 & 0x0F
        value = DI_TABLE.get(code)
        if value is None:
            raise AtrError(f"TA1 '{self.ta1:02X}': DI={code:X} is reserved for future use", offset=2)
        return value

    @property
    def baud_factor(self) -> float:
        """Fi/Di: clock cycles per elementary time unit (ETU) after PPS at TA1's values (§7.1)."""
        return self.fi / self.di

    @property
    def extra_guard_time(self) -> int:
        """N from TC1 (default 0), ISO 7816-3:2006 §8.3."""
        g = self.group(1)
        return 0 if g is None or g.tc is None else g.tc

    @property
    def specific_mode(self) -> int | None:
        """TA2, the specific mode byte, or None (negotiable mode), ISO 7816-3:2006 §8.3."""
        g = self.group(2)
        return None if g is None else g.ta

    @property
    def wi(self) -> int:
        """Waiting time integer for T=0 from TC2 (default 10), ISO 7816-3:2006 §10.2."""
        g = self.group(2)
        return DEFAULT_WI if g is None or g.tc is None else g.tc

    @property
    def ifsc(self) -> int:
        """T=1 IFSC from the first TA for T=1 (default 32), ISO 7816-3:2006 §11.4.2."""
        ta = self._first_specific(1, "ta")
        return DEFAULT_IFSC if ta is None else ta

    @property
    def t1_waiting_integers(self) -> tuple[int, int]:
        """(BWI, CWI) from the first TB for T=1 (defaults 4, 13), ISO 7816-3:2006 §11.4.3."""
        tb = self._first_specific(1, "tb")
        return (DEFAULT_BWI, DEFAULT_CWI) if tb is None else (tb >> 4, tb & 0x0F)

    @property
    def t1_error_detection(self) -> str:
        """'LRC' or 'CRC' from the first TC for T=1 bit 1 (default LRC), ISO 7816-3:2006 §11.4.4."""
        tc = self._first_specific(1, "tc")
        return "CRC" if tc is not None and tc & 0x01 else "LRC"

    @property
    def classes(self) -> tuple[str, ...]:
        """Supply classes from the first TA for T=15 (Table 10); () when not indicated."""
        ta = self._first_specific(15, "ta")
        if ta is None:
            return ()
        return tuple(label for bit, label in _CLASSES if ta & 0x3F & bit)

    @property
    def clock_stop(self) -> str | None:
        """Clock stop indicator from the first TA for T=15 (Table 9), or None."""
        ta = self._first_specific(15, "ta")
        return None if ta is None else _CLOCK_STOP[ta >> 6]

    # ------------------------------------------------------------------------- historical bytes

    @property
    def category_indicator(self) -> int | None:
        """The first historical byte (ISO 7816-4:2020 §8.1.1.1), or None without historical bytes."""
        return self.historical[0] if self.historical else None

    @property
    def historical_objects(self) -> list[tuple[int, bytes]]:
        """COMPACT-TLV objects of the historical bytes, as (tag nibble, value) (ISO 7816-4:2020 §8.1.1).

        Category '80': all objects after the indicator. Category '00': the objects, then the mandatory
        3-byte status (LCS, SW1-SW2) reported as a status indicator object ``(8, ...)``. Category '10',
        proprietary categories and PC/SC storage-card bytes: ``[]``. AtrError when not valid COMPACT-TLV.
        """
        cat = self.category_indicator
        if self.pcsc_storage_card is not None:
            return []  # PC/SC storage-card layout, not COMPACT-TLV: see pcsc_storage_card
        body_at = 2 + sum(_count(g) for g in self.interface) + 1  # offset of the 2nd historical byte
        try:
            if cat == CATEGORY_COMPACT_TLV:
                return compact_decode(self.historical[1:])
            if cat == CATEGORY_STATUS_AT_END:
                if len(self.historical) < 4:
                    raise AtrError("category '00' needs a 3-byte status indicator at the end",
                                   offset=body_at - 1)
                return [*compact_decode(self.historical[1:-3]), (0x8, self.historical[-3:])]
        except TlvError as exc:
            where = None if exc.offset is None else body_at + exc.offset
            reason = str(exc).removesuffix(f" (at byte {exc.offset})")
            raise AtrError(f"historical bytes are not valid COMPACT-TLV: {reason}", offset=where) from None
        return []

    @property
    def dir_data_reference(self) -> int | None:
        """The DIR data reference when the category indicator is '10' (ISO 7816-4:2020 §8.1.1.4)."""
        if self.category_indicator == CATEGORY_DIR_REFERENCE and len(self.historical) >= 2:
            return self.historical[1]
        return None

    @property
    def pcsc_storage_card(self) -> PcscStorageCard | None:
        """The storage-card description a PC/SC v2 contactless reader puts in the historical bytes.

        Format (PC/SC Part 3 §3.1.3.2.3.1): '80' '4F' len RID(5) SS NN NN 00 00 00 00.
        """
        h = self.historical
        if len(h) >= 11 and h[0] == 0x80 and h[1] == 0x4F and h[2] == len(h) - 3 and h[3:8] == PCSC_RID:
            return PcscStorageCard(h[3:8], h[8], int.from_bytes(h[9:11], "big"))
        return None

    # ------------------------------------------------------------------------------ explanation

    def describe(self) -> list[str]:
        """Human-readable explanation, one line per fact."""
        lines = [f"ATR: {_hex(self.raw)}",
                 f"TS = {self.ts:02X}: {self.convention} convention",
                 f"T0 = {self.t0:02X}: {_announces(self.t0 >> 4, 1)}; {self.t0 & 0x0F} historical byte(s)"]
        for g in self.interface:
            for kind in ("ta", "tb", "tc", "td"):
                value = getattr(g, kind)
                if value is not None:
                    lines.append(f"{kind.upper()}{g.index} = {value:02X}: {self._explain(g.index, kind, value)}")
        lines.append(f"Protocols offered: {', '.join(f'T={t}' for t in self.protocols)}")
        if self.historical:
            lines.append(f"Historical bytes ({len(self.historical)}): {_hex(self.historical)}")
            lines.extend("  " + line for line in self._explain_historical())
        if self.tck is not None:
            lines.append(f"TCK = {self.tck:02X}: correct")
        return lines

    def _explain(self, index: int, kind: str, v: int) -> str:
        if kind == "td":
            return f"{_announces(v >> 4, index + 1)}; protocol T={v & 0x0F}"
        if index == 1:
            if kind == "ta":
                try:
                    return (f"Fi = {self.fi}, Di = {self.di}, f(max) = {self.f_max_mhz:g} MHz; "
                            f"{self.baud_factor:g} clock cycles per ETU")
                except AtrError as exc:
                    return f"FI/DI reserved for future use ({exc.args[0]})"
            if kind == "tb":
                return "deprecated programming-voltage byte" + (" (VPP not connected)" if v == 0 else "")
            return (f"extra guard time N = {v}" +
                    (" (minimum guard time: 12 ETU for T=0, 11 ETU for T=1)" if v == 0xFF else ""))
        if index == 2 and kind != "tc":
            if kind == "tb":
                return "deprecated programming-voltage byte"
            change = "unable" if v & 0x80 else "capable"
            params = "implicit parameters" if v & 0x10 else "parameters from the interface bytes"
            return f"specific mode T={v & 0x0F}, {change} to change to negotiable mode, {params}"
        if index == 2:
            return f"T=0 waiting time integer WI = {v}"
        t = self._group_protocol(index)
        if t == 1 and self._first_is(index, t, kind):
            if kind == "ta":
                return f"T=1 IFSC = {v}" + (" (RFU)" if v in (0x00, 0xFF) else "")
            if kind == "tb":
                return f"T=1 BWI = {v >> 4}, CWI = {v & 0x0F}"
            return f"T=1 error detection code: {'CRC' if v & 0x01 else 'LRC'}"
        if t == 15 and self._first_is(index, t, kind):
            if kind == "ta":
                classes = ", ".join(self.classes) or "none indicated"
                return f"T=15 clock stop: {_CLOCK_STOP[v >> 6]}; classes: {classes}"
            if kind == "tb":
                return "T=15 SPU (use of C6): " + ("not used" if v == 0 else
                                                   "proprietary" if v & 0x80 else "standard")
        return f"specific to T={t}"

    def _first_is(self, index: int, t: int, kind: str) -> bool:
        found = self._first_specific_at(t, kind)
        return found is not None and found[0] == index

    def _explain_historical(self) -> list[str]:
        cat = self.category_indicator
        if cat is None:
            return []
        card = self.pcsc_storage_card
        if card is not None:
            std = card.standard_name or "standard not known to cardkit"
            nm = card.card_name_text or "card name not known to cardkit"
            return [f"PC/SC contactless storage card: RID {_hex(card.rid)}, standard {card.standard:02X} "
                    f"({std}), card name {card.card_name:04X} ({nm})"]
        if cat == CATEGORY_DIR_REFERENCE:
            ref = self.dir_data_reference
            return [f"category indicator 10: DIR data reference {'missing' if ref is None else f'{ref:02X}'}"]
        if cat not in (CATEGORY_COMPACT_TLV, CATEGORY_STATUS_AT_END):
            kind = "reserved for future use" if 0x81 <= cat <= 0x8F else "proprietary format"
            return [f"category indicator {cat:02X}: {kind}"]
        lines = [f"category indicator {cat:02X}: COMPACT-TLV data objects" +
                 (", status at the end" if cat == CATEGORY_STATUS_AT_END else "")]
        try:
            objects = self.historical_objects
        except AtrError as exc:
            return [*lines, f"not valid COMPACT-TLV: {exc}"]
        for tag, value in objects:
            label = COMPACT_TAGS.get(tag, "unknown tag")
            text = value.decode("ascii") if value and all(0x20 <= b < 0x7F for b in value) else None
            lines.append(f"{tag:X} {label} ({len(value)}): {_hex(value)}" + (f'  "{text}"' if text else ""))
            lines.extend("    " + d for d in explain_compact(tag, value))
        return lines

    def to_dict(self) -> dict[str, object]:
        """JSON-able summary: byte values as upper-case hex strings, quantities as numbers."""
        def hx(v: int | None) -> str | None:
            return None if v is None else f"{v:02X}"

        out: dict[str, object] = {
            "atr": self.raw.hex().upper(), "ts": hx(self.ts), "convention": self.convention,
            "t0": hx(self.t0),
            "interface": [{"index": g.index, "ta": hx(g.ta), "tb": hx(g.tb), "tc": hx(g.tc), "td": hx(g.td)}
                          for g in self.interface],
            "historical": self.historical.hex().upper(), "tck": hx(self.tck),
            "protocols": list(self.protocols), "category_indicator": hx(self.category_indicator),
        }
        try:
            out.update(fi=self.fi, di=self.di, f_max_mhz=self.f_max_mhz, baud_factor=self.baud_factor)
        except AtrError:
            out.update(fi=None, di=None, f_max_mhz=None, baud_factor=None)
        try:
            out["historical_objects"] = [{"tag": t, "name": COMPACT_TAGS.get(t), "value": v.hex().upper()}
                                         for t, v in self.historical_objects]
        except AtrError as exc:
            out["historical_objects"] = None
            out["historical_error"] = str(exc)
        card = self.pcsc_storage_card
        out["pcsc_storage_card"] = None if card is None else {
            "rid": card.rid.hex().upper(), "standard": hx(card.standard), "standard_name": card.standard_name,
            "card_name": f"{card.card_name:04X}", "card_name_text": card.card_name_text}
        out["description"] = self.describe()
        return out

    def __str__(self) -> str:
        return _hex(self.raw)


def _count(g: InterfaceBytes) -> int:
    return sum(v is not None for v in (g.ta, g.tb, g.tc, g.td))


def _announces(y: int, index: int) -> str:
    present = [f"{name}{index}" for bit, name in ((1, "TA"), (2, "TB"), (4, "TC"), (8, "TD")) if y & bit]
    return ("announces " + " ".join(present)) if present else "no further interface bytes"


# ----------------------------------------------------------------------------------------- AtrList


@dataclass(frozen=True)
class AtrEntry:
    """One ATR pattern and the names of the cards it identifies."""

    pattern: str
    names: tuple[str, ...]
    source: str | None = None
    regex: re.Pattern[str] = field(compare=False, repr=False, default=re.compile(""))

    def matches(self, atr_text: str) -> bool:
        return self.regex.fullmatch(atr_text) is not None


def _compile(pattern: str) -> re.Pattern[str]:
    # pcsc-tools' syntax: ATR bytes in upper-case hex separated by spaces, '.' any character, and regular
    # expression classes such as [0-9] or .*; the whole ATR string must match.
    return re.compile(pattern, re.IGNORECASE)


class AtrList:
    """ATR patterns -> card names, in the format of pcsc-tools' smartcard_list.txt.

    Format: a pattern line (``3B 8D 80 01 80 54 .. .. 73``), then tab-indented name lines, then an empty
    line; ``#`` starts a comment line.
    """

    def __init__(self, entries: Iterable[AtrEntry] = ()) -> None:
        self._entries: list[AtrEntry] = list(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[AtrEntry]:
        return iter(self._entries)

    def add(self, pattern: str, *names: str) -> None:
        """Add a pattern with one or more names; AtrError when the pattern is not a valid expression."""
        pattern = " ".join(pattern.split())
        if not pattern:
            raise AtrError("empty ATR pattern")
        if not names:
            raise AtrError(f"ATR pattern {pattern!r} needs at least one name")
        try:
            regex = _compile(pattern)
        except re.error as exc:
            raise AtrError(f"ATR pattern {pattern!r} is not a valid expression: {exc}") from None
        self._entries.append(AtrEntry(pattern, tuple(names), None, regex))

    def extend(self, other: AtrList) -> None:
        """Append every entry of ``other``."""
        self._entries.extend(other)

    @classmethod
    def parse_text(cls, text: str, *, source: str | None = None) -> AtrList:
        """Parse list text. Invalid entries are logged and skipped (lists come from outside)."""
        where = source or "<text>"
        raw: list[tuple[int, str, list[str]]] = []  # (line, pattern, names)
        for line_no, line in enumerate(text.splitlines(), start=1):
            if line.startswith("#") or not line.strip():
                continue  # blank lines separate entries, but some lists put names after one: keep them
            if line[0] in " \t":
                if raw:
                    raw[-1][2].append(line.strip())
                else:
                    logger.warning("%s:%d: name line without an ATR pattern", where, line_no)
            else:
                raw.append((line_no, " ".join(line.split()), []))
        out = cls()
        for line_no, pattern, names in raw:
            try:
                regex = _compile(pattern)
            except re.error as exc:
                logger.warning("%s:%d: skipping invalid ATR pattern %r: %s", where, line_no, pattern, exc)
                continue
            if not names:
                logger.warning("%s:%d: ATR pattern %r has no name", where, line_no, pattern)
                continue
            out._entries.append(AtrEntry(pattern, tuple(names), source, regex))
        return out

    @classmethod
    def load(cls, path: str | Path) -> AtrList:
        """Read a list file (UTF-8; undecodable bytes replaced)."""
        p = Path(path)
        text = p.read_bytes().decode("utf-8", errors="replace")
        return cls.parse_text(text, source=str(p))

    @classmethod
    def builtin(cls) -> AtrList:
        """cardkit's own list (cardkit/data/atr_list.txt)."""
        text = resources.files("cardkit").joinpath("data/atr_list.txt").read_text(encoding="utf-8")
        return cls.parse_text(text, source="cardkit:data/atr_list.txt")

    @classmethod
    def default(cls, system_list: str | Path | None = SYSTEM_ATR_LIST) -> AtrList:
        """The built-in list, followed by pcsc-tools' list when it is installed (never downloaded)."""
        out = cls.builtin()
        if system_list is not None:
            path = Path(system_list)
            if path.is_file():
                try:
                    out.extend(cls.load(path))
                except OSError as exc:
                    logger.warning("cannot read %s: %s", path, exc)
        return out

    def match(self, atr: bytes | Atr) -> list[str]:
        """Names of every entry matching ``atr``, in list order, without duplicates."""
        if isinstance(atr, Atr):
            atr = atr.raw
        if not isinstance(atr, (bytes, bytearray, memoryview)):
            raise AtrError(f"ATR must be bytes, not {type(atr).__name__}")
        text = _hex(bytes(atr))
        out: list[str] = []
        for entry in self._entries:
            if entry.matches(text):
                out.extend(name for name in entry.names if name not in out)
        return out
