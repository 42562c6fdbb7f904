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
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from shelfsync.server.domain.errors import Unavailable

__all__ = ["Database", "Tx", "normalize_url", "savepoint"]

# What services hold while a transaction is open (they never touch SQL themselves).
Tx = Connection

_WRITE_OPTION = "shelfsync_write"
# A write whose loss in a power cut or crash is harmless (the next durable
# commit makes it durable with itself): its commit does not wait for the disk.
_LAZY_OPTION = "shelfsync_lazy"
_SYNC_LEVEL = "shelfsync_synchronous"  # a pooled SQLite connection's current level


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
        if self.is_sqlite:
            self.engine: Engine = sa.create_engine(
                self.url,
                echo=echo,
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args={"check_same_thread": False, "timeout": 30},
            )
            _install_sqlite_hooks(self.engine)
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
        with (
            _translate_errors(),
            self.engine.connect().execution_options(**options) as conn,
            conn.begin(),
        ):
            if not durable and not self.is_sqlite:
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield conn

    def ping(self) -> None:
        with self.read() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


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
        # Connection refused, server restarting, SQLite busy past its timeout:
        # all are "try again shortly", never a 500.
        raise Unavailable("the database is unavailable, try again shortly") from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable("the database connection was lost, try again") from exc
        raise


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, record: Any) -> None:
        # Take transaction control away from the sqlite3 module (see module doc).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
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
