"""Whole-batch validation and all-or-nothing loading into the ledger.

:class:`BatchValidator` streams a CSV / JSON Lines source once and yields every problem with its line number:

* ``source`` — the file's structure (bytes not valid in the encoding, malformed CSV, a row with the wrong
  number of columns, invalid JSON, a file cut in the middle of a record, an empty file);
* ``column`` — a required field of the profile without a column, a column the profile does not map (CSV:
  once, for the header; JSON Lines: per record);
* ``field`` — a value that fails its codec or validator (:func:`cardkit.issuance.prepare.validate_record`);
* ``duplicate`` — a value of one of the profile's ``unique_fields`` seen on an earlier line.

Memory stays flat however long the file is: records are checked one by one, and duplicates are found in a
private temporary SQLite database on disk (``sqlite3.connect("")``, deleted when closed) holding only keyed
digests — BLAKE2b (RFC 7693) under a random key of this run — never the values. Problem messages name lines
and fields, never values (identifiers appear masked at most).

Field checks can run in worker processes (``jobs``): the records still stream, in order, through the parent,
which keeps the duplicate and header checks.

:func:`load_batch` validates, then loads the batch into the ledger in one transaction (nothing is stored
unless everything is). With ``on_bad_record="skip"`` records whose *values* fail validation are stored as
rejected (counted in the reconciliation); any other problem — structure, encoding, columns, duplicates —
refuses the whole file.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import secrets
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from cardkit.batch.ledger import Ledger
from cardkit.batch.ledger_model import BatchConflictError, UnknownBatchError
from cardkit.batch.pseudonym import Pseudonymizer
from cardkit.batch.sources import SourceProblem, SourceRecord, detect_format, iter_records, source_digest
from cardkit.errors import RecordError
from cardkit.issuance.prepare import PreparedRecord, RecordProblems, prepare, validate_record
from cardkit.profiles.model import Profile, load_profile

if TYPE_CHECKING:
    from cardkit.keys.store import Keystore

__all__ = ["BadBatchError", "BatchProblem", "BatchValidator", "LoadResult", "ValidationSummary", "load_batch",
           "prepare_file"]

log = logging.getLogger(__name__)

ProblemKind = Literal["source", "column", "field", "duplicate"]
#: Records handed to a worker process at once.
CHUNK: Final = 256
#: Digest size for the duplicate check: 16 bytes (collision odds ~2^-128 per pair).
_DIGEST: Final = 16


class BadBatchError(RecordError):
    """The batch file has problems and was not loaded. ``summary`` counts them by kind."""

    def __init__(self, message: str, summary: ValidationSummary) -> None:
        self.summary = summary
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class BatchProblem:
    """One problem of a batch file. ``message`` names the field (if any), never its value."""

    line: int
    kind: ProblemKind
    message: str
    field: str | None = None
    #: 0-based record position (None for file- and header-level problems).
    index: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}"
        if self.field is not None:
            where += f", field {self.field!r}"
        return f"{where}: {self.message}"


@dataclass
class ValidationSummary:
    """Counts of one validation pass."""

    records: int = 0
    valid: int = 0
    problems: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    #: Records whose only problems are field values (what ``on_bad_record="skip"`` may reject).
    value_only: int = 0
    #: True when the file could not be read to its end (no header, empty file).
    fatal: bool = False

    @property
    def ok(self) -> bool:
        return self.problems == 0

    @property
    def refusing(self) -> int:
        """Problems that refuse the whole file whatever ``on_bad_record`` says."""
        return self.problems - self.by_kind["field"]

    def describe(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_kind.items()))
        return (f"{self.records} records, {self.valid} valid, {self.problems} problem(s)"
                + (f" ({kinds})" if kinds else ""))


# ------------------------------------------------------------------------------------------- workers
_WORKER_PROFILE: Profile | None = None


def _init_worker(source: str, algorithm: str) -> None:
    global _WORKER_PROFILE  # one profile per worker process, set by the pool initializer
    _WORKER_PROFILE = load_profile(source, algorithm=algorithm)


def _check_chunk(chunk: list[tuple[int, dict[str, str], bool]]) -> list[list[tuple[str | None, str]]]:
    profile = _WORKER_PROFILE
    if profile is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("worker process has no profile")
    return [[(p.field, _message(p)) for p in validate_record(profile, fields, line=line, check_unknown=unknown)]
            for line, fields, unknown in chunk]


def _prepare_chunk(chunk: list[tuple[int, dict[str, str]]]) -> list[tuple[int, PreparedRecord | str]]:
    profile = _WORKER_PROFILE
    if profile is None:  # pragma: no cover
        raise RuntimeError("worker process has no profile")
    out: list[tuple[int, PreparedRecord | str]] = []
    for line, fields in chunk:
        try:
            out.append((line, prepare(profile, fields, line=line)))
        except RecordProblems as exc:
            out.append((line, str(exc)))
    return out


def _message(problem: RecordError) -> str:
    """A RecordError's message without the 'line N, field F: ' prefix (kept as separate attributes)."""
    text = str(problem)
    if problem.field is not None or problem.line is not None:
        _, sep, rest = text.partition(": ")
        return rest if sep else text
    return text


