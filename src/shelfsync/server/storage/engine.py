"""The database handle: one engine, read and write transactions, dialect quirks.

SQLite and PostgreSQL differ in how a write transaction must start. On SQLite
a deferred `BEGIN` that later writes can deadlock with another writer on lock
upgrade, so writes start with `BEGIN IMMEDIATE` (the SQLAlchemy pysqlite
"serializable isolation / savepoints" recipe). PostgreSQL needs nothing special
for writes; its reads run at REPEATABLE READ so that one read is one snapshot.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from shelfsync.server.domain.errors import InsufficientStorage, Unavailable
from shelfsync.server.storage.bulk import CompiledSelect
from shelfsync.server.storage.wal_checkpointer import WalCheckpointer

__all__ = ["BULK_BYTES_KEY", "Database", "Tx", "WouldBlock", "normalize_url", "savepoint"]

# What services hold while a transaction is open (they never touch SQL themselves).
Tx = Connection

_WRITE_OPTION = "shelfsync_write"
# A write whose loss in a power cut or crash is harmless (the next durable
# commit makes it durable with itself): its commit does not wait for the disk.
_LAZY_OPTION = "shelfsync_lazy"
_SYNC_LEVEL = "shelfsync_synchronous"  # a pooled SQLite connection's current level
# The page cache of SQLite's write connection (SQLite's default is 2 MiB). A
# report batch of 1,000 new items dirties about 3,300 pages (13 MiB) at random
# places in the path and content indexes: in 2 MiB SQLite spilled dirty pages
# to the log mid-transaction and read index pages again from the file on every
# batch (issue 7, profile in docs/benchmarks.md). Filled only as pages are
# used, so a small library never reaches it.
_WRITE_CACHE_KIB = 64 * 1024
# Pages in the log before a commit of the write connection copies them into the
# database file itself (SQLite's default: 1,000). storage/wal_checkpointer.py
# copies them after every commit, off the request path; this is the backstop
# should it fall behind. A report batch of 1,000 new items logs about 3,300
# pages: with the default every batch would pay a checkpoint inside its
# request (a second write of each page and an fsync of the file).
_WAL_CHECKPOINT_PAGES = 16384
# Once a checkpoint has emptied it, the log is cut back to this size on disk.
_WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024


# Bytes of stored content (small content kept in the database, `content_data`)
# a pooled SQLite connection wrote since its page cache was last emptied, in
# its `Connection.info` (storage/contents.py adds to it). Those pages are
# written once and read, if ever, through other connections: in the write
# connection's large cache they would only take the place of index pages and
# grow the server's memory (up to _WRITE_CACHE_KIB more). Past this many
# bytes, the cache is emptied after the commit (`PRAGMA shrink_memory`), so a
# batch upload of small files costs its index pages read again once per this
# many bytes, and at most this much memory.
BULK_BYTES_KEY = "shelfsync_bulk_bytes"
_BULK_SHRINK_BYTES = 8 * 1024 * 1024


class WouldBlock(Exception):
    """`Database.first_nowait` cannot answer without waiting: read with
    `read()` instead, in a worker thread."""


def normalize_url(url: str) -> str:
    """Accept the URLs people write (`postgresql://`) and pick our drivers."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://") and not url.startswith("sqlite+"):
        return "sqlite+pysqlite://" + url.split("://", 1)[1]
    return url


