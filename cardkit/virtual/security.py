"""Security objects and the security commands of the virtual card OS.

PINs, PUKs and keys live in the DF that owns them (like EEPROM objects) with retry counters that survive
power cycles. The security *state* (what was verified or authenticated, whether the current command came
under secure messaging, whether an issuer channel is open) lives per logical channel in :class:`SecurityState`
and is lost on power-off.

References (ISO 7816-4:2020 §7.5.1, P2 of VERIFY / EXTERNAL AUTHENTICATE ...): b5-b1 is the reference number
(00..1F); b8 = 0 names a *global* object (the MF's), b8 = 1 a *specific* one (the current DF's — this card then
also looks in the parents, nearest first). b7-b6 must be 0. A PUK unblocks the PIN with the same number in
the same DF.

Commands here: VERIFY (20), CHANGE REFERENCE DATA (24), RESET RETRY COUNTER (2C), GET CHALLENGE (84),
EXTERNAL / MUTUAL AUTHENTICATE (82), and PUT KEY (CLA 80/84, INS D8) — cardkit's proprietary loader:

    data = type (01 key, 02 PIN, 03 PUK) ‖ ref (00..1F) ‖ algorithm (01 3DES, 02 AES, 03 SM4; 00 for PIN/PUK)
           ‖ usage (01 external authentication, 02 SM / mutual authentication; 00 for PIN/PUK)
           ‖ max tries (1..15) ‖ value

It is accepted only when the current DF's ``create-ef`` rule is met **and** the command arrived under secure
messaging (else 6982): key values never travel in clear. A PIN/PUK value is 4..16 bytes.

Retry counters are decremented *before* the comparison (and restored on success), so cutting the power
during a VERIFY never saves a try.

MUTUAL AUTHENTICATE (INS 82 with a key of usage 02) is delegated to ``card.mutual_auth_handler``, a
:class:`MutualAuthHandler` that the ISO SM / BAC code provides: it receives the key object, the last
challenge and the command, and returns an :class:`AuthResult` — the response, whether the key is now
authenticated, and the card-side :class:`SmSession` to open on the channel. Authenticating key 00 of the MF
this way opens an *issuer* channel. Without a handler, INS 82 on such a key answers 6A81.
"""

from __future__ import annotations

import enum
import hmac
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cardkit.acl import AccessRules, Issuer, Rule
from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg, block_size, check_key, ecb_encrypt
from cardkit.errors import CryptoError
from cardkit.virtual.fs import DF, SwError, VirtualCardError

if TYPE_CHECKING:
    from cardkit.virtual.card import Channel, VirtualCard

__all__ = [
    "KEY_ALGS",
    "AuthResult",
    "KeyObject",
    "KeyUsage",
    "MutualAuthHandler",
    "PinObject",
    "SecurityState",
    "SmSession",
    "check_key_params",
    "check_pin_params",
]

log = logging.getLogger(__name__)

# PUT KEY algorithm byte (cardkit proprietary).
KEY_ALGS: dict[int, Alg] = {0x01: Alg.DES3, 0x02: Alg.AES, 0x03: Alg.SM4}
ALG_CODES: dict[Alg, int] = {v: k for k, v in KEY_ALGS.items()}
# PUT KEY object types (cardkit proprietary).
OBJ_KEY, OBJ_PIN, OBJ_PUK = 0x01, 0x02, 0x03
PIN_MIN, PIN_MAX = 4, 16
MAX_TRIES = 15  # ISO 7816-4:2020 §5.6: 63Cx carries the counter in one nibble
MAX_REF = 0x1F  # ISO 7816-4:2020 §7.5.1: b5-b1 of P2


class KeyUsage(enum.IntEnum):
    EXTERNAL_AUTH = 0x01  # one-way EXTERNAL AUTHENTICATE
    SM = 0x02  # MUTUAL AUTHENTICATE and secure messaging


@dataclass(eq=False)
class PinObject:
    """A PIN or PUK stored in a DF. ``repr`` never shows the value."""

    ref: int
    value: bytes = field(repr=False)
    max_tries: int
    tries_left: int
    rules: AccessRules = field(default_factory=lambda: AccessRules(use="always"))

    @property
    def blocked(self) -> bool:
        return self.tries_left <= 0


