"""GlobalPlatform Secure Channel Protocol '02' (GPCS 2.3.1 Appendix E), host and card side, 3DES.

Same shape as :mod:`cardkit.sm.scp03`: a pure :class:`Scp02Session` (no I/O), the host handshakes
:meth:`Scp02Host.open` (explicit) and :meth:`Scp02Host.open_implicit` with an injected ``send`` returning an
:class:`Scp02Channel` (a session processor), and :class:`Scp02Card`.

Implemented (GPCS 2.3.1 Appendix E):

* i parameter (Table E-1): explicit initiation (bit ``04`` set) with ICV zero, and implicit initiation with
  the Table E-1 values ``0A``/``0B``/``1A``/``1B`` only (C-MAC on the unmodified APDU, ICV = MAC over AID,
  ``1x`` with ICV encryption, ``x0``/``x1`` with one base key / three keys).
* INITIALIZE UPDATE (§E.5.1): the response is exactly 28 bytes — KDD (10) ‖ key version ‖ SCP id ``02`` ‖
  sequence counter (2) ‖ card challenge (6) ‖ card cryptogram (8).
* session keys (§E.4.1): 3DES-CBC(static key, zero ICV, constant ‖ sequence counter ‖ 00×12) with the
  constants S-ENC ``0182``, C-MAC ``0101``, R-MAC ``0102``, DEK ``0181``. With one base key (i bit ``01`` = 0)
  every session key comes from the ENC key of the key set.
* card / host cryptograms (§E.4.2.1/2): full 3DES CBC-MAC (ISO/IEC 9797-1 algorithm 1, padding method 2)
  under S-ENC over host challenge ‖ counter ‖ card challenge (card) and counter ‖ card challenge ‖ host
  challenge (host). The card cryptogram is verified before EXTERNAL AUTHENTICATE is sent.
* C-MAC (§E.4.4): ISO/IEC 9797-1 algorithm 3 ("retail MAC") under the C-MAC session key; on the modified
  APDU (CLA with SM bit, Lc + 8) unless i bit ``02`` asks for the unmodified APDU (CLA without SM bit, Lc of
  the plain data; ``00`` when there is none). The ICV of the first C-MAC of a session is zero (explicit:
  EXTERNAL AUTHENTICATE) or the MAC over the AID (implicit, below), never encrypted (as public
  implementations read it; no published vector decides it); then the previous C-MAC, encrypted with single
  DES under the first half of the C-MAC key when i bit ``10`` is set.
* implicit initiation (Appendix E, implicit Secure Channel initiation; Table E-1): the host knows the
  sequence counter (GET DATA ``00C1``, ``80 CA 00 C1 00``, or the previous session's value + 1), derives the
  session keys from it, and C-MACs its first command with ICV = retail MAC (C-MAC session key, ICV zero,
  padding method 2) over the AID of the application selected on the channel. The card opens the session
  when that C-MAC verifies and increments the counter then; a command that does not verify is refused (6982)
  and nothing runs. Security level C-MAC only: without EXTERNAL AUTHENTICATE no level is negotiated, and no
  Table E-1 implicit value offers R-MAC.
* C-DECRYPTION (§E.4.6): 3DES-CBC, zero ICV, ``80 00…`` padding, over the plain command data (the C-MAC
  is computed on the plain command first); only when there is command data.
* R-MAC (§E.4.5, i bit ``20``, explicit only): retail MAC under the R-MAC session key over the unmodified
  command header ‖ Lc ‖ plain command data ‖ response data length ‖ response data ‖ SW, ICV = the previous
  R-MAC (zeros at first). Responses with an error status word are passed through without R-MAC (the SCP03
  rule of Amendment D §6.2.5, applied here too).

Not implemented: BEGIN/END R-MAC SESSION; SCP01 (GPCS 2.1.1 Appendix D). The card side answers with a random
card challenge even when i bit ``40`` announces the well-known pseudo-random algorithm (§E.4.2.1); the host
does not check it. Logical channel bits are not cleared from the CLA in the C-MAC input.

Only the session-key derivation, the cryptograms and the C-MAC with ICV encryption are checked against
published values (``vectors/gp_scp02.json``); C-DECRYPTION, R-MAC and implicit initiation are checked host
against card only (no published implicit-initiation transcript was found).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import (
    Alg,
    des3_cbc_decrypt,
    des3_cbc_encrypt,
    des3_cbc_mac,
    des_ecb_encrypt,
    pad_m2,
    retail_mac,
    unpad_m2,
)
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

__all__ = ["IMPLICIT_I", "I_EXPLICIT", "I_ICV_ENCRYPT", "I_ICV_MAC_AID", "I_PSEUDO_RANDOM", "I_R_MAC", "I_THREE_KEYS",
           "I_UNMODIFIED_APDU", "SCP02", "Scp02Card", "Scp02Channel", "Scp02Host", "Scp02InitResponse",
           "Scp02Session", "Scp02SessionKeys", "aid_icv", "card_cryptogram", "check_i", "host_cryptogram",
           "is_implicit", "sequence_counter_command"]

logger = logging.getLogger(__name__)

#: SCP identifier in the INITIALIZE UPDATE response (GPCS 2.3.1 §E.5.1.3).
SCP02 = 0x02
# GPCS 2.3.1 §E.1.1: the "i" parameter of SCP02.
I_THREE_KEYS = 0x01  # 3 Secure Channel keys (else 1 base key)
I_UNMODIFIED_APDU = 0x02  # C-MAC on the unmodified APDU (else on the modified APDU)
I_EXPLICIT = 0x04  # explicit initiation (else implicit)
I_ICV_MAC_AID = 0x08  # ICV = MAC over AID (else zero)
I_ICV_ENCRYPT = 0x10  # ICV encryption for C-MAC session
I_R_MAC = 0x20  # R-MAC support
I_PSEUDO_RANDOM = 0x40  # well-known pseudo-random card challenge
#: GPCS 2.3.1 Table E-1: the implicit-initiation values (C-MAC on the unmodified APDU, ICV = MAC over AID;
#: ``1x`` with ICV encryption; ``x0`` one base key, ``x1`` three keys). The table defines no other.
IMPLICIT_I = frozenset({0x0A, 0x0B, 0x1A, 0x1B})

# GPCS 2.3.1 §E.4.1: derivation constants.
DC_S_ENC, DC_C_MAC, DC_R_MAC, DC_DEK = b"\x01\x82", b"\x01\x01", b"\x01\x02", b"\x01\x81"

# NIST SP 800-67: the DES block; GPCS 2.3.1 §E.4.4: 8-byte MACs.
_BLOCK = 8
# GPCS 2.3.1 §E.5.1.3: response 28 bytes; counter 2 (0000..FFFF), card challenge 6, cryptogram 8; host challenge 8.
_RESPONSE_LENGTH, _SEQ_LEN, _SEQ_MAX, _CHALLENGE_LEN, _HOST_CHALLENGE_LEN = 28, 2, 0xFFFF, 6, 8
# GPCS 2.3.1 §E.5.2: EXTERNAL AUTHENTICATE, CLA 84, INS 82.
_CLA_GP, _INS_EXTERNAL_AUTHENTICATE = 0x80, 0x82
# ISO 7816-4:2020 §5.6 / GPCS 2.3.1 §E.5 status words used by the card side.
_SW_OK, _SW_SECURITY, _SW_CONDITIONS, _SW_SM_UNSUPPORTED, _SW_SM_WRONG = 0x9000, 0x6982, 0x6985, 0x6882, 0x6988
# A card that does not open an implicit session answers: SM not supported on the channel, security status not
# satisfied, or incorrect SM data objects (ISO 7816-4:2020 §5.6).
_IMPLICIT_REFUSED = frozenset({_SW_SM_UNSUPPORTED, _SW_SECURITY, _SW_SM_WRONG})
# GPCS 2.3.1 §11.3: GET DATA tag C1, sequence counter of the default key version number.
_TAG_SEQ = 0xC1
# ISO/IEC 7816-5: an AID (RID ‖ PIX) is 5..16 bytes.
_AID_MIN, _AID_MAX = 5, 16


def check_i(i: int) -> int:
    """Validate an SCP02 i parameter (GPCS 2.3.1 Table E-1): explicit initiation with ICV zero, or one of the
    implicit values 0A/0B/1A/1B."""
    if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i <= 0x7F:
        raise SecureChannelError(f"SCP02 i parameter must be 00..7F, got {i!r}")
    if i & I_EXPLICIT:
        if i & I_ICV_MAC_AID:
            raise SecureChannelError(f"SCP02 i={i:02X}: Table E-1 defines ICV 'MAC over AID' (bit 08) only with "
                                     "implicit initiation; explicit initiation starts from ICV zero")
    elif i not in IMPLICIT_I:
        raise SecureChannelError(f"SCP02 i={i:02X}: implicit initiation (bit 04 clear) is defined only as 0A, 0B, "
                                 "1A or 1B (GPCS 2.3.1 Table E-1: C-MAC on the unmodified APDU, ICV = MAC over "
                                 "AID, no R-MAC)")
    return i


def is_implicit(i: int) -> bool:
    """True if ``i`` (already checked) selects implicit initiation (bit 04 clear)."""
    return not i & I_EXPLICIT


def aid_icv(c_mac_key: bytes, aid: bytes) -> bytes:
    """The ICV of the first C-MAC of an implicit session: retail MAC (ISO/IEC 9797-1 algorithm 3, padding
    method 2, ICV zero) under the C-MAC session key over the selected application's AID (Table E-1 bit 08)."""
    aid = bytes(aid)
    if not _AID_MIN <= len(aid) <= _AID_MAX:
        raise SecureChannelError(f"an AID is {_AID_MIN}..{_AID_MAX} bytes (ISO/IEC 7816-5), got {len(aid)}")
    return retail_mac(c_mac_key, aid)


