"""Symmetric mutual authentication for every suite, and external authentication (cardkit.sm.auth).

The 3DES suite is BAC and is pinned to ICAO 9303-11 Appendix D. The AES and SM4 variants are cardkit's own (no
published vectors exist): they are checked against an independent re-derivation from the primitives, host
against card, and by misuse tests.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg, cbc_decrypt, cbc_encrypt, cmac, ecb_encrypt, retail_mac
from cardkit.errors import AuthenticationError, CryptoError, KeyError_
from cardkit.sm.auth import (
    AuthenticationRefused,
    MutualAuthResponder,
    external_authenticate,
    mutual_authenticate,
    session_keys,
    verify_external_auth,
)
from cardkit.sm.iso import SmState, SmSuite
from cardkit.sw import ReferencedDataNotFound, SecurityStatusNotSatisfied

_VECTORS = json.loads((Path(__file__).resolve().parent.parent / "vectors" / "icao9303_bac.json")
                      .read_text("utf-8"))
AUTH, D2 = _VECTORS["authentication"], _VECTORS["key_derivation"]

SUITES = list(SmSuite)
STATIC = {
    SmSuite.DES3_RETAIL: (bytes.fromhex(D2["k_enc"]), bytes.fromhex(D2["k_mac"])),
    SmSuite.AES_CMAC: (bytes(range(1, 17)), bytes(range(17, 33))),
    SmSuite.SM4_CMAC: (bytes(range(33, 49)), bytes(range(49, 65))),
}


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def card_link(responder: MutualAuthResponder) -> tuple[Callable[[CommandApdu], ResponseApdu], list[SmState]]:
    states: list[SmState] = []

    def send(command: CommandApdu) -> ResponseApdu:
        response, state = responder.respond(CommandApdu.from_bytes(command.to_bytes()))
        if state is not None:
            states.append(state)
        return response

    return send, states


def talk(host: SmState, card: SmState, payload: bytes) -> bytes:
    plain = card.unwrap_command(host.wrap_command(CommandApdu(0x00, 0xD6, 0, 0, payload, le=len(payload) or None)))
    return host.unwrap_response(card.wrap_response(ResponseApdu.of(0x9000, plain.data[::-1]))).data


# ----------------------------------------------------------------------------------- host against card


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_mutual_authentication_gives_matching_channels(suite: SmSuite) -> None:
    k_enc, k_mac = STATIC[suite]
    send, states = card_link(MutualAuthResponder(suite, k_enc, k_mac))
    host = mutual_authenticate(send, suite, k_enc, k_mac)
    (card,) = states
    assert host.suite is card.suite is suite
    assert host.ssc == card.ssc
    for n in (0, 1, 16, 17, 300):
        payload = os.urandom(n)
        assert talk(host, card, payload) == payload[::-1]


@pytest.mark.parametrize("suite", [SmSuite.AES_CMAC, SmSuite.SM4_CMAC])
def test_cmac_variants_start_with_a_zero_16_byte_ssc(suite: SmSuite) -> None:
    k_enc, k_mac = STATIC[suite]
    send, _ = card_link(MutualAuthResponder(suite, k_enc, k_mac))
    state = mutual_authenticate(send, suite, k_enc, k_mac)
    assert state.ssc == 0 and state.ssc_bytes == bytes(16)


def test_des3_suite_is_exactly_bac() -> None:
    k_enc, k_mac = STATIC[SmSuite.DES3_RETAIL]
    sent: list[bytes] = []

    def send(command: CommandApdu) -> ResponseApdu:
        sent.append(command.to_bytes())
        return ResponseApdu.from_bytes(h(AUTH["rnd_icc"]) + b"\x90\x00" if command.ins == 0x84 else h(AUTH["response"]))

    state = mutual_authenticate(send, SmSuite.DES3_RETAIL, k_enc, k_mac, rnd_ifd=h(AUTH["rnd_ifd"]),
                                k_ifd=h(AUTH["k_ifd"]))
    assert sent[1] == h(AUTH["command"])
    assert state.ssc_bytes == h(AUTH["ssc"])


@pytest.mark.parametrize("suite", [SmSuite.AES_CMAC, SmSuite.SM4_CMAC])
def test_cmac_variant_messages_match_independent_derivation(suite: SmSuite) -> None:
    k_enc, k_mac = STATIC[suite]
    rnd_icc, rnd_ifd, k_ifd, k_icc = b"\x11" * 8, b"\x22" * 8, b"\x33" * 16, b"\x44" * 16
    card = MutualAuthResponder(suite, k_enc, k_mac, rng=_feed(rnd_icc, k_icc))
    send, states = card_link(card)
    sent: list[CommandApdu] = []

    def spy(command: CommandApdu) -> ResponseApdu:
        sent.append(command)
        return send(command)

    host = mutual_authenticate(spy, suite, k_enc, k_mac, key_ref=0, rnd_ifd=rnd_ifd, k_ifd=k_ifd)
    # Written out again from the primitives: E = CBC(K_Enc, S, IV 0), M = CMAC(K_MAC, E)[:8].
    e_ifd = cbc_encrypt(suite.alg, k_enc, rnd_ifd + rnd_icc + k_ifd)
    expected = CommandApdu(0x00, 0x82, 0x00, 0x00, e_ifd + cmac(suite.alg, k_mac, e_ifd)[:8], le=40)
    assert sent[1].to_bytes() == expected.to_bytes()
    assert sent[1].to_bytes()[4] == 0x28 and sent[1].to_bytes()[-1] == 0x28
    # Session keys: SHA-1(K.IFD xor K.ICC || counter)[:16] (ICAO 9303-11 §9.7.1 with SHA-1, 16 bytes).
    seed = bytes(a ^ b for a, b in zip(k_ifd, k_icc, strict=True))
    ks_enc = hashlib.sha1(seed + b"\x00\x00\x00\x01").digest()[:16]
    ks_mac = hashlib.sha1(seed + b"\x00\x00\x00\x02").digest()[:16]
    assert session_keys(suite, k_ifd, k_icc) == (ks_enc, ks_mac)
    reference = SmState(suite, ks_enc, ks_mac, 0)
    probe = CommandApdu(0x00, 0xB0, 0, 0, le=4)
    assert host.wrap_command(probe) == reference.wrap_command(probe)
    assert states[0].ssc == 0


def _feed(*chunks: bytes) -> Callable[[int], bytes]:
    it = iter(chunks)

    def rng(n: int) -> bytes:
        out = next(it)
        assert len(out) == n
        return out

    return rng


@pytest.mark.parametrize("size", [24, 32])
def test_aes_192_and_256_static_keys_give_matching_session_key_size(size: int) -> None:
    k_enc, k_mac = os.urandom(size), os.urandom(size)
    send, states = card_link(MutualAuthResponder(SmSuite.AES_CMAC, k_enc, k_mac))
    host = mutual_authenticate(send, SmSuite.AES_CMAC, k_enc, k_mac)
    assert talk(host, states[0], b"abc") == b"cba"
    ks_enc, _ = session_keys(SmSuite.AES_CMAC, bytes(16), bytes(16), key_length=size)
    assert len(ks_enc) == size


def test_key_reference_goes_in_p2() -> None:
    k_enc, k_mac = STATIC[SmSuite.AES_CMAC]
    send, states = card_link(MutualAuthResponder(SmSuite.AES_CMAC, k_enc, k_mac, key_ref=0x05))
    mutual_authenticate(send, SmSuite.AES_CMAC, k_enc, k_mac, key_ref=0x05)
    assert states
    with pytest.raises(ReferencedDataNotFound):
        mutual_authenticate(send, SmSuite.AES_CMAC, k_enc, k_mac, key_ref=0x06)


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_wrong_keys_are_refused_with_6300(suite: SmSuite) -> None:
    k_enc, k_mac = STATIC[suite]
    send, states = card_link(MutualAuthResponder(suite, k_enc, k_mac))
    with pytest.raises(AuthenticationRefused) as info:
        mutual_authenticate(send, suite, k_enc, bytes(len(k_mac)))
    assert info.value.sw == 0x6300 and not states
    assert k_mac.hex() not in str(info.value).lower()


def test_host_input_checks() -> None:
    k_enc, k_mac = STATIC[SmSuite.AES_CMAC]
    send, _ = card_link(MutualAuthResponder(SmSuite.AES_CMAC, k_enc, k_mac))
    with pytest.raises(CryptoError):
        mutual_authenticate(send, SmSuite.AES_CMAC, k_enc, k_mac, rnd_ifd=bytes(7))
    with pytest.raises(CryptoError):
        mutual_authenticate(send, SmSuite.AES_CMAC, k_enc, k_mac, k_ifd=bytes(8))
    with pytest.raises(CryptoError):
        mutual_authenticate(send, SmSuite.AES_CMAC, k_enc, k_mac, key_ref=256)
    with pytest.raises(KeyError_):
        mutual_authenticate(send, SmSuite.SM4_CMAC, bytes(32), k_mac)
    with pytest.raises(CryptoError):
        mutual_authenticate(send, SmSuite.AES_CMAC, k_enc, k_mac, rng=lambda n: bytes(n - 1))


def test_short_challenge_is_an_authentication_error() -> None:
    k_enc, k_mac = STATIC[SmSuite.DES3_RETAIL]
    with pytest.raises(AuthenticationError, match="challenge"):
        mutual_authenticate(lambda c: ResponseApdu.of(0x9000, bytes(4)), SmSuite.DES3_RETAIL, k_enc, k_mac)


# -------------------------------------------------------------------------------------- card side


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_responder_failures_and_their_status_words(suite: SmSuite) -> None:
    k_enc, k_mac = STATIC[suite]
    card = MutualAuthResponder(suite, k_enc, k_mac)
    with pytest.raises(AuthenticationRefused) as info:
        card.mutual_authenticate(bytes(40))
    assert info.value.sw == 0x6985  # no challenge
    card.get_challenge()
    with pytest.raises(AuthenticationRefused) as info:
        card.mutual_authenticate(bytes(39))
    assert info.value.sw == 0x6700
    challenge = card.get_challenge()
    # A good MAC over a cryptogram that does not echo the challenge.
    e = cbc_encrypt(suite.alg, k_enc, bytes(8) + bytes(8) + bytes(16))
    m = _mac(suite, k_mac, e)
    with pytest.raises(AuthenticationRefused, match=r"RND\.ICC") as info:
        card.mutual_authenticate(e + m)
    assert info.value.sw == 0x6300
    # One attempt per challenge: the right answer to the consumed challenge is refused.
    good = cbc_encrypt(suite.alg, k_enc, bytes(8) + challenge + bytes(16))
    with pytest.raises(AuthenticationRefused) as info:
        card.mutual_authenticate(good + _mac(suite, k_mac, good))
    assert info.value.sw == 0x6985


def _mac(suite: SmSuite, k_mac: bytes, data: bytes) -> bytes:
    return retail_mac(k_mac, data) if suite is SmSuite.DES3_RETAIL else cmac(suite.alg, k_mac, data)[:8]


def test_responder_apdu_interface() -> None:
    k_enc, k_mac = STATIC[SmSuite.SM4_CMAC]
    card = MutualAuthResponder(SmSuite.SM4_CMAC, k_enc, k_mac)
    assert card.respond(CommandApdu(0, 0x84, 0, 0, le=16))[0].sw == 0x6700
    assert card.respond(CommandApdu(0, 0xB0, 0, 0, le=16))[0].sw == 0x6D00
    response, state = card.respond(CommandApdu(0, 0x84, 0, 0, le=8))
    assert response.sw == 0x9000 and len(response.data) == 8 and state is None
    response, state = card.respond(CommandApdu(0, 0x82, 0, 0, bytes(40), le=40))
    assert response.sw == 0x6300 and state is None
    assert k_enc.hex() not in repr(card).lower()


@settings(max_examples=200, deadline=None)
@given(suite=st.sampled_from(SUITES), data=st.binary(min_size=0, max_size=60))
def test_responder_random_input_only_raises_authentication_refused(suite: SmSuite, data: bytes) -> None:
    k_enc, k_mac = STATIC[suite]
    card = MutualAuthResponder(suite, k_enc, k_mac)
    card.get_challenge()
    with pytest.raises(AuthenticationRefused) as info:
        card.mutual_authenticate(data)
    assert info.value.sw == (0x6300 if len(data) == 40 else 0x6700)


# --------------------------------------------------------------------------------- external authenticate

EXT_KEYS = {Alg.DES3: bytes(range(16)), Alg.AES: bytes(range(32)), Alg.SM4: bytes(range(16, 32))}


def ext_card(alg: Alg, key: bytes, ref: int, log: list[CommandApdu]) -> Callable[[CommandApdu], ResponseApdu]:
    challenge = os.urandom(8)

    def send(command: CommandApdu) -> ResponseApdu:
        log.append(command)
        if command.ins == 0x84:
            return ResponseApdu.of(0x9000, challenge)
        if command.p2 != ref:
            return ResponseApdu.of(0x6A88)
        ok = verify_external_auth(alg, key, challenge, command.data)
        return ResponseApdu.of(0x9000 if ok else 0x6982)

    return send


@pytest.mark.parametrize("alg", list(EXT_KEYS), ids=[a.name for a in EXT_KEYS])
def test_external_authenticate(alg: Alg) -> None:
    key = EXT_KEYS[alg]
    log: list[CommandApdu] = []
    send = ext_card(alg, key, 0x11, log)
    external_authenticate(send, alg, key, 0x11)
    challenge_apdu, ext = log
    assert challenge_apdu.to_bytes() == b"\x00\x84\x00\x00\x08"
    assert ext.header == b"\x00\x82\x00\x11" and ext.le is None and ext.sensitive
    block = 8 if alg is Alg.DES3 else 16
    assert len(ext.data) == block
    challenge = send(CommandApdu(0, 0x84, 0, 0, le=8)).data
    # Independent derivation: ECB(key, challenge || zeros up to the block).
    assert ext.data == ecb_encrypt(alg, key, challenge + bytes(block - 8))
    assert cbc_decrypt(alg, key, ext.data)[:8] == challenge  # one block: CBC with zero IV = ECB


@pytest.mark.parametrize("alg", list(EXT_KEYS), ids=[a.name for a in EXT_KEYS])
def test_external_authenticate_failures_raise_typed_status_errors(alg: Alg) -> None:
    key = EXT_KEYS[alg]
    send = ext_card(alg, key, 0x11, [])
    wrong = bytes(len(key))
    with pytest.raises(SecurityStatusNotSatisfied) as info:
        external_authenticate(send, alg, wrong, 0x11)
    assert info.value.sw == 0x6982 and wrong.hex() not in str(info.value)
    with pytest.raises(ReferencedDataNotFound):
        external_authenticate(send, alg, key, 0x12)


def test_verify_external_auth() -> None:
    key, challenge = EXT_KEYS[Alg.AES], bytes(range(8))
    good = ecb_encrypt(Alg.AES, key, challenge + bytes(8))
    assert verify_external_auth(Alg.AES, key, challenge, good)
    assert not verify_external_auth(Alg.AES, key, challenge, good[:8])
    assert not verify_external_auth(Alg.AES, key, challenge, bytes([good[0] ^ 1]) + good[1:])
    assert not verify_external_auth(Alg.AES, bytes(32), challenge, good)
    assert not verify_external_auth(Alg.AES, key, b"", good)
    with pytest.raises(KeyError_):
        verify_external_auth(Alg.SM4, bytes(8), challenge, good)


def test_external_authenticate_rejects_a_short_challenge() -> None:
    with pytest.raises(AuthenticationError):
        external_authenticate(lambda c: ResponseApdu.of(0x9000, b"\x01\x02"), Alg.DES3, bytes(16), 1)