@dataclass(eq=False)
class KeyObject:
    """A symmetric key stored in a DF. ``repr`` never shows the value."""

    ref: int
    alg: Alg
    usage: KeyUsage
    value: bytes = field(repr=False)
    max_tries: int
    tries_left: int
    rules: AccessRules = field(default_factory=lambda: AccessRules(use="always"))
    #: The DF that holds the key (set when found through :meth:`VirtualCard.find_key`).
    df: DF | None = field(default=None, repr=False, compare=False)

    @property
    def blocked(self) -> bool:
        return self.tries_left <= 0


def check_pin_params(ref: int, value: bytes, max_tries: int) -> None:
    if not 0 <= ref <= MAX_REF:
        raise VirtualCardError(f"PIN reference {ref} outside 0..{MAX_REF}")
    if not PIN_MIN <= len(value) <= PIN_MAX:
        raise VirtualCardError(f"PIN of {len(value)} bytes ({PIN_MIN}..{PIN_MAX})")
    if not 1 <= max_tries <= MAX_TRIES:
        raise VirtualCardError(f"max tries {max_tries} outside 1..{MAX_TRIES}")


def check_key_params(ref: int, alg: object, usage: int, value: bytes, max_tries: int) -> Alg:
    if not isinstance(alg, Alg):
        raise VirtualCardError(f"key algorithm must be a cardkit.crypto.Alg, got {alg!r}")
    if not 0 <= ref <= MAX_REF:
        raise VirtualCardError(f"key reference {ref} outside 0..{MAX_REF}")
    if usage not in (KeyUsage.EXTERNAL_AUTH, KeyUsage.SM):
        raise VirtualCardError(f"key usage {usage} (1 external authentication, 2 SM)")
    if not 1 <= max_tries <= MAX_TRIES:
        raise VirtualCardError(f"max tries {max_tries} outside 1..{MAX_TRIES}")
    try:
        check_key(alg, value)
    except CryptoError as exc:
        raise VirtualCardError(str(exc)) from None
    return alg


# ------------------------------------------------------------------------------------ plug interfaces


class SmSession(Protocol):
    """Card side of a secure-messaging session (e.g. :class:`cardkit.sm.iso.SmState`).

    ``unwrap_command`` raises (any exception) when the command does not verify; an ``sw`` attribute of
    6987 or 6988 on the exception is answered, else 6988. The card then closes the session.
    """

    def unwrap_command(self, command: CommandApdu) -> CommandApdu: ...

    def wrap_response(self, response: ResponseApdu) -> ResponseApdu: ...


@dataclass(frozen=True)
class AuthResult:
    """What a :class:`MutualAuthHandler` decided."""

    response: ResponseApdu
    authenticated: bool
    session: SmSession | None = None


class MutualAuthHandler(Protocol):
    def __call__(self, card: VirtualCard, key: KeyObject, challenge: bytes | None,
                 command: CommandApdu) -> AuthResult: ...


# ------------------------------------------------------------------------------------ security state


@dataclass(frozen=True)
class RuleContext:
    """:class:`cardkit.acl.SecurityContext` for one target DF: its scope is the DF and its parents."""

    state: SecurityState
    scope: tuple[DF, ...]

    def pin_verified(self, ref: int) -> bool:
        return any((d, ref & MAX_REF) in self.state.verified for d in self.scope)

    def key_authenticated(self, ref: int) -> bool:
        return any((d, ref & MAX_REF) in self.state.authenticated for d in self.scope)

    @property
    def sm(self) -> bool:
        return self.state.sm

    @property
    def issuer(self) -> bool:
        return self.state.issuer