def sequence_counter_command() -> CommandApdu:
    """GET DATA of the default key set's sequence counter (GPCS 2.3.1 §11.3, tag C1): ``80 CA 00 C1 00``."""
    return CommandApdu(_CLA_GP, 0xCA, 0x00, _TAG_SEQ, le=256, name="GET DATA")


def _parse_counter(data: bytes) -> int:
    """The value of GET DATA C1: ``C1 02 counter`` (GPCS 2.3.1 §11.3)."""
    if len(data) != 4 or data[0] != _TAG_SEQ or data[1] != _SEQ_LEN:
        raise SecureChannelError(f"GET DATA C1 must answer C1 02 followed by the 2-byte SCP02 sequence counter, got "
                                 f"{len(data)} bytes starting {data[:2].hex().upper() or '(none)'}")
    return int.from_bytes(data[2:], "big")


def _check_counter(value: int | bytes) -> int:
    if isinstance(value, bytes | bytearray):
        if len(value) != _SEQ_LEN:
            raise SecureChannelError(f"SCP02 sequence counter must be {_SEQ_LEN} bytes, got {len(value)}")
        value = int.from_bytes(value, "big")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _SEQ_MAX:
        raise SecureChannelError(f"SCP02 sequence counter must be 0000..FFFF, got {value!r}")
    if value == _SEQ_MAX:
        raise SecureChannelError("SCP02 sequence counter FFFF is exhausted: it cannot be incremented, so the card "
                                 "opens no further session with this key set")
    return value