def _pool(profile: Profile, jobs: int) -> Any:
    if not profile.source:
        raise RecordError("parallel validation needs a profile loaded from a file")
    ctx = multiprocessing.get_context("spawn")  # no fork of a possibly threaded parent
    return ctx.Pool(jobs, initializer=_init_worker, initargs=(profile.source, profile.algorithm))


# ------------------------------------------------------------------------------------------- validator
class _Duplicates:
    """Keyed digests of unique-field values in a temporary on-disk SQLite database (flat memory)."""

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields
        self._key = secrets.token_bytes(32)
        self._db = sqlite3.connect("")  # a private temporary database file, deleted on close
        self._db.execute("PRAGMA cache_size = -4096")  # at most 4 MiB of pages in memory
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("CREATE TABLE seen (f INTEGER NOT NULL, d BLOB NOT NULL, line INTEGER NOT NULL, "
                         "PRIMARY KEY (f, d)) WITHOUT ROWID")
        self._pending = 0

    def check(self, line: int, index: int, fields: Mapping[str, str]) -> Iterator[BatchProblem]:
        for i, name in enumerate(self.fields):
            value = fields.get(name)
            if not value:
                continue
            digest = hashlib.blake2b(value.encode("utf-8"), key=self._key, digest_size=_DIGEST).digest()
            cur = self._db.execute("INSERT OR IGNORE INTO seen (f, d, line) VALUES (?, ?, ?)", (i, digest, line))
            if cur.rowcount == 0:
                first = self._db.execute("SELECT line FROM seen WHERE f = ? AND d = ?", (i, digest)).fetchone()[0]
                yield BatchProblem(line, "duplicate", f"duplicate value: the same {name} as line {first}", name, index)
        self._pending += 1
        if self._pending >= 10_000:
            self._db.commit()
            self._pending = 0

    def close(self) -> None:
        self._db.close()


def _required_fields(profile: Profile) -> list[str]:
    out: list[str] = []
    for fs in profile.files:
        for spec in fs.fields:
            if spec.computed is None and spec.default is None and not (spec.optional or fs.optional):
                out.append(spec.field)
    out += [p.initial[6:] for p in profile.pins if p.initial.startswith("field:")]
    return out


def _known_fields(profile: Profile) -> set[str]:
    from cardkit.issuance.prepare import known_fields

    return known_fields(profile)


