"""GlobalPlatform pieces shared by SCP02 and SCP03: key sets, security levels, diversification, CLA coding.

* :class:`GpKeySet` — the three static Secure Channel keys (GPCS 2.3.1 §E.1.4 / Amendment D §6.1):
  K-ENC, K-MAC, K-DEK, a key version number and the algorithm (AES for SCP03, 3DES for SCP02). Its
  ``repr`` shows key check values, never key bytes.
* :class:`Diversification` and :func:`diversify` — per-card keys from master keys and the 10-byte key
  diversification data (KDD) returned by INITIALIZE UPDATE (EMV CPS, VISA2, GlobalPlatformPro "kdf3").
* :class:`SecurityLevel` — the EXTERNAL AUTHENTICATE P1 bitmask (GPCS 2.3.1 §E.5.2.1,
  Amendment D §7.1.2.1), validated by :func:`check_level`.
* small helpers both protocols use: secure-messaging CLA coding, the Lc coding inside MAC input, which
  status words carry response protection, the INITIALIZE UPDATE command.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from cardkit.apdu import LE_MAX_SHORT, CommandApdu
from cardkit.crypto import Alg, check_key, default_kcv_method, emv_cps, kcv, kdf3, visa2
from cardkit.errors import CardkitError, KeyError_, ParseError, SecureChannelError

__all__ = [
    "KDD_LENGTH",
    "VALID_LEVELS",
    "Diversification",
    "GpKeySet",
    "InitializeUpdateError",
    "Rng",
    "SecurityLevel",
    "SecurityLevelError",
    "check_level",
    "clear_sm_cla",
    "diversify",
    "has_sm_cla",
    "initialize_update_command",
    "is_protected_sw",
    "lc_bytes",
    "random_bytes",
    "scheme_applies",
    "sm_cla",
]

logger = logging.getLogger(__name__)

#: A source of random bytes: ``rng(n)`` returns ``n`` bytes. Injected so handshakes are reproducible.
Rng = Callable[[int], bytes]

# GPCS 2.3.1 §11.5.3 (INITIALIZE UPDATE response): key diversification data, 10 bytes.
KDD_LENGTH = 10
# GPCS 2.3.1 §11.5.2 (INITIALIZE UPDATE command): CLA 80, INS 50, P1 key version, P2 key identifier 00.
_CLA_GP = 0x80
_INS_INITIALIZE_UPDATE = 0x50
# GPCS 2.3.1 §11.1.8 (key version number): one byte, 00 = "first available key set" in INITIALIZE UPDATE.
_MAX_KVN = 0xFF

# GP key ids inside a key set (GPCS 2.3.1 §E.1.4 / EMV CPS Annex A): 01 ENC, 02 MAC, 03 DEK.
_KEY_IDS = (("enc", 1), ("mac", 2), ("dek", 3))


def random_bytes(n: int) -> bytes:
    """The default :data:`Rng`: ``n`` bytes from the operating system's CSPRNG (``secrets``)."""
    return secrets.token_bytes(n)


# --------------------------------------------------------------------------------------------- key sets


