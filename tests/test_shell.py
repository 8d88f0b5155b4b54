"""``cardkit shell``: piped sessions over an issued SSC card (ls/cd/cat with profile names, verify, save → a
script that runs again), errors that do not end the session, completion, and readline in a real terminal."""

from __future__ import annotations

import csv
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cardkit.cli.main import cli
from cardkit.cli.shell import Completer
from cardkit.crypto import Alg
from cardkit.issuance.engine import personalize
from cardkit.issuance.prepare import prepare
from cardkit.keys.store import TestKeyFile
from cardkit.profiles.model import load_profile
from cardkit.readers import TEST_KEYS, new_virtual_card
from cardkit.script import ScriptRunner, parse_text
from cardkit.session import CardSession
from cardkit.transport.virtual import VirtualTransport

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def issued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str], str]:
    """An SSC card image personalized by the engine, its record, its PIN."""
    monkeypatch.setenv("CARDKIT_HOME", str(tmp_path / "home"))
    ks = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    profile = load_profile(ROOT / "applets/ssc")
    with open(ROOT / "applets/ssc/sample-batch.csv", encoding="utf-8", newline="") as fh:
        row = next(csv.DictReader(fh))
    prepared = prepare(profile, row)
    card = new_virtual_card(alg=Alg.SM4, transport_key=ks.key(profile.transport_key, Alg.SM4).value, seed=21)
    personalize(CardSession(VirtualTransport(card)), profile, prepared, ks)
    image = tmp_path / "card.json"
    card.save(image)
    return image, row, prepared.pins["pin"].decode()


def shell(image: Path, lines: str, *extra: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["--reader", f"virtual:{image}", "shell", "--keys", str(TEST_KEYS),
                                    "--allow-test-keys", *extra], input=lines, env=env, catch_exceptions=False)


