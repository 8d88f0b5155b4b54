"""The virtual card's security: every access rule met and not met, PINs, PUKs, keys, PUT KEY, SM hook."""

from __future__ import annotations

import pytest
from test_virtual_fs import KEY, OPEN, OPEN_DF, SERIAL, blank, connect, open_issuer, select, sw, test_mutual_auth

from cardkit.acl import AccessRules
from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg, ecb_encrypt
from cardkit.session import CardSession
from cardkit.sm.iso import IsoSmChannel, SmError, SmState, SmSuite
from cardkit.sw import AuthenticationBlocked, InvalidPin, SecurityStatusNotSatisfied, SmDataObjectsIncorrect
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual import CorruptingCard, KeyUsage, VirtualCard, VirtualCardError

PIN = b"1234"
PUK = b"87654321"
EXT_KEY = bytes(range(16))
DES_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
SM4_KEY = bytes(range(0x20, 0x30))

RULES = {
    0x4001: "always",
    0x4002: "never",
    0x4003: "pin:01",
    0x4004: "key:02",
    0x4005: "sm",
    0x4006: "issuer",
    0x4007: "pin:01 and sm",
    0x4008: "pin:01 or key:02",
}


def secured_card() -> VirtualCard:
    """DF 4000 with one EF per rule (read = the rule), PIN 01 (+PUK), key 02 (external auth, AES)."""
    card = blank()
    df = card.mf.add_df(0x4000, name=b"\xa0\x00\x00\x00\x40", rules=OPEN_DF)
    for fid, rule in RULES.items():
        df.add_ef(fid, size=4, rules=AccessRules(read=rule, update=rule), data=b"data")
    df.set_pin(1, PIN, max_tries=3)
    df.set_pin(1, PUK, max_tries=2, puk=True)
    df.set_key(2, Alg.AES, KeyUsage.EXTERNAL_AUTH, EXT_KEY, max_tries=3)
    df.add_df(0x4100, rules=OPEN_DF).add_ef(0x4101, size=2, rules=AccessRules(read="pin:01"), data=b"ok")
    card.mf.add_df(0x4200, rules=OPEN_DF).add_ef(0x4201, size=2, rules=AccessRules(read="pin:01"), data=b"no")
    return card


def to_df(s: CardSession) -> None:
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x40\x00"))


def can_read(s: CardSession, fid: int) -> bool:
    s.send(CommandApdu(0x00, 0xA4, 0x02, 0x0C, fid.to_bytes(2, "big")))
    r = s.transmit(CommandApdu(0x00, 0xB0, 0, 0, le=256))
    assert r.sw in (0x9000, 0x6982), hex(r.sw)
    return r.sw == 0x9000


def ext_auth(s: CardSession, key: bytes = EXT_KEY, ref: int = 0x82, alg: Alg = Alg.AES, n: int = 8) -> int:
    challenge = s.send(CommandApdu(0x00, 0x84, 0, 0, le=n)).data
    padded = challenge + bytes(-len(challenge) % (8 if alg is Alg.DES3 else 16))
    return sw(s, CommandApdu(0x00, 0x82, 0x00, ref, ecb_encrypt(alg, key, padded)))


def verify(s: CardSession, pin: bytes = PIN, p2: int = 0x81) -> int:
    return sw(s, CommandApdu(0x00, 0x20, 0x00, p2, pin))


# ------------------------------------------------------------------------------------------ access rules


def test_every_rule_with_nothing_done() -> None:
    s = connect(secured_card())
    to_df(s)
    got = {fid: can_read(s, fid) for fid in RULES}
    assert got == {0x4001: True, 0x4002: False, 0x4003: False, 0x4004: False, 0x4005: False, 0x4006: False,
                   0x4007: False, 0x4008: False}


def test_pin_rule_and_or() -> None:
    s = connect(secured_card())
    to_df(s)
    assert verify(s) == 0x9000
    got = {fid: can_read(s, fid) for fid in RULES}
    assert got == {0x4001: True, 0x4002: False, 0x4003: True, 0x4004: False, 0x4005: False, 0x4006: False,
                   0x4007: False, 0x4008: True}


def test_key_rule() -> None:
    s = connect(secured_card())
    to_df(s)
    assert ext_auth(s) == 0x9000
    got = {fid: can_read(s, fid) for fid in RULES}
    assert got == {0x4001: True, 0x4002: False, 0x4003: False, 0x4004: True, 0x4005: False, 0x4006: False,
                   0x4007: False, 0x4008: True}


