"""The virtual card's file tree: MF, DFs and EFs, their FCPs, and the data operations on EFs.

Structures follow ISO/IEC 7816-4:2020 §7 (files): a DF has a file identifier (FID), an optional DF name
(1..16 bytes, e.g. an AID), children, and the PINs and keys it owns; an EF is transparent, linear fixed,
linear variable or cyclic, may have a short EF identifier (SFI 1..30) and has a life-cycle status (§7.4.10).

The FCP template (``62``, §7.4.3 Table 12) holds ``80`` size, ``82`` file descriptor, ``83`` FID, ``84`` DF
name, ``88`` SFI, ``8A`` life-cycle status and ``AB`` the security attribute (expanded format, see
:mod:`cardkit.acl`). :func:`parse_fcp` is what CREATE FILE runs on its command data.

Building a tree in Python (:meth:`DF.add_df`, :meth:`DF.add_ef`) bypasses access control: it stands for the
card manufacturer's or an image loader's work. Card commands go through :mod:`cardkit.virtual.card`.

Failures the card answers with a status word are raised as :class:`SwError` (internal to the card OS).

READ BINARY answers 6282 when the end of the file comes before Ne bytes — except for Le = 00 / 0000 ("as many
as available", ISO 7816-4:2020 §5.1), which answers what is there with 9000. WRITE BINARY ORs the data in
(data coding byte 41). Linear fixed and cyclic records must have exactly the record size (else 6700).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cardkit.acl import AccessRules, AclError, decode_compact, decode_expanded, encode_expanded
from cardkit.apdu import LE_MAX_EXTENDED, LE_MAX_SHORT, CommandApdu, ResponseApdu
from cardkit.errors import CardkitError, TlvError
from cardkit.tlv import ber_decode, ber_encode

if TYPE_CHECKING:
    from cardkit.virtual.card import Channel, VirtualCard
    from cardkit.virtual.faults import Eeprom
    from cardkit.virtual.security import KeyObject, PinObject

__all__ = [
    "DF",
    "EF",
    "MF_FID",
    "EfType",
    "FileNode",
    "FileSpec",
    "Lcs",
    "SwError",
    "VirtualCardError",
    "build_fcp",
    "parse_fcp",
]

log = logging.getLogger(__name__)


class VirtualCardError(CardkitError):
    """The virtual card was built or configured wrongly (Python-level API, images)."""


class SwError(VirtualCardError):
    """Inside the card OS: stop processing and answer status word ``sw``."""

    def __init__(self, sw: int, reason: str = "") -> None:
        self.sw = sw
        self.reason = reason
        super().__init__(f"{sw:04X}{': ' + reason if reason else ''}")


# ISO 7816-4:2020 §7.1.1: '3F00' is the MF; '3FFF' (path from current DF) and 'FFFF' are reserved.
MF_FID = 0x3F00
_RESERVED_FIDS = frozenset({0x3F00, 0x3FFF, 0xFFFF})
# ISO 7816-4:2020 §7.4.3 Table 12 (FCP data objects).
TAG_FCP = 0x62
TAG_FCI = 0x6F
TAG_SIZE = 0x80
TAG_TOTAL = 0x81
TAG_DESCRIPTOR = 0x82
TAG_FID = 0x83
TAG_NAME = 0x84
TAG_PROP = 0x85
TAG_SFI = 0x88
TAG_LCS = 0x8A
TAG_COMPACT = 0x8C
TAG_PROP_T = 0xA5
TAG_EXPANDED = 0xAB
# ISO 7816-4:2020 §7.4.5 (file descriptor byte): b6-b4 = 111 DF; 000 working EF, 001 internal EF.
FDB_DF = 0x38
# ISO 7816-4:2020 §7.4.5 (data coding byte): b7-b6 = 10 "write OR", b4-b1 = 0001 one-byte data units.
DCB = 0x41
# ISO 7816-4:2020 §7.3.1: record numbers 01..FE.
MAX_RECORDS = 254
MAX_RECORD_SIZE = 255
# READ/UPDATE BINARY P1-P2 offset: 15 bits (ISO 7816-4:2020 §11.3.3).
MAX_TRANSPARENT = 0x8000
MAX_NAME = 16  # ISO 7816-4:2020 §7.1.1: DF names of 1 to 16 bytes
MAX_DEPTH = 8  # this card: DF nesting limit
FILE_OVERHEAD = 16  # this card: bytes of memory every file costs beyond its data


class Lcs(enum.IntEnum):
    """Life-cycle status byte (ISO 7816-4:2020 §7.4.10)."""

    CREATION = 0x01
    INITIALISATION = 0x03
    ACTIVATED = 0x05  # operational state, activated
    DEACTIVATED = 0x04  # operational state, deactivated
    TERMINATED = 0x0C  # termination state (0C..0F)

    @classmethod
    def from_byte(cls, b: int) -> Lcs:
        if 0x0C <= b <= 0x0F:
            return cls.TERMINATED
        if b in (0x07, 0x06):  # ISO 7816-4:2020 §7.4.10: b2 may be set (proprietary) in operational states
            return cls.ACTIVATED if b & 0x01 else cls.DEACTIVATED
        try:
            return cls(b)
        except ValueError:
            raise SwError(0x6A80, f"life-cycle status {b:02X} not supported") from None


class EfType(enum.Enum):
    """EF structures and their file descriptor byte (ISO 7816-4:2020 §7.4.5, b3-b1)."""

    TRANSPARENT = 0x01
    LINEAR_FIXED = 0x02
    LINEAR_VARIABLE = 0x04
    CYCLIC = 0x06

    @property
    def is_record(self) -> bool:
        return self is not EfType.TRANSPARENT


@dataclass(eq=False)
class FileNode:
    """A file of the tree (identity semantics: two nodes are the same file only if they are the same object)."""

    fid: int | None
    rules: AccessRules = field(default_factory=AccessRules)
    lcs: Lcs = Lcs.ACTIVATED
    parent: DF | None = field(default=None, repr=False)

    @property
    def is_df(self) -> bool:
        return isinstance(self, DF)

    @property
    def df(self) -> DF:
        """The DF whose rules scope this file: itself for a DF, the parent for an EF."""
        if isinstance(self, DF):
            return self
        if self.parent is None:
            raise VirtualCardError("EF without a parent")
        return self.parent

    def ancestors(self) -> Iterator[DF]:
        """Parents from the nearest up to the MF."""
        p = self.parent
        while p is not None:
            yield p
            p = p.parent

    @property
    def path(self) -> str:
        """``3F00/5000/5001`` — for logs and errors."""
        parts = [f"{n.fid:04X}" if n.fid is not None else "?" for n in (*reversed(list(self.ancestors())), self)]
        return "/".join(parts)

    @property
    def usable(self) -> bool:
        """Operational activated (or creation/initialisation), and so are all its parents."""
        return all(n.lcs not in (Lcs.DEACTIVATED, Lcs.TERMINATED) for n in (self, *self.ancestors()))

    def memory(self) -> int:
        return FILE_OVERHEAD


@dataclass(eq=False)
class DF(FileNode):
    """A dedicated file (the MF is the DF without parent)."""

    name: bytes | None = None
    children: list[FileNode] = field(default_factory=list, repr=False)
    pins: dict[int, PinObject] = field(default_factory=dict, repr=False)
    puks: dict[int, PinObject] = field(default_factory=dict, repr=False)
    keys: dict[int, KeyObject] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ tree
    def child(self, fid: int) -> FileNode | None:
        for c in self.children:
            if c.fid == fid:
                return c
        return None

    def child_by_sfi(self, sfi: int) -> EF | None:
        for c in self.children:
            if isinstance(c, EF) and c.sfi == sfi:
                return c
        return None

    def walk(self) -> Iterator[FileNode]:
        """This DF and everything below it, depth first (pre-order)."""
        stack: list[FileNode] = [self]
        while stack:
            node = stack.pop()
            yield node
            if isinstance(node, DF):
                stack.extend(reversed(node.children))

    def root(self) -> DF:
        node: DF = self
        while node.parent is not None:
            node = node.parent
        return node

    def depth(self) -> int:
        return sum(1 for _ in self.ancestors())

    def memory(self) -> int:
        secrets = sum(len(o.value) + 8 for d in (self.pins, self.puks, self.keys) for o in d.values())
        return FILE_OVERHEAD + secrets

    def check_new_child(self, fid: int, name: bytes | None, sfi: int | None) -> None:
        """Raise SwError 6A89 / 6A8A when the FID, SFI or DF name is taken (ISO 7816-4:2020 §11.5.2)."""
        if fid == self.fid or self.child(fid) is not None:
            raise SwError(0x6A89, f"file {fid:04X} already exists in {self.path}")
        if sfi is not None and self.child_by_sfi(sfi) is not None:
            raise SwError(0x6A89, f"SFI {sfi} already used in {self.path}")
        if name is not None:
            for node in self.root().walk():
                if isinstance(node, DF) and node.name == name:
                    raise SwError(0x6A8A, "DF name already exists")

    def attach(self, node: FileNode) -> FileNode:
        node.parent = self
        self.children.append(node)
        return node

    # ------------------------------------------------------------------ Python-level building
    def add_df(self, fid: int, *, name: bytes | None = None, rules: AccessRules | None = None,
               lcs: Lcs = Lcs.ACTIVATED) -> DF:
        """Add a child DF directly (no access control). Raises :class:`VirtualCardError` on conflicts."""
        spec = FileSpec(fid=fid, is_df=True, name=name, rules=rules or AccessRules(), lcs=lcs)
        node = self._add(spec)
        assert isinstance(node, DF)
        return node

    def add_ef(self, fid: int, structure: EfType = EfType.TRANSPARENT, *, size: int = 0, record_size: int = 0,
               record_count: int = 0, sfi: int | bool | None = True, rules: AccessRules | None = None,
               lcs: Lcs = Lcs.ACTIVATED, data: bytes = b"", records: list[bytes] | None = None) -> EF:
        """Add a child EF directly (no access control). ``sfi=True`` takes the FID's low five bits."""
        if sfi is True:
            sfi = fid & 0x1F if 1 <= fid & 0x1F <= 30 else None
        elif sfi is False:
            sfi = None
        spec = FileSpec(fid=fid, is_df=False, structure=structure, size=size, record_size=record_size,
                        record_count=record_count, sfi=sfi, rules=rules or AccessRules(), lcs=lcs)
        node = self._add(spec)
        assert isinstance(node, EF)
        if data:
            if len(data) > node.size:
                raise VirtualCardError(f"{len(data)} bytes of data do not fit EF {fid:04X} of {node.size} bytes")
            node.data[: len(data)] = data
        for rec in records or []:
            node.check_record(rec)
            if len(node.records) >= node.record_count:
                raise VirtualCardError(f"EF {fid:04X} holds at most {node.record_count} records")
            node.records.append(bytearray(rec))
        return node

    def _add(self, spec: FileSpec) -> FileNode:
        try:
            spec.validate()
            self.check_new_child(spec.fid, spec.name, spec.sfi)
        except SwError as exc:
            raise VirtualCardError(f"cannot add {spec.fid:04X} to {self.path}: {exc.reason}") from None
        return self.attach(spec.build())

    def set_pin(self, ref: int, value: bytes, *, max_tries: int = 3, rules: AccessRules | None = None,
                puk: bool = False) -> PinObject:
        """Store a PIN (or PUK) object in this DF directly."""
        from cardkit.virtual.security import PinObject, check_pin_params

        check_pin_params(ref, value, max_tries)
        obj = PinObject(ref=ref, value=bytes(value), max_tries=max_tries, tries_left=max_tries,
                        rules=rules or AccessRules(use="always"))
        (self.puks if puk else self.pins)[ref] = obj
        return obj

    def set_key(self, ref: int, alg: object, usage: int, value: bytes, *, max_tries: int = 3,
                rules: AccessRules | None = None) -> KeyObject:
        """Store a key object in this DF directly (``alg`` a :class:`cardkit.crypto.Alg`, ``usage`` 1 or 2)."""
        from cardkit.virtual.security import KeyObject, KeyUsage, check_key_params

        alg_ = check_key_params(ref, alg, usage, value, max_tries)
        obj = KeyObject(ref=ref, alg=alg_, usage=KeyUsage(usage), value=bytes(value), max_tries=max_tries,
                        tries_left=max_tries, rules=rules or AccessRules(use="always"))
        self.keys[ref] = obj
        return obj


