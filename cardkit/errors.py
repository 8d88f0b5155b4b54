"""The root of cardkit's exception hierarchy.

Every exception cardkit raises derives from :class:`CardkitError`. Foreign exceptions (pyscard's,
cryptography's ``InvalidSignature``, ``sqlite3``'s) are translated at the layer that called them.

Messages never contain key material, PINs or full cardholder identifiers.
"""

from __future__ import annotations


class CardkitError(Exception):
    """Base class for all cardkit errors."""


class ParseError(CardkitError, ValueError):
    """Malformed bytes: an APDU, TLV, ATR or card response that does not follow its format.

    ``offset`` is the byte position where the problem was found, when known.
    """

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        self.offset = offset
        super().__init__(message if offset is None else f"{message} (at byte {offset})")


class ApduFormatError(ParseError):
    """A command or response APDU that is not well formed (ISO 7816-3 §12.1, ISO 7816-4 §5)."""


class TlvError(ParseError):
    """BER-TLV, SIMPLE-TLV or COMPACT-TLV data that is not well formed (ISO 7816-4 §6.3, X.690)."""


class AtrError(ParseError):
    """An answer-to-reset that does not follow ISO 7816-3 §8."""


class TransportError(CardkitError):
    """The reader or the link to the card failed."""


class NoReaderError(TransportError):
    """No reader matches the name asked for, or there is no reader at all."""


class NoCardError(TransportError):
    """The reader has no card, or the card was removed during a session."""


class CardRemovedError(NoCardError):
    """The card was pulled or lost power during the session."""


class CryptoError(CardkitError):
    """A cryptographic operation was asked with wrong inputs (key size, block alignment, padding)."""


class PaddingError(CryptoError):
    """Padding that does not follow the method asked for (ISO/IEC 9797-1 method 2 / ISO 7816-4 §10.2)."""


class KeyError_(CryptoError):
    """A key of the wrong length or type for the algorithm. (Named with a trailing underscore to avoid
    shadowing the builtin ``KeyError``.)"""


class SecureChannelError(CardkitError):
    """A secure channel failed: cryptogram or MAC mismatch, bad counter, bad padding, truncated data.

    A channel that raised this is closed; every later use raises again.
    """


class AuthenticationError(SecureChannelError):
    """The card (or host) cryptogram did not verify: wrong keys or wrong diversification."""


class ProfileError(CardkitError):
    """A profile (applets/*/profile.toml) that is not valid. Carries file, line and key when known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.file, self.line, self.key = file, line, key
        where = ":".join(str(p) for p in (file, line) if p is not None)
        prefix = f"{where}: " if where else ""
        keypart = f"[{key}] " if key else ""
        super().__init__(f"{prefix}{keypart}{message}")


class RecordError(CardkitError):
    """A cardholder record whose field fails its codec or validator. Never carries the full value."""

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None) -> None:
        self.field, self.line = field, line
        parts = []
        if line is not None:
            parts.append(f"line {line}")
        if field is not None:
            parts.append(f"field {field!r}")
        prefix = (", ".join(parts) + ": ") if parts else ""
        super().__init__(prefix + message)


class VerificationError(CardkitError):
    """What was read back from a card differs from what was written or expected (names the file, never
    the data)."""


class KeystoreError(CardkitError):
    """A keystore could not give the key asked for (missing, wrong passphrase, tampered, token absent)."""
