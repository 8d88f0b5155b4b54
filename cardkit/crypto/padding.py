"""Block padding for MACs and secure messaging.

ISO/IEC 9797-1:2011 §6.3 defines the padding methods used by card protocols:

* method 1 — append zero bytes until the length is a multiple of the block size (nothing is added to
  data that is already aligned; empty data becomes one block of zeros);
* method 2 — append ``80`` then zero bytes until aligned (always at least one byte). This is the padding
  of ISO 7816-4:2020 §10.2 (padding-content indicator ``01``) and of GlobalPlatform SCP02/SCP03.
"""

from __future__ import annotations

from cardkit.errors import CryptoError, PaddingError

__all__ = ["pad_m1", "pad_m2", "unpad_m2"]

# ISO/IEC 9797-1:2011 §6.3.2 / ISO 7816-4:2020 §10.2: the mandatory first padding byte of method 2.
_M2_MARKER = 0x80


def _check_block(block: int) -> None:
    if not isinstance(block, int) or isinstance(block, bool) or block <= 0 or block > 255:
        raise CryptoError(f"block size must be an integer in 1..255, got {block!r}")


def pad_m1(data: bytes, block: int) -> bytes:
    """ISO/IEC 9797-1 padding method 1: zero bytes up to a block multiple.

    Aligned non-empty data is returned unchanged; empty data becomes one block of zeros
    (ISO/IEC 9797-1:2011 §6.3.1).
    """
    _check_block(block)
    data = bytes(data)
    if not data:
        return bytes(block)
    rem = len(data) % block
    return data if rem == 0 else data + bytes(block - rem)


def pad_m2(data: bytes, block: int) -> bytes:
    """ISO/IEC 9797-1 padding method 2 (= ISO 7816-4 §10.2): ``80`` then zeros up to a block multiple."""
    _check_block(block)
    data = bytes(data) + bytes([_M2_MARKER])
    rem = len(data) % block
    return data if rem == 0 else data + bytes(block - rem)


def unpad_m2(data: bytes, block: int) -> bytes:
    """Strip ISO/IEC 9797-1 method-2 padding; strict.

    Raises :class:`~cardkit.errors.PaddingError` when the input is empty or not block aligned, when the
    bytes after the last ``80`` are not all zero, when no ``80`` is found, or when the padding is longer
    than one block (method 2 never adds more than one block).
    """
    _check_block(block)
    data = bytes(data)
    if not data or len(data) % block:
        raise PaddingError(f"padded data length {len(data)} is not a positive multiple of {block}")
    # Scan at most one block from the end: padding is 1..block bytes.
    for i in range(len(data) - 1, max(len(data) - block, 0) - 1, -1):
        b = data[i]
        if b == _M2_MARKER:
            return data[:i]
        if b != 0x00:
            raise PaddingError("method-2 padding: non-zero byte found before the 80 marker")
    raise PaddingError("method-2 padding: no 80 marker in the last block")
