"""ISO/IEC 7816-4:2020 §10 secure messaging, in the profile ICAO Doc 9303-11 §9.8 uses.

A protected command carries (ISO 7816-4:2020 §10.2, ICAO 9303-11 §9.8.4)::

    CLA|0C INS P1 P2  Lc  [DO'87' 01‖cryptogram | DO'85' cryptogram] [DO'97' Le] DO'8E' MAC  Le=00

and a protected response::

    [DO'87' | DO'85'] DO'99' SW1 SW2  DO'8E' MAC  SW1 SW2

The MAC covers ``SSC ‖ pad(header) ‖ DOs`` (commands) or ``SSC ‖ DOs`` (responses), padded with ISO/IEC 9797-1
method 2; the send sequence counter (SSC) is incremented before every message, command and response alike.

Three suites (:class:`SmSuite`):

* ``DES3_RETAIL`` — ICAO 9303-11 §9.8.5 (BAC, PACE with 3DES): 3DES-CBC with a zero IV, ISO/IEC 9797-1 MAC
  algorithm 3 (retail MAC), 8-byte SSC;
* ``AES_CMAC`` — ICAO 9303-11 §9.8.6: AES-CBC with IV = E(K_Enc, SSC), AES-CMAC truncated to 8 bytes,
  16-byte SSC;
* ``SM4_CMAC`` — *cardkit's national-algorithm profile*: the AES construction with SM4 (GB/T 32907-2016) and
  SM4-CMAC in place of AES and AES-CMAC. It is not taken from a published SM standard.

:class:`SmState` is pure (no I/O): the host calls :meth:`SmState.wrap_command` / :meth:`SmState.unwrap_response`,
the card :meth:`SmState.unwrap_command` / :meth:`SmState.wrap_response`. Any failure closes the state for good
(ICAO 9303-11 §9.8.2: on an SM error the session keys are discarded). :class:`IsoSmChannel` is the host side as a
:class:`~cardkit.session.Processor`.
"""

from __future__ import annotations

import enum
import hmac
import logging

from cardkit.apdu import LE_MAX_EXTENDED, LE_MAX_SHORT, CommandApdu, ResponseApdu
from cardkit.crypto import (
    Alg,
    block_size,
    cbc_decrypt,
    cbc_encrypt,
    check_key,
    cmac,
    ecb_encrypt,
    pad_m2,
    retail_mac,
    unpad_m2,
)
from cardkit.errors import CardkitError, CryptoError, KeyError_, SecureChannelError
from cardkit.session import Send

__all__ = [
    "MAC_LENGTH",
    "IsoSmChannel",
    "SmClosedError",
    "SmCommandError",
    "SmError",
    "SmState",
    "SmSuite",
    "is_protected",
]

log = logging.getLogger(__name__)

# ISO 7816-4:2020 §5.4.1 (Table 2): in the first interindustry class (and in the proprietary classes that follow
# its coding) CLA b4-b3 = 11 means "SM, command header authenticated".
_CLA_SM = 0x0C
# ISO 7816-4:2020 §5.4.1: b8-b7 = 01 is the further interindustry class, whose SM indication (b6) does not
# authenticate the header; cardkit does not speak it.
_CLA_FURTHER_MASK = 0xC0
_CLA_FURTHER = 0x40

# ISO 7816-4:2020 §10.2 (SM data objects), as ICAO 9303-11 §9.8.4 profiles them.
TAG_CRYPTOGRAM_PI = 0x87  # padding-content indicator byte followed by the cryptogram (even INS)
TAG_CRYPTOGRAM = 0x85  # cryptogram of BER-TLV data, no indicator byte (odd INS)
TAG_LE = 0x97  # protected Le
TAG_STATUS = 0x99  # processing status SW1 SW2
TAG_MAC = 0x8E  # cryptographic checksum
# ISO 7816-4:2020 §10.2 Table (padding-content indicator): 01 = padding per ISO/IEC 9797-1 method 2.
_PI_METHOD2 = 0x01

#: ICAO 9303-11 §9.8.5.2 / §9.8.6.2: the MAC in DO'8E' is 8 bytes for every suite.
MAC_LENGTH = 8

# ISO 7816-4:2020 §5.6 Table 6: the status words a card answers for SM errors.
SW_SM_MISSING = 0x6987
SW_SM_INCORRECT = 0x6988


