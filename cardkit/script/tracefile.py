"""Reading exchanges for people: command names, decoded responses, and cardkit's JSON Lines trace files.

A trace file is what ``cardkit --trace FILE`` (:class:`cardkit.session.Trace`) appends, one JSON object per
exchange on the wire (after secure messaging, GET RESPONSE and chaining)::

    {"t": 1718000000.1, "name": "SELECT", "c": "00A4040C 7378312E...", "r": "9000", "sw": "9000",
     "meaning": "success", "ms": 0.142}

``c`` is the header (8 hex digits), then the command data, then ``Le=N``; ``r`` the response data then the
status word. Secret data is written ``<N bytes secret>`` and file contents ``<N bytes sha256:xxxxxxxx>``.

**What a trace can replay.** :func:`to_transcript` turns the exchanges whose command and response are both
in clear into a replay transcript (:class:`cardkit.transport.replay.Transcript`). A redacted exchange cannot
be replayed — its bytes are not in the file, by design: VERIFY / CHANGE REFERENCE DATA / authentication /
PUT KEY data, READ/UPDATE BINARY|RECORD contents, and everything under secure messaging that touches them.
Trace files also carry no ATR (give it with ``atr=``) and the extended/short form of a command is inferred
from its lengths. For a complete transcript record the session instead: ``cardkit script run --record
FILE`` (raw bytes, secrets included, written 0600).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.errors import ParseError
from cardkit.sw import describe
from cardkit.transport.replay import Transcript

if TYPE_CHECKING:
    from cardkit.commands.iso import Fcp

__all__ = [
    "DATA_INS", "SECRET_INS", "RedactedExchangeError", "TraceFormatError", "TraceRecord", "command_name",
    "decode_response", "is_secret", "read_trace", "render_trace", "summarize", "to_transcript",
]

# ISO 7816-4:2020 §11.5 VERIFY 20/21, CHANGE REFERENCE DATA 24, RESET RETRY COUNTER 2C, EXTERNAL/MUTUAL
# AUTHENTICATE 82, GENERAL AUTHENTICATE 86/87, INTERNAL AUTHENTICATE 88; GPCS 2.3.1 §11.8 PUT KEY D8,
# §11.5 INITIALIZE UPDATE 50 (its response carries the card cryptogram). The same set as cardkit.session.
SECRET_INS = frozenset({0x20, 0x21, 0x24, 0x2C, 0x82, 0x86, 0x87, 0x88, 0xD8, 0x50})
# ISO 7816-4:2020 §11.3-§11.4 data-unit and record handling, §11.4 PUT DATA DA/DB, SEARCH RECORD A2,
# CREATE FILE E0; GPCS 2.3.1 §11.11 STORE DATA E2 (= APPEND RECORD), E4: contents that may be personal data.
DATA_INS = frozenset({0xB0, 0xB1, 0xB2, 0xB3, 0xD6, 0xD7, 0xDC, 0xDD, 0xD0, 0xD1, 0xE2, 0xA2, 0xDA, 0xDB,
                      0xE4, 0xE0})

# ISO/IEC 7816-4:2020 §11 (interindustry commands, CLA b8 = 0) and ISO/IEC 7816-9:2017 §8 (file management).
_ISO_NAMES = {
    0x04: "DEACTIVATE FILE", 0x0E: "ERASE BINARY", 0x0F: "ERASE BINARY", 0x10: "PERFORM SCQL OPERATION",
    0x20: "VERIFY", 0x21: "VERIFY", 0x22: "MANAGE SECURITY ENVIRONMENT", 0x24: "CHANGE REFERENCE DATA",
    0x26: "DISABLE VERIFICATION REQUIREMENT", 0x28: "ENABLE VERIFICATION REQUIREMENT",
    0x2A: "PERFORM SECURITY OPERATION", 0x2C: "RESET RETRY COUNTER", 0x44: "ACTIVATE FILE",
    0x46: "GENERATE ASYMMETRIC KEY PAIR", 0x70: "MANAGE CHANNEL", 0x82: "EXTERNAL AUTHENTICATE",
    0x84: "GET CHALLENGE", 0x86: "GENERAL AUTHENTICATE", 0x87: "GENERAL AUTHENTICATE",
    0x88: "INTERNAL AUTHENTICATE", 0xA0: "SEARCH BINARY", 0xA1: "SEARCH BINARY", 0xA2: "SEARCH RECORD",
    0xA4: "SELECT", 0xB0: "READ BINARY", 0xB1: "READ BINARY", 0xB2: "READ RECORD", 0xB3: "READ RECORD",
    0xC0: "GET RESPONSE", 0xC2: "ENVELOPE", 0xC3: "ENVELOPE", 0xCA: "GET DATA", 0xCB: "GET DATA",
    0xD0: "WRITE BINARY", 0xD1: "WRITE BINARY", 0xD2: "WRITE RECORD", 0xD6: "UPDATE BINARY",
    0xD7: "UPDATE BINARY", 0xDA: "PUT DATA", 0xDB: "PUT DATA", 0xDC: "UPDATE RECORD", 0xDD: "UPDATE RECORD",
    0xE0: "CREATE FILE", 0xE2: "APPEND RECORD", 0xE4: "DELETE FILE", 0xE6: "TERMINATE DF",
    0xE8: "TERMINATE EF", 0xFE: "TERMINATE CARD USAGE",
}
# GlobalPlatform Card Specification 2.3.1 §11 (proprietary class, CLA 80-8F / C0-CF / E0-EF).
_GP_NAMES = {
    0x50: "INITIALIZE UPDATE", 0x82: "EXTERNAL AUTHENTICATE", 0x78: "END R-MAC SESSION",
    0x7A: "BEGIN R-MAC SESSION", 0xCA: "GET DATA", 0xCB: "GET DATA", 0xD8: "PUT KEY", 0xE2: "STORE DATA",
    0xE4: "DELETE", 0xE6: "INSTALL", 0xE8: "LOAD", 0xF0: "SET STATUS", 0xF2: "GET STATUS",
    0xC0: "GET RESPONSE",
}
# ISO 7816-4:2020 §11.2.2 Table 39 (SELECT P1).
_SELECT_P1 = {0x00: "", 0x01: " DF", 0x02: " EF", 0x03: " parent", 0x04: " by DF name", 0x08: " by path",
              0x09: " by path from DF"}
# GPCS 2.3.1 §11.4.2.1 (GET STATUS P1).
_GET_STATUS_P1 = {0x80: " ISD", 0x40: " applications", 0x20: " load files", 0x10: " load files+modules"}


def is_secret(command: CommandApdu) -> bool:
    """True when the command's data (and its response data) are secrets: shown by length only."""
    return command.sensitive or command.ins in SECRET_INS


