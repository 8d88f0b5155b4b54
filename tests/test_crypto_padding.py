"""ISO/IEC 9797-1 padding methods 1 and 2: properties and strict unpadding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardkit.crypto import pad_m1, pad_m2, unpad_m2
from cardkit.errors import CryptoError, PaddingError

blocks = st.sampled_from([8, 16])


def test_pad_m1_examples() -> None:
    assert pad_m1(b"", 8) == bytes(8)
    assert pad_m1(b"\x01", 8) == b"\x01" + bytes(7)
    assert pad_m1(bytes(range(8)), 8) == bytes(range(8))  # aligned: nothing added
    assert pad_m1(bytes(range(9)), 8) == bytes(range(9)) + bytes(7)


def test_pad_m2_examples() -> None:
    assert pad_m2(b"", 8) == b"\x80" + bytes(7)
    assert pad_m2(b"\x01\x1e", 8) == bytes.fromhex("011e800000000000")
    assert pad_m2(bytes(8), 8) == bytes(8) + b"\x80" + bytes(7)  # aligned: one whole block added
    assert pad_m2(bytes(15), 16) == bytes(15) + b"\x80"


@given(st.binary(max_size=80), blocks)
def test_pad_m1_properties(data: bytes, block: int) -> None:
    out = pad_m1(data, block)
    assert len(out) % block == 0 and len(out) >= max(len(data), 1)
    assert out[: len(data)] == data
    assert out[len(data) :] == bytes(len(out) - len(data))
    assert len(out) - len(data) < block or not data


@given(st.binary(max_size=80), blocks)
def test_pad_m2_round_trip(data: bytes, block: int) -> None:
    out = pad_m2(data, block)
    assert len(out) % block == 0
    assert 1 <= len(out) - len(data) <= block
    assert out[len(data)] == 0x80
    assert unpad_m2(out, block) == data


@given(st.binary(max_size=64), blocks)
def test_unpad_m2_only_raises_padding_error(data: bytes, block: int) -> None:
    try:
        out = unpad_m2(data, block)
    except PaddingError:
        return
    assert pad_m2(out, block) == data


@pytest.mark.parametrize(
    "data",
    [
        b"",  # empty
        bytes(7),  # misaligned
        bytes(8),  # no 80 marker
        bytes.fromhex("0102030480000001"),  # non-zero after the marker
        b"\x80" + bytes(15),  # padding longer than one block
        bytes.fromhex("01020304050607ff"),  # last byte neither 00 nor 80
    ],
)
def test_unpad_m2_rejects(data: bytes) -> None:
    with pytest.raises(PaddingError):
        unpad_m2(data, 8)


@pytest.mark.parametrize("block", [0, -8, 256])
def test_bad_block_size(block: int) -> None:
    for fn in (pad_m1, pad_m2):
        with pytest.raises(CryptoError):
            fn(b"abc", block)
    with pytest.raises(CryptoError):
        unpad_m2(b"\x80" + bytes(7), block)
