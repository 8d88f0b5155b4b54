"""SCP03 (GPCS v2.3 Amendment D): published transcripts, host against card, misuse."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg, aes_cmac, cbc_encrypt, ecb_encrypt, scp03_kdf
from cardkit.errors import AuthenticationError, CardkitError, KeyError_, SecureChannelError
from cardkit.sm.gp import (
    VALID_LEVELS,
    GpKeySet,
    InitializeUpdateError,
    SecurityLevel,
    SecurityLevelError,
    check_level,
    clear_sm_cla,
    sm_cla,
)
from cardkit.sm.scp03 import (
    Scp03Card,
    Scp03Host,
    Scp03InitResponse,
    Scp03Session,
    Scp03SessionKeys,
    card_challenge,
    card_cryptogram,
    host_cryptogram,
)

VECTORS = json.loads((Path(__file__).resolve().parent.parent / "vectors" / "gp_scp03.json").read_text("utf-8"))
GP_TEST_KEY = bytes.fromhex("404142434445464748494A4B4C4D4E4F")  # GP well-known TEST key, named explicitly
AID = bytes.fromhex("A000000151000000")
GP_DEFAULT_ISD = AID
h = bytes.fromhex


def det_rng(seed: int) -> Callable[[int], bytes]:
    """A deterministic RNG for reproducible card challenges."""
    state = [seed]

    def rng(n: int) -> bytes:
        state[0] += 1
        return bytes((state[0] * 37 + k * 11) & 0xFF for k in range(n))

    return rng


def keyset(n: int = 16, version: int = 0x30, salt: int = 0) -> GpKeySet:
    return GpKeySet(bytes((salt + k) & 0xFF for k in range(n)), bytes((salt + 0x40 + k) & 0xFF for k in range(n)),
                    bytes((salt + 0x80 + k) & 0xFF for k in range(n)), version, alg=Alg.AES)


class Wire:
    """A `send` that records every command and hands it (through its byte encoding) to the card."""

    def __init__(self, card: Scp03Card, app: Callable[[CommandApdu], ResponseApdu] | None = None) -> None:
        self.card = card
        self.sent: list[CommandApdu] = []
        self.app_seen: list[CommandApdu] = []
        self.app = app or self.echo
        self.tamper_response: Callable[[ResponseApdu], ResponseApdu] | None = None
        self.tamper_command: Callable[[CommandApdu], CommandApdu] | None = None

    def echo(self, cmd: CommandApdu) -> ResponseApdu:
        self.app_seen.append(cmd)
        if cmd.ins == 0xEE:
            return ResponseApdu.of(0x6A88)
        if cmd.le is None:
            return ResponseApdu.of(0x9000)
        out = bytes(reversed(cmd.data)) + bytes([cmd.ins, cmd.p1, cmd.p2])
        return ResponseApdu.of(0x9000, out[: cmd.le])

    def __call__(self, cmd: CommandApdu) -> ResponseApdu:
        self.sent.append(cmd)
        if self.tamper_command:
            cmd = self.tamper_command(cmd)
        resp = self.card.handle(CommandApdu.from_bytes(cmd.to_bytes()), self.app)
        resp = ResponseApdu.from_bytes(resp.to_bytes())
        return self.tamper_response(resp) if self.tamper_response else resp


def open_pair(keys: GpKeySet | None = None, *, level: int = 0x33, s16: bool = False, i: int = 0x70,
              host_quirk: bool = False, card_quirk: bool = False, host_keys: GpKeySet | None = None,
              isd_aid: bytes | None = AID) -> tuple[Any, Scp03Card, Wire]:
    keys = keys or keyset()
    card = Scp03Card(keys, 7, AID, i=i, rng=det_rng(1), s16=s16, counter_quirk=card_quirk)
    wire = Wire(card)
    chan = Scp03Host.open(wire, host_keys or keys, level=level, s16=s16, rng=det_rng(2), isd_aid=isd_aid,
                          counter_quirk=host_quirk)
    return chan, card, wire


# ------------------------------------------------------------------------------------- published vectors


def _session_ids() -> list[str]:
    return [s["name"] for s in VECTORS["sessions"]]


@pytest.mark.parametrize("vec", VECTORS["sessions"], ids=_session_ids())
def test_published_transcript(vec: dict[str, Any]) -> None:
    k = VECTORS["keys"]
    keys = GpKeySet(h(k["enc"]), h(k["mac"]), h(k["dek"]), alg=Alg.AES)
    sent: list[CommandApdu] = []

    def send(cmd: CommandApdu) -> ResponseApdu:
        sent.append(cmd)
        if cmd.ins == 0x50:
            assert cmd.header == h("80500000") and cmd.data == h(vec["host_challenge"])
            return ResponseApdu.of(0x9000, h(vec["initialize_update_response"]))
        assert cmd.to_bytes() == h(vec["external_authenticate"])
        return ResponseApdu.of(0x9000)

    chan = Scp03Host.open(send, keys, level=vec["level"], host_challenge=h(vec["host_challenge"]))
    assert [c.ins for c in sent] == [0x50, 0x82]
    for c in vec["commands"]:
        wrapped = chan.wrap(CommandApdu.from_bytes(h(c["plain"])))
        assert wrapped.to_bytes() == h(c["wrapped"])
        out = chan.unwrap(ResponseApdu.from_bytes(h(c["response"] + c["sw"])))
        assert out.data == h(c["unwrapped"]) and f"{out.sw:04X}" == c["sw"]
    assert not chan.closed


@pytest.mark.parametrize("vec", [s for s in VECTORS["sessions"] if s["initialize_update_response"][24:26] == "70"],
                         ids=lambda s: s["name"])
def test_published_pseudo_random_challenges_match_default_isd_aid(vec: dict[str, Any]) -> None:
    # Inference, not a published fact: the i=70 transcripts' challenges fit the GP default ISD AID.
    init = Scp03InitResponse.parse(h(vec["initialize_update_response"]))
    assert init.sequence_counter is not None
    assert card_challenge(GP_TEST_KEY, init.sequence_counter, GP_DEFAULT_ISD) == init.card_challenge
    assert card_challenge(GP_TEST_KEY, init.sequence_counter, h("A000000003000000")) != init.card_challenge


def test_published_derivation() -> None:
    for d in VECTORS["derivation"]:
        ctx = h(d["context"])
        keys = Scp03SessionKeys.derive(GpKeySet.single(h(d["key"]), alg=Alg.AES), ctx[:8], ctx[8:])
        assert (keys.s_enc, keys.s_mac, keys.s_rmac) == (h(d["s_enc"]), h(d["s_mac"]), h(d["s_rmac"]))
        assert card_cryptogram(keys.s_mac, ctx[:8], ctx[8:]) == h(d["card_cryptogram"])
        assert host_cryptogram(keys.s_mac, ctx[:8], ctx[8:]) == h(d["host_cryptogram"])
    for c in VECTORS["card_challenge"]:
        assert card_challenge(h(c["k_enc"]), h(c["sequence_counter"]), h(c["isd_aid"])) == h(c["challenge"])


def test_published_transcript_with_isd_aid_check() -> None:
    vec = VECTORS["sessions"][5]
    keys = GpKeySet.single(GP_TEST_KEY, alg=Alg.AES)

    def send(cmd: CommandApdu) -> ResponseApdu:
        if cmd.ins == 0x50:
            return ResponseApdu.of(0x9000, h(vec["initialize_update_response"]))
        return ResponseApdu.of(0x9000)

    Scp03Host.open(send, keys, level=0x33, host_challenge=h(vec["host_challenge"]), isd_aid=GP_DEFAULT_ISD)
    with pytest.raises(AuthenticationError, match="pseudo-random"):
        Scp03Host.open(send, keys, level=0x33, host_challenge=h(vec["host_challenge"]), isd_aid=h("A0000000030000"))


# ------------------------------------------------------------------------------------- host against card

PAYLOADS = (0, 1, 15, 16, 17, 239, 255)


@pytest.mark.parametrize("s16", [False, True], ids=["S8", "S16"])
@pytest.mark.parametrize("klen", [16, 24, 32], ids=["AES128", "AES192", "AES256"])
@pytest.mark.parametrize("level", sorted(VALID_LEVELS), ids=lambda v: f"L{v:02X}")
def test_host_against_card(s16: bool, klen: int, level: int) -> None:
    chan, card, wire = open_pair(keyset(klen), level=level, s16=s16)
    assert card.session_open and card.level == level and chan.s16 == s16
    ext = wire.sent[1]
    assert ext.header == bytes([0x84, 0x82, level, 0]) and len(ext.data) == (32 if s16 else 16)
    for n in PAYLOADS:
        data = bytes((n + k) & 0xFF for k in range(n))
        cases = [CommandApdu(0x80, 0xCA, 1, 2, data), CommandApdu(0x80, 0xCA, 1, 2, data, le=256)]
        if n == 0:
            cases += [CommandApdu(0x00, 0xB0, 0, 0), CommandApdu(0x00, 0xB0, 0, 0, le=256)]
        for cmd in cases:
            expected = wire.echo(cmd)
            wire.app_seen.clear()
            resp = chan.process(cmd, wire)
            assert wire.app_seen == [cmd], "the card application saw exactly the plain command"
            assert resp == expected
            on_wire = wire.sent[-1]
            if level & SecurityLevel.C_MAC:
                assert on_wire.cla == sm_cla(cmd.cla)
                assert (on_wire.data[:n] == data) == (not (level & SecurityLevel.C_DEC) or n == 0)
            else:
                assert on_wire == cmd
    assert not chan.closed and card.session_open


def test_error_status_passes_through_without_rmac() -> None:
    chan, _card, wire = open_pair(level=0x33)
    resp = chan.process(CommandApdu(0x80, 0xEE, 0, 0, b"\x01", le=256), wire)
    assert resp == ResponseApdu.of(0x6A88)
    assert chan.process(CommandApdu(0x80, 0xCA, 0, 0, b"\x02", le=256), wire).data == b"\x02\xca\x00\x00"


def test_logical_channel_cla_coding() -> None:
    assert sm_cla(0x80) == 0x84 and sm_cla(0x01) == 0x05 and sm_cla(0xC1) == 0xE1 and sm_cla(0x45) == 0x65
    for cla in (0x80, 0x81, 0x83, 0x00, 0x03, 0x40, 0x4F, 0xC0, 0xCF):
        assert clear_sm_cla(sm_cla(cla)) == cla
    chan, _card, wire = open_pair(level=0x13)
    assert chan.process(CommandApdu(0xC1, 0xCA, 0, 0, b"xy", le=256), wire).data == b"yx\xca\x00\x00"
    assert wire.sent[-1].cla == 0xE1


def test_counter_quirk_on_both_sides() -> None:
    for quirk in (False, True):
        chan, _card, wire = open_pair(level=0x33, host_quirk=quirk, card_quirk=quirk)
        for cmd in (CommandApdu(0x80, 0xCA, 0, 0, le=256), CommandApdu(0x80, 0xCA, 0, 0, b"abc", le=256),
                    CommandApdu(0x80, 0xCA, 0, 0), CommandApdu(0x80, 0xCA, 0, 0, b"d" * 20, le=256)):
            assert chan.process(cmd, wire) == wire.echo(cmd)
        assert chan.counter == (2 if quirk else 4)


def test_counter_mismatch_fails_on_the_card() -> None:
    chan, card, wire = open_pair(level=0x33, host_quirk=True, card_quirk=False)
    chan.process(CommandApdu(0x80, 0xCA, 0, 0), wire)  # no data: host counter stays, card counts
    resp = chan.process(CommandApdu(0x80, 0xCA, 0, 0, b"hello", le=256), wire)
    assert resp.sw == 0x6982 and not card.session_open
    with pytest.raises(SecureChannelError):
        card.unwrap_command(wire.sent[-1])


def test_counter_mismatch_fails_on_the_host() -> None:
    chan, _card, wire = open_pair(level=0x33, host_quirk=False, card_quirk=True)
    chan.process(CommandApdu(0x80, 0xCA, 0, 0), wire)
    with pytest.raises(SecureChannelError):
        chan.process(CommandApdu(0x00, 0xB0, 0, 0, le=5), wire)  # 5-byte response: one block, bad padding
    assert chan.closed


# ------------------------------------------------------------------------------------------------ misuse


def test_wrong_keys_never_send_external_authenticate() -> None:
    card_keys = keyset()
    wire = Wire(Scp03Card(card_keys, 1, AID, rng=det_rng(1)))
    with pytest.raises(AuthenticationError, match="card cryptogram") as exc:
        Scp03Host.open(wire, keyset(salt=1), level=0x01, rng=det_rng(2))
    assert [c.ins for c in wire.sent] == [0x50]
    for key in (card_keys.enc, card_keys.mac, keyset(salt=1).mac):
        assert key.hex() not in str(exc.value).lower()


def test_wrong_isd_aid_never_sends_external_authenticate() -> None:
    wire = Wire(Scp03Card(keyset(), 1, AID, rng=det_rng(1)))
    with pytest.raises(AuthenticationError):
        Scp03Host.open(wire, keyset(), level=0x01, rng=det_rng(2), isd_aid=h("A000000003000000"))
    assert [c.ins for c in wire.sent] == [0x50]


def test_card_rejects_host_cryptogram() -> None:
    card = Scp03Card(keyset(), 1, AID, rng=det_rng(1))
    wire = Wire(card)

    def send(cmd: CommandApdu) -> ResponseApdu:
        resp = wire(cmd)
        return ResponseApdu.of(0x6300) if cmd.ins == 0x82 else resp

    with pytest.raises(AuthenticationError, match="6300"):
        Scp03Host.open(send, keyset(), level=0x01, rng=det_rng(2))
    # A corrupted EXTERNAL AUTHENTICATE (bad C-MAC) is refused with a typed status error and no session.
    wire2 = Wire(Scp03Card(keyset(), 1, AID, rng=det_rng(1)))
    wire2.tamper_command = lambda c: c.replace(data=bytes([c.data[0] ^ 1]) + c.data[1:]) if c.ins == 0x82 else c
    with pytest.raises(CardkitError, match="6982"):
        Scp03Host.open(wire2, keyset(), level=0x01, rng=det_rng(2))
    assert not wire2.card.session_open


def test_card_side_handshake_errors() -> None:
    keys = keyset()
    card = Scp03Card(keys, 1, AID, rng=det_rng(1))
    assert card.external_authenticate(CommandApdu(0x84, 0x82, 1, 0, bytes(16))).sw == 0x6985
    hc = bytes(8)
    init = Scp03InitResponse.parse(card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, hc, le=256)).data)
    sk = Scp03SessionKeys.derive(keys, hc, init.card_challenge)
    good = host_cryptogram(sk.s_mac, hc, init.card_challenge)
    # Host cryptogram right, C-MAC wrong -> 6982; host cryptogram wrong (correct MAC over it) -> 6300.
    assert card.external_authenticate(CommandApdu(0x84, 0x82, 1, 0, good + bytes(8))).sw == 0x6982
    card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, hc, le=256))
    init = Scp03InitResponse.parse(card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, hc, le=256)).data)
    sk = Scp03SessionKeys.derive(keys, hc, init.card_challenge)
    bad = bytes(8)
    mac = Scp03Session(sk, SecurityLevel.C_MAC).mac_command(0x84, 0x82, 1, 0, bad)
    assert card.external_authenticate(CommandApdu(0x84, 0x82, 1, 0, bad + mac)).sw == 0x6300
    assert not card.session_open
    assert card.initialize_update(CommandApdu(0x80, 0x50, 0x31, 0, hc, le=256)).sw == 0x6A88
    assert card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, bytes(7), le=256)).sw == 0x6700
    with pytest.raises(SecureChannelError):
        card.unwrap_command(CommandApdu(0x84, 0xCA, 0, 0, bytes(8)))


def test_card_rejects_unoffered_level() -> None:
    wire = Wire(Scp03Card(keyset(), 1, AID, i=0x10, rng=det_rng(1)))
    with pytest.raises(SecureChannelError, match="R-MAC"):
        Scp03Host.open(wire, keyset(), level=0x11, rng=det_rng(2))
    assert [c.ins for c in wire.sent] == [0x50]


def test_tampered_rmac_closes_channel() -> None:
    chan, _card, wire = open_pair(level=0x11)
    wire.tamper_response = lambda r: ResponseApdu(r.data[:-1] + bytes([r.data[-1] ^ 0x80]), r.sw1, r.sw2)
    with pytest.raises(SecureChannelError, match="R-MAC"):
        chan.process(CommandApdu(0x80, 0xCA, 0, 0, b"a", le=256), wire)
    assert chan.closed
    n = len(wire.sent)
    with pytest.raises(SecureChannelError, match="closed"):
        chan.process(CommandApdu(0x80, 0xCA, 0, 0, le=256), wire)
    assert len(wire.sent) == n, "nothing is sent on a closed channel"


def test_tampered_cmac_closes_card_session() -> None:
    chan, card, wire = open_pair(level=0x01)
    wire.tamper_command = lambda c: c.replace(data=c.data[:-1] + bytes([c.data[-1] ^ 1]))
    resp = chan.process(CommandApdu(0x80, 0xCA, 0, 0, b"abc"), wire)
    assert resp.sw == 0x6982 and not card.session_open
    wire.tamper_command = None
    assert chan.process(CommandApdu(0x80, 0xCA, 0, 0, b"abc"), wire).sw == 0x6982


def test_card_rejects_plain_command_inside_session() -> None:
    _chan, card, wire = open_pair(level=0x01)
    assert wire(CommandApdu(0x80, 0xCA, 0, 0, b"abc")).sw == 0x6982
    assert not card.session_open


@pytest.mark.parametrize("length", [0, 7, 8])
def test_truncated_rmac_response(length: int) -> None:
    chan, _card, wire = open_pair(level=0x11)
    wire.tamper_response = lambda r: ResponseApdu(r.data[:length] if length < 8 else r.data[:7], r.sw1, r.sw2)
    with pytest.raises(SecureChannelError):
        chan.process(CommandApdu(0x80, 0xCA, 0, 0, b"abc", le=256), wire)
    assert chan.closed


@pytest.mark.parametrize("n", [0, 28, 30, 31, 33, 44, 46, 47, 49])
def test_truncated_initialize_update_response(n: int) -> None:
    sent: list[CommandApdu] = []

    def send(cmd: CommandApdu) -> ResponseApdu:
        sent.append(cmd)
        return ResponseApdu.of(0x9000, bytes(10) + b"\x30\x03\x00" + bytes(max(0, n - 13))[: max(0, n - 13)])

    with pytest.raises(SecureChannelError):
        Scp03Host.open(send, keyset(), level=0x01, rng=det_rng(2))
    assert len(sent) == 1


def test_s8_s16_mismatch_and_refusals() -> None:
    wire = Wire(Scp03Card(keyset(), 1, AID, rng=det_rng(1), s16=False))
    with pytest.raises(CardkitError):  # the S8 card refuses a 16-byte challenge (6700)
        Scp03Host.open(wire, keyset(), level=0x01, rng=det_rng(2), s16=True)

    def s16_answer(cmd: CommandApdu) -> ResponseApdu:
        return ResponseApdu.of(0x9000, bytes(10) + b"\x30\x03\x01" + bytes(32))

    with pytest.raises(InitializeUpdateError, match="S16"):
        Scp03Host.open(s16_answer, keyset(), level=0x01, host_challenge=bytes(8))
    with pytest.raises(CardkitError, match="6A88"):  # the card has no key set 31
        Scp03Host.open(Wire(Scp03Card(keyset(version=0x30), 1, AID, rng=det_rng(1))), keyset(), level=1,
                       key_version=0x31)
    liar = Wire(Scp03Card(keyset(version=0x30), 1, AID, rng=det_rng(1)))
    liar.tamper_command = lambda c: c.replace(p1=0) if c.ins == 0x50 else c  # answers with key set 30 anyway
    with pytest.raises(SecureChannelError, match="key version"):
        Scp03Host.open(liar, keyset(version=0x30), level=1, key_version=0x31)
    assert len(liar.sent) == 1
    with pytest.raises(SecureChannelError, match="AES"):
        Scp03Host.open(s16_answer, GpKeySet.single(bytes(16), alg=Alg.DES3), level=1)


def test_bad_padding_in_encrypted_response() -> None:
    sk = Scp03SessionKeys(bytes(range(16)), bytes(range(1, 17)), bytes(range(2, 18)))
    host = Scp03Session(sk, SecurityLevel(0x33))
    host.wrap_command(CommandApdu(0x80, 0xCA, 0, 0, b"x", le=256))
    icv = ecb_encrypt(Alg.AES, sk.s_enc, b"\x80" + host.counter.to_bytes(15, "big"))
    body = cbc_encrypt(Alg.AES, sk.s_enc, b"no padding here!", icv)
    mac = aes_cmac(sk.s_rmac, host.chain + body + b"\x90\x00")[:8]
    with pytest.raises(SecureChannelError, match="padding"):
        host.unwrap_response(ResponseApdu(body + mac, 0x90, 0x00))
    assert host.closed


def test_sequence_counter_and_pseudo_random_challenge() -> None:
    card = Scp03Card(keyset(), 0x0000FE, AID, rng=det_rng(1))
    a = Scp03InitResponse.parse(card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, bytes(8), le=256)).data)
    b = Scp03InitResponse.parse(card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, bytes(8), le=256)).data)
    assert (a.sequence_counter, b.sequence_counter) == (h("0000FE"), h("0000FF"))
    assert a.card_challenge != b.card_challenge
    assert a.card_challenge == card_challenge(keyset().enc, h("0000FE"), AID)
    assert len(a.to_bytes()) == 32
    random_card = Scp03Card(keyset(), 0, i=0x00, rng=det_rng(1))
    r = random_card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, bytes(8), le=256))
    assert len(r.data) == 29 and Scp03InitResponse.parse(r.data).sequence_counter is None
    with pytest.raises(SecureChannelError):
        Scp03Card(keyset(), 0, i=0x70)  # pseudo-random without an AID


# ------------------------------------------------------------------------------------------ levels & keys


@pytest.mark.parametrize("bad", [0x02, 0x10, 0x12, 0x20, 0x30, 0x31, 0x21, 0x23, 0x04, 0x40, 0x80, 0x100, -1])
def test_invalid_levels(bad: int) -> None:
    with pytest.raises(SecurityLevelError):
        check_level(bad)


def test_valid_levels() -> None:
    assert {int(check_level(v)) for v in VALID_LEVELS} == {0x00, 0x01, 0x03, 0x11, 0x13, 0x33}
    with pytest.raises(SecurityLevelError, match="SCP03"):
        check_level(0x33, r_enc=False)
    with pytest.raises(SecurityLevelError, match="R-ENC needs"):
        check_level(0x31)


def test_keyset_repr_and_validation(caplog: pytest.LogCaptureFixture) -> None:
    ks = keyset(32)
    text = repr(ks) + str(ks)
    for key in (ks.enc, ks.mac, ks.dek):
        assert key.hex() not in text.lower() and key.hex().upper() not in text
    assert "kcv" in text and ks.kcvs()["enc"].hex().upper() in text
    with pytest.raises(KeyError_):
        GpKeySet(bytes(16), bytes(16), bytes(24), alg=Alg.AES)
    with pytest.raises(KeyError_):
        GpKeySet(bytes(15), bytes(15), bytes(15), alg=Alg.AES)
    with pytest.raises(KeyError_):
        GpKeySet(bytes(16), bytes(16), bytes(16), 256, alg=Alg.AES)
    caplog.set_level(logging.DEBUG)
    chan, _card, wire = open_pair(ks, level=0x33)
    chan.process(CommandApdu(0x80, 0xCA, 0, 0, b"abc", le=256), wire)
    assert ks.enc.hex() not in caplog.text.lower() and chan.session_keys.s_enc.hex() not in repr(chan).lower()


def test_kdf_layout_matches_channel() -> None:
    keys = keyset()
    chan, card, _wire = open_pair(keys, level=0x01)
    ctx = chan.host_challenge + chan.init_response.card_challenge
    assert chan.session_keys.s_mac == scp03_kdf(keys.mac, 0x06, ctx, 128)
    assert chan.dek == keys.dek and card.dek == keys.dek


# ------------------------------------------------------------------------------------------------ parsing


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_parse_never_raises_foreign_errors(data: bytes) -> None:
    try:
        r = Scp03InitResponse.parse(data)
    except InitializeUpdateError:
        return
    assert r.to_bytes() == data and len(data) in (29, 32, 45, 48)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([29, 32, 45, 48]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_parse_round_trip(data: bytes) -> None:
    data = data[:11] + b"\x03" + data[12:]
    r = Scp03InitResponse.parse(data)
    assert r.to_bytes() == data and r.s16 == (len(data) > 32)
    assert (r.sequence_counter is not None) == (len(data) in (32, 48))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 0xFFFF))
def test_unwrap_random_responses(data: bytes, sw: int) -> None:
    sk = Scp03SessionKeys(bytes(16), bytes(range(16)), bytes(range(16, 32)))
    host = Scp03Session(sk, SecurityLevel(0x33))
    host.wrap_command(CommandApdu(0x80, 0xCA, 0, 0, le=256))
    try:
        out = host.unwrap_response(ResponseApdu(data, sw >> 8, sw & 0xFF))
    except SecureChannelError:
        assert host.closed
        return
    assert out.data == data  # only error status words pass through untouched


# ------------------------------------------------------------------------------------------ in a session


class _Card:
    """A CardLike: an SCP03 security domain in front of the echo application."""

    atr = bytes.fromhex("3B800101")

    def __init__(self, keys: GpKeySet) -> None:
        self.sd = Scp03Card(keys, 9, AID, rng=det_rng(4))
        self.wire = Wire(self.sd)

    def power_on(self) -> bytes:
        self.sd.close()
        return self.atr

    def power_off(self) -> None:
        self.sd.close()

    def transmit(self, apdu: bytes) -> bytes:
        return self.sd.handle(CommandApdu.from_bytes(apdu), self.wire.echo).to_bytes()


def test_channel_as_session_processor() -> None:
    from cardkit.session import CardSession
    from cardkit.transport.virtual import VirtualTransport

    keys = keyset(24)
    card = _Card(keys)
    session = CardSession(VirtualTransport(card), extended=True)
    chan = Scp03Host.open(session.transmit, keys, level=0x33, rng=det_rng(5))
    session.push(chan)
    data = bytes(range(255))
    resp = session.send(CommandApdu(0x80, 0xCA, 0, 0, data, le=65536))
    assert resp.data == bytes(reversed(data)) + b"\xca\x00\x00"
    assert card.wire.app_seen[-1].data == data and session.apdu_count == 3
    session.reset()
    assert not card.sd.session_open and session.processors == ()


def test_extended_form_commands_mac_their_three_byte_lc() -> None:
    """A command travelling in the extended form MACs Lc as it travels (00 xx xx, ISO 7816-3 §12.1), even
    when its data is short — checked against an independent C-MAC computation, then against the card."""
    from cardkit.crypto import aes_cmac

    chan, card, wire = open_pair(level=0x01)
    session = chan._session
    chain_before = session.chain
    cmd = CommandApdu(0x80, 0xCA, 1, 2, b"\x01\x02\x03", le=1000)  # Le > 256 forces the extended form
    expected = wire.echo(cmd)
    resp = chan.process(cmd, wire)
    on_wire = wire.sent[-1]
    assert on_wire.is_extended and resp == expected and card.session_open
    mac_input = chain_before + bytes([0x84, 0xCA, 1, 2]) + b"\x00\x00\x0B" + b"\x01\x02\x03"
    assert on_wire.data[-8:] == aes_cmac(session.keys.s_mac, mac_input)[:8]