@dataclass(frozen=True)
class GpKeySet:
    """The static Secure Channel key set of a security domain (GPCS 2.3.1 §E.1.4, Amendment D §6.1).

    ``alg`` is keyword-only and required (no implicit algorithm): ``Alg.AES`` for SCP03 (16/24/32-byte
    keys), ``Alg.DES3`` for SCP02 (16- or 24-byte keys). The three keys must have the same length.
    ``version`` is the key version number (KVN, 0..255; GPCS 2.3.1 §11.1.8). The ``repr`` shows key
    check values only.
    """

    enc: bytes = field(repr=False)
    mac: bytes = field(repr=False)
    dek: bytes = field(repr=False)
    version: int = 0
    alg: Alg = field(kw_only=True)

    def __post_init__(self) -> None:
        if self.alg not in (Alg.AES, Alg.DES3):
            raise KeyError_(f"a GlobalPlatform key set is AES (SCP03) or 3DES (SCP02), not {self.alg!r}")
        for name in ("enc", "mac", "dek"):
            value = getattr(self, name)
            if isinstance(value, bytearray | memoryview):
                object.__setattr__(self, name, bytes(value))
            try:
                check_key(self.alg, getattr(self, name))
            except KeyError_ as exc:
                raise KeyError_(f"key set {name.upper()} key: {exc}") from None
        if not len(self.enc) == len(self.mac) == len(self.dek):
            raise KeyError_(
                f"key set keys differ in length (ENC {len(self.enc)}, MAC {len(self.mac)}, DEK {len(self.dek)})"
            )
        if not isinstance(self.version, int) or isinstance(self.version, bool) or not 0 <= self.version <= _MAX_KVN:
            raise KeyError_(f"key version number must be 0..255, got {self.version!r}")

    @classmethod
    def single(cls, key: bytes, *, alg: Alg, version: int = 0) -> GpKeySet:
        """One key used as ENC, MAC and DEK (as the GlobalPlatform test key sets are distributed)."""
        return cls(key, key, key, version, alg=alg)

    @property
    def key_length(self) -> int:
        return len(self.enc)

    def kcvs(self) -> dict[str, bytes]:
        """Key check values (3 bytes, GP method: 3DES over 8×00, AES over 16×01) of ENC, MAC and DEK."""
        method = default_kcv_method(self.alg)
        return {"enc": kcv(self.enc, method), "mac": kcv(self.mac, method), "dek": kcv(self.dek, method)}

    def with_version(self, version: int) -> GpKeySet:
        return GpKeySet(self.enc, self.mac, self.dek, version, alg=self.alg)

    def __repr__(self) -> str:
        k = self.kcvs()
        return (
            f"GpKeySet(alg={self.alg.value}, bits={self.key_length * 8}, version=0x{self.version:02X}, "
            f"kcv enc={k['enc'].hex().upper()} mac={k['mac'].hex().upper()} dek={k['dek'].hex().upper()})"
        )

    __str__ = __repr__


# ---------------------------------------------------------------------------------------- diversification


class Diversification(enum.Enum):
    """Key diversification schemes applied to master keys with the card's KDD."""

    NONE = "none"  # static keys used as they are
    EMV = "emv"  # EMV CPS v1.1 Annex A (3DES)
    VISA2 = "visa2"  # Visa GP 2.1.1 Card Implementation Requirements (3DES)
    KDF3 = "kdf3"  # GlobalPlatformPro "kdf3" (NIST SP 800-108 with AES-CMAC)


# scheme -> the master-key algorithm it applies to
_SCHEME_ALG = {Diversification.EMV: Alg.DES3, Diversification.VISA2: Alg.DES3, Diversification.KDF3: Alg.AES}


def scheme_applies(scheme: Diversification, alg: Alg) -> bool:
    """True if ``scheme`` can diversify master keys of algorithm ``alg``."""
    return scheme is Diversification.NONE or _SCHEME_ALG[scheme] is alg


def diversify(keyset: GpKeySet, scheme: Diversification, kdd: bytes) -> GpKeySet:
    """Card keys from master keys: each of ENC/MAC/DEK is diversified with key id 01/02/03.

    ``kdd`` is the 10-byte key diversification data of INITIALIZE UPDATE (GPCS 2.3.1 §11.5.3). EMV and
    VISA2 need 3DES masters (result: 16-byte 3DES keys); KDF3 needs AES masters (result as long as the
    master). The key version number and algorithm are kept.
    """
    if not isinstance(scheme, Diversification):
        raise KeyError_(f"unknown diversification scheme {scheme!r}")
    if scheme is Diversification.NONE:
        return keyset
    if not scheme_applies(scheme, keyset.alg):
        raise KeyError_(f"{scheme.value} diversification needs {_SCHEME_ALG[scheme].value} master keys, "
                        f"the key set is {keyset.alg.value}")
    kdd = bytes(kdd)
    if len(kdd) != KDD_LENGTH:
        raise KeyError_(f"key diversification data must be {KDD_LENGTH} bytes, got {len(kdd)}")
    fn = {Diversification.EMV: emv_cps, Diversification.VISA2: visa2, Diversification.KDF3: kdf3}[scheme]
    keys = {name: fn(getattr(keyset, name), kdd, key_id) for name, key_id in _KEY_IDS}
    return GpKeySet(keys["enc"], keys["mac"], keys["dek"], keyset.version, alg=keyset.alg)


class InitializeUpdateError(SecureChannelError, ParseError):
    """An INITIALIZE UPDATE response that does not have the layout of its protocol (wrong length, SCP id)."""


# ------------------------------------------------------------------------------------------ security level


class SecurityLevelError(CardkitError, ValueError):
    """A security level (EXTERNAL AUTHENTICATE P1) that is not a valid combination for the protocol."""


