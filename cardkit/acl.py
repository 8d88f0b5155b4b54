"""Access rules as values: what a card demands before it runs an operation on a file, PIN or key.

A :class:`Rule` is an expression over security conditions:

* ``ALWAYS`` / ``NEVER``;
* ``Pin(ref)`` — the PIN with reference ``ref`` was verified in the file's DF or one of its parents;
* ``Key(ref)`` — an authentication with key ``ref`` (EXTERNAL or MUTUAL AUTHENTICATE) was done in the file's
  DF or one of its parents;
* ``Sm()`` — the command arrived under secure messaging;
* ``Issuer()`` — an issuer secure channel is open: a GlobalPlatform secure channel, or the MF key 00 mutually
  authenticated, *and* the command arrived under that channel's secure messaging;
* ``And(...)`` / ``Or(...)`` of the above.

Text syntax (profiles): ``always``, ``never``, ``pin:01``, ``key:02``, ``sm``, ``issuer``, combined with ``and``
(binds tighter) and ``or`` and parentheses: ``"key:02 and sm"``, ``"(pin:01 or key:03) and sm"``.
References are hexadecimal bytes. ``parse_rule(rule.text) == rule`` for every rule.

:class:`AccessRules` maps operations (:class:`Op`) to rules. An operation that is not in the mapping is
**denied** (``AccessRules.rule(op)`` returns ``NEVER``).

Encodings (ISO/IEC 7816-4:2020 §7.4.3 security attributes):

* EXPANDED format, tag ``AB`` (§7.4.3.3): a sequence of access rules, each an access-mode data object (AM DO,
  tag ``80`` holding the AM byte) followed by one security-condition data object (SC DO). The SC DOs used:

  ==================  ==================================================================================
  rule                SC DO
  ==================  ==================================================================================
  always              ``90 00``
  never               ``97 00``
  pin:NN              ``A4 06 83 01 NN 95 01 08`` (authentication CRT, usage qualifier 08 = user
                      verification, knowledge based — ISO 7816-4:2020 Table 55 b4)
  key:NN              ``A4 06 83 01 NN 95 01 80`` (usage qualifier 80 = external authentication, Table 55 b8)
  sm                  ``B4 03 95 01 30`` (cryptographic checksum CRT, usage qualifier 30 = SM for the
                      command and the response, Table 55 b6-b5)
  a and b ...         ``AF`` (SC DO AND template) holding the SC DOs of the operands
  a or b ...          ``A0`` (SC DO OR template) holding the SC DOs of the operands
  issuer              ``AF { A4 {83 01 00, 95 01 80}, B4 {95 01 30} }`` — key 00 of the MF authenticated and
                      secure messaging. This is cardkit's mapping: key reference 00 is reserved for the
                      card's issuer (transport) key, so ``key:00 and sm`` is *written* ``issuer`` and
                      encoding it literally raises :class:`AclError`; decoding yields ``Issuer()``.
  ==================  ==================================================================================

  Several SC DOs after one AM DO are alternatives (OR) when decoding, as ISO 7816-4 defines.
  AM byte bits (§7.4.3.3, b8 = 0): for an EF b1 read/search, b2 update/erase, b3 write/append, b4 deactivate,
  b5 activate, b6 terminate, b7 delete; for a DF b1 delete child, b2 create EF, b3 create DF, b4 deactivate,
  b5 activate, b6 terminate, b7 delete (self). Operations sharing a bit (update/erase, write/append) must
  have the same rule; when only one of the pair is given it covers both.

* COMPACT format, tag ``8C`` (§7.4.3.2): an AM byte followed by one security-condition byte per bit set, from
  b7 down to b1. SC byte: ``00`` always, ``FF`` never; otherwise b8 = all conditions (AND) / at least one
  (OR), b7 secure messaging, b6 external authentication, b5 user authentication (PIN), b4-b1 the security
  environment number. The compact form names a security *environment*, not a key or PIN: decoding maps
  "external authentication in SE n" to ``Key(n)`` and "user authentication in SE n" to ``Pin(n)``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from cardkit.errors import ParseError, TlvError
from cardkit.tlv import Tlv, ber_decode, ber_encode

__all__ = [
    "ALWAYS",
    "DF_OPS",
    "EF_OPS",
    "NEVER",
    "AccessRules",
    "AclError",
    "Always",
    "And",
    "Issuer",
    "Key",
    "Never",
    "Op",
    "Or",
    "Pin",
    "Rule",
    "SecurityContext",
    "Sm",
    "decode_compact",
    "decode_expanded",
    "encode_compact",
    "encode_expanded",
    "parse_rule",
]


class AclError(ParseError):
    """An access rule that cannot be parsed, encoded or decoded."""


class Op(enum.StrEnum):
    """Operations an access rule can govern (ISO 7816-4:2020 §7.4.3.3 AM byte, plus ``use`` for PINs/keys)."""

    READ = "read"
    UPDATE = "update"
    WRITE = "write"
    APPEND = "append"
    ERASE = "erase"
    DEACTIVATE = "deactivate"
    ACTIVATE = "activate"
    TERMINATE = "terminate"
    DELETE = "delete"
    CREATE_EF = "create-ef"
    CREATE_DF = "create-df"
    DELETE_CHILD = "delete-child"
    USE = "use"


# ISO 7816-4:2020 §7.4.3.3 (access mode byte for EFs): bit -> operations.
_EF_AM: tuple[tuple[int, tuple[Op, ...]], ...] = (
    (0x01, (Op.READ,)),  # b1 read binary / read record / search
    (0x02, (Op.UPDATE, Op.ERASE)),  # b2 update / erase
    (0x04, (Op.WRITE, Op.APPEND)),  # b3 write / append
    (0x08, (Op.DEACTIVATE,)),  # b4
    (0x10, (Op.ACTIVATE,)),  # b5
    (0x20, (Op.TERMINATE,)),  # b6
    (0x40, (Op.DELETE,)),  # b7 delete file (self)
)
# ISO 7816-4:2020 §7.4.3.3 (access mode byte for DFs).
_DF_AM: tuple[tuple[int, tuple[Op, ...]], ...] = (
    (0x01, (Op.DELETE_CHILD,)),  # b1 delete file (child)
    (0x02, (Op.CREATE_EF,)),  # b2 create file (EF)
    (0x04, (Op.CREATE_DF,)),  # b3 create file (DF)
    (0x08, (Op.DEACTIVATE,)),  # b4
    (0x10, (Op.ACTIVATE,)),  # b5
    (0x20, (Op.TERMINATE,)),  # b6
    (0x40, (Op.DELETE,)),  # b7 delete file (self)
)
EF_OPS: frozenset[Op] = frozenset(op for _, ops in _EF_AM for op in ops)
DF_OPS: frozenset[Op] = frozenset(op for _, ops in _DF_AM for op in ops)

# ISO 7816-4:2020 §7.4.3.3 (SC DO tags) and §10.3 (control reference templates).
_TAG_AM = 0x80  # access mode byte
_TAG_ALWAYS = 0x90
_TAG_NEVER = 0x97
_TAG_AT = 0xA4  # authentication CRT
_TAG_CCT = 0xB4  # cryptographic checksum CRT
_TAG_OR = 0xA0
_TAG_AND = 0xAF
_TAG_KEYREF = 0x83  # reference of a secret key / PIN (ISO 7816-4:2020 §10.3.1 Table 54)
_TAG_UQ = 0x95  # usage qualifier byte (Table 55)
_UQ_PIN = 0x08  # b4: user authentication, knowledge based
_UQ_EXTAUTH = 0x80  # b8: external authentication (AT)
_UQ_SM = 0x30  # b6-b5: SM response and SM command (CCT)
# ISO 7816-4:2020 §7.4.3.3: SC DOs the expanded format may carry (others are refused when decoding).
_SC_TAGS = frozenset({_TAG_ALWAYS, _TAG_NEVER, _TAG_AT, _TAG_CCT, _TAG_OR, _TAG_AND})
# ISO 7816-4:2020 §7.4.3.2 (compact format, security condition byte).
_SC_ALWAYS = 0x00
_SC_NEVER = 0xFF
_SC_ALL = 0x80  # b8: all conditions (AND); 0 = at least one (OR)
_SC_SM = 0x40  # b7
_SC_EXTAUTH = 0x20  # b6
_SC_USER = 0x10  # b5
_SC_SE_MASK = 0x0F  # b4-b1: security environment number (0 = none, F = RFU)
_MAX_DEPTH = 8


class SecurityContext(Protocol):
    """What a rule is evaluated against: the security status for one target file (its DF scope)."""

    def pin_verified(self, ref: int) -> bool: ...

    def key_authenticated(self, ref: int) -> bool: ...

    @property
    def sm(self) -> bool: ...

    @property
    def issuer(self) -> bool: ...


class Rule:
    """Base of the rule expressions. Rules are immutable, hashable and compare by value."""

    __slots__ = ()

    @property
    def text(self) -> str:
        raise NotImplementedError

    def is_met(self, ctx: SecurityContext) -> bool:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True, repr=False)
class Always(Rule):
    @property
    def text(self) -> str:
        return "always"

    def is_met(self, ctx: SecurityContext) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALWAYS"


@dataclass(frozen=True, slots=True, repr=False)
class Never(Rule):
    @property
    def text(self) -> str:
        return "never"

    def is_met(self, ctx: SecurityContext) -> bool:
        return False

    def __repr__(self) -> str:
        return "NEVER"


ALWAYS = Always()
NEVER = Never()


def _check_ref(kind: str, ref: object) -> None:
    if not isinstance(ref, int) or isinstance(ref, bool) or not 0 <= ref <= 0xFF:
        raise AclError(f"{kind} reference must be a byte 00..FF, got {ref!r}")


@dataclass(frozen=True, slots=True)
class Pin(Rule):
    """The PIN ``ref`` was verified (in the file's DF or a parent)."""

    ref: int

    def __post_init__(self) -> None:
        _check_ref("PIN", self.ref)

    @property
    def text(self) -> str:
        return f"pin:{self.ref:02x}"

    def is_met(self, ctx: SecurityContext) -> bool:
        return ctx.pin_verified(self.ref)


@dataclass(frozen=True, slots=True)
class Key(Rule):
    """Authentication with key ``ref`` was done (in the file's DF or a parent)."""

    ref: int

    def __post_init__(self) -> None:
        _check_ref("key", self.ref)

    @property
    def text(self) -> str:
        return f"key:{self.ref:02x}"

    def is_met(self, ctx: SecurityContext) -> bool:
        return ctx.key_authenticated(self.ref)


@dataclass(frozen=True, slots=True)
class Sm(Rule):
    """The command arrived under secure messaging."""

    @property
    def text(self) -> str:
        return "sm"

    def is_met(self, ctx: SecurityContext) -> bool:
        return ctx.sm


@dataclass(frozen=True, slots=True)
class Issuer(Rule):
    """An issuer secure channel is open and the command arrived under it."""

    @property
    def text(self) -> str:
        return "issuer"

    def is_met(self, ctx: SecurityContext) -> bool:
        return ctx.issuer and ctx.sm


def _flatten(cls: type, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    out: list[Rule] = []
    for r in rules:
        if not isinstance(r, Rule):
            raise AclError(f"{cls.__name__} takes rules, got {type(r).__name__}")
        out.extend(r.rules if isinstance(r, cls) else (r,))  # type: ignore[attr-defined]
    if len(out) < 2:
        raise AclError(f"{cls.__name__} needs at least two rules, got {len(out)}")
    return tuple(out)


@dataclass(frozen=True, slots=True, init=False)
class And(Rule):
    """Every operand is met. Nested ANDs are flattened."""

    rules: tuple[Rule, ...]

    def __init__(self, *rules: Rule) -> None:
        object.__setattr__(self, "rules", _flatten(And, rules))

    @property
    def text(self) -> str:
        return " and ".join(f"({r.text})" if isinstance(r, Or) else r.text for r in self.rules)

    def is_met(self, ctx: SecurityContext) -> bool:
        return all(r.is_met(ctx) for r in self.rules)


@dataclass(frozen=True, slots=True, init=False)
class Or(Rule):
    """At least one operand is met. Nested ORs are flattened."""

    rules: tuple[Rule, ...]

    def __init__(self, *rules: Rule) -> None:
        object.__setattr__(self, "rules", _flatten(Or, rules))

    @property
    def text(self) -> str:
        return " or ".join(r.text for r in self.rules)

    def is_met(self, ctx: SecurityContext) -> bool:
        return any(r.is_met(ctx) for r in self.rules)


# ------------------------------------------------------------------------------------------ text


_TOKEN = re.compile(r"\s*(?:(\()|(\))|([A-Za-z][A-Za-z0-9_-]*(?::[0-9A-Fa-f]{1,2})?))")


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise AclError(f"unexpected character {text[pos:pos + 1]!r} in access rule", offset=pos)
        out.append(m.group(1) or m.group(2) or m.group(3).lower())
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise AclError("access rule ends too early")
        self.i += 1
        return tok

    def parse_or(self) -> Rule:
        parts = [self.parse_and()]
        while self.peek() == "or":
            self.i += 1
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Or(*parts)

    def parse_and(self) -> Rule:
        parts = [self.parse_atom()]
        while self.peek() == "and":
            self.i += 1
            parts.append(self.parse_atom())
        return parts[0] if len(parts) == 1 else And(*parts)

    def parse_atom(self) -> Rule:
        tok = self.take()
        if tok == "(":
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise AclError(f"access rule nested deeper than {_MAX_DEPTH} levels")
            inner = self.parse_or()
            if self.take() != ")":
                raise AclError("missing ')' in access rule")
            self.depth -= 1
            return inner
        simple: dict[str, Rule] = {"always": ALWAYS, "never": NEVER, "sm": Sm(), "issuer": Issuer()}
        if tok in simple:
            return simple[tok]
        kind, _, ref = tok.partition(":")
        if kind in ("pin", "key") and ref:
            n = int(ref, 16)
            return Pin(n) if kind == "pin" else Key(n)
        raise AclError(f"unknown access condition {tok!r} (always, never, pin:NN, key:NN, sm, issuer)")


def parse_rule(text: str) -> Rule:
    """Parse the profile syntax (``"pin:01 or key:03"``, ``"(pin:01 or key:03) and sm"``)."""
    if not isinstance(text, str):
        raise AclError(f"access rule must be text, got {type(text).__name__}")
    p = _Parser(text)
    if not p.tokens:
        raise AclError("empty access rule")
    rule = p.parse_or()
    if p.peek() is not None:
        raise AclError(f"unexpected {p.peek()!r} after the end of the access rule")
    return rule


def _as_rule(value: Rule | str) -> Rule:
    return value if isinstance(value, Rule) else parse_rule(value)


def _as_op(value: Op | str) -> Op:
    try:
        return Op(value.replace("_", "-") if isinstance(value, str) and not isinstance(value, Op) else value)
    except ValueError:
        raise AclError(f"unknown operation {value!r}; expected one of {', '.join(o.value for o in Op)}") from None


class AccessRules(Mapping[Op, Rule]):
    """An immutable mapping operation -> rule. Missing operations are denied (:meth:`rule` gives ``NEVER``).

    ``AccessRules({"read": "always", "update": "pin:01"})`` or ``AccessRules(read=ALWAYS, create_ef="issuer")``.
    """

    __slots__ = ("_items",)
    _items: dict[Op, Rule]

    def __init__(self, rules: Mapping[Op, Rule | str] | Mapping[str, Rule | str] | None = None,
                 /, **kw: Rule | str) -> None:
        items: dict[Op, Rule] = {}
        for k, v in list((rules or {}).items()) + list(kw.items()):
            items[_as_op(k)] = _as_rule(v)
        object.__setattr__(self, "_items", dict(sorted(items.items(), key=lambda kv: list(Op).index(kv[0]))))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("AccessRules is immutable")

    def __getitem__(self, op: Op | str) -> Rule:
        return self._items[_as_op(op)]

    def __iter__(self) -> Iterator[Op]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AccessRules):
            return self._items == other._items
        return NotImplemented

    def __repr__(self) -> str:
        body = ", ".join(f"{op.value!r}: {r.text!r}" for op, r in self._items.items())
        return f"AccessRules({{{body}}})"

    def rule(self, op: Op | str) -> Rule:
        """The rule for ``op``; ``NEVER`` when the mapping does not name it."""
        return self._items.get(_as_op(op), NEVER)

    def to_text(self) -> dict[str, str]:
        """``{"read": "always", ...}`` (profile / JSON form)."""
        return {op.value: r.text for op, r in self._items.items()}

    @classmethod
    def from_text(cls, mapping: Mapping[str, str]) -> AccessRules:
        return cls(mapping)

    def merged(self, other: Mapping[Op, Rule] | Mapping[str, Rule | str]) -> AccessRules:
        """A copy with the rules of ``other`` added or replaced."""
        items: dict[Op, Rule] = dict(self._items)
        for k, v in other.items():
            items[_as_op(k)] = _as_rule(v)
        return AccessRules(items)


# ------------------------------------------------------------------------------------ expanded form


def _at(ref: int, uq: int) -> bytes:
    return ber_encode(_TAG_AT, ber_encode(_TAG_KEYREF, bytes((ref,))) + ber_encode(_TAG_UQ, bytes((uq,))))


_SM_DO = ber_encode(_TAG_CCT, ber_encode(_TAG_UQ, bytes((_UQ_SM,))))
_ISSUER_DO = ber_encode(_TAG_AND, _at(0, _UQ_EXTAUTH) + _SM_DO)


def _encode_sc(rule: Rule) -> bytes:
    if isinstance(rule, Always):
        return ber_encode(_TAG_ALWAYS, b"")
    if isinstance(rule, Never):
        return ber_encode(_TAG_NEVER, b"")
    if isinstance(rule, Pin):
        return _at(rule.ref, _UQ_PIN)
    if isinstance(rule, Key):
        return _at(rule.ref, _UQ_EXTAUTH)
    if isinstance(rule, Sm):
        return _SM_DO
    if isinstance(rule, Issuer):
        return _ISSUER_DO
    if isinstance(rule, And):
        body = b"".join(_encode_sc(r) for r in rule.rules)
        if body == _ISSUER_DO[2:]:
            raise AclError("'key:00 and sm' has the expanded encoding of 'issuer'; write 'issuer'")
        return ber_encode(_TAG_AND, body)
    if isinstance(rule, Or):
        return ber_encode(_TAG_OR, b"".join(_encode_sc(r) for r in rule.rules))
    raise AclError(f"cannot encode {rule!r}")


def _am_table(is_df: bool) -> tuple[tuple[int, tuple[Op, ...]], ...]:
    return _DF_AM if is_df else _EF_AM


def _bit_rules(rules: Mapping[Op, Rule], is_df: bool) -> list[tuple[int, Rule]]:
    """(AM bit, rule) for every bit the rules cover; checks shared bits and unknown operations."""
    table = _am_table(is_df)
    allowed = DF_OPS if is_df else EF_OPS
    extra = [op.value for op in rules if op not in allowed]
    if extra:
        kind = "DF" if is_df else "EF"
        raise AclError(f"operations {', '.join(extra)} have no access-mode bit for a {kind}")
    out: list[tuple[int, Rule]] = []
    for bit, ops in table:
        given = [(op, rules[op]) for op in ops if op in rules]
        if not given:
            continue
        if len({r for _, r in given}) > 1:
            names = "/".join(op.value for op, _ in given)
            raise AclError(f"{names} share one access-mode bit but have different rules")
        out.append((bit, given[0][1]))
    return out


def encode_expanded(rules: Mapping[Op, Rule], is_df: bool) -> bytes:
    """The security attribute in expanded format: ``AB L (80 01 AM, SC DO)...`` (ISO 7816-4:2020 §7.4.3.3)."""
    groups: dict[Rule, int] = {}
    for bit, rule in _bit_rules(rules, is_df):
        groups[rule] = groups.get(rule, 0) | bit
    body = b"".join(ber_encode(_TAG_AM, bytes((am,))) + _encode_sc(rule) for rule, am in groups.items())
    return ber_encode(0xAB, body)


def _decode_sc(obj: Tlv, depth: int = 0) -> Rule:
    if depth > _MAX_DEPTH:
        raise AclError(f"SC DO templates nested deeper than {_MAX_DEPTH} levels")
    tag = obj.tag
    if tag in (_TAG_ALWAYS, _TAG_NEVER):
        if obj.value:
            raise AclError(f"SC DO {tag:02X} must be empty")
        return ALWAYS if tag == _TAG_ALWAYS else NEVER
    if tag in (_TAG_AT, _TAG_CCT):
        fields: dict[int, bytes] = {}
        for child in obj.children:
            if child.tag in fields or child.tag not in (_TAG_KEYREF, _TAG_UQ) or len(child.value) != 1:
                raise AclError(f"unsupported data object {child.tag:02X} in CRT {tag:02X}")
            fields[child.tag] = child.value
        uq = fields.get(_TAG_UQ, b"\x00")[0]
        if tag == _TAG_CCT:
            if _TAG_KEYREF in fields or uq != _UQ_SM:
                raise AclError(f"CCT with usage qualifier {uq:02X}: only SM (30) without key reference is supported")
            return Sm()
        if _TAG_KEYREF not in fields:
            raise AclError("authentication CRT without key reference (83)")
        ref = fields[_TAG_KEYREF][0]
        if uq == _UQ_PIN:
            return Pin(ref)
        if uq == _UQ_EXTAUTH:
            return Key(ref)
        raise AclError(f"authentication CRT usage qualifier {uq:02X} is not supported (08 PIN, 80 key)")
    if tag in (_TAG_AND, _TAG_OR):
        if obj.value == _ISSUER_DO[2:] and tag == _TAG_AND:
            return Issuer()
        parts = [_decode_sc(c, depth + 1) for c in obj.children]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            raise AclError(f"empty SC DO template {tag:02X}")
        return And(*parts) if tag == _TAG_AND else Or(*parts)
    raise AclError(f"unsupported security condition data object {tag:02X}")


def decode_expanded(data: bytes, is_df: bool) -> AccessRules:
    """Decode an expanded security attribute (with or without the ``AB`` tag and length)."""
    try:
        objs = ber_decode(data)
        if len(objs) == 1 and objs[0].tag == 0xAB:
            objs = list(objs[0].children)
        items: dict[Op, Rule] = {}
        table = _am_table(is_df)
        i = 0
        while i < len(objs):
            am_obj = objs[i]
            if am_obj.tag != _TAG_AM:
                raise AclError(f"expected an AM DO (80), found {am_obj.tag:02X}")
            if len(am_obj.value) != 1:
                raise AclError(f"AM DO of {len(am_obj.value)} bytes: only the one-byte AM byte is supported")
            am = am_obj.value[0]
            if am & 0x80:
                raise AclError(f"AM byte {am:02X} with b8 set (command-based) is not supported")
            i += 1
            scs: list[Rule] = []
            while i < len(objs) and objs[i].tag in _SC_TAGS:
                scs.append(_decode_sc(objs[i]))
                i += 1
            if not scs:
                raise AclError(f"AM byte {am:02X} is not followed by a security condition")
            rule = scs[0] if len(scs) == 1 else Or(*scs)
            for bit, ops in table:
                if am & bit:
                    for op in ops:
                        if op in items and items[op] != rule:
                            raise AclError(f"operation {op.value} has two different rules")
                        items[op] = rule
        return AccessRules(items)
    except TlvError as exc:
        raise AclError(f"security attribute is not BER-TLV: {exc}", offset=exc.offset) from None


# ------------------------------------------------------------------------------------- compact form


def _compact_sc(rule: Rule) -> int:
    if isinstance(rule, Always):
        return _SC_ALWAYS
    if isinstance(rule, Never):
        return _SC_NEVER
    atoms = rule.rules if isinstance(rule, And | Or) else (rule,)
    sc = _SC_ALL if isinstance(rule, And) else 0
    se: set[int] = set()
    for a in atoms:
        if isinstance(a, Sm):
            sc |= _SC_SM
        elif isinstance(a, Key | Pin):
            sc |= _SC_EXTAUTH if isinstance(a, Key) else _SC_USER
            se.add(a.ref)
        else:
            raise AclError(f"{rule.text!r} cannot be written in the compact format")
    if len(se) > 1 or (se and not 1 <= next(iter(se)) <= 0x0E) or len(atoms) != bin(sc & 0x70).count("1"):
        raise AclError(f"{rule.text!r} cannot be written in the compact format (one SE number 1..E)")
    return sc | (next(iter(se)) if se else 0)


def encode_compact(rules: Mapping[Op, Rule], is_df: bool) -> bytes:
    """The security attribute in compact format ``8C L AM SC...`` (ISO 7816-4:2020 §7.4.3.2), when expressible."""
    bits = dict(_bit_rules(rules, is_df))
    am = 0
    scs = bytearray()
    for bit in (0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01):  # SC bytes follow from b7 down to b1
        if bit in bits:
            am |= bit
            scs.append(_compact_sc(bits[bit]))
    return ber_encode(0x8C, bytes((am,)) + bytes(scs))


def _rule_from_sc(sc: int) -> Rule:
    if sc == _SC_ALWAYS:
        return ALWAYS
    if sc == _SC_NEVER:
        return NEVER
    se = sc & _SC_SE_MASK
    if se == 0x0F:
        raise AclError(f"SC byte {sc:02X}: SE number F is reserved")
    atoms: list[Rule] = []
    if sc & _SC_SM:
        atoms.append(Sm())
    if sc & _SC_EXTAUTH:
        atoms.append(Key(se))
    if sc & _SC_USER:
        atoms.append(Pin(se))
    if not atoms:
        raise AclError(f"SC byte {sc:02X} names no condition")
    if len(atoms) == 1:
        return atoms[0]
    return And(*atoms) if sc & _SC_ALL else Or(*atoms)


def decode_compact(data: bytes, is_df: bool) -> AccessRules:
    """Decode a compact security attribute (with or without the ``8C`` tag and length)."""
    raw = bytes(data)
    try:
        objs = ber_decode(raw) if raw[:1] == b"\x8c" else None
    except TlvError:
        objs = None
    if objs is not None and len(objs) == 1:
        raw = objs[0].value
    if not raw:
        raise AclError("empty compact security attribute")
    items: dict[Op, Rule] = {}
    pos = 0
    table = dict(_am_table(is_df))
    while pos < len(raw):
        am = raw[pos]
        if am & 0x80:
            raise AclError(f"AM byte {am:02X} with b8 set (command-based) is not supported", offset=pos)
        pos += 1
        for bit in (0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01):
            if not am & bit:
                continue
            if pos >= len(raw):
                raise AclError(f"AM byte {am:02X} announces more SC bytes than present", offset=pos)
            rule = _rule_from_sc(raw[pos])
            pos += 1
            for op in table[bit]:
                items[op] = rule
    return AccessRules(items)
