"""`cardkit info`: the diagnosis of personalized, blank, PIN-blocked and key-locked cards, in-process and through
pcscd/vpcd; reasons in words for every refusal; no full citizen ID in any output."""

from __future__ import annotations

import csv
import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cardkit.acl import AccessRules, parse_rule
from cardkit.apps.diagnose import DiagnoseOptions, diagnose, explain_rule
from cardkit.cli.main import cli
from cardkit.commands import iso
from cardkit.issuance.engine import expected_content, open_issuer_channel, personalize
from cardkit.issuance.prepare import PreparedRecord, prepare
from cardkit.keys.store import TestKeyFile, alg_of
from cardkit.profiles.codecs import parse_simple_tlv_record
from cardkit.profiles.model import Profile, load_profile
from cardkit.profiles.validators import mask_identifier
from cardkit.readers import TEST_KEYS, new_virtual_card
from cardkit.session import CardSession
from cardkit.transport.virtual import VirtualTransport

ROOT = Path(__file__).resolve().parents[1]
SSSE = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")
PIN_ENV = "CARDKIT_TEST_INFO_PIN"


def sample_rows(n: int) -> list[dict[str, str]]:
    with open(ROOT / "applets/ssc/sample-batch.csv", encoding="utf-8", newline="") as fh:
        return [r for _, r in zip(range(n), csv.DictReader(fh), strict=False)]


def ssc_keys() -> TestKeyFile:
    return TestKeyFile(TEST_KEYS, allow_test_keys=True)


def issue_card(row: dict[str, str] | None = None, algorithm: str = "sm4") -> tuple[Profile, PreparedRecord, Any]:
    """An SSC card personalized by the engine on a fresh virtual card (powered off afterwards)."""
    ks = ssc_keys()
    profile = load_profile(ROOT / "applets/ssc", algorithm=algorithm)
    prepared = prepare(profile, row or sample_rows(1)[0])
    alg = alg_of(algorithm)
    card = new_virtual_card(alg=alg, transport_key=ks.key(profile.transport_key, alg).value)
    session = CardSession(VirtualTransport(card))
    personalize(session, profile, prepared, ks)
    session.close()
    return profile, prepared, card


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=True)


def expected_fields(profile: Profile, prepared: PreparedRecord, serial: bytes) -> dict[str, str]:
    """field -> the value `info` must show (identifiers masked), from the engine's expected content."""
    records, _ = expected_content(profile, prepared, ssc_keys(), serial)
    masked = {profile.identity_field, *profile.unique_fields}
    out = {}
    for fs in profile.files:
        for spec in fs.fields:
            if spec.number is not None and spec.number in records.get(fs.path, {}):
                _, value = parse_simple_tlv_record(records[fs.path][spec.number])
                text = spec.codec.decode(value)
                out[spec.field] = mask_identifier(text) if spec.field in masked else text
    return out


def shown_fields(report: dict[str, Any]) -> dict[str, str]:
    return {r["field"]: r["value"] for f in report["files"] for r in f.get("records", []) if "value" in r}


def file_entry(report: dict[str, Any], path: str) -> dict[str, Any]:
    return next(f for f in report["files"] if f["path"] == path)


@pytest.fixture
def issued(tmp_path: Path) -> tuple[Profile, PreparedRecord, Any, Path]:
    profile, prepared, card = issue_card()
    image = tmp_path / "card.json"
    card.save(image)
    return profile, prepared, card, image


def assert_matches_expected(report: dict[str, Any], profile: Profile, prepared: PreparedRecord, card: Any) -> None:
    assert report["profile"]["name"] == "ssc"
    assert report["atr"]["chip_serial"] == card.serial.hex().upper()
    assert shown_fields(report) == expected_fields(profile, prepared, card.serial)
    paths = {f["path"] for f in report["files"] if f.get("present")}
    assert {fs.path for fs in profile.files} | {"MF"} <= paths
    ef05 = file_entry(report, "SSSE/EF05")
    assert ef05["type"] == "linear-variable" and ef05["record_size"] == 20 and ef05["sfi"] == 5
    assert ef05["rules"]["read"] == "always"
    assert file_entry(report, "SSSE/EF06")["rules"]["read"] == "key:02"
    card_id = next(r for r in ef05["records"] if r.get("field") == "card_id_code")
    assert card_id["matches_chip"] is True and card_id["parts"]["rid"] == "D156000005"
    assert report["problems"] == []


# ------------------------------------------------------------------------------------------ in-process


