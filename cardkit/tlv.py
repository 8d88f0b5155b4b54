"""BER-TLV, SIMPLE-TLV and COMPACT-TLV: the data-object encodings of smart cards.

BER-TLV here is the subset ISO/IEC 7816-4:2020 §6.3 uses from ITU-T X.690 §8.1: tags of one to three bytes,
definite lengths of one to five bytes (``84 xx xx xx xx`` at most), no indefinite length. Tags are handled as
the integer of their encoded bytes (``0x9F7F``, ``0x62``, ``0x5F1F``) so they read like the specifications.

Everything is ``bytes`` in and out; hex appears only in :func:`pretty`. Every parsing failure raises
:class:`cardkit.errors.TlvError` with the byte offset where the problem was found.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from cardkit.errors import TlvError
from cardkit.tags import check_context, child_context
from cardkit.tags import name as tag_name

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_LENGTH",
    "MAX_TAG_BYTES",
    "Tlv",
    "ber_build",
    "ber_decode",
    "ber_decode_one",
    "ber_encode",
    "ber_find",
    "ber_to_dict",
    "ber_walk",
    "compact_decode",
    "compact_encode",
    "encode_length",
    "is_constructed",
    "pretty",
    "simple_decode",
    "simple_encode",
    "tag_bytes",
]

# ISO 7816-4:2020 §6.3 (BER-TLV tag fields): at most three bytes.
MAX_TAG_BYTES = 3
# ISO 7816-4:2020 §6.3 (BER-TLV length fields): up to five bytes, '84' followed by four length bytes.
MAX_LENGTH_BYTES = 4
MAX_LENGTH = 0xFFFF_FFFF
# X.690 §8.1.2: bits 8-7 class, bit 6 constructed, bits 5-1 tag number ('1F' = subsequent bytes follow).
_CONSTRUCTED_BIT = 0x20
_TAG_NUMBER_MASK = 0x1F
_MORE_TAG_BYTES = 0x80
# X.690 §8.1.3.6: '80' announces the indefinite form (refused: ISO 7816-4 uses definite lengths only).
_INDEFINITE = 0x80
# ISO 7816-4:2020 §6.3: '00' or 'FF' bytes may occur before, between or after BER-TLV data objects.
_FILLER = (0x00, 0xFF)
# ISO 7816-4:2020 §6.3 (SIMPLE-TLV): tag '01'..'FE'; length one byte '00'..'FE', or 'FF' + two bytes.
_SIMPLE_LONG = 0xFF
_SIMPLE_MAX_LENGTH = 0xFFFF


# ---------------------------------------------------------------------------------------------- tags


def _check_tag_structure(raw: bytes, offset: int = 0) -> None:
    """Check that ``raw`` is one complete BER-TLV tag field (X.690 §8.1.2, ISO 7816-4:2020 §6.3)."""
    first = raw[0]
    if first == 0x00:
        raise TlvError("'00' is not a valid first tag byte (it is filler, ISO 7816-4 §6.3)", offset=offset)
    if len(raw) == 1:
        if first & _TAG_NUMBER_MASK == _TAG_NUMBER_MASK:
            raise TlvError(f"tag {first:02X} announces subsequent tag bytes but has none", offset=offset)
        return
    if len(raw) > MAX_TAG_BYTES:
        raise TlvError(f"tag {raw.hex().upper()} is longer than {MAX_TAG_BYTES} bytes", offset=offset)
    if first & _TAG_NUMBER_MASK != _TAG_NUMBER_MASK:
        raise TlvError(f"tag {raw.hex().upper()}: first byte {first:02X} does not announce subsequent bytes",
                       offset=offset)
    for i, b in enumerate(raw[1:-1], start=1):
        if not b & _MORE_TAG_BYTES:
            raise TlvError(f"tag {raw.hex().upper()}: byte {i} ends the tag early", offset=offset)
    if raw[-1] & _MORE_TAG_BYTES:
        raise TlvError(f"tag {raw.hex().upper()}: last byte has bit 8 set (tag continues)", offset=offset)


def tag_bytes(tag: int) -> bytes:
    """The encoded tag field of ``tag`` (e.g. ``0x9F7F`` -> ``b'\\x9f\\x7f'``); TlvError if not a valid tag."""
    if not isinstance(tag, int) or isinstance(tag, bool):
        raise TlvError(f"tag must be an int, not {type(tag).__name__}")
    if tag <= 0 or tag > 0xFF_FFFF:
        raise TlvError(f"tag {tag:#x} is out of range (1 to 3 bytes, first byte not 00)")
    raw = tag.to_bytes((tag.bit_length() + 7) // 8, "big")
    _check_tag_structure(raw)
    return raw


def is_constructed(tag: int) -> bool:
    """True when the tag's first byte has bit 6 set: the value is itself BER-TLV (X.690 §8.1.2.5)."""
    return bool(tag_bytes(tag)[0] & _CONSTRUCTED_BIT)