def card_cryptogram(s_enc: bytes, host_challenge: bytes, sequence_counter: bytes, card_challenge: bytes) -> bytes:
    """GPCS 2.3.1 §E.4.2.1: 3DES CBC-MAC under S-ENC over host challenge ‖ counter ‖ card challenge."""
    return des3_cbc_mac(s_enc, bytes(host_challenge) + bytes(sequence_counter) + bytes(card_challenge))


def host_cryptogram(s_enc: bytes, host_challenge: bytes, sequence_counter: bytes, card_challenge: bytes) -> bytes:
    """GPCS 2.3.1 §E.4.2.2: 3DES CBC-MAC under S-ENC over counter ‖ card challenge ‖ host challenge."""
    return des3_cbc_mac(s_enc, bytes(sequence_counter) + bytes(card_challenge) + bytes(host_challenge))


@dataclass(frozen=True)
class Scp02SessionKeys:
    """S-ENC, C-MAC, R-MAC and DEK session keys (GPCS 2.3.1 §E.4.1). The repr shows no key bytes."""

    s_enc: bytes = field(repr=False)
    c_mac: bytes = field(repr=False)
    r_mac: bytes = field(repr=False)
    dek: bytes = field(repr=False)

    @staticmethod
    def derive_key(static_key: bytes, constant: bytes, sequence_counter: bytes) -> bytes:
        return des3_cbc_encrypt(static_key, bytes(constant) + bytes(sequence_counter) + bytes(12))

    @classmethod
    def derive(cls, keys: GpKeySet, sequence_counter: bytes, i: int = 0x55) -> Scp02SessionKeys:
        seq = bytes(sequence_counter)
        if len(seq) != _SEQ_LEN:
            raise SecureChannelError(f"SCP02 sequence counter must be {_SEQ_LEN} bytes, got {len(seq)}")
        three = bool(i & I_THREE_KEYS)
        enc, mac, dek = (keys.enc, keys.mac, keys.dek) if three else (keys.enc, keys.enc, keys.enc)
        d = cls.derive_key
        return cls(d(enc, DC_S_ENC, seq), d(mac, DC_C_MAC, seq), d(mac, DC_R_MAC, seq), d(dek, DC_DEK, seq))


