"""Key diversification: EMV CPS, VISA2, kdf3, templates and multi-level chains."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardkit.crypto import (
    EMV_CPS_TEMPLATE,
    VISA2_TEMPLATE,
    Alg,
    DiversificationTemplate,
    TemplateError,
    chain,
    ecb_encrypt,
    emv_cps,
    kdf3,
    visa2,
)
from cardkit.errors import CryptoError, KeyError_

KMC = bytes.fromhex("404142434445464748494a4b4c4d4e4f")
kdds = st.binary(min_size=10, max_size=10)
ids = st.integers(min_value=0, max_value=255)


@given(kdds, ids)
def test_emv_cps_layout_and_template(kdd: bytes, i: int) -> None:
    data = kdd[4:10] + bytes([0xF0, i]) + kdd[4:10] + bytes([0x0F, i])
    key = emv_cps(KMC, kdd, i)
    assert key == ecb_encrypt(Alg.DES3, KMC, data)
    assert EMV_CPS_TEMPLATE.derive(KMC, {"kdd": kdd, "id": bytes([i])}) == key
    assert EMV_CPS_TEMPLATE.derive(KMC, {"kdd": kdd, "id": i}) == key  # type: ignore[dict-item]


@given(kdds, ids)
def test_visa2_layout_and_template(kdd: bytes, i: int) -> None:
    half = kdd[0:2] + kdd[4:8]
    key = visa2(KMC, kdd, i)
    assert key == ecb_encrypt(Alg.DES3, KMC, half + bytes([0xF0, i]) + half + bytes([0x0F, i]))
    assert VISA2_TEMPLATE.derive(KMC, {"kdd": kdd, "id": bytes([i])}) == key


@pytest.mark.parametrize("n", [16, 24, 32])
def test_kdf3_length_and_separation(n: int) -> None:
    master = bytes(range(n))
    kdd = bytes(range(10))
    keys = [kdf3(master, kdd, i) for i in (1, 2, 3)]
    assert all(len(k) == n for k in keys)
    assert len(set(keys)) == 3


def test_fixed_scheme_misuse() -> None:
    for fn in (emv_cps, visa2):
        with pytest.raises(CryptoError):
            fn(KMC, bytes(9), 1)
        with pytest.raises(CryptoError):
            fn(KMC, bytes(10), 256)
        with pytest.raises(KeyError_):
            fn(bytes(8), bytes(10), 1)
    with pytest.raises(KeyError_):
        kdf3(bytes(20), bytes(10), 1)
    with pytest.raises(CryptoError):
        kdf3(KMC, bytes(11), 1)


def test_template_tokens() -> None:
    t = DiversificationTemplate.parse(Alg.SM4, "serial[-4:] ~serial[-4:] field:region 0x0000 kdd[3] id F0")
    serial = bytes.fromhex("0011223344556677")
    values = {"serial": serial, "region": bytes.fromhex("639900"), "kdd": bytes(range(10)), "id": b"\x07"}
    data = t.data(values)
    assert data == bytes.fromhex("44556677bbaa998863990000000307f0")
    assert t.derive(KMC, values) == ecb_encrypt(Alg.SM4, KMC, data)
    assert t.parts[0] == "serial[-4:]"


def test_template_is_a_frozen_value() -> None:
    a = DiversificationTemplate(Alg.DES3, ("kdd[4:10]", "F0", "id", "kdd[4:10]", "0F", "id"))
    assert a == EMV_CPS_TEMPLATE and hash(a) == hash(EMV_CPS_TEMPLATE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.alg = Alg.AES  # type: ignore[misc]


@pytest.mark.parametrize("tokens", [("kdd[",), ("-x",), ("k d",), ("field:",), ("kdd[]",), ("1x",), ()])
def test_template_bad_tokens(tokens: tuple[str, ...]) -> None:
    with pytest.raises(TemplateError):
        DiversificationTemplate(Alg.DES3, tokens)


def test_template_evaluation_errors_name_the_value_not_the_bytes() -> None:
    with pytest.raises(TemplateError) as ei:
        EMV_CPS_TEMPLATE.derive(KMC, {"kdd": bytes(10)})
    assert "'id'" in str(ei.value)
    secret = bytes.fromhex("deadbeefcafe")
    with pytest.raises(TemplateError) as ei:
        EMV_CPS_TEMPLATE.derive(KMC, {"kdd": secret, "id": b"\x01"})  # too short for kdd[4:10]
    assert "deadbeef" not in str(ei.value).lower()
    with pytest.raises(TemplateError):
        DiversificationTemplate(Alg.DES3, ("serial",)).derive(KMC, {"serial": bytes(7)})  # not block aligned
    with pytest.raises(TemplateError):
        DiversificationTemplate(Alg.DES3, ("serial[9]", "00" * 7)).derive(KMC, {"serial": bytes(8)})
    with pytest.raises(KeyError_):
        EMV_CPS_TEMPLATE.derive(bytes(8), {"kdd": bytes(10), "id": b"\x01"})


@given(st.lists(st.text(min_size=1, max_size=12).filter(lambda s: not s.isspace()), min_size=1, max_size=5))
def test_template_parser_only_raises_template_error(tokens: list[str]) -> None:
    try:
        t = DiversificationTemplate(Alg.AES, tuple(tokens))
    except TemplateError:
        return
    try:
        t.data({"kdd": bytes(16), "id": b"\x01"})
    except TemplateError:
        pass


def _inv(d: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in d)


@pytest.mark.parametrize(("alg", "master"), [(Alg.DES3, KMC), (Alg.SM4, KMC), (Alg.AES, bytes(range(32)))])
def test_chain(alg: Alg, master: bytes) -> None:
    d1, d2, d3 = bytes.fromhex("1100000000000000"), bytes.fromhex("1122000000000000"), bytes(range(8))
    assert chain(master, alg, []) == master
    k1 = chain(master, alg, [d1])
    assert k1 == ecb_encrypt(alg, master, d1 + _inv(d1))
    assert len(k1) == 16
    k3 = chain(master, alg, [d1, d2, d3])
    assert k3 == chain(chain(k1, alg, [d2]), alg, [d3])
    assert k3 != chain(master, alg, [d1, d3, d2])


def test_chain_3des_left_right_halves() -> None:
    d = bytes.fromhex("0123456789abcdef")
    k = chain(KMC, Alg.DES3, [d])
    assert k[:8] == ecb_encrypt(Alg.DES3, KMC, d)
    assert k[8:] == ecb_encrypt(Alg.DES3, KMC, _inv(d))


def test_chain_misuse() -> None:
    with pytest.raises(CryptoError):
        chain(KMC, Alg.SM4, [bytes(16)])
    with pytest.raises(KeyError_):
        chain(bytes(24), Alg.SM4, [bytes(8)])


def test_chain_des_parity_option() -> None:
    d = bytes.fromhex("5678123456789101")
    plain = chain(KMC, Alg.DES3, [d])
    adjusted = chain(KMC, Alg.DES3, [d], des_parity=True)
    assert all(bin(b).count("1") % 2 == 1 for b in adjusted)
    assert bytes(b & 0xFE for b in plain) == bytes(b & 0xFE for b in adjusted)
    with pytest.raises(CryptoError):
        chain(KMC, Alg.SM4, [d], des_parity=True)
