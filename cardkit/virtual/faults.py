"""Fault injection for the virtual card: power loss and removal with torn writes, and MAC corruption.

* :func:`power_loss_at` — the n-th APDU from now is cut: the card answers nothing (its ``transmit`` raises
  :class:`CardGone` with ``removed=False``; ``card.powered`` is False) and the first non-volatile write that
  command makes is *torn*. The card can be powered on again.
* :func:`remove_at` — the same, but the card is gone from the reader (``removed=True``; ``card.present`` is
  False until :meth:`~cardkit.virtual.card.VirtualCard.insert`).

Tearing model (:class:`Eeprom`): a write of *k* bytes applies only a prefix of random length 0..k-1 — unless
the write is atomic. Atomic are: a single record write of at most one 64-byte page (:data:`PAGE`), and every
object-level update (file creation or deletion, life-cycle change, PIN/key store, data object), which is
applied entirely or not at all. Retry-counter decrements are always applied before a cut (anti-tearing: a
cut never gives back a PIN try).

:class:`CardGone` is a :class:`~cardkit.errors.CardRemovedError`, so code above the transport already sees the
right error type. :class:`CorruptingCard` wraps a card and flips one bit in protected commands or responses,
to test that MAC failures are detected on both sides.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cardkit.apdu import CommandApdu
from cardkit.errors import ApduFormatError, CardRemovedError
from cardkit.virtual.fs import VirtualCardError

if TYPE_CHECKING:
    from cardkit.transport.virtual import CardLike
    from cardkit.virtual.card import VirtualCard

__all__ = ["PAGE", "CardGone", "CorruptingCard", "Eeprom", "Fault", "PowerCut", "power_loss_at", "remove_at"]

#: EEPROM page size: a record write of at most this many bytes is atomic.
PAGE = 64


class CardGone(CardRemovedError):
    """The card lost power (``removed`` False) or left the reader (``removed`` True) during a command."""

    def __init__(self, message: str, *, removed: bool) -> None:
        self.removed = removed
        super().__init__(message)


class PowerCut(VirtualCardError):
    """Inside the card OS: the power went away in the middle of the command."""


@dataclass
class Fault:
    """An armed fault: fires on the ``countdown``-th APDU."""

    countdown: int
    removed: bool
    rng: random.Random
    prefix: int | None = None


class Eeprom:
    """Every non-volatile write of the card OS goes through here (latency model and tearing)."""

    def __init__(self, latency_per_byte_s: float = 0.0) -> None:
        self.latency_per_byte_s = latency_per_byte_s
        #: Set while a fault is firing: the first write is torn and the power is cut.
        self.tear: Fault | None = None
        self.bytes_written = 0

    def _spend(self, n: int) -> None:
        self.bytes_written += n
        if self.latency_per_byte_s > 0 and n:
            import time

            time.sleep(self.latency_per_byte_s * n)

    def _cut_length(self, n: int) -> int:
        fault = self.tear
        assert fault is not None
        if fault.prefix is not None:
            return max(0, min(fault.prefix, n - 1))
        return fault.rng.randrange(n) if n else 0

    def write(self, target: bytearray, offset: int, data: bytes, *, atomic: bool = False) -> None:
        """``target[offset:offset+len(data)] = data`` (a torn prefix when the power is cut)."""
        n = len(data)
        if self.tear is None:
            self._spend(n)
            target[offset : offset + n] = data
            return
        if atomic:
            if self.tear.rng.random() < 0.5:
                target[offset : offset + n] = data
        else:
            k = self._cut_length(n)
            target[offset : offset + k] = data[:k]
        raise PowerCut("power lost during a write")

    def write_record(self, records: list[bytearray], index: int, data: bytes, *, old: bytearray) -> None:
        """Replace record ``index`` (its length may change for linear variable EFs)."""
        n = len(data)
        if self.tear is None:
            self._spend(n)
            records[index] = bytearray(data)
            return
        if n <= PAGE:
            if self.tear.rng.random() < 0.5:
                records[index] = bytearray(data)
        else:
            k = self._cut_length(n)
            tail = bytes(old[k:n]) + b"\xff" * max(0, n - max(len(old), k))
            records[index] = bytearray(data[:k] + tail)
        raise PowerCut("power lost during a record write")

    def append_record(self, records: list[bytearray], data: bytes, *, cyclic_max: int | None) -> None:
        """Add a record: at the end (linear), or as record 1 dropping the oldest (cyclic)."""
        n = len(data)

        def put(value: bytes) -> None:
            if cyclic_max is None:
                records.append(bytearray(value))
            else:
                records.insert(0, bytearray(value))
                del records[cyclic_max:]

        if self.tear is None:
            self._spend(n)
            put(data)
            return
        if n <= PAGE:
            if self.tear.rng.random() < 0.5:
                put(data)
        else:
            k = self._cut_length(n)
            if k:
                put(data[:k] + b"\xff" * (n - k))
        raise PowerCut("power lost during APPEND RECORD")

    def commit(self, action: Callable[[], None], nbytes: int, *, must: bool = False) -> None:
        """An atomic object update. ``must``: applied even when the power is cut (counter decrements)."""
        if self.tear is None:
            self._spend(nbytes)
            action()
            return
        if must or self.tear.rng.random() < 0.5:
            action()
        raise PowerCut("power lost during an update")


def _arm(card: VirtualCard, n: int, removed: bool, seed: int | None, prefix: int | None) -> None:
    if n < 1:
        raise VirtualCardError(f"fault position must be >= 1, got {n}")
    if prefix is not None and prefix < 0:
        raise VirtualCardError(f"torn prefix must be >= 0, got {prefix}")
    card.inject_fault(Fault(countdown=n, removed=removed, rng=random.Random(seed), prefix=prefix))


def power_loss_at(card: VirtualCard, n: int = 1, *, seed: int | None = None, prefix: int | None = None) -> None:
    """Cut the power on the ``n``-th APDU from now (1 = the next one).

    ``prefix`` fixes the torn length of a non-atomic write (clamped to k-1); otherwise it is drawn from a
    ``random.Random(seed)``.
    """
    _arm(card, n, False, seed, prefix)


def remove_at(card: VirtualCard, n: int = 1, *, seed: int | None = None, prefix: int | None = None) -> None:
    """Pull the card out of the reader on the ``n``-th APDU from now (with tearing, like a power loss)."""
    _arm(card, n, True, seed, prefix)


class CorruptingCard:
    """A :class:`~cardkit.transport.virtual.CardLike` wrapper that flips one bit of protected traffic.

    ``direction`` "response": the last response data byte before SW1 SW2 (the MAC when DO'8E' is last);
    "command": the last command data byte. Only commands whose CLA announces secure messaging
    (b4-b3 ≠ 00) are touched, and only the ``at``-th such exchange (1-based) or every one (``at=None``).
    """

    def __init__(self, card: CardLike, *, direction: Literal["response", "command"] = "response",
                 at: int | None = 1, bit: int = 0x01) -> None:
        if direction not in ("response", "command"):
            raise VirtualCardError(f"direction must be 'response' or 'command', got {direction!r}")
        self.card = card
        self.direction = direction
        self.at = at
        self.bit = bit
        self.seen = 0
        self.corrupted = 0

    @property
    def atr(self) -> bytes:
        return self.card.atr

    def power_on(self) -> bytes:
        return self.card.power_on()

    def power_off(self) -> None:
        self.card.power_off()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.card, name)

    def _due(self, raw: bytes) -> bool:
        if len(raw) < 4 or raw[0] == 0xFF or not raw[0] & 0x0C or raw[0] & 0x40:
            return False
        self.seen += 1
        return self.at is None or self.seen == self.at

    def transmit(self, apdu: bytes) -> bytes:
        raw = bytes(apdu)
        due = self._due(raw)
        if due and self.direction == "command":
            try:
                cmd = CommandApdu.from_bytes(raw)
            except ApduFormatError:
                cmd = None
            if cmd is not None and cmd.data:
                data = cmd.data[:-1] + bytes((cmd.data[-1] ^ self.bit,))
                raw = cmd.replace(data=data).to_bytes()
                self.corrupted += 1
        out = self.card.transmit(raw)
        if due and self.direction == "response" and len(out) > 2:
            out = out[:-3] + bytes((out[-3] ^ self.bit,)) + out[-2:]
            self.corrupted += 1
        return out
