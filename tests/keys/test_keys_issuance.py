"""The same SSC personalization (3DES: SoftHSM2 has no SM4) with the same master keys held in three
keystores — the TEST key file, an encrypted store and a SoftHSM2 token, the latter two filled through the
dual-control import ceremony — gives identical cards and manifests. No key byte (master or derived) and no
PIN appears in any log, trace, journal or output of these runs. A failing keystore writes nothing."""

from __future__ import annotations

import csv
import json
import logging
import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cardkit.batch.journal import Journal, verify_journal
from cardkit.crypto import Alg, chain
from cardkit.errors import KeystoreError
from cardkit.issuance.engine import _level, personalize, verify
from cardkit.issuance.prepare import PreparedRecord, prepare
from cardkit.keys.ceremony import Ceremony
from cardkit.keys.encrypted import EncryptedKeystore, KdfParams
from cardkit.keys.pkcs11 import Pkcs11Keystore
from cardkit.keys.store import KeyCustody, Keystore, TestKeyFile
from cardkit.profiles.model import Profile, load_profile
from cardkit.readers import TEST_KEYS, new_virtual_card
from cardkit.session import CardSession
from cardkit.transport.virtual import VirtualTransport

if TYPE_CHECKING:
    from tests.keys.conftest import SoftHsm

pytestmark = pytest.mark.hsm

ROOT = Path(__file__).resolve().parents[2]
SERIAL = bytes.fromhex("5EC0A1D2")
MASTERS = ("ssc-transport", "ssc-issuer", "ssc-irk", "ssc-rkssse", "ssc-sm")
PASS = "issuance test passphrase"


@dataclass
class Backends:
    test_file: TestKeyFile
    store: EncryptedKeystore
    token: Pkcs11Keystore
    journals: list[Path]
    components: list[bytes]
    token_pin: str


def _row() -> dict[str, str]:
    with open(ROOT / "applets/ssc/sample-batch.csv", encoding="utf-8", newline="") as fh:
        return next(csv.DictReader(fh))


def _fill(ceremony: Ceremony, test_file: TestKeyFile, components: list[bytes]) -> None:
    """Import every 3DES master of the test file through the two-custodian component ceremony."""
    for name in MASTERS:
        value = test_file.key(name, Alg.DES3).value
        c1 = secrets.token_bytes(len(value))
        c2 = bytes(a ^ b for a, b in zip(value, c1, strict=True))
        components += [c1, c2]
        parts = {1: c1, 2: c2}
        ceremony.import_components(name, Alg.DES3, 2, read_component=lambda n, p=parts: p[n],  # type: ignore[misc]
                                   confirm_component=lambda n, k, m: True, custodians=["alice", "bob"],
                                   expect_kcv=test_file.key(name, Alg.DES3).kcv,
                                   extractable=name == "ssc-transport")  # the ISO engine needs its value


