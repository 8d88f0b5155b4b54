"""`cardkit layout|personalize|verify|dump|pin|card|ssc` end to end on virtual cards (CliRunner, the real
console script, and once through pcscd/vpcd)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cardkit.cli.errors import exit_code_for
from cardkit.cli.main import cli
from cardkit.keys.store import TestKeyFile
from cardkit.readers import TEST_KEYS

ROOT = Path(__file__).resolve().parents[1]
CARDKIT = Path(sys.executable).with_name("cardkit")
MEMBER = "120101196310210289"


def sample(n: int = 1) -> list[dict[str, str]]:
    with open(ROOT / "applets/ssc/sample-batch.csv", encoding="utf-8", newline="") as fh:
        return [r for _, r in zip(range(n), csv.DictReader(fh), strict=False)]


def write_csv(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def run(args: list[str], env: dict[str, str] | None = None, input: str | None = None) -> tuple[int, Result]:
    result = CliRunner().invoke(cli, args, env=env, input=input, catch_exceptions=True)
    exc = result.exception
    code = result.exit_code if exc is None or isinstance(exc, SystemExit) else exit_code_for(exc)
    return code, result


def text_of(result: Result) -> str:
    return result.output + (str(result.exception) if result.exception else "")


def secrets() -> list[str]:
    ks = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    return [ks.key(name, alg).value.hex() for name, alg in ks.names()]


def assert_clean(text: str, *values: str) -> None:
    low = text.lower()
    for v in [*values, *secrets()]:
        assert v.lower() not in low, f"secret or identifier leaked: {v[:4]}..."


@pytest.fixture
def card(tmp_path: Path) -> dict[str, Path]:
    return {"image": tmp_path / "card.json", "record": write_csv(tmp_path / "person.csv", sample(1)),
            "pins": tmp_path / "pins.json", "manifest": tmp_path / "card.manifest.json"}


def personalize(card: dict[str, Path], *extra: str) -> tuple[int, Result]:
    return run(["--reader", f"virtual:{card['image']}", "personalize", "--record", str(card["record"]),
                "--allow-test-keys", "--pins-out", str(card["pins"]), "--manifest", str(card["manifest"]), *extra])


def test_full_card_life_on_the_virtual_card(card: dict[str, Path]) -> None:
    row = sample(1)[0]
    reader = ["--reader", f"virtual:{card['image']}"]
    outputs: list[str] = []

    code, r = personalize(card)
    assert code == 0, text_of(r)
    outputs.append(r.output)
    assert "36 APDUs (minimum 36)" in r.output and "verified 3 files" in r.output
    assert card["pins"].stat().st_mode & 0o777 == 0o600 and card["image"].stat().st_mode & 0o777 == 0o600
    pins = json.loads(card["pins"].read_text(encoding="utf-8"))["pins"]
    pin, puk = pins["pin"], pins["puk"]

    code, r = run([*reader, "verify", "--record", str(card["record"]), "--allow-test-keys", "--pins-file",
                   str(card["pins"])])
    assert code == 0 and "3 files match" in r.output, text_of(r)
    outputs.append(r.output)
    code, r = run(["--json", "verify", "--manifest", str(card["manifest"]), "--allow-test-keys"])
    assert code == 0 and json.loads(r.output)["valid"] is True
    code, r = run(["verify", "--manifest", str(card["manifest"])])
    assert code == 2 and "--public-key" in text_of(r)

    code, r = run([*reader, "--json", "dump", "--allow-test-keys", "--pin"], env={"CARDKIT_PIN": pin})
    assert code == 0, text_of(r)
    outputs.append(r.output)
    dump = json.loads(r.output)
    ef06 = next(f for f in dump["files"] if f["path"] == "SSSE/EF06")
    assert ef06["records"][0]["value"] == row["citizen_id"][:4] + "*" * 12 + row["citizen_id"][-2:]
    code, r = run([*reader, "dump", "--unmask"])
    assert code == 0 and "not read — read needs external authentication with key 02" in r.output
    assert row["citizen_id"] not in r.output  # EF06 is not readable without keys, unmasked or not

    code, r = run([*reader, "pin", "status"])
    assert code == 0 and "pin (SSSE): 3 of 3 tries left" in r.output
    change = [*reader, "pin", "change", "--allow-test-keys"]
    code, r = run(change, env={"CARDKIT_PIN": pin, "CARDKIT_NEW_PIN": "135790"})
    assert code == 0, text_of(r)
    code, r = run(change, env={"CARDKIT_PIN": pin, "CARDKIT_NEW_PIN": "246802"})
    assert code == 3 and "63C2" in text_of(r) and "2 tries left" in text_of(r)
    outputs.append(text_of(r))
    code, r = run([*reader, "pin", "unblock", "--allow-test-keys"], input="\n".join([puk, "112233", "112233"]) + "\n")
    assert code == 0 and "unblocked" in r.output, text_of(r)
    assert puk not in r.output and "112233" not in r.output  # hidden prompts
    code, r = run([*reader, "--json", "pin", "status"])
    assert json.loads(r.output)["tries_left"] == 3

    env = {"CARDKIT_PIN": "112233"}
    bind = [*reader, "ssc", "bind-family", "--member-ssn", MEMBER, "--relationship", "10", "--allow-test-keys"]
    code, r = run(bind, env=env)
    assert code == 0 and "1201************89" in r.output and MEMBER not in r.output, text_of(r)
    code, r = run(bind, env=env)
    assert code == 6 and "already on the card" in text_of(r)
    code, r = run([*reader, "ssc", "bind-family", "--member-ssn", MEMBER[:-1] + "0", "--relationship", "10",
                   "--allow-test-keys"], env=env)
    assert code == 6 and "member_ssn" in text_of(r) and MEMBER[:-1] not in text_of(r)

    code, r = run([*reader, "card", "block", "--allow-test-keys"])
    assert code == 0 and "block done (SSSE)" in r.output, text_of(r)
    code, r = run([*reader, "pin", "status"])
    assert "deactivated (card blocked)" in r.output
    code, r = run(bind, env={"CARDKIT_PIN": "112233"})
    assert code == 6 and "deactivated" in text_of(r)
    code, r = run([*reader, "card", "unblock", "--allow-test-keys"])
    assert code == 0
    code, r = run([*reader, "card", "terminate", "--allow-test-keys"], input="n\n")
    assert code != 0 and "Aborted" in r.output
    code, r = run([*reader, "card", "terminate", "--allow-test-keys", "--yes"])
    assert code == 0 and "unusable" in r.output
    code, r = run([*reader, "--json", "dump"])
    assert json.loads(r.output)["state"] == "terminated"
    for text in outputs:
        assert_clean(text, row["citizen_id"], pin, puk)


def test_record_sources_and_refusals(card: dict[str, Path], tmp_path: Path) -> None:
    row = sample(2)[1]
    code, r = run(["--reader", f"virtual:{card['image']}", "--json", "personalize", "--record", "-",
                   "--algorithm", "3des", "--allow-test-keys", "--pins-out", str(card["pins"])],
                  input=json.dumps(row, ensure_ascii=False))
    assert code == 0, text_of(r)
    out = json.loads(r.output)
    assert out["algorithm"] == "3des" and out["apdus"]["personalize"] == out["apdus"]["minimum"] == 36
    # the same card again: refused with a hint; the PIN file is never overwritten
    code, r = run(["--reader", f"virtual:{card['image']}", "personalize", "--record", "-", "--algorithm", "3des",
                   "--allow-test-keys", "--pins-out", str(tmp_path / "p2.json")], input=json.dumps(row))
    assert code == 5 and "already personalized" in text_of(r) and "--new-card" in text_of(r)
    code, r = run(["--reader", f"virtual:{card['image']}", "personalize", "--record", "-", "--algorithm", "3des",
                   "--allow-test-keys", "--pins-out", str(card["pins"]), "--new-card"], input=json.dumps(row))
    assert code == 2 and "never overwritten" in text_of(r)

    two = write_csv(tmp_path / "two.csv", sample(2))
    code, r = run(["personalize", "--record", str(two), "--allow-test-keys", "--pins-out", str(tmp_path / "x")])
    assert code == 6 and "holds 2 records" in text_of(r)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(row, ethnicity=1)), encoding="utf-8")
    code, r = run(["personalize", "--record", str(bad), "--allow-test-keys", "--pins-out", str(tmp_path / "x")])
    assert code == 6 and "field 'ethnicity'" in text_of(r) and "strings" in text_of(r)
    wrong = write_csv(tmp_path / "wrong.csv", [dict(row, citizen_id=row["citizen_id"][:-1] + "0")])
    code, r = run(["personalize", "--record", str(wrong), "--allow-test-keys", "--pins-out", str(tmp_path / "x")])
    assert code == 6 and "citizen_id" in text_of(r) and row["citizen_id"][:-1] not in text_of(r)
    code, r = run(["personalize", "--record", str(card["record"]), "--allow-test-keys"])
    assert code == 2 and "--pins-out" in text_of(r)
    code, r = run(["personalize", "--record", str(card["record"]), "--pins-out", str(tmp_path / "x")])
    assert code == 7 and "--allow-test-keys" in text_of(r)
    code, r = run(["personalize", "--record", str(card["record"]), "--pins-out", str(tmp_path / "x"),
                   "--keys", str(TEST_KEYS)])
    assert code == 7 and "TEST keys" in text_of(r)
    code, r = run(["--reader", "Some PCSC Reader 00", "dump", "--unmask"])
    assert code == 2 and "virtual readers only" in text_of(r)
    assert not (tmp_path / "x").exists()


def test_verify_fails_with_exit_8_on_a_changed_card(card: dict[str, Path]) -> None:
    assert personalize(card)[0] == 0
    image = json.loads(card["image"].read_text(encoding="utf-8"))
    text = json.dumps(image)
    ef05 = sample(1)[0]["issuing_org"].encode().hex().upper()
    assert ef05 in text
    card["image"].write_text(text.replace(ef05, ef05[:-2] + "39"), encoding="utf-8")
    code, r = run(["--reader", f"virtual:{card['image']}", "verify", "--record", str(card["record"]),
                   "--allow-test-keys", "--pins-file", str(card["pins"])])
    assert code == 8 and "SSSE/EF05 record 4: read-back differs" in text_of(r)
    manifest = json.loads(card["manifest"].read_text(encoding="utf-8"))
    manifest["files"]["SSSE/EF05"] = "0" * 64
    card["manifest"].write_text(json.dumps(manifest), encoding="utf-8")
    code, r = run(["verify", "--manifest", str(card["manifest"]), "--allow-test-keys"])
    assert code == 8 and "changed after signing" in text_of(r)


def test_layout_validate_and_show(tmp_path: Path) -> None:
    code, r = run(["layout", "validate", "ssc"])
    assert code == 0 and r.output.startswith("ok: ssc") and "bind-family" in r.output
    code, r = run(["layout", "show", "ssc"])
    assert code == 0, text_of(r)
    for needle in ("SSSE DDF1 df name 7378312E73682EC9E7BBE1B1A3D5CF (sx1.sh.社会保障)",
                   "EF06 EF06 SFI 06 linear-variable 6 x 34 bytes", "read: key:02",
                   "rkssse: SSSE ref 02 (P2 82), usage external-auth", "diversified by region -> serial",
                   "citizen_id", "SSSE/EF06 record 08", "operation bind-family: append SSSE/DF04/EF06",
                   "minimum APDUs per card"):
        assert needle in r.output, needle
    assert "6BA44A0F" not in r.output  # no key values
    code, r = run(["--json", "layout", "show", "ssc", "--algorithm", "3des"])
    assert json.loads(r.output)["algorithm"] == "3des"
    bad = tmp_path / "profile.toml"
    bad.write_text((ROOT / "applets/ssc/profile.toml").read_text(encoding="utf-8").replace("sfi = 6", "sfi = 60"),
                   encoding="utf-8")
    code, r = run(["layout", "validate", str(bad)])
    assert code == 6 and f"{bad}:" in text_of(r) and "[files[2].sfi]" in text_of(r)


def test_help_has_examples() -> None:
    for args in (["layout"], ["layout", "show"], ["personalize"], ["verify"], ["dump"], ["pin"], ["pin", "change"],
                 ["card"], ["card", "terminate"], ["ssc"], ["ssc", "bind-family"]):
        code, r = run([*args, "--help"])
        assert code == 0 and "Example" in r.output, args


# ------------------------------------------------------------------------------------------ console script


def script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CARDKIT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CARDKIT_HOME": str(Path(args[-1]).parent), **(env or {})})


def test_console_script_end_to_end(tmp_path: Path) -> None:
    record = write_csv(tmp_path / "p.csv", sample(3)[2:])
    image, pins, manifest = tmp_path / "c.json", tmp_path / "pins.json", tmp_path / "m.json"
    p = script("--reader", f"virtual:{image}", "personalize", "--record", str(record), "--allow-test-keys",
               "--pins-out", str(pins), "--manifest", str(manifest))
    assert p.returncode == 0, p.stderr
    assert "TEST" in p.stderr  # the test keys announce themselves
    p = script("verify", "--manifest", str(manifest), "--allow-test-keys")
    assert p.returncode == 0 and "manifest signature valid" in p.stdout
    p = script("--reader", f"virtual:{image}", "pin", "change", "--allow-test-keys",
               env={"CARDKIT_PIN": "000000", "CARDKIT_NEW_PIN": "123456"})
    assert p.returncode == 3 and p.stderr.strip().splitlines()[-1].startswith("error: CHANGE REFERENCE DATA failed")
    bad = tmp_path / "bad.toml"
    bad.write_text("[profile]\nname = 'x'\nformat = 3\n", encoding="utf-8")
    p = script("layout", "validate", str(bad))
    assert p.returncode == 6 and f"error: {bad}:3: [profile.format]" in p.stderr


# ------------------------------------------------------------------------------------------ PC/SC


@pytest.mark.pcsc
def test_personalize_and_dump_through_pcscd(vpcd_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cardkit.crypto import Alg
    from cardkit.readers import new_virtual_card

    blank = new_virtual_card(alg=Alg.SM4, transport_key=TestKeyFile(TEST_KEYS, allow_test_keys=True)
                             .key("ssc-transport", Alg.SM4).value)
    name, _server = vpcd_card(blank)
    record = write_csv(tmp_path / "p.csv", sample(1))
    code, r = run(["--reader", name, "personalize", "--record", str(record), "--allow-test-keys",
                   "--pins-out", str(tmp_path / "pins.json")])
    assert code == 0 and "36 APDUs (minimum 36)" in r.output, text_of(r)
    code, r = run(["--reader", name, "--json", "dump", "--allow-test-keys"])
    assert code == 0, text_of(r)
    files = {f["path"]: f for f in json.loads(r.output)["files"]}
    assert files["SSSE/EF06"]["records"][0]["field"] == "citizen_id"