@dataclass(frozen=True)
class Scp02InitResponse:
    """The INITIALIZE UPDATE response of SCP02 (GPCS 2.3.1 §E.5.1.3)."""

    kdd: bytes
    key_version: int
    scp_id: int
    sequence_counter: bytes
    card_challenge: bytes
    card_cryptogram: bytes

    @classmethod
    def parse(cls, data: bytes) -> Scp02InitResponse:
        data = bytes(data)
        if len(data) != _RESPONSE_LENGTH:
            raise InitializeUpdateError(f"SCP02 INITIALIZE UPDATE response must be 28 bytes, got {len(data)}")
        if data[11] != SCP02:
            raise InitializeUpdateError(f"response announces SCP{data[11]:02X}, not SCP02", offset=11)
        return cls(data[:10], data[10], data[11], data[12:14], data[14:20], data[20:28])

    def to_bytes(self) -> bytes:
        return (self.kdd + bytes([self.key_version, self.scp_id]) + self.sequence_counter + self.card_challenge
                + self.card_cryptogram)


# --------------------------------------------------------------------------------------------- session core


class Scp02Session(GpSession[Scp02SessionKeys]):
    """The state of one open SCP02 session: C-MAC ICV, R-MAC ICV, level, i. No I/O.

    ``first_icv``: the ICV of the first C-MAC (:func:`aid_icv` for implicit initiation; zero by default).
    Host side: :meth:`wrap_command`, :meth:`unwrap_response`; card side: :meth:`unwrap_command`,
    :meth:`wrap_response`. Any verification failure closes the session.
    """

    _PROTOCOL = "SCP02"
    _BLOCK = _BLOCK
    _logger = logger

    def __init__(self, keys: Scp02SessionKeys, level: SecurityLevel, i: int, *,
                 first_icv: bytes | None = None) -> None:
        super().__init__(keys, level, _BLOCK)
        self.i = check_i(i)
        self.last_c_mac: bytes | None = None  # None until the first C-MAC (EXTERNAL AUTHENTICATE's, explicit)
        self._first_icv = bytes(_BLOCK) if first_icv is None else bytes(first_icv)
        if len(self._first_icv) != _BLOCK:
            raise SecureChannelError(f"SCP02 ICV must be {_BLOCK} bytes, got {len(self._first_icv)}")
        self.last_r_mac = bytes(_BLOCK)
        self._r_context = b""  # unmodified header ‖ Lc ‖ plain data of the last command, for R-MAC

    def __repr__(self) -> str:
        return f"Scp02Session(level={int(self.level):02X}, i={self.i:02X}, closed={self.closed})"

    def mac_command(self, cla: int, ins: int, p1: int, p2: int, data: bytes) -> bytes:
        """C-MAC of a plain command (``cla`` without SM indication); updates the ICV chain."""
        if self.last_c_mac is None:
            icv = self._first_icv  # never encrypted: zero, or the MAC over the AID (implicit initiation)
        elif self.i & I_ICV_ENCRYPT:
            icv = des_ecb_encrypt(self.keys.c_mac[:8], self.last_c_mac)
        else:
            icv = self.last_c_mac
        if self.i & I_UNMODIFIED_APDU:
            head = bytes([cla, ins, p1, p2]) + lc_bytes(len(data))
        else:
            head = bytes([sm_cla(cla), ins, p1, p2]) + lc_bytes(len(data) + _BLOCK)
        self.last_c_mac = retail_mac(self.keys.c_mac, head + data, icv)
        return self.last_c_mac

    def _remember(self, cla: int, ins: int, p1: int, p2: int, data: bytes) -> None:
        self._r_context = bytes([cla, ins, p1, p2]) + lc_bytes(len(data)) + data

    def _r_mac(self, data: bytes, sw: int) -> bytes:
        return retail_mac(self.keys.r_mac, self._r_context + lc_bytes(len(data)) + data + sw.to_bytes(2, "big"),
                          self.last_r_mac)

    def _cbc_decrypt(self, data: bytes, icv: bytes | None) -> bytes:
        return unpad_m2(des3_cbc_decrypt(self.keys.s_enc, data), _BLOCK)  # §E.4.6: ICV zero

    # -- host side (the checks common to SCP03 are in GpSession.wrap_command / unwrap_response)
    def _protect_command(self, command: CommandApdu) -> CommandApdu:
        cla = clear_sm_cla(command.cla)
        mac = self.mac_command(cla, command.ins, command.p1, command.p2, command.data)
        self._remember(cla, command.ins, command.p1, command.p2, command.data)
        data = command.data
        if self._c_dec and data:
            data = des3_cbc_encrypt(self.keys.s_enc, pad_m2(data, _BLOCK))
        return command.replace(cla=sm_cla(cla), data=data + mac)

    def _response_verified(self, body: bytes, mac: bytes) -> bytes:
        self.last_r_mac = mac
        return body

    # -- card side (GpSession.unwrap_command / wrap_response)
    def _verify_command(self, command: CommandApdu, body: bytes, mac: bytes) -> CommandApdu:
        if self._c_dec and body:
            body = self._decrypt(body, None, "command")
        cla = clear_sm_cla(command.cla)
        if not hmac.compare_digest(self.mac_command(cla, command.ins, command.p1, command.p2, body), mac):
            self.fail(f"C-MAC verification failed for {command.label}")
        self._remember(cla, command.ins, command.p1, command.p2, body)
        return command.replace(cla=cla, data=body)

    def _protect_response(self, data: bytes, sw: int) -> bytes:
        mac = self._r_mac(data, sw)
        self.last_r_mac = mac
        return data + mac