@pytest.fixture(scope="module")
def backends(softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    tmp = tmp_path_factory.mktemp("issuance-keys")
    test_file = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    store = EncryptedKeystore.create(tmp / "bureau.cks", PASS, kdf=KdfParams.weak_for_tests(), allow_weak_kdf=True)
    token = Pkcs11Keystore(softhsm.module, "ck-issuance", softhsm.pin)
    components: list[bytes] = []
    journals = [tmp / "store-journal.jsonl", tmp / "token-journal.jsonl"]
    for ks, path in ((store, journals[0]), (token, journals[1])):
        with Journal(path) as j:
            _fill(Ceremony(ks, j, "carol"), test_file, components)
    yield Backends(test_file, store, token, journals, components, softhsm.pin)
    token.close()


def _issue(keystore: Keystore, tmp: Path, tag: str) -> tuple[dict[str, Any], dict[str, Any], Profile,
                                                             PreparedRecord]:
    profile = load_profile(ROOT / "applets/ssc", algorithm="3des")
    rng = random.Random(42)
    prepared = prepare(profile, _row(), rng=lambda n: rng.randrange(n))
    card = new_virtual_card(SERIAL, alg=Alg.DES3, transport_key=keystore.key(profile.transport_key, Alg.DES3).value,
                            seed=7)
    with open(tmp / f"trace-{tag}.jsonl", "w", encoding="utf-8") as trace:
        session = CardSession(VirtualTransport(card), trace=trace)
        result = personalize(session, profile, prepared, keystore)
        manifest = verify(session, profile, prepared, keystore, result)
    card.save(tmp / f"card-{tag}.json")
    image = json.loads((tmp / f"card-{tag}.json").read_text(encoding="utf-8"))
    return image, {k: v for k, v in manifest.items() if not k.endswith("_ms")}, profile, prepared


def _secret_strings(b: Backends, profile: Profile, prepared: PreparedRecord) -> set[str]:
    """Every master and derived card key, every component and every PIN, in the forms they could leak as."""
    values: list[bytes] = [b.test_file.key(n, Alg.DES3).value for n in MASTERS] + list(b.components)
    for spec in profile.keys:
        levels = [_level(SERIAL if lv == "serial" else prepared.card_fields.get(lv, "")) for lv in spec.diversify]
        values.append(chain(b.test_file.key(spec.master, Alg.DES3).value, Alg.DES3, levels))
    out = set()
    for v in values:
        out |= {v.hex(), v.hex().upper(), v.hex(" "), v.hex(" ").upper(), repr(v)[2:-1]}
    for pin in prepared.pins.values():
        out.add(pin.decode())
    out |= {PASS, b.token_pin}
    return out


def test_three_keystores_give_identical_cards_and_manifests(backends: Backends, softhsm: SoftHsm, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(1)  # everything, including the APDU trace level
    runs = {}
    for tag, ks in (("file", backends.test_file), ("store", backends.store), ("token", backends.token)):
        runs[tag] = _issue(ks, tmp_path, tag)
    images = {t: r[0] for t, r in runs.items()}
    manifests = {t: r[1] for t, r in runs.items()}
    assert images["file"] == images["store"] == images["token"]  # files, keys (values!), PINs, rules
    assert manifests["file"] == manifests["store"] == manifests["token"]
    assert set(manifests["token"]["files"]) == {"SSSE/EF05", "SSSE/EF06", "SSSE/DF01/EF05"}

    # The scan: logs, traces, journals, keystore file, listings — no key byte, no PIN, no passphrase.
    _, _, profile, prepared = runs["token"]
    secrets_ = _secret_strings(backends, profile, prepared)
    texts = {"log": caplog.text, "records": "\n".join(str(r.__dict__) for r in caplog.records)}
    for tag in runs:
        texts[f"trace-{tag}"] = (tmp_path / f"trace-{tag}.jsonl").read_text(encoding="utf-8")
        assert texts[f"trace-{tag}"].count("\n") > 50
    for j in backends.journals:
        texts[j.name] = j.read_text(encoding="utf-8")
        assert verify_journal(j).ok
    texts["store-file"] = (backends.store.path).read_text(encoding="utf-8")
    texts["entries"] = repr([ks.entries() for ks in (backends.store, backends.token)])
    texts["reprs"] = repr((backends.store, backends.token, backends.test_file.key("ssc-issuer", Alg.DES3)))
    assert len(secrets_) > 40
    for where, text in texts.items():
        leaked = [s for s in secrets_ if len(s) >= 6 and s in text]
        assert not leaked, f"secret material in {where}"
    # the PINs are short: look for them as whole JSON strings / words only
    for pin in (p.decode() for p in prepared.pins.values()):
        assert f'"{pin}"' not in texts["log"] + texts["token-journal.jsonl"]


def test_the_ceremony_journal_records_dual_control(backends: Backends) -> None:
    lines = [json.loads(line) for line in backends.journals[1].read_text(encoding="utf-8").splitlines()]
    events = [e["event"] for e in lines]
    assert events.count("keys.imported") == len(MASTERS)
    comps = [e for e in lines if e["event"] == "keys.import.component"]
    assert [c["custodian"] for c in comps[:2]] == ["alice", "bob"] and all(c["operator"] == "carol" for c in comps)
    done = next(e for e in lines if e["event"] == "keys.imported" and e["key_id"] == "ssc-issuer")
    assert done["kcv"] == backends.test_file.key("ssc-issuer", Alg.DES3).kcv
    assert done["store"] == "pkcs11:token=ck-issuance" and done["extractable"] is False
    assert backends.token.info("ssc-issuer", Alg.DES3).custodians == ("alice", "bob")


@pytest.mark.parametrize("failure", ["wrong PIN", "missing token", "wrong passphrase", "tampered store",
                                     "key not found", "non-extractable transport"])
def test_a_failing_keystore_writes_nothing(backends: Backends, softhsm: SoftHsm, tmp_path: Path,
                                           failure: str) -> None:
    profile = load_profile(ROOT / "applets/ssc", algorithm="3des")
    prepared = prepare(profile, _row())
    card = new_virtual_card(SERIAL, alg=Alg.DES3, transport_key=backends.test_file.key("ssc-transport",
                                                                                      Alg.DES3).value, seed=7)
    card.save(tmp_path / "before.json")
    store_path = tmp_path / "s.cks"
    s = EncryptedKeystore.create(store_path, PASS, kdf=KdfParams.weak_for_tests(), allow_weak_kdf=True)
    s.import_key("ssc-transport", Alg.DES3, backends.test_file.key("ssc-transport", Alg.DES3).value,
                 extractable=True)
    store_bytes = store_path.read_bytes()
    messages = {"wrong PIN": "wrong PIN for token 'ck-spare'", "missing token": "no token labelled 'gone'",
                "wrong passphrase": "wrong passphrase", "tampered store": "tampered or damaged",
                "key not found": r"key 'ssc-irk' \(3des\) not found in keystore s.cks",
                "non-extractable transport": r"key 'ssc-transport' \(3des\) is not extractable"}
    with pytest.raises(KeystoreError, match=messages[failure]):
        ks: KeyCustody
        if failure == "wrong PIN":
            ks = Pkcs11Keystore(softhsm.module, "ck-spare", "1111-wrong")
        elif failure == "missing token":
            ks = Pkcs11Keystore(softhsm.module, "gone", softhsm.pin)
        elif failure == "wrong passphrase":
            ks = EncryptedKeystore.open(store_path, "not it at all")
        elif failure == "tampered store":
            doc = json.loads(store_bytes)
            doc["generation"] += 1
            store_path.write_text(json.dumps(doc))
            ks = EncryptedKeystore.open(store_path, PASS)
        elif failure == "key not found":
            ks = s  # holds only the transport key: the card-time preparation fails before any APDU
        else:
            token = Pkcs11Keystore(softhsm.module, "ck-spare", softhsm.pin)
            have = {e.name for e in token.entries()}
            for name in MASTERS:  # every master, the transport key NOT extractable
                if name not in have:
                    token.import_key(name, Alg.DES3, backends.test_file.key(name, Alg.DES3).value)
            ks = token
        session = CardSession(VirtualTransport(card))
        try:
            personalize(session, profile, prepared, ks)
        finally:
            ks.close()
    card.save(tmp_path / "after.json")
    assert (tmp_path / "after.json").read_text() == (tmp_path / "before.json").read_text()
    if failure != "tampered store":
        assert store_path.read_bytes() == store_bytes


def test_issuance_logs_name_keys_by_kcv_only(backends: Backends, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cardkit.keys")
    backends.token.derive("ssc-issuer", Alg.DES3, [SERIAL.rjust(8, b"\0")])
    text = caplog.text
    assert backends.test_file.key("ssc-issuer", Alg.DES3).value.hex().upper() not in text.upper()
