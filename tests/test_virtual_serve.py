"""``cardkit virtual new|show|serve`` and :mod:`cardkit.virtual.serve` (many cards in many vpcd readers).

CLI commands run through Click's CliRunner, and end to end through the real ``cardkit`` console script in a
subprocess (serving to pcscd, surviving a pcscd restart, SIGTERM/SIGINT, images saved on exit). Tests that
need another reader layout than the session pcscd's stop it and start it again afterwards (the session
fixture holds the machine-wide pcscd lock, so no other test run starts a pcscd meanwhile).
"""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cardkit.cli.errors import exit_code_for
from cardkit.cli.main import cli
from cardkit.commands import iso
from cardkit.crypto import Alg, default_kcv_method, kcv
from cardkit.issuance.engine import open_issuer_channel, personalize
from cardkit.issuance.prepare import prepare
from cardkit.keys.store import TestKeyFile, alg_of
from cardkit.pcscd import PcscDaemon, foreign_pcscd_running
from cardkit.profiles.model import load_profile
from cardkit.readers import TEST_KEYS, load_virtual_card, new_virtual_card
from cardkit.session import CardSession
from cardkit.transport.pcsc import PcscTransport, list_readers, wait_for_card, wait_for_removal
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual import VirtualCard, atr_for, load_image
from cardkit.virtual.serve import MAX_SLOTS, CardSlots, ServeError, serve_many, wait_for_signal

ROOT = Path(__file__).resolve().parents[1]
CARDKIT = Path(sys.executable).parent / "cardkit"
pcsc = pytest.mark.pcsc


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def keystore() -> TestKeyFile:
    return TestKeyFile(TEST_KEYS, allow_test_keys=True)


def transport_key_of(keystore: TestKeyFile, alg: str = "sm4") -> bytes:
    return keystore.key("ssc-transport", alg_of(alg)).value




# ------------------------------------------------------------------------------------------------- new


def test_new_creates_a_blank_image_0600_with_the_test_key(tmp_path: Path, keystore: TestKeyFile) -> None:
    out = tmp_path / "card.json"
    result = run("--json", "virtual", "new", "--out", str(out), "--serial", "01:02:A0:B0", "--alg", "3des")
    assert result.exit_code == 0, result.output
    assert "TEST transport key" in result.stderr and "never use such a card" in result.stderr
    info = json.loads(result.stdout)
    assert info["serial"] == "0102A0B0" and info["atr"] == atr_for(bytes.fromhex("0102A0B0")).hex().upper()
    key = transport_key_of(keystore, "3des")
    assert info["transport_key"] == {"name": "ssc-transport", "alg": "3des", "test": True,
                                     "kcv": kcv(key, default_kcv_method(Alg.DES3)).hex().upper()}
    assert key.hex().upper() not in result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    card = load_virtual_card(out)  # the image plus the mutual-authentication handler (code, not data)
    assert card.serial == bytes.fromhex("0102A0B0") and card.mf.keys[0].value == key and not card.mf.children
    # the blank card opens an issuer channel with the TEST transport key
    session = CardSession(VirtualTransport(card))
    open_issuer_channel(session, Alg.DES3, key)


def test_new_refuses_overwrite_and_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "card.json"
    assert run("virtual", "new", "--out", str(out)).exit_code == 0
    before = out.read_bytes()
    again = run("virtual", "new", "--out", str(out))
    assert again.exit_code == 2 and "exists (use --force" in again.output
    assert out.read_bytes() == before
    assert run("virtual", "new", "--out", str(out), "--force").exit_code == 0
    assert out.read_bytes() != before  # a new random serial
    bad = run("virtual", "new", "--out", str(tmp_path / "x.json"), "--serial", "0102")
    assert bad.exit_code == 2 and "8 digits" in bad.output
    nodir = run("virtual", "new", "--out", str(tmp_path / "missing" / "x.json"))
    assert nodir.exit_code == 2 and "does not exist" in nodir.output
    assert run("virtual", "new", "--out", str(tmp_path / "y.json"), "--alg", "rot13").exit_code == 2


# ------------------------------------------------------------------------------------------------ show


Issued = tuple[Path, VirtualCard, dict[str, str]]