# ------------------------------------------------------------------------------------------------- host


class Scp02Channel(GpChannelBase[Scp02Session]):
    """An open SCP02 secure channel on the host: a session processor (``process(command, send)``).

    Explicit (:meth:`Scp02Host.open`) or implicit (:meth:`Scp02Host.open_implicit`, :attr:`implicit` True). An
    implicit session opens on the card with the first command sent through the channel: when the card refuses
    that command (6882, 6982 or 6988) the channel closes and :class:`AuthenticationError` is raised.
    """

    def __init__(self, session: Scp02Session, init: Scp02InitResponse | None, host_challenge: bytes | None, *,
                 sequence_counter: int | None = None, key_version: int = 0, aid: bytes | None = None) -> None:
        self._session = session
        self._init = init
        self.host_challenge = host_challenge
        #: The AID the first C-MAC's ICV was computed over (implicit initiation), else None.
        self.aid = aid
        if init is not None:
            sequence_counter, key_version = int.from_bytes(init.sequence_counter, "big"), init.key_version
        elif sequence_counter is None:
            raise SecureChannelError("an implicit SCP02 channel needs the sequence counter its keys come from")
        #: The sequence counter the session keys were derived from.
        self.sequence_counter: int = sequence_counter
        self._key_version = key_version
        self._awaiting_first = init is None

    def __repr__(self) -> str:
        return (f"Scp02Channel(kvn=0x{self.key_version:02X}, i=0x{self.i:02X}, level={int(self.level):02X}, "
                f"{'implicit' if self.implicit else 'explicit'}, closed={self.closed})")

    @property
    def implicit(self) -> bool:
        return self._init is None

    @property
    def init_response(self) -> Scp02InitResponse:
        """The INITIALIZE UPDATE response (explicit initiation only)."""
        if self._init is None:
            raise SecureChannelError("an implicitly initiated SCP02 channel has no INITIALIZE UPDATE response")
        return self._init

    @property
    def next_sequence_counter(self) -> int:
        """The counter the card holds once this session opened (it increments it once per session): pass it to
        :meth:`Scp02Host.open_implicit` to open the next session without GET DATA."""
        return self.sequence_counter + 1

    @property
    def i(self) -> int:
        return self._session.i

    @property
    def key_version(self) -> int:
        """The key set version: from INITIALIZE UPDATE (explicit), as given (implicit: the card's default set)."""
        return self._key_version

    @property
    def session_keys(self) -> Scp02SessionKeys:
        return self._session.keys

    @property
    def dek(self) -> bytes:
        """The key that encrypts sensitive data (PUT KEY): the session DEK in SCP02 (GPCS 2.3.1 §E.4.7)."""
        return self._session.keys.dek

    def unwrap(self, response: ResponseApdu) -> ResponseApdu:
        if self._awaiting_first:
            self._awaiting_first = False
            if response.sw in _IMPLICIT_REFUSED:
                self._session.closed = True
                aid = self.aid.hex().upper() if self.aid else "?"
                logger.warning("implicit SCP02 session refused by the card (%04X)", response.sw)
                raise AuthenticationError(
                    f"the card refused the first C-MAC'd command of the implicit SCP02 session ({response.sw:04X}): "
                    f"wrong keys, a stale sequence counter ({self.sequence_counter:04X}), an application other "
                    f"than {aid} selected, or no session possible on this channel")
        return self._session.unwrap_response(response)


