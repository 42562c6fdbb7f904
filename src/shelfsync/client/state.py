"""The folder's local state, `FOLDER/.shelfsync/state.db` (SQLite, stdlib sqlite3).

Three trees, as the reconcile step sees them (plan.py):
- `synced`: per library path, the item id, revision and content hash last
  synced, and the file's on-disk name, size, mtime and inode at that moment;
- `local_files`: the last scan's stat and content hash per path, so the next
  scan hashes only what changed (size, mtime or inode differ);
- `remote`: the server's live items as the change feed told them, with the feed
  cursor in `meta` (stored in the same transaction, so they never disagree).
Plus the unfinished upload sessions, partial downloads, and conflicts reported.
WAL and `synchronous=FULL`: a record says "synced" only once it is durable.
"""

from __future__ import annotations

import contextlib
import fcntl
import operator
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from shelfsync.client.errors import ConfigError

__all__ = [
    "STATE_DIR",
    "ConflictRecord",
    "LocalRecord",
    "PartialDownload",
    "PendingUpload",
    "RemoteRecord",
    "State",
    "SyncedRecord",
]

STATE_DIR = ".shelfsync"
_SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS synced (
    path TEXT PRIMARY KEY, local TEXT NOT NULL, item_id TEXT NOT NULL,
    revision INTEGER NOT NULL, content_hash TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS local_files (
    path TEXT PRIMARY KEY, local TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, content_hash TEXT NOT NULL,
    checked_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS remote (
    item_id TEXT PRIMARY KEY, path TEXT NOT NULL UNIQUE, revision INTEGER NOT NULL,
    content_hash TEXT NOT NULL, size INTEGER NOT NULL, mtime TEXT);
CREATE TABLE IF NOT EXISTS conflicts (
    path TEXT PRIMARY KEY, conflict_id TEXT NOT NULL, local_hash TEXT,
    resolved INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    path TEXT NOT NULL, content_hash TEXT NOT NULL, session_id TEXT NOT NULL,
    size INTEGER NOT NULL, PRIMARY KEY (path, content_hash));
CREATE TABLE IF NOT EXISTS downloads (
    temp TEXT PRIMARY KEY, path TEXT NOT NULL, content_hash TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class SyncedRecord:
    path: str
    local: str  # the on-disk relative name (may differ: NFD names, case suffixes)
    item_id: str
    revision: int
    content_hash: str
    size: int
    mtime_ns: int
    inode: int


@dataclass(frozen=True, slots=True)
class LocalRecord:
    path: str
    local: str
    size: int
    mtime_ns: int
    inode: int
    content_hash: str
    checked_ns: int  # when the hash was computed (racy-mtime check, as git does)


@dataclass(frozen=True, slots=True)
class RemoteRecord:
    item_id: str
    path: str
    revision: int
    content_hash: str
    size: int
    mtime: str | None


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    path: str
    conflict_id: str
    local_hash: str | None  # the local version reported; None: a local delete
    resolved: bool


@dataclass(frozen=True, slots=True)
class PendingUpload:
    path: str
    content_hash: str
    session_id: str
    size: int


@dataclass(frozen=True, slots=True)
class PartialDownload:
    temp: str
    path: str
    content_hash: str


# A record's row, columns in table order.
_synced_row = operator.attrgetter(
    "path", "local", "item_id", "revision", "content_hash", "size", "mtime_ns", "inode"
)
_local_row = operator.attrgetter(
    "path", "local", "size", "mtime_ns", "inode", "content_hash", "checked_ns"
)
_remote_row = operator.attrgetter("item_id", "path", "revision", "content_hash", "size", "mtime")
_SYNCED_REPLACE = "INSERT OR REPLACE INTO synced VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_LOCAL_REPLACE = "INSERT OR REPLACE INTO local_files VALUES (?, ?, ?, ?, ?, ?, ?)"
# REPLACE also drops another item's row at the same path (path is UNIQUE).
_REMOTE_REPLACE = "INSERT OR REPLACE INTO remote VALUES (?, ?, ?, ?, ?, ?)"


class State:
    """One connection, shared by the transfer threads under a lock.

    The `synced` and `local_files` trees are also kept in memory once read:
    a watching client runs a pass per burst of changes, and reading 10,000 rows
    of each back into records every pass cost more CPU than the pass's own work.
    Only this object writes them (the folder lock keeps other processes out),
    each write updates the copy after its statement succeeded, and a rolled
    back transaction drops the copies (the next read loads them again).
    """

    def __init__(self, folder: Path) -> None:
        self.directory = folder / STATE_DIR
        self.directory.mkdir(exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.directory / "state.db", check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the local state in {self.directory}: {exc}") from exc
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._synced: dict[str, SyncedRecord] | None = None
        self._local: dict[str, LocalRecord] | None = None
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        version = self.get_meta("schema")
        if version is None:
            self.set_meta("schema", _SCHEMA_VERSION)
        elif version != _SCHEMA_VERSION:
            raise ConfigError(f"{self.directory} was written by another client version")

    def lock_folder(self) -> None:
        """Hold the folder for this process: two clients syncing one folder would race.

        An advisory `flock` on `.shelfsync/lock`, released by the kernel when the
        process ends, however it ends (a `kill -9` leaves no stale lock behind).
        """
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise ConfigError(
                f"another shelfsync is syncing {self.directory.parent} right now"
            ) from exc
        self._lock_fd = fd

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._db.in_transaction:
                yield  # nested: the outer transaction commits
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._synced = self._local = None  # may hold what was rolled back
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, params: Iterable[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def _run(self, sql: str, params: Iterable[object] = ()) -> None:
        with self._lock:
            self._db.execute(sql, tuple(params))

    # -- meta ---------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._all("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._run("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._run("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def cursor(self) -> str | None:
        return self.get_meta("cursor")

    def bind(self, *, server_url: str, device_id: str) -> bool:
        """Tie the folder to this device; True when it was another's (or none).

        A folder synced as another device (or against another server) keeps its
        files but forgets what it knew: ids and cursors are only meaningful to
        the library they came from. The next pass reconciles by content, which
        never loses a local file (a difference becomes a conflict copy).
        """
        bound = (self.get_meta("server_url"), self.get_meta("device_id"))
        if bound == (server_url, device_id):
            return False
        with self.transaction():
            if bound != (None, None):
                for table in ("synced", "remote", "conflicts", "uploads"):
                    self._run(f"DELETE FROM {table}")  # noqa: S608 (fixed table names)
                self._synced = {}
                self.set_meta("cursor", None)
            self.set_meta("server_url", server_url)
            self.set_meta("device_id", device_id)
        return True

    # -- synced -------------------------------------------------------------

    def synced(self) -> dict[str, SyncedRecord]:
        """A copy the caller may change (the records themselves are frozen)."""
        with self._lock:
            return dict(self._synced_tree())

    def _synced_tree(self) -> dict[str, SyncedRecord]:
        if self._synced is None:
            rows = self._db.execute("SELECT * FROM synced").fetchall()
            self._synced = {str(r[0]): SyncedRecord(*r) for r in rows}
        return self._synced

    def put_synced(self, record: SyncedRecord) -> None:
        with self._lock:
            tree = self._synced_tree()
            self._run(_SYNCED_REPLACE, _synced_row(record))
            tree[record.path] = record

    def put_landed(self, pairs: Iterable[tuple[SyncedRecord, LocalRecord]]) -> None:
        """Many files' synced and scan records at once (one statement each kind)."""
        pairs = list(pairs)
        with self.transaction():
            local = self._local_tree()
            self._put_synced_with(pairs, _LOCAL_REPLACE, [_local_row(r) for _, r in pairs])
            local.update((r.path, r) for _, r in pairs)

    def put_pushed(self, pairs: Iterable[tuple[SyncedRecord, RemoteRecord]]) -> None:
        """Many uploaded files' synced and remote records at once, in order (as
        put_synced then put_remote for each: REPLACE also drops another item's
        row at the same path, path being UNIQUE)."""
        pairs = list(pairs)
        self._put_synced_with(pairs, _REMOTE_REPLACE, [_remote_row(r) for _, r in pairs])

    def _put_synced_with(
        self,
        pairs: Sequence[tuple[SyncedRecord, object]],
        statement: str,
        rows: Sequence[tuple[object, ...]],
    ) -> None:
        """The pairs' synced records and `rows` by `statement`, in one transaction."""
        if not pairs:
            return
        with self.transaction():
            tree = self._synced_tree()
            self._db.executemany(_SYNCED_REPLACE, [_synced_row(s) for s, _ in pairs])
            self._db.executemany(statement, rows)
            tree.update((s.path, s) for s, _ in pairs)

    def forget_synced(self, path: str) -> None:
        with self._lock:
            tree = self._synced_tree()
            self._run("DELETE FROM synced WHERE path = ?", (path,))
            tree.pop(path, None)

    # -- local files (the scan cache) --------------------------------------

    def local_files(self) -> dict[str, LocalRecord]:
        """A copy the caller may change (the records themselves are frozen)."""
        with self._lock:
            return dict(self._local_tree())

    def _local_tree(self) -> dict[str, LocalRecord]:
        if self._local is None:
            rows = self._db.execute("SELECT * FROM local_files").fetchall()
            self._local = {str(r[0]): LocalRecord(*r) for r in rows}
        return self._local

    def replace_local_files(self, records: Iterable[LocalRecord]) -> None:
        """The scan's records become the table; only rows that differ are written
        (a pass over an unchanged folder of 10,000 files writes none)."""
        new = {r.path: r for r in records}
        with self.transaction():
            old = self._local_tree()
            gone = [(path,) for path in old.keys() - new.keys()]
            changed = [_local_row(r) for path, r in new.items() if old.get(path) != r]
            self._db.executemany("DELETE FROM local_files WHERE path = ?", gone)
            self._db.executemany(_LOCAL_REPLACE, changed)
            self._local = new

    def put_local_file(self, record: LocalRecord) -> None:
        with self._lock:
            tree = self._local_tree()
            self._run(_LOCAL_REPLACE, _local_row(record))
            tree[record.path] = record

    def forget_local_file(self, path: str) -> None:
        with self._lock:
            tree = self._local_tree()
            self._run("DELETE FROM local_files WHERE path = ?", (path,))
            tree.pop(path, None)

    # -- remote tree and cursor --------------------------------------------

    def remote(self) -> dict[str, RemoteRecord]:
        """Live remote items by path."""
        rows = self._all("SELECT * FROM remote")
        return {str(r[1]): RemoteRecord(*r) for r in rows}  # type: ignore[arg-type]

    def apply_remote(
        self,
        *,
        upserts: Iterable[RemoteRecord],
        deleted_ids: Iterable[str],
        cursor: str | None,
        reset: bool = False,
    ) -> None:
        """Feed entries in order; the cursor moves in the same transaction."""
        with self.transaction():
            if reset:
                self._run("DELETE FROM remote")
            self._db.executemany(
                "DELETE FROM remote WHERE item_id = ?", [(item_id,) for item_id in deleted_ids]
            )
            # In feed order, as put_remote would: REPLACE drops the row holding
            # the item's id and the row holding its path (path is UNIQUE).
            self._db.executemany(_REMOTE_REPLACE, [_remote_row(r) for r in upserts])
            if cursor is not None:
                self.set_meta("cursor", cursor)

    def put_remote(self, record: RemoteRecord) -> None:
        with self.transaction():
            # The coalesced feed may name an item's new path before the entry
            # that moves the old holder away; that later entry restores it.
            self._run(
                "DELETE FROM remote WHERE path = ? AND item_id != ?", (record.path, record.item_id)
            )
            self._run(_REMOTE_REPLACE, _remote_row(record))

    def remote_revision(self, item_id: str) -> int | None:
        rows = self._all("SELECT revision FROM remote WHERE item_id = ?", (item_id,))
        return int(rows[0][0]) if rows else None  # type: ignore[call-overload]

    def forget_remote(self, item_id: str) -> None:
        self._run("DELETE FROM remote WHERE item_id = ?", (item_id,))

    # -- conflicts ----------------------------------------------------------

    def conflicts(self) -> dict[str, ConflictRecord]:
        rows = self._all("SELECT path, conflict_id, local_hash, resolved FROM conflicts")
        return {
            str(r[0]): ConflictRecord(str(r[0]), str(r[1]), r[2], bool(r[3]))  # type: ignore[arg-type]
            for r in rows
        }

    def put_conflict(self, record: ConflictRecord) -> None:
        self._run(
            "INSERT OR REPLACE INTO conflicts VALUES (?, ?, ?, ?)",
            (record.path, record.conflict_id, record.local_hash, int(record.resolved)),
        )

    def forget_conflict(self, path: str) -> None:
        self._run("DELETE FROM conflicts WHERE path = ?", (path,))

    # -- unfinished transfers ----------------------------------------------

    def pending_upload(self, *, path: str, content_hash: str) -> PendingUpload | None:
        rows = self._all(
            "SELECT path, content_hash, session_id, size FROM uploads "
            "WHERE path = ? AND content_hash = ?",
            (path, content_hash),
        )
        return PendingUpload(*rows[0]) if rows else None  # type: ignore[arg-type]

    def pending_uploads(self) -> list[PendingUpload]:
        rows = self._all("SELECT path, content_hash, session_id, size FROM uploads")
        return [PendingUpload(*r) for r in rows]  # type: ignore[arg-type]

    def put_upload(self, record: PendingUpload) -> None:
        self._run(
            "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?)",
            (record.path, record.content_hash, record.session_id, record.size),
        )

    def forget_upload(self, *, path: str, content_hash: str) -> None:
        self._run("DELETE FROM uploads WHERE path = ? AND content_hash = ?", (path, content_hash))

    def partial_downloads(self) -> list[PartialDownload]:
        rows = self._all("SELECT temp, path, content_hash FROM downloads")
        return [PartialDownload(*r) for r in rows]  # type: ignore[arg-type]

    def has_partial_download(self, temp: str) -> bool:
        return bool(self._all("SELECT 1 FROM downloads WHERE temp = ?", (temp,)))

    def put_download(self, record: PartialDownload) -> None:
        self._run(
            "INSERT OR REPLACE INTO downloads VALUES (?, ?, ?)",
            (record.temp, record.path, record.content_hash),
        )

    def forget_download(self, temp: str) -> None:
        self._run("DELETE FROM downloads WHERE temp = ?", (temp,))
