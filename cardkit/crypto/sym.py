"""Block ciphers (3DES, AES, SM4) in ECB and CBC mode, and the SM3 hash.

AES (FIPS 197) and SM4 (GB/T 32907-2016) come from ``cryptography``'s ``algorithms``; 3DES is routed
through :mod:`cardkit.crypto.legacy`, the one module allowed to touch ``cryptography.hazmat.decrepit``.
Key sizes are checked up front and raise :class:`~cardkit.errors.KeyError_`; misaligned data raises
:class:`~cardkit.errors.CryptoError`. No padding is applied here (see :mod:`cardkit.crypto.padding`).
"""

from __future__ import annotations

import enum
import threading
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cardkit.crypto import legacy
from cardkit.errors import CryptoError, KeyError_

__all__ = [
    "Alg",
    "block_size",
    "cbc_decrypt",
    "cbc_encrypt",
    "check_key",
    "ecb_decrypt",
    "ecb_encrypt",
    "sm3",
]


class Alg(enum.Enum):
    """Block cipher families used by card secure channels."""

    DES3 = "3des"  # NIST SP 800-67 Rev. 2 (TDEA)
    AES = "aes"  # FIPS 197
    SM4 = "sm4"  # GB/T 32907-2016


# FIPS 197 §3.1 (128-bit block); GB/T 32907-2016 (128-bit block); NIST SP 800-67 Rev. 2 §3 (64-bit block).
_BLOCK = {Alg.DES3: 8, Alg.AES: 16, Alg.SM4: 16}
# FIPS 197 §5 (128/192/256-bit keys); GB/T 32907-2016 (128-bit key);
# NIST SP 800-67 Rev. 2 §3.1 (keying option 2: 16 bytes, option 1: 24 bytes).
_KEY_SIZES: dict[Alg, tuple[int, ...]] = {Alg.DES3: (16, 24), Alg.AES: (16, 24, 32), Alg.SM4: (16,)}


def _as_alg(alg: Alg) -> Alg:
    if not isinstance(alg, Alg):
        raise CryptoError(f"unknown algorithm {alg!r}; expected a cardkit.crypto.Alg")
    return alg


def block_size(alg: Alg) -> int:
    """Block size in bytes: 8 for 3DES, 16 for AES and SM4."""
    return _BLOCK[_as_alg(alg)]


def check_key(alg: Alg, key: bytes) -> None:
    """Raise :class:`~cardkit.errors.KeyError_` unless ``key`` has a valid length for ``alg``."""
    sizes = _KEY_SIZES[_as_alg(alg)]
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise KeyError_(f"{alg.value} key must be bytes, got {type(key).__name__}")
    if len(key) not in sizes:
        allowed = "/".join(str(s) for s in sizes)
        raise KeyError_(f"{alg.value} key must be {allowed} bytes, got {len(key)}")


def _check_data(alg: Alg, data: bytes) -> None:
    bs = _BLOCK[alg]
    if len(data) % bs:
        raise CryptoError(f"{alg.value}: data length {len(data)} is not a multiple of the block size {bs}")


def _check_iv(alg: Alg, iv: bytes | None) -> bytes:
    bs = _BLOCK[alg]
    if iv is None:
        return bytes(bs)
    iv = bytes(iv)
    if len(iv) != bs:
        raise CryptoError(f"{alg.value}: IV must be {bs} bytes, got {len(iv)}")
    return iv


@lru_cache(maxsize=128)
def _cipher(alg: Alg, key: bytes) -> algorithms.AES | algorithms.SM4:
    # Cached per key: secure channels use the same session keys for every APDU (the objects are immutable).
    return algorithms.AES(key) if alg is Alg.AES else algorithms.SM4(key)


# ECB contexts are stateless between blocks, so one context per (key, direction) serves every call; contexts
# are not thread-safe, hence one cache per thread, bounded.
_local = threading.local()
_MAX_CONTEXTS = 64


def _ecb_context(alg: Alg, key: bytes, encrypt: bool) -> Any:
    cache: dict[tuple[Alg, bytes, bool], Any] | None = getattr(_local, "ecb", None)
    if cache is None:
        cache = _local.ecb = {}
    ctx = cache.get((alg, key, encrypt))
    if ctx is None:
        if len(cache) >= _MAX_CONTEXTS:
            cache.clear()
        c = Cipher(_cipher(alg, key), modes.ECB())
        ctx = cache[(alg, key, encrypt)] = c.encryptor() if encrypt else c.decryptor()
    return ctx


def _run(alg: Alg, key: bytes, mode: modes.ECB | modes.CBC, data: bytes, encrypt: bool) -> bytes:
    c = Cipher(_cipher(alg, key), mode)
    ctx = c.encryptor() if encrypt else c.decryptor()
    return ctx.update(data) + ctx.finalize()


def ecb_encrypt(alg: Alg, key: bytes, data: bytes) -> bytes:
    """ECB encryption (NIST SP 800-38A §6.1) of block-aligned ``data``."""
    check_key(alg, key)
    key, data = bytes(key), bytes(data)
    _check_data(alg, data)
    if alg is Alg.DES3:
        return legacy.des3_ecb_encrypt(key, data)
    return bytes(_ecb_context(alg, key, True).update(data))


def ecb_decrypt(alg: Alg, key: bytes, data: bytes) -> bytes:
    """ECB decryption of block-aligned ``data``."""
    check_key(alg, key)
    key, data = bytes(key), bytes(data)
    _check_data(alg, data)
    if alg is Alg.DES3:
        return legacy.des3_ecb_decrypt(key, data)
    return bytes(_ecb_context(alg, key, False).update(data))


def cbc_encrypt(alg: Alg, key: bytes, data: bytes, iv: bytes | None = None) -> bytes:
    """CBC encryption (NIST SP 800-38A §6.2) of block-aligned ``data``; ``iv`` None means zeros."""
    check_key(alg, key)
    key, data = bytes(key), bytes(data)
    _check_data(alg, data)
    ivb = _check_iv(alg, iv)
    if alg is Alg.DES3:
        return legacy.des3_cbc_encrypt(key, data, ivb)
    return _run(alg, key, modes.CBC(ivb), data, True)


def cbc_decrypt(alg: Alg, key: bytes, data: bytes, iv: bytes | None = None) -> bytes:
    """CBC decryption of block-aligned ``data``; ``iv`` None means zeros."""
    check_key(alg, key)
    key, data = bytes(key), bytes(data)
    _check_data(alg, data)
    ivb = _check_iv(alg, iv)
    if alg is Alg.DES3:
        return legacy.des3_cbc_decrypt(key, data, ivb)
    return _run(alg, key, modes.CBC(ivb), data, False)


def sm3(data: bytes) -> bytes:
    """SM3 hash (GB/T 32905-2016): 32-byte digest."""
    h = hashes.Hash(hashes.SM3())
    h.update(bytes(data))
    return h.finalize()
