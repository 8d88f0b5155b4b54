"""Secure channels as session processors.

* :mod:`cardkit.sm.iso` — ISO/IEC 7816-4 §10 secure messaging (ICAO 9303-11 §9.8 profile): :class:`SmState`,
  :class:`IsoSmChannel`;
* :mod:`cardkit.sm.bac` — ICAO 9303-11 Basic Access Control;
* :mod:`cardkit.sm.auth` — symmetric mutual authentication for any suite, and external authentication.
"""

from __future__ import annotations

from cardkit.sm.auth import (
    AuthenticationRefused,
    MutualAuthResponder,
    external_authenticate,
    mutual_authenticate,
    session_keys,
    verify_external_auth,
)
from cardkit.sm.bac import (
    BacResponder,
    MrzInformationError,
    bac_authenticate,
    bac_key_seed,
    bac_keys,
    mrz_check_digit,
    mrz_information,
)
from cardkit.sm.iso import (
    IsoSmChannel,
    SmClosedError,
    SmCommandError,
    SmError,
    SmState,
    SmSuite,
    is_protected,
)

__all__ = [
    "AuthenticationRefused",
    "BacResponder",
    "IsoSmChannel",
    "MrzInformationError",
    "MutualAuthResponder",
    "SmClosedError",
    "SmCommandError",
    "SmError",
    "SmState",
    "SmSuite",
    "bac_authenticate",
    "bac_key_seed",
    "bac_keys",
    "external_authenticate",
    "is_protected",
    "mrz_check_digit",
    "mrz_information",
    "mutual_authenticate",
    "session_keys",
    "verify_external_auth",
]
