"""Chunked, resumable uploads (protocol section 9).

A file is read once to check it still has the content hash the report named and
to compute its 4 MiB block digests (blocks hashed in parallel on the chunk
threads: hashlib releases the GIL). A large file the scan just hashed is not
read for that: its block digests from the scan serve while its stat is still
the one they were computed for (the server checks the bytes against them
anyway, see below). The session is created with those
(`block_hashes`), so an edited large file sends only the chunks that changed.
Files of a few blocks ask for chunks of one block, so each chunk's
`Content-Digest` is the block digest already computed; larger files ask for
chunks of several blocks (fewer requests, syncs and records per byte) and send
no `Content-Digest`: the server checks every block of a chunk against the
`block_hashes` the session was created with. Either way no byte is hashed
twice, and a file edited after the check is refused chunk by chunk
(`digest_mismatch`, nothing kept) and the upload ends as "changed since the
scan".
The session id is kept in the local state before the first chunk goes, so after
a crash or a lost network the next run asks the server what it already has
(`GET /upload/{id}` -> `received`) and sends only the rest, several chunks at
once. `complete` answers through the report engine (applied, unchanged,
conflict), which the caller handles like a report result.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shelfsync.client.errors import (
    ApiError,
    ChunkConflict,
    ClientError,
    HashMismatch,
    MissingChunks,
    NotFound,
    UploadGone,
)
from shelfsync.client.http import ApiClient
from shelfsync.client.progress import Reporter, Transfer
from shelfsync.client.scan import BlockDigests
from shelfsync.client.state import PendingUpload, State
from shelfsync.client.transfer import TransferCounters, TransferSettings
from shelfsync.content_hash import BLOCK_SIZE, ContentHasher, hash_blocks
from shelfsync.protocol.sync import ReportResult
from shelfsync.protocol.uploads import UploadCreate, UploadSession

__all__ = ["CHUNKED_OVER_BYTES", "UploadJob", "Uploader", "mtime_datetime"]

# A chunk claimed by a request that died stays claimed until the server notices
# the broken connection: wait that out a few times before giving up.
_CLAIM_RETRIES = 10
_CLAIM_WAIT_S = 1.0
# Larger files go up in several chunks; smaller ones are read whole (and hashed
# on the way) to be sent in one.
CHUNKED_OVER_BYTES = 8 * 1024 * 1024
# Chunks of several blocks (16 MiB: a quarter of the requests, syncs and
# records of block-sized chunks) for files that still span at least 8 of them
# (twice the chunks in flight), so that a killed upload keeps most of what it
# sent.
_LARGE_CHUNK = 4 * BLOCK_SIZE
_MULTI_BLOCK_FILE_BYTES = 8 * _LARGE_CHUNK
# Larger files in larger chunks: a sixteenth of the file, in whole blocks, up
# to the protocol's 64 MiB. Each chunk costs the server a claim, a sync and a
# durable record while its connection waits for the answer; a 1 GiB upload
# went 778-843 MB/s in 16 MiB chunks, 969-1,008 in 32 and 1,091-1,127 in 64
# (docs/benchmarks.md, "Upload, stop 22"). At a sixteenth, what a killed
# upload loses (the chunks in flight) stays a fixed share of the file.
_CHUNKS_AT_LEAST = 16
_MAX_CHUNK = 16 * BLOCK_SIZE
# A chunk read as it is sent goes in pieces of this size (see _FileSlice).
_SEND_PIECE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class UploadJob:
    path: str  # library path
    file: Path  # where it is on disk
    content_hash: str
    size: int
    mtime_ns: int
    base_revision: int | None
    scanned: BlockDigests | None = None  # from the scan that named content_hash


def _chunk_size(size: int) -> int | None:
    """One block per chunk (its Content-Digest is the block digest) up to
    _MULTI_BLOCK_FILE_BYTES, then larger chunks checked against block_hashes."""
    if size <= CHUNKED_OVER_BYTES:
        return None
    if size < _MULTI_BLOCK_FILE_BYTES:
        return BLOCK_SIZE
    blocks = size // (_CHUNKS_AT_LEAST * BLOCK_SIZE)
    return min(max(blocks * BLOCK_SIZE, _LARGE_CHUNK), _MAX_CHUNK)


def mtime_datetime(mtime_ns: int) -> datetime:
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC)


def _digest_header(data: bytes | memoryview) -> str:
    return _header_of(hashlib.sha256(data).digest())


def _header_of(digest: bytes) -> str:
    return "sha-256=:" + base64.b64encode(digest).decode() + ":"


class _ChangedMeanwhile(Exception):
    """The file's bytes no longer match what was checked (the server said so)."""