def _has_sm(cla: int) -> bool:
    # ISO 7816-4:2020 §5.4.1: first interindustry class b4-b3, further interindustry b6; GP 84 (b3).
    return bool(cla & 0x20) if cla & 0x40 else bool(cla & 0x0C)


def command_name(header: bytes) -> str:
    """A readable name for a C-APDU header (CLA INS P1 P2), e.g. ``READ RECORD 1``, ``GET STATUS ISD (SM)``."""
    if len(header) < 4:
        return "?"
    cla, ins, p1, p2 = header[0], header[1], header[2], header[3]
    proprietary = bool(cla & 0x80) and cla != 0xFF
    name = (_GP_NAMES.get(ins) if proprietary else None) or _ISO_NAMES.get(ins) or f"INS {ins:02X}"
    if ins == 0xA4:
        name += _SELECT_P1.get(p1, f" P1={p1:02X}")
    elif ins in (0xB2, 0xDC, 0xDD, 0xB3) and p2 & 0x07 == 0x04:
        name += f" {p1}"
    elif ins in (0x20, 0x24, 0x2C):
        name += f" ref {p2:02X}"
    elif ins in (0xCA, 0xCB):
        name += f" {p1:02X}{p2:02X}" if p1 else f" {p2:02X}"
    elif ins == 0xF2 and proprietary:
        name += _GET_STATUS_P1.get(p1, f" P1={p1:02X}")
    elif ins == 0x82 and proprietary:
        name += f" level {p1:02X}"
    if proprietary and ins not in _GP_NAMES and ins in _ISO_NAMES:
        name += " (proprietary class)"
    if cla & 0x10 and not proprietary:
        name += " (chained)"
    if _has_sm(cla):
        name += " (SM)"
    return name


# -------------------------------------------------------------------------------------- decoded views


def decode_response(command: CommandApdu, response: ResponseApdu) -> list[str]:
    """Short decoded views of a successful response: FCP/FCI, CPLC, card data, key information, GET STATUS,
    PIN tries. Never decodes secret or personal data (file contents); never raises."""
    try:
        return _decode(command, response)
    except (ParseError, ValueError, KeyError, IndexError):
        return []


