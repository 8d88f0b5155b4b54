"""Status words: one table of meanings and the one place that turns an error SW into an exception.

Sources: ISO/IEC 7816-4:2020 §5.6 (Tables 5–6), GlobalPlatform Card Specification 2.3.1 §11
(command-specific status words), ICAO Doc 9303 Part 11 §9.8 (secure messaging errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from cardkit.errors import CardkitError

if TYPE_CHECKING:
    from cardkit.apdu import CommandApdu, ResponseApdu

__all__ = [
    "SW_TABLE", "AuthenticationBlocked", "ClaNotSupported", "CommandNotAllowed", "ConditionsOfUseNotSatisfied",
    "ExecutionError", "CheckingError", "FileNotFound", "FunctionNotSupported", "IncorrectData",
    "InsNotSupported", "InvalidPin", "MemoryFailure", "NotEnoughMemory", "RecordNotFound",
    "ReferencedDataNotFound", "ReferenceDataUnusable", "SecurityError", "SecurityStatusNotSatisfied",
    "SmDataObjectsIncorrect", "SmDataObjectsMissing", "StatusWordError", "WarningStatus", "WrongLength",
    "WrongLe", "WrongP1P2", "check", "describe", "error_for",
]

# ISO/IEC 7816-4:2020 §5.6 Table 6 and GPCS 2.3.1 §11 — exact status words.
SW_TABLE: Mapping[int, str] = {
    0x9000: "success",
    0x6200: "warning: state of non-volatile memory unchanged",
    0x6281: "warning: part of returned data may be corrupted",
    0x6282: "warning: end of file or record reached before reading Le bytes",
    0x6283: "warning: selected file deactivated",
    0x6284: "warning: file control information not formatted according to ISO 7816-4",
    0x6285: "warning: selected file in termination state",
    0x6286: "warning: no input data available from a sensor on the card",
    0x6287: "warning: at least one referenced record deactivated",
    0x6300: "warning: verification failed (GP: host cryptogram verification failed)",
    0x6310: "warning: more data available (GP GET STATUS)",
    0x6381: "warning: file filled up by the last write",
    0x6400: "execution error: state of non-volatile memory unchanged",
    0x6401: "execution error: immediate response required by the card",
    0x6500: "execution error: state of non-volatile memory changed",
    0x6581: "execution error: memory failure",
    0x6600: "security-related issue",
    0x6700: "wrong length (Lc or Le)",
    0x6800: "functions in CLA not supported",
    0x6881: "logical channel not supported",
    0x6882: "secure messaging not supported",
    0x6883: "last command of the chain expected",
    0x6884: "command chaining not supported",
    0x6900: "command not allowed",
    0x6981: "command incompatible with file structure",
    0x6982: "security status not satisfied",
    0x6983: "authentication method blocked",
    0x6984: "reference data not usable",
    0x6985: "conditions of use not satisfied",
    0x6986: "command not allowed (no current EF)",
    0x6987: "expected secure messaging data objects missing",
    0x6988: "incorrect secure messaging data objects",
    0x6A00: "wrong parameters P1-P2",
    0x6A80: "incorrect parameters in the command data field",
    0x6A81: "function not supported (GP: card or application locked)",
    0x6A82: "file or application not found",
    0x6A83: "record not found",
    0x6A84: "not enough memory space in the file",
    0x6A85: "Nc inconsistent with TLV structure",
    0x6A86: "incorrect parameters P1-P2",
    0x6A87: "Nc inconsistent with parameters P1-P2",
    0x6A88: "referenced data or reference data not found",
    0x6A89: "file already exists",
    0x6A8A: "DF name already exists",
    0x6B00: "wrong parameters P1-P2 (offset outside the EF)",
    0x6D00: "instruction code not supported or invalid",
    0x6E00: "class not supported",
    0x6F00: "no precise diagnosis",
    0x9484: "GP: algorithm not supported",
    0x9485: "GP: invalid key check value",
}


def describe(sw: int) -> str:
    """The meaning of a status word in words (never raises)."""
    if sw in SW_TABLE:
        return SW_TABLE[sw]
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw1 == 0x61:
        return f"success, {sw2 or 256} more bytes available (GET RESPONSE)"
    if sw1 == 0x6C:
        return f"wrong Le: exactly {sw2 or 256} bytes available"
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        return f"verification failed, {sw2 & 0x0F} tries left"
    if sw1 == 0x62 and 0x02 <= sw2 <= 0x80:
        return f"warning: {sw2} bytes of triggering data available"
    if sw1 == 0x64 and 0x02 <= sw2 <= 0x80:
        return f"execution error: {sw2} bytes of triggering data available"
    category = {
        0x62: "warning (memory unchanged)", 0x63: "warning (memory changed)",
        0x64: "execution error (memory unchanged)", 0x65: "execution error (memory changed)",
        0x66: "security-related issue", 0x67: "wrong length", 0x68: "functions in CLA not supported",
        0x69: "command not allowed", 0x6A: "wrong parameters P1-P2", 0x6B: "wrong parameters P1-P2",
        0x6D: "instruction code not supported", 0x6E: "class not supported", 0x6F: "no precise diagnosis",
        0x90: "success (proprietary qualifier)", 0x91: "proprietary status", 0x94: "proprietary status",
    }.get(sw1)
    return f"{category} ({sw:04X})" if category else f"unknown status word {sw:04X}"


class StatusWordError(CardkitError):
    """The card answered a status word that is not success.

    ``sw`` is the status word, ``meaning`` its description, ``command`` the label of the command that
    failed, ``context`` optional facts (file, operation, step) — never secrets.
    """

    category: ClassVar[str] = "error"

    def __init__(self, sw: int, command: str = "", *, context: Mapping[str, str] | None = None,
                 data: bytes = b"") -> None:
        self.sw = sw
        self.meaning = describe(sw)
        self.command = command
        self.context = dict(context or {})
        self.data = data
        where = "".join(f", {k} {v}" for k, v in self.context.items())
        head = f"{command} failed" if command else "card refused the command"
        super().__init__(f"{head}: {sw:04X} {self.meaning}{where}")


class WarningStatus(StatusWordError):
    """62xx/63xx: processing completed with a warning (ISO 7816-4 §5.6)."""

    category = "warning"


class ExecutionError(StatusWordError):
    """64xx/65xx/66xx: execution error."""

    category = "execution"


class CheckingError(StatusWordError):
    """67xx..6Fxx: checking error (length, parameters, instruction, class)."""

    category = "checking"


class SecurityError(StatusWordError):
    """Security-related refusals (6982, 6983, 6984, 6987, 6988, 63Cx)."""

    category = "security"


class InvalidPin(SecurityError):
    """63Cx: verification failed; ``attempts_left`` tries remain (0 = now blocked)."""

    def __init__(self, sw: int, command: str = "", **kw: object) -> None:
        self.attempts_left = sw & 0x0F
        super().__init__(sw, command, **kw)  # type: ignore[arg-type]


class SecurityStatusNotSatisfied(SecurityError):
    """6982: the access condition of the file or command is not met (PIN, key or SM missing)."""

    def __init__(self, sw: int, command: str = "", *, needed: str | None = None, **kw: object) -> None:
        self.needed = needed
        ctx = dict(kw.pop("context", None) or {})  # type: ignore[call-overload]
        if needed:
            ctx["needs"] = needed
        super().__init__(sw, command, context=ctx, **kw)  # type: ignore[arg-type]


class AuthenticationBlocked(SecurityError):
    """6983: the PIN or key is blocked."""


class ReferenceDataUnusable(SecurityError):
    """6984: reference data not usable (e.g. a PIN that was never set or is deactivated)."""


class SmDataObjectsMissing(SecurityError):
    """6987: secure messaging was required but the data objects are missing."""


class SmDataObjectsIncorrect(SecurityError):
    """6988: the secure messaging data objects are incorrect (MAC failed)."""


class MemoryFailure(ExecutionError):
    """6581: the card's memory write failed."""


