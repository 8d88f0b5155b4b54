"""Record sources: stream cardholder records from CSV or JSON Lines files.

* CSV (RFC 4180 §2): a header row names the fields; every later non-blank row is one record. Quoted fields
  may span lines; a quoted field still open at end of file is a structural problem (the file was cut).
* JSON Lines (https://jsonlines.org, each line one RFC 8259 JSON text): one object per line whose values
  are strings; numbers are kept as their literal text (``12.50`` stays ``"12.50"``).

Files are read as bytes and decoded line by line, so a byte sequence that is not valid in the chosen
encoding is reported with its line number. Encodings: ``utf-8`` (a leading BOM, U+FEFF, is dropped —
Unicode 15.0 §23.8) and ``gb18030`` (GB 18030-2005; its BOM ``84 31 95 33`` decodes to U+FEFF and is
dropped too). Line feed (0x0A) never occurs inside a multi-byte character of either encoding, so splitting
the raw bytes at 0x0A is safe.

Everything streams: memory stays flat however many lines the file has.

With ``errors="raise"`` (default) the first structural problem raises :class:`~cardkit.errors.RecordError`;
with ``errors="collect"`` problems are yielded in-line as :class:`SourceProblem` values, so a validator
can report every problem of a file in one pass. Problem messages never quote field values.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, overload

from cardkit.errors import CardkitError, RecordError

__all__ = [
    "ENCODINGS", "FORMATS", "SourceError", "SourceProblem", "SourceRecord", "detect_format", "iter_records",
    "source_digest",
]

log = logging.getLogger(__name__)

#: Encodings a source file may use. GB 18030 is the mandatory Chinese national character set (GB 18030-2005).
ENCODINGS = ("utf-8", "gb18030")
#: Source formats and the file extensions that select them.
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: U+FEFF ZERO WIDTH NO-BREAK SPACE used as a byte order mark (Unicode 15.0 §23.8).
_BOM = "\ufeff"
_DIGEST_CHUNK = 1 << 20


class SourceError(CardkitError):
    """The source file cannot be read at all: missing, unreadable, unknown format or encoding."""


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record: ``line`` is the 1-based line where it starts, ``index`` its 0-based position among the
    data records of the file (malformed records count too, so indexes are stable across fixes elsewhere)."""

    line: int
    index: int
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """A structural problem found while reading. ``index`` is the record position, when the problem
    belongs to one record (``None`` for file-level problems such as the header)."""

    line: int
    message: str
    index: int | None = None
    #: True when reading cannot go on after this problem (empty file, unusable header).
    fatal: bool = False

    def error(self) -> RecordError:
        """The problem as the exception ``errors="raise"`` would have raised."""
        return RecordError(self.message, line=self.line)


def detect_format(path: str | os.PathLike[str]) -> str:
    """``"csv"`` or ``"jsonl"`` from the file extension."""
    suffix = Path(path).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        raise SourceError(
            f"cannot tell the format of {Path(path).name!r} from its extension; "
            f"use one of {', '.join(sorted(FORMATS))} or name the format explicitly") from None


def source_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 (FIPS 180-4) of the file's bytes, as 64 lower-case hex digits."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_DIGEST_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise SourceError(f"cannot read {Path(path).name!r}: {exc.strerror or type(exc).__name__}") from exc
    return h.hexdigest()


@overload
def iter_records(path: str | os.PathLike[str], *, encoding: str = ..., fmt: str | None = ...,
                 errors: Literal["raise"] = ...) -> Iterator[SourceRecord]: ...
@overload
def iter_records(path: str | os.PathLike[str], *, encoding: str = ..., fmt: str | None = ...,
                 errors: Literal["collect"]) -> Iterator[SourceRecord | SourceProblem]: ...


