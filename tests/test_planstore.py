"""Stored personalization plans (cardkit.issuance.planstore): round trip onto real virtual cards, tampering,
wrong keys, no plaintext in the file, file mode, profile binding. Real crypto and real keystores throughout."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardkit.crypto import Alg
from cardkit.issuance.engine import personalize, verify
from cardkit.issuance.planstore import (
    KekProtection,
    PassphraseProtection,
    PlanError,
    PlanFormatError,
    PlanHeader,
    PlanIntegrityError,
    PlanKeyError,
    PlanProfileError,
    PlanReader,
    ScryptParams,
    read_header,
    write_plan,
)
from cardkit.issuance.prepare import PreparedRecord, prepare
from cardkit.keys.encrypted import EncryptedKeystore, KdfParams
from cardkit.keys.store import TestKeyFile, Usage, alg_of
from cardkit.profiles.model import Profile, load_profile
from cardkit.profiles.synthetic import mrtd_people, ssc_people
from cardkit.readers import TEST_KEYS, new_virtual_card
from cardkit.session import CardSession
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual.image import card_to_dict
from cardkit.virtual.isoauth import mutual_auth_handler

ROOT = Path(__file__).resolve().parents[1]
PASS = "correct horse battery staple"


def weak(passphrase: str = PASS) -> PassphraseProtection:
    return PassphraseProtection(passphrase, params=ScryptParams.weak_for_tests(), allow_weak=True)


@pytest.fixture(scope="module")
def ssc() -> Profile:
    return load_profile(ROOT / "applets/ssc")


@pytest.fixture(scope="module")
def keystore() -> TestKeyFile:
    return TestKeyFile(TEST_KEYS, allow_test_keys=True)


def prepared_rows(profile: Profile, n: int, *, seed: int = 3) -> list[tuple[int, PreparedRecord]]:
    rng = random.Random(seed)
    return [(i + 2, prepare(profile, row, rng=rng.randrange)) for i, row in enumerate(ssc_people(n, seed=seed))]


def make_plan(tmp_path: Path, profile: Profile, rows: list[tuple[int, PreparedRecord]], name: str = "p.plan",
              protection: object | None = None) -> Path:
    path = tmp_path / name
    write_plan(path, profile, rows, protection or weak(), source_name="people.csv",  # type: ignore[arg-type]
               source_sha256="0" * 64)
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def open_all(path: Path, profile: Profile | None = None, protection: object | None = None) -> int:
    with PlanReader.open(path, protection or weak(), profile=profile) as r:  # type: ignore[arg-type]
        return r.verify()


# ------------------------------------------------------------------------------------------- round trip
def issue(profile: Profile, prepared: PreparedRecord, keystore: TestKeyFile, serial: bytes) -> dict[str, object]:
    alg = alg_of(profile.algorithm)
    card = new_virtual_card(serial, alg=alg, transport_key=keystore.key(profile.transport_key, alg).value, seed=7)
    card.mutual_auth_handler = mutual_auth_handler
    session = CardSession(VirtualTransport(card))
    result = personalize(session, profile, prepared, keystore)
    manifest = verify(session, profile, prepared, keystore, result)
    assert len(manifest["files"]) == 3
    return card_to_dict(card)


def test_round_trip_gives_the_same_cards_as_direct_personalization(tmp_path: Path, ssc: Profile,
                                                                   keystore: TestKeyFile) -> None:
    rows = prepared_rows(ssc, 4)
    path = make_plan(tmp_path, ssc, rows)
    with PlanReader.open(path, weak(), profile=ssc) as reader:
        got = list(reader.records())
        assert [(seq, line) for seq, line, _ in got] == [(1, 2), (2, 3), (3, 4), (4, 5)]
        assert [p for _, _, p in got] == [p for _, p in rows]  # every field, PIN, card-time field
        assert reader.get(3) == (4, rows[2][1])
    direct = prepared_rows(ssc, 4)  # same rng seed: same generated PINs
    for (_, _, planned), (_, fresh) in zip(got[:2], direct[:2], strict=True):
        assert issue(ssc, planned, keystore, b"\x5e\xc0\x00\x01") == issue(ssc, fresh, keystore, b"\x5e\xc0\x00\x01")


def test_header_describes_the_plan_without_personal_data(tmp_path: Path, ssc: Profile) -> None:
    path = make_plan(tmp_path, ssc, prepared_rows(ssc, 3))
    h = read_header(path)
    assert isinstance(h, PlanHeader)
    assert (h.profile, h.algorithm, h.records, h.source_name, h.protection) == ("ssc", "sm4", 3, "people.csv",
                                                                                 "passphrase")
    assert len(h.plan_id) == 32 and len(h.profile_sha256) == 64


def test_plan_file_is_0600_and_never_overwritten(tmp_path: Path, ssc: Profile) -> None:
    path = make_plan(tmp_path, ssc, prepared_rows(ssc, 2))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.plan"]  # no temporary files left
    before = path.read_bytes()
    with pytest.raises(PlanError, match="never overwritten"):
        make_plan(tmp_path, ssc, prepared_rows(ssc, 2))
    assert path.read_bytes() == before


def test_a_failing_record_source_leaves_nothing(tmp_path: Path, ssc: Profile) -> None:
    def rows() -> Iterator[tuple[int, PreparedRecord]]:
        yield from prepared_rows(ssc, 2)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_plan(tmp_path / "p.plan", ssc, rows(), weak(), source_name="x.csv", source_sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def _forms(value: bytes) -> list[bytes]:
    return [value, value.hex().encode(), value.hex().upper().encode(), base64.b64encode(value)]


@pytest.mark.parametrize("which", ["ssc", "mrtd"])
def test_no_personal_data_pin_or_key_in_the_plan_file(tmp_path: Path, which: str) -> None:
    profile = load_profile(ROOT / "applets" / which)
    if which == "ssc":
        people = list(ssc_people(20, seed=11))
        store = None
    else:
        people = list(mrtd_people(5, seed=11))
        store = TestKeyFile(ROOT / "keys/test/mrtd.toml", allow_test_keys=True)
    rows = [(i + 2, prepare(profile, p, keystore=store)) for i, p in enumerate(people)]
    raw = make_plan(tmp_path, profile, rows).read_bytes()
    # the file as written, plus every base64 payload decoded (a leak must not hide behind an encoding)
    data = raw + b"".join(base64.b64decode(json.loads(line)["ct"]) for line in raw.splitlines()[1:])
    needles: set[bytes] = set()
    for person in people:
        for value in person.values():
            if len(value) >= 6:
                needles.update(_forms(value.encode("utf-8")))
                with_gbk = value.encode("gbk", errors="ignore")
                if len(with_gbk) >= 6:
                    needles.update(_forms(with_gbk))
    for _, p in rows:
        needles.update(_forms(p.identity.encode()))
        for recs in p.records.values():
            needles.update(form for rec in recs.values() if len(rec) >= 8 for form in _forms(rec[2:]))
        for blob in p.binaries.values():
            needles.update(_forms(blob[:24]))
        for secret in [*p.pins.values(), *p.record_keys.values()]:
            needles.update(_forms(secret))
    assert rows[0][1].pins or rows[0][1].record_keys  # secrets really were there to leak
    leaked = [n for n in needles if n in data]
    assert leaked == []


# ------------------------------------------------------------------------------------------- tampering
@pytest.fixture
def plan3(tmp_path: Path, ssc: Profile) -> Path:
    return make_plan(tmp_path, ssc, prepared_rows(ssc, 3))


def rewrite(path: Path, new: list[bytes]) -> None:
    path.write_bytes(b"".join(new))


def test_edited_ciphertext_is_caught(plan3: Path) -> None:
    ls = lines(plan3)
    doc = json.loads(ls[2])
    ct = bytearray(base64.b64decode(doc["ct"]))
    ct[40] ^= 0x01
    doc["ct"] = base64.b64encode(bytes(ct)).decode()
    ls[2] = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    rewrite(plan3, ls)
    with pytest.raises(PlanIntegrityError, match=r"record 2 \(line 3 of p.plan\) does not authenticate"):
        open_all(plan3)


def test_swapped_records_are_caught(plan3: Path) -> None:
    ls = lines(plan3)
    rewrite(plan3, [ls[0], ls[2], ls[1], ls[3]])
    with pytest.raises(PlanIntegrityError, match=r"record 1 .* is numbered 2: records were reordered"):
        open_all(plan3)
    # renumbered to look in order: the sequence number is in the GCM associated data
    a, b = json.loads(ls[1]), json.loads(ls[2])
    a["seq"], b["seq"] = 2, 1
    rewrite(plan3, [ls[0], json.dumps(b).encode() + b"\n", json.dumps(a).encode() + b"\n", ls[3]])
    with pytest.raises(PlanIntegrityError, match=r"record 1 .* does not authenticate"):
        open_all(plan3)


def test_a_record_from_another_plan_is_caught(tmp_path: Path, ssc: Profile, plan3: Path) -> None:
    other = make_plan(tmp_path, ssc, prepared_rows(ssc, 3, seed=9), name="other.plan")
    ls, theirs = lines(plan3), lines(other)
    rewrite(plan3, [ls[0], ls[1], theirs[2], ls[3]])
    with pytest.raises(PlanIntegrityError, match=r"record 2 .* belongs to another plan"):
        open_all(plan3)
    forged = json.loads(theirs[2])
    forged["plan"] = read_header(plan3).plan_id  # relabelled: still another data key and associated data
    rewrite(plan3, [ls[0], ls[1], json.dumps(forged).encode() + b"\n", ls[3]])
    with pytest.raises(PlanIntegrityError, match=r"record 2 .* does not authenticate"):
        open_all(plan3)


@pytest.mark.parametrize(("field", "value"), [("records", 2), ("source", {"name": "x.csv", "sha256": "1" * 64}),
                                              ("records_sha256", "2" * 64)])
def test_a_changed_header_is_caught(plan3: Path, field: str, value: object) -> None:
    ls = lines(plan3)
    head = json.loads(ls[0])
    head[field] = value
    rewrite(plan3, [json.dumps(head).encode() + b"\n", *ls[1:]])
    with pytest.raises(PlanIntegrityError, match=r"header of plan p.plan does not authenticate"):
        open_all(plan3)


def test_a_changed_wrapped_data_key_is_caught(plan3: Path) -> None:
    ls = lines(plan3)
    head = json.loads(ls[0])
    wrapped = bytearray(base64.b64decode(head["data_key"]["wrapped"]))
    wrapped[5] ^= 0x80
    head["data_key"]["wrapped"] = base64.b64encode(bytes(wrapped)).decode()
    rewrite(plan3, [json.dumps(head).encode() + b"\n", *ls[1:]])
    with pytest.raises(PlanIntegrityError, match="does not unwrap although the passphrase is right"):
        open_all(plan3)


def test_removed_added_and_cut_records_are_caught(plan3: Path) -> None:
    ls = lines(plan3)
    rewrite(plan3, ls[:3])
    with pytest.raises(PlanIntegrityError, match="holds 2 records, its header says 3: records were removed"):
        open_all(plan3)
    rewrite(plan3, [*ls, ls[3]])
    with pytest.raises(PlanIntegrityError, match="more records than its header says"):
        open_all(plan3)
    rewrite(plan3, [*ls[:3], ls[3][:-20]])
    with pytest.raises(PlanIntegrityError, match=r"record 3 .* is cut short"):
        open_all(plan3)


def test_get_needs_a_verified_plan(plan3: Path) -> None:
    with PlanReader.open(plan3, weak()) as reader:
        with pytest.raises(PlanError, match="verify"):
            reader.get(1)
        reader.verify()
        with pytest.raises(PlanError, match=r"no record 4 \(1..3\)"):
            reader.get(4)


def test_not_a_plan(tmp_path: Path) -> None:
    bad = tmp_path / "x.plan"
    bad.write_text('{"format": "something-else"}\n')
    with pytest.raises(PlanFormatError, match="not a cardkit plan"):
        read_header(bad)
    bad.write_text("hello\n")
    with pytest.raises(PlanFormatError, match="not JSON"):
        read_header(bad)


# ------------------------------------------------------------------------------------------- keys
def test_wrong_passphrase_is_told_apart_from_tampering(plan3: Path) -> None:
    with pytest.raises(PlanKeyError, match="wrong plan passphrase"):
        open_all(plan3, protection=weak("not the passphrase at all"))


def test_new_plans_refuse_short_passphrases_and_weak_scrypt(tmp_path: Path, ssc: Profile) -> None:
    with pytest.raises(PlanKeyError, match="at least 12 characters"):
        make_plan(tmp_path, ssc, [], protection=PassphraseProtection("short"))
    with pytest.raises(PlanKeyError, match="too weak"):
        make_plan(tmp_path, ssc, [], protection=PassphraseProtection(PASS, params=ScryptParams.weak_for_tests()))
    assert list(tmp_path.iterdir()) == []


def test_default_scrypt_parameters_round_trip(tmp_path: Path, ssc: Profile) -> None:
    path = make_plan(tmp_path, ssc, prepared_rows(ssc, 1), protection=PassphraseProtection(PASS))
    assert read_header(path).raw["data_key"]["kdf"]["n"] == 1 << 17
    assert open_all(path, protection=PassphraseProtection(PASS)) == 1


def store_with_kek(path: Path, name: str = "plan-kek") -> EncryptedKeystore:
    store = EncryptedKeystore.create(path, "store passphrase!", kdf=KdfParams.weak_for_tests(), allow_weak_kdf=True)
    store.generate(name, Alg.AES, usage=Usage.KEK)
    store.generate("not-a-kek", Alg.AES)
    return store


def test_kek_in_the_encrypted_store(tmp_path: Path, ssc: Profile) -> None:
    store = store_with_kek(tmp_path / "a.cks")
    path = make_plan(tmp_path, ssc, prepared_rows(ssc, 2), protection=KekProtection(store, "plan-kek"))
    h = read_header(path)
    assert (h.protection, h.kek, h.kek_kcv) == ("kek", "plan-kek@1", store.info("plan-kek").kcv)
    assert open_all(path, ssc, KekProtection(store)) == 2
    # passphrase instead of the KEK, and the other way round
    with pytest.raises(PlanKeyError, match=r"wrapped under KEK 'plan-kek@1'.*not protected by a passphrase"):
        open_all(path, ssc, weak())
    pplan = make_plan(tmp_path, ssc, prepared_rows(ssc, 1), name="pp.plan")
    with pytest.raises(PlanKeyError, match="protected by a passphrase, not a KEK"):
        open_all(pplan, ssc, KekProtection(store))


def test_wrong_kek_is_named_by_kcv(tmp_path: Path, ssc: Profile) -> None:
    a, b = store_with_kek(tmp_path / "a.cks"), store_with_kek(tmp_path / "b.cks")  # same name, other value
    path = make_plan(tmp_path, ssc, prepared_rows(ssc, 1), protection=KekProtection(a, "plan-kek"))
    with pytest.raises(PlanKeyError, match=rf"KCV {a.info('plan-kek').kcv}.*has KCV {b.info('plan-kek').kcv}"):
        open_all(path, ssc, KekProtection(b))
    with pytest.raises(PlanKeyError, match="not a key-encryption key"):
        make_plan(tmp_path, ssc, [], name="x.plan", protection=KekProtection(a, "not-a-kek"))
    with pytest.raises(PlanKeyError, match="TEST key file holds no key-encryption keys"):
        KekProtection(TestKeyFile(TEST_KEYS, allow_test_keys=True), "plan-kek")


# ------------------------------------------------------------------------------------------- profile binding
def test_a_plan_for_another_profile_version_is_refused(tmp_path: Path, ssc: Profile) -> None:
    copy = tmp_path / "ssc"
    shutil.copytree(ROOT / "applets/ssc", copy)
    mine = load_profile(copy)
    path = make_plan(tmp_path, mine, prepared_rows(mine, 2))
    asked: list[object] = []

    def unlock(header: PlanHeader) -> PassphraseProtection:
        asked.append(header)
        return weak()

    assert PlanReader.open(path, unlock=unlock, profile=mine).verify() == 2
    with (copy / "profile.toml").open("a", encoding="utf-8") as fh:
        fh.write("\n# edited after the plan was prepared\n")
    asked.clear()
    with pytest.raises(PlanProfileError, match=r"another version of profile 'ssc'.*prepare the plan again"):
        PlanReader.open(path, unlock=unlock, profile=load_profile(copy))
    with pytest.raises(PlanProfileError, match=r"prepared with algorithm sm4.*--algorithm sm4"):
        PlanReader.open(path, unlock=unlock, profile=load_profile(copy, algorithm="3des"))
    with pytest.raises(PlanProfileError, match="prepared for profile 'ssc', not 'mrtd'"):
        PlanReader.open(path, unlock=unlock, profile=load_profile(ROOT / "applets/mrtd"))
    assert asked == []  # refused before any key or passphrase was asked for


def test_records_of_another_profile_are_not_written(tmp_path: Path, ssc: Profile) -> None:
    rows = prepared_rows(ssc, 1)
    with pytest.raises(PlanError, match="prepared for ssc/sm4, not ssc/3des"):
        make_plan(tmp_path, ssc.with_algorithm("3des"), rows)
    assert not (tmp_path / "p.plan").exists()
    assert os.listdir(tmp_path) == []
