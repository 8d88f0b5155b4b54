"""The virtual card on the real stack: pyscard -> libpcsclite -> pcscd -> vpcd -> TCP -> VirtualCard.

Every ISO command group and every access-rule class is exercised positive and negative *through pcscd*
(the in-process behaviour is covered by test_virtual_fs.py / test_virtual_security.py); the SSC profile is
personalized and verified over PC/SC; and OpenSC, an independent client, reads what cardkit wrote.
"""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cardkit.acl import AccessRules, encode_expanded
from cardkit.apdu import CommandApdu
from cardkit.commands import iso
from cardkit.crypto import Alg
from cardkit.errors import SecureChannelError
from cardkit.issuance.engine import expected_content, open_issuer_channel, personalize, put_key, verify
from cardkit.issuance.prepare import PreparedRecord, prepare
from cardkit.keys.store import TestKeyFile, alg_of
from cardkit.profiles.model import Profile, load_profile
from cardkit.readers import TEST_KEYS, new_virtual_card
from cardkit.session import CardSession
from cardkit.sm.auth import AuthenticationRefused, external_authenticate, mutual_authenticate
from cardkit.sm.iso import IsoSmChannel
from cardkit.sm.seed import static_sm_keys
from cardkit.sw import (
    AuthenticationBlocked,
    CommandNotAllowed,
    ConditionsOfUseNotSatisfied,
    FileNotFound,
    InvalidPin,
    RecordNotFound,
    SecurityStatusNotSatisfied,
    StatusWordError,
    WrongLength,
    WrongP1P2,
)
from cardkit.transport.pcsc import PcscTransport
from cardkit.transport.virtual import CardLike, VirtualTransport
from cardkit.transport.vpcd import VpcdCardServer
from cardkit.virtual import CardOptions, CorruptingCard, EfType, KeyUsage, VirtualCard, card_to_dict
from cardkit.virtual.isoauth import mutual_auth_handler

pytestmark = pytest.mark.pcsc
ROOT = Path(__file__).resolve().parents[1]
VpcdCardFactory = Callable[..., tuple[str, VpcdCardServer]]
Connect = Callable[..., CardSession]

# TEST-ONLY key values for the rules card (random, never used anywhere else).
MF_KEY = bytes.fromhex("5C0A6E1F3B9D24C7E8A1F05B6D3C2E19")
EXT_KEY = bytes.fromhex("A7D3019E4C5B6F28C1E0D9B3A4F57162")
SM_KEY = bytes.fromhex("3E6B9C0D1A2F4857E6C3B0A9D8F71245")
PIN, PUK = b"123456", b"87654321"
SERIAL = bytes.fromhex("C0FFEE01")
#: The rules card's application DF name: RID F0... is a proprietary, unregistered AID (ISO/IEC 7816-5 §5.1).
APP = bytes.fromhex("F0434B495456")
APP2 = APP + b"\x02"
SSSE = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")  # "sx1.sh.社会保障" in GBK (reference/ssc.md)


