"""The write path's connections (issue 7, report ingest).

SQLite: writes keep one connection, with a page cache big enough for a report
batch, and concurrent writers still each get a connection (they then wait for
SQLite's write lock, as before). PostgreSQL: bulk inserts go in COPY's binary
format when psycopg knows every column's type, in its text format otherwise.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from shelfsync.server.storage import bulk
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.tables import items, revisions

# Never connects: only its dialect is used.
_PG = sa.create_engine("postgresql+psycopg://")


def _cache_size(tx: sa.Connection) -> int:
    return _pragma(tx, "cache_size")


def _pragma(tx: sa.Connection, name: str) -> int:
    return int(tx.exec_driver_sql(f"PRAGMA {name}").scalar_one())


def test_sqlite_writes_keep_one_connection_with_a_big_cache(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite only")
    seen = set()
    for _ in range(3):
        with db.write() as tx:
            seen.add(id(tx.connection.dbapi_connection))
            assert _cache_size(tx) <= -32 * 1024  # KiB, at least 32 MiB
            # Several report batches (about 3,300 pages each) between checkpoints.
            assert _pragma(tx, "wal_autocheckpoint") >= 4 * 3300
            assert _pragma(tx, "journal_size_limit") > 0
    assert len(seen) == 1
    with db.read() as conn:
        assert id(conn.connection.dbapi_connection) not in seen
        assert _cache_size(conn) > -32 * 1024  # readers keep SQLite's default


def test_sqlite_concurrent_writers_each_commit(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite only")
    with db.write() as tx:
        tx.exec_driver_sql("CREATE TABLE probe (n INTEGER)")
    inside, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with db.write() as tx:
                tx.exec_driver_sql("INSERT INTO probe VALUES (1)")
                inside.set()
                release.wait(10)
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=slow_writer)
    first.start()
    assert inside.wait(10)
    # The kept connection is busy: this writer gets another one and waits for
    # SQLite's write lock (busy_timeout) until the first commits.
    second = threading.Thread(target=lambda: _insert(db, 2))
    second.start()
    release.set()
    first.join(10)
    second.join(30)
    assert not errors
    with db.read() as conn:
        assert sorted(conn.exec_driver_sql("SELECT n FROM probe").scalars()) == [1, 2]


def _insert(db: Database, n: int) -> None:
    with db.write() as tx:
        tx.exec_driver_sql(f"INSERT INTO probe VALUES ({n})")


def test_copy_types_name_every_item_and_revision_column() -> None:
    dialect = _PG.dialect
    for table in (items, revisions):
        columns = tuple(c.name for c in table.columns)
        types = bulk._copy_types(dialect, table, columns)
        assert types is not None
        assert len(types) == len(columns)
    assert bulk._copy_types(dialect, items, ("id", "revision", "size", "metadata")) == [
        "varchar",
        "int4",
        "int8",
        "json",
    ]


def test_copy_types_fall_back_to_text_for_a_type_psycopg_lacks() -> None:
    mood = postgresql.ENUM("calm", "busy", name="shelfsync_test_mood")  # a type of one's own
    odd = sa.Table("odd", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column("v", mood))
    assert bulk._copy_types(_PG.dialect, odd, ("id", "v")) is None