class WrongLength(CheckingError):
    """6700: wrong Lc or Le."""


class WrongLe(CheckingError):
    """6Cxx: wrong Le; ``correct_le`` is the length the card can return."""

    def __init__(self, sw: int, command: str = "", **kw: object) -> None:
        self.correct_le = (sw & 0xFF) or 256
        super().__init__(sw, command, **kw)  # type: ignore[arg-type]


class ConditionsOfUseNotSatisfied(CheckingError):
    """6985: conditions of use not satisfied (wrong life-cycle state, wrong sequence)."""


class CommandNotAllowed(CheckingError):
    """69xx other than the security ones: command not allowed (no current EF, incompatible structure)."""


class IncorrectData(CheckingError):
    """6A80: incorrect parameters in the command data field."""


class FunctionNotSupported(CheckingError):
    """6A81: function not supported."""


class FileNotFound(CheckingError):
    """6A82: file or application not found."""


class RecordNotFound(CheckingError):
    """6A83: record not found."""


class NotEnoughMemory(CheckingError):
    """6A84: not enough memory space in the file."""


class ReferencedDataNotFound(CheckingError):
    """6A88: referenced data (key, PIN, data object) not found."""


class WrongP1P2(CheckingError):
    """6A86 / 6B00 / 6A00: wrong or incorrect P1-P2."""