def test_info_json_matches_the_expected_content(issued: tuple[Profile, PreparedRecord, Any, Path]) -> None:
    profile, prepared, card, image = issued
    env = {PIN_ENV: prepared.pins["pin"].decode()}
    res = run("--reader", f"virtual:{image}", "--json", "info", "--keys", str(TEST_KEYS), "--allow-test-keys",
              "--pin", f"pin={PIN_ENV}", env=env)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert_matches_expected(report, profile, prepared, card)
    pin = next(p for p in report["pins"] if p["name"] == "pin")
    assert pin["tries_left"] == 3  # read before the PIN was verified: no try spent, none used up
    assert file_entry(report, "SSSE/EF07")["content"]["all_zero"] is True
    assert prepared.identity not in res.output and prepared.pins["pin"].decode() not in res.output


def test_info_without_keys_says_why_each_file_refuses(issued: tuple[Profile, PreparedRecord, Any, Path]) -> None:
    _, prepared, _, image = issued
    res = run("--reader", f"virtual:{image}", "info")
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert "SSSE/EF06" in text and "read needs external authentication with key 02 (rkssse)" in text
    assert "read needs verification of PIN 01 (pin)" in text  # DF04/EF05
    assert "card_type: 3" in text and "card_number: " + mask_identifier(sample_rows(1)[0]["card_number"]) in text
    assert "3 of 3 tries left" in text
    assert prepared.identity not in res.output
    report = json.loads(run("--reader", f"virtual:{image}", "--json", "info").stdout)
    reasons = {p["step"]: p["reason"] for p in report["problems"]}
    assert reasons["SSSE/EF06"].startswith("read refused: 6982 security status not satisfied")


def test_diagnose_in_process_api_and_apdu_budget() -> None:
    profile, prepared, card = issue_card()
    session = CardSession(VirtualTransport(card))
    report = diagnose(session, DiagnoseOptions(keystore=ssc_keys(), pins={"pin": prepared.pins["pin"]}))
    assert_matches_expected(report, profile, prepared, card)
    assert session.apdu_count < 150  # 12 files, 13 records, 5 KB of transparent data, GP and AID probes


def test_wrong_keys_are_tried_once_and_explained(tmp_path: Path) -> None:
    _profile, _prepared, card = issue_card()
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("test_only = true\n" + "".join(
        f'[[key]]\nname = "{name}"\nalg = "sm4"\nvalue = "{secrets.token_hex(16)}"\n'
        for name in ("ssc-transport", "ssc-issuer", "ssc-irk", "ssc-rkssse", "ssc-sm")), encoding="utf-8")
    rk = next(n for n in card.files() if getattr(n, "name", None) == SSSE).keys[2]
    before = rk.tries_left
    session = CardSession(VirtualTransport(card))
    report = diagnose(session, DiagnoseOptions(keystore=TestKeyFile(wrong, allow_test_keys=True)))
    assert rk.tries_left == before - 1  # EF06, EF07, EF08 all need key 02: one attempt only
    err = file_entry(report, "SSSE/EF06")["read_error"]
    assert "external authentication with key 02 (rkssse)" in err and "63C" in err and "not retried" in err
    assert "EF06" not in file_entry(report, "SSSE/EF08")["read_error"]  # its own reason, same key story
    assert "wrong key" in file_entry(report, "SSSE/EF08")["read_error"]


def test_blank_card_still_gives_a_report(tmp_path: Path) -> None:
    image = tmp_path / "blank.json"
    new_virtual_card().save(image)  # a card OS without a GP ISD
    res = run("--reader", f"virtual:{image}", "--json", "info")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["profile"]["name"] is None and report["applications"] == []
    assert file_entry(report, "MF")["rules"]["create-ef"] == "issuer"
    assert "no GlobalPlatform issuer security domain" in report["gp"]["error"]
    assert "6A82" in report["gp"]["error"]
    text = run("--reader", f"virtual:{image}", "info").stdout
    assert "Applications: none recognised" in text and "Profile: none" in text
    report = json.loads(run("--reader", f"virtual:{image}", "--json", "info", "--profile", "ssc").stdout)
    assert report["problems"] == [{"step": "SSSE", "reason": "the profile's df is not on the card (SELECT answered "
                                                             "6A82 file or application not found)"}]
    assert file_entry(report, "SSSE/EF05")["error"] == "its DF SSSE is not on the card"


