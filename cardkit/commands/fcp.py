"""File control parameters (ISO/IEC 7816-4:2020 §7.4): build an FCP template '62', decode one back.

:func:`file_descriptor` and :func:`fcp_template` build the data of CREATE FILE (ISO/IEC 7816-9); :func:`parse_fcp`
decodes what SELECT returns into an :class:`Fcp`. All names are re-exported by :mod:`cardkit.commands.iso`.
Section references: §7.4.3, Table 12 for the FCP data objects, the file descriptor and life-cycle bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from cardkit.commands._args import _bytes, _fid, _int, _sfi
from cardkit.errors import ApduFormatError, ParseError, TlvError
from cardkit.tlv import Tlv, ber_decode, ber_encode

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DATA_CODING", "LCS_BYTES", "Fcp", "FcpError", "LcsName", "Structure", "fcp_template",
    "file_descriptor", "lcs_name", "parse_fcp",
]


class FcpError(ParseError):
    """An FCP whose data objects are well-formed BER-TLV but break ISO 7816-4 §7.4.3 (e.g. a 3-byte FID)."""


# ISO 7816-4:2020 §7.4.3 (life cycle status byte), by name.
LCS_BYTES: dict[str, int] = {
    "creation": 0x01, "initialization": 0x03, "operational-activated": 0x05,
    "operational-deactivated": 0x04, "termination": 0x0C,
}
LcsName = Literal["creation", "initialization", "operational-activated", "operational-deactivated", "termination"]

# ISO 7816-4:2020 §7.4.3 (file descriptor byte): b6-b1 = 111000 for a DF; for an EF b3-b1 code the
# structure (odd values 3/5/7 = "TLV structure"), b6-b4 the category (000 working, 001 internal).
Structure = Literal["transparent", "linear-fixed", "linear-variable", "cyclic", "df"]
_FDB_DF = 0x38
_FDB_BER_TLV_EF = 0x39  # ISO 7816-4:2020 §7.4.3: EF for BER-TLV data objects
_FDB_SIMPLE_TLV_EF = 0x3A  # ISO 7816-4:2020 §7.4.3: EF for SIMPLE-TLV data objects
_FDB_SHAREABLE = 0x40
_FDB_STRUCTURE: dict[str, int] = {"transparent": 0x01, "linear-fixed": 0x02, "linear-variable": 0x04, "cyclic": 0x06}
# ISO 7816-4:2020 §7.4.3: a data coding byte of 21 (proprietary write behaviour, 1-byte data units) is the value
# nearly every card uses.
DEFAULT_DATA_CODING = 0x21

# ISO 7816-4:2020 §7.4.3 Table 12: security attribute data objects that may follow in an FCP.
_SECURITY_TAGS = frozenset({0x86, 0x8B, 0x8C, 0x8D, 0x8E, 0xA0, 0xA1, 0xAB})


def file_descriptor(structure: Structure = "transparent", record_size: int | None = None,
                    record_count: int | None = None, *, shareable: bool = False,
                    data_coding: int = DEFAULT_DATA_CODING) -> bytes:
    """The value of data object 82 (ISO 7816-4:2020 §7.4.3 Table 12).

    DF: the descriptor byte alone. EFs: the descriptor byte and the data coding byte; record EFs add the
    maximum record size: one byte when ``record_count`` is not given and the size fits, else two bytes followed by the
    number of records (one byte).
    """
    shared = _FDB_SHAREABLE if shareable else 0
    dcb = _int("data coding byte", data_coding, 0, 0xFF)
    if structure == "df":
        if record_size is not None or record_count is not None:
            raise ApduFormatError("a DF has no record size or record count")
        return bytes((_FDB_DF | shared,))
    if structure not in _FDB_STRUCTURE:
        raise ApduFormatError(f"structure must be one of {sorted([*_FDB_STRUCTURE, 'df'])}, got {structure!r}")
    head = bytes((_FDB_STRUCTURE[structure] | shared, dcb))
    if structure == "transparent":
        if record_size is not None or record_count is not None:
            raise ApduFormatError("a transparent EF has no record size or record count")
        return head
    if record_size is None:
        raise ApduFormatError(f"a {structure} EF needs record_size")
    size = _int("record_size", record_size, 1, 0x7FFF)
    if record_count is None:
        return head + size.to_bytes(1 if size <= 0xFF else 2, "big")
    return head + size.to_bytes(2, "big") + bytes((_int("record_count", record_count, 1, 254),))


def fcp_template(*, fid: bytes | None = None, df_name: bytes | None = None, sfi: int | None = None,
                 descriptor: bytes, size: int | None = None, total_size: int | None = None,
                 lcs: int | LcsName | None = None, security: bytes = b"") -> bytes:
    """An FCP template '62' for CREATE FILE (ISO 7816-4:2020 §7.4.3 Table 12).

    ``size`` → 80 (data bytes), ``total_size`` → 81, ``descriptor`` → 82 (see :func:`file_descriptor`),
    ``fid`` → 83, ``df_name`` → 84, ``sfi`` → 88 (``0`` = "88 00": no SFI), ``lcs`` → 8A (a byte or a name of
    :data:`LCS_BYTES`), ``security``: ready-made security attribute objects (86/8B/8C/8D/8E/A0/A1/AB).
    """
    parts: list[bytes] = []
    for tag, value in ((0x80, size), (0x81, total_size)):
        if value is not None:
            n = _int(f"size (tag {tag:02X})", value, 0, 0xFFFFFFFF)
            parts.append(ber_encode(tag, n.to_bytes(max(2, (n.bit_length() + 7) // 8), "big")))
    parts.append(ber_encode(0x82, _bytes("descriptor", descriptor, min_len=1, max_len=6)))
    if fid is not None:
        parts.append(ber_encode(0x83, _fid(fid)))
    if df_name is not None:
        parts.append(ber_encode(0x84, _bytes("DF name", df_name, min_len=1, max_len=16)))
    if sfi is not None:
        # ISO 7816-4:2020 Table 12: '88' empty -> no SFI; one byte -> b8-b4 encode the SFI, b3-b1 = 000.
        parts.append(ber_encode(0x88, b"" if sfi == 0 else bytes((_sfi(sfi) << 3,))))
    if lcs is not None:
        if isinstance(lcs, str):
            if lcs not in LCS_BYTES:
                raise ApduFormatError(f"lcs must be a byte or one of {sorted(LCS_BYTES)}, got {lcs!r}")
            lcs_byte = LCS_BYTES[lcs]
        else:
            lcs_byte = _int("lcs", lcs, 0, 0xFF)
        parts.append(ber_encode(0x8A, bytes((lcs_byte,))))
    sec = _bytes("security", security)
    for obj in ber_decode(sec):
        if obj.tag not in _SECURITY_TAGS:
            raise ApduFormatError(f"tag {obj.tag:02X} in security is not a security attribute (ISO 7816-4 Table 12)")
    parts.append(sec)
    return ber_encode(0x62, b"".join(parts))


@dataclass(frozen=True, slots=True)
class Fcp:
    """File control parameters as decoded by :func:`parse_fcp` (ISO 7816-4:2020 §7.4.3)."""

    fid: bytes | None = None
    df_name: bytes | None = None
    sfi: int | None = None
    structure: str | None = None  # transparent, linear-fixed, linear-variable, cyclic, df, ber-tlv, ...
    is_df: bool = False
    size: int | None = None  # 80: data bytes
    total_size: int | None = None  # 81: including structural information
    record_size: int | None = None
    record_count: int | None = None
    lcs: str | None = None  # life-cycle name (see LCS_BYTES), "no-information" or "proprietary"
    lcs_byte: int | None = None
    shareable: bool | None = None
    tlv_records: bool = False  # b3-b1 odd: records are TLV structured
    descriptor: bytes | None = None
    security_compact: bytes | None = None  # 8C
    security_expanded: bytes | None = None  # AB
    tags: tuple[tuple[int, bytes], ...] = ()  # every object of the template, in order


def lcs_name(value: int) -> str:
    """Name of a life-cycle status byte (ISO 7816-4:2020 §7.4.3)."""
    if value == 0x00:
        return "no-information"
    if value & 0xF0:
        return "proprietary"
    if value == 0x01:
        return "creation"
    if value == 0x03:
        return "initialization"
    if value & 0xFC == 0x0C:
        return "termination"
    if value & 0xFC == 0x04:  # 0000 01x1 activated, 0000 01x0 deactivated
        return "operational-activated" if value & 0x01 else "operational-deactivated"
    return "rfu"


def _uint(obj: Tlv) -> int:
    if not obj.value:
        raise FcpError(f"tag {obj.tag:02X} in the FCP is empty; a number was expected")
    return int.from_bytes(obj.value, "big")


def _descriptor_fields(fd: bytes) -> dict[str, object]:
    fdb = fd[0]
    out: dict[str, object] = {"descriptor": fd}
    if fdb & 0x80:  # ISO 7816-4 §7.4.3: b8 = 1 is proprietary
        out["structure"] = "proprietary"
        return out
    out["shareable"] = bool(fdb & _FDB_SHAREABLE)
    low = fdb & 0x3F
    if low == _FDB_DF:
        out.update(structure="df", is_df=True)
    elif low == _FDB_BER_TLV_EF:
        out["structure"] = "ber-tlv"
    elif low == _FDB_SIMPLE_TLV_EF:
        out["structure"] = "simple-tlv"
    else:
        kind = low & 0x07
        out["structure"] = {0: "unknown", 1: "transparent", 2: "linear-fixed", 3: "linear-fixed",
                            4: "linear-variable", 5: "linear-variable", 6: "cyclic", 7: "cyclic"}[kind]
        out["tlv_records"] = kind in (3, 5, 7)
    n = len(fd)
    if n in (3, 4):
        out["record_size"] = int.from_bytes(fd[2:], "big")
    elif n in (5, 6):
        out["record_size"] = int.from_bytes(fd[2:4], "big")
        out["record_count"] = int.from_bytes(fd[4:], "big")
    return out


def parse_fcp(data: bytes) -> Fcp:
    """Decode an FCP template '62' (also accepts an FCI '6F' or FMD '64' holding the same objects).

    Unknown tags are kept in ``tags``; malformed BER-TLV raises TlvError, a known object of the wrong size
    raises :class:`FcpError` (ISO 7816-4:2020 §7.4.3 Table 12).
    """
    objs = ber_decode(data)
    if len(objs) != 1:
        raise TlvError(f"expected one FCP template, found {len(objs)} top-level objects", offset=0)
    top = objs[0]
    if top.tag not in (0x62, 0x64, 0x6F):
        raise FcpError(f"tag {top.tag:02X} is not an FCP (62), FMD (64) or FCI (6F) template", offset=0)
    children = top.children
    if top.tag == 0x6F and len(children) == 1 and children[0].tag == 0x62:
        children = children[0].children
    fields: dict[str, object] = {"tags": tuple((c.tag, c.value) for c in children)}
    for c in children:
        v = c.value
        if c.tag == 0x80:
            fields["size"] = _uint(c)
        elif c.tag == 0x81:
            fields["total_size"] = _uint(c)
        elif c.tag == 0x82:
            if not 1 <= len(v) <= 6:
                raise FcpError(f"file descriptor (82) must be 1..6 bytes, got {len(v)}")
            fields.update(_descriptor_fields(v))
        elif c.tag == 0x83:
            if len(v) != 2:
                raise FcpError(f"file identifier (83) must be 2 bytes, got {len(v)}")
            fields["fid"] = v
        elif c.tag == 0x84:
            if not 1 <= len(v) <= 16:
                raise FcpError(f"DF name (84) must be 1..16 bytes, got {len(v)}")
            fields["df_name"] = v
        elif c.tag == 0x88:
            if len(v) > 1:
                raise FcpError(f"short EF identifier (88) must be 0 or 1 byte, got {len(v)}")
            fields["sfi"] = v[0] >> 3 if v else 0
        elif c.tag == 0x8A:
            if len(v) != 1:
                raise FcpError(f"life cycle status (8A) must be 1 byte, got {len(v)}")
            fields.update(lcs=lcs_name(v[0]), lcs_byte=v[0])
        elif c.tag == 0x8C:
            fields["security_compact"] = v
        elif c.tag == 0xAB:
            fields["security_expanded"] = v
        else:
            logger.debug("FCP: keeping tag %X (%d bytes) uninterpreted", c.tag, len(v))
    return Fcp(**fields)  # type: ignore[arg-type]
