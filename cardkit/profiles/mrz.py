"""Machine readable zone of TD3 documents (passports): check digits, building and parsing the two lines.

References: ICAO Doc 9303 Part 3 §4.9 (check digits), Part 4 §4.2.2 (TD3 MRZ data structure), Part 11
§4.3.2 / Appendix D.2 (MRZ_information, the input of the Basic Access Control key seed).

Names are held with spaces between their parts (``"ANNA MARIA"``) and written with ``<`` in the MRZ.
Dates are ``YYMMDD`` as in the MRZ. Errors are :class:`~cardkit.errors.RecordError` naming the field or
check digit that failed; they never contain the document number or a name.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from cardkit.errors import RecordError
from cardkit.profiles.codelists import MRZ_STATES

__all__ = ["LINE_LENGTH", "Td3", "check_digit"]

log = logging.getLogger(__name__)

#: ICAO Doc 9303 Part 4 §4.2.2: a TD3 MRZ has two lines of 44 characters.
LINE_LENGTH = 44
_NAME_LENGTH = 39  # line 1 positions 6-44
_DOC_NUMBER_LENGTH = 9  # line 2 positions 1-9
_OPTIONAL_LENGTH = 14  # line 2 positions 29-42 (personal number or other optional data)

# ICAO Doc 9303 Part 3 §4.9: weights 7, 3, 1 repeating; digits count their value, A-Z count 10-35,
# the filler '<' counts 0; the check digit is the sum modulo 10.
_WEIGHTS = (7, 3, 1)
_MRZ_CHARS = re.compile(r"[A-Z0-9<]*")
_NAME_CHARS = re.compile(r"[A-Z< ]*")
_DATE = re.compile(r"[0-9<]{6}")


def _char_value(ch: str) -> int:
    if "0" <= ch <= "9":
        return ord(ch) - 0x30
    if "A" <= ch <= "Z":
        return ord(ch) - 0x41 + 10
    if ch == "<":
        return 0
    raise RecordError(f"character U+{ord(ch):04X} is not an MRZ character (A-Z, 0-9, '<')")


def check_digit(s: str) -> str:
    """The ICAO 9303 check digit of ``s`` (Part 3 §4.9): ``check_digit("L898902C<") == "3"``."""
    return str(sum(_char_value(ch) * _WEIGHTS[i % 3] for i, ch in enumerate(s)) % 10)


def _fail(message: str, field: str) -> RecordError:
    return RecordError(message, field=field)


def _normal_name(value: str, field: str) -> str:
    if not _NAME_CHARS.fullmatch(value):
        raise _fail("only A-Z, space and '<' are allowed (transliterate per ICAO 9303 Part 3 §6)", field)
    return " ".join(value.replace("<", " ").split())


def _check_date(value: str, field: str) -> None:
    if not _DATE.fullmatch(value):
        raise _fail("must be YYMMDD (digits, or '<' for unknown parts)", field)
    if "<" in value:
        return
    month, day = int(value[2:4]), int(value[4:6])
    if not 1 <= month <= 12:
        raise _fail(f"month {month:02d} is not 01-12", field)
    # Without the century, 2000 (a leap year) gives the largest possible day count for the month.
    days = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    if not 1 <= day <= days:
        raise _fail(f"day {day:02d} does not exist in month {month:02d}", field)


def _state(value: str, field: str) -> str:
    code = value.rstrip("<")
    if len(code) not in (1, 2, 3) or not code.isascii() or not code.isalpha() or not code.isupper():
        raise _fail("must be a 1-3 letter state code (ICAO 9303 Part 3 §5)", field)
    if code not in MRZ_STATES:
        log.debug("state code not in the built-in list (field %s)", field)
    return code


@dataclass(frozen=True)
class Td3:
    """The data of a TD3 MRZ (ICAO Doc 9303 Part 4 §4.2.2).

    ``document_code`` is 1-2 characters (``"P"``), ``issuing_state`` / ``nationality`` 1-3 letters
    (``"UTO"``, ``"D"``), ``sex`` ``M``, ``F`` or ``<`` (``X`` is accepted and stored as ``<``),
    ``birth_date`` / ``expiry_date`` ``YYMMDD``, ``optional_data`` at most 14 characters.
    """

    document_code: str
    issuing_state: str
    surname: str
    given_names: str
    document_number: str
    nationality: str
    birth_date: str
    sex: str
    expiry_date: str
    optional_data: str = ""

    def __post_init__(self) -> None:
        code = self.document_code.rstrip("<")
        if not 1 <= len(code) <= 2 or not _MRZ_CHARS.fullmatch(code) or not code[0].isalpha():
            raise _fail("must be 1-2 characters, the first a letter (Part 4 §4.2.2)", "document_code")
        object.__setattr__(self, "document_code", code)
        object.__setattr__(self, "issuing_state", _state(self.issuing_state, "issuing_state"))
        object.__setattr__(self, "nationality", _state(self.nationality, "nationality"))
        surname = _normal_name(self.surname, "surname")
        given = _normal_name(self.given_names, "given_names")
        if not surname:
            raise _fail("is empty (the primary identifier is required)", "surname")
        object.__setattr__(self, "surname", surname)
        object.__setattr__(self, "given_names", given)
        name_len = len(self._name_field_raw())
        if name_len > _NAME_LENGTH:
            raise _fail(f"surname and given names are too long for the TD3 name field by "
                        f"{name_len - _NAME_LENGTH} characters (truncation is not implemented)", "surname")
        number = self.document_number.rstrip("<")
        if not number or len(number) > _DOC_NUMBER_LENGTH or not _MRZ_CHARS.fullmatch(number):
            raise _fail("must be 1-9 characters A-Z, 0-9", "document_number")
        object.__setattr__(self, "document_number", number)
        _check_date(self.birth_date, "birth_date")
        _check_date(self.expiry_date, "expiry_date")
        sex = "<" if self.sex == "X" else self.sex
        if sex not in ("M", "F", "<"):
            raise _fail("must be M, F, X or '<' (Part 4 §4.2.2)", "sex")
        object.__setattr__(self, "sex", sex)
        optional = self.optional_data.rstrip("<")
        if len(optional) > _OPTIONAL_LENGTH or not _MRZ_CHARS.fullmatch(optional):
            raise _fail("must be at most 14 characters A-Z, 0-9, '<'", "optional_data")
        object.__setattr__(self, "optional_data", optional)

    def _name_field_raw(self) -> str:
        surname = self.surname.replace(" ", "<")
        if not self.given_names:
            return surname
        return surname + "<<" + self.given_names.replace(" ", "<")

    def lines(self) -> tuple[str, str]:
        """The two 44-character MRZ lines with every check digit (Part 4 §4.2.2)."""
        line1 = (self.document_code.ljust(2, "<") + self.issuing_state.ljust(3, "<")
                 + self._name_field_raw().ljust(_NAME_LENGTH, "<"))
        number = self.document_number.ljust(_DOC_NUMBER_LENGTH, "<")
        optional = self.optional_data.ljust(_OPTIONAL_LENGTH, "<")
        part_number = number + check_digit(number)
        part_birth = self.birth_date + check_digit(self.birth_date)
        part_expiry = self.expiry_date + check_digit(self.expiry_date)
        part_optional = optional + check_digit(optional)
        composite = check_digit(part_number + part_birth + part_expiry + part_optional)
        line2 = (part_number + self.nationality.ljust(3, "<") + part_birth + self.sex + part_expiry
                 + part_optional + composite)
        return line1, line2

    def mrz_information(self) -> str:
        """Document number, birth date and expiry date, each with its check digit: the BAC key seed
        input (ICAO Doc 9303 Part 11 §4.3.2; Appendix D.2 gives ``L898902C<369080619406236``)."""
        _, line2 = self.lines()
        return line2[0:10] + line2[13:20] + line2[21:28]

    @classmethod
    def parse(cls, line1: str, line2: str) -> Td3:
        """Parse and verify both lines; :class:`RecordError` names the field or check digit that fails."""
        for label, line in (("line 1", line1), ("line 2", line2)):
            if len(line) != LINE_LENGTH:
                raise RecordError(f"TD3 MRZ {label} must be {LINE_LENGTH} characters ({len(line)} given)")
            if not _MRZ_CHARS.fullmatch(line):
                pos = next(i for i, ch in enumerate(line) if not _MRZ_CHARS.fullmatch(ch))
                raise RecordError(f"TD3 MRZ {label} position {pos + 1} is not A-Z, 0-9 or '<'")
        name = line1[5:].rstrip("<")
        surname, _, given = name.partition("<<")
        checks = (
            ("document number", "document_number", line2[0:9], line2[9]),
            ("birth date", "birth_date", line2[13:19], line2[19]),
            ("expiry date", "expiry_date", line2[21:27], line2[27]),
        )
        for label, field, data, digit in checks:
            if check_digit(data) != digit:
                raise _fail(f"{label} check digit does not match (Part 3 §4.9)", field)
        optional, digit = line2[28:42], line2[42]
        if not (digit == check_digit(optional) or (digit == "<" and optional == "<" * _OPTIONAL_LENGTH)):
            raise _fail("optional data check digit does not match (Part 3 §4.9)", "optional_data")
        composite_input = line2[0:10] + line2[13:20] + line2[21:43]
        if check_digit(composite_input) != line2[43]:
            raise RecordError("composite check digit does not match (Part 4 §4.2.2, Part 3 §4.9)")
        return cls(
            document_code=line1[0:2], issuing_state=line1[2:5], surname=surname, given_names=given,
            document_number=line2[0:9], nationality=line2[10:13], birth_date=line2[13:19], sex=line2[20],
            expiry_date=line2[21:27], optional_data=optional,
        )
