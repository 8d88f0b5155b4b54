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
from dataclasses import dataclass, field

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg, aes_cmac, cbc_decrypt, cbc_encrypt, ecb_encrypt, pad_m2, scp03_kdf, unpad_m2
from cardkit.errors import AuthenticationError, SecureChannelError
from cardkit.session import Send
from cardkit.sm.gp import (
    KDD_LENGTH,
    GpKeySet,
    InitializeUpdateError,
    Rng,
    SecurityLevel,
    check_level,
    clear_sm_cla,
    initialize_update_command,
    lc_bytes,
    random_bytes,
    sm_cla,
)
from cardkit.sm.gpchannel import (
    GpCardBase,
    GpChannelBase,
    GpSession,
    check_key_version,
    require_alg,
    send_external_authenticate,
    verify_card_cryptogram,
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
# ISO 7816-4:2020 §5.6 / GPCS 2.3.1 §11.6.3 status words used by the card side (the others are in gpchannel).
_SW_OK = 0x9000
_SW_CONDITIONS = 0x6985  # conditions of use not satisfied (sequence counter exhausted)


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


class Scp03Session(GpSession[Scp03SessionKeys]):
    """The state of one open SCP03 session: MAC chaining value, encryption counter, level. No I/O.

    Host side: :meth:`wrap_command`, :meth:`unwrap_response`. Card side: :meth:`unwrap_command`,
    :meth:`wrap_response`. Any verification failure closes the session.
    """

    _PROTOCOL = "SCP03"
    _BLOCK = _BLOCK
    _logger = logger

    def __init__(self, keys: Scp03SessionKeys, level: SecurityLevel, *, s16: bool = False,
                 counter_quirk: bool = False) -> None:
        super().__init__(keys, level, 16 if s16 else 8)
        self.counter_quirk = counter_quirk
        #: MAC chaining value (Amendment D §6.2.4): 16 zero bytes before EXTERNAL AUTHENTICATE.
        self.chain = bytes(_BLOCK)
        #: Encryption counter (Amendment D §6.2.6): 0 at session start, incremented before use.
        self.counter = 0

    def __repr__(self) -> str:
        return (f"Scp03Session(level={int(self.level):02X}, mac={self.mac_length}, counter={self.counter}, "
                f"closed={self.closed})")

    # -- helpers
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

    def _r_mac(self, data: bytes, sw: int) -> bytes:
        return aes_cmac(self.keys.s_rmac, self.chain + data + sw.to_bytes(2, "big"))[: self.mac_length]

    def _cbc_decrypt(self, data: bytes, icv: bytes | None) -> bytes:
        return unpad_m2(cbc_decrypt(Alg.AES, self.keys.s_enc, data, icv), _BLOCK)

    # -- host side (the checks common to SCP02 are in GpSession.wrap_command / unwrap_response)
    def _protect_command(self, command: CommandApdu) -> CommandApdu:
        self._step(bool(command.data))
        data = command.data
        if self._c_dec and data:
            data = cbc_encrypt(Alg.AES, self.keys.s_enc, pad_m2(data, _BLOCK), self._icv(False))
        cla = sm_cla(command.cla)
        extended = command.is_extended or len(data) + self.mac_length > 0xFF
        mac = self.mac_command(cla, command.ins, command.p1, command.p2, data, extended)
        return command.replace(cla=cla, data=data + mac, extended=extended)

    def _response_verified(self, body: bytes, mac: bytes) -> bytes:
        if self._r_enc and body:
            body = self._decrypt(body, self._icv(True), "response")
        return body

    # -- card side (GpSession.unwrap_command / wrap_response)
    def _verify_command(self, command: CommandApdu, body: bytes, mac: bytes) -> CommandApdu:
        self._step(bool(body))
        if not hmac.compare_digest(self.mac_command(command.cla, command.ins, command.p1, command.p2, body,
                                                    command.is_extended), mac):
            self.fail(f"C-MAC verification failed for {command.label}")
        if self._c_dec and body:
            body = self._decrypt(body, self._icv(False), "command")
        return command.replace(cla=clear_sm_cla(command.cla), data=body)

    def _protect_response(self, data: bytes, sw: int) -> bytes:
        if self._r_enc and data:
            data = cbc_encrypt(Alg.AES, self.keys.s_enc, pad_m2(data, _BLOCK), self._icv(True))
        return data + self._r_mac(data, sw)


# ---------------------------------------------------------------------------------------------- host


class Scp03Channel(GpChannelBase[Scp03Session]):
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
    def s16(self) -> bool:
        return self._session.mac_length == 16

    @property
    def key_version(self) -> int:
        return self.init_response.key_version

    @property
    def counter(self) -> int:
        return self._session.counter

    @property
    def session_keys(self) -> Scp03SessionKeys:
        return self._session.keys

    @property
    def dek(self) -> bytes:
        """The key that encrypts sensitive data (PUT KEY): SCP03 uses the *static* K-DEK (Amendment D §7.2)."""
        return self._keys.dek


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
        require_alg(keys, Alg.AES, "SCP03")
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
        check_key_version(key_version, init.key_version)
        if lvl & SecurityLevel.R_MAC and not init.i & I_R_MAC:
            raise SecureChannelError(
                f"level {int(lvl):02X} needs R-MAC, which the card does not offer (i={init.i:02X})")
        if lvl & SecurityLevel.R_ENC and not init.i & I_R_ENC:
            raise SecureChannelError(
                f"level {int(lvl):02X} needs R-ENC, which the card does not offer (i={init.i:02X})")

        session_keys = Scp03SessionKeys.derive(keys, host_challenge, init.card_challenge)
        verify_card_cryptogram("SCP03", card_cryptogram(session_keys.s_mac, host_challenge, init.card_challenge),
                               init.card_cryptogram, keys, init.key_version)
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
        send_external_authenticate(send, "SCP03", lvl, cryptogram, mac)
        logger.debug("SCP03 channel open: kvn %02X, i %02X, level %02X, S%d", init.key_version, init.i,
                     int(lvl), 16 if init.s16 else 8)
        return Scp03Channel(session, keys, init, host_challenge)


# ---------------------------------------------------------------------------------------------- card

# INITIALIZE UPDATE leaves host challenge, card challenge and session keys for EXTERNAL AUTHENTICATE.
_Pending = tuple[bytes, bytes, Scp03SessionKeys]


class Scp03Card(GpCardBase[Scp03Session, _Pending]):
    """The card side of SCP03: answers INITIALIZE UPDATE / EXTERNAL AUTHENTICATE and guards the session.

    ``i`` is the implementation option (Amendment D §5.1; ``70`` = pseudo-random challenge, R-MAC, R-ENC);
    its S16 bit follows ``s16``. With a pseudo-random challenge the sequence counter (3 bytes) is returned
    and the challenge computed from it and ``isd_aid``; the counter is then incremented. ``counter_quirk``
    emulates cards that increment the encryption counter only for commands with data. ``kdd`` is the key
    diversification data the card returns (10 bytes; zeros by default). :meth:`handle` routes one command.
    """

    _PROTOCOL = "SCP03"
    _R_ENC = True

    def __init__(self, keys: GpKeySet, sequence_counter: int = 0, isd_aid: bytes = b"", *, i: int = 0x70,
                 rng: Rng | None = None, s16: bool = False, counter_quirk: bool = False,
                 kdd: bytes = bytes(KDD_LENGTH)) -> None:
        require_alg(keys, Alg.AES, "SCP03")
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
        self._pending = None
        self.session = None

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

    def initialize_update(self, command: CommandApdu) -> ResponseApdu:
        self.close()  # a new INITIALIZE UPDATE ends any current session (GPCS 2.3.1 §11.5.1)
        n = 16 if self.s16 else 8
        refused = self._refuse_initialize_update(command, n)
        if refused is not None:
            return refused
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

    # -- EXTERNAL AUTHENTICATE (GpCardBase.external_authenticate)
    def _offers(self, level: SecurityLevel) -> bool:
        return not ((level & SecurityLevel.R_MAC and not self.i & I_R_MAC)
                    or (level & SecurityLevel.R_ENC and not self.i & I_R_ENC))

    def _cryptogram_length(self, pending: _Pending) -> int:
        return len(pending[1])

    def _new_session(self, pending: _Pending, level: SecurityLevel) -> Scp03Session:
        return Scp03Session(pending[2], level, s16=self.s16, counter_quirk=self.counter_quirk)

    def _auth_mac(self, session: Scp03Session, command: CommandApdu, cryptogram: bytes) -> bytes:
        return session.mac_command(command.cla, command.ins, command.p1, command.p2, cryptogram, command.is_extended)

    def _host_cryptogram(self, pending: _Pending) -> bytes:
        host, challenge, keys = pending
        return host_cryptogram(keys.s_mac, host, challenge)
