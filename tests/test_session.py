"""CardSession processor chain: GET RESPONSE, 6Cxx, chaining, trace redaction, pushed processors."""

from __future__ import annotations

import io
import json
import logging

import pytest

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.errors import CardRemovedError
from cardkit.session import TRACE, CardSession, Send, redact
from cardkit.sw import FileNotFound
from cardkit.transport.virtual import VirtualTransport


class T0Card:
    """A card that answers like a T=0 card: 61xx for data, 6Cxx for a wrong Le, and records what it got."""

    def __init__(self, payload: bytes, chaining: bool = True) -> None:
        self.payload = payload
        self.pending = b""
        self.received: list[bytes] = []
        self.chained = b""
        self.chaining = chaining

    @property
    def atr(self) -> bytes:
        return bytes.fromhex("3B8D800180540102030473F621C08290 00".replace(" ", "")) + b"\x00"

    def power_on(self) -> bytes:
        return self.atr

    def power_off(self) -> None:
        self.pending = b""

    def transmit(self, apdu: bytes) -> bytes:
        self.received.append(apdu)
        c = CommandApdu.from_bytes(apdu)
        if c.ins == 0xC0:
            chunk, self.pending = self.pending[: c.le or 256], self.pending[c.le or 256:]
            sw = bytes((0x61, min(len(self.pending), 256) & 0xFF)) if self.pending else b"\x90\x00"
            return chunk + sw
        if c.ins == 0xCA:  # wants exact Le = 4
            if c.le != 4:
                return b"\x6C\x04"
            return b"\x01\x02\x03\x04\x90\x00"
        if c.ins == 0xB0:
            self.pending = self.payload
            return bytes((0x61, min(len(self.pending), 256) & 0xFF))
        if c.ins == 0xD6:
            if c.cla & 0x10:
                if not self.chaining:
                    return b"\x68\x84"
                self.chained += c.data
                return b"\x90\x00"
            total = self.chained + c.data
            self.chained = b""
            return len(total).to_bytes(2, "big") + b"\x90\x00"
        if c.ins == 0xA4:
            return b"\x6A\x82"
        return b"\x6D\x00"


def test_get_response_concatenates() -> None:
    card = T0Card(bytes(range(256)) * 2 + b"tail")
    s = CardSession(VirtualTransport(card))
    r = s.send(CommandApdu(0, 0xB0, 0, 0, le=256))
    assert r.data == bytes(range(256)) * 2 + b"tail"
    assert [CommandApdu.from_bytes(a).ins for a in card.received] == [0xB0, 0xC0, 0xC0, 0xC0]
    assert s.apdu_count == 4


def test_wrong_le_is_resent() -> None:
    card = T0Card(b"")
    s = CardSession(VirtualTransport(card))
    r = s.send(CommandApdu(0x80, 0xCA, 0x9F, 0x7F, le=256))
    assert r.data == b"\x01\x02\x03\x04"
    assert CommandApdu.from_bytes(card.received[-1]).le == 4


def test_chaining_when_not_extended() -> None:
    card = T0Card(b"")
    s = CardSession(VirtualTransport(card), extended=False)
    r = s.send(CommandApdu(0, 0xD6, 0, 0, data=b"\x55" * 4000))
    assert int.from_bytes(r.data, "big") == 4000
    sent = [CommandApdu.from_bytes(a) for a in card.received]
    assert len(sent) == 16 and all(c.cla == 0x10 for c in sent[:-1]) and sent[-1].cla == 0
    assert all(not c.is_extended for c in sent)


def test_chaining_refused_returns_card_status() -> None:
    card = T0Card(b"", chaining=False)
    s = CardSession(VirtualTransport(card))
    r = s.transmit(CommandApdu(0, 0xD6, 0, 0, data=b"\x55" * 300))
    assert r.sw == 0x6884


def test_extended_sends_one_apdu() -> None:
    card = T0Card(b"")
    s = CardSession(VirtualTransport(card), extended=True)
    s.send(CommandApdu(0, 0xD6, 0, 0, data=b"\x55" * 4000))
    assert len(card.received) == 1 and CommandApdu.from_bytes(card.received[0]).is_extended


def test_send_raises_typed_error_transmit_does_not() -> None:
    s = CardSession(VirtualTransport(T0Card(b"")))
    assert s.transmit(bytes.fromhex("00A4000002 3F00".replace(" ", ""))).sw == 0x6A82
    with pytest.raises(FileNotFound, match="SELECT failed: 6A82"):
        s.send(CommandApdu(0, 0xA4, 0, 0, b"\x3f\x00", name="SELECT"))


def test_pushed_processor_sees_every_command() -> None:
    seen: list[int] = []

    class Tag:
        def process(self, command: CommandApdu, send: Send) -> ResponseApdu:
            seen.append(command.ins)
            return send(command.replace(cla=command.cla | 0x04))

    card = T0Card(b"x" * 10)
    s = CardSession(VirtualTransport(card))
    p = Tag()
    s.push(p)
    s.send(CommandApdu(0, 0xB0, 0, 0, le=256))
    assert seen == [0xB0]
    assert CommandApdu.from_bytes(card.received[0]).cla == 0x04
    # GET RESPONSE is below the pushed processor: it is not seen by it
    assert CommandApdu.from_bytes(card.received[1]).ins == 0xC0
    s.remove(p)
    s.send(CommandApdu(0, 0xB0, 0, 0, le=256))
    assert seen == [0xB0]
    s.push(p)
    s.reset()
    assert s.processors == ()


def test_trace_redacts_secrets_and_personal_data(caplog: pytest.LogCaptureFixture) -> None:
    sink = io.StringIO()
    card = T0Card(b"110101199003076734" + b"\x00" * 4)
    s = CardSession(VirtualTransport(card), trace=sink)
    with caplog.at_level(TRACE, logger="cardkit.apdu"):
        s.transmit(CommandApdu(0, 0x20, 0, 1, b"123456", name="VERIFY"))
        s.send(CommandApdu(0, 0xB0, 0, 0, le=256))
        s.transmit(CommandApdu(0, 0xD6, 0, 0, b"110101199003076734"))
    text = sink.getvalue() + caplog.text
    assert "123456" not in text and "313233343536" not in text
    assert "110101199003076734" not in text and b"110101199003076734".hex() not in text.lower()
    assert "<6 bytes secret>" in text and "sha256:" in text
    lines = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert [x["name"] for x in lines][:1] == ["VERIFY"] and lines[0]["sw"] == "6D00"


def test_redact_shows_plain_commands() -> None:
    c, r = redact(CommandApdu(0, 0xA4, 4, 0, b"\xa0\x00", le=256), ResponseApdu.of(0x9000, b"\x6f\x00"))
    assert c == "00A40400 A000 Le=256" and r == "6F00 9000"


def test_removed_card_raises() -> None:
    t = VirtualTransport(T0Card(b""))
    s = CardSession(t)
    t.remove()
    with pytest.raises(CardRemovedError):
        s.transmit(CommandApdu(0, 0xA4, 0, 0))


def test_logging_not_enabled_costs_nothing() -> None:
    logging.getLogger("cardkit.apdu").setLevel(logging.WARNING)
    s = CardSession(VirtualTransport(T0Card(b"")))
    s.transmit(CommandApdu(0, 0xA4, 0, 0))
    assert s.apdu_count == 1
