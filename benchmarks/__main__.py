"""Run every benchmark: ``python -m benchmarks [NAME...]``."""

from __future__ import annotations

import importlib
import sys

ALL = ["bench_session", "bench_cold_start", "bench_virtual", "bench_scp", "bench_issuance", "bench_keys", "bench_batch"]


def main() -> None:
    names = sys.argv[1:] or ALL
    for name in names:
        mod = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}")
        mod.main()


if __name__ == "__main__":
    main()