def test_sm_issuer_and_pin_with_sm() -> None:
    s = connect(secured_card())
    open_issuer(s)  # MF key 00 mutual authentication: SM session with the issuer grant
    to_df(s)
    got = {fid: can_read(s, fid) for fid in RULES}
    assert got == {0x4001: True, 0x4002: False, 0x4003: False, 0x4004: False, 0x4005: True, 0x4006: True,
                   0x4007: False, 0x4008: False}
    assert verify(s) == 0x9000  # VERIFY under SM
    assert can_read(s, 0x4007)


def test_sm_session_from_a_non_issuer_key_is_not_issuer() -> None:
    card = secured_card()
    card.mf.child(0x4000).set_key(3, Alg.AES, KeyUsage.SM, EXT_KEY)  # type: ignore[union-attr]
    s = connect(card)
    to_df(s)
    open_issuer(s, key=EXT_KEY, p2=0x83)
    assert can_read(s, 0x4005) and not can_read(s, 0x4006)


def test_plain_command_during_sm_does_not_count_as_sm() -> None:
    card = secured_card()
    s = connect(card)
    channel = open_issuer(s)
    to_df(s)
    assert can_read(s, 0x4005)
    s.remove(channel)  # the session stays open on the card but this command arrives in clear
    assert sw(s, CommandApdu(0x00, 0xB0, 0, 0, le=4)) == 0x6982


def test_pin_scope_follows_the_current_df() -> None:
    s = connect(secured_card())
    to_df(s)
    assert verify(s) == 0x9000
    s.send(CommandApdu(0x00, 0xA4, 0x01, 0x0C, b"\x41\x00"))  # into a child DF: still valid
    assert can_read(s, 0x4101)
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x42\x00"))  # out of 4000: reset
    assert not can_read(s, 0x4201)
    to_df(s)
    assert not can_read(s, 0x4003)
    assert verify(s, b"") == 0x63C3  # not verified any more, 3 tries left


# ------------------------------------------------------------------------------------------ PINs


def test_verify_counts_blocks_and_unblocks() -> None:
    card = secured_card()
    s = connect(card)
    to_df(s)
    assert verify(s, b"0000") == 0x63C2
    assert verify(s, b"") == 0x63C2  # empty VERIFY: the counter, nothing used
    assert verify(s, PIN) == 0x9000
    assert verify(s, b"") == 0x9000  # verified
    assert verify(s, b"0000") == 0x63C2  # a wrong PIN also clears the verified state
    assert not can_read(s, 0x4003)
    assert verify(s, b"0000") == 0x63C1
    s.reset(cold=True)  # counters live in EEPROM
    to_df(s)
    assert verify(s, b"") == 0x63C1
    assert verify(s, b"9999") == 0x63C0
    assert verify(s, PIN) == 0x6983  # blocked, even with the right PIN
    assert verify(s, b"") == 0x6983
    with pytest.raises(AuthenticationBlocked):
        s.send(CommandApdu(0x00, 0x20, 0x00, 0x81, PIN))
    # RESET RETRY COUNTER with the PUK only (P1 01)
    assert sw(s, CommandApdu(0x00, 0x2C, 0x01, 0x81, b"00000000")) == 0x63C1
    assert sw(s, CommandApdu(0x00, 0x2C, 0x01, 0x81, PUK)) == 0x9000
    assert verify(s, PIN) == 0x9000


def test_verify_errors_and_reset_status() -> None:
    s = connect(secured_card())
    to_df(s)
    assert verify(s, PIN, p2=0x85) == 0x6A88  # no PIN 05
    assert verify(s, PIN, p2=0x01) == 0x6A88  # global PIN 01: the MF has none
    assert verify(s, PIN, p2=0xC1) == 0x6A86
    assert sw(s, CommandApdu(0x00, 0x20, 0x01, 0x81, PIN)) == 0x6A86
    assert verify(s) == 0x9000
    assert sw(s, CommandApdu(0x00, 0x20, 0xFF, 0x81)) == 0x9000  # P1 FF: reset the verification status
    assert verify(s, b"") == 0x63C3
    with pytest.raises(InvalidPin) as info:
        s.send(CommandApdu(0x00, 0x20, 0x00, 0x81, b"0000"))
    assert info.value.attempts_left == 2


def test_pin_use_rule() -> None:
    card = secured_card()
    card.mf.child(0x4000).set_pin(4, b"4444", rules=AccessRules(use="sm"))  # type: ignore[union-attr]
    s = connect(card)
    to_df(s)
    with pytest.raises(SecurityStatusNotSatisfied):
        s.send(CommandApdu(0x00, 0x20, 0x00, 0x84, b"4444"))
    open_issuer(s)
    to_df(s)
    assert verify(s, b"4444", p2=0x84) == 0x9000


