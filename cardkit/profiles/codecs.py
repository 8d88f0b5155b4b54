"""Field codecs: record field strings to the bytes stored on the card, and back.

A codec is a frozen value built from a profile table by :func:`make_codec`::

    name = { kind = "an", charset = "gbk", length = 30 }          # EF06 record 09
    ethnicity = { kind = "code", list = "ethnicity", encoding = "cn", length = 1 }
    issue_date = { kind = "date", format = "bcd" }                 # EF05 record 05

Kinds (the field types of the social security card description, ssc.md "Field types"):

``an``
    Text in ``charset`` (``ascii``, ``utf-8``, ``gbk``, ``gb18030``), ``length`` (fixed, padded) or
    ``max_length`` (variable, unpadded) bytes, ``align = "left"`` (default) or ``"right"``.
    **Padding choice:** ``pad`` defaults to ``0x20`` for ``ascii`` and to ``0x00`` for the multi-byte
    charsets. The public SSC descriptions only say that GBK names are "padded"; ``00`` is chosen because it
    can never be part of a GBK/GB 18030/UTF-8 character and no name ends in it, so decoding is exact;
    profiles for cards that pad with ``20`` or ``FF`` set ``pad`` explicitly. Control characters are
    rejected, and so is a value whose encoding ends with the pad byte (decoding could not restore it).
``cn``
    Digits as BCD, left-aligned, padded with ``F`` nibbles to ``length`` bytes (or the minimal number of
    bytes with ``max_length``). Decoding strips the ``F`` padding.
``n``
    A number as BCD, right-aligned, padded with ``0`` nibbles to ``length`` bytes. Decoding strips leading
    zeros (``"0"`` stays), so ``"007"`` and ``"7"`` encode alike and decode to ``"7"``.
``b``
    Binary given as ``input = "hex"`` (default; spaces allowed) or ``"base64"``; exactly ``length`` or at
    most ``max_length`` bytes. Decodes to uppercase hex or to base64.
``date``
    ``YYYYMMDD`` or ``YYYY-MM-DD``, a real calendar date; ``format = "bcd"`` (4 bytes, default) or
    ``"ascii"`` (8 bytes). Decodes to ``YYYYMMDD``.
``file``
    The value is a path; the bytes are read from the file (``max_length`` required; ``base_dir`` confines
    relative and absolute paths to one directory). Decodes to uppercase hex (a path cannot be recovered).
``code``
    A code from a named list (:mod:`cardkit.profiles.codelists`), encoded as ``an`` (ASCII) or ``cn``.
    ``accept_names = true`` also accepts the name (``"汉族"`` -> ``"01"``).

Codec errors are :class:`~cardkit.errors.RecordError` and never contain the value itself: only lengths,
positions and code points. Bad profile tables raise :class:`~cardkit.errors.ProfileError`.
"""

from __future__ import annotations

import abc
import base64
import binascii
import logging
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cardkit.errors import ProfileError, RecordError, TlvError
from cardkit.profiles.codelists import code_list
from cardkit.profiles.validators import parse_date
from cardkit.tlv import ber_encode, simple_decode, simple_encode

__all__ = [
    "KINDS", "BcdCodec", "BinaryCodec", "CodeCodec", "Codec", "DateCodec", "FileCodec",
    "NumericCodec", "TextCodec", "ber_do", "make_codec", "parse_simple_tlv_record", "simple_tlv_record",
]

log = logging.getLogger(__name__)

# Display names of the supported charsets, keyed by the profile spelling (the Python codec name).
# GB 2312 extension GBK (CP936) and GB 18030-2005 are the encodings of Chinese card text; ssc.md.
_CHARSETS: Mapping[str, str] = {"ascii": "ASCII", "utf-8": "UTF-8", "gbk": "GBK", "gb18030": "GB 18030"}
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")


# C0, DEL, C1 (ISO/IEC 6429), for a fast whole-string search.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")


def _is_control(ch: str) -> bool:
    cp = ord(ch)
    return cp < 0x20 or 0x7F <= cp <= 0x9F  # C0, DEL, C1 (ISO/IEC 6429)


def _check_lengths(length: int | None, max_length: int | None, *, kind: str,
                   required: bool = True) -> None:
    if length is not None and max_length is not None:
        raise ProfileError(f"'{kind}' takes either 'length' or 'max_length', not both")
    if required and length is None and max_length is None:
        raise ProfileError(f"'{kind}' needs 'length' (fixed) or 'max_length' (variable)")
    for name, v in (("length", length), ("max_length", max_length)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535):
            raise ProfileError(f"'{name}' must be an integer 1..65535")


