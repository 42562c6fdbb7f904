"""SQLite's log is copied into the database file by a thread of its own, after
commits, instead of inside the commit that fills it (issue 7, report ingest)."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shelfsync.server.storage.engine import Database

_ROW_BYTES = 4000
_ROWS = 512  # about 2 MiB: far fewer pages than the write connection's automatic checkpoint


def _fill(db: Database) -> None:
    with db.write() as tx:
        tx.exec_driver_sql("CREATE TABLE probe (n INTEGER PRIMARY KEY, data BLOB)")
    with db.write() as tx:
        tx.exec_driver_sql(
            "INSERT INTO probe (data) SELECT randomblob(?) FROM "
            "(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
            "SELECT i FROM c)",
            (_ROW_BYTES, _ROWS),
        )


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "shelfsync-wal-checkpoint"]


def test_committed_pages_reach_the_database_file_without_a_checkpoint_in_the_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ckpt.db"
    db = Database(f"sqlite:///{path}")
    try:
        with db.write() as tx:
            # Only this thread may copy the log: none of the commits below fills
            # the write connection's automatic checkpoint.
            assert int(tx.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()) > 1000
        _fill(db)
        # Only a checkpoint writes the database file itself; the log holds the rows.
        assert _wait_for(lambda: path.stat().st_size >= _ROWS * _ROW_BYTES)
        with sqlite3.connect(path) as check:
            _busy, logged, copied = check.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert logged > 0
        assert copied == logged
    finally:
        db.dispose()


def test_dispose_ends_the_thread_and_a_database_without_writes_starts_none(
    tmp_path: Path,
) -> None:
    before = set(_checkpoint_threads())
    idle = Database(f"sqlite:///{tmp_path / 'idle.db'}")
    with idle.read() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert set(_checkpoint_threads()) == before
    idle.dispose()

    db = Database(f"sqlite:///{tmp_path / 'busy.db'}")
    _fill(db)
    started = set(_checkpoint_threads()) - before
    assert len(started) == 1
    db.dispose()
    (thread,) = started
    assert not thread.is_alive()


def test_the_thread_copies_later_commits_too(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ckpt.db"
    db = Database(f"sqlite:///{path}")
    try:
        _fill(db)
        assert _wait_for(lambda: path.stat().st_size >= _ROWS * _ROW_BYTES)
        size = path.stat().st_size
        with db.write() as tx:
            tx.exec_driver_sql(
                "INSERT INTO probe (data) SELECT randomblob(?) FROM probe", (_ROW_BYTES,)
            )
        assert _wait_for(lambda: path.stat().st_size >= size + _ROWS * _ROW_BYTES)
    finally:
        db.dispose()


def test_a_forked_child_gets_a_thread_of_its_own(tmp_path: Path) -> None:
    """A child forked after the thread started has no thread: its next commit
    starts one (the child's log is still copied)."""
    path = tmp_path / "ckpt.db"
    db = Database(f"sqlite:///{path}")
    try:
        _fill(db)  # the parent's thread is running now
        assert _wait_for(lambda: path.stat().st_size >= _ROWS * _ROW_BYTES)
        size = path.stat().st_size
        pid = os.fork()
        if pid == 0:  # the child: only os._exit leaves it
            code = 1
            try:
                with db.write() as tx:
                    tx.exec_driver_sql(
                        "INSERT INTO probe (data) SELECT randomblob(?) FROM probe", (_ROW_BYTES,)
                    )
                grown = _wait_for(lambda: path.stat().st_size >= size + _ROWS * _ROW_BYTES)
                code = 0 if grown and _checkpoint_threads() else 1
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child did not finish")
            time.sleep(0.05)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        db.dispose()
