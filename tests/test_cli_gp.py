"""``cardkit gp`` against virtual cards with an ISD served through pcscd/vpcd (CliRunner and the console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cardkit.cli.errors import exit_code_for
from cardkit.cli.main import cli
from cardkit.commands import gp
from cardkit.crypto import Alg
from cardkit.issuance.gp import open_gp_channel
from cardkit.session import CardSession
from cardkit.sm.gp import GpKeySet
from cardkit.transport.virtual import VirtualTransport
from cardkit.transport.vpcd import VpcdCardServer
from cardkit.virtual.card import VirtualCard
from cardkit.virtual.gp import CARDKIT_LOAD_FILE, CARDKIT_MODULE, IssuerSecurityDomain, install_isd

VpcdCardFactory = Callable[..., tuple[str, VpcdCardServer]]
GP_TEST = "404142434445464748494A4B4C4D4E4F"  # the well-known GP test key: TEST ONLY
APP = "F0434B495444530101"
KEYS = (("gp-transport", "aes", GP_TEST), ("gp-issuer", "aes", "11" * 16), ("gp-wrong", "aes", "00" * 16),
        ("gp-transport", "3des", GP_TEST))


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "gp-test.toml"
    path.write_text("test_only = true\n" + "".join(f'[[key]]\nname = "{n}"\nalg = "{a}"\nvalue = "{v}"\n'
                                                  for n, a, v in KEYS), encoding="utf-8")
    return path


def card_with_isd(serial: bytes, *, app: bool = False, alg: Alg = Alg.AES) -> tuple[VirtualCard, IssuerSecurityDomain]:
    card = VirtualCard(serial, seed=3)
    keys = GpKeySet.single(bytes.fromhex(GP_TEST), alg=alg, version=1)
    isd = install_isd(card, keys, 3 if alg is Alg.AES else 2)
    if app:
        session = CardSession(VirtualTransport(card))
        open_gp_channel(session, keys)
        session.send(gp.install_for_install(CARDKIT_LOAD_FILE, CARDKIT_MODULE, bytes.fromhex(APP)))
    return card, isd


def run(reader: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--reader", reader, *args])


def code(result: Result) -> int:
    """The exit code ``cardkit`` (cli.main.main) gives for the error the command raised."""
    assert result.exception is not None, result.output
    return exit_code_for(result.exception)


def keyed(keyfile: Path, keyset: str = "gp-transport") -> list[str]:
    return ["--keys", str(keyfile), "--allow-test-keys", "--keyset", keyset]


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.output)


def test_help_has_examples() -> None:
    for args in (["gp"], ["gp", "info"], ["gp", "list"], ["gp", "put-key"], ["gp", "set-status"],
                 ["gp", "store-data"]):
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, args


def test_usage_errors_need_no_card(keyfile: Path) -> None:
    result = CliRunner().invoke(cli, ["gp", "list", *keyed(keyfile), "--level", "31"])
    assert result.exit_code != 0 and "31" in str(result.exception)
    result = CliRunner().invoke(cli, ["gp", "set-status", "terminated", *keyed(keyfile)])
    assert result.exit_code == 2 and "--yes" in result.output


@pytest.mark.pcsc
def test_info_without_keys(vpcd_card: VpcdCardFactory) -> None:
    card, _ = card_with_isd(b"\xC0\x00\x02\x01")
    reader, _ = vpcd_card(card)
    out = as_json(run(reader, "--json", "gp", "info"))
    assert out["life_cycle"] == "01" and out["card_data"] == {"gp_version": "2.3.1", "scp": ["03/70"]}
    assert out["cplc"]["ic_serial_number"] == "C0000201"
    assert [k["version"] for k in out["key_info"]] == ["01", "01", "01"]
    assert out["sequence_counter"] == "000000" and "6A88" in out["iin"]["error"]
    text = run(reader, "gp", "info")
    assert "life cycle 01 OP_READY" in text.output and "SCP03 i=70" in text.output


@pytest.mark.pcsc
def test_list_put_key_and_set_status(vpcd_card: VpcdCardFactory, keyfile: Path) -> None:
    card, isd = card_with_isd(b"\xC0\x00\x02\x02", app=True)
    reader, _ = vpcd_card(card)
    out = as_json(run(reader, "--json", "gp", "list", *keyed(keyfile)))
    assert out["scp"] == "03" and out["level"] == "33"
    assert out["isd"][0]["life_cycle_name"] == "OP_READY" and "Card Lock" in out["isd"][0]["privilege_names"]
    assert [a["aid"] for a in out["applications"]] == [APP]
    assert out["load_files"][0]["modules"] == [CARDKIT_MODULE.hex().upper()]
    put = as_json(run(reader, "--json", "gp", "put-key", *keyed(keyfile), "--new-keyset", "gp-issuer",
                      "--new-version", "02", "--replace-version", "01"))
    assert put["version"] == "02" and put["replaced"] == "01" and len(put["kcv"]["enc"]) == 6
    assert sorted(isd.key_sets) == [2]
    issuer = [*keyed(keyfile, "gp-issuer"), "--key-version", "02"]
    assert run(reader, "gp", "set-status", "secured", *issuer).exit_code == 0
    assert isd.life_cycle == 0x0F
    assert as_json(run(reader, "--json", "gp", "set-status", "lock", "--app", APP, *issuer))["state"] == "lock"
    assert run(reader, "gp", "set-status", "card-locked", *issuer).exit_code == 0
    assert as_json(run(reader, "--json", "gp", "info"))["life_cycle"] == "7F"
    result = run(reader, "gp", "set-status", "initialized", *issuer)
    assert code(result) == 3 and "6985" in str(result.exception)  # card refuses: 6985


@pytest.mark.pcsc
def test_key_errors_map_to_exit_codes(vpcd_card: VpcdCardFactory, keyfile: Path) -> None:
    card, isd = card_with_isd(b"\xC0\x00\x02\x03")
    reader, _ = vpcd_card(card)
    result = run(reader, "gp", "list", "--keys", str(keyfile), "--keyset", "gp-transport")
    assert code(result) == 7 and "--allow-test-keys" in str(result.exception)
    result = run(reader, "gp", "list", *keyed(keyfile, "gp-nothing"))
    assert code(result) == 7 and "gp-nothing" in str(result.exception)
    result = run(reader, "gp", "list", *keyed(keyfile, "gp-wrong"))
    assert code(result) == 5 and "cryptogram" in str(result.exception)
    assert GP_TEST not in str(result.exception) and "00" * 16 not in str(result.exception)
    assert isd.key_sets[1].tries_left == isd.max_tries - 1


@pytest.mark.pcsc
def test_store_data(vpcd_card: VpcdCardFactory, keyfile: Path, tmp_path: Path) -> None:
    card, isd = card_with_isd(b"\xC0\x00\x02\x04", app=True)
    reader, _ = vpcd_card(card)
    data = tmp_path / "dgis.json"
    data.write_text(json.dumps({"0101": "48656C6C6F", "8010": "0331323334"}), encoding="utf-8")
    os.chmod(data, 0o600)
    out = as_json(run(reader, "--json", "gp", "store-data", "--app", APP, "--data", str(data), "--sensitive",
                      "8010", *keyed(keyfile)))
    assert out == {"application": APP, "dgis": 2, "sensitive": 1, "blocks": 2}
    app = isd.apps[bytes.fromhex(APP)]
    assert app.data == {0x0101: b"Hello", 0x8010: b"\x031234"} and app.sensitive == {0x8010}
    bad = run(reader, "gp", "store-data", "--app", APP, "--data", str(data), "--sensitive", "9999", *keyed(keyfile))
    assert bad.exit_code == 2 and "9999" in bad.output


@pytest.mark.pcsc
def test_console_script_end_to_end(vpcd_card: VpcdCardFactory, keyfile: Path) -> None:
    card, _isd = card_with_isd(b"\xC0\x00\x02\x05", alg=Alg.DES3)
    reader, _ = vpcd_card(card)
    exe = Path(sys.executable).with_name("cardkit")
    env = {**os.environ, "CARDKIT_HOME": str(keyfile.parent / "home")}
    info = subprocess.run([str(exe), "--reader", reader, "--json", "gp", "info"], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["card_data"]["scp"] == ["02/55"]
    listed = subprocess.run([str(exe), "--reader", reader, "gp", "list", *keyed(keyfile)], capture_output=True,
                            text=True, env=env, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    assert "secure channel SCP02 level 03" in listed.stdout and "A000000151000000  01 OP_READY" in listed.stdout
    refused = subprocess.run([str(exe), "--reader", reader, "gp", "list", "--keys", str(keyfile), "--keyset",
                              "gp-transport"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert refused.returncode == 7 and refused.stderr.strip().splitlines()[-1].startswith("error:")