class SecurityLevel(enum.IntFlag):
    """EXTERNAL AUTHENTICATE P1 bits (GPCS 2.3.1 §E.5.2.1; Amendment D §7.1.2.1)."""

    NONE = 0x00
    C_MAC = 0x01
    C_DEC = 0x02  # needs C_MAC
    R_MAC = 0x10
    R_ENC = 0x20  # SCP03 only; needs R_MAC and C_DEC


#: Valid levels: 00, 01 (C-MAC), 03 (+C-DEC), 11 (C-MAC+R-MAC), 13, 33 (all; SCP03 only).
#: 31 (R-ENC without C-DEC) and 10/30 (response protection without C-MAC) are not defined.
VALID_LEVELS = frozenset({0x00, 0x01, 0x03, 0x11, 0x13, 0x33})


def check_level(level: int | SecurityLevel, *, r_enc: bool = True) -> SecurityLevel:
    """Validate a security level; ``r_enc=False`` (SCP02) also rejects R-ENC (33)."""
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= int(level) <= 0xFF:
        raise SecurityLevelError(f"security level must be a byte, got {level!r}")
    value = int(level)
    if value not in VALID_LEVELS:
        reasons = []
        if value & ~0x33:
            reasons.append("undefined bits set")
        if value & SecurityLevel.C_DEC and not value & SecurityLevel.C_MAC:
            reasons.append("C-DEC needs C-MAC")
        if value & SecurityLevel.R_ENC and not (value & SecurityLevel.R_MAC and value & SecurityLevel.C_DEC):
            reasons.append("R-ENC needs R-MAC and C-DEC")
        if value & SecurityLevel.R_MAC and not value & SecurityLevel.C_MAC:
            reasons.append("R-MAC needs C-MAC")
        why = "; ".join(reasons) or "not a defined combination"
        raise SecurityLevelError(f"security level {value:02X} is invalid ({why}); valid: 00 01 03 11 13 33")
    if not r_enc and value & SecurityLevel.R_ENC:
        raise SecurityLevelError(
            f"security level {value:02X}: R-ENC exists only in SCP03 (SCP02 allows 00 01 03 11 13)")
    return SecurityLevel(value)


# -------------------------------------------------------------------------------------------- APDU coding


def sm_cla(cla: int) -> int:
    """CLA with secure messaging indicated.

    First interindustry and GP proprietary classes (b7 = 0): b3 (``04``); further interindustry classes
    and GP logical channels 4–19 (b7 = 1): b6 (``20``). ISO 7816-4:2020 §5.4.1, GPCS 2.3.1 §11.1.4.
    """
    return cla | (0x20 if cla & 0x40 else 0x04)


def clear_sm_cla(cla: int) -> int:
    """CLA with the secure messaging indication removed (inverse of :func:`sm_cla`)."""
    return cla & ~(0x20 if cla & 0x40 else 0x04) & 0xFF


def has_sm_cla(cla: int) -> bool:
    return bool(cla & (0x20 if cla & 0x40 else 0x04))


def lc_bytes(n: int, extended: bool = False) -> bytes:
    """Lc as it is encoded in the APDU, for MAC input: 1 byte, or ``00`` + 2 bytes in the extended form
    (above 255, or when the command travels extended anyway) (ISO 7816-3 §12.1)."""
    return bytes([n]) if n <= 0xFF and not extended else b"\x00" + n.to_bytes(2, "big")


def is_protected_sw(sw: int) -> bool:
    """True if a response with this status word carries R-MAC/R-ENC protection.

    GPCS Amendment D §6.2.5: responses with an error status carry no R-MAC and no encryption; 9000 and the
    warnings 62xx/63xx are protected. 61xx (more data, T=0) is success and is treated as protected.
    """
    sw1 = sw >> 8
    return sw == 0x9000 or sw1 in (0x61, 0x62, 0x63)


def initialize_update_command(key_version: int, host_challenge: bytes) -> CommandApdu:
    """INITIALIZE UPDATE (GPCS 2.3.1 §11.5.2): ``80 50 kv 00 Lc host-challenge 00``."""
    if not isinstance(key_version, int) or not 0 <= key_version <= _MAX_KVN:
        raise KeyError_(f"key version number must be 0..255, got {key_version!r}")
    return CommandApdu(_CLA_GP, _INS_INITIALIZE_UPDATE, key_version, 0x00, bytes(host_challenge),
                       le=LE_MAX_SHORT, name="INITIALIZE UPDATE")