class _FileSlice:
    """A chunk's bytes, read from the file a piece at a time as the request
    body goes out (iterable again for a retry).

    Reading a whole 16 MiB chunk into one bytes object took fresh memory from
    the kernel for nearly every chunk (glibc hands buffers that large back
    when they are freed): 170,939 page faults, each a page zeroed, for a 1 GiB
    upload. Pieces of 1 MiB are freed and taken again from the allocator's
    own memory. Each piece is sent as it is (httpcore joins nothing when a
    write carries one bytes object).
    """

    __slots__ = ("_fd", "_offset", "length")

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self._fd = fd
        self._offset = offset
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        done = 0
        while done < self.length:
            piece = os.pread(self._fd, min(_SEND_PIECE, self.length - done), self._offset + done)
            if not piece:
                raise _ChangedMeanwhile  # the file is shorter now
            done += len(piece)
            yield piece


def _hash_block(fd: int, index: int) -> tuple[bytes, int]:
    data = os.pread(fd, BLOCK_SIZE, index * BLOCK_SIZE)
    return hashlib.sha256(data).digest(), len(data)


def _scanned_digests(job: UploadJob) -> list[bytes] | None:
    """The scan's block digests, if the file still has the stat they were read at.

    An edit that keeps the stat (same size, and mtime within one tick) gets
    past this; the server then refuses the chunk it touched, as it does any
    edit made after the check.
    """
    scanned = job.scanned
    if scanned is None:
        return None
    try:
        st = os.stat(job.file)
    except OSError:
        return None  # the usual check says what became of it
    if st.st_size != job.size or not scanned.still_matches(st):
        return None
    digests = list(scanned.digests)
    return digests if hash_blocks(digests) == job.content_hash else None


