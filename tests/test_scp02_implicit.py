"""SCP02 implicit initiation (GPCS 2.3.1 Appendix E, Table E-1 i = 0A/0B/1A/1B): host against card, misuse,
sequence-counter handling, and through the virtual card's issuer security domain in-process.

No published implicit-initiation transcript was found, so the wire bytes are checked against a reference
computed here with ``cryptography`` directly (3DES session keys, retail MAC built from single DES): ICV of the
first C-MAC = MAC over the selected AID, C-MAC on the unmodified APDU, ICV encryption for 1A/1B only.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.commands import gp, iso
from cardkit.commands.gpdata import CardData, parse_get_status
from cardkit.crypto import Alg
from cardkit.errors import AuthenticationError, SecureChannelError
from cardkit.session import CardSession
from cardkit.sm.gp import GpKeySet, SecurityLevel
from cardkit.sm.scp02 import Scp02Card, Scp02Host, aid_icv, check_i, sequence_counter_command
from cardkit.sw import StatusWordError
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual.card import VirtualCard
from cardkit.virtual.fs import VirtualCardError
from cardkit.virtual.gp import CARDKIT_LOAD_FILE, CARDKIT_MODULE, IssuerSecurityDomain, find_isd, install_isd
from cardkit.virtual.image import ImageError, card_from_dict, card_to_dict

IMPLICIT = [0x0A, 0x0B, 0x1A, 0x1B]
ISD = gp.DEFAULT_ISD_AID  # 8 bytes: a whole padding block follows it in the MAC over the AID
APP = bytes.fromhex("F0434B495444530101")  # 9 bytes
KEYS = GpKeySet(bytes(range(0x40, 0x50)), bytes(range(0x60, 0x70)), bytes(range(0x80, 0x90)), 0x20, alg=Alg.DES3)
WRONG = GpKeySet.single(bytes(range(0x10, 0x20)), alg=Alg.DES3, version=0x20)
h = bytes.fromhex


# ------------------------------------------------------------------------ reference (cryptography only)


def _des3(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(TripleDES(key + key[:8] if len(key) == 16 else key), modes.ECB())


def ref_session_key(static: bytes, constant: bytes, counter: int) -> bytes:
    """GPCS 2.3.1 §E.4.1: 3DES-CBC (zero ICV) of constant ‖ counter ‖ 00×12, as two chained ECB blocks."""
    block = constant + counter.to_bytes(2, "big") + bytes(12)
    enc = _des3(static).encryptor()
    first = enc.update(block[:8])
    return first + enc.update(bytes(a ^ b for a, b in zip(first, block[8:], strict=True)))


def ref_des(key8: bytes, block: bytes) -> bytes:
    return _des3(key8 * 3).encryptor().update(block)  # K1 = K2 = K3: single DES


def ref_retail_mac(key: bytes, data: bytes, icv: bytes = bytes(8)) -> bytes:
    """ISO/IEC 9797-1 algorithm 3 with padding method 2, built from single-DES and 3DES block operations."""
    data += b"\x80" + bytes(-(len(data) + 1) % 8)
    chain = icv
    for n in range(0, len(data) - 8, 8):
        chain = ref_des(key[:8], bytes(a ^ b for a, b in zip(chain, data[n:n + 8], strict=True)))
    return _des3(key).encryptor().update(bytes(a ^ b for a, b in zip(chain, data[-8:], strict=True)))


def ref_c_mac_key(keys: GpKeySet, i: int, counter: int) -> bytes:
    return ref_session_key(keys.mac if i & 0x01 else keys.enc, b"\x01\x01", counter)


# ---------------------------------------------------------------------------------------- card harness


class Wire:
    """Host → bytes → :class:`Scp02Card` → a small application that answers GET DATA C1 from the card."""

    def __init__(self, card: Scp02Card) -> None:
        self.card = card
        self.sent: list[CommandApdu] = []
        self.app_seen: list[CommandApdu] = []
        self.tamper: Callable[[CommandApdu], CommandApdu] | None = None

    def app(self, cmd: CommandApdu) -> ResponseApdu:
        self.app_seen.append(cmd)
        if cmd.ins == 0xCA and cmd.p2 == 0xC1:
            return ResponseApdu.of(0x9000, b"\xC1\x02" + self.card.sequence_counter.to_bytes(2, "big"))
        return ResponseApdu.of(0x9000, bytes(reversed(cmd.data)) + bytes([cmd.ins]))

    def __call__(self, cmd: CommandApdu) -> ResponseApdu:
        self.sent.append(cmd)
        if self.tamper is not None:
            cmd = self.tamper(cmd)
        raw = self.card.handle(CommandApdu.from_bytes(cmd.to_bytes()), self.app).to_bytes()
        return ResponseApdu.from_bytes(raw)


def pair(i: int, counter: int = 0x0041, card_keys: GpKeySet = KEYS, aid: bytes = ISD) -> tuple[Scp02Card, Wire]:
    card = Scp02Card(card_keys, counter, i=i, aid=aid)
    return card, Wire(card)


COMMANDS = [CommandApdu(0x80, 0xF2, 0x80, 0x02, b"\x4F\x00", le=256), CommandApdu(0x80, 0xCA, 0x00, 0x66, le=256),
            CommandApdu(0x00, 0xB0, 0x00, 0x00), CommandApdu(0x80, 0xE2, 0x80, 0x00, bytes(range(40)))]


# ------------------------------------------------------------------------------------- Table E-1 / ICV


def test_table_e1_implicit_values() -> None:
    for i in IMPLICIT:
        assert check_i(i) == i
    for i in (0x08, 0x09, 0x18, 0x2A, 0x3B, 0x4A, 0x5B, 0x00, 0x02, 0x03):  # implicit, not in Table E-1
        with pytest.raises(SecureChannelError, match="0A, 0B, 1A or 1B"):
            check_i(i)
    for i in (0x0E, 0x0F, 0x1D, 0x5F):  # explicit with ICV = MAC over AID
        with pytest.raises(SecureChannelError, match="only with implicit"):
            check_i(i)


@pytest.mark.parametrize("aid", [ISD, APP, bytes(5), bytes(range(16))])
def test_aid_icv_is_the_retail_mac_over_the_padded_aid(aid: bytes) -> None:
    key = ref_c_mac_key(KEYS, 0x1B, 7)
    assert aid_icv(key, aid) == ref_retail_mac(key, aid)


@pytest.mark.parametrize("aid", [b"", bytes(4), bytes(17)])
def test_aid_icv_rejects_bad_aids(aid: bytes) -> None:
    with pytest.raises(SecureChannelError, match=r"5\.\.16 bytes"):
        aid_icv(bytes(16), aid)


# ------------------------------------------------------------------------------------- host against card


@pytest.mark.parametrize("i", IMPLICIT, ids=[f"i{i:02X}" for i in IMPLICIT])
def test_wire_bytes_match_the_reference(i: int) -> None:
    card, wire = pair(i)
    chan = Scp02Host.open_implicit(wire, KEYS, aid=ISD, i=i)
    assert wire.sent == [sequence_counter_command()] and sequence_counter_command().to_bytes() == h("80CA00C100")
    assert chan.implicit and chan.sequence_counter == 0x41 and chan.level == SecurityLevel.C_MAC
    assert not card.session_open and card.sequence_counter == 0x41  # nothing opened by reading the counter
    key = ref_c_mac_key(KEYS, i, 0x41)
    icv = ref_retail_mac(key, ISD)  # first ICV: the MAC over the AID, never encrypted
    for n, cmd in enumerate(COMMANDS):
        wire.app_seen.clear()
        response = chan.process(cmd, wire)
        on_wire = wire.sent[-1]
        mac_input = bytes([cmd.cla, cmd.ins, cmd.p1, cmd.p2, len(cmd.data)]) + cmd.data  # unmodified APDU
        mac = ref_retail_mac(key, mac_input, icv)
        assert on_wire.cla == cmd.cla | 0x04 and on_wire.data == cmd.data + mac, (n, on_wire)
        assert on_wire.le == cmd.le and wire.app_seen == [cmd]  # the card saw the plain command
        assert response == wire.app(cmd)
        icv = ref_des(key[:8], mac) if i & 0x10 else mac  # ICV encryption (1A/1B) from the second C-MAC on
        if n == 0:
            assert card.session_open and card.sequence_counter == 0x42  # the session opened with it
    assert chan.next_sequence_counter == 0x42 and chan.dek == card.session_dek
    assert chan.dek == ref_session_key(KEYS.dek if i & 1 else KEYS.enc, b"\x01\x81", 0x41)
    with pytest.raises(SecureChannelError, match="no INITIALIZE UPDATE"):
        _ = chan.init_response


@pytest.mark.parametrize("i", IMPLICIT)
def test_one_base_key_or_three_keys(i: int) -> None:
    other_mac = GpKeySet(KEYS.enc, bytes(range(0xA0, 0xB0)), bytes(range(0xB0, 0xC0)), 0x20, alg=Alg.DES3)
    card, wire = pair(i, card_keys=other_mac)  # same ENC key, other MAC and DEK keys
    chan = Scp02Host.open_implicit(wire, KEYS, aid=ISD, i=i)
    if i & 0x01:  # three keys: the C-MAC key comes from the MAC key, which differs
        with pytest.raises(AuthenticationError):
            chan.process(COMMANDS[0], wire)
        assert not card.session_open
    else:  # one base key: every session key comes from ENC
        assert chan.process(COMMANDS[0], wire).ok and card.session_open


@pytest.mark.parametrize("i", IMPLICIT)
def test_wrong_keys_refuse_the_first_command_and_run_nothing(i: int) -> None:
    card, wire = pair(i)
    chan = Scp02Host.open_implicit(wire, WRONG, aid=ISD, i=i)
    wire.app_seen.clear()
    with pytest.raises(AuthenticationError, match="6982") as exc:
        chan.process(COMMANDS[3], wire)
    assert wire.app_seen == [] and not card.session_open and card.sequence_counter == 0x41
    message = str(exc.value)
    assert KEYS.enc.hex() not in message.lower() and WRONG.enc.hex() not in message.lower()
    assert chan.closed
    n = len(wire.sent)
    with pytest.raises(SecureChannelError, match="closed"):
        chan.process(COMMANDS[0], wire)
    assert len(wire.sent) == n  # nothing more went to the card


def test_other_selected_aid_is_refused() -> None:
    card, wire = pair(0x1A, aid=APP)
    with pytest.raises(AuthenticationError, match=ISD.hex().upper()):
        Scp02Host.open_implicit(wire, KEYS, aid=ISD, i=0x1A).process(COMMANDS[0], wire)
    assert not card.session_open
    assert Scp02Host.open_implicit(wire, KEYS, aid=APP, i=0x1A).process(COMMANDS[0], wire).ok


def test_counter_across_sessions() -> None:
    card, wire = pair(0x1B, counter=0x00FE)
    first = Scp02Host.open_implicit(wire, KEYS, aid=ISD, i=0x1B)
    first.process(COMMANDS[1], wire)
    assert card.sequence_counter == 0x00FF == first.next_sequence_counter
    # A new session while the first is open: its C-MAC fails under the open session, which ends (6982).
    stale = Scp02Host.open_implicit(wire, KEYS, aid=ISD, i=0x1B, sequence_counter=first.next_sequence_counter)
    with pytest.raises(AuthenticationError):
        stale.process(COMMANDS[1], wire)
    assert not card.session_open and card.sequence_counter == 0x00FF
    n = len(wire.sent)
    second = Scp02Host.open_implicit(wire, KEYS, aid=ISD, i=0x1B, sequence_counter=first.next_sequence_counter)
    assert len(wire.sent) == n  # no GET DATA when the counter is given
    second.process(COMMANDS[0], wire)
    assert card.sequence_counter == 0x0100 and second.sequence_counter == 0x00FF
    card.close()  # the application is deselected
    replay = Scp02Host.open_implicit(wire, KEYS, aid=ISD, i=0x1B, sequence_counter=0x00FF)  # an old counter
    with pytest.raises(AuthenticationError):
        replay.process(COMMANDS[0], wire)
    assert card.sequence_counter == 0x0100 and not card.session_open
    third = Scp02Host.open_implicit(wire, KEYS, aid=ISD, i=0x1B, sequence_counter=h("0100"))
    assert third.process(COMMANDS[0], wire).ok and card.sequence_counter == 0x0101


def test_last_counter_values() -> None:
    card, wire = pair(0x1A, counter=0xFFFE)
    Scp02Host.open_implicit(wire, KEYS, aid=ISD).process(COMMANDS[0], wire)
    assert card.sequence_counter == 0xFFFF
    card.close()
    with pytest.raises(SecureChannelError, match="exhausted"):
        Scp02Host.open_implicit(wire, KEYS, aid=ISD)  # read FFFF with GET DATA: refused before any C-MAC
    sent = len(wire.sent)
    chan = Scp02Host.open_implicit(wire, KEYS, aid=ISD, sequence_counter=0xFFFE)
    with pytest.raises(AuthenticationError):
        chan.process(COMMANDS[0], wire)
    assert len(wire.sent) == sent + 1 and card.sequence_counter == 0xFFFF
    # the card side refuses to start a session it could not count
    host = Scp02Host.open_implicit(lambda c: ResponseApdu.of(0x9000, h("C1020001")), KEYS, aid=ISD)
    assert card.handle(host.wrap(COMMANDS[0]), wire.app).sw == 0x6982


def test_tampered_later_command_closes_the_session() -> None:
    card, wire = pair(0x1A)
    chan = Scp02Host.open_implicit(wire, KEYS, aid=ISD)
    chan.process(COMMANDS[0], wire)
    wire.tamper = lambda c: c.replace(data=c.data[:-1] + bytes([c.data[-1] ^ 1]))
    wire.app_seen.clear()
    assert chan.process(COMMANDS[1], wire).sw == 0x6982  # not the first command: a plain refusal
    assert wire.app_seen == [] and not card.session_open


def test_unprotected_command_in_an_implicit_session_closes_it() -> None:
    card, wire = pair(0x0B)
    Scp02Host.open_implicit(wire, KEYS, aid=ISD, i=0x0B).process(COMMANDS[0], wire)
    assert card.handle(CommandApdu(0x80, 0xCA, 0x00, 0x66, le=256), wire.app).sw == 0x6982
    assert not card.session_open
    assert card.handle(CommandApdu(0x80, 0xCA, 0x00, 0x66, le=256), wire.app).ok  # plain again, no session


# ------------------------------------------------------------------------------------------------ misuse


def test_argument_errors_send_nothing() -> None:
    sent: list[CommandApdu] = []

    def send(cmd: CommandApdu) -> ResponseApdu:
        sent.append(cmd)
        return ResponseApdu.of(0x9000, h("C1020005"))

    cases: list[tuple[dict[str, object], str]] = [
        ({"i": 0x55}, "explicit initiation: use Scp02Host.open"), ({"i": 0x2A}, "0A, 0B, 1A or 1B"),
        ({"aid": bytes(4)}, "5..16 bytes"), ({"aid": bytes(17)}, "5..16 bytes"), ({"aid": "A000"}, "got str"),
        ({"sequence_counter": -1}, "0000..FFFF"), ({"sequence_counter": 0x10000}, "0000..FFFF"),
        ({"sequence_counter": True}, "0000..FFFF"), ({"sequence_counter": h("000001")}, "2 bytes"),
        ({"sequence_counter": 0xFFFF}, "exhausted"),
    ]
    for kwargs, message in cases:
        args: dict[str, object] = {"aid": ISD, **kwargs}
        with pytest.raises(SecureChannelError, match=re.escape(message)):
            Scp02Host.open_implicit(send, KEYS, **args)  # type: ignore[arg-type]
    with pytest.raises(SecureChannelError, match="3DES"):
        Scp02Host.open_implicit(send, GpKeySet.single(bytes(16), alg=Alg.AES), aid=ISD)
    assert sent == []


@pytest.mark.parametrize("answer", ["C10200", "C103000005", "C2020005", "0005", "", "C1020005FF"])
def test_malformed_counter_answer(answer: str) -> None:
    with pytest.raises(SecureChannelError, match="C1 02"):
        Scp02Host.open_implicit(lambda c: ResponseApdu.of(0x9000, h(answer)), KEYS, aid=ISD)


def test_refused_get_data_is_a_typed_error() -> None:
    with pytest.raises(StatusWordError, match="6A88"):
        Scp02Host.open_implicit(lambda c: ResponseApdu.of(0x6A88), KEYS, aid=ISD)


def test_card_side_errors() -> None:
    with pytest.raises(SecureChannelError, match="explicitly"):
        Scp02Card(KEYS, i=0x55, aid=ISD).start_implicit(COMMANDS[0])
    with pytest.raises(SecureChannelError, match="AID"):
        Scp02Card(KEYS, i=0x1A).start_implicit(COMMANDS[0])
    with pytest.raises(SecureChannelError, match=r"5\.\.16"):
        Scp02Card(KEYS, i=0x1A, aid=bytes(3))
    card = Scp02Card(KEYS, 3, i=0x55, aid=ISD)  # an explicit card refuses a C-MAC'd command without a session
    chan = Scp02Host.open_implicit(lambda c: ResponseApdu.of(0x9000, h("C1020003")), KEYS, aid=ISD)
    assert card.handle(chan.wrap(COMMANDS[0]), lambda c: ResponseApdu.of(0x9000)).sw == 0x6982
    assert card.sequence_counter == 3


# ------------------------------------------------------------------------------- the virtual ISD, in-process


def make(i: int = 0x1A, **kw: object) -> tuple[VirtualCard, IssuerSecurityDomain, CardSession]:
    card = VirtualCard(b"\xC0\x00\x01\x1A", seed=5)
    isd = install_isd(card, KEYS, 2, i, **kw)  # type: ignore[arg-type]
    return card, isd, CardSession(VirtualTransport(card))


def _put_data(value: bytes) -> CommandApdu:
    return CommandApdu(0x00, 0xDA, 0x01, 0x01, value, name="PUT DATA")  # ISO object 0101: issuer only


@pytest.mark.parametrize("i", IMPLICIT)
def test_isd_get_status_under_the_implicit_channel(i: int) -> None:
    _card, isd, s = make(i)
    assert CardData.parse(s.send(gp.get_data_gp(0x66)).data).scp == ((2, i),)  # announced in card data
    ch = Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD, i=i)
    assert ch.sequence_counter == 0
    s.push(ch)
    for _ in range(3):
        entries = parse_get_status(s.send(gp.get_status("isd")).data, "isd")
        assert entries[0].aid == ISD and entries[0].life_cycle == 0x01
    entry = isd.key_sets[0x20]
    assert entry.counter == 1 and entry.tries_left == isd.max_tries
    s.remove(ch)
    assert s.transmit(gp.get_status("isd")).sw == 0x6982  # without the C-MAC: refused, the session ends
    # a garbage C-MAC meets the implicit gate: refused as incorrect secure messaging
    assert s.transmit(CommandApdu(0x84, 0xF2, 0x80, 0x02, h("4F00") + bytes(8), le=256)).sw == 0x6988


def test_isd_grants_what_an_explicit_c_mac_session_grants() -> None:
    card, isd, s = make()
    assert s.transmit(_put_data(b"one")).sw == 0x6982
    ch = Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD)
    s.push(ch)
    s.send(_put_data(b"two"))  # the first command: ISO file system, issuer condition
    assert card.data_objects[0x0101] == b"two"
    s.send(gp.install_for_install(CARDKIT_LOAD_FILE, CARDKIT_MODULE, APP))
    s.send(gp.set_status("isd", 0x07))
    assert isd.apps[APP].aid == APP and isd.life_cycle == 0x07
    s.send(iso.select_mf(p2_fci="none"))  # deselects the ISD: the session ends
    with pytest.raises(StatusWordError, match="6988"):
        s.send(_put_data(b"three"))
    assert card.data_objects[0x0101] == b"two"


def test_isd_wrong_keys_run_nothing_spend_tries_and_lock() -> None:
    _card, isd, s = make(max_tries=3)
    entry = isd.key_sets[0x20]
    for left in (2, 1):
        ch = Scp02Host.open_implicit(s.transmit, WRONG, aid=ISD)
        s.push(ch)
        with pytest.raises(AuthenticationError, match="6988"):
            s.send(gp.set_status("isd", 0x07))
        s.remove(ch)
        assert isd.life_cycle == 0x01 and entry.tries_left == left and entry.counter == 0
    good = Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD)  # GET DATA: a plain command re-arms the card
    s.push(good)
    s.send(gp.set_status("isd", 0x07))
    assert isd.life_cycle == 0x07 and entry.tries_left == 3 and entry.counter == 1
    s.remove(good)
    s.send(gp.select_isd())
    for _ in range(3):
        ch = Scp02Host.open_implicit(s.transmit, WRONG, aid=ISD)
        with pytest.raises(AuthenticationError):
            ch.process(gp.get_status("isd"), s.transmit)
    assert entry.blocked
    locked = Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD)  # even the right keys
    with pytest.raises(AuthenticationError):
        locked.process(gp.get_status("isd"), s.transmit)
    assert entry.counter == 1


def test_isd_refuses_initialize_update_without_spending_a_try() -> None:
    _card, isd, s = make(0x0B)
    assert s.transmit(gp.initialize_update(bytes(8))).sw == 0x6985
    assert isd.key_sets[0x20].tries_left == isd.max_tries
    with pytest.raises(SecureChannelError, match="open_implicit"):
        Scp02Host.open(s.transmit, KEYS, level=0x01, i=0x0B)


def test_isd_counter_persists_across_sessions_and_resets() -> None:
    card, isd, s = make(0x1B)
    for n in range(3):
        s.send(gp.select_isd())  # ends the previous session
        assert s.send(gp.get_data_gp(0xC1)).data == h("C102") + n.to_bytes(2, "big")
        ch = Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD, i=0x1B)
        assert ch.process(gp.get_status("isd"), s.transmit).ok
    card.power_off()
    card.power_on()
    assert isd.key_sets[0x20].counter == 3
    # Right after a reset the implicitly selected ISD accepts an implicit session with its first command.
    early = Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD, i=0x1B, sequence_counter=3)
    assert early.process(gp.get_status("isd"), s.transmit).ok and isd.key_sets[0x20].counter == 4
    s.send(gp.select_isd())
    ch = Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD, i=0x1B, sequence_counter=early.next_sequence_counter)
    assert ch.process(gp.get_status("isd"), s.transmit).ok and isd.key_sets[0x20].counter == 5


def test_isd_application_and_logical_channel() -> None:
    _card, isd, s = make(0x1A)
    s.push(ch := Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD))
    s.send(gp.install_for_install(CARDKIT_LOAD_FILE, CARDKIT_MODULE, APP))
    s.remove(ch)
    s.send(gp.select_isd(APP))  # the application: its own AID is in the ICV (the ISD reports the counter)
    wrong_aid = Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD, sequence_counter=1)
    with pytest.raises(AuthenticationError):
        wrong_aid.process(gp.store_data(0, gp.dgi(0x0101, b"x"), last=True, structure="dgi"), s.transmit)
    s.send(gp.select_isd(APP))
    app = Scp02Host.open_implicit(s.transmit, KEYS, aid=APP, sequence_counter=isd.key_sets[0x20].counter)
    app.process(gp.store_data(0, gp.dgi(0x0101, b"x"), last=True, structure="dgi"), s.transmit)
    assert isd.apps[APP].data and isd.key_sets[0x20].counter == 2
    s.send(gp.select_isd())
    number = s.send(CommandApdu(0x00, 0x70, 0x00, 0x00, le=1)).data[0]  # opened from the ISD: selected there too
    on_1 = Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD, sequence_counter=2)
    assert on_1.process(CommandApdu(0x80 | number, 0xF2, 0x80, 0x02, h("4F00"), le=256), s.transmit).ok


def test_isd_image_round_trip_and_install_checks() -> None:
    card, _isd, s = make(0x0A)
    Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD, i=0x0A).process(gp.get_status("isd"), s.transmit)
    image = card_to_dict(card)
    assert image["gp"]["i"]["02"] == 0x0A
    copy = card_from_dict(image)
    isd2 = find_isd(copy)
    assert isd2 is not None and isd2.i[2] == 0x0A and isd2.key_sets[0x20].counter == 1
    s2 = CardSession(VirtualTransport(copy))
    assert Scp02Host.open_implicit(s2.transmit, KEYS, aid=ISD, i=0x0A).process(gp.get_status("isd"), s2.transmit).ok
    for bad in (0x0E, 0x2A, 0x1C):
        with pytest.raises(VirtualCardError):
            install_isd(VirtualCard(b"\x00\x00\x00\x02"), KEYS, 2, bad)
        with pytest.raises(ImageError, match="gp image: SCP02 i="):
            card_from_dict({**image, "gp": {**image["gp"], "i": {"02": bad, "03": 0x70}}})


def test_isd_exhausted_counter_spends_no_try() -> None:
    _card, isd, s = make(0x1A)
    entry = isd.key_sets[0x20]
    entry.counter = 0xFFFF
    with pytest.raises(SecureChannelError, match="exhausted"):
        Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD)  # GET DATA answers FFFF: nothing more is sent
    chan = Scp02Host.open_implicit(s.transmit, KEYS, aid=ISD, sequence_counter=0xFFFE)
    with pytest.raises(AuthenticationError, match="6988"):
        chan.process(gp.get_status("isd"), s.transmit)
    assert entry.tries_left == isd.max_tries and entry.counter == 0xFFFF