def test_change_reference_data() -> None:
    card = secured_card()
    s = connect(card)
    to_df(s)
    assert sw(s, CommandApdu(0x00, 0x24, 0x00, 0x81, b"0000" + b"5678")) == 0x63C2
    assert sw(s, CommandApdu(0x00, 0x24, 0x00, 0x81, PIN + b"56")) == 0x6A80  # new PIN too short
    assert sw(s, CommandApdu(0x00, 0x24, 0x00, 0x81, PIN)) == 0x6700
    assert sw(s, CommandApdu(0x00, 0x24, 0x00, 0x81, PIN + b"5678")) == 0x9000
    assert can_read(s, 0x4003)  # CHANGE verifies
    assert verify(s, PIN) == 0x63C2 and verify(s, b"5678") == 0x9000
    assert sw(s, CommandApdu(0x00, 0x24, 0x01, 0x81, b"0000")) == 0x6982  # new only: issuer
    open_issuer(s)
    to_df(s)
    assert sw(s, CommandApdu(0x00, 0x24, 0x01, 0x81, b"0000")) == 0x9000
    assert verify(s, b"0000") == 0x9000
    assert sw(s, CommandApdu(0x00, 0x24, 0x02, 0x81, b"0000")) == 0x6A86


def test_reset_retry_counter_variants() -> None:
    card = secured_card()
    pin = card.mf.child(0x4000).pins[1]  # type: ignore[union-attr]
    s = connect(card)
    to_df(s)
    for _ in range(3):
        verify(s, b"0000")
    assert pin.blocked
    assert sw(s, CommandApdu(0x00, 0x2C, 0x00, 0x81, PUK + b"2468")) == 0x9000  # PUK + new PIN
    assert pin.tries_left == 3 and verify(s, b"2468") == 0x9000
    assert sw(s, CommandApdu(0x00, 0x2C, 0x00, 0x81, PUK)) == 0x6700
    assert sw(s, CommandApdu(0x00, 0x2C, 0x01, 0x81, PUK + b"x")) == 0x6700
    assert sw(s, CommandApdu(0x00, 0x2C, 0x02, 0x81, b"1111")) == 0x6982  # issuer only
    assert sw(s, CommandApdu(0x00, 0x2C, 0x03, 0x81)) == 0x6982
    assert sw(s, CommandApdu(0x00, 0x2C, 0x04, 0x81)) == 0x6A86
    # the PUK blocks too
    assert sw(s, CommandApdu(0x00, 0x2C, 0x01, 0x81, b"00000000")) == 0x63C1
    assert sw(s, CommandApdu(0x00, 0x2C, 0x01, 0x81, b"00000000")) == 0x63C0
    assert sw(s, CommandApdu(0x00, 0x2C, 0x01, 0x81, PUK)) == 0x6983
    open_issuer(s)
    to_df(s)
    verify(s, b"0000")
    assert sw(s, CommandApdu(0x00, 0x2C, 0x03, 0x81)) == 0x9000  # issuer: reset the counter
    assert pin.tries_left == 3
    assert sw(s, CommandApdu(0x00, 0x2C, 0x02, 0x81, b"13579")) == 0x9000  # issuer: new PIN
    assert verify(s, b"13579") == 0x9000
    assert sw(s, CommandApdu(0x00, 0x2C, 0x03, 0x81, b"1")) == 0x6700
    assert sw(s, CommandApdu(0x00, 0x2C, 0x02, 0x81)) == 0x6700


# ------------------------------------------------------------------------------------------ keys


def test_get_challenge_lengths_and_seed() -> None:
    a, b = connect(blank(seed=42)), connect(blank(seed=42))
    c1 = a.send(CommandApdu(0x00, 0x84, 0, 0, le=8)).data
    assert c1 == b.send(CommandApdu(0x00, 0x84, 0, 0, le=8)).data and len(c1) == 8
    c2 = a.send(CommandApdu(0x00, 0x84, 0, 0, le=16)).data
    assert len(c2) == 16 and c2[:8] != c1
    assert connect(blank(seed=43)).send(CommandApdu(0x00, 0x84, 0, 0, le=8)).data != c1
    assert sw(a, CommandApdu(0x00, 0x84, 0, 0, le=4)) == 0x6700
    assert sw(a, CommandApdu(0x00, 0x84, 0, 0)) == 0x6700
    assert sw(a, CommandApdu(0x00, 0x84, 1, 0, le=8)) == 0x6A86


