"""DES/3DES helpers and the ISO/IEC 9797-1 CBC-MACs (retail MAC, 3DES CBC-MAC)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardkit.crypto import (
    des3_cbc_decrypt,
    des3_cbc_encrypt,
    des3_cbc_mac,
    des3_ecb_decrypt,
    des3_ecb_encrypt,
    des3_key24,
    des_cbc_decrypt,
    des_cbc_encrypt,
    des_ecb_decrypt,
    des_ecb_encrypt,
    pad_m2,
    retail_mac,
)
from cardkit.errors import CryptoError, KeyError_

PKG = Path(__file__).resolve().parent.parent / "cardkit"
K1, K2 = bytes.fromhex("0123456789abcdef"), bytes.fromhex("fedcba9876543210")


def test_des3_key24() -> None:
    assert des3_key24(K1 + K2) == K1 + K2 + K1
    k24 = K1 + K2 + bytes(8)
    assert des3_key24(k24) == k24
    for n in (0, 8, 15, 17, 23, 25, 32):
        with pytest.raises(KeyError_):
            des3_key24(bytes(n))


def test_single_des_is_3des_with_equal_keys() -> None:
    data = bytes(range(24))
    assert des_ecb_encrypt(K1, data) == des3_ecb_encrypt(K1 + K1, data)
    assert des_ecb_decrypt(K1, des_ecb_encrypt(K1, data)) == data
    iv = bytes(range(8, 16))
    assert des_cbc_decrypt(K1, des_cbc_encrypt(K1, data, iv), iv) == data
    with pytest.raises(KeyError_):
        des_ecb_encrypt(K1 + K2, data)


def test_3des_round_trips() -> None:
    data = bytes(range(32))
    assert des3_ecb_decrypt(K1 + K2, des3_ecb_encrypt(K1 + K2, data)) == data
    assert des3_cbc_decrypt(K1 + K2, des3_cbc_encrypt(K1 + K2, data)) == data


def test_misaligned_and_bad_iv() -> None:
    with pytest.raises(CryptoError):
        des3_ecb_encrypt(K1 + K2, bytes(7))
    with pytest.raises(CryptoError):
        des_cbc_encrypt(K1, bytes(9))
    with pytest.raises(CryptoError):
        des3_cbc_encrypt(K1 + K2, bytes(8), iv=bytes(16))


@given(st.binary(max_size=40))
def test_retail_mac_with_equal_halves_is_plain_cbc_mac(data: bytes) -> None:
    # Output transformation 3 with K2 = K1 cancels out: e_K1(d_K1(H)) = H (ISO/IEC 9797-1 §6.4).
    assert retail_mac(K1 + K1, data) == des3_cbc_mac(K1 + K1, data)
    assert retail_mac(K1 + K2, data) != retail_mac(K2 + K1, data) or not data


@given(st.binary(max_size=40))
def test_retail_mac_structure(data: bytes) -> None:
    padded = pad_m2(data, 8)
    h = des_cbc_encrypt(K1, padded)[-8:]
    assert retail_mac(K1 + K2, data) == des_ecb_encrypt(K1, des_ecb_decrypt(K2, h))
    assert retail_mac(K1 + K2, padded, pad=False) == retail_mac(K1 + K2, data)
    assert des3_cbc_mac(K1 + K2, data) == des3_cbc_encrypt(K1 + K2, padded)[-8:]


@given(st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=32))
def test_retail_mac_iv_is_xored_into_first_block(iv: bytes, data: bytes) -> None:
    padded = pad_m2(data, 8)
    first = bytes(a ^ b for a, b in zip(padded[:8], iv, strict=True))
    assert retail_mac(K1 + K2, padded, iv, pad=False) == retail_mac(K1 + K2, first + padded[8:], pad=False)


def test_retail_mac_keys() -> None:
    data = b"retail"
    assert retail_mac(K1 + K2 + K1, data) == retail_mac(K1 + K2, data)
    with pytest.raises(KeyError_):
        retail_mac(K1 + K2 + K2, data)  # K3 != K1: not a two-key bundle
    with pytest.raises(KeyError_):
        retail_mac(K1, data)


def test_mac_without_padding_needs_aligned_data() -> None:
    for fn in (retail_mac, des3_cbc_mac):
        with pytest.raises(CryptoError):
            fn(K1 + K2, bytes(9), pad=False)
        with pytest.raises(CryptoError):
            fn(K1 + K2, b"", pad=False)
        assert len(fn(K1 + K2, b"")) == 8  # padded empty input is one block


def test_decrepit_is_quarantined_in_legacy() -> None:
    offenders = [
        p.relative_to(PKG).as_posix()
        for p in PKG.rglob("*.py")
        if re.search(
            r"^\s*(from|import)\s+cryptography\.hazmat(\.decrepit|\s+import\s+decrepit)",
            p.read_text("utf-8"),
            re.MULTILINE,
        )
    ]
    assert offenders == ["crypto/legacy.py"]
