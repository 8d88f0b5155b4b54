"""CardSession: a chain of one-method processors between the application and the transport.

Order, from the application down to the wire::

    application -> [secure channel, ...pushed processors] -> Chaining -> T0Responses -> Trace -> transport

* :class:`T0Responses` follows 61xx with GET RESPONSE (ISO 7816-4 §7.6.1) and re-sends on 6Cxx with the
  Le the card asked for (ISO 7816-3 §12.2.2 / 7816-4 §5.6).
* :class:`Chaining` splits command data longer than 255 bytes into chained short APDUs (CLA b5,
  ISO 7816-4 §5.3.3) unless the card takes extended lengths.
* :class:`Trace` logs every exchange on the ``cardkit.apdu`` logger at level :data:`TRACE` and optionally
  to a JSON Lines file, with secrets and personal data redacted.
* A secure channel is one more processor pushed on top; application code does not change.

:meth:`CardSession.send` is the one place that turns an error status word into a typed exception
(via :func:`cardkit.sw.check`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import IO, Protocol

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.sw import check, describe
from cardkit.transport.base import Transport

__all__ = ["TRACE", "CardSession", "Chaining", "Processor", "Send", "T0Responses", "Trace", "redact"]

log = logging.getLogger("cardkit.apdu")
#: Logging level for APDU traffic (below DEBUG).
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

Send = Callable[[CommandApdu], ResponseApdu]


class Processor(Protocol):
    """One link of the chain: take a command, call ``send`` (the rest of the chain) and return a response."""

    def process(self, command: CommandApdu, send: Send) -> ResponseApdu: ...


# ISO 7816-4 / GPCS instructions whose command data is secret: VERIFY, CHANGE REFERENCE DATA, RESET
# RETRY COUNTER, EXTERNAL/MUTUAL AUTHENTICATE, INTERNAL AUTHENTICATE, PUT KEY, INITIALIZE UPDATE's
# host challenge is not secret but the cryptograms in its response are shown only by length too.
_SECRET_INS = frozenset({0x20, 0x21, 0x24, 0x2C, 0x82, 0x88, 0x86, 0x87, 0xD8, 0x50})
# Instructions whose command or response data may hold personal data (file contents): READ/UPDATE/
# WRITE/APPEND/SEARCH BINARY|RECORD, PUT DATA, STORE DATA, GET DATA on application objects.
_DATA_INS = frozenset({0xB0, 0xB1, 0xB2, 0xB3, 0xD6, 0xD7, 0xDC, 0xDD, 0xD0, 0xD1, 0xE2, 0xA2, 0xDA, 0xDB,
                       0xE4, 0xE0})


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:8]


def redact(command: CommandApdu, response: ResponseApdu | None = None, *,
           origin: CommandApdu | None = None) -> tuple[str, str]:
    """Hex strings for a trace: header and lengths in clear, secret and personal data replaced.

    Secret data (PINs, keys, cryptograms) is shown as ``<N bytes secret>``; file contents as
    ``<N bytes sha256:xxxxxxxx>`` so two traces can still be compared. ``origin`` is the command a
    GET RESPONSE continues: its response data is classified like the origin's.
    """
    rclass = origin if origin is not None and command.ins == 0xC0 else command
    head = command.header.hex().upper()
    if command.data:
        if command.sensitive or command.ins in _SECRET_INS:
            body = f" <{len(command.data)} bytes secret>"
        elif command.ins in _DATA_INS:
            body = f" <{len(command.data)} bytes sha256:{_digest(command.data)}>"
        else:
            body = " " + command.data.hex().upper()
    else:
        body = ""
    if command.le is not None:
        body += f" Le={command.le}"
    resp = ""
    if response is not None:
        if not response.data:
            rdata = ""
        elif rclass.ins in _SECRET_INS or rclass.sensitive:
            rdata = f"<{len(response.data)} bytes secret> "
        elif rclass.ins in _DATA_INS:
            rdata = f"<{len(response.data)} bytes sha256:{_digest(response.data)}> "
        else:
            rdata = response.data.hex().upper() + " "
        resp = f"{rdata}{response.sw:04X}"
    return head + body, resp


class T0Responses:
    """GET RESPONSE on 61xx (concatenating) and re-send with the right Le on 6Cxx."""

    def __init__(self, max_rounds: int = 256) -> None:
        self.max_rounds = max_rounds

    def process(self, command: CommandApdu, send: Send) -> ResponseApdu:
        response = send(command)
        if response.sw1 == 0x6C:
            response = send(command.replace(le=response.sw2 or 256))
        if response.sw1 != 0x61:
            return response
        chunks = [response.data]
        cla = (command.cla & 0x4F) if command.cla & 0x40 else (command.cla & 0x03)
        for _ in range(self.max_rounds):
            le = response.sw2 or 256
            response = send(CommandApdu(cla, 0xC0, 0, 0, le=le, name="GET RESPONSE"))
            if response.sw1 == 0x6C:
                response = send(CommandApdu(cla, 0xC0, 0, 0, le=response.sw2 or 256, name="GET RESPONSE"))
            chunks.append(response.data)
            if response.sw1 != 0x61:
                break
        return ResponseApdu(b"".join(chunks), response.sw1, response.sw2)


class Chaining:
    """Split long command data into chained APDUs when the card does not take extended lengths."""

    def __init__(self, extended: bool = False, chunk: int = 255) -> None:
        self.extended = extended
        self.chunk = chunk

    def process(self, command: CommandApdu, send: Send) -> ResponseApdu:
        n = len(command.data)
        if self.extended or n <= self.chunk:
            le = command.le
            if not self.extended and le is not None and le > 256:
                command = command.replace(le=256)  # the card answers 61xx for the rest
            return send(command)
        pieces = [command.data[i : i + self.chunk] for i in range(0, n, self.chunk)]
        for piece in pieces[:-1]:
            response = send(command.replace(cla=command.cla | 0x10, data=piece, le=None))
            if response.sw != 0x9000:
                return response
        le = command.le if command.le is None or command.le <= 256 else 256
        return send(command.replace(data=pieces[-1], le=le))


class Trace:
    """Log every exchange (redacted) with its duration; optionally append JSON Lines to ``sink``."""

    def __init__(self, sink: IO[str] | None = None) -> None:
        self.sink = sink
        self.count = 0
        self._origin: CommandApdu | None = None

    def process(self, command: CommandApdu, send: Send) -> ResponseApdu:
        enabled = self.sink is not None or log.isEnabledFor(TRACE)
        if not enabled:
            self.count += 1
            return send(command)
        t0 = time.perf_counter()
        response = send(command)
        dt = (time.perf_counter() - t0) * 1000
        self.count += 1
        if command.ins != 0xC0:
            self._origin = command
        c, r = redact(command, response, origin=self._origin)
        if log.isEnabledFor(TRACE):
            log.log(TRACE, ">> %s", c)
            log.log(TRACE, "<< %s (%s) %.2f ms", r, describe(response.sw), dt)
        if self.sink is not None:
            self.sink.write(json.dumps({
                "t": time.time(), "name": command.label, "c": c, "r": r, "sw": f"{response.sw:04X}",
                "meaning": describe(response.sw), "ms": round(dt, 3),
            }) + "\n")
        return response


class CardSession:
    """An open session with one card: the processor chain over a :class:`Transport`.

    ``transmit`` returns whatever the card answered; ``send`` raises the typed
    :class:`~cardkit.sw.StatusWordError` for non-success status words.
    """

    def __init__(self, transport: Transport, *, extended: bool = False, trace: IO[str] | None = None,
                 processors: list[Processor] | None = None) -> None:
        self.transport = transport
        self.chaining = Chaining(extended=extended)
        self.t0 = T0Responses()
        self.trace = Trace(trace)
        self._top: list[Processor] = list(processors or [])
        self._bottom: list[Processor] = [self.chaining, self.t0, self.trace]
        self._chain: Send = self._build()

    # ------------------------------------------------------------------ chain management
    def _wire(self, command: CommandApdu) -> ResponseApdu:
        return ResponseApdu.from_bytes(self.transport.transmit(command.to_bytes()))

    def _build(self) -> Send:
        send: Send = self._wire
        for proc in reversed(self._top + self._bottom):
            send = _link(proc, send)
        return send

    def push(self, processor: Processor) -> None:
        """Put a processor on top of the chain (e.g. an open secure channel)."""
        self._top.insert(0, processor)
        self._chain = self._build()

    def remove(self, processor: Processor) -> None:
        if processor in self._top:
            self._top.remove(processor)
            self._chain = self._build()

    @property
    def processors(self) -> tuple[Processor, ...]:
        return tuple(self._top)

    # ------------------------------------------------------------------ I/O
    @property
    def atr(self) -> bytes:
        return self.transport.atr

    @property
    def apdu_count(self) -> int:
        """Number of APDUs that went over the wire in this session."""
        return self.trace.count

    def transmit(self, command: CommandApdu | bytes) -> ResponseApdu:
        if not isinstance(command, CommandApdu):
            command = CommandApdu.from_bytes(command)
        return self._chain(command)

    def send(self, command: CommandApdu | bytes, *, context: Mapping[str, str] | None = None,
             allow: tuple[int, ...] = (), allow_warnings: bool = False) -> ResponseApdu:
        if not isinstance(command, CommandApdu):
            command = CommandApdu.from_bytes(command)
        response = self._chain(command)
        return check(response, command, context=context, allow=allow, allow_warnings=allow_warnings)

    def reset(self, cold: bool = False) -> bytes:
        """Reset the card: every pushed processor (secure channels) is dropped."""
        self._top.clear()
        self._chain = self._build()
        return self.transport.reset(cold)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> CardSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _link(proc: Processor, nxt: Send) -> Send:
    def send(command: CommandApdu) -> ResponseApdu:
        return proc.process(command, nxt)

    return send
