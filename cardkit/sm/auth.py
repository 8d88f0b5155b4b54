"""Symmetric mutual authentication (BAC-style) for any SM suite, and one-way external authentication.

Mutual authentication (ICAO Doc 9303-11 §4.3, worked example in Appendix D.3), host = IFD, card = ICC::

    IFD -> ICC  GET CHALLENGE           00 84 00 00 08                      <- RND.ICC (8)
    IFD -> ICC  EXTERNAL AUTHENTICATE   00 82 00 <ref> 28  E_IFD ‖ M_IFD 28 <- E_ICC ‖ M_ICC
        S     = RND.IFD ‖ RND.ICC ‖ K.IFD       E_IFD = CBC(K_Enc, S, IV 0)    M_IFD = MAC(K_MAC, E_IFD)
        R     = RND.ICC ‖ RND.IFD ‖ K.ICC       E_ICC = CBC(K_Enc, R, IV 0)    M_ICC = MAC(K_MAC, E_ICC)
        seed  = K.IFD ⊕ K.ICC                   KS_Enc = KDF(seed, 1)          KS_MAC = KDF(seed, 2)

* :attr:`SmSuite.DES3_RETAIL <cardkit.sm.iso.SmSuite.DES3_RETAIL>` — exactly ICAO BAC: retail MAC over the
  method-2 padded cryptogram, KDF = ICAO 9303-11 §9.7.1 with 3DES parity, SSC = RND.ICC[4:8] ‖ RND.IFD[4:8].
* ``AES_CMAC`` and ``SM4_CMAC`` — **cardkit's variants, modelled on ICAO 9303 but not a published standard**:
  the same message layout (RND 8 bytes, K 16 bytes, CBC with a zero IV), MAC = CMAC over the cryptogram (two
  whole blocks, no padding) truncated to 8 bytes; session keys from the ICAO KDF with SHA-1 (§9.7.1.2,
  ``icao_kdf(seed, 1|2, "aes128")`` — 16 bytes, used as an SM4 key too; for 24/32-byte AES static keys the
  SHA-256 variants "aes192"/"aes256"), and SSC = 0 on 16 bytes as after PACE / Chip Authentication
  (ICAO 9303-11 §9.8.6.3).

External authentication (ISO 7816-4:2020 §11.5.6 GET CHALLENGE, §11.5.4 EXTERNAL AUTHENTICATE): the terminal
encrypts the card's challenge (zero-padded to one block) with the key in ECB mode.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import (
    Alg,
    block_size,
    cbc_decrypt,
    cbc_encrypt,
    check_key,
    cmac,
    ecb_encrypt,
    icao_kdf,
    pad_m1,
    retail_mac,
)
from cardkit.errors import AuthenticationError, CryptoError, KeyError_
from cardkit.sm.iso import SmState, SmSuite
from cardkit.sw import StatusWordError, check

__all__ = [
    "CHALLENGE_LENGTH",
    "KEY_MATERIAL_LENGTH",
    "AuthenticationRefused",
    "MutualAuthResponder",
    "Rng",
    "external_authenticate",
    "mutual_authenticate",
    "session_keys",
    "verify_external_auth",
]

log = logging.getLogger(__name__)

#: A source of random bytes: ``rng(n)`` returns ``n`` bytes.
Rng = Callable[[int], bytes]

#: ICAO 9303-11 §4.3 (Appendix D.3): RND.IFD and RND.ICC are 8 bytes.
CHALLENGE_LENGTH = 8
#: ICAO 9303-11 §4.3 (Appendix D.3): K.IFD and K.ICC are 16 bytes.
KEY_MATERIAL_LENGTH = 16
# ICAO 9303-11 §4.3: E (32 bytes) ‖ M (8 bytes) = 40 = '28'.
_MAC_LENGTH = 8
_CRYPTOGRAM_LENGTH = 2 * CHALLENGE_LENGTH + KEY_MATERIAL_LENGTH
_AUTH_DATA_LENGTH = _CRYPTOGRAM_LENGTH + _MAC_LENGTH

# ISO 7816-4:2020 §11.5.6 GET CHALLENGE, §11.5.4 EXTERNAL AUTHENTICATE (ICAO uses INS 82 for the mutual
# authentication it calls "EXTERNAL AUTHENTICATE"/"MUTUAL AUTHENTICATE").
INS_GET_CHALLENGE = 0x84
INS_EXTERNAL_AUTHENTICATE = 0x82

# ISO 7816-4:2020 §5.6 Table 6.
SW_OK = 0x9000
SW_VERIFICATION_FAILED = 0x6300
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_WRONG_LENGTH = 0x6700
SW_REFERENCED_DATA_NOT_FOUND = 0x6A88
SW_INS_NOT_SUPPORTED = 0x6D00


class AuthenticationRefused(AuthenticationError):
    """Authentication failed with a status word.

    Host side: the card refused the terminal's cryptogram (``sw`` is what it answered: 6300, 6982, 63Cx).
    Card side: the responder rejects the terminal (``sw`` is what the card answers: 6300 cryptogram mismatch,
    6985 no challenge pending, 6700 wrong length).
    """

    def __init__(self, message: str, *, sw: int) -> None:
        self.sw = sw
        super().__init__(f"{message} ({sw:04X})")


# ------------------------------------------------------------------------------------------- primitives


def _default_rng(n: int) -> bytes:
    return secrets.token_bytes(n)


def _check_static_keys(suite: SmSuite, k_enc: bytes, k_mac: bytes) -> None:
    if not isinstance(suite, SmSuite):
        raise CryptoError(f"suite must be an SmSuite, got {type(suite).__name__}")
    check_key(suite.alg, k_enc)
    check_key(suite.alg, k_mac)
    if suite is SmSuite.DES3_RETAIL and len(k_mac) != 16:
        raise KeyError_(f"retail-MAC key must be 16 bytes, got {len(k_mac)}")


def _mac(suite: SmSuite, k_mac: bytes, data: bytes) -> bytes:
    if suite is SmSuite.DES3_RETAIL:
        return retail_mac(k_mac, data)  # ICAO 9303-11 §4.3 / Appendix D.3: MAC alg 3, padding method 2
    return cmac(suite.alg, k_mac, data)[:_MAC_LENGTH]  # cardkit variant: CMAC of the 32-byte cryptogram


def _random(rng: Rng, n: int, what: str) -> bytes:
    out = bytes(rng(n))
    if len(out) != n:
        raise CryptoError(f"random source gave {len(out)} bytes for {what}, expected {n}")
    return out


def _given(value: bytes | None, n: int, what: str, rng: Rng) -> bytes:
    if value is None:
        return _random(rng, n, what)
    value = bytes(value)
    if len(value) != n:
        raise CryptoError(f"{what} must be {n} bytes, got {len(value)}")
    return value


def session_keys(suite: SmSuite, k_ifd: bytes, k_icc: bytes, *, key_length: int = 16) -> tuple[bytes, bytes]:
    """Session keys (KS_Enc, KS_MAC) from K.IFD ⊕ K.ICC with the ICAO 9303-11 §9.7.1 KDF.

    ``key_length`` chooses the AES variant (16 → SHA-1 "aes128", 24/32 → SHA-256); 3DES and SM4 keys are 16.
    """
    if len(k_ifd) != KEY_MATERIAL_LENGTH or len(k_icc) != KEY_MATERIAL_LENGTH:
        raise CryptoError(f"K.IFD and K.ICC must be {KEY_MATERIAL_LENGTH} bytes")
    seed = bytes(a ^ b for a, b in zip(k_ifd, k_icc, strict=True))
    if suite is SmSuite.DES3_RETAIL:
        kdf = "3des"  # ICAO 9303-11 §9.7.1.1: SHA-1, 16 bytes, DES parity adjusted
    elif suite is SmSuite.AES_CMAC:
        # ICAO 9303-11 §9.7.1.2: AES-128 with SHA-1, AES-192/256 with SHA-256.
        kdf = {16: "aes128", 24: "aes192", 32: "aes256"}.get(key_length, "")
        if not kdf:
            raise KeyError_(f"AES session keys are 16, 24 or 32 bytes, not {key_length}")
    else:
        kdf = "aes128"  # cardkit SM4 profile: the same SHA-1 computation, 16 bytes
    return icao_kdf(seed, 1, kdf), icao_kdf(seed, 2, kdf)


def _initial_ssc(suite: SmSuite, rnd_icc: bytes, rnd_ifd: bytes) -> int:
    if suite is SmSuite.DES3_RETAIL:
        # ICAO 9303-11 §9.8.5.3 / Appendix D.3: SSC = 4 least significant bytes of RND.ICC ‖ of RND.IFD.
        return int.from_bytes(rnd_icc[4:8] + rnd_ifd[4:8], "big")
    return 0  # ICAO 9303-11 §9.8.6.3: a 16-byte SSC starting at zero after key establishment


# ------------------------------------------------------------------------------------------------ host


def mutual_authenticate(
    send: Callable[[CommandApdu], ResponseApdu],
    suite: SmSuite,
    k_enc: bytes,
    k_mac: bytes,
    *,
    key_ref: int = 0,
    rnd_ifd: bytes | None = None,
    k_ifd: bytes | None = None,
    rng: Rng | None = None,
) -> SmState:
    """Run the mutual authentication through ``send`` and return the host's secure-messaging state.

    ``rnd_ifd`` (8 bytes) and ``k_ifd`` (16 bytes) are drawn from ``rng`` (default: :mod:`secrets`) unless
    given. ``key_ref`` is P2 of EXTERNAL AUTHENTICATE. Raises :class:`AuthenticationRefused` when the card
    refuses the cryptogram (6300/6982/63Cx), :class:`~cardkit.errors.AuthenticationError` when the card's
    answer does not verify, and the typed :class:`~cardkit.sw.StatusWordError` for any other status word.
    """
    _check_static_keys(suite, k_enc, k_mac)
    if not 0 <= key_ref <= 0xFF:
        raise CryptoError(f"key reference must be a byte, got {key_ref!r}")
    rng = rng or _default_rng
    rnd_ifd = _given(rnd_ifd, CHALLENGE_LENGTH, "RND.IFD", rng)
    k_ifd = _given(k_ifd, KEY_MATERIAL_LENGTH, "K.IFD", rng)

    get_challenge = CommandApdu(0x00, INS_GET_CHALLENGE, 0x00, 0x00, le=CHALLENGE_LENGTH, name="GET CHALLENGE")
    rnd_icc = check(send(get_challenge), get_challenge).data
    if len(rnd_icc) != CHALLENGE_LENGTH:
        raise AuthenticationError(f"card challenge is {len(rnd_icc)} bytes, expected {CHALLENGE_LENGTH}")

    e_ifd = cbc_encrypt(suite.alg, k_enc, rnd_ifd + rnd_icc + k_ifd)
    m_ifd = _mac(suite, k_mac, e_ifd)
    command = CommandApdu(0x00, INS_EXTERNAL_AUTHENTICATE, 0x00, key_ref, e_ifd + m_ifd,
                          le=_AUTH_DATA_LENGTH, name="EXTERNAL AUTHENTICATE", sensitive=True)
    response = send(command)
    try:
        check(response, command)
    except StatusWordError as exc:
        if exc.sw in (SW_VERIFICATION_FAILED, SW_SECURITY_NOT_SATISFIED) or exc.sw & 0xFFF0 == 0x63C0:
            raise AuthenticationRefused("card refused the terminal cryptogram: wrong keys?", sw=exc.sw) from exc
        raise
    data = response.data
    if len(data) != _AUTH_DATA_LENGTH:
        raise AuthenticationError(f"card answered {len(data)} bytes, expected {_AUTH_DATA_LENGTH}")
    e_icc, m_icc = data[:_CRYPTOGRAM_LENGTH], data[_CRYPTOGRAM_LENGTH:]
    # ICAO 9303-11 §4.3: verify the checksum of E_ICC before decrypting it.
    if not hmac.compare_digest(_mac(suite, k_mac, e_icc), m_icc):
        raise AuthenticationError("card MAC over its cryptogram does not verify: wrong keys?")
    r = cbc_decrypt(suite.alg, k_enc, e_icc)
    if not hmac.compare_digest(r[:CHALLENGE_LENGTH], rnd_icc):
        raise AuthenticationError("card cryptogram does not contain the card's own challenge")
    if not hmac.compare_digest(r[CHALLENGE_LENGTH : 2 * CHALLENGE_LENGTH], rnd_ifd):
        raise AuthenticationError("card cryptogram does not echo RND.IFD")
    k_icc = r[2 * CHALLENGE_LENGTH :]
    ks_enc, ks_mac = session_keys(suite, k_ifd, k_icc, key_length=len(k_enc))
    log.debug("mutual authentication done (%s, key reference %02X)", suite.name, key_ref)
    return SmState(suite, ks_enc, ks_mac, _initial_ssc(suite, rnd_icc, rnd_ifd))


# ------------------------------------------------------------------------------------------------ card


class MutualAuthResponder:
    """The card side of :func:`mutual_authenticate` (used by the virtual card).

    :meth:`get_challenge` draws and remembers RND.ICC; :meth:`mutual_authenticate` consumes it (one attempt per
    challenge) and returns the card's answer with the card's :class:`~cardkit.sm.iso.SmState`.
    :meth:`respond` does both from APDUs and maps failures to status words.
    """

    def __init__(self, suite: SmSuite, k_enc: bytes, k_mac: bytes, rng: Rng | None = None, *,
                 key_ref: int = 0) -> None:
        _check_static_keys(suite, k_enc, k_mac)
        self.suite = suite
        self.key_ref = key_ref
        self._k_enc = bytes(k_enc)
        self._k_mac = bytes(k_mac)
        self._rng = rng or _default_rng
        self._challenge: bytes | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.suite.name}, key_ref={self.key_ref:02X})"

    def get_challenge(self) -> bytes:
        """RND.ICC: 8 fresh random bytes, remembered for the next :meth:`mutual_authenticate`."""
        self._challenge = _random(self._rng, CHALLENGE_LENGTH, "RND.ICC")
        return self._challenge

    def mutual_authenticate(self, data: bytes) -> tuple[bytes, SmState]:
        """Check E_IFD ‖ M_IFD; return E_ICC ‖ M_ICC and the card's SM state.

        Raises :class:`AuthenticationRefused` whose ``sw`` the card answers: 6985 without a pending challenge,
        6700 for a wrong length, 6300 when the MAC or the challenge echo does not verify.
        """
        challenge, self._challenge = self._challenge, None
        if challenge is None:
            raise AuthenticationRefused("no challenge pending", sw=SW_CONDITIONS_NOT_SATISFIED)
        data = bytes(data)
        if len(data) != _AUTH_DATA_LENGTH:
            raise AuthenticationRefused(f"authentication data of {len(data)} bytes", sw=SW_WRONG_LENGTH)
        e_ifd, m_ifd = data[:_CRYPTOGRAM_LENGTH], data[_CRYPTOGRAM_LENGTH:]
        if not hmac.compare_digest(_mac(self.suite, self._k_mac, e_ifd), m_ifd):
            raise AuthenticationRefused("terminal MAC does not verify", sw=SW_VERIFICATION_FAILED)
        s = cbc_decrypt(self.suite.alg, self._k_enc, e_ifd)
        rnd_ifd, k_ifd = s[:CHALLENGE_LENGTH], s[2 * CHALLENGE_LENGTH :]
        if not hmac.compare_digest(s[CHALLENGE_LENGTH : 2 * CHALLENGE_LENGTH], challenge):
            raise AuthenticationRefused("terminal cryptogram does not echo RND.ICC", sw=SW_VERIFICATION_FAILED)
        k_icc = _random(self._rng, KEY_MATERIAL_LENGTH, "K.ICC")
        e_icc = cbc_encrypt(self.suite.alg, self._k_enc, challenge + rnd_ifd + k_icc)
        ks_enc, ks_mac = session_keys(self.suite, k_ifd, k_icc, key_length=len(self._k_enc))
        state = SmState(self.suite, ks_enc, ks_mac, _initial_ssc(self.suite, challenge, rnd_ifd))
        return e_icc + _mac(self.suite, self._k_mac, e_icc), state

    def respond(self, command: CommandApdu) -> tuple[ResponseApdu, SmState | None]:
        """Answer GET CHALLENGE or EXTERNAL AUTHENTICATE; the state is set only after a successful one."""
        if command.ins == INS_GET_CHALLENGE:
            if command.le != CHALLENGE_LENGTH or command.data:
                return ResponseApdu.of(SW_WRONG_LENGTH), None
            return ResponseApdu.of(SW_OK, self.get_challenge()), None
        if command.ins == INS_EXTERNAL_AUTHENTICATE:
            if command.p2 != self.key_ref:
                self._challenge = None
                return ResponseApdu.of(SW_REFERENCED_DATA_NOT_FOUND), None
            try:
                answer, state = self.mutual_authenticate(command.data)
            except AuthenticationRefused as exc:
                log.info("mutual authentication refused: %s", exc)
                return ResponseApdu.of(exc.sw), None
            return ResponseApdu.of(SW_OK, answer), state
        return ResponseApdu.of(SW_INS_NOT_SUPPORTED), None


# --------------------------------------------------------------------------------- external authenticate


def _external_cryptogram(alg: Alg, key: bytes, challenge: bytes) -> bytes:
    # Challenge zero-padded to the cipher block (ISO/IEC 9797-1 padding method 1), encrypted in ECB mode.
    return ecb_encrypt(alg, key, pad_m1(challenge, block_size(alg)))


def external_authenticate(send: Callable[[CommandApdu], ResponseApdu], alg: Alg, key: bytes,
                          key_ref: int) -> None:
    """GET CHALLENGE (8) then EXTERNAL AUTHENTICATE ``00 82 00 <key_ref>`` with ECB(key, challenge ‖ 00..).

    Raises the typed :class:`~cardkit.sw.StatusWordError` (via :func:`cardkit.sw.check`) when the card refuses.
    """
    check_key(alg, key)
    if not 0 <= key_ref <= 0xFF:
        raise CryptoError(f"key reference must be a byte, got {key_ref!r}")
    get_challenge = CommandApdu(0x00, INS_GET_CHALLENGE, 0x00, 0x00, le=CHALLENGE_LENGTH, name="GET CHALLENGE")
    challenge = check(send(get_challenge), get_challenge).data
    if len(challenge) != CHALLENGE_LENGTH:
        raise AuthenticationError(f"card challenge is {len(challenge)} bytes, expected {CHALLENGE_LENGTH}")
    command = CommandApdu(0x00, INS_EXTERNAL_AUTHENTICATE, 0x00, key_ref, _external_cryptogram(alg, key, challenge),
                          name="EXTERNAL AUTHENTICATE", sensitive=True)
    check(send(command), command, context={"key reference": f"{key_ref:02X}"})


def verify_external_auth(alg: Alg, key: bytes, challenge: bytes, cryptogram: bytes) -> bool:
    """Card side of :func:`external_authenticate`: does ``cryptogram`` = ECB(key, challenge ‖ 00..)?"""
    challenge, cryptogram = bytes(challenge), bytes(cryptogram)
    if not challenge:
        return False
    expected = _external_cryptogram(alg, key, challenge)
    return len(cryptogram) == len(expected) and hmac.compare_digest(expected, cryptogram)
