"""Key ceremonies on the encrypted store: dual-control import by components, KCV confirmation, the journal
(who, when, which key by KCV — never a value), refusals that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cardkit.batch.journal import Journal, verify_journal
from cardkit.crypto import Alg, KcvMethod, kcv
from cardkit.errors import KeystoreError
from cardkit.keys.ceremony import Ceremony, CeremonyError
from cardkit.keys.encrypted import EncryptedKeystore, KdfParams
from cardkit.keys.store import KeyInfo, TestKeyFile, Usage
from cardkit.readers import TEST_KEYS

C1 = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
C2 = bytes.fromhex("89ABCDEF01234567F0E1D2C3B4A59687")
C3 = bytes.fromhex("1111222233334444555566667777AAAA")
KEY2 = bytes(a ^ b for a, b in zip(C1, C2, strict=True))
KEY3 = bytes(a ^ b ^ c for a, b, c in zip(C1, C2, C3, strict=True))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Ceremony, EncryptedKeystore, Path]:
    store = EncryptedKeystore.create(tmp_path / "s.cks", "ceremony passphrase", kdf=KdfParams.weak_for_tests(),
                                     allow_weak_kdf=True)
    journal = tmp_path / "journal.jsonl"
    return Ceremony(store, Journal(journal), "carol"), store, journal


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def kcv3(v: bytes) -> str:
    return kcv(v, KcvMethod.DES3_ZEROS).hex().upper()


@pytest.mark.parametrize(("parts", "key"), [((C1, C2), KEY2), ((C1, C2, C3), KEY3)])
def test_import_by_components(setup: tuple[Ceremony, EncryptedKeystore, Path], parts: tuple[bytes, ...],
                              key: bytes) -> None:
    c, store, journal = setup
    shown: list[tuple[int, str, str]] = []
    people = ["alice", "bob", "dave"][: len(parts)]
    info = c.import_components("zmk", Alg.DES3, len(parts), read_component=lambda n: parts[n - 1],
                               confirm_component=lambda n, k, m: shown.append((n, k, m)) or True,
                               custodians=people, expect_kcv=kcv3(key).lower())
    assert shown == [(n, kcv3(p), "des3-zeros") for n, p in enumerate(parts, start=1)]
    assert info.kcv == kcv3(key) and info.origin == "components" and info.custodians == tuple(people)
    assert store.handle("zmk", Alg.DES3).kcv() == kcv3(key)
    events = lines(journal)
    assert [e["event"] for e in events] == ["keys.import.started"] + ["keys.import.component"] * len(parts) + \
        ["keys.imported"]
    assert [e.get("custodian") for e in events[1:-1]] == people
    assert all(e["operator"] == "carol" and e["store"] == store.label for e in events)
    assert events[-1]["kcv"] == kcv3(key) and events[-1]["key_id"] == "zmk"
    text = journal.read_text()
    for secret in (key, *parts):
        assert secret.hex() not in text.lower()
    assert verify_journal(journal).ok


@pytest.mark.parametrize(("custodians", "parts", "confirm", "expect", "message"), [
    (["alice", "alice"], (C1, C2), True, None, "2 distinct custodians"),
    (["alice"], (C1, C2), True, None, "2 distinct custodians"),
    (["alice", "bob"], (C1, C1), True, None, "equals an earlier component"),
    (["alice", "bob"], (C1, bytes(16)), True, None, "all zeros"),
    (["alice", "bob"], (C1, C2[:8]), True, None, "component 2: 3des key must be 16/24 bytes"),
    (["alice", "bob"], (C1, C2), False, None, "component 1: KCV .* not confirmed by custodian alice"),
    (["alice", "bob"], (C1, C2), True, "ABCDEF", "combined key has KCV .* not the expected ABCDEF"),
])
def test_refusals_write_nothing(setup: tuple[Ceremony, EncryptedKeystore, Path], custodians: list[str],
                                parts: tuple[bytes, ...], confirm: bool, expect: str | None, message: str) -> None:
    c, store, journal = setup
    before = store.path.read_bytes()
    with pytest.raises(CeremonyError, match=message):
        c.import_components("zmk", Alg.DES3, 2, read_component=lambda n: parts[n - 1],
                            confirm_component=lambda n, k, m: confirm, custodians=custodians, expect_kcv=expect)
    assert store.path.read_bytes() == before and store.entries() == []
    events = [e["event"] for e in lines(journal)] if journal.exists() else []
    assert "keys.imported" not in events
    if "custodians" not in message:
        assert events[-1] == "keys.import.aborted"


def test_component_count_and_operator(setup: tuple[Ceremony, EncryptedKeystore, Path]) -> None:
    c, store, _ = setup
    with pytest.raises(CeremonyError, match="2 or 3 components"):
        c.import_components("k", Alg.AES, 1, read_component=lambda n: C1, confirm_component=lambda *a: True,
                            custodians=["a"])
    with pytest.raises(CeremonyError, match="needs an operator"):
        Ceremony(store, c.journal, " ")


def test_generate_wrap_unwrap_delete_export_are_journaled(setup: tuple[Ceremony, EncryptedKeystore, Path]) -> None:
    c, store, journal = setup
    kek = c.generate("kek", Alg.AES, usage=Usage.KEK)
    k = c.generate("transport", Alg.DES3, extractable=True)
    blob = c.wrap("transport", Alg.DES3, "kek", mechanism="aes-kw")
    got = c.unwrap(blob, "kek", name="transport-copy")
    assert got.kcv == k.kcv
    assert c.export_kcv("kek", Alg.AES, KcvMethod.AES_CMAC) == (kek.kcvs["aes-cmac"], "aes-cmac")
    with pytest.raises(CeremonyError, match="does not apply"):
        c.export_kcv("transport", Alg.DES3, KcvMethod.AES_GP)
    with pytest.raises(CeremonyError, match="not confirmed; nothing deleted"):
        c.delete("transport-copy", Alg.DES3, confirm=lambda info: False)
    asked: list[KeyInfo] = []
    c.delete("transport-copy", Alg.DES3, confirm=lambda info: asked.append(info) or True)
    assert asked[0].kcv == k.kcv and [e.name for e in store.entries()] == ["kek", "transport"]
    events = [e["event"] for e in lines(journal)]
    assert events == ["keys.generated", "keys.generated", "keys.wrapped", "keys.unwrapped", "keys.kcv_exported",
                      "keys.delete.declined", "keys.deleted"]
    wrapped = next(e for e in lines(journal) if e["event"] == "keys.wrapped")
    assert wrapped["kek_kcv"] == kek.kcv and wrapped["mechanism"] == "aes-kw"
    assert blob.wrapped.hex() not in journal.read_text().lower()


def test_failed_unwrap_is_journaled(setup: tuple[Ceremony, EncryptedKeystore, Path]) -> None:
    c, _, journal = setup
    c.generate("kek", Alg.AES, usage=Usage.KEK)
    c.generate("k", Alg.AES, extractable=True)
    blob = c.wrap("k", Alg.AES, "kek")
    c.generate("kek2", Alg.AES, usage=Usage.KEK)
    with pytest.raises(KeystoreError, match="wrapped under a KEK"):
        c.unwrap(blob, "kek2", name="x")
    assert lines(journal)[-1]["event"] == "keys.unwrap.failed"


def test_read_only_keystores_refuse_ceremonies(tmp_path: Path) -> None:
    c = Ceremony(TestKeyFile(TEST_KEYS, allow_test_keys=True), Journal(tmp_path / "j"), "carol")
    with pytest.raises(CeremonyError, match="read-only"):
        c.generate("x", Alg.AES)
    assert c.export_kcv("ssc-issuer", Alg.DES3)[1] == "des3-zeros"
