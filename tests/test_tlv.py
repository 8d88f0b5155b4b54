"""Tests for cardkit.tlv (BER-TLV, SIMPLE-TLV, COMPACT-TLV) and cardkit.tags."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit import tags
from cardkit.errors import CardkitError, TlvError
from cardkit.tlv import (
    Tlv,
    ber_build,
    ber_decode,
    ber_decode_one,
    ber_encode,
    ber_find,
    ber_to_dict,
    ber_walk,
    compact_decode,
    compact_encode,
    encode_length,
    is_constructed,
    pretty,
    simple_decode,
    simple_encode,
    tag_bytes,
)

H = bytes.fromhex

# Responses of a real GlobalPlatform 2.1.1 card as printed by GlobalPlatformPro in a public Q&A
# (http://djcxy.com/p/92102.html): SELECT ISD FCI, GET DATA 66 (card data), GET DATA E0 (key info),
# GET DATA 9F7F (CPLC), with the tool's own decoding of each.
REAL_FCI = H("6F108408A000000003000000A5049F6501FF")
REAL_CARD_DATA = H(
    "664C734A06072A864886FC6B01600C060A2A864886FC6B02020101630906072A864886FC6B03640B06092A864886FC6B04"
    "0215650B06092B8510864864020103660C060A2B060104012A026E0102"
)
REAL_KEY_INFO = H("E012C00401018010C00402018010C00403018010")
REAL_CPLC = H(
    "9F7F2A4250010C425102902610116000099A5A0AF9425211694253117E00000000000000000000000000000000"
)


# ------------------------------------------------------------------------------------- real data


def test_real_fci() -> None:
    [fci] = ber_decode(REAL_FCI)
    assert fci.tag == 0x6F and fci.constructed
    assert fci.find(0x84) == Tlv(0x84, H("A000000003000000"))
    a5 = fci.find(0xA5)
    assert a5 is not None and a5.find(0x9F65) == Tlv(0x9F65, b"\xff")
    assert fci.encode() == REAL_FCI


def test_real_card_data() -> None:
    [card_data] = ber_decode(REAL_CARD_DATA)
    recognition = card_data.find(0x73)
    assert recognition is not None
    assert [c.tag for c in recognition.children] == [0x06, 0x60, 0x63, 0x64, 0x65, 0x66]
    # GP card recognition OID 1.2.840.114283.1
    assert recognition.children[0].value == H("2A864886FC6B01")
    # '64': SCP02 with i=15 (the tool printed SCP_02_15): OID ...114283.4.2.21
    scp = ber_find(REAL_CARD_DATA, 0x64)
    assert scp is not None and scp.children[0].value.endswith(b"\x02\x15")
    # GP version 2.1.1 under '60'
    oid = ber_find(REAL_CARD_DATA, 0x60)
    assert oid is not None and oid.children[0].value[-3:] == b"\x02\x01\x01"
    assert card_data.encode() == REAL_CARD_DATA


def test_real_key_information() -> None:
    [kit] = ber_decode(REAL_KEY_INFO)
    assert [c.value for c in kit.find_all(0xC0)] == [H("01018010"), H("02018010"), H("03018010")]


def test_real_cplc() -> None:
    obj, used = ber_decode_one(REAL_CPLC)
    assert used == len(REAL_CPLC)
    assert obj.tag == 0x9F7F and len(obj.value) == 42
    assert obj.value[10:12] == H("1160")  # IC fabrication date, as decoded by the tool
    assert obj.value[12:16] == H("00099A5A")  # IC serial number


# ------------------------------------------------------------------------------------------ tags


@pytest.mark.parametrize(("tag", "raw"), [
    (0x62, b"\x62"), (0x9F7F, b"\x9f\x7f"), (0x5F1F, b"\x5f\x1f"), (0x7F8101, b"\x7f\x81\x01"),
    (0xBF0C, b"\xbf\x0c"), (0xFF21, b"\xff\x21"),
])
def test_tag_bytes(tag: int, raw: bytes) -> None:
    assert tag_bytes(tag) == raw


@pytest.mark.parametrize("tag", [0, -1, 0x1F, 0x9F, 0x5F80, 0x5F8180, 0x123456, 0x1F818101])
def test_tag_bytes_rejects(tag: int) -> None:
    with pytest.raises(TlvError):
        tag_bytes(tag)


def test_is_constructed() -> None:
    assert is_constructed(0x62) and is_constructed(0x7F49) and is_constructed(0xE0)
    assert not is_constructed(0x80) and not is_constructed(0x5F1F) and not is_constructed(0x9F7F)


# --------------------------------------------------------------------------------------- lengths


@pytest.mark.parametrize(("n", "raw"), [
    (0, "00"), (127, "7F"), (128, "8180"), (255, "81FF"), (256, "820100"), (65535, "82FFFF"),
    (65536, "83010000"), (0xFFFFFF, "83FFFFFF"), (0x1000000, "8401000000"), (0xFFFFFFFF, "84FFFFFFFF"),
])
def test_encode_length(n: int, raw: str) -> None:
    assert encode_length(n) == H(raw)


@pytest.mark.parametrize("n", [-1, 0x1_0000_0000])
def test_encode_length_rejects(n: int) -> None:
    with pytest.raises(TlvError):
        encode_length(n)


@pytest.mark.parametrize("n", [127, 128, 255, 256, 65535, 65536])
def test_length_boundaries_round_trip(n: int) -> None:
    value = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    encoded = ber_encode(0x53, value)
    assert len(encoded) == 1 + len(encode_length(n)) + n
    assert ber_decode(encoded) == [Tlv(0x53, value)]


def test_non_minimal_length_accepted() -> None:
    assert ber_decode(H("5A8103112233")) == [Tlv(0x5A, H("112233"))]
    assert ber_decode(H("5A840000000111")) == [Tlv(0x5A, H("11"))]


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("data", "offset", "words"), [
    ("3080020101", 1, "indefinite"),                 # indefinite length
    ("5A850000000001", 1, "length bytes"),           # 5 length bytes
    ("9F", 0, "truncated tag"),
    ("5F81", 0, "truncated tag"),
    ("1F81818101", 0, "longer than 3"),              # 4-byte tag
    ("9F7F", 2, "no length byte"),
    ("9F7F8201", 2, "truncated length"),
    ("9F7F820100", 5, "needs 256 bytes, only 0"),
    ("5A05010203", 2, "needs 5 bytes, only 3"),
    ("5A0111" + "5A0322", 5, "needs 3 bytes, only 1"),  # second object truncated
    ("005A0111", 0, "'00'"),
])
def test_decode_errors(data: str, offset: int, words: str) -> None:
    with pytest.raises(TlvError) as info:
        ber_decode(H(data))
    assert info.value.offset == offset
    assert words in str(info.value)


def test_errors_are_parse_errors() -> None:
    with pytest.raises(ValueError):
        ber_decode(H("5A05"))
    with pytest.raises(CardkitError):
        ber_decode(H("5A05"))


def test_padding() -> None:
    data = H("00005A0111FFFF500141FF00")
    assert ber_decode(data, allow_padding=True) == [Tlv(0x5A, b"\x11"), Tlv(0x50, b"A")]
    with pytest.raises(TlvError) as info:
        ber_decode(data)
    assert info.value.offset == 0
    # Without padding, 'FF' starts a private-class tag (GP uses FF21, FF40).
    assert ber_decode(H("FF2100")) == [Tlv(0xFF21, b"")]
    assert ber_decode(H("FF2100"), allow_padding=True) == [Tlv(0x21, b"")]


def test_nested_error_offsets() -> None:
    data = H("70045A051122")  # inner 5A announces 5 bytes, 2 remain, at absolute offset 4
    [outer] = ber_decode(data)
    with pytest.raises(TlvError) as relative:
        _ = outer.children
    assert relative.value.offset == 2 and "tag 70" in str(relative.value)
    with pytest.raises(TlvError) as absolute:
        list(ber_walk(data))
    assert absolute.value.offset == 4
    with pytest.raises(TlvError) as pretty_error:
        pretty(data)
    assert pretty_error.value.offset == 4


# ------------------------------------------------------------------------------------ Tlv and API


def test_tlv_api() -> None:
    t = Tlv(0x62, bytearray(H("8002001082010183023F00")))  # type: ignore[arg-type]
    assert isinstance(t.value, bytes)
    assert [c.tag for c in t.children] == [0x80, 0x82, 0x83]
    assert t.find(0x83) == Tlv(0x83, H("3F00"))
    assert t.find(0x84) is None
    assert t.encode() == H("620B8002001082010183023F00")
    with pytest.raises(TlvError, match="primitive"):
        _ = Tlv(0x80, b"\x00").children
    with pytest.raises(TlvError):
        Tlv(0x9F, b"")
    with pytest.raises(TlvError):
        Tlv(0x80, "text")  # type: ignore[arg-type]
    assert repr(Tlv(0x9F7F, H("0102"))) == "Tlv(0x9F7F, 0102)"


def test_ber_build() -> None:
    built = ber_build(0x62, [Tlv(0x80, H("0010")), ber_encode(0x82, b"\x01")])
    assert built == H("6207800200108201" "01")
    assert Tlv.build(0x62, [Tlv(0x83, H("3F00"))]).encode() == H("62048302" "3F00")
    with pytest.raises(TlvError, match="primitive"):
        ber_build(0x80, [Tlv(0x81, b"")])
    with pytest.raises(TlvError, match="not BER-TLV"):
        ber_build(0x62, [H("8005")])
    assert ber_build(0x7F49, []) == H("7F4900")


def test_find_and_dict() -> None:
    data = H("6F09" "8402A0A1" "A503" "500141") + H("5A0122") + H("5A0133")
    found = ber_find(data, 0x50)
    assert found == Tlv(0x50, b"A")
    assert ber_find(data, 0x50, recursive=False) is None
    assert ber_find(data, 0x5A, recursive=False) == Tlv(0x5A, b"\x22")
    assert ber_find(ber_decode(data), 0x84) == Tlv(0x84, H("A0A1"))
    assert ber_to_dict(data) == {0x6F: H("8402A0A1A503500141"), 0x5A: b"\x22"}
    assert [(d, t.tag) for d, t in ber_walk(data)] == [(0, 0x6F), (1, 0x84), (1, 0xA5), (2, 0x50),
                                                       (0, 0x5A), (0, 0x5A)]


def test_decode_one_leaves_trailing() -> None:
    obj, used = ber_decode_one(H("5A0111" "9000"))
    assert obj == Tlv(0x5A, b"\x11") and used == 3
    with pytest.raises(TlvError):
        ber_decode_one(b"")


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(TlvError):
        ber_decode("5A0111")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ SIMPLE-TLV


@pytest.mark.parametrize(("n", "header"), [(0, "0100"), (254, "01FE"), (255, "01FF00FF"),
                                           (256, "01FF0100"), (65535, "01FFFFFF")])
def test_simple_lengths(n: int, header: str) -> None:
    encoded = simple_encode(1, bytes(n))
    assert encoded[: len(header) // 2] == H(header)
    assert simple_decode(encoded) == [(1, bytes(n))]


def test_simple_misc() -> None:
    # A social-security-card record (tag = record number; reference/ssc.md worked encoding).
    assert simple_encode(7, b"X00000019") == H("0709583030303030303139")
    assert simple_decode(H("0709583030303030303139" "0B0101")) == [(7, b"X00000019"), (0x0B, b"\x01")]
    for bad in (0, 0xFF, 256):
        with pytest.raises(TlvError):
            simple_encode(bad, b"")
    with pytest.raises(TlvError):
        simple_encode(1, bytes(65536))
    for data, offset in (("0005", 0), ("FF00", 0), ("01", 1), ("01FF00", 1), ("010300", 2)):
        with pytest.raises(TlvError) as info:
            simple_decode(H(data))
        assert info.value.offset == offset


# ----------------------------------------------------------------------------------- COMPACT-TLV


def test_compact() -> None:
    body = H("5400BF7C7A73F621C0829000")  # cardkit virtual card historical bytes after '80'
    assert compact_decode(body) == [(5, H("00BF7C7A")), (7, H("F621C0")), (8, H("9000"))]
    assert b"".join(compact_encode(t, v) for t, v in compact_decode(body)) == body
    assert compact_encode(0xF, b"") == b"\xf0"
    with pytest.raises(TlvError):
        compact_encode(16, b"")
    with pytest.raises(TlvError):
        compact_encode(1, bytes(16))
    with pytest.raises(TlvError) as info:
        compact_decode(H("5400BF7C7A7300"))
    assert info.value.offset == 5


# ---------------------------------------------------------------------------------- pretty, tags


def test_pretty_fci() -> None:
    text = pretty(REAL_FCI)
    lines = text.splitlines()
    assert lines[0] == "6F FCI template (16)"
    assert lines[1] == "  84 DF name (8): A0 00 00 00 03 00 00 00"
    assert lines[2].startswith("  A5 ")
    assert lines[3] == "    9F65 Maximum length of data field in command message (1): FF"
    assert pretty(REAL_FCI, names=False, indent=1).splitlines()[1] == "    84 (8): A0 00 00 00 03 00 00 00"


def test_pretty_ascii_and_contexts() -> None:
    assert pretty(H("500456495341")) == '50 Application label (4): 56 49 53 41  "VISA"'
    assert "File descriptor" in pretty(H("62038201" "38"))
    sm = pretty(H("8709" "01" "1122334455667788" "99029000" "8E08" "1122334455667788"), context="sm")
    assert "SM: cryptographic checksum" in sm and "SM: processing status" in sm
    assert "padding-content indicator" in sm
    assert "Application priority indicator" in pretty(H("870101"), context="emv")
    fcp = pretty(H("620B" "80020010" "AB05" "800101" "9000"))  # FCP with an expanded-format attribute
    assert "Number of data bytes" in fcp and "Access mode byte" in fcp and "always" in fcp
    with pytest.raises(tags.UnknownTagContextError):
        pretty(H("870101"), context="nope")


def test_tag_names() -> None:
    assert tags.name(0x80, "fcp") != tags.name(0x80, "emv")
    assert tags.name(0x9F7F) == "Card production life cycle data (CPLC)"
    assert tags.name(0x5F1F, "lds") == "MRZ data"
    assert tags.name(0xDF7E) is None
    assert tags.name(0x8E, "sm") == "SM: cryptographic checksum (MAC)"
    assert tags.name(0x4F, "FCP") == tags.TAGS[0x4F]  # no FCP meaning: falls back, context case-insensitive
    for table in (tags.TAGS, *tags.CONTEXTS.values()):
        for tag in table:
            tag_bytes(tag)  # every dictionary key is a well-formed tag
    for tag in (0x62, 0x64, 0x6F, 0x80, 0x82, 0x83, 0x84, 0x8A, 0xA5, 0x42, 0x45, 0x4F, 0x50, 0x5F2D,
                0x5F50, 0x61, 0x73, 0x7F21, 0x7F49, 0x66, 0x06, 0x60, 0x9F6E, 0x9F7F, 0xE0, 0xC0, 0xE3,
                0x9F70, 0xC5, 0xCC, 0xCE, 0x5F01, 0x5C, 0x75, 0x7F61, 0x7F60, 0x5F2E, 0x77, 0x57, 0x5A,
                0x5F20, 0x5F24, 0x94, 0x9F26, 0x9F4C, 0xBF0C, 0x97, 0x99, 0x8E):
        assert tags.name(tag), f"{tag:X} has no name"


# ------------------------------------------------------------------------------------ properties


def _tags() -> st.SearchStrategy[int]:
    one = st.integers(0, 0xFF).filter(lambda b: b & 0x1F != 0x1F and b != 0)
    two = st.tuples(st.integers(0, 7).map(lambda c: (c << 5) | 0x1F), st.integers(0, 0x7F)).map(
        lambda p: (p[0] << 8) | p[1])
    three = st.tuples(st.integers(0, 7).map(lambda c: (c << 5) | 0x1F), st.integers(0x80, 0xFF),
                      st.integers(0, 0x7F)).map(lambda p: (p[0] << 16) | (p[1] << 8) | p[2])
    return st.one_of(one, two, three)


def _trees() -> st.SearchStrategy[Tlv]:
    primitive = st.builds(Tlv, _tags().filter(lambda t: not is_constructed(t)), st.binary(max_size=300))
    return st.recursive(
        primitive,
        lambda kids: st.builds(lambda tag, cs: Tlv.build(tag, cs),
                               _tags().filter(is_constructed), st.lists(kids, max_size=4)),
        max_leaves=12,
    )


def _same_tree(a: Tlv, b: Tlv) -> None:
    assert a == b
    if a.constructed:
        assert len(a.children) == len(b.children)
        for x, y in zip(a.children, b.children, strict=True):
            _same_tree(x, y)


@settings(max_examples=150, deadline=None)
@given(st.lists(_trees(), max_size=3))
def test_round_trip_trees(objs: list[Tlv]) -> None:
    data = b"".join(o.encode() for o in objs)
    decoded = ber_decode(data)
    assert len(decoded) == len(objs)
    for a, b in zip(objs, decoded, strict=True):
        _same_tree(a, b)
    assert [t for _, t in ber_walk(data)] == [t for _, t in ber_walk(objs)]
    pretty(data)  # never raises on a valid tree
    if not any(o.encode()[0] == 0xFF for o in objs):  # an 'FF' first tag byte is filler when padding
        assert ber_decode(b"\x00" + data + b"\xff", allow_padding=True) == decoded


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_random_bytes_only_tlv_error(data: bytes, padding: bool) -> None:
    for fn in (lambda: ber_decode(data, allow_padding=padding), lambda: list(ber_walk(data)),
               lambda: pretty(data), lambda: simple_decode(data), lambda: compact_decode(data),
               lambda: ber_decode_one(data), lambda: ber_find(data, 0x5A)):
        try:
            fn()
        except TlvError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 0xFE), st.binary(max_size=300)), max_size=5))
def test_simple_round_trip(items: list[tuple[int, bytes]]) -> None:
    assert simple_decode(b"".join(simple_encode(t, v) for t, v in items)) == items


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 15), st.binary(max_size=15)), max_size=8))
def test_compact_round_trip(items: list[tuple[int, bytes]]) -> None:
    assert compact_decode(b"".join(compact_encode(t, v) for t, v in items)) == items
