"""Validators (cardkit.profiles.validators) and code lists (cardkit.profiles.codelists)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.errors import ProfileError, RecordError
from cardkit.profiles import codelists
from cardkit.profiles.validators import (
    VALIDATORS,
    check_citizen_id,
    check_country,
    check_date,
    check_document_number,
    check_ethnicity,
    check_gender,
    check_id_consistency,
    check_in_set,
    check_length,
    check_mrz_name,
    check_region_code,
    check_ssc_card_number,
    citizen_id_birth_date,
    citizen_id_check_char,
    citizen_id_gender,
    mask_identifier,
    parse_date,
    ssc_card_number_check_char,
)

VECTORS = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "codecs.json").read_text(encoding="utf-8")
)
TODAY = dt.date(2025, 6, 1)

# --------------------------------------------------------------------------- citizen ID (GB 11643-1999)


@pytest.mark.parametrize("case", VECTORS["citizen_id"]["valid"], ids=lambda c: c["note"])
def test_gb11643_published_examples(case: dict[str, str]) -> None:
    value = case["value"]
    assert citizen_id_check_char(value[:17]) == value[17]
    check_citizen_id(value, today=TODAY)
    assert citizen_id_birth_date(value) == case["birth_date"]
    assert citizen_id_gender(value) == case["gender"]


def _reference_check_char(body: str) -> str:
    # Independent form of ISO 7064 MOD 11-2: weight of position i (from the right, check = 1) is 2^(i-1) mod 11,
    # and the check value makes the full weighted sum congruent to 1 mod 11.
    total = sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(body))
    for candidate, value in [(str(d), d) for d in range(10)] + [("X", 10)]:
        if (total + value) % 11 == 1:
            return candidate
    raise AssertionError("no check value")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_check_char_matches_iso7064_definition(body: str) -> None:
    assert citizen_id_check_char(body) == _reference_check_char(body)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(codelists.DISTRICTS)),
    st.dates(min_value=dt.date(1900, 1, 1), max_value=TODAY),
    st.integers(min_value=0, max_value=999),
    st.integers(min_value=0, max_value=16),
    st.integers(min_value=1, max_value=9),
)
def test_any_single_digit_error_is_caught(region: str, born: dt.date, seq: int, pos: int,
                                          delta: int) -> None:
    body = f"{region}{born:%Y%m%d}{seq:03d}"
    valid = body + citizen_id_check_char(body)
    check_citizen_id(valid, today=TODAY)
    wrong = list(valid)
    wrong[pos] = str((int(wrong[pos]) + delta) % 10)
    with pytest.raises(RecordError):
        check_citizen_id("".join(wrong), today=TODAY)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("11010519491231002", "18 characters"),
        ("1101051949123100A2", "character 17 is not a digit"),
        ("11010519491231002x", "uppercase 'X'"),
        ("11010519491231002Y", "digit or 'X'"),
        ("99010519491231002X", "unknown province"),
        ("110105194913310021", "not a real birth date"),
        ("110105203001010010", "in the future"),
        ("110105179901010010", "before 1800"),
        ("110105194912310021", "check character does not match"),
    ],
)
def test_citizen_id_errors(value: str, message: str) -> None:
    with pytest.raises(RecordError, match=message) as info:
        check_citizen_id(value, today=TODAY, field="citizen_id")
    assert value not in str(info.value)
    assert info.value.field == "citizen_id"


def test_citizen_id_helpers_reject_bad_shapes() -> None:
    with pytest.raises(RecordError):
        citizen_id_check_char("123")
    with pytest.raises(RecordError, match="character 3 is not a digit"):
        citizen_id_check_char("12A45678901234567")
    with pytest.raises(RecordError):
        citizen_id_gender("12345")


# --------------------------------------------------------------------------- SSC card number (ssc.md)


@pytest.mark.parametrize("value", VECTORS["ssc_card_number"]["valid"])
def test_ssc_public_samples(value: str) -> None:
    assert ssc_card_number_check_char(value[:8]) == value[8]
    check_ssc_card_number(value)


def test_ssc_check_char_special_values() -> None:
    # X00000019: 33*3 + 1*2 = 101, 101 mod 11 = 2, 11 - 2 = 9 (ssc.md rule worked by hand).
    assert ssc_card_number_check_char("X0000001") == "9"
    # "00000000": sum 0 -> 11 - 0 = 11 -> '0'; "00000005": 5*2 = 10 -> 11 - 10 = 1;
    # "00000001": 1*2 = 2 -> 9; "0000000A": 10*2 = 20, 20 mod 11 = 9 -> 2;
    # "00000006": 6*2 = 12 -> 12 mod 11 = 1 -> 10 -> 'X'.
    assert ssc_card_number_check_char("00000000") == "0"
    assert ssc_card_number_check_char("00000005") == "1"
    assert ssc_card_number_check_char("0000000A") == "2"
    assert ssc_card_number_check_char("00000006") == "X"


def test_ssc_card_number_errors() -> None:
    with pytest.raises(RecordError, match="9 characters"):
        check_ssc_card_number("X0000001")
    with pytest.raises(RecordError, match="character 2 is not 0-9 or A-Z"):
        check_ssc_card_number("Xa0000019")
    with pytest.raises(RecordError, match="does not match") as info:
        check_ssc_card_number("X00000018", field="card_number")
    assert "X00000018" not in str(info.value)
    assert info.value.field == "card_number"


# --------------------------------------------------------------------------- codes and generic checks


def test_region_code() -> None:
    check_region_code("110105")
    check_region_code("820000")
    for bad, message in (("11010", "6 digits"), ("11010A", "character 6"), ("990105", "province"),
                         ("100000", "province")):
        with pytest.raises(RecordError, match=message):
            check_region_code(bad)


def test_gender_and_ethnicity() -> None:
    for code in ("0", "1", "2", "9"):
        check_gender(code)
    for bad in ("3", "M", "", "11"):
        with pytest.raises(RecordError, match=r"GB/T 2261\.1"):
            check_gender(bad)
    for n in range(1, 57):
        check_ethnicity(f"{n:02d}")
    check_ethnicity("97")
    check_ethnicity("98")
    for bad in ("00", "57", "1", "99"):
        with pytest.raises(RecordError, match="GB 3304"):
            check_ethnicity(bad)


def test_dates() -> None:
    check_date("20000229")
    assert parse_date("2000-02-29") == dt.date(2000, 2, 29)
    with pytest.raises(RecordError, match=r"year 1900, month 02, day 29"):
        check_date("19000229")
    with pytest.raises(RecordError, match="YYYYMMDD"):
        check_date("2000-0229")
    with pytest.raises(RecordError, match="non-digit"):
        check_date("2000O229")


def test_length_and_set() -> None:
    check_length("张三", max_len=2)
    with pytest.raises(RecordError, match="too long by 2 bytes"):
        check_length("张三", max_len=2, encoding="gbk")
    with pytest.raises(RecordError, match="too short by 1 characters"):
        check_length("A", min_len=2)
    with pytest.raises(RecordError, match=r"U\+00E9"):
        check_length("é", encoding="ascii")
    check_in_set("b", {"a", "b"})
    with pytest.raises(RecordError, match="allowed values: a, b"):
        check_in_set("c", {"b", "a"})
    with pytest.raises(RecordError, match="one of the 20 allowed"):
        check_in_set("x", {str(i) for i in range(20)})


def test_mrz_validators() -> None:
    check_mrz_name("ANNA MARIA")
    check_mrz_name("DE<LA<CRUZ")
    for bad, message in (("", "empty"), ("Anna", "character 2"), ("ÅSA", "character 1"),
                         ("A" * 40, "too long by 1")):
        with pytest.raises(RecordError, match=message):
            check_mrz_name(bad)
    check_document_number("L898902C3")
    for bad in ("", "L898902C36", "l898902"):
        with pytest.raises(RecordError, match="document number"):
            check_document_number(bad)
    for code in ("CHN", "UTO", "D", "D<<", "GBR", "USA", "XXA"):
        check_country(code)
    for bad in ("ZZZ", "chn", "DE"):
        with pytest.raises(RecordError, match="state code"):
            check_country(bad)


def test_id_consistency() -> None:
    record = {"citizen_id": "11010519491231002X", "birth_date": "1949-12-31", "gender": "2"}
    check_id_consistency(record, "citizen_id", "birth_date", "gender", today=TODAY)
    with pytest.raises(RecordError, match="birth date does not match") as info:
        check_id_consistency({**record, "birth_date": "19491230"}, today=TODAY)
    assert info.value.field == "birth_date"
    with pytest.raises(RecordError, match="gender does not match") as info:
        check_id_consistency({**record, "gender": "1"}, today=TODAY)
    assert info.value.field == "gender"
    with pytest.raises(RecordError, match="no gender field"):
        check_id_consistency({"citizen_id": record["citizen_id"], "birth_date": "19491231"}, today=TODAY)
    check_id_consistency({"citizen_id": record["citizen_id"]}, birth_field=None, gender_field=None,
                         today=TODAY)
    with pytest.raises(RecordError, match="no citizen ID field"):
        check_id_consistency({}, today=TODAY)


def test_mask_identifier() -> None:
    assert mask_identifier("11010519491231002X") == "1101************2X"
    assert mask_identifier("X00000019") == "X000***19"
    assert mask_identifier("1234567") == "1234*67"
    assert mask_identifier("张三") == "**"
    assert mask_identifier("123456") == "******"
    assert mask_identifier("") == ""


def test_validator_registry() -> None:
    assert set(VALIDATORS) == {"citizen-id", "ssc-card-number", "region-code", "gender", "ethnicity",
                               "date", "mrz-name", "document-number", "country"}
    good = {"citizen-id": "11010519491231002X", "ssc-card-number": "B07541184", "region-code": "310115",
            "gender": "1", "ethnicity": "98", "date": "2021-12-03", "mrz-name": "ERIKSSON",
            "document-number": "L898902C3", "country": "UTO"}
    for name, fn in VALIDATORS.items():
        fn(good[name])
        with pytest.raises(RecordError):
            fn("?")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_validators_raise_only_record_errors(value: str) -> None:
    for fn in VALIDATORS.values():
        try:
            fn(value)
        except RecordError as exc:
            if len(value) > 6:
                assert value not in str(exc)


# --------------------------------------------------------------------------- code lists


def test_code_lists() -> None:
    assert len([c for c in codelists.ETHNICITY if c <= "56"]) == 56
    assert codelists.ETHNICITY["01"] == "汉族"
    assert codelists.ETHNICITY["56"] == "基诺族"
    assert codelists.ETHNICITY["98"] == "外国血统中国籍人士"
    assert codelists.GENDER == {"0": "未知的性别", "1": "男性", "2": "女性", "9": "未说明的性别"}
    assert len(codelists.PROVINCES) == 34
    assert codelists.PROVINCES["44"] == "广东省"
    assert len(codelists.MRZ_STATES) >= 60
    for code in ("CHN", "UTO", "D", "GBR", "USA"):
        assert code in codelists.MRZ_STATES
    for name in codelists.ETHNICITY.values():
        name.encode("gbk")
    for code in codelists.DISTRICTS:
        check_region_code(code)
        assert code[:4] + "00" in codelists.CITIES
    with pytest.raises(ProfileError, match="unknown code list"):
        codelists.code_list("planets")
    with pytest.raises(TypeError):
        codelists.GENDER["3"] = "x"  # type: ignore[index]