class InsNotSupported(CheckingError):
    """6D00: instruction not supported."""


class ClaNotSupported(CheckingError):
    """6E00 / 68xx: class not supported."""


_EXACT: Mapping[int, type[StatusWordError]] = {
    0x6581: MemoryFailure,
    0x6700: WrongLength,
    0x6982: SecurityStatusNotSatisfied,
    0x6983: AuthenticationBlocked,
    0x6984: ReferenceDataUnusable,
    0x6985: ConditionsOfUseNotSatisfied,
    0x6987: SmDataObjectsMissing,
    0x6988: SmDataObjectsIncorrect,
    0x6A80: IncorrectData,
    0x6A81: FunctionNotSupported,
    0x6A82: FileNotFound,
    0x6A83: RecordNotFound,
    0x6A84: NotEnoughMemory,
    0x6A86: WrongP1P2,
    0x6A88: ReferencedDataNotFound,
    0x6A00: WrongP1P2,
    0x6B00: WrongP1P2,
    0x6D00: InsNotSupported,
    0x6E00: ClaNotSupported,
}


def error_for(sw: int, command: str = "", *, context: Mapping[str, str] | None = None,
              data: bytes = b"") -> StatusWordError:
    """The typed exception for ``sw`` (not raised)."""
    sw1, sw2 = sw >> 8, sw & 0xFF
    cls: type[StatusWordError]
    if sw in _EXACT:
        cls = _EXACT[sw]
    elif sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        cls = InvalidPin
    elif sw1 == 0x6C:
        cls = WrongLe
    elif sw1 in (0x62, 0x63):
        cls = WarningStatus
    elif sw1 in (0x64, 0x65, 0x66):
        cls = ExecutionError
    elif sw1 == 0x69:
        cls = CommandNotAllowed
    elif sw1 == 0x68:
        cls = ClaNotSupported
    else:
        cls = CheckingError
    return cls(sw, command, context=context, data=data)


def check(response: ResponseApdu, command: CommandApdu | str = "", *,
          context: Mapping[str, str] | None = None, allow: tuple[int, ...] = (),
          allow_warnings: bool = False) -> ResponseApdu:
    """Return ``response`` if it is success (9000, 61xx, or a status in ``allow``); raise otherwise.

    This is the one place in cardkit where a status word becomes an exception. ``allow_warnings``
    accepts 62xx/63xx warnings other than 63Cx (e.g. 6282 end of file reached).
    """
    sw = response.sw
    if sw == 0x9000 or response.sw1 == 0x61 or sw in allow:
        return response
    if allow_warnings and response.sw1 in (0x62, 0x63) and not (response.sw1 == 0x63 and response.sw2 & 0xF0 == 0xC0):
        return response
    label = command if isinstance(command, str) else command.label
    raise error_for(sw, label, context=context, data=response.data)