@pytest.fixture(scope="module")
def issued_image(tmp_path_factory: pytest.TempPathFactory, keystore: TestKeyFile) -> Issued:
    profile = load_profile(ROOT / "applets/ssc", algorithm="sm4")
    with open(ROOT / "applets/ssc/sample-batch.csv", encoding="utf-8", newline="") as fh:
        row = next(csv.DictReader(fh))
    prepared = prepare(profile, row)
    card = new_virtual_card(bytes.fromhex("5EC0DE01"), alg=Alg.SM4, transport_key=transport_key_of(keystore))
    personalize(CardSession(VirtualTransport(card)), profile, prepared, keystore)
    path = tmp_path_factory.mktemp("show") / "issued.json"
    card.save(path)
    secrets_ = {f"pin {k}": v.hex() for k, v in prepared.pins.items()}
    secrets_.update({f"pin text {k}": v.decode("latin-1") for k, v in prepared.pins.items()})
    secrets_["identity"] = prepared.identity
    secrets_["name"] = row["name"]
    return path, card, secrets_


def _all_secrets(card: VirtualCard) -> list[str]:
    from cardkit.virtual.fs import DF, EF

    out = []
    for node in card.files():
        if isinstance(node, DF):
            out += [k.value.hex() for k in node.keys.values()]
            out += [p.value.hex() for p in (*node.pins.values(), *node.puks.values())]
        elif isinstance(node, EF):
            out += [bytes(r).hex() for r in node.records if len(r) >= 4]
    return out


def test_show_tree_kcvs_and_counters_never_values(issued_image: Issued) -> None:
    path, card, secrets_ = issued_image
    result = run("virtual", "show", str(path))
    assert result.exit_code == 0, result.output
    text = result.output
    assert "chip serial 5EC0DE01" in text
    assert re.search(r"^  DF DDF1 name 7378312E73682EC9E7BBE1B1A3D5CF \(sx1\.sh\.社会保障\)", text, re.M)
    assert re.search(r"^    EF EF05 linear-variable sfi 5  7/7 records .* read=always", text, re.M)
    assert re.search(r"^    EF EF06 .* read=key:02", text, re.M)
    assert re.search(r"^    PIN 01  tries 3/3$", text, re.M) and re.search(r"^    PUK 01  tries 10/10$", text, re.M)
    ssse = card.mf.child(0xDDF1)
    for key in (*card.mf.keys.values(), *ssse.keys.values()):  # type: ignore[union-attr]
        check = kcv(key.value, default_kcv_method(key.alg)).hex().upper()
        assert f"key {key.ref:02X}  sm4 usage " in text and f"KCV {check} (sm4-zeros)" in text
    lowered = text.lower()
    for value in _all_secrets(card):
        assert value.lower() not in lowered
    for what, value in secrets_.items():
        assert value not in text, what
    as_json = run("--json", "virtual", "show", str(path))
    info = json.loads(as_json.stdout)
    ssse_info = next(c for c in info["mf"]["children"] if c["fid"] == "DDF1")
    assert ssse_info["name_text"] == "sx1.sh.社会保障"
    assert [p["tries_left"] for p in ssse_info["pins"]] == [3]
    assert {k["ref"] for k in ssse_info["keys"]} == {"01", "02", "03"}
    assert "value" not in json.dumps(info)


def test_show_reports_blocked_pins(tmp_path: Path, issued_image: Issued) -> None:
    blocked = VirtualCard.load(issued_image[0])
    pin = blocked.mf.child(0xDDF1).pins[1]  # type: ignore[union-attr]
    pin.tries_left = 0
    blocked.save(tmp_path / "blocked.json")
    assert re.search(r"PIN 01  tries 0/3  BLOCKED", run("virtual", "show", str(tmp_path / "blocked.json")).output)