@dataclass(eq=False)
class EF(FileNode):
    """An elementary file. Transparent EFs hold ``data``; record EFs hold ``records`` (record 1 first)."""

    structure: EfType = EfType.TRANSPARENT
    sfi: int | None = None
    size: int = 0
    record_size: int = 0
    record_count: int = 0
    data: bytearray = field(default_factory=bytearray, repr=False)
    records: list[bytearray] = field(default_factory=list, repr=False)

    def memory(self) -> int:
        if self.structure is EfType.TRANSPARENT:
            return FILE_OVERHEAD + self.size
        return FILE_OVERHEAD + self.record_size * self.record_count

    def check_record(self, data: bytes) -> None:
        """6700 unless ``data`` fits a record of this EF (fixed size for linear fixed and cyclic)."""
        n = len(data)
        if n == 0 or n > self.record_size:
            raise SwError(0x6700, f"record of {n} bytes, EF takes up to {self.record_size}")
        if self.structure in (EfType.LINEAR_FIXED, EfType.CYCLIC) and n != self.record_size:
            raise SwError(0x6700, f"record of {n} bytes, EF records are {self.record_size} bytes")

    # ------------------------------------------------------------------ transparent
    def _need(self, transparent: bool) -> None:
        if (self.structure is EfType.TRANSPARENT) != transparent:
            raise SwError(0x6981, "command incompatible with the file structure")

    def read_binary(self, offset: int, ne: int, *, warn_short: bool = True) -> tuple[bytes, int]:
        """Up to ``ne`` bytes from ``offset``; SW 6282 when the end came first (ISO 7816-4:2020 §11.3.3).

        ``warn_short`` False (Le = 00 / 0000, "as many as available") answers 9000 for a short read.
        """
        self._need(True)
        if offset >= self.size:
            raise SwError(0x6B00, f"offset {offset} beyond the {self.size}-byte EF")
        out = bytes(self.data[offset : offset + ne])
        return out, (0x6282 if len(out) < ne and warn_short else 0x9000)

    def _check_span(self, offset: int, n: int) -> None:
        if offset >= self.size:
            raise SwError(0x6B00, f"offset {offset} beyond the {self.size}-byte EF")
        if offset + n > self.size:
            raise SwError(0x6A84, f"{n} bytes at offset {offset} do not fit the {self.size}-byte EF")

    def update_binary(self, eeprom: Eeprom, offset: int, data: bytes) -> None:
        self._need(True)
        self._check_span(offset, len(data))
        eeprom.write(self.data, offset, data)

    def write_binary(self, eeprom: Eeprom, offset: int, data: bytes) -> None:
        """WRITE BINARY with the "write OR" behaviour the data coding byte announces (§7.4.5)."""
        self._need(True)
        self._check_span(offset, len(data))
        merged = bytes(a | b for a, b in zip(self.data[offset : offset + len(data)], data, strict=True))
        eeprom.write(self.data, offset, merged)

    def erase_binary(self, eeprom: Eeprom, offset: int, end: int | None) -> None:
        """Set bytes ``offset`` .. ``end`` (exclusive; default end of file) to 00."""
        self._need(True)
        stop = self.size if end is None else end
        if offset >= self.size and not (offset == stop == self.size):
            raise SwError(0x6B00, f"offset {offset} beyond the {self.size}-byte EF")
        if stop < offset or stop > self.size:
            raise SwError(0x6A80, f"erase end {stop} outside {offset}..{self.size}")
        if stop > offset:
            eeprom.write(self.data, offset, bytes(stop - offset))

    # ------------------------------------------------------------------ records
    def record(self, number: int) -> bytearray:
        self._need(False)
        if not 1 <= number <= len(self.records):
            raise SwError(0x6A83, f"record {number} not found")
        return self.records[number - 1]

    def update_record(self, eeprom: Eeprom, number: int, data: bytes) -> None:
        rec = self.record(number)
        self.check_record(data)
        eeprom.write_record(self.records, number - 1, data, old=rec)

    def append_record(self, eeprom: Eeprom, data: bytes) -> None:
        self._need(False)
        self.check_record(data)
        if self.structure is EfType.CYCLIC:
            eeprom.append_record(self.records, data, cyclic_max=self.record_count)
            return
        if len(self.records) >= self.record_count:
            raise SwError(0x6A84, f"EF holds at most {self.record_count} records")
        eeprom.append_record(self.records, data, cyclic_max=None)

    def search(self, start: int, pattern: bytes) -> list[int]:
        """Numbers of the records from ``start`` on that contain ``pattern`` (simple search)."""
        self._need(False)
        return [i for i in range(max(start, 1), len(self.records) + 1) if pattern in self.records[i - 1]]


