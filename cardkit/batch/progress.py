"""Progress of a batch run: per-reader and overall counts, rate and ETA, rendered as text lines.

The runner feeds :class:`Progress` with events from its worker threads; the CLI decides where the lines go
(one refreshed line on a terminal, plain lines every few seconds otherwise). Nothing here prints.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from cardkit.batch.runner import RunEvent

__all__ = ["Progress", "ReaderProgress", "format_duration"]

#: Verified cards within this many seconds make the rate (a sliding window smooths start-up and pauses).
WINDOW_S: Final = 60.0


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` (or ``-`` when unknown)."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass
class ReaderProgress:
    name: str
    done: int = 0
    failed: int = 0
    rejected: int = 0
    state: str = "starting"


class Progress:
    """Thread-safe counters of one station's run.

    ``outstanding`` is the number of records of the batch still to do when the run starts; later
    :meth:`set_batch` (ledger status counts, polled by the runner) replaces the estimate, so several
    stations sharing a batch each see the batch-wide remaining work.
    """

    def __init__(self, outstanding: int, *, clock: Callable[[], float] = time.monotonic,
                 window_s: float = WINDOW_S) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._window = window_s
        self._start = clock()
        self._outstanding0 = max(0, outstanding)
        self._batch: dict[str, int] | None = None
        self._at_batch = (0, 0)  # this station's (done, rejected) when the batch counts were taken
        self._times: deque[float] = deque()
        self.readers: dict[str, ReaderProgress] = {}
        self.done = self.failed = self.rejected = 0

    # ----------------------------------------------------------------------------------------- updates
    def reader(self, name: str) -> ReaderProgress:
        with self._lock:
            return self.readers.setdefault(name, ReaderProgress(name))

    def set_state(self, reader: str, state: str) -> None:
        self.reader(reader).state = state

    def card_verified(self, reader: str) -> None:
        r = self.reader(reader)
        with self._lock:
            r.done += 1
            self.done += 1
            self._times.append(self._clock())

    def card_failed(self, reader: str, *, record_rejected: bool) -> None:
        r = self.reader(reader)
        with self._lock:
            r.failed += 1
            self.failed += 1
            if record_rejected:
                r.rejected += 1
                self.rejected += 1

    def record_rejected(self, reader: str) -> None:
        r = self.reader(reader)
        with self._lock:
            r.rejected += 1
            self.rejected += 1

    def set_batch(self, counts: Mapping[str, int]) -> None:
        """Batch-wide record counts by state (``Ledger.status``)."""
        with self._lock:
            self._batch = dict(counts)
            self._at_batch = (self.done, self.rejected)

    def apply(self, ev: RunEvent) -> str | None:
        """Take a runner event into account; return a line worth showing at once (failures, rejections,
        recoveries, a stop), else None."""
        if ev.kind == "verified" and ev.reader:
            self.card_verified(ev.reader)
        elif ev.kind == "failed" and ev.reader:
            self.card_failed(ev.reader, record_rejected=ev.rejected)
            return f"{ev.reader}: card failed ({ev.detail})" + (" — record rejected" if ev.rejected else "")
        elif ev.kind == "rejected" and ev.reader:
            self.record_rejected(ev.reader)
            return f"{ev.reader}: record rejected ({ev.detail})"
        elif ev.kind == "state" and ev.reader:
            self.set_state(ev.reader, ev.detail)
        elif ev.kind == "status":
            self.set_batch(ev.counts)
        elif ev.kind in ("recovered", "stopping"):
            return f"{ev.kind}: {ev.detail}"
        return None

    # ----------------------------------------------------------------------------------------- figures
    def remaining(self) -> int:
        with self._lock:
            if self._batch is not None:
                since = self.done - self._at_batch[0] + self.rejected - self._at_batch[1]
                return max(0, sum(self._batch.get(s, 0) for s in ("pending", "claimed", "written")) - since)
            return max(0, self._outstanding0 - self.done - self.rejected)

    def rate_per_min(self) -> float | None:
        """Verified cards per minute over the last window (or since the start, when shorter)."""
        now = self._clock()
        with self._lock:
            while self._times and now - self._times[0] > self._window:
                self._times.popleft()
            n = len(self._times)
            span = min(self._window, now - self._start)
        if n == 0 or span <= 0:
            return None
        return n * 60.0 / span

    def eta_s(self) -> float | None:
        rate = self.rate_per_min()
        remaining = self.remaining()
        if remaining == 0:
            return 0.0
        return None if not rate else remaining * 60.0 / rate

    def elapsed_s(self) -> float:
        return self._clock() - self._start

    # ----------------------------------------------------------------------------------------- text
    def overall_line(self) -> str:
        rate = self.rate_per_min()
        batch = ""
        with self._lock:
            if self._batch is not None:
                b = self._batch
                batch = f" | batch: {b.get('done', 0)}/{b.get('total', 0)} done, {b.get('rejected', 0)} rejected"
        return (f"{self.done} done, {self.rejected} rejected, {self.failed} failed cards, "
                f"{'-' if rate is None else f'{rate:.1f}'} cards/min, {self.remaining()} to go, "
                f"ETA {format_duration(self.eta_s())}, elapsed {format_duration(self.elapsed_s())}{batch}")

    def reader_lines(self) -> list[str]:
        with self._lock:
            rows = sorted(self.readers.values(), key=lambda r: r.name)
        return [f"  {r.name}: {r.done} done, {r.failed} failed, {r.rejected} rejected — {r.state}" for r in rows]

    def render(self, *, tty: bool, final: bool = False, width: int = 200) -> list[str]:
        """Lines to show: on a terminal one line (overall and per reader, cut to ``width``), otherwise — and
        at the end — the overall line and one line per reader."""
        if tty and not final:
            return [f"{self.overall_line()} | {self.compact_readers(width)}"[: width + 80]]
        return [f"progress: {self.overall_line()}", *self.reader_lines()]

    def compact_readers(self, width: int = 200) -> str:
        """One line: ``name done/failed`` per reader, cut to ``width`` characters."""
        with self._lock:
            rows = sorted(self.readers.values(), key=lambda r: r.name)
        text = "  ".join(f"{r.name} {r.done}/{r.failed}" for r in rows)
        return text if len(text) <= width else text[: max(0, width - 1)] + "…"