def test_show_bad_images_fail_with_input_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    result = run("virtual", "show", str(tmp_path / "bad.json"))
    assert result.exit_code != 0 and exit_code_for(result.exception) == 6
    assert "not a cardkit-virtual-card image" in str(result.exception)
    missing = run("virtual", "show", str(tmp_path / "none.json"))
    assert exit_code_for(missing.exception) == 6 and "cannot read card image" in str(missing.exception)
    # the real console script prints one line and exits 6
    proc = subprocess.run([str(CARDKIT), "virtual", "show", str(tmp_path / "bad.json")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 6 and proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: not a cardkit-virtual-card image")


# -------------------------------------------------------------------------------------- serve: arguments


def test_serve_usage_errors(tmp_path: Path) -> None:
    image = tmp_path / "a.json"
    assert run("virtual", "new", "--out", str(image)).exit_code == 0
    cases = [
        ((), "nothing to serve"),
        (("--image", str(image), "--image", str(tmp_path / "b.json"), "--slots", "1"), "2 images for 1 slots"),
        (("--image", str(image), "--slots", "2"), "add --blank"),
        (("--image", str(image), "--image", str(tmp_path / "." / "a.json")), "same image is given twice"),
        (("--image", str(tmp_path / "missing.json")), "cardkit virtual new --out"),
        (("--blank", "--slots", "17"), "17 is not in the range 1<=x<=16"),
        (("--blank", "--slots", "4", "--port", "65534"), "slots need ports 65534..65537"),
    ]
    for args, message in cases:
        result = run("virtual", "serve", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)


def test_card_slots_checks_its_arguments() -> None:
    card = VirtualCard(b"\x00\x00\x00\x01")
    with pytest.raises(ServeError, match="no card"):
        CardSlots([], [])
    with pytest.raises(ServeError, match="at most 16"):
        CardSlots([card] * 17, list(range(40000, 40017)))
    with pytest.raises(ServeError, match="distinct"):
        CardSlots([card, card], [40000, 40000])
    with pytest.raises(ServeError, match="2 ports"):
        CardSlots([card, card], [40000])
    with pytest.raises(ServeError, match=r"1\.\.65535"):
        CardSlots([card], [70000])
    with pytest.raises(ServeError, match="not usable"):
        CardSlots.consecutive([card, card], 65535)
    slots = CardSlots.consecutive([card, card], 40010)
    assert slots.ports == [40010, 40011] and slots.readers == [None, None] and len(slots) == 2
    assert MAX_SLOTS == 16


def test_wait_for_signal_returns_the_signal_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    assert wait_for_signal(poll=0.05) == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    stop = threading.Event()
    got: list[int | None] = []
    worker = threading.Thread(target=lambda: got.append(wait_for_signal(stop, poll=0.05)))
    worker.start()
    stop.set()
    worker.join(5)
    assert got == [None]


# ------------------------------------------------------------------------------- serve_many, 16 readers


def _must_own(pcscd: PcscDaemon) -> None:
    if not pcscd.owned:
        pytest.skip("the session reuses a pcscd the tests did not start; it cannot be stopped or swapped")


@pytest.fixture
def big_pcscd(pcscd: PcscDaemon) -> Iterator[PcscDaemon]:
    """A pcscd with 16 vpcd readers in place of the session's 4-reader one (restored afterwards)."""
    _must_own(pcscd)
    pcscd.stop()
    daemon = PcscDaemon(readers=16)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        pcscd.start()


@pcsc
def test_serve_many_twelve_cards_in_parallel(big_pcscd: PcscDaemon) -> None:
    cards = [VirtualCard.blank(bytes((0xA0, 0, 0, i)), bytes(16), Alg.AES, seed=i) for i in range(12)]
    errors: list[BaseException] = []
    with serve_many(cards, big_pcscd) as served:
        assert len(set(served.readers)) == 12 and served.readers == list(big_pcscd.expected_names[:12])
        for reader, card in zip(served.readers, cards, strict=True):
            assert wait_for_card(reader, 0) == card.atr

        def worker(reader: str, card: VirtualCard) -> None:
            try:
                with CardSession(PcscTransport(reader)) as session:
                    for _ in range(50):
                        assert session.send(iso.get_data(0x0045, le=4)).data == card.serial
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=pair) for pair in zip(served.readers, cards, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert all(card.apdu_count == 50 for card in cards)
        assert served.apdus == 600
        assert served.reader_of(cards[5]) == big_pcscd.expected_names[5]
    for reader in big_pcscd.expected_names[:12]:
        wait_for_removal(reader, 0)  # already empty: serve_many waited for it


@pcsc
def test_serve_many_refuses_what_it_cannot_do(big_pcscd: PcscDaemon, pcscd: PcscDaemon) -> None:
    cards = [VirtualCard(bytes((0xB0, 0, 0, i))) for i in range(17)]
    with pytest.raises(ServeError, match=r"17 cards but .* 16 free vpcd readers"):
        serve_many(cards, big_pcscd)
    with pytest.raises(ServeError, match="3 free vpcd readers from slot 13"):
        serve_many(cards[:4], big_pcscd, first_slot=13)
    idle = PcscDaemon(readers=2, base_port=45000)
    with pytest.raises(ServeError, match="not running"):
        serve_many(cards[:1], idle)


# ------------------------------------------------------------------------------ serve: the console script


class Child:
    """The ``cardkit`` console script in a subprocess, its stdout lines in a queue."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([str(CARDKIT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        raise AssertionError(f"no line matching {pattern!r}; got {self.seen}; stderr {err}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> tuple[int, list[str], str]:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        time.sleep(0.05)  # let the pump drain
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        err = self.proc.stderr.read() if self.proc.stderr else ""
        return rc, self.seen, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pcsc
def test_serve_image_survives_pcscd_restart_and_saves_on_sigterm(pcscd: PcscDaemon, _vpcd_slots: object,
                                                                 tmp_path: Path, keystore: TestKeyFile) -> None:
    _must_own(pcscd)
    image = tmp_path / "served.json"
    assert run("virtual", "new", "--out", str(image), "--serial", "5E7FED01").exit_code == 0
    reader, port = _vpcd_slots.take()  # type: ignore[attr-defined]
    child = Child("virtual", "serve", "--image", str(image), "--port", str(port))
    try:
        child.wait_for(r"^serving 1 card\(s\); Ctrl-C or SIGTERM")
        assert wait_for_card(reader, 10) == atr_for(bytes.fromhex("5E7FED01"))
        url = b"https://issuer.example/ssc"
        with CardSession(PcscTransport(reader)) as session:
            open_issuer_channel(session, Alg.SM4, transport_key_of(keystore))
            session.send(iso.put_data(0x5F50, url))
        pcscd.stop()                                     # pcscd goes away and comes back: the card follows
        pcscd.start()
        wait_for_card(reader, 15)
        with CardSession(PcscTransport(reader)) as session:
            assert session.send(iso.get_data(0x5F50, le=256)).data == url
        rc, lines, err = child.stop(signal.SIGTERM)
    finally:
        child.kill()
        _vpcd_slots.give_back(reader)  # type: ignore[attr-defined]
    assert rc == 0, err
    assert f"saved {image}" in lines and lines[-1].startswith("stopped; ")
    assert load_image(image).data_objects[0x5F50] == url
    assert stat.S_IMODE(image.stat().st_mode) == 0o600
    wait_for_removal(reader, 10)


@pytest.fixture
def no_pcscd(pcscd: PcscDaemon) -> Iterator[None]:
    """No pcscd running (the session one is restarted afterwards); this process keeps the pcscd lock."""
    _must_own(pcscd)
    pcscd.stop()
    try:
        yield
    finally:
        pcscd.start()


@pcsc
def test_serve_blank_cards_with_a_private_pcscd(no_pcscd: None, tmp_path: Path) -> None:
    out = tmp_path / "saved"
    child = Child("virtual", "serve", "--blank", "--slots", "3", "--pcscd", "--save-dir", str(out))
    try:
        ready = child.wait_for(r"^serving 3 card\(s\) with a private pcscd \(pid (\d+)\)")
        slots = [line for line in child.seen if line.startswith("slot ")]
        assert len(slots) == 3
        serials = [re.search(r"card ([0-9A-F]{8}) blank", line).group(1) for line in slots]  # type: ignore[union-attr]
        readers = list_readers()
        assert readers[:4] == ["Virtual PCD 00 00", "Virtual PCD 00 01", "Virtual PCD 1 00 00", "Virtual PCD 1 00 01"]
        for reader, serial in zip(readers, serials, strict=False):
            assert wait_for_card(reader, 10) == atr_for(bytes.fromhex(serial))
        with CardSession(PcscTransport(readers[2])) as session:
            assert session.send(iso.get_data(0x0045, le=4)).data.hex().upper() == serials[2]
        pid = int(re.search(r"pid (\d+)", ready).group(1))  # type: ignore[union-attr]
        rc, _, err = child.stop(signal.SIGINT)
    finally:
        child.kill()
    assert rc == 0, err
    assert "TEST transport key" in err
    saved = sorted(out.iterdir())
    assert [p.name for p in saved] == sorted(f"card-{s}.json" for s in serials)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in saved)
    assert not foreign_pcscd_running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the private pcscd is gone