class SmSuite(enum.Enum):
    """Cipher and MAC of a secure-messaging session."""

    #: ICAO 9303-11 §9.8.5: 3DES-CBC (IV zero), retail MAC (ISO/IEC 9797-1 MAC algorithm 3), 8-byte SSC.
    DES3_RETAIL = "3des-retail"
    #: ICAO 9303-11 §9.8.6: AES-CBC (IV = E(K_Enc, SSC)), AES-CMAC truncated to 8 bytes, 16-byte SSC.
    AES_CMAC = "aes-cmac"
    #: cardkit national-algorithm profile: the AES_CMAC construction with SM4 and SM4-CMAC (not a published SM
    #: standard; SM4 = GB/T 32907-2016, CMAC = NIST SP 800-38B).
    SM4_CMAC = "sm4-cmac"

    # Looked up per APDU: plain dicts keyed by the member's value (enum hashing is slow in CPython).
    @property
    def alg(self) -> Alg:
        return _SUITE_ALG[self._value_]

    @property
    def block(self) -> int:
        """Cipher block size: 8 (3DES) or 16 (AES, SM4)."""
        return _SUITE_BLOCK[self._value_]

    @property
    def ssc_length(self) -> int:
        """SSC length in bytes = the block size (ICAO 9303-11 §9.8.5.3 / §9.8.6.3)."""
        return _SUITE_BLOCK[self._value_]


_SUITE_ALG: dict[str, Alg] = {"3des-retail": Alg.DES3, "aes-cmac": Alg.AES, "sm4-cmac": Alg.SM4}
_SUITE_BLOCK: dict[str, int] = {k: block_size(v) for k, v in _SUITE_ALG.items()}


class SmError(SecureChannelError):
    """Secure-messaging data objects missing or incorrect, a MAC mismatch, bad padding or truncated data.

    ``sw`` is the status word a card answers for the problem (ISO 7816-4:2020 §5.6 Table 6): 6987 when the
    expected SM data objects are missing, 6988 when they are incorrect. The channel is closed.
    """

    def __init__(self, message: str, *, sw: int = SW_SM_INCORRECT) -> None:
        self.sw = sw
        super().__init__(message)


class SmClosedError(SmError):
    """The channel was closed by an earlier failure (or explicitly); it cannot be used again."""


class SmCommandError(SecureChannelError):
    """The host asked to protect a command that cannot be protected (class byte, length).

    Nothing was sent and the SSC did not move: the channel stays open.
    """


def is_protected(command: CommandApdu) -> bool:
    """True when ``command`` announces SM with an authenticated header (CLA b4-b3 = 11, ISO 7816-4 §5.4.1)."""
    if command.cla & _CLA_FURTHER_MASK == _CLA_FURTHER:
        return False
    return command.cla & _CLA_SM == _CLA_SM


# ------------------------------------------------------------------------------------------- DO encoding


