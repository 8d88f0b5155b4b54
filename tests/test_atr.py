"""Tests for cardkit.atr: parsing published ATRs, strictness, explanation, ATR lists."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.atr import Atr, AtrList, InterfaceBytes
from cardkit.errors import AtrError

H = bytes.fromhex

# Published ATRs. Decodings cross-checked with the public parser at smartcard-atr.apdu.fr (pages
# "parse?ATR=..."), the Gemalto Prox-DU PC/SC guide (MIFARE ATRs) and database.mysmartlogon.com.
YUBIKEY5 = H("3BFD1300008131FE158073C021C057597562694B657940")
OPENPGP = H("3BFA1300FF8131804500 31C173C00100009000B1".replace(" ", ""))
ACOS_ID = H("3BDF96FF910131FE4680319052410264050200AC73D622C017")
T1_LRC = H("3BFB9100FF918171FE40004120001177918073C82110D6")
ATHENA = H("3BD518FF8191FE1FC3807 3C8211309".replace(" ", ""))
MIFARE_1K = H("3B8F8001804F0CA0000003060300010000000 06A".replace(" ", ""))
MIFARE_4K = H("3B8F8001804F0CA00000030603000200000000 69".replace(" ", ""))
NOKIA_SIM = H("3F2F008069AF0307015900000A0E833E9F16")  # inverse convention, T=0
MULTIFLEX = H("3B021450")
CASH_CARD = H("3B2A008065 24B000020082 9000".replace(" ", ""))  # Singapore cash card (blog example)
VIRTUAL_NAME = "cardkit virtual card (ISO 7816-4 card OS with a GlobalPlatform ISD)"


def with_tck(body: bytes) -> bytes:
    x = 0
    for b in body[1:]:
        x ^= b
    return body + bytes([x])


def virtual_atr(serial: bytes) -> bytes:
    return with_tck(H("3B8D800180") + b"\x54" + serial + H("73F621C0829000"))


# ---------------------------------------------------------------------------------- published ATRs


def test_yubikey5() -> None:
    atr = Atr.parse(YUBIKEY5)
    assert atr.ts == 0x3B and atr.t0 == 0xFD and atr.convention == "direct"
    assert atr.interface == (InterfaceBytes(1, 0x13, 0x00, 0x00, 0x81), InterfaceBytes(2, td=0x31),
                             InterfaceBytes(3, ta=0xFE, tb=0x15))
    assert (atr.fi, atr.di, atr.f_max_mhz, atr.baud_factor) == (372, 4, 5.0, 93.0)
    assert atr.protocols == (1,)
    assert atr.ifsc == 254 and atr.t1_waiting_integers == (1, 5) and atr.t1_error_detection == "LRC"
    assert atr.historical == H("8073C021C057597562694B6579") and atr.tck == 0x40
    assert atr.category_indicator == 0x80
    assert atr.historical_objects == [(7, H("C021C0")), (5, b"YubiKey")]
    text = "\n".join(atr.describe())
    assert "IFSC = 254" in text and '"YubiKey"' in text and "command chaining, extended Lc and Le" in text


def test_openpgp_category_00() -> None:
    atr = Atr.parse(OPENPGP)
    assert atr.extra_guard_time == 255 and atr.ifsc == 128 and atr.t1_waiting_integers == (4, 5)
    assert atr.category_indicator == 0x00
    assert atr.historical_objects == [(3, H("C1")), (7, H("C00100")), (8, H("009000"))]
    assert any("card without MF" in line for line in atr.describe())


def test_acos_id_specific_mode() -> None:
    atr = Atr.parse(ACOS_ID)
    assert (atr.fi, atr.di, atr.baud_factor) == (512, 32, 16.0)
    assert atr.specific_mode == 0x01
    assert atr.ifsc == 254 and atr.t1_waiting_integers == (4, 6)
    assert [t for t, _ in atr.historical_objects] == [3, 5, 6, 7]
    assert any("TA2 = 01: specific mode T=1, capable" in line for line in atr.describe())


def test_t1_lrc_and_unable_to_change() -> None:
    atr = Atr.parse(T1_LRC)
    assert (atr.fi, atr.di) == (512, 1)
    assert atr.specific_mode == 0x81
    assert atr.t1_error_detection == "LRC" and atr.t1_waiting_integers == (4, 0)
    assert atr.category_indicator == 0x41 and atr.historical_objects == []
    assert any("unable to change" in line for line in atr.describe())
    assert any("proprietary format" in line for line in atr.describe())


def test_athena_global_t15() -> None:
    atr = Atr.parse(ATHENA)
    assert (atr.fi, atr.di) == (372, 12)
    assert atr.protocols == (1,)  # T=15 is not a transmission protocol
    assert atr.classes == ("A (5 V)", "B (3 V)") and atr.clock_stop == "no preference"
    assert atr.group(4) == InterfaceBytes(4, ta=0xC3)


def test_pcsc_storage_cards() -> None:
    one, four = Atr.parse(MIFARE_1K), Atr.parse(MIFARE_4K)
    assert one.protocols == (0, 1) and one.tck == 0x6A and four.tck == 0x69
    card = one.pcsc_storage_card
    assert card is not None and card.rid == H("A000000306") and card.standard == 3
    assert card.card_name == 1 and card.card_name_text == "MIFARE Classic 1K"
    assert four.pcsc_storage_card is not None and four.pcsc_storage_card.card_name_text == "MIFARE Classic 4K"
    assert one.historical_objects == []  # not COMPACT-TLV; described through pcsc_storage_card
    assert any("MIFARE Classic 1K" in line for line in one.describe())


def test_inverse_convention_t0_only() -> None:
    atr = Atr.parse(NOKIA_SIM)
    assert atr.convention == "inverse" and atr.tck is None and atr.protocols == (0,)
    assert atr.interface == (InterfaceBytes(1, tb=0x00),)
    assert (atr.fi, atr.di, atr.f_max_mhz) == (372, 1, 5.0)  # defaults without TA1
    assert atr.historical_objects == [(6, H("AF0307015900000A0E")), (8, H("3E9F16"))]
    assert atr.wi == 10


def test_minimal_and_cash_card() -> None:
    atr = Atr.parse(MULTIFLEX)
    assert atr.interface == () and atr.historical == H("1450") and atr.protocols == (0,)
    cash = Atr.parse(CASH_CARD)
    assert cash.historical_objects == [(6, H("24B0000200")), (8, H("9000"))]
    assert any("SW1-SW2 9000" in line for line in cash.describe())


def test_virtual_card_atr() -> None:
    serial = H("00BF7C7A")
    atr = Atr.parse(virtual_atr(serial))
    assert atr.protocols == (0, 1) and atr.tck is not None
    assert atr.historical_objects == [(5, serial), (7, H("F621C0")), (8, H("9000"))]
    assert AtrList.builtin().match(atr.raw)[0] == VIRTUAL_NAME
    assert AtrList.default().match(atr)[0] == VIRTUAL_NAME


def test_from_hex_and_str() -> None:
    atr = Atr.from_hex("3B:02:14 50")
    assert str(atr) == "3B 02 14 50"
    with pytest.raises(AtrError):
        Atr.from_hex("3B 0G")


def test_rfu_ta1() -> None:
    atr = Atr.parse(H("3B1071"))  # TA1 = 71: FI = 7 is RFU, DI = 1
    with pytest.raises(AtrError):
        _ = atr.fi
    assert atr.di == 1
    assert any("reserved" in line for line in atr.describe())
    assert atr.to_dict()["fi"] is None


def test_to_dict_is_json() -> None:
    for raw in (YUBIKEY5, OPENPGP, ACOS_ID, T1_LRC, ATHENA, MIFARE_1K, NOKIA_SIM, MULTIFLEX, CASH_CARD):
        d = Atr.parse(raw).to_dict()
        assert json.loads(json.dumps(d)) == d
    d = Atr.parse(YUBIKEY5).to_dict()
    assert d["atr"] == YUBIKEY5.hex().upper() and d["protocols"] == [1] and d["tck"] == "40"
    assert d["historical_objects"] == [{"tag": 7, "name": "card capabilities", "value": "C021C0"},
                                       {"tag": 5, "name": "card issuer's data", "value": "597562694B6579"}]


# ------------------------------------------------------------------------------------- strictness


@pytest.mark.parametrize(("raw", "offset", "words"), [
    # published truncated ATR (13 historical bytes missing); offset = where the historical bytes start
    ("3BFF9600FF8131FE406563", 9, "15 historical bytes announced, 2 present"),
    ("3BFD1300008131FE158073C021C057597562694B6579", 22, "TCK missing"),
    ("3BFD1300008131FE158073C021C057597562694B657941", 22, "expected '40'"),
    ("3BFD1300008131FE158073C021C057597562694B65794000", 23, "after TCK"),
    ("3B02145011", 4, "only T=0"),
    ("3B0214", 2, "2 historical bytes announced, 1 present"),
    ("3BF0", 2, "TA1 announced"),
    ("3B9011", 3, "TD1 announced"),
    ("03021450", 0, "inverse-convention TS read with direct"),
    ("3A00", 0, "neither"),
    ("3B", 1, "too short"),
    ("3B801F00", 2, "T=15"),
])
def test_parse_errors(raw: str, offset: int, words: str) -> None:
    with pytest.raises(AtrError) as info:
        Atr.parse(H(raw))
    assert info.value.offset == offset, str(info.value)
    assert words in str(info.value)


def test_parse_too_long() -> None:
    with pytest.raises(AtrError, match="exceeds 33"):
        Atr.parse(H("3B0F") + bytes(32))
    with pytest.raises(AtrError):
        Atr.parse("3B00")  # type: ignore[arg-type]


def test_bad_compact_historical() -> None:
    atr = Atr.parse(H("3B03805A01"))  # category 80, then 5A announces 10 bytes, 1 present
    with pytest.raises(AtrError) as info:
        _ = atr.historical_objects
    assert info.value.offset == 3
    assert any("not valid COMPACT-TLV" in line for line in atr.describe())
    assert atr.to_dict()["historical_objects"] is None


# ---------------------------------------------------------------------------------------- AtrList

LIST_TEXT = """\
# comment
3B 02 14 50
\tFirst card
\tsecond line

