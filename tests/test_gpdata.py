"""GlobalPlatform data decoders (cardkit.commands.gpdata).

Published vectors: the CPLC, card data and key information responses of a GlobalPlatformPro transcript
(djcxy.com/p/92102, a copy of a Stack Overflow question; the tool's decoded output is quoted there and is what
these tests assert). No published extended key information, SCP03 card data or GET STATUS response was found,
so those are constructed per GPCS 2.3.1 §11.3/§11.4/Appendix H and checked field by field and by properties.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.commands import gpdata
from cardkit.commands.gpdata import CardData, Cplc, GetStatusEntry, KeyInfo
from cardkit.errors import ParseError, TlvError
from cardkit.tlv import ber_encode

H = bytes.fromhex

PUBLISHED_CPLC = H("9F7F2A4250010C425102902610116000099A5A0AF9425211694253117E"
                   "00000000000000000000000000000000")
PUBLISHED_CARD_DATA = H("664C734A06072A864886FC6B01600C060A2A864886FC6B02020101630906072A864886FC6B03640B06092A86"
                        "4886FC6B040215650B06092B8510864864020103660C060A2B060104012A026E0102")
PUBLISHED_KEY_INFO = H("E012C00401018010C00402018010C00403018010")


# ------------------------------------------------------------------------------------------------ CPLC


def test_cplc_published_example() -> None:
    cplc = Cplc.parse(PUBLISHED_CPLC)
    d = cplc.to_dict(reference_year=2014)
    expected = {
        "ic_fabricator": "4250", "ic_type": "010C", "os_id": "4251", "os_release_date": "0290",
        "os_release_level": "2610", "ic_fabrication_date": "1160", "ic_serial_number": "00099A5A",
        "ic_batch_id": "0AF9", "module_fabricator": "4252", "module_packaging_date": "1169",
        "icc_manufacturer": "4253", "ic_embedding_date": "117E", "prepersonalizer": "0000",
        "prepersonalization_date": "0000", "prepersonalization_equipment": "00000000", "personalizer": "0000",
        "personalization_date": "0000", "personalization_equipment": "00000000",
    }
    assert {k: d[k] for k in expected} == expected
    assert d["os_release_date_text"] == "2010-10-17"
    assert d["ic_fabrication_date_text"] == "2011-06-09"
    assert d["ic_embedding_date_text"] == "invalid (117E)"
    assert d["personalization_date_text"] is None
    assert d["ic_fabricator_name"] == "Samsung"
    assert cplc.to_bytes() == PUBLISHED_CPLC[3:]
    assert Cplc.parse(PUBLISHED_CPLC[3:]) == cplc  # without the 9F7F header


def test_decode_yddd() -> None:
    assert gpdata.decode_yddd(H("1160"), reference_year=2014) == "2011-06-09"
    assert gpdata.decode_yddd(H("4001"), reference_year=2024) == "2024-01-01"
    assert gpdata.decode_yddd(H("5001"), reference_year=2024) == "2015-01-01"
    assert gpdata.decode_yddd(H("6366"), reference_year=2025) == "2016-12-31"  # leap year
    assert gpdata.decode_yddd(H("2366"), reference_year=2025) == "invalid (2366)"  # 2022 has 365 days
    assert gpdata.decode_yddd(H("1000"), reference_year=2025) == "invalid (1000)"
    assert gpdata.decode_yddd(H("0000")) is None
    with pytest.raises(gpdata.GpDataError):
        gpdata.decode_yddd(H("11"))


@pytest.mark.parametrize("raw", [PUBLISHED_CPLC[:-1], PUBLISHED_CPLC[3:] + b"\x00", H("9F7F00"),
                                 PUBLISHED_CPLC + H("9F7F00")])
def test_cplc_rejects_wrong_length(raw: bytes) -> None:
    with pytest.raises(ParseError):
        Cplc.parse(raw)


# ------------------------------------------------------------------------------------------- card data


def test_card_data_published_example() -> None:
    cd = CardData.parse(PUBLISHED_CARD_DATA)
    assert cd.gp_version == "2.1.1"
    assert cd.card_identification_scheme == "1.2.840.114283.3"
    assert cd.scp == ((2, 0x15),)
    assert cd.scp_descriptions == ("SCP02 i=15",)
    assert cd.card_config == ("1.3.656.840.100.2.1.3",)
    assert cd.chip_details == ("1.3.6.1.4.1.42.2.110.1.2",)
    assert CardData.parse(PUBLISHED_CARD_DATA[2:]) == cd  # bare 73 template


def test_card_data_scp03_constructed() -> None:
    # GPCS Appendix H: 64 { 06 OID 1.2.840.114283.4.<scp>.<i> }, here SCP03 i=70 (0x70 = 112).
    scp03 = ber_encode(0x64, ber_encode(0x06, H("2A864886FC6B040370")))
    version = ber_encode(0x60, ber_encode(0x06, H("2A864886FC6B02020301")))
    cd = CardData.parse(ber_encode(0x73, version + scp03 + ber_encode(0x67, H("01"))))
    assert cd.gp_version == "2.3.1"
    assert cd.scp_descriptions == ("SCP03 i=70",)
    assert cd.other == ((0x67, H("01")),)


@pytest.mark.parametrize("raw", [
    ber_encode(0x66, ber_encode(0x74, b"")),  # no 73 inside
    ber_encode(0x70, b""),  # wrong template
    ber_encode(0x73, ber_encode(0x64, ber_encode(0x06, H("2A864886FC6B0502")))),  # not an SCP OID
    ber_encode(0x73, ber_encode(0x60, ber_encode(0x06, H("2A86")))),  # truncated OID
])
def test_card_data_rejects_bad_layouts(raw: bytes) -> None:
    with pytest.raises(gpdata.GpDataError):
        CardData.parse(raw)


def test_decode_oid() -> None:
    assert gpdata.decode_oid(H("2A864886F70D")) == "1.2.840.113549"
    assert gpdata.decode_oid(H("2B06010401")) == "1.3.6.1.4.1"
    assert gpdata.decode_oid(H("8837")) == "2.999"
    assert gpdata.decode_oid(H("00")) == "0.0"
    for bad in ("", "2A86", "2A8001"):
        with pytest.raises(gpdata.GpDataError):
            gpdata.decode_oid(H(bad))


# ------------------------------------------------------------------------------------ key information


def test_key_info_published_example() -> None:
    info = KeyInfo.parse(PUBLISHED_KEY_INFO)
    assert [(e.key_id, e.key_version) for e in info.entries] == [(1, 1), (2, 1), (3, 1)]
    assert all(e.components == (gpdata.KeyComponent(0x80, 16),) for e in info.entries)
    assert info.entries[0].components[0].name == "DES"
    assert info.versions() == (1,)
    assert KeyInfo.parse(PUBLISHED_KEY_INFO[2:]) == info  # bare C0 sequence


def test_key_info_extended_and_multi_component_constructed() -> None:
    extended = ber_encode(0xC0, H("0130" "FF880010" "0114" "0100"))
    rsa = ber_encode(0xC0, H("0231" "A180" "A003"))  # basic format, two components
    info = KeyInfo.parse(ber_encode(0xE0, extended + rsa))
    ext = info.entries[0]
    assert (ext.key_id, ext.key_version, ext.extended) == (1, 0x30, True)
    assert ext.components == (gpdata.KeyComponent(0x88, 16),)
    assert (ext.usage, ext.access) == (H("14"), H("00"))
    assert info.entries[1].components == (gpdata.KeyComponent(0xA1, 128), gpdata.KeyComponent(0xA0, 3))
    assert info.versions() == (0x30, 0x31)
    assert gpdata.key_type_name(0x88) == "AES" and gpdata.key_type_name(0x42) == "key type 42"


@pytest.mark.parametrize("value", ["0101", "01018010AA", "0101FF8800", "0101FF88001002AA", "0101FF8800100000FF"])
def test_key_info_rejects_bad_entries(value: str) -> None:
    with pytest.raises(gpdata.GpDataError):
        KeyInfo.parse(ber_encode(0xE0, ber_encode(0xC0, H(value))))


def test_key_info_rejects_foreign_tag() -> None:
    with pytest.raises(gpdata.GpDataError):
        KeyInfo.parse(ber_encode(0xE0, ber_encode(0xC1, H("01018010"))))


# ----------------------------------------------------------------------------------------- GET STATUS

ISD = H("A000000151000000")
PKG = H("A0000000620001")
MOD1, MOD2 = H("A000000062000101"), H("A000000062000102")
APP = H("A00000006200010101")


def _e3(*objs: bytes) -> bytes:
    return ber_encode(0xE3, b"".join(objs))


def test_get_status_tag_list_entries() -> None:
    isd = gpdata.parse_get_status(_e3(ber_encode(0x4F, ISD), ber_encode(0x9F70, H("0F")),
                                      ber_encode(0xC5, H("9EFE80"))), "isd")
    assert len(isd) == 1
    e = isd[0]
    assert (e.aid, e.life_cycle, e.life_cycle_name) == (ISD, 0x0F, "SECURED")
    assert e.privilege_names == [
        "Security Domain", "Card Lock", "Card Terminate", "Card Reset", "CVM Management",
        "Trusted Path", "Authorized Management", "Token Verification", "Global Delete", "Global Lock",
        "Global Registry", "Final Application", "Receipt Generation"]
    apps_raw = (_e3(ber_encode(0x4F, APP), ber_encode(0x9F70, H("07")), ber_encode(0xC5, H("00")),
                    ber_encode(0xC4, PKG), ber_encode(0xCC, ISD))
                + _e3(ber_encode(0x4F, ISD), ber_encode(0x9F70, H("0F")), ber_encode(0xC5, H("800000")),
                      ber_encode(0xCF, H("00")), ber_encode(0xEA, H("01"))))
    app, sd = gpdata.parse_get_status(apps_raw, "apps")
    assert (app.life_cycle_name, app.load_file_aid, app.associated_sd, app.privilege_names) == (
        "SELECTABLE", PKG, ISD, [])
    assert (sd.life_cycle_name, sd.implicit_selection, sd.extra) == ("PERSONALIZED", H("00"), ((0xEA, H("01")),))
    lf = gpdata.parse_get_status(_e3(ber_encode(0x4F, PKG), ber_encode(0x9F70, H("01")), ber_encode(0xCE, H("0100")),
                                     ber_encode(0x84, MOD1), ber_encode(0x84, MOD2), ber_encode(0xCC, ISD)),
                                 "load-files-modules")[0]
    assert (lf.life_cycle_name, lf.version, lf.modules) == ("LOADED", H("0100"), (MOD1, MOD2))


def test_get_status_legacy_entries() -> None:
    raw = H("08") + ISD + H("0F9E")
    assert gpdata.parse_get_status(raw, "isd", tag_list=False) == [GetStatusEntry("isd", ISD, 0x0F, H("9E"))]
    raw = H("07") + PKG + H("0100" "02") + H("08") + MOD1 + H("08") + MOD2 + H("08") + ISD + H("0100" "00")
    entries = gpdata.parse_get_status(raw, "load-files-modules", tag_list=False)
    assert [(e.aid, e.modules) for e in entries] == [(PKG, (MOD1, MOD2)), (ISD, ())]
    apps = gpdata.parse_get_status(H("09") + APP + H("0700") + H("08") + ISD + H("0780"), "apps", tag_list=False)
    assert [(a.life_cycle_name, a.privilege_names) for a in apps] == [
        ("SELECTABLE", []), ("SELECTABLE", ["Security Domain"])]


@pytest.mark.parametrize(("raw", "subset", "tag_list"), [
    (_e3(ber_encode(0x4F, APP)), "apps", True),  # no life cycle
    (ber_encode(0xE2, b""), "apps", True),  # not an E3
    (_e3(ber_encode(0x4F, APP), ber_encode(0x9F70, b"")), "apps", True),
    (H("09") + APP + H("07"), "apps", False),  # no privileges
    (H("09") + APP[:4], "apps", False),
    (H("00") + H("0700"), "apps", False),  # empty AID
    (H("07") + PKG + H("0100"), "load-files-modules", False),  # no module count
    (H("07") + PKG + H("010001"), "load-files-modules", False),  # missing module
    (b"", "everything", False),
])
def test_get_status_rejects_malformed(raw: bytes, subset: str, tag_list: bool) -> None:
    with pytest.raises(gpdata.GpDataError):
        gpdata.parse_get_status(raw, subset, tag_list=tag_list)  # type: ignore[arg-type]


def test_life_cycle_and_privilege_names() -> None:
    assert [gpdata.life_cycle_name("card", v) for v in (0x01, 0x07, 0x0F, 0x7F, 0xFF, 0x03)] == [
        "OP_READY", "INITIALIZED", "SECURED", "CARD_LOCKED", "TERMINATED", "UNKNOWN(03)"]
    assert gpdata.life_cycle_name("isd", 0x0F) == "SECURED"
    assert [gpdata.life_cycle_name("app", v) for v in (0x03, 0x07, 0x0F, 0x83, 0x87, 0x05)] == [
        "INSTALLED", "SELECTABLE", "SELECTABLE+APP_SPECIFIC(0F)", "LOCKED", "LOCKED", "UNKNOWN(05)"]
    assert [gpdata.life_cycle_name("sd", v) for v in (0x03, 0x07, 0x0F, 0x8F)] == [
        "INSTALLED", "SELECTABLE", "PERSONALIZED", "LOCKED"]
    assert gpdata.life_cycle_name("load-file", 0x01) == "LOADED"
    with pytest.raises(gpdata.GpDataError):
        gpdata.life_cycle_name("planet", 1)  # type: ignore[arg-type]
    assert gpdata.privileges_names(H("C0")) == ["Security Domain", "DAP Verification"]
    assert gpdata.privileges_names(H("000001")) == ["RFU b1"]
    assert gpdata.privileges_names(H("0040")) == ["Authorized Management"]
    with pytest.raises(gpdata.GpDataError):
        gpdata.privileges_names(H("00000000"))


# ----------------------------------------------------------------------------------- robustness (fuzz)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_decoders_raise_only_parse_errors(data: bytes) -> None:
    for parse in (Cplc.parse, CardData.parse, KeyInfo.parse,
                  lambda d: gpdata.parse_get_status(d, "apps"),
                  lambda d: gpdata.parse_get_status(d, "load-files-modules", tag_list=False)):
        try:
            parse(data)
        except ParseError:
            pass


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=30))
def test_decoders_on_wrapped_random_values(value: bytes) -> None:
    for raw, parse in ((ber_encode(0xE0, ber_encode(0xC0, value)), KeyInfo.parse),
                       (ber_encode(0x73, ber_encode(0x64, ber_encode(0x06, value))), CardData.parse),
                       (ber_encode(0xE3, value), lambda d: gpdata.parse_get_status(d, "isd"))):
        try:
            parse(raw)
        except (TlvError, gpdata.GpDataError):
            pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 0x7FFF), min_size=2, max_size=6))
def test_decode_oid_round_trip(arcs: list[int]) -> None:
    first = 40 * min(arcs[0] % 3, 2) + (arcs[1] % 40)
    body = [first, *arcs[2:]]
    raw = b""
    for a in body:
        chunk = [a & 0x7F]
        a >>= 7
        while a:
            chunk.insert(0, 0x80 | (a & 0x7F))
            a >>= 7
        raw += bytes(chunk)
    text = gpdata.decode_oid(raw)
    assert text == ".".join(str(x) for x in [min(arcs[0] % 3, 2), arcs[1] % 40, *arcs[2:]])
