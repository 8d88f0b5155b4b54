"""Shared pytest fixtures. Each section is owned by one part of the code base; add new sections below."""

from __future__ import annotations

# =====================================================================================================
# BEGIN pcscd / vpcd fixtures (real PC/SC stack: pyscard -> libpcsclite -> pcscd -> vpcd -> TCP -> card)
#
#   pcscd       session-scoped PcscDaemon with 4 vpcd readers. Skipped only when the pcscd binary is
#               missing AND $CI is unset; in CI a missing pcscd fails the tests.
#   vpcd_card   function-scoped factory: vpcd_card(card) inserts a CardLike into a free reader slot and
#               returns (reader_name, VpcdCardServer) once PC/SC reports the card present; every card
#               it inserted is removed after the test.
#
# One pcscd can run per machine, so these fixtures do not work with pytest-xdist workers in parallel.
# =====================================================================================================
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from cardkit.pcscd import VPCD_DRIVER, PcscDaemon, find_pcscd
from cardkit.transport.virtual import CardLike
from cardkit.transport.vpcd import VpcdCardServer

PCSCD_TEST_READERS = 4
VpcdCardFactory = Callable[..., tuple[str, VpcdCardServer]]


def _pcsc_missing() -> str | None:
    if find_pcscd() is None:
        return "pcscd is not installed (Debian: pcscd, vsmartcard-vpcd, libpcsclite-dev)"
    if not VPCD_DRIVER.exists():
        return f"vpcd driver {VPCD_DRIVER} is missing (Debian: vsmartcard-vpcd)"
    try:
        import smartcard.scard  # noqa: F401
    except ImportError:
        return "pyscard is not installed (pip install cardkit[pcsc])"
    return None


@dataclass
class _SlotPool:
    """Which vpcd reader slots hold a test card; a slot freed by a test must read empty before reuse."""

    slots: list[tuple[str, int]]
    busy: set[str] = field(default_factory=set)
    dirty: set[str] = field(default_factory=set)
    next_index: int = 0

    def take(self) -> tuple[str, int]:
        from cardkit.transport.pcsc import wait_for_removal

        n = len(self.slots)
        for k in range(n):  # round robin, so a freed slot has time to read empty before it is reused
            name, port = self.slots[(self.next_index + k) % n]
            if name not in self.busy:
                self.next_index = (self.next_index + k + 1) % n
                if name in self.dirty:
                    wait_for_removal(name, 10.0)
                    self.dirty.discard(name)
                self.busy.add(name)
                return name, port
        raise RuntimeError(f"all {n} vpcd readers hold a test card")

    def give_back(self, name: str) -> None:
        self.busy.discard(name)
        self.dirty.add(name)


@pytest.fixture(scope="session")
def pcscd() -> Iterator[PcscDaemon]:
    """A running pcscd with :data:`PCSCD_TEST_READERS` vpcd readers (a ``cardkit.pcscd.PcscDaemon``)."""
    missing = _pcsc_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the PC/SC stack is incomplete: {missing}")
        pytest.skip(missing)
    # One pcscd per machine: concurrent test runs (several developers' sessions, benchmarks) take turns.
    import fcntl

    lock = open("/tmp/cardkit-pcscd-tests.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    daemon = PcscDaemon(readers=PCSCD_TEST_READERS)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


@pytest.fixture(scope="session")
def _vpcd_slots(pcscd: PcscDaemon) -> _SlotPool:
    return _SlotPool(pcscd.slots())


@pytest.fixture
def vpcd_card(_vpcd_slots: _SlotPool) -> Iterator[VpcdCardFactory]:
    """``vpcd_card(card, timeout=10.0) -> (reader_name, server)``: serve ``card`` in a free vpcd reader."""
    from cardkit.transport.pcsc import wait_for_card

    inserted: list[tuple[str, VpcdCardServer]] = []

    def insert(card: CardLike, timeout: float = 10.0) -> tuple[str, VpcdCardServer]:
        name, port = _vpcd_slots.take()
        server = VpcdCardServer(card, port=port)
        inserted.append((name, server))
        server.start()
        wait_for_card(name, timeout)
        return name, server

    try:
        yield insert
    finally:
        for name, server in inserted:
            server.stop()
            _vpcd_slots.give_back(name)


# =====================================================================================================
# END pcscd / vpcd fixtures
# =====================================================================================================
