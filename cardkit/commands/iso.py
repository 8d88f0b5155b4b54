"""Interindustry command builders (ISO/IEC 7816-4:2020 §11, ISO/IEC 7816-8, ISO/IEC 7816-9) and FCP helpers.

Every builder is a pure function returning a :class:`~cardkit.apdu.CommandApdu` with CLA ``00`` (use
``.replace(cla=...)`` for logical channels or secure messaging). Arguments are checked up front and a wrong one
raises :class:`~cardkit.errors.ApduFormatError` naming the rule it breaks. ``le=None`` on a command that returns
data means "as many bytes as available" (short-form ``00``, Ne = 256).

Section references follow ISO/IEC 7816-4:2020: §11.1 selection, §11.2 data-unit handling, §11.3 record
handling, §11.4 data-object handling, §11.5 basic security handling, §11.6 transmission handling. The FCP
helpers (§7.4 file control information) live in :mod:`cardkit.commands.fcp` and are re-exported here.
"""

from __future__ import annotations

import logging
from typing import Literal

from cardkit.apdu import LE_MAX_SHORT, CommandApdu
from cardkit.commands._args import MF_FID, _aid, _bytes, _fid, _int, _le, _ref, _sfi
from cardkit.commands.fcp import DEFAULT_DATA_CODING as DEFAULT_DATA_CODING
from cardkit.commands.fcp import LCS_BYTES, Fcp, FcpError, fcp_template, file_descriptor, parse_fcp
from cardkit.commands.fcp import LcsName as LcsName
from cardkit.commands.fcp import Structure as Structure
from cardkit.commands.fcp import lcs_name as lcs_name
from cardkit.errors import ApduFormatError
from cardkit.tlv import ber_decode, ber_encode

logger = logging.getLogger(__name__)

__all__ = [
    "LCS_BYTES", "MF_FID", "Fcp", "FcpError", "activate_file", "append_record", "change_reference_data",
    "create_file", "deactivate_file", "delete_file", "erase_binary", "external_authenticate", "fcp_template",
    "file_descriptor", "general_authenticate", "get_challenge", "get_data", "get_response",
    "internal_authenticate", "manage_channel", "mse_restore", "mse_set", "mutual_authenticate", "parse_fcp",
    "pso", "put_data", "read_binary", "read_binary_odd", "read_record", "reset_retry_counter", "search_record",
    "select_aid", "select_child_df", "select_child_ef", "select_fid", "select_mf", "select_parent",
    "select_path", "terminate_card_usage", "terminate_df", "terminate_ef", "update_binary", "update_record",
    "verify", "write_binary", "write_record",
]


# ISO 7816-4:2020 §11.1 (SELECT, P2 bits b4-b3): which file control information to return.
FciChoice = Literal["fci", "fcp", "fmd", "none"]
_P2_FCI: dict[str, int] = {"fci": 0x00, "fcp": 0x04, "fmd": 0x08, "none": 0x0C}
# ISO 7816-4:2020 §11.1 (SELECT, P2 bits b2-b1): file occurrence.
Occurrence = Literal["first", "last", "next", "previous"]
_P2_OCCURRENCE: dict[str, int] = {"first": 0x00, "last": 0x01, "next": 0x02, "previous": 0x03}

# ISO 7816-4:2020 §11.3 (READ RECORD, P2 bits b3-b1). b3=1: P1 is a record number; b3=0: P1 is a record
# identifier (00 = any identifier) and the occurrence is first/last/next/previous.
RecordMode = Literal["exact", "all-from", "all-to", "first", "last", "next", "previous"]
_RECORD_MODE: dict[str, int] = {
    "exact": 0b100, "all-from": 0b101, "all-to": 0b110,
    "first": 0b000, "last": 0b001, "next": 0b010, "previous": 0b011,
}

