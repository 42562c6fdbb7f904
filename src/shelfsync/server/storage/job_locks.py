"""One runner at a time for background jobs, across every server process.

Several `shelfsync serve` processes (or `--workers`) share one PostgreSQL
database, and each runs the maintenance loop. A job takes a session-level
advisory lock (`pg_try_advisory_lock`) on a connection it holds for the whole
run, because a job is many short transactions; a process that finds the lock
taken skips the run (the holder is doing the work). The lock is released at
the end, or by PostgreSQL itself when the holder's session dies with it.

On SQLite there is one server process; a per-database thread lock keeps two
threads of it (the maintenance loop, a start-up step) from overlapping.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import weakref
from collections.abc import Iterator

import sqlalchemy as sa

from shelfsync.server.domain.errors import Unavailable
from shelfsync.server.storage.engine import Database

__all__ = ["Job", "exclusive_job", "hold_for_transaction"]

# The first key of every shelfsync advisory lock ("shsy"), so that the locks
# never collide with another application's on the same database.
_NAMESPACE = 0x73687379


class Job(enum.IntEnum):
    """Background jobs that must never run twice at once."""

    # Tombstone, history and resolved-conflict purges (services/retention.py).
    RETENTION = 1
    # Expiring idle upload sessions and their files (services/uploads.py).
    UPLOAD_EXPIRY = 2
    # Content garbage collection and its crash recovery (services/content_gc.py).
    CONTENT_GC = 3
    # Schema migrations: processes starting at once upgrade one after the other.
    MIGRATIONS = 4


_local_locks: weakref.WeakKeyDictionary[Database, dict[Job, threading.Lock]] = (
    weakref.WeakKeyDictionary()
)
_local_guard = threading.Lock()


@contextlib.contextmanager
def exclusive_job(db: Database, job: Job) -> Iterator[bool]:
    """Yields True while this caller alone runs `job`; False when another runner
    (in this or another process) holds it: skip the run then."""
    if db.is_sqlite:
        with _local_guard:
            lock = _local_locks.setdefault(db, {}).setdefault(job, threading.Lock())
        acquired = lock.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()
        return
    try:
        conn = db.engine.connect()
    except sa.exc.DBAPIError as exc:
        raise Unavailable("the database is unavailable, try again shortly") from exc
    with conn:
        try:
            acquired = bool(
                conn.execute(
                    sa.select(sa.func.pg_try_advisory_lock(_NAMESPACE, int(job)))
                ).scalar_one()
            )
            # End the implicit transaction: the session lock outlives it, and the
            # connection must not sit "idle in transaction" for the whole job.
            conn.commit()
        except sa.exc.DBAPIError as exc:
            raise Unavailable("the database is unavailable, try again shortly") from exc
        try:
            yield acquired
        finally:
            if acquired:
                _unlock(conn, job)


def hold_for_transaction(conn: sa.Connection, job: Job) -> None:
    """Wait for `job`'s lock and hold it until the open transaction ends
    (PostgreSQL; SQLite's single writer needs nothing)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_NAMESPACE, int(job))))


def _unlock(conn: sa.Connection, job: Job) -> None:
    try:
        conn.execute(sa.select(sa.func.pg_advisory_unlock(_NAMESPACE, int(job))))
        conn.commit()
    except sa.exc.DBAPIError:
        # The session is gone, and its locks with it; never pool the connection.
        conn.invalidate()
