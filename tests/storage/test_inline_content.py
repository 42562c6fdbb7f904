"""Content stored in the database (`content_data`), on SQLite and PostgreSQL:
written with its record, read back byte for byte (one content, many, or just
which are inline), dropped with its record; and a full database disk is a 507.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from shelfsync.content_hash import hash_bytes
from shelfsync.server.domain.errors import InsufficientStorage, Unavailable
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import BULK_BYTES_KEY, Database, _translate_errors

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _record(db: Database, data: dict[str, bytes]) -> None:
    with db.write() as tx:
        contents = ContentRepository(tx)
        contents.add_many(user_id="u1", sizes={h: len(d) for h, d in data.items()}, now=T0)
        contents.add_data_many(data)


@pytest.fixture
def user(db: Database) -> str:
    with db.write() as tx:
        tx.exec_driver_sql(
            "INSERT INTO users (id, username, password_hash, generation, created_at) "
            "VALUES ('u1', 'alice', 'x', 1, '2026-11-30 12:00:00')"
        )
    return "u1"


def test_inline_content_reads_back_byte_for_byte(db: Database, user: str) -> None:
    rng = random.Random(1)
    # Every byte value, an all-zero run, incompressible and compressible data.
    blobs = [bytes(range(256)), b"\x00" * 70_000, rng.randbytes(65_536), b"text " * 10_000]
    data = {hash_bytes(b): b for b in blobs}
    _record(db, data)
    with db.read() as tx:
        contents = ContentRepository(tx)
        assert contents.inline_data(set(data)) == data
        assert contents.inline_hashes([*data, "f" * 64]) == set(data)
        for content_hash, blob in data.items():
            assert contents.inline_one(content_hash) == blob
        assert contents.inline_one("f" * 64) is None
        assert contents.used_bytes(user) == sum(len(b) for b in blobs)


def test_storing_inline_content_again_keeps_the_first_copy(db: Database, user: str) -> None:
    blob = b"once"
    _record(db, {hash_bytes(blob): blob})
    _record(db, {hash_bytes(blob): blob})
    with db.write() as tx:
        ContentRepository(tx).add_data(hash_bytes(blob), blob)
    with db.read() as tx:
        assert tx.exec_driver_sql("SELECT count(*) FROM content_data").scalar_one() == 1
        assert ContentRepository(tx).inline_one(hash_bytes(blob)) == blob


def test_many_reads_are_grouped(db: Database, user: str) -> None:
    data = {hash_bytes(str(i).encode()): str(i).encode() for i in range(1200)}
    _record(db, data)
    with db.read() as tx:
        assert ContentRepository(tx).inline_data(set(data)) == data


def test_inline_content_goes_with_its_record(db: Database, user: str) -> None:
    gone, kept = b"gone", b"kept"
    _record(db, {hash_bytes(gone): gone, hash_bytes(kept): kept})
    with db.write() as tx:
        ContentRepository(tx).remove(hash_bytes(gone))
    with db.read() as tx:
        contents = ContentRepository(tx)
        assert contents.inline_hashes({hash_bytes(gone), hash_bytes(kept)}) == {hash_bytes(kept)}
        assert not contents.exists(hash_bytes(gone))


def test_inline_content_needs_its_record(db: Database, user: str) -> None:
    with pytest.raises(sa.exc.IntegrityError), db.write() as tx:
        ContentRepository(tx).add_data("e" * 64, b"orphan")


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _sqlite_error(code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("orig", "expected"),
    [
        (_sqlite_error(13), InsufficientStorage),  # SQLITE_FULL
        (_PgError("53100"), InsufficientStorage),  # disk_full
        (_sqlite_error(10), Unavailable),  # SQLITE_IOERR
        (_sqlite_error(5), Unavailable),  # SQLITE_BUSY
        (_PgError("58030"), Unavailable),  # io_error
        (_PgError("57P01"), Unavailable),  # admin_shutdown
    ],
    ids=["sqlite-full", "pg-disk-full", "sqlite-ioerr", "sqlite-busy", "pg-io", "pg-shutdown"],
)
def test_a_full_database_disk_is_507_other_failures_503(
    orig: Exception, expected: type[Exception]
) -> None:
    with pytest.raises(expected), _translate_errors():
        raise sa.exc.OperationalError("INSERT", {}, orig)


def test_sqlite_empties_a_write_cache_that_inline_content_filled(db: Database, user: str) -> None:
    """Pages of stored content are not kept in the (large) page cache of the
    write connection: past 8 MiB written through it, it is emptied after the commit."""
    if not db.is_sqlite:
        pytest.skip("SQLite's page cache")
    rng = random.Random(2)

    def written() -> int:
        with db.write() as tx:
            count: int = tx.info.get(BULK_BYTES_KEY, 0)
        return count

    first = {hash_bytes(b): b for b in (rng.randbytes(65_536) for _ in range(96))}  # 6 MiB
    _record(db, first)
    assert written() == 6 * 1024 * 1024
    second = {hash_bytes(b): b for b in (rng.randbytes(65_536) for _ in range(48))}  # 3 MiB
    _record(db, second)
    assert written() == 0  # emptied after that commit
    with db.read() as tx:
        assert ContentRepository(tx).inline_data(set(first) | set(second)) == first | second
