"""Key check values (KCV): a short, non-secret fingerprint to confirm two parties hold the same key.

A KCV is meaningless without its method, so every call names one:

* ``DES3_ZEROS`` — 3DES-ECB(key, 8 × 00), leftmost 3 bytes (GPCS 2.3.1 §11.8.2.3 key-check value for
  DES keys; ANSI X9.24-1 legacy TDES KCV). GP test key ``404142…4F`` → ``8BAF47``.
* ``AES_GP`` — AES-ECB(key, 16 × 01), leftmost 3 bytes (GPCS 2.3.1 Amendment D §7.2.2 / GPCS 2.3.1
  §11.8.2.3 for AES keys).
* ``AES_CMAC`` — AES-CMAC(key, 16 × 00), leftmost 5 bytes (ANSI X9.24-1:2017 Annex A, AES KCV).
* ``SM4_ZEROS`` — SM4-ECB(key, 16 × 00), leftmost 3 bytes (the 3DES convention applied to SM4, as
  Chinese HSM and PSAM tooling does; not from a normative standard).
"""

from __future__ import annotations

import enum

from cardkit.crypto.mac import cmac
from cardkit.crypto.sym import Alg, check_key, ecb_encrypt
from cardkit.errors import CryptoError

__all__ = ["KcvMethod", "default_kcv_method", "kcv"]


class KcvMethod(enum.Enum):
    """How a key check value is computed (see the module docstring for the sources)."""

    DES3_ZEROS = "des3-zeros"
    AES_GP = "aes-gp"
    AES_CMAC = "aes-cmac"
    SM4_ZEROS = "sm4-zeros"


# method -> (algorithm, input block, default KCV length, maximum KCV length)
_METHODS: dict[KcvMethod, tuple[Alg, bytes, int, int]] = {
    KcvMethod.DES3_ZEROS: (Alg.DES3, bytes(8), 3, 8),  # GPCS 2.3.1 §11.8.2.3: 3 bytes over 8 × 00
    KcvMethod.AES_GP: (Alg.AES, b"\x01" * 16, 3, 16),  # GPCS Amd D §7.2.2: 3 bytes over 16 × 01
    KcvMethod.AES_CMAC: (Alg.AES, bytes(16), 5, 16),  # ANSI X9.24-1:2017 Annex A: 5 bytes of CMAC(0^128)
    KcvMethod.SM4_ZEROS: (Alg.SM4, bytes(16), 3, 16),  # convention: 3 bytes over 16 × 00
}


def kcv(key: bytes, method: KcvMethod, length: int | None = None) -> bytes:
    """Key check value of ``key`` by ``method``; ``length`` defaults to 3 bytes (5 for ``AES_CMAC``)."""
    if not isinstance(method, KcvMethod):
        raise CryptoError(f"unknown KCV method {method!r}; expected a KcvMethod")
    alg, block, default_len, max_len = _METHODS[method]
    n = default_len if length is None else length
    if not isinstance(n, int) or not 1 <= n <= max_len:
        raise CryptoError(f"KCV length must be 1..{max_len} for {method.value}, got {length!r}")
    check_key(alg, key)
    full = cmac(alg, key, block) if method is KcvMethod.AES_CMAC else ecb_encrypt(alg, key, block)
    return full[:n]


def default_kcv_method(alg: Alg) -> KcvMethod:
    """The KCV method GlobalPlatform tooling uses by default for ``alg`` (3DES zeros, AES GP, SM4 zeros)."""
    if alg is Alg.DES3:
        return KcvMethod.DES3_ZEROS
    if alg is Alg.AES:
        return KcvMethod.AES_GP
    if alg is Alg.SM4:
        return KcvMethod.SM4_ZEROS
    raise CryptoError(f"unknown algorithm {alg!r}")
