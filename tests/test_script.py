"""APDU scripts: the language (a superset of scriptor files), the runner on real virtual cards (SSC from the
issuance engine, the GP issuer security domain, the eMRTD), secure channels, dry runs against recordings,
secrets and personal data, and the CLI (CliRunner and the real console script; scriptor itself over pcscd)."""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cardkit.cli.errors import exit_code_for
from cardkit.cli.main import cli
from cardkit.crypto import Alg
from cardkit.issuance.engine import personalize
from cardkit.issuance.prepare import PreparedRecord, prepare
from cardkit.keys.store import TestKeyFile
from cardkit.profiles.model import load_profile
from cardkit.readers import TEST_KEYS, new_virtual_card
from cardkit.script import ExpectationFailed, ScriptError, ScriptRunner, Variable, parse_file, parse_text
from cardkit.script.parser import Location, parse_pattern
from cardkit.script.runner import Event, match_pattern
from cardkit.session import CardSession
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual.card import CardOptions, VirtualCard

ROOT = Path(__file__).resolve().parents[1]
NO_GP = importlib.util.find_spec("cardkit.virtual.gp") is None
NO_MRTD = any(importlib.util.find_spec(m) is None for m in ("cardkit.virtual.mrtd", "cardkit.apps.mrtd"))
needs_gp = pytest.mark.xfail(NO_GP, raises=ImportError, strict=True,
                             reason="the GP issuer security domain (cardkit/virtual/gp.py) is not in the tree yet")
needs_mrtd = pytest.mark.xfail(NO_MRTD, raises=ImportError, strict=True,
                               reason="the eMRTD application (cardkit/virtual/mrtd.py) is not in the tree yet")
SCRIPTS = ROOT / "scripts"
SSSE = "7378312E73682EC9E7BBE1B1A3D5CF"
GP_TEST_KEY = "404142434445464748494A4B4C4D4E4F"  # the well-known GlobalPlatform TEST key


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def keystore() -> TestKeyFile:
    return TestKeyFile(TEST_KEYS, allow_test_keys=True)


