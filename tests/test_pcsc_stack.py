"""The real PC/SC stack: pyscard -> libpcsclite -> pcscd -> vpcd -> TCP -> VpcdCardServer -> ScriptedCard.

Tests marked ``pcsc`` use the session pcscd (tests/conftest.py). The others drive VpcdCardServer against
a fake vpcd (a TCP listener in this file) and need no daemon.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testcard import ATR, ATR_BODY, EXACT_DATA, PIECE, TEST_AID, ScriptedCard, long_payload, tck

from cardkit.apdu import CommandApdu
from cardkit.errors import CardRemovedError, NoCardError, NoReaderError, TransportError
from cardkit.pcscd import MAX_READERS, PCSCD_SOCKET, PcscDaemon, PcscdError
from cardkit.session import CardSession
from cardkit.transport import open_transport
from cardkit.transport.pcsc import (
    CardWaitTimeout,
    PcscTransport,
    ReaderBusyError,
    RemovalWaitTimeout,
    find_reader,
    list_readers,
    wait_for_card,
    wait_for_removal,
)
from cardkit.transport.vpcd import VpcdCardServer, VpcdConfigError

pcsc = pytest.mark.pcsc
VpcdCardFactory = Callable[..., tuple[str, VpcdCardServer]]
SELECT_TEST = CommandApdu(0x00, 0xA4, 0x04, 0x00, TEST_AID, name="SELECT")


def echo(data: bytes, le: int | None = None) -> CommandApdu:
    return CommandApdu(0x80, 0x10, 0, 0, data, le=le)


# ----------------------------------------------------------------------------------------------------
# The test card itself
# ----------------------------------------------------------------------------------------------------
def test_test_card_atr_check_byte() -> None:
    # ISO 7816-3 §8.2.5: XOR of T0..TCK is zero.
    assert ATR[:-1] == ATR_BODY and len(ATR) == 18
    assert tck(ATR) == 0
    assert ATR[-1] == 0xAA


# ----------------------------------------------------------------------------------------------------
# PcscDaemon values (no daemon needed)
# ----------------------------------------------------------------------------------------------------
def test_daemon_layout_rounds_up_to_vpcd_entries() -> None:
    d = PcscDaemon(readers=5, base_port=40000)
    assert d.readers == 6 and d.entries == 3
    assert d.ports == (40000, 40001, 40002, 40003, 40004, 40005)
    assert d.expected_names == (
        "Virtual PCD 00 00", "Virtual PCD 00 01", "Virtual PCD 1 00 00", "Virtual PCD 1 00 01",
        "Virtual PCD 2 00 00", "Virtual PCD 2 00 01",
    )
    assert d.port_for("Virtual PCD 1 00 01") == 40003
    with pytest.raises(PcscdError, match="not a reader"):
        d.port_for("Virtual PCD 9 00 00")
    assert not d.is_running() and not d.owned


@pytest.mark.parametrize("readers", [0, MAX_READERS + 1, -2])
def test_daemon_rejects_impossible_reader_counts(readers: int) -> None:
    with pytest.raises(PcscdError, match=r"1\.\.16"):
        PcscDaemon(readers=readers)


def test_daemon_rejects_ports_past_65535() -> None:
    with pytest.raises(PcscdError, match="not usable"):
        PcscDaemon(readers=4, base_port=65534)


# ----------------------------------------------------------------------------------------------------
# VpcdCardServer against a fake vpcd (protocol, reconnect, errors) — no pcscd needed
# ----------------------------------------------------------------------------------------------------
class FakeVpcd:
    """A TCP listener that speaks vpcd's side of the protocol to one card at a time."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(5.0)
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(5.0)

    def send(self, payload: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(len(payload).to_bytes(2, "big") + payload)

    def recv(self) -> bytes:
        assert self.conn is not None
        head = self._exact(2)
        return self._exact(int.from_bytes(head, "big"))

    def _exact(self, n: int) -> bytes:
        assert self.conn is not None
        out = b""
        while len(out) < n:
            chunk = self.conn.recv(n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def exchange(self, apdu: bytes) -> bytes:
        self.send(apdu)
        return self.recv()

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.drop()
        self.listener.close()


@pytest.fixture
def fake_vpcd() -> Iterator[FakeVpcd]:
    fake = FakeVpcd()
    try:
        yield fake
    finally:
        fake.close()


class RaisingCard(ScriptedCard):
    def transmit(self, apdu: bytes) -> bytes:
        if apdu[:2] == b"\x80\x20":
            raise RuntimeError("simulated card crash")
        return super().transmit(apdu)


def test_vpcd_protocol_control_codes_and_apdus(fake_vpcd: FakeVpcd) -> None:
    card = ScriptedCard()
    with VpcdCardServer(card, port=fake_vpcd.port) as server:
        fake_vpcd.accept()
        fake_vpcd.send(b"\x04")  # GET ATR, before power on: answered anyway
        assert fake_vpcd.recv() == ATR
        fake_vpcd.send(b"\x01")  # power on: no answer
        fake_vpcd.send(b"\x04")
        assert fake_vpcd.recv() == ATR
        assert card.powered and card.power_ons == 1
        assert fake_vpcd.exchange(SELECT_TEST.to_bytes()) == b"\x90\x00"
        assert fake_vpcd.exchange(echo(b"hello").to_bytes()) == b"hello\x90\x00"
        fake_vpcd.send(b"\x02")  # warm reset: no answer, volatile state cleared
        assert fake_vpcd.exchange(echo(b"x").to_bytes()) == b"\x69\x85"
        fake_vpcd.send(b"\x00")  # power off
        fake_vpcd.send(b"\x04")
        assert fake_vpcd.recv() == ATR
        assert not card.powered
        big = bytes(range(256)) * 20
        assert fake_vpcd.exchange(SELECT_TEST.to_bytes()) == b"\x90\x00"
        assert fake_vpcd.exchange(CommandApdu(0x80, 0x16, 0, 0, big, le=32).to_bytes()) == (
            hashlib.sha256(big).digest() + b"\x90\x00"
        )
        assert server.apdus == 5
        assert server.connected


def test_vpcd_card_exception_answers_6f00_and_keeps_serving(fake_vpcd: FakeVpcd) -> None:
    card = RaisingCard()
    with VpcdCardServer(card, port=fake_vpcd.port) as server:
        fake_vpcd.accept()
        fake_vpcd.send(b"\x01")
        assert fake_vpcd.exchange(b"\x80\x20\x00\x00") == b"\x6f\x00"
        assert fake_vpcd.exchange(b"\x00\x01\x00\x00") == b"\x6d\x00"
        assert server.running


def test_vpcd_reconnects_when_vpcd_appears_late_and_after_restart() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on `port` now: the server must retry
    server = VpcdCardServer(ScriptedCard(), port=port, backoff=0.01, max_backoff=0.05).start()
    try:
        time.sleep(0.15)
        assert not server.connected and server.running
        fake = FakeVpcd(port)
        try:
            fake.accept()
            fake.send(b"\x04")
            assert fake.recv() == ATR
            fake.drop()  # "pcscd restarted": the card must come back by itself
            fake.accept()
            fake.send(b"\x04")
            assert fake.recv() == ATR
            assert server.connections == 2
        finally:
            fake.close()
    finally:
        server.stop()
    assert not server.running


def test_vpcd_remove_and_insert(fake_vpcd: FakeVpcd) -> None:
    card = ScriptedCard()
    server = VpcdCardServer(card, port=fake_vpcd.port).start()
    try:
        fake_vpcd.accept()
        fake_vpcd.send(b"\x01")
        fake_vpcd.send(b"\x04")
        assert fake_vpcd.recv() == ATR
        server.remove()
        with pytest.raises((EOFError, ConnectionError)):
            fake_vpcd.recv()  # the socket is closed: the card is out
        fake_vpcd.drop()
        assert server.running and not card.powered
        server.insert()
        fake_vpcd.accept()
        fake_vpcd.send(b"\x04")
        assert fake_vpcd.recv() == ATR
    finally:
        server.stop()


def test_vpcd_rejects_bad_ports() -> None:
    with pytest.raises(VpcdConfigError):
        VpcdCardServer(ScriptedCard(), port=0)
    with pytest.raises(VpcdConfigError):
        VpcdCardServer(ScriptedCard(), port=1, backoff=1.0, max_backoff=0.5)


def test_serve_forever_exits_cleanly_on_sigterm(fake_vpcd: FakeVpcd) -> None:
    tests_dir = Path(__file__).parent
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tests_dir)!r})
        from testcard import ScriptedCard
        from cardkit.transport.vpcd import VpcdCardServer
        VpcdCardServer(ScriptedCard(), port={fake_vpcd.port}).serve_forever()
        print("clean exit")
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        fake_vpcd.accept()  # the child is serving
        fake_vpcd.send(b"\x04")
        assert fake_vpcd.recv() == ATR
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "clean exit"
    with pytest.raises((EOFError, ConnectionError)):
        fake_vpcd.recv()  # the card was pulled on the way out


