"""Serve a card object to pcscd through the vsmartcard ``vpcd`` reader driver.

vpcd (Debian ``vsmartcard-vpcd``) is a PC/SC reader driver that listens on a TCP port per reader slot;
a *card* is a TCP client that connects to it. Once connected, every PC/SC application (pyscard,
OpenSC, pcsc_scan) sees a card in that reader, and every APDU they send arrives here. Closing the socket
is the same as pulling the card.

Wire format (vsmartcard's vpcd protocol, "virtual smart card" documentation; measured on Debian 12,
see DESIGN.md): each message in either direction is a 2-byte big-endian length followed by that many
bytes. A 1-byte message is a control code (:data:`CTRL_POWER_OFF`, :data:`CTRL_POWER_ON`,
:data:`CTRL_RESET`, :data:`CTRL_GET_ATR`); only GET ATR is answered (with the ATR). Anything longer is a
C-APDU, answered with one message holding the R-APDU (data ‖ SW1 SW2).

Latency: vpcd writes the length and the APDU separately, so without care every APDU waits for the
peer's delayed ACK (Nagle + delayed ACK, ~40 ms on Linux). The server sets ``TCP_NODELAY`` and re-arms
``TCP_QUICKACK`` after every ``recv()``, which brings a round trip down to well under a millisecond.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from types import FrameType, TracebackType
from typing import Any

from cardkit.errors import TransportError
from cardkit.transport.virtual import CardLike

__all__ = [
    "CTRL_GET_ATR", "CTRL_POWER_OFF", "CTRL_POWER_ON", "CTRL_RESET", "DEFAULT_PORT", "VpcdCardServer",
    "VpcdConfigError",
]

log = logging.getLogger(__name__)

#: vpcd's default port for the first reader slot ("Virtual PCD 00 00"); slot n listens on port + n
#: (Debian /etc/reader.conf.d/vpcd: ``DEVICENAME /dev/null:0x8C7B``).
DEFAULT_PORT = 35963

# vpcd protocol control codes (1-byte messages from vpcd to the card).
CTRL_POWER_OFF = 0x00  # power the card down; no answer
CTRL_POWER_ON = 0x01   # power up (cold reset); no answer
CTRL_RESET = 0x02      # warm reset; no answer
CTRL_GET_ATR = 0x04    # answer with the ATR (vpcd asks at every presence poll, ~2.5 times a second)

#: R-APDU sent when the card object raised: SW 6F00, "no precise diagnosis" (ISO 7816-4:2020 §5.6).
SW_NO_PRECISE_DIAGNOSIS = b"\x6f\x00"
# The length prefix is two bytes, so a message holds at most 65535 bytes (vpcd protocol).
_MAX_MESSAGE = 0xFFFF


class VpcdConfigError(TransportError, ValueError):
    """A :class:`VpcdCardServer` was asked for an impossible port or backoff."""


class _Disconnected(Exception):
    """Internal: the connection to vpcd ended (EOF, reset, or our own shutdown)."""


class VpcdCardServer:
    """Serve ``card`` in one vpcd reader slot: connect to vpcd at ``host:port`` and answer its requests.

    The server runs in a background thread started by :meth:`start`; it connects as soon as vpcd listens
    (retrying with exponential backoff from ``backoff`` up to ``max_backoff`` seconds) and reconnects the
    same way when the connection ends while the card is still "inserted" (e.g. pcscd restarted).
    :meth:`remove` pulls the card (closes the socket), :meth:`insert` puts it back, :meth:`stop` pulls it
    and ends the thread. Exceptions from the card object are logged and answered with SW 6F00; no error
    ends the thread silently.
    """

    def __init__(self, card: CardLike, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 quickack: bool = True, backoff: float = 0.02, max_backoff: float = 1.0,
                 connect_timeout: float = 2.0) -> None:
        if not 0 < port < 0x10000:
            raise VpcdConfigError(f"port must be 1..65535, got {port}")
        if backoff <= 0 or max_backoff < backoff:
            raise VpcdConfigError("backoff must be > 0 and max_backoff >= backoff")
        self.card = card
        self.host = host
        self.port = port
        self.quickack = quickack
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._inserted = threading.Event()
        self._connected = threading.Event()
        self._idle = threading.Event()  # set while no connection is open (and the card is powered off)
        self._idle.set()
        #: Number of connections made to vpcd (a reconnect after a pcscd restart counts again).
        self.connections = 0
        #: Number of C-APDUs answered.
        self.apdus = 0

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> VpcdCardServer:
        """Insert the card and start serving it in a background thread (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._inserted.set()
                return self
            self._stop.clear()
            self._inserted.set()
            self._thread = threading.Thread(target=self._run, name=f"vpcd-card-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Pull the card and end the background thread."""
        self._stop.set()
        self._inserted.clear()
        self._drop_connection()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("vpcd card server on port %d did not stop within %.1f s", self.port, timeout)
        self._thread = None

    def remove(self, timeout: float = 5.0) -> None:
        """Pull the card: close the connection (PC/SC reports the reader empty) and keep the thread waiting.

        Returns once the connection is closed and the card powered off (or after ``timeout`` seconds).
        """
        self._inserted.clear()
        self._drop_connection()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._idle.wait(timeout)

    def insert(self) -> None:
        """Put the card back (reconnect to vpcd); starts the server if it was not running."""
        if self._thread is None or not self._thread.is_alive():
            self.start()
        else:
            self._inserted.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """True while a TCP connection to vpcd is open (vpcd may not have accepted it yet)."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def serve_forever(self) -> None:
        """Serve until SIGINT or SIGTERM (or :meth:`stop` from another thread), then pull the card.

        Signal handlers are installed only when called from the main thread and restored on return.
        """
        previous: dict[signal.Signals, Any] = {}

        def _on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping the vpcd card server on port %d", signum, self.port)
            self._stop.set()

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, _on_signal)
        try:
            self.start()
            while not self._stop.wait(0.2):
                pass
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def __enter__(self) -> VpcdCardServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---------------------------------------------------------------- the thread
    def _run(self) -> None:
        delay = self.backoff
        while not self._stop.is_set():
            if not self._inserted.wait(0.1):
                continue
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            except OSError as exc:
                log.debug("vpcd not reachable on %s:%d (%s); retrying in %.2f s", self.host, self.port, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            delay = self.backoff
            try:
                self._serve(sock)
            except _Disconnected:
                pass
            except Exception:  # never let the thread die silently
                log.exception("vpcd card server on port %d: connection failed", self.port)
                self._stop.wait(delay)
            finally:
                self._close(sock)
        self._power_off()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if not self._inserted.is_set() or self._stop.is_set():
                return
            self._sock = sock
            self._idle.clear()
        self.connections += 1
        self._connected.set()
        log.info("card inserted in vpcd slot %s:%d", self.host, self.port)
        while True:
            length = int.from_bytes(self._recv_exact(sock, 2), "big")
            if length == 0:
                log.warning("vpcd on port %d sent an empty message; ignored", self.port)
                continue
            message = self._recv_exact(sock, length)
            reply = self._handle(message)
            if reply is not None:
                sock.sendall(len(reply).to_bytes(2, "big") + reply)

    def _handle(self, message: bytes) -> bytes | None:
        if len(message) == 1:
            code = message[0]
            try:
                if code == CTRL_GET_ATR:
                    return bytes(self.card.atr)
                if code == CTRL_POWER_ON:
                    self.card.power_on()
                elif code == CTRL_RESET:
                    self.card.power_on()
                elif code == CTRL_POWER_OFF:
                    self.card.power_off()
                else:
                    log.warning("vpcd on port %d sent unknown control code %02X; ignored", self.port, code)
            except Exception as exc:
                log.exception("card raised on vpcd control code %02X", code)
                if code == CTRL_GET_ATR:  # without an ATR there is no card: pull it
                    raise _Disconnected from exc
            return None
        try:
            reply = bytes(self.card.transmit(message))
        except Exception:
            log.exception("card raised on a %d-byte C-APDU; answering 6F00", len(message))
            reply = SW_NO_PRECISE_DIAGNOSIS
        if not 2 <= len(reply) <= _MAX_MESSAGE:
            log.error("card answered %d bytes, which is not a valid R-APDU for vpcd; answering 6F00", len(reply))
            reply = SW_NO_PRECISE_DIAGNOSIS
        self.apdus += 1
        return reply

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = sock.recv_into(view[got:], n - got)
            except OSError as exc:
                raise _Disconnected from exc
            if self.quickack:
                self._quickack(sock)
            if k == 0:
                raise _Disconnected
            got += k
        return bytes(buf)

    @staticmethod
    def _quickack(sock: socket.socket) -> None:
        # Linux clears TCP_QUICKACK after use, so it is re-armed after every recv (tcp(7)).
        opt = getattr(socket, "TCP_QUICKACK", None)
        if opt is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, opt, 1)
            except OSError:
                pass

    # ---------------------------------------------------------------- helpers
    def _drop_connection(self) -> None:
        with self._lock:
            sock = self._sock
            self._sock = None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv
            except OSError:
                pass

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            if self._sock is sock:
                self._sock = None
        try:
            sock.close()
        except OSError:
            pass
        if self._connected.is_set():
            log.info("card removed from vpcd slot %s:%d", self.host, self.port)
            self._power_off()
        self._connected.clear()
        self._idle.set()

    def _power_off(self) -> None:
        try:
            self.card.power_off()
        except Exception:
            log.exception("card raised on power off")
