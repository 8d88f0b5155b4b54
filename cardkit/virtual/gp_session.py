"""Volatile secure-channel state of the virtual ISD: the handshake, the open session, per-channel state.

:class:`GpSession` is the card's :class:`~cardkit.virtual.security.SmSession` for an open SCP02/SCP03 channel;
:class:`Handshake` lets the C-MACed EXTERNAL AUTHENTICATE through the card's secure-messaging gate;
:class:`ImplicitGate` stands on a channel whose selected application (the ISD or one of its applications)
initiates SCP02 implicitly, and :func:`start_implicit` opens the session with the first C-MAC'd command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg
from cardkit.errors import CardkitError, SecureChannelError
from cardkit.sm.gp import SecurityLevel
from cardkit.sm.scp02 import Scp02Card
from cardkit.sm.scp03 import Scp03Card
from cardkit.virtual.fs import SwError
from cardkit.virtual.gp_registry import AppInstance, KeySetEntry

if TYPE_CHECKING:
    from cardkit.virtual.card import VirtualCard
    from cardkit.virtual.gp import IssuerSecurityDomain

__all__ = ["ChannelState", "GpSession", "Handshake", "ImplicitGate", "start_implicit"]

log = logging.getLogger(__name__)

# GPCS 2.3.1 §E.5.2 / Amendment D §7.1.2: EXTERNAL AUTHENTICATE.
_INS_EXT_AUTH = 0x82
# GPCS 2.3.1 §E.5.1.3: the SCP02 sequence counter is 2 bytes; at FFFF it cannot count another session.
_SEQ_LAST = 0xFFFF


@dataclass
class Handshake:
    """Between INITIALIZE UPDATE and EXTERNAL AUTHENTICATE: lets the C-MACed EXTERNAL AUTHENTICATE through
    the card's secure-messaging gate unchanged (the SCP card side checks its MAC); anything else under SM fails."""

    scp: Scp02Card | Scp03Card
    entry: KeySetEntry
    owner: bytes

    def unwrap_command(self, command: CommandApdu) -> CommandApdu:
        if command.ins == _INS_EXT_AUTH and command.cla & 0x80:
            return command
        raise CardkitError("secure messaging before EXTERNAL AUTHENTICATE")

    def wrap_response(self, response: ResponseApdu) -> ResponseApdu:
        return response


class GpSession:
    """An open GP secure channel on one logical channel (the card's :class:`~cardkit.virtual.security.SmSession`)."""

    def __init__(self, scp: Scp02Card | Scp03Card, entry: KeySetEntry, owner: bytes) -> None:
        self.scp = scp
        self.entry = entry
        self.owner = owner
        #: Set when the owning application is deselected by a command that came under this session.
        self.ending = False

    def __repr__(self) -> str:
        return f"GpSession(SCP{self.entry.scp:02X}, kvn={self.entry.version:02X}, level={int(self.level):02X})"

    @property
    def level(self) -> SecurityLevel:
        s = self.scp.session
        return s.level if s is not None else SecurityLevel.NONE

    @property
    def closed(self) -> bool:
        return self.ending or not self.scp.session_open

    def sensitive_key(self) -> tuple[bytes, Alg]:
        """The key that decrypts sensitive data: SCP02 session DEK (GPCS 2.3.1 §E.4.7, 3DES-ECB), SCP03 static
        K-DEK (Amendment D §7.2, AES-CBC with zero ICV)."""
        if isinstance(self.scp, Scp02Card):
            dek = self.scp.session_dek
            if dek is None:
                raise SwError(0x6982, "no open SCP02 session")
            return dek, Alg.DES3
        return self.scp.dek, Alg.AES

    def unwrap_command(self, command: CommandApdu) -> CommandApdu:
        if self.ending:
            self.scp.close()
            raise SecureChannelError("the application that opened the secure channel is no longer selected")
        return self.scp.unwrap_command(command)

    def wrap_response(self, response: ResponseApdu) -> ResponseApdu:
        return self.scp.wrap_response(response)


@dataclass
class ChannelState:
    """Volatile ISD state of one logical channel."""

    handshake: Handshake | None = None
    session: GpSession | None = None
    perso: AppInstance | None = None
    next_block: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    status: tuple[int, bytes, bool, int] | None = None  # GET STATUS paging: P1, AID prefix, tag list, next entry


@dataclass
class ImplicitGate:
    """The channel's secure-messaging session while no GP session is open and the selected application (AID
    ``owner``) initiates SCP02 implicitly (GPCS 2.3.1 Appendix E, Table E-1 ``0A``/``0B``/``1A``/``1B``): its
    ``unwrap_command`` is the first C-MAC'd command, handed to ``start`` (:func:`start_implicit`)."""

    owner: bytes
    start: Callable[[CommandApdu], CommandApdu] = field(repr=False)

    def unwrap_command(self, command: CommandApdu) -> CommandApdu:
        return self.start(command)

    def wrap_response(self, response: ResponseApdu) -> ResponseApdu:
        return response  # implicit sessions are C-MAC only: nothing to add to a response


def start_implicit(isd: IssuerSecurityDomain, card: VirtualCard, command: CommandApdu, owner: bytes) -> CommandApdu:
    """Open an implicit SCP02 session on the current channel with its first C-MAC'd command (unwrapped and
    returned), with the default key set and the ICV over ``owner``. As INITIALIZE UPDATE does, the attempt
    spends one try of the key set before the C-MAC is checked and a success gives them all back and stores the
    incremented sequence counter (GPCS 2.3.1 Appendix E). The session grants what an explicit session at level
    C-MAC grants (``card.security.open_sm(session, issuer=True)``). Raises :class:`SecureChannelError` (the
    card answers 6988, runs nothing and closes secure messaging on the channel) when the command does not
    verify, the key set is locked or is not an SCP02 one, or the counter is exhausted."""
    entry = isd.default_key_set()
    if entry is None or entry.scp != 0x02:
        raise SecureChannelError("implicit SCP02 initiation: the default key set is not a 3DES (SCP02) key set")
    if entry.blocked:
        raise SecureChannelError(f"key set {entry.version:02X} is locked (too many failed authentications)")
    if entry.counter >= _SEQ_LAST:
        raise SecureChannelError(f"the sequence counter of key set {entry.version:02X} is exhausted")
    i = isd.i.get(0x02, 0)
    scp = Scp02Card(entry.keys, entry.counter, i=i, rng=card.random_bytes, kdd=isd.kdd, aid=owner)

    def spend() -> None:
        entry.tries_left -= 1

    card.eeprom.commit(spend, 1, must=True)
    try:
        plain = scp.start_implicit(command)
    except SecureChannelError:
        log.info("implicit SCP02 initiation with key set %02X failed, %d tries left", entry.version,
                 entry.tries_left)
        raise
    counter = scp.sequence_counter

    def restore() -> None:
        entry.tries_left = entry.max_tries
        entry.counter = counter

    card.eeprom.commit(restore, 4)
    session = GpSession(scp, entry, owner)
    isd.state(card).session = session
    card.security.open_sm(session, issuer=True)
    log.debug("implicit SCP02 session open: key set %02X, counter now %04X", entry.version, counter)
    return plain
