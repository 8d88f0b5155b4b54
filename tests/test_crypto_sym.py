"""Block ciphers (3DES, AES, SM4) in ECB/CBC and SM3: round trips, CBC structure, misuse."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.crypto import (
    Alg,
    block_size,
    cbc_decrypt,
    cbc_encrypt,
    check_key,
    des3_key24,
    ecb_decrypt,
    ecb_encrypt,
    sm3,
)
from cardkit.errors import CryptoError, KeyError_

KEY_SIZES = {Alg.DES3: (16, 24), Alg.AES: (16, 24, 32), Alg.SM4: (16,)}
algs = st.sampled_from(list(Alg))


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def test_block_sizes() -> None:
    assert block_size(Alg.DES3) == 8
    assert block_size(Alg.AES) == 16
    assert block_size(Alg.SM4) == 16
    assert Alg("3des") is Alg.DES3 and Alg("aes") is Alg.AES and Alg("sm4") is Alg.SM4


@pytest.mark.parametrize("alg", list(Alg))
def test_check_key_sizes(alg: Alg) -> None:
    for n in range(0, 40):
        if n in KEY_SIZES[alg]:
            check_key(alg, bytes(n))
        else:
            with pytest.raises(KeyError_):
                check_key(alg, bytes(n))


def test_check_key_rejects_non_bytes() -> None:
    with pytest.raises(KeyError_):
        check_key(Alg.AES, "00" * 16)  # type: ignore[arg-type]


def test_unknown_alg_is_typed_error() -> None:
    with pytest.raises(CryptoError):
        block_size("aes")  # type: ignore[arg-type]


@st.composite
def alg_key_data(draw: st.DrawFn) -> tuple[Alg, bytes, bytes, bytes]:
    alg = draw(algs)
    key = draw(st.sampled_from(KEY_SIZES[alg]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
    bs = block_size(alg)
    nblocks = draw(st.integers(min_value=0, max_value=4))
    data = draw(st.binary(min_size=bs * nblocks, max_size=bs * nblocks))
    iv = draw(st.binary(min_size=bs, max_size=bs))
    return alg, key, data, iv


@settings(max_examples=60)
@given(alg_key_data())
def test_round_trips_and_cbc_structure(akdi: tuple[Alg, bytes, bytes, bytes]) -> None:
    alg, key, data, iv = akdi
    bs = block_size(alg)
    ct = ecb_encrypt(alg, key, data)
    assert len(ct) == len(data)
    assert ecb_decrypt(alg, key, ct) == data
    cbc = cbc_encrypt(alg, key, data, iv)
    assert cbc_decrypt(alg, key, cbc, iv) == data
    # CBC is ECB over (block xor previous ciphertext), NIST SP 800-38A §6.2
    prev, manual = iv, b""
    for i in range(0, len(data), bs):
        prev = ecb_encrypt(alg, key, _xor(data[i : i + bs], prev))
        manual += prev
    assert cbc == manual
    assert cbc_encrypt(alg, key, data) == cbc_encrypt(alg, key, data, bytes(bs))  # None means zeros


def test_des3_two_key_equals_k1k2k1() -> None:
    k16 = bytes(range(16))
    data = bytes(range(32))
    assert ecb_encrypt(Alg.DES3, k16, data) == ecb_encrypt(Alg.DES3, des3_key24(k16), data)
    assert des3_key24(k16) == k16 + k16[:8]


@pytest.mark.parametrize("alg", list(Alg))
def test_misaligned_data_is_crypto_error(alg: Alg) -> None:
    key = bytes(KEY_SIZES[alg][0])
    for fn in (ecb_encrypt, ecb_decrypt, cbc_encrypt, cbc_decrypt):
        with pytest.raises(CryptoError) as ei:
            fn(alg, key, bytes(block_size(alg) + 1))
        assert not isinstance(ei.value, KeyError_)


@pytest.mark.parametrize("alg", list(Alg))
def test_bad_iv_is_crypto_error(alg: Alg) -> None:
    key = bytes(KEY_SIZES[alg][0])
    with pytest.raises(CryptoError):
        cbc_encrypt(alg, key, bytes(block_size(alg)), iv=bytes(block_size(alg) - 1))
    with pytest.raises(CryptoError):
        cbc_decrypt(alg, key, bytes(block_size(alg)), iv=bytes(block_size(alg) + 1))


@pytest.mark.parametrize("alg", list(Alg))
def test_wrong_key_is_key_error_without_key_bytes(alg: Alg) -> None:
    key = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90ab")  # 17 bytes: wrong for every alg
    with pytest.raises(KeyError_) as ei:
        ecb_encrypt(alg, key, bytes(16))
    assert "a1b2c3" not in str(ei.value).lower()
    assert "17" in str(ei.value)


def test_no_deprecation_warning_from_3des() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ecb_encrypt(Alg.DES3, bytes(range(16)), bytes(8))
        cbc_encrypt(Alg.DES3, bytes(range(24)), bytes(16))


def test_sm3_lengths_and_determinism() -> None:
    assert len(sm3(b"")) == 32
    assert sm3(b"abc") == sm3(b"ab" + b"c")
    assert sm3(b"abc") != sm3(b"abd")