def rules_card(options: CardOptions | None = None) -> VirtualCard:
    """MF (key 00 = issuer) / 5000 APP: PIN 01 + PUK 01, key 02 (external auth), key 03 (SM), and one EF per
    access-rule class; 5100 APP2 (a second DF whose name extends APP, for SELECT next occurrence)."""
    card = VirtualCard.blank(SERIAL, MF_KEY, Alg.AES, options=options, seed=11)
    card.mutual_auth_handler = mutual_auth_handler
    card.mf.add_ef(0x2F00, size=16, rules=AccessRules(read="always"), data=b"MF public data..")
    app = card.mf.add_df(0x5000, name=APP, rules=AccessRules({"create-ef": "issuer", "create-df": "issuer"}))
    app.set_pin(1, PIN, max_tries=3)
    app.set_pin(1, PUK, max_tries=5, puk=True)
    app.set_key(2, Alg.AES, KeyUsage.EXTERNAL_AUTH, EXT_KEY, max_tries=5)
    app.set_key(3, Alg.AES, KeyUsage.SM, SM_KEY, max_tries=5)
    free = AccessRules(read="always", update="always", write="always", erase="always", append="always")
    app.add_ef(0x5001, size=64, rules=free, data=b"public")                                   # always
    app.add_ef(0x5002, size=8, rules=AccessRules(read="never", update="never"), data=b"sealed")  # never
    app.add_ef(0x5003, size=8, rules=AccessRules(read="pin:01", update="pin:01 and sm"), data=b"pinned")
    app.add_ef(0x5004, size=8, rules=AccessRules(read="key:02"), data=b"keyed")              # key
    app.add_ef(0x5005, EfType.LINEAR_FIXED, record_size=16, record_count=2, sfi=5,
               rules=AccessRules(read="always", update="key:03 and sm"), records=[b"A" * 16, b"B" * 16])
    app.add_ef(0x5006, EfType.LINEAR_VARIABLE, record_size=32, record_count=4, sfi=6,
               rules=AccessRules(read="pin:01 or key:02", update="always", append="always"), records=[b"first"])
    app.add_ef(0x5007, EfType.CYCLIC, record_size=2, record_count=3, rules=free)
    app.add_ef(0x5008, size=4, rules=AccessRules(read="issuer"), data=b"iss!")              # issuer
    app.add_ef(0x5009, size=2048, rules=free)
    sub = card.mf.add_df(0x5100, name=APP2, rules=AccessRules())
    sub.add_ef(0x5101, size=4, rules=AccessRules(read="always"), data=b"next")
    return card


@pytest.fixture
def connect(vpcd_card: VpcdCardFactory) -> Iterator[Connect]:
    """``connect(card, **session_kw) -> CardSession`` over PC/SC; every session is closed after the test."""
    sessions: list[CardSession] = []

    def _connect(card: CardLike, **kw: object) -> CardSession:
        reader, _ = vpcd_card(card)
        session = CardSession(PcscTransport(reader), **kw)  # type: ignore[arg-type]
        sessions.append(session)
        return session

    yield _connect
    for s in sessions:
        s.close()


def open_sm(session: CardSession, key: bytes, key_ref: int, alg: Alg = Alg.AES) -> IsoSmChannel:
    suite, k_enc, k_mac = static_sm_keys(alg, key)
    channel = IsoSmChannel(mutual_authenticate(session.transmit, suite, k_enc, k_mac, key_ref=key_ref))
    session.push(channel)
    return channel


def select_app(session: CardSession) -> None:
    session.send(iso.select_aid(APP, p2_fci="none"))


def sel(session: CardSession, fid: int) -> None:
    session.send(iso.select_fid(fid.to_bytes(2, "big"), p2_fci="none"))


# ------------------------------------------------------------------------------------------------ SELECT


def test_select_modes(connect: Connect) -> None:
    s = connect(rules_card())
    fcp = iso.parse_fcp(s.send(iso.select_mf()).data)                    # P1 00, P2 04 (FCP)
    assert fcp.fid == b"\x3f\x00"
    assert s.send(iso.select_child_df(b"\x50\x00")).sw == 0x9000          # P1 01
    ef = iso.parse_fcp(s.send(iso.select_child_ef(b"\x50\x01")).data)    # P1 02
    assert ef.fid == b"\x50\x01" and ef.size == 64
    assert s.send(iso.select_parent(p2_fci="none")).data == b""          # P1 03, P2 0C (no data)
    fci = s.send(iso.select_aid(APP)).data                                # P1 04, P2 00 (FCI '6F')
    assert fci[0] == 0x6F and APP in fci
    assert s.send(iso.select_path(b"\x51\x00\x51\x01", p2_fci="none")).sw == 0x9000  # P1 08, from the MF
    assert s.send(iso.read_binary(0, 4)).data == b"next"
    s.send(iso.select_mf(p2_fci="none"))
    assert s.send(iso.select_path(b"\x50\x00\x50\x01", from_mf=False, p2_fci="none")).sw == 0x9000  # P1 09
    # partial DF name: first occurrence is the exact name APP, the next one APP2
    first = s.send(iso.select_aid(APP, p2_fci="fcp")).data
    nxt = s.send(iso.select_aid(APP, next=True, p2_fci="fcp")).data
    assert iso.parse_fcp(first).fid == b"\x50\x00" and iso.parse_fcp(nxt).fid == b"\x51\x00"
    with pytest.raises(FileNotFound):
        s.send(iso.select_aid(APP, next=True, p2_fci="fcp"))              # no third occurrence
    with pytest.raises(FileNotFound):
        s.send(iso.select_fid(b"\x7e\x7e"))
    with pytest.raises(FileNotFound):
        s.send(iso.select_aid(bytes.fromhex("F0DEADBEEF")))
    with pytest.raises(FileNotFound):
        s.send(iso.select_path(b"\x50\x00\x50\x01\x50\x02"))             # the path runs through an EF
    s.send(iso.select_mf(p2_fci="none"))
    with pytest.raises(FileNotFound):
        s.send(iso.select_parent())                                       # the MF has no parent
    with pytest.raises(WrongP1P2):
        s.send(CommandApdu(0x00, 0xA4, 0x05, 0x0C, b"\x3f\x00"))


