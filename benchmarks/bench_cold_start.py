"""Cold start of ``cardkit --help`` vs ``python -c pass`` (the interpreter's own start), same run."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def _time(cmd: list[str], n: int) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main(n: int = 15) -> float:
    base = _time([sys.executable, "-c", "pass"], n)
    cli = _time([sys.executable, "-m", "cardkit.cli.main", "--help"], n)
    mods = subprocess.run([sys.executable, "-c", "import cardkit.cli.main, sys; "
                           "print(int('smartcard' in sys.modules), int('cryptography' in sys.modules))"],
                          check=True, capture_output=True, text=True).stdout.split()
    print(f"  python -c pass: {base * 1000:.0f} ms; cardkit --help: {cli * 1000:.0f} ms "
          f"(+{(cli - base) * 1000:.0f} ms for cardkit; ratio {cli / base:.2f}); "
          f"pyscard imported: {mods[0] == '1'}, cryptography imported: {mods[1] == '1'}")
    return cli


if __name__ == "__main__":
    main()