# ----------------------------------------------------------------------------------------------------
# Through pcscd
# ----------------------------------------------------------------------------------------------------
@pcsc
def test_pyscard_lists_the_vpcd_readers(pcscd: PcscDaemon) -> None:
    readers = list_readers()
    for name in pcscd.expected_names:
        assert name in readers
    assert pcscd.reader_names() == list(pcscd.expected_names)
    assert pcscd.is_running()
    assert len(pcscd.ports) == len(pcscd.expected_names) == 4


@pcsc
def test_find_reader_exact_index_substring(pcscd: PcscDaemon) -> None:
    readers = list_readers()
    second = pcscd.expected_names[1]
    assert find_reader(second) == second
    assert find_reader(str(readers.index(second))) == second
    assert find_reader("pcd 1 00 01") == "Virtual PCD 1 00 01"
    with pytest.raises(NoReaderError, match=r"matches .* readers"):
        find_reader("virtual")
    with pytest.raises(NoReaderError, match="Virtual PCD 00 00"):
        find_reader("no such reader")
    with pytest.raises(NoReaderError, match="no reader number 99"):
        find_reader("99")


@pcsc
def test_session_over_pcsc_sends_apdus(vpcd_card: VpcdCardFactory) -> None:
    card = ScriptedCard()
    reader, server = vpcd_card(card)
    with CardSession(PcscTransport(reader)) as session:
        assert session.atr == ATR
        assert session.transport.protocol == "T=1"
        assert session.send(SELECT_TEST).sw == 0x9000
        data = os.urandom(200)
        response = session.send(echo(data, le=256))
        assert response.data == data
    assert card.history[-1] == echo(data, le=256).to_bytes()
    assert server.apdus >= 2


