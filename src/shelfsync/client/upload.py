"""Chunked, resumable uploads (protocol section 9).

A file is read once to check it still has the content hash the report named and
to compute its 4 MiB block digests; the session is created with those
(`block_hashes`), so an edited large file sends only the chunks that changed.
The session id is kept in the local state before the first chunk goes, so after
a crash or a lost network the next run asks the server what it already has
(`GET /upload/{id}` -> `received`) and sends only the rest, several chunks at
once. `complete` answers through the report engine (applied, unchanged,
conflict), which the caller handles like a report result.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shelfsync.client.errors import ChunkConflict, HashMismatch, MissingChunks, NotFound, UploadGone
from shelfsync.client.http import ApiClient
from shelfsync.client.progress import Reporter, Transfer
from shelfsync.client.state import PendingUpload, State
from shelfsync.client.transfer import TransferCounters, TransferSettings
from shelfsync.content_hash import BLOCK_SIZE, ContentHasher
from shelfsync.protocol.sync import ReportResult
from shelfsync.protocol.uploads import UploadCreate, UploadSession

__all__ = ["UploadJob", "Uploader", "mtime_datetime"]

# A chunk claimed by a request that died stays claimed until the server notices
# the broken connection: wait that out a few times before giving up.
_CLAIM_RETRIES = 10
_CLAIM_WAIT_S = 1.0
_SMALL_FILE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class UploadJob:
    path: str  # library path
    file: Path  # where it is on disk
    content_hash: str
    size: int
    mtime_ns: int
    base_revision: int | None


def mtime_datetime(mtime_ns: int) -> datetime:
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC)


def _digest_header(data: bytes | memoryview) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


class Uploader:
    def __init__(
        self,
        *,
        api: ApiClient,
        state: State,
        settings: TransferSettings,
        counters: TransferCounters,
        reporter: Reporter,
        chunk_pool: ThreadPoolExecutor,
    ) -> None:
        self._api = api
        self._state = state
        self._settings = settings
        self._counters = counters
        self._reporter = reporter
        self._pool = chunk_pool

    def upload(self, job: UploadJob) -> ReportResult | None:
        """The result of landing the file, or None when it changed since the scan."""
        checked = self._read_and_check(job)
        if checked is None:
            return None
        block_hashes, small_data = checked
        session = self._session(job, block_hashes)
        if session.status == "completed":
            return self._complete(job, session, small_data=small_data)
        missing = [i for i in range(session.chunk_count) if i not in set(session.received)]
        already = session.chunk_count - len(missing)
        self._counters.add(chunks_already_there=already)
        if already and missing:
            self._reporter.info(
                f"resuming upload of {job.path}: {already} of {session.chunk_count} chunks "
                "already on the server"
            )
        transfer = self._reporter.transfer(verb="uploaded", path=job.path, size_bytes=job.size)
        self._send(job, session, missing, transfer, small_data=small_data)
        result = self._complete(job, session, small_data=small_data)
        transfer.done(
            note=f"{len(missing)} of {session.chunk_count} chunk(s) sent" if already else ""
        )
        return result

    def _read_and_check(self, job: UploadJob) -> tuple[list[str] | None, bytes | None] | None:
        hasher = ContentHasher()
        small: bytes | None = None
        try:
            with job.file.open("rb", buffering=0) as fh:
                if job.size <= _SMALL_FILE_BYTES:
                    small = fh.read(job.size + 1)
                    hasher.update(small)
                else:
                    while piece := fh.read(BLOCK_SIZE):
                        hasher.update(piece)
        except FileNotFoundError:
            return None
        if hasher.size != job.size or hasher.hexdigest() != job.content_hash:
            return None  # edited since the scan: the next round reports the new content
        blocks = [d.hex() for d in hasher.block_digests]
        return (blocks if len(blocks) > 1 else None), small

    def _session(self, job: UploadJob, block_hashes: list[str] | None) -> UploadSession:
        pending = self._state.pending_upload(path=job.path, content_hash=job.content_hash)
        if pending is not None:
            try:
                session = self._api.get_upload(pending.session_id)
            except (NotFound, UploadGone):
                session = None
            if session is not None and session.status in ("pending", "completed"):
                return session
            self._state.forget_upload(path=job.path, content_hash=job.content_hash)
        # The server hands back this device's pending session for the same path
        # and content, so even a lost state record does not restart from zero.
        session = self._api.create_upload(
            UploadCreate(
                path=job.path,
                size=job.size,
                content_hash=job.content_hash,
                mtime=mtime_datetime(job.mtime_ns),
                base_revision=job.base_revision,
                block_hashes=block_hashes,
            )
        )
        self._state.put_upload(PendingUpload(job.path, job.content_hash, session.id, job.size))
        return session

    def _send(
        self,
        job: UploadJob,
        session: UploadSession,
        indexes: list[int],
        transfer: Transfer,
        *,
        small_data: bytes | None,
    ) -> None:
        if not indexes:
            return
        if small_data is not None and session.chunk_count == 1:
            self._put(session, 0, small_data, transfer)
            return
        fd = os.open(job.file, os.O_RDONLY)
        try:
            futures = [
                self._pool.submit(self._put_from_file, session, fd, index, transfer)
                for index in indexes
            ]
            for future in futures:
                future.result()
        finally:
            os.close(fd)

    def _put_from_file(
        self, session: UploadSession, fd: int, index: int, transfer: Transfer
    ) -> None:
        offset = index * session.chunk_size
        length = min(session.chunk_size, session.size - offset)
        data = os.pread(fd, length, offset)
        self._put(session, index, data, transfer)

    def _put(self, session: UploadSession, index: int, data: bytes, transfer: Transfer) -> None:
        self._settings.throttle.take(len(data))
        digest = _digest_header(data)
        for attempt in range(_CLAIM_RETRIES):
            try:
                self._api.put_chunk(session.id, index=index, data=data, content_digest=digest)
                break
            except ChunkConflict:
                if attempt + 1 == _CLAIM_RETRIES:
                    raise
                time.sleep(_CLAIM_WAIT_S)
        self._counters.add(chunks_sent=1, uploaded_bytes=len(data))
        transfer.advance(len(data))

    def _complete(
        self, job: UploadJob, session: UploadSession, *, small_data: bytes | None
    ) -> ReportResult | None:
        for _ in range(3):
            try:
                done = self._api.complete_upload(session.id)
            except MissingChunks as exc:
                # Chunks the server lost track of (a claim that died): send them.
                silent = self._reporter.transfer(verb="resent", path=job.path, size_bytes=0)
                self._send(job, session, exc.missing, silent, small_data=small_data)
                continue
            except (HashMismatch, UploadGone):
                self._state.forget_upload(path=job.path, content_hash=job.content_hash)
                return None  # the file changed while it went up: next round
            self._state.forget_upload(path=job.path, content_hash=job.content_hash)
            self._counters.add(uploaded_files=1)
            return done.result
        return None
