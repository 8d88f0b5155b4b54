"""``cardkit keys`` with Click's CliRunner on encrypted stores and TEST key files, and end to end through the
real ``cardkit`` console script. Secrets come from the environment or prompts, never argv, and never show."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cardkit.cli.errors import EXIT_KEYSTORE, exit_code_for
from cardkit.cli.main import cli
from cardkit.crypto import Alg, emv_cps
from cardkit.errors import KeystoreError
from cardkit.keys.encrypted import EncryptedKeystore, KdfParams
from cardkit.readers import TEST_KEYS
from cardkit.sm.gp import Diversification, GpKeySet, diversify

PASS = "cli test passphrase 1"
GP_TEST_KEY = "404142434445464748494A4B4C4D4E4F"
C1 = "0123456789ABCDEFFEDCBA9876543210"
C2 = "89ABCDEF01234567F0E1D2C3B4A59687"
KEY = bytes(a ^ b for a, b in zip(bytes.fromhex(C1), bytes.fromhex(C2), strict=True))
CONSOLE = Path(sys.executable).with_name("cardkit")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("CARDKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CARDKIT_KEYSTORE_PASSPHRASE", PASS)
    monkeypatch.setenv("CARDKIT_OPERATOR", "carol")
    store = tmp_path / "b.cks"
    EncryptedKeystore.create(store, PASS, kdf=KdfParams.weak_for_tests(), allow_weak_kdf=True)
    monkeypatch.setenv("CARDKIT_KEYS", f"store:{store}")
    return {"store": str(store), "journal": str(tmp_path / "home" / "keys-journal.jsonl")}


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def ok(*args: str, input: str | None = None) -> Result:
    r = run(*args, input=input)
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def test_every_keys_command_has_help_with_an_example() -> None:
    from cardkit.cli.keys import keys

    assert "Examples:" in ok("keys", "--help").output
    for name in keys.commands:
        out = ok("keys", name, "--help").output
        assert "Example" in out, name


def test_init_creates_a_store_with_the_passphrase_asked_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARDKIT_KEYSTORE_PASSPHRASE", raising=False)
    path = tmp_path / "new.cks"
    r = run("keys", "init", "--keys", f"store:{path}", input="first passphrase!\nsecond passphrase\n")
    assert isinstance(r.exception, KeystoreError) and "differ; nothing was created" in str(r.exception)
    assert not path.exists()
    r = ok("keys", "init", "--keys", f"store:{path}", input="a good passphrase\na good passphrase\n")
    assert "created store:" in r.output and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "a good passphrase" not in r.output
    r = run("keys", "init", "--keys", "pkcs11:token=x")
    assert "softhsm2-util" in str(r.exception)


def test_generate_list_export_delete(env: dict[str, str]) -> None:
    r = ok("keys", "generate", "ssc-issuer", "--alg", "3des")
    assert "ssc-issuer v1 3des (128 bits, master): KCV" in r.output
    ok("keys", "generate", "bureau-kek", "--alg", "aes", "--usage", "kek")
    ok("keys", "generate", "station", "--alg", "ecdsa-p256")
    listing = ok("keys", "list").output
    assert "bureau-kek" in listing and "spki-sha256" in listing and "des3-zeros" in listing
    rows = json.loads(ok("--json", "keys", "list").output)
    assert {(r["name"], r["alg"], r["version"]) for r in rows} == {("ssc-issuer", "3des", 1), ("bureau-kek", "aes", 1),
                                                                   ("station", "ecdsa-p256", 1)}
    kcv = next(r["kcv"] for r in rows if r["name"] == "ssc-issuer")
    assert f"KCV {kcv} (des3-zeros)" in ok("keys", "export-kcv", "ssc-issuer").output
    cmac_kcv = next(r["kcvs"]["aes-cmac"] for r in rows if r["name"] == "bureau-kek")
    assert cmac_kcv in ok("keys", "export-kcv", "bureau-kek", "--method", "aes-cmac").output
    assert "BEGIN PUBLIC KEY" in ok("keys", "public", "station").output
    r = run("keys", "delete", "ssc-issuer", input="000000\n")
    assert isinstance(r.exception, KeystoreError) and "nothing deleted" in str(r.exception)
    ok("keys", "delete", "ssc-issuer", input=f"{kcv}\n")
    assert "ssc-issuer" not in ok("keys", "list").output
    events = [json.loads(x)["event"] for x in Path(env["journal"]).read_text().splitlines()]
    assert events == ["keys.generated"] * 3 + ["keys.kcv_exported"] * 2 + ["keys.delete.declined", "keys.deleted"]


def test_import_by_components_from_env_and_prompt(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    kcv1, kcv2 = (emv_kcv(bytes.fromhex(c)) for c in (C1, C2))
    monkeypatch.setenv("CARDKIT_KEY_COMPONENT_1", C1)
    monkeypatch.setenv("CARDKIT_KEY_COMPONENT_2", C2)
    r = ok("keys", "import", "zmk", "--alg", "3des", "--components", "2", "--custodian", "alice", "--custodian", "bob",
           "--component-kcv", kcv1, "--component-kcv", kcv2, "--expect-kcv", emv_kcv(KEY))
    assert f"component 1: KCV {kcv1}" in r.output and f"KCV {emv_kcv(KEY)}" in r.output
    for secret in (C1, C2, KEY.hex().upper()):
        assert secret not in r.output and secret.lower() not in r.output
    # interactively: the component typed (hidden), its KCV confirmed at the prompt
    monkeypatch.delenv("CARDKIT_KEY_COMPONENT_1")
    monkeypatch.delenv("CARDKIT_KEY_COMPONENT_2")
    r = ok("keys", "import", "zmk2", "--alg", "3des", "--components", "2", "--custodian", "alice", "--custodian",
           "bob", input=f"{C1}\ny\n{C2}\ny\n")
    assert C1 not in r.output and f"KCV {emv_kcv(KEY)}" in r.output
    r = run("keys", "import", "zmk3", "--alg", "3des", "--components", "2", "--custodian", "alice", "--custodian",
            "bob", input=f"{C1}\nn\n")
    assert "not confirmed by custodian alice" in str(r.exception)
    r = run("keys", "import", "zmk3", "--alg", "3des", "--components", "2", "--custodian", "alice",
            "--component-kcv", kcv1)
    assert r.exit_code == 2  # usage: --component-kcv once per component


def emv_kcv(v: bytes) -> str:
    from cardkit.crypto import KcvMethod, kcv

    return kcv(v, KcvMethod.DES3_ZEROS).hex().upper()


def test_wrap_and_unwrap_between_two_stores(env: dict[str, str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    kek = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"
    other = tmp_path / "other.cks"
    EncryptedKeystore.create(other, PASS, kdf=KdfParams.weak_for_tests(), allow_weak_kdf=True)
    for store in (env["store"], str(other)):
        monkeypatch.setenv("CARDKIT_KEY_COMPONENT_1", kek[:32] * 2)
        monkeypatch.setenv("CARDKIT_KEY_COMPONENT_2", bytes(a ^ b for a, b in zip(
            bytes.fromhex(kek[:32] * 2), bytes.fromhex(kek), strict=True)).hex())
        ok("keys", "import", "kek", "--alg", "aes", "--usage", "kek", "--components", "2", "--custodian", "a",
           "--custodian", "b", "--keys", f"store:{store}", input="y\ny\n")
    ok("keys", "generate", "transport", "--alg", "3des", "--extractable")
    out = tmp_path / "t.json"
    ok("keys", "wrap", "transport", "--alg", "3des", "--kek", "kek", "--out", str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    r = run("keys", "wrap", "transport", "--alg", "3des", "--kek", "kek", "--out", str(out))
    assert "refusing to overwrite" in str(r.exception)
    r = ok("keys", "unwrap", str(out), "--kek", "kek", "--keys", f"store:{other}")
    want = json.loads(out.read_text())["kcv"]
    assert f"KCV {want}" in r.output
    r = run("keys", "unwrap", str(tmp_path / "missing.json"), "--kek", "kek")
    assert "cannot read wrapped key file" in str(r.exception)


def test_kcv_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GP_KEY", GP_TEST_KEY)
    assert "KCV 8BAF47  method des3-zeros (default)" in ok("keys", "kcv", "--key-env", "GP_KEY", "--alg", "3des").output
    f = tmp_path / "k.hex"
    f.write_text("2B7E1516 28AED2A6 ABF71588 09CF4F3C\n")
    f.chmod(0o600)
    out = ok("keys", "kcv", "--key-file", str(f), "--alg", "aes").output
    assert "method aes-gp (default)" in out and "method aes-cmac" in out
    assert json.loads(ok("--json", "keys", "kcv", "--key-env", "GP_KEY", "--method", "des3-zeros").output) == \
        {"des3-zeros": "8BAF47"}
    assert run("keys", "kcv", "--alg", "aes").exit_code == 2  # the key never comes from argv
    assert run("keys", "kcv", "--key-env", "GP_KEY", "--method", "aes-gp", "--alg", "3des").exit_code == 2
    monkeypatch.setenv("GP_KEY", "40414243zz")
    r = run("keys", "kcv", "--key-env", "GP_KEY", "--alg", "3des")
    assert isinstance(r.exception, KeystoreError) and exit_code_for(r.exception) == EXIT_KEYSTORE
    assert "40414243zz" not in str(r.exception)


def test_derive_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMC", GP_TEST_KEY)
    kdd = "0000A1B2C3D4E5F60718"
    r = ok("keys", "derive", "--scheme", "emv", "--master-env", "KMC", "--kdd", kdd)
    for kid, label in ((1, "ENC"), (2, "MAC"), (3, "DEK")):
        assert f"{label} ({kid:02X}): KCV {emv_kcv(emv_cps(bytes.fromhex(GP_TEST_KEY), bytes.fromhex(kdd), kid))}" \
            in r.output
    out = tmp_path / "card-keys.txt"
    ok("keys", "derive", "--scheme", "emv", "--master-env", "KMC", "--kdd", kdd, "--key-id", "1", "--out", str(out))
    assert out.read_text() == f"ENC (01): {emv_cps(bytes.fromhex(GP_TEST_KEY), bytes.fromhex(kdd), 1).hex().upper()}\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # chain from a TEST key file master (kept in the keystore; KCV only)
    from cardkit.keys.store import TestKeyFile

    ks = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    levels = ["0000000000440300", "000000005EC0A1D2"]
    want = ks.derive("ssc-issuer", Alg.DES3, [bytes.fromhex(x) for x in levels]).kcv
    r = ok("keys", "derive", "--scheme", "chain", "--alg", "3des", "--keys", f"file:{TEST_KEYS}", "--allow-test-keys",
           "--master", "ssc-issuer", "--level", levels[0], "--level", levels[1])
    assert f"card key: KCV {want}" in r.output
    assert run("keys", "derive", "--scheme", "emv", "--master-env", "KMC").exit_code == 2  # no KDD
    assert run("keys", "derive", "--scheme", "chain", "--master-env", "KMC").exit_code == 2  # no --alg
    r = run("keys", "derive", "--scheme", "kdf3", "--alg", "3des", "--master-env", "KMC", "--kdd", kdd)
    assert r.exit_code == 2


def test_identify_command(env: dict[str, str], tmp_path: Path) -> None:
    from cardkit.apdu import CommandApdu
    from cardkit.sm.scp02 import Scp02Card

    kdd, hc = bytes.fromhex("0000A1B2C3D4E5F60718"), bytes.fromhex("0102030405060708")
    card_keys = diversify(GpKeySet.single(bytes.fromhex(GP_TEST_KEY), alg=Alg.DES3), Diversification.VISA2, kdd)
    resp = Scp02Card(card_keys, 0x0010, kdd=kdd).initialize_update(CommandApdu(0x80, 0x50, 0, 0, hc, le=256))
    store = EncryptedKeystore.open(env["store"], PASS)
    store.import_key("kmc", Alg.DES3, bytes.fromhex(GP_TEST_KEY))
    r = ok("keys", "identify", "--response", resp.to_bytes().hex(), "--host-challenge", hc.hex())
    assert "'kmc (3des)' with visa2 diversification" in r.output and GP_TEST_KEY not in r.output
    hits = json.loads(ok("--json", "keys", "identify", "--response", resp.to_bytes().hex(), "--host-challenge",
                         hc.hex()).output)
    assert hits[0]["scheme"] == "visa2" and hits[0]["card_kcvs"]["enc"] == card_keys.kcvs()["enc"].hex().upper()
    r = run("keys", "identify", "--response", resp.to_bytes().hex(), "--host-challenge", hc.hex(), "--keys",
            f"file:{TEST_KEYS}", "--allow-test-keys")
    assert r.exit_code != 0 and "no key set" in str(r.exception)


def test_keystore_errors_map_to_exit_code_7(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARDKIT_KEYSTORE_PASSPHRASE", "wrong passphrase")
    before = Path(env["store"]).read_bytes()
    r = run("keys", "generate", "x", "--alg", "aes")
    assert isinstance(r.exception, KeystoreError) and exit_code_for(r.exception) == EXIT_KEYSTORE
    assert "wrong passphrase for keystore" in str(r.exception) and "wrong passphrase\n" not in r.output
    assert Path(env["store"]).read_bytes() == before and not Path(env["journal"]).exists()
    r = run("keys", "list", "--keys", f"file:{TEST_KEYS}")
    assert "--allow-test-keys" in str(r.exception)
    monkeypatch.delenv("CARDKIT_OPERATOR")
    assert run("keys", "generate", "x", "--alg", "aes").exit_code == 2  # --operator is required


def _console(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CONSOLE), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(not CONSOLE.exists(), reason="the cardkit console script is not installed in this venv")
def test_console_script_end_to_end(tmp_path: Path) -> None:
    store = tmp_path / "e2e.cks"
    env = {**os.environ, "CARDKIT_HOME": str(tmp_path / "home"), "CARDKIT_KEYSTORE_PASSPHRASE": PASS,
           "CARDKIT_OPERATOR": "erin", "KMC": GP_TEST_KEY}
    p = _console(["keys", "init", "--keys", f"store:{store}"], env)
    assert p.returncode == 0, p.stderr
    p = _console(["keys", "generate", "ssc-issuer", "--alg", "3des", "--keys", f"store:{store}"], env)
    assert p.returncode == 0 and "KCV" in p.stdout
    p = _console(["keys", "kcv", "--key-env", "KMC", "--alg", "3des"], env)
    assert p.stdout.strip() == "KCV 8BAF47  method des3-zeros (default)"
    p = _console(["keys", "list", "--keys", f"store:{store}"], {**env, "CARDKIT_KEYSTORE_PASSPHRASE": "nope nope"})
    assert p.returncode == EXIT_KEYSTORE
    assert p.stderr.strip() == "error: wrong passphrase for keystore e2e.cks (or its KDF parameters were altered)"
    assert PASS not in p.stderr + p.stdout and "nope nope" not in p.stderr
