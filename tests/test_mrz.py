"""TD3 MRZ (cardkit.profiles.mrz) against the ICAO Doc 9303 specimen and the Part 11 BAC example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.errors import RecordError
from cardkit.profiles.mrz import LINE_LENGTH, Td3, check_digit

VECTORS = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "codecs.json").read_text(encoding="utf-8")
)
SPECIMEN = VECTORS["td3_specimen"]
BAC = VECTORS["bac_example"]
LINE1, LINE2 = SPECIMEN["line1"], SPECIMEN["line2"]


def test_check_digits_of_part11_example() -> None:
    for data, digit in BAC["check_digits"].items():
        assert check_digit(data) == digit


def test_check_digits_of_specimen_fields() -> None:
    # The digits printed in the Part 4 specimen line 2.
    assert check_digit(LINE2[0:9]) == LINE2[9]
    assert check_digit("740812") == "2"
    assert check_digit("120415") == "9"
    assert check_digit("ZE184226B<<<<<") == "1"


def test_check_digit_rejects_non_mrz_characters() -> None:
    with pytest.raises(RecordError, match="not an MRZ character"):
        check_digit("abc")


def test_specimen_parses_to_its_fields() -> None:
    td3 = Td3.parse(LINE1, LINE2)
    assert td3 == Td3(**SPECIMEN["fields"])
    assert td3.surname == "ERIKSSON"
    assert td3.given_names == "ANNA MARIA"


def test_specimen_is_rebuilt_exactly() -> None:
    assert Td3(**SPECIMEN["fields"]).lines() == (LINE1, LINE2)


def test_bac_mrz_information() -> None:
    td3 = Td3(document_code="P", issuing_state="UTO", surname="ERIKSSON", given_names="ANNA MARIA",
              document_number=BAC["document_number"], nationality="UTO", birth_date=BAC["birth_date"],
              sex="F", expiry_date=BAC["expiry_date"], optional_data="ZE184226B")
    assert td3.mrz_information() == BAC["mrz_information"]
    assert td3.document_number == "L898902C"
    # The lines round-trip through the parser with every check digit verified.
    assert Td3.parse(*td3.lines()) == td3


def test_specimen_mrz_information() -> None:
    assert Td3.parse(LINE1, LINE2).mrz_information() == LINE2[0:10] + LINE2[13:20] + LINE2[21:28]


def _corrupt(line: str, pos: int) -> str:
    ch = line[pos]
    new = "0" if ch != "0" else "1"
    return line[:pos] + new + line[pos + 1:]


@pytest.mark.parametrize(
    ("pos", "message", "field"),
    [
        (9, "document number check digit", "document_number"),
        (19, "birth date check digit", "birth_date"),
        (27, "expiry date check digit", "expiry_date"),
        (42, "optional data check digit", "optional_data"),
        (43, "composite check digit", None),
    ],
)
def test_each_check_digit_is_verified(pos: int, message: str, field: str | None) -> None:
    with pytest.raises(RecordError, match=message) as info:
        Td3.parse(LINE1, _corrupt(LINE2, pos))
    assert info.value.field == field
    assert "L898902C" not in str(info.value)


def test_data_corruption_is_caught() -> None:
    with pytest.raises(RecordError, match="document number check digit"):
        Td3.parse(LINE1, "M" + LINE2[1:])
    with pytest.raises(RecordError, match="composite"):
        # Optional data changed together with its own check digit: only the composite digit catches it.
        Td3.parse(LINE1, LINE2[:28] + "ZE184226C<<<<<" + check_digit("ZE184226C<<<<<") + LINE2[43])


def test_line_shape_errors() -> None:
    with pytest.raises(RecordError, match="line 1 must be 44"):
        Td3.parse(LINE1[:-1], LINE2)
    with pytest.raises(RecordError, match="line 2 position 1 is not"):
        Td3.parse(LINE1, "l" + LINE2[1:])


def test_empty_optional_data_accepts_filler_or_zero_check_digit() -> None:
    td3 = Td3(document_code="P", issuing_state="D", surname="MUSTERMANN", given_names="ERIKA",
              document_number="C01X00T47", nationality="D", birth_date="640812", sex="F",
              expiry_date="270331")
    line1, line2 = td3.lines()
    assert line1.startswith("P<D<<MUSTERMANN<<ERIKA<")
    assert line2[28:43] == "<" * 14 + "0"
    filler = line2[:42] + "<" + line2[43]
    # '<' and '0' have the same value 0, so the composite digit is unchanged.
    assert Td3.parse(line1, filler) == td3
    assert Td3.parse(line1, line2) == td3


def test_field_validation() -> None:
    base = dict(SPECIMEN["fields"])
    for key, value, message in (
        ("surname", "Eriksson", "A-Z"),
        ("surname", "", "empty"),
        ("document_number", "L898902C36", "1-9 characters"),
        ("birth_date", "741312", "month 13"),
        ("birth_date", "740231", "day 31"),
        ("expiry_date", "12041", "YYMMDD"),
        ("sex", "Q", "M, F, X"),
        ("issuing_state", "U1O", "state code"),
        ("optional_data", "Z" * 15, "14 characters"),
        ("document_code", "1", "first a letter"),
        ("given_names", "A" * 35, "too long for the TD3 name field by"),
    ):
        with pytest.raises(RecordError, match=message) as info:
            Td3(**{**base, key: value})
        assert info.value.field in (key, "surname")


def test_sex_x_is_filler_and_unknown_dates_allowed() -> None:
    td3 = Td3(**{**SPECIMEN["fields"], "sex": "X", "birth_date": "74<<<<"})
    assert td3.sex == "<"
    assert Td3.parse(*td3.lines()) == td3


_name = st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8), min_size=1,
                 max_size=3).map(" ".join)
_given = st.one_of(st.just(""), _name)
_yymmdd = st.dates().map(lambda d: d.strftime("%y%m%d"))


@settings(max_examples=200, deadline=None)
@given(
    _name, _given,
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=9),
    st.sampled_from(["UTO", "D", "CHN", "GBR"]), _yymmdd, _yymmdd, st.sampled_from("MF<"),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", max_size=14),
)
def test_round_trip(surname: str, given_names: str, number: str, state: str, birth: str, expiry: str,
                    sex: str, optional: str) -> None:
    try:
        td3 = Td3(document_code="P", issuing_state=state, surname=surname, given_names=given_names,
                  document_number=number, nationality=state, birth_date=birth, sex=sex,
                  expiry_date=expiry, optional_data=optional)
    except RecordError as exc:
        assert "too long for the TD3 name field" in str(exc)
        return
    line1, line2 = td3.lines()
    assert len(line1) == len(line2) == LINE_LENGTH
    assert Td3.parse(line1, line2) == td3
    info = td3.mrz_information()
    assert len(info) == 24
    assert info[9] == check_digit(info[:9])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=50), st.text(max_size=50))
def test_parse_raises_only_record_errors(line1: str, line2: str) -> None:
    try:
        Td3.parse(line1, line2)
    except RecordError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([i for i, c in enumerate(LINE2) if c.isdigit() and (i < 10 or 13 <= i < 20 or i >= 21)]),
       st.integers(min_value=1, max_value=9))
def test_every_digit_substitution_is_caught(pos: int, delta: int) -> None:
    # Weights 7, 3, 1 are coprime to 10, so changing one digit always changes the sum modulo 10.
    line2 = LINE2[:pos] + str((int(LINE2[pos]) + delta) % 10) + LINE2[pos + 1:]
    with pytest.raises(RecordError, match="check digit"):
        Td3.parse(LINE1, line2)
