"""Key derivation functions: NIST SP 800-108 counter mode with CMAC, the SCP03 KDF, and the ICAO KDF.

* :func:`sp800_108_cmac` — the general counter-mode KDF of NIST SP 800-108 §5.1 (Rev. 1: §4.1) with a
  CMAC PRF and the counter placed between two fixed-input parts (the CAVP "counter location" forms
  BEFORE_FIXED, MIDDLE_FIXED and AFTER_FIXED are all expressible);
* :func:`scp03_kdf` — GlobalPlatform Card Specification v2.3 Amendment D (SCP03) §6.2.2, the same KDF
  with AES-CMAC and a fixed layout of the derivation data;
* :func:`icao_kdf` — ICAO Doc 9303 Part 11 §9.7.1 (hash-based key derivation for BAC/PACE/CA).
"""

from __future__ import annotations

import hashlib

from cardkit.crypto.mac import cmac
from cardkit.crypto.sym import Alg, block_size, check_key
from cardkit.errors import CryptoError, KeyError_

__all__ = ["adjust_des_parity", "icao_kdf", "scp03_kdf", "sp800_108_cmac"]

# GPCS v2.3 Amd D §6.2.2: the label is 11 zero bytes, then the one-byte derivation constant.
_SCP03_LABEL = bytes(11)
# GPCS v2.3 Amd D §6.2.2: "separation indicator" byte between label and L.
_SCP03_SEPARATOR = b"\x00"
# GPCS v2.3 Amd D §6.2.2: L is a 2-byte big-endian bit count.
_SCP03_MAX_L = 0xFFFF


def sp800_108_cmac(
    key: bytes,
    alg: Alg,
    fixed_input_before: bytes,
    fixed_input_after: bytes,
    length_bits: int,
    counter_bytes: int = 1,
) -> bytes:
    """NIST SP 800-108 KDF in counter mode with PRF = CMAC(``alg``).

    For i = 1..n the PRF input is ``fixed_input_before ‖ [i]_r ‖ fixed_input_after`` where ``[i]_r`` is
    the counter as ``counter_bytes`` big-endian bytes (r = 8, 16, 24 or 32 bits); the outputs are
    concatenated and the leftmost ``length_bits`` bits returned (NIST SP 800-108 §5.1). The encoding of L
    and any label/context separator are part of the fixed input and are the caller's choice.
    ``length_bits`` must be a positive multiple of 8.
    """
    check_key(alg, key)
    if counter_bytes not in (1, 2, 3, 4):
        raise CryptoError(f"counter must be 1..4 bytes (r = 8..32 bits), got {counter_bytes}")
    if not isinstance(length_bits, int) or length_bits <= 0 or length_bits % 8:
        raise CryptoError(f"output length must be a positive multiple of 8 bits, got {length_bits!r}")
    h = block_size(alg) * 8
    n = -(-length_bits // h)
    # NIST SP 800-108 §5.1 step 2: if n > 2^r - 1, indicate an error.
    if n > (1 << (8 * counter_bytes)) - 1:
        raise CryptoError(f"{length_bits}-bit output needs {n} blocks; the {counter_bytes}-byte counter overflows")
    before, after = bytes(fixed_input_before), bytes(fixed_input_after)
    out = b"".join(cmac(alg, key, before + i.to_bytes(counter_bytes, "big") + after) for i in range(1, n + 1))
    return out[: length_bits // 8]


def scp03_kdf(key: bytes, constant: int, context: bytes, length_bits: int) -> bytes:
    """GlobalPlatform SCP03 key derivation (GPCS v2.3 Amendment D §6.2.2), PRF = AES-CMAC.

    Derivation data for block i: ``00×11 ‖ constant ‖ 00 ‖ L (2 bytes, bits) ‖ i (1 byte) ‖ context``.
    Constants (Amd D, data derivation constants): card cryptogram 00, host cryptogram 01, card challenge 02,
    S-ENC 04, S-MAC 06, S-RMAC 07. Returns ``length_bits // 8`` bytes (64 for cryptograms, the key
    length for session keys).
    """
    check_key(Alg.AES, key)
    if not isinstance(constant, int) or not 0 <= constant <= 0xFF:
        raise CryptoError(f"SCP03 derivation constant must be one byte, got {constant!r}")
    if not isinstance(length_bits, int) or not 0 < length_bits <= _SCP03_MAX_L or length_bits % 8:
        raise CryptoError(f"SCP03 L must be a positive multiple of 8 below 65536, got {length_bits!r}")
    before = _SCP03_LABEL + bytes([constant]) + _SCP03_SEPARATOR + length_bits.to_bytes(2, "big")
    return sp800_108_cmac(key, Alg.AES, before, bytes(context), length_bits, counter_bytes=1)


def adjust_des_parity(key: bytes) -> bytes:
    """Set the DES parity bit (least significant bit) of each byte so every byte has odd parity.

    FIPS 46-3 §3 ("one bit in each 8-bit byte of the KEY may be utilized for error detection") and
    ICAO Doc 9303 Part 11 §9.7.1.1 ("adjust parity bits").
    """
    return bytes((b & 0xFE) | ((bin(b >> 1).count("1") + 1) & 1) for b in bytes(key))


# ICAO Doc 9303 Part 11 §9.7.1, Table: hash and output length per cipher.
_ICAO_ALGS: dict[str, tuple[str, int]] = {
    "3des": ("sha1", 16),
    "aes128": ("sha1", 16),
    "aes192": ("sha256", 24),
    "aes256": ("sha256", 32),
}


def icao_kdf(seed: bytes, counter: int, alg: str) -> bytes:
    """ICAO Doc 9303 Part 11 §9.7.1 key derivation: ``H(seed ‖ c)`` with c a 32-bit big-endian counter.

    Counters (§9.7.1): 1 = K_Enc, 2 = K_MAC, 3 = K_π (PACE). ``alg``: ``"3des"`` — SHA-1, first 16
    bytes (Ka‖Kb) with DES parity adjusted (§9.7.1.1); ``"aes128"`` — SHA-1, first 16 bytes;
    ``"aes192"`` — SHA-256, first 24 bytes; ``"aes256"`` — SHA-256, 32 bytes (§9.7.1.2).
    """
    spec = _ICAO_ALGS.get(alg)
    if spec is None:
        raise KeyError_(f"unknown ICAO KDF cipher {alg!r}; expected one of {sorted(_ICAO_ALGS)}")
    if not isinstance(counter, int) or not 0 <= counter <= 0xFFFFFFFF:
        raise CryptoError(f"ICAO KDF counter must fit 32 bits, got {counter!r}")
    hname, n = spec
    digest = hashlib.new(hname, bytes(seed) + counter.to_bytes(4, "big")).digest()[:n]
    return adjust_des_parity(digest) if alg == "3des" else digest
