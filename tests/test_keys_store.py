"""Key references (URIs), where secrets come from, the TEST key file and the key handle interface."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.crypto import Alg, KcvMethod, chain, cmac, ecb_encrypt, kcv
from cardkit.errors import KeystoreError
from cardkit.keys.entry import obtain_secret, parse_hex_secret, read_secret_file
from cardkit.keys.store import (
    KeyAdmin,
    KeyCustody,
    KeyHandle,
    SoftwareKeyHandle,
    TestKeyFile,
    split_version,
)
from cardkit.keys.uri import KeyUri, open_keystore, parse_key_uri
from cardkit.readers import TEST_KEYS


def test_uri_forms() -> None:
    assert parse_key_uri("file:keys/test/ssc.toml") == KeyUri("file", "keys/test/ssc.toml")
    assert parse_key_uri("store:/srv/b.cks#ssc-issuer@2") == KeyUri("store", "/srv/b.cks", "ssc-issuer@2")
    u = parse_key_uri("pkcs11:token=Bureau%20HSM;object=ssc-issuer;module-path=/usr/lib/x.so;pin-source=/run/pin")
    assert (u.scheme, u.location, u.object, u.module_path, u.pin_source) == \
        ("pkcs11", "Bureau HSM", "ssc-issuer", "/usr/lib/x.so", "/run/pin")
    assert u.keystore == "pkcs11:token=Bureau HSM" and str(u) == "pkcs11:token=Bureau HSM;object=ssc-issuer"
    assert parse_key_uri("pkcs11:token=t?module-path=/m.so").module_path == "/m.so"  # RFC 7512 query attributes


@pytest.mark.parametrize(("text", "message"), [
    ("nothing", "not a key URI"),
    ("ftp:x", "unknown key URI scheme 'ftp'"),
    ("store:", "store: URI without a path"),
    ("pkcs11:object=k", "needs token=LABEL"),
    ("pkcs11:token=t;pin-value=1234", "pin-value refused"),
    ("pkcs11:token=t;tokn=x", "unknown pkcs11 URI attribute 'tokn'"),
    ("pkcs11:token=t;token=u", "given twice"),
    ("pkcs11:token=%zz", "bad percent-encoding"),
    ("pkcs11:token", "has no value"),
    ("store:/x#bad/name", "invalid key name"),
    ("store:/x#k@0", "invalid key version"),
])
def test_bad_uris_are_clear(text: str, message: str) -> None:
    with pytest.raises(KeystoreError, match=message):
        parse_key_uri(text)


def test_pin_value_never_echoes_the_pin() -> None:
    with pytest.raises(KeystoreError) as ei:
        parse_key_uri("pkcs11:token=t;pin-value=987654")
    assert "987654" not in str(ei.value)


def test_secrets_come_from_env_or_prompt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CK_TEST_SECRET", "s3cret")
    assert obtain_secret("thing", "CK_TEST_SECRET", None) == "s3cret"
    monkeypatch.setenv("CK_TEST_SECRET", "")
    with pytest.raises(KeystoreError, match="CK_TEST_SECRET is set but empty"):
        obtain_secret("thing", "CK_TEST_SECRET", None)
    monkeypatch.delenv("CK_TEST_SECRET")
    with pytest.raises(KeystoreError, match=r"set CK_TEST_SECRET or run interactively .*never taken from the"):
        obtain_secret("thing", "CK_TEST_SECRET", None)
    asked: list[str] = []
    assert obtain_secret("thing", "CK_TEST_SECRET", lambda q: asked.append(q) or "typed") == "typed"
    assert asked == ["thing"]
    with pytest.raises(KeystoreError, match="no thing entered"):
        obtain_secret("thing", None, lambda q: "")
    assert parse_hex_secret("0011 22:33", "key") == bytes.fromhex("00112233")
    with pytest.raises(KeystoreError, match="key is not hexadecimal") as ei:
        parse_hex_secret("00112g", "key")
    assert "00112g" not in str(ei.value)
    f = tmp_path / "pin"
    f.write_text("123456\n")
    f.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert read_secret_file(f, "PIN") == "123456"
    assert "readable by group/others" in caplog.text and "123456" not in caplog.text
    f.write_text("")
    with pytest.raises(KeystoreError, match=r"PIN file .* is empty"):
        read_secret_file(f, "PIN")
    with pytest.raises(KeystoreError, match="cannot read PIN file"):
        read_secret_file(tmp_path / "none", "PIN")


def test_test_key_file_is_refused_unless_allowed() -> None:
    with pytest.raises(KeystoreError, match="TEST keys; refusing"):
        open_keystore(f"file:{TEST_KEYS}")
    ks = open_keystore(f"file:{TEST_KEYS}", allow_test_keys=True)
    assert isinstance(ks, KeyCustody) and not isinstance(ks, KeyAdmin)
    assert ks.label == f"file:{TEST_KEYS}"


def test_test_key_file_entries_and_handles(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        ks = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    assert "TEST keys" in caplog.text
    entries = ks.entries()
    assert {(e.name, e.alg) for e in entries} >= {("ssc-issuer", "3des"), ("ssc-issuer", "sm4")}
    issuer = ks.key("ssc-issuer", Alg.SM4)
    info = ks.info("ssc-issuer", Alg.SM4)
    assert info.kcv == issuer.kcv and info.extractable and info.origin == "test-file" and info.version == 1
    assert issuer.value.hex() not in repr(entries).lower()
    with pytest.raises(KeystoreError, match="several algorithms"):
        ks.info("ssc-issuer")
    assert ks.key("ssc-issuer@1", Alg.SM4) == issuer
    with pytest.raises(KeystoreError, match="only version 1"):
        ks.key("ssc-issuer@2", Alg.SM4)
    levels = [bytes(8), bytes(range(8))]
    h = ks.derive_handle("ssc-issuer", Alg.SM4, levels)
    want = chain(issuer.value, Alg.SM4, levels)
    assert isinstance(h, KeyHandle)
    assert h.encrypt_ecb(bytes(16)) == ecb_encrypt(Alg.SM4, want, bytes(16))
    assert h.cmac(b"x") == cmac(Alg.SM4, want, b"x") and h.length == 16
    assert ks.handle("ssc-issuer", Alg.DES3).kcv() == kcv(ks.key("ssc-issuer", Alg.DES3).value,
                                                          KcvMethod.DES3_ZEROS).hex().upper()
    with pytest.raises(KeystoreError, match="no signing keys"):
        ks.signer("x")


def test_software_handle_repr_and_close() -> None:
    h = SoftwareKeyHandle("k", Alg.AES, bytes(range(16)))
    assert "0001020304" not in repr(h)
    assert h.kcv(KcvMethod.AES_CMAC) == kcv(bytes(range(16)), KcvMethod.AES_CMAC).hex().upper()
    h.close()
    with pytest.raises(KeystoreError, match="closed"):
        h.cmac(b"")


def test_split_version() -> None:
    assert split_version("a.b_c-1") == ("a.b_c-1", None)
    assert split_version("k@12") == ("k", 12)
    for bad in ("", "-x", "k@", "k@x", "a b", "x" * 65):
        with pytest.raises(KeystoreError):
            split_version(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.sampled_from(["pkcs11:", "store:", "file:", "pkcs11:token="]).flatmap(
    lambda p: st.text(max_size=60).map(lambda t: p + t)))
def test_uri_parser_raises_only_keystore_errors(text: str) -> None:
    try:
        parse_key_uri(text)
    except KeystoreError:
        pass
