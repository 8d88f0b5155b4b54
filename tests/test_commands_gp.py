"""GlobalPlatform command builders (cardkit.commands.gp).

Expected bytes follow the command layouts of GPCS 2.3.1 §11 and the STORE DATA P1 table of GPCS 2.3
Table 11-89 (reference/globalplatform.md). The GET DATA commands match a published GlobalPlatformPro
transcript (``80CA9F7F00``, ``80CA006600``, ``80CA00E000``; djcxy.com/p/92102, a copy of a Stack Overflow
question on GP GET DATA tags).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.apdu import CommandApdu
from cardkit.commands import gp
from cardkit.errors import ApduFormatError

H = bytes.fromhex
ISD = gp.DEFAULT_ISD_AID
PKG = H("A0000000620001")
MOD = H("A000000062000101")
APP = H("A00000006200010101")


def hx(cmd: CommandApdu) -> str:
    return cmd.hex()


def test_aid_constants() -> None:
    assert gp.DEFAULT_ISD_AID == H("A000000151000000")
    assert gp.LEGACY_ISD_AID == H("A000000003000000")


def test_select_and_secure_channel_commands() -> None:
    assert hx(gp.select_isd()) == "00A4040000"
    assert hx(gp.select_isd(ISD)) == "00A4040008A00000015100000000"
    iu = gp.initialize_update(bytes(range(8)))
    assert hx(iu) == "8050000008000102030405060700"
    assert hx(gp.initialize_update(bytes(range(16)), key_version=0x30, key_id=1)).startswith("8050300110")
    ea = gp.external_authenticate_gp(b"\x11" * 8, 0x33)
    assert hx(ea) == "8482330008" + "11" * 8
    assert ea.sensitive and ea.le is None
    for level in (0x00, 0x01, 0x03, 0x10, 0x11, 0x13, 0x33):
        assert gp.external_authenticate_gp(b"\x11" * 8, level).p1 == level


@pytest.mark.parametrize("call", [
    lambda: gp.select_isd(H("A0000001")),
    lambda: gp.initialize_update(bytes(7)),
    lambda: gp.initialize_update(bytes(12)),
    lambda: gp.initialize_update(bytes(8), key_version=0x80),
    lambda: gp.external_authenticate_gp(bytes(8), 0x02),  # C-DEC without C-MAC
    lambda: gp.external_authenticate_gp(bytes(8), 0x31),  # R-ENC without C-DEC
    lambda: gp.external_authenticate_gp(bytes(8), 0x04),  # undefined bit
    lambda: gp.external_authenticate_gp(bytes(9), 0x01),
])
def test_secure_channel_rejects_bad_arguments(call: object) -> None:
    with pytest.raises(ApduFormatError):
        call()  # type: ignore[operator]


def test_registry_commands() -> None:
    assert hx(gp.get_status("apps")) == "80F24002024F0000"
    assert hx(gp.get_status("apps", next=True)) == "80F24003024F0000"
    assert hx(gp.get_status("isd", tag_list=False)) == "80F28000024F0000"
    assert hx(gp.get_status("load-files")) == "80F22002024F0000"
    assert hx(gp.get_status("load-files-modules", aid_prefix=H("A000000062"))) == "80F21002" "07" "4F05A000000062" "00"
    assert hx(gp.set_status("isd", 0x0F)) == "80F0800F"
    assert hx(gp.set_status("isd", 0x7F)) == "80F0807F"
    assert hx(gp.set_status("app", 0x83, APP)) == "80F0408309" + APP.hex().upper()
    assert hx(gp.set_status("sd-and-apps", 0x83, ISD)) == "80F0608308" + ISD.hex().upper()
    for bad in (lambda: gp.get_status("everything"), lambda: gp.set_status("isd", 0x03),  # type: ignore[arg-type]
                lambda: gp.set_status("app", 0x07), lambda: gp.set_status("app", 0x100, APP)):
        with pytest.raises(ApduFormatError):
            bad()


def test_put_key() -> None:
    fields = H("8010") + bytes(16) + H("03AABBCC")
    cmd = gp.put_key(1, 1, fields)
    assert hx(cmd) == "80D80081" + f"{len(fields) + 1:02X}" + "01" + fields.hex().upper() + "00"
    assert cmd.sensitive and cmd.name == "PUT KEY"
    assert gp.put_key(0x30, 1, fields, replace_version=0x20).p1 == 0x20
    assert gp.put_key(0x30, 1, fields, multiple=False).p2 == 0x01
    assert gp.put_key(0x30, 2, fields, more=True, replace_version=1).p1 == 0x81
    for bad in (lambda: gp.put_key(0, 1, fields), lambda: gp.put_key(0x80, 1, fields),
                lambda: gp.put_key(1, 0x80, fields), lambda: gp.put_key(1, 1, b"")):
        with pytest.raises(ApduFormatError):
            bad()


# GPCS 2.3 Table 11-89 as two-bit codes: b7-b6 encryption, b5-b4 structure.
ENCRYPTION_CODES = {"none": 0b00, "app": 0b01, "encrypted": 0b11}
STRUCTURE_CODES = {"none": 0b00, "dgi": 0b01, "ber-tlv": 0b10}


@pytest.mark.parametrize(("last", "encryption", "structure", "response"), list(itertools.product(
    (False, True), ENCRYPTION_CODES, STRUCTURE_CODES, (False, True))))
def test_store_data_p1_every_combination(last: bool, encryption: str, structure: str, response: bool) -> None:
    cmd = gp.store_data(7, H("0101020000"), last=last, encryption=encryption,  # type: ignore[arg-type]
                        structure=structure, response=response)  # type: ignore[arg-type]
    p1 = cmd.p1
    assert p1 >> 7 == int(last)  # b8
    assert (p1 >> 5) & 0b11 == ENCRYPTION_CODES[encryption]  # b7-b6
    assert (p1 >> 3) & 0b11 == STRUCTURE_CODES[structure]  # b5-b4
    assert p1 & 0b110 == 0  # b3-b2 RFU
    assert p1 & 1 == int(response)  # b1
    assert (cmd.cla, cmd.ins, cmd.p2) == (0x80, 0xE2, 7)
    assert cmd.le == (256 if response else None)
    assert cmd.sensitive


def test_store_data_known_p1_values() -> None:
    # EMV CPS: "all DGIs encrypted under the session DEK" is P1 60, E0 on the last block.
    assert gp.store_data_p1(last=False, encryption="encrypted") == 0x60
    assert gp.store_data_p1(last=True, encryption="encrypted") == 0xE0
    assert gp.store_data_p1(last=True, structure="dgi") == 0x88
    assert gp.store_data_p1(last=False, structure="ber-tlv", response=True) == 0x11
    data = gp.dgi(0x0101, H("5A0812345678"))
    assert hx(gp.store_data(0, data, last=True, structure="dgi")) == "80E28800" "09" "0101" "06" "5A0812345678"
    for bad in (lambda: gp.store_data(256, data, last=True), lambda: gp.store_data(0, b"", last=True),
                lambda: gp.store_data_p1(last=True, structure="xml"),  # type: ignore[arg-type]
                lambda: gp.store_data_p1(last=True, encryption="rot13")):  # type: ignore[arg-type]
        with pytest.raises(ApduFormatError):
            bad()


def test_dgi_lengths() -> None:
    assert gp.dgi(0x8000, bytes(16)) == H("800010") + bytes(16)
    assert gp.dgi(0x0101, bytes(254)) == H("0101FE") + bytes(254)
    assert gp.dgi(0x0101, bytes(255)) == H("0101FF00FF") + bytes(255)
    assert gp.dgi(0x0202, bytes(300)) == H("0202FF012C") + bytes(300)
    assert gp.dgi(0x9102, b"") == H("910200")
    with pytest.raises(ApduFormatError):
        gp.dgi(0x10000, b"")
    with pytest.raises(ApduFormatError):
        gp.dgi(1, bytes(65536))


@pytest.mark.parametrize("raw", ["01", "0101", "010105AA", "0101FF01", "0101FF0002AA"])
def test_parse_dgis_rejects_truncation(raw: str) -> None:
    with pytest.raises(gp.DgiError):
        gp.parse_dgis(H(raw))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=400)), max_size=5))
def test_dgi_round_trip(items: list[tuple[int, bytes]]) -> None:
    assert gp.parse_dgis(b"".join(gp.dgi(t, v) for t, v in items)) == items


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_parse_dgis_raises_only_dgi_error(data: bytes) -> None:
    try:
        gp.parse_dgis(data)
    except gp.DgiError:
        pass


def test_install_commands() -> None:
    assert hx(gp.install_for_personalization(APP)) == "80E620000F000009" + APP.hex().upper() + "00000000"
    load_cmd = gp.install_for_load(PKG, sd_aid=ISD)
    assert load_cmd.data == H("07") + PKG + H("08") + ISD + H("000000")
    assert (load_cmd.p1, load_cmd.p2, load_cmd.le) == (0x02, 0x00, 256)
    assert gp.install_for_load(PKG).data == H("07") + PKG + H("00000000")
    inst = gp.install_for_install(PKG, MOD, APP)
    assert inst.p1 == 0x0C
    assert inst.data == H("07") + PKG + H("08") + MOD + H("09") + APP + H("0100" "02C900" "00")
    inst2 = gp.install_for_install(PKG, MOD, privileges=H("800000"), app_params=H("AABB"),
                                   make_selectable=False)
    assert inst2.p1 == 0x04
    assert inst2.data == H("07") + PKG + H("08") + MOD + H("08") + MOD + H("03800000" "04C902AABB" "00")
    sel = gp.install_for_make_selectable(APP)
    assert hx(sel) == "80E608001000" "0009" + APP.hex().upper() + "01000000" "00"
    for bad in (lambda: gp.install_for_install(PKG, MOD, privileges=H("0000")),
                lambda: gp.install_for_install(PKG, MOD, privileges=b""),
                lambda: gp.install_for_load(H("A0")), lambda: gp.install_for_personalization(bytes(17))):
        with pytest.raises(ApduFormatError):
            bad()


def test_load_and_delete() -> None:
    assert hx(gp.load(0, H("C40100"), last=True)) == "80E8800003C4010000"
    assert hx(gp.load(5, H("AA"), last=False)) == "80E8000501AA00"
    blocks = gp.load_blocks(b"\x01" * 300, block_size=200)
    assert [(b.p1, b.p2, len(b.data)) for b in blocks] == [(0x00, 0, 200), (0x80, 1, 104)]
    assert blocks[0].data[:4] == H("C482012C")
    assert b"".join(b.data for b in blocks) == H("C482012C") + b"\x01" * 300
    assert hx(gp.delete(APP)) == "80E400000B4F09" + APP.hex().upper() + "00"
    assert gp.delete(PKG, related=True).p2 == 0x80
    with pytest.raises(ApduFormatError):
        gp.load(256, H("AA"), last=True)
    with pytest.raises(ApduFormatError):
        gp.load_blocks(bytes(300), block_size=1)  # 304 blocks > 256


def test_get_data_matches_published_transcript() -> None:
    assert hx(gp.get_data_gp(gp.TAG_CPLC)) == "80CA9F7F00"
    assert hx(gp.get_data_gp(gp.TAG_CARD_DATA)) == "80CA006600"
    assert hx(gp.get_data_gp(gp.TAG_KEY_INFO)) == "80CA00E000"
    assert hx(gp.get_data_gp(gp.TAG_IIN)) == "80CA004200"
    assert hx(gp.get_data_gp(gp.TAG_CIN)) == "80CA004500"
    assert hx(gp.get_data_gp(gp.TAG_SEQUENCE_COUNTER)) == "80CA00C100"
    with pytest.raises(ApduFormatError):
        gp.get_data_gp(0x10000)


def test_gp_builders_round_trip_through_the_apdu_codec() -> None:
    for cmd in (gp.select_isd(), gp.initialize_update(bytes(8)), gp.get_status("apps"),
                gp.store_data(1, bytes(300), last=True), gp.put_key(1, 1, bytes(20))):
        assert CommandApdu.from_bytes(cmd.to_bytes()) == cmd
