"""ISO 7816-4 secure messaging (cardkit.sm.iso): known answers, host against card, misuse, fuzzing.

Known answers: ICAO 9303-11 Appendix D.4 (3DES). No published AES or SM4 secure-messaging APDU vector was
found, so those suites are checked against an independent re-derivation of the ICAO 9303-11 §9.8.6 formulas
written here from the crypto primitives, and by host/card round trips.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg, cbc_encrypt, cmac, ecb_encrypt, pad_m2, retail_mac
from cardkit.errors import CryptoError, KeyError_, SecureChannelError
from cardkit.sm.iso import (
    IsoSmChannel,
    SmClosedError,
    SmCommandError,
    SmError,
    SmState,
    SmSuite,
    is_protected,
)
from cardkit.sw import SmDataObjectsIncorrect, check

VECTORS = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "icao9303_bac.json").read_text(encoding="utf-8")
)
AUTH = VECTORS["authentication"]
SM_CASES = VECTORS["secure_messaging"]

KEYS = {
    SmSuite.DES3_RETAIL: (bytes.fromhex("979EC13B1CBFE9DCD01AB0FED307EAE5"),
                          bytes.fromhex("F1CB1F1FB5ADF208806B89DC579DC1F8")),
    SmSuite.AES_CMAC: (bytes(range(16)), bytes(range(16, 32))),
    SmSuite.SM4_CMAC: (bytes(range(32, 48)), bytes(range(48, 64))),
}
SUITES = list(SmSuite)
LENGTHS = [0, 1, 15, 16, 17, 239, 255, 1000, 4000]


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def pair(suite: SmSuite, ssc: int = 0x1234) -> tuple[SmState, SmState]:
    """A host state and a card state with the same keys and SSC."""
    k_enc, k_mac = KEYS[suite]
    return SmState(suite, k_enc, k_mac, ssc), SmState(suite, k_enc, k_mac, ssc)


def d3_state() -> SmState:
    return SmState(SmSuite.DES3_RETAIL, h(AUTH["ks_enc"]), h(AUTH["ks_mac"]), int(AUTH["ssc"], 16))


def exchange(host: SmState, card: SmState, command: CommandApdu, response_data: bytes,
             sw: int = 0x9000) -> tuple[CommandApdu, ResponseApdu]:
    """Host wraps, bytes cross the 'wire', card unwraps and answers, host unwraps."""
    wire = CommandApdu.from_bytes(host.wrap_command(command).to_bytes())
    seen = card.unwrap_command(wire)
    protected = ResponseApdu.from_bytes(card.wrap_response(ResponseApdu.of(sw, response_data)).to_bytes())
    return seen, host.unwrap_response(protected)


# ------------------------------------------------------------------------------------ known answers (D.4)


def test_appendix_d4_host_side_byte_for_byte() -> None:
    state = d3_state()
    for case in SM_CASES:
        protected = state.wrap_command(CommandApdu.from_bytes(h(case["command"])))
        assert protected.hex() == case["protected_command"], case["ref"]
        assert state.ssc_bytes.hex().upper() == case["ssc_command"]
        plain = state.unwrap_response(ResponseApdu.from_bytes(h(case["protected_response"])))
        assert plain.hex() == case["response"], case["ref"]
        assert state.ssc_bytes.hex().upper() == case["ssc_response"]
    assert not state.closed


def test_appendix_d4_card_side_byte_for_byte() -> None:
    state = d3_state()
    for case in SM_CASES:
        plain = state.unwrap_command(CommandApdu.from_bytes(h(case["protected_command"])))
        assert plain == CommandApdu.from_bytes(h(case["command"])), case["ref"]
        response = ResponseApdu.from_bytes(h(case["response"]))
        assert state.wrap_response(response).hex() == case["protected_response"], case["ref"]


@pytest.mark.parametrize("case", SM_CASES, ids=[c["ref"] for c in SM_CASES])
def test_appendix_d4_mac_inputs(case: dict[str, Any]) -> None:
    key = h(AUTH["ks_mac"])
    # Printed inputs are already padded: MAC them without adding padding.
    assert retail_mac(key, h(case["mac_input"]), pad=False) == h(case["mac"])
    assert retail_mac(key, h(case["response_mac_input"]), pad=False) == h(case["response_mac"])
    assert h(case["protected_command"]).find(h(case["mac"])) > 0


def test_appendix_d43_errata_printed_input_lacks_the_80_byte() -> None:
    case = next(c for c in SM_CASES if c["ref"] == "D.4.3")
    printed, padded = h(case["response_mac_input_as_printed"]), h(case["response_mac_input"])
    assert padded == printed + b"\x80"
    assert len(printed) % 8 != 0  # not a valid padded MAC input as printed
    assert retail_mac(h(AUTH["ks_mac"]), printed) == h(case["response_mac"])  # pads it ourselves


# -------------------------------------------------------------- AES / SM4 against an independent derivation


def _independent_wrap(suite: SmSuite, k_enc: bytes, k_mac: bytes, ssc: int, cmd: CommandApdu) -> bytes:
    """ICAO 9303-11 §9.8.6, written out again from the primitives for a short even-INS case-4 command."""
    alg = {SmSuite.AES_CMAC: Alg.AES, SmSuite.SM4_CMAC: Alg.SM4}[suite]
    ssc_b = (ssc + 1).to_bytes(16, "big")
    iv = ecb_encrypt(alg, k_enc, ssc_b)
    do87_value = b"\x01" + cbc_encrypt(alg, k_enc, pad_m2(cmd.data, 16), iv)
    do87 = b"\x87" + bytes([len(do87_value)]) + do87_value
    assert cmd.le is not None
    do97 = b"\x97\x01" + bytes([cmd.le % 256])
    header = bytes([cmd.cla | 0x0C, cmd.ins, cmd.p1, cmd.p2])
    mac = cmac(alg, k_mac, pad_m2(ssc_b + pad_m2(header, 16) + do87 + do97, 16))[:8]
    body = do87 + do97 + b"\x8e\x08" + mac
    return header + bytes([len(body)]) + body + b"\x00"


@pytest.mark.parametrize("suite", [SmSuite.AES_CMAC, SmSuite.SM4_CMAC])
def test_cmac_suites_match_independent_derivation(suite: SmSuite) -> None:
    k_enc, k_mac = KEYS[suite]
    cmd = CommandApdu(0x00, 0xD6, 0x00, 0x10, bytes(range(21)), le=0x20)
    state = SmState(suite, k_enc, k_mac, 41)
    assert state.wrap_command(cmd).to_bytes() == _independent_wrap(suite, k_enc, k_mac, 41, cmd)
    assert state.ssc == 42 and len(state.ssc_bytes) == 16


def test_aes_iv_depends_on_ssc() -> None:
    host1, _ = pair(SmSuite.AES_CMAC, ssc=1)
    host2, _ = pair(SmSuite.AES_CMAC, ssc=2)
    cmd = CommandApdu(0, 0xD6, 0, 0, b"A" * 16)
    # Same keys and data, different SSC: the cryptograms differ (IV = E(K_Enc, SSC)).
    assert host1.wrap_command(cmd).data[:19] != host2.wrap_command(cmd).data[:19]


# -------------------------------------------------------------------------------- host against card


def _command(case: int, n: int, ins: int = 0xD6) -> CommandApdu:
    rnd = random.Random(n * 7 + case)
    data = bytes(rnd.getrandbits(8) for _ in range(max(n, 1))) if case in (3, 4) else b""
    le = (max(n, 1) if n <= 65536 else 65536) if case in (2, 4) else None
    return CommandApdu(0x00, ins, 0x01, 0x02, data, le=le)


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
@pytest.mark.parametrize("case", [1, 2, 3, 4])
@pytest.mark.parametrize("n", LENGTHS)
def test_round_trip_every_case_and_length(suite: SmSuite, case: int, n: int) -> None:
    host, card = pair(suite)
    command = _command(case, n)
    answer = os.urandom(n)
    seen, response = exchange(host, card, command, answer)
    assert seen == command
    assert response.data == answer and response.sw == 0x9000
    assert host.ssc == card.ssc == 0x1234 + 2


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_many_exchanges_keep_counters_in_step(suite: SmSuite) -> None:
    host, card = pair(suite)
    for i in range(20):
        seen, response = exchange(host, card, _command(1 + i % 4, i * 13), bytes([i]) * i, sw=0x6282)
        assert response.data == bytes([i]) * i and response.sw == 0x6282
        assert seen.ins == 0xD6
    assert host.ssc == card.ssc == 0x1234 + 40


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_odd_ins_uses_do85_both_ways(suite: SmSuite) -> None:
    host, card = pair(suite)
    command = CommandApdu(0x00, 0xCB, 0x3F, 0xFF, b"\x5c\x02\x5f\x1f", le=256)
    protected = host.wrap_command(command)
    assert protected.data[0] == 0x85
    assert card.unwrap_command(protected) == command
    response = card.wrap_response(ResponseApdu.of(0x9000, b"\x5f\x1f\x01\x00"))
    assert response.data[0] == 0x85
    assert host.unwrap_response(response).data == b"\x5f\x1f\x01\x00"


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_protected_apdu_encoding(suite: SmSuite) -> None:
    host, _ = pair(suite)
    case1 = host.wrap_command(CommandApdu(0x00, 0x44, 0, 0))
    assert case1.cla == 0x0C and case1.le == 256 and not case1.is_extended
    assert case1.data[:2] == b"\x8e\x08" and len(case1.data) == 10
    big = host.wrap_command(CommandApdu(0x00, 0xD6, 0, 0, bytes(1000)))
    assert big.is_extended and big.to_bytes()[4] == 0 and big.le == 65536
    big_le = host.wrap_command(CommandApdu(0x00, 0xB0, 0, 0, le=1000))
    assert big_le.is_extended and b"\x97\x02\x03\xe8" in big_le.data
    max_le = host.wrap_command(CommandApdu(0x00, 0xB0, 0, 0, le=65536))
    assert b"\x97\x02\x00\x00" in max_le.data
    channel = host.wrap_command(CommandApdu(0x03, 0xB0, 0, 0, le=4))
    assert channel.cla == 0x0F  # logical channel bits kept (ISO 7816-4 §5.4.1)
    assert is_protected(channel) and not is_protected(CommandApdu(0x00, 0xB0, 0, 0))
    assert not is_protected(CommandApdu(0x4C, 0xB0, 0, 0))


def test_short_le_256_round_trip_and_extended_le_value() -> None:
    host, card = pair(SmSuite.DES3_RETAIL)
    seen, response = exchange(host, card, CommandApdu(0, 0xB0, 0, 0, le=256), bytes(256))
    assert seen.le == 256 and response.data == bytes(256)
    seen, _ = exchange(host, card, CommandApdu(0, 0xB0, 0, 0, le=65536), b"")
    assert seen.le == 65536


# ------------------------------------------------------------------------------------------- failures


def _assert_closed(state: SmState) -> None:
    assert state.closed
    with pytest.raises(SmClosedError):
        state.wrap_command(CommandApdu(0, 0xB0, 0, 0, le=1))
    with pytest.raises(SmClosedError):
        state.unwrap_response(ResponseApdu.of(0x9000))
    with pytest.raises(SmClosedError):
        state.unwrap_command(CommandApdu(0x0C, 0xB0, 0, 0, b"\x8e\x08" + bytes(8)))
    with pytest.raises(SmClosedError):
        state.wrap_response(ResponseApdu.of(0x9000))


def _protected_response(suite: SmSuite, data: bytes = b"hello") -> tuple[SmState, bytes]:
    host, card = pair(suite)
    card.unwrap_command(host.wrap_command(CommandApdu(0, 0xB0, 0, 0, le=len(data) or None)))
    return host, card.wrap_response(ResponseApdu.of(0x9000, data)).to_bytes()


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_every_single_bit_flip_in_a_response_is_caught(suite: SmSuite) -> None:
    _, raw = _protected_response(suite)
    for i in range(len(raw) - 2):  # every data byte (the trailer is not covered, DO'99' is)
        host, raw = _protected_response(suite)
        tampered = bytearray(raw)
        tampered[i] ^= 0x01
        with pytest.raises(SmError):
            host.unwrap_response(ResponseApdu.from_bytes(bytes(tampered)))
        _assert_closed(host)


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_tampered_command_mac_gives_6988_and_closes_the_card(suite: SmSuite) -> None:
    host, card = pair(suite)
    protected = host.wrap_command(CommandApdu(0, 0xD6, 0, 0, b"data"))
    bad = protected.replace(data=protected.data[:-1] + bytes([protected.data[-1] ^ 0x80]))
    with pytest.raises(SmError) as info:
        card.unwrap_command(bad)
    assert info.value.sw == 0x6988
    _assert_closed(card)


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_wrong_ssc_is_caught(suite: SmSuite) -> None:
    host, _ = pair(suite, ssc=10)
    _, card = pair(suite, ssc=11)
    with pytest.raises(SmError) as info:
        card.unwrap_command(host.wrap_command(CommandApdu(0, 0xB0, 0, 0, le=4)))
    assert info.value.sw == 0x6988
    # A response replayed for the next exchange fails: the SSC has moved on.
    host, raw = _protected_response(suite)
    host.unwrap_response(ResponseApdu.from_bytes(raw))
    host.wrap_command(CommandApdu(0, 0xB0, 0, 0, le=5))
    with pytest.raises(SmError):
        host.unwrap_response(ResponseApdu.from_bytes(raw))
    _assert_closed(host)


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
@pytest.mark.parametrize("cut", [1, 3, 9, 10, 11, 14, 20])
def test_truncated_response(suite: SmSuite, cut: int) -> None:
    host, raw = _protected_response(suite, b"x" * 20)
    body = raw[:-2]
    with pytest.raises(SmError):
        host.unwrap_response(ResponseApdu(body[: len(body) - cut], 0x90, 0x00))
    _assert_closed(host)


def _forged_response(suite: SmSuite, plain_padded: bytes, ssc: int) -> bytes:
    """A response whose MAC is right but whose decrypted DO'87' is ``plain_padded`` (no padding check)."""
    k_enc, k_mac = KEYS[suite]
    alg = {SmSuite.DES3_RETAIL: Alg.DES3, SmSuite.AES_CMAC: Alg.AES, SmSuite.SM4_CMAC: Alg.SM4}[suite]
    ssc_b = ssc.to_bytes(suite.ssc_length, "big")
    iv = None if suite is SmSuite.DES3_RETAIL else ecb_encrypt(alg, k_enc, ssc_b)
    value = b"\x01" + cbc_encrypt(alg, k_enc, plain_padded, iv)
    dos = b"\x87" + bytes([len(value)]) + value + b"\x99\x02\x90\x00"
    if suite is SmSuite.DES3_RETAIL:
        mac = retail_mac(k_mac, ssc_b + dos)
    else:
        mac = cmac(alg, k_mac, pad_m2(ssc_b + dos, 16))[:8]
    return dos + b"\x8e\x08" + mac


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
@pytest.mark.parametrize("tail", [b"\x00", b"\x01", b"\x80\x01"])
def test_bad_padding_under_a_valid_mac(suite: SmSuite, tail: bytes) -> None:
    host, _ = pair(suite)
    host.wrap_command(CommandApdu(0, 0xB0, 0, 0, le=8))
    bs = suite.block
    plain = b"A" * (bs - len(tail)) + tail
    good = _forged_response(suite, pad_m2(b"A" * 3, bs), host.ssc + 1)
    probe, _ = pair(suite)
    probe.wrap_command(CommandApdu(0, 0xB0, 0, 0, le=8))
    assert probe.unwrap_response(ResponseApdu(good, 0x90, 0x00)).data == b"AAA"  # the forger is right
    with pytest.raises(SmError, match="padding"):
        host.unwrap_response(ResponseApdu(_forged_response(suite, plain, host.ssc + 1), 0x90, 0x00))
    _assert_closed(host)


@pytest.mark.parametrize("sw", [0x6987, 0x6988, 0x6982, 0x6A82])
def test_unprotected_error_response_passes_through_and_closes(sw: int) -> None:
    host, _ = pair(SmSuite.DES3_RETAIL)
    host.wrap_command(CommandApdu(0, 0xB0, 0, 0, le=4))
    plain = host.unwrap_response(ResponseApdu.of(sw))
    assert plain.sw == sw and plain.data == b""
    _assert_closed(host)
    if sw == 0x6988:
        with pytest.raises(SmDataObjectsIncorrect):
            check(plain)


def test_plain_9000_without_mac_is_rejected() -> None:
    host, _ = pair(SmSuite.DES3_RETAIL)
    host.wrap_command(CommandApdu(0, 0xB0, 0, 0, le=4))
    with pytest.raises(SmError) as info:
        host.unwrap_response(ResponseApdu.of(0x9000))
    assert info.value.sw == 0x6987
    _assert_closed(host)


def test_card_rejects_unprotected_and_mac_less_commands_with_6987() -> None:
    _, card = pair(SmSuite.AES_CMAC)
    with pytest.raises(SmError) as info:
        card.unwrap_command(CommandApdu(0x00, 0xB0, 0, 0, le=4))
    assert info.value.sw == 0x6987
    _assert_closed(card)
    _, card = pair(SmSuite.AES_CMAC)
    with pytest.raises(SmError) as info:
        card.unwrap_command(CommandApdu(0x0C, 0xB0, 0, 0, b"\x97\x01\x04", le=256))
    assert info.value.sw == 0x6987


def test_card_rejects_unknown_or_misordered_data_objects() -> None:
    host, card = pair(SmSuite.DES3_RETAIL)
    protected = host.wrap_command(CommandApdu(0, 0xD6, 0, 0, b"abc", le=2))
    dos = protected.data
    reordered = dos[11:14] + dos[:11] + dos[14:]  # DO'97' before DO'87'
    with pytest.raises(SmError):
        card.unwrap_command(protected.replace(data=reordered))
    assert card.closed


def test_host_usage_errors_do_not_close_the_channel() -> None:
    host, card = pair(SmSuite.DES3_RETAIL)
    with pytest.raises(SmCommandError):
        host.wrap_command(CommandApdu(0x0C, 0xB0, 0, 0, le=1))
    with pytest.raises(SmCommandError):
        host.wrap_command(CommandApdu(0x40, 0xB0, 0, 0, le=1))
    with pytest.raises(SmCommandError):
        host.wrap_command(CommandApdu(0x00, 0xD6, 0, 0, bytes(65530)))
    assert not host.closed and host.ssc == 0x1234
    seen, _ = exchange(host, card, CommandApdu(0, 0xB0, 0, 0, le=1), b"z")
    assert seen.le == 1


def test_ssc_exhaustion_closes() -> None:
    host = SmState(SmSuite.DES3_RETAIL, *KEYS[SmSuite.DES3_RETAIL], ssc=(1 << 64) - 1)
    with pytest.raises(SmError, match="exhausted"):
        host.wrap_command(CommandApdu(0, 0xB0, 0, 0, le=1))
    assert host.closed


def test_constructor_checks_and_no_keys_in_repr() -> None:
    k_enc, k_mac = KEYS[SmSuite.DES3_RETAIL]
    with pytest.raises(KeyError_):
        SmState(SmSuite.DES3_RETAIL, k_enc, k_mac + bytes(8), 0)
    with pytest.raises(KeyError_):
        SmState(SmSuite.SM4_CMAC, bytes(24), bytes(16), 0)
    with pytest.raises(CryptoError):
        SmState(SmSuite.DES3_RETAIL, k_enc, k_mac, 1 << 64)
    state = SmState(SmSuite.DES3_RETAIL, k_enc, k_mac, 5)
    text = repr(state)
    assert k_enc.hex() not in text.lower() and k_mac.hex() not in text.lower()
    assert "0000000000000005" in text and "open" in text


def test_error_messages_never_hold_key_bytes() -> None:
    host, raw = _protected_response(SmSuite.AES_CMAC)
    tampered = raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:]
    with pytest.raises(SmError) as info:
        host.unwrap_response(ResponseApdu.from_bytes(tampered))
    for key in KEYS[SmSuite.AES_CMAC]:
        assert key.hex() not in str(info.value).lower()


# ----------------------------------------------------------------------------------------- processor


def test_iso_sm_channel_processor() -> None:
    host, card = pair(SmSuite.SM4_CMAC)
    channel = IsoSmChannel(host)
    seen: list[CommandApdu] = []

    def card_send(command: CommandApdu) -> ResponseApdu:
        plain = card.unwrap_command(CommandApdu.from_bytes(command.to_bytes()))
        seen.append(plain)
        return card.wrap_response(ResponseApdu.of(0x9000, plain.data[::-1]))

    response = channel.process(CommandApdu(0x00, 0xD6, 0, 0, b"abcdef", le=6), card_send)
    assert response.data == b"fedcba" and seen[0].data == b"abcdef"
    assert not channel.closed
    response = channel.process(CommandApdu(0x00, 0xB0, 0, 0, le=4), lambda c: ResponseApdu.of(0x6988))
    assert response.sw == 0x6988 and channel.closed
    with pytest.raises(SmClosedError):
        channel.process(CommandApdu(0x00, 0xB0, 0, 0, le=4), card_send)


# ------------------------------------------------------------------------------------------ hypothesis

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(suite=st.sampled_from(SUITES), data=st.binary(max_size=300), sw1=st.integers(0, 255),
       sw2=st.integers(0, 255))
def test_random_responses_only_raise_secure_channel_errors(suite: SmSuite, data: bytes, sw1: int,
                                                           sw2: int) -> None:
    host, _ = pair(suite)
    host.wrap_command(CommandApdu(0, 0xB0, 0, 0, le=4))
    try:
        host.unwrap_response(ResponseApdu(data, sw1, sw2))
    except SecureChannelError:
        assert host.closed
    else:
        assert host.closed and not data  # only a plain error status word passes, and it closes the channel


@FUZZ
@given(suite=st.sampled_from(SUITES), cla=st.sampled_from([0x0C, 0x0D, 0x8C, 0x00, 0x1C]),
       p1=st.integers(0, 255), data=st.binary(max_size=300),
       le=st.one_of(st.none(), st.integers(1, 65536)))
def test_random_commands_only_raise_secure_channel_errors(suite: SmSuite, cla: int, p1: int, data: bytes,
                                                          le: int | None) -> None:
    _, card = pair(suite)
    with pytest.raises(SecureChannelError):
        card.unwrap_command(CommandApdu(cla, 0xB0, p1, 0, data, le=le))
    assert card.closed


@FUZZ
@given(suite=st.sampled_from(SUITES), dos=st.lists(
    st.tuples(st.sampled_from([0x85, 0x87, 0x97, 0x99, 0x8E, 0x01]), st.binary(max_size=40)), max_size=4))
def test_structured_garbage_only_raises_secure_channel_errors(suite: SmSuite,
                                                              dos: list[tuple[int, bytes]]) -> None:
    data = b"".join(bytes([t, len(v)]) + v for t, v in dos)
    host, card = pair(suite)
    host.wrap_command(CommandApdu(0, 0xB0, 0, 0, le=4))
    with pytest.raises(SecureChannelError):
        host.unwrap_response(ResponseApdu(data, 0x90, 0x00))
    with pytest.raises(SecureChannelError):
        card.unwrap_command(CommandApdu(0x0C, 0xB0, 0, 0, data, le=256))
