"""read_access_nowait (Database.first_nowait): the download lane's statement on
the event loop must answer exactly what read_access answers through
SQLAlchemy, and must never wait: PostgreSQL, a locked SQLite, or its
connection in use elsewhere is WouldBlock at once."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from shelfsync.server.domain.accounts import Device, DeviceType, User
from shelfsync.server.services.library_writer import LibraryWriter
from shelfsync.server.storage.access import read_access, read_access_nowait
from shelfsync.server.storage.devices import DeviceRepository
from shelfsync.server.storage.engine import Database, WouldBlock
from shelfsync.server.storage.tables import devices
from shelfsync.server.storage.users import UserRepository

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _user(db: Database, name: str) -> User:
    with db.write() as tx:
        return UserRepository(tx).add(
            user_id=str(uuid.uuid4()), username=name, password_hash="hash", now=T0
        )


def _device(db: Database, user: User, *, seen: datetime | None, enabled: bool = True) -> str:
    device = Device(
        id=str(uuid.uuid4()),
        user_id=user.id,
        name="pc",
        device_type=DeviceType.DESKTOP,
        os=None,
        client_version=None,
        enabled=enabled,
        token_generation=3,
        created_at=T0,
        last_seen_at=seen,
        last_sync_at=None,
        acked_seq=None,
    )
    with db.write() as tx:
        DeviceRepository(tx).add(device, token_hash=uuid.uuid4().hex)
    return device.id


def _library(db: Database, user: User) -> None:
    with db.write() as tx:
        writer = LibraryWriter(tx, user_id=user.id, now=T0)
        writer.upsert(
            existing=None,
            path="a/b.txt",
            content_hash="a" * 64,
            size=123_456,
            mtime=T0 - timedelta(days=2),
            metadata={"mode": 420, "x": [1, "y"]},
            device_id=None,
        )
        gone = writer.upsert(
            existing=None,
            path="gone.txt",
            content_hash="b" * 64,
            size=7,
            mtime=None,
            metadata={},
            device_id=None,
        )
        writer.delete(gone, device_id=None)
        writer.finish()


def test_the_same_answer_as_read_access(db: Database) -> None:
    if not db.reads_nowait:
        pytest.skip("PostgreSQL: see test_postgresql_never_reads_on_the_loop")
    alice, bob = _user(db, "alice"), _user(db, "bob")
    seen = _device(db, alice, seen=T0)
    unseen = _device(db, alice, seen=None, enabled=False)
    theirs = _device(db, bob, seen=T0)
    removed = _device(db, alice, seen=T0)
    with db.write() as tx:
        tx.execute(devices.update().where(devices.c.id == removed).values(deleted_at=T0))
    _library(db, alice)
    users = [alice.id, bob.id, "no-such-user"]
    device_ids = [None, seen, unseen, theirs, removed, "no-such-device"]
    paths = [None, "a/b.txt", "gone.txt", "missing.txt"]
    answers = 0
    for user_id in users:
        for device_id in device_ids:
            for path in paths:
                with db.read() as conn:
                    expected = read_access(conn, user_id=user_id, device_id=device_id, path=path)
                got = read_access_nowait(db, user_id=user_id, device_id=device_id, path=path)
                assert got == expected, (user_id, device_id, path)
                answers += got.item is not None
    assert answers == len(device_ids)  # alice's live a/b.txt, with every device asked


def test_postgresql_never_reads_on_the_loop(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite reads on the loop")
    alice = _user(db, "alice")
    assert not db.reads_nowait
    with pytest.raises(WouldBlock):
        read_access_nowait(db, user_id=alice.id, device_id=None, path=None)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_writer_does_not_make_it_wait(db: Database, database_url: str) -> None:
    alice = _user(db, "alice")
    before = read_access_nowait(db, user_id=alice.id, device_id=None, path=None)
    writer = sqlite3.connect(sa.engine.make_url(database_url).database or "", timeout=0)
    writer.isolation_level = None
    writer.execute("BEGIN IMMEDIATE")  # the write lock, held
    writer.execute("UPDATE users SET generation = generation + 1")
    try:
        start = time.monotonic()
        during = read_access_nowait(db, user_id=alice.id, device_id=None, path=None)
        assert time.monotonic() - start < 0.5
        assert during == before  # the committed state
        writer.execute("COMMIT")
    finally:
        writer.close()
    after = read_access_nowait(db, user_id=alice.id, device_id=None, path=None)
    assert after.user_generation == (before.user_generation or 0) + 1  # revocation seen at once


class _Locked:
    def execute(self, *args: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_locked_sqlite_is_would_block(db: Database) -> None:
    alice = _user(db, "alice")
    db._nowait_conn = _Locked()  # type: ignore[assignment]
    with pytest.raises(WouldBlock):
        read_access_nowait(db, user_id=alice.id, device_id=None, path=None)
    # The connection is made again for the next read.
    assert read_access_nowait(db, user_id=alice.id, device_id=None, path=None).user_generation


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_its_connection_in_use_is_would_block(db: Database) -> None:
    alice = _user(db, "alice")
    assert db._nowait_lock.acquire()
    try:
        with pytest.raises(WouldBlock):
            read_access_nowait(db, user_id=alice.id, device_id=None, path=None)
    finally:
        db._nowait_lock.release()
    done: list[bool] = []
    thread = threading.Thread(
        target=lambda: done.append(
            read_access_nowait(db, user_id=alice.id, device_id=None, path=None).user_generation
            is not None
        )
    )
    thread.start()
    thread.join()
    assert done == [True]
