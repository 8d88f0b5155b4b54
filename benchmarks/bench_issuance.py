"""Issuance figures, same run: APDUs per card vs the computed minimum for every shipped profile (and against the
engine of commit db26b50 — the baseline before the plan was minimised), data-preparation rate on 1 and 2
processes, and per-card personalization / verification time on the in-process virtual card (optionally also
through pcscd/vpcd with ``--pcsc``; the pcscd test lock is taken).

Run: ``python -m benchmarks bench_issuance`` or ``python -m benchmarks.bench_issuance [--quick] [--pcsc]``.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from cardkit.issuance.engine import personalize, plan_card, verify
from cardkit.issuance.plan import CardLimits, minimum_apdus
from cardkit.issuance.prepare import PreparedRecord, prepare
from cardkit.keys.store import TestKeyFile, alg_of
from cardkit.profiles.model import Profile, load_profile
from cardkit.profiles.synthetic import ssc_people
from cardkit.readers import TEST_KEYS, new_virtual_card
from cardkit.session import CardSession
from cardkit.transport.virtual import VirtualTransport

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "db26b50"
_LOCK = "/tmp/cardkit-pcscd-tests.lock"


def _keystore(profile: Profile) -> TestKeyFile:
    """The profile's TEST key file: keys/test/<profile>.toml (or the first word of its name), else ssc.toml."""
    for name in (profile.name, profile.name.split("-")[0]):
        own = ROOT / "keys" / "test" / f"{name}.toml"
        if own.exists():
            return TestKeyFile(own, allow_test_keys=True)
    return TestKeyFile(TEST_KEYS, allow_test_keys=True)


def _prepare(profile: Profile, row: dict[str, str], keystore: TestKeyFile) -> PreparedRecord:
    if profile.name == "mrtd":
        from cardkit.apps import mrtd  # the eMRTD has its own preparation (MRZ -> LDS, SOD)

        return mrtd.prepare_mrtd(profile, row, keystore=keystore)  # type: ignore[no-any-return, attr-defined]
    return prepare(profile, row, keystore=keystore)


def _sample(profile_dir: Path) -> dict[str, str]:
    import csv

    with open(profile_dir / "sample-batch.csv", encoding="utf-8", newline="") as fh:
        return dict(next(csv.DictReader(fh)))


def _card(profile: Profile, keystore: TestKeyFile, seed: int = 1) -> Any:
    alg = alg_of(profile.algorithm)
    card = new_virtual_card(alg=alg, transport_key=keystore.key(profile.transport_key, alg).value, seed=seed)
    if profile.channel in ("scp03", "scp02"):  # the GP profile needs an issuer security domain on the card
        from cardkit.virtual.gp import GpKeySet, install_isd

        keys = GpKeySet.single(keystore.key(profile.transport_key, alg).value, alg=alg, version=0x01)
        install_isd(card, keys, 3 if profile.channel == "scp03" else 2)
    return card


def _baseline_engine() -> ModuleType | None:
    """The engine as it was at :data:`BASELINE_COMMIT` (read with ``git show``), or None."""
    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:cardkit/issuance/engine.py"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    spec = importlib.util.spec_from_loader("cardkit_engine_baseline", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    try:
        exec(compile(src, f"{BASELINE_COMMIT}:engine.py", "exec"), mod.__dict__)  # our own history
    except Exception as exc:  # the old code may not run against today's modules
        print(f"    (baseline engine {BASELINE_COMMIT} does not load: {type(exc).__name__}: {exc})")
        return None
    return mod