class BatchValidator:
    """Validate a whole batch file against a profile in one streaming pass (see the module docstring).

    Iterate :meth:`problems`; afterwards :attr:`summary` holds the counts and :attr:`bad_records` maps the
    line of every record with a problem to its first problem (what loading rejects or refuses).
    """

    def __init__(self, profile: Profile, *, encoding: str = "utf-8", fmt: str | None = None,
                 duplicates: bool = True, jobs: int = 1) -> None:
        if not isinstance(jobs, int) or jobs < 1:
            raise RecordError("jobs must be an integer >= 1")
        self.profile = profile
        self.encoding = encoding
        self.fmt = fmt
        self.duplicates = duplicates
        self.jobs = jobs
        self.summary = ValidationSummary()
        #: line -> (kind of the first problem, its text) for every record that has a problem.
        self.bad_records: dict[int, tuple[ProblemKind, str]] = {}
        self._required = _required_fields(profile)
        self._known = _known_fields(profile)

    def problems(self, path: str | Path) -> Iterator[BatchProblem]:
        """Every problem of the file, in line order as found (streaming)."""
        self.summary = ValidationSummary()
        self.bad_records = {}
        dups = _Duplicates(tuple(dict.fromkeys(self.profile.unique_fields))) if self.duplicates else None
        pool = _pool(self.profile, self.jobs) if self.jobs > 1 else None
        try:
            items = iter_records(path, encoding=self.encoding, fmt=self.fmt, errors="collect")
            csv = (self.fmt or detect_format(path)).lower() == "csv"
            yield from self._run(items, dups, pool, csv)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            if dups is not None:
                dups.close()

    def _note(self, problem: BatchProblem, record_line: int | None = None) -> BatchProblem:
        self.summary.problems += 1
        self.summary.by_kind[problem.kind] += 1
        if record_line is not None and record_line not in self.bad_records:
            self.bad_records[record_line] = (problem.kind, str(problem))
        return problem

    def _run(self, items: Iterator[SourceRecord | SourceProblem], dups: _Duplicates | None, pool: Any,
             csv: bool) -> Iterator[BatchProblem]:
        header: list[str] | None = None
        missing: set[str] = set()
        pending: list[tuple[SourceRecord, list[BatchProblem]]] = []

        def flush() -> Iterator[BatchProblem]:
            batch = [(r.line, r.fields, not csv) for r, _ in pending]
            if pool is not None:
                results = pool.map(_check_chunk, [batch[i:i + CHUNK] for i in range(0, len(batch), CHUNK)])
                found = [res for chunk in results for res in chunk]
            else:
                found = [[(p.field, _message(p)) for p in validate_record(self.profile, f, line=ln,
                                                                          check_unknown=unk)]
                         for ln, f, unk in batch]
            for (rec, early), probs in zip(pending, found, strict=True):
                own = list(early)
                for fname, text in dict.fromkeys(probs):  # a validator and a codec may say the same thing
                    if fname in missing:
                        continue  # the column is missing: reported once, for the header
                    kind: ProblemKind = "column" if text.startswith("unknown column") else "field"
                    own.append(BatchProblem(rec.line, kind, text, fname, rec.index))
                own.sort(key=lambda p: p.kind != "field")
                if own and {p.kind for p in own} == {"field"}:
                    self.summary.value_only += 1
                elif not own and not missing:
                    self.summary.valid += 1
                for p in own:
                    yield self._note(p, rec.line)
            pending.clear()

        for item in items:
            if isinstance(item, SourceProblem):
                if item.index is not None:
                    self.summary.records += 1
                self.summary.fatal |= item.fatal
                yield from flush()
                yield self._note(BatchProblem(item.line, "source", item.message, None, item.index),
                                 item.line if item.index is not None else None)
                continue
            self.summary.records += 1
            if header is None:
                header = list(item.fields)
                if csv:
                    missing = {f for f in self._required if f not in item.fields}
                    for name in sorted(missing):
                        yield self._note(BatchProblem(1, "column", "required column is missing from the header",
                                                      name))
                    for name in header:
                        if name not in self._known:
                            yield self._note(BatchProblem(1, "column", "unknown column (not mapped by the profile)",
                                                          name))
            early = list(dups.check(item.line, item.index, item.fields)) if dups is not None else []
            pending.append((item, early))
            if len(pending) >= CHUNK * max(1, self.jobs) * 4:
                yield from flush()
        yield from flush()
        if self.summary.records == 0 and not self.summary.fatal:
            self.summary.fatal = True
            yield self._note(BatchProblem(1, "source", "the file holds no records"))


# ------------------------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class LoadResult:
    batch_id: str
    digest: str
    #: Records stored (loaded + rejected at load).
    count: int
    rejected: int
    summary: ValidationSummary
    #: False when the batch was loaded earlier from the same file (nothing changed).
    created: bool