# ---------------------------------------------------------------------------------------- binary, record


def test_binary_commands(connect: Connect) -> None:
    s = connect(rules_card())
    select_app(s)
    sel(s, 0x5001)
    assert s.send(iso.read_binary(0, 6)).data == b"public"
    assert s.send(iso.read_binary(2, 4)).data == b"blic"
    assert s.send(iso.read_binary(0, 0x100)).data == b"public" + bytes(58)  # Le 00: as many as there are
    s.send(iso.update_binary(b"\x01\x02\x04", 10))
    s.send(iso.write_binary(b"\x10\x20\x40", 10))                          # WRITE = OR (data coding 41)
    assert s.send(iso.read_binary(10, 3)).data == b"\x11\x22\x44"
    s.send(iso.erase_binary(10, end=12))
    assert s.send(iso.read_binary(10, 3)).data == b"\x00\x00\x44"
    with pytest.raises(WrongP1P2):                                         # 6B00: offset beyond the EF
        s.send(iso.read_binary(64, 1))
    with pytest.raises(StatusWordError) as too_long:                       # 6A84: does not fit
        s.send(iso.update_binary(b"x" * 10, 60))
    assert too_long.value.sw == 0x6A84
    assert s.send(iso.read_binary(0, 6, sfi=1)).data == b"public"          # READ BINARY by SFI (P1 b8 = 1)
    sel(s, 0x5005)
    with pytest.raises(CommandNotAllowed):                                 # 6981: record EF, binary command
        s.send(iso.read_binary(0, 1))


def test_record_commands(connect: Connect) -> None:
    s = connect(rules_card())
    select_app(s)
    assert s.send(iso.read_record(2, sfi=5)).data == b"B" * 16             # by SFI, record number in P1
    sel(s, 0x5007)                                                          # cyclic, 3 records of 2 bytes
    for value in (b"c1", b"c2", b"c3", b"c4"):
        s.send(iso.append_record(value))
    assert [s.send(iso.read_record(n)).data for n in (1, 2, 3)] == [b"c4", b"c3", b"c2"]
    sel(s, 0x5006)                                                          # linear variable, 'pin:01 or key:02'
    s.send(iso.verify(0x81, PIN))
    s.send(iso.append_record(b"second, longer"))
    s.send(iso.update_record(1, b"1st"))                                   # a variable record changes length
    assert s.send(iso.read_record(1)).data == b"1st"
    assert s.send(iso.read_record(2)).data == b"second, longer"
    assert s.send(iso.search_record(b"long")).data == b"\x02"
    with pytest.raises(RecordNotFound):
        s.send(iso.read_record(3))
    with pytest.raises(WrongLength):                                       # longer than the record size
        s.send(iso.append_record(b"z" * 33))
    s.send(iso.append_record(b"3"))
    s.send(iso.append_record(b"4"))
    with pytest.raises(StatusWordError) as full:
        s.send(iso.append_record(b"5"))
    assert full.value.sw == 0x6A84                                          # not enough memory: file full
    sel(s, 0x5001)
    with pytest.raises(CommandNotAllowed):                                 # 6981: transparent EF
        s.send(iso.read_record(1))


