"""SP 800-108 counter-mode KDF, the SCP03 KDF and the ICAO 9303 KDF."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.crypto import Alg, adjust_des_parity, cmac, icao_kdf, scp03_kdf, sp800_108_cmac
from cardkit.errors import CryptoError, KeyError_

KEY = bytes.fromhex("404142434445464748494a4b4c4d4e4f")


def _odd(b: int) -> bool:
    return bin(b).count("1") % 2 == 1


@settings(max_examples=40)
@given(
    st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    st.integers(min_value=0, max_value=255),
    st.binary(min_size=0, max_size=40),
    st.sampled_from([64, 128, 192, 256, 384]),
)
def test_scp03_kdf_matches_pyca_kbkdf_middle_fixed(key: bytes, const: int, ctx: bytes, bits: int) -> None:
    # GPCS Amd D §6.2.2 layout expressed with cryptography's KBKDFCMAC (counter between label and context).
    before = bytes(11) + bytes([const]) + b"\x00" + bits.to_bytes(2, "big")
    ref = KBKDFCMAC(
        algorithms.AES,
        Mode.CounterMode,
        bits // 8,
        1,
        None,
        CounterLocation.MiddleFixed,
        None,
        None,
        before + ctx,
        break_location=len(before),
    ).derive(key)
    assert scp03_kdf(key, const, ctx, bits) == ref


def test_scp03_kdf_layout_single_block() -> None:
    ctx = bytes(range(16))
    data = bytes(11) + b"\x06\x00\x00\x80\x01" + ctx
    assert scp03_kdf(KEY, 0x06, ctx, 128) == cmac(Alg.AES, KEY, data)
    assert scp03_kdf(KEY, 0x00, ctx, 64) == cmac(Alg.AES, KEY, bytes(11) + b"\x00\x00\x00\x40\x01" + ctx)[:8]


@pytest.mark.parametrize(("const", "bits"), [(-1, 128), (256, 128), (4, 0), (4, 12), (4, 65536), (4, -8)])
def test_scp03_kdf_bad_parameters(const: int, bits: int) -> None:
    with pytest.raises(CryptoError):
        scp03_kdf(KEY, const, b"", bits)


def test_scp03_kdf_needs_aes_key() -> None:
    with pytest.raises(KeyError_):
        scp03_kdf(bytes(8), 4, b"", 128)


@given(st.binary(max_size=20), st.binary(max_size=20), st.integers(min_value=1, max_value=4))
def test_sp800_108_structure(before: bytes, after: bytes, r: int) -> None:
    out = sp800_108_cmac(KEY, Alg.SM4, before, after, 200, r)
    expect = b"".join(cmac(Alg.SM4, KEY, before + i.to_bytes(r, "big") + after) for i in (1, 2))
    assert out == expect[:25]


def test_sp800_108_errors() -> None:
    with pytest.raises(CryptoError):
        sp800_108_cmac(KEY, Alg.AES, b"", b"", 128 * 256, 1)  # counter would overflow r = 8
    assert len(sp800_108_cmac(KEY, Alg.AES, b"", b"", 128 * 255, 1)) == 16 * 255
    with pytest.raises(CryptoError):
        sp800_108_cmac(KEY, Alg.AES, b"", b"", 128, 5)
    with pytest.raises(CryptoError):
        sp800_108_cmac(KEY, Alg.AES, b"", b"", 100, 1)
    with pytest.raises(KeyError_):
        sp800_108_cmac(bytes(10), Alg.AES, b"", b"", 128, 1)


@given(st.binary(max_size=32))
def test_adjust_des_parity(key: bytes) -> None:
    out = adjust_des_parity(key)
    assert len(out) == len(key)
    assert all(_odd(b) for b in out)
    assert all((a & 0xFE) == (b & 0xFE) for a, b in zip(key, out, strict=True))
    assert adjust_des_parity(out) == out


@given(st.binary(min_size=16, max_size=16), st.integers(min_value=1, max_value=3))
def test_icao_kdf_variants(seed: bytes, c: int) -> None:
    d = seed + c.to_bytes(4, "big")
    assert icao_kdf(seed, c, "aes128") == hashlib.sha1(d).digest()[:16]
    assert icao_kdf(seed, c, "aes192") == hashlib.sha256(d).digest()[:24]
    assert icao_kdf(seed, c, "aes256") == hashlib.sha256(d).digest()
    k = icao_kdf(seed, c, "3des")
    assert k == adjust_des_parity(hashlib.sha1(d).digest()[:16])
    assert all(_odd(b) for b in k)


def test_icao_kdf_errors() -> None:
    with pytest.raises(KeyError_):
        icao_kdf(bytes(16), 1, "des")
    with pytest.raises(CryptoError):
        icao_kdf(bytes(16), 1 << 32, "aes128")
    with pytest.raises(CryptoError):
        icao_kdf(bytes(16), -1, "aes128")
