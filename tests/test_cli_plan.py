"""``cardkit plan`` (prepare, show, run) through click's CliRunner, and end to end through the real console script
(passphrase, and a KEK inside a SoftHSM2 token)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cardkit.batch import Ledger
from cardkit.cli.errors import exit_code_for
from cardkit.cli.main import cli
from cardkit.crypto import Alg
from cardkit.keys.encrypted import EncryptedKeystore, KdfParams
from cardkit.keys.store import Usage
from cardkit.profiles.synthetic import SSC_FIELDS, csv_text, ssc_people
from cardkit.virtual.image import load_image

ROOT = Path(__file__).resolve().parents[1]
KEYS = str(ROOT / "keys/test/ssc.toml")
CARDKIT = str(Path(sys.executable).with_name("cardkit"))
PASS = "correct horse battery staple"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CARDKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CARDKIT_PLAN_PASSPHRASE", PASS)
    return tmp_path / "home"


def source(tmp_path: Path, n: int, *, bad_line: int | None = None) -> tuple[Path, list[dict[str, str]]]:
    rows = list(ssc_people(n, seed=21))
    if bad_line is not None:
        rows[bad_line - 2]["birth_date"] = "20230230"
    path = tmp_path / "people.csv"
    path.write_text(csv_text(rows, SSC_FIELDS), encoding="utf-8")
    return path, rows


def invoke(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def code(res: Result) -> int:
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return exit_code_for(res.exception)
    return res.exit_code


def text(res: Result) -> str:
    return res.output + (str(res.exception) if res.exception else "")


def run_args(plan: Path, out: Path, *extra: str | Path) -> list[str | Path]:
    return ["plan", "run", plan, "--profile", "ssc", "--keys", KEYS, "--allow-test-keys", "--out", out,
            "--station", "t1", *extra]


def no_personal_data(output: str, rows: list[dict[str, str]]) -> None:
    for row in rows:
        assert row["citizen_id"] not in output and row["name"] not in output


def test_help_of_every_command_has_an_example() -> None:
    for cmd in (["plan"], ["plan", "prepare"], ["plan", "show"], ["plan", "run"]):
        res = invoke(*cmd, "--help")
        assert res.exit_code == 0, res.output
        assert "Example" in res.output and "cardkit plan " in res.output, cmd


def test_prepare_show_run_in_two_sittings(tmp_path: Path) -> None:
    src, rows = source(tmp_path, 6)
    plan, out = tmp_path / "people.plan", tmp_path / "out"
    res = invoke("plan", "prepare", src, "--profile", "ssc", "--out", plan)
    assert code(res) == 0, text(res)
    assert "6 records of people.csv for ssc (sm4)" in res.output
    assert stat.S_IMODE(plan.stat().st_mode) == 0o600
    shown = invoke("plan", "show", plan)
    assert code(shown) == 0 and "6 records for profile ssc" in shown.output and "not authenticated" in shown.output
    checked = invoke("--json", "plan", "show", plan, "--check")
    doc = json.loads(checked.output)
    assert doc["authenticated"] is True and doc["records"] == 6 and doc["protection"] == "passphrase"
    first = invoke(*run_args(plan, out, "--count", "2"))
    assert code(first) == 0, text(first)
    assert "4 record(s) pending" in first.output
    second = invoke(*run_args(plan, out))
    assert code(second) == 0, text(second)
    assert "continuing in batch" in second.output and "Reconciles      YES" in second.output
    for res in (res, shown, checked, first, second):
        no_personal_data(text(res), rows)
    batch_id = f"people-{doc['plan_id'][:8]}"
    with Ledger.open(f"sqlite:///{out}/ledger.db") as ledger:
        status = ledger.status(batch_id)
        cards = ledger.cards(batch_id)
    assert status["done"] == 6 and status["pending"] == 0
    assert len(cards) == 6 and {c.state for c in cards} == {"verified"}  # exactly once, nothing remade
    images = sorted((out / "cards").glob("*.json"))
    assert len(images) == 6
    # the cards hold what the records say: the card-holder name record of EF06 on every card, in GBK
    names = {row["name"].encode("gbk") for row in rows}
    found = set()
    for image in images:
        card = load_image(image)
        for node in card.files():
            for rec in getattr(node, "records", []) or []:
                if rec[:1] == b"\x09":
                    found.add(bytes(rec[2:2 + rec[1]]).rstrip(b"\x00 "))
    assert {n for n in found if n in names} == names
    again = invoke(*run_args(plan, out))
    assert code(again) == 0 and len(list((out / "cards").glob("*.json"))) == 6  # a third run issues nothing


def test_prepare_reports_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    src, rows = source(tmp_path, 5, bad_line=4)
    plan = tmp_path / "p.plan"
    res = invoke("plan", "prepare", src, "--profile", "ssc", "--out", plan)
    assert code(res) == 6
    assert "line 4, field 'birth_date'" in res.output and "no plan was written" in text(res)
    assert not plan.exists() and sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["people.csv"]
    no_personal_data(text(res), rows)


def test_run_refuses_a_plan_for_a_changed_profile(tmp_path: Path) -> None:
    src, _ = source(tmp_path, 2)
    profile = tmp_path / "ssc"
    shutil.copytree(ROOT / "applets/ssc", profile)
    plan = tmp_path / "p.plan"
    assert code(invoke("plan", "prepare", src, "--profile", profile, "--out", plan)) == 0
    with (profile / "profile.toml").open("a", encoding="utf-8") as fh:
        fh.write("\n# changed\n")
    res = invoke("plan", "run", plan, "--profile", profile, "--keys", KEYS, "--allow-test-keys", "--out",
                 tmp_path / "out")
    assert code(res) == 6 and "another version of profile 'ssc'" in text(res)
    res = invoke(*run_args(plan, tmp_path / "out2", "--algorithm", "3des"))
    assert code(res) == 6 and "prepared with algorithm sm4" in text(res)


def test_a_tampered_plan_writes_no_card(tmp_path: Path) -> None:
    src, _ = source(tmp_path, 4)
    plan, out = tmp_path / "p.plan", tmp_path / "out"
    assert code(invoke("plan", "prepare", src, "--profile", "ssc", "--out", plan)) == 0
    lines = plan.read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[4])
    ct = bytearray(base64.b64decode(rec["ct"]))
    ct[-1] ^= 1
    rec["ct"] = base64.b64encode(bytes(ct)).decode()
    plan.write_bytes(b"".join([*lines[:4], json.dumps(rec).encode() + b"\n"]))
    res = invoke(*run_args(plan, out))
    assert code(res) == 8 and "record 4 (line 5 of p.plan) does not authenticate" in text(res)
    assert not list((out / "cards").glob("*.json"))
    with Ledger.open(f"sqlite:///{out}/ledger.db") as ledger:
        assert ledger.batches() == []  # loading is all or nothing
    assert code(invoke("plan", "show", plan, "--check")) == 8


def test_wrong_and_mismatched_passphrases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = source(tmp_path, 2)
    plan = tmp_path / "p.plan"
    assert code(invoke("plan", "prepare", src, "--profile", "ssc", "--out", plan)) == 0
    monkeypatch.setenv("CARDKIT_PLAN_PASSPHRASE", "another passphrase entirely")
    res = invoke(*run_args(plan, tmp_path / "out"))
    assert code(res) == 7 and "wrong plan passphrase" in text(res)
    monkeypatch.delenv("CARDKIT_PLAN_PASSPHRASE")
    res = invoke("plan", "prepare", src, "--profile", "ssc", "--out", tmp_path / "q.plan",
                 input="first passphrase!\nsecond passphrase\n")
    assert code(res) == 7 and "differ" in text(res) and not (tmp_path / "q.plan").exists()
    res = invoke("plan", "show", plan, "--check", input=f"{PASS}\n")
    assert code(res) == 0 and "authenticated: header and 2 records" in res.output
    assert PASS not in res.output


def test_kek_in_an_encrypted_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARDKIT_PLAN_PASSPHRASE")
    monkeypatch.setenv("CARDKIT_KEYSTORE_PASSPHRASE", "store passphrase!")
    store = EncryptedKeystore.create(tmp_path / "b.cks", "store passphrase!", kdf=KdfParams.weak_for_tests(),
                                     allow_weak_kdf=True)
    kcv = store.generate("plan-kek", Alg.AES, usage=Usage.KEK).kcv
    src, _ = source(tmp_path, 3)
    plan, kek = tmp_path / "p.plan", f"store:{tmp_path / 'b.cks'}#plan-kek"
    res = invoke("plan", "prepare", src, "--profile", "ssc", "--out", plan, "--kek", kek)
    assert code(res) == 0 and f"wrapped under KEK plan-kek@1 (KCV {kcv})" in res.output
    res = invoke(*run_args(plan, tmp_path / "out"))  # the TEST key file has no KEK
    assert code(res) == 2 and "give --kek with the KEK's URI" in text(res)
    res = invoke(*run_args(plan, tmp_path / "out", "--kek", kek))
    assert code(res) == 0, text(res)
    assert len(list((tmp_path / "out" / "cards").glob("*.json"))) == 3


def test_the_same_people_in_two_plans_are_not_issued_twice(tmp_path: Path) -> None:
    src, _ = source(tmp_path, 3)
    a, b = tmp_path / "a.plan", tmp_path / "b.plan"
    for plan in (a, b):
        assert code(invoke("plan", "prepare", src, "--profile", "ssc", "--out", plan)) == 0
    url = f"sqlite:///{tmp_path}/shared.db"
    assert code(invoke(*run_args(a, tmp_path / "oa", "--ledger", url))) == 0
    res = invoke(*run_args(b, tmp_path / "ob", "--ledger", url))
    assert code(res) == 6 and "same identity" in text(res)
    assert not list((tmp_path / "ob" / "cards").glob("*.json"))


def test_one_card_image_is_not_a_station(tmp_path: Path) -> None:
    src, _ = source(tmp_path, 1)
    plan = tmp_path / "p.plan"
    assert code(invoke("plan", "prepare", src, "--profile", "ssc", "--out", plan)) == 0
    res = invoke("--reader", f"virtual:{tmp_path / 'card.json'}", *run_args(plan, tmp_path / "out"))
    assert code(res) == 2 and "writes many cards" in text(res)


def test_a_run_cut_short_is_taken_up_again(tmp_path: Path) -> None:
    src, _ = source(tmp_path, 3)
    plan, out = tmp_path / "p.plan", tmp_path / "out"
    assert code(invoke("plan", "prepare", src, "--profile", "ssc", "--out", plan)) == 0
    assert code(invoke(*run_args(plan, out, "--count", "1"))) == 0
    url = f"sqlite:///{out}/ledger.db"
    with Ledger.open(url) as ledger:  # what a station that died mid-card leaves behind
        (info,) = ledger.batches()
        claim = ledger.claim(info.id, "t1", "virtual-0")
        assert claim is not None
        ledger.card_started(claim, bytes.fromhex("5EC0FFEE"))
    res = invoke(*run_args(plan, out))
    assert code(res) == 0, text(res)
    with Ledger.open(url) as ledger:
        cards = ledger.cards(info.id)
        assert ledger.status(info.id)["done"] == 3
    assert sorted(c.state for c in cards) == ["spoiled", "verified", "verified", "verified"]
    assert '"card.spoiled"' in (out / "journal.jsonl").read_text()


def test_a_card_pulled_mid_write_is_spoiled_and_its_record_remade(tmp_path: Path) -> None:
    from cardkit.batch.journal import verify_journal
    from cardkit.batch.pseudonym import Pseudonymizer
    from cardkit.batch.runner import BatchRunner, RunConfig, VirtualSlot, make_feeder
    from cardkit.cli.plan import _load, plan_records
    from cardkit.issuance.planstore import PassphraseProtection, PlanReader
    from cardkit.keys.store import TestKeyFile
    from cardkit.profiles.model import load_profile
    from cardkit.virtual.faults import remove_at

    src, _ = source(tmp_path, 2)
    plan = tmp_path / "p.plan"
    assert code(invoke("plan", "prepare", src, "--profile", "ssc", "--out", plan)) == 0
    profile, keys = load_profile(ROOT / "applets/ssc"), TestKeyFile(KEYS, allow_test_keys=True)
    handed: list[Any] = []

    def on_card(card: Any) -> None:
        handed.append(card)
        if len(handed) == 1:
            remove_at(card, 12, seed=1)  # the first card is pulled at its 12th APDU

    slot = VirtualSlot("virtual-0", make_feeder(profile, keys, tmp_path / "feeder"), on_card=on_card)
    url, out = f"sqlite:///{tmp_path}/l.db", tmp_path / "out"
    with PlanReader.open(plan, PassphraseProtection(PASS), profile=profile) as reader:
        with Ledger.open(url) as ledger:
            assert _load(ledger, reader, Pseudonymizer(b"k" * 32), "B", profile, 2)
        cfg = RunConfig(url, "B", "t1", out, facts={"plan": reader.header.plan_id})
        result = BatchRunner(cfg, profile, keys, [slot], prepare=plan_records(reader, "B")).run()
    with Ledger.open(url) as ledger:
        cards = ledger.cards("B")
    assert (result.verified, result.failed, result.rejected) == (2, 1, 0)
    assert sorted(c.state for c in cards) == ["spoiled", "verified", "verified"]
    # the runner takes a card before it claims a record: a last blank card may be handed and left unwritten
    assert [c.serial for c in handed[:3]] == sorted(c.chip_serial for c in cards) and len(handed) <= 4
    assert len(list((out / "cards" / "spoiled").glob("*.json"))) == 1
    assert verify_journal(out / "journal.jsonl").ok
    plan_id = reader.header.plan_id
    lines = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert all(e["plan"] == plan_id for e in lines if e["event"].startswith(("card.", "station.")))
    assert all(c.manifest is not None and c.manifest["plan"] == plan_id for c in cards if c.state == "verified")


def test_a_batch_not_loaded_from_a_plan_is_refused_by_the_plan_reader(tmp_path: Path) -> None:
    from cardkit.batch.ledger_model import Claim
    from cardkit.cli.plan import plan_records
    from cardkit.issuance.planstore import PassphraseProtection, PlanError, PlanReader
    from cardkit.profiles.model import load_profile

    src, _ = source(tmp_path, 1)
    plan = tmp_path / "p.plan"
    assert code(invoke("plan", "prepare", src, "--profile", "ssc", "--out", plan)) == 0
    with PlanReader.open(plan, PassphraseProtection(PASS), profile=load_profile(ROOT / "applets/ssc")) as reader:
        reader.verify()
        get = plan_records(reader, "B")
        claim = Claim("B", 1, 2, 1, "t1", "virtual-0", "p", {"citizen_id": "x"}, claimed_at=0.0)
        with pytest.raises(PlanError, match="was not loaded from a plan"):
            get(claim)
        assert get(dataclasses.replace(claim, fields={"plan_seq": "1"})).identity
        with pytest.raises(PlanError, match="has no record 2"):
            get(dataclasses.replace(claim, fields={"plan_seq": "2"}))


def test_plan_run_on_four_virtual_readers_with_count_and_resume(tmp_path: Path) -> None:
    src, rows = source(tmp_path, 12)
    plan, out = tmp_path / "p.plan", tmp_path / "out"
    assert code(invoke("plan", "prepare", src, "--profile", "ssc", "--out", plan)) == 0
    url = f"sqlite:///{out}/ledger.db"
    # a run cut short by --count on 4 readers: exactly 5 cards, no more (the readers race for the last claims)
    first = invoke(*run_args(plan, out, "--readers", "virtual:4", "--count", "5"))
    assert code(first) == 0, text(first)
    assert "4 reader(s)" in first.output and "7 record(s) pending" in first.output
    assert "run the same `cardkit plan run` again" in first.output
    with Ledger.open(url) as ledger:
        (info,) = ledger.batches()
        assert ledger.status(info.id)["done"] == 5 and len(ledger.cards(info.id)) == 5
    # resume: the rest, on all four readers
    second = invoke("--json", *run_args(plan, out, "--readers", "virtual:4"))
    assert code(second) == 0, text(second)
    doc = json.loads(second.stdout[second.stdout.index("{"):])
    assert doc["reconciliation"]["reconciles"] is True
    assert doc["records"]["done"] == 12 and doc["records"]["rejected"] == 0
    with Ledger.open(url) as ledger:
        cards = ledger.cards(info.id)
        records = list(ledger.records(info.id))
        assert ledger.batch(info.id).state == "finished"
    assert len(cards) == 12 and {c.state for c in cards} == {"verified"}
    assert {c.seq for c in cards} == {r.seq for r in records}  # every record exactly once
    # which readers got cards is up to the scheduler
    assert {c.reader for c in cards} <= {f"virtual-{i}" for i in range(4)}
    assert {p.stem for p in (out / "cards").glob("*.json")} == {c.chip_serial.hex().upper() for c in cards}
    # a third run issues nothing
    third = invoke(*run_args(plan, out, "--readers", "virtual:4"))
    assert code(third) == 0 and "Reconciles      YES" in third.output
    with Ledger.open(url) as ledger:
        assert len(ledger.cards(info.id)) == 12
    assert len(list((out / "cards").glob("*.json"))) == 12
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "card.verified" for e in journal) == 12
    for res in (first, second, third):
        no_personal_data(text(res), rows)
    bad = invoke(*run_args(plan, out, "--readers", "virtual:0"))
    assert code(bad) == 2 and "virtual:N takes N = 1..256" in text(bad)


# ------------------------------------------------------------------------------------------- PC/SC
@pytest.mark.pcsc
def test_run_on_a_pcsc_reader_takes_cards_one_by_one_and_refuses_an_issued_one(tmp_path: Path, pcscd: Any,
                                                                               vpcd_card: Any) -> None:
    from cardkit.batch.runner import make_feeder
    from cardkit.keys.store import TestKeyFile
    from cardkit.profiles.model import load_profile
    from cardkit.transport.pcsc import wait_for_removal
    from cardkit.transport.vpcd import VpcdCardServer
    from cardkit.virtual.isoauth import mutual_auth_handler

    src, _ = source(tmp_path, 2)
    plan, out = tmp_path / "p.plan", tmp_path / "out"
    assert code(invoke("plan", "prepare", src, "--profile", "ssc", "--out", plan)) == 0
    feeder = make_feeder(load_profile(ROOT / "applets/ssc"), TestKeyFile(KEYS, allow_test_keys=True),
                         tmp_path / "feeder")
    blank = feeder.take(2)
    for card in blank:
        card.mutual_auth_handler = mutual_auth_handler
    reader, first = vpcd_card(blank[0])
    results: list[Result] = []
    thread = threading.Thread(target=lambda: results.append(invoke("--reader", reader, *run_args(plan, out))))
    thread.start()
    servers = []

    def wait_for(what: str) -> None:
        deadline = time.monotonic() + 20
        while not ((out / "journal.jsonl").exists() and (out / "journal.jsonl").read_text().count(what)):
            assert time.monotonic() < deadline and thread.is_alive(), results and text(results[0])
            time.sleep(0.05)

    try:
        wait_for('"card.verified"')
        first.stop()  # the operator takes the card out ...
        wait_for_removal(reader, 10)  # (as PC/SC sees it: a swap faster than pcscd polls is no removal)
        servers.append(VpcdCardServer(blank[0], port=first.port).start())  # ... and puts it back by mistake
        wait_for('"card.refused"')
        servers[-1].stop()
        wait_for_removal(reader, 10)
        servers.append(VpcdCardServer(blank[1], port=first.port).start())
        deadline = time.monotonic() + 60
        while (out / "journal.jsonl").read_text().count('"card.verified"') < 2:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        servers[-1].stop()
        thread.join(30)
        assert not thread.is_alive()
    finally:
        for server in servers:
            server.stop()
        thread.join(10)
    assert code(results[0]) == 0, text(results[0])
    with Ledger.open(f"sqlite:///{out}/ledger.db") as ledger:
        (info,) = ledger.batches()
        cards = ledger.cards(info.id)
    assert sorted(c.chip_serial for c in cards) == sorted(c.serial for c in blank)
    assert {c.state for c in cards} == {"verified"}


# ------------------------------------------------------------------------------------------- console script
def cardkit(*args: str | Path, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CARDKIT, *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_console_script_end_to_end(tmp_path: Path) -> None:
    src, rows = source(tmp_path, 3)
    env = {**os.environ, "CARDKIT_HOME": str(tmp_path / "home"), "CARDKIT_PLAN_PASSPHRASE": PASS}
    plan = tmp_path / "p.plan"
    outputs = [cardkit("plan", "prepare", src, "--profile", "ssc", "--out", plan, env=env),
               cardkit("--json", "plan", "show", plan, "--check", env=env),
               cardkit("plan", "run", plan, "--profile", "ssc", "--keys", KEYS, "--allow-test-keys", "--out",
                       tmp_path / "out", env=env)]
    assert json.loads(outputs[1].stdout)["authenticated"] is True
    assert "Reconciles      YES" in outputs[2].stdout
    for proc in outputs:
        no_personal_data(proc.stdout + proc.stderr, rows)
    wrong = cardkit("plan", "show", plan, "--check", env={**env, "CARDKIT_PLAN_PASSPHRASE": "nope nope nope"},
                    ok=False)
    assert wrong.returncode == 7 and wrong.stderr.strip().splitlines()[-1] == "error: wrong plan passphrase"


SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")


@pytest.mark.hsm
def test_console_script_with_a_kek_in_softhsm(tmp_path: Path) -> None:
    module = next((m for m in SOFTHSM_MODULES if Path(m).exists()), None)
    missing = shutil.which("softhsm2-util") is None or module is None
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        missing = True
    if missing:
        if os.environ.get("CI"):
            pytest.fail("CI is set but SoftHSM2 / python-pkcs11 is missing")
        pytest.skip("SoftHSM2 or python-pkcs11 is not installed")
    assert module is not None
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), "CARDKIT_PKCS11_MODULE": module, "CARDKIT_PKCS11_PIN": "4711",
           "CARDKIT_HOME": str(tmp_path / "home")}
    env.pop("CARDKIT_PLAN_PASSPHRASE", None)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "plans", "--pin", "4711", "--so-pin",
                    "0815"], check=True, capture_output=True, env=env, timeout=60)
    kek = "pkcs11:token=plans;object=plan-kek"
    cardkit("keys", "generate", "plan-kek", "--alg", "aes", "--usage", "kek", "--keys", "pkcs11:token=plans",
            "--operator", "alice", env=env)
    src, rows = source(tmp_path, 3)
    plan = tmp_path / "p.plan"
    made = cardkit("plan", "prepare", src, "--profile", "ssc", "--out", plan, "--kek", kek, env=env)
    assert "wrapped under KEK plan-kek@1" in made.stdout and "pkcs11:token=plans" in made.stdout
    run = cardkit("plan", "run", plan, "--profile", "ssc", "--keys", KEYS, "--allow-test-keys", "--kek", kek,
                  "--out", tmp_path / "out", env=env)
    assert "Reconciles      YES" in run.stdout
    no_personal_data(made.stdout + run.stdout + run.stderr, rows)
    # the wrapped data key changed: the token refuses to unwrap it
    lines = plan.read_bytes().splitlines(keepends=True)
    head = json.loads(lines[0])
    wrapped = bytearray(base64.b64decode(head["data_key"]["wrapped"]))
    wrapped[3] ^= 0x40
    head["data_key"]["wrapped"] = base64.b64encode(bytes(wrapped)).decode()
    plan.write_bytes(json.dumps(head).encode() + b"\n" + b"".join(lines[1:]))
    bad = cardkit("plan", "show", plan, "--check", "--kek", kek, env=env, ok=False)
    assert bad.returncode == 8 and "does not unwrap under plan-kek@1" in bad.stderr
