"""In-process transport to a card object (the virtual card, or any object with the :class:`CardLike` shape)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cardkit.errors import CardRemovedError

__all__ = ["CardLike", "VirtualTransport"]


@runtime_checkable
class CardLike(Protocol):
    """What a card simulator offers: power, ATR and one APDU in, one R-APDU out.

    ``transmit`` must never raise for any input bytes: a real card answers a status word to everything.
    """

    @property
    def atr(self) -> bytes: ...

    def power_on(self) -> bytes:
        """Power up (cold or warm reset): clear volatile state, return the ATR."""
        ...

    def power_off(self) -> None: ...

    def transmit(self, apdu: bytes) -> bytes: ...


class VirtualTransport:
    """A :class:`~cardkit.transport.base.Transport` that calls a :class:`CardLike` in this process."""

    protocol = "T=1"

    def __init__(self, card: CardLike, name: str = "cardkit virtual reader 0") -> None:
        self.card = card
        self.name = name
        self._present = True
        self._closed = False
        self._atr = card.power_on()

    @property
    def atr(self) -> bytes:
        return self._atr

    def transmit(self, apdu: bytes) -> bytes:
        if not self._present:
            raise CardRemovedError(f"no card in {self.name}")
        try:
            return self.card.transmit(apdu)
        except CardRemovedError as exc:
            # The card simulator signals power loss or removal (cardkit.virtual.faults.CardGone).
            if getattr(exc, "removed", False):
                self._present = False
            raise

    def reset(self, cold: bool = False) -> bytes:
        if not self._present:
            # A card pulled by a fault can be put back (``card.insert()``); a closed reader cannot.
            if not getattr(self.card, "present", False) or self._closed:
                raise CardRemovedError(f"no card in {self.name}")
            self._present = True
        if cold:
            self.card.power_off()
        self._atr = self.card.power_on()
        return self._atr

    def remove(self) -> None:
        """Simulate pulling the card (for good: this transport object stays empty)."""
        self.card.power_off()
        self._present = False
        self._closed = True

    def close(self) -> None:
        if self._present:
            self.card.power_off()
        self._present = False
        self._closed = True
