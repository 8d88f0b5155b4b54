"""Argument checks shared by the command builders of :mod:`cardkit.commands.iso` and :mod:`cardkit.commands.fcp`.

Each check raises :class:`~cardkit.errors.ApduFormatError` naming the argument and the rule it breaks.
"""

from __future__ import annotations

from cardkit.apdu import LE_MAX_SHORT
from cardkit.errors import ApduFormatError

# ISO 7816-4:2020 §7.1.1: the MF has the reserved file identifier 3F00; 3FFF (path) and FFFF are reserved.
MF_FID = b"\x3f\x00"
_RESERVED_FIDS = (b"\x3f\xff", b"\xff\xff")


def _int(name: str, value: object, lo: int, hi: int, rule: str = "") -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApduFormatError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ApduFormatError(f"{name} must be {lo}..{hi}{rule}, got {value}")
    return value


def _bytes(name: str, value: object, *, min_len: int = 0, max_len: int = 65535) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise ApduFormatError(f"{name} must be bytes, not {type(value).__name__}")
    if not min_len <= len(value) <= max_len:
        want = f"exactly {min_len}" if min_len == max_len else f"{min_len}..{max_len}"
        raise ApduFormatError(f"{name} must be {want} bytes, got {len(value)}")
    return bytes(value)


def _fid(fid: object, name: str = "FID") -> bytes:
    raw = _bytes(name, fid, min_len=2, max_len=2)
    if raw in _RESERVED_FIDS:  # ISO 7816-4:2020 §7.1.1
        raise ApduFormatError(f"{name} {raw.hex().upper()} is reserved (ISO 7816-4 §7.1.1)")
    return raw


def _sfi(sfi: object) -> int:
    # ISO 7816-4:2020 §7.1.1: a short EF identifier is 1..30 (0 = current EF, 31 reserved).
    return _int("SFI", sfi, 1, 30, " (ISO 7816-4 §7.1.1)")


def _aid(aid: object, *, partial: bool = False) -> bytes:
    # ISO 7816-4:2020 §8.2.1.2 / ISO 7816-5: an AID is 5..16 bytes (RID of 5 bytes + PIX of 0..11).
    return _bytes("AID (DF name)", aid, min_len=1 if partial else 5, max_len=16)


def _le(le: object) -> int:
    return LE_MAX_SHORT if le is None else _int("Le", le, 1, 65536)


def _ref(ref: object) -> int:
    # ISO 7816-4:2020 §11.5 (P2 of VERIFY & co.): b8 global/specific, b7-b6 = 00, b5-b1 number.
    value = _int("reference (P2)", ref, 0, 0xFF)
    if value & 0x60:
        raise ApduFormatError(f"reference P2 {value:02X} has b7-b6 set (must be 00, ISO 7816-4 §11.5)")
    return value