# ------------------------------------------------------------------------------------------ FCP


@dataclass(frozen=True, slots=True)
class FileSpec:
    """A file to create: what CREATE FILE's FCP says (or the Python-level builder)."""

    fid: int
    is_df: bool
    name: bytes | None = None
    structure: EfType = EfType.TRANSPARENT
    size: int = 0
    record_size: int = 0
    record_count: int = 0
    sfi: int | None = None
    lcs: Lcs = Lcs.ACTIVATED
    rules: AccessRules = field(default_factory=AccessRules)

    def validate(self) -> None:
        """Raise SwError 6A80 for values this card cannot create."""
        if not 0 <= self.fid <= 0xFFFF or self.fid in _RESERVED_FIDS:
            raise SwError(0x6A80, f"file identifier {self.fid:04X} is reserved")
        if self.lcs not in (Lcs.CREATION, Lcs.INITIALISATION, Lcs.ACTIVATED, Lcs.DEACTIVATED):
            raise SwError(0x6A80, "a new file cannot start in termination state")
        if self.is_df:
            if self.name is not None and not 1 <= len(self.name) <= MAX_NAME:
                raise SwError(0x6A80, f"DF name of {len(self.name)} bytes (1..{MAX_NAME})")
            return
        if self.name is not None:
            raise SwError(0x6A80, "an EF has no DF name")
        if self.sfi is not None and not 1 <= self.sfi <= 30:
            raise SwError(0x6A80, f"SFI {self.sfi} outside 1..30")
        if self.structure is EfType.TRANSPARENT:
            if not 0 <= self.size <= MAX_TRANSPARENT:
                raise SwError(0x6A80, f"transparent EF size {self.size} outside 0..{MAX_TRANSPARENT}")
        else:
            if not 1 <= self.record_size <= MAX_RECORD_SIZE:
                raise SwError(0x6A80, f"record size {self.record_size} outside 1..{MAX_RECORD_SIZE}")
            if not 1 <= self.record_count <= MAX_RECORDS:
                raise SwError(0x6A80, f"record count {self.record_count} outside 1..{MAX_RECORDS}")

    def build(self) -> FileNode:
        if self.is_df:
            return DF(fid=self.fid, rules=self.rules, lcs=self.lcs, name=self.name)
        ef = EF(fid=self.fid, rules=self.rules, lcs=self.lcs, structure=self.structure, sfi=self.sfi,
                size=self.size, record_size=self.record_size, record_count=self.record_count)
        if self.structure is EfType.TRANSPARENT:
            ef.data = bytearray(self.size)
        return ef


