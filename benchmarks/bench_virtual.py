"""The virtual card in-process vs on the real PC/SC stack; APDUs per second with 1, 2 and 8 readers in parallel.

* Round trip: median µs of one APDU (GET DATA 0045, 4-byte answer; READ BINARY of 16 and 255 bytes) through a
  :class:`~cardkit.session.CardSession` on the in-process transport, and through pyscard -> pcscd -> vpcd -> TCP
  -> the same kind of card served by ``cardkit virtual serve`` in a separate process (so the card side does
  not share this interpreter's GIL with the client). Rounds alternate between the two paths.
* Throughput: N threads, one reader and one CardSession each, sharing a fixed number of APDUs; total APDUs /
  wall time. The cards are served by the same child process (8 slots).

pcscd is started privately with 8 vpcd readers, under the machine-wide pcscd lock the tests use
(/tmp/cardkit-pcscd-tests.lock), so a benchmark and a test run never fight over the one pcscd socket.
"""

from __future__ import annotations

import fcntl
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cardkit.acl import AccessRules
from cardkit.apdu import CommandApdu
from cardkit.commands import iso
from cardkit.crypto import Alg
from cardkit.pcscd import PcscDaemon
from cardkit.session import CardSession
from cardkit.transport.pcsc import PcscTransport, wait_for_card, wait_for_removal
from cardkit.transport.virtual import VirtualTransport
from cardkit.virtual import VirtualCard

LOCK = "/tmp/cardkit-pcscd-tests.lock"
READERS = 8
BASE_PORT = 35963
#: Benchmark-only card key (the cards hold nothing; the key is never used for authentication here).
_KEY = bytes(16)


@contextmanager
def pcscd_lock() -> Iterator[None]:
    """The lock the test fixtures take: one pcscd per machine, so test runs and benchmarks take turns."""
    with open(LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def bench_card(i: int) -> VirtualCard:
    card = VirtualCard.blank(bytes((0xBE, 0x9C, 0x00, i)), _KEY, Alg.AES, seed=i)
    card.mf.add_ef(0x2F01, size=255, rules=AccessRules(read="always"), data=bytes(range(255)))
    return card


COMMANDS: dict[str, CommandApdu] = {
    "GET DATA (4-byte answer)": iso.get_data(0x0045, le=4),
    "READ BINARY 16 bytes": iso.read_binary(0, 16),
    "READ BINARY 255 bytes": iso.read_binary(0, 255),
}


def _prepare(session: CardSession) -> None:
    session.send(iso.select_fid(b"\x2f\x01", p2_fci="none"))


def _samples(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


@contextmanager
def served_elsewhere(images: list[Path]) -> Iterator[subprocess.Popen[str]]:
    """``cardkit virtual serve`` in a child process, one image per slot from BASE_PORT on."""
    args = [str(Path(sys.executable).parent / "cardkit"), "virtual", "serve", "--port", str(BASE_PORT)]
    for image in images:
        args += ["--image", str(image)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def round_trips(readers: list[str], rounds: int, n: int) -> dict[str, dict[str, float]]:
    local = CardSession(VirtualTransport(bench_card(0)))
    remote = CardSession(PcscTransport(readers[0]))
    _prepare(local)
    _prepare(remote)
    out: dict[str, dict[str, float]] = {}
    try:
        for label, cmd in COMMANDS.items():
            a: list[float] = []
            b: list[float] = []
            for _ in range(rounds):
                a += _samples(lambda cmd=cmd: local.send(cmd), n)   # type: ignore[misc]
                b += _samples(lambda cmd=cmd: remote.send(cmd), n)  # type: ignore[misc]
            out[label] = {"in_process_us": statistics.median(a) * 1e6, "pcscd_us": statistics.median(b) * 1e6}
    finally:
        remote.close()
    return out


def throughput(readers: list[str], parallel: int, per_reader: int) -> float:
    """APDUs per second with ``parallel`` threads, each on its own reader and session."""
    cmd = COMMANDS["GET DATA (4-byte answer)"]
    sessions = [CardSession(PcscTransport(r)) for r in readers[:parallel]]
    start = threading.Barrier(parallel + 1)
    errors: list[BaseException] = []

    def work(session: CardSession) -> None:
        start.wait()
        try:
            for _ in range(per_reader):
                session.send(cmd)
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for s in sessions:
        s.close()
    if errors:
        raise RuntimeError(f"{len(errors)} reader threads failed: {errors[0]!r}")
    return parallel * per_reader / wall


def main(rounds: int = 7, n: int = 200, total: int = 4000) -> dict[str, float]:
    results: dict[str, float] = {}
    with pcscd_lock(), PcscDaemon(readers=READERS, base_port=BASE_PORT) as daemon, \
            tempfile.TemporaryDirectory(prefix="cardkit-bench-") as tmp:
        images = []
        for i in range(READERS):
            path = Path(tmp) / f"card{i}.json"
            bench_card(i).save(path)
            images.append(path)
        readers = list(daemon.expected_names)
        with served_elsewhere(images) as child:
            for r in readers:
                wait_for_card(r, 20)
            trips = round_trips(readers, rounds, n)
            for label, v in trips.items():
                ratio = v["pcscd_us"] / v["in_process_us"]
                print(f"  {label:26s} in-process {v['in_process_us']:7.1f} µs   pcscd/vpcd {v['pcscd_us']:7.1f} µs"
                      f"   ({ratio:.1f}×)")
                results[f"rt_{label}"] = v["pcscd_us"]
            base = None
            for k in (1, 2, 8):
                rate = throughput(readers, k, total // k)
                base = base or rate
                print(f"  {k} reader(s) in parallel: {rate:8.0f} APDUs/s  ({rate / base:.2f}× one reader)")
                results[f"apdus_per_s_{k}"] = rate
            if child.poll() is not None:
                raise RuntimeError(f"cardkit virtual serve exited early: {child.stderr.read() if child.stderr else ''}")
        for r in readers:
            wait_for_removal(r, 10)
    print(f"  (machine: {os.cpu_count()} CPUs, shared; medians over {rounds}×{n} APDUs per path)")
    return results


if __name__ == "__main__":
    main()