def _tag_hex(tag: int) -> str:
    return f"{tag:02X}" if tag <= 0xFF else (f"{tag:04X}" if tag <= 0xFFFF else f"{tag:06X}")


# ------------------------------------------------------------------------------------------- lengths


def encode_length(n: int) -> bytes:
    """Definite-form length field (X.690 §8.1.3, ISO 7816-4:2020 §6.3): '00'..'7F', '81 xx' ... '84 xxxxxxxx'."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TlvError(f"length must be an int, not {type(n).__name__}")
    if n < 0:
        raise TlvError(f"length {n} is negative")
    if n < 0x80:
        return bytes([n])
    if n > MAX_LENGTH:
        raise TlvError(f"length {n} does not fit in {MAX_LENGTH_BYTES} length bytes")
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


# ---------------------------------------------------------------------------------------- the value


@dataclass(frozen=True)
class Tlv:
    """One BER-TLV data object. For a constructed tag, ``value`` holds the encoded children."""

    tag: int
    value: bytes = field(default=b"")

    def __post_init__(self) -> None:
        tag_bytes(self.tag)  # validates the tag
        if isinstance(self.value, (bytearray, memoryview)):
            object.__setattr__(self, "value", bytes(self.value))
        elif not isinstance(self.value, bytes):
            raise TlvError(f"value of tag {_tag_hex(self.tag)} must be bytes, not {type(self.value).__name__}")
        if len(self.value) > MAX_LENGTH:
            raise TlvError(f"value of tag {_tag_hex(self.tag)} is too long ({len(self.value)} bytes)")

    @property
    def constructed(self) -> bool:
        """True when the tag is constructed (X.690 §8.1.2.5)."""
        return is_constructed(self.tag)

    @cached_property
    def children(self) -> tuple[Tlv, ...]:
        """The data objects inside a constructed object (TlvError if primitive or malformed)."""
        if not self.constructed:
            raise TlvError(f"tag {_tag_hex(self.tag)} is primitive and has no children")
        try:
            return tuple(ber_decode(self.value))
        except TlvError as exc:
            # The offset counts from the start of this object's value.
            raise TlvError(f"in the value of tag {_tag_hex(self.tag)} (offset within that value): "
                           f"{_reason(exc)}", offset=exc.offset) from None

    def find(self, tag: int) -> Tlv | None:
        """The first direct child with ``tag``, or None."""
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def find_all(self, tag: int) -> list[Tlv]:
        """Every direct child with ``tag``, in order."""
        return [child for child in self.children if child.tag == tag]

    def encode(self) -> bytes:
        """Tag ‖ length ‖ value, with the shortest length field."""
        return tag_bytes(self.tag) + encode_length(len(self.value)) + self.value

    @classmethod
    def build(cls, tag: int, children: Iterable[Tlv | bytes]) -> Tlv:
        """A constructed object from children (see :func:`ber_build`)."""
        return cls(tag, _join_children(tag, children))

    def __repr__(self) -> str:
        return f"Tlv(0x{_tag_hex(self.tag)}, {self.value.hex().upper() or '-'})"


def _reason(exc: TlvError) -> str:
    """The message of a TlvError without the ' (at byte N)' suffix added by ParseError."""
    text = str(exc)
    suffix = f" (at byte {exc.offset})"
    return text[: -len(suffix)] if exc.offset is not None and text.endswith(suffix) else text


# ------------------------------------------------------------------------------------------ BER-TLV


def ber_encode(tag: int, value: bytes) -> bytes:
    """Encode one data object: tag ‖ length ‖ value."""
    return Tlv(tag, bytes(value)).encode()


def _join_children(tag: int, children: Iterable[Tlv | bytes]) -> bytes:
    if not is_constructed(tag):
        raise TlvError(f"tag {_tag_hex(tag)} is primitive; use ber_encode for primitive values")
    parts: list[bytes] = []
    for child in children:
        if isinstance(child, Tlv):
            parts.append(child.encode())
        elif isinstance(child, (bytes, bytearray, memoryview)):
            raw = bytes(child)
            try:
                ber_decode(raw)
            except TlvError as exc:
                raise TlvError(f"child {len(parts)} of tag {_tag_hex(tag)} is not BER-TLV: {_reason(exc)}",
                               offset=exc.offset) from None
            parts.append(raw)
        else:
            raise TlvError(f"child of tag {_tag_hex(tag)} must be Tlv or bytes, not {type(child).__name__}")
    return b"".join(parts)


def ber_build(tag: int, children: Iterable[Tlv | bytes]) -> bytes:
    """Encode a constructed object whose value is the concatenated encoded ``children``.

    ``bytes`` children must already be complete BER-TLV encodings (checked).
    """
    return Tlv.build(tag, children).encode()


def _decode_at(data: bytes, pos: int, end: int) -> tuple[Tlv, int, int]:
    """Decode the object starting at ``pos`` inside ``data[:end]``.

    Returns the object, the offset of its value and the offset just after it. Offsets are absolute.
    """
    start = pos
    # Tag field: X.690 §8.1.2, at most three bytes (ISO 7816-4:2020 §6.3).
    first = data[pos]
    if first == 0x00:
        raise TlvError("'00' is not a valid first tag byte (filler? decode with allow_padding=True)", offset=pos)
    pos += 1
    if first & _TAG_NUMBER_MASK == _TAG_NUMBER_MASK:
        while True:
            if pos >= end:
                raise TlvError(f"truncated tag: {data[start:pos].hex().upper()} needs another byte", offset=start)
            b = data[pos]
            pos += 1
            if pos - start > MAX_TAG_BYTES:
                raise TlvError(f"tag {data[start:pos].hex().upper()}... is longer than {MAX_TAG_BYTES} bytes",
                               offset=start)
            if not b & _MORE_TAG_BYTES:
                break
    tag = int.from_bytes(data[start:pos], "big")
    tag_name = _tag_hex(tag)
    # Length field: X.690 §8.1.3, definite form only, '81'..'84' long forms.
    if pos >= end:
        raise TlvError(f"tag {tag_name} has no length byte", offset=pos)
    len_pos = pos
    lb = data[pos]
    pos += 1
    if lb < 0x80:
        length = lb
    elif lb == _INDEFINITE:
        raise TlvError(f"tag {tag_name}: indefinite length '80' is not allowed (ISO 7816-4 §6.3)",
                       offset=len_pos)
    else:
        count = lb & 0x7F
        if count > MAX_LENGTH_BYTES:
            raise TlvError(f"tag {tag_name}: length field '{lb:02X}' announces {count} length bytes "
                           f"(at most {MAX_LENGTH_BYTES})", offset=len_pos)
        if pos + count > end:
            raise TlvError(f"tag {tag_name}: truncated length field, needs {count} more bytes, "
                           f"{end - pos} remain", offset=len_pos)
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > end:
        raise TlvError(f"tag {tag_name}: value needs {length} bytes, only {end - pos} remain", offset=pos)
    return Tlv(tag, data[pos:pos + length]), pos, pos + length


def ber_decode_one(data: bytes) -> tuple[Tlv, int]:
    """The first data object in ``data`` and the number of bytes it used (trailing bytes are allowed)."""
    data = _as_bytes(data)
    if not data:
        raise TlvError("no data to decode", offset=0)
    obj, _, after = _decode_at(data, 0, len(data))
    return obj, after


def ber_decode(data: bytes, *, allow_padding: bool = False) -> list[Tlv]:
    """Decode a sequence of BER-TLV data objects that must fill ``data`` exactly.

    ``allow_padding`` skips '00' and 'FF' filler before, between and after objects (ISO 7816-4:2020 §6.3);
    without it a '00' where a tag should start is an error, and 'FF' starts a (private class) tag.
    """
    data = _as_bytes(data)
    out: list[Tlv] = []
    pos, end = 0, len(data)
    while pos < end:
        if allow_padding and data[pos] in _FILLER:
            pos += 1
            continue
        obj, _, pos = _decode_at(data, pos, end)
        out.append(obj)
    return out


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TlvError(f"expected bytes, not {type(data).__name__}")


def _as_objects(data: bytes | Sequence[Tlv]) -> Sequence[Tlv]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return ber_decode(bytes(data))
    for obj in data:
        if not isinstance(obj, Tlv):
            raise TlvError(f"expected bytes or a sequence of Tlv, found {type(obj).__name__}")
    return data


def ber_walk(data: bytes | Sequence[Tlv]) -> Iterator[tuple[int, Tlv]]:
    """Every object of the tree, depth first in encoding order, as ``(depth, tlv)`` (top level = 0).

    Iterative, so deep nesting cannot exhaust the stack. A malformed constructed value raises TlvError when
    it is reached; for ``bytes`` input its offset is absolute (counted from the start of ``data``), for
    ``Tlv`` input it is relative to the value of the enclosing object.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield from _walk_bytes(bytes(data))
        return
    stack: list[tuple[int, Iterator[Tlv]]] = [(0, iter(_as_objects(data)))]
    while stack:
        depth, it = stack[-1]
        obj = next(it, None)
        if obj is None:
            stack.pop()
            continue
        yield depth, obj
        if obj.constructed:
            stack.append((depth + 1, iter(obj.children)))