def apdu_table() -> None:
    print("  APDUs per card (personalization) vs the computed minimum:")
    base = _baseline_engine()
    tmp = Path(tempfile.mkdtemp())
    try:
        folder = tmp / "ssc"
        folder.mkdir()
        shutil.copy(ROOT / "applets/ssc/profile.toml", folder / "profile.toml")
        (folder / "face.bin").write_bytes(bytes(range(256)) * 15 + b"\xee" * 160)
        (folder / "finger.bin").write_bytes(b"\x5a" * 1000)
        cases: list[tuple[str, Path, str | None, dict[str, str], bool]] = []
        ssc_row = _sample(ROOT / "applets/ssc")
        for alg in ("sm4", "3des"):
            cases.append((f"ssc {alg}", ROOT / "applets/ssc", alg, ssc_row, False))
        photo = dict(ssc_row, photo="face.bin", fingerprint="finger.bin")
        cases.append(("ssc sm4 + 4000 B photo + 1000 B fingerprint, short APDUs", folder, "sm4", photo, False))
        cases.append(("ssc sm4 + 4000 B photo + 1000 B fingerprint, extended APDUs", folder, "sm4", photo, True))
        for name in ("mrtd", "gp-store-data"):
            if (ROOT / "applets" / name / "profile.toml").exists():
                cases.append((name, ROOT / "applets" / name, None, _sample(ROOT / "applets" / name), False))
        for label, path, alg, row, extended in cases:
            try:
                profile = load_profile(path, algorithm=alg)
                ks = _keystore(profile)
                prepared = _prepare(profile, row, ks)
                session = CardSession(VirtualTransport(_card(profile, ks)), extended=extended)
                result = personalize(session, profile, prepared, ks)
                sent = session.apdu_count
                manifest = verify(session, profile, prepared, ks, result)
                checked = session.apdu_count - sent
            except Exception as exc:  # a profile still in the making must not stop the other figures
                print(f"    {label:<62} not measured: {type(exc).__name__}: {exc}")
                continue
            try:
                minimum: str = str(minimum_apdus(profile, prepared, limits=CardLimits.of(session)).total)
            except Exception:
                minimum = "n/a (GP channel)"
            old = ""
            if base is not None and profile.channel == "iso-sm":
                try:
                    s2 = CardSession(VirtualTransport(_card(profile, ks)), extended=extended)
                    base.personalize(s2, profile, prepared, ks)
                    old = f"; engine {BASELINE_COMMIT}: {s2.apdu_count} ({s2.apdu_count / sent:.2f}x)"
                except Exception as exc:
                    old = f"; engine {BASELINE_COMMIT}: fails ({type(exc).__name__})"
            print(f"    {label:<62} {sent:>4} APDUs, minimum {minimum}; verify {checked} APDUs "
                  f"({len(manifest.get('files', {}))} files){old}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ preparation

_PROFILE: Profile | None = None
_KEYS: TestKeyFile | None = None


def _init() -> None:
    global _PROFILE, _KEYS
    _PROFILE = load_profile(ROOT / "applets/ssc")
    _KEYS = TestKeyFile(TEST_KEYS, allow_test_keys=True)


def _prepare_chunk(rows: list[dict[str, str]]) -> int:
    """Validate + encode each record and build its card plan (card keys diversified, card ID MAC'd)."""
    assert _PROFILE is not None and _KEYS is not None
    for i, row in enumerate(rows):
        prepared = prepare(_PROFILE, row)
        plan_card(_PROFILE, prepared, _KEYS, i.to_bytes(4, "big"))
    return len(rows)


def preparation_rate(n: int) -> None:
    import logging

    logging.getLogger("cardkit.keys.store").setLevel(logging.ERROR)
    rows = list(ssc_people(n, seed=7))
    chunks = [rows[i:i + 250] for i in range(0, n, 250)]
    _init()
    t0 = time.perf_counter()
    for c in chunks:
        _prepare_chunk(c)
    one = n / (time.perf_counter() - t0)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2, initializer=_init) as pool:
        t0 = time.perf_counter()
        done = sum(pool.map(_prepare_chunk, chunks))
        two = done / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for row in rows[:min(n, 2000)]:
        prepare(_PROFILE, row)  # type: ignore[arg-type]
    validate_only = min(n, 2000) / (time.perf_counter() - t0)
    print(f"  data preparation, {n} synthetic SSC records (prepare + plan with card keys):")
    print(f"    1 process {one:,.0f} cards/s; 2 processes {two:,.0f} cards/s ({two / one:.2f}x); "
          f"validation + encoding alone {validate_only:,.0f} records/s")


# ------------------------------------------------------------------------------------------ per card


def _median_ms(fn: Callable[[], None], n: int) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def per_card(n: int, pcsc: bool) -> None:
    ks = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    rows = list(ssc_people(n, seed=11))
    print(f"  per card on the in-process virtual card (median of {n}):")
    for alg in ("sm4", "3des"):
        profile = load_profile(ROOT / "applets/ssc", algorithm=alg)
        preps = [prepare(profile, r) for r in rows]
        perso, ver = [], []
        for i, prepared in enumerate(preps):
            session = CardSession(VirtualTransport(_card(profile, ks, seed=i)))
            t0 = time.perf_counter()
            result = personalize(session, profile, prepared, ks)
            t1 = time.perf_counter()
            verify(session, profile, prepared, ks, result)
            t2 = time.perf_counter()
            perso.append((t1 - t0) * 1000)
            ver.append((t2 - t1) * 1000)
        print(f"    ssc {alg}: personalize {statistics.median(perso):.1f} ms, verify {statistics.median(ver):.1f} ms")
    if pcsc:
        _per_card_pcsc(ks, rows[: max(3, n // 4)])


def _per_card_pcsc(ks: TestKeyFile, rows: list[dict[str, str]]) -> None:
    import fcntl

    from cardkit.pcscd import PcscDaemon
    from cardkit.transport.pcsc import PcscTransport, wait_for_card
    from cardkit.transport.vpcd import VpcdCardServer

    profile = load_profile(ROOT / "applets/ssc")
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        daemon = PcscDaemon(readers=1)
        daemon.start()
        try:
            name, port = daemon.slots()[0]
            times = []
            for i, row in enumerate(rows):
                prepared = prepare(profile, row)
                server = VpcdCardServer(_card(profile, ks, seed=100 + i), port=port)
                server.start()
                try:
                    wait_for_card(name, 10.0)
                    session = CardSession(PcscTransport(name))
                    t0 = time.perf_counter()
                    personalize(session, profile, prepared, ks)
                    times.append((time.perf_counter() - t0) * 1000)
                    session.close()
                finally:
                    server.stop()
                    time.sleep(0.5)  # let pcscd see the card go before the next one
            print(f"    ssc sm4 through pcscd/vpcd: personalize {statistics.median(times):.1f} ms "
                  f"(median of {len(times)})")
        finally:
            daemon.stop()
            fcntl.flock(lock, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    quick = "--quick" in args
    apdu_table()
    preparation_rate(2000 if quick else 20000)
    per_card(10 if quick else 40, "--pcsc" in args)


if __name__ == "__main__":
    main()
