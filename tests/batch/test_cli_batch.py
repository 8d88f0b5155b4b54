"""``cardkit batch`` and ``cardkit audit`` through click's CliRunner, and end to end through the real console
script (exit codes, the virtual-reader default, inspecting a saved card image)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cardkit.batch import Ledger
from cardkit.cli.errors import exit_code_for
from cardkit.cli.main import cli
from cardkit.profiles.synthetic import SSC_FIELDS, csv_text, ssc_people

ROOT = Path(__file__).resolve().parents[2]
KEYS = str(ROOT / "keys/test/ssc.toml")
CARDKIT = str(Path(sys.executable).with_name("cardkit"))


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CARDKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def source(tmp_path: Path, n: int, *, seed: int = 5, bad_line: int | None = None) -> tuple[Path, list[dict[str, str]]]:
    rows = list(ssc_people(n, seed=seed))
    if bad_line is not None:
        rows[bad_line - 2]["birth_date"] = "20230230"
    path = tmp_path / "people.csv"
    path.write_text(csv_text(rows, SSC_FIELDS), encoding="utf-8")
    return path, rows


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def code(res: Result) -> int:
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return exit_code_for(res.exception)
    return res.exit_code


def run_args(path: Path, out: Path, *extra: str, readers: str = "virtual:2") -> list[str]:
    return ["batch", "run", str(path), "--profile", "ssc", "--batch-id", "B", "--readers", readers,
            "--keys", KEYS, "--allow-test-keys", "--out", str(out), "--station", "t1", *extra]


def test_help_of_every_command_has_an_example() -> None:
    for cmd in (["batch"], ["batch", "validate"], ["batch", "run"], ["batch", "status"], ["batch", "report"],
                ["batch", "resume"], ["batch", "cancel"], ["audit"], ["audit", "verify"]):
        res = invoke(*cmd, "--help")
        assert res.exit_code == 0, res.output
        assert "Example" in res.output and "cardkit " in res.output, cmd


def test_run_status_report_audit_and_inspect_an_image(tmp_path: Path) -> None:
    path, rows = source(tmp_path, 6)
    out = tmp_path / "out"
    trace = tmp_path / "trace.jsonl"
    res = invoke("--trace", str(trace), *run_args(path, out))
    assert code(res) == 0, res.output
    assert trace.stat().st_mode & 0o077 == 0 and len(trace.read_text().splitlines()) > 6 * 60
    assert "Reconciles      YES" in res.output and "Input records   6" in res.output
    for name in ("report.json", "records.csv", "summary.txt", "report.html", "journal.jsonl", "ledger.db"):
        assert (out / name).stat().st_mode & 0o077 == 0, name
    images = sorted((out / "cards").glob("*.json"))
    assert len(images) == 6
    url = f"sqlite:///{out}/ledger.db"
    res = invoke("batch", "status", "B", "--ledger", url)
    assert res.exit_code == 0 and "batch B (profile ssc): finished" in res.output and "done 6" in res.output
    res = invoke("--json", "batch", "status", "B", "--ledger", url)
    assert json.loads(res.output)["records"]["done"] == 6
    res = invoke("batch", "report", "B", "--ledger", url)
    assert res.exit_code == 0 and "Journal journal.jsonl" in res.output and "intact" in res.output
    res = invoke("audit", "verify", str(out / "journal.jsonl"))
    assert res.exit_code == 0 and "intact" in res.output
    # a saved card can be inspected: SELECT SSSE, SELECT EF05, READ RECORD 1 (card identification code)
    res = invoke("--reader", f"virtual:{images[0]}", "apdu", "00A4040C0F7378312E73682EC9E7BBE1B1A3D5CF",
                 "00A4020C02EF05", "00B2010400")
    assert res.exit_code == 0, res.output
    assert res.output.count("9000") == 3 and images[0].stem[:2] in res.output.replace(" ", "")
    files = ("report.json", "records.csv", "summary.txt", "journal.jsonl")
    everything = res.output + trace.read_text() + "".join((out / f).read_text(encoding="utf-8") for f in files)
    for r in rows:
        assert r["citizen_id"] not in everything and r["name"] not in everything


def test_tampered_journal_fails_audit_with_exit_8(tmp_path: Path) -> None:
    path, _ = source(tmp_path, 3)
    out = tmp_path / "out"
    assert code(invoke(*run_args(path, out))) == 0
    journal = out / "journal.jsonl"
    lines = journal.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace('"attempt":1', '"attempt":2')
    journal.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = invoke("audit", "verify", str(journal))
    assert code(res) == 8 and "line 3: edited" in res.output
    res = invoke("batch", "report", "B", "--ledger", f"sqlite:///{out}/ledger.db")
    assert code(res) == 8 and "DAMAGED" in res.output


def test_rejected_records_give_exit_9_and_are_reported(tmp_path: Path) -> None:
    path, _ = source(tmp_path, 5, bad_line=4)
    out = tmp_path / "out"
    res = invoke(*run_args(path, out))
    assert code(res) == 6 and res.output.count("line 4, field 'birth_date'") == 1
    assert "--on-bad-record skip" in str(res.exception)
    assert not (out / "cards").exists()  # nothing loaded, nothing run
    res = invoke(*run_args(path, out, "--on-bad-record", "skip"))
    assert res.exit_code == 9, res.output
    assert "rejected      1" in res.output and "record 5 (line 4): invalid record" in res.output
    assert len(list((out / "cards").glob("*.json"))) == 4


def test_resume_recovers_leftovers_and_cancel_stops(tmp_path: Path) -> None:
    path, _ = source(tmp_path, 8)
    out = tmp_path / "out"
    url = f"sqlite:///{out}/ledger.db"
    res = invoke("batch", "validate", str(path), "--profile", "ssc")
    assert res.exit_code == 0 and "8 records, 8 valid, 0 problem(s)" in res.output
    res = invoke(*run_args(path, out, "--stop-after-failures", "1", readers="virtual:1"))
    assert code(res) == 0
    with Ledger.open(url) as ledger:  # a second batch in the same ledger, left mid-card by a "crash"
        from cardkit.batch import Pseudonymizer

        rows = list(ssc_people(4, seed=77))
        ledger.create_batch("B2", "ssc", "1" * 64, [(i + 2, r) for i, r in enumerate(rows)],
                            identity_of=lambda f: Pseudonymizer.for_ledger(out / "ledger.db").of(f["citizen_id"]),
                            options={"profile_path": str(ROOT / "applets/ssc/profile.toml"), "algorithm": "sm4"})
        claim = ledger.claim("B2", "t1", "virtual-0")
        assert claim is not None
        ledger.card_started(claim, bytes.fromhex("EE000001"))
    res = invoke("batch", "resume", "B2", "--ledger", url, "--keys", KEYS, "--allow-test-keys", "--station", "t1",
                 "--readers", "virtual:2")
    assert code(res) == 0, res.output
    assert "recovered 1 claim(s)" in res.output and "spoiled 1" in res.output and "EE000001" in res.output
    res = invoke("batch", "cancel", "B2", "--ledger", url)
    assert code(res) == 2 and "finished; it cannot be cancelled" in res.output
    path3, _ = source(tmp_path, 3, seed=9)
    res = invoke("batch", "validate", str(path3), "--profile", "ssc")
    with Ledger.open(url) as ledger:
        from cardkit.batch import Pseudonymizer as Pz
        from cardkit.batch.validate import load_batch
        from cardkit.profiles.model import find_profile, load_profile

        load_batch(ledger, path3, load_profile(find_profile("ssc")), "B3", Pz.for_ledger(out / "ledger.db"))
    res = invoke("batch", "cancel", "B3", "--ledger", url)
    assert res.exit_code == 0 and "cancelled" in res.output
    res = invoke("batch", "status", "B3", "--ledger", url)
    assert "cancelled" in res.output and "pending 3" in res.output
    lines = (out / "journal.jsonl").read_text(encoding="utf-8")
    assert '"event":"batch.cancelled"' in lines


def test_usage_and_keystore_errors(tmp_path: Path) -> None:
    path, _ = source(tmp_path, 2)
    res = invoke("batch", "run", str(path), "--profile", "ssc", "--readers", "virtual:1")
    assert res.exit_code == 2 and "a keystore is needed" in res.output
    res = invoke("batch", "run", str(path), "--profile", "ssc", "--readers", "virtual:1", "--keys", KEYS)
    assert code(res) == 7 and "--allow-test-keys" in str(res.exception)
    res = invoke(*run_args(path, tmp_path / "o", readers="virtual:0"))
    assert res.exit_code == 2 and "virtual:N takes N = 1..256" in res.output
    res = invoke("batch", "status", "NOPE", "--ledger", f"sqlite:///{tmp_path}/x.db")
    assert res.exit_code == 2 and "no batch 'NOPE'" in res.output
    res = invoke("batch", "status", "B", "--ledger", "mysql://x")
    assert res.exit_code == 2
    res = invoke("batch", "validate", str(tmp_path / "missing.csv"), "--profile", "ssc")
    assert res.exit_code == 2 and "does not exist" in res.output
    (tmp_path / "people.txt").write_text("a,b\n1,2\n")
    res = invoke("batch", "validate", str(tmp_path / "people.txt"), "--profile", "ssc")
    assert code(res) == 6 and "cannot tell the format" in str(res.exception)
    res = invoke("batch", "validate", str(tmp_path / "people.txt"), "--profile", "nosuchprofile")
    assert code(res) == 6 and "no profile 'nosuchprofile'" in str(res.exception)


def test_console_script_end_to_end(tmp_path: Path, home: Path) -> None:
    """The real `cardkit` script: no PC/SC service reachable → 4 virtual readers with a notice; exit codes."""
    path, rows = source(tmp_path, 5, bad_line=6)
    env = {**os.environ, "CARDKIT_HOME": str(home), "PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd.comm")}
    bad = subprocess.run([CARDKIT, "batch", "validate", str(path), "--profile", "ssc"], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 6 and "line 6, field 'birth_date'" in bad.stdout and bad.stderr.startswith("error: ")
    out = tmp_path / "out"
    res = subprocess.run([CARDKIT, "batch", "run", str(path), "--profile", "ssc", "--keys", KEYS, "--allow-test-keys",
                          "--out", str(out), "--on-bad-record", "skip"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 9, res.stderr
    assert "no PC/SC reader with a card: using 4 virtual readers" in res.stderr
    assert "progress: 4 done" in res.stderr and "batch: 4/5 done, 1 rejected" in res.stderr  # plain lines
    assert len(list((out / "cards").glob("*.json"))) == 4
    for r in rows:
        assert r["citizen_id"] not in res.stdout + res.stderr


@pytest.mark.pcsc
def test_console_script_on_pcsc_readers(tmp_path: Path, home: Path, pcscd: object, vpcd_card: object) -> None:
    """`--readers all` on the fixture's pcscd: the station waits for cards, the test inserts blank ones."""
    import time

    from cardkit.batch.runner import make_feeder
    from cardkit.keys.store import TestKeyFile
    from cardkit.profiles.model import find_profile, load_profile
    from cardkit.transport.pcsc import list_readers
    from cardkit.virtual.isoauth import mutual_auth_handler

    path, _ = source(tmp_path, 2)
    out = tmp_path / "out"
    env = {**os.environ, "CARDKIT_HOME": str(home)}
    proc = subprocess.Popen([CARDKIT, "batch", "run", str(path), "--profile", "ssc", "--readers", "all", "--keys",
                             KEYS, "--allow-test-keys", "--out", str(out), "--progress-interval", "60"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        journal, deadline = out / "journal.jsonl", time.monotonic() + 60
        while not (journal.exists() and "station.started" in journal.read_text(encoding="utf-8")):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        feeder = make_feeder(load_profile(find_profile("ssc")), TestKeyFile(KEYS, allow_test_keys=True),
                             tmp_path / "feeder")
        serials = []
        for _ in range(2):
            card = feeder.next_card()
            card.mutual_auth_handler = mutual_auth_handler
            serials.append(card.serial.hex().upper())
            vpcd_card(card)  # type: ignore[operator]
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    assert "Reconciles      YES" in stdout and "waiting for a blank card" in stderr
    with Ledger.open(f"sqlite:///{out}/ledger.db") as ledger:
        (info,) = ledger.batches()
        verified = ledger.cards(info.id, state="verified")
    assert sorted(c.chip_serial.hex().upper() for c in verified) == sorted(serials)
    assert {c.reader for c in verified} <= set(list_readers())
