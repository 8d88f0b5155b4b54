"""PUT KEY key data (GPCS 2.3.1 §11.8, Amendment D §7.2): build it on the host, parse and check it on the card.

The command data of PUT KEY for a key set is ``new KVN ‖ key data field × n`` (§11.8.2.3), each key data field
being ``key type ‖ length ‖ key data value ‖ KCV length ‖ KCV``:

* a 3DES key (type ``80``): the key (16 or 24 bytes) encrypted with 3DES-ECB under the DEK;
* an AES key (type ``88``, Amendment D §7.2): ``clear key length (1) ‖ encrypted key``, so the length byte is
  1 + the cryptogram length. Under an AES DEK the key is encrypted with AES-CBC, zero ICV; a 24-byte key is
  zero-padded to 32 bytes first (the clear-length byte tells the true length). Under a 3DES DEK (SCP02 cards
  that hold AES keys) the key is encrypted with 3DES-ECB.
* KCV (3 bytes): 3DES keys — 3DES-ECB(key, 8×00); AES keys — AES-ECB(key, 16×01) (GPCS 2.3.1 §11.8.2.3,
  Amendment D §7.2.2).

The DEK is the *session* DEK in SCP02 (GPCS 2.3.1 §E.4.7) and the *static* K-DEK in SCP03 (Amendment D §7.2);
the open channels expose the right one as ``channel.dek``. The card answers ``new KVN ‖ KCV × n`` (§11.8.3).
Errors carry the status word a card would answer (6A80 wrong data, 9484 algorithm not supported, 9485
invalid key check value, §11.8.3.2) and never key bytes.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cardkit.apdu import LE_MAX_SHORT, CommandApdu
from cardkit.crypto import (
    Alg,
    KcvMethod,
    cbc_decrypt,
    cbc_encrypt,
    check_key,
    des3_ecb_decrypt,
    des3_ecb_encrypt,
    kcv,
)
from cardkit.errors import CardkitError, KeyError_, ParseError
from cardkit.sm.gp import GpKeySet

__all__ = [
    "KCV_LENGTH",
    "KEY_TYPE_AES",
    "KEY_TYPE_DES",
    "KeyAlgorithmError",
    "KeyCheckValueError",
    "PutKeyData",
    "PutKeyError",
    "PutKeyFormatError",
    "check_put_key_response",
    "decode_put_key_data",
    "decrypt_with_dek",
    "encode_key",
    "encrypt_with_dek",
    "key_check_value",
    "parse_put_key_data",
    "put_key_apdu",
    "put_key_data",
    "put_key_response",
]

logger = logging.getLogger(__name__)

# GPCS 2.3.1 §11.1.8 Table "key type coding": 80 = DES (mode implicitly known), 88 = AES.
KEY_TYPE_DES = 0x80
KEY_TYPE_AES = 0x88
# GPCS 2.3.1 §11.8.2.3: the KCV is the leftmost 3 bytes.
KCV_LENGTH = 3
# GPCS 2.3.1 §11.8.2: PUT KEY is CLA 80 INS D8; P2 b8 = "multiple keys", b7-b1 = first key identifier.
_CLA_GP = 0x80
_INS_PUT_KEY = 0xD8
_P2_MULTIPLE = 0x80
# FIPS 197 / NIST SP 800-67: block sizes of the DEK ciphers.
_AES_BLOCK = 16
_DES_BLOCK = 8
# GPCS 2.3.1 §11.8.3.2: PUT KEY status words for the errors below.
_SW_WRONG_DATA = 0x6A80
_SW_ALG_NOT_SUPPORTED = 0x9484
_SW_BAD_KCV = 0x9485


class PutKeyError(CardkitError):
    """PUT KEY data that cannot be built, parsed or confirmed. ``sw`` is what a card answers for it."""

    sw = _SW_WRONG_DATA


class PutKeyFormatError(PutKeyError, ParseError):
    """Malformed PUT KEY data (wrong lengths, truncated fields): a card answers 6A80."""


class KeyAlgorithmError(PutKeyError):
    """A key type or key / DEK combination that is not supported: a card answers 9484."""

    sw = _SW_ALG_NOT_SUPPORTED


class KeyCheckValueError(PutKeyError):
    """A key check value that does not match its key: a card answers 9485."""

    sw = _SW_BAD_KCV


def key_check_value(key: bytes, alg: Alg) -> bytes:
    """The 3-byte GP KCV of ``key``: 3DES over 8×00, AES over 16×01."""
    if alg is Alg.DES3:
        return kcv(key, KcvMethod.DES3_ZEROS)
    if alg is Alg.AES:
        return kcv(key, KcvMethod.AES_GP)
    raise KeyAlgorithmError(f"no GP key check value for {alg.value} keys")


def _check_dek(dek: bytes, dek_alg: Alg) -> None:
    if dek_alg not in (Alg.AES, Alg.DES3):
        raise KeyAlgorithmError(f"a DEK is AES or 3DES, not {dek_alg.value}")
    try:
        check_key(dek_alg, dek)
    except KeyError_ as exc:
        raise KeyAlgorithmError(f"DEK: {exc}") from None


def encrypt_with_dek(dek: bytes, data: bytes, dek_alg: Alg) -> bytes:
    """Sensitive-data encryption: AES-CBC, zero ICV (SCP03, Amendment D §7.2) or 3DES-ECB (SCP02, §E.4.7).

    ``data`` must be block aligned (16 or 8 bytes).
    """
    _check_dek(dek, dek_alg)
    block = _AES_BLOCK if dek_alg is Alg.AES else _DES_BLOCK
    if not data or len(data) % block:
        raise PutKeyFormatError(f"data to encrypt under the DEK must be a non-empty multiple of {block} bytes")
    return cbc_encrypt(Alg.AES, dek, data) if dek_alg is Alg.AES else des3_ecb_encrypt(dek, data)


def decrypt_with_dek(dek: bytes, data: bytes, dek_alg: Alg) -> bytes:
    """Inverse of :func:`encrypt_with_dek`."""
    _check_dek(dek, dek_alg)
    block = _AES_BLOCK if dek_alg is Alg.AES else _DES_BLOCK
    if not data or len(data) % block:
        raise PutKeyFormatError(f"encrypted key data must be a non-empty multiple of {block} bytes, got {len(data)}")
    return cbc_decrypt(Alg.AES, dek, data) if dek_alg is Alg.AES else des3_ecb_decrypt(dek, data)


def encode_key(key: bytes, key_alg: Alg, dek: bytes, dek_alg: Alg) -> bytes:
    """One key data field: type ‖ length ‖ [clear length ‖] encrypted key ‖ 03 ‖ KCV."""
    try:
        check_key(key_alg, key)
    except KeyError_ as exc:
        raise KeyAlgorithmError(f"new key: {exc}") from None
    key = bytes(key)
    if key_alg is Alg.DES3:
        if dek_alg is not Alg.DES3:
            raise KeyAlgorithmError("3DES keys are sent under a 3DES DEK (SCP02); an AES DEK cannot carry them")
        body = encrypt_with_dek(dek, key, dek_alg)
        field_ = bytes([KEY_TYPE_DES, len(body)]) + body
    elif key_alg is Alg.AES:
        block = _AES_BLOCK if dek_alg is Alg.AES else _DES_BLOCK
        padded = key + bytes(-len(key) % block)
        body = encrypt_with_dek(dek, padded, dek_alg)
        field_ = bytes([KEY_TYPE_AES, len(body) + 1, len(key)]) + body
    else:
        raise KeyAlgorithmError(f"PUT KEY carries AES or 3DES keys, not {key_alg.value}")
    return field_ + bytes([KCV_LENGTH]) + key_check_value(key, key_alg)


def put_key_data(new_keys: GpKeySet, new_version: int, dek_key: bytes, alg: Alg) -> bytes:
    """PUT KEY command data for a whole key set: ``new KVN ‖ ENC ‖ MAC ‖ DEK`` key data fields.

    ``dek_key`` / ``alg`` are the encrypting DEK and its algorithm (``channel.dek`` and the channel's key set
    algorithm); ``new_keys.alg`` says how the new keys are typed (``80`` 3DES, ``88`` AES).
    """
    if not isinstance(new_version, int) or not 1 <= new_version <= 0x7F:
        # GPCS 2.3.1 §11.1.8: KVN 01..7F for key sets (00 "first available", FF the initial test set).
        raise PutKeyFormatError(f"new key version number must be 01..7F, got {new_version!r}")
    return bytes([new_version]) + b"".join(
        encode_key(k, new_keys.alg, dek_key, alg) for k in (new_keys.enc, new_keys.mac, new_keys.dek))


def put_key_apdu(old_version: int, data: bytes, *, first_key_id: int = 1) -> CommandApdu:
    """PUT KEY (GPCS 2.3.1 §11.8.2): ``80 D8 old-KVN 80|first-id data 00``; P1 00 adds a new key set."""
    if not 0 <= old_version <= 0xFF or not 1 <= first_key_id <= 0x7F:
        raise PutKeyFormatError(f"bad PUT KEY parameters: old KVN {old_version!r}, first key id {first_key_id!r}")
    return CommandApdu(_CLA_GP, _INS_PUT_KEY, old_version, _P2_MULTIPLE | first_key_id, bytes(data),
                       le=LE_MAX_SHORT, name="PUT KEY", sensitive=True)


# ------------------------------------------------------------------------------------------------ card side


@dataclass(frozen=True)
class PutKeyData:
    """Decoded PUT KEY data: the new key version, the clear keys (hidden from repr), their types and KCVs."""

    version: int
    keys: tuple[bytes, ...] = field(repr=False)
    key_types: tuple[int, ...]
    kcvs: tuple[bytes, ...]

    @property
    def algs(self) -> tuple[Alg, ...]:
        return tuple(Alg.AES if t == KEY_TYPE_AES else Alg.DES3 for t in self.key_types)


def _take(data: bytes, pos: int, n: int, what: str) -> bytes:
    if pos + n > len(data):
        raise PutKeyFormatError(f"PUT KEY data truncated in {what}: {n} bytes needed, {len(data) - pos} left",
                                offset=pos)
    return data[pos : pos + n]


def decode_put_key_data(data: bytes, dek_key: bytes, *, dek_alg: Alg) -> PutKeyData:
    """Parse, decrypt and check PUT KEY data (card side). Every KCV present must match its key."""
    data = bytes(data)
    _check_dek(dek_key, dek_alg)
    if not data:
        raise PutKeyFormatError("PUT KEY data is empty")
    version = data[0]
    pos = 1
    keys: list[bytes] = []
    types: list[int] = []
    kcvs: list[bytes] = []
    while pos < len(data):
        n = len(keys) + 1
        key_type, length = _take(data, pos, 2, f"key {n} header")
        value = _take(data, pos + 2, length, f"key {n} value")
        pos += 2 + length
        if key_type == KEY_TYPE_DES:
            if dek_alg is not Alg.DES3:
                raise KeyAlgorithmError(f"key {n}: a 3DES key under an AES DEK is not supported")
            key, alg = decrypt_with_dek(dek_key, value, dek_alg), Alg.DES3
        elif key_type == KEY_TYPE_AES:
            if not value:
                raise PutKeyFormatError(f"key {n}: AES key data has no clear-length byte", offset=pos - length)
            clear_len = value[0]
            plain = decrypt_with_dek(dek_key, value[1:], dek_alg)
            if clear_len not in (16, 24, 32) or clear_len > len(plain) or any(plain[clear_len:]):
                raise PutKeyFormatError(f"key {n}: AES key length {clear_len} does not fit its cryptogram")
            key, alg = plain[:clear_len], Alg.AES
        else:
            raise KeyAlgorithmError(f"key {n}: key type {key_type:02X} is not supported (80 3DES, 88 AES)")
        try:
            check_key(alg, key)
        except KeyError_ as exc:
            raise PutKeyFormatError(f"key {n}: {exc}") from None
        (kcv_len,) = _take(data, pos, 1, f"key {n} KCV length")
        check = _take(data, pos + 1, kcv_len, f"key {n} KCV")
        pos += 1 + kcv_len
        if kcv_len:
            if kcv_len > KCV_LENGTH or not hmac.compare_digest(key_check_value(key, alg)[:kcv_len], check):
                raise KeyCheckValueError(f"key {n} (type {key_type:02X}): key check value does not match")
        keys.append(key)
        types.append(key_type)
        kcvs.append(key_check_value(key, alg))
    if not keys:
        raise PutKeyFormatError("PUT KEY data holds a key version but no key")
    return PutKeyData(version, tuple(keys), tuple(types), tuple(kcvs))


def parse_put_key_data(data: bytes, dek_key: bytes, *, dek_alg: Alg) -> tuple[int, list[bytes]]:
    """Card side: ``(new key version, [clear keys])`` after checking every KCV (see :func:`decode_put_key_data`)."""
    decoded = decode_put_key_data(data, dek_key, dek_alg=dek_alg)
    return decoded.version, list(decoded.keys)


def put_key_response(version: int, kcvs: Sequence[bytes]) -> bytes:
    """The PUT KEY response data (GPCS 2.3.1 §11.8.3): ``new KVN ‖ KCV1 ‖ KCV2 …``."""
    return bytes([version]) + b"".join(bytes(k) for k in kcvs)


def check_put_key_response(resp_data: bytes, expected_kcvs: Sequence[bytes] | Mapping[str, bytes], *,
                           expected_version: int | None = None) -> None:
    """Host side: the card's answer must repeat the new KVN and the KCVs of the keys sent, in order.

    ``expected_kcvs`` is a list of 3-byte KCVs or :meth:`GpKeySet.kcvs` (ENC, MAC, DEK order).
    """
    kcvs = [expected_kcvs[k] for k in ("enc", "mac", "dek")] if isinstance(expected_kcvs, Mapping) \
        else [bytes(k) for k in expected_kcvs]
    resp_data = bytes(resp_data)
    want = 1 + KCV_LENGTH * len(kcvs)
    if len(resp_data) != want:
        raise PutKeyFormatError(f"PUT KEY response must be {want} bytes (KVN + {len(kcvs)} KCVs), got {len(resp_data)}")
    if expected_version is not None and resp_data[0] != expected_version:
        raise PutKeyError(f"card reports key version {resp_data[0]:02X}, expected {expected_version:02X}")
    for n, k in enumerate(kcvs):
        got = resp_data[1 + KCV_LENGTH * n : 1 + KCV_LENGTH * (n + 1)]
        if not hmac.compare_digest(got, k[:KCV_LENGTH]):
            raise KeyCheckValueError(
                f"key {n + 1}: card reports KCV {got.hex().upper()}, expected {k[:KCV_LENGTH].hex().upper()}")
