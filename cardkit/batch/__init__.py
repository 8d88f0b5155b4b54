"""Batch issuance storage: record sources, the exactly-once ledger, the audit journal and the report.

* :mod:`~cardkit.batch.sources` — stream records from CSV / JSON Lines with line numbers and typed problems;
* :mod:`~cardkit.batch.pseudonym` — keyed pseudonyms for cardholder identifiers;
* :mod:`~cardkit.batch.ledger` — records and cards of batches on SQLite or PostgreSQL, one transaction per
  state change (values and errors in :mod:`~cardkit.batch.ledger_model`);
* :mod:`~cardkit.batch.journal` — append-only hash-chained JSON Lines audit journal;
* :mod:`~cardkit.batch.report` — reconciliation report (JSON, CSV, text, self-contained HTML).

psycopg is imported only when a ``postgresql://`` ledger is opened.
"""

from __future__ import annotations

from cardkit.batch.journal import (
    Journal,
    JournalEntry,
    JournalError,
    JournalPrivacyError,
    JournalProblem,
    JournalReport,
    verify_journal,
)
from cardkit.batch.ledger import CRASH_REASON, Ledger
from cardkit.batch.ledger_model import (
    AlreadyDoneError,
    BatchConflictError,
    BatchInfo,
    BatchStateError,
    CardRow,
    ChipInUseError,
    Claim,
    DuplicateIdentity,
    DuplicateIdentityError,
    LedgerBusyError,
    LedgerDatabaseError,
    LedgerError,
    LedgerUrlError,
    RecordRow,
    RecordStateError,
    Recovered,
    SchemaVersionError,
    StaleClaimError,
    UnknownBatchError,
    UnknownRecordError,
)
from cardkit.batch.pseudonym import Pseudonymizer
from cardkit.batch.report import ReportError, build_report, write_report
from cardkit.batch.sources import SourceError, SourceProblem, SourceRecord, iter_records, source_digest

__all__ = [
    "CRASH_REASON", "AlreadyDoneError", "BatchConflictError", "BatchInfo", "BatchStateError", "CardRow",
    "ChipInUseError", "Claim", "DuplicateIdentity", "DuplicateIdentityError", "Journal", "JournalEntry",
    "JournalError", "JournalPrivacyError", "JournalProblem", "JournalReport", "Ledger", "LedgerBusyError",
    "LedgerDatabaseError", "LedgerError", "LedgerUrlError", "Pseudonymizer", "RecordRow", "RecordStateError",
    "Recovered", "ReportError", "SchemaVersionError", "SourceError", "SourceProblem", "SourceRecord",
    "StaleClaimError", "UnknownBatchError", "UnknownRecordError", "build_report", "iter_records", "source_digest",
    "verify_journal", "write_report",
]