# ----------------------------------------------------------------------------------------- PINs, counters


def test_verify_counters_survive_power_cycles(connect: Connect) -> None:
    card = rules_card()
    s = connect(card)
    select_app(s)
    assert s.transmit(iso.verify(0x81, None)).sw == 0x63C3                # status: 3 tries, not verified
    with pytest.raises(InvalidPin) as wrong:
        s.send(iso.verify(0x81, b"000000"))
    assert wrong.value.attempts_left == 2
    s.reset(cold=True)                                                     # a power cycle keeps the counter
    select_app(s)
    assert s.transmit(iso.verify(0x81, None)).sw == 0x63C2
    sel(s, 0x5003)
    with pytest.raises(SecurityStatusNotSatisfied):
        s.send(iso.read_binary(0, 6))
    s.send(iso.verify(0x81, PIN))                                          # right PIN: counter restored
    assert s.send(iso.read_binary(0, 6)).data == b"pinned"
    assert s.transmit(iso.verify(0x81, None)).sw == 0x9000
    s.send(iso.change_reference_data(0x81, PIN, b"654321"))
    s.reset()                                                              # the verified state is volatile
    select_app(s)
    sel(s, 0x5003)
    with pytest.raises(SecurityStatusNotSatisfied):
        s.send(iso.read_binary(0, 6))
    for left in (2, 1, 0):
        with pytest.raises(InvalidPin) as exc:
            s.send(iso.verify(0x81, PIN))                                  # the old PIN no longer works
        assert exc.value.attempts_left == left
    with pytest.raises(AuthenticationBlocked):                             # blocked: even the right PIN fails
        s.send(iso.verify(0x81, b"654321"))
    with pytest.raises(InvalidPin) as puk_wrong:
        s.send(iso.reset_retry_counter(0x81, b"00000000", b"111111"))
    assert puk_wrong.value.attempts_left == 4
    s.send(iso.reset_retry_counter(0x81, PUK, b"111111"))                  # PUK + new PIN: unblocked
    s.send(iso.verify(0x81, b"111111"))
    assert s.send(iso.read_binary(0, 6)).data == b"pinned"
    pin = card.mf.child(0x5000).pins[1]  # type: ignore[union-attr]
    assert pin.tries_left == pin.max_tries == 3


# ------------------------------------------------------------------------------- access rules, authentication


def test_access_rule_classes(connect: Connect) -> None:
    s = connect(rules_card())
    select_app(s)

    def read(fid: int) -> bytes:
        sel(s, fid)
        return s.send(iso.read_binary(0, 4)).data

    assert read(0x5001) == b"publ"                                         # always
    for fid in (0x5002, 0x5003, 0x5004, 0x5008):
        with pytest.raises(SecurityStatusNotSatisfied):
            read(fid)
    sel(s, 0x5006)
    with pytest.raises(SecurityStatusNotSatisfied):                        # or: neither PIN nor key yet
        s.send(iso.read_record(1))
    external_authenticate(s.transmit, Alg.AES, EXT_KEY, 0x82)              # key:02 (specific reference)
    assert read(0x5004) == b"keye"
    sel(s, 0x5006)
    assert s.send(iso.read_record(1)).data == b"first"                    # or: the key branch suffices
    with pytest.raises(SecurityStatusNotSatisfied):
        read(0x5003)                                                       # pin:01 still missing
    # sm / and: 5005 update needs key 03 AND secure messaging
    sel(s, 0x5005)
    channel = open_sm(s, SM_KEY, 0x83)
    s.send(iso.update_record(1, b"C" * 16))
    assert s.send(iso.read_record(1)).data == b"C" * 16
    s.remove(channel)                                                      # same authentication, plain APDU
    with pytest.raises(SecurityStatusNotSatisfied):
        s.send(iso.update_record(1, b"D" * 16))
    s.push(channel)
    with pytest.raises(SecurityStatusNotSatisfied):                        # issuer: SM of key 03 is not enough
        read(0x5008)
    with pytest.raises(SecurityStatusNotSatisfied):                        # never stays never under SM
        read(0x5002)
    # issuer: MF key 00 mutual authentication + SM
    open_issuer_channel(s, Alg.AES, MF_KEY)
    select_app(s)
    assert read(0x5008) == b"iss!"
    with pytest.raises(SecurityStatusNotSatisfied):
        read(0x5002)


