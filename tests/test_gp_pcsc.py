"""The virtual ISD through the real PC/SC stack: pyscard → libpcsclite → pcscd → vpcd → TCP → VirtualCard.

Uses the session ``pcscd`` and ``vpcd_card`` fixtures (tests/conftest.py), which take the machine-wide pcscd lock.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from cardkit.commands import gp
from cardkit.commands.gpdata import CardData, parse_get_status
from cardkit.crypto import Alg
from cardkit.errors import AuthenticationError
from cardkit.issuance.engine import personalize, verify
from cardkit.issuance.gp import open_gp_channel, put_key_set, store_dgis
from cardkit.issuance.prepare import prepare
from cardkit.keys.store import TestKeyFile
from cardkit.profiles.model import load_profile
from cardkit.session import CardSession
from cardkit.sm.gp import GpKeySet
from cardkit.sm.scp02 import Scp02Host
from cardkit.sm.scp03 import Scp03Host
from cardkit.transport.pcsc import PcscTransport
from cardkit.transport.vpcd import VpcdCardServer
from cardkit.virtual.card import VirtualCard
from cardkit.virtual.gp import CARDKIT_LOAD_FILE, CARDKIT_MODULE, install_isd
from cardkit.virtual.gp_store import sensitive_digest

pytestmark = pytest.mark.pcsc
VpcdCardFactory = Callable[..., tuple[str, VpcdCardServer]]
ROOT = Path(__file__).resolve().parents[1]
ISD = gp.DEFAULT_ISD_AID
APP = bytes.fromhex("F0434B495444530101")
GP_TEST = bytes.fromhex("404142434445464748494A4B4C4D4E4F")  # the well-known GP test key: TEST ONLY
AES1 = GpKeySet.single(GP_TEST, alg=Alg.AES, version=1)
DES1 = GpKeySet.single(GP_TEST, alg=Alg.DES3, version=1)


def serve(vpcd_card: VpcdCardFactory, keys: GpKeySet, scp: int, i: int | None = None,
          serial: bytes = b"\xC0\x00\x01\x01", **kw: object) -> tuple[VirtualCard, CardSession]:
    card = VirtualCard(serial, seed=9)
    install_isd(card, keys, scp, i, **kw)  # type: ignore[arg-type]
    reader, _ = vpcd_card(card)
    return card, CardSession(PcscTransport(reader))


def test_scp03_every_level_over_pcsc(vpcd_card: VpcdCardFactory) -> None:
    _card, s = serve(vpcd_card, AES1, 3, 0x70)
    with s:
        for level in (0x00, 0x01, 0x03, 0x11, 0x13, 0x33):
            s.send(gp.select_isd())
            ch = Scp03Host.open(s.transmit, AES1, level=level, isd_aid=ISD)
            s.push(ch)
            assert parse_get_status(s.send(gp.get_status("isd")).data, "isd")[0].aid == ISD
            s.remove(ch)
        s.send(gp.select_isd())
        s.push(Scp03Host.open(s.transmit, AES1, level=0x33, isd_aid=ISD, s16=False))
        assert s.send(gp.get_status("load-files-modules")).data  # a longer, R-ENC protected answer


def test_scp03_s16_over_pcsc(vpcd_card: VpcdCardFactory) -> None:
    _card, s = serve(vpcd_card, AES1, 3, 0x71, serial=b"\xC0\x00\x01\x02")
    with s:
        s.push(Scp03Host.open(s.transmit, AES1, level=0x33, isd_aid=ISD, s16=True))
        assert parse_get_status(s.send(gp.get_status("isd")).data, "isd")[0].aid == ISD


def test_scp02_every_level_over_pcsc(vpcd_card: VpcdCardFactory) -> None:
    _card, s = serve(vpcd_card, DES1, 2, 0x75, serial=b"\xC0\x00\x01\x03")
    with s:
        assert CardData.parse(s.send(gp.get_data_gp(0x66)).data).scp == ((2, 0x75),)
        for level in (0x00, 0x01, 0x03, 0x11, 0x13):
            s.send(gp.select_isd())
            ch = Scp02Host.open(s.transmit, DES1, level=level, i=0x75)
            s.push(ch)
            assert parse_get_status(s.send(gp.get_status("isd")).data, "isd")[0].life_cycle == 0x01
            s.remove(ch)


def test_wrong_keys_lock_the_key_set_over_pcsc(vpcd_card: VpcdCardFactory) -> None:
    _card, s = serve(vpcd_card, AES1, 3, serial=b"\xC0\x00\x01\x04", max_tries=2)
    wrong = GpKeySet.single(bytes(16), alg=Alg.AES, version=1)
    with s:
        for _ in range(2):
            with pytest.raises(AuthenticationError):
                Scp03Host.open(s.transmit, wrong, level=0x01, isd_aid=ISD)
        assert s.transmit(gp.initialize_update(bytes(8))).sw == 0x6983


def test_put_key_des_to_aes_and_store_data_over_pcsc(vpcd_card: VpcdCardFactory) -> None:
    _card, s = serve(vpcd_card, DES1, 2, serial=b"\xC0\x00\x01\x05")
    new = GpKeySet(bytes(range(16)), bytes(range(16, 32)), bytes(range(32, 48)), 2, alg=Alg.AES)
    with s:
        ch = open_gp_channel(s, DES1, level=0x03)
        put_key_set(s, ch, new, replace_version=1)
        for proc in s.processors:
            s.remove(proc)
        s.send(gp.select_isd())
        ch = open_gp_channel(s, new, key_version=2, level=0x33)
        s.send(gp.install_for_install(CARDKIT_LOAD_FILE, CARDKIT_MODULE, APP))
        s.send(gp.install_for_personalization(APP))
        store_dgis(s, ch, [(0x0101, b"clear", False), (0x8010, b"\x03" + b"2468", True)])
        for proc in s.processors:
            s.remove(proc)
        s.send(gp.select_isd(APP))
        assert s.send(gp.get_data_gp(0x0101)).data == b"clear"
        open_gp_channel(s, new, key_version=2, level=0x33)
        assert s.send(gp.get_data_gp(0x8010)).data == sensitive_digest(new.dek, 0x8010, b"\x03" + b"2468")


def test_personalize_and_verify_the_profile_over_pcsc(vpcd_card: VpcdCardFactory, tmp_path: Path) -> None:
    keyfile = tmp_path / "gp.toml"
    keyfile.write_text("test_only = true\n" + "".join(
        f'[[key]]\nname = "{n}"\nalg = "aes"\nvalue = "{v}"\n' for n, v in (
            ("gp-transport", GP_TEST.hex()), ("gp-issuer", "11" * 16), ("gp-app-master", "22" * 16))),
        encoding="utf-8")
    keystore = TestKeyFile(keyfile, allow_test_keys=True)
    profile = load_profile(ROOT / "applets" / "gp-store-data")
    with open(ROOT / "applets" / "gp-store-data" / "sample-batch.csv", encoding="utf-8", newline="") as fh:
        row = next(csv.DictReader(fh))
    prepared = prepare(profile, row)
    _card, s = serve(vpcd_card, AES1, 3, serial=b"\xC0\x00\x01\x06")
    with s:
        result = personalize(s, profile, prepared, keystore)
        manifest = verify(s, profile, prepared, keystore, result)
    assert manifest["chip_serial"] == "C0000106" and manifest["card_life_cycle"] == "0F"
    assert len(manifest["files"]) == 4 and manifest["sensitive_dgis"] == ["8010", "8101"]
