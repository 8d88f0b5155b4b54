"""PUT KEY key data (GPCS 2.3.1 §11.8, Amendment D §7.2): published values, round trips, misuse, channels."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg
from cardkit.errors import CardkitError
from cardkit.sm.gp import GpKeySet
from cardkit.sm.putkey import (
    KEY_TYPE_AES,
    KEY_TYPE_DES,
    KeyAlgorithmError,
    KeyCheckValueError,
    PutKeyError,
    PutKeyFormatError,
    check_put_key_response,
    decode_put_key_data,
    decrypt_with_dek,
    encode_key,
    encrypt_with_dek,
    key_check_value,
    parse_put_key_data,
    put_key_apdu,
    put_key_data,
    put_key_response,
)
from cardkit.sm.scp02 import Scp02Card, Scp02Host
from cardkit.sm.scp03 import Scp03Card, Scp03Host

ROOT = Path(__file__).resolve().parent.parent / "vectors"
V02 = json.loads((ROOT / "gp_scp02.json").read_text("utf-8"))
V03 = json.loads((ROOT / "gp_scp03.json").read_text("utf-8"))
h = bytes.fromhex


def keys(alg: Alg, n: int, salt: int = 0, version: int = 0) -> GpKeySet:
    def key(m: int, a: int) -> bytes:
        return bytes((salt + m * k + a) & 0xFF for k in range(n))

    return GpKeySet(key(5, 1), key(7, 2), key(11, 3), version, alg=alg)


# ----------------------------------------------------------------------------------------------- published


def test_published_put_key_aes_keys_under_scp02_session_dek() -> None:
    v = V02["put_key"][0]
    new = GpKeySet.single(h(v["new_key"]), alg=Alg.AES)
    data = put_key_data(new, v["new_version"], h(v["session_dek"]), Alg.DES3)
    assert data == h(v["data"])
    assert put_key_apdu(0, data).to_bytes() == h(v["apdu"])
    assert parse_put_key_data(data, h(v["session_dek"]), dek_alg=Alg.DES3) == (v["new_version"], [h(v["new_key"])] * 3)


def test_published_scp03_dek_encryption() -> None:
    v = V03["dek_encryption"][0]
    assert encrypt_with_dek(h(v["dek"]), h(v["plaintext"]), Alg.AES) == h(v["ciphertext"])
    assert decrypt_with_dek(h(v["dek"]), h(v["ciphertext"]), Alg.AES) == h(v["plaintext"])


def test_gp_test_key_kcvs() -> None:
    gp = h("404142434445464748494A4B4C4D4E4F")
    assert key_check_value(gp, Alg.DES3) == h("8BAF47") and key_check_value(gp, Alg.AES) == h("504A77")


# ----------------------------------------------------------------------------------------------- layout


@pytest.mark.parametrize(("alg", "n", "dek_alg", "dek_n", "field_len", "cipher_len"), [
    (Alg.AES, 16, Alg.AES, 16, 0x11, 16), (Alg.AES, 24, Alg.AES, 24, 0x21, 32),
    (Alg.AES, 32, Alg.AES, 32, 0x21, 32), (Alg.AES, 32, Alg.AES, 16, 0x21, 32),
    (Alg.DES3, 16, Alg.DES3, 16, 0x10, 16), (Alg.DES3, 24, Alg.DES3, 24, 0x18, 24),
    (Alg.AES, 24, Alg.DES3, 16, 0x19, 24),
])
def test_key_field_layout_and_round_trip(alg: Alg, n: int, dek_alg: Alg, dek_n: int, field_len: int,
                                         cipher_len: int) -> None:
    new = keys(alg, n, version=0x31)
    dek = keys(dek_alg, dek_n, salt=99).dek
    field = encode_key(new.enc, alg, dek, dek_alg)
    if alg is Alg.AES:
        assert field[:3] == bytes([KEY_TYPE_AES, field_len, n])
        body = field[3 : 3 + cipher_len]
    else:
        assert field[:2] == bytes([KEY_TYPE_DES, field_len])
        body = field[2 : 2 + cipher_len]
    assert field[-4:] == b"\x03" + key_check_value(new.enc, alg)
    assert new.enc not in field and new.enc not in body
    data = put_key_data(new, 0x31, dek, dek_alg)
    decoded = decode_put_key_data(data, dek, dek_alg=dek_alg)
    assert decoded.version == 0x31 and decoded.keys == (new.enc, new.mac, new.dek)
    assert decoded.algs == (alg,) * 3 and list(decoded.kcvs) == [new.kcvs()[k] for k in ("enc", "mac", "dek")]
    assert "keys" not in repr(decoded) or new.enc.hex() not in repr(decoded)
    check_put_key_response(put_key_response(0x31, decoded.kcvs), new.kcvs(), expected_version=0x31)


# ----------------------------------------------------------------------------------------------- misuse


def test_wrong_kcv_is_9485() -> None:
    dek = keys(Alg.AES, 16).dek
    data = bytearray(put_key_data(keys(Alg.AES, 16, salt=3), 0x31, dek, Alg.AES))
    data[-1] ^= 1
    with pytest.raises(KeyCheckValueError) as exc:
        decode_put_key_data(bytes(data), dek, dek_alg=Alg.AES)
    assert exc.value.sw == 0x9485
    with pytest.raises(KeyCheckValueError):  # decrypting with the wrong DEK gives a key that fails its KCV
        decode_put_key_data(put_key_data(keys(Alg.DES3, 16), 0x31, bytes(16), Alg.DES3), bytes(range(16)),
                            dek_alg=Alg.DES3)


def test_format_and_algorithm_errors() -> None:
    dek = keys(Alg.AES, 16).dek
    data = put_key_data(keys(Alg.AES, 16), 0x31, dek, Alg.AES)
    for bad in (b"", b"\x31", data[:-1], data[:5], data + b"\x88"):
        with pytest.raises(PutKeyFormatError) as exc:
            decode_put_key_data(bad, dek, dek_alg=Alg.AES)
        assert exc.value.sw == 0x6A80
    with pytest.raises(KeyAlgorithmError) as exc2:
        decode_put_key_data(b"\x31\x81\x10" + bytes(16) + b"\x00", dek, dek_alg=Alg.AES)
    assert exc2.value.sw == 0x9484
    with pytest.raises(KeyAlgorithmError):
        encode_key(bytes(16), Alg.DES3, dek, Alg.AES)
    with pytest.raises(KeyAlgorithmError):
        decode_put_key_data(b"\x31\x80\x10" + bytes(16) + b"\x00", dek, dek_alg=Alg.AES)
    with pytest.raises(PutKeyFormatError):  # clear length does not fit the cryptogram
        decode_put_key_data(b"\x31\x88\x11\x20" + bytes(16) + b"\x00", dek, dek_alg=Alg.AES)
    with pytest.raises(PutKeyFormatError):
        put_key_data(keys(Alg.AES, 16), 0x80, dek, Alg.AES)
    with pytest.raises(KeyAlgorithmError):
        put_key_data(keys(Alg.AES, 16), 0x31, bytes(15), Alg.AES)


def test_check_put_key_response() -> None:
    new = keys(Alg.AES, 16)
    good = put_key_response(0x31, [new.kcvs()[k] for k in ("enc", "mac", "dek")])
    check_put_key_response(good, new.kcvs())
    check_put_key_response(good, list(new.kcvs().values()), expected_version=0x31)
    with pytest.raises(KeyCheckValueError):
        check_put_key_response(good[:-1] + bytes([good[-1] ^ 1]), new.kcvs())
    with pytest.raises(PutKeyFormatError):
        check_put_key_response(good[:-1], new.kcvs())
    with pytest.raises(PutKeyError, match="key version"):
        check_put_key_response(good, new.kcvs(), expected_version=0x32)


def test_errors_never_show_keys() -> None:
    new = keys(Alg.AES, 32)
    dek = keys(Alg.AES, 16, salt=50).dek
    data = bytearray(put_key_data(new, 0x31, dek, Alg.AES))
    data[-1] ^= 1
    with pytest.raises(KeyCheckValueError) as exc:
        decode_put_key_data(bytes(data), dek, dek_alg=Alg.AES)
    text = str(exc.value).lower()
    for k in (new.enc, new.mac, new.dek, dek):
        assert k.hex() not in text
    assert put_key_apdu(0x30, bytes(data)).sensitive


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_decode_random_data_raises_only_put_key_errors(data: bytes) -> None:
    try:
        decode_put_key_data(data, bytes(range(16)), dek_alg=Alg.AES)
    except PutKeyError:
        pass


# ----------------------------------------------------------------------------------- through open channels


def _put_key_app(dek_of: Callable[[], bytes | None], dek_alg: Alg) -> Callable[[CommandApdu], ResponseApdu]:
    def app(cmd: CommandApdu) -> ResponseApdu:
        dek = dek_of()
        if cmd.ins != 0xD8 or dek is None:
            return ResponseApdu.of(0x6D00)
        try:
            d = decode_put_key_data(cmd.data, dek, dek_alg=dek_alg)
        except PutKeyError as exc:
            return ResponseApdu.of(exc.sw)
        return ResponseApdu.of(0x9000, put_key_response(d.version, d.kcvs))

    return app


def test_put_key_through_scp03_channel() -> None:
    static = keys(Alg.AES, 16, salt=9, version=0x30)
    card = Scp03Card(static, 3, h("A000000151000000"), rng=lambda n: bytes(n))
    app = _put_key_app(lambda: card.dek, Alg.AES)

    def send(cmd: CommandApdu) -> ResponseApdu:
        return card.handle(cmd, app)

    chan = Scp03Host.open(send, static, level=0x33, host_challenge=bytes(8))
    new = keys(Alg.AES, 32, salt=77)
    resp = chan.process(put_key_apdu(0, put_key_data(new, 0x31, chan.dek, Alg.AES)), send)
    assert resp.sw == 0x9000
    check_put_key_response(resp.data, new.kcvs(), expected_version=0x31)
    bad = bytearray(put_key_data(new, 0x31, chan.dek, Alg.AES))
    bad[-1] ^= 1
    assert chan.process(put_key_apdu(0, bytes(bad)), send).sw == 0x9485


def test_put_key_through_scp02_channel() -> None:
    static = keys(Alg.DES3, 16, salt=9, version=0x20)
    card = Scp02Card(static, 3, rng=lambda n: bytes(n))
    app = _put_key_app(lambda: card.session_dek, Alg.DES3)

    def send(cmd: CommandApdu) -> ResponseApdu:
        return card.handle(cmd, app)

    chan = Scp02Host.open(send, static, level=0x03, host_challenge=bytes(8))
    assert chan.dek != static.dek  # SCP02 encrypts key data with the session DEK
    new = keys(Alg.DES3, 16, salt=31)
    resp = chan.process(put_key_apdu(0x20, put_key_data(new, 0x21, chan.dek, Alg.DES3)), send)
    check_put_key_response(resp.data, new.kcvs(), expected_version=0x21)
    with pytest.raises(CardkitError):
        check_put_key_response(resp.data, keys(Alg.DES3, 16, salt=32).kcvs())
