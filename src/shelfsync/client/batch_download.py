"""Small files come down many at a time (protocol section 11.4).

Up to `BATCH_FILES` files of at most `BATCH_FILE_BYTES` each are asked for in
one `POST /sync/download/batch`; the answer streams a framed header and the
bytes of each. Every file is checked against the hash the feed promised and
written to its temporary name beside the target (as download.py names it).
Once a batch's files are written, one `syncfs` makes them all durable (one
journal commit instead of an fsync per file); each is then renamed into place
if the local file is still the version this client expects (checked right
before the rename), exactly as a single download. The caller fsyncs the
directories and records the files, in that order.

An entry the server no longer has (`not_found`), or whose content changed
since the feed, is left for the next round. A server without the endpoint gets
those files one by one through the single-file path.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from shelfsync.client.download import (
    Downloader,
    DownloadJob,
    DownloadOutcome,
    Outcome,
    landed_as,
    mtime_ns_of,
)
from shelfsync.client.errors import ApiError, ClientError, ServerUnreachable
from shelfsync.client.http import ApiClient
from shelfsync.client.paths import resolve_inside
from shelfsync.client.progress import Reporter
from shelfsync.client.transfer import TransferCounters, TransferSettings
from shelfsync.content_hash import hash_bytes
from shelfsync.durable import sync_filesystem
from shelfsync.protocol.batch import FRAME_PREFIX_BYTES, BatchEntry, BatchWanted, frame_length

__all__ = ["BATCH_FILES", "BATCH_FILE_BYTES", "BatchDownloader", "Fetched"]

BATCH_FILE_BYTES = 4 * 1024 * 1024  # larger files come one by one (server limit: 8 MiB)
BATCH_FILES = 1000  # per request (server default limit: 1000)
BATCH_BYTES = 32 * 1024 * 1024  # file bytes per request
PARALLEL_BATCHES = 2
_FALLBACK_STATUSES = frozenset({404, 405, 413, 415})
_READ_PIECE = 256 * 1024

# One job's outcome, or the error that stopped it.
Fetched = tuple[DownloadJob, DownloadOutcome | Exception]


class _Frames:
    """Exact reads from a streamed answer."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buffer = bytearray()

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            piece = next(self._pieces, None)
            if piece is None:
                raise ServerUnreachable("the batch download ended early")
            self._buffer += piece
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def entry(self) -> BatchEntry:
        length = frame_length(self.read(FRAME_PREFIX_BYTES))
        try:
            return BatchEntry.model_validate_json(self.read(length))
        except ValidationError as exc:
            raise ClientError("unexpected batch download entry from the server") from exc


@dataclass(slots=True)
class _Written:
    job: DownloadJob
    temp: str
    target: str
    stat: os.stat_result  # the temporary file's, as written (a rename keeps it)
    directory: Path


def _groups(jobs: Sequence[DownloadJob]) -> list[list[DownloadJob]]:
    groups: list[list[DownloadJob]] = []
    current: list[DownloadJob] = []
    size = 0
    for job in jobs:
        if current and (len(current) >= BATCH_FILES or size + job.size > BATCH_BYTES):
            groups.append(current)
            current, size = [], 0
        current.append(job)
        size += job.size
    if current:
        groups.append(current)
    return groups


