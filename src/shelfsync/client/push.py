"""Local changes to the server: reports in batches, uploads, and conflicts.

Reports go in batches of up to 1000 (moves, then deletes, then upserts), so
content the server already holds is never sent (`upload_required` names what is
missing). The missing content then goes up, many small files per request or
large ones in chunked sessions, while the next batch's report travels. A report
that conflicts leaves the local version on the server: when the conflict lacks
its bytes (`content_available: false`) they are uploaded with the same path and
base revision, and `complete` lands them as the conflict's client version (and
`keep_both` saves it beside). Each conflict is noted in the local state,
resolved or not, which is what lets plan.py replace the local file only once
the server holds its version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from shelfsync.client import plan as p
from shelfsync.client.batch_upload import BatchUploader, Landed
from shelfsync.client.errors import ApiError, ClientError, ServerUnreachable
from shelfsync.client.http import ApiClient
from shelfsync.client.progress import Reporter
from shelfsync.client.scan import LocalFile, ScanResult
from shelfsync.client.state import ConflictRecord, RemoteRecord, State, SyncedRecord
from shelfsync.client.upload import Uploader, UploadJob, mtime_datetime
from shelfsync.protocol.sync import LocalChange, ReportResult

__all__ = ["REPORT_BATCH", "Pusher", "RoundOutcome", "synced_record"]

REPORT_BATCH = 1000

Report = p.ReportMove | p.ReportDelete | p.ReportUpsert


@dataclass(slots=True)
class RoundOutcome:
    failed: dict[str, str] = field(default_factory=dict)  # path -> why
    changed_locally: int = 0
    reported: int = 0


@dataclass(frozen=True, slots=True)
class _Conflicted:
    path: str
    local_hash: str | None
    conflict_id: str
    upload: UploadJob | None  # the local version, should the server lack it


def synced_record(
    path: str, f: LocalFile, *, item_id: str, revision: int, content_hash: str
) -> SyncedRecord:
    return SyncedRecord(path, f.local, item_id, revision, content_hash, f.size, f.mtime_ns, f.inode)


class Pusher:
    def __init__(
        self,
        *,
        root: Path,
        api: ApiClient,
        state: State,
        uploader: Uploader,
        reporter: Reporter,
        file_pool: ThreadPoolExecutor,
        batch_uploader: BatchUploader | None = None,
    ) -> None:
        self._root = root
        self._api = api
        self._state = state
        self._uploader = uploader
        self._batch = batch_uploader
        self._reporter = reporter
        self._pool = file_pool
        # While _upload records a batch's results: what landed, to write at once.
        self._pending: list[tuple[SyncedRecord, RemoteRecord]] | None = None

    def push(
        self,
        actions: Sequence[p.Action],
        scan: ScanResult,
        synced: dict[str, SyncedRecord],
        out: RoundOutcome,
    ) -> None:
        reports: list[Report] = [a for a in actions if isinstance(a, p.ReportMove)]
        reports += [a for a in actions if isinstance(a, p.ReportDelete)]
        reports += [a for a in actions if isinstance(a, p.ReportUpsert)]
        if not reports:
            return
        remote_by_path = self._state.remote()
        conflicted: list[_Conflicted] = []
        # The same content at several paths travels once: the other paths are
        # reported again once it landed, and the server takes them from its store.
        sent: set[str] = set()
        again: list[Report] = []
        batches = [reports[i : i + REPORT_BATCH] for i in range(0, len(reports), REPORT_BATCH)]
        # The next batch's report travels while this batch's content goes up:
        # the server answers it while the uploads wait on the network and the
        # disk, instead of each round waiting for its report first. Reports
        # still reach the server one after another, in order; their results
        # are recorded here, one batch at a time, after the previous uploads.
        with ThreadPoolExecutor(1, thread_name_prefix="shelfsync-report") as ahead:
            pending = ahead.submit(self._send_report, batches[0], scan)
            for k, batch in enumerate(batches):
                results = pending.result()
                following = batches[k + 1] if k + 1 < len(batches) else None
                if following is not None:
                    pending = ahead.submit(self._send_report, following, scan)
                found, uploads = self._record_report(
                    batch, results, scan, synced, remote_by_path, out
                )
                conflicted += found
                fresh: list[UploadJob] = []
                for job in uploads:
                    # Content the previous batch sent (or is sending) is
                    # reported again once it landed: it travels once.
                    if job.content_hash in sent:
                        again.append(p.ReportUpsert(job.path, job.content_hash, job.base_revision))
                    else:
                        sent.add(job.content_hash)
                        fresh.append(job)
                try:
                    conflicted += self._upload(fresh, scan, out)
                except BaseException:
                    if following is not None:
                        # The server may have applied part of the report sent
                        # ahead: record that before giving up, as a round does.
                        self._record_if_answered(
                            pending, following, scan, synced, remote_by_path, out
                        )
                    raise
        for start in range(0, len(again), REPORT_BATCH):
            part = again[start : start + REPORT_BATCH]
            found, uploads = self._record_report(
                part, self._send_report(part, scan), scan, synced, remote_by_path, out
            )
            conflicted += found + self._upload(uploads, scan, out)
        self._settle_conflicts(conflicted, scan, out, uploaded=sent)

    def _send_report(self, batch: list[Report], scan: ScanResult) -> list[ReportResult]:
        """One report request (at most REPORT_BATCH changes)."""
        return self._api.report_json([self._change_json(a, scan) for a in batch])

    def _record_if_answered(
        self,
        pending: Future[list[ReportResult]],
        batch: list[Report],
        scan: ScanResult,
        synced: dict[str, SyncedRecord],
        remote_by_path: dict[str, RemoteRecord],
        out: RoundOutcome,
    ) -> None:
        try:
            results = pending.result()
        except (ApiError, ClientError, OSError):
            return  # not applied, or unknown: the next pass reports it again
        self._record_report(batch, results, scan, synced, remote_by_path, out)

    def _record_report(
        self,
        batch: list[Report],
        results: list[ReportResult],
        scan: ScanResult,
        synced: dict[str, SyncedRecord],
        remote_by_path: dict[str, RemoteRecord],
        out: RoundOutcome,
    ) -> tuple[list[_Conflicted], list[UploadJob]]:
        """A report's results recorded: what conflicted, and what to upload."""
        conflicted: list[_Conflicted] = []
        uploads: list[UploadJob] = []
        out.reported += len(batch)
        with self._state.transaction():
            for action, result in zip(batch, results, strict=True):
                self._on_result(
                    action, result, scan, synced, remote_by_path, conflicted, uploads, out
                )
        return conflicted, uploads

    @classmethod
    def _change_json(cls, action: Report, scan: ScanResult) -> dict[str, object]:
        """The change as JSON; an upsert (thousands in a first sync) without a model."""
        if isinstance(action, p.ReportUpsert):
            f = scan.files[action.path]
            return {
                "op": "upsert",
                "path": action.path,
                "content_hash": action.content_hash,
                "size": f.size,
                "mtime": mtime_datetime(f.mtime_ns).isoformat(),
                "base_revision": action.base_revision,
            }
        return cls._local_change(action, scan).model_dump(mode="json")

    @staticmethod
    def _local_change(action: Report, scan: ScanResult) -> LocalChange:
        match action:
            case p.ReportMove():
                return LocalChange(
                    op="move",
                    path=action.from_path,
                    to_path=action.to_path,
                    base_revision=action.base_revision,
                )
            case p.ReportDelete():
                return LocalChange(
                    op="delete", path=action.path, base_revision=action.base_revision
                )
            case p.ReportUpsert():
                f = scan.files[action.path]
                return LocalChange(
                    op="upsert",
                    path=action.path,
                    content_hash=action.content_hash,
                    size=f.size,
                    mtime=mtime_datetime(f.mtime_ns),
                    base_revision=action.base_revision,
                )

    def _on_result(
        self,
        action: Report,
        result: ReportResult,
        scan: ScanResult,
        synced: dict[str, SyncedRecord],
        remote_by_path: dict[str, RemoteRecord],
        conflicted: list[_Conflicted],
        uploads: list[UploadJob],
        out: RoundOutcome,
    ) -> None:
        if result.status == "rejected":
            why = result.error.detail if result.error else "rejected"
            out.failed[result.path] = why
            self._reporter.warn(f"the server refused {result.path}: {why}")
            return
        match action:
            case p.ReportUpsert(path=path, content_hash=h, base_revision=based_on):
                f = scan.files[path]
                job = UploadJob(
                    path,
                    self._root / f.local,
                    h,
                    f.size,
                    f.mtime_ns,
                    based_on,
                    scan.blocks.get(path),
                )
                if result.status == "upload_required":
                    uploads.append(job)
                elif result.status == "conflict" and result.conflict_id:
                    conflicted.append(_Conflicted(path, h, result.conflict_id, job))
                else:
                    self._landed(path, result, h, scan)
            case p.ReportDelete(path=path):
                if result.status == "conflict" and result.conflict_id:
                    conflicted.append(_Conflicted(path, None, result.conflict_id, None))
                else:
                    synced.pop(path, None)
                    self._state.forget_synced(path)
                    gone = remote_by_path.get(path)
                    if gone is not None:
                        self._state.forget_remote(gone.item_id)
                    self._reporter.info(f"deleted {path} on the server")
            case p.ReportMove(from_path=src, to_path=dst, item_id=item_id):
                moved = scan.files.get(dst)
                if result.status == "conflict" and result.conflict_id:
                    held = moved.content_hash if moved is not None else None
                    conflicted.append(_Conflicted(dst, held, result.conflict_id, None))
                    return
                base = synced.pop(src, None)
                self._state.forget_synced(src)
                if base is not None and moved is not None and result.revision is not None:
                    synced[dst] = synced_record(
                        dst,
                        moved,
                        item_id=result.id or item_id,
                        revision=result.revision,
                        content_hash=base.content_hash,
                    )
                    self._state.put_synced(synced[dst])
                    old = remote_by_path.get(src)
                    if result.status == "applied" and old is not None and old.item_id == item_id:
                        self._state.put_remote(
                            RemoteRecord(
                                item_id, dst, result.revision, old.content_hash, old.size, old.mtime
                            )
                        )
                self._reporter.info(f"moved {src} -> {dst} on the server")

    def _landed(self, path: str, result: ReportResult, content_hash: str, scan: ScanResult) -> None:
        """An upsert the server now holds (applied, or it already had that state)."""
        f = scan.files[path]
        if result.id is None or result.revision is None:
            return
        synced = synced_record(
            path, f, item_id=result.id, revision=result.revision, content_hash=content_hash
        )
        remote = RemoteRecord(
            result.id,
            path,
            result.revision,
            content_hash,
            f.size,
            mtime_datetime(f.mtime_ns).isoformat(),
        )
        if self._pending is not None:
            self._pending.append((synced, remote))  # written by _upload, in one go
            return
        with self._state.transaction():
            self._state.put_synced(synced)
            self._state.put_remote(remote)

    def _upload(
        self, jobs: Iterable[UploadJob], scan: ScanResult, out: RoundOutcome
    ) -> list[_Conflicted]:
        jobs = list(jobs)
        if not jobs:
            return []
        self._reporter.phase(
            verb="uploading", files=len(jobs), total_bytes=sum(j.size for j in jobs)
        )
        conflicted: list[_Conflicted] = []
        batch = self._batch
        small = [j for j in jobs if batch is not None and batch.fits(j)]
        large = [j for j in jobs if batch is None or not batch.fits(j)]
        try:
            futures = [(job, self._pool.submit(self._uploader.upload, job)) for job in large]
            # Small files travel many per request (batch_upload.py), big ones in chunks.
            landed: list[Landed] = []
            if batch is not None and small:
                landed += batch.upload_many(small, self._uploader.upload)
            for job, future in futures:
                try:
                    landed.append((job, future.result()))
                except ServerUnreachable:
                    raise
                except (ApiError, ClientError, OSError) as exc:
                    landed.append((job, exc))
            # One local transaction for the lot: a commit per file is a sync each.
            self._pending = []
            try:
                with self._state.transaction():
                    for job, result in landed:
                        self._take(job, result, scan, out, conflicted)
                    self._state.put_pushed(self._pending)
            finally:
                self._pending = None
        finally:
            self._reporter.end_phase()
        return conflicted

    def _take(
        self,
        job: UploadJob,
        result: ReportResult | Exception | None,
        scan: ScanResult,
        out: RoundOutcome,
        conflicted: list[_Conflicted],
    ) -> None:
        if isinstance(result, Exception):
            out.failed[job.path] = str(result)
            self._reporter.warn(f"upload of {job.path} failed: {result}")
        elif result is None:
            return  # changed while uploading: next round
        elif result.status == "conflict" and result.conflict_id:
            conflicted.append(_Conflicted(job.path, job.content_hash, result.conflict_id, None))
        elif result.status in ("applied", "unchanged"):
            self._landed(job.path, result, job.content_hash, scan)
        elif result.status == "rejected" and result.error is not None:
            out.failed[job.path] = result.error.detail or result.error.code
            self._reporter.warn(f"upload of {job.path} failed: {out.failed[job.path]}")
        else:
            out.failed[job.path] = result.status

    def _settle_conflicts(
        self,
        conflicted: list[_Conflicted],
        scan: ScanResult,
        out: RoundOutcome,
        *,
        uploaded: set[str],
    ) -> None:
        """Make sure the server holds each conflicting local version, then note them.

        A conflict reported while its content was still missing, whose content
        another path uploaded since (`uploaded`: the same content travels
        once), is completed too: the server holds the bytes by now, so
        `complete` sends none, but only then does it attach them to the
        conflict and settle it under keep_both.
        """
        if not conflicted:
            return
        open_ = {c.id: c for c in self._api.conflicts()}
        needs_bytes = [
            c
            for c in conflicted
            if c.upload is not None
            and c.conflict_id in open_
            and (not open_[c.conflict_id].client.content_available or c.local_hash in uploaded)
        ]
        if needs_bytes:
            # Same path and base revision: `complete` lands it as the conflict's
            # client version (and keep_both saves it beside).
            later = self._upload([c.upload for c in needs_bytes if c.upload], scan, out)
            conflicted = [c for c in conflicted if c not in needs_bytes] + later
            open_ = {c.id: c for c in self._api.conflicts()}
        with self._state.transaction():
            for c in conflicted:
                resolved = c.conflict_id not in open_
                self._state.put_conflict(
                    ConflictRecord(c.path, c.conflict_id, c.local_hash, resolved)
                )
                if resolved:
                    self._reporter.info(f"conflict on {c.path}: both versions kept")
                else:
                    self._reporter.warn(
                        f"conflict on {c.path}: resolve it with `shelfsync resolve {c.conflict_id}`"
                    )
