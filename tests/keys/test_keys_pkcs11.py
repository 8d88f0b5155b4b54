"""The PKCS#11 keystore against a real SoftHSM2 token: derivation in the token equals the software chain,
non-extractable masters cannot be read back (through cardkit or the token), wrap/unwrap interoperates with
the encrypted store and RFC 3394, signing keys verify with ``cryptography``, and every failure is clear."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from cardkit.crypto import Alg, KcvMethod, chain, cmac, ecb_encrypt, kcv
from cardkit.errors import KeystoreError
from cardkit.keys.encrypted import EncryptedKeystore, KdfParams
from cardkit.keys.pkcs11 import Pkcs11Keystore
from cardkit.keys.store import KeyAdmin, SignAlg, Usage, WrappedKey
from cardkit.keys.tools import derive_with_handle
from cardkit.keys.uri import open_keystore

if TYPE_CHECKING:
    from tests.keys.conftest import SoftHsm

pytestmark = pytest.mark.hsm

TOKEN = "ck-backend"
_n = itertools.count()
LEVELS = [bytes.fromhex("0000000000440300"), bytes.fromhex("00000000A1B2C3D4"), bytes.fromhex("1122334455667788")]


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(_n)}"


@pytest.fixture(scope="module")
def token(softhsm: SoftHsm) -> Iterator[Pkcs11Keystore]:
    ks = Pkcs11Keystore(softhsm.module, TOKEN, softhsm.pin)
    yield ks
    ks.close()


def test_implements_key_admin(token: Pkcs11Keystore) -> None:
    assert isinstance(token, KeyAdmin)
    assert token.label == f"pkcs11:token={TOKEN}"


@pytest.mark.parametrize(("alg", "value"), [
    (Alg.DES3, bytes.fromhex("F0FDCB76E83B266D7B9DFEDAA22DEAF9")),
    (Alg.DES3, bytes.fromhex("404142434445464748494A4B4C4D4E4F5051525354555657")),
    (Alg.AES, bytes.fromhex("000102030405060708090A0B0C0D0E0F")),
    (Alg.AES, bytes(range(32))),
])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_derive_in_token_equals_the_software_chain(token: Pkcs11Keystore, alg: Alg, value: bytes, depth: int) -> None:
    name = fresh("div")
    token.import_key(name, alg, value)
    levels = LEVELS[:depth]
    want = chain(value, alg, levels)
    assert token.derive(name, alg, levels).value == want  # byte for byte, parity bits included
    with token.derive_handle(name, alg, levels) as h:  # type: ignore[attr-defined]
        assert h.kcv() == kcv(want, KcvMethod.DES3_ZEROS if alg is Alg.DES3 else KcvMethod.AES_GP).hex().upper()
        assert h.encrypt_ecb(bytes(16)) == ecb_encrypt(alg, want, bytes(16))
        assert h.cmac(b"card id body") == cmac(alg, want, b"card id body")


def test_handle_operations_match_software(token: Pkcs11Keystore) -> None:
    value = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")  # NIST SP 800-38B Appendix D.1 key
    name = fresh("h")
    token.import_key(name, Alg.AES, value)
    h = token.handle(name, Alg.AES)
    # SP 800-38B D.1 example 2: CMAC(K, 6bc1bee22e409f96e93d7e117393172a) = 070a16b46b4d4144f79bdd9dd04a287c
    assert h.cmac(bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")).hex() == "070a16b46b4d4144f79bdd9dd04a287c"
    assert h.kcv(KcvMethod.AES_CMAC) == kcv(value, KcvMethod.AES_CMAC).hex().upper()
    assert h.length == 16
    assert h.encrypt_cbc(bytes(32), bytes(16)) == ecb_encrypt(Alg.AES, value, bytes(16)) + \
        ecb_encrypt(Alg.AES, value, ecb_encrypt(Alg.AES, value, bytes(16)))
    with pytest.raises(KeystoreError, match="multiple of the block size"):
        h.encrypt_ecb(b"short")
    h.close()


def test_scheme_derivation_through_token_handles(token: Pkcs11Keystore) -> None:
    from cardkit.crypto import emv_cps, kdf3, visa2

    kmc = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
    aes_master = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
    kdd = bytes.fromhex("0102030405060708090A")
    d, a = fresh("kmc"), fresh("kdf3")
    token.import_key(d, Alg.DES3, kmc)
    token.import_key(a, Alg.AES, aes_master)
    for kid in (1, 2, 3):
        assert derive_with_handle(token.handle(d, Alg.DES3), "emv", kdd, kid) == emv_cps(kmc, kdd, kid)
        assert derive_with_handle(token.handle(d, Alg.DES3), "visa2", kdd, kid) == visa2(kmc, kdd, kid)
        assert derive_with_handle(token.handle(a, Alg.AES), "kdf3", kdd, kid) == kdf3(aes_master, kdd, kid)


def test_non_extractable_master_cannot_be_read_back(token: Pkcs11Keystore, softhsm: SoftHsm) -> None:
    import pkcs11
    from pkcs11 import Attribute, Mechanism, ObjectClass

    name = fresh("secret-master")
    token.import_key(name, Alg.AES, bytes(range(16, 32)))
    # through cardkit's API
    with pytest.raises(KeystoreError, match="not extractable"):
        token.key(name, Alg.AES)
    with pytest.raises(KeystoreError, match=r"no levels would give|not extractable"):
        token.derive(name, Alg.AES, [])
    token.generate(fresh("kek"), Alg.AES, usage=Usage.KEK)
    kek = [e.name for e in token.entries() if e.usage == "kek"][-1]
    with pytest.raises(KeystoreError, match="not extractable: it cannot be wrapped"):
        token.wrap(name, Alg.AES, kek)
    # through the token, as any other PKCS#11 client would try
    lib = pkcs11.lib(softhsm.module)
    with lib.get_token(token_label=TOKEN).open() as s:  # shares the login of the keystore's session
        obj = s.get_key(object_class=ObjectClass.SECRET_KEY, label=name)
        assert obj[Attribute.SENSITIVE] and not obj[Attribute.EXTRACTABLE]
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            _ = obj[Attribute.VALUE]
        one_time = s.generate_key(pkcs11.KeyType.AES, 256, template={Attribute.WRAP: True})
        with pytest.raises(pkcs11.exceptions.KeyUnextractable):
            one_time.wrap_key(obj, mechanism=Mechanism.AES_KEY_WRAP)
        # and the attributes cannot be relaxed (PKCS#11 v2.40 §4.9: SENSITIVE only TRUE, EXTRACTABLE only FALSE)
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            obj[Attribute.EXTRACTABLE] = True
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            obj[Attribute.SENSITIVE] = False


def test_extractable_key_gives_its_value_but_stays_sensitive(token: Pkcs11Keystore, softhsm: SoftHsm) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    name, value = fresh("transport"), bytes.fromhex("F0FDCB76E83B266D7B9DFEDAA22DEAF9")
    token.import_key(name, Alg.DES3, value, extractable=True)
    assert token.key(name, Alg.DES3).value == value
    lib = pkcs11.lib(softhsm.module)
    with lib.get_token(token_label=TOKEN).open() as s:  # shares the login of the keystore's session
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            _ = s.get_key(object_class=ObjectClass.SECRET_KEY, label=name)[Attribute.VALUE]


def test_generate_list_versions_delete(token: Pkcs11Keystore) -> None:
    name = fresh("gen")
    first = token.generate(name, Alg.DES3)
    assert (first.version, first.bits, first.alg, first.origin) == (1, 128, "3des", "generated")
    with pytest.raises(KeystoreError, match=r"already exists .*rotate"):
        token.generate(name, Alg.DES3)
    second = token.generate(name, Alg.DES3, rotate=True)
    assert second.version == 2 and second.kcv != first.kcv
    assert token.info(name, Alg.DES3).version == 2
    assert token.info(f"{name}@1", Alg.DES3).kcv == first.kcv
    h = token.handle(f"{name}@1", Alg.DES3)
    assert h.kcv() == first.kcv
    listed = [e for e in token.entries() if e.name == name]
    assert [e.version for e in listed] == [1, 2]
    assert token.delete(f"{name}@2", Alg.DES3).version == 2
    assert [e.version for e in token.entries() if e.name == name] == [1]
    token.delete(name, Alg.DES3)
    with pytest.raises(KeystoreError, match="not found in token"):
        token.info(name, Alg.DES3)


def test_kek_only_wraps(token: Pkcs11Keystore) -> None:
    kek = fresh("kek")
    info = token.generate(kek, Alg.AES, usage=Usage.KEK)
    assert info.bits == 256 and set(info.kcvs) == {"aes-gp", "aes-cmac"}
    with pytest.raises(KeystoreError, match="key-encryption key"):
        token.derive(kek, Alg.AES, LEVELS[:1])
    with pytest.raises(KeystoreError, match="key-encryption key"):
        token.handle(kek, Alg.AES)
    with pytest.raises(KeystoreError, match="must be AES"):
        token.generate(fresh("kek3"), Alg.DES3, usage=Usage.KEK)


def test_wrap_rfc3394_known_answer(token: Pkcs11Keystore) -> None:
    # RFC 3394 §4.1: 128-bit KEK 000102..0F wraps 00112233..FF to 1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5
    kek, key = fresh("kek"), fresh("wrapped")
    token.import_key(kek, Alg.AES, bytes.fromhex("000102030405060708090A0B0C0D0E0F"), usage=Usage.KEK)
    token.import_key(key, Alg.AES, bytes.fromhex("00112233445566778899AABBCCDDEEFF"), extractable=True)
    blob = token.wrap(key, Alg.AES, kek, mechanism="aes-kw")
    assert blob.wrapped.hex().upper() == "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"


def test_wrap_interoperates_with_the_encrypted_store(token: Pkcs11Keystore, tmp_path: Path) -> None:
    store = EncryptedKeystore.create(tmp_path / "s.cks", "pass", kdf=KdfParams.weak_for_tests(), allow_weak_kdf=True)
    kek_value = bytes(range(100, 132))
    kek = fresh("kek")
    token.import_key(kek, Alg.AES, kek_value, usage=Usage.KEK)
    store.import_key(kek, Alg.AES, kek_value, usage=Usage.KEK)
    for mech in ("aes-kw", "aes-kwp"):
        # token -> store
        name = fresh("xfer")
        info = token.generate(name, Alg.DES3, extractable=True)
        blob = WrappedKey.from_dict(token.wrap(name, Alg.DES3, kek, mechanism=mech).to_dict())
        got = store.unwrap(blob, kek, extractable=True)
        assert got.kcv == info.kcv
        # store -> token
        name2 = fresh("back")
        sinfo = store.generate(name2, Alg.AES, bits=256, extractable=True)
        back = token.unwrap(store.wrap(name2, Alg.AES, kek, mechanism=mech), kek)
        assert back.kcv == sinfo.kcv and back.bits == 256 and not back.extractable
        with pytest.raises(KeystoreError, match="not extractable"):
            token.key(name2, Alg.AES)


def test_unwrap_refuses_wrong_kek_and_wrong_kcv(token: Pkcs11Keystore) -> None:
    kek1, kek2, key = fresh("kek"), fresh("kek"), fresh("k")
    token.generate(kek1, Alg.AES, usage=Usage.KEK)
    token.generate(kek2, Alg.AES, usage=Usage.KEK)
    token.generate(key, Alg.AES, extractable=True)
    blob = token.wrap(key, Alg.AES, kek1)
    with pytest.raises(KeystoreError, match="wrapped under a KEK with KCV"):
        token.unwrap(blob, kek2, name=fresh("x"))
    lied = WrappedKey(**{**blob.__dict__, "kcv": "000000"})
    before = len(token.entries())
    with pytest.raises(KeystoreError, match="differs from the stated 000000"):
        token.unwrap(lied, kek1, name=fresh("x"))
    damaged = WrappedKey(**{**blob.__dict__, "wrapped": bytes([blob.wrapped[0] ^ 1]) + blob.wrapped[1:]})
    with pytest.raises(KeystoreError, match=r"wrapped key is invalid|unwrapping"):
        token.unwrap(damaged, kek1, name=fresh("x"))
    assert len(token.entries()) == before  # nothing left behind


@pytest.mark.parametrize("alg", [SignAlg.ECDSA_P256, SignAlg.RSA_2048])
def test_signing_keys_in_the_token(token: Pkcs11Keystore, alg: SignAlg) -> None:
    name = fresh("sign")
    info = token.generate(name, alg)
    signer = token.signer(name)
    pub = load_der_public_key(signer.public_key_der())
    from cardkit.keys.software import spki_fingerprint

    assert spki_fingerprint(signer.public_key_der()) == info.kcv
    data = b"manifest bytes"
    if alg is SignAlg.ECDSA_P256:
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        pub.verify(signer.sign(data), data, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 2048
        pub.verify(signer.sign(data), data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        pub.verify(signer.sign(data, pss=False), data, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(KeystoreError, match="never extractable"):
        token.generate(fresh("sign"), alg, extractable=True)


def test_sm4_is_refused_clearly(token: Pkcs11Keystore) -> None:
    with pytest.raises(KeystoreError, match="cannot hold SM4 keys: PKCS#11 defines no SM4 mechanism"):
        token.import_key(fresh("sm4"), Alg.SM4, bytes(16))
    with pytest.raises(KeystoreError, match="SM4"):
        token.derive("ssc-issuer", Alg.SM4, LEVELS[:2])


def test_open_errors_are_clear(softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARDKIT_PKCS11_MODULE", softhsm.module)
    monkeypatch.setenv("CARDKIT_PKCS11_PIN", "0000-wrong")
    with pytest.raises(KeystoreError, match="wrong PIN for token 'ck-errors'"):
        open_keystore("pkcs11:token=ck-errors")
    monkeypatch.setenv("CARDKIT_PKCS11_PIN", softhsm.pin)
    with pytest.raises(KeystoreError, match=r"no token labelled 'absent' .*tokens: ck-backend"):
        open_keystore("pkcs11:token=absent")
    with pytest.raises(KeystoreError, match=r"module /nonexistent.so does not exist"):
        open_keystore("pkcs11:token=ck-errors;module-path=/nonexistent.so")
    monkeypatch.delenv("CARDKIT_PKCS11_MODULE")
    with pytest.raises(KeystoreError, match="no PKCS#11 module"):
        open_keystore("pkcs11:token=ck-errors")
    monkeypatch.delenv("CARDKIT_PKCS11_PIN")
    with pytest.raises(KeystoreError, match=r"no user PIN .*CARDKIT_PKCS11_PIN"):
        open_keystore(f"pkcs11:token=ck-errors;module-path={softhsm.module}")
    ks = open_keystore(f"pkcs11:token=ck-errors;module-path={softhsm.module}", prompt=lambda q: softhsm.pin)
    with pytest.raises(KeystoreError, match=r"key 'nope' \(aes\) not found in token 'ck-errors'"):
        ks.derive("nope", Alg.AES, LEVELS[:1])
    # a second opener in the same process with another PIN is refused too (the login is shared)
    with pytest.raises(KeystoreError, match="wrong PIN"):
        Pkcs11Keystore(softhsm.module, "ck-errors", "another-pin")
    ks.close()


def test_pin_source_file(softhsm: SoftHsm, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    pin_file.chmod(0o600)
    ks = open_keystore(f"pkcs11:token=ck-spare;module-path={softhsm.module};pin-source={pin_file}")
    assert ks.entries() == [] or all(e.name for e in ks.entries())
    ks.close()


def test_a_key_deleted_elsewhere_is_not_served_from_the_lookup_cache(token: Pkcs11Keystore, softhsm: SoftHsm) -> None:
    name = fresh("gone")
    token.import_key(name, Alg.AES, bytes(range(16)))
    assert token.derive(name, Alg.AES, LEVELS[:2]).value == chain(bytes(range(16)), Alg.AES, LEVELS[:2])
    other = Pkcs11Keystore(softhsm.module, TOKEN, softhsm.pin)
    other.delete(name, Alg.AES)
    other.close()
    with pytest.raises(KeystoreError, match=f"token '{TOKEN}'"):
        token.derive(name, Alg.AES, LEVELS[:2])  # the cached object is gone: a clear error, cache dropped
    with pytest.raises(KeystoreError, match=f"key '{name}' \\(aes\\) not found"):
        token.derive(name, Alg.AES, LEVELS[:2])


def test_token_signer_signs_manifests_for_the_issuance_engine(token: Pkcs11Keystore) -> None:
    from cardkit.issuance.engine import sign_manifest, verify_manifest_signature

    name = fresh("station")
    token.generate(name, SignAlg.ECDSA_P256)
    signer = token.signer(name)
    manifest = {"profile": "ssc", "chip_serial": "5EC0A1D2", "files": {"SSSE/EF05": "00" * 32}}
    doc = sign_manifest(manifest, signer)
    assert doc["key_id"] == signer.key_id == token.info(name).kcv
    assert verify_manifest_signature(manifest, doc, [signer.public_key_pem()]) == signer.key_id
