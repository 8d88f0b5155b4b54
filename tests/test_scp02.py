"""SCP02 (GPCS 2.3.1 Appendix E): published values, host against card, misuse."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg, des3_cbc_encrypt, retail_mac
from cardkit.errors import AuthenticationError, CardkitError, SecureChannelError
from cardkit.sm.gp import GpKeySet, InitializeUpdateError, SecurityLevel, SecurityLevelError, sm_cla
from cardkit.sm.scp02 import (
    Scp02Card,
    Scp02Host,
    Scp02InitResponse,
    Scp02Session,
    Scp02SessionKeys,
    card_cryptogram,
    check_i,
    host_cryptogram,
)

VECTORS = json.loads((Path(__file__).resolve().parent.parent / "vectors" / "gp_scp02.json").read_text("utf-8"))
h = bytes.fromhex


def det_rng(seed: int) -> Callable[[int], bytes]:
    state = [seed]

    def rng(n: int) -> bytes:
        state[0] += 1
        return bytes((state[0] * 53 + k * 7) & 0xFF for k in range(n))

    return rng


def keyset(n: int = 16, version: int = 0x20, salt: int = 0) -> GpKeySet:
    return GpKeySet(bytes((salt + 3 * k) & 0xFF for k in range(n)), bytes((salt + 0x41 + k) & 0xFF for k in range(n)),
                    bytes((salt + 0x92 + k) & 0xFF for k in range(n)), version, alg=Alg.DES3)


class Wire:
    def __init__(self, card: Scp02Card) -> None:
        self.card = card
        self.sent: list[CommandApdu] = []
        self.app_seen: list[CommandApdu] = []
        self.tamper_response: Callable[[ResponseApdu], ResponseApdu] | None = None
        self.tamper_command: Callable[[CommandApdu], CommandApdu] | None = None

    def echo(self, cmd: CommandApdu) -> ResponseApdu:
        self.app_seen.append(cmd)
        if cmd.ins == 0xEE:
            return ResponseApdu.of(0x6A88)
        if cmd.le is None:
            return ResponseApdu.of(0x9000)
        return ResponseApdu.of(0x9000, (bytes(reversed(cmd.data)) + bytes([cmd.ins, cmd.p1, cmd.p2]))[: cmd.le])

    def __call__(self, cmd: CommandApdu) -> ResponseApdu:
        self.sent.append(cmd)
        if self.tamper_command:
            cmd = self.tamper_command(cmd)
        resp = ResponseApdu.from_bytes(self.card.handle(CommandApdu.from_bytes(cmd.to_bytes()), self.echo).to_bytes())
        return self.tamper_response(resp) if self.tamper_response else resp


def open_pair(keys: GpKeySet | None = None, *, level: int = 0x01, i: int = 0x55) -> tuple[Any, Scp02Card, Wire]:
    keys = keys or keyset()
    card = Scp02Card(keys, 0x0041, i=i, rng=det_rng(1))
    wire = Wire(card)
    return Scp02Host.open(wire, keys, level=level, i=i, rng=det_rng(2)), card, wire


# ------------------------------------------------------------------------------------- published vectors


def test_published_session_keys() -> None:
    for v in VECTORS["session_keys"]:
        for name, const in (("s_enc", b"\x01\x82"), ("c_mac", b"\x01\x01"), ("r_mac", b"\x01\x02")):
            if name in v:
                got = Scp02SessionKeys.derive_key(h(v["static_key"]), const, h(v["sequence_counter"]))
                assert got == h(v[name]), (v["name"], name)
    v = VECTORS["session_keys"][0]
    keys = Scp02SessionKeys.derive(GpKeySet.single(h(v["static_key"]), alg=Alg.DES3), h(v["sequence_counter"]))
    assert (keys.s_enc, keys.c_mac, keys.r_mac) == (h(v["s_enc"]), h(v["c_mac"]), h(v["r_mac"]))


def test_published_card_cryptogram() -> None:
    for v in VECTORS["card_cryptograms"]:
        got = card_cryptogram(h(v["s_enc"]), h(v["host_challenge"]), h(v["sequence_counter"]), h(v["card_challenge"]))
        assert got == h(v["card_cryptogram"])


def test_published_initialize_update_opens_session() -> None:
    v = VECTORS["initialize_update"][0]
    keys = GpKeySet(h(v["keys"]["enc"]), h(v["keys"]["mac"]), h(v["keys"]["dek"]), alg=Alg.DES3)
    init = Scp02InitResponse.parse(h(v["response"]))
    assert init.key_version == v["key_version"] and init.sequence_counter == h(v["sequence_counter"])
    assert init.to_bytes() == h(v["response"])
    sent: list[CommandApdu] = []

    def send(cmd: CommandApdu) -> ResponseApdu:
        sent.append(cmd)
        return ResponseApdu.from_bytes(h(v["response"] + v["sw"])) if cmd.ins == 0x50 else ResponseApdu.of(0x9000)

    chan = Scp02Host.open(send, keys, level=0x01, host_challenge=h(v["host_challenge"]))
    assert [c.ins for c in sent] == [0x50, 0x82] and sent[1].cla == 0x84 and len(sent[1].data) == 16
    with pytest.raises(AuthenticationError):
        Scp02Host.open(send, keyset(), level=0x01, host_challenge=h(v["host_challenge"]))
    assert chan.key_version == 0x20


def test_published_c_mac_and_icv_encryption() -> None:
    m = VECTORS["c_mac"][0]
    assert retail_mac(h(m["c_mac_key"]), h(m["mac_input"])) == h(m["mac"])
    w = VECTORS["wrap"][0]
    session = Scp02Session(Scp02SessionKeys(bytes(16), h(w["c_mac_key"]), bytes(16), bytes(16)),
                           SecurityLevel(w["level"]), w["i"])
    for c in w["commands"]:
        assert session.wrap_command(CommandApdu.from_bytes(h(c["plain"]))).to_bytes() == h(c["wrapped"])
    # Without ICV encryption (i bit 10 clear) the second MAC differs: the published value needs it.
    plain = Scp02Session(Scp02SessionKeys(bytes(16), h(w["c_mac_key"]), bytes(16), bytes(16)), SecurityLevel(1), 0x45)
    outs = [plain.wrap_command(CommandApdu.from_bytes(h(c["plain"]))).to_bytes() for c in w["commands"]]
    assert outs[0] == h(w["commands"][0]["wrapped"]) and outs[1] != h(w["commands"][1]["wrapped"])


# ------------------------------------------------------------------------------------- host against card

PAYLOADS = (0, 1, 7, 8, 9, 15, 16, 17, 239, 255)
CONFIGS = [(0x15, 0x00), (0x15, 0x01), (0x15, 0x03), (0x55, 0x00), (0x55, 0x01), (0x55, 0x03),
           (0x35, 0x11), (0x35, 0x13), (0x75, 0x11), (0x75, 0x13), (0x14, 0x03), (0x45, 0x03),
           (0x77, 0x13)]


@pytest.mark.parametrize("klen", [16, 24], ids=["2key", "3key"])
@pytest.mark.parametrize(("i", "level"), CONFIGS, ids=[f"i{i:02X}-L{lv:02X}" for i, lv in CONFIGS])
def test_host_against_card(klen: int, i: int, level: int) -> None:
    chan, card, wire = open_pair(keyset(klen), level=level, i=i)
    assert card.session_open and chan.level == level and chan.dek == card.session_dek
    assert wire.sent[1].header == bytes([0x84, 0x82, level, 0])
    for n in PAYLOADS:
        data = bytes((n * 3 + k) & 0xFF for k in range(n))
        cases = [CommandApdu(0x80, 0xE2, 0x88, 0, data), CommandApdu(0x80, 0xCA, 0, 0x66, data, le=256)]
        if n == 0:
            cases += [CommandApdu(0x00, 0xB0, 0, 0), CommandApdu(0x00, 0xB0, 0, 0, le=256)]
        for cmd in cases:
            expected = wire.echo(cmd)
            wire.app_seen.clear()
            assert chan.process(cmd, wire) == expected
            assert wire.app_seen == [cmd]
            on_wire = wire.sent[-1]
            if level & SecurityLevel.C_MAC:
                assert on_wire.cla == sm_cla(cmd.cla)
                enc = level & SecurityLevel.C_DEC and n
                assert len(on_wire.data) == ((n // 8 + 1) * 8 if enc else n) + 8
            else:
                assert on_wire == cmd
    assert not chan.closed and card.session_open


def test_sequence_counter_increments_per_session() -> None:
    keys = keyset()
    card = Scp02Card(keys, 0x00FF, rng=det_rng(1))
    Scp02Host.open(Wire(card), keys, level=1, rng=det_rng(2))
    assert card.sequence_counter == 0x0100
    init = Scp02InitResponse.parse(card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, bytes(8), le=256)).data)
    assert init.sequence_counter == h("0100") and init.key_version == 0x20
    last = Scp02Card(keys, 0xFFFE, rng=det_rng(1))
    Scp02Host.open(Wire(last), keys, level=1, rng=det_rng(2))
    assert last.sequence_counter == 0xFFFF  # exhausted: no further session, the counter never wraps or grows
    assert last.initialize_update(CommandApdu(0x80, 0x50, 0, 0, bytes(8), le=256)).sw == 0x6985


def test_error_status_passes_through() -> None:
    chan, card, wire = open_pair(level=0x13, i=0x75)
    assert chan.process(CommandApdu(0x80, 0xEE, 0, 0, b"zz", le=256), wire) == ResponseApdu.of(0x6A88)
    assert chan.process(CommandApdu(0x80, 0xCA, 0, 0, b"ok", le=256), wire).data == b"ko\xca\x00\x00"
    assert card.session_open


# ------------------------------------------------------------------------------------------------ misuse


def test_wrong_keys_never_send_external_authenticate() -> None:
    wire = Wire(Scp02Card(keyset(), 5, rng=det_rng(1)))
    with pytest.raises(AuthenticationError) as exc:
        Scp02Host.open(wire, keyset(salt=9), level=1, rng=det_rng(2))
    assert [c.ins for c in wire.sent] == [0x50]
    assert keyset().enc.hex() not in str(exc.value).lower()


def test_card_rejects_host_cryptogram_and_bad_mac() -> None:
    keys = keyset()
    card = Scp02Card(keys, 5, rng=det_rng(1))
    assert card.external_authenticate(CommandApdu(0x84, 0x82, 1, 0, bytes(16))).sw == 0x6985
    hc = bytes(8)
    init = Scp02InitResponse.parse(card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, hc, le=256)).data)
    sk = Scp02SessionKeys.derive(keys, init.sequence_counter)
    good = host_cryptogram(sk.s_enc, hc, init.sequence_counter, init.card_challenge)
    assert card.external_authenticate(CommandApdu(0x84, 0x82, 1, 0, good + bytes(8))).sw == 0x6982
    init = Scp02InitResponse.parse(card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, hc, le=256)).data)
    sk = Scp02SessionKeys.derive(keys, init.sequence_counter)
    mac = Scp02Session(sk, SecurityLevel(1), 0x55).mac_command(0x80, 0x82, 1, 0, bytes(8))
    assert card.external_authenticate(CommandApdu(0x84, 0x82, 1, 0, bytes(8) + mac)).sw == 0x6300
    assert not card.session_open and card.sequence_counter == 5
    assert card.initialize_update(CommandApdu(0x80, 0x50, 0x21, 0, hc, le=256)).sw == 0x6A88
    assert card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, bytes(16), le=256)).sw == 0x6700

    def refuse(cmd: CommandApdu) -> ResponseApdu:
        return card.handle(cmd, lambda c: ResponseApdu.of(0x9000)) if cmd.ins == 0x50 else ResponseApdu.of(0x6300)

    with pytest.raises(AuthenticationError, match="6300"):
        Scp02Host.open(refuse, keys, level=1)


def test_tampered_cmac_closes_card_session() -> None:
    chan, card, wire = open_pair(level=0x03)
    wire.tamper_command = lambda c: c.replace(data=c.data[:-1] + bytes([c.data[-1] ^ 4]))
    assert chan.process(CommandApdu(0x80, 0xE2, 0, 0, b"secret"), wire).sw == 0x6982
    assert not card.session_open
    with pytest.raises(SecureChannelError):
        card.unwrap_command(CommandApdu(0x84, 0xE2, 0, 0, bytes(16)))


def test_bad_padding_in_encrypted_command() -> None:
    chan, card, _wire = open_pair(level=0x03)
    sk = chan.session_keys
    body = des3_cbc_encrypt(sk.s_enc, b"12345678")  # no 80 marker
    with pytest.raises(SecureChannelError, match="padding"):
        card.unwrap_command(CommandApdu(0x84, 0xE2, 0, 0, body + bytes(8)))
    assert not card.session_open


def test_tampered_and_truncated_rmac() -> None:
    for tamper in (lambda r: ResponseApdu(r.data[:-1] + bytes([r.data[-1] ^ 1]), r.sw1, r.sw2),
                   lambda r: ResponseApdu(r.data[:5], r.sw1, r.sw2)):
        chan, _card, wire = open_pair(level=0x11, i=0x75)
        wire.tamper_response = tamper
        with pytest.raises(SecureChannelError):
            chan.process(CommandApdu(0x80, 0xCA, 0, 0, b"abc", le=256), wire)
        assert chan.closed
        n = len(wire.sent)
        with pytest.raises(SecureChannelError, match="closed"):
            chan.process(CommandApdu(0x80, 0xCA, 0, 0), wire)
        assert len(wire.sent) == n


def test_rmac_chains_over_responses() -> None:
    chan, _card, wire = open_pair(level=0x11, i=0x35)
    wire(chan.wrap(CommandApdu(0x80, 0xCA, 0, 0, b"1", le=256)))  # first response never unwrapped
    second = wire(chan.wrap(CommandApdu(0x80, 0xCA, 0, 0, b"1", le=256)))
    with pytest.raises(SecureChannelError):  # the R-MAC ICV is the previous R-MAC: a skipped one breaks it
        chan.unwrap(second)


# Not in GPCS 2.3.1 Table E-1: explicit with ICV over AID (0D, 0E, 1C, 5D), implicit other than 0A/0B/1A/1B
# (08: modified APDU, 2A/3B: R-MAC, 4A: pseudo-random challenge, 00: ICV zero), out of range.
@pytest.mark.parametrize("i", [0x0D, 0x0E, 0x1C, 0x5D, 0x08, 0x2A, 0x3B, 0x4A, 0x00, 0x80, -1, True])
def test_unsupported_i(i: int) -> None:
    with pytest.raises(SecureChannelError):
        check_i(i)
    with pytest.raises(SecureChannelError):
        Scp02Host.open(lambda c: ResponseApdu.of(0x9000), keyset(), level=1, i=i)


@pytest.mark.parametrize("i", [0x0A, 0x0B, 0x1A, 0x1B])
def test_implicit_i_is_not_an_explicit_handshake(i: int) -> None:
    sent: list[CommandApdu] = []

    def send(cmd: CommandApdu) -> ResponseApdu:
        sent.append(cmd)
        return ResponseApdu.of(0x9000)

    assert check_i(i) == i
    with pytest.raises(SecureChannelError, match="open_implicit"):
        Scp02Host.open(send, keyset(), level=1, i=i)
    assert sent == []
    card = Scp02Card(keyset(), 7, i=i)  # an implicit card refuses the explicit handshake
    assert card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, bytes(8), le=256)).sw == 0x6985
    assert card.sequence_counter == 7 and not card.session_open


def test_option_errors_send_nothing() -> None:
    sent: list[CommandApdu] = []

    def send(cmd: CommandApdu) -> ResponseApdu:
        sent.append(cmd)
        return ResponseApdu.of(0x9000, bytes(28))

    with pytest.raises(SecurityLevelError):
        Scp02Host.open(send, keyset(), level=0x33)
    with pytest.raises(SecureChannelError, match="R-MAC"):
        Scp02Host.open(send, keyset(), level=0x11, i=0x55)
    with pytest.raises(SecureChannelError, match="3DES"):
        Scp02Host.open(send, GpKeySet.single(bytes(32), alg=Alg.AES), level=1)
    assert sent == []
    with pytest.raises(InitializeUpdateError, match="SCP00"):
        Scp02Host.open(send, keyset(), level=1)


@pytest.mark.parametrize("n", [0, 27, 29, 32])
def test_truncated_initialize_update(n: int) -> None:
    sent: list[CommandApdu] = []

    def send(cmd: CommandApdu) -> ResponseApdu:
        sent.append(cmd)
        return ResponseApdu.of(0x9000, (bytes(10) + b"\x20\x02" + bytes(20))[:n] + bytes(max(0, n - 32)))

    with pytest.raises(SecureChannelError):
        Scp02Host.open(send, keyset(), level=1)
    assert len(sent) == 1


def test_status_error_on_initialize_update_is_typed() -> None:
    with pytest.raises(CardkitError, match="6A88"):
        Scp02Host.open(lambda c: ResponseApdu.of(0x6A88), keyset(), level=1)


def test_one_base_key_mode() -> None:
    keys = keyset()
    one = Scp02SessionKeys.derive(keys, b"\x00\x01", 0x54)
    three = Scp02SessionKeys.derive(keys, b"\x00\x01", 0x55)
    assert one.s_enc == three.s_enc and one.c_mac != three.c_mac
    assert one.c_mac == Scp02SessionKeys.derive_key(keys.enc, b"\x01\x01", b"\x00\x01")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_parse_never_raises_foreign_errors(data: bytes) -> None:
    try:
        r = Scp02InitResponse.parse(data)
    except InitializeUpdateError:
        return
    assert r.to_bytes() == data and len(data) == 28 and data[11] == 2


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 0xFFFF))
def test_unwrap_random_responses(data: bytes, sw: int) -> None:
    session = Scp02Session(Scp02SessionKeys(bytes(16), bytes(range(16)), bytes(range(8, 24)), bytes(16)),
                           SecurityLevel(0x13), 0x75)
    session.wrap_command(CommandApdu(0x80, 0xCA, 0, 0, b"q", le=256))
    try:
        out = session.unwrap_response(ResponseApdu(data, sw >> 8, sw & 0xFF))
    except SecureChannelError:
        assert session.closed
        return
    assert out.data == data
