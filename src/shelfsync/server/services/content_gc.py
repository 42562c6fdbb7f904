"""Garbage collection of stored content, safe against uploads running meanwhile.

Content goes once nothing references it: no retained revision (current item
states included), no conflict's client version, no live upload session. The
row is locked for update before the final check; writers that reference
content share-lock the same row (ContentRepository.size_for_user), so a change
about to use the content and its removal can never both succeed.

Removal order: inside the transaction, rename the file into trash/ and delete
the rows; after commit, unlink. A crash in between leaves a trash file that
`recover()` restores (row still there) or deletes (row gone): never a record
pointing at missing bytes. Content stored inline (small content, a
`content_data` row) has no file: its bytes are deleted with its rows, in the
same transaction, so a crash keeps both or neither.

Several server processes share the store: collection and recovery hold one
advisory lock (storage/job_locks.py), so a recovery never mistakes another
process's removal in flight for a crash's leftover, and two collections never
race. A collection first recovers (under the lock no removal is in flight, so
every trash file is a crash's), and a recovery that finds the lock taken skips:
the holder's next run does it.
"""

from __future__ import annotations

from datetime import timedelta

from shelfsync.server.domain.clock import utcnow
from shelfsync.server.storage.blobs import BlobStore
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.job_locks import Job, exclusive_job

__all__ = ["ContentCollector"]

_BATCH = 500


class ContentCollector:
    def __init__(self, *, db: Database, blobs: BlobStore, grace: timedelta) -> None:
        self._db = db
        self._blobs = blobs
        # Content younger than this is left alone (belt and braces: a writer
        # registers content and its reference in one transaction anyway).
        self.grace = grace

    def recover(self) -> int:
        """Finish or undo removals interrupted by a crash."""
        with exclusive_job(self._db, Job.CONTENT_GC) as mine:
            return self._recover() if mine else 0

    def _recover(self) -> int:
        fixed = 0
        for content_hash, path in self._blobs.trashed():
            with self._db.read() as tx:
                exists = ContentRepository(tx).exists(content_hash)
            if exists:
                self._blobs.restore(content_hash, path)
            else:
                self._blobs.empty_trash(path)
            fixed += 1
        return fixed

    def collect(self, *, grace: timedelta | None = None) -> int:
        """Remove unreferenced content older than the grace period; 0 when another
        runner holds the job."""
        with exclusive_job(self._db, Job.CONTENT_GC) as mine:
            if not mine:
                return 0
            self._recover()
            return self._collect(grace)

    def _collect(self, grace: timedelta | None) -> int:
        cutoff = utcnow() - (self.grace if grace is None else grace)
        with self._db.read() as tx:
            candidates = ContentRepository(tx).unreferenced(created_before=cutoff, limit=_BATCH)
        removed = 0
        for content_hash in candidates:
            trashed = None
            with self._db.write() as tx:
                contents = ContentRepository(tx)
                if not contents.lock_if_unreferenced(content_hash, created_before=cutoff):
                    continue
                trashed = self._blobs.trash(content_hash)
                contents.remove(content_hash)
            if trashed is not None:
                self._blobs.empty_trash(trashed)
            removed += 1
        return removed