# ISO 7816-8:2021 §11 (PERFORM SECURITY OPERATION): P1-P2 per operation, and whether it returns data.
PsoOperation = Literal["compute-signature", "verify-signature", "compute-checksum", "verify-checksum",
                       "encipher", "decipher", "hash", "verify-certificate"]
_PSO: dict[str, tuple[int, int, bool]] = {
    "compute-signature": (0x9E, 0x9A, True),
    "verify-signature": (0x00, 0xA8, False),
    "compute-checksum": (0x8E, 0x80, True),
    "verify-checksum": (0x00, 0xA2, False),
    "encipher": (0x86, 0x80, True),
    "decipher": (0x80, 0x86, True),
    "hash": (0x90, 0x80, True),
    "verify-certificate": (0x00, 0xBE, False),
}

# ISO 7816-4:2020 §11.5 (MSE SET, P2): tag of the control reference template being set.
_CRT_TAGS = {0xA4: "AT", 0xA6: "KAT", 0xAA: "HT", 0xB4: "CCT", 0xB6: "DST", 0xB8: "CT"}



# ------------------------------------------------------------------------------------------ §11.1 selection


def _select(p1: int, data: bytes, fci: FciChoice, occurrence: Occurrence = "first") -> CommandApdu:
    if fci not in _P2_FCI:
        raise ApduFormatError(f"p2_fci must be one of {sorted(_P2_FCI)}, got {fci!r}")
    if occurrence not in _P2_OCCURRENCE:
        raise ApduFormatError(f"first_next must be one of {sorted(_P2_OCCURRENCE)}, got {occurrence!r}")
    p2 = _P2_FCI[fci] | _P2_OCCURRENCE[occurrence]
    le = None if fci == "none" else LE_MAX_SHORT
    return CommandApdu(0x00, 0xA4, p1, p2, data, le, name="SELECT")


def select_mf(*, p2_fci: FciChoice = "fcp") -> CommandApdu:
    """SELECT the MF by its identifier 3F00 (ISO 7816-4:2020 §11.1, P1 = 00)."""
    return _select(0x00, MF_FID, p2_fci)


def select_fid(fid: bytes, *, p2_fci: FciChoice = "fcp", first_next: Occurrence = "first") -> CommandApdu:
    """SELECT an MF, DF or EF by file identifier (ISO 7816-4:2020 §11.1, P1 = 00)."""
    return _select(0x00, _fid(fid), p2_fci, first_next)


def select_child_df(fid: bytes, *, p2_fci: FciChoice = "fcp") -> CommandApdu:
    """SELECT a DF under the current DF (ISO 7816-4:2020 §11.1, P1 = 01)."""
    return _select(0x01, _fid(fid), p2_fci)


def select_child_ef(fid: bytes, *, p2_fci: FciChoice = "fcp") -> CommandApdu:
    """SELECT an EF under the current DF (ISO 7816-4:2020 §11.1, P1 = 02)."""
    return _select(0x02, _fid(fid), p2_fci)


def select_parent(*, p2_fci: FciChoice = "fcp") -> CommandApdu:
    """SELECT the parent DF of the current DF (ISO 7816-4:2020 §11.1, P1 = 03, no data)."""
    return _select(0x03, b"", p2_fci)


def select_aid(aid: bytes, *, next: bool = False, p2_fci: FciChoice = "fci",
               partial: bool = False) -> CommandApdu:
    """SELECT by DF name (AID) (ISO 7816-4:2020 §11.1, P1 = 04); ``next`` selects the next occurrence.

    ``partial`` allows a right-truncated DF name of 1..4 bytes as well (partial selection).
    """
    return _select(0x04, _aid(aid, partial=partial), p2_fci, "next" if next else "first")


