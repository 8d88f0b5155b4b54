"""An append-only, hash-chained audit journal (JSON Lines).

Each line is one JSON object (RFC 8259, one per line as in JSON Lines)::

    {"seq": 7, "time": "2025-01-02T03:04:05.123456Z", "event": "card.verified", ...facts...,
     "prev": "<hash of line 6>", "hash": "<SHA-256 of this line without its hash>"}

``hash`` is SHA-256 (FIPS 180-4) over the canonical JSON of the object without ``hash``: keys sorted, no
insignificant whitespace, UTF-8, no escaping of non-ASCII (the RFC 8785 canonical form for the strings,
integers and booleans a journal holds). ``prev`` of line 1 is 64 zeros. So editing, removing, inserting or
reordering lines breaks the chain at a line :func:`verify_journal` names. A journal rewritten from the
tampered line on is only caught against a head hash kept elsewhere (``expect_head``): the report stores it.

Appends are safe from several threads and processes: each takes an exclusive ``flock`` (POSIX
``fcntl``/BSD ``flock(2)``) on the file, reads the last line to chain onto, writes one whole line with
``O_APPEND`` and, by default, ``fsync``\\ s it before returning. The file is created 0600.

Facts must not hold secrets or personal data: keys that look like them (``pin``, ``key``, ``name``,
``citizen_id`` …) are refused with :class:`JournalPrivacyError`. Refer to cardholders by pseudonym.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cardkit.errors import CardkitError
from cardkit.fsutil import fsync_dir

__all__ = [
    "GENESIS", "Journal", "JournalEntry", "JournalError", "JournalPrivacyError", "JournalProblem", "JournalReport",
    "canonical_json", "line_hash", "verify_journal",
]

log = logging.getLogger(__name__)

#: ``prev`` of the first line.
GENESIS: Final = "0" * 64
#: Keys the journal sets itself.
RESERVED: Final = frozenset({"seq", "time", "event", "prev", "hash"})
#: Key words (after splitting a key at non-alphanumerics and camelCase) that mark secrets or personal data.
FORBIDDEN_WORDS: Final = frozenset({
    "pin", "pins", "puk", "key", "keys", "secret", "secrets", "password", "passphrase", "passwd", "pwd",
    "otp", "cvv", "cvc", "name", "names", "surname", "forename", "given", "fullname", "firstname",
    "lastname", "citizen", "citizenid", "ssn", "passport", "mrz", "dob", "birth", "birthday", "birthdate",
    "address", "phone", "mobile", "email", "photo", "portrait", "face", "fingerprint", "biometric", "household",
    "pan", "track2", "ethnicity", "gender", "sex", "nationality",
})
#: Compound keys refused even though no single word of them is.
FORBIDDEN_KEYS: Final = frozenset({"id_number", "idnumber", "document_number", "card_number", "cardholder"})
#: Keys that contain a forbidden word but name no secret (key versions, check values, reader names).
ALLOWED_KEYS: Final = frozenset({
    "key_version", "key_id", "key_set", "keyset_id", "kvn", "kcv", "key_check_value", "key_kcv",
    "reader_name", "station_name", "profile_name", "file_name", "event_name", "app_name", "applet_name",
})
_WORD_SPLIT: Final = re.compile(r"[^a-z0-9]+")
_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_TAIL_CHUNK: Final = 1 << 16


class JournalError(CardkitError):
    """The journal cannot be written: damaged tail, unwritable file, facts that are not JSON."""


class JournalPrivacyError(JournalError):
    """A fact key that looks like a secret or personal data."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class JournalProblem:
    line: int
    #: ``truncated``, ``invalid``, ``edited``, ``chain``, ``sequence`` or ``head``.
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class JournalReport:
    path: str
    lines: int
    last_seq: int
    #: Hash of the last complete line (the value to keep elsewhere as an anchor); GENESIS when empty.
    head: str
    problems: tuple[JournalProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (see the module docstring)."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def line_hash(obj: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``obj`` without its ``hash`` key."""
    return hashlib.sha256(canonical_json({k: v for k, v in obj.items() if k != "hash"})).hexdigest()


def _iso(t: float) -> str:
    # RFC 3339 §5.6 UTC timestamp with microseconds.
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _check_key(key: str, path: str) -> None:
    if not isinstance(key, str) or not key:
        raise JournalError(f"fact keys must be non-empty strings (at {path or 'top level'})")
    low = key.lower()
    if low in ALLOWED_KEYS:
        return
    words = {w for w in _WORD_SPLIT.split(_CAMEL.sub("_", key).lower()) if w}
    if low in FORBIDDEN_KEYS or words & FORBIDDEN_WORDS or low.replace("_", "") in FORBIDDEN_WORDS:
        raise JournalPrivacyError(
            f"fact {path + key!r} looks like a secret or personal data; journal a pseudonym or a reference instead")


def _check_value(value: Any, path: str) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise JournalError(f"fact {path!r} is not a finite number")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_value(v, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_key(k, f"{path}.")
            _check_value(v, f"{path}.{k}")
        return
    if isinstance(value, bytes | bytearray):
        raise JournalError(f"fact {path!r} is bytes; hex-encode it (hex only at the edges)")
    raise JournalError(f"fact {path!r} of type {type(value).__name__} is not a JSON value")


class Journal:
    """Appends hash-chained lines to ``path``. ``sync_every=N`` fsyncs every N appends (1: each append)."""

    def __init__(self, path: str | os.PathLike[str], *, sync_every: int = 1,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(sync_every, int) or sync_every < 1:
            raise JournalError("sync_every must be an integer >= 1")
        self.path = Path(path)
        self._sync_every = sync_every
        self._clock = clock
        self._lock = threading.Lock()
        existed = self.path.exists()
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open journal {self.path.name!r}: {exc.strerror}") from exc
        mode = os.fstat(self._fd).st_mode & 0o777
        if mode & 0o077:
            log.warning("journal %s had mode %03o; setting 600", self.path.name, mode)
            os.fchmod(self._fd, 0o600)
        if not existed:
            fsync_dir(self.path.parent)
        self._known_size = -1
        self._seq = 0
        self._prev = GENESIS
        self._unsynced = 0

    # --------------------------------------------------------------------------------------------- API
    def append(self, event: str, **facts: Any) -> JournalEntry:
        """Append one line and return its sequence number and hash. Refuses reserved keys, secret- or
        personal-looking keys and values that are not JSON."""
        if not isinstance(event, str) or not event:
            raise JournalError("an event must be a non-empty string")
        for key, value in facts.items():
            if key in RESERVED:
                raise JournalError(f"fact key {key!r} is reserved by the journal")
            _check_key(key, "")
            _check_value(value, key)
        with self._lock:
            fd = self._open_fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if size != self._known_size:
                    self._seq, self._prev = _read_tail(fd, size, self.path.name)
                obj: dict[str, Any] = {"seq": self._seq + 1, "time": _iso(self._clock()), "event": event}
                obj.update(facts)
                obj["prev"] = self._prev
                obj["hash"] = digest = line_hash(obj)
                data = (json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode()
                _write_all(fd, data)
                self._unsynced += 1
                if self._unsynced >= self._sync_every:
                    os.fsync(fd)
                    self._unsynced = 0
                self._seq, self._prev = obj["seq"], digest
                self._known_size = size + len(data)
            except OSError as exc:
                raise JournalError(f"cannot append to journal {self.path.name!r}: {exc.strerror}") from exc
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return JournalEntry(self._seq, digest)

    @property
    def head(self) -> JournalEntry:
        """The last line's sequence number and hash (as this writer knows it)."""
        with self._lock:
            fd = self._open_fd()
            size = os.fstat(fd).st_size
            if size != self._known_size:
                fcntl.flock(fd, fcntl.LOCK_SH)
                try:
                    size = os.fstat(fd).st_size
                    self._seq, self._prev = _read_tail(fd, size, self.path.name)
                    self._known_size = size
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            return JournalEntry(self._seq, self._prev)

    def sync(self) -> None:
        """fsync appends not yet synced (with ``sync_every`` > 1)."""
        with self._lock:
            if self._fd is not None and self._unsynced:
                os.fsync(self._fd)
                self._unsynced = 0

    def close(self) -> None:
        self.sync()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_fd(self) -> int:
        if self._fd is None:
            raise JournalError("the journal is closed")
        return self._fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_tail(fd: int, size: int, name: str) -> tuple[int, str]:
    """(seq, hash) of the last line; refuses a journal whose last line is cut or damaged."""
    if size == 0:
        return 0, GENESIS
    if os.pread(fd, 1, size - 1) != b"\n":
        raise JournalError(f"journal {name!r} ends with a truncated line; verify it (verify_journal) and move it "
                           "aside before appending")
    pos = size - 1  # the last line ends at the final line feed; read back to the one before it
    parts: list[bytes] = []
    while pos > 0:
        step = min(_TAIL_CHUNK, pos)
        pos -= step
        chunk = os.pread(fd, step, pos)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            parts.append(chunk[nl + 1:])
            break
        parts.append(chunk)
    line = b"".join(reversed(parts))
    try:
        obj = json.loads(line.decode("utf-8"))
        seq, digest = int(obj["seq"]), str(obj["hash"])
    except (ValueError, KeyError, TypeError) as exc:
        raise JournalError(f"the last line of journal {name!r} is damaged ({type(exc).__name__}); verify it") from None
    if line_hash(obj) != digest:
        raise JournalError(f"the last line of journal {name!r} does not match its hash; verify it")
    return seq, digest



class _Dup(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Dup(k)
        out[k] = v
    return out


def verify_journal(path: str | os.PathLike[str], *, expect_head: str | None = None) -> JournalReport:
    """Check every line's hash, the chain and the sequence; name each problem's line. With ``expect_head``
    (a head hash kept elsewhere) lines cut from the end, or a rewritten journal, are caught too."""
    p = Path(path)
    problems: list[JournalProblem] = []
    prev: str | None = GENESIS
    last_seq = 0
    head = GENESIS
    n = 0
    try:
        f = open(p, "rb")
    except OSError as exc:
        raise JournalError(f"cannot read journal {p.name!r}: {exc.strerror}") from exc
    with f:
        for n, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                problems.append(JournalProblem(n, "truncated", f"line {n} has no line end: the journal was cut "
                                               "(crash or truncation) in the middle of the last line"))
                n -= 1
                break
            try:
                obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_pairs)
                if not isinstance(obj, dict):
                    raise TypeError("not an object")
                seq, digest, link = obj["seq"], obj["hash"], obj["prev"]
                if not (isinstance(seq, int) and isinstance(digest, str) and isinstance(link, str)
                        and isinstance(obj.get("event"), str) and isinstance(obj.get("time"), str)):
                    raise TypeError("fields of the wrong type")
            except (ValueError, KeyError, TypeError) as exc:
                kind = "duplicate key" if isinstance(exc, _Dup) else type(exc).__name__
                problems.append(JournalProblem(n, "invalid", f"line {n} is not a journal line ({kind}): edited "
                                               "or damaged"))
                prev = None
                continue
            if line_hash(obj) != digest:
                problems.append(JournalProblem(n, "edited", f"line {n} does not match its hash: it was edited"))
            if prev is not None and link != prev:
                problems.append(JournalProblem(n, "chain", f"line {n} does not follow line {n - 1} in the hash chain: "
                                               "a line was removed, inserted or moved here"))
            expected = last_seq + 1
            if seq != expected:
                if seq > expected:
                    what = f"{seq - expected} line(s) missing before it (removed?)"
                else:
                    what = "it repeats or goes back (inserted or reordered lines)"
                problems.append(JournalProblem(n, "sequence", f"line {n} has seq {seq} where {expected} was "
                                               f"expected: {what}"))
            prev, last_seq, head = digest, seq, digest
    if expect_head is not None and head != expect_head:
        problems.append(JournalProblem(n, "head", f"the last complete line (line {n}) is not the expected head: "
                                       "lines were cut from the end or the journal was rewritten"))
    return JournalReport(str(p), n, last_seq, head, tuple(problems))