class Database:
    """Owns the engine; hands out transactions as context managers."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        # first_nowait's own connection (SQLite on a file only), made on first use.
        self.reads_nowait = self.is_sqlite and _plain_file(self.url)
        self._nowait_conn: sqlite3.Connection | None = None
        self._nowait_lock = threading.Lock()
        self._nowait_plans: dict[int, _Plan] = {}
        self._checkpointer: WalCheckpointer | None = None
        if self.is_sqlite:
            self.engine: Engine = sa.create_engine(
                self.url,
                echo=echo,
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args={"check_same_thread": False, "timeout": 30},
            )
            _install_sqlite_hooks(self.engine)
            self._writes = self.engine
            if _plain_file(self.url):
                # SQLite runs one write transaction at a time: writes go through
                # a pool keeping one connection (others, made while it is busy,
                # are closed after use), whose page cache outlives its
                # transactions as no other connection writes (see _WRITE_CACHE_KIB).
                self._writes = sa.create_engine(
                    self.url,
                    echo=echo,
                    pool_size=1,
                    max_overflow=pool_size,
                    connect_args={"check_same_thread": False, "timeout": 30},
                )
                _install_sqlite_hooks(self._writes, cache_kib=_WRITE_CACHE_KIB)
                self._checkpointer = WalCheckpointer(_file_path(self.url))
        else:
            self.engine = sa.create_engine(
                self.url,
                echo=echo,
                pool_size=pool_size,
                max_overflow=pool_size,
                # A restarted PostgreSQL leaves dead connections in the pool.
                pool_pre_ping=True,
                pool_timeout=10,
                connect_args={"connect_timeout": 5},
            )
            self._writes = self.engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction: a consistent snapshot on both databases."""
        with _translate_errors(), self.engine.connect() as conn:
            if not self.is_sqlite:
                # PostgreSQL's default READ COMMITTED takes a new snapshot per
                # statement: a feed page could then report a latest_seq older
                # than a change it carries. One snapshot for the whole read.
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Connection]:
        """A write transaction, committed (durably) when the block ends without error.

        `durable=False` is for writes that may be lost in a crash or power cut
        without harm (a crash forgets them or keeps them, never half): the
        commit does not wait for the disk. Both databases log in order, so the
        next durable commit makes every earlier one durable with it.
        """
        options = {_WRITE_OPTION: True, _LAZY_OPTION: not durable}
        with _translate_errors(), self._writes.connect().execution_options(**options) as conn:
            with conn.begin():
                if not durable and not self.is_sqlite:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                yield conn
            if self._checkpointer is not None:
                self._checkpointer.committed()
            if self.is_sqlite and conn.info.get(BULK_BYTES_KEY, 0) >= _BULK_SHRINK_BYTES:
                # Committed: drop the page cache that content bytes filled.
                # Straight to the driver: no transaction (SQLAlchemy's autobegin
                # would take the write lock for it).
                conn.info[BULK_BYTES_KEY] = 0
                driver = conn.connection.driver_connection
                assert isinstance(driver, sqlite3.Connection)
                driver.execute("PRAGMA shrink_memory").close()

    def ping(self) -> None:
        with self.read() as conn:
            conn.execute(sa.text("SELECT 1"))

    def first_nowait(
        self, statement: sa.Select[Any], params: dict[str, Any]
    ) -> tuple[Any, ...] | None:
        """The first row of one SELECT (one statement: one snapshot), typed as
        `conn.execute(statement, params).first()` would type it, for an event
        loop thread: WouldBlock at once instead of any wait. The download hot
        path's one statement costs less this way than the hop to a worker
        thread, and far less without SQLAlchemy's per-execution machinery
        (goal 4): the statement is compiled once, then run on a connection of
        its own with the driver alone.

        SQLite on a file only (`reads_nowait`): a WAL reader does not wait for
        writers, and this connection has no busy timeout and no pool, so what
        would make it wait (a lock held by a checkpoint restarting the log,
        another thread using it) is WouldBlock. PostgreSQL is always
        WouldBlock: a round trip can take any time. Any database error is
        WouldBlock too (and the connection is made again next time): `read()`
        then gives its usual answer.
        """
        if not self.reads_nowait or not self._nowait_lock.acquire(blocking=False):
            raise WouldBlock
        try:
            plan = self._nowait_plans.get(id(statement))
            if plan is None or plan.statement is not statement:
                plan = self._nowait_plans[id(statement)] = _Plan(statement, self.engine)
            conn = self._nowait_conn or self._connect_nowait()
            try:
                cursor = conn.execute(plan.select.sql, plan.select.args(params))
                try:
                    row = cursor.fetchone()
                finally:
                    cursor.close()  # ends the statement and its read snapshot
            except sqlite3.Error as exc:
                self._close_nowait()
                raise WouldBlock from exc
        finally:
            self._nowait_lock.release()
        return None if row is None else plan.typed(row)

    def _connect_nowait(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                _file_path(self.url), timeout=0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise WouldBlock from exc
        self._nowait_conn = conn
        return conn

    def _close_nowait(self) -> None:
        conn, self._nowait_conn = self._nowait_conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()
        if self._writes is not self.engine:
            self._writes.dispose()
        with self._nowait_lock:
            self._close_nowait()


def _file_path(url: str) -> str:
    path = sa.engine.make_url(url).database
    assert path is not None
    return path


def _plain_file(url: str) -> bool:
    """An SQLite URL naming a database file, without options (not `:memory:`)."""
    parsed = sa.engine.make_url(url)
    return bool(parsed.database) and parsed.database != ":memory:" and not parsed.query


class _Plan:
    """A SELECT compiled once for first_nowait (bulk.CompiledSelect, in
    pysqlite's positional style) and how each column is read, as SQLAlchemy
    does for the engine."""

    def __init__(self, statement: sa.Select[Any], engine: Engine) -> None:
        dialect = engine.dialect
        self.select = CompiledSelect(statement, dialect)
        if self.select.positional is None:
            raise WouldBlock  # not a positional dialect
        self.statement = statement  # kept: the plans are found by its id
        self._columns = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns
        ]

    def typed(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            value if read is None else read(value)
            for read, value in zip(self._columns, row, strict=True)
        )


@contextlib.contextmanager
def savepoint(tx: Connection) -> Iterator[None]:
    """Make a block atomic on its own inside a larger transaction."""
    with tx.begin_nested():
        yield


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except sa.exc.OperationalError as exc:
        if _disk_full(exc.orig):
            # Small content is stored in the database: a full disk there is
            # the same 507 as a full content folder.
            raise InsufficientStorage("the server's database storage is full") from exc
        # Connection refused, server restarting, SQLite busy past its timeout,
        # an I/O error: all are "try again shortly", never a 500.
        raise Unavailable("the database is unavailable, try again shortly") from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable("the database connection was lost, try again") from exc
        raise


# SQLITE_FULL (its primary result code), PostgreSQL's disk_full (SQLSTATE 53100).
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"


def _disk_full(error: BaseException | None) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
        return True
    return getattr(error, "sqlstate", None) == _PG_DISK_FULL


def _install_sqlite_hooks(engine: Engine, *, cache_kib: int | None = None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, record: Any) -> None:
        # Take transaction control away from the sqlite3 module (see module doc).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if cache_kib is not None:
            cur.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
            cur.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
            cur.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT_BYTES}")
        # FULL: a commit that acknowledges user data survives power loss too.
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()
        record.info[_SYNC_LEVEL] = "FULL"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(_WRITE_OPTION):
            # Chosen for every write, so a lazy one never leaves its level on
            # the pooled connection. In WAL mode NORMAL skips the log's sync at
            # commit; the next FULL commit syncs the log, earlier commits too.
            level = "NORMAL" if options.get(_LAZY_OPTION) else "FULL"
            record = conn.connection
            if record.info.get(_SYNC_LEVEL) != level:
                record.info.pop(_SYNC_LEVEL, None)
                conn.exec_driver_sql(f"PRAGMA synchronous={level}")
                record.info[_SYNC_LEVEL] = level
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
