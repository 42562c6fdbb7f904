"""Copying SQLite's write-ahead log into the database file off the request path.

By default SQLite checkpoints inside a commit: the connection whose commit
takes the log past `wal_autocheckpoint` pages copies the log into the file and
syncs it before its transaction returns. A report batch that happens to be that
commit answered in 300-600 ms instead of 90-140 ms at 1,000,000 items, and
every writer queued behind it (issue 7, goal 5). Here a thread of its own
copies the log after commits, with its own connection, in passive mode: it
never waits for and never blocks a reader or a writer, so the copying runs on
the other core while the next write transactions go on. The write connection
keeps its automatic checkpoint as a backstop, should this thread fall behind.

Durability does not change: a commit has already synced the log before this
thread sees it, and a checkpoint syncs the log before copying and the file
before recording what it copied, as SQLite always does.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading

__all__ = ["WalCheckpointer"]

log = logging.getLogger(__name__)


class WalCheckpointer:
    """A daemon thread running `PRAGMA wal_checkpoint(PASSIVE)` after commits.

    Commits made while a checkpoint runs are coalesced into one more pass.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def committed(self) -> None:
        """A write transaction committed: the log has pages to copy."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            # Not started yet, or this is a forked child, which has no threads.
            self._start()
        self._wake.set()

    def stop(self) -> None:
        """Finish the checkpoint under way, if any, and end the thread."""
        with self._start_lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join()

    def _start(self) -> None:
        with self._start_lock:
            thread = self._thread
            if (thread is None or not thread.is_alive()) and not self._stopping:
                thread = threading.Thread(
                    target=self._run, name="shelfsync-wal-checkpoint", daemon=True
                )
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    if conn is None:
                        # No busy wait: a passive checkpoint takes what it can
                        # get now; what is left goes with the next pass.
                        conn = sqlite3.connect(
                            self._path, isolation_level=None, timeout=0, check_same_thread=False
                        )
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
                except sqlite3.Error as exc:
                    # A database going away, or a lock held by a log restart:
                    # the next commit wakes this thread again, with a new
                    # connection.
                    log.debug("background checkpoint skipped: %s", exc)
                    _close(conn)
                    conn = None
        finally:
            _close(conn)


def _close(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
