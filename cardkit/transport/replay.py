"""Recorded sessions: replay a transcript as a transport, and record one from a live transport.

A transcript is the ATR and the ordered list of (C-APDU, R-APDU) exchanges. On disk it is JSON::

    {"atr": "3B8D...", "exchanges": [{"c": "00A4040005F0434B4954", "r": "9000"}, ...]}

(hex at the edge, upper or lower case, spaces allowed; ``bytes`` inside). :class:`ReplayTransport`
answers the recorded R-APDUs in order and raises :class:`ReplayMismatchError` /
:class:`ReplayExhaustedError` (both :class:`~cardkit.errors.TransportError`) with the exchange index and
the expected and received commands. Commands whose data is secret or personal (VERIFY, PUT KEY, file
contents…) are shown in error messages by header, length and a short SHA-256 only.

Recorded transcripts may hold secrets (they are raw traffic): :meth:`Transcript.save` creates the file
with mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cardkit.errors import ParseError, TransportError
from cardkit.transport.base import Transport

__all__ = [
    "RecordingTransport", "ReplayExhaustedError", "ReplayMismatchError", "ReplayTransport", "Transcript",
    "TranscriptFormatError",
]

log = logging.getLogger(__name__)

# Instructions whose command data is secret (ISO 7816-4:2020 §11.5: VERIFY 20/21, CHANGE REFERENCE
# DATA 24, RESET RETRY COUNTER 2C, EXTERNAL/MUTUAL AUTHENTICATE 82, INTERNAL AUTHENTICATE 88,
# GENERAL AUTHENTICATE 86/87; GPCS 2.3.1 §11.8 PUT KEY D8, §11.11 INITIALIZE UPDATE 50) or may be
# personal data (§11.2-§11.4 BINARY/RECORD commands, DATA objects; GPCS §11.11 STORE DATA E2).
_SECRET_INS = frozenset({0x20, 0x21, 0x24, 0x2C, 0x82, 0x86, 0x87, 0x88, 0xD8, 0x50})
_DATA_INS = frozenset({0xB0, 0xB1, 0xB2, 0xB3, 0xD6, 0xD7, 0xDC, 0xDD, 0xD0, 0xD1, 0xE2, 0xA2, 0xDA, 0xDB,
                       0xE4, 0xE0})


class TranscriptFormatError(ParseError):
    """A transcript file or object that does not follow the transcript format."""


class ReplayMismatchError(TransportError):
    """The command sent is not the one recorded at this point of the transcript."""

    def __init__(self, message: str, *, index: int, expected: bytes, got: bytes) -> None:
        self.index = index
        self.expected = expected
        self.got = got
        super().__init__(message)


class ReplayExhaustedError(TransportError):
    """A command was sent after the last recorded exchange (or the transcript was not fully used)."""

    def __init__(self, message: str, *, index: int) -> None:
        self.index = index
        super().__init__(message)


def describe_apdu(apdu: bytes) -> str:
    """Hex of a C-APDU for messages, with secret or personal command data replaced by length + digest."""
    if len(apdu) > 5 and apdu[1] in (_SECRET_INS | _DATA_INS):
        digest = hashlib.sha256(apdu[4:]).hexdigest()[:8]
        return f"{apdu[:4].hex().upper()} <{len(apdu) - 4} bytes sha256:{digest}>"
    if len(apdu) > 64:
        digest = hashlib.sha256(apdu).hexdigest()[:8]
        return f"{apdu[:16].hex().upper()}… <{len(apdu)} bytes sha256:{digest}>"
    return apdu.hex().upper()


def _first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _unhex(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise TranscriptFormatError(f"{where}: expected a hex string, got {type(value).__name__}")
    try:
        return bytes.fromhex("".join(value.split()))
    except ValueError:
        raise TranscriptFormatError(f"{where}: not hexadecimal") from None


@dataclass(frozen=True, slots=True)
class Transcript:
    """A recorded session: the ATR and the (C-APDU, R-APDU) exchanges, in order."""

    atr: bytes = b""
    exchanges: tuple[tuple[bytes, bytes], ...] = field(default=())

    def __post_init__(self) -> None:
        pairs = tuple((bytes(c), bytes(r)) for c, r in self.exchanges)
        for i, (c, r) in enumerate(pairs):
            if len(c) < 4:
                raise TranscriptFormatError(f"exchange {i}: a C-APDU needs at least 4 bytes, got {len(c)}")
            if len(r) < 2:
                raise TranscriptFormatError(f"exchange {i}: an R-APDU needs at least SW1 SW2, got {len(r)} bytes")
        object.__setattr__(self, "exchanges", pairs)
        object.__setattr__(self, "atr", bytes(self.atr))

    def __len__(self) -> int:
        return len(self.exchanges)

    # ---------------------------------------------------------------- JSON edge
    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], atr: str = "") -> Transcript:
        """From (C-APDU hex, R-APDU hex) pairs."""
        exchanges = []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, Sequence) or isinstance(pair, str | bytes) or len(pair) != 2:
                raise TranscriptFormatError(f"exchange {i}: expected a (command, response) pair")
            exchanges.append((_unhex(pair[0], f"exchange {i} command"), _unhex(pair[1], f"exchange {i} response")))
        return cls(_unhex(atr, "atr"), tuple(exchanges))

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Transcript:
        if not isinstance(obj, Mapping):
            raise TranscriptFormatError("a transcript is a JSON object with 'atr' and 'exchanges'")
        items = obj.get("exchanges")
        if not isinstance(items, list):
            raise TranscriptFormatError("'exchanges' must be a list of {\"c\": hex, \"r\": hex}")
        exchanges = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or "c" not in item or "r" not in item:
                raise TranscriptFormatError(f"exchange {i}: expected an object with 'c' and 'r'")
            exchanges.append((_unhex(item["c"], f"exchange {i} 'c'"), _unhex(item["r"], f"exchange {i} 'r'")))
        return cls(_unhex(obj.get("atr", ""), "atr"), tuple(exchanges))

    def to_dict(self) -> dict[str, Any]:
        return {
            "atr": self.atr.hex().upper(),
            "exchanges": [{"c": c.hex().upper(), "r": r.hex().upper()} for c, r in self.exchanges],
        }

    @classmethod
    def loads(cls, text: str) -> Transcript:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TranscriptFormatError(f"not JSON: {exc.msg} (line {exc.lineno})") from None
        return cls.from_dict(obj)

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Transcript:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise TransportError(f"cannot read transcript {os.fspath(path)!r}: {exc.strerror}") from None
        try:
            return cls.loads(text)
        except TranscriptFormatError as exc:
            raise TranscriptFormatError(f"{os.fspath(path)}: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the transcript as JSON, creating the file with mode 0600 (it may hold secrets)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self.dumps() + "\n")


class ReplayTransport:
    """A :class:`~cardkit.transport.base.Transport` that answers from a :class:`Transcript`, in order.

    ``transcript`` is a :class:`Transcript`, a path to a JSON transcript, or a sequence of
    (C-APDU hex, R-APDU hex) pairs (then ``atr`` gives the ATR as hex). Resets do not consume exchanges.
    """

    protocol = "T=1"

    def __init__(self, transcript: Transcript | str | os.PathLike[str] | Sequence[tuple[str, str]], *,
                 atr: str = "", name: str = "replay") -> None:
        if isinstance(transcript, Transcript):
            self.transcript = transcript
        elif isinstance(transcript, str | os.PathLike):
            self.transcript = Transcript.load(transcript)
            name = name if name != "replay" else f"replay:{os.fspath(transcript)}"
        else:
            self.transcript = Transcript.from_pairs(transcript, atr)
        self.name = name
        self.position = 0
        self.closed = False

    @property
    def atr(self) -> bytes:
        return self.transcript.atr

    @property
    def remaining(self) -> int:
        return len(self.transcript.exchanges) - self.position

    def transmit(self, apdu: bytes) -> bytes:
        if self.closed:
            raise TransportError(f"{self.name} is closed")
        apdu = bytes(apdu)
        i = self.position
        if i >= len(self.transcript.exchanges):
            raise ReplayExhaustedError(
                f"{self.name}: command #{i} {describe_apdu(apdu)} sent after the last of the "
                f"{len(self.transcript.exchanges)} recorded exchanges", index=i,
            )
        expected, response = self.transcript.exchanges[i]
        if apdu != expected:
            at = _first_difference(expected, apdu)
            raise ReplayMismatchError(
                f"{self.name}: exchange #{i}: expected {describe_apdu(expected)} ({len(expected)} bytes), "
                f"got {describe_apdu(apdu)} ({len(apdu)} bytes); first difference at byte {at}",
                index=i, expected=expected, got=apdu,
            )
        self.position += 1
        return response

    def reset(self, cold: bool = False) -> bytes:
        return self.transcript.atr

    def verify_complete(self) -> None:
        """Raise :class:`ReplayExhaustedError` unless every recorded exchange was replayed."""
        if self.remaining:
            nxt = describe_apdu(self.transcript.exchanges[self.position][0])
            raise ReplayExhaustedError(
                f"{self.name}: {self.remaining} recorded exchange(s) not replayed, next is #{self.position} {nxt}",
                index=self.position,
            )

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> ReplayTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class RecordingTransport:
    """Wrap a transport and record every successful exchange (and the ATR) as a :class:`Transcript`."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self._atr = inner.atr
        self._exchanges: list[tuple[bytes, bytes]] = []

    @property
    def atr(self) -> bytes:
        return self.inner.atr

    @property
    def protocol(self) -> str:
        return self.inner.protocol

    def transmit(self, apdu: bytes) -> bytes:
        response = self.inner.transmit(apdu)
        self._exchanges.append((bytes(apdu), bytes(response)))
        return response

    def reset(self, cold: bool = False) -> bytes:
        return self.inner.reset(cold)

    def close(self) -> None:
        self.inner.close()

    @property
    def transcript(self) -> Transcript:
        return Transcript(self._atr, tuple(self._exchanges))

    def save(self, path: str | os.PathLike[str]) -> None:
        self.transcript.save(path)

    def __enter__(self) -> RecordingTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