class Scp02Host:
    """The host side of SCP02: explicit handshake (:meth:`open`) and implicit initiation (:meth:`open_implicit`)."""

    @staticmethod
    def open(send: Send, keys: GpKeySet, *, level: int | SecurityLevel, key_version: int = 0,
             host_challenge: bytes | None = None, rng: Rng | None = None, i: int = 0x55) -> Scp02Channel:
        """INITIALIZE UPDATE, verify the card cryptogram, EXTERNAL AUTHENTICATE; return the open channel.

        SCP02 cards do not return i: pass the card's (``15``, ``55``, ``35``/``75`` with R-MAC, …). Raises
        :class:`AuthenticationError` — with nothing more sent — when the card cryptogram does not verify, and
        when the card refuses the host cryptogram (6300); :class:`SecureChannelError` for malformed responses
        and unsupported options; a typed status-word error for other refusals.
        """
        lvl = check_level(level, r_enc=False)
        if is_implicit(check_i(i)):
            raise SecureChannelError(f"SCP02 i={i:02X} is implicit initiation (no INITIALIZE UPDATE): use "
                                     "Scp02Host.open_implicit")
        if lvl & SecurityLevel.R_MAC and not i & I_R_MAC:
            raise SecureChannelError(f"level {int(lvl):02X} needs R-MAC, which i={i:02X} does not offer")
        require_alg(keys, Alg.DES3, "SCP02")
        if host_challenge is None:
            host_challenge = (rng or random_bytes)(_HOST_CHALLENGE_LEN)
        host_challenge = bytes(host_challenge)
        if len(host_challenge) != _HOST_CHALLENGE_LEN:
            raise SecureChannelError(f"SCP02 host challenge must be 8 bytes, got {len(host_challenge)}")
        command = initialize_update_command(key_version, host_challenge)
        init = Scp02InitResponse.parse(check(send(command), command).data)
        check_key_version(key_version, init.key_version)
        keys_s = Scp02SessionKeys.derive(keys, init.sequence_counter, i)
        verify_card_cryptogram(
            "SCP02", card_cryptogram(keys_s.s_enc, host_challenge, init.sequence_counter, init.card_challenge),
            init.card_cryptogram, keys, init.key_version)
        session = Scp02Session(keys_s, lvl, i)
        cryptogram = host_cryptogram(keys_s.s_enc, host_challenge, init.sequence_counter, init.card_challenge)
        mac = session.mac_command(_CLA_GP, _INS_EXTERNAL_AUTHENTICATE, int(lvl), 0, cryptogram)
        send_external_authenticate(send, "SCP02", lvl, cryptogram, mac)
        logger.debug("SCP02 channel open: kvn %02X, i %02X, level %02X", init.key_version, i, int(lvl))
        return Scp02Channel(session, init, host_challenge)

    @staticmethod
    def open_implicit(send: Send, keys: GpKeySet, *, aid: bytes, i: int = 0x1A,
                      sequence_counter: int | bytes | None = None) -> Scp02Channel:
        """Prepare an implicitly initiated SCP02 session (GPCS 2.3.1 Appendix E, Table E-1 ``0A``/``0B``/``1A``/``1B``)
        at security level C-MAC and return its channel; the session opens on the card with the first command sent
        through the channel.

        ``aid``: the application selected on the channel (the ISD, or the application whose security domain
        holds ``keys``) — the first C-MAC's ICV is the MAC over it. ``sequence_counter``: the card's current
        counter of its default key set; when None it is read with GET DATA ``80 CA 00 C1 00`` through ``send``
        (the only command sent here). After a session, :attr:`Scp02Channel.next_sequence_counter` is the value
        for the next one (select the application again first: a card keeps a session open until the application
        is deselected, and a command MACed for a new session only ends the open one).

        Raises :class:`SecureChannelError` for an explicit or undefined ``i``, a non-3DES key set, a bad AID or
        counter (FFFF is exhausted), or a malformed GET DATA answer; a typed status-word error when GET DATA is
        refused. The channel raises :class:`AuthenticationError` if the card refuses the first command.
        """
        if not is_implicit(check_i(i)):
            raise SecureChannelError(f"SCP02 i={i:02X} is explicit initiation: use Scp02Host.open")
        require_alg(keys, Alg.DES3, "SCP02")
        if not isinstance(aid, bytes | bytearray) or not _AID_MIN <= len(aid) <= _AID_MAX:
            got = len(aid) if isinstance(aid, bytes | bytearray) else type(aid).__name__
            raise SecureChannelError(f"the selected application's AID must be {_AID_MIN}..{_AID_MAX} bytes (ISO/IEC "
                                     f"7816-5), got {got}")
        if sequence_counter is None:
            command = sequence_counter_command()
            sequence_counter = _parse_counter(check(send(command), command).data)
        seq = _check_counter(sequence_counter)
        keys_s = Scp02SessionKeys.derive(keys, seq.to_bytes(_SEQ_LEN, "big"), i)
        session = Scp02Session(keys_s, SecurityLevel.C_MAC, i, first_icv=aid_icv(keys_s.c_mac, aid))
        logger.debug("SCP02 implicit channel ready: i %02X, counter %04X", i, seq)
        return Scp02Channel(session, None, None, sequence_counter=seq, key_version=keys.version, aid=bytes(aid))


