"""DES and Triple-DES: the only module in cardkit that imports ``cryptography.hazmat.decrepit``.

Triple-DES (TDEA, NIST SP 800-67 Rev. 2) is still what most deployed cards speak (GlobalPlatform SCP02,
EMV CPS, ICAO BAC, first-generation social security cards). ``cryptography`` keeps it in its *decrepit*
package and deprecates 8- and 16-byte keys, so every key is expanded to 24 bytes (K1‖K2‖K3) here,
explicitly, before it reaches the cipher:

* 16-byte keys are keying option 2 (K1‖K2‖K1), NIST SP 800-67 Rev. 2 §3.1;
* single DES is expressed as 3DES with K‖K‖K (EDE with equal keys reduces to one DES encryption).

The MACs here are the ISO/IEC 9797-1:2011 CBC-MACs card protocols use:

* :func:`retail_mac` — MAC algorithm 3 ("retail MAC", ANSI X9.19), output transformation 3;
* :func:`des3_cbc_mac` — MAC algorithm 1 with full 3DES as the block cipher.
"""

from __future__ import annotations

import logging

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.cmac import CMAC

from cardkit.crypto.padding import pad_m2
from cardkit.errors import CryptoError, KeyError_

__all__ = [
    "DES_BLOCK",
    "des3_cbc_decrypt",
    "des3_cbc_encrypt",
    "des3_cbc_mac",
    "des3_cmac",
    "des3_ecb_decrypt",
    "des3_ecb_encrypt",
    "des3_key24",
    "des_cbc_decrypt",
    "des_cbc_encrypt",
    "des_ecb_decrypt",
    "des_ecb_encrypt",
    "retail_mac",
]

logger = logging.getLogger(__name__)

# FIPS 46-3 §1 / NIST SP 800-67 Rev. 2 §3: the DES/TDEA block is 64 bits.
DES_BLOCK = 8
# NIST SP 800-67 Rev. 2 §3.1: a TDEA key bundle is three 64-bit keys; keying option 2 gives 2 distinct keys.
_DES_KEY = 8
_TDES_KEY2 = 16
_TDES_KEY3 = 24


def des3_key24(key: bytes) -> bytes:
    """Expand a Triple-DES key to the 24-byte bundle K1‖K2‖K3.

    16 bytes (K1‖K2, keying option 2) become K1‖K2‖K1; 24 bytes are returned unchanged
    (NIST SP 800-67 Rev. 2 §3.1). Any other length raises :class:`~cardkit.errors.KeyError_`.
    """
    key = bytes(key)
    if len(key) == _TDES_KEY2:
        return key + key[:_DES_KEY]
    if len(key) == _TDES_KEY3:
        return key
    raise KeyError_(f"3DES key must be 16 or 24 bytes, got {len(key)}")


def _des_key24(key8: bytes) -> bytes:
    key8 = bytes(key8)
    if len(key8) != _DES_KEY:
        raise KeyError_(f"single-DES key must be 8 bytes, got {len(key8)}")
    return key8 * 3


def _check_aligned(data: bytes, what: str) -> None:
    if len(data) % DES_BLOCK:
        raise CryptoError(f"{what}: data length {len(data)} is not a multiple of {DES_BLOCK}")


def _iv(iv: bytes | None) -> bytes:
    if iv is None:
        return bytes(DES_BLOCK)
    iv = bytes(iv)
    if len(iv) != DES_BLOCK:
        raise CryptoError(f"IV must be {DES_BLOCK} bytes, got {len(iv)}")
    return iv


def _run(key24: bytes, mode: modes.ECB | modes.CBC, data: bytes, encrypt: bool) -> bytes:
    cipher = Cipher(TripleDES(key24), mode)
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


# --- Triple-DES --------------------------------------------------------------------------------------------


def des3_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """3DES-ECB encryption (NIST SP 800-67 Rev. 2, NIST SP 800-38A §6.1); data must be 8-byte aligned."""
    k = des3_key24(key)
    _check_aligned(data, "3DES-ECB")
    return _run(k, modes.ECB(), bytes(data), True)


def des3_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    """3DES-ECB decryption; data must be 8-byte aligned."""
    k = des3_key24(key)
    _check_aligned(data, "3DES-ECB")
    return _run(k, modes.ECB(), bytes(data), False)


def des3_cbc_encrypt(key: bytes, data: bytes, iv: bytes | None = None) -> bytes:
    """3DES-CBC encryption (NIST SP 800-38A §6.2); ``iv`` None means 8 zero bytes."""
    k = des3_key24(key)
    _check_aligned(data, "3DES-CBC")
    return _run(k, modes.CBC(_iv(iv)), bytes(data), True)


