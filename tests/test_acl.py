"""Access rules: text syntax, evaluation, expanded (AB) and compact (8C) security attributes.

No published test vector exists for these encodings that we could cite, so the byte-level expectations below
are written out by hand from ISO/IEC 7816-4:2020 §7.4.3 (AM byte bits, SC DO tags, usage qualifiers) and
everything else is tested by round trips and properties.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.acl import (
    ALWAYS,
    DF_OPS,
    EF_OPS,
    NEVER,
    AccessRules,
    AclError,
    And,
    Issuer,
    Key,
    Op,
    Or,
    Pin,
    Rule,
    Sm,
    decode_compact,
    decode_expanded,
    encode_compact,
    encode_expanded,
    parse_rule,
)

# ------------------------------------------------------------------------------------------ strategies

atoms = st.one_of(
    st.just(ALWAYS), st.just(NEVER), st.just(Sm()), st.just(Issuer()),
    st.builds(Pin, st.integers(0, 255)), st.builds(Key, st.integers(0, 255)),
)


def _combine(children: st.SearchStrategy[Rule]) -> st.SearchStrategy[Rule]:
    lists = st.lists(children, min_size=2, max_size=3)
    return st.one_of(lists.map(lambda rs: And(*rs)), lists.map(lambda rs: Or(*rs)))


rules = st.recursive(atoms, _combine, max_leaves=6)


def _encodable(rule: Rule) -> bool:
    try:
        encode_expanded(AccessRules(read=rule), False)
    except AclError:
        return False
    return True


# ------------------------------------------------------------------------------------------ text


@pytest.mark.parametrize(("text", "rule"), [
    ("always", ALWAYS),
    ("never", NEVER),
    ("pin:01", Pin(1)),
    ("key:02", Key(2)),
    ("KEY:0a", Key(10)),
    ("sm", Sm()),
    ("issuer", Issuer()),
    ("key:02 and sm", And(Key(2), Sm())),
    ("pin:01 or key:03", Or(Pin(1), Key(3))),
    ("pin:01 or key:03 and sm", Or(Pin(1), And(Key(3), Sm()))),  # and binds tighter
    ("(pin:01 or key:03) and sm", And(Or(Pin(1), Key(3)), Sm())),
    ("  pin:1   and ( sm ) ", And(Pin(1), Sm())),
    ("pin:01 and pin:02 and sm", And(Pin(1), Pin(2), Sm())),
])
def test_parse(text: str, rule: Rule) -> None:
    assert parse_rule(text) == rule


@pytest.mark.parametrize("text", ["", "pin", "pin:", "pin:123", "key:zz", "sometimes", "pin:01 and", "(sm",
                                  "sm)", "sm or or sm", "and sm", "pin:01 sm", "sm & pin:01",
                                  "(" * 20 + "sm" + ")" * 20])
def test_parse_errors(text: str) -> None:
    with pytest.raises(AclError):
        parse_rule(text)


def test_text_forms() -> None:
    assert Pin(1).text == "pin:01" and Key(0xAB).text == "key:ab"
    assert And(Or(Pin(1), Key(3)), Sm()).text == "(pin:01 or key:03) and sm"
    assert Or(And(Pin(1), Sm()), Key(2)).text == "pin:01 and sm or key:02"
    assert And(And(Pin(1), Pin(2)), Sm()) == And(Pin(1), Pin(2), Sm())  # flattened
    with pytest.raises(AclError):
        And(Pin(1))
    with pytest.raises(AclError):
        Pin(256)
    with pytest.raises(AclError):
        And(Pin(1), "sm")  # type: ignore[arg-type]


@given(rules)
def test_text_round_trip(rule: Rule) -> None:
    assert parse_rule(rule.text) == rule
    assert hash(parse_rule(rule.text)) == hash(rule)


# ------------------------------------------------------------------------------------------ evaluation


@dataclass
class Ctx:
    pins: frozenset[int] = frozenset()
    keys: frozenset[int] = frozenset()
    sm: bool = False
    issuer: bool = False

    def pin_verified(self, ref: int) -> bool:
        return ref in self.pins

    def key_authenticated(self, ref: int) -> bool:
        return ref in self.keys


def test_evaluation() -> None:
    rule = parse_rule("(pin:01 or key:03) and sm")
    assert not rule.is_met(Ctx())
    assert not rule.is_met(Ctx(pins=frozenset({1})))
    assert rule.is_met(Ctx(pins=frozenset({1}), sm=True))
    assert rule.is_met(Ctx(keys=frozenset({3}), sm=True))
    assert not rule.is_met(Ctx(keys=frozenset({2}), sm=True))
    assert ALWAYS.is_met(Ctx()) and not NEVER.is_met(Ctx(sm=True, issuer=True))
    assert not Issuer().is_met(Ctx(issuer=True))  # the issuer channel must also protect this command
    assert Issuer().is_met(Ctx(issuer=True, sm=True))


# ------------------------------------------------------------------------------------------ AccessRules


def test_access_rules_mapping() -> None:
    r = AccessRules({"read": "always", "update": "pin:01"}, create_ef="issuer")
    assert r["read"] is ALWAYS and r[Op.UPDATE] == Pin(1) and r.rule("create-ef") == Issuer()
    assert r.rule("delete") is NEVER  # missing = denied
    assert len(r) == 3 and set(r) == {Op.READ, Op.UPDATE, Op.CREATE_EF}
    assert r == AccessRules.from_text(r.to_text()) and hash(r) == hash(AccessRules.from_text(r.to_text()))
    assert r.merged({"read": "never"})["read"] is NEVER and r["read"] is ALWAYS
    with pytest.raises(AttributeError):
        r.x = 1  # type: ignore[attr-defined]
    with pytest.raises(AclError):
        AccessRules(readd="always")


# ------------------------------------------------------------------------------------------ expanded


def test_expanded_bytes_by_hand() -> None:
    rules = AccessRules(read="always", update="pin:01", erase="pin:01", delete="never")
    # read: AM 01 + 90 00; update/erase (b2): AM 02 + A4{83 01 01, 95 01 08}; delete (b7): AM 40 + 97 00
    expected = bytes.fromhex("AB 15 8001 01 9000 8001 02 A406 830101 950108 8001 40 9700")
    assert encode_expanded(rules, is_df=False) == expected
    assert decode_expanded(expected, is_df=False) == rules
    same = AccessRules(read="always", update="sm", write="sm", append="sm")
    # one AM byte for every bit that shares a rule: b2|b3 = 06 with B4{95 01 30}
    assert encode_expanded(same, False) == bytes.fromhex("AB 0D 8001 01 9000 8001 06 B403 950130")


def test_expanded_issuer_and_templates() -> None:
    enc = encode_expanded(AccessRules(create_ef="issuer"), True)
    assert enc == bytes.fromhex("AB 12 8001 02 AF0D A406 830100 950180 B403 950130")
    assert decode_expanded(enc, True)["create-ef"] == Issuer()
    with pytest.raises(AclError):  # would decode as issuer
        encode_expanded(AccessRules(create_ef=And(Key(0), Sm())), True)
    enc = encode_expanded(AccessRules(read="pin:01 or key:02"), False)
    assert enc == bytes.fromhex("AB 15 8001 01 A010 A406 830101 950108 A406 830102 950180")


def test_expanded_shared_bits_and_kinds() -> None:
    with pytest.raises(AclError):
        encode_expanded(AccessRules(update="always", erase="never"), False)
    with pytest.raises(AclError):
        encode_expanded(AccessRules(read="always"), True)  # no read bit for a DF
    with pytest.raises(AclError):
        encode_expanded(AccessRules(create_ef="always"), False)
    with pytest.raises(AclError):
        encode_expanded(AccessRules(use="always"), False)
    assert decode_expanded(encode_expanded(AccessRules(write="sm"), False), False) == AccessRules(write="sm",
                                                                                                 append="sm")


def test_expanded_decoding_or_of_several_sc_dos_and_errors() -> None:
    data = bytes.fromhex("8001 01 A406 830101 950108 B403 950130")  # two SC DOs after one AM: either
    assert decode_expanded(data, False)["read"] == Or(Pin(1), Sm())
    for bad in ["AB03 800101", "AB04 9000 9000", "AB05 8001 81 9000", "AB06 800201 01 9000",
                "AB08 8001 01 A403 950108", "AB0B 8001 01 A406 830101 950140", "AB07 8001 01 B403 950120",
                "AB05 8001 01 9E00", "AB05 8001 01 9001", "AB04 8001 01", "8001 01 AF00", "AB"]:
        with pytest.raises(AclError):
            decode_expanded(bytes.fromhex(bad), False)


@given(rules)
def test_expanded_round_trip(rule: Rule) -> None:
    if not _encodable(rule):
        return
    for op in ("read", "update", "delete"):
        ar = AccessRules({op: rule})
        got = decode_expanded(encode_expanded(ar, False), False)
        assert got[op] == rule
    ar = AccessRules(create_df=rule, deactivate=ALWAYS)
    assert decode_expanded(encode_expanded(ar, True), True) == ar


@settings(max_examples=300)
@given(st.binary(max_size=40), st.booleans())
def test_decoders_raise_only_acl_error(data: bytes, is_df: bool) -> None:
    for fn in (decode_expanded, decode_compact):
        try:
            result = fn(data, is_df)
        except AclError:
            continue
        assert isinstance(result, AccessRules)
        assert set(result) <= (DF_OPS if is_df else EF_OPS)


# ------------------------------------------------------------------------------------------ compact


def test_compact_by_hand() -> None:
    # AM 43 = b7 delete, b2 update, b1 read; SC bytes follow b7, b2, b1:
    # FF never; 90|01 = all of {user auth} in SE 1 -> pin; 00 always
    data = bytes.fromhex("8C 04 43 FF 11 00")
    rules = decode_compact(data, False)
    assert rules["delete"] is NEVER and rules["read"] is ALWAYS
    assert rules["update"] == Pin(1) and rules["erase"] == Pin(1)
    assert decode_compact(data[2:], False) == rules  # without tag and length
    both = decode_compact(bytes.fromhex("02 E2"), True)  # create EF: SM and external authentication, SE 2
    assert both["create-ef"] == And(Sm(), Key(2))
    either = decode_compact(bytes.fromhex("02 62"), True)
    assert either["create-ef"] == Or(Sm(), Key(2))
    assert encode_compact(rules, False) == data


@pytest.mark.parametrize("bad", ["", "80", "03 00", "01 0F", "01 80", "8C0101"])
def test_compact_errors(bad: str) -> None:
    with pytest.raises(AclError):
        decode_compact(bytes.fromhex(bad), False)


def test_compact_encoding_limits() -> None:
    with pytest.raises(AclError):
        encode_compact(AccessRules(read="issuer"), False)
    with pytest.raises(AclError):
        encode_compact(AccessRules(read="pin:01 and key:02"), False)  # two SE numbers
    with pytest.raises(AclError):
        encode_compact(AccessRules(read="pin:0f"), False)  # SE F is reserved
    r = AccessRules(read="sm and key:03", update="pin:03 or sm")
    assert decode_compact(encode_compact(r, False), False) == AccessRules(
        read=And(Sm(), Key(3)), update=Or(Sm(), Pin(3)), erase=Or(Sm(), Pin(3)))