def sample_row(i: int = 0) -> dict[str, str]:
    with open(ROOT / "applets/ssc/sample-batch.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))[i]


class Issued:
    def __init__(self, card: VirtualCard, prepared: PreparedRecord, row: dict[str, str]) -> None:
        self.card, self.prepared, self.row = card, prepared, row

    @property
    def pin(self) -> str:
        return self.prepared.pins["pin"].decode()

    def session(self) -> CardSession:
        session = CardSession(VirtualTransport(self.card))
        session.reset(cold=True)
        return session


@pytest.fixture
def ssc(keystore: TestKeyFile) -> Issued:
    """A social security card personalized by the issuance engine (SM4, TEST keys)."""
    profile = load_profile(ROOT / "applets/ssc")
    row = sample_row(0)
    prepared = prepare(profile, row)
    card = new_virtual_card(alg=Alg.SM4, transport_key=keystore.key(profile.transport_key, Alg.SM4).value, seed=11)
    personalize(CardSession(VirtualTransport(card)), profile, prepared, keystore)
    return Issued(card, prepared, row)


@pytest.fixture
def image(ssc: Issued, tmp_path: Path) -> Path:
    path = tmp_path / "card.json"
    ssc.card.save(path)
    return path


def run(session: CardSession, text: str, **kw: Any) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    runner = ScriptRunner(session, on_event=events.append, **kw)
    return runner.run(parse_text(text, "t.apdu")), events


def texts(events: list[Event]) -> str:
    return "\n".join(e.text for e in events)


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[Result, int]:
    """CliRunner on cardkit.cli.main.cli; the exit code as the console script maps it."""
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return result, exit_code_for(result.exception)
    return result, result.exit_code


def var_file(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / "vars.txt"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    path.chmod(0o600)
    return path


# ------------------------------------------------------------------------------------------ parsing


SCRIPTOR_FILE = """\
#!/usr/bin/env scriptor

# reset the card
reset

# Select MF 3F00
00 A4 00 00 02 3F 00
# a long APDU split over lines, as scriptor allows
00 A4 04 00 0F 73 78 31 2E 73 68 2E \\
   C9 E7 BB E1 B1 A3 D5 CF
00c0000023
exit
80 CA 9F 7F 00
"""


def test_scriptor_files_parse_unchanged() -> None:
    stmts = parse_text(SCRIPTOR_FILE, "sim.script")
    assert [s.kind for s in stmts] == ["reset", "apdu", "apdu", "apdu", "exit", "apdu"]
    assert stmts[1].args == ("00A40000023F00",)
    assert stmts[2].args == ("00A404000F" + SSSE,) and str(stmts[2].where) == "sim.script:9"
    assert stmts[3].args == ("00c0000023",) and all(s.expect is None for s in stmts)


def test_extensions_parse_to_statements() -> None:
    text = """\
option get-response=auto
set AID=A000000151000000   # a trailing comment
select aid:${AID} fci=none => 9000 | 6A82
read record 0x0D => ?? ?? $X:* 9000
read binary 10 4
verify pin 81 ${PIN} format=bcd
verify pin 01 status
open scp03 keyset=gp level=33 kvn=30
open bac mrz=env:MRZ
open sm key=ssc-sm ref=83 diversify=${REGION},serial
auth external key=ssc-rkssse ref=82
echo text with # kept and ${AID}
ls scan EF00-EF1F
"""
    stmts = parse_text(text, "x.apdu")
    kinds = [s.kind for s in stmts]
    assert kinds == ["option", "set", "select", "read", "read", "verify", "verify", "open", "open", "open", "auth",
                     "echo", "ls"]
    assert stmts[1].args == ("AID", "A000000151000000")
    assert stmts[2].params == {"fci": "none"} and stmts[2].expect is not None
    assert [a.sw_only for a in stmts[2].expect.alternatives] == [True, True]
    assert stmts[3].expect is not None and stmts[3].expect.captures == ("X",)
    assert stmts[7].params == {"keyset": "gp", "level": "33", "kvn": "30"}
    assert stmts[11].args == ("text with # kept and ${AID}",)


@pytest.mark.parametrize(("line", "words"), [
    ("selct 3F00", ["unknown command 'selct'"]),
    ("00A4 04 00 0Z", ["'Z' is not a hex digit"]),
    ("00A4000", ["odd number of hex digits"]),
    ("00A4040005A000", ["Lc=5 announces 5 data bytes"]),
    ("verify pin 81 123456", ["never written in a script", "env:VAR or prompt"]),
    ("verify pin 81 ${PIN:-123456}", ["never written in a script"]),
    ("open bac mrz=L898902C<369080619406236", ["never written in a script"]),
    ("open scp03 level=33", ["needs keyset=NAME"]),
    ("open scp03 keyset=k levl=33", ["unknown parameter 'levl'", "level"]),
    ("open scp04 keyset=k", ["open bac | scp02 | scp03 | sm"]),
    ("00A4040000 => 6F 84 01", ["must end with the status word"]),
    ("00A4040000 => 0000", ["SW1 6X or 9X"]),
    ("00A4040000 => $SERIAL 9000", ["needs a length"]),
    ("00A4040000 => 6G00", ["not hex bytes"]),
    ("read record 0", ["record number must be 1..254"]),
    ("option get-response=sometimes", ["get-response takes auto|manual"]),
    ("select", ["select needs one target"]),
    ("reset => 9000", ["sends no APDU of its own"]),
    ("00A4040000 \\", ["ends with '\\' but no line follows"]),
])
def test_parse_errors_name_file_line_and_the_problem(line: str, words: list[str]) -> None:
    with pytest.raises(ScriptError) as ei:
        parse_text(f"# header\n{line}\n", "bad.apdu")
    message = str(ei.value)
    assert message.startswith("bad.apdu:2: "), message
    for word in words:
        assert word in message, message


def test_include_is_relative_to_the_including_file_and_cycles_are_refused(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "select.apdu").write_text("select MF\ninclude more.apdu\n", encoding="utf-8")
    (tmp_path / "lib" / "more.apdu").write_text("80CA9F7F00\n", encoding="utf-8")
    (tmp_path / "main.apdu").write_text("include lib/select.apdu\nreset\n", encoding="utf-8")
    stmts = parse_file(tmp_path / "main.apdu")
    assert [s.kind for s in stmts] == ["select", "apdu", "reset"]
    assert str(stmts[1].where).endswith("more.apdu:1")
    (tmp_path / "lib" / "more.apdu").write_text("include select.apdu\n", encoding="utf-8")
    with pytest.raises(ScriptError, match=r"more\.apdu:1: include .*select\.apdu would include itself"):
        parse_file(tmp_path / "main.apdu")
    (tmp_path / "main.apdu").write_text("\ninclude nowhere.apdu\n", encoding="utf-8")
    with pytest.raises(ScriptError, match=r"main\.apdu:2: script .*nowhere\.apdu' not found"):
        parse_file(tmp_path / "main.apdu")


@pytest.mark.parametrize(("pattern", "response", "captures"), [
    ("9000", "6F1084089000", {}),  # two bytes: the status word only, data ignored
    ("61??", "6112", {}),
    ("6A82", "9000", None),
    ("6F ?? 84 08 A000000151000000 * 9000", "6F108408A000000151000000A5049F6501FF9000", {}),
    ("6F ?? 84 08 A000000151000001 * 9000", "6F108408A000000151000000A5049F6501FF9000", None),
    ("?? ?? $SERIAL:4 * 9000", "0102A1B2C3D4EEFF9000", {"SERIAL": "A1B2C3D4"}),
    ("01 $REST:* 9000", "01AABB9000", {"REST": "AABB"}),
    ("6? * 9000", "6F009000", {}),
    ("6? * 9000", "7F009000", None),
    ("?F 9000", "7F9000", {}),
    ("63C? | 9000", "63C2", {}),
    ("63C? | 9000", "6983", None),
    ("${V} 9000", "CAFE9000", {}),
    ("$A:2 9000 | $A:1 6283", "AB6283", {"A": "AB"}),
])
def test_patterns(pattern: str, response: str, captures: dict[str, str] | None) -> None:
    parsed = parse_pattern(pattern, Location("p", 1))
    got = match_pattern(parsed, bytes.fromhex(response), lambda name, default: bytes.fromhex("CAFE"))
    assert (None if got is None else {k: v.hex().upper() for k, v in got.items()}) == captures


# ------------------------------------------------------------------------------------------ runner on the SSC card


def test_ssc_read_basic_runs_on_an_issued_card(ssc: Issued) -> None:
    session = ssc.session()
    events: list[Event] = []
    runner = ScriptRunner(session, on_event=events.append)
    result = runner.run(parse_file(SCRIPTS / "ssc-read-basic.apdu"))
    assert result.failures == [] and result.apdus == 10 and session.apdu_count == 10
    assert runner.vars["CHIP_SERIAL"].value == ssc.card.serial.hex().upper()
    assert runner.vars["REGION"].value == ssc.row["region"]
    # record contents are personal data: hidden without show_data, in the transcript and in echo
    out = texts(events)
    assert ssc.row["card_number"].encode().hex(" ").upper() not in out and "sha256:" in out
    assert ssc.card.serial.hex().upper() not in next(e.text for e in events if e.kind == "echo")
    events.clear()
    ScriptRunner(ssc.session(), on_event=events.append, show_data=True).run(parse_file(SCRIPTS / "ssc-read-basic.apdu"))
    echo = next(e.text for e in events if e.kind == "echo")
    assert echo == f"chip serial {ssc.card.serial.hex().upper()}, region {ssc.row['region']}"


def test_pin_counter_reports_tries_left_and_sends_no_pin(ssc: Issued) -> None:
    result, events = run(ssc.session(), (SCRIPTS / "pin-counter.apdu").read_text(encoding="utf-8"))
    assert result.failures == []
    verify = [e for e in events if e.kind == "exchange"][-1]
    assert verify.detail["command"] == "00200081" and verify.detail["sw"] == "63C3"
    assert verify.detail["decoded"] == ["PIN 81: 3 tries left"]


def test_unmet_expectation_names_file_line_command_response_and_meaning(ssc: Issued) -> None:
    text = f"select aid:{SSSE}\nselect EF05\nread record 7 => 07 09 * 9000\nselect EF09\nread record 1\n"
    session = ssc.session()
    with pytest.raises(ExpectationFailed) as ei:
        run(session, text)
    err = ei.value
    assert str(err) == ("t.apdu:4: SELECT: expected success (9000), got 6A82 (file or application not found); "
                        "command 00A40004 EF09 Le=256; response 6A82")
    assert err.sw == 0x6A82 and exit_code_for(err) == 3
    assert session.apdu_count == 4  # stopped: line 5 was never sent
    # a data mismatch on file contents: the error shows lengths and digests, never the card number
    with pytest.raises(ExpectationFailed) as ei:
        run(ssc.session(), f"select aid:{SSSE}\nselect EF05\nread record 7 => 07 09 58 * 9000\n")
    message = str(ei.value)
    assert "t.apdu:3: READ RECORD 7: expected pattern '07 09 58 * 9000', response <11 bytes sha256:" in message
    assert ssc.row["card_number"] not in message and ssc.row["card_number"].encode().hex().upper() not in message


def test_continue_reports_every_failure(ssc: Issued) -> None:
    text = "select 6661 => 9000\nselect MF\nselect 6662\nread binary => 9000\n"
    result, events = run(ssc.session(), text, continue_on_failure=True)
    assert [str(f.where) for f in result.failures] == ["t.apdu:1", "t.apdu:3", "t.apdu:4"]
    assert [f.sw for f in result.failures] == [0x6A82, 0x6A82, 0x6986]
    assert sum(1 for e in events if e.kind == "failure") == 3


def test_get_response_manual_as_scriptor_or_auto(keystore: TestKeyFile) -> None:
    card = VirtualCard.blank(b"\x01\x02\x03\x04", keystore.key("ssc-transport", Alg.SM4).value, Alg.SM4,
                             options=CardOptions(t0_style=True))
    session = CardSession(VirtualTransport(card))
    # scriptor semantics: the 61xx is shown and the script's own GET RESPONSE fetches the FCP
    result, events = run(session, "00A40004023F0000 => 61??\n00C0000000 => 62 * 9000\n")
    got = [e.detail["sw"] for e in events if e.kind == "exchange"]
    assert result.failures == [] and got[0].startswith("61") and got[1] == "9000"
    fcp_len = int(got[0][2:], 16)
    assert len(bytes.fromhex(events[1].detail["response"].replace(" ", ""))) == fcp_len + 2
    # auto: cardkit completes it; a named command always does
    result, events = run(session, "option get-response=auto\n00A40004023F0000 => 62 * 9000\nselect MF => 62 * 9000\n")
    assert result.failures == [] and session.apdu_count == 6  # 2 + (2 per completed command)


def test_reset_and_exit(ssc: Issued) -> None:
    result, events = run(ssc.session(), "reset cold\nexit\nselect MF\n")
    assert result.exited and result.apdus == 0
    assert events[0].kind == "reset" and events[0].detail["atr"] == ssc.card.atr.hex().upper()


def test_open_sm_and_external_auth_read_cardholder_data(ssc: Issued, keystore: TestKeyFile) -> None:
    region = ssc.row["region"]
    text = f"""\
select aid:{SSSE} => * 9000
open sm key=ssc-sm alg=sm4 ref=83 diversify={region},serial
select EF06 => 62 * 9000
read record 1 => 6982
auth external key=ssc-rkssse alg=sm4 ref=82 diversify={region},serial
read record 1 => 08 12 $ID:18 9000
"""
    result, events = run(ssc.session(), text, keystore=keystore, show_wire=True)
    assert result.failures == []
    exchanges = [e for e in events if e.kind == "exchange"]
    wire = exchanges[-1].text.splitlines()
    assert any(line.startswith("  wire > 0CB20104") for line in wire)  # the READ RECORD went protected (CLA 0C)
    assert "SM open: SM4 secure messaging, key 'ssc-sm' reference 83" in texts(events)
    # the citizen ID was captured from file contents: kept, but shown only as length + digest
    capture = next(e for e in events if e.kind == "capture")
    assert capture.detail["value"].startswith("<18 bytes sha256:")
    assert ssc.row["citizen_id"] not in texts(events) and ssc.row["citizen_id"].encode().hex().upper() not in \
        texts(events)
    # a wrong diversification: the card refuses the cryptogram (exit 5), nothing read
    with pytest.raises(Exception, match=r"t\.apdu:2: .*(6300|refused|wrong keys)") as ei:
        run(ssc.session(), f"select aid:{SSSE}\nopen sm key=ssc-sm alg=sm4 ref=83 diversify=999999,serial\n",
            keystore=keystore)
    assert exit_code_for(ei.value) == 5


def test_open_without_keys_and_unknown_key_are_keystore_errors(ssc: Issued, keystore: TestKeyFile) -> None:
    with pytest.raises(Exception, match=r"t\.apdu:1: open sm needs keys: give --keys FILE") as ei:
        run(ssc.session(), "open sm key=ssc-sm\n")
    assert exit_code_for(ei.value) == 7
    with pytest.raises(Exception, match="exists for sm4 and 3des: say which with alg=") as ei:
        run(ssc.session(), "open sm key=ssc-sm\n", keystore=keystore)
    assert exit_code_for(ei.value) == 7


def test_secrets_come_only_from_secret_sources_and_never_show(ssc: Issued, monkeypatch: pytest.MonkeyPatch) -> None:
    select = f"select aid:{SSSE}\n"
    with pytest.raises(ScriptError, match=r"t\.apdu:2: .*given on the command line \(--var\)"):
        run(ssc.session(), select + "verify pin 81 ${PIN}\n", variables={"PIN": Variable(ssc.pin, "argv")})
    with pytest.raises(ScriptError, match="from script; secrets never come from argv or a script literal"):
        run(ssc.session(), select + "set PIN=123456\nverify pin 81 ${PIN}\n")
    with pytest.raises(ScriptError, match="no terminal: use env:VAR or --var-file"):
        run(ssc.session(), select + "verify pin 81 prompt\n")
    secret = {"PIN": Variable(ssc.pin, "file", secret=True)}
    with pytest.raises(ScriptError, match="comes from a secret source"):
        run(ssc.session(), "select ${PIN}\n", variables=secret)
    with pytest.raises(ScriptError, match="not a VERIFY/authentication/PUT KEY command: it would be shown"):
        run(ssc.session(), "00A40400 06 ${PIN}\n", variables={"PIN": Variable(ssc.pin.encode().hex(), "file", True)})
    monkeypatch.setenv("SCRIPT_TEST_PIN", ssc.pin)
    result, events = run(ssc.session(), select + "verify pin 81 env:SCRIPT_TEST_PIN\necho pin ${PIN}\n"
                         "verify pin 81 ${PIN}\n00200081 06 ${HEXPIN}\n",
                         variables={**secret, "HEXPIN": Variable(ssc.pin.encode().hex(), "file", True)})
    assert result.failures == [] and [e.detail["sw"] for e in events if e.kind == "exchange"][1:] == ["9000"] * 3
    out = texts(events)
    assert ssc.pin not in out and ssc.pin.encode().hex().upper() not in out and "pin ***" in out
    assert "00200081 <6 bytes secret>" in out
    # a wrong PIN: exit 3 with the tries left, the PIN nowhere
    monkeypatch.setenv("SCRIPT_TEST_PIN", "000000" if ssc.pin != "000000" else "111111")
    with pytest.raises(ExpectationFailed, match=r"got 63C2 \(verification failed, 2 tries left\)") as ei:
        run(ssc.session(), select + "verify pin 81 env:SCRIPT_TEST_PIN\n")
    assert "000000" not in str(ei.value) and "00200081 <6 bytes secret>" in str(ei.value)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_runs_a_script_on_an_image_and_fails_with_exit_3(image: Path, tmp_path: Path) -> None:
    result, code = invoke("--reader", f"virtual:{image}", "script", "run", str(SCRIPTS / "ssc-read-basic.apdu"))
    assert code == 0, result.output
    assert "[" + str(SCRIPTS / "ssc-read-basic.apdu") + ":29] READ RECORD 8" in result.output
    assert "done: 12 statements, 10 APDUs, 0 unmet expectations" in result.output
    bad = tmp_path / "bad.apdu"
    bad.write_text("select MF\nselect 3F00/6666 => 9000\nselect MF\n", encoding="utf-8")
    result, code = invoke("--reader", f"virtual:{image}", "script", "run", str(bad))
    assert code == 3 and f"{bad}:2: SELECT by path" in str(result.exception)
    result, code = invoke("--json", "--reader", f"virtual:{image}", "script", "run", str(bad), "--continue")
    assert code == 3 and str(result.exception) == f"1 unmet expectation(s) at {bad}:2"
    import json

    report = json.loads(result.stdout)
    assert report["statements"] == 3 and report["apdus"] == 3 and len(report["failures"]) == 1
    assert [e["sw"] for e in report["events"] if e["kind"] == "exchange"] == ["9000", "6A82", "9000"]
    result, code = invoke("script", "run", "--check", str(bad))
    assert code == 0 and "3 statements, syntax OK" in result.output
    bad.write_text("select MF\nopen scp03\n", encoding="utf-8")
    result, code = invoke("script", "run", "--check", str(bad))
    assert code == 6 and str(result.exception) == f"{bad}:2: open scp03 needs keyset=NAME"
    result, code = invoke("script", "run", "--dry-run", str(bad))
    assert code == 2 and "--dry-run needs --replay FILE" in result.output


def test_record_then_dry_run_replays_the_secure_channel_byte_for_byte(image: Path, ssc: Issued,
                                                                      tmp_path: Path) -> None:
    script = tmp_path / "sm.apdu"
    script.write_text(f"""\
option get-response=auto
select aid:{SSSE}
verify pin 81 ${{PIN}}
open sm key=ssc-sm alg=sm4 ref=83 diversify=${{REGION}},serial
select EF05
read record 2 => 02 01 ?? 9000
""", encoding="utf-8")
    vars_path = var_file(tmp_path, PIN=ssc.pin, REGION=ssc.row["region"])
    rec = tmp_path / "rec.json"
    trace = tmp_path / "trace.jsonl"
    common = ["--var-file", str(vars_path), "--keys", str(TEST_KEYS), "--allow-test-keys"]
    result, code = invoke("--trace", str(trace), "--reader", f"virtual:{image}", "script", "run", str(script),
                          "--record", str(rec), *common)
    assert code == 0, result.output
    assert oct(rec.stat().st_mode & 0o777) == "0o600" and oct(trace.stat().st_mode & 0o777) == "0o600"
    result, code = invoke("script", "run", str(script), "--dry-run", "--replay", str(rec), *common)
    assert code == 0, result.output
    assert "wire > 0CB20204" in result.output and "wire > 00820083 <40 bytes secret> Le=40" in result.output
    assert "recorded exchanges not replayed" not in result.output
    for text in (result.output, trace.read_text(encoding="utf-8")):
        assert ssc.pin not in text and ssc.pin.encode().hex().upper() not in text
    # a different script no longer matches the recorded card: the replay names the exchange
    script.write_text(script.read_text(encoding="utf-8").replace("read record 2 => 02 01 ?? 9000", "read record 3"),
                      encoding="utf-8")
    result, code = invoke("script", "run", str(script), "--dry-run", "--replay", str(rec), *common)
    assert code == 4 and f"{script}:6: " in str(result.exception) and "expected 0CB20204" in str(result.exception)


def test_console_script_end_to_end(image: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "cardkit"
    ok = subprocess.run([str(exe), "--reader", f"virtual:{image}", "script", "run",
                         str(SCRIPTS / "pin-counter.apdu")], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "PIN 81: 3 tries left" in ok.stdout
    bad = subprocess.run([str(exe), "--reader", f"virtual:{image}", "script", "run", str(SCRIPTS / "pin-counter.apdu"),
                          "--var", "PIN_REF=05"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 3
    assert bad.stderr.strip().splitlines()[-1] == (
        f"error: {SCRIPTS / 'pin-counter.apdu'}:13: VERIFY ref 05: expected 63C? | 9000 | 6983, got 6A88 "
        "(referenced data or reference data not found); command 00200005; response 6A88")


# ------------------------------------------------------------------------------------------ GlobalPlatform


def _gp_card(scp: int = 3, keyhex: str = GP_TEST_KEY) -> Any:
    import cardkit.virtual.gp as gp
    from cardkit.sm.gp import GpKeySet

    card = new_virtual_card(seed=5)
    alg = Alg.AES if scp == 3 else Alg.DES3
    isd = gp.install_isd(card, GpKeySet.single(bytes.fromhex(keyhex), alg=alg, version=0x30), scp=scp)
    return card, isd


@pytest.fixture
def gp_keys(tmp_path: Path) -> TestKeyFile:
    path = tmp_path / "gp.toml"
    path.write_text(f"""test_only = true
[[key]]
name = "gp-test"
alg = "aes"
value = "{GP_TEST_KEY}"
[[key]]
name = "gp-test"
alg = "3des"
value = "{GP_TEST_KEY}"
[[key]]
name = "gp-master-enc"
alg = "3des"
value = "00112233445566778899AABBCCDDEEFF"
[[key]]
name = "gp-master-mac"
alg = "3des"
value = "0123456789ABCDEFFEDCBA9876543210"
[[key]]
name = "gp-master-dek"
alg = "3des"
value = "FFEEDDCCBBAA99887766554433221100"
""", encoding="utf-8")
    return TestKeyFile(path, allow_test_keys=True)


@needs_gp
def test_gp_card_info_script_on_the_virtual_isd() -> None:
    card, _ = _gp_card()
    result, events = run(CardSession(VirtualTransport(card)), (SCRIPTS / "gp-card-info.apdu").read_text("utf-8"))
    assert result.failures == [] and result.apdus == 6
    decoded = [d for e in events if e.kind == "exchange" for d in e.detail["decoded"]]
    assert any(d.startswith("CPLC: ") and f"IC serial {card.serial.hex().upper()}" in d for d in decoded)
    assert "card data: GP 2.3.1, SCP03 i=70" in decoded and "key information: key versions 30" in decoded


@needs_gp
@pytest.mark.parametrize("level", ["01", "03", "13", "33"])
def test_gp_list_apps_over_scp03_at_every_level(gp_keys: TestKeyFile, level: str) -> None:
    card, _ = _gp_card()
    result, events = run(CardSession(VirtualTransport(card)), (SCRIPTS / "gp-list-apps.apdu").read_text("utf-8"),
                         keystore=gp_keys, variables={"LEVEL": level})
    assert result.failures == []
    assert f"SCP03 open: level {level}, key set 'gp-test'" in texts(events)
    decoded = [d for e in events if e.kind == "exchange" for d in e.detail["decoded"]]
    assert decoded[0] == "FCI: name A000000151000000"
    assert decoded[1].startswith("A000000151000000  OP_READY  privileges: Security Domain")


@needs_gp
def test_gp_scp03_s16_checks_the_pseudo_random_card_challenge(gp_keys: TestKeyFile) -> None:
    import cardkit.virtual.gp as gp
    from cardkit.sm.gp import GpKeySet
    from cardkit.sm.scp03 import I_S16

    card = new_virtual_card(seed=7)
    gp.install_isd(card, GpKeySet.single(bytes.fromhex(GP_TEST_KEY), alg=Alg.AES, version=0x30), scp=3,
                   i=0x70 | I_S16)
    opening = "select aid:A000000151000000\nopen scp03 keyset=gp-test level=33 s16=yes kvn=30 sd={}\n"
    result, _ = run(CardSession(VirtualTransport(card)), opening.format("A000000151000000") + "80F28002024F0000\n",
                    keystore=gp_keys)
    assert result.apdus == 2
    with pytest.raises(Exception, match="pseudo-random card challenge does not verify"):
        run(CardSession(VirtualTransport(card)), opening.format("A000000151000001"), keystore=gp_keys)


@needs_gp
def test_gp_scp02_with_emv_diversified_keys(gp_keys: TestKeyFile) -> None:
    import cardkit.virtual.gp as gp
    from cardkit.sm.gp import Diversification, GpKeySet, diversify

    card = new_virtual_card(seed=6)
    master = GpKeySet(bytes.fromhex("00112233445566778899AABBCCDDEEFF"),
                      bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"),
                      bytes.fromhex("FFEEDDCCBBAA99887766554433221100"), 0x30, alg=Alg.DES3)
    placeholder = gp.install_isd(card, master, scp=2)
    card_keys = diversify(master, Diversification.EMV, placeholder.kdd)
    card2 = new_virtual_card(serial=card.serial, seed=6)
    gp.install_isd(card2, card_keys, scp=2)
    text = ("select aid:A000000151000000\nopen scp02 keyset=gp-master level=03 diversify=emv\n"
            "80F28002024F0000 => E3 * 9000\n")
    result, events = run(CardSession(VirtualTransport(card2)), text, keystore=gp_keys)
    assert result.failures == [] and "SCP02 open: level 03, key set 'gp-master', diversified emv" in texts(events)
    with pytest.raises(Exception, match=r"card cryptogram does not verify") as ei:
        run(CardSession(VirtualTransport(card2)), text.replace(" diversify=emv", ""), keystore=gp_keys)
    assert exit_code_for(ei.value) == 5


# ------------------------------------------------------------------------------------------ eMRTD


@needs_mrtd
def test_mrtd_bac_dg1_script_on_the_virtual_emrtd(tmp_path: Path) -> None:
    import cardkit.apps.mrtd as mrtd
    import cardkit.virtual.mrtd as vmrtd

    ks = TestKeyFile(ROOT / "keys/test/mrtd.toml", allow_test_keys=True)
    profile = load_profile(ROOT / "applets/mrtd")
    with open(ROOT / "applets/mrtd/sample-batch.csv", encoding="utf-8", newline="") as fh:
        row = next(csv.DictReader(fh))
    prepared = mrtd.prepare_mrtd(profile, row, keystore=ks)
    card = new_virtual_card(alg=Alg.DES3, transport_key=ks.key(profile.transport_key, Alg.DES3).value, seed=3)
    vmrtd.enable_mrtd(card)
    personalize(CardSession(VirtualTransport(card)), profile, prepared, ks)
    mrz = mrtd.td3_from_record(row).mrz_information()
    session = CardSession(VirtualTransport(card))
    events: list[Event] = []
    runner = ScriptRunner(session, variables={"MRZ": Variable(mrz, "file", secret=True)}, on_event=events.append,
                          show_wire=True)
    result = runner.run(parse_file(SCRIPTS / "mrtd-bac-dg1.apdu"))
    assert result.failures == [] and result.apdus == 5
    assert "BAC open: 3DES secure messaging (ICAO 9303-11)" in texts(events)
    assert "wire > 0CA4020C" in texts(events) and mrz not in texts(events)
    assert row["document_number"] not in texts(events)
    # a wrong MRZ: BAC is refused, exit 5
    wrong = mrz[:-1] + ("0" if mrz[-1] != "0" else "1")
    with pytest.raises(Exception, match=r"mrtd-bac-dg1\.apdu:\d+: ") as ei:
        ScriptRunner(CardSession(VirtualTransport(card)), variables={"MRZ": Variable(wrong, "file", True)}).run(
            parse_file(SCRIPTS / "mrtd-bac-dg1.apdu"))
    assert exit_code_for(ei.value) == 5, ei.value


# ------------------------------------------------------------------------------------------ PC/SC + scriptor


@pytest.fixture
def t0_card(keystore: TestKeyFile) -> VirtualCard:
    card = VirtualCard.blank(b"\x0a\x0b\x0c\x0d", keystore.key("ssc-transport", Alg.SM4).value, Alg.SM4,
                             options=CardOptions(t0_style=True))
    from cardkit.virtual.isoauth import mutual_auth_handler

    card.mutual_auth_handler = mutual_auth_handler
    return card


@pytest.mark.pcsc
def test_scriptor_and_cardkit_get_the_same_answers_over_pcscd(vpcd_card: Any, t0_card: VirtualCard,
                                                               tmp_path: Path) -> None:
    if shutil.which("scriptor") is None:
        pytest.skip("pcsc-tools' scriptor is not installed")
    reader, _server = vpcd_card(t0_card)
    script = tmp_path / "sim.script"
    # scriptor's own syntax: reset, # comments, spaced or compact hex, a \ continuation (no leading blanks)
    script.write_text("# scriptor file\nreset\n00 A4 00 04 02 3F 00 00\n00 C0 00 00 \\\n00\n00B0000004\n",
                      encoding="utf-8")
    theirs = subprocess.run(["scriptor", "-r", reader, str(script)], capture_output=True, text=True, timeout=60)
    assert theirs.returncode == 0, theirs.stderr
    import re

    # scriptor prints "< XX XX ... : meaning", 16 bytes per line
    their_answers = [a.replace(" ", "").replace("\n", "").upper()
                     for a in re.findall(r"^< ([0-9A-F \n]+?) : ", theirs.stdout, re.M)]
    result, code = invoke("--reader", reader, "--json", "script", "run", str(script))
    assert code == 0, result.output
    import json

    ours = [e["response"].replace(" ", "") for e in json.loads(result.stdout)["events"] if e["kind"] == "exchange"]
    assert len(their_answers) == 3 and their_answers == ours
    assert ours[0].startswith("61") and ours[2] == "6986"


@pytest.fixture(autouse=True)
def _no_pcsc_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CARDKIT_HOME", str(tmp_path / "home"))
    yield
    os.environ.pop("SCRIPT_TEST_PIN", None)


def test_bad_values_from_variables_are_located(ssc: Issued) -> None:
    with pytest.raises(ScriptError, match=r"t\.apdu:1: bad value: .*'x1'"):
        run(ssc.session(), "read record ${N}\n", variables={"N": "x1"})
    with pytest.raises(ScriptError, match=r"t\.apdu:1: APDU 00A4040005\$\{…\} is not valid after expansion"):
        run(ssc.session(), "00A4040005${AID}\n", variables={"AID": "A000"})