@pytest.mark.parametrize(("alg", "key", "n"), [(Alg.AES, EXT_KEY, 8), (Alg.AES, EXT_KEY, 16), (Alg.DES3, DES_KEY, 8),
                                               (Alg.SM4, SM4_KEY, 16)])
def test_external_authenticate_algorithms(alg: Alg, key: bytes, n: int) -> None:
    card = secured_card()
    card.mf.child(0x4000).set_key(5, alg, KeyUsage.EXTERNAL_AUTH, key, max_tries=2)  # type: ignore[union-attr]
    s = connect(card)
    to_df(s)
    wrong = bytes(b ^ 0xFF for b in key)
    assert ext_auth(s, wrong, ref=0x85, alg=alg, n=n) == 0x63C1
    assert ext_auth(s, key, ref=0x85, alg=alg, n=n) == 0x9000
    assert card.mf.child(0x4000).keys[5].tries_left == 2  # type: ignore[union-attr]


def test_external_authenticate_failures_and_blocking() -> None:
    card = secured_card()
    s = connect(card)
    to_df(s)
    assert sw(s, CommandApdu(0x00, 0x82, 0x00, 0x82, bytes(16))) == 0x6985  # no challenge
    s.send(CommandApdu(0x00, 0x84, 0, 0, le=8))
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x40\x01"))  # any command in between spends the challenge
    assert sw(s, CommandApdu(0x00, 0x82, 0x00, 0x82, bytes(16))) == 0x6985
    s.send(CommandApdu(0x00, 0x84, 0, 0, le=8))
    assert sw(s, CommandApdu(0x00, 0x82, 0x00, 0x82, bytes(8))) == 0x6700  # AES: one 16-byte block
    s.send(CommandApdu(0x00, 0x84, 0, 0, le=8))
    assert sw(s, CommandApdu(0x00, 0x82, 0x00, 0x89, bytes(16))) == 0x6A88
    assert sw(s, CommandApdu(0x00, 0x82, 0x01, 0x82, bytes(16))) == 0x6A86
    wrong = bytes(16)
    assert [ext_auth(s, wrong) for _ in range(3)] == [0x63C2, 0x63C1, 0x63C0]
    assert ext_auth(s) == 0x6983  # blocked
    assert not can_read(s, 0x4004)


def test_mutual_auth_plug() -> None:
    card = secured_card()
    s = connect(card)
    handler = card.mutual_auth_handler
    card.mutual_auth_handler = None
    s.send(CommandApdu(0x00, 0x84, 0, 0, le=16))
    assert sw(s, CommandApdu(0x00, 0x82, 0x00, 0x00, bytes(16))) == 0x6A81  # no handler installed
    card.mutual_auth_handler = handler
    s.send(CommandApdu(0x00, 0x84, 0, 0, le=16))
    assert sw(s, CommandApdu(0x00, 0x82, 0x00, 0x00, bytes(16))) == 0x6300  # the handler's answer
    assert card.mf.keys[0].tries_left == 9  # a failure costs a try
    open_issuer(s)
    assert card.mf.keys[0].tries_left == 10
    assert card.find_key(0x00) is card.mf.keys[0]
    to_df(s)
    assert card.find_key(0x82).ref == 2  # specific reference: the current DF
    assert card.find_key(0x00).usage is KeyUsage.SM


