"""Serve several virtual cards to the real PC/SC stack at once, one vpcd reader slot per card.

vpcd (Debian ``vsmartcard-vpcd``) listens on one TCP port per reader slot and a card is a TCP client of that
port (:class:`cardkit.transport.vpcd.VpcdCardServer`). This module puts many cards into many slots:

* :class:`CardSlots` — a group of :class:`~cardkit.transport.vpcd.VpcdCardServer` s (card *i* on port *i*),
  started and stopped together. Each server answers vpcd's GET ATR at any time and reconnects by itself
  when pcscd restarts.
* :func:`serve_many` — tests and benchmarks: insert cards into the vpcd readers of a
  :class:`~cardkit.pcscd.PcscDaemon` and return once PC/SC reports every card present; leaving the
  ``with`` block pulls them all and waits until every reader reads empty.
* :func:`wait_for_signal` — block until SIGINT or SIGTERM (``cardkit virtual serve``).

pcscd serves at most 16 readers (:data:`cardkit.pcscd.MAX_READERS`), so at most 16 cards can be on the real
stack at once; more parallel cards need in-process transports.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from cardkit.errors import TransportError
from cardkit.transport.virtual import CardLike
from cardkit.transport.vpcd import DEFAULT_PORT, VpcdCardServer

if TYPE_CHECKING:
    from cardkit.pcscd import PcscDaemon

__all__ = ["MAX_SLOTS", "CardSlots", "ServeError", "serve_many", "wait_for_signal"]

log = logging.getLogger(__name__)

#: pcscd serves at most 16 readers (pcsc-lite PCSCLITE_MAX_READERS_CONTEXTS), so 16 cards at most.
MAX_SLOTS = 16


class ServeError(TransportError):
    """Cards cannot be served as asked (too many cards, bad ports, pcscd not running, card not seen)."""


class CardSlots:
    """Serve ``cards[i]`` on vpcd port ``ports[i]`` (``readers[i]`` is its PC/SC name when known).

    Nothing connects before :meth:`start`. :meth:`stop` pulls every card; it is safe to call twice.
    """

    def __init__(self, cards: Sequence[CardLike], ports: Sequence[int], *, host: str = "127.0.0.1",
                 readers: Sequence[str | None] | None = None) -> None:
        if not cards:
            raise ServeError("no card to serve")
        if len(cards) > MAX_SLOTS:
            raise ServeError(f"{len(cards)} cards asked for; pcscd serves at most {MAX_SLOTS} readers")
        if len(ports) != len(cards):
            raise ServeError(f"{len(cards)} cards need {len(cards)} ports, {len(ports)} given")
        if len(set(ports)) != len(ports):
            raise ServeError(f"ports must be distinct, got {list(ports)}")
        for port in ports:
            if not 0 < port < 0x10000:
                raise ServeError(f"vpcd port must be 1..65535, got {port}")
        names: list[str | None] = list(readers) if readers is not None else [None] * len(cards)
        if len(names) != len(cards):
            raise ServeError(f"{len(cards)} cards need {len(cards)} reader names, {len(names)} given")
        self.cards: list[CardLike] = list(cards)
        self.ports: list[int] = list(ports)
        self.readers: list[str | None] = names
        self.host = host
        self.servers: list[VpcdCardServer] = [VpcdCardServer(card, host, port) for card, port in zip(cards, ports,
                                                                                                     strict=True)]

    @classmethod
    def consecutive(cls, cards: Sequence[CardLike], port: int = DEFAULT_PORT, *, host: str = "127.0.0.1") -> CardSlots:
        """Card *i* on port ``port + i`` (vpcd's slot layout: slot *n* of an entry listens on its port + *n*)."""
        if not 0 < port or port + len(cards) - 1 > 0xFFFF:
            raise ServeError(f"ports {port}..{port + len(cards) - 1} are not usable (1..65535)")
        return cls(cards, [port + i for i in range(len(cards))], host=host)

    def __len__(self) -> int:
        return len(self.cards)

    def __iter__(self) -> Iterator[tuple[str | None, int, CardLike]]:
        return iter(zip(self.readers, self.ports, self.cards, strict=True))

    @property
    def apdus(self) -> int:
        """C-APDUs answered so far by all slots."""
        return sum(s.apdus for s in self.servers)

    @property
    def connections(self) -> int:
        """Connections made to vpcd so far by all slots (a reconnect after a pcscd restart counts again)."""
        return sum(s.connections for s in self.servers)

    def start(self) -> CardSlots:
        for server in self.servers:
            server.start()
        return self

    def wait_connected(self, timeout: float) -> list[int]:
        """Wait up to ``timeout`` s until every slot holds a TCP connection; return the ports still waiting."""
        deadline = time.monotonic() + timeout
        for server in self.servers:
            server.wait_connected(max(0.0, deadline - time.monotonic()))
        return [s.port for s in self.servers if not s.connected]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> CardSlots:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class _Served(CardSlots):
    """:class:`CardSlots` whose reader names are known; :meth:`stop` waits until the readers read empty."""

    readers: list[str]  # type: ignore[assignment]

    def __init__(self, cards: Sequence[CardLike], slots: Sequence[tuple[str, int]], removal_timeout: float) -> None:
        super().__init__(cards, [port for _, port in slots], readers=[name for name, _ in slots])
        self.removal_timeout = removal_timeout
        self._stopped = False

    def reader_of(self, card: CardLike) -> str:
        for name, _, c in self:
            if c is card:
                return str(name)
        raise ServeError("this card is not served here")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        super().stop()
        from cardkit.transport.pcsc import wait_for_removal

        deadline = time.monotonic() + self.removal_timeout
        for name in self.readers:
            try:
                wait_for_removal(name, max(0.0, deadline - time.monotonic()))
            except TransportError as exc:  # pcscd gone or slow: the cards are pulled all the same
                log.info("reader %s not seen empty after pulling its card: %s", name, exc)


def serve_many(cards: Sequence[CardLike], daemon: PcscDaemon, *, timeout: float = 10.0,
               first_slot: int = 0) -> _Served:
    """Insert ``cards`` into the vpcd readers of the running ``daemon`` (slot ``first_slot`` onwards).

    Returns once PC/SC reports every card present (raises :class:`ServeError` naming the readers that stayed
    empty after ``timeout`` seconds, with every card pulled again). Use the result as a context manager, or
    call its ``stop()``: every card is pulled and each reader is waited for until it reads empty.
    ``result.readers[i]`` is the reader holding ``cards[i]``.
    """
    if not daemon.is_running():
        raise ServeError(f"{daemon!r} is not running: start it first")
    slots = daemon.slots()[first_slot:]
    if first_slot < 0 or len(cards) > len(slots):
        raise ServeError(f"{len(cards)} cards but {daemon!r} has {len(slots)} free vpcd readers from slot "
                         f"{first_slot} (pcscd serves at most {MAX_SLOTS})")
    served = _Served(cards, slots[: len(cards)], removal_timeout=timeout)
    served.start()
    from cardkit.transport.pcsc import wait_for_card

    deadline = time.monotonic() + timeout
    missing: list[str] = []
    try:
        for name in served.readers:
            try:
                wait_for_card(name, max(0.0, deadline - time.monotonic()))
            except TransportError:
                missing.append(name)
    except BaseException:
        served.stop()
        raise
    if missing:
        served.stop()
        raise ServeError(f"no card seen in {missing} after {timeout:.1f} s (is vpcd listening on their ports?)")
    log.info("serving %d cards in %s", len(cards), ", ".join(served.readers))
    return served


def wait_for_signal(stop: threading.Event | None = None, *, poll: float = 0.2) -> int | None:
    """Block until SIGINT or SIGTERM arrives (or ``stop`` is set); return the signal number (None for ``stop``).

    Handlers are installed only when called from the main thread (elsewhere only ``stop`` ends the wait) and
    the previous handlers are restored on return, so a second Ctrl-C during clean-up behaves as usual.
    """
    event = stop if stop is not None else threading.Event()
    received: list[int] = []
    previous: dict[int, Any] = {}

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        event.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        while not event.wait(poll):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return received[0] if received else None
