"""Scheme derivation through key handles equals cardkit.crypto.diversify; offline key identification with
candidate key sets from a keystore (masters stay in the keystore)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardkit.apdu import CommandApdu
from cardkit.crypto import Alg, emv_cps, kdf3, visa2
from cardkit.errors import KeystoreError
from cardkit.keys.encrypted import EncryptedKeystore, KdfParams
from cardkit.keys.store import SoftwareKeyHandle
from cardkit.keys.tools import candidate_sets, derive_with_handle, identify_with_keystore
from cardkit.sm.gp import Diversification, GpKeySet, diversify
from cardkit.sm.scp02 import Scp02Card
from cardkit.sm.scp03 import Scp03Card

GP_TEST_KEY = bytes.fromhex("404142434445464748494A4B4C4D4E4F")  # GP well-known TEST key
KDD = bytes.fromhex("0000A1B2C3D4E5F60718")
AID = bytes.fromhex("A000000151000000")
HC8 = bytes.fromhex("0102030405060708")


@pytest.mark.parametrize("kid", [1, 2, 3])
def test_handle_derivation_equals_the_crypto_functions(kid: int) -> None:
    d = SoftwareKeyHandle("kmc", Alg.DES3, GP_TEST_KEY)
    assert derive_with_handle(d, "emv", KDD, kid) == emv_cps(GP_TEST_KEY, KDD, kid)
    assert derive_with_handle(d, "visa2", KDD, kid) == visa2(GP_TEST_KEY, KDD, kid)
    for n in (16, 24, 32):
        m = bytes(range(n))
        assert derive_with_handle(SoftwareKeyHandle("a", Alg.AES, m), "kdf3", KDD, kid) == kdf3(m, KDD, kid)


def test_handle_derivation_errors() -> None:
    d = SoftwareKeyHandle("kmc", Alg.DES3, GP_TEST_KEY)
    with pytest.raises(KeystoreError, match="kdf3 diversification needs an AES master"):
        derive_with_handle(d, "kdf3", KDD, 1)
    with pytest.raises(KeystoreError, match="emv diversification needs a 3DES master"):
        derive_with_handle(SoftwareKeyHandle("a", Alg.AES, bytes(16)), "emv", KDD, 1)
    with pytest.raises(KeystoreError, match="must be 10 bytes"):
        derive_with_handle(d, "emv", KDD[:9], 1)
    with pytest.raises(KeystoreError, match="unknown diversification scheme"):
        derive_with_handle(d, "md5", KDD, 1)


@pytest.fixture
def store(tmp_path: Path) -> EncryptedKeystore:
    s = EncryptedKeystore.create(tmp_path / "s.cks", "identify passphrase", kdf=KdfParams.weak_for_tests(),
                                 allow_weak_kdf=True)
    s.import_key("decoy", Alg.DES3, bytes(range(1, 17)))
    s.import_key("bureau-kmc", Alg.DES3, GP_TEST_KEY)  # non-extractable master
    for part, salt in (("enc", 60), ("mac", 61), ("dek", 62)):
        s.import_key(f"isd-{part}", Alg.AES, bytes((salt + i) & 0xFF for i in range(16)))
    s.import_key("static", Alg.AES, bytes(range(100, 116)), extractable=True)
    return s


def test_candidate_sets(store: EncryptedKeystore) -> None:
    labels = {c.label: c.names for c in candidate_sets(store)}
    assert labels["isd (aes)"] == ("isd-enc", "isd-mac", "isd-dek")
    assert labels["bureau-kmc (3des)"] == ("bureau-kmc",) * 3
    assert [c.label for c in candidate_sets(store, ["static"])] == ["static (aes)"]


@pytest.mark.parametrize("scheme", [Diversification.EMV, Diversification.VISA2])
def test_identify_scp02_diversified_from_a_non_extractable_master(store: EncryptedKeystore,
                                                                   scheme: Diversification) -> None:
    card_keys = diversify(GpKeySet.single(GP_TEST_KEY, alg=Alg.DES3), scheme, KDD)
    card = Scp02Card(card_keys, 0x0010, kdd=KDD, rng=lambda n: bytes(range(n)))
    resp = card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, HC8, le=256)).to_bytes()
    hits = identify_with_keystore(resp, HC8, store)
    assert [(h.label, h.scheme, h.protocol, h.proven) for h in hits] == \
        [("bureau-kmc (3des)", scheme.value, "SCP02", ("enc",))]
    assert card_keys.kcvs()["enc"].hex().upper() in hits[0].explanation
    assert GP_TEST_KEY.hex() not in hits[0].explanation.lower()


def test_identify_scp03_key_set_and_static_keys(store: EncryptedKeystore) -> None:
    master = GpKeySet(*(bytes((s + i) & 0xFF for i in range(16)) for s in (60, 61, 62)), alg=Alg.AES)
    card = Scp03Card(diversify(master, Diversification.KDF3, KDD), 5, AID, kdd=KDD)
    resp = card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, HC8, le=256)).data
    hits = identify_with_keystore(resp, HC8, store, isd_aid=AID)
    assert [(h.label, h.scheme, h.proven) for h in hits] == [("isd (aes)", "kdf3", ("mac", "enc"))]
    static = Scp03Card(GpKeySet.single(bytes(range(100, 116)), alg=Alg.AES), 5, AID, kdd=KDD)
    resp2 = static.initialize_update(CommandApdu(0x80, 0x50, 0, 0, HC8, le=256)).data
    assert [(h.label, h.scheme) for h in identify_with_keystore(resp2, HC8, store)] == [("static (aes)", "none")]
    other = Scp03Card(GpKeySet.single(bytes(16), alg=Alg.AES), 5, AID, kdd=KDD)
    resp3 = other.initialize_update(CommandApdu(0x80, 0x50, 0, 0, HC8, le=256)).data
    assert identify_with_keystore(resp3, HC8, store) == []