def test_external_authenticate_negative_and_blocking(connect: Connect) -> None:
    s = connect(rules_card())
    select_app(s)
    with pytest.raises(ConditionsOfUseNotSatisfied):                       # no GET CHALLENGE before
        s.send(iso.external_authenticate(bytes(16), ref=0x82))
    s.send(iso.get_challenge(8))
    s.send(iso.select_fid(b"\x50\x01", p2_fci="none"))                     # the challenge is for the next command
    with pytest.raises(ConditionsOfUseNotSatisfied):
        s.send(iso.external_authenticate(bytes(16), ref=0x82))
    for left in (4, 3, 2, 1, 0):
        with pytest.raises(InvalidPin) as exc:                             # a wrong key costs a try
            external_authenticate(s.transmit, Alg.AES, SM_KEY, 0x82)
        assert exc.value.attempts_left == left
    with pytest.raises(AuthenticationBlocked):
        external_authenticate(s.transmit, Alg.AES, EXT_KEY, 0x82)


def test_mutual_authentication_and_secure_messaging_failures(connect: Connect) -> None:
    s = connect(rules_card())
    select_app(s)
    with pytest.raises(AuthenticationRefused):
        open_sm(s, EXT_KEY, 0x83)                                          # wrong key
    channel = open_sm(s, SM_KEY, 0x83)
    sel(s, 0x5005)
    assert s.send(iso.read_record(2)).data == b"B" * 16                   # under SM
    s.remove(channel)
    # a command with a wrong MAC: the card answers 6988 and closes its session
    bad = channel.state.wrap_command(iso.read_record(2))
    tampered = bad.replace(data=bad.data[:-1] + bytes((bad.data[-1] ^ 1,)))
    assert s.transmit(tampered).sw == 0x6988
    assert s.transmit(channel.state.wrap_command(iso.read_record(2))).sw == 0x6882  # no SM session any more


def test_response_mac_corruption_is_detected_through_pcsc(connect: Connect) -> None:
    card = rules_card()
    s = connect(CorruptingCard(card, direction="response", at=2))
    select_app(s)
    open_sm(s, SM_KEY, 0x83)
    sel(s, 0x5005)                                                          # 1st protected exchange: intact
    with pytest.raises(SecureChannelError):
        s.send(iso.read_record(1))                                         # 2nd: R-MAC flipped on the way
    with pytest.raises(SecureChannelError):
        s.send(iso.read_record(1))                                         # the host channel stays closed


def test_put_key_and_create_file_need_the_issuer_channel(connect: Connect) -> None:
    s = connect(rules_card())
    select_app(s)
    new_key = bytes(range(16))
    load = put_key(1, 4, Alg.AES, 1, 3, new_key)
    with pytest.raises(SecurityStatusNotSatisfied):                        # plain: key values never in clear
        s.send(load)
    open_sm(s, SM_KEY, 0x83)
    with pytest.raises(SecurityStatusNotSatisfied):                        # SM, but not the issuer channel
        s.send(load)
    create = iso.create_file(iso.fcp_template(fid=b"\x50\x0a", size=8, descriptor=iso.file_descriptor("transparent"),
                                              security=encode_expanded(AccessRules(read="always"), False)))
    with pytest.raises(SecurityStatusNotSatisfied):
        s.send(create)
    channel = open_issuer_channel(s, Alg.AES, MF_KEY)
    select_app(s)
    s.remove(channel)
    with pytest.raises(SecurityStatusNotSatisfied):                        # issuer authenticated, APDU plain
        s.send(load)
    s.push(channel)
    s.send(load)
    s.send(create)
    s.reset()
    select_app(s)
    external_authenticate(s.transmit, Alg.AES, new_key, 0x84)             # the loaded key works
    sel(s, 0x500A)
    assert s.send(iso.read_binary(0, 8)).data == bytes(8)                  # the created file is there