@pcsc
def test_61xx_get_response_through_pcsc(vpcd_card: VpcdCardFactory) -> None:
    card = ScriptedCard()
    reader, _ = vpcd_card(card)
    with CardSession(PcscTransport(reader)) as session:
        session.send(SELECT_TEST)
        n = 1000
        response = session.send(CommandApdu(0x80, 0x12, n >> 8, n & 0xFF, le=256))
        assert response.data == long_payload(n)
    get_responses = [c for c in card.history if c[1] == 0xC0]
    assert len(get_responses) == n // PIECE


@pcsc
def test_6cxx_resend_through_pcsc(vpcd_card: VpcdCardFactory) -> None:
    card = ScriptedCard()
    reader, _ = vpcd_card(card)
    with CardSession(PcscTransport(reader)) as session:
        session.send(SELECT_TEST)
        response = session.send(CommandApdu(0x80, 0x14, 0, 0, le=5))
        assert response.data == EXACT_DATA
    sent = [c for c in card.history if c[:2] == b"\x80\x14"]
    assert sent == [b"\x80\x14\x00\x00\x05", b"\x80\x14\x00\x00" + bytes((len(EXACT_DATA),))]


@pcsc
@pytest.mark.parametrize("extended", [True, False])
def test_4000_byte_command_extended_or_chained(vpcd_card: VpcdCardFactory, extended: bool) -> None:
    card = ScriptedCard()
    reader, _ = vpcd_card(card)
    data = os.urandom(4000)
    with CardSession(PcscTransport(reader), extended=extended) as session:
        session.send(SELECT_TEST)
        response = session.send(CommandApdu(0x80, 0x16, 0, 0, data, le=256))
        assert response.data == hashlib.sha256(data).digest()
    hashes = [c for c in card.history if c[1] == 0x16]
    if extended:
        assert len(hashes) == 1 and len(hashes[0]) == 4 + 3 + 4000 + 2
    else:
        assert len(hashes) == 16  # ceil(4000 / 255)
        assert all(c[0] & 0x10 for c in hashes[:-1]) and not hashes[-1][0] & 0x10
        assert max(len(c) for c in hashes) <= 4 + 1 + 255 + 1


