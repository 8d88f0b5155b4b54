"""CommandApdu / ResponseApdu encoding, parsing and rejection (ISO 7816-3 §12.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.errors import ApduFormatError

CASES = [
    (CommandApdu(0x00, 0xA4, 0x00, 0x00), "00A40000", 1),
    (CommandApdu(0x00, 0xB0, 0x00, 0x00, le=256), "00B0000000", 2),
    (CommandApdu(0x00, 0xB0, 0x00, 0x00, le=16), "00B0000010", 2),
    (CommandApdu(0x00, 0xD6, 0x00, 0x00, data=b"\x01\x02"), "00D60000020102", 3),
    (CommandApdu(0x00, 0xA4, 0x04, 0x00, data=bytes.fromhex("A000000151000000"), le=256),
     "00A4040008A00000015100000000", 4),
    # extended forms
    (CommandApdu(0x00, 0xB0, 0x00, 0x00, le=65536), "00B00000000000", 2),
    (CommandApdu(0x00, 0xB0, 0x00, 0x00, le=257), "00B00000000101", 2),
    (CommandApdu(0x00, 0xD6, 0x00, 0x00, data=b"\xAA" * 256), "00D6000000" + "0100" + "AA" * 256, 3),
    (CommandApdu(0x00, 0xD6, 0x00, 0x00, data=b"\xAA" * 300, le=65536),
     "00D6000000" + "012C" + "AA" * 300 + "0000", 4),
]


@pytest.mark.parametrize(("apdu", "encoded", "case"), CASES)
def test_encode_and_parse(apdu: CommandApdu, encoded: str, case: int) -> None:
    assert apdu.hex() == encoded
    assert apdu.case == case
    parsed = CommandApdu.from_bytes(bytes.fromhex(encoded))
    assert parsed == apdu
    assert parsed.to_bytes().hex().upper() == encoded


def test_forced_extended_encoding_of_small_command() -> None:
    apdu = CommandApdu(0x00, 0xB0, 0, 0, data=b"\x01", le=1, extended=True)
    assert apdu.hex() == "00B00000000001010001"
    assert CommandApdu.from_bytes(apdu.to_bytes()) == apdu


@pytest.mark.parametrize(("raw", "why"), [
    ("00A400", "at least 4 header bytes"),
    ("00A4000005010203", "Lc=5"),
    ("00A40000020102FFFF", "Lc=2"),
    ("00A4000000", None),  # case 2S with Le=256 is valid
    ("00B0000000FF", "extended length field truncated"),
    ("00D6000000000001", "extended Lc of 0"),
    ("00D60000000005AABB", "extended Lc=5"),
    ("0060000000", "INS 60 is invalid"),
])
def test_rejects_malformed(raw: str, why: str | None) -> None:
    if why is None:
        assert CommandApdu.from_bytes(bytes.fromhex(raw)).le == 256
        return
    with pytest.raises(ApduFormatError, match=why):
        CommandApdu.from_bytes(bytes.fromhex(raw))


@pytest.mark.parametrize("kwargs", [
    {"cla": 256, "ins": 0xA4}, {"cla": 0, "ins": 0xA4, "p1": -1}, {"cla": 0, "ins": 0xA4, "le": 0},
    {"cla": 0, "ins": 0xA4, "le": 65537}, {"cla": 0, "ins": 0xA4, "data": b"x" * 65536},
    {"cla": 0, "ins": 0x91},
])
def test_constructor_rejects(kwargs: dict[str, object]) -> None:
    with pytest.raises(ApduFormatError):
        CommandApdu(**kwargs)  # type: ignore[arg-type]


apdus = st.builds(
    CommandApdu,
    cla=st.integers(0, 255),
    ins=st.integers(0, 255).filter(lambda i: i & 0xF0 not in (0x60, 0x90)),
    p1=st.integers(0, 255), p2=st.integers(0, 255),
    data=st.binary(max_size=600),
    le=st.none() | st.integers(1, 65536),
    extended=st.booleans(),
)


@given(apdus)
def test_round_trip(apdu: CommandApdu) -> None:
    parsed = CommandApdu.from_bytes(apdu.to_bytes())
    assert parsed == apdu
    assert parsed.to_bytes() == apdu.to_bytes()


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_typed_error(raw: bytes) -> None:
    try:
        apdu = CommandApdu.from_bytes(raw)
    except ApduFormatError:
        return
    assert apdu.to_bytes() == raw or len(raw) >= 4


def test_response() -> None:
    r = ResponseApdu.from_bytes(bytes.fromhex("01029000"))
    assert (r.data, r.sw1, r.sw2, r.sw, r.ok) == (b"\x01\x02", 0x90, 0x00, 0x9000, True)
    assert ResponseApdu.of(0x6A82).ok is False
    assert ResponseApdu.of(0x6110).ok is True
    assert r.hex() == "01029000"
    with pytest.raises(ApduFormatError, match="at least SW1 SW2"):
        ResponseApdu.from_bytes(b"\x90")
