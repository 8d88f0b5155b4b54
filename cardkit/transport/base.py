"""The transport protocol: what a reader connection offers to a :class:`~cardkit.session.CardSession`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Transport"]


@runtime_checkable
class Transport(Protocol):
    """A connection to one card in one reader.

    ``transmit`` sends one encoded C-APDU and returns the encoded R-APDU (data ‖ SW1 SW2) — nothing more:
    GET RESPONSE, chaining and secure messaging are processors above it. Implementations translate their
    library's exceptions into :mod:`cardkit.errors` transport errors (``CardRemovedError`` when the card
    is gone).
    """

    #: Reader name (for reports and errors).
    name: str

    def transmit(self, apdu: bytes) -> bytes: ...

    @property
    def atr(self) -> bytes: ...

    @property
    def protocol(self) -> str:
        """``"T=0"`` or ``"T=1"`` (or ``"virtual"``)."""
        ...

    def reset(self, cold: bool = False) -> bytes:
        """Reset the card and return the new ATR."""
        ...

    def close(self) -> None: ...