def build_fcp(node: FileNode) -> bytes:
    """The FCP template ``62`` of ``node`` (ISO 7816-4:2020 §7.4.3 Table 12)."""
    parts: list[bytes] = []
    if isinstance(node, EF):
        if node.structure is EfType.TRANSPARENT:
            parts.append(ber_encode(TAG_SIZE, node.size.to_bytes(2, "big")))
            parts.append(ber_encode(TAG_DESCRIPTOR, bytes((node.structure.value,))))
        else:
            total = node.record_size * node.record_count
            parts.append(ber_encode(TAG_SIZE, total.to_bytes(2, "big")))
            # §7.4.5: FDB, DCB, maximum record size (2 bytes), number of records (1 byte).
            parts.append(ber_encode(TAG_DESCRIPTOR, bytes((node.structure.value, DCB))
                                    + node.record_size.to_bytes(2, "big") + bytes((node.record_count,))))
    else:
        parts.append(ber_encode(TAG_DESCRIPTOR, bytes((FDB_DF,))))
    if node.fid is not None:
        parts.append(ber_encode(TAG_FID, node.fid.to_bytes(2, "big")))
    if isinstance(node, DF) and node.name:
        parts.append(ber_encode(TAG_NAME, node.name))
    if isinstance(node, EF):
        parts.append(ber_encode(TAG_SFI, b"" if node.sfi is None else bytes((node.sfi << 3,))))
    parts.append(ber_encode(TAG_LCS, bytes((int(node.lcs),))))
    parts.append(encode_expanded(node.rules, node.is_df))
    return ber_encode(TAG_FCP, b"".join(parts))