class BatchDownloader:
    def __init__(
        self,
        *,
        root: Path,
        api: ApiClient,
        downloader: Downloader,
        settings: TransferSettings,
        counters: TransferCounters,
        reporter: Reporter,
        pool: ThreadPoolExecutor,
    ) -> None:
        self._root = root
        self._api = api
        self._downloader = downloader
        self._settings = settings
        self._counters = counters
        self._reporter = reporter
        self._pool = pool

    @staticmethod
    def fits(job: DownloadJob) -> bool:
        return job.size <= BATCH_FILE_BYTES

    def download_many(
        self, jobs: Sequence[DownloadJob], fallback: Callable[[DownloadJob], DownloadOutcome]
    ) -> Iterator[Fetched]:
        groups = _groups(jobs)
        for start in range(0, len(groups), PARALLEL_BATCHES):
            batch = groups[start : start + PARALLEL_BATCHES]
            futures = [self._pool.submit(self._fetch, group) for group in batch]
            for group, future in zip(batch, futures, strict=True):
                try:
                    fetched = future.result()
                except ServerUnreachable:
                    raise
                except ApiError as exc:
                    if exc.problem.status not in _FALLBACK_STATUSES:
                        fetched = [(job, exc) for job in group]
                    else:
                        fetched = self._one_by_one(group, fallback)
                except (ClientError, OSError) as exc:
                    fetched = [(job, exc) for job in group]
                yield from fetched

    @staticmethod
    def _one_by_one(
        group: list[DownloadJob], fallback: Callable[[DownloadJob], DownloadOutcome]
    ) -> list[Fetched]:
        out: list[Fetched] = []
        for job in group:
            try:
                out.append((job, fallback(job)))
            except ServerUnreachable:
                raise
            except (ClientError, OSError) as exc:
                out.append((job, exc))
        return out

    def _target(self, local: str, checked: dict[str, Path]) -> str:
        """resolve_inside, with each folder's checks done once per batch: the
        next files of a checked folder only need their own name checked (the
        caller's lstat of the target refuses a symlink there)."""
        folder, _, name = local.rpartition("/")
        parent = checked.get(folder)
        if parent is None or name in ("", ".", "..") or "\x00" in name or os.sep in name:
            target = resolve_inside(self._root, local)
            checked[folder] = target.parent
            return os.fspath(target)
        return f"{os.fspath(parent)}/{name}"

    def _fetch(self, group: list[DownloadJob]) -> list[Fetched]:
        out: list[Fetched] = []
        wanted: list[tuple[DownloadJob, str]] = []
        checked: dict[str, Path] = {}
        for job in group:
            target = self._target(job.local, checked)
            if self._still_expected(target, job, refuse_link=True):
                wanted.append((job, target))
            else:
                out.append((job, DownloadOutcome(Outcome.LOCAL_CHANGED)))
        if not wanted:
            return out
        written: list[_Written] = []
        placed = 0
        try:
            with self._api.download_batch([BatchWanted(path=j.path) for j, _ in wanted]) as stream:
                frames = _Frames(stream.iter_bytes(_READ_PIECE))
                for job, target in wanted:
                    entry = frames.entry()
                    data = frames.read(entry.size) if entry.status == "ok" else b""
                    result = self._write(job, target, entry, data, checked)
                    if isinstance(result, _Written):
                        written.append(result)
                    else:
                        out.append((job, result))
            if written:
                sync_filesystem(self._root)
                size = sum(w.job.size for w in written)
                transfer = self._reporter.transfer(
                    verb="downloaded", path=f"a batch of {len(written)} file(s)", size_bytes=size
                )
                transfer.advance(size)
                transfer.done()
            for w in written:
                out.append((w.job, self._place(w)))
                placed += 1
        finally:
            for w in written[placed:]:  # not placed: an error stopped the batch
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(w.temp)
        return out

    def _still_expected(self, target: str, job: DownloadJob, *, refuse_link: bool = False) -> bool:
        """Downloader.still_expected; a file not there (the usual case for a new
        file) is answered from the lstat alone. With `refuse_link`, a symlink
        at the target raises UnsafePath, as resolve_inside does."""
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return job.expect_hash is None
        if refuse_link and stat.S_ISLNK(st.st_mode):
            resolve_inside(self._root, os.path.relpath(target, self._root))  # refuses it
        return self._downloader.still_expected(Path(target), job)

    def _write(
        self,
        job: DownloadJob,
        target: str,
        entry: BatchEntry,
        data: bytes,
        checked: dict[str, Path],
    ) -> _Written | DownloadOutcome | Exception:
        if entry.status == "ok" and entry.path != job.path:
            return ClientError(f"the batch answered {entry.path!r} where {job.path!r} was due")
        if entry.status != "ok":
            code = entry.error.code if entry.error is not None else "error"
            if code == "not_found":
                return DownloadOutcome(Outcome.REMOTE_CHANGED)  # deleted or moved: the feed says
            detail = entry.error.detail if entry.error is not None else "failed"
            return ClientError(f"download of {job.path} failed: {detail} ({code})")
        if entry.content_hash != job.content_hash or hash_bytes(data) != job.content_hash:
            return DownloadOutcome(Outcome.REMOTE_CHANGED)  # changed since the feed: next round
        self._settings.throttle.take(len(data))
        # Beside the checked target, under the name download.py gives it (a
        # generated name: no second path check needed).
        folder = target.rpartition("/")[0]
        temp = f"{folder}/{Downloader.temp_name(job).rpartition('/')[2]}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        # One descriptor for the lot: write, set the mtime, and the stat the
        # file is recorded with (the rename keeps size, mtime and inode).
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            mtime_ns = mtime_ns_of(job.mtime)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._counters.add(downloaded_bytes=len(data))
        directory = checked.get(job.local.rpartition("/")[0]) or Path(folder)
        return _Written(job, temp, target, st, directory)

    def _place(self, w: _Written) -> DownloadOutcome:
        job = w.job
        # The last check, right before the rename: never overwrite an edit.
        if not self._still_expected(w.target, job):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(w.temp)
            return DownloadOutcome(Outcome.LOCAL_CHANGED)
        os.replace(w.temp, w.target)
        self._counters.add(downloaded_files=1)
        return landed_as(job, w.stat, w.directory)