def _encode_length(n: int) -> bytes:
    """BER definite length (X.690 §8.1.3; ISO 7816-4:2020 §6.3): 1 byte below 128, else 81/82/83 + bytes."""
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def _do(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _encode_length(len(value)) + value


def _parse_dos(data: bytes) -> list[tuple[int, bytes, int, int]]:
    """Split SM data into (tag, value, start, end) with one-byte tags and 1-4 byte lengths; strict."""
    out: list[tuple[int, bytes, int, int]] = []
    pos, n = 0, len(data)
    while pos < n:
        start = pos
        tag = data[pos]
        pos += 1
        if pos >= n:
            raise SmError(f"SM data object {tag:02X} has no length field")
        first = data[pos]
        pos += 1
        if first < 0x80:
            length = first
        else:
            size = first & 0x7F
            # ISO 7816-4:2020 §6.3: length fields of at most 4 bytes after '8x' ('80' indefinite is refused).
            if not 1 <= size <= 3 or pos + size > n:
                raise SmError(f"SM data object {tag:02X}: bad or truncated length field")
            length = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        if pos + length > n:
            raise SmError(f"SM data object {tag:02X} announces {length} bytes, {n - pos} present")
        out.append((tag, data[pos : pos + length], start, pos + length))
        pos += length
    return out


def _le_value(le: int, extended: bool) -> bytes:
    """DO'97' value (ICAO 9303-11 §9.8.4): one byte (00 = 256) or, for extended lengths, two (0000 = 65536)."""
    if le > LE_MAX_SHORT or extended:
        return (0 if le == LE_MAX_EXTENDED else le).to_bytes(2, "big")
    return bytes((0 if le == LE_MAX_SHORT else le,))


def _cryptogram_do_size(n: int, block: int) -> int:
    """Encoded size of DO'87' carrying ``n`` plain bytes (indicator byte + method-2 padded cryptogram)."""
    body = 1 + (n // block + 1) * block
    return 1 + len(_encode_length(body)) + body


# ------------------------------------------------------------------------------------------------- state


class SmState:
    """One secure-messaging session: suite, session keys and the send sequence counter.

    The same class serves both ends. The host calls :meth:`wrap_command` then :meth:`unwrap_response`; the card
    :meth:`unwrap_command` then :meth:`wrap_response`. Each call increments the SSC first. Any failure closes
    the state: every later call raises :class:`SmClosedError`. Keys never appear in ``repr`` or errors.
    """

    __slots__ = ("_closed", "_k_enc", "_k_mac", "_last_ins", "_ssc", "suite")

    def __init__(self, suite: SmSuite, k_enc: bytes, k_mac: bytes, ssc: int) -> None:
        if not isinstance(suite, SmSuite):
            raise CryptoError(f"suite must be an SmSuite, got {type(suite).__name__}")
        check_key(suite.alg, k_enc)
        check_key(suite.alg, k_mac)
        if suite is SmSuite.DES3_RETAIL and len(k_mac) != 16:
            # ISO/IEC 9797-1 MAC algorithm 3 takes K1‖K2 (ICAO 9303-11 §9.8.5.2).
            raise KeyError_(f"retail-MAC key must be 16 bytes, got {len(k_mac)}")
        if not isinstance(ssc, int) or isinstance(ssc, bool) or not 0 <= ssc < 1 << (8 * suite.ssc_length):
            raise CryptoError(f"SSC must be an integer of at most {suite.ssc_length} bytes")
        self.suite = suite
        self._k_enc = bytes(k_enc)
        self._k_mac = bytes(k_mac)
        self._ssc = ssc
        self._closed = False
        self._last_ins: int | None = None

    # ------------------------------------------------------------------ status
    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SmState({self.suite.name}, ssc={self.ssc_bytes.hex().upper()}, {state})"

    @property
    def ssc(self) -> int:
        return self._ssc

    @property
    def ssc_bytes(self) -> bytes:
        return self._ssc.to_bytes(self.suite.ssc_length, "big")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End the session: the keys are dropped and every later call raises :class:`SmClosedError`."""
        if not self._closed:
            log.debug("secure messaging session closed (%s, ssc %s)", self.suite.name, self.ssc_bytes.hex())
        self._closed = True
        self._k_enc = b""
        self._k_mac = b""

    def _fail(self, exc: SmError) -> SmError:
        log.warning("secure messaging failure, channel closed: %s", exc)
        self.close()
        return exc

    def _check_open(self) -> None:
        if self._closed:
            raise SmClosedError("secure channel is closed")

    def _next_ssc(self) -> bytes:
        if self._ssc + 1 >= 1 << (8 * self.suite.ssc_length):
            self.close()
            raise SmError("send sequence counter exhausted")
        self._ssc += 1
        return self.ssc_bytes

    # ------------------------------------------------------------------ primitives
    def _iv(self, ssc: bytes) -> bytes | None:
        if self.suite is SmSuite.DES3_RETAIL:
            return None  # ICAO 9303-11 §9.8.5.1: IV = 00..00
        return ecb_encrypt(self.suite.alg, self._k_enc, ssc)  # ICAO 9303-11 §9.8.6.1: IV = E(KS_Enc, SSC)

    def _mac(self, data: bytes) -> bytes:
        if self.suite is SmSuite.DES3_RETAIL:
            return retail_mac(self._k_mac, data)  # pads with method 2 itself (ICAO 9303-11 §9.8.5.2)
        # ICAO 9303-11 §9.8.6.2: CMAC over the method-2 padded data, truncated to 8 bytes.
        return cmac(self.suite.alg, self._k_mac, pad_m2(data, self.suite.block))[:MAC_LENGTH]

    def _encrypt(self, ssc: bytes, plain: bytes) -> bytes:
        return cbc_encrypt(self.suite.alg, self._k_enc, pad_m2(plain, self.suite.block), self._iv(ssc))

    def _decrypt(self, ssc: bytes, cryptogram: bytes) -> bytes:
        bs = self.suite.block
        if not cryptogram or len(cryptogram) % bs:
            raise SmError(f"cryptogram of {len(cryptogram)} bytes is not a whole number of {bs}-byte blocks")
        plain = cbc_decrypt(self.suite.alg, self._k_enc, cryptogram, self._iv(ssc))
        try:
            return unpad_m2(plain, bs)
        except CardkitError as exc:
            raise SmError("bad padding in the decrypted SM data") from exc

    def _verify_mac(self, data: bytes, mac: bytes) -> None:
        if len(mac) != MAC_LENGTH:
            raise SmError(f"DO'8E' holds {len(mac)} bytes, expected {MAC_LENGTH}")
        if not hmac.compare_digest(self._mac(data), mac):
            raise SmError("MAC verification failed")

    def _data_do(self, ins: int, ssc: bytes, plain: bytes) -> bytes:
        cryptogram = self._encrypt(ssc, plain)
        if ins & 1:
            return _do(TAG_CRYPTOGRAM, cryptogram)  # ISO 7816-4 §10.2: odd INS, BER-TLV data
        return _do(TAG_CRYPTOGRAM_PI, bytes((_PI_METHOD2,)) + cryptogram)

    def _open_data_do(self, tag: int, value: bytes, ssc: bytes) -> bytes:
        if tag == TAG_CRYPTOGRAM_PI:
            if not value or value[0] != _PI_METHOD2:
                raise SmError("DO'87' padding-content indicator is not 01")
            value = value[1:]
        return self._decrypt(ssc, value)

    def _padded_header(self, cla: int, command: CommandApdu) -> bytes:
        return pad_m2(bytes((cla, command.ins, command.p1, command.p2)), self.suite.block)

    # ------------------------------------------------------------------ host side
    def wrap_command(self, command: CommandApdu) -> CommandApdu:
        """Protect a plain command (host side). Increments the SSC."""
        self._check_open()
        if command.cla & _CLA_FURTHER_MASK == _CLA_FURTHER:
            raise SmCommandError(f"CLA {command.cla:02X}: SM in the further interindustry class is not supported")
        if command.cla & _CLA_SM:
            raise SmCommandError(f"CLA {command.cla:02X} already announces secure messaging")
        bs = self.suite.block
        data_size = _cryptogram_do_size(len(command.data), bs) if command.data else 0
        # Lc <= 65535 (ISO 7816-4:2020 §5.1): data DO + DO'97' (at most 4) + DO'8E' (2 + 8).
        if data_size + 4 + 2 + MAC_LENGTH > 0xFFFF:
            raise SmCommandError(f"{len(command.data)} bytes of command data do not fit a protected APDU")
        ssc = self._next_ssc()
        cla = command.cla | _CLA_SM
        dos = self._data_do(command.ins, ssc, command.data) if command.data else b""
        if command.le is not None:
            dos += _do(TAG_LE, _le_value(command.le, command.extended))
        mac = self._mac(ssc + self._padded_header(cla, command) + dos)
        body = dos + _do(TAG_MAC, mac)
        self._last_ins = command.ins
        # The protected response: DO'87' for Le bytes (if any), DO'99' (4) and DO'8E' (10).
        expected = (_cryptogram_do_size(command.le, bs) if command.le else 0) + 4 + 2 + MAC_LENGTH
        extended = command.extended or len(body) > 0xFF or expected > LE_MAX_SHORT
        return CommandApdu(
            cla, command.ins, command.p1, command.p2, body,
            le=LE_MAX_EXTENDED if extended else LE_MAX_SHORT,
            extended=command.extended, name=command.name, sensitive=command.sensitive,
        )

    def unwrap_response(self, response: ResponseApdu) -> ResponseApdu:
        """Check and decrypt a protected response (host side). Increments the SSC.

        A response with no data and an error status word (e.g. 6987/6988: the card found an SM error) is
        returned as it is, and the channel is closed: the card has dropped its session keys
        (ICAO 9303-11 §9.8.2).
        """
        self._check_open()
        if not response.data and not response.ok:
            log.warning("card answered %04X without secure messaging; channel closed", response.sw)
            self.close()
            return response
        try:
            ssc = self._next_ssc()
            dos = _parse_dos(response.data)
            cryptogram, status, mac_at = self._split_response(dos)
            self._verify_mac(ssc + response.data[:mac_at], dos[-1][1])
            if status != bytes((response.sw1, response.sw2)):
                # The MAC-protected DO'99' is authoritative; the trailer is not covered by the MAC.
                log.debug("trailer %04X differs from DO'99' %s", response.sw, status.hex().upper())
            data = self._open_data_do(cryptogram[0], cryptogram[1], ssc) if cryptogram else b""
        except SmError as exc:
            raise self._fail(exc) from None
        return ResponseApdu(data, status[0], status[1])

    @staticmethod
    def _split_response(dos: list[tuple[int, bytes, int, int]]) -> tuple[tuple[int, bytes] | None, bytes, int]:
        tags = [t for t, _, _, _ in dos]
        if not dos or tags[-1] != TAG_MAC:
            raise SmError("protected response has no DO'8E' at its end", sw=SW_SM_MISSING)
        if TAG_STATUS not in tags:
            raise SmError("protected response has no DO'99'", sw=SW_SM_MISSING)
        # ICAO 9303-11 §9.8.4: [DO'87'|DO'85'] DO'99' DO'8E', in this order, each once.
        if tags not in ([TAG_STATUS, TAG_MAC], [TAG_CRYPTOGRAM_PI, TAG_STATUS, TAG_MAC],
                        [TAG_CRYPTOGRAM, TAG_STATUS, TAG_MAC]):
            raise SmError("unexpected SM data objects in the response: " + " ".join(f"{t:02X}" for t in tags))
        status = dos[-2][1]
        if len(status) != 2:
            raise SmError(f"DO'99' holds {len(status)} bytes, expected 2")
        cryptogram = (dos[0][0], dos[0][1]) if len(dos) == 3 else None
        return cryptogram, status, dos[-1][2]

    # ------------------------------------------------------------------ card side
    def unwrap_command(self, command: CommandApdu) -> CommandApdu:
        """Check and decrypt a protected command (card side). Increments the SSC.

        Raises :class:`SmError` (``sw`` 6987 or 6988, which the card answers without SM) and closes the state.
        """
        self._check_open()
        try:
            if not is_protected(command):
                raise SmError(f"CLA {command.cla:02X} does not announce secure messaging", sw=SW_SM_MISSING)
            ssc = self._next_ssc()
            dos = _parse_dos(command.data)
            tags = [t for t, _, _, _ in dos]
            if not dos or tags[-1] != TAG_MAC:
                raise SmError("protected command has no DO'8E' at its end", sw=SW_SM_MISSING)
            allowed = ([TAG_MAC], [TAG_LE, TAG_MAC], [TAG_CRYPTOGRAM_PI, TAG_MAC], [TAG_CRYPTOGRAM, TAG_MAC],
                       [TAG_CRYPTOGRAM_PI, TAG_LE, TAG_MAC], [TAG_CRYPTOGRAM, TAG_LE, TAG_MAC])
            if tags not in allowed:
                raise SmError("unexpected SM data objects in the command: " + " ".join(f"{t:02X}" for t in tags))
            mac_at = dos[-1][2]
            self._verify_mac(ssc + self._padded_header(command.cla, command) + command.data[:mac_at], dos[-1][1])
            data, le, extended = b"", None, False
            for tag, value, _, _ in dos[:-1]:
                if tag == TAG_LE:
                    if len(value) not in (1, 2):
                        raise SmError(f"DO'97' holds {len(value)} bytes, expected 1 or 2")
                    extended = len(value) == 2
                    le = int.from_bytes(value, "big") or (LE_MAX_EXTENDED if extended else LE_MAX_SHORT)
                else:
                    data = self._open_data_do(tag, value, ssc)
                    if not data:
                        raise SmError("protected command carries an empty cryptogram")
                    if len(data) > 0xFFFF:
                        raise SmError(f"{len(data)} bytes of command data exceed 65535")
        except SmError as exc:
            raise self._fail(exc) from None
        self._last_ins = command.ins
        return CommandApdu(command.cla & ~_CLA_SM & 0xFF, command.ins, command.p1, command.p2, data, le=le,
                           extended=extended, name=command.name)

    def wrap_response(self, response: ResponseApdu) -> ResponseApdu:
        """Protect a plain response (card side). Increments the SSC.

        Response data goes into DO'85' when the command INS was odd, DO'87' otherwise (ISO 7816-4 §10.2).
        """
        self._check_open()
        ssc = self._next_ssc()
        ins = self._last_ins or 0
        dos = self._data_do(ins, ssc, response.data) if response.data else b""
        dos += _do(TAG_STATUS, bytes((response.sw1, response.sw2)))
        return ResponseApdu(dos + _do(TAG_MAC, self._mac(ssc + dos)), response.sw1, response.sw2)


class IsoSmChannel:
    """The host side of ISO 7816-4 secure messaging as a :class:`~cardkit.session.Processor`.

    Push it on a :class:`~cardkit.session.CardSession`; every command is protected and every response checked.
    After a failure the channel stays closed (:class:`SmClosedError`), like the card's.
    """

    def __init__(self, state: SmState) -> None:
        self.state = state

    @property
    def closed(self) -> bool:
        return self.state.closed

    def close(self) -> None:
        self.state.close()

    def process(self, command: CommandApdu, send: Send) -> ResponseApdu:
        protected = self.state.wrap_command(command)
        return self.state.unwrap_response(send(protected))