@pcsc
def test_removal_is_detected_and_card_comes_back(vpcd_card: VpcdCardFactory) -> None:
    card = ScriptedCard()
    reader, server = vpcd_card(card)
    transport = PcscTransport(reader)
    try:
        assert transport.transmit(SELECT_TEST.to_bytes()) == b"\x90\x00"
        server.remove()
        wait_for_removal(reader, 5.0)
        with pytest.raises(NoCardError) as info:
            transport.transmit(SELECT_TEST.to_bytes())
        assert isinstance(info.value, CardRemovedError)
        with pytest.raises(CardWaitTimeout):
            wait_for_card(reader, 0.2)
        with pytest.raises(NoCardError):
            PcscTransport(reader)
    finally:
        transport.close()
    server.insert()
    assert wait_for_card(reader, 10.0) == ATR
    with PcscTransport(reader) as again:
        assert again.transmit(SELECT_TEST.to_bytes()) == b"\x90\x00"
    with pytest.raises(RemovalWaitTimeout):
        wait_for_removal(reader, 0.2)


@pcsc
def test_reset_clears_card_state(vpcd_card: VpcdCardFactory) -> None:
    card = ScriptedCard()
    reader, _ = vpcd_card(card)
    with PcscTransport(reader, protocol="T=1") as transport:
        for cold in (False, True):
            assert transport.transmit(SELECT_TEST.to_bytes()) == b"\x90\x00"
            assert transport.transmit(echo(b"\x01").to_bytes()) == b"\x01\x90\x00"
            assert transport.reset(cold=cold) == ATR
            assert transport.transmit(echo(b"\x01").to_bytes()) == b"\x69\x85"
    assert transport.closed
    with pytest.raises(TransportError, match="closed"):
        transport.transmit(SELECT_TEST.to_bytes())


@pcsc
def test_exclusive_access_and_transaction(vpcd_card: VpcdCardFactory) -> None:
    reader, _ = vpcd_card(ScriptedCard())
    with PcscTransport(reader, exclusive=True) as first:
        with pytest.raises(ReaderBusyError):
            PcscTransport(reader)
        assert first.transmit(SELECT_TEST.to_bytes()) == b"\x90\x00"
    with PcscTransport(reader) as shared, shared.transaction():
        assert shared.transmit(SELECT_TEST.to_bytes()) == b"\x90\x00"