@dataclass(frozen=True, slots=True)
class _Checked:
    """What the check read: block digests, and a small file's bytes."""

    digests: list[bytes]
    small_data: bytes | None

    @property
    def block_hashes(self) -> list[str] | None:
        return [d.hex() for d in self.digests] if len(self.digests) > 1 else None


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
        # A file with as many chunks as the pool has threads keeps the pool busy
        # alone; more of them at once only interleave their chunks, so every
        # one lands late, and other devices, which can fetch a file only once
        # it landed, wait for all of them instead of the first. Two at a time:
        # one hashing or completing while the other sends.
        self._pool_fillers = threading.BoundedSemaphore(2)

    def upload(self, job: UploadJob) -> ReportResult | None:
        """The result of landing the file, or None when it changed since the scan."""
        chunk = _chunk_size(job.size)
        if chunk is None or job.size < chunk * self._settings.parallel_chunks:
            return self._upload(job)
        with self._pool_fillers:
            return self._upload(job)

    def _upload(self, job: UploadJob) -> ReportResult | None:
        checked = self._read_and_check(job)
        if checked is None:
            return None
        session = self._session(job, checked.block_hashes)
        if session.status == "completed":
            return self._complete(job, session, checked)
        received = set(session.received)
        missing = [i for i in range(session.chunk_count) if i not in received]
        already = session.chunk_count - len(missing)
        self._counters.add(chunks_already_there=already)
        if already and missing:
            self._reporter.info(
                f"resuming upload of {job.path}: {already} of {session.chunk_count} chunks "
                "already on the server"
            )
        transfer = self._reporter.transfer(verb="uploaded", path=job.path, size_bytes=job.size)
        try:
            self._send(job, session, missing, transfer, checked)
        except _ChangedMeanwhile:
            self._abandon(job, session)
            return None  # edited while it went up: the next round reports the new content
        result = self._complete(job, session, checked)
        transfer.done(
            note=f"{len(missing)} of {session.chunk_count} chunk(s) sent" if already else ""
        )
        return result

    def _read_and_check(self, job: UploadJob) -> _Checked | None:
        if job.size > CHUNKED_OVER_BYTES and (scanned := _scanned_digests(job)) is not None:
            return _Checked(scanned, None)
        try:
            fd = os.open(job.file, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if job.size <= CHUNKED_OVER_BYTES:
                small = os.read(fd, job.size + 1)
                while len(small) <= job.size and (more := os.read(fd, job.size + 1 - len(small))):
                    small += more
                hasher = ContentHasher()
                hasher.update(small)
                if hasher.size != job.size or hasher.hexdigest() != job.content_hash:
                    return None  # edited since the scan: the next round reports it
                return _Checked(hasher.block_digests, small)
            if os.fstat(fd).st_size != job.size:
                return None
            count = -(-job.size // BLOCK_SIZE)
            hashed = list(self._pool.map(lambda i: _hash_block(fd, i), range(count)))
        finally:
            os.close(fd)
        digests = [digest for digest, _ in hashed]
        if sum(n for _, n in hashed) != job.size or hash_blocks(digests) != job.content_hash:
            return None
        return _Checked(digests, None)

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
                chunk_size=_chunk_size(job.size),
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
        checked: _Checked,
    ) -> None:
        if not indexes:
            return
        if checked.small_data is not None and session.chunk_count == 1:
            self._put(session, 0, checked.small_data, transfer, None, declared=False)
            return
        # The server's chunk size is binding; the digests serve when it is one block.
        digests = checked.digests if session.chunk_size == BLOCK_SIZE else None
        # Otherwise, with block_hashes sent, the server checks the chunk's blocks.
        declared = checked.block_hashes is not None
        fd = os.open(job.file, os.O_RDONLY)
        futures: list[Future[None]] = []
        try:
            futures = [
                self._pool.submit(
                    self._put_from_file, session, fd, index, transfer, digests, declared
                )
                for index in indexes
            ]
            for future in futures:
                future.result()
        finally:
            # After a failure, no chunk may still read `fd` once it is closed
            # (its number could name another file by then).
            for future in futures:
                future.cancel()
            wait(futures)
            os.close(fd)

    def _put_from_file(
        self,
        session: UploadSession,
        fd: int,
        index: int,
        transfer: Transfer,
        digests: list[bytes] | None,
        declared: bool,
    ) -> None:
        offset = index * session.chunk_size
        length = min(session.chunk_size, session.size - offset)
        known = digests[index] if digests else None
        if known is None and not declared:
            # Its Content-Digest goes first: the whole chunk is read to hash it.
            data = os.pread(fd, length, offset)
            if len(data) != length:
                raise _ChangedMeanwhile
            self._put(session, index, data, transfer, known, declared=declared)
            return
        # Checked by the server against what is already known: the body is read
        # as it goes out.
        body = _FileSlice(fd, offset, length)
        self._put(session, index, body, transfer, known, declared=declared)

    def _put(
        self,
        session: UploadSession,
        index: int,
        data: bytes | _FileSlice,
        transfer: Transfer,
        known_digest: bytes | None,
        *,
        declared: bool,
    ) -> None:
        self._settings.throttle.take(len(data))
        # A known digest is what the check hashed, as are the declared block
        # hashes: the server compares the bytes that arrive with them, so a
        # later edit cannot slip through.
        digest: str | None
        if known_digest:
            digest = _header_of(known_digest)
        elif declared:
            digest = None
        else:
            assert isinstance(data, bytes)  # a _FileSlice goes only where it is checked
            digest = _digest_header(data)
        checked_by_server = known_digest is not None or declared
        for attempt in range(_CLAIM_RETRIES):
            try:
                self._api.put_chunk(session.id, index=index, data=data, content_digest=digest)
                break
            except ChunkConflict:
                if attempt + 1 == _CLAIM_RETRIES:
                    raise
                time.sleep(_CLAIM_WAIT_S)
            except ApiError as exc:
                if checked_by_server and exc.code == "digest_mismatch":
                    raise _ChangedMeanwhile from exc
                raise
        self._counters.add(chunks_sent=1, uploaded_bytes=len(data))
        transfer.advance(len(data))

    def _abandon(self, job: UploadJob, session: UploadSession) -> None:
        """Drop a session whose file changed under it (its data is useless)."""
        with contextlib.suppress(ClientError):
            self._api.cancel_upload(session.id)
        self._state.forget_upload(path=job.path, content_hash=job.content_hash)

    def _complete(
        self, job: UploadJob, session: UploadSession, checked: _Checked
    ) -> ReportResult | None:
        for _ in range(3):
            try:
                done = self._api.complete_upload(session.id)
            except MissingChunks as exc:
                # Chunks the server lost track of (a claim that died): send them.
                silent = self._reporter.transfer(verb="resent", path=job.path, size_bytes=0)
                try:
                    self._send(job, session, exc.missing, silent, checked)
                except _ChangedMeanwhile:
                    self._abandon(job, session)
                    return None
                continue
            except (HashMismatch, UploadGone):
                self._state.forget_upload(path=job.path, content_hash=job.content_hash)
                return None  # the file changed while it went up: next round
            self._state.forget_upload(path=job.path, content_hash=job.content_hash)
            self._counters.add(uploaded_files=1)
            return done.result
        return None
