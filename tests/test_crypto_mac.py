"""CMAC over AES, SM4 and 3DES against an independent NIST SP 800-38B construction; verification."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.crypto import Alg, aes_cmac, block_size, cmac, cmac_verify, ecb_encrypt, sm4_cmac
from cardkit.errors import KeyError_, SecureChannelError

# NIST SP 800-38B §5.3: Rb for 128-bit and 64-bit blocks.
RB = {16: 0x87, 8: 0x1B}


def _dbl(block: bytes) -> bytes:
    n = int.from_bytes(block, "big") << 1
    if n >> (8 * len(block)):
        n = (n & ((1 << (8 * len(block))) - 1)) ^ RB[len(block)]
    return n.to_bytes(len(block), "big")


def reference_cmac(alg: Alg, key: bytes, msg: bytes) -> bytes:
    """NIST SP 800-38B §6.1/§6.2 written out over cardkit's ECB, as an independent check."""
    bs = block_size(alg)
    k1 = _dbl(ecb_encrypt(alg, key, bytes(bs)))
    k2 = _dbl(k1)
    if msg and len(msg) % bs == 0:
        last = bytes(a ^ b for a, b in zip(msg[-bs:], k1, strict=True))
        head = msg[:-bs]
    else:
        cut = len(msg) - len(msg) % bs
        tail = msg[cut:] + b"\x80" + bytes(bs - 1 - len(msg) % bs)
        last = bytes(a ^ b for a, b in zip(tail, k2, strict=True))
        head = msg[:cut]
    c = bytes(bs)
    for i in range(0, len(head), bs):
        c = ecb_encrypt(alg, key, bytes(a ^ b for a, b in zip(c, head[i : i + bs], strict=True)))
    return ecb_encrypt(alg, key, bytes(a ^ b for a, b in zip(c, last, strict=True)))


KEYS = {Alg.AES: bytes(range(16)), Alg.SM4: bytes(range(16, 32)), Alg.DES3: bytes(range(32, 56))}


@settings(max_examples=40)
@given(st.sampled_from(list(Alg)), st.binary(max_size=70))
def test_cmac_matches_reference(alg: Alg, msg: bytes) -> None:
    tag = cmac(alg, KEYS[alg], msg)
    assert len(tag) == block_size(alg)
    assert tag == reference_cmac(alg, KEYS[alg], msg)


def test_wrappers() -> None:
    assert aes_cmac(KEYS[Alg.AES], b"x") == cmac(Alg.AES, KEYS[Alg.AES], b"x")
    assert sm4_cmac(KEYS[Alg.SM4], b"x") == cmac(Alg.SM4, KEYS[Alg.SM4], b"x")
    assert sm4_cmac(KEYS[Alg.SM4], b"x") != aes_cmac(KEYS[Alg.SM4], b"x")


@pytest.mark.parametrize("alg", list(Alg))
def test_verify_full_and_truncated(alg: Alg) -> None:
    tag = cmac(alg, KEYS[alg], b"data")
    cmac_verify(alg, KEYS[alg], b"data", tag)
    cmac_verify(alg, KEYS[alg], b"data", tag[:8])
    cmac_verify(alg, KEYS[alg], b"data", tag[:4])


@pytest.mark.parametrize("alg", list(Alg))
def test_verify_rejects(alg: Alg) -> None:
    tag = cmac(alg, KEYS[alg], b"data")
    bad = bytes([tag[0] ^ 1]) + tag[1:8]
    with pytest.raises(SecureChannelError) as ei:
        cmac_verify(alg, KEYS[alg], b"data", bad)
    assert tag[:8].hex() not in str(ei.value).lower()
    with pytest.raises(SecureChannelError):
        cmac_verify(alg, KEYS[alg], b"datA", tag)
    with pytest.raises(SecureChannelError):
        cmac_verify(alg, KEYS[alg], b"data", b"")
    with pytest.raises(SecureChannelError):
        cmac_verify(alg, KEYS[alg], b"data", tag + b"\x00")


def test_wrong_key_size() -> None:
    with pytest.raises(KeyError_):
        cmac(Alg.SM4, bytes(24), b"")
    with pytest.raises(KeyError_):
        cmac(Alg.DES3, bytes(8), b"")
    with pytest.raises(KeyError_):
        cmac_verify(Alg.AES, bytes(15), b"", bytes(8))
