"""Known-answer tests: every crypto vector file in vectors/ is loaded and every case checked.

Each file carries a ``source`` naming the published document; a failing case fails the suite.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cardkit.crypto import (
    Alg,
    KcvMethod,
    cmac,
    des3_cbc_decrypt,
    des3_cbc_encrypt,
    ecb_decrypt,
    ecb_encrypt,
    emv_cps,
    icao_kdf,
    kcv,
    kdf3,
    retail_mac,
    scp03_kdf,
    sm3,
    sp800_108_cmac,
    visa2,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

Case = dict[str, Any]


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def check_cmac(c: Case) -> None:
    alg = {"aes": Alg.AES, "3des": Alg.DES3}[c["alg"]]
    assert cmac(alg, h(c["key"]), h(c["msg"])) == h(c["tag"])


def check_kbkdf(c: Case) -> None:
    out = sp800_108_cmac(h(c["ki"]), Alg.AES, h(c["before"]), h(c["after"]), c["L"], c["rlen_bits"] // 8)
    assert out == h(c["ko"])


def check_sm4(c: Case) -> None:
    key, block = h(c["key"]), h(c["plaintext"])
    for _ in range(c["iterations"]):
        block = ecb_encrypt(Alg.SM4, key, block)
    assert block == h(c["ciphertext"])
    if c["iterations"] == 1:
        assert ecb_decrypt(Alg.SM4, key, block) == h(c["plaintext"])


def check_sm3(c: Case) -> None:
    assert sm3(h(c["message"])) == h(c["digest"])


def check_kcv(c: Case) -> None:
    assert kcv(h(c["key"]), KcvMethod(c["method"])) == h(c["kcv"])


def check_retail_mac(c: Case) -> None:
    assert retail_mac(h(c["key"]), h(c["data"])) == h(c["mac"])


def check_icao_kdf(c: Case) -> None:
    assert icao_kdf(h(c["seed"]), c["counter"], "3des") == h(c["key"])


def check_icao_cbc(c: Case) -> None:
    assert des3_cbc_encrypt(h(c["key"]), h(c["plaintext"])) == h(c["ciphertext"])
    assert des3_cbc_decrypt(h(c["key"]), h(c["ciphertext"])) == h(c["plaintext"])


def check_emv_cps(c: Case) -> None:
    key = emv_cps(h(c["master"]), h(c["kdd"]), c["key_id"])
    assert kcv(key, KcvMethod(c["kcv_method"])) == h(c["kcv"])


def check_gp_div(c: Case) -> None:
    fn = {"visa2": visa2, "kdf3": kdf3}[c["scheme"]]
    key = fn(h(c["master"]), h(c["kdd"]), c["key_id"])
    if "key" in c:
        assert key == h(c["key"])
    else:
        assert kcv(key, KcvMethod(c["kcv_method"])) == h(c["kcv"])


def check_scp03(c: Case) -> None:
    key = scp03_kdf(h(c["key"]), c["constant"], h(c["context"]), c["length_bits"])
    assert len(key) == c["length_bits"] // 8
    assert kcv(key, KcvMethod(c["kcv_method"])) == h(c["kcv"])


def check_aes_ecb(c: Case) -> None:
    assert ecb_encrypt(Alg.AES, h(c["key"]), h(c["plaintext"])) == h(c["ciphertext"])
    assert ecb_decrypt(Alg.AES, h(c["key"]), h(c["ciphertext"])) == h(c["plaintext"])


# file -> [(list key in the file, checker, minimum number of cases)]
KNOWN: dict[str, list[tuple[str, Callable[[Case], None], int]]] = {
    "nist_sp800_38b_cmac.json": [("cases", check_cmac, 20)],
    "nist_sp800_108_kbkdf_cmac.json": [("cases", check_kbkdf, 10)],
    "gbt32907_sm4.json": [("cases", check_sm4, 2)],
    "gbt32905_sm3.json": [("cases", check_sm3, 2)],
    "kcv.json": [("cases", check_kcv, 1)],
    "retail_mac.json": [("cases", check_retail_mac, 2)],
    "icao9303_bac.json": [("kdf_cases", check_icao_kdf, 4), ("cbc_cases", check_icao_cbc, 2)],
    "emv_cps.json": [("cases", check_emv_cps, 3)],
    "gp_diversification.json": [("cases", check_gp_div, 10)],
    "scp03_kdf.json": [("cases", check_scp03, 3)],
    "nist_sp800_38a_aes_ecb.json": [("cases", check_aes_ecb, 3)],
}


def _params() -> list[Any]:
    out: list[Any] = []
    for fname, groups in sorted(KNOWN.items()):
        path = VECTORS / fname
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        for key, checker, _ in groups:
            for i, case in enumerate(data.get(key, [])):
                marks = [pytest.mark.slow] if case.get("slow") else []
                out.append(pytest.param(checker, case, id=f"{fname}:{key}[{i}] {case.get('name', '')}", marks=marks))
    return out


@pytest.mark.parametrize(("fname", "groups"), sorted(KNOWN.items()), ids=sorted(KNOWN))
def test_vector_file_is_well_formed(fname: str, groups: list[tuple[str, Callable[[Case], None], int]]) -> None:
    path = VECTORS / fname
    assert path.exists(), f"missing vector file {fname}"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data.get("source"), str) and len(data["source"]) > 20, "each file names its source"
    for key, _, minimum in groups:
        assert len(data.get(key, [])) >= minimum, f"{fname}: expected at least {minimum} {key}"


@pytest.mark.parametrize(("checker", "case"), _params())
def test_vector(checker: Callable[[Case], None], case: Case) -> None:
    checker(case)


def test_readme_lists_every_known_file() -> None:
    readme = (VECTORS / "README.md").read_text(encoding="utf-8")
    for fname in KNOWN:
        assert fname in readme, f"vectors/README.md does not list {fname}"


def test_a_wrong_expected_value_fails() -> None:
    # The checkers must be able to fail: flip one bit of a published tag.
    data = json.loads((VECTORS / "nist_sp800_38b_cmac.json").read_text(encoding="utf-8"))
    case = dict(data["cases"][0])
    tag = bytearray(h(case["tag"]))
    tag[0] ^= 1
    case["tag"] = tag.hex()
    with pytest.raises(AssertionError):
        check_cmac(case)
