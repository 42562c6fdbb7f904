"""Carries out one plan: bookkeeping, local renames, push, local deletes, downloads.

Order matters and is fixed. Local changes reach the server (push.py) before
any remote change touches the disk, so a path changed on both sides is
preserved on the server first. Every local action re-checks the file it
expects right before touching it; a failure is confined to its path (reported,
skipped for the rest of the pass) unless the server is unreachable, which ends
the pass (the next one resumes where this one stopped).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shelfsync.client import plan as p
from shelfsync.client.batch_download import BatchDownloader
from shelfsync.client.download import (
    Downloader,
    DownloadJob,
    DownloadOutcome,
    Outcome,
    fsync_dir,
)
from shelfsync.client.errors import ClientError, ServerUnreachable
from shelfsync.client.localnames import LocalNamer
from shelfsync.client.paths import parent_of, resolve_inside
from shelfsync.client.progress import Reporter
from shelfsync.client.push import Pusher, RoundOutcome, synced_record
from shelfsync.client.scan import LocalFile, ScanResult, hash_local_file
from shelfsync.client.state import STATE_DIR, LocalRecord, RemoteRecord, State, SyncedRecord

__all__ = ["Executor"]

# Downloaded files are recorded in the local state in batches of this many.
_RECORD_BATCH = 1000


class Executor:
    def __init__(
        self,
        *,
        root: Path,
        state: State,
        pusher: Pusher,
        downloader: Downloader,
        reporter: Reporter,
        file_pool: ThreadPoolExecutor,
        namer_factory: Callable[[ScanResult], LocalNamer],
        batch_downloader: BatchDownloader | None = None,
    ) -> None:
        self._root = root
        self._state = state
        self._pusher = pusher
        self._downloader = downloader
        self._reporter = reporter
        self._pool = file_pool
        self._namer_factory = namer_factory
        self._batch = batch_downloader
        self._checked_ns: dict[str, int] = {}

    def run(self, actions: Sequence[p.Action], scan: ScanResult) -> RoundOutcome:
        out = RoundOutcome()
        self._checked_ns = {r.path: r.checked_ns for r in scan.records}
        synced = self._state.synced()
        namer = self._namer_factory(scan)
        for action in actions:
            self._bookkeeping(action, scan, synced)
        for action in actions:
            if isinstance(action, p.MoveLocal):
                self._guard(out, action.to_path, self._move_local, action, scan, synced, namer)
        self._pusher.push(actions, scan, synced, out)
        for action in actions:
            if isinstance(action, p.DeleteLocal):
                self._guard(out, action.path, self._delete_local, action, scan)
        downloads = [a for a in actions if isinstance(a, p.Download)]
        self._download(downloads, scan, synced, self._state.remote(), namer, out)
        return out

    # -- helpers --------------------------------------------------------------

    def _guard(self, out: RoundOutcome, path: str, fn: Callable[..., None], *args: object) -> None:
        """Run one local action; its failure is confined to its path."""
        try:
            fn(*args)
        except ServerUnreachable:
            raise
        except (ClientError, OSError) as exc:
            out.failed[path] = str(exc)
            self._reporter.warn(f"{path}: {exc}")

    def _bookkeeping(
        self, action: p.Action, scan: ScanResult, synced: dict[str, SyncedRecord]
    ) -> None:
        match action:
            case p.MarkSynced(path=path, item_id=item_id, revision=rev, content_hash=h):
                f = scan.files.get(path)
                if f is not None:
                    synced[path] = synced_record(
                        path, f, item_id=item_id, revision=rev, content_hash=h
                    )
                    self._state.put_synced(synced[path])
            case p.ForgetSynced(path=path):
                synced.pop(path, None)
                self._state.forget_synced(path)
            case p.RelocateSynced(from_path=src, to_path=dst):
                base, f = synced.get(src), scan.files.get(dst)
                if base is not None and f is not None:
                    with self._state.transaction():
                        synced[dst] = synced_record(
                            dst,
                            f,
                            item_id=base.item_id,
                            revision=base.revision,
                            content_hash=base.content_hash,
                        )
                        self._state.put_synced(synced[dst])
                        self._state.forget_synced(src)
                        synced.pop(src)
            case p.ForgetConflict(path=path):
                self._state.forget_conflict(path)
            case _:
                pass

    def _matches(self, f: LocalFile, expect_hash: str) -> bool:
        """Is the file still the one the scan saw (or at least the same content)?"""
        absolute = resolve_inside(self._root, f.local)
        try:
            st = os.lstat(absolute)
        except FileNotFoundError:
            return False
        if (st.st_size, st.st_mtime_ns, st.st_ino) == (f.size, f.mtime_ns, f.inode):
            return f.content_hash == expect_hash
        hashed = hash_local_file(absolute)
        return hashed is not None and hashed[0] == expect_hash

    def _prune_dirs(self, local_rel: str) -> None:
        """Remove directories a remote change emptied (directories are implicit)."""
        parent = parent_of(local_rel)
        while parent:
            with contextlib.suppress(OSError):
                os.rmdir(resolve_inside(self._root, parent))
                parent = parent_of(parent)
                continue
            break

    # -- local renames and deletes ------------------------------------------

    def _move_local(
        self,
        action: p.MoveLocal,
        scan: ScanResult,
        synced: dict[str, SyncedRecord],
        namer: LocalNamer,
    ) -> None:
        f = scan.files.get(action.from_path)
        if f is None or not self._matches(f, action.expect_hash):
            return  # changed since the scan: the next round sees it
        target_rel, warning = namer.name_for(action.to_path)
        if warning:
            self._reporter.warn(warning)
        source = resolve_inside(self._root, f.local)
        target = resolve_inside(self._root, target_rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(target):
            return  # something appeared there: per-path rules next round
        os.rename(source, target)
        self._prune_dirs(f.local)
        st = os.lstat(target)
        moved = LocalFile(
            action.to_path, target_rel, st.st_size, st.st_mtime_ns, st.st_ino, f.content_hash
        )
        scan.files.pop(action.from_path, None)
        scan.files[action.to_path] = moved
        base = synced.pop(action.synced_from, None)
        with self._state.transaction():
            self._state.forget_local_file(action.from_path)
            self._state.put_local_file(
                LocalRecord(
                    action.to_path,
                    target_rel,
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ino,
                    f.content_hash,
                    self._checked_ns.get(action.from_path, 0),
                )
            )
            if base is not None:
                self._state.forget_synced(action.synced_from)
                synced[action.to_path] = synced_record(
                    action.to_path,
                    moved,
                    item_id=base.item_id,
                    revision=base.revision,
                    content_hash=base.content_hash,
                )
                self._state.put_synced(synced[action.to_path])
        self._reporter.info(f"moved {action.from_path} -> {action.to_path}")

    def _delete_local(self, action: p.DeleteLocal, scan: ScanResult) -> None:
        f = scan.files.get(action.path)
        if f is None:
            return
        source = resolve_inside(self._root, f.local)
        # Move aside first, then check the bytes: an edit racing us is put back.
        trash = self._root / STATE_DIR / "trash"
        trash.mkdir(exist_ok=True)
        aside = trash / uuid.uuid4().hex
        try:
            os.rename(source, aside)
        except FileNotFoundError:
            return
        hashed = hash_local_file(aside)
        if hashed is None or hashed[0] != action.expect_hash:
            if os.path.lexists(source):
                restored = source.with_name(f"{source.name} (restored {uuid.uuid4().hex[:6]})")
                os.rename(aside, restored)
            else:
                os.rename(aside, source)
            return
        os.unlink(aside)
        with self._state.transaction():
            self._state.forget_synced(action.path)
            self._state.forget_local_file(action.path)
        self._prune_dirs(f.local)
        self._reporter.info(f"deleted {action.path}")

    # -- downloads ------------------------------------------------------------

    def _download(
        self,
        actions: list[p.Download],
        scan: ScanResult,
        synced: dict[str, SyncedRecord],
        remote_by_path: dict[str, RemoteRecord],
        namer: LocalNamer,
        out: RoundOutcome,
    ) -> None:
        jobs: list[DownloadJob] = []
        cache = {r.path: r for r in scan.records}
        for action in actions:
            f = scan.files.get(action.path)
            if f is not None:
                local = f.local
            elif action.path in synced:
                local = synced[action.path].local
            else:
                local, warning = namer.name_for(action.path)
                if warning:
                    self._reporter.warn(warning)
            remote = remote_by_path.get(action.path)
            jobs.append(
                DownloadJob(
                    action.path,
                    local,
                    action.item_id,
                    action.revision,
                    action.content_hash,
                    remote.size if remote is not None else 0,
                    remote.mtime if remote is not None else None,
                    action.expect_hash,
                    cache.get(action.path) if f is not None else None,
                )
            )
        if not jobs:
            return
        total = sum(j.size for j in jobs)
        self._reporter.phase(verb="downloading", files=len(jobs), total_bytes=total)
        landed: list[DownloadOutcome] = []
        batch = self._batch
        small = [j for j in jobs if batch is not None and batch.fits(j)]
        large = [j for j in jobs if batch is None or not batch.fits(j)]
        try:
            futures = [(job, self._pool.submit(self._downloader.download, job)) for job in large]
            # Small files come many per request (batch_download.py), big ones alone.
            if batch is not None and small:
                for job, done in batch.download_many(small, self._downloader.download):
                    self._take(job, done, landed, out)
            for job, future in futures:
                try:
                    done = future.result()
                except ServerUnreachable:
                    raise
                except (ClientError, OSError) as exc:
                    self._take(job, exc, landed, out)
                    continue
                self._take(job, done, landed, out)
        finally:
            self._record_downloads(landed)
            self._reporter.end_phase()

    def _take(
        self,
        job: DownloadJob,
        done: DownloadOutcome | Exception,
        landed: list[DownloadOutcome],
        out: RoundOutcome,
    ) -> None:
        if isinstance(done, Exception):
            out.failed[job.path] = str(done)
            self._reporter.warn(f"download of {job.path} failed: {done}")
        elif done.outcome is Outcome.DONE:
            landed.append(done)
            if len(landed) >= _RECORD_BATCH:
                self._record_downloads(landed)
        elif done.outcome is Outcome.LOCAL_CHANGED:
            out.changed_locally += 1

    def _record_downloads(self, landed: list[DownloadOutcome]) -> None:
        """fsync the directories, then record the files as synced (in that order)."""
        for directory in {os.fspath(d.directory) for d in landed if d.directory is not None}:
            fsync_dir(Path(directory))
        self._state.put_landed(
            (done.synced, done.local)
            for done in landed
            if done.synced is not None and done.local is not None
        )
        landed.clear()
