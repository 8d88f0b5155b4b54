"""Key check values: each method by construction, lengths, misuse."""

from __future__ import annotations

import pytest

from cardkit.crypto import Alg, KcvMethod, aes_cmac, default_kcv_method, ecb_encrypt, kcv
from cardkit.errors import CryptoError, KeyError_

GP_KEY = bytes.fromhex("404142434445464748494a4b4c4d4e4f")


def test_gp_test_key_3des() -> None:
    assert kcv(GP_KEY, KcvMethod.DES3_ZEROS) == bytes.fromhex("8baf47")


def test_methods_by_construction() -> None:
    k = bytes(range(16))
    assert kcv(k, KcvMethod.DES3_ZEROS) == ecb_encrypt(Alg.DES3, k, bytes(8))[:3]
    assert kcv(k, KcvMethod.AES_GP) == ecb_encrypt(Alg.AES, k, b"\x01" * 16)[:3]
    assert kcv(k, KcvMethod.AES_CMAC) == aes_cmac(k, bytes(16))[:5]
    assert kcv(k, KcvMethod.SM4_ZEROS) == ecb_encrypt(Alg.SM4, k, bytes(16))[:3]
    assert len({kcv(k, m) for m in KcvMethod}) == 4  # the method matters


def test_lengths() -> None:
    assert [len(kcv(GP_KEY, m)) for m in KcvMethod] == [3, 3, 5, 3]
    assert kcv(GP_KEY, KcvMethod.DES3_ZEROS, 8) == ecb_encrypt(Alg.DES3, GP_KEY, bytes(8))
    assert kcv(GP_KEY, KcvMethod.AES_CMAC, 3) == kcv(GP_KEY, KcvMethod.AES_CMAC)[:3]
    for bad in (0, 9, -1):
        with pytest.raises(CryptoError):
            kcv(GP_KEY, KcvMethod.DES3_ZEROS, bad)
    with pytest.raises(CryptoError):
        kcv(GP_KEY, KcvMethod.AES_GP, 17)


def test_key_checks() -> None:
    with pytest.raises(KeyError_):
        kcv(bytes(24), KcvMethod.SM4_ZEROS)
    with pytest.raises(KeyError_):
        kcv(bytes(32), KcvMethod.DES3_ZEROS)
    assert len(kcv(bytes(32), KcvMethod.AES_GP)) == 3
    with pytest.raises(CryptoError):
        kcv(GP_KEY, "des3-zeros")  # type: ignore[arg-type]


def test_default_methods() -> None:
    assert default_kcv_method(Alg.DES3) is KcvMethod.DES3_ZEROS
    assert default_kcv_method(Alg.AES) is KcvMethod.AES_GP
    assert default_kcv_method(Alg.SM4) is KcvMethod.SM4_ZEROS
    assert KcvMethod("aes-cmac") is KcvMethod.AES_CMAC
