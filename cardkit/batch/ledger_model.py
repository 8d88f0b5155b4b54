"""Values and errors of the batch ledger (see :mod:`cardkit.batch.ledger`).

Record life cycle (one row per source record)::

    pending --claim--> claimed --card_written--> written --card_verified--> done
       ^                  |  \\________________________card_verified_________/^
       |                  |                      |
       +---- card_failed / recover (remakes += 1 when a card was spoiled) ----+
    pending|claimed|written --reject_record / remake limit--> rejected

Card life cycle (one row per physical card, keyed by record and claim attempt)::

    claimed --> written --> verified        any of claimed|written --> spoiled

Chip serials are ``bytes`` in this API and upper-case hex in the database and reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cardkit.errors import CardkitError

__all__ = [
    "BATCH_STATES", "CARD_STATES", "LIVE_STATES", "RECORD_STATES", "AlreadyDoneError", "BatchConflictError",
    "BatchInfo", "BatchStateError", "CardRow", "ChipInUseError", "Claim", "DuplicateIdentity",
    "DuplicateIdentityError", "LedgerBusyError", "LedgerDatabaseError", "LedgerError", "LedgerUrlError",
    "RecordRow", "RecordStateError", "Recovered", "SchemaVersionError", "StaleClaimError", "UnknownBatchError",
    "UnknownRecordError",
]

BatchState = Literal["loaded", "running", "cancelled", "finished"]
RecordState = Literal["pending", "claimed", "written", "done", "rejected"]
CardState = Literal["claimed", "written", "verified", "spoiled"]

BATCH_STATES: Final = ("loaded", "running", "cancelled", "finished")
RECORD_STATES: Final = ("pending", "claimed", "written", "done", "rejected")
CARD_STATES: Final = ("claimed", "written", "verified", "spoiled")
#: Record states that still need work: they block "finished" and count as outstanding in reconciliation.
LIVE_STATES: Final = ("pending", "claimed", "written")


# ------------------------------------------------------------------------------------------------ errors
class LedgerError(CardkitError):
    """Base class of ledger errors. Messages name batches, sequence numbers, lines and states — never
    record field values."""


class LedgerUrlError(LedgerError):
    """A ledger URL that is neither ``sqlite:///…`` nor ``postgresql://…``."""


class LedgerDatabaseError(LedgerError):
    """The database driver failed (connection lost, disk full, constraint the ledger did not expect)."""


class LedgerBusyError(LedgerDatabaseError):
    """The database stayed locked longer than the busy timeout."""


class SchemaVersionError(LedgerError):
    """The database schema is newer than this code understands (or its version table is damaged)."""


class UnknownBatchError(LedgerError):
    """No batch with that id."""


class UnknownRecordError(LedgerError):
    """No record with that batch id and sequence number."""


class BatchConflictError(LedgerError):
    """A batch id that exists already with another source digest or profile."""


class BatchStateError(LedgerError):
    """The batch is in a state that does not allow the operation (e.g. cancelling a finished batch)."""


class RecordStateError(LedgerError):
    """An illegal record or card transition."""


class StaleClaimError(RecordStateError):
    """The claim is no longer held: it was recovered, failed, or the record was claimed again since."""


class AlreadyDoneError(RecordStateError):
    """The record is done already (with another card or another attempt): never two cards for one record."""


class ChipInUseError(RecordStateError):
    """The chip serial belongs to a live or verified card of another record."""


@dataclass(frozen=True, slots=True)
class DuplicateIdentity:
    """A record whose identity pseudonym appears elsewhere: earlier in the same batch (``other_batch`` is
    the same batch) or in another batch, where it is ``done`` or still live."""

    line: int
    identity: str
    other_batch: str
    other_line: int
    other_state: str


class DuplicateIdentityError(LedgerError):
    """The batch was not loaded: some identities are duplicated. ``duplicates`` lists every one."""

    def __init__(self, batch_id: str, duplicates: list[DuplicateIdentity]) -> None:
        self.batch_id = batch_id
        self.duplicates = tuple(duplicates)
        within = sum(1 for d in duplicates if d.other_batch == batch_id)
        lines = ", ".join(str(d.line) for d in duplicates[:10]) + (" …" if len(duplicates) > 10 else "")
        super().__init__(
            f"batch {batch_id!r} not loaded: {len(duplicates)} duplicate identities ({within} within the batch, "
            f"{len(duplicates) - within} against other batches) at lines {lines}")


# ------------------------------------------------------------------------------------------------ values
@dataclass(frozen=True, slots=True)
class BatchInfo:
    id: str
    profile: str
    source_digest: str
    state: BatchState
    created_at: float
    updated_at: float
    #: Records handed to ``create_batch`` (loaded + rejected at load): the reconciliation input.
    input_count: int
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Claim:
    """A record handed to one station/reader. ``attempt`` identifies this claim: a later claim of the same
    record has a higher attempt, and transitions with an older claim are refused (:class:`StaleClaimError`).
    ``fields`` is personal data: keep it out of logs."""

    batch_id: str
    seq: int
    line: int
    attempt: int
    station: str
    reader: str
    identity: str
    fields: dict[str, str] = field(repr=False)
    claimed_at: float


@dataclass(frozen=True, slots=True)
class RecordRow:
    batch_id: str
    seq: int
    line: int
    identity: str | None
    state: RecordState
    attempts: int
    remakes: int
    station: str | None
    reader: str | None
    chip_serial: bytes | None
    claimed_at: float | None
    updated_at: float
    reason: str | None
    #: The record fields, only when asked for (``include_data=True``); personal data.
    fields: dict[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class CardRow:
    batch_id: str
    seq: int
    attempt: int
    chip_serial: bytes
    state: CardState
    reason: str | None
    station: str
    reader: str
    claimed_at: float
    created_at: float
    written_at: float | None
    verified_at: float | None
    spoiled_at: float | None
    manifest: dict[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Recovered:
    """A claim taken back by :meth:`Ledger.recover`."""

    batch_id: str
    seq: int
    line: int
    attempt: int
    station: str
    reader: str
    previous_state: str
    #: The card that was spoiled because its state is unknown, if one had been started or written.
    spoiled_chip: bytes | None