def load_batch(ledger: Ledger, path: str | Path, profile: Profile, batch_id: str, pseudonymizer: Pseudonymizer,
               *, encoding: str = "utf-8", fmt: str | None = None, on_bad_record: str = "stop",
               options: Mapping[str, Any] | None = None, jobs: int = 1,
               on_problem: Callable[[BatchProblem], None] | None = None, allow_reissue: bool = False) -> LoadResult:
    """Validate ``path`` and load it as batch ``batch_id`` in one transaction (see the module docstring).

    Raises :class:`BadBatchError` (nothing loaded) when the file has problems that ``on_bad_record``
    does not allow to skip; ``on_problem`` sees every problem as it is found.
    """
    if on_bad_record not in ("skip", "stop"):
        raise RecordError(f"on_bad_record must be 'skip' or 'stop', got {on_bad_record!r}")
    digest = source_digest(path)
    try:
        existing = ledger.batch(batch_id)
    except UnknownBatchError:
        existing = None
    if existing is not None and (existing.source_digest != digest or existing.profile != profile.name):
        what = "source digest" if existing.source_digest != digest else "profile"
        raise BatchConflictError(f"batch {batch_id!r} exists already with another {what}; choose another --batch-id")
    if existing is not None:
        log.info("batch %s is loaded already from the same file", batch_id)
        status = ledger.status(batch_id)
        return LoadResult(batch_id, digest, status["total"], status["rejected"], ValidationSummary(), False)
    validator = BatchValidator(profile, encoding=encoding, fmt=fmt, jobs=jobs)
    for problem in validator.problems(path):
        if on_problem is not None:
            on_problem(problem)
    summary = validator.summary
    if summary.fatal or summary.refusing or (summary.problems and on_bad_record == "stop"):
        why = ("" if on_bad_record == "skip" or not summary.problems or summary.refusing
               else "; --on-bad-record skip would load the valid records and reject the others")
        raise BadBatchError(f"batch not loaded: {summary.describe()}{why}", summary)
    bad = validator.bad_records
    ident = profile.identity_field

    def records() -> Iterator[tuple[int, dict[str, str]]]:
        for item in iter_records(path, encoding=encoding, fmt=fmt):
            if item.line not in bad:
                yield item.line, item.fields
        if source_digest(path) != digest:
            raise RecordError("the batch file changed while it was being loaded; nothing was loaded")

    rejected = [(line, f"invalid record: {text}") for line, (_kind, text) in sorted(bad.items())]
    opts = dict(options or {})
    opts.setdefault("rejected_at_load", len(rejected))
    count = ledger.create_batch(batch_id, profile.name, digest, records(),
                                identity_of=lambda f: pseudonymizer.of(f.get(ident, "")), rejected=rejected,
                                options=opts, allow_reissue=allow_reissue)
    log.info("batch %s loaded: %d records (%d rejected at load)", batch_id, count, len(rejected))
    return LoadResult(batch_id, digest, count, len(rejected), summary, True)


# ------------------------------------------------------------------------------------------- bulk prepare
def prepare_file(path: str | Path, profile: Profile, *, encoding: str = "utf-8", fmt: str | None = None,
                 jobs: int = 1, keystore: Keystore | None = None) -> Iterator[tuple[int, PreparedRecord | str]]:
    """Validate and encode every record of a file, ahead of card I/O and in bulk: yields ``(line, prepared)``
    or ``(line, problems text)`` in file order. With ``jobs`` > 1 the work runs in that many processes."""
    items = ((r.line, r.fields) for r in iter_records(path, encoding=encoding, fmt=fmt))
    if jobs <= 1:
        for line, fields in items:
            try:
                yield line, prepare(profile, fields, line=line, keystore=keystore)
            except RecordProblems as exc:
                yield line, str(exc)
        return
    pool = _pool(profile, jobs)
    try:
        for chunk in pool.imap(_prepare_chunk, _chunks(items, CHUNK), chunksize=1):
            yield from chunk
    finally:
        pool.terminate()
        pool.join()


def _chunks(items: Iterable[tuple[int, dict[str, str]]], size: int) -> Iterator[list[tuple[int, dict[str, str]]]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