def _decode(command: CommandApdu, response: ResponseApdu) -> list[str]:
    from cardkit.commands import gpdata, iso

    sw, data, ins = response.sw, response.data, command.ins
    if ins == 0x20 and (sw & 0xFFF0) == 0x63C0:
        return [f"PIN {command.p2:02X}: {sw & 0x0F} tries left"]
    if ins == 0x20 and sw == 0x6983:
        return [f"PIN {command.p2:02X}: blocked"]
    if ins == 0x20 and sw == 0x9000 and not command.data:
        return [f"PIN {command.p2:02X}: verified in this session"]
    if not data or not (sw == 0x9000 or response.sw1 in (0x61, 0x62, 0x63)):
        return []
    if ins == 0xA4:
        line = describe_fcp(iso.parse_fcp(data))
        return [("FCI: " + line[5:]) if data[:1] == b"\x6f" else line]
    if ins == 0xCA and command.p1 == 0x9F and command.p2 == 0x7F:
        c = gpdata.Cplc.parse(data).to_dict()
        return [f"CPLC: IC fabricator {c['ic_fabricator']} ({c['ic_fabricator_name'] or 'unknown'}), IC type "
                f"{c['ic_type']}, OS {c['os_id']} release {c['os_release_date_text'] or c['os_release_date']}, "
                f"IC serial {c['ic_serial_number']}, batch {c['ic_batch_id']}"]
    if ins == 0xCA and command.p1 == 0x00 and command.p2 == 0x66:
        cd = gpdata.CardData.parse(data)
        return [f"card data: GP {cd.gp_version or '?'}, {', '.join(cd.scp_descriptions) or 'no SCP listed'}"]
    if ins == 0xCA and command.p1 == 0x00 and command.p2 == 0xE0:
        info = gpdata.KeyInfo.parse(data)
        return [f"key information: key versions {' '.join(f'{v:02X}' for v in info.versions()) or 'none'}"]
    if ins == 0xF2 and command.cla & 0x80:
        kind = {0x80: "isd", 0x40: "apps", 0x20: "load-files", 0x10: "load-files-modules"}.get(command.p1)
        if kind is None:
            return []
        entries = gpdata.parse_get_status(data, kind, tag_list=bool(command.p2 & 0x02))  # type: ignore[arg-type]
        return [f"{e.aid.hex().upper()}  {e.life_cycle_name}"
                + (f"  privileges: {', '.join(e.privilege_names)}" if e.privilege_names else "") for e in entries]
    return []


def describe_fcp(fcp: Fcp) -> str:
    """One line for a :class:`cardkit.commands.iso.Fcp`: FID, DF name, structure, records, size, SFI, LCS."""
    parts: list[str] = []
    if fcp.fid:
        parts.append(f"FID {fcp.fid.hex().upper()}")
    if fcp.df_name:
        parts.append(f"name {fcp.df_name.hex().upper()}")
    if fcp.structure:
        parts.append(fcp.structure)
    if fcp.record_size:
        count = fcp.record_count if fcp.record_count is not None else "?"
        parts.append(f"{count} records of {fcp.record_size} bytes")
    if fcp.size is not None:
        parts.append(f"{fcp.size} bytes")
    if fcp.sfi:
        parts.append(f"SFI {fcp.sfi}")
    if fcp.lcs:
        parts.append(fcp.lcs)
    return "FCP: " + (", ".join(parts) or "(empty)")


# -------------------------------------------------------------------------------------- trace files


class TraceFormatError(ParseError):
    """A trace line that is not a cardkit trace record (names file:line)."""