class SecurityState:
    """Volatile security status of one logical channel."""

    def __init__(self) -> None:
        self.verified: set[tuple[DF, int]] = set()
        self.authenticated: set[tuple[DF, int]] = set()
        #: True while the command being processed arrived under secure messaging.
        self.sm = False
        self.session: SmSession | None = None
        #: True while an issuer channel (GP secure channel, MF key 00 mutual authentication) is open.
        self.issuer = False
        self.challenge: bytes | None = None

    def context(self, df: DF) -> RuleContext:
        return RuleContext(self, (df, *df.ancestors()))

    def allows(self, rule: Rule, df: DF) -> bool:
        return rule.is_met(self.context(df))

    def require(self, rule: Rule, df: DF, what: str) -> None:
        """Raise SwError 6982 unless ``rule`` is met for files of ``df``."""
        if not rule.is_met(self.context(df)):
            raise SwError(0x6982, f"{what} needs {rule.text}")

    def on_select(self, df: DF) -> None:
        """Drop what was verified or authenticated in DFs the new current DF is not inside of."""
        scope = {df, *df.ancestors()}
        self.verified = {e for e in self.verified if e[0] in scope}
        self.authenticated = {e for e in self.authenticated if e[0] in scope}

    def open_sm(self, session: SmSession, *, issuer: bool = False) -> None:
        """Open a secure-messaging session on this channel (``issuer`` grants the issuer condition)."""
        self.session = session
        self.issuer = issuer

    def close_sm(self) -> None:
        self.session = None
        self.issuer = False

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


# ------------------------------------------------------------------------------------ lookups


def _resolve(df: DF, p2: int) -> tuple[int, list[DF]]:
    """(reference number, DFs to search) for P2 (ISO 7816-4:2020 §7.5.1)."""
    if p2 & 0x60:
        raise SwError(0x6A86, f"P2 {p2:02X}: b7-b6 must be 0")
    chain = [df, *df.ancestors()] if p2 & 0x80 else [df.root()]
    return p2 & MAX_REF, chain


def find_pin(df: DF, p2: int, puk: bool = False) -> tuple[DF, PinObject]:
    ref, chain = _resolve(df, p2)
    for d in chain:
        obj = (d.puks if puk else d.pins).get(ref)
        if obj is not None:
            return d, obj
    raise SwError(0x6A88, f"{'PUK' if puk else 'PIN'} {ref:02X} not found")


def find_key(df: DF, p2: int) -> tuple[DF, KeyObject]:
    ref, chain = _resolve(df, p2)
    for d in chain:
        obj = d.keys.get(ref)
        if obj is not None:
            obj.df = d
            return d, obj
    raise SwError(0x6A88, f"key {ref:02X} not found")


def _tries_sw(obj: PinObject | KeyObject) -> int:
    return 0x63C0 | max(obj.tries_left, 0)


class _Secret(Protocol):
    tries_left: int

    @property
    def value(self) -> bytes: ...

    @property
    def max_tries(self) -> int: ...

    @property
    def blocked(self) -> bool: ...


def _check_secret(card: VirtualCard, obj: _Secret, candidate: bytes) -> bool:
    """Decrement first (anti-tearing), compare in constant time, restore on success."""
    if obj.blocked:
        raise SwError(0x6983, "reference data blocked")

    def dec() -> None:
        obj.tries_left -= 1

    card.eeprom.commit(dec, 1, must=True)
    if hmac.compare_digest(candidate, obj.value):
        def restore() -> None:
            obj.tries_left = obj.max_tries

        card.eeprom.commit(restore, 1)
        return True
    return False


def _ok(data: bytes = b"") -> ResponseApdu:
    return ResponseApdu.of(0x9000, data)


# ------------------------------------------------------------------------------------ commands


