"""A complete SSC batch (3DES: SoftHSM2 has no SM4) with every master key inside a SoftHSM2 token, and the
PKCS#11 keystore shared by threads.

The batch part plays a bureau: a fresh token in its own SoftHSM2 directory, the five masters of
``keys/test/ssc.toml`` imported through the dual-control ceremony API (the transport key extractable, as
docs/keys.md explains, the other four not), then the real ``cardkit batch run`` console script on four
virtual readers with ``--keys pkcs11:token=…`` (module and PIN from the environment), and the same batch run
with the TEST key file. Every token process is a child process: SoftHSM2 reads its token list once per
process (at ``C_Initialize``), and the test process already has the shared fixture's tokens loaded.

Checks: every record done and the report reconciles; each record's card equals (content) the card of the
same record from the TEST-file run, once the values that depend on the chip serial (card keys, the card
identification code) have been checked against a software derivation from the TEST masters and the random
PINs against the profile; no key byte, derived card key, PIN or token PIN in any output file; the masters
are still non-extractable afterwards and the batch left no object on the token.

The concurrency part: eight threads derive SSC card keys (and read the extractable transport key, and use
in-token card-key handles) through ONE keystore object per token, on two tokens of one module at once — what
the batch runner's workers do — and get exactly the sequential results, which equal the software
derivation. Without the module-wide lock of :mod:`cardkit.keys.pkcs11_base` the two-token run crashes
SoftHSM2 (segmentation fault): the helper runs in a child process so that a crash fails this test instead of
killing pytest.

Run as a script (``python tests/keys/test_batch_hsm.py ceremony|inspect|concurrency …``) this file is the
child-process helper.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cardkit.batch.journal import verify_journal
from cardkit.crypto import Alg
from cardkit.issuance.engine import _level, card_key, expected_content
from cardkit.issuance.prepare import prepare
from cardkit.keys.store import Keystore, TestKeyFile
from cardkit.profiles.model import Profile, load_profile
from cardkit.readers import TEST_KEYS

if TYPE_CHECKING:
    from tests.keys.conftest import SoftHsm

pytestmark = pytest.mark.hsm

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = Path(sys.executable).parent / "cardkit"
RECORDS = 40
READERS = 4
TRANSPORT = "ssc-transport"
MASTERS = (TRANSPORT, "ssc-issuer", "ssc-irk", "ssc-rkssse", "ssc-sm")
BUREAU = "ck-bureau"
CONC_TOKENS = ("ck-conc-a", "ck-conc-b")
PIN = "h3-bureau-pin-2468"
SO_PIN = "h3-so-pin-1357"
THREADS = 8
CONC_CARDS = 48  # per token
REGIONS = ("440300", "120100", "370100")


# ------------------------------------------------------------------------------------ shared helpers
def _profile() -> Profile:
    return load_profile(ROOT / "applets/ssc", algorithm="3des")


def _digest(value: bytes) -> str:
    """What crosses the pipe from the helper: a digest of a card key, never the key."""
    return hashlib.sha256(value).hexdigest()[:16]


def _card_digests(ks: Keystore, profile: Profile, card: int, handles: bool) -> dict[str, str]:
    """Everything a worker asks of the keystore for one card: the four SSC card keys, the transport key and
    (PKCS#11 only) the KCV of the issuer card key kept in the token as a handle."""
    serial = (0x5EC00000 + card).to_bytes(4, "big")
    fields = {"region": REGIONS[card % len(REGIONS)]}
    out = {spec.name: _digest(card_key(ks, profile, spec.name, serial, fields)) for spec in profile.keys}
    out["transport"] = _digest(ks.key(TRANSPORT, Alg.DES3).value)
    if handles:
        from cardkit.keys.store import KeyCustody

        assert isinstance(ks, KeyCustody)
        h = ks.derive_handle("ssc-issuer", Alg.DES3, [_level(serial)])
        try:
            out["issuer-kcv"] = h.kcv()
        finally:
            h.close()  # destroys the card key's session object
    else:
        out["issuer-kcv"] = ks.derive("ssc-issuer", Alg.DES3, [_level(serial)]).kcv
    return out


# ------------------------------------------------------------------------- child-process helpers
def _helper_ceremony(token: str, journal: Path) -> None:
    """Import the five masters by two components each (``H3_COMPONENTS``: name → [c1, c2, kcv] in hex)."""
    from cardkit.batch.journal import Journal
    from cardkit.keys.ceremony import Ceremony
    from cardkit.keys.uri import open_keystore

    forms = json.loads(os.environ["H3_COMPONENTS"])
    ks = open_keystore(f"pkcs11:token={token}")  # module and PIN from the environment
    try:
        with Journal(journal) as j:
            ceremony = Ceremony(ks, j, "carol")
            for name in MASTERS:
                c1, c2, kcv = forms[name]
                parts = {1: bytes.fromhex(c1), 2: bytes.fromhex(c2)}
                ceremony.import_components(name, Alg.DES3, 2, read_component=parts.__getitem__,
                                           confirm_component=lambda n, k, m: True, custodians=["alice", "bob"],
                                           expect_kcv=kcv, extractable=name == TRANSPORT)
    finally:
        ks.close()


def _helper_inspect(token: str) -> dict[str, Any]:
    """The masters as the token itself describes them (raw PKCS#11 attributes), and what a client gets
    when it asks for their values — through cardkit, through ``CKA_VALUE``, through ``C_WrapKey``."""
    from cardkit.errors import KeystoreError
    from cardkit.keys import pkcs11_base as base
    from cardkit.keys.pkcs11 import Pkcs11Keystore

    pk = base.p11()
    a = pk.Attribute
    module, pin = os.environ["CARDKIT_PKCS11_MODULE"], os.environ["CARDKIT_PKCS11_PIN"]
    ks = Pkcs11Keystore(module, token, pin)
    conn = base.connect(module, token, pin)
    out: dict[str, Any] = {"keys": {}}
    try:
        with conn.lock:
            session = conn.session
            out["token_objects"] = len(base.find_objects(session, {a.TOKEN: True}))
            wk = session.create_object({a.CLASS: pk.ObjectClass.SECRET_KEY, a.KEY_TYPE: pk.KeyType.AES,
                                        a.VALUE: secrets.token_bytes(32), a.TOKEN: False, a.WRAP: True})
            for name in MASTERS:
                objs = base.find_objects(session, {a.CLASS: pk.ObjectClass.SECRET_KEY, a.LABEL: name})
                info: dict[str, Any] = {"objects": len(objs)}
                obj = objs[0]
                for attr in ("SENSITIVE", "EXTRACTABLE", "TOKEN", "PRIVATE", "DERIVE"):
                    info[attr] = bool(obj[getattr(a, attr)])
                try:
                    obj[a.VALUE]
                    info["read_value"] = "READ"
                except pk.exceptions.PKCS11Error as exc:
                    info["read_value"] = type(exc).__name__
                try:
                    wk.wrap_key(obj, mechanism=pk.Mechanism.AES_KEY_WRAP)
                    info["wrap"] = "wrapped"
                except pk.exceptions.PKCS11Error as exc:
                    info["wrap"] = type(exc).__name__
                out["keys"][name] = info
            wk.destroy()
        for name in MASTERS:
            try:
                out["keys"][name]["cardkit_key"] = f"value with KCV {ks.key(name, Alg.DES3).kcv}"
            except KeystoreError as exc:
                out["keys"][name]["cardkit_key"] = str(exc)
    finally:
        base.release(conn)
        ks.close()
    return out


def _helper_concurrency(tokens: list[str]) -> dict[str, Any]:
    """Fill each token with the 3DES masters (non-extractable, the transport key extractable); then the same
    work sequentially and from THREADS threads sharing one keystore object per token."""
    from cardkit.keys.pkcs11 import Pkcs11Keystore

    module, pin = os.environ["CARDKIT_PKCS11_MODULE"], os.environ["CARDKIT_PKCS11_PIN"]
    test_file = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    profile = _profile()
    stores = [Pkcs11Keystore(module, t, pin) for t in tokens]
    for ks in stores:
        for name in MASTERS:
            ks.import_key(name, Alg.DES3, test_file.key(name, Alg.DES3).value, extractable=name == TRANSPORT)
    # jobs interleave the tokens, so the threads work on both at the same moment
    jobs = [(t, card) for card in range(CONC_CARDS) for t in range(len(stores))]

    def one(job: tuple[int, int]) -> dict[str, str]:
        return _card_digests(stores[job[0]], profile, job[1], handles=True)

    t0 = time.perf_counter()
    sequential = {f"{tokens[t]}/{c}": one((t, c)) for t, c in jobs}
    seq_s = time.perf_counter() - t0
    concurrent: dict[str, dict[str, str]] = {}
    errors: list[str] = []
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        start.wait()
        for t, c in jobs[n::THREADS]:
            try:
                concurrent[f"{tokens[t]}/{c}"] = one((t, c))
            except Exception as exc:  # reported, and the comparison fails
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    conc_s = time.perf_counter() - t0
    for ks in stores:
        ks.close()
    return {"sequential": sequential, "concurrent": concurrent, "errors": errors, "sequential_s": seq_s,
            "concurrent_s": conc_s}


def _main(argv: list[str]) -> int:
    if argv[:1] == ["ceremony"]:
        _helper_ceremony(argv[1], Path(argv[2]))
    elif argv[:1] == ["inspect"]:
        print(json.dumps(_helper_inspect(argv[1])))
    elif argv[:1] == ["concurrency"]:
        print(json.dumps(_helper_concurrency(argv[1:])))
    else:
        print("usage: test_batch_hsm.py ceremony TOKEN JOURNAL | inspect TOKEN | concurrency TOKEN...",
              file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------------------------- fixtures
@dataclass
class Station:
    """A bureau station: its own SoftHSM2 directory and tokens, outside the shared fixture's."""

    module: str
    conf: Path
    tmp: Path

    def env(self, home: Path | None = None, *, hsm: bool = True, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDKIT_", "SOFTHSM"))}
        env["SOFTHSM2_CONF"] = str(self.conf)
        if hsm:
            env.update(CARDKIT_PKCS11_MODULE=self.module, CARDKIT_PKCS11_PIN=PIN)
        if home is not None:
            env["CARDKIT_HOME"] = str(home)
        return {**env, **extra}

    def helper(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(Path(__file__)), *args], env=dict(env or self.env()),
                              capture_output=True, text=True, timeout=300, cwd=self.tmp)


@pytest.fixture(scope="module")
def station(softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Station:
    tmp = tmp_path_factory.mktemp("bureau")
    tokendir = tmp / "tokens"
    tokendir.mkdir(mode=0o700)
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\nlog.level = ERROR\n",
                    encoding="utf-8")
    st = Station(softhsm.module, conf, tmp)
    for label in (BUREAU, *CONC_TOKENS):
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin",
                        SO_PIN], check=True, capture_output=True, env=st.env(hsm=False), timeout=60)
    return st