class RedactedExchangeError(ParseError):
    """A trace exchange whose bytes were redacted, so it cannot be replayed."""

    def __init__(self, message: str, *, index: int, line: int) -> None:
        self.index, self.line = index, line
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One exchange of a trace file."""

    line: int
    t: float
    name: str
    c: str
    r: str
    sw: int
    meaning: str
    ms: float

    @property
    def header(self) -> bytes:
        return bytes.fromhex(self.c[:8])

    @property
    def redacted(self) -> bool:
        return "<" in self.c or "<" in self.r


_C_RE = re.compile(r"([0-9A-F]{8})(?: ([0-9A-F]+|<\d+ bytes [^>]*>))?(?: Le=(\d+))?\Z")
_R_RE = re.compile(r"(?:([0-9A-F]+|<\d+ bytes [^>]*>) )?([0-9A-F]{4})\Z")


def read_trace(path: str | os.PathLike[str]) -> list[TraceRecord]:
    """Read a trace file; a malformed line raises :class:`TraceFormatError` naming file:line."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TraceFormatError(f"cannot read trace {os.fspath(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TraceFormatError(f"{os.fspath(path)}: not UTF-8 text") from None
    out: list[TraceRecord] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{os.fspath(path)}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise TraceFormatError(f"{where}: a trace record is a JSON object")
        try:
            c, r, sw = str(obj["c"]), str(obj["r"]), str(obj["sw"])
            record = TraceRecord(n, float(obj.get("t", 0.0)), str(obj.get("name", "")), c, r, int(sw, 16),
                                 str(obj.get("meaning", "")), float(obj.get("ms", 0.0)))
        except KeyError as exc:
            raise TraceFormatError(f"{where}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError):
            raise TraceFormatError(f"{where}: a field has the wrong type (sw must be 4 hex digits)") from None
        if not _C_RE.match(c):
            raise TraceFormatError(f"{where}: command {c[:40]!r} is not 'HEADER [DATA] [Le=N]'")
        if not _R_RE.match(r):
            raise TraceFormatError(f"{where}: response {r[:40]!r} is not '[DATA] SW'")
        out.append(record)
    return out


def render_trace(records: Sequence[TraceRecord]) -> Iterator[str]:
    """Lines for people: index, time since the first exchange, decoded name, command, response, meaning, ms."""
    if not records:
        return
    t0 = records[0].t
    width = len(str(len(records)))
    for i, rec in enumerate(records, start=1):
        name = command_name(rec.header)
        yield f"#{i:<{width}} +{(rec.t - t0) * 1000:9.1f} ms  {name}  ({rec.ms:.3f} ms)"
        yield f"    > {rec.c}"
        yield f"    < {rec.r}  {rec.meaning or describe(rec.sw)}"


def summarize(records: Sequence[TraceRecord]) -> dict[str, object]:
    """Counts and timing of a trace: exchanges, total ms, per-command counts, non-success status words."""
    names: dict[str, int] = {}
    errors: dict[str, int] = {}
    for rec in records:
        base = command_name(rec.header).split(" (")[0]
        names[base] = names.get(base, 0) + 1
        if rec.sw != 0x9000 and rec.sw >> 8 != 0x61:
            key = f"{rec.sw:04X} {describe(rec.sw)}"
            errors[key] = errors.get(key, 0) + 1
    return {
        "exchanges": len(records), "total_ms": round(sum(r.ms for r in records), 3),
        "span_ms": round((records[-1].t - records[0].t) * 1000, 1) if records else 0.0,
        "redacted": sum(1 for r in records if r.redacted), "commands": names, "status_words": errors,
    }


def _record_bytes(rec: TraceRecord) -> tuple[bytes, bytes]:
    cm = _C_RE.match(rec.c)
    rm = _R_RE.match(rec.r)
    if cm is None or rm is None:
        raise TraceFormatError(f"line {rec.line}: not a trace exchange")
    header, data_hex, le_text = cm.group(1), cm.group(2) or "", cm.group(3)
    data = bytes.fromhex(data_hex)
    le = int(le_text) if le_text else None
    head = bytes.fromhex(header)
    command = CommandApdu(head[0], head[1], head[2], head[3], data, le).to_bytes()
    response = bytes.fromhex(rm.group(1) or "") + bytes.fromhex(rm.group(2))
    return command, response


def to_transcript(records: Iterable[TraceRecord], *, atr: bytes = b"",
                  until_redacted: bool = False) -> tuple[Transcript, int]:
    """A replay transcript from the trace's exchanges; returns it and the number of exchanges kept.

    A redacted exchange raises :class:`RedactedExchangeError` (naming it) unless ``until_redacted``, which
    keeps the exchanges before the first redacted one.
    """
    pairs: list[tuple[bytes, bytes]] = []
    for i, rec in enumerate(records):
        if rec.redacted:
            if until_redacted:
                break
            raise RedactedExchangeError(
                f"exchange #{i + 1} (line {rec.line}, {command_name(rec.header)}) is redacted in the trace and "
                "cannot be replayed; keep the exchanges before it with --until-redacted, or record a full "
                "transcript with 'cardkit script run --record FILE'", index=i, line=rec.line)
        try:
            pairs.append(_record_bytes(rec))
        except ParseError as exc:
            raise TraceFormatError(f"line {rec.line}: {exc}") from None
    return Transcript(atr, tuple(pairs)), len(pairs)
