"""PC/SC readers through pyscard — the only module of cardkit that imports pyscard.

pyscard is imported lazily inside the functions, so ``import cardkit`` stays fast and works without it;
a missing pyscard raises :class:`PcscUnavailableError` when a PC/SC function is first used.

Every PC/SC return code is translated here (PC/SC Workgroup specification part 5 §3; pcsc-lite
``pcsclite.h`` values): a pulled card becomes :class:`~cardkit.errors.CardRemovedError`, an empty
reader :class:`~cardkit.errors.NoCardError`, an unknown reader :class:`~cardkit.errors.NoReaderError`,
anything else a :class:`~cardkit.errors.TransportError` naming the reader and the PC/SC code. No
pyscard exception leaves this module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Literal

from cardkit.errors import CardRemovedError, NoCardError, NoReaderError, TransportError

__all__ = [
    "CardResetError", "CardWaitTimeout", "PcscTransport", "PcscUnavailableError", "ReaderBusyError",
    "RemovalWaitTimeout", "find_reader", "list_readers", "wait_for_card", "wait_for_removal",
]

log = logging.getLogger(__name__)

Protocol = Literal["any", "T=0", "T=1"]
Disposition = Literal["leave", "reset", "unpower"]

# PC/SC return codes (pcsc-lite pcsclite.h, identical to Windows winerror.h SCARD_* values). Kept as
# numbers so the translation table below can be built without importing pyscard.
_S_SUCCESS = 0x00000000
_E_CANCELLED = 0x80100002
_E_INVALID_HANDLE = 0x80100003
_E_INSUFFICIENT_BUFFER = 0x80100008
_E_UNKNOWN_READER = 0x80100009
_E_TIMEOUT = 0x8010000A
_E_SHARING_VIOLATION = 0x8010000B
_E_NO_SMARTCARD = 0x8010000C
_E_PROTO_MISMATCH = 0x8010000F
_E_NOT_TRANSACTED = 0x80100016
_E_READER_UNAVAILABLE = 0x80100017
_E_NO_SERVICE = 0x8010001D
_E_SERVICE_STOPPED = 0x8010001E
_E_NO_READERS_AVAILABLE = 0x8010002E
_W_UNRESPONSIVE_CARD = 0x80100066
_W_UNPOWERED_CARD = 0x80100067
_W_RESET_CARD = 0x80100068
_W_REMOVED_CARD = 0x80100069

# Reader states (PC/SC part 5 §3.1.3, SCARD_READERSTATE.dwEventState).
_STATE_UNAWARE = 0x0000
_STATE_CHANGED = 0x0002
_STATE_UNKNOWN = 0x0004
_STATE_UNAVAILABLE = 0x0008
_STATE_EMPTY = 0x0010
_STATE_PRESENT = 0x0020
_STATE_MUTE = 0x0200


class PcscUnavailableError(TransportError):
    """pyscard is not installed, or no PC/SC service (pcscd) is running."""


class ReaderBusyError(TransportError):
    """Another application holds the card exclusively (SCARD_E_SHARING_VIOLATION)."""


class CardResetError(TransportError):
    """Another application reset the card during the session: volatile state (secure channel,
    selected application, verified PIN) is lost (SCARD_W_RESET_CARD)."""


class CardWaitTimeout(NoCardError):
    """No card arrived in the reader within the time asked for."""


class RemovalWaitTimeout(TransportError):
    """The card was still in the reader when the time asked for ran out."""


def _scard() -> Any:
    try:
        from smartcard import scard
    except ImportError as exc:  # pragma: no cover - pyscard is installed in the test environments
        raise PcscUnavailableError(
            "pyscard is not installed: install cardkit[pcsc] (it builds against libpcsclite-dev)"
        ) from exc
    return scard


def _code(hresult: int) -> int:
    return hresult & 0xFFFFFFFF


def _message(hresult: int) -> str:
    try:
        text = str(_scard().SCardGetErrorMessage(hresult))
    except Exception:  # pragma: no cover - defensive: never mask the original error
        text = "unknown error"
    return f"{text.rstrip('.')} (0x{_code(hresult):08X})"


def _error(hresult: int, action: str, reader: str | None = None) -> TransportError:
    """The cardkit error for a failed PC/SC call."""
    code = _code(hresult)
    where = f" in reader {reader!r}" if reader else ""
    msg = f"{action}{where} failed: {_message(hresult)}"
    if code in (_W_REMOVED_CARD,):
        return CardRemovedError(f"card removed{where} while {action}")
    if code in (_E_NO_SMARTCARD,):
        return NoCardError(f"no card{where}")
    if code in (_E_UNKNOWN_READER, _E_READER_UNAVAILABLE):
        return NoReaderError(msg)
    if code in (_E_NO_SERVICE, _E_SERVICE_STOPPED):
        return PcscUnavailableError(f"{msg}: is pcscd running?")
    if code == _E_SHARING_VIOLATION:
        return ReaderBusyError(f"{action}{where}: another application holds the card exclusively")
    if code == _W_RESET_CARD:
        return CardResetError(f"card{where} was reset by another application")
    if code in (_W_UNRESPONSIVE_CARD, _W_UNPOWERED_CARD):
        return TransportError(f"{msg}: the card does not answer (mute or badly inserted)")
    return TransportError(msg)


class _Context:
    """A PC/SC resource-manager context (SCardEstablishContext … SCardReleaseContext)."""

    def __init__(self) -> None:
        self.scard = _scard()
        hresult, handle = self.scard.SCardEstablishContext(self.scard.SCARD_SCOPE_USER)
        if hresult != _S_SUCCESS:
            raise _error(hresult, "establishing a PC/SC context")
        self.handle = handle

    def readers(self) -> list[str]:
        hresult, names = self.scard.SCardListReaders(self.handle, [])
        if _code(hresult) == _E_NO_READERS_AVAILABLE:
            return []
        if hresult != _S_SUCCESS:
            raise _error(hresult, "listing readers")
        return [str(n) for n in names]

    def state(self, reader: str, current: int, timeout_ms: int) -> tuple[int, int, bytes]:
        """(hresult, event state, ATR) of ``reader`` after waiting up to ``timeout_ms`` for a change."""
        hresult, states = self.scard.SCardGetStatusChange(self.handle, timeout_ms, [(reader, current)])
        if hresult != _S_SUCCESS:
            return _code(hresult), 0, b""
        _, event, atr = states[0]
        return _S_SUCCESS, int(event), bytes(atr)

    def release(self) -> None:
        if self.handle is not None:
            self.scard.SCardReleaseContext(self.handle)
            self.handle = None

    def __enter__(self) -> _Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def list_readers() -> list[str]:
    """Names of the PC/SC readers, in the order the resource manager gives them (empty if none)."""
    with _Context() as ctx:
        return ctx.readers()


def _resolve(name: str, readers: list[str]) -> str:
    if name in readers:
        return name
    if name.strip().isdigit():
        index = int(name.strip())
        if index < len(readers):
            return readers[index]
        raise NoReaderError(f"no reader number {index}: {_listing(readers)}")
    wanted = name.casefold()
    matches = [r for r in readers if wanted in r.casefold()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise NoReaderError(f"{name!r} matches {len(matches)} readers, be more precise: {_listing(matches)}")
    raise NoReaderError(f"no reader matches {name!r}: {_listing(readers)}")


def _listing(readers: list[str]) -> str:
    if not readers:
        return "there is no reader at all"
    return "readers are " + ", ".join(f"{i}: {r!r}" for i, r in enumerate(readers))


def find_reader(name: str) -> str:
    """The full name of the reader ``name`` designates.

    ``name`` is tried as the exact reader name, then — if it is all digits — as an index into
    :func:`list_readers` ("0" is the first reader, as in ``opensc-tool -r 0``), then as a
    case-insensitive substring that must match exactly one reader. Raises
    :class:`~cardkit.errors.NoReaderError` listing the readers that exist.
    """
    return _resolve(name, list_readers())


def _wait(reader: str, timeout: float, want_present: bool) -> bytes:
    deadline = time.monotonic() + max(timeout, 0.0)
    with _Context() as ctx:
        reader = _resolve(reader, ctx.readers())
        current = _STATE_UNAWARE
        while True:
            remaining = deadline - time.monotonic()
            wait_ms = 0 if current == _STATE_UNAWARE else max(0, int(remaining * 1000))
            code, event, atr = ctx.state(reader, current, wait_ms)
            if code == _S_SUCCESS:
                present = bool(event & _STATE_PRESENT)
                if event & (_STATE_UNKNOWN | _STATE_UNAVAILABLE):
                    raise NoReaderError(f"reader {reader!r} disappeared")
                if want_present and present and not event & _STATE_MUTE:
                    return atr
                if not want_present and (event & _STATE_EMPTY or not present):
                    return b""
                current = event & ~_STATE_CHANGED
            elif code != _E_TIMEOUT:
                raise _error(code, "waiting for a card event", reader)
            if remaining <= 0:
                break
    if want_present:
        raise CardWaitTimeout(f"no card in reader {reader!r} after {timeout:.1f} s")
    raise RemovalWaitTimeout(f"card still in reader {reader!r} after {timeout:.1f} s")


def wait_for_card(reader: str, timeout: float) -> bytes:
    """Wait until a (non-mute) card is in ``reader`` (resolved like :func:`find_reader`); return its ATR.

    Raises :class:`CardWaitTimeout` (a :class:`~cardkit.errors.NoCardError`) after ``timeout`` seconds.
    """
    return _wait(reader, timeout, want_present=True)


def wait_for_removal(reader: str, timeout: float) -> None:
    """Wait until ``reader`` is empty. Raises :class:`RemovalWaitTimeout` after ``timeout`` seconds."""
    _wait(reader, timeout, want_present=False)


class PcscTransport:
    """A :class:`~cardkit.transport.base.Transport` to the card in a PC/SC reader.

    ``reader`` is resolved like :func:`find_reader`. ``exclusive`` asks for SCARD_SHARE_EXCLUSIVE (no
    other application can talk to the card until :meth:`close`); otherwise wrap multi-APDU sequences
    in :meth:`transaction`. ``protocol`` restricts the negotiated protocol. ``on_close`` is what happens
    to the card at :meth:`close`: ``"reset"`` (the default: no authenticated state is left behind for
    the next application), ``"leave"`` or ``"unpower"``.
    """

    def __init__(self, reader: str, *, exclusive: bool = False, protocol: Protocol = "any",
                 on_close: Disposition = "reset") -> None:
        if protocol not in ("any", "T=0", "T=1"):
            raise TransportError(f"protocol must be 'any', 'T=0' or 'T=1', got {protocol!r}")
        if on_close not in ("leave", "reset", "unpower"):
            raise TransportError(f"on_close must be 'leave', 'reset' or 'unpower', got {on_close!r}")
        self._ctx = _Context()
        s = self._ctx.scard
        self._scard = s
        self._card: Any = None
        try:
            self.name = _resolve(reader, self._ctx.readers())
            self._share = s.SCARD_SHARE_EXCLUSIVE if exclusive else s.SCARD_SHARE_SHARED
            self._protocols = {
                "any": s.SCARD_PROTOCOL_T0 | s.SCARD_PROTOCOL_T1,
                "T=0": s.SCARD_PROTOCOL_T0,
                "T=1": s.SCARD_PROTOCOL_T1,
            }[protocol]
            self._on_close = {
                "leave": s.SCARD_LEAVE_CARD, "reset": s.SCARD_RESET_CARD, "unpower": s.SCARD_UNPOWER_CARD,
            }[on_close]
            hresult, card, active = s.SCardConnect(self._ctx.handle, self.name, self._share, self._protocols)
            if hresult != _S_SUCCESS:
                raise _error(hresult, "connecting to the card", self.name)
            self._card = card
            self._set_protocol(active)
            self._atr = self._status_atr()
        except BaseException:
            self._ctx.release()
            raise
        log.debug("connected to %r (%s, ATR %s)", self.name, self._protocol, self._atr.hex().upper())

    # ---------------------------------------------------------------- Transport
    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def protocol(self) -> str:
        return self._protocol

    @property
    def closed(self) -> bool:
        return self._card is None

    def transmit(self, apdu: bytes) -> bytes:
        card = self._require_open()
        hresult, response = self._scard.SCardTransmit(card, self._pci, list(apdu))
        if hresult != _S_SUCCESS:
            raise _error(hresult, f"sending a {len(apdu)}-byte APDU", self.name)
        return bytes(response)

    def reset(self, cold: bool = False) -> bytes:
        """Warm reset (or cold: power cycle) the card; returns the new ATR."""
        card = self._require_open()
        s = self._scard
        init = s.SCARD_UNPOWER_CARD if cold else s.SCARD_RESET_CARD
        hresult, active = s.SCardReconnect(card, self._share, self._protocols, init)
        if hresult != _S_SUCCESS:
            raise _error(hresult, "resetting the card", self.name)
        self._set_protocol(active)
        self._atr = self._status_atr()
        return self._atr

    def close(self) -> None:
        card, self._card = self._card, None
        if card is not None:
            hresult = self._scard.SCardDisconnect(card, self._on_close)
            if hresult != _S_SUCCESS and _code(hresult) not in (_W_REMOVED_CARD, _E_NO_SMARTCARD,
                                                                _E_INVALID_HANDLE, _E_READER_UNAVAILABLE):
                log.warning("disconnecting from %r: %s", self.name, _message(hresult))
        self._ctx.release()

    # ---------------------------------------------------------------- extras
    @contextmanager
    def transaction(self) -> Iterator[PcscTransport]:
        """Hold the card for a sequence of APDUs (SCardBeginTransaction … SCardEndTransaction)."""
        card = self._require_open()
        hresult = self._scard.SCardBeginTransaction(card)
        if hresult != _S_SUCCESS:
            raise _error(hresult, "beginning a transaction", self.name)
        try:
            yield self
        finally:
            if self._card is not None:
                hresult = self._scard.SCardEndTransaction(self._card, self._scard.SCARD_LEAVE_CARD)
                if hresult != _S_SUCCESS:
                    log.debug("ending the transaction on %r: %s", self.name, _message(hresult))

    def __enter__(self) -> PcscTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self._protocol
        return f"PcscTransport({self.name!r}, {state})"

    # ---------------------------------------------------------------- helpers
    def _require_open(self) -> Any:
        if self._card is None:
            raise TransportError(f"the connection to {self.name!r} is closed")
        return self._card

    def _set_protocol(self, active: int) -> None:
        s = self._scard
        if active == s.SCARD_PROTOCOL_T0:
            self._protocol, self._pci = "T=0", s.SCARD_PCI_T0
        elif active == s.SCARD_PROTOCOL_T1:
            self._protocol, self._pci = "T=1", s.SCARD_PCI_T1
        else:
            self._protocol, self._pci = "raw", s.SCARD_PCI_RAW

    def _status_atr(self) -> bytes:
        hresult, _reader, _state, _protocol, atr = self._scard.SCardStatus(self._card)
        if hresult != _S_SUCCESS:
            raise _error(hresult, "reading the card status", self.name)
        return bytes(atr)