def _int(value: bytes, what: str) -> int:
    if not 1 <= len(value) <= 2:
        raise SwError(0x6A80, f"{what} must be 1 or 2 bytes")
    return int.from_bytes(value, "big")


def parse_fcp(data: bytes) -> FileSpec:
    """Parse CREATE FILE data (an FCP template ``62``). Raises SwError 6A80 for anything this card refuses."""
    try:
        objs = ber_decode(data)
        if len(objs) != 1 or objs[0].tag != TAG_FCP:
            raise SwError(0x6A80, "CREATE FILE data must be one FCP template (62)")
        fields: dict[int, bytes] = {}
        for obj in objs[0].children:
            if obj.tag in fields:
                raise SwError(0x6A80, f"FCP tag {obj.tag:02X} repeated")
            fields[obj.tag] = obj.value
    except TlvError as exc:
        raise SwError(0x6A80, f"FCP is not BER-TLV: {exc}") from None
    known = {TAG_SIZE, TAG_TOTAL, TAG_DESCRIPTOR, TAG_FID, TAG_NAME, TAG_PROP, TAG_SFI, TAG_LCS, TAG_COMPACT,
             TAG_PROP_T, TAG_EXPANDED}
    unknown = set(fields) - known
    if unknown:
        raise SwError(0x6A80, f"FCP tag {min(unknown):02X} not supported")
    fdb_field = fields.get(TAG_DESCRIPTOR)
    if not fdb_field or len(fdb_field) > 6:
        raise SwError(0x6A80, "FCP needs a file descriptor (82) of 1..6 bytes")
    fid_field = fields.get(TAG_FID)
    if fid_field is None or len(fid_field) != 2:
        raise SwError(0x6A80, "FCP needs a two-byte file identifier (83)")
    fid = int.from_bytes(fid_field, "big")
    fdb = fdb_field[0]
    if fdb & 0x80:
        raise SwError(0x6A80, f"file descriptor byte {fdb:02X} has b8 set")
    lcs = Lcs.from_byte(fields[TAG_LCS][0]) if len(fields.get(TAG_LCS, b"")) == 1 else Lcs.ACTIVATED
    if TAG_LCS in fields and len(fields[TAG_LCS]) != 1:
        raise SwError(0x6A80, "life-cycle status (8A) must be one byte")
    is_df = fdb & FDB_DF == FDB_DF
    try:
        if TAG_EXPANDED in fields and TAG_COMPACT in fields:
            raise SwError(0x6A80, "FCP has both compact and expanded security attributes")
        if TAG_EXPANDED in fields:
            rules = decode_expanded(fields[TAG_EXPANDED], is_df)
        elif TAG_COMPACT in fields:
            rules = decode_compact(fields[TAG_COMPACT], is_df)
        else:
            raise SwError(0x6A80, "FCP has no security attribute (AB or 8C): this card creates no unprotected files")
    except AclError as exc:
        raise SwError(0x6A80, f"security attribute: {exc}") from None
    if is_df:
        if TAG_SFI in fields or TAG_SIZE in fields:
            raise SwError(0x6A80, "a DF FCP carries no SFI or size")
        spec = FileSpec(fid=fid, is_df=True, name=fields.get(TAG_NAME), lcs=lcs, rules=rules)
        spec.validate()
        return spec
    if fdb & 0x38 not in (0x00, 0x08):  # §7.4.5: working EF (000) or internal EF (001)
        raise SwError(0x6A80, f"file descriptor byte {fdb:02X}: unsupported file type")
    code = fdb & 0x07
    structure = {1: EfType.TRANSPARENT, 2: EfType.LINEAR_FIXED, 3: EfType.LINEAR_FIXED,
                 4: EfType.LINEAR_VARIABLE, 5: EfType.LINEAR_VARIABLE, 6: EfType.CYCLIC,
                 7: EfType.CYCLIC}.get(code)
    if structure is None:
        raise SwError(0x6A80, f"file descriptor byte {fdb:02X}: no EF structure")
    sfi_field = fields.get(TAG_SFI)
    if sfi_field is None:
        # ISO 7816-4:2020 §7.4.3: without '88' the SFI is the five low bits of the FID.
        sfi: int | None = fid & 0x1F if 1 <= fid & 0x1F <= 30 else None
    elif not sfi_field:
        sfi = None
    elif len(sfi_field) == 1 and sfi_field[0] & 0x07 == 0:
        sfi = sfi_field[0] >> 3  # b8-b4 encode the SFI
    else:
        raise SwError(0x6A80, "SFI (88) must be empty or one byte with b3-b1 = 000")
    size = record_size = record_count = 0
    if structure is EfType.TRANSPARENT:
        raw_size = fields.get(TAG_SIZE, fields.get(TAG_TOTAL))
        if raw_size is None:
            raise SwError(0x6A80, "transparent EF needs a size (80)")
        size = _int(raw_size, "file size")
    else:
        rest = fdb_field[2:]  # after FDB and DCB: record size (1 or 2 bytes), record count (1 or 2 bytes)
        if len(rest) == 3:
            record_size, record_count = int.from_bytes(rest[:2], "big"), rest[2]
        elif len(rest) == 4:
            record_size, record_count = int.from_bytes(rest[:2], "big"), int.from_bytes(rest[2:], "big")
        elif len(rest) == 2:
            record_size, record_count = rest[0], rest[1]
        else:
            raise SwError(0x6A80, "record EF descriptor needs the record size and the number of records")
    spec = FileSpec(fid=fid, is_df=False, structure=structure, size=size, record_size=record_size,
                    record_count=record_count, sfi=sfi, lcs=lcs, rules=rules)
    spec.validate()
    return spec


