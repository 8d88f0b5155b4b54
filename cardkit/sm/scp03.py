"""GlobalPlatform Secure Channel Protocol '03' (GPCS v2.3 Amendment D v1.1/v1.2), host and card side.

The protocol core is pure: :class:`Scp03Session` wraps and unwraps APDUs with no I/O. The host handshake
:meth:`Scp03Host.open` takes an injected ``send`` and an optional host challenge / RNG, so known-answer tests
are exact; it returns an :class:`Scp03Channel`, a session processor (``process(command, send)``).
:class:`Scp03Card` is the card side (used by the virtual card and by the tests).

What is implemented (Amendment D section numbers of v1.1.2):

* INITIALIZE UPDATE (§7.1.1): ``80 50 kv 00 08|10 host-challenge 00``; the response is exactly 29 or 32 bytes
  (S8, without/with the sequence counter) or 45 or 48 bytes (S16) — anything else is rejected.
* session keys (§6.2.1): S-ENC, S-MAC, S-RMAC by the SCP03 KDF (§6.2.2) with context host ‖ card challenge;
  card and host cryptograms (§6.2.2.2/3), checked in constant time. The card cryptogram is verified *before*
  EXTERNAL AUTHENTICATE is sent: a wrong key set sends nothing more.
* pseudo-random card challenge (i bit ``10``, §6.2.2.1): recomputed from the sequence counter and the
  security domain AID when the host is given ``isd_aid``.
* EXTERNAL AUTHENTICATE (§7.1.2): ``84 82 level 00`` host cryptogram ‖ C-MAC.
* C-MAC (§6.2.4) with a 16-byte MAC chaining value, C-DECRYPTION (§6.2.6: ICV = AES(S-ENC, counter),
  ``80 00…`` padding, only when there is command data), R-MAC (§6.2.5), R-ENCRYPTION (§6.2.7: ICV =
  AES(S-ENC, ``80`` ‖ counter[1:])). Responses with an error status word carry no R-MAC and are passed
  through (§6.2.5). S8 mode uses 8-byte MACs, S16 mode 16-byte MACs, challenges and cryptograms.
* The encryption counter is incremented for every command after EXTERNAL AUTHENTICATE; ``counter_quirk``
  increments it only for commands with data, as some deployed cards do.
* A MAC or padding failure raises :class:`~cardkit.errors.SecureChannelError` and closes the channel; every
  later use raises again.

Command data longer than 255 bytes after wrapping is sent in the extended form; the Lc inside the MAC input
is then the 3-byte extended Lc, as on the wire.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg, aes_cmac, cbc_decrypt, cbc_encrypt, ecb_encrypt, pad_m2, scp03_kdf, unpad_m2
from cardkit.errors import AuthenticationError, PaddingError, SecureChannelError
from cardkit.session import Send
from cardkit.sm.gp import (
    KDD_LENGTH,
    GpKeySet,
    InitializeUpdateError,
    Rng,
    SecurityLevel,
    check_level,
    clear_sm_cla,
    has_sm_cla,
    initialize_update_command,
    is_protected_sw,
    lc_bytes,
    random_bytes,
    sm_cla,
)
from cardkit.sw import check

__all__ = [
    "I_PSEUDO_RANDOM",
    "I_R_ENC",
    "I_R_MAC",
    "I_S16",
    "SCP03",
    "Scp03Card",
    "Scp03Channel",
    "Scp03Host",
    "Scp03InitResponse",
    "Scp03Session",
    "Scp03SessionKeys",
    "card_challenge",
    "card_cryptogram",
    "host_cryptogram",
]

logger = logging.getLogger(__name__)

#: SCP identifier in the INITIALIZE UPDATE response (Amendment D §7.1.1.3).
SCP03 = 0x03
# Amendment D §5.1, the "i" parameter.
I_S16 = 0x01  # S16 mode (v1.1.1+); 0 = S8
I_PSEUDO_RANDOM = 0x10  # pseudo-random card challenge (else random)
I_R_MAC = 0x20  # R-MAC support
I_R_ENC = 0x40  # R-ENCRYPTION support

# Amendment D §6.2.2: derivation constants.
DC_CARD_CRYPTOGRAM = 0x00
DC_HOST_CRYPTOGRAM = 0x01
DC_CARD_CHALLENGE = 0x02
DC_S_ENC = 0x04
DC_S_MAC = 0x06
DC_S_RMAC = 0x07

# FIPS 197: AES block size.
_BLOCK = 16
# Amendment D §7.1.2.1: EXTERNAL AUTHENTICATE, CLA 84 (C-MAC always present), INS 82.
_INS_EXTERNAL_AUTHENTICATE = 0x82
_CLA_GP_SECURE = 0x84
# Amendment D §7.1.1.3: response length -> (challenge/cryptogram length, sequence counter present).
_RESPONSE_LAYOUT = {29: (8, False), 32: (8, True), 45: (16, False), 48: (16, True)}
# Amendment D §6.2.2.1: the sequence counter is 3 bytes.
_SEQ_LEN = 3
_SEQ_MAX = 0xFFFFFF
# ISO 7816-4:2020 §5.6 / GPCS 2.3.1 §11.6.3 status words used by the card side.
_SW_OK = 0x9000
_SW_AUTH_FAILED = 0x6300  # host cryptogram verification failed (Amendment D §7.1.2.3)
_SW_WRONG_LENGTH = 0x6700
_SW_SECURITY = 0x6982  # security status not satisfied (MAC failure)
_SW_CONDITIONS = 0x6985  # conditions of use not satisfied (no INITIALIZE UPDATE before)
_SW_WRONG_DATA = 0x6A80
_SW_WRONG_P1P2 = 0x6A86
_SW_KEY_NOT_FOUND = 0x6A88  # referenced data (key set) not found


# ------------------------------------------------------------------------------------------ pure crypto


def _bits(n: int) -> int:
    return n * 8


def card_cryptogram(s_mac: bytes, host_challenge: bytes, card_challenge_: bytes) -> bytes:
    """Card cryptogram (Amendment D §6.2.2.2): KDF(S-MAC, 00, host ‖ card challenge), as long as the challenge."""
    return scp03_kdf(s_mac, DC_CARD_CRYPTOGRAM, host_challenge + card_challenge_, _bits(len(card_challenge_)))


def host_cryptogram(s_mac: bytes, host_challenge: bytes, card_challenge_: bytes) -> bytes:
    """Host cryptogram (Amendment D §6.2.2.3): KDF(S-MAC, 01, host ‖ card challenge)."""
    return scp03_kdf(s_mac, DC_HOST_CRYPTOGRAM, host_challenge + card_challenge_, _bits(len(card_challenge_)))


def card_challenge(k_enc: bytes, sequence_counter: bytes, isd_aid: bytes, length: int = 8) -> bytes:
    """Pseudo-random card challenge (Amendment D §6.2.2.1): KDF(K-ENC, 02, sequence counter ‖ SD AID)."""
    return scp03_kdf(k_enc, DC_CARD_CHALLENGE, bytes(sequence_counter) + bytes(isd_aid), _bits(length))


@dataclass(frozen=True)
class Scp03SessionKeys:
    """S-ENC, S-MAC, S-RMAC of one session (Amendment D §6.2.1). The repr shows no key bytes."""

    s_enc: bytes = field(repr=False)
    s_mac: bytes = field(repr=False)
    s_rmac: bytes = field(repr=False)

    @classmethod
    def derive(cls, keys: GpKeySet, host_challenge: bytes, card_challenge_: bytes) -> Scp03SessionKeys:
        ctx = bytes(host_challenge) + bytes(card_challenge_)
        n = _bits(keys.key_length)
        return cls(scp03_kdf(keys.enc, DC_S_ENC, ctx, n), scp03_kdf(keys.mac, DC_S_MAC, ctx, n),
                   scp03_kdf(keys.mac, DC_S_RMAC, ctx, n))


@dataclass(frozen=True)
class Scp03InitResponse:
    """The INITIALIZE UPDATE response (Amendment D §7.1.1.3).

    ``kdd`` (10) ‖ key version (1) ‖ SCP id ``03`` (1) ‖ i (1) ‖ card challenge (8|16) ‖ card cryptogram
    (8|16) ‖ sequence counter (3, optional).
    """

    kdd: bytes
    key_version: int
    scp_id: int
    i: int
    card_challenge: bytes
    card_cryptogram: bytes
    sequence_counter: bytes | None = None

    @property
    def s16(self) -> bool:
        return len(self.card_challenge) == 16

    @classmethod
    def parse(cls, data: bytes) -> Scp03InitResponse:
        data = bytes(data)
        layout = _RESPONSE_LAYOUT.get(len(data))
        if layout is None:
            raise InitializeUpdateError(
                f"SCP03 INITIALIZE UPDATE response must be 29/32 (S8) or 45/48 (S16) bytes, got {len(data)}")
        n, with_seq = layout
        if data[11] != SCP03:
            raise InitializeUpdateError(f"response announces SCP{data[11]:02X}, not SCP03", offset=11)
        p = KDD_LENGTH + 3
        return cls(data[:KDD_LENGTH], data[10], data[11], data[12], data[p : p + n], data[p + n : p + 2 * n],
                   data[p + 2 * n :] if with_seq else None)

    def to_bytes(self) -> bytes:
        return (self.kdd + bytes([self.key_version, self.scp_id, self.i]) + self.card_challenge
                + self.card_cryptogram + (self.sequence_counter or b""))


# --------------------------------------------------------------------------------------- session core


class Scp03Session:
    """The state of one open SCP03 session: MAC chaining value, encryption counter, level. No I/O.

    Host side: :meth:`wrap_command`, :meth:`unwrap_response`. Card side: :meth:`unwrap_command`,
    :meth:`wrap_response`. Any verification failure closes the session.
    """

    def __init__(self, keys: Scp03SessionKeys, level: SecurityLevel, *, s16: bool = False,
                 counter_quirk: bool = False) -> None:
        self.keys = keys
        self.level = level
        # plain ints for the per-APDU checks (flag-enum arithmetic is slow in CPython)
        self._c_mac, self._c_dec = bool(level & SecurityLevel.C_MAC), bool(level & SecurityLevel.C_DEC)
        self._r_mac_on, self._r_enc = bool(level & SecurityLevel.R_MAC), bool(level & SecurityLevel.R_ENC)
        self.mac_length = 16 if s16 else 8
        self.counter_quirk = counter_quirk
        #: MAC chaining value (Amendment D §6.2.4): 16 zero bytes before EXTERNAL AUTHENTICATE.
        self.chain = bytes(_BLOCK)
        #: Encryption counter (Amendment D §6.2.6): 0 at session start, incremented before use.
        self.counter = 0
        self.closed = False

    def __repr__(self) -> str:
        return (f"Scp03Session(level={int(self.level):02X}, mac={self.mac_length}, counter={self.counter}, "
                f"closed={self.closed})")

    # -- helpers
    def fail(self, message: str) -> NoReturn:
        self.closed = True
        logger.warning("SCP03 channel closed: %s", message)
        raise SecureChannelError(message)

    def _check_open(self) -> None:
        if self.closed:
            raise SecureChannelError("SCP03 channel is closed")

    def _step(self, has_data: bool) -> None:
        if has_data or not self.counter_quirk:
            self.counter += 1

    def _icv(self, response: bool) -> bytes:
        block = self.counter.to_bytes(_BLOCK, "big")
        if response:  # Amendment D §6.2.7: most significant byte set to 80
            block = b"\x80" + block[1:]
        return ecb_encrypt(Alg.AES, self.keys.s_enc, block)

    def mac_command(self, cla: int, ins: int, p1: int, p2: int, body: bytes, extended: bool = False) -> bytes:
        """C-MAC over chain ‖ header ‖ Lc ‖ data (Lc counts the MAC, encoded as the command travels: short or
        extended); updates the chaining value."""
        lc = len(body) + self.mac_length
        self.chain = aes_cmac(self.keys.s_mac,
                              self.chain + bytes([cla, ins, p1, p2]) + lc_bytes(lc, extended) + body)
        return self.chain[: self.mac_length]

    def _r_mac(self, body: bytes, sw: int) -> bytes:
        return aes_cmac(self.keys.s_rmac, self.chain + body + sw.to_bytes(2, "big"))[: self.mac_length]

    # -- host side
    def wrap_command(self, command: CommandApdu) -> CommandApdu:
        """Protect a command (host side): C-DECRYPTION then C-MAC as the level asks."""
        self._check_open()
        if not self._c_mac:
            return command
        self._step(bool(command.data))
        data = command.data
        if self._c_dec and data:
            data = cbc_encrypt(Alg.AES, self.keys.s_enc, pad_m2(data, _BLOCK), self._icv(False))
        cla = sm_cla(command.cla)
        extended = command.is_extended or len(data) + self.mac_length > 0xFF
        mac = self.mac_command(cla, command.ins, command.p1, command.p2, data, extended)
        return command.replace(cla=cla, data=data + mac, extended=extended)

    def unwrap_response(self, response: ResponseApdu) -> ResponseApdu:
        """Check R-MAC and decrypt R-ENC (host side); error status words pass through unprotected."""
        self._check_open()
        if not is_protected_sw(response.sw) or not self._r_mac_on:
            return response
        data = response.data
        if len(data) < self.mac_length:
            self.fail(f"response of {len(data)} bytes is too short for its {self.mac_length}-byte R-MAC")
        body, mac = data[: -self.mac_length], data[-self.mac_length :]
        if not hmac.compare_digest(self._r_mac(body, response.sw), mac):
            self.fail(f"R-MAC verification failed (SW {response.sw:04X})")
        if self._r_enc and body:
            body = self._decrypt(body, self._icv(True), "response")
        return ResponseApdu(body, response.sw1, response.sw2)

    def _decrypt(self, data: bytes, icv: bytes, what: str) -> bytes:
        if len(data) % _BLOCK:
            self.fail(f"encrypted {what} data of {len(data)} bytes is not a multiple of {_BLOCK}")
        try:
            return unpad_m2(cbc_decrypt(Alg.AES, self.keys.s_enc, data, icv), _BLOCK)
        except PaddingError:
            self.fail(f"bad padding in the decrypted {what} data")

    # -- card side
    def unwrap_command(self, command: CommandApdu) -> CommandApdu:
        """Verify C-MAC and decrypt (card side); returns the plain command with the SM indication removed."""
        self._check_open()
        if not self._c_mac:
            return command
        if not has_sm_cla(command.cla):
            self.fail(f"command {command.label} has no secure messaging indication in CLA {command.cla:02X}")
        data = command.data
        if len(data) < self.mac_length:
            self.fail(f"command data of {len(data)} bytes is too short for its {self.mac_length}-byte C-MAC")
        body, mac = data[: -self.mac_length], data[-self.mac_length :]
        self._step(bool(body))
        if not hmac.compare_digest(self.mac_command(command.cla, command.ins, command.p1, command.p2, body,
                                                    command.is_extended), mac):
            self.fail(f"C-MAC verification failed for {command.label}")
        if self._c_dec and body:
            body = self._decrypt(body, self._icv(False), "command")
        return command.replace(cla=clear_sm_cla(command.cla), data=body)

    def wrap_response(self, response: ResponseApdu) -> ResponseApdu:
        """Protect a response (card side): R-ENC then R-MAC, unless the status word is an error."""
        self._check_open()
        if not is_protected_sw(response.sw) or not self._r_mac_on:
            return response
        data = response.data
        if self._r_enc and data:
            data = cbc_encrypt(Alg.AES, self.keys.s_enc, pad_m2(data, _BLOCK), self._icv(True))
        return ResponseApdu(data + self._r_mac(data, response.sw), response.sw1, response.sw2)


# ---------------------------------------------------------------------------------------------- host


class Scp03Channel:
    """An open SCP03 secure channel on the host: a session processor (``process(command, send)``)."""

    def __init__(self, session: Scp03Session, keys: GpKeySet, init: Scp03InitResponse,
                 host_challenge: bytes) -> None:
        self._session = session
        self._keys = keys
        self.init_response = init
        self.host_challenge = host_challenge

    def __repr__(self) -> str:
        return (f"Scp03Channel(kvn=0x{self.key_version:02X}, i=0x{self.init_response.i:02X}, "
                f"level={int(self.level):02X}, S{16 if self.s16 else 8}, closed={self.closed})")

    @property
    def level(self) -> SecurityLevel:
        return self._session.level

    @property
    def s16(self) -> bool:
        return self._session.mac_length == 16

    @property
    def key_version(self) -> int:
        return self.init_response.key_version

    @property
    def counter(self) -> int:
        return self._session.counter

    @property
    def closed(self) -> bool:
        return self._session.closed

    @property
    def session_keys(self) -> Scp03SessionKeys:
        return self._session.keys

    @property
    def dek(self) -> bytes:
        """The key that encrypts sensitive data (PUT KEY): SCP03 uses the *static* K-DEK (Amendment D §7.2)."""
        return self._keys.dek

    def close(self) -> None:
        self._session.closed = True

    def wrap(self, command: CommandApdu) -> CommandApdu:
        return self._session.wrap_command(command)

    def unwrap(self, response: ResponseApdu) -> ResponseApdu:
        return self._session.unwrap_response(response)

    def process(self, command: CommandApdu, send: Send) -> ResponseApdu:
        return self.unwrap(send(self.wrap(command)))


class Scp03Host:
    """The host side of the SCP03 handshake."""

    @staticmethod
    def open(send: Send, keys: GpKeySet, *, level: int | SecurityLevel, key_version: int = 0,
             host_challenge: bytes | None = None, rng: Rng | None = None, s16: bool = False,
             isd_aid: bytes | None = None, counter_quirk: bool = False) -> Scp03Channel:
        """INITIALIZE UPDATE, verify the card, EXTERNAL AUTHENTICATE; return the open channel.

        ``host_challenge`` (8 bytes, or 16 for S16) defaults to ``rng(n)``. S16 is chosen by ``s16`` or by a
        16-byte ``host_challenge``; the response length must agree. With ``isd_aid`` a pseudo-random card
        challenge (i bit ``10``) is recomputed and checked. Raises :class:`AuthenticationError` — before
        anything else is sent — when the card cryptogram or card challenge does not verify, and when the card
        refuses the host cryptogram (6300); :class:`SecureChannelError` for malformed responses or i
        parameters that cannot serve ``level``; a typed status-word error for other refusals.
        """
        lvl = check_level(level)
        if keys.alg is not Alg.AES:
            raise SecureChannelError(f"SCP03 needs an AES key set, got {keys.alg.value}")
        if host_challenge is None:
            host_challenge = (rng or random_bytes)(16 if s16 else 8)
        host_challenge = bytes(host_challenge)
        if len(host_challenge) not in (8, 16) or (s16 and len(host_challenge) != 16):
            raise SecureChannelError(
                f"SCP03 host challenge must be 8 (S8) or 16 (S16) bytes, got {len(host_challenge)}")
        command = initialize_update_command(key_version, host_challenge)
        response = check(send(command), command)
        init = Scp03InitResponse.parse(response.data)
        if init.s16 != (len(host_challenge) == 16):
            raise InitializeUpdateError(
                f"card answered in S{16 if init.s16 else 8} mode to a {len(host_challenge)}-byte host challenge")
        if bool(init.i & I_S16) != init.s16:
            logger.warning("SCP03 i=%02X does not match the S%d response length", init.i, 16 if init.s16 else 8)
        if key_version and init.key_version != key_version:
            raise SecureChannelError(f"asked for key version {key_version:02X}, card used {init.key_version:02X}")
        if lvl & SecurityLevel.R_MAC and not init.i & I_R_MAC:
            raise SecureChannelError(
                f"level {int(lvl):02X} needs R-MAC, which the card does not offer (i={init.i:02X})")
        if lvl & SecurityLevel.R_ENC and not init.i & I_R_ENC:
            raise SecureChannelError(
                f"level {int(lvl):02X} needs R-ENC, which the card does not offer (i={init.i:02X})")

        session_keys = Scp03SessionKeys.derive(keys, host_challenge, init.card_challenge)
        expected = card_cryptogram(session_keys.s_mac, host_challenge, init.card_challenge)
        if not hmac.compare_digest(expected, init.card_cryptogram):
            raise AuthenticationError(
                f"SCP03 card cryptogram does not verify with key set {keys!r} (key version "
                f"{init.key_version:02X} on the card): wrong keys or wrong diversification")
        if init.i & I_PSEUDO_RANDOM:
            if isd_aid is not None and init.sequence_counter is not None:
                want = card_challenge(keys.enc, init.sequence_counter, isd_aid, len(init.card_challenge))
                if not hmac.compare_digest(want, init.card_challenge):
                    raise AuthenticationError("SCP03 pseudo-random card challenge does not verify (K-ENC or ISD AID)")
            else:
                logger.debug("SCP03 pseudo-random card challenge not checked (no ISD AID or no sequence counter)")

        session = Scp03Session(session_keys, lvl, s16=init.s16, counter_quirk=counter_quirk)
        cryptogram = host_cryptogram(session_keys.s_mac, host_challenge, init.card_challenge)
        mac = session.mac_command(_CLA_GP_SECURE, _INS_EXTERNAL_AUTHENTICATE, int(lvl), 0, cryptogram)
        ext = CommandApdu(_CLA_GP_SECURE, _INS_EXTERNAL_AUTHENTICATE, int(lvl), 0, cryptogram + mac,
                          name="EXTERNAL AUTHENTICATE", sensitive=True)
        answer = send(ext)
        if answer.sw == _SW_AUTH_FAILED:
            raise AuthenticationError("the card rejected the SCP03 host cryptogram (6300)")
        check(answer, ext)
        logger.debug("SCP03 channel open: kvn %02X, i %02X, level %02X, S%d", init.key_version, init.i,
                     int(lvl), 16 if init.s16 else 8)
        return Scp03Channel(session, keys, init, host_challenge)


# ---------------------------------------------------------------------------------------------- card


class Scp03Card:
    """The card side of SCP03: answers INITIALIZE UPDATE / EXTERNAL AUTHENTICATE and guards the session.

    ``i`` is the implementation option (Amendment D §5.1; ``70`` = pseudo-random challenge, R-MAC, R-ENC);
    its S16 bit follows ``s16``. With a pseudo-random challenge the sequence counter (3 bytes) is returned
    and the challenge computed from it and ``isd_aid``; the counter is then incremented. ``counter_quirk``
    emulates cards that increment the encryption counter only for commands with data. ``kdd`` is the key
    diversification data the card returns (10 bytes; zeros by default).
    """

    def __init__(self, keys: GpKeySet, sequence_counter: int = 0, isd_aid: bytes = b"", *, i: int = 0x70,
                 rng: Rng | None = None, s16: bool = False, counter_quirk: bool = False,
                 kdd: bytes = bytes(KDD_LENGTH)) -> None:
        if keys.alg is not Alg.AES:
            raise SecureChannelError(f"SCP03 needs an AES key set, got {keys.alg.value}")
        if not 0 <= sequence_counter <= _SEQ_MAX:
            raise SecureChannelError(f"SCP03 sequence counter must fit 3 bytes, got {sequence_counter!r}")
        self.i = (i & ~I_S16 & 0xFF) | (I_S16 if s16 else 0)
        if self.i & I_PSEUDO_RANDOM and not isd_aid:
            raise SecureChannelError("a pseudo-random card challenge (i bit 10) needs the security domain AID")
        if len(kdd) != KDD_LENGTH:
            raise SecureChannelError(f"key diversification data must be {KDD_LENGTH} bytes, got {len(kdd)}")
        self.keys = keys
        self.kdd = bytes(kdd)
        self.sequence_counter = sequence_counter
        self.isd_aid = bytes(isd_aid)
        self.s16 = s16
        self.counter_quirk = counter_quirk
        self._rng = rng or random_bytes
        self._pending: tuple[bytes, bytes, Scp03SessionKeys] | None = None
        self.session: Scp03Session | None = None

    def __repr__(self) -> str:
        return f"Scp03Card(keys={self.keys!r}, i=0x{self.i:02X}, open={self.session_open})"

    @property
    def session_open(self) -> bool:
        return self.session is not None and not self.session.closed

    @property
    def level(self) -> SecurityLevel | None:
        return self.session.level if self.session_open and self.session else None

    @property
    def dek(self) -> bytes:
        """The static K-DEK, which decrypts PUT KEY / STORE DATA secrets in SCP03 (Amendment D §7.2)."""
        return self.keys.dek

    @property
    def session_dek(self) -> bytes:
        """SCP03 has no session DEK: the static K-DEK is used (same as :attr:`dek`)."""
        return self.keys.dek

    def close(self) -> None:
        self._pending = None
        if self.session is not None:
            self.session.closed = True

    def initialize_update(self, command: CommandApdu) -> ResponseApdu:
        self.close()  # a new INITIALIZE UPDATE ends any current session (GPCS 2.3.1 §11.5.1)
        n = 16 if self.s16 else 8
        if command.p2 != 0:
            return ResponseApdu.of(_SW_WRONG_P1P2)
        if command.p1 not in (0, self.keys.version):
            return ResponseApdu.of(_SW_KEY_NOT_FOUND)
        if len(command.data) != n:
            return ResponseApdu.of(_SW_WRONG_LENGTH)
        host = command.data
        seq: bytes | None = None
        if self.i & I_PSEUDO_RANDOM:
            if self.sequence_counter > _SEQ_MAX:
                return ResponseApdu.of(_SW_CONDITIONS)
            seq = self.sequence_counter.to_bytes(_SEQ_LEN, "big")
            challenge = card_challenge(self.keys.enc, seq, self.isd_aid, n)
            self.sequence_counter += 1
        else:
            challenge = bytes(self._rng(n))
        keys = Scp03SessionKeys.derive(self.keys, host, challenge)
        init = Scp03InitResponse(self.kdd, self.keys.version, SCP03, self.i, challenge,
                                 card_cryptogram(keys.s_mac, host, challenge), seq)
        self._pending = (host, challenge, keys)
        return ResponseApdu.of(_SW_OK, init.to_bytes())

    def external_authenticate(self, command: CommandApdu) -> ResponseApdu:
        pending, self._pending = self._pending, None
        if pending is None:
            return ResponseApdu.of(_SW_CONDITIONS)
        host, challenge, keys = pending
        n = len(challenge)
        if command.p2 != 0:
            return ResponseApdu.of(_SW_WRONG_P1P2)
        try:
            lvl = check_level(command.p1)
        except ValueError:
            return ResponseApdu.of(_SW_WRONG_P1P2)
        if (lvl & SecurityLevel.R_MAC and not self.i & I_R_MAC) or (lvl & SecurityLevel.R_ENC and not self.i & I_R_ENC):
            return ResponseApdu.of(_SW_WRONG_P1P2)
        if len(command.data) != 2 * n:
            return ResponseApdu.of(_SW_WRONG_LENGTH)
        session = Scp03Session(keys, lvl, s16=self.s16, counter_quirk=self.counter_quirk)
        cryptogram, mac = command.data[:n], command.data[n:]
        if not has_sm_cla(command.cla) or not hmac.compare_digest(
                session.mac_command(command.cla, command.ins, command.p1, command.p2, cryptogram,
                                    command.is_extended), mac):
            return ResponseApdu.of(_SW_SECURITY)
        if not hmac.compare_digest(host_cryptogram(keys.s_mac, host, challenge), cryptogram):
            return ResponseApdu.of(_SW_AUTH_FAILED)
        self.session = session
        return ResponseApdu.of(_SW_OK)

    def _require(self) -> Scp03Session:
        if self.session is None or self.session.closed:
            raise SecureChannelError("no open SCP03 session on the card")
        return self.session

    def unwrap_command(self, command: CommandApdu) -> CommandApdu:
        return self._require().unwrap_command(command)

    def wrap_response(self, response: ResponseApdu) -> ResponseApdu:
        return self._require().wrap_response(response)

    def handle(self, command: CommandApdu, app: Callable[[CommandApdu], ResponseApdu]) -> ResponseApdu:
        """Route one command: handshake commands here, others unwrapped → ``app`` → wrapped.

        Outside a session, commands without secure messaging go to ``app`` as they are. A secure-messaging
        failure answers 6982 and closes the session.
        """
        if command.ins == 0x50 and command.cla & 0x80:  # GPCS 2.3.1 §11.5.2 INITIALIZE UPDATE
            return self.initialize_update(command)
        if command.ins == _INS_EXTERNAL_AUTHENTICATE and command.cla & 0x80 and self._pending is not None:
            return self.external_authenticate(command)
        if not self.session_open:
            return ResponseApdu.of(_SW_SECURITY) if has_sm_cla(command.cla) else app(command)
        try:
            plain = self.unwrap_command(command)
        except SecureChannelError:
            return ResponseApdu.of(_SW_SECURITY)
        return self.wrap_response(app(plain))

