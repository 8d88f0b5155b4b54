"""Synthetic cardholders (cardkit.profiles.synthetic): valid, unique, deterministic; sample files."""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import pytest

from cardkit.profiles.codecs import make_codec
from cardkit.profiles.mrz import Td3
from cardkit.profiles.synthetic import (
    MRTD_FIELDS,
    SSC_FIELDS,
    SyntheticError,
    csv_text,
    mrtd_people,
    sample_files,
    ssc_people,
)
from cardkit.profiles.validators import (
    check_citizen_id,
    check_country,
    check_date,
    check_document_number,
    check_ethnicity,
    check_gender,
    check_id_consistency,
    check_mrz_name,
    check_region_code,
    check_ssc_card_number,
)

ROOT = Path(__file__).resolve().parent.parent


def test_ssc_people_are_valid() -> None:
    name_codec = make_codec({"kind": "an", "charset": "gbk", "length": 30})
    address_codec = make_codec({"kind": "an", "charset": "gbk", "max_length": 60})
    org_codec = make_codec({"kind": "an", "charset": "ascii", "length": 12})
    for person in ssc_people(3000, seed=7):
        assert tuple(person) == SSC_FIELDS
        check_citizen_id(person["citizen_id"])
        check_id_consistency(person, "citizen_id", "birth_date", "gender")
        check_ssc_card_number(person["card_number"])
        check_gender(person["gender"])
        check_ethnicity(person["ethnicity"])
        check_region_code(person["birthplace"])
        check_region_code(person["region"])
        assert person["region"].endswith("00")
        assert person["birthplace"] == person["citizen_id"][:6]
        for key in ("birth_date", "issue_date", "expiry_date"):
            check_date(person[key])
        assert person["birth_date"] < person["issue_date"] < person["expiry_date"]
        assert 2 <= len(person["name"]) <= 4
        name_codec.encode(person["name"])
        address_codec.encode(person["household_registration"])
        assert len(person["issuing_org"]) == 12
        org_codec.encode(person["issuing_org"])
        assert len(person["phone"]) == 11 and person["phone"].isdigit() and person["phone"][0] == "1"


def test_name_and_address_parts_are_gbk() -> None:
    from cardkit.profiles import synthetic

    for text in (synthetic._SURNAMES, synthetic._GIVEN, *synthetic._COMPOUND_SURNAMES, *synthetic._STREETS):
        text.encode("gbk")
    for text in (*synthetic._MRZ_SURNAMES, *synthetic._MRZ_GIVEN):
        check_mrz_name(text)


def test_ssc_people_vary() -> None:
    people = list(ssc_people(2000, seed=3))
    assert len({p["name"] for p in people}) > 500
    assert {p["gender"] for p in people} == {"1", "2"}
    assert len({p["ethnicity"] for p in people}) > 10
    assert sum(p["ethnicity"] == "01" for p in people) > 1500
    assert len({p["region"] for p in people}) >= 10
    assert {len(p["name"]) for p in people} == {2, 3, 4}


def test_unique_identifiers() -> None:
    ids, cards = set(), set()
    n = 100_000
    for p in ssc_people(n, seed=11):
        ids.add(p["citizen_id"])
        cards.add(p["card_number"])
    assert len(ids) == len(cards) == n
    docs = {p["document_number"] for p in mrtd_people(n, seed=11)}
    assert len(docs) == n


def test_deterministic_and_seeded() -> None:
    first = list(ssc_people(50, seed=5))
    assert first == list(ssc_people(50, seed=5))
    assert first != list(ssc_people(50, seed=6))
    # A prefix of a longer run is the shorter run.
    assert list(itertools.islice(ssc_people(500, seed=5), 50)) == first
    assert list(mrtd_people(20, seed=5)) == list(mrtd_people(20, seed=5))
    assert list(mrtd_people(20, seed=5)) != list(mrtd_people(20, seed=6))


def test_mrtd_people_are_valid() -> None:
    for person in mrtd_people(2000, seed=2):
        assert tuple(person) == MRTD_FIELDS
        check_document_number(person["document_number"])
        assert len(person["document_number"]) == 9
        check_mrz_name(person["surname"])
        check_mrz_name(person["given_names"])
        check_country(person["nationality"])
        assert person["issuing_state"] == "UTO"
        assert person["sex"] in ("M", "F")
        td3 = Td3(document_code="P", **person)
        assert Td3.parse(*td3.lines()) == td3


def test_bad_counts() -> None:
    with pytest.raises(SyntheticError):
        list(ssc_people(-1))
    with pytest.raises(SyntheticError, match="at most"):
        list(mrtd_people(26 * 10**8 + 1))


def test_csv_text() -> None:
    text = csv_text(ssc_people(3, seed=1), SSC_FIELDS)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows == list(ssc_people(3, seed=1))
    assert text.splitlines()[0] == ",".join(SSC_FIELDS)


@pytest.mark.parametrize(("rel", "rows"), [("applets/ssc/sample-batch.csv", 300),
                                           ("applets/mrtd/sample-batch.csv", 50)])
def test_sample_files_are_regenerated_identically(rel: str, rows: int) -> None:
    expected = sample_files()[rel]
    on_disk = (ROOT / rel).read_bytes().decode("utf-8")
    assert on_disk == expected, f"{rel} differs from sample_files(); regenerate with write_samples()"
    assert len(on_disk.splitlines()) == rows + 1
