"""Pseudonyms for cardholder identifiers.

Ledgers, journals and reports refer to a cardholder by a keyed pseudonym, never by the identifier itself:
``HMAC-SHA-256(key, utf-8(value))`` (RFC 2104, FIPS 198-1, FIPS 180-4) truncated to its first 16 hex digits
(64 bits; NIST SP 800-107r1 §5.3.3 allows truncating an HMAC output). Without the key a pseudonym cannot be
linked back to the identifier by trying all 18-character citizen IDs, which a plain hash would allow.

The key lives in a file beside the ledger (created 0600 with 32 random bytes when absent), so the same
identifier always gets the same pseudonym in one ledger and duplicates can be found across batches.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from cardkit.errors import KeyError_, KeystoreError, RecordError
from cardkit.fsutil import fsync_dir

__all__ = ["KEY_FILE_SUFFIX", "KEY_SIZE", "MIN_KEY_SIZE", "PSEUDONYM_HEX", "Pseudonymizer", "key_file_for"]

log = logging.getLogger(__name__)

#: Size of a generated key: 32 bytes, the SHA-256 output size (RFC 2104 §3 recommends at least L bytes).
KEY_SIZE = 32
#: Shortest key accepted: 16 bytes (128 bits of strength, NIST SP 800-107r1 §5.3.4).
MIN_KEY_SIZE = 16
#: Pseudonym length in hex digits (64 bits).
PSEUDONYM_HEX = 16
#: The key file is the ledger path with this suffix appended.
KEY_FILE_SUFFIX = ".pseudonym-key"


class Pseudonymizer:
    """Maps identifiers to stable keyed pseudonyms. The key is never shown by ``repr``."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes):
            raise KeyError_(f"a pseudonym key must be bytes, got {type(key).__name__}")
        if len(key) < MIN_KEY_SIZE:
            raise KeyError_(f"a pseudonym key must be at least {MIN_KEY_SIZE} bytes, got {len(key)}")
        self._key = key

    def of(self, value: str) -> str:
        """The pseudonym of ``value``: 16 lower-case hex digits."""
        if not isinstance(value, str):
            raise RecordError(f"pseudonyms are made of str values, got {type(value).__name__}")
        mac = hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()
        return mac[:PSEUDONYM_HEX]

    @property
    def key_id(self) -> str:
        """A short fingerprint naming the key (not the key): lets a report say which key made its pseudonyms."""
        return hmac.new(self._key, b"cardkit pseudonym key id", hashlib.sha256).hexdigest()[:8]

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_id={self.key_id})"

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str], *, create: bool = True) -> Pseudonymizer:
        """Load the key from ``path``; with ``create`` make a new random key file (0600) when it is absent.

        Safe when several processes start at once: the file appears atomically, complete, or not at all.
        """
        p = Path(path)
        if create and not p.exists():
            _create_key_file(p)
        try:
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise KeystoreError(f"pseudonym key file {p.name!r} does not exist") from None
        except OSError as exc:
            raise KeystoreError(f"cannot open pseudonym key file {p.name!r}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_IMODE(mode) & 0o077:
                raise KeystoreError(
                    f"pseudonym key file {p.name!r} is readable by others (mode {stat.S_IMODE(mode):03o}); "
                    "chmod 600 it")
            key = f.read(4096)
        if len(key) < MIN_KEY_SIZE:
            raise KeystoreError(f"pseudonym key file {p.name!r} holds {len(key)} bytes; at least "
                                f"{MIN_KEY_SIZE} are needed")
        return cls(key)

    @classmethod
    def for_ledger(cls, ledger_path: str | os.PathLike[str]) -> Pseudonymizer:
        """The pseudonymizer of the ledger at ``ledger_path`` (its key file is ``<ledger>.pseudonym-key``)."""
        return cls.from_key_file(key_file_for(ledger_path), create=True)


def key_file_for(ledger_path: str | os.PathLike[str]) -> Path:
    """Where the pseudonym key of a ledger file lives."""
    p = Path(ledger_path)
    return p.with_name(p.name + KEY_FILE_SUFFIX)


def _create_key_file(path: Path) -> None:
    # Write the key to a private temporary file, then hard-link it into place: link(2) fails if the name
    # exists, so two processes racing here both end up reading the one key that won.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_SIZE))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
        except OSError as exc:
            raise KeystoreError(f"cannot create pseudonym key file {path.name!r}: {exc.strerror}") from exc
        fsync_dir(path.parent)
        log.info("created pseudonym key file %s", path.name)
    finally:
        tmp.unlink(missing_ok=True)