def select_path(path: bytes, *, from_mf: bool = True, p2_fci: FciChoice = "fcp") -> CommandApdu:
    """SELECT by path (ISO 7816-4:2020 §11.1, P1 = 08 from the MF, 09 from the current DF).

    The path is a concatenation of file identifiers. From the MF the MF's own 3F00 is excluded by the
    standard; a leading 3F00 given here is dropped for convenience.
    """
    raw = _bytes("path", path, min_len=2, max_len=254)
    if len(raw) % 2:
        raise ApduFormatError(f"path must be a whole number of 2-byte FIDs, got {len(raw)} bytes")
    if from_mf and raw[:2] == MF_FID:
        raw = raw[2:]
        if not raw:
            raise ApduFormatError("path 3F00 alone names the MF; use select_mf()")
    for i in range(0, len(raw), 2):
        if raw[i:i + 2] == b"\xff\xff":
            raise ApduFormatError(f"path element {i // 2} is FFFF (reserved, ISO 7816-4 §7.1.1)")
    return _select(0x08 if from_mf else 0x09, raw, p2_fci)


def manage_channel(action: Literal["open", "close"], channel: int | None = None) -> CommandApdu:
    """MANAGE CHANNEL (ISO 7816-4:2020 §11.1): open (P1 00) or close (P1 80) a logical channel 1..19.

    Opening without a channel number lets the card choose and return it (Le = 1).
    """
    if action == "open":
        if channel is None:
            return CommandApdu(0x00, 0x70, 0x00, 0x00, le=1, name="MANAGE CHANNEL")
        return CommandApdu(0x00, 0x70, 0x00, _int("channel", channel, 1, 19), name="MANAGE CHANNEL")
    if action == "close":
        if channel is None:
            raise ApduFormatError("closing a logical channel needs its number (1..19)")
        return CommandApdu(0x00, 0x70, 0x80, _int("channel", channel, 1, 19), name="MANAGE CHANNEL")
    raise ApduFormatError(f"action must be 'open' or 'close', got {action!r}")


# --------------------------------------------------------------------------------- §11.2 data-unit handling


def _binary_p1p2(offset: int, sfi: int | None) -> tuple[int, int]:
    # ISO 7816-4:2020 §11.2: P1 b8=0 -> 15-bit offset in P1-P2; b8=1 -> b7-b6=00, b5-b1 SFI, P2 = offset.
    if sfi is None:
        off = _int("offset", offset, 0, 0x7FFF, " (15 bits without SFI)")
        return off >> 8, off & 0xFF
    return 0x80 | _sfi(sfi), _int("offset", offset, 0, 0xFF, " (8 bits with an SFI)")


def read_binary(offset: int = 0, le: int | None = None, *, sfi: int | None = None) -> CommandApdu:
    """READ BINARY, even INS B0 (ISO 7816-4:2020 §11.2)."""
    p1, p2 = _binary_p1p2(offset, sfi)
    return CommandApdu(0x00, 0xB0, p1, p2, le=_le(le), name="READ BINARY")