def test_piped_session_browses_with_profile_names_and_saves_a_script(
        issued: tuple[Path, dict[str, str], str], tmp_path: Path) -> None:
    image, row, pin = issued
    saved = tmp_path / "session.apdu"
    lines = f"""\
profile ssc
cd SSSE
pwd
ls
cat EF05
verify pin 81 env:SHELL_TEST_PIN
00200081 06 {pin.encode().hex()}
cd DF01
cat EF05
cd ..
select EF06 => 62 * 9000
save {saved}
history
"""
    result = shell(image, lines, env={"SHELL_TEST_PIN": pin})
    out = result.stdout
    assert result.exit_code == 0, result.output
    assert "/SSSE\n" in out
    assert "EF05  EF  FID EF05, linear-variable, 7 records of 20 bytes, 140 bytes, SFI 5, operational-activated  " \
           "SSSE/EF05" in out
    assert "DF04  DF  FID DF04, df, operational-activated  SSSE/DF04" in out
    assert "  record 3: tag 03, 4 bytes  spec_version = 3.00" in out
    masked = row["card_number"][:4] + "***" + row["card_number"][-2:]
    assert f"  record 7: tag 07, 9 bytes  card_number = {masked}" in out and row["card_number"] not in out
    assert "[SSSE/DF01/EF05]" in out
    assert pin not in result.output and pin.encode().hex().upper() not in result.output
    assert "# (APDU with secret data)" in out  # history shows that a secret line was there, not the line
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    text = saved.read_text(encoding="utf-8")
    assert pin not in text and pin.encode().hex() not in text
    assert text.splitlines()[1:4] == ["option get-response=auto", "profile ssc", "cd SSSE"]
    assert text.splitlines()[4:] == ["pwd", "ls", "cat EF05", "verify pin 81 env:SHELL_TEST_PIN", "cd DF01", "cat EF05",
                                     "cd ..", "select EF06 => 62 * 9000"]  # no secret APDU, no save/history
    # the saved session is a script: it runs again, with the same answers
    again = CliRunner().invoke(cli, ["--reader", f"virtual:{image}", "script", "run", str(saved)],
                               env={"SHELL_TEST_PIN": pin}, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "0 unmet expectations" in again.stdout


def test_errors_do_not_end_the_session_and_set_the_exit_code(issued: tuple[Path, dict[str, str], str]) -> None:
    image, _, _ = issued
    result = shell(image, "select 7777\nbogus line\nselect MF\nselect 7777 => 9000\nexit\nselect MF\n")
    assert result.exit_code == 3
    errors = result.stderr.strip().splitlines()
    assert errors == [
        "error: <shell>:1: SELECT: expected success (9000), got 6A82 (file or application not found); command "
        "00A40004 7777 Le=256; response 6A82",
        "error: <shell>:2: unknown command 'bogus': not a cardkit command and not hex bytes",
        "error: <shell>:4: SELECT: expected 9000, got 6A82 (file or application not found); command 00A40004 7777 "
        "Le=256; response 6A82",
    ]
    assert result.stdout.count("> 00 A4 00 04 02 3F 00 00") == 1  # 'exit' ended the session before the last line


def test_ls_scan_finds_files_without_a_profile(issued: tuple[Path, dict[str, str], str]) -> None:
    image, _, _ = issued
    result = shell(image, "cd aid:7378312E73682EC9E7BBE1B1A3D5CF\nls\nls scan EF00-EF0F\nls\ncd DF01\npwd\n")
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[1] == "(no files known here: try 'ls scan 0000-00FF' or load a profile)"
    found = [line.split()[:2] for line in out[2:6]]
    assert found == [["EF05", "EF"], ["EF06", "EF"], ["EF07", "EF"], ["EF08", "EF"]]
    assert out[6:10] == out[2:6]  # what a scan found is remembered under this DF
    assert out[-1] == "aid:7378312E73682EC9E7BBE1B1A3D5CF/DF01"


def test_completion_of_commands_files_parameters_and_keys(issued: tuple[Path, dict[str, str], str]) -> None:
    image, _, _ = issued
    from cardkit.readers import load_virtual_card

    session = CardSession(VirtualTransport(load_virtual_card(image)))
    runner = ScriptRunner(session, keystore=TestKeyFile(TEST_KEYS, allow_test_keys=True),
                          profile=load_profile(ROOT / "applets/ssc"))
    c = Completer(runner)
    assert c.candidates("se") == ["select", "set"]
    assert c.candidates("") [:3] == ["apdu", "auth", "cat"]
    assert c.candidates("cd ") == ["..", "DDF1", "MF", "SSSE", "aid:7378312E73682EC9E7BBE1B1A3D5CF"]
    runner.run(parse_text("cd SSSE\n"))
    assert c.candidates("cat EF") == ["EF05", "EF06", "EF07", "EF08"]
    assert c.candidates("cd D") == ["DF01", "DF04"]
    assert c.candidates("open ") == ["bac", "scp02", "scp03", "sm"]
    assert c.candidates("open sm ") == ["alg=", "diversify=", "key=", "ref="]
    assert c.candidates("open sm key=ssc-i") == ["key=ssc-irk", "key=ssc-issuer"]
    assert c.candidates("verify pin 81 ") == ["prompt", "status", "env:"]
    assert c.candidates("read r") == ["record"]
    assert c.candidates("help sa") == ["save"]


def test_readline_completion_in_a_real_terminal(issued: tuple[Path, dict[str, str], str], tmp_path: Path) -> None:
    image, _, _ = issued
    exe = Path(sys.executable).parent / "cardkit"
    master, slave = pty.openpty()
    env = {**os.environ, "CARDKIT_HOME": str(tmp_path / "home"), "TERM": "dumb"}
    proc = subprocess.Popen([str(exe), "--reader", f"virtual:{image}", "shell", "--profile", "ssc",
                             "--history", str(tmp_path / "hist")], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)

    def read_until(marker: bytes, timeout: float = 20.0) -> bytes:
        buf = b""
        deadline = time.monotonic() + timeout
        while marker not in buf and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    buf += os.read(master, 4096)
                except OSError:
                    break
        return buf

    try:
        assert b"cardkit /> " in read_until(b"cardkit /> ")
        os.write(master, b"cd SS\t\n")  # completes to "cd SSSE"
        assert b"cardkit /SSSE> " in read_until(b"cardkit /SSSE> ")
        os.write(master, b"pw\t\n")
        assert b"/SSSE" in read_until(b"cardkit /SSSE> ")
        os.write(master, b"exit\n")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    history = (tmp_path / "hist").read_text(encoding="utf-8")
    assert "cd SSSE" in history and oct((tmp_path / "hist").stat().st_mode & 0o777) == "0o600"