def des3_cbc_decrypt(key: bytes, data: bytes, iv: bytes | None = None) -> bytes:
    """3DES-CBC decryption; ``iv`` None means 8 zero bytes."""
    k = des3_key24(key)
    _check_aligned(data, "3DES-CBC")
    return _run(k, modes.CBC(_iv(iv)), bytes(data), False)


# --- single DES (through TDEA with K‖K‖K) ------------------------------------------------------------------


def des_ecb_encrypt(key8: bytes, data: bytes) -> bytes:
    """Single-DES ECB encryption (FIPS 46-3), computed as 3DES with the bundle K‖K‖K."""
    k = _des_key24(key8)
    _check_aligned(data, "DES-ECB")
    return _run(k, modes.ECB(), bytes(data), True)


def des_ecb_decrypt(key8: bytes, data: bytes) -> bytes:
    """Single-DES ECB decryption, computed as 3DES with the bundle K‖K‖K."""
    k = _des_key24(key8)
    _check_aligned(data, "DES-ECB")
    return _run(k, modes.ECB(), bytes(data), False)


def des_cbc_encrypt(key8: bytes, data: bytes, iv: bytes | None = None) -> bytes:
    """Single-DES CBC encryption; ``iv`` None means 8 zero bytes."""
    k = _des_key24(key8)
    _check_aligned(data, "DES-CBC")
    return _run(k, modes.CBC(_iv(iv)), bytes(data), True)


def des_cbc_decrypt(key8: bytes, data: bytes, iv: bytes | None = None) -> bytes:
    """Single-DES CBC decryption; ``iv`` None means 8 zero bytes."""
    k = _des_key24(key8)
    _check_aligned(data, "DES-CBC")
    return _run(k, modes.CBC(_iv(iv)), bytes(data), False)


# --- MACs ---------------------------------------------------------------------------------------------------


def _mac_input(data: bytes, pad: bool, what: str) -> bytes:
    data = bytes(data)
    if pad:
        return pad_m2(data, DES_BLOCK)
    if not data:
        raise CryptoError(f"{what}: empty data without padding")
    _check_aligned(data, what)
    return data


def retail_mac(key: bytes, data: bytes, iv: bytes | None = None, *, pad: bool = True) -> bytes:
    """ISO/IEC 9797-1:2011 MAC algorithm 3 (the "retail MAC", ANSI X9.19), 8-byte result.

    Single-DES CBC over all blocks under K1 (initial value ``iv``, zeros by default), then output
    transformation 3 on the last block: decrypt under K2, encrypt under K1 (ISO/IEC 9797-1:2011, MAC
    algorithm 3 with output transformation 3). With ``pad=True`` the data is padded with padding method 2
    (``80 00..``); with ``pad=False`` it must already be a non-empty multiple of 8 bytes.

    ``key`` is K1‖K2 (16 bytes); a 24-byte bundle is accepted only if K3 = K1.
    """
    k = bytes(key)
    if len(k) == _TDES_KEY3:
        if k[16:] != k[:8]:
            raise KeyError_("retail MAC uses two keys: a 24-byte key must have K3 = K1")
        k = k[:16]
    elif len(k) != _TDES_KEY2:
        raise KeyError_(f"retail MAC key must be 16 bytes (K1‖K2), got {len(k)}")
    msg = _mac_input(data, pad, "retail MAC")
    k1, k2 = k[:8], k[8:16]
    last = des_cbc_encrypt(k1, msg, iv)[-DES_BLOCK:]
    # ISO/IEC 9797-1:2011 output transformation 3: G = e_K1(d_K2(H_q)).
    return des_ecb_encrypt(k1, des_ecb_decrypt(k2, last))


def des3_cbc_mac(key: bytes, data: bytes, iv: bytes | None = None, *, pad: bool = True) -> bytes:
    """ISO/IEC 9797-1:2011 MAC algorithm 1 with 3DES as block cipher: last block of 3DES-CBC, 8 bytes.

    ``pad=True`` applies padding method 2 first; otherwise data must be a non-empty multiple of 8.
    """
    des3_key24(key)  # key size check before anything else
    msg = _mac_input(data, pad, "3DES CBC-MAC")
    return des3_cbc_encrypt(key, msg, iv)[-DES_BLOCK:]


def des3_cmac(key: bytes, data: bytes) -> bytes:
    """CMAC (NIST SP 800-38B §6) with TDEA as the block cipher: the full 8-byte tag."""
    c = CMAC(TripleDES(des3_key24(key)))
    c.update(bytes(data))
    return c.finalize()