def block_pin(card: Any, pin_value: bytes) -> None:
    session = CardSession(VirtualTransport(card))
    session.send(iso.select_aid(SSSE, p2_fci="none"))
    wrong = b"000000" if pin_value != b"000000" else b"111111"
    for _ in range(3):
        session.transmit(iso.verify(0x81, wrong))
    assert session.transmit(iso.verify(0x81, None)).sw == 0x6983
    session.close()


def test_blocked_pin_is_reported_and_nothing_is_spent(tmp_path: Path) -> None:
    _profile, prepared, card = issue_card()
    block_pin(card, prepared.pins["pin"])
    image = tmp_path / "blocked.json"
    card.save(image)
    env = {PIN_ENV: prepared.pins["pin"].decode()}
    res = run("--reader", f"virtual:{image}", "--json", "info", "--pin", f"pin={PIN_ENV}", env=env)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    pin = next(p for p in report["pins"] if p["name"] == "pin")
    assert pin["tries_left"] == 0 and pin["state"].startswith("blocked")
    err = file_entry(report, "SSSE/DF04/EF05")["read_error"]
    assert "verification of PIN 01 (pin)" in err and "6983" in err
    assert shown_fields(report)["card_type"] == "3"  # the free files are still read


def test_locked_mf_key_still_gives_a_report(tmp_path: Path) -> None:
    _profile, prepared, card = issue_card()
    session = CardSession(VirtualTransport(card))
    for _ in range(12):  # the issuer key allows 10 tries: wrong mutual authentications lock it
        try:
            open_issuer_channel(session, alg_of("sm4"), secrets.token_bytes(16))
        except Exception as exc:
            last = exc
    assert "6983" in str(last)
    session.close()
    image = tmp_path / "locked.json"
    card.save(image)
    res = run("--reader", f"virtual:{image}", "--json", "info", "--keys", str(TEST_KEYS), "--allow-test-keys")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    fields = shown_fields(report)
    assert fields["citizen_id"] == mask_identifier(prepared.identity)  # key 02 still opens EF06
    assert file_entry(report, "MF")["rules"]["create-ef"] == "issuer"


def test_explain_rule_names_keys_and_pins() -> None:
    profile = load_profile(ROOT / "applets/ssc")
    assert explain_rule(parse_rule("key:02"), profile, "SSSE/EF06") == "external authentication with key 02 (rkssse)"
    assert explain_rule(parse_rule("pin:01"), profile, "SSSE/DF04/EF05") == "verification of PIN 01 (pin)"
    text = explain_rule(parse_rule("issuer or (key:02 and sm)"), profile, "SSSE/EF06")
    assert text.startswith("the issuer channel") and "(external authentication with key 02 (rkssse) and " \
                                                        "secure messaging)" in text
    assert explain_rule(parse_rule("key:07")) == "external authentication with key 07"
    assert "never" in explain_rule(parse_rule("never"))


# ------------------------------------------------------------------------------------------ option errors


@pytest.mark.parametrize(("args", "env", "message"), [
    (["info", "--pin", "pin"], {}, "expected NAME=ENV"),
    (["info", "--profile", "ssc", "--pin", "nosuch=X"], {"X": "123456"}, "has no PIN 'nosuch'"),
    (["info", "--pin", "pin=CARDKIT_TEST_UNSET_VARIABLE"], {}, "CARDKIT_TEST_UNSET_VARIABLE"),
    (["info", "--allow-test-keys"], {}, "--allow-test-keys needs --keys"),
    (["info", "--gp-keyset", "gp"], {}, "--gp-keyset needs --keys"),
    (["info", "--profile", "no-such-profile"], {}, "no profile 'no-such-profile'"),
])
def test_bad_options_are_named(tmp_path: Path, args: list[str], env: dict[str, str], message: str) -> None:
    res = run("--reader", f"virtual:{tmp_path / 'c.json'}", *args, env=env)
    assert res.exit_code != 0
    assert message in res.output + str(res.exception)


def test_test_keys_need_the_explicit_flag(tmp_path: Path) -> None:
    from cardkit.cli.errors import exit_code_for

    res = run("--reader", f"virtual:{tmp_path / 'c.json'}", "info", "--keys", str(TEST_KEYS))
    assert res.exception is not None and exit_code_for(res.exception) == 7
    assert "--allow-test-keys" in str(res.exception)


def test_help_has_examples() -> None:
    for command in ("info", "snapshot", "diff"):
        res = run(command, "--help")
        assert res.exit_code == 0 and "Example" in res.output


