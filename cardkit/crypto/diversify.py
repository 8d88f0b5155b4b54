"""Card key diversification: per-card keys from a master key and card data.

Fixed schemes (the 3DES ones produce a 16-byte card key from the 10-byte *key diversification data*
(KDD) that starts the INITIALIZE UPDATE response, GPCS 2.3.1 §E.5.1 (SCP02) / Amendment D §7.1.1 (SCP03)):

* :func:`emv_cps` — EMV Card Personalization Specification v1.1 §4.1: 3DES-ECB(KMC,
  KDD[4..9] ‖ F0 ‖ id ‖ KDD[4..9] ‖ 0F ‖ id);
* :func:`visa2` — the VISA2 scheme (Visa GlobalPlatform 2.1.1 Card Implementation Requirements):
  3DES-ECB(KMC, KDD[0..1] ‖ KDD[4..7] ‖ F0 ‖ id ‖ KDD[0..1] ‖ KDD[4..7] ‖ 0F ‖ id), i.e. the last two
  bytes of the card manager AID and the 4-byte IC serial number;
* :func:`kdf3` — the AES scheme GlobalPlatformPro names "kdf3": NIST SP 800-108 counter mode with
  AES-CMAC, PRF input ``i ‖ 00 00 00 id 00 ‖ KDD`` (counter first, no L field), output as long as the
  master key. This is *not* the SCP03 session-key KDF of GPCS Amendment D.

Key ids (EMV CPS v1.1 §4.1): 01 = ENC (auth/enc), 02 = MAC, 03 = DEK (KEK).

:class:`DiversificationTemplate` expresses such layouts as data (profiles carry them), and :func:`chain`
implements multi-level diversification.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cardkit.crypto.kdf import adjust_des_parity, sp800_108_cmac
from cardkit.crypto.sym import Alg, block_size, check_key, ecb_encrypt
from cardkit.errors import CryptoError

__all__ = [
    "EMV_CPS_TEMPLATE",
    "VISA2_TEMPLATE",
    "DiversificationTemplate",
    "TemplateError",
    "chain",
    "emv_cps",
    "kdf3",
    "visa2",
]

logger = logging.getLogger(__name__)

# GPCS 2.3.1 §E.5.1 / Amd D §7.1.1 (INITIALIZE UPDATE response): key diversification data is 10 bytes.
KDD_LEN = 10
# EMV CPS v1.1 §4.1: diversification data separators before the key id (left / right half).
_LEFT_TAG = 0xF0
_RIGHT_TAG = 0x0F
# Multi-level schemes (EMV 4.3 Book 2 Annex A1.4.1 option A style, PBOC 3.0 / social-security PSAM practice):
# each level's diversification data is 8 bytes.
LEVEL_LEN = 8


class TemplateError(CryptoError):
    """A diversification template that cannot be parsed or evaluated (unknown token, missing value)."""


def _check_kdd(kdd: bytes) -> bytes:
    kdd = bytes(kdd)
    if len(kdd) != KDD_LEN:
        raise CryptoError(f"key diversification data must be {KDD_LEN} bytes, got {len(kdd)}")
    return kdd


def _check_id(key_id: int) -> int:
    if not isinstance(key_id, int) or isinstance(key_id, bool) or not 0 <= key_id <= 0xFF:
        raise CryptoError(f"key id must be one byte, got {key_id!r}")
    return key_id


def emv_cps(master: bytes, kdd: bytes, key_id: int) -> bytes:
    """EMV CPS v1.1 Annex A key derivation: 3DES-ECB(master, KDD[4..9]‖F0‖id‖KDD[4..9]‖0F‖id), 16 bytes."""
    check_key(Alg.DES3, master)
    k, i = _check_kdd(kdd), _check_id(key_id)
    data = k[4:10] + bytes([_LEFT_TAG, i]) + k[4:10] + bytes([_RIGHT_TAG, i])
    return ecb_encrypt(Alg.DES3, master, data)


def visa2(master: bytes, kdd: bytes, key_id: int) -> bytes:
    """VISA2 key derivation: 3DES-ECB(master, KDD[0..1]‖KDD[4..7]‖F0‖id‖KDD[0..1]‖KDD[4..7]‖0F‖id)."""
    check_key(Alg.DES3, master)
    k, i = _check_kdd(kdd), _check_id(key_id)
    half = k[0:2] + k[4:8]
    data = half + bytes([_LEFT_TAG, i]) + half + bytes([_RIGHT_TAG, i])
    return ecb_encrypt(Alg.DES3, master, data)


def kdf3(master: bytes, kdd: bytes, key_id: int) -> bytes:
    """GlobalPlatformPro's "kdf3" AES diversification (its template ``$_ 00 00 00 $k 00 $0..$9``).

    NIST SP 800-108 counter mode, PRF = AES-CMAC(master), 8-bit counter first, fixed input
    ``00 00 00 id 00 ‖ KDD``; the result is as long as ``master`` (16, 24 or 32 bytes).
    """
    check_key(Alg.AES, master)
    k, i = _check_kdd(kdd), _check_id(key_id)
    fixed = bytes([0, 0, 0, i, 0]) + k
    return sp800_108_cmac(master, Alg.AES, b"", fixed, len(master) * 8, counter_bytes=1)


# --- templates -----------------------------------------------------------------------------------------

_SLICE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\[(?P<a>-?\d*)(?::(?P<b>-?\d*))?\]$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEX = re.compile(r"^(?:0[xX])?(?P<hex>(?:[0-9A-Fa-f]{2})+)$")


@dataclass(frozen=True)
class _Token:
    literal: bytes | None
    name: str | None
    start: int | None
    stop: int | None
    single: bool
    invert: bool


def _parse_token(tok: str) -> _Token:
    invert = tok.startswith("~")
    body = tok[1:] if invert else tok
    if body.startswith("field:"):
        name = body[len("field:") :]
        if not _NAME.match(name):
            raise TemplateError(f"bad field name in template token {tok!r}")
        return _Token(None, name, None, None, False, invert)
    m = _SLICE.match(body)
    if m:
        a, b = m.group("a"), m.group("b")
        single = b is None
        if single and not a:
            raise TemplateError(f"empty index in template token {tok!r}")
        start = int(a) if a else None
        stop = (int(b) if b else None) if not single else None
        return _Token(None, m.group("name"), start, stop, single, invert)
    h = _HEX.match(body)
    if h:
        return _Token(bytes.fromhex(h.group("hex")), None, None, None, False, invert)
    if _NAME.match(body):
        return _Token(None, body, None, None, False, invert)
    raise TemplateError(f"unknown template token {tok!r}")


def _resolve(t: _Token, raw: str, values: Mapping[str, bytes]) -> bytes:
    if t.literal is not None:
        out = t.literal
    else:
        name = t.name or ""
        if name not in values:
            raise TemplateError(f"template needs value {name!r}, which was not given")
        v = values[name]
        if isinstance(v, int) and not isinstance(v, bool):
            v = _check_id(v).to_bytes(1, "big")
        v = bytes(v)
        if t.single:
            idx = t.start or 0
            if not -len(v) <= idx < len(v):
                raise TemplateError(f"token {raw!r}: index out of range for a {len(v)}-byte value")
            out = v[idx : idx + 1] if idx >= 0 else bytes([v[idx]])
        elif t.start is not None or t.stop is not None:
            for bound in (t.start, t.stop):
                if bound is not None and (bound > len(v) if bound >= 0 else -bound > len(v)):
                    raise TemplateError(f"token {raw!r}: slice out of range for a {len(v)}-byte value")
            out = v[t.start : t.stop]
        else:
            out = v
    return bytes(b ^ 0xFF for b in out) if t.invert else out


@dataclass(frozen=True)
class DiversificationTemplate:
    """Diversification data described as tokens, encrypted with ECB under the master key.

    Tokens (concatenated in order):

    * hex literals: ``F0``, ``0F``, ``0x0000`` (an even number of hex digits; a bare name that is
      all-hex, such as ``ab``, is a literal — use ``field:ab`` to mean a value);
    * a named value: ``id``, ``serial``, ``kdd``, or ``field:region`` for a profile field;
    * a slice or byte of a named value: ``kdd[4:10]``, ``kdd[0:2]``, ``serial[-4:]``, ``kdd[3]``;
    * any token prefixed with ``~`` is bit-inverted (``~serial`` = serial XOR FF…FF).

    Values are bytes; an ``int`` value (a key id) is taken as one byte. The assembled data must be a
    non-empty multiple of the block size; the result is ECB(master, data) (EMV CPS v1.1 §4.1 style).
    Errors name the token or value, never the bytes.
    """

    alg: Alg
    parts: tuple[str, ...]
    _tokens: tuple[_Token, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.alg, Alg):
            raise TemplateError(f"template algorithm must be an Alg, got {self.alg!r}")
        if isinstance(self.parts, str) or not self.parts:
            raise TemplateError("template needs a non-empty tuple of tokens")
        object.__setattr__(self, "parts", tuple(self.parts))
        object.__setattr__(self, "_tokens", tuple(_parse_token(p) for p in self.parts))

    @classmethod
    def parse(cls, alg: Alg, text: str) -> DiversificationTemplate:
        """Build a template from whitespace-separated tokens, e.g. ``"kdd[4:10] F0 id kdd[4:10] 0F id"``."""
        return cls(alg, tuple(text.split()))

    def data(self, values: Mapping[str, bytes]) -> bytes:
        """The diversification data (before encryption) for ``values``."""
        out = b"".join(_resolve(t, raw, values) for t, raw in zip(self._tokens, self.parts, strict=True))
        bs = block_size(self.alg)
        if not out or len(out) % bs:
            raise TemplateError(
                f"template yields {len(out)} bytes; {self.alg.value} needs a non-empty multiple of {bs}"
            )
        return out

    def derive(self, master: bytes, values: Mapping[str, bytes]) -> bytes:
        """ECB-encrypt the template's data under ``master``: the diversified key."""
        check_key(self.alg, master)
        return ecb_encrypt(self.alg, master, self.data(values))