@dataclass
class Run:
    tag: str
    out: Path
    trace: Path | None
    proc: subprocess.CompletedProcess[str]
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)

    def serials(self) -> dict[int, str]:
        """Input line → chip serial of its verified card (records.csv)."""
        with open(self.out / "records.csv", encoding="utf-8", newline="") as fh:
            return {int(r["line"]): r["chip_serial"] for r in csv.DictReader(fh) if r["state"] == "done"}

    def image(self, serial: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.out / "cards" / f"{serial}.json").read_text(encoding="utf-8"))
        return doc


@dataclass
class Batch:
    source: Path
    rows: dict[int, dict[str, str]]
    components: dict[str, list[str]]
    journal: Path
    runs: dict[str, Run]
    inspect: dict[str, Any]


def _batch_run(station: Station, source: Path, tag: str, keys: list[str], env: dict[str, str]) -> Run:
    out = station.tmp / f"out-{tag}"
    trace = out.with_name(f"trace-{tag}.jsonl")
    cmd = [str(CONSOLE), "--trace", str(trace), "batch", "run", str(source), "--profile", "ssc", "--algorithm",
           "3des", "--readers", f"virtual:{READERS}", *keys, "--out", str(out), "--station", f"station-{tag}",
           "--progress-interval", "0.5"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=station.tmp)
    run = Run(tag, out, trace, proc, time.perf_counter() - t0)
    assert proc.returncode == 0, f"batch run with {tag} keys failed ({proc.returncode}): {proc.stderr[-2000:]}"
    run.report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return run