def test_console_script_end_to_end(issued: tuple[Profile, PreparedRecord, Any, Path]) -> None:
    _, prepared, _, image = issued
    exe = Path(sys.executable).with_name("cardkit")
    proc = subprocess.run([str(exe), "-vv", "--reader", f"virtual:{image}", "info", "--keys", str(TEST_KEYS),
                           "--allow-test-keys"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "citizen_id: " + mask_identifier(prepared.identity) in proc.stdout
    assert prepared.identity not in proc.stdout + proc.stderr
    assert "TEST keys" in proc.stderr  # test keys announce themselves


# ------------------------------------------------------------------------------------------ GlobalPlatform


def _gp_card(tmp_path: Path, scp: int) -> tuple[Any, Path]:
    gp = pytest.importorskip("cardkit.virtual.gp", reason="the virtual ISD (cardkit/virtual/gp.py) is not there")
    from cardkit.crypto import Alg
    from cardkit.sm.gp import GpKeySet

    alg = Alg.AES if scp == 3 else Alg.DES3
    key = secrets.token_bytes(16)
    keyfile = tmp_path / "gp.toml"
    keyfile.write_text(f'test_only = true\n[[key]]\nname = "gp-isd"\nalg = "{"aes" if scp == 3 else "3des"}"\n'
                       f'value = "{key.hex()}"\n', encoding="utf-8")
    _, _, card = issue_card()
    gp.install_isd(card, GpKeySet.single(key, alg=alg, version=1), scp=scp)
    return card, keyfile


def _isd_diagnosis(card: Any, keyfile: Path | None) -> dict[str, Any]:
    session = CardSession(VirtualTransport(card))
    ks = TestKeyFile(keyfile, allow_test_keys=True) if keyfile else None
    return diagnose(session, DiagnoseOptions(keystore=ks, gp_keyset="gp-isd" if ks else None))


def test_gp_data_without_keys(tmp_path: Path) -> None:
    card, _ = _gp_card(tmp_path, 3)
    g = _isd_diagnosis(card, None)["gp"]
    assert g["isd"]["aid"] == "A000000151000000"
    assert g["cplc"]["ic_serial_number"] == card.serial.hex().upper()
    assert any(s.startswith("SCP03") for s in g["card_data"]["scp"])
    assert g["key_info"] and all(k["version"] == 1 for k in g["key_info"])
    assert "secure channel" in g["registry"]["error"] or isinstance(g["registry"].get("isd"), list)


@pytest.mark.parametrize("scp", [3, 2])
def test_gp_registry_with_keys(tmp_path: Path, scp: int) -> None:
    card, keyfile = _gp_card(tmp_path, scp)
    report = _isd_diagnosis(card, keyfile)
    g = report["gp"]
    assert g["secure_channel"].startswith(f"SCP0{scp}")
    assert g["registry"]["card_life_cycle"] in ("OP_READY", "INITIALIZED", "SECURED")
    assert isinstance(g["registry"]["apps"], list) and isinstance(g["registry"]["load-files"], list)
    assert shown_fields(report)["card_type"] == "3"  # the ISO part is unaffected by the ISD


def test_gp_wrong_keys_are_reported(tmp_path: Path) -> None:
    card, keyfile = _gp_card(tmp_path, 3)
    keyfile.write_text(keyfile.read_text().replace(keyfile.read_text().split('value = "')[1][:32],
                                                   secrets.token_hex(16)), encoding="utf-8")
    g = _isd_diagnosis(card, keyfile)["gp"]
    assert g["registry"]["error"].startswith("not listed: secure channel: SCP03 card cryptogram does not verify")


# ------------------------------------------------------------------------------------------ pcscd / vpcd


@pytest.mark.pcsc
def test_info_through_pcscd_and_vpcd(vpcd_card: Callable[..., tuple[str, Any]]) -> None:
    profile, prepared, card = issue_card()
    reader, _server = vpcd_card(card)
    env = {PIN_ENV: prepared.pins["pin"].decode()}
    res = run("--reader", reader, "--json", "info", "--keys", str(TEST_KEYS), "--allow-test-keys",
              "--pin", f"pin={PIN_ENV}", env=env)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["reader"]["name"] == reader and report["reader"]["protocol"] in ("T=0", "T=1")
    assert_matches_expected(report, profile, prepared, card)
    assert prepared.identity not in res.output


# ------------------------------------------------------------------------------------------ probing


def test_ef_dir_and_probing_without_a_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    from cardkit.apps import diagnose as diag
    from cardkit.tlv import ber_build, ber_encode
    from cardkit.virtual.fs import EfType

    aid = bytes.fromhex("F0434B49540101")  # a proprietary AID (ISO/IEC 7816-5 category F)
    card = new_virtual_card()
    template = ber_build(0x61, [ber_encode(0x4F, aid), ber_encode(0x50, b"TEST APP")])
    card.mf.add_ef(0x2F00, EfType.LINEAR_VARIABLE, record_size=32, record_count=2, sfi=False,
                   rules=AccessRules({"read": "always"}), records=[template])
    app = card.mf.add_df(0x4100, name=aid, rules=AccessRules({"create-ef": "never"}))
    app.add_ef(0x0101, size=8, data=b"\x01\x02", rules=AccessRules({"read": "always"}))
    app.add_ef(0x0102, size=8, rules=AccessRules({"read": "pin:01"}))
    monkeypatch.setattr(diag, "KNOWN_APPLICATIONS", (
        *diag.KNOWN_APPLICATIONS, diag.KnownApplication(aid, "cardkit test application", None,
                                                        (b"\x01\x01", b"\x01\x02", b"\x01\x03"))))
    report = diagnose(CardSession(VirtualTransport(card)))
    app_row = next(a for a in report["applications"] if a["aid"] == aid.hex().upper())
    assert app_row["found_by"] == "EF.DIR" and app_row["label"] == "cardkit test application"
    ef_dir = file_entry(report, "MF/2F00")
    assert ef_dir["label"] == "EF.DIR" and ef_dir["records"][0]["raw"] == template.hex().upper()
    base = "cardkit test application"
    assert file_entry(report, f"{base}/0101")["content"]["length"] == 8
    assert "read needs verification of PIN 01" in file_entry(report, f"{base}/0102")["read_error"]
    assert all(f["path"] != f"{base}/0103" for f in report["files"])  # absent FIDs are not listed
    assert report["profile"]["name"] is None


def test_emrtd_is_recognised_and_its_bac_condition_explained() -> None:
    mrtd = pytest.importorskip("cardkit.apps.mrtd", reason="the eMRTD application is not there")
    vmrtd = pytest.importorskip("cardkit.virtual.mrtd", reason="the virtual eMRTD is not there")
    ks = TestKeyFile(ROOT / "keys/test/mrtd.toml", allow_test_keys=True)
    profile = load_profile(ROOT / "applets/mrtd")
    with open(ROOT / "applets/mrtd/sample-batch.csv", encoding="utf-8", newline="") as fh:
        row = next(csv.DictReader(fh))
    prepared = mrtd.prepare_mrtd(profile, row, keystore=ks)
    card = new_virtual_card(alg=alg_of("3des"), transport_key=ks.key(profile.transport_key, alg_of("3des")).value)
    vmrtd.enable_mrtd(card)
    session = CardSession(VirtualTransport(card))
    personalize(session, profile, prepared, ks)
    session.reset(cold=True)
    report = diagnose(session)
    assert report["profile"]["name"] == "mrtd"
    dg1 = next(f for f in report["files"] if f.get("fid") == "0101")
    assert "read needs external authentication with key 01 (bac) and secure messaging" in dg1["read_error"]


def test_the_trace_file_holds_no_identifier(issued: tuple[Profile, PreparedRecord, Any, Path],
                                            tmp_path: Path) -> None:
    _, prepared, _, image = issued
    trace = tmp_path / "trace.jsonl"
    env = {PIN_ENV: prepared.pins["pin"].decode()}
    res = run("--reader", f"virtual:{image}", "--trace", str(trace), "info", "--keys", str(TEST_KEYS),
              "--allow-test-keys", "--pin", f"pin={PIN_ENV}", env=env)
    assert res.exit_code == 0, res.output
    text = trace.read_text(encoding="utf-8")
    assert len(text.splitlines()) > 50
    for secret in (prepared.identity, prepared.identity.encode().hex().upper(), prepared.pins["pin"].hex().upper()):
        assert secret not in text


def test_a_deactivated_file_says_so() -> None:
    from cardkit.virtual.fs import Lcs

    _, _, card = issue_card()
    ef05 = next(n for n in card.files() if getattr(n, "fid", None) == 0xEF05 and n.parent.name == SSSE)
    ef05.lcs = Lcs.DEACTIVATED
    report = diagnose(CardSession(VirtualTransport(card)))
    entry = file_entry(report, "SSSE/EF05")
    assert entry["select_warning"].startswith("6283") and entry["lcs"] == "operational-deactivated"
    assert entry["read_error"] == ("read refused: 6985 conditions of use not satisfied — the file is in life-cycle "
                                   "state operational-deactivated")