def _walk_bytes(data: bytes) -> Iterator[tuple[int, Tlv]]:
    # (depth, next position, end of the enclosing value); the top level is the whole buffer.
    stack: list[tuple[int, int, int]] = [(0, 0, len(data))]
    while stack:
        depth, pos, end = stack.pop()
        if pos >= end:
            continue
        obj, value_at, after = _decode_at(data, pos, end)
        stack.append((depth, after, end))
        yield depth, obj
        if obj.constructed:
            stack.append((depth + 1, value_at, after))


def ber_find(data: bytes | Sequence[Tlv], tag: int, *, recursive: bool = True) -> Tlv | None:
    """The first object with ``tag``: depth first when ``recursive``, else among the top level only."""
    if not recursive:
        for obj in _as_objects(data):
            if obj.tag == tag:
                return obj
        return None
    for _, obj in ber_walk(data):
        if obj.tag == tag:
            return obj
    return None


def ber_to_dict(data: bytes) -> dict[int, bytes]:
    """Top-level objects as ``{tag: value}``; the first occurrence of a repeated tag wins."""
    out: dict[int, bytes] = {}
    for obj in ber_decode(data):
        out.setdefault(obj.tag, obj.value)
    return out


# --------------------------------------------------------------------------------------- SIMPLE-TLV


