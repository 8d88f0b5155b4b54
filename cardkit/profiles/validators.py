"""Field validators for cardholder records.

Every ``check_*`` function returns ``None`` for a valid value and raises
:class:`~cardkit.errors.RecordError` with a precise reason otherwise. Messages never contain the full
value: at most its masked form (:func:`mask_identifier`), a character position, or a code point.

:data:`VALIDATORS` maps the names that profiles use (``validate = "citizen-id"``) to the functions.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType

from cardkit.errors import RecordError
from cardkit.profiles.codelists import ETHNICITY, GENDER, MRZ_STATES, PROVINCES

__all__ = [
    "VALIDATORS",
    "check_citizen_id",
    "check_country",
    "check_date",
    "check_document_number",
    "check_ethnicity",
    "check_gender",
    "check_id_consistency",
    "check_in_set",
    "check_length",
    "check_mrz_name",
    "check_region_code",
    "check_ssc_card_number",
    "citizen_id_birth_date",
    "citizen_id_check_char",
    "citizen_id_gender",
    "mask_identifier",
    "parse_date",
    "ssc_card_number_check_char",
]

log = logging.getLogger(__name__)

_DIGITS = frozenset("0123456789")

# GB 11643-1999 §5.5 / ISO 7064:1983 MOD 11-2: weight of position i (1-based from the left) is
# 2^(18-i) mod 11; the check character for remainder r = sum mod 11.
_CID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CID_CHECK = "10X98765432"

# GB 11643-1999: the earliest birth year accepted. The standard's own Appendix A example
# (440524188001010014) was born in 1880, so 1800 is a safe floor.
_CID_MIN_YEAR = 1800

# Social security card number (ssc.md, "Card number"): 8 characters with weights 3,7,9,10,5,8,4,2;
# digits count their value, letters A=10, B=11, ... Z=35; check = 11 - (sum mod 11), 10 -> 'X', 11 -> '0'.
_SSC_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)

# ICAO Doc 9303 Part 3 §4 (MRZ character set): MRZ characters are A-Z, 0-9 and the filler '<'.
_MRZ_NAME_RE = re.compile(r"[A-Z< ]+")
# ICAO Doc 9303 Part 4 §4.2.2: TD3 document number field, 9 characters (A-Z, 0-9).
_DOC_NUMBER_RE = re.compile(r"[A-Z0-9]{1,9}")
_MRZ_NAME_MAX = 39  # ICAO Doc 9303 Part 4 §4.2.2: TD3 line 1 positions 6-44


def mask_identifier(value: str) -> str:
    """Mask an identifier for logs and errors: the first 4 and last 2 characters kept, the rest ``*``.

    Values of 6 characters or fewer are masked entirely, since keeping 6 characters of them would
    show the whole value.
    """
    if len(value) <= 6:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 6) + value[-2:]


def _err(message: str, field: str | None) -> RecordError:
    return RecordError(message, field=field)


def _first_non_digit(value: str) -> int | None:
    for i, ch in enumerate(value):
        if ch not in _DIGITS:
            return i
    return None


def parse_date(value: str, *, field: str | None = None) -> _dt.date:
    """Parse ``YYYYMMDD`` or ``YYYY-MM-DD`` (ISO 8601 calendar date) into a real calendar date."""
    if len(value) == 10 and value[4] == "-" and value[7] == "-":
        digits = value[:4] + value[5:7] + value[8:]
    elif len(value) == 8:
        digits = value
    else:
        raise _err(f"date must be YYYYMMDD or YYYY-MM-DD ({len(value)} characters given)", field)
    bad = _first_non_digit(digits)
    if bad is not None:
        raise _err("date must be YYYYMMDD or YYYY-MM-DD (non-digit character found)", field)
    year, month, day = int(digits[:4]), int(digits[4:6]), int(digits[6:])
    try:
        return _dt.date(year, month, day)
    except ValueError:
        raise _err(f"not a real calendar date (year {year}, month {month:02d}, day {day:02d})",
                   field) from None


def check_date(value: str, *, field: str | None = None) -> None:
    """A real calendar date written ``YYYYMMDD`` or ``YYYY-MM-DD`` (ISO 8601 / GB/T 7408)."""
    parse_date(value, field=field)


def citizen_id_check_char(first17: str) -> str:
    """The GB 11643-1999 check character (ISO 7064 MOD 11-2, ``X`` for 10) of 17 digits."""
    if len(first17) != 17:
        raise RecordError(f"citizen ID body must be 17 digits ({len(first17)} given)")
    bad = _first_non_digit(first17)
    if bad is not None:
        raise RecordError(f"citizen ID character {bad + 1} is not a digit")
    total = sum(int(c) * w for c, w in zip(first17, _CID_WEIGHTS, strict=True))
    return _CID_CHECK[total % 11]


def _citizen_id_shape(value: str, field: str | None) -> None:
    if len(value) != 18:
        raise _err(f"citizen ID must be 18 characters ({len(value)} given)", field)
    bad = _first_non_digit(value[:17])
    if bad is not None:
        raise _err(f"citizen ID character {bad + 1} is not a digit ({mask_identifier(value)})", field)
    last = value[17]
    if last == "x":
        raise _err("citizen ID check character must be an uppercase 'X'", field)
    if last not in _DIGITS and last != "X":
        raise _err("citizen ID check character must be a digit or 'X'", field)


def citizen_id_birth_date(value: str, *, field: str | None = None) -> str:
    """The birth date (``YYYYMMDD``) embedded in a citizen ID (GB 11643-1999 §5.3, digits 7-14)."""
    _citizen_id_shape(value, field)
    return value[6:14]


def citizen_id_gender(value: str, *, field: str | None = None) -> str:
    """The GB/T 2261.1 gender code of a citizen ID: ``"1"`` (male) if the 17th digit is odd, else ``"2"``.

    GB 11643-1999 §5.4: odd sequence codes are given to men, even ones to women.
    """
    _citizen_id_shape(value, field)
    return "1" if int(value[16]) % 2 else "2"


def check_citizen_id(value: str, *, today: _dt.date | None = None, field: str | None = None) -> None:
    """An 18-character citizen identification number (GB 11643-1999).

    Checks the shape (17 digits and a check character), the province part of the address code
    (GB/T 2260), the embedded birth date (a real date, not in the future, not before 1800) and the
    ISO 7064 MOD 11-2 check character.
    """
    _citizen_id_shape(value, field)
    masked = mask_identifier(value)
    if value[:2] not in PROVINCES:
        raise _err(f"citizen ID address code has an unknown province part (GB/T 2260) ({masked})", field)
    try:
        born = parse_date(value[6:14])
    except RecordError:
        raise _err(f"citizen ID digits 7-14 are not a real birth date ({masked})", field) from None
    if born > (today or _dt.date.today()):
        raise _err(f"citizen ID birth date is in the future ({masked})", field)
    if born.year < _CID_MIN_YEAR:
        raise _err(f"citizen ID birth year is before {_CID_MIN_YEAR} ({masked})", field)
    if citizen_id_check_char(value[:17]) != value[17]:
        raise _err(f"citizen ID check character does not match (ISO 7064 MOD 11-2) ({masked})", field)


def _ssc_value(ch: str) -> int:
    if "0" <= ch <= "9":
        return ord(ch) - 0x30
    if "A" <= ch <= "Z":
        return ord(ch) - 0x41 + 10
    raise ValueError(ch)


def ssc_card_number_check_char(first8: str) -> str:
    """The check character of a social security card number (ssc.md "Card number").

    ``11 - (sum(value * weight) mod 11)`` with weights 3,7,9,10,5,8,4,2 and A=10, B=11, ...;
    10 is written ``X`` and 11 is written ``0``.
    """
    if len(first8) != 8:
        raise RecordError(f"card number body must be 8 characters ({len(first8)} given)")
    total = 0
    for i, (ch, weight) in enumerate(zip(first8, _SSC_WEIGHTS, strict=True)):
        try:
            total += _ssc_value(ch) * weight
        except ValueError:
            raise RecordError(f"card number character {i + 1} is not 0-9 or A-Z") from None
    check = 11 - total % 11
    if check == 10:
        return "X"
    if check == 11:
        return "0"
    return str(check)


def check_ssc_card_number(value: str, *, field: str | None = None) -> None:
    """A 9-character social security card number: 8 characters (0-9, A-Z) and its check character."""
    if len(value) != 9:
        raise _err(f"card number must be 9 characters ({len(value)} given)", field)
    try:
        expected = ssc_card_number_check_char(value[:8])
    except RecordError as exc:
        raise _err(str(exc), field) from None
    if value[8] != expected:
        raise _err(f"card number check character does not match ({mask_identifier(value)})", field)


def check_region_code(value: str, *, field: str | None = None) -> None:
    """A GB/T 2260 administrative region code: 6 digits whose first two are a province-level code."""
    if len(value) != 6:
        raise _err(f"region code must be 6 digits ({len(value)} given)", field)
    bad = _first_non_digit(value)
    if bad is not None:
        raise _err(f"region code character {bad + 1} is not a digit", field)
    if value[:2] not in PROVINCES:
        raise _err("region code province part is not a GB/T 2260 province-level code", field)


def check_gender(value: str, *, field: str | None = None) -> None:
    """A GB/T 2261.1 gender code: 0 unknown, 1 male, 2 female, 9 not stated."""
    if value not in GENDER:
        raise _err("gender must be a GB/T 2261.1 code (0, 1, 2 or 9)", field)


def check_ethnicity(value: str, *, field: str | None = None) -> None:
    """A GB 3304 two-digit ethnicity code: 01-56, 97 (other) or 98 (foreign origin)."""
    if value not in ETHNICITY:
        raise _err("ethnicity must be a GB 3304 two-digit code (01-56, 97 or 98)", field)


def check_length(value: str, *, min_len: int = 0, max_len: int | None = None,
                 encoding: str | None = None, field: str | None = None) -> None:
    """Length within ``[min_len, max_len]``, counted in characters or, given ``encoding``, in bytes."""
    if encoding is None:
        size, unit = len(value), "characters"
    else:
        try:
            size, unit = len(value.encode(encoding)), "bytes"
        except UnicodeEncodeError as exc:
            cp = ord(value[exc.start])
            raise _err(f"character U+{cp:04X} at position {exc.start + 1} is not encodable in "
                       f"{encoding}", field) from None
    if size < min_len:
        raise _err(f"too short by {min_len - size} {unit} (minimum {min_len})", field)
    if max_len is not None and size > max_len:
        raise _err(f"too long by {size - max_len} {unit} (maximum {max_len})", field)


def check_in_set(value: str, allowed: Collection[str], *, field: str | None = None) -> None:
    """``value`` is one of ``allowed``. The message lists the allowed values when there are few."""
    if value not in allowed:
        if len(allowed) <= 12:
            raise _err("not one of the allowed values: " + ", ".join(sorted(allowed)), field)
        raise _err(f"not one of the {len(allowed)} allowed values", field)


def check_mrz_name(value: str, *, field: str | None = None) -> None:
    """A name for the MRZ: A-Z, space or ``<`` only, at most 39 characters (ICAO 9303 Part 3 §3.4, §6)."""
    if not value:
        raise _err("MRZ name is empty", field)
    if not _MRZ_NAME_RE.fullmatch(value):
        pos = next(i for i, ch in enumerate(value) if not _MRZ_NAME_RE.fullmatch(ch))
        raise _err(f"MRZ name character {pos + 1} is not A-Z, space or '<' (ICAO 9303 Part 3 §6: "
                   f"transliterate first)", field)
    if len(value) > _MRZ_NAME_MAX:
        raise _err(f"MRZ name too long by {len(value) - _MRZ_NAME_MAX} characters", field)


def check_document_number(value: str, *, field: str | None = None) -> None:
    """A TD3 document number: 1-9 characters A-Z, 0-9 (ICAO 9303 Part 4 §4.2.2)."""
    if not _DOC_NUMBER_RE.fullmatch(value):
        raise _err(f"document number must be 1-9 characters A-Z or 0-9 ({mask_identifier(value)})",
                   field)


def check_country(value: str, *, field: str | None = None) -> None:
    """A state or organisation code for the MRZ (ISO 3166-1 alpha-3 or ICAO 9303 Part 3 §5)."""
    if value.rstrip("<") not in MRZ_STATES:
        raise _err("not a known ISO 3166-1 alpha-3 / ICAO 9303 state code", field)


def check_id_consistency(record: Mapping[str, str], id_field: str = "citizen_id",
                         birth_field: str | None = "birth_date",
                         gender_field: str | None = "gender", *,
                         today: _dt.date | None = None) -> None:
    """Cross-field check: the citizen ID is valid and agrees with the birth date and gender fields.

    ``birth_field`` may be ``YYYYMMDD`` or ``YYYY-MM-DD``; ``gender_field`` holds a GB/T 2261.1 code and
    must be the code that the ID's 17th digit gives. Pass ``None`` to skip a field.
    """
    try:
        cid = record[id_field]
    except KeyError:
        raise _err("record has no citizen ID field", id_field) from None
    check_citizen_id(cid, today=today, field=id_field)
    if birth_field is not None:
        if birth_field not in record:
            raise _err("record has no birth date field", birth_field)
        born = parse_date(record[birth_field], field=birth_field)
        if born.strftime("%Y%m%d") != citizen_id_birth_date(cid):
            raise _err(f"birth date does not match the birth date in {id_field!r}", birth_field)
    if gender_field is not None:
        if gender_field not in record:
            raise _err("record has no gender field", gender_field)
        if record[gender_field] != citizen_id_gender(cid):
            raise _err(f"gender does not match the gender coded in {id_field!r} (GB 11643-1999 §5.4)",
                       gender_field)


VALIDATORS: Mapping[str, Callable[[str], None]] = MappingProxyType({
    "citizen-id": check_citizen_id,
    "ssc-card-number": check_ssc_card_number,
    "region-code": check_region_code,
    "gender": check_gender,
    "ethnicity": check_ethnicity,
    "date": check_date,
    "mrz-name": check_mrz_name,
    "document-number": check_document_number,
    "country": check_country,
})
