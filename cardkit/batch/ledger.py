"""The batch ledger: exactly-once bookkeeping of records and cards, on SQLite or PostgreSQL.

Every state change is one database transaction, so a crash at any instant leaves each record in exactly one
state, and :meth:`Ledger.recover` takes back the claims of stations that died. A record reaches ``done``
with at most one verified card, and a chip serial is live on at most one record (enforced by the code and
by partial unique indexes). The life cycles are drawn in :mod:`cardkit.batch.ledger_model`.

Usage (one :class:`Ledger` per process or thread is the intended pattern; one instance may also be shared
between threads, which then take turns)::

    ledger = Ledger.open("sqlite:///bureau.db")
    ledger.create_batch("B1", "ssc", digest, records, identity_of=lambda f: pz.of(f["citizen_id"]))
    while (claim := ledger.claim("B1", "station-1", "reader-0")) is not None:
        ...write the card...;  ledger.card_written(claim, serial)
        ...read it back...;    ledger.card_verified(claim, serial, manifest)

Record fields are stored as JSON in the ``records`` table: the database is personal data (a SQLite file is
created 0600). Identities are stored only as pseudonyms (:mod:`cardkit.batch.pseudonym`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any, Final, Literal, cast

from cardkit.batch.ledger_model import (
    AlreadyDoneError,
    BatchConflictError,
    BatchInfo,
    BatchState,
    BatchStateError,
    CardRow,
    CardState,
    ChipInUseError,
    Claim,
    DuplicateIdentity,
    DuplicateIdentityError,
    LedgerError,
    RecordRow,
    RecordState,
    RecordStateError,
    Recovered,
    StaleClaimError,
    UnknownBatchError,
    UnknownRecordError,
)
from cardkit.batch.ledger_sql import LOAD_LOCK, Database, Row, Tx, connect, migrate, sqlite_path

__all__ = ["CRASH_REASON", "Ledger"]

log = logging.getLogger(__name__)

#: Reason given to a card whose state is unknown because its station died or restarted mid-card.
CRASH_REASON: Final = "unknown state after crash"
_CHUNK: Final = 500
_MAX_CHIP: Final = 64  # bytes; CPLC IC serial is 4 bytes, ISO 14443 UIDs 4/7/10 (ISO/IEC 14443-3 §6.5.4)
_REC_COLS: Final = ("batch_id, seq, line, identity, state, attempts, remakes, station, reader, chip_serial, "
                    "claimed_at, updated_at, reason")
_CARD_COLS: Final = ("batch_id, seq, attempt, chip_serial, state, reason, station, reader, claimed_at, created_at, "
                     "written_at, verified_at, spoiled_at, manifest")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _chip_hex(chip: bytes) -> str:
    if not isinstance(chip, bytes | bytearray) or not 1 <= len(chip) <= _MAX_CHIP:
        raise LedgerError(f"a chip serial must be 1..{_MAX_CHIP} bytes")
    return bytes(chip).hex().upper()


def _chip_bytes(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


def _record(row: Row, data: str | None = None) -> RecordRow:
    return RecordRow(row[0], int(row[1]), int(row[2]), row[3], cast(RecordState, row[4]), int(row[5]),
                     int(row[6]), row[7], row[8], _chip_bytes(row[9]), row[10], float(row[11]), row[12],
                     None if data is None else json.loads(data))


def _card(row: Row) -> CardRow:
    return CardRow(row[0], int(row[1]), int(row[2]), bytes.fromhex(row[3]), cast(CardState, row[4]), row[5],
                   row[6], row[7], float(row[8]), float(row[9]), row[10], row[11], row[12],
                   None if row[13] is None else json.loads(row[13]))


class Ledger:
    """Records and cards of batches, with exactly-once transitions. Open with :meth:`open`."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time, url: str = "") -> None:
        self._db = db
        self._clock = clock
        self._url = url

    # ------------------------------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, url: str, *, clock: Callable[[], float] = time.time, busy_timeout_s: float = 30.0) -> Ledger:
        """Open (and create or migrate) the ledger at ``sqlite:///path`` or ``postgresql://…``."""
        db = connect(url, busy_timeout_s=busy_timeout_s)
        try:
            migrate(db, clock())
        except BaseException:
            db.close()
            raise
        return cls(db, clock=clock, url=url)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.dialect

    @property
    def path(self) -> Path | None:
        """The SQLite database file (``None`` for PostgreSQL): where its pseudonym key file lives."""
        p = sqlite_path(self._url) if self._url else None
        return None if p is None or p == ":memory:" else Path(p)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ loading
    def create_batch(self, batch_id: str, profile: str, source_digest: str,
                     records: Iterable[tuple[int, dict[str, str]]], identity_of: Callable[[dict[str, str]], str],
                     rejected: Iterable[tuple[int, str]] = (), options: Mapping[str, Any] | None = None, *,
                     allow_reissue: bool = False) -> int:
        """Load a whole batch in one transaction and return its record count (loaded + rejected).

        ``records`` gives ``(line, fields)`` of valid records; ``identity_of(fields)`` returns the record's
        identity *pseudonym*; ``rejected`` gives ``(line, reason)`` of records that failed validation.
        Nothing is stored unless everything is: an exception from ``records`` or ``identity_of`` propagates
        after the rollback. Loading the same batch id with the same digest and profile again is a no-op;
        with another digest or profile it raises :class:`BatchConflictError`. Identities duplicated within
        the batch, done in another batch (unless ``allow_reissue``) or live in another batch that is not
        cancelled raise :class:`DuplicateIdentityError` listing every one with its line.
        """
        if not batch_id or not isinstance(batch_id, str):
            raise LedgerError("a batch id must be a non-empty string")
        opts = _dumps(dict(options or {}))
        now = self._clock()
        with self._db.transaction(write=True) as tx:
            tx.advisory_lock(LOAD_LOCK)
            found = tx.one("SELECT source_digest, profile FROM batches WHERE id = ?", (batch_id,))
            if found is not None:
                if found[0] != source_digest or found[1] != profile:
                    what = "source digest" if found[0] != source_digest else "profile"
                    raise BatchConflictError(f"batch {batch_id!r} exists already with another {what}")
                log.info("batch %s already loaded from the same source; nothing to do", batch_id)
                return int(tx.scalar("SELECT COUNT(*) FROM records WHERE batch_id = ?", (batch_id,)))
            tx.execute("INSERT INTO batches (id, profile, source_digest, created_at, updated_at, state, "
                       "input_count, options) VALUES (?, ?, ?, ?, ?, 'loaded', 0, ?)",
                       (batch_id, profile, source_digest, now, now, opts))
            seq = 0
            it = iter(records)
            while chunk := list(islice(it, _CHUNK)):
                rows = []
                for line, fields in chunk:
                    seq += 1
                    rows.append((batch_id, seq, line, _identity(identity_of, fields, line), _fields_json(fields, line),
                                 now))
                tx.executemany("INSERT INTO records (batch_id, seq, line, identity, data, state, updated_at) "
                               "VALUES (?, ?, ?, ?, ?, 'pending', ?)", rows)
            loaded = seq
            rit = iter(rejected)
            while rchunk := list(islice(rit, _CHUNK)):
                rrows = []
                for line, reason in rchunk:
                    seq += 1
                    rrows.append((batch_id, seq, line, now, str(reason)))
                tx.executemany("INSERT INTO records (batch_id, seq, line, state, updated_at, reason) "
                               "VALUES (?, ?, ?, 'rejected', ?, ?)", rrows)
            dups = self._duplicates(tx, batch_id, allow_reissue=allow_reissue)
            if dups:
                raise DuplicateIdentityError(batch_id, dups)
            state = "loaded" if loaded else "finished"
            tx.execute("UPDATE batches SET input_count = ?, state = ? WHERE id = ?", (seq, state, batch_id))
        log.info("batch %s loaded: %d records, %d rejected at load", batch_id, loaded, seq - loaded)
        return seq

    @staticmethod
    def _duplicates(tx: Tx, batch_id: str, *, allow_reissue: bool) -> list[DuplicateIdentity]:
        within = tx.execute(
            "SELECT r.line, r.identity, f.line FROM records r "
            "JOIN (SELECT identity, MIN(seq) AS first FROM records WHERE batch_id = ? AND identity IS NOT NULL "
            "      GROUP BY identity HAVING COUNT(*) > 1) d ON d.identity = r.identity "
            "JOIN records f ON f.batch_id = r.batch_id AND f.seq = d.first "
            "WHERE r.batch_id = ? AND r.seq <> d.first ORDER BY r.seq", (batch_id, batch_id))
        other = tx.execute(
            "SELECT r.line, r.identity, o.batch_id, o.line, o.state FROM records r "
            "JOIN records o ON o.identity = r.identity AND o.batch_id <> r.batch_id "
            "JOIN batches ob ON ob.id = o.batch_id "
            "WHERE r.batch_id = ? AND (o.state = 'done' AND ? = 0 "
            "     OR o.state IN ('pending', 'claimed', 'written') AND ob.state <> 'cancelled') "
            "ORDER BY r.seq, o.batch_id, o.seq", (batch_id, int(allow_reissue)))
        out = [DuplicateIdentity(int(r[0]), r[1], batch_id, int(r[2]), "pending") for r in within]
        out += [DuplicateIdentity(int(r[0]), r[1], r[2], int(r[3]), r[4]) for r in other]
        return out

    # ------------------------------------------------------------------------------------------ claims
    def claim(self, batch_id: str, station: str, reader: str) -> Claim | None:
        """Claim the oldest pending record of the batch for ``station``/``reader`` (and beat the station's
        heart). ``None`` when nothing is pending or the batch is cancelled or finished."""
        _name(station, "station")
        _name(reader, "reader")
        now = self._clock()
        with self._db.transaction(write=True) as tx:
            state = tx.scalar("SELECT state FROM batches WHERE id = ?", (batch_id,))
            if state is None:
                raise UnknownBatchError(f"no batch {batch_id!r}")
            if state in ("cancelled", "finished"):
                return None
            tx.execute("UPDATE batches SET state = 'running', updated_at = ? WHERE id = ? AND state = 'loaded'",
                       (now, batch_id))
            row = tx.one("SELECT seq, line, identity, data, attempts FROM records "
                         "WHERE batch_id = ? AND state = 'pending' ORDER BY seq LIMIT 1 /*skip_locked*/",
                         (batch_id,))
            if row is None:
                self._heartbeat(tx, station, now)
                return None
            seq, attempt = int(row[0]), int(row[4]) + 1
            tx.execute("UPDATE records SET state = 'claimed', attempts = ?, station = ?, reader = ?, "
                       "chip_serial = NULL, claimed_at = ?, updated_at = ? WHERE batch_id = ? AND seq = ?",
                       (attempt, station, reader, now, now, batch_id, seq))
            self._heartbeat(tx, station, now)
        return Claim(batch_id, seq, int(row[1]), attempt, station, reader, row[2], json.loads(row[3]), now)

    def card_started(self, claim: Claim, chip_serial: bytes) -> None:
        """Note the card a claim is being written to, before writing (so a crash mid-write spoils it by
        serial). Idempotent for the same chip."""
        chip = _chip_hex(chip_serial)
        now = self._clock()
        with self._db.transaction(write=True) as tx:
            self._held(tx, claim, ("claimed",), "start a card")
            card = self._attempt_card(tx, claim)
            if card is not None:
                if card[0] == chip:
                    return
                raise RecordStateError(f"{_where(claim)}: attempt {claim.attempt} already has another card")
            self._chip_free(tx, chip, claim)
            tx.execute("INSERT INTO cards (batch_id, seq, attempt, chip_serial, state, station, reader, claimed_at, "
                       "created_at) VALUES (?, ?, ?, ?, 'claimed', ?, ?, ?, ?)",
                       (claim.batch_id, claim.seq, claim.attempt, chip, claim.station, claim.reader,
                        claim.claimed_at, now))
            tx.execute("UPDATE records SET chip_serial = ?, updated_at = ? WHERE batch_id = ? AND seq = ?",
                       (chip, now, claim.batch_id, claim.seq))

    def card_written(self, claim: Claim, chip_serial: bytes) -> None:
        """The card was written: card ``written``, record ``written``. Idempotent for the same chip."""
        chip = _chip_hex(chip_serial)
        now = self._clock()
        with self._db.transaction(write=True) as tx:
            rec_state = self._held(tx, claim, ("claimed", "written"), "mark a card written")
            card = self._attempt_card(tx, claim)
            if card is not None and card[0] != chip:
                raise RecordStateError(f"{_where(claim)}: this attempt's card has another chip serial; "
                                       "fail that card first")
            if rec_state == "written":
                return  # same chip written again: nothing to change
            if card is None:
                self._chip_free(tx, chip, claim)
                tx.execute("INSERT INTO cards (batch_id, seq, attempt, chip_serial, state, station, reader, "
                           "claimed_at, created_at, written_at) VALUES (?, ?, ?, ?, 'written', ?, ?, ?, ?, ?)",
                           (claim.batch_id, claim.seq, claim.attempt, chip, claim.station, claim.reader,
                            claim.claimed_at, now, now))
            else:
                tx.execute("UPDATE cards SET state = 'written', written_at = ? "
                           "WHERE batch_id = ? AND seq = ? AND attempt = ?",
                           (now, claim.batch_id, claim.seq, claim.attempt))
            tx.execute("UPDATE records SET state = 'written', chip_serial = ?, updated_at = ? "
                       "WHERE batch_id = ? AND seq = ?", (chip, now, claim.batch_id, claim.seq))

    def card_verified(self, claim: Claim, chip_serial: bytes, manifest: Mapping[str, Any]) -> None:
        """The card read back correctly: card ``verified`` with its manifest, record ``done``.

        Refused with :class:`AlreadyDoneError` when the record is done already by another attempt or card;
        a repeat with the same claim and chip is a no-op."""
        chip = _chip_hex(chip_serial)
        try:
            manifest_json = _dumps(dict(manifest))
        except (TypeError, ValueError) as exc:
            raise LedgerError(f"{_where(claim)}: the manifest is not JSON-serializable ({exc})") from None
        now = self._clock()
        with self._db.transaction(write=True) as tx:
            self._lock_batch(tx, claim.batch_id)
            rec = self._lock_record(tx, claim.batch_id, claim.seq)
            if rec[4] == "done":
                if int(rec[5]) == claim.attempt and rec[9] == chip:
                    return
                raise AlreadyDoneError(f"{_where(claim)}: the record is done already with another card; "
                                       "a second card is never verified for one record")
            self._check_held(rec, claim, ("claimed", "written"), "verify a card")
            card = self._attempt_card(tx, claim)
            if card is None:
                self._chip_free(tx, chip, claim)
                tx.execute("INSERT INTO cards (batch_id, seq, attempt, chip_serial, state, station, reader, "
                           "claimed_at, created_at, written_at, verified_at, manifest) "
                           "VALUES (?, ?, ?, ?, 'verified', ?, ?, ?, ?, ?, ?, ?)",
                           (claim.batch_id, claim.seq, claim.attempt, chip, claim.station, claim.reader,
                            claim.claimed_at, now, now, now, manifest_json))
            elif card[0] != chip:
                raise RecordStateError(f"{_where(claim)}: this attempt's card has another chip serial")
            else:
                tx.execute("UPDATE cards SET state = 'verified', verified_at = ?, manifest = ?, "
                           "written_at = COALESCE(written_at, ?) WHERE batch_id = ? AND seq = ? AND attempt = ?",
                           (now, manifest_json, now, claim.batch_id, claim.seq, claim.attempt))
            tx.execute("UPDATE records SET state = 'done', chip_serial = ?, reason = NULL, updated_at = ? "
                       "WHERE batch_id = ? AND seq = ?", (chip, now, claim.batch_id, claim.seq))
            self._maybe_finish(tx, claim.batch_id, now)

    def card_failed(self, claim: Claim, chip_serial: bytes | None, reason: str, *,
                    max_remakes: int) -> Literal["requeued", "rejected"]:
        """The card failed: spoil it (when there is one), then requeue the record (``remakes += 1``) or, when
        that would exceed ``max_remakes``, reject it. Every failed attempt counts as a remake. A repeat with
        the same claim returns the first outcome."""
        if not isinstance(max_remakes, int) or max_remakes < 0:
            raise LedgerError("max_remakes must be an integer >= 0")
        chip = None if chip_serial is None else _chip_hex(chip_serial)
        now = self._clock()
        with self._db.transaction(write=True) as tx:
            self._lock_batch(tx, claim.batch_id)
            rec = self._lock_record(tx, claim.batch_id, claim.seq)
            if int(rec[5]) == claim.attempt and rec[7] == claim.station and rec[4] in ("pending", "rejected"):
                return "requeued" if rec[4] == "pending" else "rejected"
            if rec[4] == "done":
                raise AlreadyDoneError(f"{_where(claim)}: the record is done; its verified card cannot fail")
            self._check_held(rec, claim, ("claimed", "written"), "fail a card")
            card = self._attempt_card(tx, claim)
            if card is not None and chip is not None and card[0] != chip:
                raise RecordStateError(f"{_where(claim)}: this attempt's card has another chip serial")
            if card is not None:
                self._spoil(tx, claim.batch_id, claim.seq, claim.attempt, reason, now)
            elif chip is not None:
                self._chip_free(tx, chip, claim)
                tx.execute("INSERT INTO cards (batch_id, seq, attempt, chip_serial, state, reason, station, reader, "
                           "claimed_at, created_at, spoiled_at) VALUES (?, ?, ?, ?, 'spoiled', ?, ?, ?, ?, ?, ?)",
                           (claim.batch_id, claim.seq, claim.attempt, chip, reason, claim.station, claim.reader,
                            claim.claimed_at, now, now))
            remakes = int(rec[6]) + 1
            if remakes > max_remakes:
                why = f"remake limit reached ({max_remakes}); last failure: {reason}"
                tx.execute("UPDATE records SET state = 'rejected', remakes = ?, reason = ?, updated_at = ? "
                           "WHERE batch_id = ? AND seq = ?", (remakes, why, now, claim.batch_id, claim.seq))
                self._maybe_finish(tx, claim.batch_id, now)
                outcome: Literal["requeued", "rejected"] = "rejected"
            else:
                tx.execute("UPDATE records SET state = 'pending', remakes = ?, reason = ?, updated_at = ? "
                           "WHERE batch_id = ? AND seq = ?", (remakes, reason, now, claim.batch_id, claim.seq))
                outcome = "requeued"
        log.info("%s: card failed, record %s", _where(claim), outcome)
        return outcome

    def reject_record(self, batch_id: str, seq: int, reason: str) -> None:
        """Reject a record (a bad record found at personalization time). A live card of it is spoiled.
        Idempotent; refused for a record that is done."""
        now = self._clock()
        with self._db.transaction(write=True) as tx:
            self._lock_batch(tx, batch_id)
            rec = self._lock_record(tx, batch_id, seq)
            if rec[4] == "rejected":
                return
            if rec[4] == "done":
                raise RecordStateError(f"batch {batch_id!r} record {seq}: done records cannot be rejected")
            if rec[4] in ("claimed", "written"):
                self._spoil(tx, batch_id, seq, int(rec[5]), f"record rejected: {reason}", now)
            tx.execute("UPDATE records SET state = 'rejected', reason = ?, updated_at = ? "
                       "WHERE batch_id = ? AND seq = ?", (reason, now, batch_id, seq))
            self._maybe_finish(tx, batch_id, now)

    # ------------------------------------------------------------------------------------------ stations
    def heartbeat(self, station: str) -> None:
        """The station is alive (claims beat too). Stations silent longer than ``stale_after_s`` lose their
        claims in :meth:`recover`."""
        _name(station, "station")
        with self._db.transaction(write=True) as tx:
            self._heartbeat(tx, station, self._clock())

    def stations(self) -> dict[str, float]:
        """Last heartbeat (Unix time) of every station."""
        with self._db.transaction(write=False) as tx:
            return {r[0]: float(r[1]) for r in tx.execute("SELECT name, heartbeat FROM stations ORDER BY name")}

    def recover(self, batch_id: str, *, stale_after_s: float, station: str | None = None) -> list[Recovered]:
        """Take back claims of stations whose last heartbeat is older than ``stale_after_s`` (and, with
        ``station``, all of that station's claims: call it at start-up, before its readers run). Their live
        card is spoiled (``unknown state after crash``, ``remakes += 1``) and the record requeued."""
        now = self._clock()
        out: list[Recovered] = []
        with self._db.transaction(write=True) as tx:
            self._lock_batch(tx, batch_id)
            beats = {r[0]: float(r[1]) for r in tx.execute("SELECT name, heartbeat FROM stations")}
            rows = tx.execute("SELECT seq, line, attempts, station, reader, state, remakes FROM records "
                              "WHERE batch_id = ? AND state IN ('claimed', 'written') ORDER BY seq /*lock*/",
                              (batch_id,))
            for seq, line, attempt, st, rd, state, remakes in rows:
                beat = beats.get(st)
                if st != station and beat is not None and now - beat <= stale_after_s:
                    continue
                card = tx.one("SELECT chip_serial FROM cards WHERE batch_id = ? AND seq = ? AND attempt = ? "
                              "AND state IN ('claimed', 'written') /*lock*/", (batch_id, seq, attempt))
                if card is not None:
                    self._spoil(tx, batch_id, seq, int(attempt), CRASH_REASON, now)
                why = f"recovered from station {st!r} ({'restart' if st == station else 'no heartbeat'})"
                tx.execute("UPDATE records SET state = 'pending', remakes = ?, reason = ?, updated_at = ? "
                           "WHERE batch_id = ? AND seq = ?",
                           (int(remakes) + (card is not None), why, now, batch_id, seq))
                out.append(Recovered(batch_id, int(seq), int(line), int(attempt), st, rd, state,
                                     _chip_bytes(card[0]) if card else None))
        for r in out:
            log.warning("batch %s record %d: claim of %s/%s recovered (%s)", batch_id, r.seq, r.station, r.reader,
                        r.previous_state)
        return out

    # ------------------------------------------------------------------------------------------ batches
    def cancel(self, batch_id: str) -> None:
        """Stop handing out records of the batch (cards in flight may still finish). Final; idempotent."""
        now = self._clock()
        with self._db.transaction(write=True) as tx:
            state = self._lock_batch(tx, batch_id)
            if state == "cancelled":
                return
            if state == "finished":
                raise BatchStateError(f"batch {batch_id!r} is finished; it cannot be cancelled")
            tx.execute("UPDATE batches SET state = 'cancelled', updated_at = ? WHERE id = ?", (now, batch_id))
        log.info("batch %s cancelled", batch_id)

    def batch(self, batch_id: str) -> BatchInfo:
        with self._db.transaction(write=False) as tx:
            row = tx.one("SELECT id, profile, source_digest, state, created_at, updated_at, input_count, options "
                         "FROM batches WHERE id = ?", (batch_id,))
        if row is None:
            raise UnknownBatchError(f"no batch {batch_id!r}")
        return _batch(row)

    def batches(self) -> list[BatchInfo]:
        with self._db.transaction(write=False) as tx:
            rows = tx.execute("SELECT id, profile, source_digest, state, created_at, updated_at, input_count, "
                              "options FROM batches ORDER BY created_at, id")
        return [_batch(r) for r in rows]

    def status(self, batch_id: str) -> dict[str, int]:
        """Record counts by state (every state present, plus ``total``)."""
        with self._db.transaction(write=False) as tx:
            if tx.scalar("SELECT state FROM batches WHERE id = ?", (batch_id,)) is None:
                raise UnknownBatchError(f"no batch {batch_id!r}")
            rows = tx.execute("SELECT state, COUNT(*) FROM records WHERE batch_id = ? GROUP BY state", (batch_id,))
        counts = dict.fromkeys(("pending", "claimed", "written", "done", "rejected"), 0)
        counts.update({r[0]: int(r[1]) for r in rows})
        counts["total"] = sum(counts.values())
        return counts

    def records(self, batch_id: str, *, state: RecordState | None = None, include_data: bool = False,
                page_size: int = 1000) -> Iterator[RecordRow]:
        """Records of the batch in sequence order, read page by page (memory stays flat)."""
        after = 0
        data_col = ", data" if include_data else ""
        where = "" if state is None else " AND state = ?"
        while True:
            params: tuple[Any, ...] = (batch_id, after) + (() if state is None else (state,))
            with self._db.transaction(write=False) as tx:
                rows = tx.execute(f"SELECT {_REC_COLS}{data_col} FROM records "  # noqa: S608 - constant fragments
                                  f"WHERE batch_id = ? AND seq > ?{where} "
                                  f"ORDER BY seq LIMIT {int(page_size)}", params)
            for r in rows:
                yield _record(r, r[13] if include_data else None)
            if len(rows) < page_size:
                return
            after = int(rows[-1][1])

    def cards(self, batch_id: str | None = None, *, seq: int | None = None,
              state: CardState | None = None) -> list[CardRow]:
        """Cards, optionally of one batch / record / state, in batch, sequence and attempt order."""
        conds: list[str] = []
        params: list[Any] = []
        for col, val in (("batch_id", batch_id), ("seq", seq), ("state", state)):
            if val is not None:
                conds.append(f"{col} = ?")
                params.append(val)
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT {_CARD_COLS} FROM cards{where} "  # noqa: S608 - constant fragments
                              "ORDER BY batch_id, seq, attempt", params)
        return [_card(r) for r in rows]

    def manifest(self, chip_serial: bytes) -> dict[str, Any] | None:
        """The manifest of the verified card with that chip serial, if any."""
        chip = _chip_hex(chip_serial)
        with self._db.transaction(write=False) as tx:
            m = tx.scalar("SELECT manifest FROM cards WHERE chip_serial = ? AND state = 'verified'", (chip,))
        return None if m is None else cast(dict[str, Any], json.loads(m))

    def identity_done(self, pseudonym: str) -> bool:
        """Whether a record with this identity pseudonym is done in any batch of the ledger."""
        with self._db.transaction(write=False) as tx:
            return tx.one("SELECT 1 FROM records WHERE identity = ? AND state = 'done' LIMIT 1",
                          (pseudonym,)) is not None

    # ------------------------------------------------------------------------------------------ internals
    @staticmethod
    def _heartbeat(tx: Tx, station: str, now: float) -> None:
        tx.execute("INSERT INTO stations (name, heartbeat) VALUES (?, ?) "
                   "ON CONFLICT (name) DO UPDATE SET heartbeat = excluded.heartbeat", (station, now))

    @staticmethod
    def _lock_batch(tx: Tx, batch_id: str) -> BatchState:
        state = tx.scalar("SELECT state FROM batches WHERE id = ? /*lock*/", (batch_id,))
        if state is None:
            raise UnknownBatchError(f"no batch {batch_id!r}")
        return cast(BatchState, state)

    @staticmethod
    def _lock_record(tx: Tx, batch_id: str, seq: int) -> Row:
        row = tx.one(f"SELECT {_REC_COLS} FROM records WHERE batch_id = ? AND seq = ? /*lock*/",  # noqa: S608
                     (batch_id, seq))
        if row is None:
            raise UnknownRecordError(f"batch {batch_id!r} has no record {seq}")
        return row

    def _held(self, tx: Tx, claim: Claim, states: tuple[str, ...], doing: str) -> str:
        rec = self._lock_record(tx, claim.batch_id, claim.seq)
        self._check_held(rec, claim, states, doing)
        return str(rec[4])

    @staticmethod
    def _check_held(rec: Row, claim: Claim, states: tuple[str, ...], doing: str) -> None:
        state, attempts, station = rec[4], int(rec[5]), rec[7]
        if attempts != claim.attempt or station != claim.station:
            raise StaleClaimError(f"{_where(claim)}: cannot {doing}: the record was claimed again since "
                                  f"(attempt {attempts} by {station!r})")
        if state == "done":
            raise AlreadyDoneError(f"{_where(claim)}: cannot {doing}: the record is done already")
        if state == "pending":
            raise StaleClaimError(f"{_where(claim)}: cannot {doing}: the claim was released (failed or recovered)")
        if state not in states:
            raise RecordStateError(f"{_where(claim)}: cannot {doing} in record state {state!r}")

    @staticmethod
    def _attempt_card(tx: Tx, claim: Claim) -> Row | None:
        return tx.one("SELECT chip_serial, state FROM cards WHERE batch_id = ? AND seq = ? AND attempt = ? /*lock*/",
                      (claim.batch_id, claim.seq, claim.attempt))

    @staticmethod
    def _chip_free(tx: Tx, chip: str, claim: Claim) -> None:
        other = tx.one("SELECT batch_id, seq, state FROM cards WHERE chip_serial = ? AND state <> 'spoiled'", (chip,))
        if other is not None:
            raise ChipInUseError(f"{_where(claim)}: chip {chip} is already a {other[2]} card of batch {other[0]!r} "
                                 f"record {other[1]}")

    @staticmethod
    def _spoil(tx: Tx, batch_id: str, seq: int, attempt: int, reason: str, now: float) -> None:
        tx.execute("UPDATE cards SET state = 'spoiled', reason = ?, spoiled_at = ? "
                   "WHERE batch_id = ? AND seq = ? AND attempt = ? AND state IN ('claimed', 'written')",
                   (reason, now, batch_id, seq, attempt))

    @staticmethod
    def _maybe_finish(tx: Tx, batch_id: str, now: float) -> None:
        live = tx.one("SELECT 1 FROM records WHERE batch_id = ? AND state IN ('pending', 'claimed', 'written') "
                      "LIMIT 1", (batch_id,))
        if live is None:
            tx.execute("UPDATE batches SET state = 'finished', updated_at = ? "
                       "WHERE id = ? AND state IN ('loaded', 'running')", (now, batch_id))


def _batch(row: Row) -> BatchInfo:
    return BatchInfo(row[0], row[1], row[2], cast(BatchState, row[3]), float(row[4]), float(row[5]), int(row[6]),
                     json.loads(row[7]))


def _where(claim: Claim) -> str:
    return f"batch {claim.batch_id!r} record {claim.seq} (line {claim.line}, attempt {claim.attempt})"


def _name(value: str, what: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise LedgerError(f"a {what} name must be a non-empty string of at most 200 characters")


def _identity(identity_of: Callable[[dict[str, str]], str], fields: dict[str, str], line: int) -> str:
    ident = identity_of(fields)
    if not isinstance(ident, str) or not ident:
        raise LedgerError(f"line {line}: identity_of must return a non-empty pseudonym string")
    return ident


def _fields_json(fields: Mapping[str, str], line: int) -> str:
    for k, v in fields.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise LedgerError(f"line {line}: record fields must map str to str (field {str(k)[:40]!r})")
    return _dumps(dict(fields))