# ------------------------------------------------------------------------------------- other ISO services


def test_get_data_challenge_and_logical_channels(connect: Connect) -> None:
    card = rules_card()
    s = connect(card)
    assert s.send(iso.get_data(0x0045, le=256)).data == SERIAL
    assert s.send(iso.get_data(0x5F52, le=256)).data == card.atr[5:-1]   # historical bytes
    a, b = s.send(iso.get_challenge(8)).data, s.send(iso.get_challenge(8)).data
    assert len(a) == 8 and a != b and len(s.send(iso.get_challenge(16)).data) == 16
    with pytest.raises(WrongLength):
        s.send(iso.get_challenge(5))
    number = s.send(iso.manage_channel("open")).data[0]
    assert number == 1
    s.send(CommandApdu(number, 0xA4, 0x04, 0x0C, APP2))                    # channel 1: APP2 selected
    select_app(s)                                                          # channel 0: APP selected
    s.send(CommandApdu(number, 0xA4, 0x00, 0x0C, b"\x51\x01"))
    assert s.send(CommandApdu(number, 0xB0, 0, 0, le=4)).data == b"next"
    sel(s, 0x5001)
    assert s.send(iso.read_binary(0, 4)).data == b"publ"
    s.send(iso.manage_channel("close", number))
    assert s.transmit(CommandApdu(number, 0xB0, 0, 0, le=4)).sw == 0x6881  # closed channel


@pytest.mark.parametrize("extended", [False, True])
def test_long_data_chained_or_extended(connect: Connect, extended: bool) -> None:
    s = connect(rules_card(), extended=extended)
    select_app(s)
    sel(s, 0x5009)
    data = os.urandom(2000)
    s.send(iso.update_binary(data, 0))                                     # chaining (CLA b5) or extended Lc
    back = s.send(iso.read_binary(0, 2000 if extended else 256)).data
    assert back == (data if extended else data[:256])


def test_t0_style_card_61xx_and_6cxx_through_pcsc(connect: Connect) -> None:
    s = connect(rules_card(CardOptions(t0_style=True)))
    select_app(s)
    sel(s, 0x5009)
    data = os.urandom(300)
    s.send(iso.update_binary(data, 0))
    raw = s.transport.transmit
    assert raw(iso.read_binary(0, 5).to_bytes()) == data[:5] + b"\x90\x00"  # Le right: data at once
    assert raw(iso.get_data(0x0045, le=2).to_bytes()) == b"\x6c\x04"         # wrong Le: 6C04
    assert raw(iso.read_binary(0, 256).to_bytes()) == b"\x61\x00"            # 256 bytes wait: 6100
    assert s.send(iso.read_binary(0, 256)).data == data[:256]                # the session sends GET RESPONSE
    assert s.send(iso.get_data(0x0045, le=2)).data == SERIAL                 # and re-sends with Le 04


# ------------------------------------------------------------------------------------ SSC profile, OpenSC


@pytest.fixture(scope="module")
def keystore() -> TestKeyFile:
    return TestKeyFile(TEST_KEYS, allow_test_keys=True)


def _row() -> dict[str, str]:
    with open(ROOT / "applets/ssc/sample-batch.csv", encoding="utf-8", newline="") as fh:
        return next(csv.DictReader(fh))


def _ssc_card(keystore: TestKeyFile, algorithm: str) -> tuple[Profile, PreparedRecord, VirtualCard]:
    profile = load_profile(ROOT / "applets/ssc", algorithm=algorithm)
    alg = alg_of(algorithm)
    card = new_virtual_card(bytes.fromhex("0BADCAFE"), alg=alg,
                            transport_key=keystore.key(profile.transport_key, alg).value, seed=5)
    return profile, prepare(profile, _row()), card


