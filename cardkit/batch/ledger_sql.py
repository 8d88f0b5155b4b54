"""The ledger's database shim: one SQL text for SQLite and PostgreSQL, versioned migrations.

The ledger writes its SQL once, with ``?`` placeholders. This module connects to either database and hides
the few differences:

* placeholders: ``?`` (SQLite, PEP 249 ``qmark``) → ``%s`` (psycopg 3, ``format``);
* locking (``/*lock*/`` and ``/*skip_locked*/`` markers in the SQL): SQLite serializes writers, so every
  write transaction starts with ``BEGIN IMMEDIATE`` (SQLite docs "lang_transaction": takes the write lock
  at once instead of failing later with SQLITE_BUSY); PostgreSQL locks rows: ``SELECT … FOR UPDATE`` and,
  for claims, ``FOR UPDATE SKIP LOCKED`` (PostgreSQL 15 docs, SQL SELECT "The Locking Clause"), plus
  transaction-scoped advisory locks for schema changes and batch loads (§9.27.10 ``pg_advisory_xact_lock``);
* upsert: both accept ``INSERT … ON CONFLICT (…) DO UPDATE SET x = excluded.x`` (SQLite ≥ 3.24 "upsert",
  PostgreSQL §SQL INSERT "ON CONFLICT Clause"), so it needs no shim at all.

SQLite runs in WAL mode with ``synchronous=FULL`` (SQLite docs "pragma": a commit is durable across power
loss) and a busy timeout; its database file is created 0600 (it holds personal data), and SQLite gives its
``-wal``/``-shm`` files the database file's permissions. psycopg is imported only for PostgreSQL URLs.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Final

from cardkit.batch.ledger_model import (
    LedgerBusyError,
    LedgerDatabaseError,
    LedgerError,
    LedgerUrlError,
    SchemaVersionError,
)

__all__ = ["SCHEMA_VERSION", "Database", "Tx", "connect", "migrate", "sqlite_path"]

log = logging.getLogger(__name__)

#: The schema version this code writes and understands.
SCHEMA_VERSION: Final = 1
#: pg_advisory_xact_lock keys (arbitrary 64-bit constants: "cardkit" schema and "cardkit" load).
SCHEMA_LOCK: Final = 0x636B_5343_4845_4D41
LOAD_LOCK: Final = 0x636B_4C4F_4144_0001

Row = tuple[Any, ...]

#: Lock markers written in the ledger's SQL. They are comments, which SQLite ignores (its write transactions
#: hold the database lock from ``BEGIN IMMEDIATE``); for PostgreSQL they become row-lock clauses.
LOCK: Final = "/*lock*/"
SKIP_LOCKED: Final = "/*skip_locked*/"

# Migration 1: everything. Types valid in both databases: TEXT, INTEGER, BIGINT, DOUBLE PRECISION (SQLite
# maps the names to its affinities, SQLite docs "datatype3" §3.1). Times are Unix seconds (float).
# Partial unique indexes (SQLite "partialindex", PostgreSQL §11.8) make "one live card per record" and "one
# live card per chip" hold even against a bug in the code above.
_MIGRATION_1: Final = (
    """CREATE TABLE batches (
        id TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        source_digest TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('loaded', 'running', 'cancelled', 'finished')),
        input_count INTEGER NOT NULL,
        options TEXT NOT NULL
    )""",
    """CREATE TABLE records (
        batch_id TEXT NOT NULL REFERENCES batches (id),
        seq INTEGER NOT NULL,
        line INTEGER NOT NULL,
        identity TEXT,
        data TEXT,
        state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'written', 'done', 'rejected')),
        attempts INTEGER NOT NULL DEFAULT 0,
        remakes INTEGER NOT NULL DEFAULT 0,
        station TEXT,
        reader TEXT,
        chip_serial TEXT,
        claimed_at DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL,
        reason TEXT,
        PRIMARY KEY (batch_id, seq)
    )""",
    "CREATE INDEX records_by_state ON records (batch_id, state, seq)",
    "CREATE INDEX records_by_identity ON records (identity)",
    """CREATE TABLE cards (
        batch_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        chip_serial TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('claimed', 'written', 'verified', 'spoiled')),
        manifest TEXT,
        reason TEXT,
        station TEXT NOT NULL,
        reader TEXT NOT NULL,
        claimed_at DOUBLE PRECISION NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        written_at DOUBLE PRECISION,
        verified_at DOUBLE PRECISION,
        spoiled_at DOUBLE PRECISION,
        PRIMARY KEY (batch_id, seq, attempt),
        FOREIGN KEY (batch_id, seq) REFERENCES records (batch_id, seq)
    )""",
    "CREATE UNIQUE INDEX cards_one_live_per_record ON cards (batch_id, seq) WHERE state <> 'spoiled'",
    "CREATE UNIQUE INDEX cards_one_live_per_chip ON cards (chip_serial) WHERE state <> 'spoiled'",
    "CREATE INDEX cards_by_chip ON cards (chip_serial)",
    """CREATE TABLE stations (
        name TEXT PRIMARY KEY,
        heartbeat DOUBLE PRECISION NOT NULL
    )""",
)

#: version -> DDL statements. Append new versions; never edit an applied one.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {1: _MIGRATION_1}


class Tx:
    """One open transaction: ``execute`` returns all rows (or none for statements without a result)."""

    def __init__(self, cursor: Any, convert: Callable[[str], str], dialect: str) -> None:
        self._cur = cursor
        self._convert = convert
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cur.execute(self._convert(sql), tuple(params))
        if self._cur.description is None:
            return []
        return [tuple(r) for r in self._cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self.execute(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._cur.executemany(self._convert(sql), [tuple(r) for r in rows])

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def advisory_lock(self, key: int) -> None:
        """Serialize with other transactions taking the same key (PostgreSQL); SQLite is serialized already."""
        if self.dialect == "postgresql":
            self.execute("SELECT pg_advisory_xact_lock(?)", (key,))


class Database(ABC):
    """A connection and its dialect. Thread-safe: one transaction at a time per connection."""

    dialect: str = ""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    @abstractmethod
    def transaction(self, *, write: bool) -> AbstractContextManager[Tx]:
        """A transaction that commits when the block ends and rolls back when it raises. ``write=True``
        takes SQLite's write lock at once (``BEGIN IMMEDIATE``)."""

    @abstractmethod
    def close(self) -> None: ...


