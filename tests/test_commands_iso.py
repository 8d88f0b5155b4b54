"""ISO 7816-4/-8/-9 command builders and FCP helpers (cardkit.commands.iso).

Expected bytes are written out from the command layouts of ISO/IEC 7816-4:2020 §11 (CLA INS P1 P2 Lc data Le).
Published vectors: the SSSE select command of reference/ssc.md, and the nPA EF.DIR FCP
``621A80020100C502005A82010183022F008801F08A0105A1038B0103`` (as used in the open-ecard test suite).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.apdu import CommandApdu
from cardkit.commands import iso
from cardkit.errors import ApduFormatError, ParseError, TlvError

H = bytes.fromhex


def hx(cmd: CommandApdu) -> str:
    return cmd.hex()


# ------------------------------------------------------------------------------------------ selection


@pytest.mark.parametrize(("cmd", "expected"), [
    (iso.select_mf(), "00A40004023F0000"),
    (iso.select_mf(p2_fci="none"), "00A4000C023F00"),
    (iso.select_fid(H("2F00")), "00A40004022F0000"),
    (iso.select_fid(H("2F00"), p2_fci="fci", first_next="next"), "00A40002022F0000"),
    (iso.select_fid(H("2F00"), p2_fci="fmd", first_next="previous"), "00A4000B022F0000"),
    (iso.select_child_df(H("DF01")), "00A4010402DF0100"),
    (iso.select_child_ef(H("EF05"), p2_fci="none"), "00A4020C02EF05"),
    (iso.select_parent(), "00A4030400"),
    (iso.select_aid(H("A000000151000000")), "00A4040008A00000015100000000"),
    (iso.select_aid(H("A000000151000000"), next=True), "00A4040208A00000015100000000"),
    (iso.select_aid(H("A0000001"), partial=True, p2_fci="none"), "00A4040C04A0000001"),
    (iso.select_path(H("3F00DF01EF05")), "00A4080404DF01EF0500"),
    (iso.select_path(H("DF01EF05")), "00A4080404DF01EF0500"),
    (iso.select_path(H("EF05"), from_mf=False, p2_fci="none"), "00A4090C02EF05"),
])
def test_select_bytes(cmd: CommandApdu, expected: str) -> None:
    assert hx(cmd) == expected
    assert cmd.name == "SELECT"


def test_select_ssse_matches_published_reader_command() -> None:
    # reference/ssc.md: readers select SSSE with 00A404000F7378312E73682EC9E7BBE1B1A3D5CF (no Le).
    name = "sx1.sh.社会保障".encode("gbk")
    assert hx(iso.select_aid(name, p2_fci="fci")) == "00A404000F7378312E73682EC9E7BBE1B1A3D5CF00"
    assert hx(iso.select_aid(name, p2_fci="none")) == "00A4040C0F7378312E73682EC9E7BBE1B1A3D5CF"


@pytest.mark.parametrize("call", [
    lambda: iso.select_fid(H("3F")),
    lambda: iso.select_fid(H("3F0001")),
    lambda: iso.select_fid(H("FFFF")),
    lambda: iso.select_fid(H("3FFF")),
    lambda: iso.select_fid("2F00"),  # type: ignore[arg-type]
    lambda: iso.select_fid(H("2F00"), p2_fci="xml"),  # type: ignore[arg-type]
    lambda: iso.select_fid(H("2F00"), first_next="second"),  # type: ignore[arg-type]
    lambda: iso.select_aid(H("A0000001")),  # 4 bytes: not an AID
    lambda: iso.select_aid(bytes(17)),
    lambda: iso.select_path(H("3F00")),
    lambda: iso.select_path(H("DF01EF")),
    lambda: iso.select_path(H("DF01FFFF")),
    lambda: iso.select_path(b""),
])
def test_select_rejects_bad_arguments(call: object) -> None:
    with pytest.raises(ApduFormatError):
        call()  # type: ignore[operator]


def test_manage_channel() -> None:
    assert hx(iso.manage_channel("open")) == "0070000001"
    assert hx(iso.manage_channel("open", 2)) == "00700002"
    assert hx(iso.manage_channel("close", 2)) == "00708002"
    for bad in (lambda: iso.manage_channel("close"), lambda: iso.manage_channel("open", 20),
                lambda: iso.manage_channel("open", 0), lambda: iso.manage_channel("reopen", 1)):  # type: ignore[arg-type]
        with pytest.raises(ApduFormatError):
            bad()


# --------------------------------------------------------------------------------------- data units


@pytest.mark.parametrize(("cmd", "expected"), [
    (iso.read_binary(), "00B0000000"),
    (iso.read_binary(0x1234, 16), "00B0123410"),
    (iso.read_binary(0x7FFF, 1), "00B07FFF01"),
    (iso.read_binary(5, 10, sfi=3), "00B083050A"),
    (iso.read_binary(0, 256, sfi=30), "00B09E0000"),
    (iso.read_binary(0, 1000), "00B0000000" + "03E8"),  # extended Le: 00 03E8
    (iso.read_binary_odd(0x10000, fid=H("0102")), "00B10102" "05" "5403010000" "00"),
    (iso.read_binary_odd(0, 8), "00B1000003540100" + "08"),
    (iso.read_binary_odd(0x8000, 8, sfi=1), "00B100010454028000" + "08"),
    (iso.update_binary(H("0102"), 2), "00D60002020102"),
    (iso.update_binary(H("AA"), 0x10, sfi=2), "00D6821001AA"),
    (iso.write_binary(H("0102"), 0x0100), "00D00100020102"),
    (iso.erase_binary(), "000E0000"),
    (iso.erase_binary(4, end=10), "000E000402000A"),
])
def test_binary_bytes(cmd: CommandApdu, expected: str) -> None:
    assert hx(cmd) == expected


@pytest.mark.parametrize("call", [
    lambda: iso.read_binary(0x8000),
    lambda: iso.read_binary(-1),
    lambda: iso.read_binary(256, sfi=1),
    lambda: iso.read_binary(0, sfi=0),
    lambda: iso.read_binary(0, sfi=31),
    lambda: iso.read_binary(0, 0),
    lambda: iso.read_binary(0, 65537),
    lambda: iso.read_binary(True),  # bools are not offsets
    lambda: iso.read_binary_odd(0, fid=H("0102"), sfi=1),
    lambda: iso.update_binary(b""),
    lambda: iso.update_binary(H("00"), sfi=31),
    lambda: iso.erase_binary(10, end=10),
])
def test_binary_rejects_bad_arguments(call: object) -> None:
    with pytest.raises(ApduFormatError):
        call()  # type: ignore[operator]


# ------------------------------------------------------------------------------------------ records


@pytest.mark.parametrize(("cmd", "expected"), [
    # reference/ssc.md: READ RECORD 00 B2 <rec> 04 and UPDATE RECORD 00 DC <rec> 04 on the current EF.
    (iso.read_record(7), "00B2070400"),
    (iso.read_record(7, sfi=4), "00B2072400"),
    (iso.read_record(1, mode="all-from", sfi=1), "00B2010D00"),
    (iso.read_record(3, mode="all-to"), "00B2030600"),
    (iso.read_record(0, mode="next"), "00B2000200"),
    (iso.read_record(0, mode="previous", sfi=2), "00B2001300"),
    (iso.read_record(0x41, mode="first", le=8), "00B2410008"),
    (iso.read_record(0, mode="last"), "00B2000100"),
    (iso.update_record(7, H("0709583030303030303139")), "00DC07040B0709583030303030303139"),
    (iso.update_record(1, H("AA"), sfi=30), "00DC01F401AA"),
    (iso.write_record(2, H("AA")), "00D2020401AA"),
    (iso.append_record(H("0102")), "00E20000020102"),
    (iso.append_record(H("0102"), sfi=2), "00E20010020102"),
    (iso.search_record(b"AB", sfi=1), "00A2010C02414200"),
    (iso.search_record(b"AB", start=5, backward=True), "00A2050502414200"),
])
def test_record_bytes(cmd: CommandApdu, expected: str) -> None:
    assert hx(cmd) == expected


@pytest.mark.parametrize("call", [
    lambda: iso.read_record(0),
    lambda: iso.read_record(255),
    lambda: iso.read_record(0, mode="all-from"),
    lambda: iso.read_record(1, mode="sideways"),  # type: ignore[arg-type]
    lambda: iso.read_record(255, mode="next"),
    lambda: iso.read_record(1, sfi=31),
    lambda: iso.update_record(0, H("00")),
    lambda: iso.update_record(1, b""),
    lambda: iso.append_record(b""),
    lambda: iso.search_record(b""),
])
def test_record_rejects_bad_arguments(call: object) -> None:
    with pytest.raises(ApduFormatError):
        call()  # type: ignore[operator]


# --------------------------------------------------------------------------------- data objects, auth


def test_data_object_bytes() -> None:
    assert hx(iso.get_data(0x9F7F)) == "00CA9F7F00"
    assert hx(iso.get_data(0x42, 16)) == "00CA004210"
    assert hx(iso.put_data(0x5F50, b"x")) == "00DA5F500178"
    assert hx(iso.put_data(0x5F50, b"")) == "00DA5F50"
    for bad in (lambda: iso.get_data(0), lambda: iso.get_data(0x10000), lambda: iso.put_data(0x5F50, "x")):  # type: ignore[arg-type]
        with pytest.raises(ApduFormatError):
            bad()


def test_pin_commands_bytes_and_sensitivity() -> None:
    v = iso.verify(0x80, b"123456")
    assert hx(v) == "0020008006313233343536"
    assert v.sensitive and v.name == "VERIFY"
    assert hx(iso.verify(0x00, None)) == "00200000"
    assert hx(iso.change_reference_data(0, H("1234"), H("5678"))) == "002400000412345678"
    assert hx(iso.change_reference_data(0x81, None, H("5678"))) == "00240181025678"
    assert iso.change_reference_data(0, None, H("00")).sensitive
    assert hx(iso.reset_retry_counter(1, H("1111"), H("2222"))) == "002C00010411112222"
    assert hx(iso.reset_retry_counter(1, H("1111"), None)) == "002C0101021111"
    assert hx(iso.reset_retry_counter(1, None, H("2222"))) == "002C0201022222"
    assert hx(iso.reset_retry_counter(1, None, None)) == "002C0301"
    assert iso.reset_retry_counter(1, None, None).sensitive


def test_pin_errors_never_show_the_pin() -> None:
    pin = b"987654" * 50  # 300 bytes: too long
    with pytest.raises(ApduFormatError) as info:
        iso.verify(0x80, pin)
    assert "987654" not in str(info.value) and pin.hex() not in str(info.value)
    for bad in (lambda: iso.verify(0x20, b"1234"), lambda: iso.verify(0x100, b"1234"),
                lambda: iso.verify(0, b""), lambda: iso.change_reference_data(0, b"", b"12")):
        with pytest.raises(ApduFormatError):
            bad()


def test_authentication_bytes() -> None:
    challenge = bytes(range(8))
    assert hx(iso.get_challenge()) == "0084000008"
    assert hx(iso.get_challenge(16)) == "0084000010"
    assert hx(iso.internal_authenticate(challenge)) == "0088000008" "0001020304050607" "00"
    ea = iso.external_authenticate(b"\xaa" * 8, alg=0x01, ref=0x81)
    assert hx(ea) == "0082018108" + "AA" * 8
    assert ea.sensitive
    assert hx(iso.external_authenticate(None)) == "00820000"
    # ICAO 9303 BAC: MUTUAL AUTHENTICATE with 40 bytes of data and Le 28.
    assert hx(iso.mutual_authenticate(bytes(40), le=40)) == "0082000028" + "00" * 40 + "28"
    assert hx(iso.general_authenticate(H("7C00"), chained=True)) == "10860000027C0000"
    assert hx(iso.get_response(0x10)) == "00C0000010"
    for bad in (lambda: iso.get_challenge(0), lambda: iso.get_challenge(257), lambda: iso.get_response(0),
                lambda: iso.internal_authenticate(b""), lambda: iso.internal_authenticate(challenge, alg=256)):
        with pytest.raises(ApduFormatError):
            bad()


def test_security_environment_and_pso() -> None:
    crt = H("800102840101")
    assert hx(iso.mse_set(0xB6, crt)) == "002241B606800102840101"
    assert hx(iso.mse_set(0xA4, crt, compute=False, verify=True)) == "002281A406800102840101"
    assert hx(iso.mse_set(0xB8, crt, compute=True, verify=True)) == "0022C1B806800102840101"
    assert hx(iso.mse_set(0xB4, b"", compute=False, sm_command=True, sm_response=True)) == "002231B4"
    assert hx(iso.mse_restore(1)) == "0022F301"
    assert hx(iso.pso("compute-signature", H("0102"))) == "002A9E9A02010200"
    assert hx(iso.pso("verify-certificate", H("7F2100"))) == "002A00BE037F2100"
    assert hx(iso.pso("compute-checksum", H("01"))) == "002A8E80010100"
    assert hx(iso.pso("verify-checksum", H("01"))) == "002A00A20101"
    assert hx(iso.pso("verify-signature", H("01"))) == "002A00A80101"
    assert hx(iso.pso("encipher", H("01"))) == "002A8680010100"
    assert hx(iso.pso("hash", H("01"))) == "002A9080010100"
    dec = iso.pso("decipher", H("00AABB"))
    assert hx(dec) == "002A80860300AABB00" and dec.sensitive
    for bad in (lambda: iso.mse_set(0x99, crt), lambda: iso.mse_set(0xB6, crt, compute=False),
                lambda: iso.mse_set(0xB6, H("8005")), lambda: iso.mse_restore(0xFF),
                lambda: iso.pso("verify-signature"), lambda: iso.pso("sign-it", b"1")):  # type: ignore[arg-type]
        with pytest.raises((ApduFormatError, TlvError)):
            bad()


# ---------------------------------------------------------------------------------- file life cycle


def test_file_management_bytes() -> None:
    fcp = iso.fcp_template(fid=H("EF05"), descriptor=iso.file_descriptor("linear-variable", 0x30))
    assert hx(iso.create_file(fcp)) == "00E00000" + f"{len(fcp):02X}" + fcp.hex().upper()
    assert hx(iso.delete_file()) == "00E40000"
    assert hx(iso.delete_file(H("EF01"))) == "00E4000002EF01"
    assert hx(iso.activate_file(H("EF01"))) == "0044000002EF01"
    assert hx(iso.deactivate_file()) == "00040000"
    assert hx(iso.terminate_df()) == "00E60000"
    assert hx(iso.terminate_ef(H("EF01"))) == "00E8000002EF01"
    assert hx(iso.terminate_card_usage()) == "00FE0000"
    with pytest.raises(ApduFormatError):
        iso.create_file(H("6F00"))
    with pytest.raises(TlvError):
        iso.create_file(H("620501"))
    with pytest.raises(ApduFormatError):
        iso.delete_file(H("EF"))


def test_builders_round_trip_through_the_apdu_codec() -> None:
    cmds = [iso.select_mf(), iso.read_binary(3, 1000), iso.update_record(1, bytes(300)), iso.verify(1, None),
            iso.mutual_authenticate(bytes(40)), iso.search_record(b"x", le=65536), iso.manage_channel("open")]
    for cmd in cmds:
        assert CommandApdu.from_bytes(cmd.to_bytes()) == cmd


# ---------------------------------------------------------------------------------------------- FCP


def test_file_descriptor_values() -> None:
    assert iso.file_descriptor("df") == H("38")
    assert iso.file_descriptor("df", shareable=True) == H("78")
    assert iso.file_descriptor("transparent") == H("0121")
    assert iso.file_descriptor("linear-fixed", 0x20, 10) == H("022100200A")
    assert iso.file_descriptor("linear-fixed", 0x20) == H("022120")
    assert iso.file_descriptor("linear-variable", 300) == H("0421012C")
    assert iso.file_descriptor("cyclic", 5, data_coding=0x01) == H("060105")
    for bad in (lambda: iso.file_descriptor("transparent", 4), lambda: iso.file_descriptor("linear-fixed"),
                lambda: iso.file_descriptor("df", record_count=1), lambda: iso.file_descriptor("tree"),  # type: ignore[arg-type]
                lambda: iso.file_descriptor("cyclic", 0), lambda: iso.file_descriptor("cyclic", 4, 255)):
        with pytest.raises(ApduFormatError):
            bad()


def test_fcp_template_bytes() -> None:
    fcp = iso.fcp_template(fid=H("2F00"), sfi=0x1E, descriptor=H("01"), size=256, lcs="operational-activated")
    assert fcp == H("6211" "80020100" "820101" "83022F00" "8801F0" "8A0105")
    df = iso.fcp_template(fid=H("DF01"), df_name=H("A000000151"), descriptor=iso.file_descriptor("df"),
                          lcs=0x03, security=H("8C03031111"))
    assert df == H("6216" "820138" "8302DF01" "8405A000000151" "8A0103" "8C03031111")
    assert iso.fcp_template(descriptor=H("01"), sfi=0) == H("6205" "820101" "8800")
    for bad in (lambda: iso.fcp_template(descriptor=b""), lambda: iso.fcp_template(descriptor=H("01"), sfi=31),
                lambda: iso.fcp_template(descriptor=H("01"), lcs="alive"),  # type: ignore[arg-type]
                lambda: iso.fcp_template(descriptor=H("01"), security=H("8301AA")),
                lambda: iso.fcp_template(descriptor=H("01"), df_name=bytes(17))):
        with pytest.raises(ApduFormatError):
            bad()


def test_parse_fcp_published_npa_ef_dir() -> None:
    fcp = iso.parse_fcp(H("621A80020100C502005A82010183022F008801F08A0105A1038B0103"))
    assert fcp.size == 256
    assert fcp.structure == "transparent" and not fcp.is_df and fcp.shareable is False
    assert fcp.fid == H("2F00")
    assert fcp.sfi == 0x1E
    assert fcp.lcs == "operational-activated" and fcp.lcs_byte == 0x05
    assert (0xC5, H("005A")) in fcp.tags and (0xA1, H("8B0103")) in fcp.tags


def test_parse_fcp_variants() -> None:
    rec = iso.parse_fcp(H("62 0B 82 05 04 00 00 40 00 83 02 2F 00".replace(" ", "")))
    assert (rec.structure, rec.record_size, rec.record_count) == ("linear-variable", 0x40, 0)
    tlv_rec = iso.parse_fcp(H("6203820103"))
    assert tlv_rec.structure == "linear-fixed" and tlv_rec.tlv_records
    fci = iso.parse_fcp(H("6F07" "8202" "3800" "8A01" "0C"))
    assert fci.is_df and fci.lcs == "termination"
    assert iso.parse_fcp(H("6203820139")).structure == "ber-tlv"
    assert iso.parse_fcp(H("62038A0104")).lcs == "operational-deactivated"
    assert iso.parse_fcp(H("62038A0110")).lcs == "proprietary"
    assert iso.parse_fcp(H("6202" "8800")).sfi == 0
    assert iso.parse_fcp(H("62038201" "81")).structure == "proprietary"


@pytest.mark.parametrize(("raw", "error"), [
    ("6203830100", iso.FcpError),  # 1-byte FID
    ("6205880201", TlvError),  # truncated
    ("620488020808", iso.FcpError),  # 2-byte SFI object
    ("6200" "6200", TlvError),  # two templates
    ("8302" "2F00", iso.FcpError),  # not a template
    ("62028000", iso.FcpError),  # empty size
    ("62028200", iso.FcpError),  # empty descriptor
])
def test_parse_fcp_rejects_malformed(raw: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        iso.parse_fcp(H(raw))


structures = st.sampled_from(["transparent", "linear-fixed", "linear-variable", "cyclic", "df"])
fids = st.binary(min_size=2, max_size=2).filter(lambda b: b not in (H("3FFF"), H("FFFF")))


@settings(max_examples=150, deadline=None)
@given(structure=structures, fid=st.none() | fids, sfi=st.none() | st.integers(1, 30),
       size=st.none() | st.integers(0, 0xFFFFFF), lcs=st.none() | st.sampled_from(sorted(iso.LCS_BYTES)),
       record_size=st.integers(1, 0x7FFF), record_count=st.none() | st.integers(1, 254),
       df_name=st.none() | st.binary(min_size=1, max_size=16), shareable=st.booleans())
def test_fcp_build_parse_round_trip(structure: str, fid: bytes | None, sfi: int | None, size: int | None,
                                    lcs: str | None, record_size: int, record_count: int | None,
                                    df_name: bytes | None, shareable: bool) -> None:
    records = structure not in ("transparent", "df")
    descriptor = iso.file_descriptor(structure, record_size if records else None,  # type: ignore[arg-type]
                                     record_count if records else None, shareable=shareable)
    raw = iso.fcp_template(fid=fid, df_name=df_name, sfi=sfi, descriptor=descriptor, size=size,
                           lcs=lcs)  # type: ignore[arg-type]
    fcp = iso.parse_fcp(raw)
    assert (fcp.fid, fcp.df_name, fcp.sfi, fcp.size, fcp.lcs) == (fid, df_name, sfi, size, lcs)
    assert fcp.structure == structure and fcp.is_df == (structure == "df") and fcp.shareable == shareable
    assert fcp.descriptor == descriptor
    if records:
        assert fcp.record_size == record_size
        assert fcp.record_count == record_count
    else:
        assert fcp.record_size is None and fcp.record_count is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_parse_fcp_raises_only_parse_errors(data: bytes) -> None:
    for candidate in (data, b"\x62" + bytes([len(data)]) + data if len(data) < 128 else data):
        try:
            iso.parse_fcp(candidate)
        except ParseError:
            pass