3B 8[0-9A-F] 80 01 .*
\tAny contactless

3B 02 14 50
\tFirst card
\tDuplicate entry name

\tname after a blank line
3B (( 00
\tbroken regex
"""


def test_atrlist_parse_text(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cardkit.atr"):
        lst = AtrList.parse_text(LIST_TEXT, source="t")
    assert len(lst) == 3
    assert lst.match(MULTIFLEX) == ["First card", "second line", "Duplicate entry name",
                                    "name after a blank line"]
    assert lst.match(MIFARE_1K) == ["Any contactless"]
    assert lst.match(YUBIKEY5) == []
    assert lst.match(H("3B021450FF")) == []  # whole-ATR match only
    assert "invalid ATR pattern" in caplog.text


def test_atrlist_add_load_default(tmp_path: Path) -> None:
    lst = AtrList()
    lst.add("3b 02  14 ..", "lower-case pattern")
    assert lst.match(MULTIFLEX) == ["lower-case pattern"]
    with pytest.raises(AtrError):
        lst.add("3B ((", "bad")
    with pytest.raises(AtrError):
        lst.add("3B 02", )
    with pytest.raises(AtrError):
        lst.match("3B021450")  # type: ignore[arg-type]
    path = tmp_path / "list.txt"
    path.write_bytes(LIST_TEXT.encode() + b"3B 00\n\t\xff broken utf-8\n")
    loaded = AtrList.load(path)
    assert loaded.match(H("3B00")) == ["\ufffd broken utf-8"]
    only_builtin = AtrList.default(system_list=None)
    assert len(only_builtin) == len(AtrList.builtin())
    combined = AtrList.default(system_list=path)
    assert len(combined) == len(only_builtin) + len(loaded)
    assert combined.match(MULTIFLEX)[-1] == "name after a blank line"
    assert len(AtrList.default(system_list=tmp_path / "absent.txt")) == len(only_builtin)


def test_builtin_list_is_consistent() -> None:
    builtin = AtrList.builtin()
    assert len(builtin) >= 10
    concrete = [e for e in builtin if not any(c in e.pattern for c in ".[(*")]
    assert len(concrete) >= 8
    for entry in concrete:  # every fully specified ATR in the list is a valid ATR (TCK and lengths)
        atr = Atr.parse(H(entry.pattern.replace(" ", "")))
        assert builtin.match(atr.raw)[0] == entry.names[0]
    assert builtin.match(YUBIKEY5)[0].startswith("Yubico YubiKey 5")
    assert builtin.match(MIFARE_1K)[0].startswith("MIFARE Classic 1K")
    assert not any("ISO/IEC 14443-4" in n for n in builtin.match(MIFARE_1K))


# ------------------------------------------------------------------------------------- properties


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=40), st.binary(min_size=1, max_size=33).map(lambda b: b"\x3b" + b)))
def test_random_bytes_only_atr_error(raw: bytes) -> None:
    try:
        atr = Atr.parse(raw)
    except AtrError:
        return
    atr.describe()  # a parsed ATR can always be explained
    json.dumps(atr.to_dict())


@st.composite
def valid_atrs(draw: st.DrawFn) -> tuple[bytes, list[InterfaceBytes], bytes]:
    """A structurally valid ATR and the groups and historical bytes it was built from."""
    groups: list[InterfaceBytes] = []
    body = bytearray()
    index, k = 1, draw(st.integers(0, 15))
    y = draw(st.integers(0, 15))
    t0 = (y << 4) | k
    any_t = False
    while True:
        vals = [draw(st.integers(0, 255)) if y & bit else None for bit in (1, 2, 4)]
        td = None
        if y & 8:
            t = draw(st.integers(0, 14 if index == 1 else 15))
            more = draw(st.integers(0, 15)) if index < 4 else 0
            td = (more << 4) | t
            any_t = any_t or t != 0
        g = InterfaceBytes(index, vals[0], vals[1], vals[2], td)
        body.extend(v for v in (*vals, td) if v is not None)
        if any(v is not None for v in (*vals, td)):
            groups.append(g)
        if td is None:
            break
        y, index = td >> 4, index + 1
    historical = draw(st.binary(min_size=k, max_size=k))
    raw = bytes([0x3B, t0]) + bytes(body) + historical
    return (with_tck(raw) if any_t else raw), groups, historical


@settings(max_examples=300, deadline=None)
@given(valid_atrs())
def test_valid_atrs_parse_back(case: tuple[bytes, list[InterfaceBytes], bytes]) -> None:
    raw, groups, historical = case
    atr = Atr.parse(raw)
    assert list(atr.interface) == groups
    assert atr.historical == historical and atr.raw == raw
    assert (atr.tck is not None) == any(g.td is not None and g.td & 0x0F for g in groups)
    atr.describe()
    if atr.tck is not None:  # flipping any byte of a TCK-protected ATR is detected or mis-structures it
        with pytest.raises(AtrError):
            Atr.parse(raw[:-1] + bytes([raw[-1] ^ 0x01]))
