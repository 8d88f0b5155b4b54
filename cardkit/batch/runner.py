"""Run a loaded batch on parallel readers: one worker thread per reader, exactly once per record.

Each worker repeats: take a card (a fresh virtual card from a :class:`~cardkit.virtual.image.CardFeeder`, or
wait for a card in a PC/SC reader) → claim the next pending record → prepare it → note the card in the
ledger (``card_started``, before anything is written, so a crash spoils it by serial) → personalize →
``card_written`` → read back and verify → keep the image (virtual cards) → ``card_verified`` with the
manifest. A card that fails is spoiled and its record requeued as a remake, or rejected past the remake
limit (``card_failed``). Every event goes to the hash-chained journal, with cardholders as pseudonyms.

At start-up a station takes back everything it held when it last stopped (``Ledger.recover`` with its own
name: half-written cards are spoiled, their records requeued), finishes the bookkeeping a crash may have
cut short (image renames, journal lines) and only then starts its readers. While waiting for work it takes
back the claims of other stations whose heartbeat went stale, so survivors finish a batch a dead station
left. A station stops when the batch is finished or cancelled, on :meth:`BatchRunner.stop`, or after
``stop_after_failures`` failed cards.

Virtual card images go to ``<out>/cards/``: written as ``.pending-<serial>.json`` before the card is marked
verified and renamed to ``<serial>.json`` after, so ``cards/*.json`` are exactly the verified cards; images
of spoiled cards go to ``cards/spoiled/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol, cast

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
from cardkit.errors import CardkitError, KeystoreError, ProfileError, TransportError
from cardkit.issuance.engine import chip_serial, personalize, verify
from cardkit.issuance.prepare import RecordProblems, prepare
from cardkit.keys.store import Keystore, alg_of
from cardkit.profiles.model import Profile
from cardkit.session import CardSession

if TYPE_CHECKING:
    from cardkit.virtual.card import VirtualCard
    from cardkit.virtual.image import CardFeeder

__all__ = ["BatchRunner", "CardSlot", "ImageStore", "PcscSlot", "RunConfig", "RunEvent", "RunResult",
           "StationBusyError", "TraceSink", "VirtualSlot", "make_feeder"]

log = logging.getLogger(__name__)

_REASON_MAX: Final = 300


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
    batch_state: str = ""
    status: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


# ------------------------------------------------------------------------------------------- images
class ImageStore:
    """Card images of a run (see the module docstring). Images hold the card keys: files are 0600."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.spoiled_dir = directory / "spoiled"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.spoiled_dir.mkdir(exist_ok=True, mode=0o700)

    def _pending(self, serial: str) -> Path:
        return self.dir / f".pending-{serial}.json"

    def stage(self, card: VirtualCard, serial: str) -> None:
        card.options = dataclasses.replace(card.options, apdu_latency_s=0.0)  # no latency when inspected
        card.save(self._pending(serial))

    def commit(self, serial: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(self._pending(serial), self.dir / f"{serial}.json")

    def spoil(self, serial: str, card: VirtualCard | None = None) -> None:
        target = self.spoiled_dir / f"{serial}.json"
        if self._pending(serial).exists():
            os.replace(self._pending(serial), target)
        elif card is not None:
            card.options = dataclasses.replace(card.options, apdu_latency_s=0.0)
            card.save(target)

    def reconcile(self, ledger: Ledger) -> int:
        """Finish renames a crash cut short: pending images of verified cards are committed, others spoiled."""
        n = 0
        for path in sorted(self.dir.glob(".pending-*.json")):
            serial = path.name[len(".pending-"):-len(".json")]
            try:
                verified = ledger.manifest(bytes.fromhex(serial)) is not None
            except (ValueError, LedgerError):
                continue
            self.commit(serial) if verified else self.spoil(serial)
            n += 1
        return n


# ------------------------------------------------------------------------------------------- readers
class TraceSink:
    """A redacted APDU trace file shared by the readers of a station: one whole line per write, under a lock."""

    def __init__(self, fh: IO[str]) -> None:
        self._fh = fh
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            return self._fh.write(text)

    def flush(self) -> None:
        with self._lock:
            self._fh.flush()


def _sink(trace: TraceSink | None) -> IO[str] | None:
    return cast(IO[str], trace)


class CardSlot(Protocol):
    """One reader of a station. ``next_card`` returns a session on a card to write (None: stop asked);
    ``release`` is called when the worker is done with that card (``used``: something was written)."""

    name: str
    kind: str

    def next_card(self, stop: threading.Event) -> CardSession | None: ...

    def release(self, session: CardSession, stop: threading.Event, *, used: bool) -> None: ...


class VirtualSlot:
    """An in-process virtual reader fed with fresh blank cards. ``on_card`` sees every new card (tests arm
    faults with :mod:`cardkit.virtual.faults`)."""

    kind = "virtual"

    def __init__(self, name: str, feeder: CardFeeder, *, on_card: Callable[[VirtualCard], None] | None = None,
                 trace: TraceSink | None = None) -> None:
        self.name = name
        self.feeder = feeder
        self.on_card = on_card
        self.trace = trace
        self.card: VirtualCard | None = None

    def next_card(self, stop: threading.Event) -> CardSession | None:
        from cardkit.transport.virtual import VirtualTransport
        from cardkit.virtual.isoauth import mutual_auth_handler

        if stop.is_set():
            return None
        card = self.feeder.next_card()
        card.mutual_auth_handler = mutual_auth_handler
        if self.on_card is not None:
            self.on_card(card)
        self.card = card
        return CardSession(VirtualTransport(card, name=self.name), trace=_sink(self.trace))

    def release(self, session: CardSession, stop: threading.Event, *, used: bool) -> None:
        session.close()
        self.card = None


class PcscSlot:
    """A PC/SC reader: waits for a card to be inserted, and after each card for its removal."""

    kind = "pcsc"

    def __init__(self, reader: str, *, poll_s: float = 0.25, notify: Callable[[str, str], None] | None = None,
                 trace: TraceSink | None = None) -> None:
        self.name = reader
        self.poll_s = poll_s
        self.trace = trace
        self.notify = notify or (lambda reader, text: None)
        self.card = None

    def next_card(self, stop: threading.Event) -> CardSession | None:
        from cardkit.transport.pcsc import CardWaitTimeout, PcscTransport, wait_for_card

        self.notify(self.name, "waiting for a blank card")
        while not stop.is_set():
            try:
                wait_for_card(self.name, self.poll_s)
            except CardWaitTimeout:
                continue
            try:
                return CardSession(PcscTransport(self.name, exclusive=True), trace=_sink(self.trace))
            except TransportError as exc:  # removed again at once, or another application holds it
                log.warning("%s: cannot connect to the card (%s); retrying", self.name, exc)
                stop.wait(self.poll_s)
        return None

    def release(self, session: CardSession, stop: threading.Event, *, used: bool) -> None:
        from cardkit.transport.pcsc import RemovalWaitTimeout, wait_for_removal

        with contextlib.suppress(TransportError):
            session.close()
        self.notify(self.name, "remove the card")
        while not stop.is_set():
            try:
                wait_for_removal(self.name, self.poll_s)
                return
            except RemovalWaitTimeout:
                continue


def make_feeder(profile: Profile, keystore: Keystore, directory: Path, *, latency_s: float = 0.0) -> CardFeeder:
    """A feeder of blank virtual cards holding the profile's transport key (from the keystore)."""
    from cardkit.virtual.card import CardOptions
    from cardkit.virtual.image import CardFeeder

    alg = alg_of(profile.algorithm)
    options = CardOptions(apdu_latency_s=latency_s)
    if profile.channel in ("scp03", "scp02"):
        # GlobalPlatform profiles: blank cards arrive with an issuer security domain holding the transport key
        # set; the ISO MF key 00 (unused by these profiles) gets the set's ENC key.
        from cardkit.issuance.gp import GpOptions, gp_keyset

        version = GpOptions.of(profile).transport_key_version or 1
        keys = gp_keyset(keystore, profile.transport_key, alg, version)
        return CardFeeder(directory, keys.enc, alg, options=options, gp_keys=keys,
                          scp=3 if profile.channel == "scp03" else 2)
    transport = keystore.key(profile.transport_key, alg).value
    return CardFeeder(directory, transport, alg, options=options)


# ------------------------------------------------------------------------------------------- runner
def _reason(stage: str, exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ") or type(exc).__name__
    text = f"{stage}: {type(exc).__name__}: {text}"
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"


class BatchRunner:
    """One station running one batch on its readers (see the module docstring)."""

    def __init__(self, config: RunConfig, profile: Profile, keystore: Keystore, slots: Sequence[CardSlot], *,
                 events: Callable[[RunEvent], None] | None = None) -> None:
        if not slots:
            raise CardkitError("a station needs at least one reader")
        if len({s.name for s in slots}) != len(slots):
            raise CardkitError("reader names of a station must be unique")
        self.config = config
        self.profile = profile
        self.keystore = keystore
        self.slots = list(slots)
        self._events = events or (lambda e: None)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stopped: str | None = None
        self._fatal: BaseException | None = None
        self.result = RunResult()
        config.out.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.images = ImageStore(config.out / "cards")
        self.journal: Journal | None = None

    # ------------------------------------------------------------------------------------------ control
    def stop(self, reason: str) -> None:
        """Ask every reader to stop after its current card."""
        with self._lock:
            if self._stopped is None:
                self._stopped = reason
        if not self._stop.is_set():
            log.warning("station %s stopping: %s", self.config.station, reason)
            self._emit(RunEvent("stopping", detail=reason))
        self._stop.set()

    def _emit(self, event: RunEvent) -> None:
        try:
            self._events(event)
        except Exception:  # an observer must never break a card
            log.exception("progress observer failed")

    def _journal(self, event: str, **facts: Any) -> None:
        assert self.journal is not None
        self.journal.append(event, batch=self.config.batch_id, station=self.config.station, **facts)

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
        try:
            while not self._stop.is_set():
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
                if self._issue(ledger, slot, session, serial, claim):
                    slot.release(session, self._stop, used=True)
                    session = None
        finally:
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
            prepared = prepare(self.profile, claim.fields, line=claim.line, keystore=self.keystore)
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
