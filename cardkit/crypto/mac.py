"""CMAC (NIST SP 800-38B) over AES, SM4 and 3DES, and a constant-time verifier.

CMAC with AES is the MAC of GlobalPlatform SCP03 (GPCS v2.3 Amendment D, C-MAC/R-MAC); with SM4 it is used by
Chinese secure-messaging profiles; with 3DES (64-bit block, Rb = 0x1B, NIST SP 800-38B §5.3) by some
EAC/PACE cards. The tag returned is always the full block; callers truncate (SCP03 uses 8 bytes).
"""

from __future__ import annotations

import hmac
import threading
from typing import Any

from cryptography.hazmat.primitives.cmac import CMAC

from cardkit.crypto import legacy
from cardkit.crypto.sym import Alg, _cipher, block_size, check_key, sm3
from cardkit.errors import SecureChannelError

__all__ = ["aes_cmac", "cmac", "cmac_verify", "sm3", "sm4_cmac"]


def cmac(alg: Alg, key: bytes, data: bytes) -> bytes:
    """CMAC (NIST SP 800-38B §6.2) of ``data`` under ``key``; full block (16 bytes AES/SM4, 8 bytes 3DES)."""
    check_key(alg, key)
    key = bytes(key)
    if alg is Alg.DES3:
        return legacy.des3_cmac(key, data)
    c: CMAC = _base_cmac(alg, key).copy()
    c.update(bytes(data))
    return c.finalize()


# One keyed CMAC object per (thread, key), copied for each message (the subkeys are computed once).
_local = threading.local()


def _base_cmac(alg: Alg, key: bytes) -> Any:
    cache: dict[tuple[Alg, bytes], Any] | None = getattr(_local, "cmac", None)
    if cache is None:
        cache = _local.cmac = {}
    base = cache.get((alg, key))
    if base is None:
        if len(cache) >= 64:
            cache.clear()
        base = cache[(alg, key)] = CMAC(_cipher(alg, key))
    return base


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC (NIST SP 800-38B, RFC 4493): 16-byte tag."""
    return cmac(Alg.AES, key, data)


def sm4_cmac(key: bytes, data: bytes) -> bytes:
    """SM4-CMAC (NIST SP 800-38B construction with the SM4 block cipher, GB/T 32907-2016): 16-byte tag."""
    return cmac(Alg.SM4, key, data)


def cmac_verify(alg: Alg, key: bytes, data: bytes, mac: bytes) -> None:
    """Check a (possibly truncated) CMAC; raise :class:`~cardkit.errors.SecureChannelError` on mismatch.

    The expected tag is truncated to ``len(mac)`` (its leftmost bytes, NIST SP 800-38B §6.2 step 7) and
    compared in constant time. An empty tag or one longer than the block is rejected. NIST SP 800-38B
    Appendix A advises at least 64-bit tags; shorter tags (e.g. 4-byte) are accepted for legacy profiles.
    """
    mac = bytes(mac)
    bs = block_size(alg)
    if not 1 <= len(mac) <= bs:
        raise SecureChannelError(f"MAC length {len(mac)} is outside 1..{bs}")
    expected = cmac(alg, key, data)[: len(mac)]
    if not hmac.compare_digest(expected, mac):
        raise SecureChannelError("MAC verification failed")
