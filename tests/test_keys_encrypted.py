"""The encrypted keystore file: format, passphrase and tamper detection, atomic 0600 writes, policy."""

from __future__ import annotations

import base64
import json
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, keywrap
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.serialization import load_der_public_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardkit.crypto import Alg, KcvMethod, chain, kcv
from cardkit.errors import KeystoreError
from cardkit.keys.encrypted import EncryptedKeystore, KdfParams, argon2_available
from cardkit.keys.store import KeyAdmin, SignAlg, Usage, WrappedKey
from cardkit.keys.uri import open_keystore

PASS = "correct horse battery staple"
WEAK = KdfParams.weak_for_tests()
MASTER = bytes.fromhex("A9F39D82F68EB5DB0405A789DF30272A")
LEVELS = [bytes.fromhex("0000000000440300"), bytes.fromhex("00000000A1B2C3D4")]


def new_store(tmp_path: Path, name: str = "s.cks") -> EncryptedKeystore:
    return EncryptedKeystore.create(tmp_path / name, PASS, kdf=WEAK, allow_weak_kdf=True)


def test_create_open_roundtrip_and_file_mode(tmp_path: Path) -> None:
    s = new_store(tmp_path)
    assert isinstance(s, KeyAdmin)
    info = s.import_key("ssc-issuer", Alg.DES3, MASTER)
    assert info.kcv == kcv(MASTER, KcvMethod.DES3_ZEROS).hex().upper() and not info.extractable
    path = tmp_path / "s.cks"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "s.cks.lock").stat().st_mode) == 0o600
    raw = path.read_bytes()
    assert MASTER.hex().encode() not in raw.lower() and MASTER not in raw  # no plaintext key
    doc = json.loads(raw)
    assert doc["format"] == "cardkit-keystore" and doc["cipher"] == "aes-256-gcm"
    assert doc["generation"] == 2  # create + import
    again = EncryptedKeystore.open(path, PASS)
    assert again.derive("ssc-issuer", Alg.DES3, LEVELS).value == chain(MASTER, Alg.DES3, LEVELS)
    assert [e.name for e in again.entries()] == ["ssc-issuer"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_default_kdf_is_argon2id_or_scrypt_and_weak_parameters_are_refused(tmp_path: Path) -> None:
    d = KdfParams.default()
    assert d.name == ("argon2id" if argon2_available() else "scrypt")
    d.check(allow_weak=False)
    with pytest.raises(KeystoreError, match="too weak"):
        EncryptedKeystore.create(tmp_path / "w.cks", PASS, kdf=WEAK)
    with pytest.raises(KeystoreError, match="at least 12 characters"):
        EncryptedKeystore.create(tmp_path / "w.cks", "short")
    assert not (tmp_path / "w.cks").exists()
    with pytest.raises(KeystoreError, match="out of bounds"):
        KdfParams("argon2id", iterations=1, memory_kib=1 << 30, lanes=1).check()
    with pytest.raises(KeystoreError, match="out of bounds"):
        KdfParams("scrypt", n=1000, r=8, p=1).check()  # not a power of two


def test_wrong_passphrase_is_told_apart_from_tampering(tmp_path: Path) -> None:
    s = new_store(tmp_path)
    s.import_key("k", Alg.AES, bytes(range(16)))
    path = tmp_path / "s.cks"
    before = path.read_bytes()
    with pytest.raises(KeystoreError, match=r"wrong passphrase for keystore s.cks"):
        EncryptedKeystore.open(path, "not the passphrase")
    doc = json.loads(before)
    cases = {
        "payload byte": lambda d: d.update(payload=base64.b64encode(bytes([base64.b64decode(d["payload"])[0] ^ 1])
                                                                   + base64.b64decode(d["payload"])[1:]).decode()),
        "nonce": lambda d: d.update(nonce=base64.b64encode(bytes(12)).decode()),
        "generation": lambda d: d.update(generation=d["generation"] + 5),
        "store_id": lambda d: d.update(store_id="0" * 32),
    }
    for what, change in cases.items():
        bad = json.loads(before)
        change(bad)
        path.write_text(json.dumps(bad))
        with pytest.raises(KeystoreError, match="tampered or damaged") as ei:
            EncryptedKeystore.open(path, PASS)
        assert "AES-GCM" in str(ei.value), what
    for field, value, message in [("cipher", "aes-128-ecb", "unknown keystore cipher"),
                                  ("format_version", 9, "format version 9 is not supported"),
                                  ("kdf", {"name": "md5"}, "KDF parameters are missing|unknown key derivation")]:
        bad = dict(doc)
        bad[field] = value
        path.write_text(json.dumps(bad))
        with pytest.raises(KeystoreError, match=message):
            EncryptedKeystore.open(path, PASS)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(KeystoreError, match="not a cardkit keystore"):
        EncryptedKeystore.open(path, PASS)
    path.write_bytes(before)
    assert EncryptedKeystore.open(path, PASS).info("k").version == 1
    with pytest.raises(KeystoreError, match="does not exist"):
        EncryptedKeystore.open(tmp_path / "missing.cks", PASS)


def test_failed_open_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = new_store(tmp_path)
    s.import_key("k", Alg.AES, bytes(range(16)))
    path = tmp_path / "s.cks"
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    monkeypatch.setenv("CARDKIT_KEYSTORE_PASSPHRASE", "wrong passphrase!")
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        open_keystore(f"store:{path}")
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.cks", "s.cks.lock"]


def test_extractability_policy(tmp_path: Path) -> None:
    s = new_store(tmp_path)
    s.import_key("master", Alg.AES, bytes(range(16)))
    s.import_key("transport", Alg.SM4, bytes(range(16, 32)), extractable=True)
    with pytest.raises(KeystoreError, match="not extractable"):
        s.key("master", Alg.AES)
    with pytest.raises(KeystoreError, match="no levels"):
        s.derive("master", Alg.AES, [])
    assert s.key("transport", Alg.SM4).value == bytes(range(16, 32))  # SM4 works in the software store
    assert s.derive("transport", Alg.SM4, LEVELS).value == chain(bytes(range(16, 32)), Alg.SM4, LEVELS)
    h = s.handle("master", Alg.AES)
    assert h.kcv() == kcv(bytes(range(16)), KcvMethod.AES_GP).hex().upper()
    h.close()
    with pytest.raises(KeystoreError, match="closed"):
        h.encrypt_ecb(bytes(16))
    with pytest.raises(KeystoreError, match=r"key 'other' \(aes\) not found"):
        s.key("other", Alg.AES)


def test_versions_rotation_and_delete(tmp_path: Path) -> None:
    s = new_store(tmp_path)
    v1 = s.generate("k", Alg.DES3)
    with pytest.raises(KeystoreError, match="already exists"):
        s.generate("k", Alg.DES3)
    v2 = s.generate("k", Alg.DES3, rotate=True)
    assert (v1.version, v2.version) == (1, 2) and v1.kcv != v2.kcv
    assert s.handle("k@1", Alg.DES3).kcv() == v1.kcv and s.handle("k", Alg.DES3).kcv() == v2.kcv
    s.delete("k@2", Alg.DES3)
    assert [e.version for e in s.entries()] == [1]
    reopened = EncryptedKeystore.open(tmp_path / "s.cks", PASS)
    assert reopened.info("k").kcv == v1.kcv
    with pytest.raises(KeystoreError, match="invalid key name"):
        s.generate("../evil", Alg.AES)


def test_a_concurrent_writer_is_detected(tmp_path: Path) -> None:
    a = new_store(tmp_path)
    b = EncryptedKeystore.open(tmp_path / "s.cks", PASS)
    a.generate("one", Alg.AES)
    with pytest.raises(KeystoreError, match="changed by another process"):
        b.generate("two", Alg.AES)
    assert [e.name for e in EncryptedKeystore.open(tmp_path / "s.cks", PASS).entries()] == ["one"]


def test_parallel_writers_serialise_without_losing_a_key(tmp_path: Path) -> None:
    new_store(tmp_path)
    errors: list[Exception] = []

    def worker(i: int) -> None:
        for _ in range(20):
            try:
                EncryptedKeystore.open(tmp_path / "s.cks", PASS).generate(f"k{i}", Alg.AES)
                return
            except KeystoreError as exc:
                if "changed by another process" not in str(exc):
                    errors.append(exc)
                    return
        errors.append(RuntimeError("never got through"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(e.name for e in EncryptedKeystore.open(tmp_path / "s.cks", PASS).entries()) == \
        ["k0", "k1", "k2", "k3"]


def test_write_failure_leaves_the_old_file(tmp_path: Path) -> None:
    import resource
    import signal

    s = new_store(tmp_path)
    s.generate("one", Alg.AES)
    before = (tmp_path / "s.cks").read_bytes()
    # Make the next file write fail even under root: a file-size limit below the new store's size (EFBIG).
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256, hard))
    try:
        with pytest.raises(KeystoreError, match="cannot write keystore"):
            s.generate("two", Alg.AES)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert (tmp_path / "s.cks").read_bytes() == before
    assert [e.name for e in s.entries()] == ["one"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    s.generate("two", Alg.AES)  # the store is still usable
    assert [e.name for e in EncryptedKeystore.open(tmp_path / "s.cks", PASS).entries()] == ["one", "two"]


def test_wrap_unwrap_rfc_vectors_and_checks(tmp_path: Path) -> None:
    s = new_store(tmp_path)
    # RFC 3394 §4.1 and RFC 5649 §6 (first example: 192-bit KEK, 20-byte key -> but our keys are 16/24/32).
    s.import_key("kek", Alg.AES, bytes.fromhex("000102030405060708090A0B0C0D0E0F"), usage=Usage.KEK)
    s.import_key("k", Alg.AES, bytes.fromhex("00112233445566778899AABBCCDDEEFF"), extractable=True)
    blob = s.wrap("k", Alg.AES, "kek", mechanism="aes-kw")
    assert blob.wrapped.hex().upper() == "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"
    kwp = s.wrap("k", Alg.AES, "kek")
    assert keywrap.aes_key_unwrap_with_padding(bytes.fromhex("000102030405060708090A0B0C0D0E0F"), kwp.wrapped) == \
        bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    restored = WrappedKey.from_dict(json.loads(json.dumps(kwp.to_dict())))
    info = s.unwrap(restored, "kek", name="k-copy")
    assert info.kcv == s.info("k").kcv and info.origin == "unwrapped" and not info.extractable
    with pytest.raises(KeystoreError, match="not extractable: it cannot be wrapped"):
        s.wrap("k-copy", Alg.AES, "kek")
    with pytest.raises(KeystoreError, match="not a key-encryption key"):
        s.wrap("k", Alg.AES, "k")
    with pytest.raises(KeystoreError, match="differs from the stated"):
        s.unwrap(WrappedKey(**{**kwp.__dict__, "kcv": "ABCDEF"}), "kek", name="x")
    with pytest.raises(KeystoreError, match="does not unwrap"):
        s.unwrap(WrappedKey(**{**kwp.__dict__, "wrapped": bytes(len(kwp.wrapped))}), "kek", name="x")
    with pytest.raises(KeystoreError, match="not a cardkit wrapped key"):
        WrappedKey.from_dict({"format": "other"})
    with pytest.raises(KeystoreError, match="unknown wrapping mechanism"):
        WrappedKey.from_dict({**kwp.to_dict(), "mechanism": "xor"})


def test_signing_keys(tmp_path: Path) -> None:
    s = new_store(tmp_path)
    info = s.generate("station", SignAlg.ECDSA_P256)
    signer = EncryptedKeystore.open(tmp_path / "s.cks", PASS).signer("station")
    pub = load_der_public_key(signer.public_key_der())
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(signer.sign(b"m"), b"m", ec.ECDSA(hashes.SHA256()))
    assert info.kcv_method == "spki-sha256" and info.usage == "sign"
    s.generate("ds", SignAlg.RSA_2048)
    rs = s.signer("ds")
    rpub = load_der_public_key(rs.public_key_der())
    rpub.verify(rs.sign(b"m"), b"m", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())  # type: ignore[union-attr, call-arg, arg-type]
    with pytest.raises(KeystoreError, match="signing key 'nope' not found"):
        s.signer("nope")


def test_change_passphrase(tmp_path: Path) -> None:
    s = new_store(tmp_path)
    s.import_key("k", Alg.AES, bytes(range(16)))
    s.change_passphrase("a brand new passphrase", kdf=WEAK, allow_weak_kdf=True)
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        EncryptedKeystore.open(tmp_path / "s.cks", PASS)
    assert EncryptedKeystore.open(tmp_path / "s.cks", "a brand new passphrase").info("k").kcv == s.info("k").kcv


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 1 << 40) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["format", "format_version", "store_id", "generation", "kdf", "cipher", "check",
                              "nonce", "payload"]), value=_JSON)
def test_any_header_change_gives_a_keystore_error(tmp_path: Path, field: str, value: object) -> None:
    path = tmp_path / "fuzz.cks"
    if not path.exists():
        new_store(tmp_path, "fuzz.cks").import_key("k", Alg.AES, bytes(range(16)))
    doc = json.loads(path.read_text())
    doc[field] = value
    bad = tmp_path / "bad.cks"
    bad.write_text(json.dumps(doc))
    try:
        EncryptedKeystore.open(bad, PASS)
    except KeystoreError:
        pass
