"""The virtual card OS: file system commands, status words, channels, response handling, images, feeder.

Everything goes through ``VirtualTransport`` + ``CardSession`` as an application would, except where raw
status words (61xx, 6Cxx) are the subject: those use ``card.transmit`` directly.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardkit.acl import AccessRules
from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg, ecb_encrypt
from cardkit.session import CardSession
from cardkit.sm.iso import IsoSmChannel, SmState, SmSuite
from cardkit.tlv import ber_decode, ber_encode
from cardkit.transport.virtual import CardLike, VirtualTransport
from cardkit.virtual import (
    AuthResult,
    CardFeeder,
    CardOptions,
    EfType,
    ImageError,
    KeyObject,
    Lcs,
    SwError,
    VirtualCard,
    build_fcp,
    card_from_dict,
    card_to_dict,
    load_image,
    parse_fcp,
)
from cardkit.virtual.fs import FileSpec

KEY = bytes(range(0x40, 0x50))  # the test transport key (AES-128), test only
SERIAL = bytes.fromhex("01020304")
OPEN = AccessRules({"read": "always", "update": "always", "write": "always", "append": "always",
                    "erase": "always", "deactivate": "always", "activate": "always", "terminate": "always",
                    "delete": "always"})
OPEN_DF = AccessRules({"create-ef": "always", "create-df": "always", "delete-child": "always",
                       "deactivate": "always", "activate": "always", "terminate": "always", "delete": "always"})


# ------------------------------------------------------------------------------------------ helpers


def test_mutual_auth(card: VirtualCard, key: KeyObject, challenge: bytes | None, command: CommandApdu) -> AuthResult:
    """A test-only MUTUAL AUTHENTICATE: the host sends ECB(key, challenge); session keys = the key itself."""
    if challenge is None or len(challenge) != 16:
        return AuthResult(ResponseApdu.of(0x6985), False)
    if command.data != ecb_encrypt(key.alg, key.value, challenge):
        return AuthResult(ResponseApdu.of(0x6300), False)
    return AuthResult(ResponseApdu.of(0x9000), True, SmState(SmSuite.AES_CMAC, key.value, key.value, 0))


test_mutual_auth.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def blank(options: CardOptions | None = None, seed: int = 7) -> VirtualCard:
    card = VirtualCard.blank(SERIAL, KEY, Alg.AES, options=options, seed=seed)
    card.mutual_auth_handler = test_mutual_auth
    return card


def connect(card: CardLike) -> CardSession:
    return CardSession(VirtualTransport(card))


def open_issuer(session: CardSession, key: bytes = KEY, p2: int = 0x00) -> IsoSmChannel:
    challenge = session.send(CommandApdu(0x00, 0x84, 0, 0, le=16)).data
    session.send(CommandApdu(0x00, 0x82, 0x00, p2, ecb_encrypt(Alg.AES, key, challenge)))
    channel = IsoSmChannel(SmState(SmSuite.AES_CMAC, key, key, 0))
    session.push(channel)
    return channel


def select(session: CardSession, fid: int, p2: int = 0x0C) -> ResponseApdu:
    return session.transmit(CommandApdu(0x00, 0xA4, 0x00, p2, fid.to_bytes(2, "big"), le=None if p2 == 0x0C else 256))


def sw(session: CardSession, apdu: CommandApdu) -> int:
    return session.transmit(apdu).sw


def fcp_ef(fid: int, size: int = 32, *, sfi: bytes | None = None, rules: AccessRules = OPEN,
           descriptor: bytes = b"\x01", lcs: int | None = None) -> bytes:
    from cardkit.acl import encode_expanded

    body = ber_encode(0x80, size.to_bytes(2, "big")) + ber_encode(0x82, descriptor)
    body += ber_encode(0x83, fid.to_bytes(2, "big"))
    if sfi is not None:
        body += ber_encode(0x88, sfi)
    if lcs is not None:
        body += ber_encode(0x8A, bytes((lcs,)))
    return ber_encode(0x62, body + encode_expanded(rules, False))


def fcp_df(fid: int, name: bytes | None = None, rules: AccessRules = OPEN_DF) -> bytes:
    from cardkit.acl import encode_expanded

    body = ber_encode(0x82, b"\x38") + ber_encode(0x83, fid.to_bytes(2, "big"))
    if name:
        body += ber_encode(0x84, name)
    return ber_encode(0x62, body + encode_expanded(rules, True))


def populated(options: CardOptions | None = None) -> VirtualCard:
    """MF / 2F00 (transparent 40 bytes) / 5000 DF 'A000000001' / 5001 (transparent) 5002 (linear fixed) ..."""
    card = blank(options)
    mf = card.mf
    mf.add_ef(0x2F00, size=40, rules=OPEN, data=bytes(range(40)))
    df = mf.add_df(0x5000, name=bytes.fromhex("A000000001"), rules=OPEN_DF)
    df.add_ef(0x5001, size=300, rules=OPEN, data=b"\x11" * 300)
    df.add_ef(0x5002, EfType.LINEAR_FIXED, record_size=8, record_count=3, rules=OPEN,
              records=[b"AAAAAAAA", b"BBBBBBBB"])
    df.add_ef(0x5003, EfType.LINEAR_VARIABLE, record_size=20, record_count=4, rules=OPEN, records=[b"x", b"hello"])
    df.add_ef(0x5004, EfType.CYCLIC, record_size=2, record_count=3, rules=OPEN)
    df.add_ef(0x5005, size=8, rules=AccessRules(read="never", update="never"))
    sub = df.add_df(0x5100, name=bytes.fromhex("A00000000102"), rules=OPEN_DF)
    sub.add_ef(0x5101, size=4, rules=OPEN, data=b"deep")
    mf.add_df(0x6000, name=bytes.fromhex("A00000000103"), rules=OPEN_DF)
    return card


# ------------------------------------------------------------------------------------------ ATR, power


def test_atr_layout_and_tck() -> None:
    card = blank()
    atr = card.atr
    assert atr[:6] == bytes.fromhex("3B8D80018054") and atr[6:10] == SERIAL
    assert atr[10:17] == bytes.fromhex("73F621C0829000")
    tck = 0
    for b in atr[1:]:
        tck ^= b
    assert tck == 0  # XOR of T0..TCK is zero (ISO 7816-3:2006 §8.2.5)
    from testcard import ATR

    assert atr == ATR  # the scripted test card uses the same layout and serial


def test_unpowered_card_raises_card_gone() -> None:
    from cardkit.errors import CardRemovedError

    card = blank()
    with pytest.raises(CardRemovedError):
        card.transmit(bytes.fromhex("00A40000"))
    card.power_on()
    assert card.transmit(bytes.fromhex("00A4000C")) == b"\x90\x00"


# ------------------------------------------------------------------------------------------ SELECT


def test_select_mf_and_fcp_contents() -> None:
    s = connect(populated())
    r = s.send(CommandApdu(0x00, 0xA4, 0x00, 0x04, le=256))
    (fcp,) = ber_decode(r.data)
    assert fcp.tag == 0x62
    assert fcp.find(0x83).value == b"\x3f\x00"  # type: ignore[union-attr]
    assert fcp.find(0x82).value == b"\x38"  # type: ignore[union-attr]
    assert fcp.find(0x8A).value == b"\x05"  # type: ignore[union-attr]
    assert fcp.find(0xAB) is not None
    r = s.send(CommandApdu(0x00, 0xA4, 0x00, 0x00, b"\x3f\x00", le=256))
    assert r.data[0] == 0x6F and ber_decode(r.data)[0].find(0x83).value == b"\x3f\x00"  # type: ignore[union-attr]
    assert s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x3f\x00")).data == b""


def test_select_ef_fcp_describes_structure() -> None:
    s = connect(populated())
    (fcp,) = ber_decode(s.send(CommandApdu(0x00, 0xA4, 0x00, 0x04, b"\x2f\x00", le=256)).data)
    assert fcp.find(0x80).value == (40).to_bytes(2, "big")  # type: ignore[union-attr]
    assert fcp.find(0x82).value == b"\x01"  # type: ignore[union-attr]
    assert fcp.find(0x88).value == b""  # type: ignore[union-attr]  # FID 2F00: low five bits 0, no SFI
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00"))
    (fcp,) = ber_decode(s.send(CommandApdu(0x00, 0xA4, 0x02, 0x04, b"\x50\x01", le=256)).data)
    assert fcp.find(0x88).value == bytes((1 << 3,))  # type: ignore[union-attr]  # SFI 1 in b8-b4
    (fcp,) = ber_decode(s.send(CommandApdu(0x00, 0xA4, 0x02, 0x04, b"\x50\x02", le=256)).data)
    assert fcp.find(0x82).value == bytes.fromhex("02 41 0008 03")  # type: ignore[union-attr]


def test_select_variants() -> None:
    s = connect(populated())
    assert sw(s, CommandApdu(0x00, 0xA4, 0x01, 0x0C, b"\x50\x00")) == 0x9000  # child DF
    assert sw(s, CommandApdu(0x00, 0xA4, 0x02, 0x0C, b"\x50\x01")) == 0x9000  # child EF
    assert sw(s, CommandApdu(0x00, 0xA4, 0x02, 0x0C, b"\x51\x00")) == 0x6A82  # a DF is not an EF
    assert sw(s, CommandApdu(0x00, 0xA4, 0x01, 0x0C, b"\x51\x00")) == 0x9000
    assert sw(s, CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x51\x01")) == 0x9000
    assert sw(s, CommandApdu(0x00, 0xA4, 0x03, 0x0C)) == 0x9000  # parent of 5100 -> 5000
    assert sw(s, CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x50\x02")) == 0x9000  # child of the current DF
    assert sw(s, CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x60\x00")) == 0x9000  # sibling of the current DF
    assert sw(s, CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00\x51\x00\x51\x01")) == 0x9000  # path from MF
    assert sw(s, CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x3f\x00\x50\x00")) == 0x9000
    assert sw(s, CommandApdu(0x00, 0xA4, 0x09, 0x0C, b"\x51\x00\x51\x01")) == 0x9000  # path from current (5000)
    assert sw(s, CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x2f\x00\x50\x00")) == 0x6A82  # through an EF
    assert sw(s, CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50")) == 0x6A87
    assert sw(s, CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x12\x34")) == 0x6A82
    assert sw(s, CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x12")) == 0x6A87
    assert sw(s, CommandApdu(0x00, 0xA4, 0x05, 0x0C, b"\x12\x34")) == 0x6A86
    assert sw(s, CommandApdu(0x00, 0xA4, 0x00, 0x08, b"\x3f\x00", le=256)) == 0x6A86  # FMD not offered
    assert sw(s, CommandApdu(0x00, 0xA4, 0x00, 0x0E, b"\x3f\x00")) == 0x6A86  # occurrence only by name
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C))
    assert sw(s, CommandApdu(0x00, 0xA4, 0x03, 0x0C)) == 0x6A82  # the MF has no parent
    assert sw(s, CommandApdu(0x00, 0xA4, 0x03, 0x0C, b"\x00\x00")) == 0x6A87


def test_select_by_name_exact_partial_first_next() -> None:
    s = connect(populated())

    def name_of(r: ResponseApdu) -> bytes:
        return ber_decode(r.data)[0].find(0x84).value  # type: ignore[union-attr]

    r = s.send(CommandApdu(0x00, 0xA4, 0x04, 0x04, bytes.fromhex("A000000001"), le=256))
    assert name_of(r) == bytes.fromhex("A000000001")  # the exact match comes first
    r = s.send(CommandApdu(0x00, 0xA4, 0x04, 0x06, bytes.fromhex("A000000001"), le=256))  # next
    assert name_of(r) == bytes.fromhex("A00000000102")
    r = s.send(CommandApdu(0x00, 0xA4, 0x04, 0x06, bytes.fromhex("A000000001"), le=256))
    assert name_of(r) == bytes.fromhex("A00000000103")
    assert sw(s, CommandApdu(0x00, 0xA4, 0x04, 0x06, bytes.fromhex("A000000001"), le=256)) == 0x6A82
    r = s.send(CommandApdu(0x00, 0xA4, 0x04, 0x05, bytes.fromhex("A0000000"), le=256))  # last
    assert name_of(r) == bytes.fromhex("A00000000103")
    r = s.send(CommandApdu(0x00, 0xA4, 0x04, 0x07, bytes.fromhex("A0000000"), le=256))  # previous
    assert name_of(r) == bytes.fromhex("A00000000102")
    assert sw(s, CommandApdu(0x00, 0xA4, 0x04, 0x0C, bytes.fromhex("B0"))) == 0x6A82
    # selecting by name makes the DF current: its child EF is reachable by FID
    s.send(CommandApdu(0x00, 0xA4, 0x04, 0x0C, bytes.fromhex("A00000000102")))
    assert sw(s, CommandApdu(0x00, 0xA4, 0x02, 0x0C, b"\x51\x01")) == 0x9000


def test_select_deactivated_and_terminated_warn() -> None:
    card = populated()
    card.mf.child(0x2F00).lcs = Lcs.DEACTIVATED  # type: ignore[union-attr]
    card.mf.child(0x6000).lcs = Lcs.TERMINATED  # type: ignore[union-attr]
    s = connect(card)
    r = select(s, 0x2F00, 0x04)
    assert r.sw == 0x6283 and r.data[0] == 0x62
    assert select(s, 0x6000, 0x04).sw == 0x6285
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C))
    select(s, 0x2F00)
    assert sw(s, CommandApdu(0x00, 0xB0, 0, 0, le=4)) == 0x6985  # a deactivated EF cannot be read


# ------------------------------------------------------------------------------------------ binary


def test_read_binary_offsets_sfi_and_errors() -> None:
    s = connect(populated())
    assert sw(s, CommandApdu(0x00, 0xB0, 0, 0, le=4)) == 0x6986  # no current EF
    select(s, 0x2F00)
    assert s.send(CommandApdu(0x00, 0xB0, 0, 2, le=4)).data == bytes([2, 3, 4, 5])
    r = s.transmit(CommandApdu(0x00, 0xB0, 0, 36, le=10))
    assert r.sw == 0x6282 and r.data == bytes([36, 37, 38, 39])  # end reached before Le bytes
    assert sw(s, CommandApdu(0x00, 0xB0, 0, 40, le=1)) == 0x6B00
    assert sw(s, CommandApdu(0x00, 0xB0, 0x7F, 0xFF, le=1)) == 0x6B00
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00"))
    assert s.send(CommandApdu(0x00, 0xB0, 0x80 | 0x01, 0, le=3)).data == b"\x11\x11\x11"  # SFI 1 = 5001
    assert sw(s, CommandApdu(0x00, 0xB0, 0x80 | 0x1E, 0, le=3)) == 0x6A82
    assert sw(s, CommandApdu(0x00, 0xB0, 0xA1, 0, le=3)) == 0x6A86
    assert sw(s, CommandApdu(0x00, 0xB0, 0x82, 0, le=3)) == 0x6981  # SFI 2 = a record EF
    assert sw(s, CommandApdu(0x00, 0xB0, 0x85, 0, le=3)) == 0x6982  # 5005: read = never
    assert sw(s, CommandApdu(0x00, 0xB0, 0x81, 0, b"\x00", le=3)) == 0x6700
    assert s.send(CommandApdu(0x00, 0xB0, 0x81, 0, le=256)).data == b"\x11" * 256  # Le 00: up to 256, 9000
    raw = s.transport.transmit(bytes.fromhex("00B08100000000"))  # extended Le 0000: the whole 300-byte file
    assert raw == b"\x11" * 300 + b"\x90\x00"


def test_update_write_erase_binary() -> None:
    card = populated()
    s = connect(card)
    select(s, 0x2F00)
    s.send(CommandApdu(0x00, 0xD6, 0, 1, b"\xf0\x0f"))
    assert s.send(CommandApdu(0x00, 0xB0, 0, 0, le=4)).data == bytes([0, 0xF0, 0x0F, 3])
    s.send(CommandApdu(0x00, 0xD0, 0, 1, b"\x0f\xf0"))  # WRITE BINARY ORs (data coding byte 41)
    assert s.send(CommandApdu(0x00, 0xB0, 0, 0, le=4)).data == bytes([0, 0xFF, 0xFF, 3])
    s.send(CommandApdu(0x00, 0x0E, 0, 2, b"\x00\x04"))  # erase bytes 2..3
    assert s.send(CommandApdu(0x00, 0xB0, 0, 0, le=5)).data == bytes([0, 0xFF, 0, 0, 4])
    s.send(CommandApdu(0x00, 0x0E, 0, 38))  # erase to the end
    assert s.send(CommandApdu(0x00, 0xB0, 0, 36, le=4)).data == bytes([36, 37, 0, 0])
    assert sw(s, CommandApdu(0x00, 0xD6, 0, 39, b"\x01\x02")) == 0x6A84
    assert sw(s, CommandApdu(0x00, 0xD6, 0, 40, b"\x01")) == 0x6B00
    assert sw(s, CommandApdu(0x00, 0xD6, 0, 0)) == 0x6700
    assert sw(s, CommandApdu(0x00, 0x0E, 0, 0, b"\x01")) == 0x6700
    assert sw(s, CommandApdu(0x00, 0x0E, 0, 4, b"\x00\x02")) == 0x6A80
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00\x50\x05"))
    assert sw(s, CommandApdu(0x00, 0xD6, 0, 0, b"\x01")) == 0x6982
    assert bytes(card.mf.child(0x5000).child(0x5005).data) == bytes(8)  # type: ignore[union-attr]


def test_long_update_goes_through_chaining() -> None:
    card = populated()
    s = CardSession(VirtualTransport(card), extended=False)
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00\x50\x01"))
    payload = bytes(range(256)) + bytes(range(44))
    s.send(CommandApdu(0x00, 0xD6, 0, 0, payload))  # 300 bytes: two chained APDUs
    first = s.send(CommandApdu(0x00, 0xB0, 0, 0, le=256)).data
    assert first + s.send(CommandApdu(0x00, 0xB0, 0x01, 0x00, le=256)).data == payload
    ef = card.mf.child(0x5000).child(0x5001)  # type: ignore[union-attr]
    assert bytes(ef.data) == payload  # type: ignore[union-attr]


def test_chain_broken_by_other_command() -> None:
    card = populated()
    s = connect(card)
    select(s, 0x2F00)
    assert card.transmit(bytes.fromhex("10D6000002AABB")) == b"\x90\x00"
    assert card.transmit(bytes.fromhex("00B0000004")) == b"\x68\x83"  # last command of the chain expected
    assert card.transmit(bytes.fromhex("00B0000002")) == b"\x00\x01\x90\x00"


# ------------------------------------------------------------------------------------------ records


def test_linear_fixed_records() -> None:
    s = connect(populated())
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00\x50\x02"))
    assert s.send(CommandApdu(0x00, 0xB2, 1, 0x04, le=256)).data == b"AAAAAAAA"
    assert s.send(CommandApdu(0x00, 0xB2, 2, (2 << 3) | 0x04, le=256)).data == b"BBBBBBBB"  # by SFI
    assert sw(s, CommandApdu(0x00, 0xB2, 3, 0x04, le=256)) == 0x6A83
    assert sw(s, CommandApdu(0x00, 0xB2, 1, 0x05, le=256)) == 0x6A86
    assert sw(s, CommandApdu(0x00, 0xE2, 0, 0, b"CCCCCCCC")) == 0x9000
    assert sw(s, CommandApdu(0x00, 0xE2, 0, 0, b"DDDDDDDD")) == 0x6A84  # full
    assert sw(s, CommandApdu(0x00, 0xE2, 0, 0, b"DDDDDDDDD")) == 0x6700  # too long
    assert sw(s, CommandApdu(0x00, 0xDC, 2, 0x04, b"short")) == 0x6700  # fixed size
    s.send(CommandApdu(0x00, 0xDC, 2, 0x04, b"bbbbbbbb"))
    assert s.send(CommandApdu(0x00, 0xB2, 2, 0x04, le=256)).data == b"bbbbbbbb"
    assert sw(s, CommandApdu(0x00, 0xDC, 9, 0x04, b"bbbbbbbb")) == 0x6A83
    assert s.send(CommandApdu(0x00, 0xA2, 1, 0x04, b"CC")).data == b"\x03"  # SEARCH RECORD
    assert s.send(CommandApdu(0x00, 0xA2, 1, 0x04, b"Z")).data == b""
    assert s.send(CommandApdu(0x00, 0xB2, 1, 0x04, le=4)).data == b"AAAAAAAA"  # 61xx + GET RESPONSE
    assert sw(s, CommandApdu(0x00, 0xB2, 1, 0x04)) == 0x6700  # no Le
    s.send(CommandApdu(0x00, 0xA4, 0x02, 0x0C, b"\x50\x01"))
    assert sw(s, CommandApdu(0x00, 0xB2, 1, 0x04, le=256)) == 0x6981


def test_linear_variable_and_cyclic() -> None:
    s = connect(populated())
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00\x50\x03"))
    assert s.send(CommandApdu(0x00, 0xB2, 2, 0x04, le=256)).data == b"hello"
    s.send(CommandApdu(0x00, 0xDC, 2, 0x04, b"a longer record"))
    assert s.send(CommandApdu(0x00, 0xB2, 2, 0x04, le=256)).data == b"a longer record"
    assert sw(s, CommandApdu(0x00, 0xE2, 0, 0, b"y" * 21)) == 0x6700
    assert s.send(CommandApdu(0x00, 0xA2, 1, 0x04, b"o")).data == b"\x02"
    s.send(CommandApdu(0x00, 0xA4, 0x02, 0x0C, b"\x50\x04"))
    for rec in (b"r1", b"r2", b"r3", b"r4"):
        s.send(CommandApdu(0x00, 0xE2, 0, 0, rec))
    got = [s.send(CommandApdu(0x00, 0xB2, n, 0x04, le=256)).data for n in (1, 2, 3)]
    assert got == [b"r4", b"r3", b"r2"]  # record 1 is the newest; the oldest dropped
    assert sw(s, CommandApdu(0x00, 0xB2, 4, 0x04, le=256)) == 0x6A83


# ------------------------------------------------------------------------------------------ CREATE / DELETE


def test_create_file_needs_issuer_and_checks_fcp() -> None:
    card = blank()
    s = connect(card)
    assert sw(s, CommandApdu(0x00, 0xE0, 0, 0, fcp_ef(0x2F01))) == 0x6982  # blank MF: issuer only
    open_issuer(s)
    s.send(CommandApdu(0x00, 0xE0, 0, 0, fcp_df(0x7000, b"\xa0\x00\x00\x00\x99")))
    assert s.send(CommandApdu(0x00, 0xA4, 0x00, 0x04, le=256)).data  # 7000 is now current: an FCP comes back
    s.send(CommandApdu(0x00, 0xE0, 0, 0, fcp_ef(0x7001, 10, sfi=b"\x08")))
    s.send(CommandApdu(0x00, 0xD6, 0, 0, b"0123456789"))  # the new EF is current
    assert s.send(CommandApdu(0x00, 0xB0, 0x81, 0, le=10)).data == b"0123456789"
    assert sw(s, CommandApdu(0x00, 0xE0, 0, 0, fcp_ef(0x7001))) == 0x6A89  # same FID
    assert sw(s, CommandApdu(0x00, 0xE0, 0, 0, fcp_ef(0x7000))) == 0x6A89  # the parent's FID
    assert sw(s, CommandApdu(0x00, 0xE0, 0, 0, fcp_ef(0x7002, sfi=b"\x08"))) == 0x6A89  # same SFI
    assert sw(s, CommandApdu(0x00, 0xE0, 0, 0, fcp_df(0x7100, b"\xa0\x00\x00\x00\x99"))) == 0x6A8A
    bad = [
        b"\x62\x00",
        b"\x6f\x03\x83\x01\x01",
        fcp_ef(0x3F00),
        fcp_ef(0x7003, descriptor=b"\x00"),
        fcp_ef(0x7003, descriptor=b"\x02\x41"),  # record EF without record size and count
        fcp_ef(0x7003, sfi=b"\x09"),
        fcp_ef(0x7003, lcs=0x0C),
        fcp_ef(0x7003, 0x9000),
        ber_encode(0x62, ber_encode(0x82, b"\x01") + ber_encode(0x83, b"\x70\x03") + ber_encode(0x80, b"\x00\x10")),
        b"\x62\x05\x82\x01",
    ]
    for data in bad:
        assert sw(s, CommandApdu(0x00, 0xE0, 0, 0, data)) == 0x6A80, data.hex()
    assert sw(s, CommandApdu(0x00, 0xE0, 0, 0)) == 0x6700
    assert sw(s, CommandApdu(0x00, 0xE0, 1, 0, fcp_ef(0x7004))) == 0x6A86


def test_create_record_ef_and_memory_limit() -> None:
    card = blank(CardOptions(memory_size=400))
    s = connect(card)
    open_issuer(s)
    s.send(CommandApdu(0x00, 0xE0, 0, 0, fcp_ef(0x2F02, descriptor=bytes.fromhex("0241000A03"))))
    ef = card.mf.child(0x2F02)
    assert ef is not None and ef.structure is EfType.LINEAR_FIXED  # type: ignore[union-attr]
    assert (ef.record_size, ef.record_count) == (10, 3)  # type: ignore[union-attr]
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C))
    assert sw(s, CommandApdu(0x00, 0xE0, 0, 0, fcp_ef(0x2F03, 2000))) == 0x6A84


def test_delete_file_rules_and_current_file() -> None:
    card = populated()
    s = connect(card)
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00"))
    s.send(CommandApdu(0x00, 0xE4, 0, 0, b"\x50\x01"))
    assert card.mf.child(0x5000).child(0x5001) is None  # type: ignore[union-attr]
    assert sw(s, CommandApdu(0x00, 0xA4, 0x02, 0x0C, b"\x50\x01")) == 0x6A82
    assert sw(s, CommandApdu(0x00, 0xE4, 0, 0, b"\x50\x05")) == 0x6982  # delete not granted on 5005
    assert sw(s, CommandApdu(0x00, 0xE4, 0, 0, b"\x59\x99")) == 0x6A82
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C))
    assert sw(s, CommandApdu(0x00, 0xE4, 0, 0, b"\x50\x00")) == 0x6982  # blank MF: delete-child = issuer
    open_issuer(s)
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x50\x00"))
    s.send(CommandApdu(0x00, 0xE4, 0, 0))  # the current DF, with all it holds
    assert card.mf.child(0x5000) is None
    assert sw(s, CommandApdu(0x00, 0xE4, 0, 0)) == 0x6985  # now the MF is current: not deletable


def test_lifecycle_commands() -> None:
    card = populated()
    s = connect(card)
    select(s, 0x2F00)
    s.send(CommandApdu(0x00, 0x04, 0, 0))
    ef = card.mf.child(0x2F00)
    assert ef is not None and ef.lcs is Lcs.DEACTIVATED
    assert sw(s, CommandApdu(0x00, 0xB0, 0, 0, le=1)) == 0x6985
    s.send(CommandApdu(0x00, 0x44, 0, 0))
    assert ef.lcs is Lcs.ACTIVATED and sw(s, CommandApdu(0x00, 0xB0, 0, 0, le=1)) == 0x9000
    s.send(CommandApdu(0x00, 0xE8, 0, 0))
    assert ef.lcs is Lcs.TERMINATED
    assert sw(s, CommandApdu(0x00, 0x44, 0, 0)) == 0x6985  # termination is final
    assert sw(s, CommandApdu(0x00, 0xD6, 0, 0, b"x")) == 0x6985
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00"))
    assert sw(s, CommandApdu(0x00, 0xE8, 0, 0)) == 0x6986  # TERMINATE EF without a current EF
    s.send(CommandApdu(0x00, 0xE6, 0, 0, b"\x51\x00"))  # TERMINATE DF on a child DF
    assert card.mf.child(0x5000).child(0x5100).lcs is Lcs.TERMINATED  # type: ignore[union-attr]
    assert sw(s, CommandApdu(0x00, 0xE6, 0, 0, b"\x50\x02")) == 0x6981  # an EF is not a DF
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00\x51\x00\x51\x01"))
    assert sw(s, CommandApdu(0x00, 0xB0, 0, 0, le=1)) == 0x6985  # inside a terminated DF
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C))
    assert sw(s, CommandApdu(0x00, 0x04, 0, 0)) == 0x6982  # blank MF: deactivate = never


def test_terminate_card_usage() -> None:
    card = populated()
    s = connect(card)
    assert sw(s, CommandApdu(0x00, 0xFE, 0, 0)) == 0x6982
    open_issuer(s)
    s.send(CommandApdu(0x00, 0xFE, 0, 0))
    assert card.terminated
    s.reset(cold=True)
    assert sw(s, CommandApdu(0x00, 0xA4, 0x00, 0x0C)) == 0x6A81


# ------------------------------------------------------------------------------------------ GET/PUT DATA


def test_get_and_put_data() -> None:
    card = blank()
    s = connect(card)
    assert s.send(CommandApdu(0x00, 0xCA, 0x00, 0x45, le=256)).data == SERIAL
    assert s.send(CommandApdu(0x00, 0xCA, 0x5F, 0x52, le=256)).data == card.atr[5:-1]
    assert sw(s, CommandApdu(0x00, 0xCA, 0x5F, 0x50, le=256)) == 0x6A88
    assert sw(s, CommandApdu(0x00, 0xDA, 0x5F, 0x50, b"https://example.test")) == 0x6982
    open_issuer(s)
    s.send(CommandApdu(0x00, 0xDA, 0x5F, 0x50, b"https://example.test"))
    assert s.send(CommandApdu(0x00, 0xCA, 0x5F, 0x50, le=256)).data == b"https://example.test"
    assert sw(s, CommandApdu(0x00, 0xDA, 0x00, 0x45, b"\x00")) == 0x6985
    assert sw(s, CommandApdu(0x00, 0xDA, 0x12, 0x34, b"\x00")) == 0x6A88
    s.send(CommandApdu(0x00, 0xDA, 0x5F, 0x50))
    assert sw(s, CommandApdu(0x00, 0xCA, 0x5F, 0x50, le=256)) == 0x6A88


# ------------------------------------------------------------------------------------------ classes, lengths


def test_class_and_instruction_checks() -> None:
    card = populated()
    card.power_on()
    assert card.transmit(b"\x00\xa4") == b"\x67\x00"
    assert card.transmit(bytes.fromhex("FFA40000")) == b"\x6e\x00"
    assert card.transmit(bytes.fromhex("20A40000")) == b"\x6e\x00"
    assert card.transmit(bytes.fromhex("80A40000")) == b"\x6e\x00"  # ISO command in a proprietary class
    assert card.transmit(bytes.fromhex("00D80000")) == b"\x6d\x00"  # PUT KEY is proprietary-class only
    assert card.transmit(bytes.fromhex("0060000000")) == b"\x6d\x00"
    assert card.transmit(bytes.fromhex("0050000000")) == b"\x6d\x00"
    assert card.transmit(bytes.fromhex("00A4000005AA")) == b"\x67\x00"  # Lc inconsistent
    assert card.transmit(bytes.fromhex("40A40000")) == b"\x68\x81"  # further interindustry: no channels 4+
    assert card.transmit(bytes.fromhex("01A40000")) == b"\x68\x81"  # channel 1 not open
    assert card.transmit(bytes.fromhex("0CA40000")) == b"\x68\x82"  # SM without a session
    assert card.transmit(bytes.fromhex("00C0000010")) == b"\x69\x85"  # nothing to GET RESPONSE


def test_extended_length_switch_and_limits() -> None:
    card = populated(CardOptions(extended_length=False, max_command=100))
    card.power_on()
    card.transmit(bytes.fromhex("00A4080C0450005001"))
    assert card.transmit(bytes.fromhex("00B00000000010")) == b"\x67\x00"  # extended Le refused
    assert card.transmit(b"\x00\xd6\x00\x00\x65" + b"\x00" * 101) == b"\x67\x00"  # over max_command
    assert card.transmit(b"\x00\xd6\x00\x00\x64" + b"\x00" * 100) == b"\x90\x00"


def test_t0_style_61xx_and_6cxx() -> None:
    card = populated(CardOptions(t0_style=True))
    card.power_on()
    card.transmit(bytes.fromhex("00A4000C022F00"))
    assert card.transmit(bytes.fromhex("00B0000004")) == bytes([0, 1, 2, 3, 0x90, 0x00])  # exact Le
    assert card.transmit(bytes.fromhex("00B0002408")) == b"\x6c\x04"  # only 4 bytes left: wrong Le
    assert card.transmit(bytes.fromhex("00B0000000")) == b"\x61\x28"  # Le=00: 40 bytes via GET RESPONSE
    assert card.transmit(bytes.fromhex("00C0000010")) == bytes(range(16)) + b"\x61\x18"
    assert card.transmit(bytes.fromhex("00C0000030")) == b"\x6c\x18"
    assert card.transmit(bytes.fromhex("00C0000018")) == bytes(range(16, 40)) + b"\x90\x00"
    r = card.transmit(bytes.fromhex("00A40004022F0000"))  # case 4: always 61xx on T=0
    assert r[0] == 0x61
    # the session's T0 processor hides all of this
    s = connect(populated(CardOptions(t0_style=True)))
    select(s, 0x2F00)
    assert s.send(CommandApdu(0x00, 0xB0, 0, 0, le=256)).data == bytes(range(40))
    assert s.send(CommandApdu(0x00, 0xB0, 0, 0, le=8)).data == bytes(range(8))


def test_max_response_splits_with_61xx() -> None:
    card = populated(CardOptions(max_response=16))
    card.power_on()
    card.transmit(bytes.fromhex("00A4000C022F00"))
    r = card.transmit(bytes.fromhex("00B0000000"))
    assert r == bytes(range(16)) + b"\x90\x00"  # READ BINARY reads at most max_response bytes
    card.transmit(bytes.fromhex("00A4000C023F00"))
    r = card.transmit(bytes.fromhex("00A4000400"))
    assert len(r) == 18 and r[-2] == 0x61  # a longer FCP is split
    s = connect(populated(CardOptions(max_response=16)))
    assert s.send(CommandApdu(0x00, 0xA4, 0x00, 0x04, le=256)).data[0] == 0x62


# ------------------------------------------------------------------------------------------ channels


def test_logical_channels_are_independent() -> None:
    card = populated()
    s = connect(card)
    assert s.send(CommandApdu(0x00, 0x70, 0x00, 0x00, le=1)).data == b"\x01"
    assert s.send(CommandApdu(0x00, 0x70, 0x00, 0x00, le=1)).data == b"\x02"
    s.send(CommandApdu(0x00, 0x70, 0x00, 0x03))
    assert sw(s, CommandApdu(0x00, 0x70, 0x00, 0x00, le=1)) == 0x6A81  # all taken
    assert sw(s, CommandApdu(0x00, 0x70, 0x00, 0x03)) == 0x6985
    select(s, 0x2F00)
    s.send(CommandApdu(0x01, 0xA4, 0x08, 0x0C, b"\x50\x00\x50\x01"))
    assert s.send(CommandApdu(0x00, 0xB0, 0, 0, le=2)).data == b"\x00\x01"  # channel 0: 2F00
    assert s.send(CommandApdu(0x01, 0xB0, 0, 0, le=2)).data == b"\x11\x11"  # channel 1: 5001
    s.send(CommandApdu(0x00, 0x70, 0x80, 0x02))  # close channel 2, reopen it from channel 1: inherits 5001
    assert s.send(CommandApdu(0x01, 0x70, 0x00, 0x00, le=1)).data == b"\x02"
    assert s.send(CommandApdu(0x02, 0xB0, 0, 0, le=2)).data == b"\x11\x11"
    s.send(CommandApdu(0x02, 0x70, 0x80, 0x00))  # close itself
    assert sw(s, CommandApdu(0x02, 0xB0, 0, 0, le=2)) == 0x6881
    assert sw(s, CommandApdu(0x00, 0x70, 0x80, 0x00)) == 0x6A86  # the basic channel stays
    assert sw(s, CommandApdu(0x00, 0x70, 0x80, 0x02)) == 0x6A88
    assert sw(s, CommandApdu(0x00, 0x70, 0x40, 0x00)) == 0x6A86
    s.reset(cold=True)
    assert sw(s, CommandApdu(0x01, 0xB0, 0, 0, le=2)) == 0x6881  # power-off closes every channel


# ------------------------------------------------------------------------------------------ applications


class EchoApp:
    """Answers INS 10 with its data; leaves everything else to the ISO OS."""

    def __init__(self) -> None:
        self.deselected = 0

    def select(self, card: VirtualCard) -> bytes:
        return ber_encode(0x6F, ber_encode(0x84, b"\xf0ECHO"))

    def process(self, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu | None:
        if apdu.ins == 0x10:
            return ResponseApdu.of(0x9000, apdu.data + bytes((card.channel.number,)))
        return None

    def deselect(self, card: VirtualCard) -> None:
        self.deselected += 1


def test_registered_application_gets_commands_first() -> None:
    card = populated()
    app = EchoApp()
    card.register_application(b"\xf0ECHO", app)
    s = connect(card)
    assert sw(s, CommandApdu(0x80, 0x10, 0, 0, b"hi", le=256)) == 0x6D00  # not selected: ISO OS answers
    r = s.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, b"\xf0EC", le=256))  # partial AID
    assert r.data == ber_encode(0x6F, ber_encode(0x84, b"\xf0ECHO"))
    assert s.send(CommandApdu(0x80, 0x10, 0, 0, b"hi", le=256)).data == b"hi\x00"
    select(s, 0x2F00)  # an EF selection is left to the ISO OS and keeps the application
    assert s.send(CommandApdu(0x00, 0xB0, 0, 0, le=1)).data == b"\x00"
    assert s.send(CommandApdu(0x80, 0x10, 0, 0, b"", le=256)).data == b"\x00"
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C))  # selecting the MF deselects it
    assert app.deselected == 1
    assert sw(s, CommandApdu(0x80, 0x10, 0, 0, b"hi", le=256)) == 0x6D00


# ------------------------------------------------------------------------------------------ images, feeder


def test_image_round_trip_equality(tmp_path: Path) -> None:
    card = populated()
    card.mf.child(0x5000).set_pin(1, b"1234", max_tries=3)  # type: ignore[union-attr]
    card.mf.child(0x5000).set_pin(1, b"87654321", max_tries=5, puk=True)  # type: ignore[union-attr]
    card.mf.child(0x5000).child(0x5002).lcs = Lcs.DEACTIVATED  # type: ignore[union-attr]
    card.mf.keys[0].tries_left = 4
    card.data_objects[0x5F50] = b"url"
    path = tmp_path / "card.json"
    card.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = VirtualCard.load(path)
    assert card_to_dict(loaded) == card_to_dict(card)
    assert loaded.mf.keys[0].tries_left == 4 and loaded.serial == SERIAL
    # and it behaves the same
    a, b = connect(card), connect(loaded)
    for apdu in (CommandApdu(0x00, 0xA4, 0x08, 0x04, b"\x50\x00\x50\x01", le=256),
                 CommandApdu(0x00, 0xB0, 0, 0, le=16), CommandApdu(0x00, 0x20, 0x00, 0x81, b"0000")):
        assert a.transmit(apdu) == b.transmit(apdu)
    doc = json.loads(path.read_text())
    assert doc["format"] == "cardkit-virtual-card" and doc["version"] == 1


def test_image_rejects_bad_documents(tmp_path: Path) -> None:
    good = card_to_dict(populated())
    for broken in ({}, {**good, "version": 2}, {**good, "serial": "zz"}, {**good, "mf": {"type": "ef"}},
                   {**good, "options": {"t0_style": True, "bogus": 1}}):
        with pytest.raises(ImageError):
            card_from_dict(broken)
    bad = json.loads(json.dumps(good))
    bad["mf"]["children"][0]["fid"] = "3F00"
    with pytest.raises(ImageError):
        card_from_dict(bad)
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(ImageError):
        load_image(tmp_path / "x.json")


def test_feeder_hands_out_unique_serials(tmp_path: Path) -> None:
    f1 = CardFeeder(tmp_path, KEY, Alg.AES)
    f2 = CardFeeder(tmp_path, KEY, Alg.AES)  # a second station on the same directory
    cards = f1.take(5) + f2.take(5) + f1.take(2)
    serials = [c.serial for c in cards]
    assert len(set(serials)) == 12
    assert serials[0] == bytes.fromhex("C0000001") and serials[-1] == bytes.fromhex("C000000C")
    f3 = CardFeeder(tmp_path, KEY, Alg.AES)  # the counter survived in the directory
    assert f3.next_card().serial == bytes.fromhex("C000000D")
    card = cards[0]
    assert card.mf.keys[0].value == KEY and card.mf.rules.rule("create-ef").text == "issuer"


# ------------------------------------------------------------------------------------------ FCP properties

_rule_text = st.sampled_from(["always", "never", "pin:01", "key:02", "sm", "issuer", "pin:01 or key:03 and sm"])
_fids = st.integers(0x0001, 0xFFFE).filter(lambda f: f not in (0x3F00, 0x3FFF))
_lcs = st.sampled_from([Lcs.CREATION, Lcs.INITIALISATION, Lcs.ACTIVATED, Lcs.DEACTIVATED])


@st.composite
def _ef_specs(draw: st.DrawFn) -> FileSpec:
    structure = draw(st.sampled_from(list(EfType)))
    read, upd, wr = draw(_rule_text), draw(_rule_text), draw(_rule_text)
    rules = AccessRules(read=read, update=upd, erase=upd, write=wr, append=wr, delete=draw(_rule_text))
    transparent = structure is EfType.TRANSPARENT
    return FileSpec(fid=draw(_fids), is_df=False, structure=structure,
                    size=draw(st.integers(0, 0x8000)) if transparent else 0,
                    record_size=0 if transparent else draw(st.integers(1, 255)),
                    record_count=0 if transparent else draw(st.integers(1, 254)),
                    sfi=draw(st.none() | st.integers(1, 30)), lcs=draw(_lcs), rules=rules)


@st.composite
def _df_specs(draw: st.DrawFn) -> FileSpec:
    rules = AccessRules(create_ef=draw(_rule_text), create_df=draw(_rule_text), delete_child=draw(_rule_text))
    return FileSpec(fid=draw(_fids), is_df=True, name=draw(st.none() | st.binary(min_size=1, max_size=16)),
                    lcs=draw(_lcs), rules=rules)


@given(_ef_specs() | _df_specs())
def test_fcp_round_trip(spec: FileSpec) -> None:
    assert parse_fcp(build_fcp(spec.build())) == spec


@given(st.binary(max_size=80))
def test_parse_fcp_answers_only_6a80(data: bytes) -> None:
    try:
        spec = parse_fcp(data)
    except SwError as exc:
        assert exc.sw == 0x6A80
    else:
        spec.validate()


@given(_ef_specs(), st.data())
def test_parse_fcp_mutations_answer_only_6a80(spec: FileSpec, data: st.DataObject) -> None:
    raw = bytearray(build_fcp(spec.build()))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    try:
        parse_fcp(bytes(raw))
    except SwError as exc:
        assert exc.sw == 0x6A80
