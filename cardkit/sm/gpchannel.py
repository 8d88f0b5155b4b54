"""What SCP02 and SCP03 share once a protocol's crypto is set aside: session, host channel and card skeletons.

The GlobalPlatform secure channels run the same state machine (GPCS 2.3.1 Appendix E, Amendment D §6–7):
INITIALIZE UPDATE, EXTERNAL AUTHENTICATE with the host cryptogram and a C-MAC, then every command C-MAC'd
(optionally encrypted) and, at R-MAC levels, every successful response R-MAC'd. What differs is the
cryptography (3DES retail MAC and fixed ICVs in SCP02; AES-CMAC with a chaining value and an encryption
counter in SCP03) and the handshake's data layout. This module holds the shape; :mod:`cardkit.sm.scp02` and
:mod:`cardkit.sm.scp03` fill in the crypto through a few hooks:

* :class:`GpSession` — one open session, no I/O. Subclasses define ``_BLOCK``, ``_PROTOCOL``, ``_logger``,
  :meth:`~GpSession._protect_command`, :meth:`~GpSession._verify_command`, :meth:`~GpSession._r_mac`,
  :meth:`~GpSession._protect_response`, :meth:`~GpSession._response_verified` and
  :meth:`~GpSession._cbc_decrypt`.
* :class:`GpChannelBase` — the host-side session processor (``process(command, send)``).
* :class:`GpCardBase` — the card side: command routing, the EXTERNAL AUTHENTICATE checks, session bookkeeping.
* host handshake helpers: :func:`require_alg`, :func:`check_key_version`, :func:`verify_card_cryptogram`,
  :func:`send_external_authenticate`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg
from cardkit.errors import AuthenticationError, PaddingError, SecureChannelError
from cardkit.session import Send
from cardkit.sm.gp import GpKeySet, SecurityLevel, check_level, has_sm_cla, is_protected_sw, sm_cla
from cardkit.sw import check

__all__ = ["GpCardBase", "GpChannelBase", "GpSession", "check_key_version", "require_alg",
           "send_external_authenticate", "verify_card_cryptogram"]

logger = logging.getLogger(__name__)

KeysT = TypeVar("KeysT")
SessionT = TypeVar("SessionT", bound="GpSession[Any]")
PendingT = TypeVar("PendingT")

# GPCS 2.3.1 §11.5.2 / §E.5.2, Amendment D §7.1.2: INITIALIZE UPDATE INS 50, EXTERNAL AUTHENTICATE CLA 80|SM, INS 82.
_INS_INITIALIZE_UPDATE = 0x50
_CLA_GP = 0x80
_INS_EXTERNAL_AUTHENTICATE = 0x82
# ISO 7816-4:2020 §5.6 / GPCS 2.3.1 §11.6.3 status words used by the card side.
_SW_OK = 0x9000
_SW_AUTH_FAILED = 0x6300  # host cryptogram verification failed (GPCS 2.3.1 §E.5.2.3, Amendment D §7.1.2.3)
_SW_WRONG_LENGTH = 0x6700
_SW_SECURITY = 0x6982  # security status not satisfied (MAC failure)
_SW_CONDITIONS = 0x6985  # conditions of use not satisfied (no INITIALIZE UPDATE before)
_SW_WRONG_P1P2 = 0x6A86
_SW_KEY_NOT_FOUND = 0x6A88  # referenced data (key set) not found

_KEY_SET_NAME = {Alg.AES: "an AES", Alg.DES3: "a 3DES"}


# ------------------------------------------------------------------------------------------- host helpers


def require_alg(keys: GpKeySet, alg: Alg, protocol: str) -> None:
    """Raise :class:`SecureChannelError` unless ``keys`` is an ``alg`` key set (SCP02: 3DES, SCP03: AES)."""
    if keys.alg is not alg:
        raise SecureChannelError(f"{protocol} needs {_KEY_SET_NAME[alg]} key set, got {keys.alg.value}")


def check_key_version(asked: int, used: int) -> None:
    """A key version asked for in INITIALIZE UPDATE (0 = any) must be the one the card answered with."""
    if asked and used != asked:
        raise SecureChannelError(f"asked for key version {asked:02X}, card used {used:02X}")


def verify_card_cryptogram(protocol: str, expected: bytes, received: bytes, keys: GpKeySet, key_version: int) -> None:
    """Constant-time check of the card cryptogram; :class:`AuthenticationError` (naming KCVs only) if it differs."""
    if not hmac.compare_digest(expected, received):
        raise AuthenticationError(
            f"{protocol} card cryptogram does not verify with key set {keys!r} (key version "
            f"{key_version:02X} on the card): wrong keys or wrong diversification")


def send_external_authenticate(send: Send, protocol: str, level: SecurityLevel, cryptogram: bytes,
                               mac: bytes) -> None:
    """EXTERNAL AUTHENTICATE ``84 82 level 00`` host cryptogram ‖ C-MAC (GPCS 2.3.1 §E.5.2, Amendment D §7.1.2).

    Raises :class:`AuthenticationError` when the card rejects the host cryptogram (6300), a typed status-word
    error for other refusals.
    """
    ext = CommandApdu(sm_cla(_CLA_GP), _INS_EXTERNAL_AUTHENTICATE, int(level), 0, cryptogram + mac,
                      name="EXTERNAL AUTHENTICATE", sensitive=True)
    answer = send(ext)
    if answer.sw == _SW_AUTH_FAILED:
        raise AuthenticationError(f"the card rejected the {protocol} host cryptogram (6300)")
    check(answer, ext)


# --------------------------------------------------------------------------------------------- session core


class GpSession(Generic[KeysT]):
    """The protocol-independent part of an open session: level flags, closing on failure, the wrap/unwrap
    skeleton (error status words pass through unprotected, GPCS Amendment D §6.2.5). No I/O."""

    _PROTOCOL: ClassVar[str]
    _BLOCK: ClassVar[int]
    _logger: ClassVar[logging.Logger] = logger

    def __init__(self, keys: KeysT, level: SecurityLevel, mac_length: int) -> None:
        self.keys = keys
        self.level = level
        # plain ints for the per-APDU checks (flag-enum arithmetic is slow in CPython)
        self._c_mac, self._c_dec = bool(level & SecurityLevel.C_MAC), bool(level & SecurityLevel.C_DEC)
        self._r_mac_on, self._r_enc = bool(level & SecurityLevel.R_MAC), bool(level & SecurityLevel.R_ENC)
        #: Length of the C-MAC and R-MAC (SCP02: 8; SCP03: 8 in S8 mode, 16 in S16 mode).
        self.mac_length = mac_length
        self.closed = False

    def fail(self, message: str) -> NoReturn:
        """Close the session and raise :class:`SecureChannelError` (a MAC failure ends the channel)."""
        self.closed = True
        self._logger.warning("%s channel closed: %s", self._PROTOCOL, message)
        raise SecureChannelError(message)

    def _raise_closed(self) -> NoReturn:
        raise SecureChannelError(f"{self._PROTOCOL} channel is closed")

    def _decrypt(self, data: bytes, icv: bytes | None, what: str) -> bytes:
        if len(data) % self._BLOCK:
            self.fail(f"encrypted {what} data of {len(data)} bytes is not a multiple of {self._BLOCK}")
        try:
            return self._cbc_decrypt(data, icv)
        except PaddingError:
            self.fail(f"bad padding in the decrypted {what} data")

    # -- protocol hooks
    def _cbc_decrypt(self, data: bytes, icv: bytes | None) -> bytes:
        """CBC-decrypt under S-ENC and remove ``80 00…`` padding (raises PaddingError)."""
        raise NotImplementedError

    def _protect_command(self, command: CommandApdu) -> CommandApdu:
        raise NotImplementedError

    def _verify_command(self, command: CommandApdu, body: bytes, mac: bytes) -> CommandApdu:
        raise NotImplementedError

    def _r_mac(self, data: bytes, sw: int) -> bytes:
        raise NotImplementedError

    def _protect_response(self, data: bytes, sw: int) -> bytes:
        raise NotImplementedError

    def _response_verified(self, body: bytes, mac: bytes) -> bytes:
        raise NotImplementedError

    # -- host side
    def wrap_command(self, command: CommandApdu) -> CommandApdu:
        """Protect a command (host side): C-DECRYPTION then C-MAC as the level asks."""
        if self.closed:  # checked inline: this runs once per APDU
            self._raise_closed()
        if not self._c_mac:
            return command
        return self._protect_command(command)

    def unwrap_response(self, response: ResponseApdu) -> ResponseApdu:
        """Check the R-MAC (and decrypt R-ENC) on the host side; error status words pass through unprotected."""
        if self.closed:  # checked inline: this runs once per APDU
            self._raise_closed()
        if not is_protected_sw(response.sw) or not self._r_mac_on:
            return response
        data, n = response.data, self.mac_length
        if len(data) < n:
            self.fail(f"response of {len(data)} bytes is too short for its {n}-byte R-MAC")
        body, mac = data[:-n], data[-n:]
        if not hmac.compare_digest(self._r_mac(body, response.sw), mac):
            self.fail(f"R-MAC verification failed (SW {response.sw:04X})")
        return ResponseApdu(self._response_verified(body, mac), response.sw1, response.sw2)

    # -- card side
    def unwrap_command(self, command: CommandApdu) -> CommandApdu:
        """Verify the C-MAC and decrypt (card side); returns the plain command with the SM indication removed."""
        if self.closed:  # checked inline: this runs once per APDU
            self._raise_closed()
        if not self._c_mac:
            return command
        if not has_sm_cla(command.cla):
            self.fail(f"command {command.label} has no secure messaging indication in CLA {command.cla:02X}")
        data, n = command.data, self.mac_length
        if len(data) < n:
            self.fail(f"command data of {len(data)} bytes is too short for its {n}-byte C-MAC")
        return self._verify_command(command, data[:-n], data[-n:])

    def wrap_response(self, response: ResponseApdu) -> ResponseApdu:
        """Protect a response (card side): R-ENC then R-MAC as the level asks, unless the status word is an error."""
        if self.closed:  # checked inline: this runs once per APDU
            self._raise_closed()
        if not is_protected_sw(response.sw) or not self._r_mac_on:
            return response
        return ResponseApdu(self._protect_response(response.data, response.sw), response.sw1, response.sw2)


# ------------------------------------------------------------------------------------------------- host


class GpChannelBase(Generic[SessionT]):
    """An open secure channel on the host: a session processor (``process(command, send)``)."""

    _session: SessionT

    @property
    def level(self) -> SecurityLevel:
        return self._session.level

    @property
    def closed(self) -> bool:
        return self._session.closed

    def close(self) -> None:
        self._session.closed = True

    def wrap(self, command: CommandApdu) -> CommandApdu:
        return self._session.wrap_command(command)

    def unwrap(self, response: ResponseApdu) -> ResponseApdu:
        return self._session.unwrap_response(response)

    def process(self, command: CommandApdu, send: Send) -> ResponseApdu:
        return self.unwrap(send(self._session.wrap_command(command)))  # = self.wrap, one call fewer per APDU


# ------------------------------------------------------------------------------------------------- card


class GpCardBase(Generic[SessionT, PendingT]):
    """The card side: routes handshake commands, guards the session, answers status words instead of raising.

    Subclasses set :attr:`keys`, :attr:`i`, ``_pending`` (the state INITIALIZE UPDATE leaves for EXTERNAL
    AUTHENTICATE) and :attr:`session`, and define :meth:`initialize_update` and the EXTERNAL AUTHENTICATE hooks.
    """

    _PROTOCOL: ClassVar[str]
    _R_ENC: ClassVar[bool]  # whether security level R-ENC exists (SCP03) for check_level
    keys: GpKeySet
    i: int
    _pending: PendingT | None
    session: SessionT | None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keys={self.keys!r}, i=0x{self.i:02X}, open={self.session_open})"

    @property
    def session_open(self) -> bool:
        return self.session is not None and not self.session.closed

    def close(self) -> None:
        self._pending = None
        if self.session is not None:
            self.session.closed = True

    def initialize_update(self, command: CommandApdu) -> ResponseApdu:
        raise NotImplementedError

    def _refuse_initialize_update(self, command: CommandApdu, challenge_length: int) -> ResponseApdu | None:
        """The INITIALIZE UPDATE checks both protocols make (GPCS 2.3.1 §11.5.2): P2 00, P1 00 or the key set's
        version, a host challenge of ``challenge_length`` bytes; the refusal, or None."""
        if command.p2 != 0:
            return ResponseApdu.of(_SW_WRONG_P1P2)
        if command.p1 not in (0, self.keys.version):
            return ResponseApdu.of(_SW_KEY_NOT_FOUND)
        if len(command.data) != challenge_length:
            return ResponseApdu.of(_SW_WRONG_LENGTH)
        return None

    # -- EXTERNAL AUTHENTICATE hooks
    def _offers(self, level: SecurityLevel) -> bool:
        """True if the card's i parameter supports ``level`` (R-MAC, R-ENC)."""
        raise NotImplementedError

    def _cryptogram_length(self, pending: PendingT) -> int:
        raise NotImplementedError

    def _new_session(self, pending: PendingT, level: SecurityLevel) -> SessionT:
        raise NotImplementedError

    def _auth_mac(self, session: SessionT, command: CommandApdu, cryptogram: bytes) -> bytes:
        """The C-MAC EXTERNAL AUTHENTICATE must carry (it starts the session's MAC chain)."""
        raise NotImplementedError

    def _host_cryptogram(self, pending: PendingT) -> bytes:
        raise NotImplementedError

    def _opened(self, session: SessionT) -> None:
        self.session = session

    def external_authenticate(self, command: CommandApdu) -> ResponseApdu:
        """Check level, C-MAC and host cryptogram (GPCS 2.3.1 §E.5.2, Amendment D §7.1.2); open the session."""
        pending, self._pending = self._pending, None
        if pending is None:
            return ResponseApdu.of(_SW_CONDITIONS)
        if command.p2 != 0:
            return ResponseApdu.of(_SW_WRONG_P1P2)
        try:
            lvl = check_level(command.p1, r_enc=self._R_ENC)
        except ValueError:
            return ResponseApdu.of(_SW_WRONG_P1P2)
        if not self._offers(lvl):
            return ResponseApdu.of(_SW_WRONG_P1P2)
        n = self._cryptogram_length(pending)
        if len(command.data) != 2 * n:
            return ResponseApdu.of(_SW_WRONG_LENGTH)
        session = self._new_session(pending, lvl)
        cryptogram, mac = command.data[:n], command.data[n:]
        if not has_sm_cla(command.cla) or not hmac.compare_digest(self._auth_mac(session, command, cryptogram), mac):
            return ResponseApdu.of(_SW_SECURITY)
        if not hmac.compare_digest(self._host_cryptogram(pending), cryptogram):
            return ResponseApdu.of(_SW_AUTH_FAILED)
        self._opened(session)
        return ResponseApdu.of(_SW_OK)

    # -- the open session
    def _require(self) -> SessionT:
        if self.session is None or self.session.closed:
            raise SecureChannelError(f"no open {self._PROTOCOL} session on the card")
        return self.session

    def unwrap_command(self, command: CommandApdu) -> CommandApdu:
        return self._require().unwrap_command(command)

    def wrap_response(self, response: ResponseApdu) -> ResponseApdu:
        return self._require().wrap_response(response)

    def _start_on(self, command: CommandApdu) -> CommandApdu:
        """A secure-messaging command arrived with no session open: open one with it (SCP02 implicit
        initiation) or raise :class:`SecureChannelError` (answered 6982)."""
        raise SecureChannelError(f"no open {self._PROTOCOL} session on the card")

    def _pass_through(self, command: CommandApdu, app: Callable[[CommandApdu], ResponseApdu]) -> ResponseApdu:
        """A command without secure messaging while no session is open goes to ``app`` as it is."""
        return app(command)

    def handle(self, command: CommandApdu, app: Callable[[CommandApdu], ResponseApdu]) -> ResponseApdu:
        """Route one command: handshake commands here, others unwrapped → ``app`` → wrapped.

        Outside a session, commands without secure messaging go to ``app`` as they are. A secure-messaging
        failure answers 6982 and closes the session.
        """
        if command.ins == _INS_INITIALIZE_UPDATE and command.cla & 0x80:  # GPCS 2.3.1 §11.5.2
            return self.initialize_update(command)
        if command.ins == _INS_EXTERNAL_AUTHENTICATE and command.cla & 0x80 and self._pending is not None:
            return self.external_authenticate(command)
        session = self.session
        is_open = session is not None and not session.closed
        if not is_open and not has_sm_cla(command.cla):
            return self._pass_through(command, app)
        try:
            plain = self.unwrap_command(command) if is_open else self._start_on(command)
        except SecureChannelError:
            return ResponseApdu.of(_SW_SECURITY)
        return self.wrap_response(app(plain))