def test_put_key_needs_sm_and_create_rights() -> None:
    card = secured_card()
    s = connect(card)
    to_df(s)
    blob = bytes([0x01, 0x07, 0x02, 0x01, 0x03]) + EXT_KEY  # AES key 07, external auth, 3 tries
    assert sw(s, CommandApdu(0x80, 0xD8, 0, 0, blob)) == 0x6982  # in clear: refused even with create-ef always
    open_issuer(s)
    to_df(s)
    assert sw(s, CommandApdu(0x80, 0xD8, 0, 0, blob)) == 0x9000
    key = card.mf.child(0x4000).keys[7]  # type: ignore[union-attr]
    assert (key.alg, key.usage, key.max_tries, key.value) == (Alg.AES, KeyUsage.EXTERNAL_AUTH, 3, EXT_KEY)
    assert sw(s, CommandApdu(0x80, 0xD8, 0, 0, bytes([0x02, 0x03, 0, 0, 5]) + b"9876")) == 0x9000
    assert sw(s, CommandApdu(0x80, 0xD8, 0, 0, bytes([0x03, 0x03, 0, 0, 5]) + b"99998888")) == 0x9000
    assert verify(s, b"9876", p2=0x83) == 0x9000
    bad = [
        bytes([0x04, 0x07, 0x02, 0x01, 0x03]) + EXT_KEY,  # object type
        bytes([0x01, 0x20, 0x02, 0x01, 0x03]) + EXT_KEY,  # reference
        bytes([0x01, 0x07, 0x09, 0x01, 0x03]) + EXT_KEY,  # algorithm
        bytes([0x01, 0x07, 0x02, 0x03, 0x03]) + EXT_KEY,  # usage
        bytes([0x01, 0x07, 0x02, 0x01, 0x00]) + EXT_KEY,  # tries
        bytes([0x01, 0x07, 0x03, 0x01, 0x03]) + EXT_KEY[:8],  # SM4 key length
        bytes([0x02, 0x03, 0x02, 0, 5]) + b"9876",  # PIN with an algorithm
        bytes([0x02, 0x03, 0, 0, 5]) + b"98",  # PIN too short
    ]
    for blob in bad:
        assert sw(s, CommandApdu(0x80, 0xD8, 0, 0, blob)) == 0x6A80, blob.hex()
    assert sw(s, CommandApdu(0x80, 0xD8, 0, 0, b"\x01\x07\x02\x01\x03")) == 0x6700
    assert sw(s, CommandApdu(0x80, 0xD8, 1, 0, blob)) == 0x6A86
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C))
    card.mf.rules = AccessRules(create_ef="never")
    assert sw(s, CommandApdu(0x80, 0xD8, 0, 0, bytes([0x01, 0x07, 0x02, 0x01, 0x03]) + EXT_KEY)) == 0x6982


# ------------------------------------------------------------------------------------------ SM hook


def test_sm_failure_answers_6988_and_closes_the_session() -> None:
    card = secured_card()
    corrupt = CorruptingCard(card, direction="command", at=2)
    s = CardSession(VirtualTransport(corrupt))
    open_issuer(s)
    to_df(s)  # first protected command: fine
    with pytest.raises(SmDataObjectsIncorrect):  # second: MAC broken on the way; the card answers 6988 in clear
        s.send(CommandApdu(0x00, 0xA4, 0x02, 0x0C, b"\x40\x05"))
    assert corrupt.corrupted == 1
    assert card.channels[0].security.session is None and not card.channels[0].security.issuer
    assert card.transmit(bytes.fromhex("0CA4000C00")) == b"\x68\x82"  # no session any more


def test_corrupted_response_mac_is_detected_by_the_host() -> None:
    card = secured_card()
    s = CardSession(VirtualTransport(CorruptingCard(card, direction="response", at=1)))
    open_issuer(s)
    with pytest.raises(SmError):
        s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x40\x00"))


def test_issuer_grant_from_an_application_session() -> None:
    """A GP-like application opens a session with the issuer grant through ``SecurityState.open_sm``."""

    class FakeScp:
        def select(self, card: VirtualCard) -> bytes:
            return b"\x6f\x00"

        def process(self, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu | None:
            if apdu.cla == 0x80 and apdu.ins == 0x50:
                card.security.open_sm(SmState(SmSuite.AES_CMAC, KEY, KEY, 0), issuer=True)
                return ResponseApdu.of(0x9000)
            return None

    card = blank()
    card.register_application(b"\xa0\x00\x00\x01\x51", FakeScp())
    s = connect(card)
    s.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, b"\xa0\x00\x00\x01\x51", le=256))
    s.send(CommandApdu(0x80, 0x50, 0, 0))
    s.push(IsoSmChannel(SmState(SmSuite.AES_CMAC, KEY, KEY, 0)))
    s.send(CommandApdu(0x00, 0xE0, 0, 0, _ef_fcp(0x2F10)))
    assert card.mf.child(0x2F10) is not None


def _ef_fcp(fid: int) -> bytes:
    from test_virtual_fs import fcp_ef

    return fcp_ef(fid, rules=OPEN)


def test_transport_key_of_a_blank_card_in_3des() -> None:
    card = VirtualCard.blank(SERIAL, DES_KEY, Alg.DES3)
    card.mutual_auth_handler = test_mutual_auth
    assert card.mf.keys[0].alg is Alg.DES3 and len(card.mf.keys[0].value) == 16
    with pytest.raises(VirtualCardError):  # a wrong key length
        VirtualCard.blank(SERIAL, b"short", Alg.AES)
    select(connect(card), 0x3F00)