# ------------------------------------------------------------------------------------ data commands


def _usable(ef: EF) -> None:
    if not ef.usable:
        raise SwError(0x6985, f"{ef.path} is not operational (life-cycle {ef.lcs.name})")


def _binary_target(ch: Channel, p1: int, p2: int, op: str) -> tuple[EF, int]:
    """EF and offset from P1-P2 (ISO 7816-4:2020 §11.3.3): P1 b8=1 → b5-b1 SFI, P2 offset; else 15-bit offset."""
    if p1 & 0x80:
        if p1 & 0x60:
            raise SwError(0x6A86, "P1 b7-b6 must be 00 with an SFI")
        ef = ch.current_df.child_by_sfi(p1 & 0x1F)
        if ef is None:
            raise SwError(0x6A82, f"no EF with SFI {p1 & 0x1F}")
        ch.select(ef)
        offset = p2
    else:
        if ch.current_ef is None:
            raise SwError(0x6986, "no current EF")
        ef, offset = ch.current_ef, (p1 << 8) | p2
    ef._need(True)
    _usable(ef)
    ch.security.require(ef.rules.rule(op), ef.df, op)
    return ef, offset


def _record_target(ch: Channel, p2: int, op: str) -> EF:
    """EF from P2 b8-b4 (ISO 7816-4:2020 §11.4.2): 00000 current EF, 1..30 SFI."""
    sfi = p2 >> 3
    if sfi == 0:
        if ch.current_ef is None:
            raise SwError(0x6986, "no current EF")
        ef = ch.current_ef
    else:
        if sfi == 31:
            raise SwError(0x6A86, "SFI 31 is reserved")
        found = ch.current_df.child_by_sfi(sfi)
        if found is None:
            raise SwError(0x6A82, f"no EF with SFI {sfi}")
        ch.select(found)
        ef = found
    ef._need(False)
    _usable(ef)
    ch.security.require(ef.rules.rule(op), ef.df, op)
    return ef


