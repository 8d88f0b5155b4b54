"""Run a loaded batch on parallel readers: one worker thread per reader, exactly once per record.

Each worker repeats: take a card (a fresh virtual card from a :class:`~cardkit.virtual.image.CardFeeder`, or
wait for a card in a PC/SC reader) → claim the next pending record → prepare it (by default from the
record's fields in the ledger; a batch loaded from a stored plan passes ``prepare=`` to read the prepared
record from the plan) → note the card in the ledger (``card_started``, before anything is written, so a
crash spoils it by serial) → personalize → ``card_written`` → read back and verify → keep the image
(virtual cards) → ``card_verified`` with the manifest. A card that fails is spoiled and its record requeued
as a remake, or rejected past the remake limit (``card_failed``). Every event goes to the hash-chained
journal, with cardholders as pseudonyms.

At start-up a station takes back everything it held when it last stopped (``Ledger.recover`` with its own
name: half-written cards are spoiled, their records requeued), finishes the bookkeeping a crash may have
cut short (image renames, journal lines) and only then starts its readers. While waiting for work it takes
back the claims of other stations whose heartbeat went stale, so survivors finish a batch a dead station
left. A station stops when the batch is finished or cancelled, on :meth:`BatchRunner.stop`, after
``stop_after_failures`` failed cards, or once it has claimed ``max_cards`` records.

Readers and card images are in :mod:`cardkit.batch.slots` (names re-exported here).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from cardkit.batch.journal import RESERVED as JOURNAL_RESERVED
from cardkit.batch.journal import Journal, JournalError, verify_journal
from cardkit.batch.ledger import Ledger
from cardkit.batch.ledger_model import (
    BatchStateError,
    ChipInUseError,
    Claim,
    LedgerError,
    RecordStateError,
    Recovered,
)
from cardkit.batch.slots import CardSlot, ImageStore, PcscSlot, TraceSink, VirtualSlot, make_feeder
from cardkit.errors import CardkitError, KeystoreError, ProfileError
from cardkit.issuance.engine import chip_serial, personalize, verify
from cardkit.issuance.prepare import PreparedRecord, RecordProblems, prepare
from cardkit.keys.store import Keystore
from cardkit.profiles.model import Profile
from cardkit.session import CardSession

if TYPE_CHECKING:
    from cardkit.virtual.card import VirtualCard

__all__ = ["BatchRunner", "CardSlot", "ImageStore", "PcscSlot", "PrepareRecord", "RunConfig", "RunEvent",
           "RunResult", "StationBusyError", "TraceSink", "VirtualSlot", "make_feeder"]

log = logging.getLogger(__name__)

_REASON_MAX: Final = 300
#: Journal and manifest keys the runner writes itself; ``RunConfig.facts`` may not replace them.
_RESERVED_FACTS: Final = frozenset({
    "batch", "station", "record", "line", "attempt", "reader", "pseudonym", "chip_serial", "reason", "outcome",
    "apdus", "manifest_sha256", "files", "held_by", "held_reader", "previous_state", "readers", "pid", "state",
    "verified", "failed", "rejected", "why", "late", "apdus_personalize", "apdus_verify"}) | JOURNAL_RESERVED

#: Turns a claimed record into the data to write. May raise :class:`~cardkit.issuance.prepare.RecordProblems`
#: (the record is rejected); any other error stops the station (the claim is taken back on the next run).
PrepareRecord = Callable[[Claim], PreparedRecord]


class StationBusyError(BatchStateError):
    """Another process runs the same station (same name and output directory) right now."""


@dataclass(frozen=True)
class RunConfig:
    ledger_url: str
    batch_id: str
    station: str
    out: Path
    #: Failed cards a record may have before it is rejected.
    max_remakes: int = 2
    #: Stop the station after this many failed cards (0: never).
    stop_after_failures: int = 0
    #: ``stop``: a record found invalid at card time stops the station (it is rejected either way).
    on_bad_record: str = "stop"
    #: Claims of other stations silent this long are taken back.
    stale_after_s: float = 120.0
    poll_s: float = 0.25
    journal: Path | None = None
    #: Claim at most this many records in this run, then stop (0: no limit). Remakes count: one claim, one card.
    max_cards: int = 0
    #: Extra facts written into every journal line and every card manifest of the run (a plan run: its plan id).
    facts: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_cards < 0:
            raise ValueError(f"max_cards must be 0 (no limit) or positive, not {self.max_cards}")
        if self.on_bad_record not in ("stop", "skip"):
            raise ValueError(f"on_bad_record must be 'stop' or 'skip', not {self.on_bad_record!r}")
        clash = set(self.facts) & _RESERVED_FACTS
        if clash:
            raise ValueError(f"facts must not replace the runner's own: {', '.join(sorted(clash))}")

    @property
    def journal_path(self) -> Path:
        return self.journal if self.journal is not None else self.out / "journal.jsonl"


@dataclass(frozen=True)
class RunEvent:
    """What the runner tells its observer (progress display). ``kind``: ``verified``, ``failed``
    (``rejected`` True when the record hit the remake limit), ``rejected`` (record invalid), ``state``
    (``detail`` says what the reader does), ``status`` (``counts`` of the batch), ``recovered``, ``stopping``."""

    kind: str
    reader: str | None = None
    detail: str = ""
    rejected: bool = False
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class RunResult:
    verified: int = 0
    failed: int = 0
    rejected: int = 0
    recovered: list[Recovered] = field(default_factory=list)
    #: Why the station stopped before the batch was finished (None: finished or cancelled).
    stopped: str | None = None
    #: The station stopped because it had claimed ``RunConfig.max_cards`` records.
    max_cards_reached: bool = False
    batch_state: str = ""
    status: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


# ------------------------------------------------------------------------------------------- runner
def _reason(stage: str, exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ") or type(exc).__name__
    text = f"{stage}: {type(exc).__name__}: {text}"
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"


class BatchRunner:
    """One station running one batch on its readers (see the module docstring)."""

    def __init__(self, config: RunConfig, profile: Profile, keystore: Keystore, slots: Sequence[CardSlot], *,
                 events: Callable[[RunEvent], None] | None = None, prepare: PrepareRecord | None = None) -> None:
        """``prepare`` turns a claim into the data to write (default: validate and encode the record's fields
        from the ledger with the profile and keystore, :func:`cardkit.issuance.prepare.prepare`). It is called
        from every reader thread at once, so it must be thread-safe."""
        if not slots:
            raise CardkitError("a station needs at least one reader")
        if len({s.name for s in slots}) != len(slots):
            raise CardkitError("reader names of a station must be unique")
        self.config = config
        self.profile = profile
        self.keystore = keystore
        self.slots = list(slots)
        self._events = events or (lambda e: None)
        self._prepare: PrepareRecord = prepare or self._prepare_fields
        self._tickets = 0  # claims reserved under max_cards (taken, not given back)
        self._claimed = 0  # claims made under max_cards
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stopped: str | None = None
        self._fatal: BaseException | None = None
        self.result = RunResult()
        config.out.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.images = ImageStore(config.out / "cards")
        self.journal: Journal | None = None

    # ------------------------------------------------------------------------------------------ control
    def stop(self, reason: str, *, level: int = logging.WARNING) -> None:
        """Ask every reader to stop after its current card."""
        with self._lock:
            if self._stopped is None:
                self._stopped = reason
        if not self._stop.is_set():
            log.log(level, "station %s stopping: %s", self.config.station, reason)
            self._emit(RunEvent("stopping", detail=reason))
        self._stop.set()

    def _prepare_fields(self, claim: Claim) -> PreparedRecord:
        return prepare(self.profile, claim.fields, line=claim.line, keystore=self.keystore)

    def _take_ticket(self) -> bool:
        """Reserve one claim under ``max_cards``; False when every claim of this run is reserved or made."""
        limit = self.config.max_cards
        if not limit:
            return True
        with self._lock:
            if self._tickets >= limit:
                return False
            self._tickets += 1
            return True

    def _return_ticket(self) -> None:
        if self.config.max_cards:
            with self._lock:
                self._tickets -= 1

    def _ticket_used(self) -> None:
        """A reserved claim was made; the last one ends the run (every other reader has used or given back its
        reservation, so no claim is lost to the stop)."""
        limit = self.config.max_cards
        if not limit:
            return
        with self._lock:
            self._claimed += 1
            last = self._claimed >= limit
            if last:
                self.result.max_cards_reached = True
        if last:
            self.stop(f"{limit} record(s) claimed (the limit of this run)", level=logging.INFO)

    def _emit(self, event: RunEvent) -> None:
        try:
            self._events(event)
        except Exception:  # an observer must never break a card
            log.exception("progress observer failed")

    def _journal(self, event: str, **facts: Any) -> None:
        assert self.journal is not None
        self.journal.append(event, batch=self.config.batch_id, station=self.config.station, **self.config.facts,
                            **facts)

    # ------------------------------------------------------------------------------------------ run
    def run(self) -> RunResult:
        """Recover this station's leftovers, run every reader until the batch is done, return the counts."""
        cfg = self.config
        t0 = time.monotonic()
        with _station_lock(cfg.out, cfg.station), Journal(cfg.journal_path) as journal, \
                Ledger.open(cfg.ledger_url) as ledger:
            self.journal = journal
            info = ledger.batch(cfg.batch_id)
            if info.profile != self.profile.name:
                raise ProfileError(f"batch {cfg.batch_id!r} was loaded for profile {info.profile!r}, "
                                   f"not {self.profile.name!r}")
            self.result.recovered = self.recover(ledger, own=True)
            self._journal("station.started", readers=[s.name for s in self.slots], pid=os.getpid())
            beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
            workers = [threading.Thread(target=self._worker, args=(s,), name=f"reader-{s.name}", daemon=True)
                       for s in self.slots]
            beat.start()
            for w in workers:
                w.start()
            try:
                while any(w.is_alive() for w in workers):
                    for w in workers:
                        w.join(0.2)
            except KeyboardInterrupt:
                self.stop("interrupted")
                for w in workers:
                    w.join()
            self._stop.set()
            beat.join()
            if self._fatal is not None:
                self._journal("station.failed", reason=_reason("station", self._fatal))
                raise self._fatal
            info = ledger.batch(cfg.batch_id)
            self.result.batch_state = info.state
            self.result.status = ledger.status(cfg.batch_id)
            self._emit(RunEvent("status", counts=self.result.status))
            self.result.stopped = self._stopped if info.state not in ("finished", "cancelled") else None
            self.result.elapsed_s = time.monotonic() - t0
            self._journal("station.stopped", state=info.state, verified=self.result.verified,
                          failed=self.result.failed, rejected=self.result.rejected, why=self._stopped or "done")
        return self.result

    def recover(self, ledger: Ledger, *, own: bool) -> list[Recovered]:
        """Take back claims (``own``: all of this station's; else only stale claims of other stations),
        journal every spoiled card and move its image aside."""
        cfg = self.config
        got = ledger.recover(cfg.batch_id, stale_after_s=cfg.stale_after_s, station=cfg.station if own else None)
        for r in got:
            chip = r.spoiled_chip.hex().upper() if r.spoiled_chip else None
            facts = {"record": r.seq, "line": r.line, "attempt": r.attempt, "held_by": r.station,
                     "held_reader": r.reader, "previous_state": r.previous_state}
            if chip is not None:
                self._journal("card.spoiled", chip_serial=chip, reason="unknown state after crash", **facts)
                self.images.spoil(chip)
            else:
                self._journal("claim.recovered", **facts)
            self._emit(RunEvent("recovered", detail=f"record {r.seq} from {r.station}/{r.reader}"))
        if own:
            self.images.reconcile(ledger)
            self._reconcile_journal(ledger)
        return got

    def _reconcile_journal(self, ledger: Ledger) -> None:
        """Journal lines for card outcomes the ledger committed just before a crash cut the journal short."""
        cfg = self.config
        report = verify_journal(cfg.journal_path)
        if not report.ok:
            raise JournalError(f"journal {cfg.journal_path.name!r} is damaged ({report.problems[0].message}); "
                               "check it with 'cardkit audit verify' and move it aside to go on")
        seen: set[tuple[str, int, int]] = set()
        with open(cfg.journal_path, encoding="utf-8") as fh:
            for raw in fh:
                obj = json.loads(raw)
                if obj.get("batch") == cfg.batch_id and obj.get("event", "").startswith("card."):
                    seen.add((obj["event"], int(obj.get("record", 0)), int(obj.get("attempt", 0))))
        for card in ledger.cards(cfg.batch_id):
            if card.station != cfg.station:
                continue
            chip = card.chip_serial.hex().upper()
            base = {"record": card.seq, "attempt": card.attempt, "chip_serial": chip, "reader": card.reader,
                    "late": True}
            if card.state == "verified" and ("card.verified", card.seq, card.attempt) not in seen:
                self._journal("card.verified", manifest_sha256=_manifest_hash(card.manifest or {}), **base)
            elif card.state == "spoiled" and not any((e, card.seq, card.attempt) in seen for e in
                                                     ("card.failed", "card.spoiled", "card.abandoned")):
                self._journal("card.spoiled", reason=card.reason or "", **base)

    def _heartbeat(self) -> None:
        """Beat the station's heart, publish the batch counts, and end the run when the batch is over (workers
        waiting for a card in a PC/SC reader would not notice)."""
        cfg = self.config
        every = max(0.2, min(cfg.stale_after_s / 4, 5.0))
        last = 0.0
        try:
            with Ledger.open(cfg.ledger_url) as ledger:
                while not self._stop.is_set():
                    if time.monotonic() - last >= every:
                        ledger.heartbeat(cfg.station)
                        self._emit(RunEvent("status", counts=ledger.status(cfg.batch_id)))
                        last = time.monotonic()
                    if ledger.batch(cfg.batch_id).state in ("finished", "cancelled"):
                        self._stop.set()
                    self._stop.wait(min(every, 0.5))
        except BaseException as exc:  # a dead heartbeat would let other stations take our claims
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._fatal is None:
                self._fatal = exc
        self.stop(f"error: {_reason('station', exc)}")

    # ------------------------------------------------------------------------------------------ workers
    def _worker(self, slot: CardSlot) -> None:
        try:
            with Ledger.open(self.config.ledger_url) as ledger:
                self._work(ledger, slot)
        except BaseException as exc:
            log.error("reader %s failed: %s", slot.name, exc)
            self._fail(exc)
        finally:
            self._emit(RunEvent("state", slot.name, "stopped"))

    def _work(self, ledger: Ledger, slot: CardSlot) -> None:
        session: CardSession | None = None
        serial = b""
        ticket = False
        try:
            while not self._stop.is_set():
                if not ticket:  # before taking a card: a PC/SC reader must not ask for a card it will not write
                    if not self._take_ticket():
                        return
                    ticket = True
                if session is None:
                    self._emit(RunEvent("state", slot.name, "taking a card"))
                    session = slot.next_card(self._stop)
                    if session is None:
                        return
                    serial = self._check_card(ledger, slot, session)
                    if not serial:
                        slot.release(session, self._stop, used=False)
                        session = None
                        continue
                self._emit(RunEvent("state", slot.name, "claiming a record"))
                claim = self._next_claim(ledger, slot)
                if claim is None:
                    return
                ticket = False
                self._ticket_used()
                if self._issue(ledger, slot, session, serial, claim):
                    slot.release(session, self._stop, used=True)
                    session = None
        finally:
            if ticket:
                self._return_ticket()
            if session is not None:
                slot.release(session, self._stop, used=False)

    def _check_card(self, ledger: Ledger, slot: CardSlot, session: CardSession) -> bytes:
        """The chip serial of a card that may be written; b"" for a card that must not be."""
        try:
            serial = chip_serial(session.atr)
        except CardkitError as exc:
            self._journal("card.refused", reader=slot.name, reason=_reason("card", exc))
            return b""
        if slot.kind == "virtual":
            return serial  # fresh from the feeder
        known = ledger.manifest(serial) is not None or any(
            c.chip_serial == serial for c in ledger.cards(self.config.batch_id, state="spoiled"))
        if known:
            self._journal("card.refused", reader=slot.name, chip_serial=serial.hex().upper(),
                          reason="this card was issued or spoiled already; use a blank card")
            self._emit(RunEvent("state", slot.name, "card already used: remove it"))
            return b""
        return serial

    def _next_claim(self, ledger: Ledger, slot: CardSlot) -> Claim | None:
        cfg = self.config
        while not self._stop.is_set():
            claim = ledger.claim(cfg.batch_id, cfg.station, slot.name)
            if claim is not None:
                return claim
            if ledger.batch(cfg.batch_id).state in ("finished", "cancelled"):
                self._stop.set()  # the batch is over: every reader ends after its current card
                return None
            now = time.time()
            beats = ledger.stations()
            live = [*ledger.records(cfg.batch_id, state="claimed"), *ledger.records(cfg.batch_id, state="written")]
            if any(r.station != cfg.station and now - beats.get(r.station or "", 0.0) > cfg.stale_after_s
                   for r in live):
                self.recover(ledger, own=False)
                continue
            if live:
                self._stop.wait(cfg.poll_s)
        return None

    def _issue(self, ledger: Ledger, slot: CardSlot, session: CardSession, serial: bytes, claim: Claim) -> bool:
        """Write, verify and book one card for ``claim``; True when the card was used (written or spoiled)."""
        cfg = self.config
        chip = serial.hex().upper()
        base = {"record": claim.seq, "line": claim.line, "attempt": claim.attempt, "reader": slot.name,
                "pseudonym": claim.identity}
        try:
            prepared = self._prepare(claim)
        except RecordProblems as exc:
            reason = f"invalid record: {exc}"
            ledger.reject_record(cfg.batch_id, claim.seq, reason)
            self._journal("record.rejected", reason=reason, **base)
            with self._lock:
                self.result.rejected += 1
            self._emit(RunEvent("rejected", slot.name, reason))
            if cfg.on_bad_record == "stop":
                self.stop(f"record {claim.seq} (line {claim.line}) is invalid (--on-bad-record stop)")
            return False
        try:
            ledger.card_started(claim, serial)
        except ChipInUseError as exc:
            outcome = ledger.card_failed(claim, None, _reason("start", exc), max_remakes=cfg.max_remakes)
            self._journal("card.refused", chip_serial=chip, reason=_reason("start", exc), outcome=outcome, **base)
            return True
        self._journal("card.started", chip_serial=chip, **base)
        self._emit(RunEvent("state", slot.name, f"writing record {claim.seq}"))
        stage = "personalize"
        card = getattr(slot, "card", None)
        try:
            result = personalize(session, self.profile, prepared, self.keystore)
            written_apdus = session.apdu_count
            ledger.card_written(claim, serial)
            self._journal("card.written", chip_serial=chip, apdus=written_apdus, **base)
            stage = "verify"
            manifest = verify(session, self.profile, prepared, self.keystore, result)
            manifest.update(station=cfg.station, reader=slot.name, batch=cfg.batch_id, record=claim.seq,
                            apdus_personalize=written_apdus, apdus_verify=session.apdu_count - written_apdus)
            for key, value in cfg.facts.items():
                manifest.setdefault(key, value)
            if card is not None:
                self.images.stage(card, chip)
            stage = "book"
            ledger.card_verified(claim, serial, manifest)
        except RecordStateError as exc:
            self._abandon(chip, stage, exc, card, base)
            return True
        except CardkitError as exc:
            if isinstance(exc, LedgerError):
                raise
            reason = _reason(stage, exc)
            try:
                outcome = ledger.card_failed(claim, serial, reason, max_remakes=cfg.max_remakes)
            except RecordStateError as exc2:
                self._abandon(chip, stage, exc2, card, base)
                return True
            self._journal("card.failed", chip_serial=chip, reason=reason, outcome=outcome, **base)
            self.images.spoil(chip, card)
            with self._lock:
                self.result.failed += 1
                self.result.rejected += outcome == "rejected"
                failures = self.result.failed
            self._emit(RunEvent("failed", slot.name, reason, rejected=outcome == "rejected"))
            if isinstance(exc, KeystoreError | ProfileError):
                raise  # configuration, not the card: every card would fail the same way
            if cfg.stop_after_failures and failures >= cfg.stop_after_failures:
                self.stop(f"{failures} failed cards (--stop-after-failures {cfg.stop_after_failures})")
            return True
        self.images.commit(chip)
        self._journal("card.verified", chip_serial=chip, manifest_sha256=_manifest_hash(manifest),
                      files=len(manifest.get("files", {})), **base)
        with self._lock:
            self.result.verified += 1
        self._emit(RunEvent("verified", slot.name))
        return True

    def _abandon(self, chip: str, stage: str, exc: RecordStateError, card: VirtualCard | None,
                 base: dict[str, Any]) -> None:
        # The claim was taken back (this station looked dead to another one): the card is not ours to book;
        # whoever took the claim spoiled it in the ledger.
        log.warning("record %s: claim lost while %s (%s); card %s abandoned", base["record"], stage, exc, chip)
        self._journal("card.abandoned", chip_serial=chip, reason=_reason(stage, exc), **base)
        self.images.spoil(chip, card)


def _manifest_hash(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@contextlib.contextmanager
def _station_lock(out: Path, station: str) -> Iterator[IO[str]]:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in station)
    path = out / f".station-{safe}.lock"
    fh = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600), "r+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StationBusyError(f"station {station!r} is already running with output directory {out}; "
                                   "give each station its own --station name") from None
        yield fh
    finally:
        fh.close()