def read_binary_odd(offset: int, le: int | None = None, *, fid: bytes | None = None,
                    sfi: int | None = None) -> CommandApdu:
    """READ BINARY, odd INS B1 (ISO 7816-4:2020 §11.2): offset in data object 54, beyond 32767.

    P1-P2 is the FID of the EF, ``00xx`` with an SFI, or ``0000`` for the current EF.
    """
    if fid is not None and sfi is not None:
        raise ApduFormatError("give either fid or sfi, not both")
    p1p2 = _fid(fid) if fid is not None else bytes((0, _sfi(sfi) if sfi is not None else 0))
    off = _int("offset", offset, 0, 0xFFFFFF)
    offset_do = ber_encode(0x54, off.to_bytes(max(1, (off.bit_length() + 7) // 8), "big"))
    return CommandApdu(0x00, 0xB1, p1p2[0], p1p2[1], offset_do, _le(le), name="READ BINARY")


def update_binary(data: bytes, offset: int = 0, *, sfi: int | None = None) -> CommandApdu:
    """UPDATE BINARY, INS D6 (ISO 7816-4:2020 §11.2)."""
    p1, p2 = _binary_p1p2(offset, sfi)
    return CommandApdu(0x00, 0xD6, p1, p2, _bytes("data", data, min_len=1), name="UPDATE BINARY")


def write_binary(data: bytes, offset: int = 0, *, sfi: int | None = None) -> CommandApdu:
    """WRITE BINARY, INS D0 (ISO 7816-4:2020 §11.2)."""
    p1, p2 = _binary_p1p2(offset, sfi)
    return CommandApdu(0x00, 0xD0, p1, p2, _bytes("data", data, min_len=1), name="WRITE BINARY")


def erase_binary(offset: int = 0, *, end: int | None = None, sfi: int | None = None) -> CommandApdu:
    """ERASE BINARY, INS 0E (ISO 7816-4:2020 §11.2): from ``offset`` to the end, or up to ``end`` (excluded)."""
    p1, p2 = _binary_p1p2(offset, sfi)
    data = b""
    if end is not None:
        if _int("end", end, 1, 0x7FFF) <= offset:
            raise ApduFormatError(f"end offset {end} must be greater than the start offset {offset}")
        data = end.to_bytes(2, "big")
    return CommandApdu(0x00, 0x0E, p1, p2, data, name="ERASE BINARY")


# ------------------------------------------------------------------------------------ §11.3 record handling


def _record_p2(sfi: int | None, mode_bits: int) -> int:
    # ISO 7816-4:2020 §11.3: P2 b8-b4 = SFI (00000 = current EF), b3-b1 depend on the command.
    return ((_sfi(sfi) if sfi is not None else 0) << 3) | mode_bits


def _record_number(number: object) -> int:
    # ISO 7816-4:2020 §11.3: records are numbered 01..FE; 00 and FF are reserved.
    return _int("record number", number, 1, 254, " (ISO 7816-4 §11.3)")


def read_record(number: int, *, sfi: int | None = None, le: int | None = None,
                mode: RecordMode = "exact") -> CommandApdu:
    """READ RECORD(S), INS B2 (ISO 7816-4:2020 §11.3).

    ``exact``/``all-from``/``all-to`` read record ``number``, all records from it to the last, or from the
    last down to it. ``first``/``last``/``next``/``previous`` treat ``number`` as a record identifier
    (0 = any record).
    """
    if mode not in _RECORD_MODE:
        raise ApduFormatError(f"mode must be one of {sorted(_RECORD_MODE)}, got {mode!r}")
    bits = _RECORD_MODE[mode]
    p1 = _record_number(number) if bits & 0b100 else _int("record identifier", number, 0, 254)
    return CommandApdu(0x00, 0xB2, p1, _record_p2(sfi, bits), le=_le(le), name="READ RECORD")


def update_record(number: int, data: bytes, *, sfi: int | None = None) -> CommandApdu:
    """UPDATE RECORD, INS DC, record number in P1 (ISO 7816-4:2020 §11.3)."""
    return CommandApdu(0x00, 0xDC, _record_number(number), _record_p2(sfi, 0b100),
                       _bytes("record", data, min_len=1), name="UPDATE RECORD")


def write_record(number: int, data: bytes, *, sfi: int | None = None) -> CommandApdu:
    """WRITE RECORD, INS D2, record number in P1 (ISO 7816-4:2020 §11.3)."""
    return CommandApdu(0x00, 0xD2, _record_number(number), _record_p2(sfi, 0b100),
                       _bytes("record", data, min_len=1), name="WRITE RECORD")


def append_record(data: bytes, *, sfi: int | None = None) -> CommandApdu:
    """APPEND RECORD, INS E2, P1 = 00, P2 b3-b1 = 000 (ISO 7816-4:2020 §11.3)."""
    return CommandApdu(0x00, 0xE2, 0x00, _record_p2(sfi, 0b000), _bytes("record", data, min_len=1),
                       name="APPEND RECORD")


def search_record(pattern: bytes, *, start: int = 1, sfi: int | None = None, backward: bool = False,
                  le: int | None = None) -> CommandApdu:
    """SEARCH RECORD, INS A2, simple search from record ``start`` (ISO 7816-4:2020 §11.3).

    P2 b3-b1 = 100 searches forward from P1 to the last record, 101 backward to the first. The response
    lists the numbers of the matching records.
    """
    return CommandApdu(0x00, 0xA2, _record_number(start), _record_p2(sfi, 0b101 if backward else 0b100),
                       _bytes("search string", pattern, min_len=1), _le(le), name="SEARCH RECORD")


# ------------------------------------------------------------------------------- §11.4 data-object handling


def _tag_p1p2(tag: object) -> tuple[int, int]:
    # ISO 7816-4:2020 §11.4: P1-P2 carries a tag of one byte (P1 = 00) or two bytes.
    t = _int("tag", tag, 0x01, 0xFFFF)
    return t >> 8, t & 0xFF


def get_data(tag: int, le: int | None = None) -> CommandApdu:
    """GET DATA, even INS CA, tag in P1-P2 (ISO 7816-4:2020 §11.4)."""
    p1, p2 = _tag_p1p2(tag)
    return CommandApdu(0x00, 0xCA, p1, p2, le=_le(le), name="GET DATA")


def put_data(tag: int, data: bytes) -> CommandApdu:
    """PUT DATA, even INS DA, tag in P1-P2 (ISO 7816-4:2020 §11.4); empty data asks to erase the object."""
    p1, p2 = _tag_p1p2(tag)
    return CommandApdu(0x00, 0xDA, p1, p2, _bytes("data", data), name="PUT DATA")


# --------------------------------------------------------------------------- §11.5 basic security handling


def verify(ref: int, pin: bytes | None) -> CommandApdu:
    """VERIFY, INS 20 (ISO 7816-4:2020 §11.5). ``pin=None`` sends no data: the card answers 63Cx (tries
    left) or 9000 (already verified)."""
    data = b"" if pin is None else _bytes("PIN", pin, min_len=1, max_len=255)
    return CommandApdu(0x00, 0x20, 0x00, _ref(ref), data, name="VERIFY", sensitive=True)


def change_reference_data(ref: int, old: bytes | None, new: bytes) -> CommandApdu:
    """CHANGE REFERENCE DATA, INS 24 (ISO 7816-4:2020 §11.5): P1 00 with old ‖ new, P1 01 with new only."""
    new_b = _bytes("new reference data", new, min_len=1, max_len=255)
    if old is None:
        return CommandApdu(0x00, 0x24, 0x01, _ref(ref), new_b, name="CHANGE REFERENCE DATA", sensitive=True)
    old_b = _bytes("old reference data", old, min_len=1, max_len=255)
    return CommandApdu(0x00, 0x24, 0x00, _ref(ref), old_b + new_b, name="CHANGE REFERENCE DATA",
                       sensitive=True)


def reset_retry_counter(ref: int, puk: bytes | None, new: bytes | None) -> CommandApdu:
    """RESET RETRY COUNTER, INS 2C (ISO 7816-4:2020 §11.5).

    P1 00: resetting code ‖ new reference data; 01: resetting code only; 02: new reference data only;
    03: no data.
    """
    puk_b = b"" if puk is None else _bytes("resetting code", puk, min_len=1, max_len=255)
    new_b = b"" if new is None else _bytes("new reference data", new, min_len=1, max_len=255)
    p1 = {(True, True): 0x00, (True, False): 0x01, (False, True): 0x02, (False, False): 0x03}[
        (puk is not None, new is not None)]
    return CommandApdu(0x00, 0x2C, p1, _ref(ref), puk_b + new_b, name="RESET RETRY COUNTER", sensitive=True)


def get_challenge(length: int = 8) -> CommandApdu:
    """GET CHALLENGE, INS 84 (ISO 7816-4:2020 §11.5): Le = the challenge length."""
    return CommandApdu(0x00, 0x84, 0x00, 0x00, le=_int("challenge length", length, 1, 256), name="GET CHALLENGE")


def internal_authenticate(data: bytes, *, alg: int = 0, ref: int = 0, le: int | None = None) -> CommandApdu:
    """INTERNAL AUTHENTICATE, INS 88 (ISO 7816-4:2020 §11.5): P1 algorithm, P2 key reference."""
    return CommandApdu(0x00, 0x88, _int("algorithm (P1)", alg, 0, 0xFF), _ref(ref),
                       _bytes("challenge", data, min_len=1), _le(le), name="INTERNAL AUTHENTICATE", sensitive=True)


def external_authenticate(data: bytes | None, *, alg: int = 0, ref: int = 0) -> CommandApdu:
    """EXTERNAL AUTHENTICATE, INS 82 (ISO 7816-4:2020 §11.5); without data it asks for the card's state."""
    body = b"" if data is None else _bytes("authentication data", data, min_len=1)
    return CommandApdu(0x00, 0x82, _int("algorithm (P1)", alg, 0, 0xFF), _ref(ref), body,
                       name="EXTERNAL AUTHENTICATE", sensitive=True)


def mutual_authenticate(data: bytes, *, alg: int = 0, ref: int = 0, le: int | None = None) -> CommandApdu:
    """MUTUAL AUTHENTICATE, INS 82 with Le (ISO 7816-4:2020 §11.5), e.g. the ICAO BAC exchange."""
    return CommandApdu(0x00, 0x82, _int("algorithm (P1)", alg, 0, 0xFF), _ref(ref),
                       _bytes("authentication data", data, min_len=1), _le(le), name="MUTUAL AUTHENTICATE",
                       sensitive=True)


def general_authenticate(data: bytes, *, alg: int = 0, ref: int = 0, le: int | None = None,
                         chained: bool = False) -> CommandApdu:
    """GENERAL AUTHENTICATE, INS 86 (ISO 7816-4:2020 §11.5): data is a dynamic authentication template (7C).

    ``chained`` sets the command-chaining bit b5 of CLA (ISO 7816-4 §5.4.1) for all but the last step.
    """
    return CommandApdu(0x10 if chained else 0x00, 0x86, _int("algorithm (P1)", alg, 0, 0xFF), _ref(ref),
                       _bytes("dynamic authentication data", data, min_len=1), _le(le),
                       name="GENERAL AUTHENTICATE", sensitive=True)


def mse_set(template: int, crt: bytes, *, compute: bool = True, verify: bool = False,
            sm_command: bool = False, sm_response: bool = False) -> CommandApdu:
    """MANAGE SECURITY ENVIRONMENT: SET (ISO 7816-4:2020 §11.5), P2 = CRT tag, data = the CRT's content.

    P1 = 1 (SET) plus usage qualifiers: b8 verification/encipherment/external authentication, b7 computation/
    decipherment/internal authentication, b6 SM in responses, b5 SM in commands.
    """
    if template not in _CRT_TAGS:
        names = ", ".join(f"{t:02X} {n}" for t, n in _CRT_TAGS.items())
        raise ApduFormatError(f"template must be a CRT tag ({names}), got {template!r}")
    if not (compute or verify or sm_command or sm_response):
        raise ApduFormatError("MSE SET needs at least one usage qualifier (compute, verify, sm_command, sm_response)")
    p1 = 0x01 | (0x80 if verify else 0) | (0x40 if compute else 0) | (0x20 if sm_response else 0) \
        | (0x10 if sm_command else 0)
    body = _bytes("CRT content", crt)
    if body:
        ber_decode(body)  # must be control reference data objects; raises TlvError otherwise
    return CommandApdu(0x00, 0x22, p1, template, body, name="MSE SET")


def mse_restore(se: int) -> CommandApdu:
    """MANAGE SECURITY ENVIRONMENT: RESTORE security environment ``se`` (ISO 7816-4:2020 §11.5, P1 F3)."""
    return CommandApdu(0x00, 0x22, 0xF3, _int("SE number", se, 0, 0xFE), name="MSE RESTORE")


def pso(operation: PsoOperation, data: bytes = b"", *, le: int | None = None) -> CommandApdu:
    """PERFORM SECURITY OPERATION, INS 2A (ISO/IEC 7816-8:2021). Operations that return data get Le."""
    if operation not in _PSO:
        raise ApduFormatError(f"operation must be one of {sorted(_PSO)}, got {operation!r}")
    p1, p2, returns = _PSO[operation]
    body = _bytes("PSO data", data)
    if not body and operation not in ("compute-signature", "compute-checksum"):
        raise ApduFormatError(f"PSO {operation} needs input data")
    sensitive = operation in ("decipher", "encipher")
    return CommandApdu(0x00, 0x2A, p1, p2, body, _le(le) if returns else None, name=f"PSO {operation.upper()}",
                       sensitive=sensitive)


# ---------------------------------------------------------------------------- §11.6 transmission handling


def get_response(le: int) -> CommandApdu:
    """GET RESPONSE, INS C0 (ISO 7816-4:2020 §11.6)."""
    return CommandApdu(0x00, 0xC0, 0x00, 0x00, le=_int("Le", le, 1, 65536), name="GET RESPONSE")


# ------------------------------------------------------------------- ISO/IEC 7816-9:2017 file life cycle


def create_file(fcp: bytes) -> CommandApdu:
    """CREATE FILE, INS E0 (ISO/IEC 7816-9:2017): data = FCP template '62' (see :func:`fcp_template`)."""
    raw = _bytes("FCP", fcp, min_len=2)
    objs = ber_decode(raw)
    if len(objs) != 1 or objs[0].tag != 0x62:
        raise ApduFormatError("CREATE FILE data must be exactly one FCP template (tag 62, ISO/IEC 7816-9)")
    return CommandApdu(0x00, 0xE0, 0x00, 0x00, raw, name="CREATE FILE")


def _file_op(ins: int, name: str, fid: bytes | None) -> CommandApdu:
    # ISO/IEC 7816-9:2017: P1-P2 = 0000 with the FID in the data field, or no data for the current file.
    return CommandApdu(0x00, ins, 0x00, 0x00, b"" if fid is None else _fid(fid), name=name)


def delete_file(fid: bytes | None = None) -> CommandApdu:
    """DELETE FILE, INS E4 (ISO/IEC 7816-9:2017); no FID deletes the current file."""
    return _file_op(0xE4, "DELETE FILE", fid)


def deactivate_file(fid: bytes | None = None) -> CommandApdu:
    """DEACTIVATE FILE, INS 04 (ISO/IEC 7816-9:2017)."""
    return _file_op(0x04, "DEACTIVATE FILE", fid)


def activate_file(fid: bytes | None = None) -> CommandApdu:
    """ACTIVATE FILE, INS 44 (ISO/IEC 7816-9:2017)."""
    return _file_op(0x44, "ACTIVATE FILE", fid)


def terminate_df() -> CommandApdu:
    """TERMINATE DF, INS E6 (ISO/IEC 7816-9:2017): irreversibly terminates the current DF."""
    return CommandApdu(0x00, 0xE6, 0x00, 0x00, name="TERMINATE DF")


def terminate_ef(fid: bytes | None = None) -> CommandApdu:
    """TERMINATE EF, INS E8 (ISO/IEC 7816-9:2017)."""
    return _file_op(0xE8, "TERMINATE EF", fid)


def terminate_card_usage() -> CommandApdu:
    """TERMINATE CARD USAGE, INS FE (ISO/IEC 7816-9:2017): the card becomes unusable."""
    return CommandApdu(0x00, 0xFE, 0x00, 0x00, name="TERMINATE CARD USAGE")