class _Sqlite(Database):
    dialect = "sqlite"

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        super().__init__()
        self.path = path
        if path != ":memory:":
            _create_private(Path(path))
        try:
            self._conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None,
                                         check_same_thread=False)
            # SQLite docs "pragma": WAL lets readers run beside the writer; FULL syncs the WAL at each
            # commit; foreign_keys is off by default; busy_timeout waits for the lock instead of failing.
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if path != ":memory:":
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise LedgerDatabaseError(f"SQLite refused WAL mode (got {mode!r})")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise _translate(exc, "open the SQLite ledger") from exc

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Tx]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise _translate(exc, "begin a transaction") from exc
            try:
                yield Tx(cur, _same, self.dialect)
                cur.execute("COMMIT")
            except BaseException as exc:
                try:
                    self._conn.rollback()
                except sqlite3.Error:  # pragma: no cover - connection already broken
                    log.exception("rollback failed")
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc, "run a ledger transaction") from exc
                raise
            finally:
                cur.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Postgres(Database):
    dialect = "postgresql"

    def __init__(self, url: str, connect_timeout_s: float) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:
            raise LedgerError("a postgresql:// ledger needs psycopg 3: pip install 'cardkit[postgres]'") from exc
        self._psycopg = psycopg
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(connect_timeout_s)))
            # Wait for row locks at most as long as SQLite waits for its lock (PostgreSQL 15 §20.11
            # lock_timeout), so a station stuck inside a transaction cannot block the others forever.
            self._conn.execute(f"SET lock_timeout = {max(1, int(connect_timeout_s * 1000))}")
        except psycopg.Error as exc:
            raise LedgerDatabaseError(f"cannot connect to the PostgreSQL ledger: {_first_line(exc)}") from exc
        self._sql_cache: dict[str, str] = {}

    def _convert(self, sql: str) -> str:
        out = self._sql_cache.get(sql)
        if out is None:
            out = sql.replace("%", "%%").replace("?", "%s")
            out = out.replace(SKIP_LOCKED, "FOR UPDATE SKIP LOCKED").replace(LOCK, "FOR UPDATE")
            self._sql_cache[sql] = out
        return out

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Tx]:
        psycopg = self._psycopg
        with self._lock:
            try:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield Tx(cur, self._convert, self.dialect)
            except psycopg.Error as exc:
                raise _translate(exc, "run a ledger transaction") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _same(sql: str) -> str:
    return sql


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _translate(exc: BaseException, doing: str) -> LedgerDatabaseError:
    """A driver exception as a ledger error. Only the driver's first message line is kept (driver details
    can quote key values of a failed constraint; the ledger's keys are batch ids, sequence numbers, chip
    serials and pseudonyms, never field values)."""
    msg = _first_line(exc)
    sqlstate = getattr(exc, "sqlstate", None)
    busy = ("database is locked" in msg or "database is busy" in msg
            or sqlstate in ("40001", "40P01", "55P03"))  # serialization_failure, deadlock, lock_not_available
    cls = LedgerBusyError if busy else LedgerDatabaseError
    return cls(f"could not {doing}: {type(exc).__name__}: {msg}")


