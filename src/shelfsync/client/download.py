"""Safe, resumable downloads (protocol section 10).

Bytes go to a temporary file beside the target (`.<key>.shelfsync-part`, inside
the folder so the final rename is atomic; the scanner ignores the name), which
is recorded in the local state. After an interruption the next run asks for the
rest with `Range` + `If-Range: "<content_hash>"` (a changed file answers 200
and starts over). The whole content is verified against its hash, fsynced, given
the original mtime, and renamed into place only if the local file is still what
this client expects (checked right before the rename). Otherwise it is a
conflict and the local file stays: the next round reports it. The bytes are
written by download_sink.py; a large download's body comes straight from the
socket into its buffer where http.py allows it (`DownloadStream.body_reader`).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shelfsync.client.download_sink import DownloadSink
from shelfsync.client.errors import ClientError, NotFound
from shelfsync.client.http import ApiClient
from shelfsync.client.ignore import PARTIAL_SUFFIX
from shelfsync.client.paths import resolve_inside
from shelfsync.client.progress import Reporter, Transfer
from shelfsync.client.scan import hash_local_file
from shelfsync.client.state import LocalRecord, PartialDownload, State, SyncedRecord
from shelfsync.client.transfer import TransferCounters, TransferSettings
from shelfsync.content_hash import ContentHasher

__all__ = [
    "RESUMABLE_BYTES",
    "DownloadJob",
    "DownloadOutcome",
    "Downloader",
    "Outcome",
    "fsync_dir",
    "landed",
    "landed_as",
    "mtime_ns_of",
]

_PIECE = 1024 * 1024
# Smaller downloads are not worth a state record (two commits): after a crash
# they simply start over, and the pass sweeps their leftover temporary file.
RESUMABLE_BYTES = 1024 * 1024


class Outcome(enum.Enum):
    """How one download ended."""

    DONE = "done"  # in place, verified; `synced`/`local` describe it
    LOCAL_CHANGED = "local_changed"  # the local file changed meanwhile: left alone
    REMOTE_CHANGED = "remote_changed"  # the server has other content now: next round


@dataclass(frozen=True, slots=True)
class DownloadJob:
    path: str  # library path
    local: str  # on-disk relative target
    item_id: str
    revision: int
    content_hash: str
    size: int
    mtime: str | None  # RFC 3339, restored on the file
    expect_hash: str | None  # the local content it may replace (None: nothing)
    expect_record: LocalRecord | None  # the scan's stat of that content


@dataclass(frozen=True, slots=True)
class DownloadOutcome:
    outcome: Outcome
    synced: SyncedRecord | None = None
    local: LocalRecord | None = None
    directory: Path | None = None  # to fsync before recording the file


def mtime_ns_of(mtime: str | None) -> int | None:
    if not mtime:
        return None
    try:
        value = datetime.fromisoformat(mtime)
    except ValueError:
        return None
    return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1000


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def landed(job: DownloadJob, target: Path) -> DownloadOutcome:
    """The outcome of a file just renamed into place: what to record as synced."""
    return landed_as(job, os.stat(target), target.parent)


def landed_as(job: DownloadJob, st: os.stat_result, directory: Path) -> DownloadOutcome:
    """`landed`, from the file's stat (taken before its rename: size, mtime and
    inode stay) and its folder."""
    return DownloadOutcome(
        Outcome.DONE,
        synced=SyncedRecord(
            job.path,
            job.local,
            job.item_id,
            job.revision,
            job.content_hash,
            st.st_size,
            st.st_mtime_ns,
            st.st_ino,
        ),
        local=LocalRecord(
            job.path,
            job.local,
            st.st_size,
            st.st_mtime_ns,
            st.st_ino,
            job.content_hash,
            time.time_ns(),
        ),
        directory=directory,
    )


class Downloader:
    def __init__(
        self,
        *,
        root: Path,
        api: ApiClient,
        state: State,
        settings: TransferSettings,
        counters: TransferCounters,
        reporter: Reporter,
    ) -> None:
        self._root = root
        self._api = api
        self._state = state
        self._settings = settings
        self._counters = counters
        self._reporter = reporter

    @staticmethod
    def temp_name(job: DownloadJob) -> str:
        key = hashlib.sha256(job.local.encode()).hexdigest()[:12]
        parent, _, _ = job.local.rpartition("/")
        name = f".{key}-{job.content_hash[:20]}{PARTIAL_SUFFIX}"
        return f"{parent}/{name}" if parent else name

    def download(self, job: DownloadJob) -> DownloadOutcome:
        target = resolve_inside(self._root, job.local)
        if not self._still_expected(target, job):
            return DownloadOutcome(Outcome.LOCAL_CHANGED)
        temp_rel = self.temp_name(job)
        temp = resolve_inside(self._root, temp_rel)
        temp.parent.mkdir(parents=True, exist_ok=True)
        resumable = job.size >= RESUMABLE_BYTES
        if resumable:
            self._state.put_download(PartialDownload(temp_rel, job.path, job.content_hash))
        try:
            fetched = self._fetch(job, temp)
        except NotFound:
            fetched = False  # deleted or moved meanwhile: the feed will say
        if not fetched:
            self._drop(temp, temp_rel)
            return DownloadOutcome(Outcome.REMOTE_CHANGED)
        mtime_ns = mtime_ns_of(job.mtime)
        if mtime_ns is not None:
            os.utime(temp, ns=(mtime_ns, mtime_ns))
        # The last check, right before the rename: never overwrite an edit.
        if not self._still_expected(target, job):
            self._drop(temp, temp_rel)
            return DownloadOutcome(Outcome.LOCAL_CHANGED)
        os.replace(temp, target)
        # The directory is fsynced by the caller, once per batch, before it
        # records the file as synced (a lost rename must not read as a delete).
        if resumable:
            self._state.forget_download(temp_rel)
        self._counters.add(downloaded_files=1)
        return landed(job, target)

    def _drop(self, temp: Path, temp_rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        if self._state.has_partial_download(temp_rel):
            self._state.forget_download(temp_rel)

    def still_expected(self, target: Path, job: DownloadJob) -> bool:
        """Is the local file still what the job may replace (batch_download.py too)?"""
        return self._still_expected(target, job)

    def _still_expected(self, target: Path, job: DownloadJob) -> bool:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return job.expect_hash is None
        if job.expect_hash is None or not os.path.isfile(target) or os.path.islink(target):
            return False
        record = job.expect_record
        if record is not None and (st.st_size, st.st_mtime_ns, st.st_ino) == (
            record.size,
            record.mtime_ns,
            record.inode,
        ):
            return record.content_hash == job.expect_hash
        hashed = hash_local_file(target)
        return hashed is not None and hashed[0] == job.expect_hash

    def _fetch(self, job: DownloadJob, temp: Path) -> bool:
        """Fill `temp` with the verified content; False when the server's changed."""
        hasher = ContentHasher()
        offset = 0
        with contextlib.suppress(FileNotFoundError):
            if 0 < temp.stat().st_size <= job.size:
                with temp.open("rb") as fh:
                    while piece := fh.read(4 * _PIECE):
                        hasher.update(piece)
                offset = hasher.size
        if job.size == 0:
            temp.write_bytes(b"")
            return job.content_hash == ContentHasher().hexdigest()
        etag = f'"{job.content_hash}"'
        if offset == job.size and hasher.hexdigest() == job.content_hash:
            return True  # fetched whole before an interruption: verified, nothing to ask
        if offset >= job.size:
            hasher, offset = ContentHasher(), 0
        transfer = self._reporter.transfer(verb="downloaded", path=job.path, size_bytes=job.size)
        with self._api.download(job.path, offset=offset, if_range=etag, size=job.size) as stream:
            if stream.headers.get("etag") != etag:
                return False
            if stream.status == 206 and offset:
                content_range = stream.headers.get("content-range", "")
                if not content_range.startswith(f"bytes {offset}-"):
                    raise ClientError(f"unexpected Content-Range {content_range!r} for {job.path}")
                self._counters.add(resumed_download_bytes=offset)
                transfer.advance(offset)
                resumed = True
            else:
                hasher, offset, resumed = ContentHasher(), 0, False
            with DownloadSink(temp, offset) as sink:
                read_into = stream.body_reader()
                if read_into is not None:
                    # Straight from the socket into the sink's buffer: no copy.
                    while got := read_into(space := sink.space()):
                        self._took(space[:got], hasher, transfer)
                        sink.filled(got)
                else:
                    for piece in stream.iter_bytes():
                        self._took(piece, hasher, transfer)
                        sink.write(piece)
                sink.finish()
        transfer.done(note=f"resumed at {offset} bytes" if resumed else "")
        return hasher.size == job.size and hasher.hexdigest() == job.content_hash

    def _took(self, piece: bytes | memoryview, hasher: ContentHasher, transfer: Transfer) -> None:
        self._settings.throttle.take(len(piece))
        hasher.update(piece)
        self._counters.add(downloaded_bytes=len(piece))
        transfer.advance(len(piece))