@pcsc
def test_open_transport_by_fuzzy_reader_name(vpcd_card: VpcdCardFactory) -> None:
    reader, _ = vpcd_card(ScriptedCard())
    transport = open_transport(reader.lower())
    try:
        assert transport.name == reader
        assert transport.atr == ATR
    finally:
        transport.close()
    with pytest.raises(NoReaderError):
        open_transport("pcsc:definitely not a reader")


@pcsc
def test_opensc_tool_reads_atr_and_sends_apdu(vpcd_card: VpcdCardFactory) -> None:
    card = ScriptedCard()
    reader, _ = vpcd_card(card)
    atr = subprocess.run(["opensc-tool", "-r", reader, "-a"], capture_output=True, text=True, timeout=30)
    assert atr.returncode == 0, atr.stderr
    assert atr.stdout.strip().lower() == ATR.hex(":")
    apdu = f"00A40400{len(TEST_AID):02X}{TEST_AID.hex().upper()}"
    sent = subprocess.run(["opensc-tool", "-r", reader, "-s", apdu], capture_output=True, text=True, timeout=30)
    assert sent.returncode == 0, sent.stderr
    assert "SW1=0x90, SW2=0x00" in sent.stdout
    assert bytes.fromhex(apdu) in card.history


@pcsc
def test_round_trip_latency_sanity(vpcd_card: VpcdCardFactory, record_property: Callable[[str, object], None]) -> None:
    # No timed assertion (shared, noisy machines): the median is recorded for the report only.
    reader, _ = vpcd_card(ScriptedCard())
    with PcscTransport(reader) as transport:
        transport.transmit(SELECT_TEST.to_bytes())
        samples = []
        for i in range(200):
            apdu = echo(i.to_bytes(2, "big")).to_bytes()
            t0 = time.perf_counter()
            response = transport.transmit(apdu)
            samples.append(time.perf_counter() - t0)
            assert response == i.to_bytes(2, "big") + b"\x90\x00"
    median_ms = statistics.median(samples) * 1000
    record_property("pcsc_vpcd_median_round_trip_ms", round(median_ms, 4))
    assert median_ms > 0


@pcsc
def test_two_cards_in_two_readers_at_once(vpcd_card: VpcdCardFactory) -> None:
    a, b = ScriptedCard(), ScriptedCard()
    reader_a, _ = vpcd_card(a)
    reader_b, _ = vpcd_card(b)
    assert reader_a != reader_b
    results: dict[str, bytes] = {}

    def run(reader: str, payload: bytes) -> None:
        with PcscTransport(reader) as t:
            t.transmit(SELECT_TEST.to_bytes())
            for _ in range(50):
                results[reader] = t.transmit(echo(payload).to_bytes())

    threads = [threading.Thread(target=run, args=(r, r.encode())) for r in (reader_a, reader_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == {reader_a: reader_a.encode() + b"\x90\x00", reader_b: reader_b.encode() + b"\x90\x00"}
    assert sum(c[1] == 0x10 for c in a.history) == 50 == sum(c[1] == 0x10 for c in b.history)


@pcsc
def test_card_comes_back_after_pcscd_is_killed_and_restarted(pcscd: PcscDaemon,
                                                           vpcd_card: VpcdCardFactory) -> None:
    # Runs last: it restarts the session daemon. A SIGKILL leaves pcscd's socket behind; stop() must
    # clean it up so that start() works, and the card server must reconnect by itself.
    card = ScriptedCard()
    reader, server = vpcd_card(card)
    pid = pcscd.pid
    assert pid is not None and pcscd.owned
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pcscd.is_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pcscd.is_running()
    assert PCSCD_SOCKET.exists()  # stale
    pcscd.stop()
    assert not PCSCD_SOCKET.exists()
    pcscd.start()
    assert pcscd.pid != pid
    assert wait_for_card(reader, 10.0) == ATR
    with PcscTransport(reader) as transport:
        assert transport.transmit(SELECT_TEST.to_bytes()) == b"\x90\x00"
    assert server.connections >= 2  # reconnected after the restart (vpcd may also drop a half-open link)
