"""Volatile secure-channel state of the virtual ISD: the handshake, the open session, per-channel state.

:class:`GpSession` is the card's :class:`~cardkit.virtual.security.SmSession` for an open SCP02/SCP03 channel;
:class:`Handshake` lets the C-MACed EXTERNAL AUTHENTICATE through the card's secure-messaging gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg
from cardkit.errors import CardkitError, SecureChannelError
from cardkit.sm.gp import SecurityLevel
from cardkit.sm.scp02 import Scp02Card
from cardkit.sm.scp03 import Scp03Card
from cardkit.virtual.fs import SwError
from cardkit.virtual.gp_registry import AppInstance, KeySetEntry

__all__ = ["ChannelState", "GpSession", "Handshake"]

# GPCS 2.3.1 §E.5.2 / Amendment D §7.1.2: EXTERNAL AUTHENTICATE.
_INS_EXT_AUTH = 0x82


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
