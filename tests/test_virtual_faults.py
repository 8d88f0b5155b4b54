"""Fault injection: power loss and removal mid-command, torn writes, anti-tearing counters, latency model."""

from __future__ import annotations

import pytest
from test_virtual_fs import OPEN, connect, populated

from cardkit.apdu import CommandApdu
from cardkit.errors import CardRemovedError
from cardkit.session import CardSession
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual import CardGone, CardOptions, EfType, VirtualCard, VirtualCardError, power_loss_at, remove_at
from cardkit.virtual.faults import PAGE, CorruptingCard


def _ef(card: VirtualCard, *path: int):  # type: ignore[no-untyped-def]
    node = card.mf
    for fid in path:
        node = node.child(fid)  # type: ignore[assignment]
    return node


def test_power_loss_tears_a_binary_write_to_a_prefix() -> None:
    card = populated()
    s = connect(card)
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00\x50\x01"))
    power_loss_at(card, 1, prefix=100)
    with pytest.raises(CardGone) as info:
        s.send(CommandApdu(0x00, 0xD6, 0, 0, b"\x22" * 200))
    assert info.value.removed is False and not card.powered
    assert isinstance(info.value, CardRemovedError)
    data = bytes(_ef(card, 0x5000, 0x5001).data)
    assert data[:100] == b"\x22" * 100 and data[100:] == b"\x11" * 200  # the first 100 bytes only
    s.reset(cold=False)  # the card is still in the reader: power it up again
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00\x50\x01"))
    assert s.send(CommandApdu(0x00, 0xB0, 0, 98, le=4)).data == b"\x22\x22\x11\x11"


def test_random_tear_length_is_a_strict_prefix() -> None:
    lengths = set()
    for seed in range(30):
        card = populated()
        s = connect(card)
        s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x2f\x00"))
        power_loss_at(card, 1, seed=seed)
        with pytest.raises(CardGone):
            s.send(CommandApdu(0x00, 0xD6, 0, 0, b"\xee" * 40))
        data = bytes(_ef(card, 0x2F00).data)
        k = len(data) - len(data.lstrip(b"\xee"))
        assert data[k:] == bytes(range(k, 40))  # a prefix of new bytes, the old bytes after it
        assert k < 40
        lengths.add(k)
    assert len(lengths) > 5  # the cut point varies with the seed


def test_power_loss_on_a_later_apdu_and_volatile_state() -> None:
    card = populated()
    s = connect(card)
    power_loss_at(card, 3)
    s.send(CommandApdu(0x00, 0x70, 0x00, 0x00, le=1))  # 1: open channel 1
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x2f\x00"))  # 2
    with pytest.raises(CardGone):
        s.send(CommandApdu(0x00, 0xB0, 0, 0, le=4))  # 3: cut (a read: nothing to tear)
    with pytest.raises(CardRemovedError):
        card.transmit(bytes.fromhex("00A4000C"))  # unpowered
    s.reset()
    assert s.transmit(CommandApdu(0x01, 0xA4, 0x00, 0x0C)).sw == 0x6881  # the channel is gone
    assert s.transmit(CommandApdu(0x00, 0xB0, 0, 0, le=4)).sw == 0x6986  # and so is the current EF


def test_small_record_update_is_atomic_large_one_is_torn() -> None:
    applied = set()
    for seed in range(20):
        card = populated()
        s = connect(card)
        s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00\x50\x02"))
        power_loss_at(card, 1, seed=seed)
        with pytest.raises(CardGone):
            s.send(CommandApdu(0x00, 0xDC, 1, 0x04, b"ZZZZZZZZ"))
        rec = bytes(_ef(card, 0x5000, 0x5002).records[0])
        assert rec in (b"AAAAAAAA", b"ZZZZZZZZ")  # all or nothing
        applied.add(rec)
    assert applied == {b"AAAAAAAA", b"ZZZZZZZZ"}
    card = populated()
    big = card.mf.add_ef(0x2F10, EfType.LINEAR_VARIABLE, record_size=200, record_count=2, rules=OPEN,
                         records=[b"\x01" * 150])
    s = connect(card)
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x2f\x10"))
    power_loss_at(card, 1, prefix=PAGE + 6)
    with pytest.raises(CardGone):
        s.send(CommandApdu(0x00, 0xDC, 1, 0x04, b"\x02" * 150))
    assert bytes(big.records[0]) == b"\x02" * (PAGE + 6) + b"\x01" * (150 - PAGE - 6)