# ------------------------------------------------------------------------------------------------- card

# INITIALIZE UPDATE leaves host challenge, sequence counter, card challenge and session keys for EXTERNAL
# AUTHENTICATE.
_Pending = tuple[bytes, bytes, bytes, Scp02SessionKeys]


class Scp02Card(GpCardBase[Scp02Session, _Pending]):
    """The card side of SCP02. The sequence counter is incremented when a session opens.

    Explicit i: INITIALIZE UPDATE / EXTERNAL AUTHENTICATE. Implicit i (``0A``/``0B``/``1A``/``1B``): no
    INITIALIZE UPDATE (6985); the first C-MAC'd command opens the session (:meth:`start_implicit`), with ICV =
    MAC over ``aid``, the AID of the application selected on the channel. :meth:`handle` routes one command
    like :meth:`cardkit.sm.scp03.Scp03Card.handle`.
    """

    _PROTOCOL = "SCP02"
    _R_ENC = False

    def __init__(self, keys: GpKeySet, sequence_counter: int = 0, *, i: int = 0x55, rng: Rng | None = None,
                 kdd: bytes = bytes(KDD_LENGTH), aid: bytes | None = None) -> None:
        require_alg(keys, Alg.DES3, "SCP02")
        if not 0 <= sequence_counter <= _SEQ_MAX:
            raise SecureChannelError(f"SCP02 sequence counter must fit 2 bytes, got {sequence_counter!r}")
        if len(kdd) != KDD_LENGTH:
            raise SecureChannelError(f"key diversification data must be {KDD_LENGTH} bytes, got {len(kdd)}")
        self.keys = keys
        self.i = check_i(i)
        self.sequence_counter = sequence_counter
        self.kdd = bytes(kdd)
        if aid is not None and not _AID_MIN <= len(aid) <= _AID_MAX:
            raise SecureChannelError(f"an AID is {_AID_MIN}..{_AID_MAX} bytes (ISO/IEC 7816-5), got {len(aid)}")
        self.aid = None if aid is None else bytes(aid)
        self._rng = rng or random_bytes
        self._pending = None
        self.session = None

    @property
    def session_dek(self) -> bytes | None:
        """The session DEK of the open session (decrypts PUT KEY data, GPCS 2.3.1 §E.4.7), else None."""
        return self.session.keys.dek if self.session is not None and not self.session.closed else None

    @property
    def dek(self) -> bytes | None:
        return self.session_dek

    def initialize_update(self, command: CommandApdu) -> ResponseApdu:
        self.close()
        if is_implicit(self.i):  # GPCS 2.3.1 Table E-1: this card initiates implicitly
            return ResponseApdu.of(_SW_CONDITIONS)
        refused = self._refuse_initialize_update(command, _HOST_CHALLENGE_LEN)
        if refused is not None:
            return refused
        if self.sequence_counter >= _SEQ_MAX:  # FFFF could not count the session it would open
            return ResponseApdu.of(_SW_CONDITIONS)
        seq = self.sequence_counter.to_bytes(_SEQ_LEN, "big")
        challenge = bytes(self._rng(_CHALLENGE_LEN))
        keys = Scp02SessionKeys.derive(self.keys, seq, self.i)
        init = Scp02InitResponse(self.kdd, self.keys.version, SCP02, seq, challenge,
                                 card_cryptogram(keys.s_enc, command.data, seq, challenge))
        self._pending = (command.data, seq, challenge, keys)
        return ResponseApdu.of(_SW_OK, init.to_bytes())

    # -- EXTERNAL AUTHENTICATE (GpCardBase.external_authenticate)
    def _offers(self, level: SecurityLevel) -> bool:
        return not (level & SecurityLevel.R_MAC and not self.i & I_R_MAC)

    def _cryptogram_length(self, pending: _Pending) -> int:
        return _BLOCK

    def _new_session(self, pending: _Pending, level: SecurityLevel) -> Scp02Session:
        return Scp02Session(pending[3], level, self.i)

    def _auth_mac(self, session: Scp02Session, command: CommandApdu, cryptogram: bytes) -> bytes:
        return session.mac_command(clear_sm_cla(command.cla), command.ins, command.p1, command.p2, cryptogram)

    def _host_cryptogram(self, pending: _Pending) -> bytes:
        host, seq, challenge, keys = pending
        return host_cryptogram(keys.s_enc, host, seq, challenge)

    def _opened(self, session: Scp02Session) -> None:
        self.session = session
        self.sequence_counter += 1

    # -- implicit initiation
    def start_implicit(self, command: CommandApdu) -> CommandApdu:
        """Open an implicit session with its first command (C-MAC'd, ICV = MAC over :attr:`aid`) and return the
        command unwrapped; the sequence counter is incremented. Raises :class:`SecureChannelError`, with the card
        unchanged (no session, same counter), when the C-MAC does not verify or no session can open."""
        if not is_implicit(self.i):
            raise SecureChannelError(f"SCP02 i={self.i:02X} initiates explicitly (INITIALIZE UPDATE)")
        if self.aid is None:
            raise SecureChannelError("implicit SCP02 initiation needs the selected application's AID")
        seq = _check_counter(self.sequence_counter)
        self.close()
        keys = Scp02SessionKeys.derive(self.keys, seq.to_bytes(_SEQ_LEN, "big"), self.i)
        session = Scp02Session(keys, SecurityLevel.C_MAC, self.i, first_icv=aid_icv(keys.c_mac, self.aid))
        plain = session.unwrap_command(command)
        self.session = session
        self.sequence_counter = seq + 1
        return plain

    def _start_on(self, command: CommandApdu) -> CommandApdu:
        if is_implicit(self.i):
            return self.start_implicit(command)
        raise SecureChannelError("no open SCP02 session on the card")

    def _pass_through(self, command: CommandApdu, app: Callable[[CommandApdu], ResponseApdu]) -> ResponseApdu:
        try:  # as before the shared base: a SecureChannelError from ``app`` here is answered 6982 too
            return app(command)
        except SecureChannelError:
            return ResponseApdu.of(_SW_SECURITY)
