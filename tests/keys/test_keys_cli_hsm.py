"""``cardkit keys`` on a SoftHSM2 token: ceremonies through the CLI (CliRunner) and the real console script
in a subprocess (PIN from the environment, never argv; exit code 7 on a wrong PIN)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from cardkit.cli.errors import EXIT_KEYSTORE
from cardkit.cli.main import cli
from cardkit.crypto import KcvMethod, kcv
from cardkit.errors import KeystoreError

if TYPE_CHECKING:
    from tests.keys.conftest import SoftHsm

pytestmark = pytest.mark.hsm

URI = "pkcs11:token=ck-cli"
CONSOLE = Path(sys.executable).with_name("cardkit")


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def ok(*args: str, input: str | None = None) -> Result:
    r = run(*args, input=input)
    assert r.exit_code == 0, (r.output, r.exception)
    return r


@pytest.fixture
def cli_env(hsm_env: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    monkeypatch.setenv("CARDKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CARDKIT_OPERATOR", "carol")
    monkeypatch.setenv("CARDKIT_KEYS", URI)
    return hsm_env


def test_ceremonies_on_the_token(cli_env: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c1, c2 = "0123456789ABCDEFFEDCBA9876543210", "89ABCDEF01234567F0E1D2C3B4A59687"
    key = bytes(a ^ b for a, b in zip(bytes.fromhex(c1), bytes.fromhex(c2), strict=True))
    want = kcv(key, KcvMethod.DES3_ZEROS).hex().upper()
    r = ok("keys", "import", "zmk", "--alg", "3des", "--components", "2", "--custodian", "alice", "--custodian", "bob",
           input=f"{c1}\ny\n{c2}\ny\n")
    assert f"zmk v1 3des (128 bits, master): KCV {want}" in r.output
    assert c1 not in r.output and key.hex().upper() not in r.output
    ok("keys", "generate", "kek", "--alg", "aes", "--usage", "kek")
    ok("keys", "generate", "transport", "--alg", "3des", "--extractable")
    out = tmp_path / "transport.json"
    ok("keys", "wrap", "transport", "--alg", "3des", "--kek", "kek", "--out", str(out), "--mechanism", "aes-kw")
    ok("keys", "unwrap", str(out), "--kek", "kek", "--name", "transport-copy")
    r = run("keys", "wrap", "zmk", "--alg", "3des", "--kek", "kek", "--out", str(tmp_path / "zmk.json"))
    assert isinstance(r.exception, KeystoreError) and "not extractable" in str(r.exception)
    assert not (tmp_path / "zmk.json").exists()
    rows = json.loads(ok("--json", "keys", "list").output)
    names = {r["name"]: r for r in rows}
    assert names["zmk"]["kcv"] == want and names["zmk"]["custodians"] == ["alice", "bob"]
    assert names["transport-copy"]["kcv"] == names["transport"]["kcv"] and not names["transport-copy"]["extractable"]
    ok("keys", "generate", "station", "--alg", "ecdsa-p256")
    assert "BEGIN PUBLIC KEY" in ok("keys", "public", "station").output
    r = run("keys", "generate", "sm4-master", "--alg", "sm4")
    assert "cannot hold SM4 keys" in str(r.exception)
    ok("keys", "delete", "transport-copy", "--alg", "3des", "--yes")
    assert "transport-copy" not in ok("keys", "list").output
    journal = (tmp_path / "home" / "keys-journal.jsonl").read_text()
    assert '"custodian":"alice"' in journal and c1 not in journal and key.hex() not in journal.lower()


def test_derive_and_identify_with_token_masters(cli_env: SoftHsm) -> None:
    from cardkit.apdu import CommandApdu
    from cardkit.crypto import Alg, emv_cps
    from cardkit.keys.pkcs11 import Pkcs11Keystore
    from cardkit.sm.gp import Diversification, GpKeySet, diversify
    from cardkit.sm.scp02 import Scp02Card

    kmc = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
    ks = Pkcs11Keystore(cli_env.module, "ck-cli", cli_env.pin)
    if "bureau-kmc" not in {e.name for e in ks.entries()}:
        ks.import_key("bureau-kmc", Alg.DES3, kmc)
    ks.close()
    kdd, hc = bytes.fromhex("0000A1B2C3D4E5F60718"), bytes.fromhex("0102030405060708")
    r = ok("keys", "derive", "--scheme", "emv", "--keys", URI, "--master", "bureau-kmc", "--kdd", kdd.hex(),
           "--key-id", "2")
    assert r.output.strip() == f"MAC (02): KCV {kcv(emv_cps(kmc, kdd, 2), KcvMethod.DES3_ZEROS).hex().upper()}"
    card_keys = diversify(GpKeySet.single(kmc, alg=Alg.DES3), Diversification.EMV, kdd)
    resp = Scp02Card(card_keys, 0x0010, kdd=kdd).initialize_update(CommandApdu(0x80, 0x50, 0, 0, hc, le=256))
    r = ok("keys", "identify", "--response", resp.to_bytes().hex(), "--host-challenge", hc.hex(), "--candidate",
           "bureau-kmc")
    assert "'bureau-kmc (3des)' with emv diversification" in r.output


@pytest.mark.skipif(not CONSOLE.exists(), reason="the cardkit console script is not installed in this venv")
def test_console_script_with_the_token(softhsm: SoftHsm, tmp_path: Path) -> None:
    env = {**softhsm.env(), "CARDKIT_HOME": str(tmp_path), "CARDKIT_OPERATOR": "erin",
           "CARDKIT_PKCS11_PIN": softhsm.pin}
    p = subprocess.run([str(CONSOLE), "keys", "generate", "e2e-key", "--alg", "aes", "--bits", "256", "--rotate",
                        "--keys", "pkcs11:token=ck-cli"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "e2e-key v" in p.stdout and "(256 bits, master)" in p.stdout
    p = subprocess.run([str(CONSOLE), "keys", "list", "--keys", "pkcs11:token=ck-cli"], capture_output=True,
                       text=True, env={**env, "CARDKIT_PKCS11_PIN": "0000-not-it"}, timeout=60)
    assert p.returncode == EXIT_KEYSTORE and p.stderr.strip() == "error: wrong PIN for token 'ck-cli'"
    assert softhsm.pin not in p.stderr + p.stdout and "0000-not-it" not in p.stderr
    p = subprocess.run([str(CONSOLE), "keys", "list", "--keys", "pkcs11:token=nope"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == EXIT_KEYSTORE and "no token labelled 'nope'" in p.stderr