def _ne(apdu: CommandApdu) -> int:
    if apdu.le is None:
        raise SwError(0x6700, "Le missing")
    return apdu.le


def cmd_read_binary(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """READ BINARY, even INS B0 (ISO 7816-4:2020 §11.3.3)."""
    if apdu.data:
        raise SwError(0x6700)
    ef, offset = _binary_target(ch, apdu.p1, apdu.p2, "read")
    ne = _ne(apdu)
    # ISO 7816-4:2020 §5.1: Le = 00 (or 0000) asks for "as many as available": no 6282 for a short read.
    wildcard = ne == (LE_MAX_EXTENDED if apdu.is_extended else LE_MAX_SHORT)
    data, sw = ef.read_binary(offset, min(ne, card.options.max_response), warn_short=not wildcard)
    return ResponseApdu.of(sw, data)


def cmd_update_binary(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """UPDATE BINARY, even INS D6 (ISO 7816-4:2020 §11.3.5)."""
    if not apdu.data:
        raise SwError(0x6700)
    ef, offset = _binary_target(ch, apdu.p1, apdu.p2, "update")
    ef.update_binary(card.eeprom, offset, apdu.data)
    return ResponseApdu.of(0x9000)


def cmd_write_binary(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """WRITE BINARY, even INS D0 (ISO 7816-4:2020 §11.3.4): OR-ed into the file (data coding byte 41)."""
    if not apdu.data:
        raise SwError(0x6700)
    ef, offset = _binary_target(ch, apdu.p1, apdu.p2, "write")
    ef.write_binary(card.eeprom, offset, apdu.data)
    return ResponseApdu.of(0x9000)


def cmd_erase_binary(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """ERASE BINARY, even INS 0E (ISO 7816-4:2020 §11.3.7): data absent = to the end, else 2-byte end offset."""
    if apdu.data and len(apdu.data) != 2:
        raise SwError(0x6700)
    ef, offset = _binary_target(ch, apdu.p1, apdu.p2, "erase")
    end = int.from_bytes(apdu.data, "big") if apdu.data else None
    ef.erase_binary(card.eeprom, offset, end)
    return ResponseApdu.of(0x9000)


def cmd_read_record(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """READ RECORD, even INS B2 (ISO 7816-4:2020 §11.4.3): P2 b3-b1 = 100, record number in P1."""
    if apdu.p2 & 0x07 != 0x04:
        raise SwError(0x6A86, "only 'record number in P1' (P2 b3-b1 = 100) is supported")
    if apdu.data:
        raise SwError(0x6700)
    _ne(apdu)
    ef = _record_target(ch, apdu.p2, "read")
    return ResponseApdu.of(0x9000, bytes(ef.record(apdu.p1)))


def cmd_update_record(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """UPDATE RECORD, even INS DC (ISO 7816-4:2020 §11.4.5): P2 b3-b1 = 100, record number in P1."""
    if apdu.p2 & 0x07 != 0x04:
        raise SwError(0x6A86, "only 'record number in P1' (P2 b3-b1 = 100) is supported")
    ef = _record_target(ch, apdu.p2, "update")
    ef.update_record(card.eeprom, apdu.p1, apdu.data)
    return ResponseApdu.of(0x9000)


def cmd_append_record(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """APPEND RECORD, INS E2 (ISO 7816-4:2020 §11.4.6): P1 00, P2 b3-b1 = 000."""
    if apdu.p1 or apdu.p2 & 0x07:
        raise SwError(0x6A86)
    ef = _record_target(ch, apdu.p2, "append")
    memory_before = ef.memory()
    ef.append_record(card.eeprom, apdu.data)
    log.debug("APPEND RECORD to %s (%d bytes allocated)", ef.path, memory_before)
    return ResponseApdu.of(0x9000)


def cmd_search_record(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """SEARCH RECORD, INS A2, simple search (ISO 7816-4:2020 §11.4.7): P2 b3-b1 = 100, forward from P1.

    Answers the numbers of the records that contain the search string (empty when none matches).
    """
    if apdu.p2 & 0x07 != 0x04:
        raise SwError(0x6A86, "only the simple forward search (P2 b3-b1 = 100) is supported")
    if not apdu.data:
        raise SwError(0x6700)
    ef = _record_target(ch, apdu.p2, "read")
    return ResponseApdu.of(0x9000, bytes(ef.search(apdu.p1, apdu.data)))
