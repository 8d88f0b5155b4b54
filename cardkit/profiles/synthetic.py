"""Deterministic synthetic cardholders for tests, samples and benchmarks. No real person's data.

Every generated field is valid for its validator (GB 11643 citizen IDs with correct check characters and
matching birth date and gender, GB/T 2260 region codes, GB 3304 ethnicity codes, SSC card numbers with
their check character, GBK-encodable names and addresses). The unique identifiers (citizen ID, card
number, document number) are unique by construction: record ``i`` takes the ``i``-th value of an affine
permutation ``x -> (a*x + b) mod M`` of the identifier space, with ``a`` coprime to ``M``. The same
``(n, seed)`` always gives the same records.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import logging
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from cardkit.errors import CardkitError
from cardkit.profiles.codelists import CITIES, DISTRICTS, PROVINCES
from cardkit.profiles.validators import citizen_id_check_char, ssc_card_number_check_char

__all__ = [
    "MRTD_FIELDS",
    "SSC_FIELDS",
    "SyntheticError",
    "csv_text",
    "mrtd_people",
    "sample_files",
    "ssc_people",
    "write_samples",
]

log = logging.getLogger(__name__)

SSC_FIELDS: tuple[str, ...] = (
    "citizen_id", "name", "gender", "ethnicity", "birth_date", "birthplace", "household_registration",
    "card_number", "region", "issue_date", "expiry_date", "issuing_org", "phone",
)
MRTD_FIELDS: tuple[str, ...] = (
    "document_number", "surname", "given_names", "nationality", "birth_date", "sex", "expiry_date",
    "issuing_state",
)

# Common single-character surnames, a few compound surnames, and common given-name characters.
# All are in GB 2312 level 1 and so GBK-encodable (checked by the tests).
_SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕"
             "丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万钱严武戴莫孔向汤")
_COMPOUND_SURNAMES = ("欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "慕容", "令狐")
_GIVEN = ("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍鹏辉建国志红文斌宇浩凯晨欣怡佳琪雪梅海燕波"
          "林丹婷颖子涵梓轩思雨博嘉宁安乐晓春秋冬阳光荣飞翔")
_STREETS = ("人民路", "解放路", "中山路", "建设路", "和平路", "胜利街", "新华街", "长江路", "黄河路", "青年路",
            "文化路", "友谊路", "花园街", "光明路", "朝阳路", "幸福街")
# Mainland mobile number prefixes (first three digits) used for synthetic phone numbers.
_PHONE_PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152",
                   "155", "156", "157", "158", "159", "166", "177", "180", "181", "186", "187", "188", "189")

# Romanized surnames / given names for MRTD records (ICAO 9303 MRZ characters only).
_MRZ_SURNAMES = ("WANG", "LI", "ZHANG", "LIU", "CHEN", "YANG", "HUANG", "ZHAO", "WU", "ZHOU", "SMITH",
                 "JOHNSON", "GARCIA", "MARTIN", "MULLER", "SCHMIDT", "ROSSI", "SILVA", "NGUYEN", "KIM",
                 "ERIKSSON", "JANSEN", "NOVAK", "KOWALSKI", "DUBOIS", "TANAKA", "SATO", "PETROV")
_MRZ_GIVEN = ("ANNA", "MARIA", "JOHN", "PETER", "WEI", "FANG", "MING", "HUA", "LENA", "OMAR", "SOFIA",
              "LUCAS", "EMMA", "NOAH", "MIA", "LIAM", "YUKI", "IVAN", "ELENA", "JUAN", "AMIR", "SARA")
_MRZ_NATIONALITIES = ("UTO", "UTO", "UTO", "CHN", "GBR", "USA", "D", "FRA", "JPN", "KOR", "CAN", "AUS",
                      "NLD", "SWE", "ESP", "ITA", "BRA", "IND")

# Birth dates are drawn from this range; issue dates from the second one, expiry = issue + 10 years.
_BIRTH_FIRST, _BIRTH_LAST = _dt.date(1940, 1, 1), _dt.date(2009, 12, 31)
_ISSUE_FIRST, _ISSUE_LAST = _dt.date(2016, 1, 1), _dt.date(2024, 12, 31)
_SEQUENCES = 999  # GB 11643-1999 §5.4 sequence code 001..999


class SyntheticError(CardkitError):
    """More records were asked for than the identifier space of a generator holds."""


def _days(first: _dt.date, last: _dt.date) -> list[_dt.date]:
    return [first + _dt.timedelta(days=k) for k in range((last - first).days + 1)]


def _plus_years(day: _dt.date, years: int) -> _dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February -> 28 February
        return day.replace(year=day.year + years, day=28)


def _permutation(space: int, rng: random.Random) -> tuple[int, int]:
    """Multiplier and offset of an affine permutation of ``range(space)``."""
    a = rng.randrange(space // 3, 2 * space // 3) | 1
    while math.gcd(a, space) != 1:
        a += 2
    return a, rng.randrange(space)


def _check_count(n: int, space: int, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise SyntheticError(f"record count must be a non-negative integer, got {n!r}")
    if n > space:
        raise SyntheticError(f"at most {space} unique {what} can be generated, {n} asked")


def ssc_people(n: int, seed: int = 0) -> Iterator[dict[str, str]]:
    """``n`` synthetic social security card holders (fields :data:`SSC_FIELDS`, all strings)."""
    districts = sorted(DISTRICTS)
    births = [d.strftime("%Y%m%d") for d in _days(_BIRTH_FIRST, _BIRTH_LAST)]
    issue_days = _days(_ISSUE_FIRST, _ISSUE_LAST)
    issues = [d.strftime("%Y%m%d") for d in issue_days]
    expiries = [_plus_years(d, 10).strftime("%Y%m%d") for d in issue_days]
    id_space = len(districts) * len(births) * _SEQUENCES
    card_space = 26 * 10**7  # one letter and seven digits (ssc.md "Card number" samples)
    _check_count(n, min(id_space, card_space), "citizen IDs / card numbers")
    rng = random.Random(seed)
    id_a, id_b = _permutation(id_space, rng)
    card_a, card_b = _permutation(card_space, rng)
    addresses: dict[str, str] = {}
    for code in districts:
        city = code[:4] + "00"
        province = PROVINCES[code[:2]]
        prefix = CITIES[city] if province == CITIES[city] else province + CITIES[city]
        addresses[code] = prefix + DISTRICTS[code]
    n_births, n_issues = len(births), len(issues)
    surnames, compounds, given = _SURNAMES, _COMPOUND_SURNAMES, _GIVEN
    n_sur, n_comp, n_given = len(surnames), len(compounds), len(given)
    for i in range(n):
        x = (id_a * i + id_b) % id_space
        x, seq = divmod(x, _SEQUENCES)
        district_index, day = divmod(x, n_births)
        district = districts[district_index]
        body = f"{district}{births[day]}{seq + 1:03d}"
        citizen_id = body + citizen_id_check_char(body)
        y = (card_a * i + card_b) % card_space
        letter, digits = divmod(y, 10**7)
        card8 = f"{chr(0x41 + letter)}{digits:07d}"
        r = rng.getrandbits(128)
        r, k = divmod(r, 16)
        surname = compounds[r % n_comp] if k == 0 else surnames[r % n_sur]
        r //= 128
        r, two = divmod(r, 2)
        name = surname + given[r % n_given]
        r //= n_given
        if two:
            name += given[r % n_given]
        r //= n_given
        r, e = divmod(r, 20)
        ethnicity = "01" if e else f"{r % 56 + 1:02d}"
        r //= 64
        r, issue = divmod(r, n_issues)
        r, street = divmod(r, len(_STREETS))
        r, house = divmod(r, 300)
        r, building = divmod(r, 20)
        r, floor = divmod(r, 30)
        r, unit = divmod(r, 4)
        r, phone_prefix = divmod(r, len(_PHONE_PREFIXES))
        r, office = divmod(r, 9)
        city = district[:4] + "00"
        yield {
            "citizen_id": citizen_id,
            "name": name,
            "gender": "1" if seq % 2 == 0 else "2",  # sequence code seq + 1: odd = male (§5.4)
            "ethnicity": ethnicity,
            "birth_date": births[day],
            "birthplace": district,
            "household_registration": (f"{addresses[district]}{_STREETS[street]}{house + 1}号"
                                       f"{building + 1}栋{floor + 1}{unit + 1:02d}室"),
            "card_number": card8 + ssc_card_number_check_char(card8),
            "region": city,
            "issue_date": issues[issue],
            "expiry_date": expiries[issue],
            "issuing_org": f"{city}{office + 1:06d}",
            "phone": f"{_PHONE_PREFIXES[phone_prefix]}{r % 10**8:08d}",
        }


def mrtd_people(n: int, seed: int = 0) -> Iterator[dict[str, str]]:
    """``n`` synthetic passport holders (fields :data:`MRTD_FIELDS`; dates ``YYMMDD`` as in the MRZ)."""
    space = 26 * 10**8  # one letter and eight digits: the 9-character TD3 document number field
    _check_count(n, space, "document numbers")
    births = [d.strftime("%y%m%d") for d in _days(_BIRTH_FIRST, _BIRTH_LAST)]
    expiries = [d.strftime("%y%m%d") for d in _days(_dt.date(2026, 1, 1), _dt.date(2035, 12, 31))]
    rng = random.Random(seed)
    a, b = _permutation(space, rng)
    for i in range(n):
        letter, digits = divmod((a * i + b) % space, 10**8)
        r = rng.getrandbits(64)
        r, s = divmod(r, len(_MRZ_SURNAMES))
        r, g1 = divmod(r, len(_MRZ_GIVEN))
        r, g2 = divmod(r, len(_MRZ_GIVEN) * 2)
        r, nat = divmod(r, len(_MRZ_NATIONALITIES))
        r, birth = divmod(r, len(births))
        r, sex = divmod(r, 2)
        given = _MRZ_GIVEN[g1] if g2 >= len(_MRZ_GIVEN) or g2 == g1 else f"{_MRZ_GIVEN[g1]} {_MRZ_GIVEN[g2]}"
        yield {
            "document_number": f"{chr(0x41 + letter)}{digits:08d}",
            "surname": _MRZ_SURNAMES[s],
            "given_names": given,
            "nationality": _MRZ_NATIONALITIES[nat],
            "birth_date": births[birth],
            "sex": "MF"[sex],
            "expiry_date": expiries[r % len(expiries)],
            "issuing_state": "UTO",  # ICAO 9303 specimen state: never a real document
        }


def csv_text(rows: Iterable[dict[str, str]], fields: Sequence[str]) -> str:
    """``rows`` as UTF-8-ready CSV text with a header row and ``\\n`` line ends."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def sample_files() -> dict[str, str]:
    """The repository's sample batches (seed 1): relative path -> CSV text."""
    return {
        "applets/ssc/sample-batch.csv": csv_text(ssc_people(300, seed=1), SSC_FIELDS),
        "applets/mrtd/sample-batch.csv": csv_text(mrtd_people(50, seed=1), MRTD_FIELDS),
    }


def write_samples(root: str | Path) -> list[Path]:
    """Write :func:`sample_files` under ``root`` (the repository folder); returns the paths written."""
    written = []
    for rel, text in sample_files().items():
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="")
        written.append(path)
        log.info("wrote %s", path)
    return written