def iter_records(path: str | os.PathLike[str], *, encoding: str = "utf-8", fmt: str | None = None,
                 errors: Literal["raise", "collect"] = "raise") -> Iterator[SourceRecord] | Iterator[
                     SourceRecord | SourceProblem]:
    """Stream the records of a CSV or JSON Lines file (format from the extension unless ``fmt`` is given).

    ``errors="raise"``: raise :class:`RecordError` (with ``line``) at the first problem.
    ``errors="collect"``: yield :class:`SourceProblem` values in-line and go on with the next record.
    """
    enc = _check_encoding(encoding)
    kind = fmt.lower() if fmt is not None else detect_format(path)
    if kind not in ("csv", "jsonl"):
        raise SourceError(f"unknown source format {fmt!r}; use 'csv' or 'jsonl'")
    if errors not in ("raise", "collect"):
        raise SourceError(f"errors must be 'raise' or 'collect', got {errors!r}")
    items = _read(Path(path), enc, kind)
    if errors == "collect":
        return items
    return _raising(items)


# ------------------------------------------------------------------------------------------------ internals
def _check_encoding(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        name = ""
    if name == "utf-8-sig":
        name = "utf-8"
    if name not in ENCODINGS:
        raise SourceError(f"unsupported encoding {encoding!r}; use 'utf-8' or 'gb18030'")
    return name


def _raising(items: Iterator[SourceRecord | SourceProblem]) -> Iterator[SourceRecord]:
    for item in items:
        if isinstance(item, SourceProblem):
            raise item.error()
        yield item


def _read(path: Path, encoding: str, kind: str) -> Iterator[SourceRecord | SourceProblem]:
    try:
        f = open(path, "rb")  # closed by _read_open's with block
    except OSError as exc:
        raise SourceError(f"cannot read {path.name!r}: {exc.strerror or type(exc).__name__}") from exc
    return _read_open(f, encoding, kind)


def _read_open(f: BinaryIO, encoding: str, kind: str) -> Iterator[SourceRecord | SourceProblem]:
    with f:
        lines = _DecodedLines(f, encoding)
        if kind == "csv":
            yield from _csv_items(lines)
        else:
            yield from _jsonl_items(lines)


class _DecodedLines:
    """Iterates decoded lines (line ends kept, as the csv module wants) and remembers the lines whose bytes
    were not valid in the encoding. A bad line is decoded with U+FFFD replacements so parsing can go on."""

    def __init__(self, f: BinaryIO, encoding: str) -> None:
        self._f = f
        self._encoding = encoding
        self.number = 0  # 1-based number of the last line handed out
        self.bad: dict[int, str] = {}  # line number -> problem message

    def __iter__(self) -> Iterator[str]:
        for raw in self._f:
            self.number += 1
            try:
                text = raw.decode(self._encoding)
            except UnicodeDecodeError as exc:
                self.bad[self.number] = self._decode_message(exc)
                text = raw.decode(self._encoding, errors="replace")
            if self.number == 1 and text.startswith(_BOM):
                text = text[1:]
            yield text

    def _decode_message(self, exc: UnicodeDecodeError) -> str:
        where = f"byte {exc.start + 1} of the line is not valid {self._encoding.upper()}"
        if self._encoding == "utf-8":
            return f"{where}; if the file is GB18030-encoded (Chinese Windows exports), use --encoding gb18030"
        return f"{where}; is the file really GB18030? try --encoding utf-8"

    def take_bad(self, first: int, last: int) -> list[tuple[int, str]]:
        """Problems of bad lines in ``first..last``, removed from the pending set."""
        found = [(n, self.bad.pop(n)) for n in sorted(self.bad) if first <= n <= last]
        return found


def _csv_items(lines: _DecodedLines) -> Iterator[SourceRecord | SourceProblem]:
    # RFC 4180 §2: fields separated by commas, optionally enclosed in double quotes, "" escapes a quote.
    # strict=True makes the csv module report a quoted field left open at end of file ("unexpected end of
    # data") and stray characters after a closing quote instead of guessing.
    reader = csv.reader(iter(lines), dialect="excel", strict=True)
    header: list[str] | None = None
    index = 0
    while True:
        start = lines.number + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield from _bad_lines(lines, start, lines.number, None if header is None else index)
            yield SourceProblem(start, f"malformed CSV: {_csv_reason(exc)}", None if header is None else index,
                                fatal=header is None)
            if header is None:
                return
            index += 1
            continue
        bad = lines.take_bad(start, lines.number)
        if header is None:
            if not row:
                continue  # blank lines before the header
            for n, msg in bad:
                yield SourceProblem(n, msg, None, fatal=True)
            if bad:
                return
            header = [name.strip() for name in row]
            header_problem = _header_problem(header, start)
            if header_problem is not None:
                yield header_problem
                return
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank (or whitespace-only) line is not a record
        for n, msg in bad:
            yield SourceProblem(n, msg, index)
        if bad:
            index += 1
            continue
        if len(row) != len(header):
            yield SourceProblem(start, f"expected {len(header)} columns, found {len(row)}", index)
        else:
            yield SourceRecord(start, index, dict(zip(header, row, strict=True)))
        index += 1
    if header is None:
        yield SourceProblem(max(lines.number, 1), "empty file: no header row", None, fatal=True)


def _bad_lines(lines: _DecodedLines, first: int, last: int, index: int | None) -> Iterator[SourceProblem]:
    for n, msg in lines.take_bad(first, last):
        yield SourceProblem(n, msg, index)


def _csv_reason(exc: csv.Error) -> str:
    text = str(exc)
    if "unexpected end of data" in text:
        return "a quoted field is not closed before the end of the file (truncated file?)"
    if "expected after" in text:
        return "characters after a closing quote (a quote inside a field must be doubled)"
    if "new-line character seen in unquoted field" in text:
        return ("a line break inside an unquoted field: CR-only (old Mac) line ends? convert them to LF or CRLF, "
                "or quote the field")
    if "field larger than field limit" in text:
        return "a field is longer than the field size limit (an unclosed quote?)"
    return text


def _header_problem(header: list[str], line: int) -> SourceProblem | None:
    seen: set[str] = set()
    for pos, name in enumerate(header, start=1):
        if not name:
            return SourceProblem(line, f"header column {pos} has no name", None, fatal=True)
        if name in seen:
            return SourceProblem(line, f"duplicate header name {name!r} (column {pos})", None, fatal=True)
        seen.add(name)
    return None


class _DuplicateKey(ValueError):
    pass


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise _DuplicateKey(k)
        obj[k] = v
    return obj


def _no_constant(name: str) -> Any:
    # RFC 8259 §6: NaN and Infinity are not JSON numbers; Python's parser accepts them unless told not to.
    raise ValueError(f"{name} is not a JSON number")


def _jsonl_items(lines: _DecodedLines) -> Iterator[SourceRecord | SourceProblem]:
    index = 0
    seen_any = False
    for text in lines:
        n = lines.number
        bad = lines.take_bad(n, n)
        stripped = text.strip(" \t\r\n")
        if not stripped:
            continue
        seen_any = True
        if bad:
            for m, msg in bad:
                yield SourceProblem(m, msg, index)
            index += 1
            continue
        yield _jsonl_line(stripped, n, index, at_eof=not text.endswith("\n"))
        index += 1
    if not seen_any:
        yield SourceProblem(max(lines.number, 1), "empty file: no records", None, fatal=True)


def _jsonl_line(text: str, line: int, index: int, *, at_eof: bool) -> SourceRecord | SourceProblem:
    try:
        # parse_int/parse_float keep the literal text of numbers, so nothing is lost or reformatted.
        obj = json.loads(text, object_pairs_hook=_object_pairs, parse_int=str, parse_float=str,
                         parse_constant=_no_constant)
    except _DuplicateKey as exc:
        return SourceProblem(line, f"duplicate key {exc.args[0]!r} in the object", index)
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        col = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        hint = " (the last line looks cut off: truncated file?)" if at_eof else ""
        return SourceProblem(line, f"invalid JSON: {reason}{col}{hint}", index)
    if not isinstance(obj, dict):
        # numbers were parsed to their text, so tell them from strings by the first character
        found = _json_type(obj) if not isinstance(obj, str) or text[0] == '"' else "a number"
        return SourceProblem(line, f"expected a JSON object, found {found}", index)
    fields: dict[str, str] = {}
    for key, value in obj.items():
        if not isinstance(value, str):
            return SourceProblem(line, f"field {key!r} must be a string or a number, found {_json_type(value)}",
                                 index)
        fields[key] = value
    return SourceRecord(line, index, fields)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string" if isinstance(value, str) else type(value).__name__

