"""Retention: the server forgets what it no longer owes anyone (protocol sections 4, 6).

- Tombstones go once older than the retention period *and* acknowledged by
  every device seen within it; a device not seen for longer holds nothing back.
  The highest purged seq is remembered so older cursors get 410.
- History (replaced revisions) goes once replaced longer ago than the period.
- Resolved conflicts go once resolved longer ago than the period.

Every server process runs this on its timer; an advisory lock (storage/job_locks.py)
lets one run at a time, and a process that finds it taken skips its turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shelfsync.server.domain.clock import utcnow
from shelfsync.server.storage.conflicts import ConflictRepository
from shelfsync.server.storage.devices import DeviceRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.items import ItemRepository, LibraryCounters
from shelfsync.server.storage.job_locks import Job, exclusive_job

__all__ = ["RetentionReport", "RetentionService"]

_BATCH = 5000


@dataclass(frozen=True, slots=True)
class RetentionReport:
    tombstones: int = 0
    revisions: int = 0
    conflicts: int = 0


class RetentionService:
    def __init__(self, *, db: Database, retention: timedelta) -> None:
        self._db = db
        self.retention = retention

    def run_once(self, now: datetime | None = None) -> RetentionReport:
        """One purge of every library; nothing when another runner holds the job."""
        with exclusive_job(self._db, Job.RETENTION) as mine:
            return self._run(now) if mine else RetentionReport()

    def _run(self, now: datetime | None) -> RetentionReport:
        now = now or utcnow()
        cutoff = now - self.retention
        with self._db.read() as tx:
            users = ItemRepository(tx).users_with_items()
        totals = RetentionReport()
        for user_id in users:
            report = self._purge_library(user_id, cutoff)
            totals = RetentionReport(
                totals.tombstones + report.tombstones,
                totals.revisions + report.revisions,
                totals.conflicts + report.conflicts,
            )
        return totals

    def _purge_library(self, user_id: str, cutoff: datetime) -> RetentionReport:
        tombstones = 0
        while True:
            with self._db.write() as tx:
                counters = LibraryCounters(tx)
                counters.lock(user_id)
                holders = DeviceRepository(tx).holders(user_id, seen_since=cutoff)
                items = ItemRepository(tx)
                batch = items.purgeable_tombstones(
                    user_id,
                    deleted_before=cutoff,
                    max_seq=min(holders) if holders else None,
                    limit=_BATCH,
                )
                if batch:
                    items.delete_items([item_id for item_id, _ in batch])
                    counters.raise_purged(user_id, max(seq for _, seq in batch))
                    tombstones += len(batch)
            if len(batch) < _BATCH:
                break
        with self._db.write() as tx:
            LibraryCounters(tx).lock(user_id)
            revisions = ItemRepository(tx).purge_old_revisions(user_id, replaced_before=cutoff)
            conflicts = ConflictRepository(tx).purge_resolved(user_id, resolved_before=cutoff)
        return RetentionReport(tombstones, revisions, conflicts)