def _create_private(path: Path) -> None:
    """Create the database file 0600 (before SQLite does, with the umask's looser mode)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise LedgerDatabaseError(f"cannot create the ledger file {path.name!r}: {exc.strerror}") from exc
    try:
        mode = os.fstat(fd).st_mode & 0o777
        if mode & 0o077:
            log.warning("ledger file %s has mode %03o: it holds personal data, chmod 600 it", path.name, mode)
    finally:
        os.close(fd)


def sqlite_path(url: str) -> str | None:
    """The file path of a SQLite ledger URL (``None`` for PostgreSQL URLs).

    ``sqlite:///relative/x.db`` and ``sqlite:////absolute/x.db`` follow the common SQLAlchemy convention;
    a bare path without a scheme is taken as a SQLite file too."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path:
            raise LedgerUrlError("a sqlite:/// URL needs a file path, e.g. sqlite:///ledger.db")
        return path
    if url.startswith("sqlite:"):
        raise LedgerUrlError("a SQLite ledger URL looks like sqlite:///relative.db or sqlite:////abs/path.db")
    if "://" in url:
        return None
    if not url:
        raise LedgerUrlError("empty ledger URL")
    return url


def connect(url: str, *, busy_timeout_s: float = 30.0) -> Database:
    """Open ``sqlite:///path`` (or a bare path) or ``postgresql://…`` / ``postgres://…``."""
    path = sqlite_path(url)
    if path is not None:
        return _Sqlite(path, busy_timeout_s)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return _Postgres(url, busy_timeout_s)
    raise LedgerUrlError(f"unsupported ledger URL scheme {scheme!r}; use sqlite:/// or postgresql://")


def migrate(db: Database, now: float) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`, one transaction for all pending migrations; refuse a
    database written by newer code. Returns the version found before migrating."""
    with db.transaction(write=True) as tx:
        tx.advisory_lock(SCHEMA_LOCK)
        tx.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                   "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        found = tx.scalar("SELECT MAX(version) FROM schema_version")
        current = int(found) if found is not None else 0
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the ledger database has schema version {current}, but this cardkit understands only up to "
                f"{SCHEMA_VERSION}: upgrade cardkit before using this ledger")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS[version]:
                tx.execute(stmt)
            tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, now))
            log.info("ledger schema migrated to version %d", version)
        return current