def cmd_verify(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """VERIFY (ISO 7816-4:2020 §11.5.6): P1 00 verify, P1 FF reset the verification status."""
    if apdu.p1 not in (0x00, 0xFF):
        raise SwError(0x6A86)
    df, pin = find_pin(ch.current_df, apdu.p2)
    st = ch.security
    if apdu.p1 == 0xFF:
        if apdu.data:
            raise SwError(0x6700)
        st.verified.discard((df, pin.ref))
        return _ok()
    st.require(pin.rules.rule("use"), df, "PIN use")
    if not apdu.data:
        if pin.blocked:
            raise SwError(0x6983)
        return _ok() if (df, pin.ref) in st.verified else ResponseApdu.of(_tries_sw(pin))
    if _check_secret(card, pin, apdu.data):
        st.verified.add((df, pin.ref))
        return _ok()
    st.verified.discard((df, pin.ref))
    return ResponseApdu.of(_tries_sw(pin))


def _check_new_pin(value: bytes) -> None:
    if not PIN_MIN <= len(value) <= PIN_MAX:
        raise SwError(0x6A80, f"new reference data of {len(value)} bytes ({PIN_MIN}..{PIN_MAX})")


def cmd_change_reference_data(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """CHANGE REFERENCE DATA (ISO 7816-4:2020 §11.5.7): P1 00 old ‖ new; P1 01 new only (issuer)."""
    if apdu.p1 not in (0x00, 0x01):
        raise SwError(0x6A86)
    df, pin = find_pin(ch.current_df, apdu.p2)
    st = ch.security
    st.require(pin.rules.rule("use"), df, "PIN use")
    if apdu.p1 == 0x01:
        st.require(Issuer(), df, "CHANGE REFERENCE DATA without the old value")
        if pin.blocked:
            raise SwError(0x6983)
        new = apdu.data
    else:
        n = len(pin.value)
        if len(apdu.data) <= n:
            raise SwError(0x6700, "data must hold the current and the new reference data")
        old, new = apdu.data[:n], apdu.data[n:]
        _check_new_pin(new)
        if not _check_secret(card, pin, old):
            st.verified.discard((df, pin.ref))
            return ResponseApdu.of(_tries_sw(pin))
    _check_new_pin(new)

    def store() -> None:
        pin.value = bytes(new)

    card.eeprom.commit(store, len(new))
    st.verified.add((df, pin.ref))
    return _ok()


def cmd_reset_retry_counter(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """RESET RETRY COUNTER (ISO 7816-4:2020 §11.5.10).

    P1 00 PUK ‖ new PIN; 01 PUK only; 02 new PIN only (issuer); 03 nothing (issuer).
    """
    if apdu.p1 not in (0x00, 0x01, 0x02, 0x03):
        raise SwError(0x6A86)
    df, pin = find_pin(ch.current_df, apdu.p2)
    st = ch.security
    st.require(pin.rules.rule("use"), df, "PIN use")
    new: bytes | None = None
    if apdu.p1 in (0x02, 0x03):
        st.require(Issuer(), df, "RESET RETRY COUNTER without PUK")
        if (apdu.p1 == 0x03) == bool(apdu.data):
            raise SwError(0x6700)
        new = apdu.data or None
    else:
        puk = df.puks.get(pin.ref)
        if puk is None:
            raise SwError(0x6A88, "no PUK for this PIN")
        n = len(puk.value)
        if apdu.p1 == 0x00:
            if len(apdu.data) <= n:
                raise SwError(0x6700)
            new = apdu.data[n:]
            _check_new_pin(new)
        elif len(apdu.data) != n:
            raise SwError(0x6700)
        if not _check_secret(card, puk, apdu.data[:n]):
            return ResponseApdu.of(_tries_sw(puk))
    if new is not None:
        _check_new_pin(new)

    def store() -> None:
        pin.tries_left = pin.max_tries
        if new is not None:
            pin.value = bytes(new)

    card.eeprom.commit(store, 1 + len(new or b""))
    return _ok()


def cmd_get_challenge(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """GET CHALLENGE (ISO 7816-4:2020 §11.5.5): 8 or 16 random bytes, valid for the next command."""
    if apdu.p1 or apdu.p2:
        raise SwError(0x6A86)
    if apdu.data or apdu.le not in (8, 16):
        raise SwError(0x6700, "GET CHALLENGE answers 8 or 16 bytes")
    challenge = card.random_bytes(apdu.le)
    ch.security.challenge = challenge
    return _ok(challenge)


def cmd_authenticate(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """EXTERNAL AUTHENTICATE (one-way, key usage 01) or MUTUAL AUTHENTICATE (usage 02), INS 82.

    External: data = ECB(key, challenge zero-padded to the cipher block) (ISO 7816-4:2020 §11.5.4).
    """
    challenge = ch.security.challenge
    ch.security.challenge = None
    if apdu.p1 != 0x00:
        raise SwError(0x6A86, "algorithm reference must be 00 (implicit)")
    df, key = find_key(ch.current_df, apdu.p2)
    st = ch.security
    st.require(key.rules.rule("use"), df, "key use")
    if key.blocked:
        raise SwError(0x6983)
    if key.usage is KeyUsage.SM:
        return _mutual(card, ch, apdu, df, key, challenge)
    if challenge is None:
        raise SwError(0x6985, "no challenge: GET CHALLENGE first")
    bs = block_size(key.alg)
    padded = challenge + bytes(-len(challenge) % bs)
    if len(apdu.data) != len(padded):
        raise SwError(0x6700, f"cryptogram must be {len(padded)} bytes")
    expected = ecb_encrypt(key.alg, key.value, padded)
    if _check_secret(card, _KeyAsSecret(key, expected), apdu.data):
        st.authenticated.add((df, key.ref))
        return _ok()
    return ResponseApdu.of(_tries_sw(key))


class _KeyAsSecret:
    """Adapter: compare against the expected cryptogram while counting on the key object."""

    def __init__(self, key: KeyObject, expected: bytes) -> None:
        self.key = key
        self.value = expected

    @property
    def blocked(self) -> bool:
        return self.key.blocked

    @property
    def tries_left(self) -> int:
        return self.key.tries_left

    @tries_left.setter
    def tries_left(self, v: int) -> None:
        self.key.tries_left = v

    @property
    def max_tries(self) -> int:
        return self.key.max_tries


def _mutual(card: VirtualCard, ch: Channel, apdu: CommandApdu, df: DF, key: KeyObject,
            challenge: bytes | None) -> ResponseApdu:
    handler = card.mutual_auth_handler
    if handler is None:
        raise SwError(0x6A81, "no mutual authentication handler installed")

    def dec() -> None:
        key.tries_left -= 1

    card.eeprom.commit(dec, 1, must=True)
    result = handler(card, key, challenge, apdu)
    st = ch.security
    if not result.authenticated:
        log.info("mutual authentication with key %02X failed", key.ref)
        return result.response if result.response.sw != 0x9000 else ResponseApdu.of(_tries_sw(key))

    def restore() -> None:
        key.tries_left = key.max_tries

    card.eeprom.commit(restore, 1)
    st.authenticated.add((df, key.ref))
    if result.session is not None:
        ch.pending_session = (result.session, df.parent is None and key.ref == 0)
    return result.response


def cmd_put_key(card: VirtualCard, ch: Channel, apdu: CommandApdu) -> ResponseApdu:
    """PUT KEY for ISO DFs (cardkit proprietary, CLA 80/84 INS D8) — see the module docstring."""
    if apdu.p1 or apdu.p2:
        raise SwError(0x6A86)
    df = ch.current_df
    st = ch.security
    if not st.sm:
        raise SwError(0x6982, "PUT KEY only under secure messaging")
    st.require(df.rules.rule("create-ef"), df, "PUT KEY")
    d = apdu.data
    if len(d) < 6:
        raise SwError(0x6700)
    kind, ref, alg_code, usage, tries, value = d[0], d[1], d[2], d[3], d[4], d[5:]
    try:
        if kind == OBJ_KEY:
            alg = KEY_ALGS.get(alg_code)
            if alg is None:
                raise SwError(0x6A80, f"algorithm {alg_code:02X}")
            check_key_params(ref, alg, usage, value, tries)
        elif kind in (OBJ_PIN, OBJ_PUK):
            if alg_code or usage:
                raise SwError(0x6A80, "PIN/PUK take algorithm 00 and usage 00")
            check_pin_params(ref, value, tries)
        else:
            raise SwError(0x6A80, f"object type {kind:02X}")
    except VirtualCardError as exc:
        if isinstance(exc, SwError):
            raise
        raise SwError(0x6A80, str(exc)) from None

    def store() -> None:
        if kind == OBJ_KEY:
            df.set_key(ref, KEY_ALGS[alg_code], usage, value, max_tries=tries)
        else:
            df.set_pin(ref, value, max_tries=tries, puk=kind == OBJ_PUK)

    existing = df.keys if kind == OBJ_KEY else df.puks if kind == OBJ_PUK else df.pins
    if ref not in existing:
        card.check_memory(len(value) + 8)
    card.eeprom.commit(store, len(d))
    log.info("PUT KEY: object type %02X ref %02X stored in %s", kind, ref, df.path)
    return _ok()
