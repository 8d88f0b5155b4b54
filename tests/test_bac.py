"""ICAO 9303-11 Basic Access Control (cardkit.sm.bac) against the Appendix D worked example, end to end."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import adjust_des_parity, cbc_encrypt, retail_mac
from cardkit.errors import AuthenticationError
from cardkit.session import CardSession
from cardkit.sm import auth as auth_module
from cardkit.sm.auth import AuthenticationRefused, session_keys
from cardkit.sm.bac import (
    BacResponder,
    MrzInformationError,
    bac_authenticate,
    bac_key_seed,
    bac_keys,
    mrz_check_digit,
    mrz_information,
)
from cardkit.sm.iso import IsoSmChannel, SmError, SmState, SmSuite
from cardkit.transport.virtual import VirtualTransport

V = json.loads((Path(__file__).resolve().parent.parent / "vectors" / "icao9303_bac.json").read_text("utf-8"))
MRZ, KD, AUTH, SM = V["mrz"], V["key_derivation"], V["authentication"], V["secure_messaging"]
EF_COM = bytes.fromhex("60145F01") + bytes.fromhex("04303130365F36063034303030305C026175")


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def feed(*chunks: bytes) -> Callable[[int], bytes]:
    """A deterministic rng that hands out the given byte strings in order."""
    it: Iterator[bytes] = iter(chunks)

    def rng(n: int) -> bytes:
        out = next(it)
        assert len(out) == n
        return out

    return rng


# ---------------------------------------------------------------------------------------------- D.2 keys


def test_check_digits_and_mrz_information() -> None:
    assert mrz_check_digit(MRZ["document_number"]) == MRZ["document_number_check_digit"]
    assert mrz_check_digit(MRZ["date_of_birth"]) == MRZ["date_of_birth_check_digit"]
    assert mrz_check_digit(MRZ["date_of_expiry"]) == MRZ["date_of_expiry_check_digit"]
    assert mrz_information("L898902C", MRZ["date_of_birth"], MRZ["date_of_expiry"]) == MRZ["mrz_information"]
    assert mrz_information("L898902C<", "690806", "940623") == MRZ["mrz_information"]


def test_key_seed_and_keys() -> None:
    info = MRZ["mrz_information"]
    assert hashlib.sha1(info.encode()).hexdigest().upper() == MRZ["sha1"]
    assert bac_key_seed(info) == h(MRZ["k_seed"])
    k_enc, k_mac = bac_keys(info)
    assert k_enc == h(KD["k_enc"]) and k_mac == h(KD["k_mac"])
    assert adjust_des_parity(h(KD["k_enc_before_parity"])) == k_enc


@pytest.mark.parametrize("bad", ["l898902c<369080619406236", "L898902C<36908061940623", "L898902C<3690806194062 6",
                                 "L898902C<3690806194062É6"])
def test_bad_mrz_information_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(MrzInformationError) as info:
        bac_keys(bad)
    assert bad not in str(info.value) and "L898902C" not in str(info.value)


def test_bad_mrz_fields() -> None:
    with pytest.raises(MrzInformationError):
        mrz_information("L898902C", "6908O6", "940623")
    with pytest.raises(MrzInformationError):
        mrz_information("", "690806", "940623")
    with pytest.raises(MrzInformationError):
        mrz_check_digit("abc")
    # A long (TD1 overflow) document number is used whole.
    assert mrz_information("D23145890734", "340712", "950712").startswith("D231458907349")


# ------------------------------------------------------------------------------------ D.3 authentication


def scripted_card(answers: dict[int, bytes], log: list[bytes]) -> Callable[[CommandApdu], ResponseApdu]:
    def send(command: CommandApdu) -> ResponseApdu:
        log.append(command.to_bytes())
        return ResponseApdu.from_bytes(answers[command.ins])

    return send


def test_host_handshake_matches_appendix_d3() -> None:
    sent: list[bytes] = []
    send = scripted_card({0x84: h(AUTH["rnd_icc"]) + b"\x90\x00", 0x82: h(AUTH["response"])}, sent)
    state = bac_authenticate(send, MRZ["mrz_information"], rnd_ifd=h(AUTH["rnd_ifd"]), k_ifd=h(AUTH["k_ifd"]))
    assert sent == [h(AUTH["get_challenge"]), h(AUTH["command"])]
    assert state.suite is SmSuite.DES3_RETAIL
    assert state.ssc_bytes == h(AUTH["ssc"])
    # The session keys are the published ones: the state wraps D.4.1 byte for byte.
    assert state.wrap_command(CommandApdu.from_bytes(h(SM[0]["command"]))).to_bytes() == h(SM[0]["protected_command"])


def test_host_handshake_with_rng_instead_of_explicit_values() -> None:
    send = scripted_card({0x84: h(AUTH["rnd_icc"]) + b"\x90\x00", 0x82: h(AUTH["response"])}, [])
    state = bac_authenticate(send, MRZ["mrz_information"], rng=feed(h(AUTH["rnd_ifd"]), h(AUTH["k_ifd"])))
    assert state.ssc_bytes == h(AUTH["ssc"])


def test_session_keys_and_seed() -> None:
    k_ifd, k_icc = h(AUTH["k_ifd"]), h(AUTH["k_icc"])
    assert bytes(a ^ b for a, b in zip(k_ifd, k_icc, strict=True)) == h(AUTH["k_seed"])
    assert session_keys(SmSuite.DES3_RETAIL, k_ifd, k_icc) == (h(AUTH["ks_enc"]), h(AUTH["ks_mac"]))


def test_card_side_matches_appendix_d3_and_d4() -> None:
    k_enc, k_mac = bac_keys(MRZ["mrz_information"])
    card = BacResponder(k_enc, k_mac, feed(h(AUTH["rnd_icc"]), h(AUTH["k_icc"])))
    assert card.get_challenge() == h(AUTH["rnd_icc"])
    answer, state = card.mutual_authenticate(h(AUTH["e_ifd"]) + h(AUTH["m_ifd"]))
    assert answer == h(AUTH["e_icc"]) + h(AUTH["m_icc"])
    assert answer + b"\x90\x00" == h(AUTH["response"])
    assert state.ssc_bytes == h(AUTH["ssc"])
    for case in SM:
        plain = state.unwrap_command(CommandApdu.from_bytes(h(case["protected_command"])))
        assert plain.to_bytes() == h(case["command"])
        assert state.wrap_response(ResponseApdu.from_bytes(h(case["response"]))).to_bytes() == h(
            case["protected_response"])


def test_decrypted_card_cryptogram_is_r() -> None:
    assert cbc_encrypt(SmSuite.DES3_RETAIL.alg, h(KD["k_enc"]), h(AUTH["r"])) == h(AUTH["e_icc"])
    assert h(AUTH["r"]) == h(AUTH["rnd_icc"]) + h(AUTH["rnd_ifd"]) + h(AUTH["k_icc"])


# --------------------------------------------------------------------------------------- host failures


def _answer_with(r: bytes, *, bad_mac: bool = False) -> bytes:
    e = cbc_encrypt(SmSuite.DES3_RETAIL.alg, h(KD["k_enc"]), r)
    m = retail_mac(h(KD["k_mac"]), e)
    if bad_mac:
        m = bytes([m[0] ^ 1]) + m[1:]
    return e + m + b"\x90\x00"


@pytest.mark.parametrize(("r", "bad_mac", "match"), [
    (h(AUTH["r"]), True, "MAC"),
    (h(AUTH["rnd_icc"]) + bytes(8) + h(AUTH["k_icc"]), False, r"RND\.IFD"),
    (bytes(8) + h(AUTH["rnd_ifd"]) + h(AUTH["k_icc"]), False, "challenge"),
])
def test_host_rejects_a_bad_card_answer(r: bytes, bad_mac: bool, match: str) -> None:
    send = scripted_card({0x84: h(AUTH["rnd_icc"]) + b"\x90\x00", 0x82: _answer_with(r, bad_mac=bad_mac)}, [])
    with pytest.raises(AuthenticationError, match=match):
        bac_authenticate(send, MRZ["mrz_information"], rnd_ifd=h(AUTH["rnd_ifd"]), k_ifd=h(AUTH["k_ifd"]))


def test_host_checks_the_mac_before_decrypting(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decrypt(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("decrypted before the MAC was verified")

    monkeypatch.setattr(auth_module, "cbc_decrypt", no_decrypt)
    send = scripted_card({0x84: h(AUTH["rnd_icc"]) + b"\x90\x00",
                          0x82: _answer_with(h(AUTH["r"]), bad_mac=True)}, [])
    with pytest.raises(AuthenticationError, match="MAC"):
        bac_authenticate(send, MRZ["mrz_information"], rnd_ifd=h(AUTH["rnd_ifd"]), k_ifd=h(AUTH["k_ifd"]))


@pytest.mark.parametrize("answer", [b"\x63\x00", b"\x69\x82", h(AUTH["response"])[:-3] + b"\x90\x00"])
def test_host_failures_from_card_status_and_length(answer: bytes) -> None:
    send = scripted_card({0x84: h(AUTH["rnd_icc"]) + b"\x90\x00", 0x82: answer}, [])
    with pytest.raises(AuthenticationError) as info:
        bac_authenticate(send, MRZ["mrz_information"])
    if len(answer) == 2:
        assert isinstance(info.value, AuthenticationRefused) and info.value.sw == int(answer.hex(), 16)


def test_wrong_mrz_is_refused_by_the_card() -> None:
    card = BacResponder(*bac_keys(MRZ["mrz_information"]))

    def send(command: CommandApdu) -> ResponseApdu:
        return card.respond(command)[0]

    with pytest.raises(AuthenticationRefused) as info:
        bac_authenticate(send, "L898902C<369080619406245")
    assert info.value.sw == 0x6300


# ------------------------------------------------------------------------------- through a CardSession

ATR = bytes.fromhex("3B8880014D52544450415353")


class MiniPassport:
    """Just enough eMRTD for Appendix D: BAC, then SELECT EF.COM and READ BINARY under secure messaging."""

    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self.bac = BacResponder(*bac_keys(MRZ["mrz_information"]), rng)
        self.sm: SmState | None = None
        self.wire: list[bytes] = []

    @property
    def atr(self) -> bytes:
        return ATR

    def power_on(self) -> bytes:
        self.sm = None
        return ATR

    def power_off(self) -> None:
        self.sm = None

    def transmit(self, apdu: bytes) -> bytes:
        self.wire.append(apdu)
        command = CommandApdu.from_bytes(apdu)
        if self.sm is None:
            response, self.sm = self.bac.respond(command)
            return response.to_bytes()
        try:
            plain = self.sm.unwrap_command(command)
        except SmError as exc:
            self.sm = None
            return ResponseApdu.of(exc.sw).to_bytes()
        if plain.ins == 0xA4:
            answer = ResponseApdu.of(0x9000 if plain.data == b"\x01\x1e" else 0x6A82)
        elif plain.ins == 0xB0:
            offset = (plain.p1 << 8) | plain.p2
            answer = ResponseApdu.of(0x9000, EF_COM[offset : offset + (plain.le or 0)])
        else:
            answer = ResponseApdu.of(0x6D00)
        return self.sm.wrap_response(answer).to_bytes()


def test_appendix_d_through_a_card_session() -> None:
    card = MiniPassport(feed(h(AUTH["rnd_icc"]), h(AUTH["k_icc"])))
    session = CardSession(VirtualTransport(card))
    state = bac_authenticate(session.transmit, MRZ["mrz_information"], rnd_ifd=h(AUTH["rnd_ifd"]),
                             k_ifd=h(AUTH["k_ifd"]))
    session.push(IsoSmChannel(state))
    session.send(CommandApdu(0x00, 0xA4, 0x02, 0x0C, b"\x01\x1e", name="SELECT"))
    head = session.send(CommandApdu(0x00, 0xB0, 0x00, 0x00, le=4, name="READ BINARY")).data
    rest = session.send(CommandApdu(0x00, 0xB0, 0x00, 0x04, le=0x12, name="READ BINARY")).data
    assert head == h("60145F01") and head + rest == EF_COM
    assert card.wire == [h(AUTH["get_challenge"]), h(AUTH["command"])] + [h(c["protected_command"]) for c in SM]
    assert state.ssc_bytes == h(SM[-1]["ssc_response"])
