"""ICAO Doc 9303-11 Basic Access Control: keys from the MRZ, mutual authentication, 3DES secure messaging.

* the MRZ information is document number ‖ check digit ‖ date of birth ‖ check digit ‖ date of expiry ‖ check
  digit (ICAO 9303-11 §9.7.2; check digits per ICAO 9303-3 §4.9);
* K_seed = the first 16 bytes of SHA-1(MRZ information); K_Enc = KDF(K_seed, 1), K_MAC = KDF(K_seed, 2) with the
  §9.7.1 KDF (3DES, parity adjusted);
* the handshake is :func:`cardkit.sm.auth.mutual_authenticate` with :attr:`SmSuite.DES3_RETAIL`
  (ICAO 9303-11 §4.3); the worked example is Appendix D (``vectors/icao9303_bac.json``).

The MRZ information identifies a person: it never appears in logs or error messages.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import icao_kdf
from cardkit.errors import CardkitError
from cardkit.sm.auth import MutualAuthResponder, Rng, mutual_authenticate
from cardkit.sm.iso import SmState, SmSuite

__all__ = [
    "BacResponder",
    "MrzInformationError",
    "bac_authenticate",
    "bac_key_seed",
    "bac_keys",
    "mrz_check_digit",
    "mrz_information",
]

log = logging.getLogger(__name__)

# ICAO 9303-3 §4.9: check-digit weights 7, 3, 1 repeating; '<' = 0, digits = value, A..Z = 10..35.
_WEIGHTS = (7, 3, 1)
_MRZ_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ<")
# ICAO 9303-11 §9.7.2: document number (at least 9 characters) + 1 + 6 + 1 + 6 + 1.
_MIN_MRZ_INFORMATION = 24
# ICAO 9303-11 §9.7.2: K_seed is the 16 most significant bytes of the SHA-1 hash.
_SEED_LENGTH = 16


class MrzInformationError(CardkitError, ValueError):
    """MRZ fields or MRZ information that cannot be used for BAC. The value itself is never in the message."""


def _check_chars(value: str, what: str) -> None:
    if not isinstance(value, str):
        raise MrzInformationError(f"{what} must be a string, got {type(value).__name__}")
    bad = set(value) - _MRZ_CHARS
    if bad:
        raise MrzInformationError(f"{what} holds {len(bad)} character(s) outside 0-9, A-Z and '<'")


def mrz_check_digit(value: str) -> str:
    """The ICAO 9303-3 §4.9 check digit of an MRZ field (weights 7-3-1, modulus 10)."""
    _check_chars(value, "MRZ field")
    total = 0
    for i, ch in enumerate(value):
        v = 0 if ch == "<" else int(ch) if ch.isdigit() else ord(ch) - ord("A") + 10
        total += v * _WEIGHTS[i % 3]
    return str(total % 10)


def _check_date(value: str, what: str) -> None:
    if not (isinstance(value, str) and len(value) == 6 and value.isdigit()):
        raise MrzInformationError(f"{what} must be six digits YYMMDD")


def mrz_information(document_number: str, date_of_birth: str, date_of_expiry: str) -> str:
    """Build the MRZ information for BAC (ICAO 9303-11 §9.7.2) from the printed fields.

    Document numbers shorter than 9 characters are padded with ``<``; longer ones (TD1 overflow) are used whole
    with the check digit over the whole number. Dates are ``YYMMDD``.
    """
    _check_chars(document_number, "document number")
    if not document_number:
        raise MrzInformationError("document number is empty")
    _check_date(date_of_birth, "date of birth")
    _check_date(date_of_expiry, "date of expiry")
    number = document_number.ljust(9, "<")
    return "".join(f + mrz_check_digit(f) for f in (number, date_of_birth, date_of_expiry))


def _check_mrz_information(mrz_information: str) -> None:
    _check_chars(mrz_information, "MRZ information")
    if len(mrz_information) < _MIN_MRZ_INFORMATION:
        raise MrzInformationError(
            f"MRZ information is {len(mrz_information)} characters, expected at least {_MIN_MRZ_INFORMATION}"
        )


def bac_key_seed(mrz_information: str) -> bytes:
    """K_seed: the first 16 bytes of SHA-1 over the ASCII MRZ information (ICAO 9303-11 §9.7.2)."""
    _check_mrz_information(mrz_information)
    return hashlib.sha1(mrz_information.encode("ascii")).digest()[:_SEED_LENGTH]  # noqa: S324 (ICAO mandates SHA-1)


def bac_keys(mrz_information: str) -> tuple[bytes, bytes]:
    """Document basic access keys (K_Enc, K_MAC): ICAO 9303-11 §9.7.1 KDF of K_seed, counters 1 and 2."""
    seed = bac_key_seed(mrz_information)
    return icao_kdf(seed, 1, "3des"), icao_kdf(seed, 2, "3des")


def bac_authenticate(
    send: Callable[[CommandApdu], ResponseApdu],
    mrz_information: str,
    *,
    rnd_ifd: bytes | None = None,
    k_ifd: bytes | None = None,
    rng: Rng | None = None,
) -> SmState:
    """Basic Access Control (ICAO 9303-11 §4.3): GET CHALLENGE, EXTERNAL AUTHENTICATE, 3DES session keys.

    Returns the host :class:`~cardkit.sm.iso.SmState` (SSC = RND.ICC[4:8] ‖ RND.IFD[4:8]); wrap it in an
    :class:`~cardkit.sm.iso.IsoSmChannel` and push it on the session. Errors as in
    :func:`cardkit.sm.auth.mutual_authenticate`.
    """
    k_enc, k_mac = bac_keys(mrz_information)
    state = mutual_authenticate(send, SmSuite.DES3_RETAIL, k_enc, k_mac, key_ref=0, rnd_ifd=rnd_ifd,
                                k_ifd=k_ifd, rng=rng)
    log.debug("basic access control established")
    return state


class BacResponder(MutualAuthResponder):
    """The eMRTD side of BAC: :class:`~cardkit.sm.auth.MutualAuthResponder` with 3DES and key reference 00.

    Build it from the document basic access keys: ``BacResponder(*bac_keys(mrz), rng)``.
    """

    def __init__(self, k_enc: bytes, k_mac: bytes, rng: Rng | None = None) -> None:
        super().__init__(SmSuite.DES3_RETAIL, k_enc, k_mac, rng, key_ref=0)