def _too_long(size: int, limit: int, unit: str, field: str | None) -> RecordError:
    return RecordError(f"too long by {size - limit} {unit} (maximum {limit})", field=field)


class Codec(abc.ABC):
    """Turns one record field (a string) into card bytes and back. Subclasses are frozen dataclasses."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def encode(self, value: str, *, field: str = "?") -> bytes:
        """The bytes to store for ``value``; :class:`RecordError` naming ``field`` if it cannot be."""

    @abc.abstractmethod
    def decode(self, data: bytes) -> str:
        """The field string for card bytes (padding stripped); :class:`RecordError` on bad bytes."""

    @abc.abstractmethod
    def examples(self) -> tuple[tuple[str, bytes], ...]:
        """Known answers ``(value, encoding)`` for this codec's parameters, in canonical form:
        ``encode(value) == encoding`` and ``decode(encoding) == value``."""

    @property
    def max_bytes(self) -> int | None:
        """The largest encoding this codec produces, ``None`` if unbounded."""
        return None


@dataclass(frozen=True)
class TextCodec(Codec):
    """``an``: text in a charset, fixed length (padded) or variable length (ssc.md "Field types")."""

    kind: ClassVar[str] = "an"
    charset: str = "ascii"
    length: int | None = None
    max_length: int | None = None
    pad: int | None = None
    align: str = "left"

    def __post_init__(self) -> None:
        if self.charset not in _CHARSETS:
            raise ProfileError(f"'charset' must be one of {', '.join(_CHARSETS)}")
        _check_lengths(self.length, self.max_length, kind=self.kind)
        if self.pad is not None and (isinstance(self.pad, bool) or not 0 <= self.pad <= 0xFF):
            raise ProfileError("'pad' must be a byte 0..255")
        if self.align not in ("left", "right"):
            raise ProfileError("'align' must be 'left' or 'right'")

    @property
    def pad_byte(self) -> bytes:
        """The padding byte: ``pad``, else 0x20 for ASCII and 0x00 for multi-byte charsets."""
        if self.pad is not None:
            return bytes((self.pad,))
        return b" " if self.charset == "ascii" else b"\x00"

    @property
    def max_bytes(self) -> int | None:
        return self.length if self.length is not None else self.max_length

    def encode(self, value: str, *, field: str = "?") -> bytes:
        name = _CHARSETS[self.charset]
        bad = _CONTROL_RE.search(value)
        if bad is not None:
            i, ch = bad.start(), bad.group()
            raise RecordError(f"character U+{ord(ch):04X} at position {i + 1} is a control character",
                              field=field)
        try:
            raw = value.encode(self.charset)
        except UnicodeEncodeError as exc:
            raise RecordError(f"character U+{ord(value[exc.start]):04X} at position {exc.start + 1} is not "
                              f"encodable in {name}", field=field) from None
        limit = self.length if self.length is not None else self.max_length
        if limit is not None and len(raw) > limit:
            raise _too_long(len(raw), limit, "bytes", field)
        if self.length is None or not raw:
            return raw if self.length is None else self.pad_byte * self.length
        pad = self.pad_byte
        edge = raw[-1:] if self.align == "left" else raw[:1]
        if edge == pad:
            side = "ends" if self.align == "left" else "starts"
            raise RecordError(f"value {side} with the pad byte {pad.hex().upper()}, which decoding would strip",
                              field=field)
        fill = pad * (self.length - len(raw))
        return raw + fill if self.align == "left" else fill + raw

    def decode(self, data: bytes) -> str:
        if self.length is not None and len(data) != self.length:
            raise RecordError(f"expected {self.length} bytes, got {len(data)}")
        if self.max_length is not None and len(data) > self.max_length:
            raise _too_long(len(data), self.max_length, "bytes", None)
        raw = bytes(data)
        if self.length is not None:
            raw = raw.rstrip(self.pad_byte) if self.align == "left" else raw.lstrip(self.pad_byte)
        try:
            text = raw.decode(self.charset)
        except UnicodeDecodeError as exc:
            raise RecordError(f"bytes are not valid {_CHARSETS[self.charset]} (at byte {exc.start})") from None
        for i, ch in enumerate(text):
            if _is_control(ch):
                raise RecordError(f"decoded text has control character U+{ord(ch):04X} at position {i + 1}")
        return text

    def examples(self) -> tuple[tuple[str, bytes], ...]:
        # Hand-made encodings: "A" is 41 in every charset here; 中 is D6D0 in GBK/GB 18030 (GB 2312 row 54,
        # cell 48) and E4B8AD in UTF-8 (U+4E2D).
        samples: list[tuple[str, bytes]] = [("A", b"\x41")]
        if self.charset in ("gbk", "gb18030"):
            samples.append(("中", b"\xd6\xd0"))
        elif self.charset == "utf-8":
            samples.append(("中", b"\xe4\xb8\xad"))
        out: list[tuple[str, bytes]] = []
        for value, raw in samples:
            if self.length is not None:
                if len(raw) > self.length:
                    continue
                fill = self.pad_byte * (self.length - len(raw))
                out.append((value, raw + fill if self.align == "left" else fill + raw))
            elif self.max_length is not None and len(raw) <= self.max_length:
                out.append((value, raw))
        return tuple(out)


@dataclass(frozen=True)
class BcdCodec(Codec):
    """``cn``: digits as BCD, left-aligned, padded with F nibbles (ssc.md "Field types"; EMV Book 3 §4.3)."""

    kind: ClassVar[str] = "cn"
    length: int | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        _check_lengths(self.length, self.max_length, kind=self.kind)

    @property
    def max_bytes(self) -> int | None:
        return self.length if self.length is not None else self.max_length

    def encode(self, value: str, *, field: str = "?") -> bytes:
        for i, ch in enumerate(value):
            if ch not in _DIGITS:
                raise RecordError(f"character {i + 1} is not a digit ('{self.kind}' holds digits only)",
                                  field=field)
        nbytes = self.length if self.length is not None else -(-len(value) // 2)
        limit = 2 * (self.length if self.length is not None else self.max_length or 0)
        if len(value) > limit:
            raise _too_long(len(value), limit, "digits", field)
        return bytes.fromhex(value + "F" * (2 * nbytes - len(value)))

    def decode(self, data: bytes) -> str:
        if self.length is not None and len(data) != self.length:
            raise RecordError(f"expected {self.length} bytes, got {len(data)}")
        if self.max_length is not None and len(data) > self.max_length:
            raise _too_long(len(data), self.max_length, "bytes", None)
        nibbles = data.hex().upper().rstrip("F")
        for i, ch in enumerate(nibbles):
            if ch not in _DIGITS:
                raise RecordError(f"nibble {i + 1} is {ch}, not a BCD digit or trailing F padding")
        return nibbles

    def examples(self) -> tuple[tuple[str, bytes], ...]:
        nbytes = self.length if self.length is not None else 1
        out: list[tuple[str, bytes]] = [("12", b"\x12" + b"\xff" * (nbytes - 1))]
        if self.length is not None:
            out.append(("", b"\xff" * nbytes))
            if self.length >= 2:
                out.append(("012", b"\x01\x2f" + b"\xff" * (nbytes - 2)))
        return tuple(out)


@dataclass(frozen=True)
class NumericCodec(Codec):
    """``n``: a number as BCD, right-aligned, zero-padded to ``length`` bytes (EMV Book 3 §4.3)."""

    kind: ClassVar[str] = "n"
    length: int = 0

    def __post_init__(self) -> None:
        _check_lengths(self.length or None, None, kind=self.kind)

    @property
    def max_bytes(self) -> int | None:
        return self.length

    def encode(self, value: str, *, field: str = "?") -> bytes:
        if not value:
            raise RecordError("empty; 'n' needs at least one digit", field=field)
        for i, ch in enumerate(value):
            if ch not in _DIGITS:
                raise RecordError(f"character {i + 1} is not a digit ('n' holds digits only)", field=field)
        digits = value.lstrip("0")
        if len(digits) > 2 * self.length:
            raise _too_long(len(digits), 2 * self.length, "digits", field)
        return bytes.fromhex(digits.rjust(2 * self.length, "0"))

    def decode(self, data: bytes) -> str:
        if len(data) != self.length:
            raise RecordError(f"expected {self.length} bytes, got {len(data)}")
        nibbles = data.hex().upper()
        for i, ch in enumerate(nibbles):
            if ch not in _DIGITS:
                raise RecordError(f"nibble {i + 1} is {ch}, not a BCD digit")
        return nibbles.lstrip("0") or "0"

    def examples(self) -> tuple[tuple[str, bytes], ...]:
        return (("0", bytes(self.length)), ("12", bytes(self.length - 1) + b"\x12"))


@dataclass(frozen=True)
class BinaryCodec(Codec):
    """``b``: binary data given as hex or base64 (ssc.md "Field types")."""

    kind: ClassVar[str] = "b"
    input: str = "hex"
    length: int | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.input not in ("hex", "base64"):
            raise ProfileError("'input' must be 'hex' or 'base64'")
        _check_lengths(self.length, self.max_length, kind=self.kind)

    @property
    def max_bytes(self) -> int | None:
        return self.length if self.length is not None else self.max_length

    def _parse(self, value: str, field: str) -> bytes:
        if self.input == "hex":
            text = value.replace(" ", "")
            for i, ch in enumerate(text):
                if ch not in _HEX:
                    raise RecordError(f"character {i + 1} (spaces ignored) is not a hex digit", field=field)
            if len(text) % 2:
                raise RecordError(f"odd number of hex digits ({len(text)})", field=field)
            return bytes.fromhex(text)
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise RecordError("not valid base64 (RFC 4648 §4)", field=field) from None

    def encode(self, value: str, *, field: str = "?") -> bytes:
        data = self._parse(value, field)
        if self.length is not None and len(data) != self.length:
            raise RecordError(f"must be exactly {self.length} bytes ({len(data)} given)", field=field)
        if self.max_length is not None and len(data) > self.max_length:
            raise _too_long(len(data), self.max_length, "bytes", field)
        return data

    def decode(self, data: bytes) -> str:
        if self.length is not None and len(data) != self.length:
            raise RecordError(f"expected {self.length} bytes, got {len(data)}")
        if self.max_length is not None and len(data) > self.max_length:
            raise _too_long(len(data), self.max_length, "bytes", None)
        if self.input == "hex":
            return data.hex().upper()
        return base64.b64encode(data).decode("ascii")

    def examples(self) -> tuple[tuple[str, bytes], ...]:
        n = self.length if self.length is not None else min(2, self.max_length or 2)
        raw = bytes(range(0xF0, 0xF0 + n)) if n <= 16 else bytes(n)
        text = raw.hex().upper() if self.input == "hex" else base64.b64encode(raw).decode("ascii")
        return ((text, raw),)


@dataclass(frozen=True)
class DateCodec(Codec):
    """``date``: a calendar date as 4 BCD bytes ``YYYYMMDD`` or 8 ASCII digits (ssc.md EF05 records 05/06)."""

    kind: ClassVar[str] = "date"
    format: str = "bcd"

    def __post_init__(self) -> None:
        if self.format not in ("bcd", "ascii"):
            raise ProfileError("'format' must be 'bcd' (4 bytes) or 'ascii' (8 bytes)")

    @property
    def max_bytes(self) -> int | None:
        return 4 if self.format == "bcd" else 8

    def encode(self, value: str, *, field: str = "?") -> bytes:
        text = parse_date(value, field=field).strftime("%Y%m%d")
        if len(text) != 8:  # years before 1000 have no 4-digit form
            raise RecordError("year must have four digits", field=field)
        return bytes.fromhex(text) if self.format == "bcd" else text.encode("ascii")

    def decode(self, data: bytes) -> str:
        size = 4 if self.format == "bcd" else 8
        if len(data) != size:
            raise RecordError(f"expected {size} bytes, got {len(data)}")
        if self.format == "bcd":
            text = data.hex()
        else:
            try:
                text = data.decode("ascii")
            except UnicodeDecodeError:
                raise RecordError("date bytes are not ASCII digits") from None
        return parse_date(text).strftime("%Y%m%d")

    def examples(self) -> tuple[tuple[str, bytes], ...]:
        if self.format == "bcd":  # ssc.md worked encoding, EF05 record 05
            return (("20211203", b"\x20\x21\x12\x03"), ("20000229", b"\x20\x00\x02\x29"))
        return (("20211203", b"20211203"),)


@dataclass(frozen=True)
class FileCodec(Codec):
    """``file``: the value names a file whose bytes are stored (photos, fingerprints: ssc.md EF07/EF08)."""

    kind: ClassVar[str] = "file"
    max_length: int = 0
    base_dir: str | None = None

    def __post_init__(self) -> None:
        _check_lengths(None, self.max_length or None, kind=self.kind)

    @property
    def max_bytes(self) -> int | None:
        return self.max_length

    def _path(self, value: str, field: str) -> Path:
        if not value:
            raise RecordError("empty file name", field=field)
        path = Path(value)
        if self.base_dir is None:
            return path
        base = Path(self.base_dir).resolve()
        full = (base / path).resolve()
        if not full.is_relative_to(base):
            raise RecordError("file path leads outside the profile's base directory", field=field)
        return full

    def encode(self, value: str, *, field: str = "?") -> bytes:
        path = self._path(value, field)
        try:
            with path.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                data = fh.read(self.max_length + 1)
        except OSError as exc:
            raise RecordError(f"cannot read the file ({exc.strerror or type(exc).__name__})",
                              field=field) from None
        if not data:
            raise RecordError("file is empty", field=field)
        if len(data) > self.max_length:
            raise _too_long(max(size, len(data)), self.max_length, "bytes", field)
        return data

    def decode(self, data: bytes) -> str:
        if len(data) > self.max_length:
            raise _too_long(len(data), self.max_length, "bytes", None)
        return data.hex().upper()

    def examples(self) -> tuple[tuple[str, bytes], ...]:
        return ()  # needs a file on disk; tested with temporary files


@dataclass(frozen=True)
class CodeCodec(Codec):
    """``code``: a code from a named list (GB/T 2261.1, GB 3304, GB/T 2260, ISO 3166), as ``an`` or ``cn``."""

    kind: ClassVar[str] = "code"
    list: str = ""
    encoding: str = "cn"
    length: int = 1
    accept_names: bool = False

    def __post_init__(self) -> None:
        codes = code_list(self.list)
        if self.encoding not in ("an", "cn"):
            raise ProfileError("'encoding' must be 'an' or 'cn'")
        _check_lengths(self.length, None, kind=self.kind)
        width = self.length * (2 if self.encoding == "cn" else 1)
        for code in codes:
            if self.encoding == "cn" and not set(code) <= _DIGITS:
                raise ProfileError(f"list {self.list!r} has non-digit codes; use encoding = 'an'")
            if len(code) > width:
                raise ProfileError(f"list {self.list!r} has codes longer than {self.length} bytes allow")

    @property
    def max_bytes(self) -> int | None:
        return self.length

    @property
    def _inner(self) -> Codec:
        if self.encoding == "cn":
            return BcdCodec(length=self.length)
        return TextCodec(charset="ascii", length=self.length)

    def encode(self, value: str, *, field: str = "?") -> bytes:
        codes = code_list(self.list)
        if value not in codes:
            if self.accept_names:
                found = [c for c, name in codes.items() if name == value]
                if found:
                    return self._inner.encode(found[0], field=field)
            raise RecordError(f"not a code of the {self.list!r} list", field=field)
        return self._inner.encode(value, field=field)

    def decode(self, data: bytes) -> str:
        value = self._inner.decode(data)
        if value not in code_list(self.list):
            raise RecordError(f"decoded value is not a code of the {self.list!r} list")
        return value

    def examples(self) -> tuple[tuple[str, bytes], ...]:
        code = sorted(code_list(self.list))[0]
        if self.encoding == "cn":
            return ((code, bytes.fromhex(code + "F" * (2 * self.length - len(code)))),)
        return ((code, code.encode("ascii") + b" " * (self.length - len(code))),)


KINDS: Mapping[str, type[Codec]] = {
    c.kind: c for c in (TextCodec, BcdCodec, NumericCodec, BinaryCodec, DateCodec, FileCodec, CodeCodec)
}

# Keys each kind takes from a profile table, with their expected Python types.
_KEYS: Mapping[str, Mapping[str, type | tuple[type, ...]]] = {
    "an": {"charset": str, "length": int, "max_length": int, "pad": (int, str), "align": str},
    "cn": {"length": int, "max_length": int},
    "n": {"length": int},
    "b": {"input": str, "length": int, "max_length": int},
    "date": {"format": str},
    "file": {"max_length": int, "base_dir": str},
    "code": {"list": str, "encoding": str, "length": int, "accept_names": bool},
}


def _pad_value(raw: object) -> int:
    if isinstance(raw, int):
        return raw
    text = str(raw).lower().removeprefix("0x")
    if len(text) != 2 or not set(text) <= _HEX:
        raise ProfileError("'pad' must be a byte: an integer 0..255 or two hex digits such as \"20\"")
    return int(text, 16)


def make_codec(spec: Mapping[str, object], *, where: str = "", ignore: Collection[str] = (),
               base_dir: str | Path | None = None) -> Codec:
    """Build a codec from a profile table (``{kind = "an", charset = "gbk", length = 30}``; ``type`` is
    accepted as an alias of ``kind``).

    ``where`` names the table in error messages. Unknown keys are errors (typos must not pass silently);
    ``ignore`` lists keys the caller owns (e.g. ``record``, ``validate``). ``base_dir`` is the default
    ``base_dir`` of ``file`` codecs (typically the profile's folder). Raises :class:`ProfileError`.
    """
    key = where or None
    kind = spec.get("kind", spec.get("type"))
    if "kind" in spec and "type" in spec and spec["kind"] != spec["type"]:
        raise ProfileError("'kind' and its alias 'type' disagree", key=key)
    if not isinstance(kind, str) or kind not in KINDS:
        raise ProfileError(f"'kind' must be one of {', '.join(KINDS)}", key=key)
    allowed = _KEYS[kind]
    kwargs: dict[str, object] = {}
    try:
        for name, raw in spec.items():
            if name in ("kind", "type") or name in ignore:
                continue
            if name not in allowed:
                raise ProfileError(f"unknown key {name!r} for kind {kind!r} (allowed: {', '.join(allowed)})")
            expected = allowed[name]
            if not isinstance(raw, expected) or (isinstance(raw, bool) and expected is int):
                raise ProfileError(f"{name!r} has the wrong type ({type(raw).__name__})")
            kwargs[name] = _pad_value(raw) if name == "pad" else raw
        if kind == "file" and "base_dir" not in kwargs and base_dir is not None:
            kwargs["base_dir"] = str(base_dir)
        if kind == "n" and "length" not in kwargs:
            raise ProfileError("'n' needs 'length'")
        if kind == "file" and "max_length" not in kwargs:
            raise ProfileError("'file' needs 'max_length'")
        return KINDS[kind](**kwargs)
    except ProfileError as exc:
        if key is None:
            raise
        raise ProfileError(str(exc), key=key) from None


# ------------------------------------------------------------------------------------------ wrappers


def simple_tlv_record(recno: int, value: bytes) -> bytes:
    """An SSC-style record: SIMPLE-TLV with tag = record number (ssc.md "Application structure").

    ISO/IEC 7816-4:2020 §6.3: tag '01'..'FE', length in one byte (or 'FF' + 2 bytes from 255 on).
    ``simple_tlv_record(7, b"X00000019") == bytes.fromhex("0709583030303030303139")``.
    """
    if isinstance(recno, bool) or not isinstance(recno, int) or not 1 <= recno <= 0xFE:
        raise TlvError(f"record number must be 1..254 to serve as a SIMPLE-TLV tag, got {recno!r}")
    return simple_encode(recno, bytes(value))


def parse_simple_tlv_record(data: bytes, *, recno: int | None = None) -> tuple[int, bytes]:
    """Parse one SSC-style record into ``(record number, value)``.

    Bytes after the data object are accepted only as padding of a fixed-size record (all ``FF`` or all
    ``00``). With ``recno`` the tag must equal it. Raises :class:`~cardkit.errors.TlvError`.
    """
    data = bytes(data)
    if len(data) < 2:
        raise TlvError(f"SIMPLE-TLV record needs at least 2 bytes, got {len(data)}", offset=0)
    header, length = 2, data[1]
    if length == 0xFF and len(data) >= 4:  # ISO/IEC 7816-4:2020 §6.3: 'FF' then 2 length bytes
        header, length = 4, int.from_bytes(data[2:4], "big")
    end = header + length
    objects = simple_decode(data[:end])
    rest = data[end:]
    if rest and rest.strip(b"\xff") and rest.strip(b"\x00"):
        raise TlvError("bytes after the record's data object are not FF or 00 padding", offset=end)
    tag, value = objects[0]
    if recno is not None and tag != recno:
        raise TlvError(f"record tag is {tag:02X}, expected the record number {recno:02X}", offset=0)
    return tag, value


def ber_do(tag: int, value: bytes) -> bytes:
    """A BER-TLV data object ``tag ‖ length ‖ value`` (ISO/IEC 7816-4:2020 §6.3, X.690 §8.1)."""
    return ber_encode(tag, bytes(value))