@pytest.fixture(scope="module")
def batch(station: Station) -> Batch:
    source = station.tmp / "ssc-40.csv"
    lines = (ROOT / "applets/ssc/sample-batch.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    source.write_text("".join(lines[:RECORDS + 1]), encoding="utf-8")
    with open(source, encoding="utf-8", newline="") as fh:
        rows = {n: row for n, row in enumerate(csv.DictReader(fh), start=2)}
    assert len(rows) == RECORDS

    test_file = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    components: dict[str, list[str]] = {}
    for name in MASTERS:
        value = test_file.key(name, Alg.DES3).value
        c1 = secrets.token_bytes(len(value))
        c2 = bytes(x ^ y for x, y in zip(value, c1, strict=True))
        components[name] = [c1.hex(), c2.hex(), test_file.key(name, Alg.DES3).kcv]
    journal = station.tmp / "keys-journal.jsonl"
    p = station.helper("ceremony", BUREAU, str(journal), env=station.env(H3_COMPONENTS=json.dumps(components)))
    assert p.returncode == 0, f"ceremony failed: {p.stderr[-2000:]}"

    runs = {
        "token": _batch_run(station, source, "token", ["--keys", f"pkcs11:token={BUREAU}"],
                            station.env(station.tmp / "home-token")),
        "file": _batch_run(station, source, "file", ["--keys", str(ROOT / "keys/test/ssc.toml"),
                                                     "--allow-test-keys"],
                           station.env(station.tmp / "home-file", hsm=False)),
    }
    for run in runs.values():
        t = run.report["timings"]
        print(f"\n{run.tag}: {t['cards_verified']} cards in {t['elapsed_s']} s = {t['cards_per_minute']} cards/min "
              f"(median {t['median_s_per_card']} s per card; whole command {run.seconds:.2f} s)")
    p = station.helper("inspect", BUREAU)
    assert p.returncode == 0, f"inspecting the token failed: {p.stderr[-2000:]}"
    return Batch(source, rows, components, journal, runs, json.loads(p.stdout))


# ------------------------------------------------------------------------------------ normalisation
@dataclass
class CardFacts:
    """A card image with its serial-dependent values checked and replaced by names."""

    content: dict[str, Any]
    card_keys: list[bytes]
    pins: list[str]


def _walk(node: dict[str, Any], visit: Callable[[dict[str, Any]], None]) -> None:
    visit(node)
    for child in node.get("children") or []:
        _walk(child, visit)


def _normalise(image: dict[str, Any], profile: Profile, fields: dict[str, str], keys: Keystore) -> CardFacts:
    serial = bytes.fromhex(image.pop("serial"))
    prepared = prepare(profile, fields)
    expected: dict[tuple[str, int], tuple[str, bytes]] = {}
    for spec in profile.keys:
        fid = "3F00" if spec.df == "MF" else profile.file(spec.df).fid.hex().upper()
        expected[(fid, spec.ref)] = (spec.name, card_key(keys, profile, spec.name, serial, prepared.card_fields))
    records, _ = expected_content(profile, prepared, keys, serial)
    card_id = {records[fs.path][f.number].hex().upper() for fs in profile.files for f in fs.fields
               if f.computed == "ssc-card-id" and f.number is not None}
    pin_lengths = {(("3F00" if p.df == "MF" else profile.file(p.df).fid.hex().upper()), p.ref, p.kind): p.max_length
                   for p in profile.pins}
    facts = CardFacts({}, [], [])
    seen_ids: list[str] = []

    def visit(node: dict[str, Any]) -> None:
        fid = str(node.get("fid", "")).upper()
        for k in node.get("keys") or []:
            name, value = expected.pop((fid, k["ref"]))
            assert k["value"] == value.hex().upper(), f"card key {name} differs from the software derivation"
            facts.card_keys.append(value)
            k["value"] = f"<{name}: derived from the TEST master>"
        for kind, entries in (("pin", node.get("pins") or []), ("puk", node.get("puks") or [])):
            for p in entries:
                text = bytes.fromhex(p["value"]).decode("ascii")
                assert text.isdigit() and len(text) == pin_lengths[(fid, p["ref"], kind)]
                facts.pins.append(text)
                p["value"] = f"<{len(text)}-digit {kind}>"
        recs = node.get("records") or []
        for i, rec in enumerate(recs):
            if rec.upper() in card_id:
                seen_ids.append(rec)
                recs[i] = "<card identification code: MAC under the derived IRK>"

    _walk(image["mf"], visit)
    assert not expected, f"keys missing from the card: {sorted(n for n, _ in expected.values())}"
    assert len(seen_ids) == 1, "the card identification code is not the one computed from the TEST masters"
    facts.content = image
    return facts


# -------------------------------------------------------------------------------------------- tests
def test_every_record_is_done_and_the_report_reconciles(batch: Batch) -> None:
    for run in batch.runs.values():
        rep = run.report
        assert rep["records"] == {"pending": 0, "claimed": 0, "written": 0, "done": RECORDS, "rejected": 0,
                                  "total": RECORDS}, run.tag
        rec = rep["reconciliation"]
        assert rec["reconciles"] and all(c["ok"] for c in rec["checks"]) and rec["input"] == RECORDS, run.tag
        assert rep["timings"]["cards_verified"] == RECORDS
        serials = run.serials()
        assert sorted(serials) == sorted(batch.rows) and len(set(serials.values())) == RECORDS
        assert {p.stem for p in (run.out / "cards").glob("*.json")} == set(serials.values())
        assert not list((run.out / "cards" / "spoiled").iterdir()), f"{run.tag}: spoiled cards"
        assert verify_journal(run.out / "journal.jsonl").ok
        with open(run.out / "records.csv", encoding="utf-8", newline="") as fh:
            readers = {r["reader"] for r in csv.DictReader(fh)}
        # which readers got cards depends on the scheduler; every card came from one of the station's readers
        assert readers and readers <= {f"virtual-{i}" for i in range(READERS)}, f"{run.tag}: readers {readers}"
    assert "TEST keys" in batch.runs["file"].proc.stderr  # the file run is loudly a TEST run …
    assert "TEST keys" not in batch.runs["token"].proc.stderr  # … the token run is not


def test_token_cards_equal_the_test_file_cards(batch: Batch) -> None:
    profile = _profile()
    keys = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    by_run = {tag: run.serials() for tag, run in batch.runs.items()}
    for line, row in batch.rows.items():
        token = _normalise(batch.runs["token"].image(by_run["token"][line]), profile, row, keys)
        file = _normalise(batch.runs["file"].image(by_run["file"][line]), profile, row, keys)
        assert token.content == file.content, f"line {line}: the token card differs from the TEST-file card"
        assert len(token.card_keys) == len(profile.keys) and len(token.pins) == len(profile.pins)


def _forms(value: bytes) -> list[bytes]:
    """The ways a key could leak into a file: raw, hex (both cases, spaced), base64."""
    texts = {value.hex(), value.hex().upper(), value.hex(" "), value.hex(" ").upper(),
             base64.b64encode(value).decode()}
    return [value, *(t.encode() for t in texts)]


def _output_files(batch: Batch) -> list[Path]:
    files = [batch.journal]
    for run in batch.runs.values():
        files += [p for p in run.out.rglob("*") if p.is_file()]
        if run.trace is not None:
            files.append(run.trace)
    return files


def test_no_key_byte_or_pin_in_any_output(batch: Batch) -> None:
    profile = _profile()
    test_file = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    masters = [test_file.key(n, alg).value for n in MASTERS for alg in (Alg.DES3, Alg.SM4)]
    components = [bytes.fromhex(c) for name in MASTERS for c in batch.components[name][:2]]
    card_keys: list[bytes] = []
    pins: set[str] = set()
    for run in batch.runs.values():
        for line, serial in run.serials().items():
            facts = _normalise(run.image(serial), profile, batch.rows[line], test_file)
            card_keys += facts.card_keys
            pins.update(facts.pins)
    assert len(card_keys) == 2 * RECORDS * len(profile.keys)
    # A PIN that happens to equal a value of the input file (a 6-digit region code, an 8-digit date) cannot
    # be told apart from it in the ledger; such a PIN is only looked for in hex.
    source_tokens = set(re.findall(r"\d+", batch.source.read_text(encoding="utf-8")))
    everywhere = [f for v in masters + components for f in _forms(v)] + [PIN.encode(), SO_PIN.encode()]
    beside_cards = [f for v in card_keys for f in _forms(v)]
    for pin in pins:
        beside_cards += [pin.encode().hex().encode(), pin.encode().hex().upper().encode()]
    plain = sorted(pins - source_tokens)
    assert len(plain) > RECORDS  # nearly all of them
    # whole numbers only: not inside a longer number, a hex string, a word or a decimal fraction
    pin_re = re.compile(rb"(?<![0-9A-Za-z])(?<![0-9]\.)(" + b"|".join(p.encode() for p in plain)
                        + rb")(?![0-9A-Za-z])(?!\.[0-9])")
    identities = [row["citizen_id"].encode() for row in batch.rows.values()]

    files = _output_files(batch)
    assert len(files) > 2 * RECORDS + 10
    streams = {f"{tag} {name}": text.encode() for tag, run in batch.runs.items()
               for name, text in (("stdout", run.proc.stdout), ("stderr", run.proc.stderr))}
    blobs = {str(p.relative_to(batch.journal.parent)): p.read_bytes() for p in files} | streams
    card_images = {k for k in blobs if "/cards/" in k and k.endswith(".json")}
    assert len(card_images) == 2 * RECORDS
    for where, data in blobs.items():
        assert not [f for f in everywhere if f in data], f"master key material or the token PIN in {where}"
        if where in card_images:
            continue  # a card image is the card: it holds the card's own keys and PINs, and is 0600
        assert not [f for f in beside_cards if f in data], f"a card key or PIN in {where}"
        assert not pin_re.search(data), f"a PIN in {where}"
        if "ledger.db" not in where:  # the ledger keeps the records to remake cards; nothing else may
            assert not [i for i in identities if i in data], f"a full citizen id in {where}"
    for p in files:
        assert p.stat().st_mode & 0o077 == 0, f"{p} is readable by others"
    for run in batch.runs.values():
        assert run.trace is not None and run.trace.read_text(encoding="utf-8").count("\n") > 20 * RECORDS


def test_masters_stay_non_extractable_and_the_batch_left_nothing_on_the_token(batch: Batch) -> None:
    state = batch.inspect
    assert state["token_objects"] == 2 * len(MASTERS)  # a key + its metadata object each: no stored card key
    for name in MASTERS:
        info = state["keys"][name]
        assert info["objects"] == 1 and info["TOKEN"] and info["PRIVATE"] and info["SENSITIVE"], name
        assert info["read_value"] == "AttributeSensitive", name
        if name == TRANSPORT:  # extractable for the ISO engine, still sensitive: out only wrapped
            assert info["EXTRACTABLE"] and info["wrap"] == "wrapped"
            kcv = TestKeyFile(TEST_KEYS, allow_test_keys=True).key(name, Alg.DES3).kcv
            assert info["cardkit_key"] == f"value with KCV {kcv}"
        else:
            assert not info["EXTRACTABLE"] and info["DERIVE"], name
            assert info["wrap"] == "KeyUnextractable", name
            assert info["cardkit_key"] == (f"key {name!r} (3des) is not extractable: its value never leaves token "
                                           f"{BUREAU!r} (use derive, or a handle)")


def test_the_ceremony_journal_records_each_master_by_kcv(batch: Batch) -> None:
    assert verify_journal(batch.journal).ok
    events = [json.loads(line) for line in batch.journal.read_text(encoding="utf-8").splitlines()]
    done = {e["key_id"]: e for e in events if e["event"] == "keys.imported"}
    assert set(done) == set(MASTERS)
    for name, e in done.items():
        assert e["store"] == f"pkcs11:token={BUREAU}" and e["custodians"] == ["alice", "bob"]
        assert e["kcv"] == batch.components[name][2] and e["extractable"] is (name == TRANSPORT)


def test_eight_threads_on_two_tokens_derive_what_one_thread_derives(station: Station) -> None:
    p = station.helper("concurrency", *CONC_TOKENS)
    assert p.returncode == 0, f"the concurrent run died ({p.returncode}): {p.stderr[-2000:]}"
    res = json.loads(p.stdout)
    assert res["errors"] == []
    assert len(res["sequential"]) == len(CONC_TOKENS) * CONC_CARDS
    assert res["concurrent"] == res["sequential"]
    # and both equal the software derivation from the TEST masters (a single wrong thread would differ here)
    profile = _profile()
    test_file = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    for card in range(CONC_CARDS):
        want = _card_digests(test_file, profile, card, handles=False)
        for token in CONC_TOKENS:
            assert res["sequential"][f"{token}/{card}"] == want, f"{token} card {card}"
    print(f"\n{len(res['sequential'])} cards × {len(want)} key operations: sequential {res['sequential_s']:.3f} s, "
          f"{THREADS} threads {res['concurrent_s']:.3f} s")


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