# EMV CPS v1.1 §4.1 and VISA2, as templates (values: kdd = 10 bytes, id = key id).
EMV_CPS_TEMPLATE = DiversificationTemplate(Alg.DES3, ("kdd[4:10]", "F0", "id", "kdd[4:10]", "0F", "id"))
VISA2_TEMPLATE = DiversificationTemplate(
    Alg.DES3, ("kdd[0:2]", "kdd[4:8]", "F0", "id", "kdd[0:2]", "kdd[4:8]", "0F", "id")
)


def chain(master: bytes, alg: Alg, levels: Sequence[bytes], *, des_parity: bool = False) -> bytes:
    """Multi-level diversification (e.g. ministry → province → city → card).

    Each level takes 8 bytes of diversification data D and derives the next key as
    ``ECB(previous_key, D ‖ ~D)`` where ``~D`` is D XOR FF…FF: the left half of the new 16-byte key is the
    encryption of D and the right half that of ~D (the "left/right halves" method of EMV 4.3 Book 2
    Annex A1.4.1 option A, used level by level by PBOC 3.0 and the social-security PSAM key hierarchy).
    For 3DES this is two 8-byte ECB blocks; for SM4/AES it is one 16-byte block. The key after every
    level is 16 bytes (so an AES-192/256 master yields AES-128 child keys). EMV option A also sets odd DES
    parity on the result; pass ``des_parity=True`` for that (3DES only — DES ignores the parity bits, but
    key bytes and stored values then match EMV tooling). With no levels the master key is returned as is.
    """
    check_key(alg, master)
    if des_parity and alg is not Alg.DES3:
        raise CryptoError("des_parity applies to 3DES keys only")
    key = bytes(master)
    for n, d in enumerate(levels):
        d = bytes(d)
        if len(d) != LEVEL_LEN:
            raise CryptoError(f"diversification level {n} must be {LEVEL_LEN} bytes, got {len(d)}")
        key = ecb_encrypt(alg, key, d + bytes(b ^ 0xFF for b in d))
        if des_parity:
            key = adjust_des_parity(key)
    return key
