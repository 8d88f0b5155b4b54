"""Replay and recording transports, the transcript format, and open_transport's scheme registry."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from testcard import ATR, EXACT_DATA, TEST_AID, ScriptedCard, long_payload

from cardkit.apdu import CommandApdu
from cardkit.errors import ParseError, TransportError
from cardkit.session import CardSession
from cardkit.transport import open_transport, register_scheme, schemes
from cardkit.transport.base import Transport
from cardkit.transport.replay import (
    RecordingTransport,
    ReplayExhaustedError,
    ReplayMismatchError,
    ReplayTransport,
    Transcript,
    TranscriptFormatError,
    describe_apdu,
)
from cardkit.transport.virtual import VirtualTransport

SELECT = bytes.fromhex("00A40400") + bytes((len(TEST_AID),)) + TEST_AID
PAIRS = [(SELECT.hex(), "9000"), ("8010000003AABBCC", "AABBCC9000"), ("80100000", "9000")]


def test_replay_answers_in_order() -> None:
    t = ReplayTransport(PAIRS, atr=ATR.hex())
    assert isinstance(t, Transport)
    assert t.atr == ATR and t.remaining == 3
    assert t.transmit(SELECT) == b"\x90\x00"
    assert t.transmit(bytes.fromhex("8010000003AABBCC")) == bytes.fromhex("AABBCC9000")
    assert t.reset() == ATR  # resets do not consume exchanges
    assert t.transmit(bytes.fromhex("80100000")) == b"\x90\x00"
    assert t.remaining == 0
    t.verify_complete()


def test_replay_mismatch_names_index_expected_and_got() -> None:
    t = ReplayTransport(PAIRS)
    t.transmit(SELECT)
    with pytest.raises(ReplayMismatchError) as info:
        t.transmit(bytes.fromhex("8010000003AABBCD"))
    err = info.value
    assert err.index == 1
    assert err.expected == bytes.fromhex("8010000003AABBCC")
    assert err.got == bytes.fromhex("8010000003AABBCD")
    msg = str(err)
    assert "exchange #1" in msg and "8010000003AABBCC" in msg and "8010000003AABBCD" in msg
    assert "first difference at byte 7" in msg
    assert t.position == 1  # the right command still works afterwards
    assert t.transmit(bytes.fromhex("8010000003AABBCC")) == bytes.fromhex("AABBCC9000")


def test_replay_exhausted_and_incomplete() -> None:
    t = ReplayTransport(PAIRS[:1])
    with pytest.raises(ReplayExhaustedError, match=r"1 recorded exchange\(s\) not replayed, next is #0"):
        t.verify_complete()
    t.transmit(SELECT)
    with pytest.raises(ReplayExhaustedError, match=r"command #1 .* after the last of the 1 recorded") as info:
        t.transmit(SELECT)
    assert info.value.index == 1
    assert isinstance(info.value, TransportError)


def test_replay_messages_hide_secret_command_data() -> None:
    verify = bytes.fromhex("0020008108") + b"12345678"  # VERIFY with a PIN, ISO 7816-4 §11.5.6
    t = ReplayTransport([(verify.hex(), "9000")])
    wrong = bytes.fromhex("0020008108") + b"87654321"
    with pytest.raises(ReplayMismatchError) as info:
        t.transmit(wrong)
    msg = str(info.value)
    for secret in (b"12345678", b"87654321"):
        assert secret.hex().upper() not in msg and secret.hex() not in msg
    assert "00200081 <9 bytes sha256:" in msg
    assert describe_apdu(SELECT) == SELECT.hex().upper()


def test_replay_closed() -> None:
    t = ReplayTransport(PAIRS)
    t.close()
    with pytest.raises(TransportError, match="closed"):
        t.transmit(SELECT)


def test_recording_then_replay_round_trip(tmp_path: Path) -> None:
    """A session through the virtual transport, recorded, saved, loaded and replayed to the same results."""

    def run(transport: Transport) -> list[bytes]:
        session = CardSession(transport)
        out = [
            session.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, TEST_AID)).data,
            session.send(CommandApdu(0x80, 0x10, 0, 0, b"\x01\x02\x03", le=256)).data,
            session.send(CommandApdu(0x80, 0x12, 0x01, 0x2C, le=256)).data,  # 300 bytes via 61xx
            session.send(CommandApdu(0x80, 0x14, 0, 0, le=1)).data,  # 6Cxx then re-send
        ]
        return out

    recorder = RecordingTransport(VirtualTransport(ScriptedCard()))
    live = run(recorder)
    assert live[2] == long_payload(300) and live[3] == EXACT_DATA
    transcript = recorder.transcript
    assert transcript.atr == ATR
    assert len(transcript) == 1 + 1 + (1 + 3) + 2
    path = tmp_path / "session.json"
    recorder.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    on_disk = json.loads(path.read_text())
    assert on_disk["atr"] == ATR.hex().upper()
    assert on_disk["exchanges"][0] == {"c": SELECT.hex().upper(), "r": "9000"}

    replay = open_transport(f"replay:{path}")
    assert isinstance(replay, ReplayTransport)
    assert replay.atr == ATR
    assert run(replay) == live
    replay.verify_complete()


def test_transcript_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"atr": "3B", "exchanges": [{"c": "00A4", "r": "9000"}]}')
    with pytest.raises(TranscriptFormatError, match="exchange 0: a C-APDU needs at least 4 bytes"):
        Transcript.load(bad)
    bad.write_text('{"atr": "3B", "exchanges": [{"c": "zz", "r": "9000"}]}')
    with pytest.raises(TranscriptFormatError, match="not hexadecimal"):
        Transcript.load(bad)
    bad.write_text("[1, 2")
    with pytest.raises(TranscriptFormatError, match="not JSON"):
        Transcript.load(bad)
    with pytest.raises(TransportError, match="cannot read transcript"):
        ReplayTransport(tmp_path / "missing.json")
    with pytest.raises(TranscriptFormatError):
        ReplayTransport([("00A40400", "90")])


def test_transcript_accepts_spaced_lowercase_hex() -> None:
    t = Transcript.from_dict({"atr": "3b 00", "exchanges": [{"c": "00 a4 04 00", "r": "90 00"}]})
    assert t.atr == b"\x3b\x00"
    assert t.exchanges == ((b"\x00\xa4\x04\x00", b"\x90\x00"),)


apdus = st.binary(min_size=4, max_size=300)
responses = st.binary(min_size=2, max_size=300)


@given(st.binary(max_size=33), st.lists(st.tuples(apdus, responses), max_size=20))
def test_transcript_json_round_trip(atr: bytes, exchanges: list[tuple[bytes, bytes]]) -> None:
    t = Transcript(atr, tuple(exchanges))
    again = Transcript.loads(t.dumps())
    assert again == t
    replay = ReplayTransport(again)
    for c, r in exchanges:
        assert replay.transmit(c) == r
    replay.verify_complete()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["atr", "exchanges", "c", "r"]),
                                                                 inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_transcript_parser_raises_only_its_error(obj: object) -> None:
    try:
        Transcript.loads(json.dumps(obj))
    except TranscriptFormatError as exc:
        assert isinstance(exc, ParseError)


# ---------------------------------------------------------------------------------------- registry
def test_register_scheme_hook() -> None:
    made: list[str] = []

    def factory(rest: str) -> Transport:
        made.append(rest)
        return VirtualTransport(ScriptedCard(), name=f"test:{rest}")

    register_scheme("cardkit-test", factory)
    try:
        assert "cardkit-test" in schemes()
        t = open_transport("cardkit-test:image.bin")
        assert t.name == "test:image.bin" and t.atr == ATR
        open_transport("cardkit-test")
        assert made == ["image.bin", ""]
        with pytest.raises(TransportError, match="already registered"):
            register_scheme("cardkit-test", factory)
        register_scheme("cardkit-test", factory, replace=True)
    finally:
        from cardkit import transport

        transport._schemes.pop("cardkit-test", None)
    with pytest.raises(TransportError, match="scheme name"):
        register_scheme("Bad Name", factory)


def test_open_transport_argument_errors() -> None:
    with pytest.raises(TransportError, match="empty transport spec"):
        open_transport("  ")
    with pytest.raises(TransportError, match="replay: needs a transcript file"):
        open_transport("replay:")
    with pytest.raises(TransportError, match="pcsc: needs a reader"):
        open_transport("pcsc:")
