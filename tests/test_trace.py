"""Trace files: written by --trace during real sessions, shown decoded (names, meanings, timing), turned into
replay transcripts when their exchanges are in clear — and refused, naming the exchange, when redacted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cardkit.cli.errors import exit_code_for
from cardkit.cli.main import cli
from cardkit.crypto import Alg
from cardkit.issuance.engine import personalize
from cardkit.issuance.prepare import prepare
from cardkit.keys.store import TestKeyFile
from cardkit.profiles.model import load_profile
from cardkit.readers import TEST_KEYS, new_virtual_card
from cardkit.script.tracefile import (
    RedactedExchangeError,
    TraceFormatError,
    command_name,
    read_trace,
    to_transcript,
)
from cardkit.session import CardSession
from cardkit.transport.virtual import VirtualTransport

ROOT = Path(__file__).resolve().parents[1]
SSSE = "7378312E73682EC9E7BBE1B1A3D5CF"


@pytest.fixture
def card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, bytes, str]:
    """An issued SSC card image, its ATR and its PIN."""
    monkeypatch.setenv("CARDKIT_HOME", str(tmp_path / "home"))
    ks = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    profile = load_profile(ROOT / "applets/ssc")
    with open(ROOT / "applets/ssc/sample-batch.csv", encoding="utf-8", newline="") as fh:
        row = next(csv.DictReader(fh))
    prepared = prepare(profile, row)
    vcard = new_virtual_card(alg=Alg.SM4, transport_key=ks.key(profile.transport_key, Alg.SM4).value, seed=31)
    personalize(CardSession(VirtualTransport(vcard)), profile, prepared, ks)
    image = tmp_path / "card.json"
    vcard.save(image)
    return image, vcard.atr, prepared.pins["pin"].decode()


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[Result, int]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return result, exit_code_for(result.exception)
    return result, result.exit_code


@pytest.mark.parametrize(("header", "name"), [
    ("00A40400", "SELECT by DF name"), ("00A4020C", "SELECT EF"), ("00A40804", "SELECT by path"),
    ("00B20704", "READ RECORD 7"), ("0CB20204", "READ RECORD 2 (SM)"), ("00200081", "VERIFY ref 81"),
    ("80CA9F7F", "GET DATA 9F7F"), ("80F24002", "GET STATUS applications"), ("84F28002", "GET STATUS ISD (SM)"),
    ("80500000", "INITIALIZE UPDATE"), ("84823300", "EXTERNAL AUTHENTICATE level 33 (SM)"),
    ("00820083", "EXTERNAL AUTHENTICATE"), ("80D80000", "PUT KEY"), ("80E28000", "STORE DATA"),
    ("00E20000", "APPEND RECORD"), ("00C00000", "GET RESPONSE"), ("10DC0104", "UPDATE RECORD 1 (chained)"),
    ("00770000", "INS 77"),
])
def test_command_names(header: str, name: str) -> None:
    assert command_name(bytes.fromhex(header)) == name


def test_show_a_trace_of_a_real_session(card: tuple[Path, bytes, str], tmp_path: Path) -> None:
    image, _, pin = card
    trace = tmp_path / "t.jsonl"
    script = tmp_path / "s.apdu"
    script.write_text(f"option get-response=auto\nselect aid:{SSSE}\nselect EF05\nread record 1\n"
                      "verify pin 81 env:TRACE_PIN\nselect 6666 => 6A82\n", encoding="utf-8")
    result, code = invoke("--trace", str(trace), "--reader", f"virtual:{image}", "script", "run", str(script),
                          env={"TRACE_PIN": pin})
    assert code == 0, result.output
    assert oct(trace.stat().st_mode & 0o777) == "0o600"
    raw = trace.read_text(encoding="utf-8")
    assert pin not in raw and pin.encode().hex().upper() not in raw
    result, code = invoke("trace", "show", str(trace))
    assert code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("#1 +      0.0 ms  SELECT by DF name  (") and lines[0].endswith(" ms)")
    assert lines[1] == f"    > 00A40400 {SSSE} Le=256"
    assert lines[2].endswith(" 9000  success")
    assert "READ RECORD 1" in lines[6] and lines[7] == "    > 00B20104 Le=256"
    assert lines[8].startswith("    < <18 bytes sha256:") and lines[8].endswith("> 9000  success")
    assert lines[10] == "    > 00200081 <6 bytes secret>"
    assert lines[14] == "    < 6A82  file or application not found"
    assert lines[15].startswith("5 exchanges, ") and lines[15].endswith(" ms, 2 redacted")
    assert lines[16] == ("commands: SELECT by DF name ×1, SELECT ×2, READ RECORD 1 ×1, VERIFY ref 81 ×1")
    assert lines[17] == "status 6A82 file or application not found: ×1"
    result, code = invoke("--json", "trace", "show", str(trace))
    report = json.loads(result.stdout)
    assert [e["name"] for e in report["exchanges"]] == ["SELECT by DF name", "SELECT", "READ RECORD 1",
                                                       "VERIFY ref 81", "SELECT"]
    assert report["summary"]["exchanges"] == 5 and report["summary"]["redacted"] == 2


def test_clear_traces_become_replay_transcripts(card: tuple[Path, bytes, str], tmp_path: Path) -> None:
    image, atr, _ = card
    trace = tmp_path / "t.jsonl"
    apdus = ["00A404000F" + SSSE + "00", "00A4000402EF0500", "00A4000402EF0900", "00CA004500"]
    result, code = invoke("--trace", str(trace), "--reader", f"virtual:{image}", "apdu", *apdus)
    assert code == 0, result.output
    live = [line for line in result.stdout.splitlines() if line.startswith("<< ")]
    out = tmp_path / "replay.json"
    result, code = invoke("trace", "to-replay", str(trace), "-o", str(out), "--atr", atr.hex())
    assert code == 0 and result.stdout.strip() == f"wrote 4 exchanges to {out}"
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert json.loads(out.read_text(encoding="utf-8"))["atr"] == atr.hex().upper()
    # the transcript answers exactly like the card did, and checks every command
    result, code = invoke("--reader", f"replay:{out}", "apdu", *apdus)
    assert code == 0, result.output
    assert [line for line in result.stdout.splitlines() if line.startswith("<< ")] == live
    result, code = invoke("--reader", f"replay:{out}", "apdu", apdus[0], "00A4000402EF0600")
    assert code == 4 and "exchange #1: expected 00A4000402EF0500" in str(result.exception)


def test_redacted_exchanges_cannot_be_replayed(card: tuple[Path, bytes, str], tmp_path: Path) -> None:
    image, _, _ = card
    trace = tmp_path / "t.jsonl"
    result, code = invoke("--trace", str(trace), "--reader", f"virtual:{image}", "apdu",
                          "00A404000F" + SSSE + "00", "00A4000402EF0500", "00B2010400", "00CA004500")
    assert code == 0, result.output
    out = tmp_path / "r.json"
    result, code = invoke("trace", "to-replay", str(trace), "-o", str(out))
    assert code == 6 and not out.exists()
    assert str(result.exception).startswith("exchange #3 (line 3, READ RECORD 1) is redacted in the trace and "
                                            "cannot be replayed")
    result, code = invoke("trace", "to-replay", str(trace), "-o", str(out), "--until-redacted")
    assert code == 0 and "wrote 2 exchanges" in result.stdout and "(2 from the first redacted one on" in result.stdout
    transcript, kept = to_transcript(read_trace(trace), until_redacted=True)
    assert kept == 2 and transcript.exchanges[1][0] == bytes.fromhex("00A4000402EF0500")
    with pytest.raises(RedactedExchangeError) as ei:
        to_transcript(read_trace(trace))
    assert ei.value.index == 2 and ei.value.line == 3


@pytest.mark.parametrize(("content", "message"), [
    ('{"c": "00A40400", "r": "9000", "sw": "9000"}\nnot json\n', "t.jsonl:2: not JSON"),
    ('{"c": "00A40400", "r": "9000"}\n', "t.jsonl:1: missing field 'sw'"),
    ('[1, 2]\n', "t.jsonl:1: a trace record is a JSON object"),
    ('{"c": "00A4", "r": "9000", "sw": "9000"}\n', "t.jsonl:1: command '00A4' is not 'HEADER [DATA] [Le=N]'"),
    ('{"c": "00A40400", "r": "90", "sw": "9000"}\n', "t.jsonl:1: response '90' is not '[DATA] SW'"),
    ('{"c": "00A40400", "r": "9000", "sw": "zz"}\n', "t.jsonl:1: a field has the wrong type"),
])
def test_malformed_traces_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TraceFormatError) as ei:
        read_trace(path)
    assert str(ei.value).startswith(str(tmp_path / message.split(":")[0]) + ":" + message.split(":", 1)[1])
    _, code = invoke("trace", "show", str(path))
    assert code == 6
