"""Field codecs (cardkit.profiles.codecs): SSC worked encodings, every kind, errors, round trips."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.errors import ProfileError, RecordError, TlvError
from cardkit.profiles.codecs import (
    KINDS,
    BcdCodec,
    BinaryCodec,
    Codec,
    CodeCodec,
    DateCodec,
    FileCodec,
    NumericCodec,
    TextCodec,
    ber_do,
    make_codec,
    parse_simple_tlv_record,
    simple_tlv_record,
)

# --------------------------------------------------------------------------- SSC worked encodings (ssc.md)


def test_ssc_card_number_record() -> None:
    codec = make_codec({"kind": "an", "length": 9})
    record = simple_tlv_record(0x07, codec.encode("X00000019", field="card_number"))
    assert record == bytes.fromhex("07 09 583030303030303139")
    assert parse_simple_tlv_record(record, recno=7) == (7, b"X00000019")
    assert codec.decode(parse_simple_tlv_record(record)[1]) == "X00000019"


def test_ssc_issue_date_record() -> None:
    codec = make_codec({"kind": "date", "format": "bcd"})
    assert simple_tlv_record(0x05, codec.encode("20211203")) == bytes.fromhex("05 04 20211203")
    assert simple_tlv_record(0x05, codec.encode("2021-12-03")) == bytes.fromhex("05 04 20211203")
    assert codec.decode(bytes.fromhex("20211203")) == "20211203"


def test_ssc_ethnicity_record() -> None:
    codec = make_codec({"kind": "code", "list": "ethnicity", "encoding": "cn", "length": 1})
    assert simple_tlv_record(0x0B, codec.encode("01")) == bytes.fromhex("0B 01 01")
    plain = make_codec({"kind": "cn", "length": 1})
    assert simple_tlv_record(0x0B, plain.encode("01")) == bytes.fromhex("0B 01 01")


def test_ssc_name_is_gbk_padded_with_zero_by_default() -> None:
    codec = make_codec({"kind": "an", "charset": "gbk", "length": 30})
    data = codec.encode("张三")
    assert data[:4] == bytes.fromhex("D5C5C8FD")  # GB 2312: 张 = D5C5, 三 = C8FD
    assert data[4:] == bytes(26)
    assert codec.decode(data) == "张三"


def test_ssc_birthplace_cn() -> None:
    codec = make_codec({"kind": "cn", "length": 3})
    assert codec.encode("110105") == bytes.fromhex("110105")
    assert codec.decode(bytes.fromhex("110105")) == "110105"


# --------------------------------------------------------------------------- examples of every codec

SPECS: list[dict[str, object]] = [
    {"kind": "an", "length": 9},
    {"kind": "an", "charset": "gbk", "length": 30},
    {"kind": "an", "charset": "gb18030", "max_length": 20},
    {"kind": "an", "charset": "utf-8", "length": 8, "pad": "FF"},
    {"kind": "an", "charset": "ascii", "length": 4, "align": "right", "pad": 0x30},
    {"kind": "cn", "length": 4},
    {"kind": "cn", "max_length": 10},
    {"kind": "n", "length": 6},
    {"kind": "b", "length": 16},
    {"kind": "b", "input": "base64", "max_length": 64},
    {"kind": "date"},
    {"kind": "date", "format": "ascii"},
    {"kind": "code", "list": "gender", "encoding": "an", "length": 1},
    {"kind": "code", "list": "ethnicity", "encoding": "cn", "length": 1},
    {"kind": "code", "list": "country", "encoding": "an", "length": 3},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: repr(s))
def test_examples_round_trip(spec: dict[str, object]) -> None:
    codec = make_codec(spec)
    examples = codec.examples()
    assert examples, "every codec (but file) carries examples"
    for value, encoding in examples:
        assert codec.encode(value) == encoding
        assert codec.decode(encoding) == value
        if codec.max_bytes is not None:
            assert len(encoding) <= codec.max_bytes


def test_examples_are_independent_of_encode() -> None:
    # A codec with a broken encode must disagree with its examples.
    class Broken(BcdCodec):
        def encode(self, value: str, *, field: str = "?") -> bytes:
            return super().encode(value, field=field)[::-1]

    codec = Broken(length=2)
    assert any(codec.encode(v) != e for v, e in codec.examples())


def test_every_kind_is_built() -> None:
    assert set(KINDS) == {"an", "cn", "n", "b", "date", "file", "code"}
    for kind, cls in KINDS.items():
        assert cls.kind == kind
        assert issubclass(cls, Codec)


def test_codecs_are_frozen() -> None:
    codec = TextCodec(length=3)
    with pytest.raises(AttributeError):
        codec.length = 4  # type: ignore[misc]


# --------------------------------------------------------------------------- kinds in detail


def test_an_ascii_pads_with_space() -> None:
    codec = TextCodec(length=6)
    assert codec.encode("AB") == b"AB    "
    assert codec.decode(b"AB    ") == "AB"


def test_an_right_aligned() -> None:
    codec = TextCodec(length=5, align="right", pad=0x30)
    assert codec.encode("12") == b"00012"
    assert codec.decode(b"00012") == "12"


def test_an_max_length_is_unpadded() -> None:
    codec = make_codec({"kind": "an", "charset": "utf-8", "max_length": 6})
    assert codec.encode("中") == bytes.fromhex("E4B8AD")
    with pytest.raises(RecordError, match="too long by 3 bytes"):
        codec.encode("中文字")


def test_an_too_long_reports_bytes_not_value() -> None:
    codec = make_codec({"kind": "an", "charset": "gbk", "length": 4})
    with pytest.raises(RecordError) as info:
        codec.encode("欧阳晓春", field="name")
    assert "too long by 4 bytes" in str(info.value)
    assert "欧阳" not in str(info.value)
    assert info.value.field == "name"


def test_an_unencodable_character_names_code_point() -> None:
    codec = make_codec({"kind": "an", "charset": "gbk", "length": 30})
    with pytest.raises(RecordError, match=r"U\+1F600 at position 2 is not encodable in GBK"):
        codec.encode("张\U0001f600", field="name")
    with pytest.raises(RecordError, match=r"U\+00E9 .* not encodable in ASCII"):
        TextCodec(length=8).encode("café")


def test_an_gb18030_encodes_beyond_gbk() -> None:
    ch = "\U00020000"  # CJK Extension B: not in GBK, in GB 18030 as a four-byte sequence
    with pytest.raises(RecordError):
        TextCodec(charset="gbk", length=8).encode(ch)
    codec = TextCodec(charset="gb18030", length=8)
    assert codec.decode(codec.encode(ch)) == ch


def test_an_rejects_control_characters_and_trailing_pad() -> None:
    with pytest.raises(RecordError, match="control character"):
        TextCodec(length=8).encode("A\nB")
    with pytest.raises(RecordError, match="pad byte 20"):
        TextCodec(length=8).encode("AB ")
    # Even when the value fills the field: decoding could not tell the space from padding.
    with pytest.raises(RecordError, match="pad byte 20"):
        TextCodec(length=3).encode("AB ")
    assert TextCodec(max_length=3).decode(TextCodec(max_length=3).encode("AB ")) == "AB "


def test_an_decode_errors() -> None:
    with pytest.raises(RecordError, match="expected 4 bytes, got 3"):
        TextCodec(length=4).decode(b"ABC")
    with pytest.raises(RecordError, match="not valid GBK"):
        TextCodec(charset="gbk", length=2).decode(b"\xff\xff")


def test_cn_pads_with_f_and_rejects_letters() -> None:
    codec = BcdCodec(length=4)
    assert codec.encode("12345") == bytes.fromhex("12345FFF")
    assert codec.decode(bytes.fromhex("12345FFF")) == "12345"
    with pytest.raises(RecordError, match="character 3 is not a digit"):
        codec.encode("12A4", field="x")
    with pytest.raises(RecordError, match="too long by 1 digits"):
        codec.encode("123456789")
    with pytest.raises(RecordError, match="nibble 2 is F"):
        codec.decode(bytes.fromhex("1F23FFFF"))
    assert BcdCodec(max_length=4).encode("123") == bytes.fromhex("123F")


def test_n_right_aligned_zero_padded() -> None:
    codec = NumericCodec(length=6)
    assert codec.encode("1000") == bytes.fromhex("000000001000")
    assert codec.decode(bytes.fromhex("000000001000")) == "1000"
    assert codec.encode("007") == codec.encode("7")
    with pytest.raises(RecordError, match="too long by 1 digits"):
        codec.encode("1234567890123")
    with pytest.raises(RecordError, match="nibble 12 is A"):
        codec.decode(bytes.fromhex("00000000000A"))
    with pytest.raises(RecordError, match="empty"):
        codec.encode("")


def test_b_hex_and_base64() -> None:
    codec = BinaryCodec(length=4)
    assert codec.encode("de ad BE EF") == bytes.fromhex("DEADBEEF")
    assert codec.decode(bytes.fromhex("DEADBEEF")) == "DEADBEEF"
    with pytest.raises(RecordError, match="exactly 4 bytes"):
        codec.encode("DEAD")
    with pytest.raises(RecordError, match="odd number"):
        codec.encode("DEADBEE")
    with pytest.raises(RecordError, match=r"character 3 .* not a hex digit"):
        codec.encode("DEXDBEEF")
    b64 = BinaryCodec(input="base64", max_length=8)
    assert b64.encode("3q2+7w==") == bytes.fromhex("DEADBEEF")
    assert b64.decode(bytes.fromhex("DEADBEEF")) == "3q2+7w=="
    with pytest.raises(RecordError, match="base64"):
        b64.encode("***")


def test_date_validation() -> None:
    codec = DateCodec()
    assert codec.encode("2024-02-29") == bytes.fromhex("20240229")
    with pytest.raises(RecordError, match="not a real calendar date"):
        codec.encode("20230229", field="birth_date")
    with pytest.raises(RecordError, match="YYYYMMDD or YYYY-MM-DD"):
        codec.encode("2023/02/01")
    with pytest.raises(RecordError, match="YYYYMMDD"):
        codec.encode("2023022")
    with pytest.raises(RecordError):
        codec.decode(bytes.fromhex("20231301"))
    ascii_codec = DateCodec(format="ascii")
    assert ascii_codec.encode("2021-12-03") == b"20211203"
    assert ascii_codec.decode(b"20211203") == "20211203"
    with pytest.raises(RecordError, match="expected 8 bytes"):
        ascii_codec.decode(b"2021")


def test_code_lists() -> None:
    codec = CodeCodec(list="ethnicity", encoding="cn", length=1, accept_names=True)
    assert codec.encode("汉族") == b"\x01"
    assert codec.encode("56") == b"\x56"
    with pytest.raises(RecordError, match="not a code of the 'ethnicity' list"):
        codec.encode("57")
    with pytest.raises(RecordError, match="not a code"):
        codec.decode(b"\x57")
    strict = CodeCodec(list="ethnicity", encoding="cn", length=1)
    with pytest.raises(RecordError):
        strict.encode("汉族")
    gender = make_codec({"kind": "code", "list": "gender", "encoding": "an", "length": 1})
    assert gender.encode("2") == b"2"


def test_file_codec(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + b"x" * 60)
    codec = make_codec({"kind": "file", "max_length": 100}, base_dir=tmp_path)
    assert codec.encode("photo.jpg") == photo.read_bytes()
    assert codec.decode(b"\xff\xd8") == "FFD8"
    assert codec.examples() == ()
    small = FileCodec(max_length=10, base_dir=str(tmp_path))
    with pytest.raises(RecordError, match="too long by 54 bytes"):
        small.encode("photo.jpg")
    with pytest.raises(RecordError, match="outside"):
        codec.encode("../../etc/passwd")
    with pytest.raises(RecordError, match="cannot read"):
        codec.encode("missing-110105194912310021.jpg", field="photo")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(RecordError, match="empty"):
        codec.encode("empty")


def test_file_error_does_not_echo_path(tmp_path: Path) -> None:
    codec = FileCodec(max_length=10, base_dir=str(tmp_path))
    with pytest.raises(RecordError) as info:
        codec.encode("110105194912310021.jpg")
    assert "110105194912310021" not in str(info.value)


# --------------------------------------------------------------------------- make_codec errors


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "'kind' must be one of"),
        ({"kind": "xx"}, "'kind' must be one of"),
        ({"kind": "an", "lenght": 9}, "unknown key 'lenght'"),
        ({"kind": "an"}, "needs 'length'"),
        ({"kind": "an", "length": 9, "max_length": 9}, "not both"),
        ({"kind": "an", "length": "9"}, "wrong type"),
        ({"kind": "an", "length": True}, "wrong type"),
        ({"kind": "an", "length": 0}, "1..65535"),
        ({"kind": "an", "length": 9, "charset": "latin-1"}, "'charset'"),
        ({"kind": "an", "length": 9, "pad": "2"}, "'pad'"),
        ({"kind": "an", "length": 9, "pad": 256}, "'pad'"),
        ({"kind": "an", "length": 9, "align": "center"}, "'align'"),
        ({"kind": "n"}, "'n' needs 'length'"),
        ({"kind": "b", "length": 4, "input": "octal"}, "'input'"),
        ({"kind": "date", "format": "julian"}, "'format'"),
        ({"kind": "file"}, "'file' needs 'max_length'"),
        ({"kind": "code", "list": "nope"}, "unknown code list 'nope'"),
        ({"kind": "code", "list": "country", "encoding": "cn", "length": 2}, "non-digit codes"),
        ({"kind": "code", "list": "ethnicity", "encoding": "an", "length": 1}, "longer than"),
    ],
)
def test_make_codec_rejects_bad_specs(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=message) as info:
        make_codec(spec, where="files.EF06.name")
    assert "[files.EF06.name]" in str(info.value)


def test_make_codec_accepts_type_alias() -> None:
    assert make_codec({"type": "date", "format": "bcd"}) == DateCodec()
    with pytest.raises(ProfileError, match="disagree"):
        make_codec({"type": "date", "kind": "an", "length": 1})


@pytest.mark.parametrize("table", [
    {"type": "b", "length": 16},
    {"type": "an", "charset": "ascii", "length": 12},
    {"type": "date", "format": "bcd"},
    {"type": "an", "charset": "gbk", "length": 30},
    {"type": "cn", "length": 3},
    {"type": "file", "max_length": 4096},
    {"type": "an", "charset": "gbk", "max_length": 60},
])
def test_profile_style_tables_build(table: dict[str, object]) -> None:
    # Tables in the form the SSC profile writes them (``type =``).
    codec = make_codec(table)
    assert codec.kind == table["type"]


def test_make_codec_ignores_caller_keys() -> None:
    codec = make_codec({"kind": "cn", "length": 1, "record": 11, "validate": "ethnicity"},
                       ignore=("record", "validate"))
    assert codec == BcdCodec(length=1)


# --------------------------------------------------------------------------- TLV wrappers


def test_simple_tlv_record_forms() -> None:
    assert simple_tlv_record(1, b"") == b"\x01\x00"
    long_value = bytes(300)
    encoded = simple_tlv_record(2, long_value)
    assert encoded[:4] == bytes.fromhex("02FF012C")  # ISO 7816-4: 'FF' + 2-byte length from 255 on
    assert parse_simple_tlv_record(encoded) == (2, long_value)
    for bad in (0, 255, -1, True):
        with pytest.raises(TlvError):
            simple_tlv_record(bad, b"x")


def test_parse_simple_tlv_record_errors() -> None:
    assert parse_simple_tlv_record(bytes.fromhex("0B0101FFFFFF")) == (0x0B, b"\x01")
    assert parse_simple_tlv_record(bytes.fromhex("0B0101000000")) == (0x0B, b"\x01")
    with pytest.raises(TlvError, match="expected the record number"):
        parse_simple_tlv_record(bytes.fromhex("0B0101"), recno=0x0C)
    with pytest.raises(TlvError):
        parse_simple_tlv_record(bytes.fromhex("0B05010203"))
    with pytest.raises(TlvError, match="padding"):
        parse_simple_tlv_record(bytes.fromhex("0B010112"))
    with pytest.raises(TlvError):
        parse_simple_tlv_record(b"\x0b")


def test_ber_do() -> None:
    assert ber_do(0x5F20, b"AB") == bytes.fromhex("5F20024142")
    assert ber_do(0x53, bytes(130))[:3] == bytes.fromhex("538182")


# --------------------------------------------------------------------------- properties

_gbk_text = st.text(
    alphabet=st.characters(codec="gbk", exclude_categories=("Cc", "Cs")), max_size=15
).filter(lambda s: not s.endswith("\x00"))


@settings(max_examples=150, deadline=None)
@given(_gbk_text)
def test_gbk_round_trip(value: str) -> None:
    codec = TextCodec(charset="gbk", length=30)
    try:
        data = codec.encode(value)
    except RecordError as exc:
        assert "too long" in str(exc) or "control" in str(exc)
        return
    assert len(data) == 30
    assert codec.decode(data) == value


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=20))
def test_utf8_round_trip(value: str) -> None:
    codec = TextCodec(charset="utf-8", max_length=80)
    assert codec.decode(codec.encode(value)) == value


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="0123456789", max_size=12), st.integers(min_value=1, max_value=6))
def test_cn_round_trip(value: str, length: int) -> None:
    codec = BcdCodec(length=length)
    if len(value) > 2 * length:
        with pytest.raises(RecordError, match="too long"):
            codec.encode(value)
        return
    assert codec.decode(codec.encode(value)) == value


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=10**12 - 1))
def test_n_round_trip(number: int) -> None:
    codec = NumericCodec(length=6)
    assert codec.decode(codec.encode(str(number))) == str(number)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=32))
def test_b_round_trip(data: bytes) -> None:
    assert BinaryCodec(max_length=32).encode(BinaryCodec(max_length=32).decode(data)) == data
    b64 = BinaryCodec(input="base64", max_length=32)
    assert b64.encode(b64.decode(data)) == data
    assert b64.encode(base64.b64encode(data).decode()) == data


@settings(max_examples=150, deadline=None)
@given(st.dates(min_value=dt.date(1000, 1, 1)))
def test_date_round_trip(day: dt.date) -> None:
    text = day.strftime("%Y%m%d")
    for codec in (DateCodec(), DateCodec(format="ascii")):
        assert codec.decode(codec.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_decoders_raise_only_record_errors(data: bytes) -> None:
    codecs: list[Codec] = [make_codec(spec) for spec in SPECS]
    for codec in codecs:
        try:
            codec.decode(data)
        except RecordError:
            pass
    try:
        parse_simple_tlv_record(data)
    except TlvError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=254), st.binary(max_size=300))
def test_simple_tlv_round_trip(recno: int, value: bytes) -> None:
    assert parse_simple_tlv_record(simple_tlv_record(recno, value), recno=recno) == (recno, value)