def test_pin_try_is_spent_even_when_power_is_cut() -> None:
    card = populated()
    card.mf.child(0x5000).set_pin(1, b"1234", max_tries=3)  # type: ignore[union-attr]
    pin = card.mf.child(0x5000).pins[1]  # type: ignore[union-attr]
    s = connect(card)
    s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00"))
    for seed in range(3):
        power_loss_at(card, 1, seed=seed)
        with pytest.raises(CardGone):
            s.send(CommandApdu(0x00, 0x20, 0x00, 0x81, b"1234"))  # even the right PIN: try spent first
        s.reset()
        s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00"))
    assert pin.tries_left == 0
    assert s.transmit(CommandApdu(0x00, 0x20, 0x00, 0x81, b"1234")).sw == 0x6983


def test_removal_needs_reinsertion() -> None:
    card = populated()
    transport = VirtualTransport(card)
    s = CardSession(transport)
    remove_at(card, 2)
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x2f\x00"))
    with pytest.raises(CardGone) as info:
        s.send(CommandApdu(0x00, 0xD6, 0, 0, b"\x55" * 10))
    assert info.value.removed and not card.present
    with pytest.raises(CardRemovedError):
        transport.reset()
    card.insert()
    transport.reset()
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x2f\x00"))
    data = s.send(CommandApdu(0x00, 0xB0, 0, 0, le=10)).data
    k = len(data) - len(data.lstrip(b"\x55"))
    assert k < 10 and data[k:] == bytes(range(k, 10))


def test_create_file_is_all_or_nothing() -> None:
    from test_virtual_fs import fcp_ef

    outcomes = set()
    for seed in range(12):
        card = populated()
        s = connect(card)
        s.send(CommandApdu(0x00, 0xA4, 0x08, 0x0C, b"\x50\x00"))
        power_loss_at(card, 1, seed=seed)
        with pytest.raises(CardGone):
            s.send(CommandApdu(0x00, 0xE0, 0, 0, fcp_ef(0x5050, 10)))
        outcomes.add(card.mf.child(0x5000).child(0x5050) is not None)  # type: ignore[union-attr]
    assert outcomes == {True, False}


def test_fault_arguments_are_checked() -> None:
    card = populated()
    with pytest.raises(VirtualCardError):
        power_loss_at(card, 0)
    with pytest.raises(VirtualCardError):
        remove_at(card, 1, prefix=-1)
    with pytest.raises(VirtualCardError):
        CorruptingCard(card, direction="sideways")  # type: ignore[arg-type]


def test_corrupting_card_leaves_plain_traffic_alone() -> None:
    card = populated()
    wrapper = CorruptingCard(card, at=None)
    s = CardSession(VirtualTransport(wrapper))
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x2f\x00"))
    assert s.send(CommandApdu(0x00, 0xB0, 0, 0, le=3)).data == b"\x00\x01\x02"
    assert wrapper.corrupted == 0 and wrapper.serial == card.serial  # attributes pass through


def test_write_latency_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # no timed assertion: record what the card asks for
    card = populated(CardOptions(write_latency_per_byte_s=0.0005, apdu_latency_s=0.001))
    s = connect(card)
    s.send(CommandApdu(0x00, 0xA4, 0x00, 0x0C, b"\x2f\x00"))
    slept.clear()
    s.send(CommandApdu(0x00, 0xD6, 0, 0, b"\x00" * 40))
    assert slept == [0.001, pytest.approx(0.0005 * 40)]
    assert card.eeprom.bytes_written >= 40
