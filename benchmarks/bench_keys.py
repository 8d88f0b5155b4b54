"""Per-card cost of the key operations of one SSC card (3DES): SoftHSM2 token vs in-memory keys, same run.

Each keystore is wrapped in a proxy that times every ``key``/``derive`` call the issuance engine makes while
personalizing and verifying one card on the in-process virtual card. Printed: key operations per card, time
in key operations per card (median over N cards), the whole card (personalize + verify), and the ratios
against the TEST key file (in memory). The SoftHSM2 token lives in a temporary directory (own
``SOFTHSM2_CONF``); no pcscd is started.

Run: ``python -m benchmarks bench_keys`` (or ``python -m benchmarks.bench_keys``).
"""

from __future__ import annotations

import csv
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
MASTERS = ("ssc-transport", "ssc-issuer", "ssc-irk", "ssc-rkssse", "ssc-sm")
PIN = "bench-pin-1234"


class Timed:
    """Forwards ``key``/``derive`` to a keystore and accumulates their count and time."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls, self.seconds = inner, 0, 0.0

    def key(self, name: str, alg: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.key(name, alg)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - t0

    def derive(self, name: str, alg: Any, levels: list[bytes]) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.derive(name, alg, levels)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - t0


def _card(keystore: Any, rows: list[dict[str, str]], i: int) -> tuple[int, float, float]:
    from cardkit.crypto import Alg
    from cardkit.issuance.engine import personalize, verify
    from cardkit.issuance.prepare import prepare
    from cardkit.profiles.model import load_profile
    from cardkit.readers import new_virtual_card
    from cardkit.session import CardSession
    from cardkit.transport.virtual import VirtualTransport

    profile = load_profile(ROOT / "applets/ssc", algorithm="3des")
    prepared = prepare(profile, rows[i % len(rows)])
    timed = Timed(keystore)
    card = new_virtual_card(i.to_bytes(4, "big"), alg=Alg.DES3,
                            transport_key=keystore.key(profile.transport_key, Alg.DES3).value, seed=i)
    session = CardSession(VirtualTransport(card))
    t0 = time.perf_counter()
    result = personalize(session, profile, prepared, timed)
    verify(session, profile, prepared, timed, result)
    return timed.calls, timed.seconds, time.perf_counter() - t0


def _setup_token(tmp: Path) -> tuple[str, str] | None:
    module = next((m for m in MODULES if Path(m).exists()), None)
    if module is None or shutil.which("softhsm2-util") is None:
        return None
    (tmp / "tokens").mkdir()
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", PIN, "--so-pin",
                    "bench-so-pin"], check=True, capture_output=True)
    return module, "bench"


def main(n: int = 30) -> dict[str, float]:
    from cardkit.crypto import Alg
    from cardkit.keys.encrypted import EncryptedKeystore, KdfParams
    from cardkit.keys.store import TestKeyFile
    from cardkit.readers import TEST_KEYS

    with open(ROOT / "applets/ssc/sample-batch.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    test_file = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    with tempfile.TemporaryDirectory(prefix="cardkit-bench-keys-") as d:
        tmp = Path(d)
        stores: dict[str, Any] = {"memory (TEST file)": test_file}
        store = EncryptedKeystore.create(tmp / "b.cks", "benchmark passphrase", kdf=KdfParams.weak_for_tests(),
                                         allow_weak_kdf=True)
        token_info = _setup_token(tmp)
        token = None
        if token_info:
            from cardkit.keys.pkcs11 import Pkcs11Keystore

            token = Pkcs11Keystore(token_info[0], token_info[1], PIN)
        for name in MASTERS:
            value = test_file.key(name, Alg.DES3).value
            store.import_key(name, Alg.DES3, value, extractable=name == "ssc-transport")
            if token is not None:
                token.import_key(name, Alg.DES3, value, extractable=name == "ssc-transport")
        stores["encrypted store"] = store
        if token is not None:
            stores["SoftHSM2 token"] = token
        else:
            print("  SoftHSM2 not installed: token figures skipped")
        results: dict[str, tuple[int, float, float]] = {}
        for label, ks in stores.items():
            _card(ks, rows, 0)  # warm-up
            samples = [_card(ks, rows, i + 1) for i in range(n)]
            results[label] = (samples[0][0], statistics.median(s[1] for s in samples),
                              statistics.median(s[2] for s in samples))
        if token is not None:
            token.close()
    base_ops, base_card = results["memory (TEST file)"][1], results["memory (TEST file)"][2]
    figures: dict[str, float] = {}
    for label, (calls, key_s, card_s) in results.items():
        print(f"  {label:20}: {calls} key operations/card, {key_s * 1000:.2f} ms in key operations "
              f"({key_s / base_ops:.1f}x memory), whole card {card_s * 1000:.1f} ms ({card_s / base_card:.2f}x)")
        figures[label] = key_s / base_ops
    return figures


if __name__ == "__main__":
    main()