def simple_encode(tag: int, value: bytes) -> bytes:
    """SIMPLE-TLV (ISO 7816-4:2020 §6.3): tag '01'..'FE', length 1 byte or 'FF' + 2 bytes."""
    if not isinstance(tag, int) or not 0x01 <= tag <= 0xFE:
        raise TlvError(f"SIMPLE-TLV tag must be 01..FE, got {tag!r}")
    value = _as_bytes(value)
    n = len(value)
    if n < _SIMPLE_LONG:
        return bytes([tag, n]) + value
    if n > _SIMPLE_MAX_LENGTH:
        raise TlvError(f"SIMPLE-TLV value of {n} bytes exceeds {_SIMPLE_MAX_LENGTH}")
    return bytes([tag, _SIMPLE_LONG]) + n.to_bytes(2, "big") + value


def simple_decode(data: bytes) -> list[tuple[int, bytes]]:
    """Decode consecutive SIMPLE-TLV objects filling ``data`` exactly."""
    data = _as_bytes(data)
    out: list[tuple[int, bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        tag = data[pos]
        if tag in (0x00, 0xFF):
            raise TlvError(f"SIMPLE-TLV tag '{tag:02X}' is invalid (01..FE)", offset=pos)
        if pos + 1 >= end:
            raise TlvError(f"SIMPLE-TLV tag {tag:02X} has no length byte", offset=pos + 1)
        length = data[pos + 1]
        pos += 2
        if length == _SIMPLE_LONG:
            if pos + 2 > end:
                raise TlvError(f"SIMPLE-TLV tag {tag:02X}: truncated 3-byte length field", offset=pos - 1)
            length = int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
        if pos + length > end:
            raise TlvError(f"SIMPLE-TLV tag {tag:02X}: value needs {length} bytes, only {end - pos} remain",
                           offset=pos)
        out.append((tag, data[pos:pos + length]))
        pos += length
    return out


# -------------------------------------------------------------------------------------- COMPACT-TLV


def compact_encode(tag: int, value: bytes) -> bytes:
    """COMPACT-TLV (ISO 7816-4:2020 §8.1.1.2): one byte 'XY' (tag nibble X, length Y ≤ 15) then Y bytes."""
    if not isinstance(tag, int) or not 0 <= tag <= 0xF:
        raise TlvError(f"COMPACT-TLV tag must be a nibble 0..F, got {tag!r}")
    value = _as_bytes(value)
    if len(value) > 0xF:
        raise TlvError(f"COMPACT-TLV value of {len(value)} bytes exceeds 15")
    return bytes([(tag << 4) | len(value)]) + value


def compact_decode(data: bytes) -> list[tuple[int, bytes]]:
    """Decode consecutive COMPACT-TLV objects filling ``data`` exactly, as ``(tag nibble, value)``."""
    data = _as_bytes(data)
    out: list[tuple[int, bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        header = data[pos]
        tag, length = header >> 4, header & 0x0F
        if pos + 1 + length > end:
            raise TlvError(f"COMPACT-TLV '{header:02X}' (tag {tag:X}): value needs {length} bytes, "
                           f"only {end - pos - 1} remain", offset=pos)
        out.append((tag, data[pos + 1:pos + 1 + length]))
        pos += 1 + length
    return out


# ------------------------------------------------------------------------------------------- pretty


def _printable(value: bytes) -> str | None:
    if value and all(0x20 <= b < 0x7F for b in value):
        return value.decode("ascii")
    return None


def pretty(data: bytes | Sequence[Tlv], *, indent: int = 0, names: bool = True,
           context: str | None = None) -> str:
    """An indented tree of the data objects, two spaces per level, starting at level ``indent``.

    Names come from :mod:`cardkit.tags`; ``context`` ('fcp', 'gp', 'lds', 'emv', 'sm', 'sa') picks the meaning of
    context-specific tags at the top, and known templates switch it below them (e.g. inside '62' FCP names
    apply). Primitive values are shown in hex, plus ASCII when every byte is printable. Raises TlvError
    (nothing else) on malformed data.
    """
    if indent < 0:
        raise TlvError(f"indent must be >= 0, got {indent}")
    if context is not None:
        check_context(context)
    lines: list[str] = []
    contexts: list[str | None] = [context]
    for depth, obj in ber_walk(data):
        del contexts[depth + 1:]
        ctx = contexts[depth]
        label = _tag_hex(obj.tag)
        if names:
            name = tag_name(obj.tag, ctx)
            if name:
                label += f" {name}"
        line = f"{'  ' * (indent + depth)}{label} ({len(obj.value)})"
        if obj.constructed:
            contexts.append(child_context(obj.tag, ctx))
        else:
            if obj.value:
                line += ": " + obj.value.hex(" ").upper()
            text = _printable(obj.value)
            if text is not None:
                line += f'  "{text}"'
        lines.append(line)
    return "\n".join(lines)
