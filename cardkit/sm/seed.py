"""Static secure-messaging keys from one stored symmetric key.

A card key of usage "SM" (ISO 7816-4 mutual authentication, cardkit's issuer channel for native card OSes)
is stored on the card as one 16-byte value. Both sides derive the static pair (K_enc, K_mac) from it the way
ICAO Doc 9303 Part 11 §9.7.1 derives BAC keys from the key seed: KDF(seed, 1) and KDF(seed, 2) — SHA-1 based
for 3DES (with DES parity) and for AES-128 and SM4 (16 bytes). For 3DES this is exactly BAC's derivation.
"""

from __future__ import annotations

from cardkit.crypto import Alg, icao_kdf
from cardkit.sm.iso import SmSuite

__all__ = ["static_sm_keys", "suite_for"]

_SUITES = {Alg.DES3: SmSuite.DES3_RETAIL, Alg.AES: SmSuite.AES_CMAC, Alg.SM4: SmSuite.SM4_CMAC}
_KDF = {Alg.DES3: "3des", Alg.AES: "aes128", Alg.SM4: "aes128"}


def suite_for(alg: Alg) -> SmSuite:
    return _SUITES[alg]


def static_sm_keys(alg: Alg, key: bytes) -> tuple[SmSuite, bytes, bytes]:
    """(suite, K_enc, K_mac) for a stored SM key of algorithm ``alg``."""
    kdf = _KDF[alg]
    return _SUITES[alg], icao_kdf(key, 1, kdf), icao_kdf(key, 2, kdf)
