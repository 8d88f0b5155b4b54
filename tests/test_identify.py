"""Offline key identification from one INITIALIZE UPDATE response."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.apdu import CommandApdu
from cardkit.crypto import Alg
from cardkit.sm.gp import Diversification, GpKeySet, InitializeUpdateError, diversify
from cardkit.sm.identify import identify, parse_initialize_update
from cardkit.sm.scp02 import Scp02Card
from cardkit.sm.scp03 import Scp03Card

ROOT = Path(__file__).resolve().parent.parent / "vectors"
V02 = json.loads((ROOT / "gp_scp02.json").read_text("utf-8"))
V03 = json.loads((ROOT / "gp_scp03.json").read_text("utf-8"))
GP_TEST_KEY = bytes.fromhex("404142434445464748494A4B4C4D4E4F")  # GP well-known TEST key
KDD = bytes.fromhex("0000A1B2C3D4E5F60718")
AID = bytes.fromhex("A000000151000000")
HC8 = bytes.fromhex("0102030405060708")
h = bytes.fromhex


def ks(alg: Alg, n: int, salt: int) -> GpKeySet:
    return GpKeySet(bytes((salt + k) & 0xFF for k in range(n)), bytes((salt + 2 * k) & 0xFF for k in range(n)),
                    bytes((salt + 3 * k) & 0xFF for k in range(n)), 0x20, alg=alg)


def candidates(alg: Alg, n: int, real: GpKeySet) -> dict[str, GpKeySet]:
    return {"decoy-a": ks(alg, n, 1), "other alg": ks(Alg.AES if alg is Alg.DES3 else Alg.DES3, 16, 2),
            "master": real, "decoy-b": ks(alg, n, 3)}


@pytest.mark.parametrize("scheme", [Diversification.NONE, Diversification.EMV, Diversification.VISA2])
def test_scp02_finds_keyset_and_scheme(scheme: Diversification) -> None:
    master = ks(Alg.DES3, 16, 40)
    card_keys = diversify(master, scheme, KDD)
    card = Scp02Card(card_keys, 0x0010, kdd=KDD, rng=lambda n: bytes(range(n)))
    resp = card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, HC8, le=256))
    matches = identify(resp.to_bytes(), HC8, candidates(Alg.DES3, 16, master))
    assert [(m.label, m.scheme, m.protocol) for m in matches] == [("master", scheme, "SCP02")]
    m = matches[0]
    assert m.keys == card_keys and m.proven == ("enc",)
    assert "master" in m.explanation and "ENC" in m.explanation
    assert card_keys.kcvs()["enc"].hex().upper() in m.explanation
    for key in (card_keys.enc, card_keys.mac, master.enc):
        assert key.hex() not in m.explanation.lower() and key.hex() not in repr(m).lower()


@pytest.mark.parametrize("scheme", [Diversification.NONE, Diversification.KDF3])
@pytest.mark.parametrize("n", [16, 32])
def test_scp03_finds_keyset_and_scheme(scheme: Diversification, n: int) -> None:
    master = ks(Alg.AES, n, 60)
    card_keys = diversify(master, scheme, KDD)
    card = Scp03Card(card_keys, 5, AID, kdd=KDD)
    resp = card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, HC8, le=256))
    found = identify(resp.data, HC8, candidates(Alg.AES, n, master))
    assert [(m.label, m.scheme, m.proven) for m in found] == [("master", scheme, ("mac",))]
    found = identify(resp.data, HC8, candidates(Alg.AES, n, master), isd_aid=AID)
    assert found[0].proven == ("mac", "enc") and "ENC" in found[0].explanation
    # An ENC key that differs only there: the cryptogram (MAC key) still matches, the challenge does not.
    half = GpKeySet(bytes(n), card_keys.mac, card_keys.dek, alg=Alg.AES)
    only_mac = identify(resp.data, HC8, {"half": half}, schemes=[Diversification.NONE], isd_aid=AID)
    assert [m.proven for m in only_mac] == [("mac",)]


def test_scp03_s16_and_no_match() -> None:
    keys = ks(Alg.AES, 16, 5)
    card = Scp03Card(keys, 5, AID, s16=True)
    resp = card.initialize_update(CommandApdu(0x80, 0x50, 0, 0, HC8 * 2, le=256))
    assert len(resp.data) == 48 and parse_initialize_update(resp.data)["s16"] is True
    assert [m.label for m in identify(resp.data, HC8 * 2, [ks(Alg.AES, 16, 6), keys])] == ["candidate 2"]
    assert identify(resp.data, HC8 * 2, [ks(Alg.AES, 16, 6)]) == []
    with pytest.raises(InitializeUpdateError, match="host challenge"):
        identify(resp.data, HC8, [keys])


def test_published_scp02_response() -> None:
    v = V02["initialize_update"][0]
    gp = GpKeySet.single(GP_TEST_KEY, alg=Alg.DES3)
    cands = {"GP test keys": gp, "zero": ks(Alg.DES3, 16, 0)}
    found = identify(h(v["response"] + v["sw"]), h(v["host_challenge"]), cands)
    assert [(m.label, m.scheme, m.protocol) for m in found] == [("GP test keys", Diversification.NONE, "SCP02")]
    info = parse_initialize_update(h(v["response"]))
    assert info["key_version"] == 0x20 and info["scp_id"] == 2 and info["sequence_counter"] == h("000D")
    assert info["kdd"] == h("00000265018303953662") and info["card_challenge"] == h("E9C62BA1C4C8")
    assert info["card_cryptogram"] == h("E55FCB91B6654CE4") and info["i"] is None


def test_published_scp03_responses() -> None:
    gp = GpKeySet.single(GP_TEST_KEY, alg=Alg.AES)
    for s in V03["sessions"]:
        cands = {"gp": gp, "x": ks(Alg.AES, 16, 9)}
        found = identify(h(s["initialize_update_response"]), h(s["host_challenge"]), cands, isd_aid=AID)
        assert [m.label for m in found] == ["gp"]
        pseudo = parse_initialize_update(h(s["initialize_update_response"]))["i"] == 0x70
        assert found[0].proven == (("mac", "enc") if pseudo else ("mac",))  # AID: an inference, see the vector notes


def test_parse_fields_and_errors() -> None:
    raw = h(V03["sessions"][3]["initialize_update_response"])
    info = parse_initialize_update(raw + b"\x90\x00")
    assert info == {"protocol": "SCP03", "kdd": raw[:10], "key_version": 0x31, "scp_id": 3, "i": 0x70,
                    "sequence_counter": h("00001D"), "card_challenge": raw[13:21], "card_cryptogram": raw[21:29],
                    "s16": False}
    for bad in (b"", raw[:27], raw + b"\x00", bytes(10) + b"\x01\x01" + bytes(16)):
        with pytest.raises(InitializeUpdateError):
            parse_initialize_update(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=52))
def test_parse_random_bytes(data: bytes) -> None:
    try:
        info = parse_initialize_update(data)
    except InitializeUpdateError:
        return
    assert info["protocol"] in ("SCP02", "SCP03")
    assert isinstance(info["kdd"], bytes) and len(info["kdd"]) == 10