@pytest.mark.parametrize("algorithm", ["sm4", "3des"])
def test_ssc_personalized_and_verified_through_pcscd(connect: Connect, keystore: TestKeyFile,
                                                     algorithm: str) -> None:
    profile, prepared, card = _ssc_card(keystore, algorithm)
    s = connect(card)
    result = personalize(s, profile, prepared, keystore)
    written = s.apdu_count
    manifest = verify(s, profile, prepared, keystore, result)
    assert manifest["chip_serial"] == "0BADCAFE" and manifest["atr"] == card.atr.hex().upper()
    assert set(manifest["files"]) == {"SSSE/EF05", "SSSE/EF06", "SSSE/DF01/EF05"}
    assert card.apdu_count == s.apdu_count                                 # every APDU went through pcscd
    # an in-process twin personalized with the same record holds byte for byte the same files and keys
    twin = new_virtual_card(bytes.fromhex("0BADCAFE"), alg=alg_of(algorithm),
                            transport_key=keystore.key(profile.transport_key, alg_of(algorithm)).value, seed=5)
    local = CardSession(VirtualTransport(twin))
    local_result = personalize(local, profile, prepared, keystore)
    assert local.apdu_count == written                                     # the same plan as in-process
    verify(local, profile, prepared, keystore, local_result)
    assert card_to_dict(card)["mf"] == card_to_dict(twin)["mf"]
    # afterwards, over PC/SC: free data readable, cardholder data refused, old transport key dead
    s.reset(cold=True)
    s.send(iso.select_aid(SSSE, p2_fci="none"))
    s.send(iso.select_child_ef(b"\xef\x05", p2_fci="none"))
    assert s.send(iso.read_record(7)).data[:1] == b"\x07"
    s.send(iso.select_child_ef(b"\xef\x06", p2_fci="none"))
    with pytest.raises(SecurityStatusNotSatisfied):
        s.send(iso.read_record(1))
    with pytest.raises(AuthenticationRefused):
        open_issuer_channel(s, alg_of(algorithm), keystore.key(profile.transport_key, alg_of(algorithm)).value)


def _explorer(reader: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["opensc-explorer", "-r", reader], input=script, capture_output=True, text=True,
                          timeout=60)


def test_opensc_reads_what_cardkit_wrote(vpcd_card: VpcdCardFactory, keystore: TestKeyFile,
                                         tmp_path: Path) -> None:
    profile, prepared, card = _ssc_card(keystore, "sm4")
    reader, _ = vpcd_card(card)
    with CardSession(PcscTransport(reader)) as s:
        result = personalize(s, profile, prepared, keystore)
        verify(s, profile, prepared, keystore, result)
    records, _ = expected_content(profile, prepared, keystore, card.serial)
    atr = subprocess.run(["opensc-tool", "-r", reader, "-a"], capture_output=True, text=True, timeout=30)
    assert atr.returncode == 0, atr.stderr
    assert atr.stdout.strip() == card.atr.hex(":")
    # opensc-explorer selects SSSE by its DF name and reads EF05 (free read) record by record.
    ef05 = records["SSSE/EF05"]
    gets = "".join(f"get_record EF05 {n} {tmp_path / f'rec{n}.bin'}\n" for n in range(1, len(ef05) + 1))
    out = _explorer(reader, f"cd aid:{SSSE.hex().upper()}\ncat EF05\n{gets}cat EF06\nls\nquit\n")
    assert out.returncode == 0, out.stderr
    assert "Record 7:" in out.stdout and "Record 8:" not in out.stdout
    for i, number in enumerate(sorted(ef05), start=1):
        assert (tmp_path / f"rec{i}.bin").read_bytes() == ef05[number]
    assert "Read failed: Security status not satisfied" in out.stderr      # EF06 needs external auth (key 02)
    # OpenSC has no generic way to list files (ISO 7816-4 defines no LIST FILES command; its card drivers
    # implement proprietary ones), so `ls` on a card without a dedicated driver reports "Not supported".
    assert "Unable to receive file listing: Not supported" in out.stderr
    # OpenSC 0.23 cannot `cd` into a child DF below a DF selected by name (it cannot append a FID to a
    # DF-name path: "Invalid arguments"), so the DF01 file is reached by FIDs from the MF instead.
    household = records["SSSE/DF01/EF05"][1]
    out = _explorer(reader, f"cd DDF1\ncd DF01\nget_record EF05 1 {tmp_path / 'household.bin'}\nquit\n")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "household.bin").read_bytes() == household
