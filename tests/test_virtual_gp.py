"""The virtual card's GlobalPlatform issuer security domain, driven in-process by cardkit's host side.

Every test talks APDUs to a :class:`~cardkit.virtual.card.VirtualCard` through a CardSession; the host side of
SCP02/SCP03 (cardkit.sm) is the real one, so each handshake checks both implementations against each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.commands import gp, iso
from cardkit.commands.gpdata import CardData, Cplc, KeyInfo, parse_get_status
from cardkit.crypto import Alg, pad_m2
from cardkit.errors import AuthenticationError, SecureChannelError
from cardkit.issuance.gp import get_status_all, open_gp_channel, put_key_set, store_dgis
from cardkit.session import CardSession
from cardkit.sm.gp import GpKeySet
from cardkit.sm.putkey import encrypt_with_dek, put_key_apdu
from cardkit.sm.scp02 import Scp02Host
from cardkit.sm.scp03 import Scp03Channel, Scp03Host
from cardkit.sw import ClaNotSupported, ConditionsOfUseNotSatisfied, SecurityStatusNotSatisfied, StatusWordError
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual.card import VirtualCard
from cardkit.virtual.gp import (
    CARDKIT_LOAD_FILE,
    CARDKIT_MODULE,
    IssuerSecurityDomain,
    find_isd,
    gp_from_dict,
    gp_to_dict,
    install_isd,
)
from cardkit.virtual.gp_store import sensitive_digest
from cardkit.virtual.image import card_from_dict, card_to_dict

ISD = gp.DEFAULT_ISD_AID
APP = bytes.fromhex("F0434B495444530101")
# The GlobalPlatform test key (well known, GPCS test key sets): TEST ONLY.
GP_TEST = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
AES1 = GpKeySet.single(GP_TEST, alg=Alg.AES, version=0x01)
DES1 = GpKeySet.single(GP_TEST, alg=Alg.DES3, version=0x20)
NEW_AES = GpKeySet(bytes(range(16)), bytes(range(16, 32)), bytes(range(32, 48)), 0x02, alg=Alg.AES)
WRONG_AES = GpKeySet.single(bytes(16), alg=Alg.AES, version=0x01)


def make(keys: GpKeySet = AES1, *, scp: int = 3, i: int | None = None, **kw: object) -> tuple[
        VirtualCard, IssuerSecurityDomain, CardSession]:
    card = VirtualCard(b"\xC0\x00\x00\x2A", seed=11)
    isd = install_isd(card, keys, scp, i, **kw)  # type: ignore[arg-type]
    return card, isd, CardSession(VirtualTransport(card))


def recorder(session: CardSession, sent: list[CommandApdu]) -> Callable[[CommandApdu], ResponseApdu]:
    def send(cmd: CommandApdu) -> ResponseApdu:
        sent.append(cmd)
        return session.transmit(cmd)

    return send


def sw(session: CardSession, cmd: CommandApdu) -> int:
    return session.transmit(cmd).sw


# ------------------------------------------------------------------------------------------ handshakes


@pytest.mark.parametrize("i", [0x70, 0x71, 0x60, 0x00])
@pytest.mark.parametrize("level", [0x00, 0x01, 0x03, 0x11, 0x13, 0x33])
def test_scp03_every_level(i: int, level: int) -> None:
    _card, isd, s = make(i=i)
    s.send(gp.select_isd())
    if (level & 0x10 and not i & 0x20) or (level & 0x20 and not i & 0x40):
        with pytest.raises(SecureChannelError, match="does not offer"):
            Scp03Host.open(s.transmit, AES1, level=level, isd_aid=ISD, s16=bool(i & 1))
        return
    ch = Scp03Host.open(s.transmit, AES1, level=level, isd_aid=ISD, s16=bool(i & 1))
    assert ch.s16 == bool(i & 1) and int(ch.level) == level
    s.push(ch)
    for _ in range(3):  # several commands: MAC chaining and encryption counters stay in step
        entries = parse_get_status(s.send(gp.get_status("isd")).data, "isd")
        assert entries[0].aid == ISD and entries[0].life_cycle == 0x01
    assert isd.key_sets[1].tries_left == isd.max_tries  # restored by the successful EXTERNAL AUTHENTICATE


@pytest.mark.parametrize(("i", "level"), [(0x55, 0x00), (0x55, 0x01), (0x55, 0x03), (0x15, 0x03), (0x75, 0x11),
                                          (0x75, 0x13), (0x35, 0x13), (0x57, 0x03)])
def test_scp02_every_level(i: int, level: int) -> None:
    _card, isd, s = make(DES1, scp=2, i=i)
    assert CardData.parse(s.send(gp.get_data_gp(0x66)).data).scp == ((2, i),)
    ch = Scp02Host.open(s.transmit, DES1, level=level, i=i)
    s.push(ch)
    for _ in range(3):
        assert parse_get_status(s.send(gp.get_status("isd")).data, "isd")[0].aid == ISD
    assert isd.key_sets[0x20].counter == 1  # SCP02: the sequence counter moves once per opened session


def test_sequence_counter_persists_and_is_reported() -> None:
    card, _isd, s = make()
    for n in range(3):
        s.send(gp.select_isd())
        assert s.send(gp.get_data_gp(0xC1)).data == bytes.fromhex("C103") + n.to_bytes(3, "big")
        Scp03Host.open(s.transmit, AES1, level=0x01, isd_aid=ISD)
    card.power_off()
    card.power_on()
    assert s.send(gp.get_data_gp(0xC1)).data == bytes.fromhex("C103000003")


def test_wrong_key_spends_tries_without_external_authenticate_and_locks() -> None:
    _card, isd, s = make(max_tries=3)
    for left in (2, 1):
        sent: list[CommandApdu] = []
        with pytest.raises(AuthenticationError, match="card cryptogram"):
            Scp03Host.open(recorder(s, sent), WRONG_AES, level=0x33, isd_aid=ISD)
        assert [c.ins for c in sent] == [0x50]  # nothing after INITIALIZE UPDATE
        assert isd.key_sets[1].tries_left == left
    Scp03Host.open(s.transmit, AES1, level=0x01, isd_aid=ISD)  # a success gives every try back
    assert isd.key_sets[1].tries_left == 3
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            Scp03Host.open(s.transmit, WRONG_AES, level=0x01, isd_aid=ISD)
    assert isd.key_sets[1].blocked
    assert sw(s, gp.initialize_update(bytes(8), 1)) == 0x6983
    with pytest.raises(Exception, match="6983"):
        Scp03Host.open(s.transmit, AES1, level=0x01, isd_aid=ISD)  # even the right keys


def test_card_rejects_a_bad_host_cryptogram_and_keeps_the_try_spent() -> None:
    _card, isd, s = make(max_tries=5)
    assert s.transmit(gp.initialize_update(bytes(8), 0)).sw == 0x9000
    bad = CommandApdu(0x84, 0x82, 0x01, 0x00, bytes(16), name="EXTERNAL AUTHENTICATE")
    assert sw(s, bad) in (0x6300, 0x6982)
    assert isd.key_sets[1].tries_left == 4
    assert sw(s, bad) == 0x6882  # no handshake pending any more: the card's SM gate refuses
    assert sw(s, CommandApdu(0x80, 0x82, 0x01, 0x00, bytes(16))) == 0x6985


def test_unknown_key_version_and_bad_p2() -> None:
    _, _, s = make()
    assert sw(s, gp.initialize_update(bytes(8), 0x33)) == 0x6A88
    assert sw(s, gp.initialize_update(bytes(8), 0, key_id=1)) == 0x6A86
    assert sw(s, gp.initialize_update(bytes(16), 0)) == 0x6700  # S8 card


def test_unprotected_command_in_a_cmac_session_closes_it() -> None:
    _, _, s = make()
    ch = Scp03Host.open(s.transmit, AES1, level=0x01, isd_aid=ISD)
    assert sw(s, gp.get_status("isd")) == 0x6982  # sent around the channel, without C-MAC
    s.push(ch)
    with pytest.raises(ClaNotSupported, match="6882"):  # the session is gone: no secure messaging any more
        s.send(gp.get_status("isd"))


def test_management_needs_a_session() -> None:
    _, _, s = make()
    for cmd in (gp.get_status("isd"), gp.set_status("isd", 0x07), gp.install_for_personalization(APP),
                gp.store_data(0, b"\x42\x01\x01", last=True, structure="ber-tlv")):
        assert sw(s, cmd) == 0x6982


# --------------------------------------------------------------------------------------------- GET DATA


def test_get_data_objects_without_keys() -> None:
    card, isd, s = make()
    fci = s.send(gp.select_isd()).data
    assert fci == bytes.fromhex("6F148408A000000151000000A5089F7001019F6501FF")
    cplc = Cplc.parse(s.send(gp.get_data_gp(0x9F7F)).data)
    assert cplc.ic_serial_number == card.serial
    cd = CardData.parse(s.send(gp.get_data_gp(0x66)).data)
    assert cd.gp_version == "2.3.1" and cd.scp == ((3, 0x70),)
    ki = KeyInfo.parse(s.send(gp.get_data_gp(0xE0)).data)
    assert [(e.key_id, e.key_version, e.components[0].key_type, e.components[0].length) for e in ki.entries] == [
        (1, 1, 0x88, 16), (2, 1, 0x88, 16), (3, 1, 0x88, 16)]
    assert sw(s, gp.get_data_gp(0x42)) == 0x6A88  # IIN not personalized
    assert s.send(iso.get_data(0x0045)).data == card.serial  # CLA 00: the ISO OS answers its own object
    assert isd.kdd == ISD[-2:] + cplc.ic_fabricator + card.serial + cplc.ic_batch_id


def test_empty_aid_select_and_implicit_selection() -> None:
    card, _, s = make()
    assert s.send(gp.get_data_gp(0x66)).ok  # implicitly selected after the reset
    s.send(iso.select_mf())
    assert sw(s, gp.get_data_gp(0x66)) == 0x6E00  # MF selected: the ISO OS does not take CLA 80 GET DATA
    s.reset(cold=True)  # after a reset the ISD is selected again
    assert s.send(gp.get_data_gp(0x9F7F)).ok
    s.push(Scp03Host.open(s.transmit, AES1, level=0x01, isd_aid=ISD))
    s.send(gp.install_for_install(CARDKIT_LOAD_FILE, CARDKIT_MODULE, APP))
    s.remove(s.processors[0])
    assert s.send(gp.select_isd(APP)).data[4:4 + len(APP)] == APP
    assert sw(s, gp.get_data_gp(0x66)) == 0x6A88  # the application has no object 0066
    assert s.send(gp.select_isd(None)).data.startswith(bytes.fromhex("6F148408") + ISD)  # empty AID → the ISD
    assert s.send(gp.get_data_gp(0x66)).ok
    assert find_isd(card) is not None


def test_manage_channel_from_the_isd_selects_it_on_the_new_channel() -> None:
    _, _, s = make()
    number = s.send(CommandApdu(0x00, 0x70, 0x00, 0x00, le=1)).data[0]
    assert number == 1
    assert s.send(CommandApdu(0x81, 0xCA, 0x00, 0x66, le=256)).data.startswith(b"\x66")  # GET DATA on channel 1
    assert s.transmit(CommandApdu(0x81, 0x50, 0x00, 0x00, bytes(8), le=256)).sw == 0x9000  # INITIALIZE UPDATE
    s.send(CommandApdu(0x00, 0x70, 0x80, 0x01))  # close channel 1
    assert sw(s, CommandApdu(0x81, 0xCA, 0x00, 0x66, le=256)) == 0x6881


def test_store_iin_cin_in_the_isd() -> None:
    _, _isd, s = make()
    s.push(Scp03Host.open(s.transmit, AES1, level=0x03, isd_aid=ISD))
    s.send(gp.store_data(0, bytes.fromhex("42030F434B 4504C000002A"), last=True, structure="ber-tlv"))
    assert s.send(gp.get_data_gp(0x42)).data == bytes.fromhex("42030F434B")
    assert s.send(gp.get_data_gp(0x45)).data == bytes.fromhex("4504C000002A")
    assert sw(s, gp.store_data(0, bytes.fromhex("5F2001AA"), last=True, structure="ber-tlv")) == 0x6A88
    assert sw(s, gp.store_data(0, bytes.fromhex("010101AA"), last=True, structure="dgi")) == 0x6A80


# ---------------------------------------------------------------------------------------------- PUT KEY


def test_put_key_add_then_replace_with_kcv_check() -> None:
    _, isd, s = make()
    ch = open_gp_channel(s, AES1, level=0x33)
    put_key_set(s, ch, NEW_AES)  # adds key set 02 (P1 00); KCVs checked by the host
    assert sorted(isd.key_sets) == [1, 2]
    for keys in (AES1, NEW_AES):
        s.remove(s.processors[0])
        s.send(gp.select_isd())
        ch = open_gp_channel(s, keys, key_version=keys.version, level=0x13)
    replacement = GpKeySet.single(bytes(range(100, 116)), alg=Alg.AES, version=0x03)
    put_key_set(s, ch, replacement, replace_version=0x02)
    assert sorted(isd.key_sets) == [1, 3]
    s.remove(s.processors[0])
    assert sw(s, gp.initialize_update(bytes(8), 0x02)) == 0x6A88
    assert KeyInfo.parse(s.send(gp.get_data_gp(0xE0)).data).versions() == (1, 3)
    open_gp_channel(s, replacement, key_version=3)


def test_put_key_refusals() -> None:
    _, isd, s = make()
    ch = open_gp_channel(s, AES1, level=0x03)
    assert isinstance(ch, Scp03Channel)
    from cardkit.sm.putkey import put_key_data

    data = bytearray(put_key_data(NEW_AES, 2, ch.dek, Alg.AES))
    data[-1] ^= 0xFF  # last KCV wrong
    assert s.transmit(put_key_apdu(0, bytes(data))).sw == 0x9485
    dup = put_key_data(AES1.with_version(1), 1, ch.dek, Alg.AES)
    assert s.transmit(put_key_apdu(0, dup)).sw == 0x6A80  # version 01 exists
    assert s.transmit(put_key_apdu(0x05, put_key_data(NEW_AES, 2, ch.dek, Alg.AES))).sw == 0x6A88
    assert s.transmit(CommandApdu(0x80, 0xD8, 0x81, 0x81, dup, le=256)).sw == 0x6A86  # P1 b8: more commands
    assert sorted(isd.key_sets) == [1]


def test_des_to_aes_migration() -> None:
    _card, _isd, s = make(DES1, scp=2)
    ch = open_gp_channel(s, DES1, level=0x03)
    put_key_set(s, ch, NEW_AES, replace_version=0x20)  # AES keys under the SCP02 session DEK (3DES)
    s.remove(s.processors[0])
    cd = CardData.parse(s.send(gp.get_data_gp(0x66)).data)
    assert cd.scp == ((2, 0x55), (3, 0x70))
    ch = open_gp_channel(s, NEW_AES, key_version=2, level=0x33, card_data=cd)
    assert isinstance(ch, Scp03Channel)
    assert parse_get_status(s.send(gp.get_status("isd")).data, "isd")[0].aid == ISD
    with pytest.raises(Exception, match="6A88"):
        s.remove(s.processors[0])
        Scp02Host.open(s.transmit, DES1, level=0x01, key_version=0x20)


# ------------------------------------------------------------------------------------------- life cycle


def _lcs(s: CardSession) -> int:
    return get_status_all(s, "isd")[0].life_cycle


def test_card_life_cycle_rules() -> None:
    _card, _isd, s = make()
    s.push(Scp03Host.open(s.transmit, AES1, level=0x03, isd_aid=ISD))
    assert sw(s, gp.set_status("isd", 0x0F)) == 0x6985  # OP_READY → SECURED skips INITIALIZED
    s.send(gp.set_status("isd", 0x07))
    assert sw(s, gp.set_status("isd", 0x7F)) == 0x6985  # only SECURED can be locked
    s.send(gp.set_status("isd", 0x0F))
    assert sw(s, gp.set_status("isd", 0x07)) == 0x6985  # irreversible
    s.send(gp.install_for_install(CARDKIT_LOAD_FILE, CARDKIT_MODULE, APP))
    s.send(gp.set_status("isd", 0x7F))
    assert _lcs(s) == 0x7F
    assert sw(s, gp.install_for_personalization(APP)) == 0x6985  # no card content management while locked
    assert sw(s, CommandApdu(0x80, 0xD8, 0x00, 0x81, b"\x02", le=256)) == 0x6985
    s.remove(s.processors[0])
    assert sw(s, gp.select_isd(APP)) == 0x6A81  # only the ISD can be selected
    assert sw(s, iso.select_mf()) == 0x6A81
    assert sw(s, iso.read_binary(0, 4)) == 0x6985
    assert s.send(gp.select_isd()).ok and s.send(gp.get_data_gp(0x9F7F)).ok
    s.push(Scp03Host.open(s.transmit, AES1, level=0x03, isd_aid=ISD))
    s.send(gp.set_status("isd", 0x0F))  # unlock
    s.remove(s.processors[0])
    assert s.send(gp.select_isd(APP)).ok
    s.send(gp.select_isd())
    s.push(Scp03Host.open(s.transmit, AES1, level=0x03, isd_aid=ISD))
    s.send(gp.set_status("isd", 0xFF))
    s.remove(s.processors[0])
    assert s.send(gp.get_data_gp(0x9F7F)).ok  # TERMINATED: GET DATA only
    for cmd in (gp.select_isd(), gp.initialize_update(bytes(8)), iso.select_mf(), iso.read_binary(0, 1)):
        assert sw(s, cmd) == 0x6A81
    s.reset(cold=True)
    assert sw(s, gp.initialize_update(bytes(8))) == 0x6A81 and s.send(gp.get_data_gp(0x66)).ok


def test_application_lock_and_delete() -> None:
    _, isd, s = make()
    s.push(Scp03Host.open(s.transmit, AES1, level=0x01, isd_aid=ISD))
    s.send(gp.install_for_install(CARDKIT_LOAD_FILE, CARDKIT_MODULE, APP))
    assert sw(s, gp.install_for_install(CARDKIT_LOAD_FILE, CARDKIT_MODULE, APP)) == 0x6985  # exists
    assert sw(s, gp.install_for_install(CARDKIT_LOAD_FILE, APP, APP + b"\x01")) == 0x6A88  # no such module
    s.send(gp.set_status("app", 0x80, APP))
    assert get_status_all(s, "apps")[0].life_cycle_name == "LOCKED"
    s.remove(s.processors[0])
    assert sw(s, gp.select_isd(APP)) == 0x6A82
    s.send(gp.select_isd())
    s.push(Scp03Host.open(s.transmit, AES1, level=0x01, isd_aid=ISD))
    s.send(gp.set_status("app", 0x00, APP))
    assert sw(s, gp.delete(CARDKIT_LOAD_FILE)) == 0x6985  # has an application
    s.send(gp.delete(CARDKIT_LOAD_FILE, related=True))
    assert not isd.apps and not isd.load_files and get_status_all(s, "apps") == []
    assert sw(s, gp.delete(ISD)) == 0x6985


# -------------------------------------------------------------------------------------------- STORE DATA


def _install_app(s: CardSession) -> None:
    s.send(gp.install_for_install(CARDKIT_LOAD_FILE, CARDKIT_MODULE, APP))
    s.send(gp.install_for_personalization(APP))


@pytest.mark.parametrize(("keys", "scp", "level"), [(AES1, 3, 0x33), (AES1, 3, 0x00), (DES1, 2, 0x03)])
def test_store_data_encrypted_dgi_round_trip(keys: GpKeySet, scp: int, level: int) -> None:
    _card, isd, s = make(keys, scp=scp)
    ch = open_gp_channel(s, keys, level=level)
    _install_app(s)
    secret = b"\x03" + b"123456"
    long_clear = bytes(range(256)) * 2  # spans STORE DATA blocks
    n = store_dgis(s, ch, [(0x0101, b"\x01\x02", False), (0x0201, long_clear, False), (0x8010, secret, True)],
                   block=120)
    assert n == 6
    app = isd.apps[APP]
    assert app.data[0x8010] == secret and app.sensitive == {0x8010} and app.data[0x0201] == long_clear
    assert app.life_cycle == 0x0F
    s.remove(s.processors[0])
    s.send(gp.select_isd(APP))
    assert s.send(gp.get_data_gp(0x0101)).data == b"\x01\x02"
    assert s.send(gp.get_data_gp(0x0201)).data == long_clear
    assert sw(s, gp.get_data_gp(0x8010)) == 0x6982  # never in clear; a digest only under the channel
    open_gp_channel(s, keys, level=level)
    assert s.send(gp.get_data_gp(0x8010)).data == sensitive_digest(keys.dek, 0x8010, secret)
    assert sw(s, gp.get_data_gp(0x0999)) == 0x6A88


def test_store_data_checks() -> None:
    _card, isd, s = make()
    ch = open_gp_channel(s, AES1, level=0x03)
    _install_app(s)
    assert isinstance(ch, Scp03Channel)
    assert sw(s, gp.store_data(1, gp.dgi(0x0101, b"x"), last=False, structure="dgi")) == 0x6A86  # block 00 first
    s.send(gp.store_data(0, gp.dgi(0x0101, b"abc")[:4], last=False, structure="dgi"))  # a DGI split in two
    bad = gp.dgi(0x8101, encrypt_with_dek(ch.dek, bytes(16), Alg.AES))  # decrypts to no method-2 padding
    assert sw(s, gp.store_data(1, bad, last=False, structure="dgi", encryption="encrypted")) == 0x6A80
    assert sw(s, gp.store_data(1, b"bc", last=False, structure="dgi", encryption="app")) == 0x6A86
    s.send(gp.store_data(1, b"bc", last=False, structure="dgi"))
    good = gp.dgi(0x8101, encrypt_with_dek(ch.dek, pad_m2(b"k" * 16, 16), Alg.AES))
    assert sw(s, gp.store_data(2, gp.dgi(0x0102, b"x")[:2], last=True, structure="dgi")) == 0x6A80  # ends in a DGI
    s.send(gp.store_data(2, good, last=True, structure="dgi", encryption="encrypted"))
    assert isd.apps[APP].data == {0x0101: b"abc", 0x8101: b"k" * 16}
    # the sequence ended: the next STORE DATA goes to the ISD, which takes BER-TLV only
    assert sw(s, gp.store_data(0, gp.dgi(0x0101, b"x"), last=True, structure="dgi")) == 0x6A80
    assert isd.iin is None


def test_emv_cps_style_personalization_through_the_application() -> None:
    _, isd, s = make()
    s.push(Scp03Host.open(s.transmit, AES1, level=0x01, isd_aid=ISD))
    s.send(gp.install_for_install(CARDKIT_LOAD_FILE, CARDKIT_MODULE, APP))
    s.remove(s.processors[0])
    s.send(gp.select_isd(APP))
    assert sw(s, gp.store_data(0, gp.dgi(0x0101, b"x"), last=True, structure="dgi")) == 0x6982
    s.push(Scp03Host.open(s.transmit, AES1, level=0x33, isd_aid=ISD))  # through the application
    s.send(gp.store_data(0, gp.dgi(0x0101, b"x"), last=False, structure="dgi"))
    s.send(gp.store_data(1, bytes.fromhex("5F200341424B"), last=True, structure="ber-tlv"))
    assert s.send(gp.get_data_gp(0x5F20)).data == bytes.fromhex("5F200341424B")
    assert isd.apps[APP].life_cycle == 0x0F


# ------------------------------------------------------------------------------------- GET STATUS paging


def test_get_status_paging() -> None:
    _, _isd, s = make(page_bytes=100)
    s.push(Scp03Host.open(s.transmit, AES1, level=0x13, isd_aid=ISD))
    aids = [APP[:-1] + bytes((n,)) for n in range(12)]
    for aid in aids:
        s.send(gp.install_for_install(CARDKIT_LOAD_FILE, CARDKIT_MODULE, aid))
    first = s.transmit(gp.get_status("apps"))
    assert first.sw == 0x6310 and len(first.data) <= 100
    entries = get_status_all(s, "apps")
    assert [e.aid for e in entries] == aids and all(e.load_file_aid == CARDKIT_LOAD_FILE for e in entries)
    assert sw(s, gp.get_status("apps", next=True)) == 0x6985  # the listing ended
    legacy = s.transmit(gp.get_status("apps", tag_list=False))
    assert legacy.sw == 0x6310 and parse_get_status(legacy.data, "apps", tag_list=False)[0].aid == aids[0]
    assert parse_get_status(s.send(gp.get_status("apps", aid_prefix=aids[5])).data, "apps")[0].aid == aids[5]
    assert sw(s, gp.get_status("apps", aid_prefix=b"\xA0\x00\x00\x00\x99")) == 0x6A88
    assert sw(s, CommandApdu(0x80, 0xF2, 0x40, 0x02, b"\x5C\x00", le=256)) == 0x6A80


# ---------------------------------------------------------------------------------------- ISO integration


def _put_data(value: bytes) -> CommandApdu:
    return CommandApdu(0x00, 0xDA, 0x01, 0x01, value, name="PUT DATA")  # ISO object 0101: issuer only


def test_gp_channel_grants_the_issuer_condition_to_the_iso_os() -> None:
    card, _, s = make()
    assert sw(s, _put_data(b"one")) == 0x6982
    s.push(Scp03Host.open(s.transmit, AES1, level=0x33, isd_aid=ISD))
    s.send(_put_data(b"two"))  # under the GP channel (C-MAC): the issuer condition holds
    assert card.data_objects[0x0101] == b"two"
    s.send(iso.select_mf(p2_fci="none"))  # deselects the ISD: the session ends after this (protected) response
    with pytest.raises(StatusWordError, match="6988"):
        s.send(_put_data(b"three"))
    assert card.data_objects[0x0101] == b"two"


def test_level_00_session_gives_no_issuer_condition() -> None:
    _, _, s = make()
    s.push(Scp03Host.open(s.transmit, AES1, level=0x00, isd_aid=ISD))
    with pytest.raises(SecurityStatusNotSatisfied):
        s.send(_put_data(b"x"))
    assert parse_get_status(s.send(gp.get_status("isd")).data, "isd")  # GP commands work at level 00


# ------------------------------------------------------------------------------------------------ images


def test_image_round_trip_keeps_the_isd() -> None:
    card, isd, s = make()
    ch = open_gp_channel(s, AES1, level=0x33)
    _install_app(s)
    store_dgis(s, ch, [(0x0101, b"public", False), (0x8010, b"\x03" + b"1234", True)])
    put_key_set(s, ch, NEW_AES)
    s.remove(ch)
    with pytest.raises(AuthenticationError):
        Scp03Host.open(s.transmit, WRONG_AES, level=0x01, isd_aid=ISD)
    image = json.loads(json.dumps({"card": card_to_dict(card), "gp": gp_to_dict(card)}))
    assert image["card"]["gp"] == image["gp"]  # the card image carries the ISD
    copy = card_from_dict(image["card"])
    isd2 = find_isd(copy)
    assert isd2 is not None
    assert sorted(isd2.key_sets) == [1, 2] and isd2.key_sets[1].tries_left == isd.key_sets[1].tries_left
    assert isd2.key_sets[1].counter == isd.key_sets[1].counter
    assert isd2.apps[APP].data == isd.apps[APP].data and isd2.apps[APP].sensitive == {0x8010}
    s2 = CardSession(VirtualTransport(copy))
    open_gp_channel(s2, NEW_AES, key_version=2)
    assert [e.aid for e in get_status_all(s2, "apps")] == [APP]
    with pytest.raises(Exception, match="gp image"):
        gp_from_dict(VirtualCard(b"\x00\x00\x00\x01"), {**image["gp"], "life_cycle": 0x42})


def test_card_save_and_load_keep_the_isd(tmp_path: object) -> None:
    from pathlib import Path

    card, _, s = make()
    open_gp_channel(s, AES1, level=0x01)
    path = Path(str(tmp_path)) / "card.json"
    card.save(path)
    loaded = VirtualCard.load(path)
    assert find_isd(loaded) is not None
    open_gp_channel(CardSession(VirtualTransport(loaded)), AES1)


def test_install_isd_argument_errors() -> None:
    card = VirtualCard(b"\x00\x00\x00\x02")
    from cardkit.virtual.fs import VirtualCardError

    with pytest.raises(VirtualCardError, match="SCP03 needs aes"):
        install_isd(card, DES1)
    with pytest.raises(VirtualCardError, match="reserved"):
        install_isd(card, GpKeySet.single(GP_TEST, alg=Alg.AES))
    with pytest.raises(VirtualCardError, match="implicit"):
        install_isd(card, DES1, scp=2, i=0x10)
    install_isd(card, AES1)
    with pytest.raises(VirtualCardError, match="already"):
        install_isd(card, AES1)


def test_conditions_error_type() -> None:
    _, _, s = make()
    with pytest.raises(ConditionsOfUseNotSatisfied):
        s.send(CommandApdu(0x80, 0x82, 0x00, 0x00, bytes(16)))
