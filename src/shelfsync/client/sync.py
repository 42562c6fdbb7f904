"""One full two-way pass: feed in, scan, plan, execute, until nothing is left.

A pass reads the change feed to its end (remote tree and cursor stored
together), then repeats scan -> plan -> execute -> read the feed, until the
plan is empty (a few rounds: a move is reported, then its content follows),
and acknowledges the cursor so the server knows how far behind this device is.
The engine owns the worker pools and must be closed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from shelfsync.client import plan as p
from shelfsync.client.batch_download import BatchDownloader
from shelfsync.client.batch_upload import PARALLEL_BATCHES, BatchUploader
from shelfsync.client.download import Downloader
from shelfsync.client.errors import CursorExpired, NotFound, UnsafePath, UploadGone
from shelfsync.client.executor import Executor
from shelfsync.client.http import ApiClient
from shelfsync.client.localnames import LocalNamer, is_case_insensitive
from shelfsync.client.paths import resolve_inside, validate_library_path
from shelfsync.client.progress import Reporter
from shelfsync.client.push import Pusher
from shelfsync.client.scan import Scanner, ScanResult, is_blocked
from shelfsync.client.state import RemoteRecord, State
from shelfsync.client.transfer import TransferCounters, TransferSettings
from shelfsync.client.upload import CHUNKED_OVER_BYTES, Uploader
from shelfsync.protocol.sync import Change

__all__ = ["MAX_ROUNDS", "PassSummary", "SyncEngine", "plan_input"]

MAX_ROUNDS = 8
FEED_PAGE = 1000


@dataclass(slots=True)
class PassSummary:
    rounds: int = 0
    actions: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    unresolved_conflicts: list[str] = field(default_factory=list)
    settled: bool = True
    elapsed_s: float = 0.0
    pending_changes: int | None = None


def plan_input(state: State, scan: ScanResult, *, skip: set[str]) -> p.PlanInput:
    """The three trees as plan.py wants them."""
    synced = state.synced()
    remote = state.remote()
    blocked = scan.blocked
    skipped = set(skip) | {path for path in synced if is_blocked(path, blocked)}
    # An ignored name is never downloaded, and never read as deleted here.
    skipped |= {path for path in set(synced) | set(remote) if scan.rules.ignores_file(path)}
    return p.PlanInput(
        synced={k: p.Base(r.item_id, r.revision, r.content_hash) for k, r in synced.items()},
        local={k: f.content_hash for k, f in scan.files.items()},
        remote={
            k: p.RemoteItem(r.item_id, r.path, r.revision, r.content_hash)
            for k, r in remote.items()
        },
        local_moves=[(m.from_path, m.to_path) for m in scan.moves],
        conflicts={
            k: p.ConflictMark(c.local_hash, c.resolved) for k, c in state.conflicts().items()
        },
        skip=frozenset(skipped),
    )


class SyncEngine:
    def __init__(
        self,
        *,
        root: Path,
        api: ApiClient,
        state: State,
        reporter: Reporter,
        settings: TransferSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root.resolve()
        self.api = api
        self.state = state
        self.reporter = reporter
        self.settings = settings or TransferSettings()
        self.counters = TransferCounters()
        self._clock = clock
        # What goes up in chunks is not read again when this scan just hashed it.
        self._scanner = Scanner(self.root, keep_blocks_over=CHUNKED_OVER_BYTES)
        self._chunk_pool = ThreadPoolExecutor(self.settings.parallel_chunks, "shelfsync-chunk")
        self._file_pool = ThreadPoolExecutor(self.settings.parallel_files, "shelfsync-file")
        self._batch_pool = ThreadPoolExecutor(PARALLEL_BATCHES, "shelfsync-batch")
        ci = state.get_meta("case_insensitive")
        if ci is None:
            ci = "1" if is_case_insensitive(state.directory) else "0"
            state.set_meta("case_insensitive", ci)
        self.case_insensitive = ci == "1"
        self._warned: set[str] = set()
        downloader = Downloader(
            root=self.root,
            api=api,
            state=state,
            settings=self.settings,
            counters=self.counters,
            reporter=reporter,
        )
        self._executor = Executor(
            root=self.root,
            state=state,
            pusher=Pusher(
                root=self.root,
                api=api,
                state=state,
                uploader=Uploader(
                    api=api,
                    state=state,
                    settings=self.settings,
                    counters=self.counters,
                    reporter=reporter,
                    chunk_pool=self._chunk_pool,
                ),
                reporter=reporter,
                file_pool=self._file_pool,
                batch_uploader=BatchUploader(
                    api=api,
                    settings=self.settings,
                    counters=self.counters,
                    reporter=reporter,
                    pool=self._batch_pool,
                ),
            ),
            downloader=downloader,
            reporter=reporter,
            file_pool=self._file_pool,
            namer_factory=self._namer,
            batch_downloader=BatchDownloader(
                root=self.root,
                api=api,
                downloader=downloader,
                settings=self.settings,
                counters=self.counters,
                reporter=reporter,
                pool=self._batch_pool,
            ),
        )

    def close(self) -> None:
        self._file_pool.shutdown(wait=True, cancel_futures=True)
        self._chunk_pool.shutdown(wait=True, cancel_futures=True)
        self._batch_pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> SyncEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _namer(self, scan: ScanResult) -> LocalNamer:
        taken = [f.local for f in scan.files.values()]
        taken += [r.local for r in self.state.synced().values()]
        return LocalNamer(case_insensitive=self.case_insensitive, dirs=scan.dirs, taken=taken)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.reporter.warn(message)

    # -- the feed ---------------------------------------------------------------

    def pull_feed(self) -> int:
        """Read the feed to its end into the remote tree; how many changes came."""
        cursor = self.state.cursor
        reset = cursor is None
        count = 0
        while True:
            try:
                page = self.api.changes(cursor=cursor, limit=FEED_PAGE)
            except CursorExpired as exc:
                if cursor is None:
                    raise
                why = exc.problem.reason or exc
                self.reporter.warn(
                    f"the server no longer has history this far back ({why}); "
                    "reading the whole library again and reconciling by content"
                )
                cursor, reset = None, True
                continue
            upserts, deleted = self._remote_entries(page.changes)
            self.state.apply_remote(
                upserts=upserts, deleted_ids=deleted, cursor=page.cursor, reset=reset
            )
            reset = False
            count += len(page.changes)
            cursor = page.cursor
            if not page.has_more:
                return count

    def _remote_entries(self, changes: list[Change]) -> tuple[list[RemoteRecord], list[str]]:
        upserts: list[RemoteRecord] = []
        deleted: list[str] = []
        for change in changes:
            if change.deleted or change.content_hash is None:
                deleted.append(change.id)
                continue
            try:
                path = validate_library_path(change.path)
            except UnsafePath as exc:
                # Never written here, whatever the server says (protocol section 3).
                self._warn_once(f"ignored a remote item with an unsafe path: {exc}")
                deleted.append(change.id)
                continue
            mtime = change.mtime.isoformat() if change.mtime is not None else None
            upserts.append(
                RemoteRecord(
                    change.id, path, change.revision, change.content_hash, change.size, mtime
                )
            )
        return upserts, deleted

    def refresh_conflicts(self) -> None:
        """Conflicts resolved elsewhere (`shelfsync resolve`, the web page) free their paths."""
        marks = [c for c in self.state.conflicts().values() if not c.resolved]
        if not marks:
            return
        still_open = {c.id for c in self.api.conflicts()}
        for mark in marks:
            if mark.conflict_id not in still_open:
                self.state.put_conflict(
                    type(mark)(mark.path, mark.conflict_id, mark.local_hash, resolved=True)
                )

    # -- the pass -----------------------------------------------------------

    def scan(self) -> ScanResult:
        scan = self._scanner.scan(synced=self.state.synced(), cache=self.state.local_files())
        self.state.replace_local_files(scan.records)
        for warning in scan.warnings:
            self._warn_once(warning)
        return scan

    def run_pass(self) -> PassSummary:
        started = self._clock()
        summary = PassSummary()
        self.refresh_conflicts()
        self.pull_feed()
        failed: dict[str, str] = {}
        scan: ScanResult | None = None
        for round_no in range(MAX_ROUNDS):
            scan = self.scan()
            actions = p.plan(plan_input(self.state, scan, skip=set(failed)))
            if not actions:
                summary.rounds = round_no
                break
            summary.actions += len(actions)
            outcome = self._executor.run(actions, scan)
            failed.update(outcome.failed)
            self.pull_feed()
        else:
            summary.rounds = MAX_ROUNDS
            summary.settled = False
        if summary.settled and not failed:
            self._clean_partials(scan)
            self._cancel_stale_uploads()
        summary.failed = failed
        summary.unresolved_conflicts = sorted(
            c.path for c in self.state.conflicts().values() if not c.resolved
        )
        cursor = self.state.cursor
        if cursor is not None:
            summary.pending_changes = self.api.ack(cursor).pending_changes
        self.state.set_meta("last_sync", str(time.time()))
        summary.elapsed_s = self._clock() - started
        return summary

    def _cancel_stale_uploads(self) -> None:
        """Sessions left by an interrupted run whose content nothing needs any more."""
        for upload in self.state.pending_uploads():
            with contextlib.suppress(NotFound, UploadGone):
                self.api.cancel_upload(upload.session_id)
            self.state.forget_upload(path=upload.path, content_hash=upload.content_hash)

    def _clean_partials(self, scan: ScanResult | None) -> None:
        """Temporary download files nothing needs any more (after a settled pass)."""
        leftovers = {d.temp for d in self.state.partial_downloads()}
        if scan is not None:
            leftovers.update(scan.partials)
        for temp in leftovers:
            try:
                resolve_inside(self.root, temp).unlink()
            except FileNotFoundError:
                pass
            except (OSError, UnsafePath):
                continue
            if self.state.has_partial_download(temp):
                self.state.forget_download(temp)
