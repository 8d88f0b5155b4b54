"""Stable exit codes, in one place.

| code | meaning |
|---|---|
| 0 | success |
| 1 | unexpected internal error (a bug: run with -v and report it) |
| 2 | usage error (bad options) |
| 3 | the card refused a command (status word error) |
| 4 | reader or card missing, card removed, transport failure |
| 5 | secure channel or authentication failure (wrong keys, MAC error) |
| 6 | bad input: malformed APDU/TLV/ATR, invalid profile or record |
| 7 | keystore error (missing key, wrong passphrase, token absent) |
| 8 | verification failed (what was read back differs from what was written) |
| 9 | a batch finished with rejected records or cards |
"""

from __future__ import annotations

from cardkit.errors import (
    CardkitError,
    KeystoreError,
    ParseError,
    ProfileError,
    RecordError,
    SecureChannelError,
    TransportError,
    VerificationError,
)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_CARD = 3
EXIT_TRANSPORT = 4
EXIT_SECURE_CHANNEL = 5
EXIT_INPUT = 6
EXIT_KEYSTORE = 7
EXIT_VERIFY = 8
EXIT_BATCH_REJECTS = 9


class VerificationFailed(VerificationError):
    """A difference found by the CLI layer itself (reconciliation, journal checks): exit code 8."""


def exit_code_for(exc: BaseException) -> int:
    from cardkit.sw import StatusWordError

    if isinstance(exc, VerificationError):
        return EXIT_VERIFY
    if isinstance(exc, StatusWordError):
        return EXIT_CARD
    if isinstance(exc, TransportError):
        return EXIT_TRANSPORT
    if isinstance(exc, SecureChannelError):
        return EXIT_SECURE_CHANNEL
    if isinstance(exc, ParseError | ProfileError | RecordError):
        return EXIT_INPUT
    if isinstance(exc, KeystoreError):
        return EXIT_KEYSTORE
    if isinstance(exc, CardkitError | ValueError | OSError):
        return EXIT_INPUT if isinstance(exc, ValueError | OSError) else EXIT_INTERNAL
    return EXIT_INTERNAL


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ") or type(exc).__name__
    if not isinstance(exc, CardkitError):
        text = f"{type(exc).__name__}: {text}"
    return text
