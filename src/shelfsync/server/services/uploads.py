"""Chunked, resumable uploads with dedupe and delta (protocol section 9).

A session owns one preallocated file (and, when created with `block_hashes`,
the declared block digests beside it, which every block received must match).
Each chunk PUT claims its index (a commit that need not be durable: a claim
lost in a crash only means the chunk is sent again), streams into its offset
while its 4 MiB blocks are hashed, is fdatasynced, and only then recorded as
received (with its block digests) in a durable commit. `complete` checks the content hash from
those digests (no re-read, no copy), renames the file into the content store,
and lands the change through the report engine in one transaction.

Small content goes inline at `complete`, as a batch upload's does (so a
content is stored inline whenever it is small enough, whichever way it came):
a session of at most `UploadLimits.inline_max_bytes` is read back from its
file, hashed again, and written to the database in the transaction that
records it and lands the change; its file is dropped after the commit. A
delta upload copies known blocks of inline content from the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from shelfsync.content_hash import (
    BLOCK_SIZE,
    EMPTY_HASH,
    ContentHasher,
    hash_blocks,
    hash_bytes,
    is_content_hash,
)
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.errors import (
    ChunkConflict,
    DeviceNotFound,
    DigestMismatch,
    Gone,
    HashMismatch,
    InsufficientStorage,
    InvalidInput,
    MissingChunks,
    NotFound,
    SessionNotPending,
    StorageFailure,
    TooLarge,
    TooManySessions,
)
from shelfsync.server.domain.items import ChangeOp, validate_metadata
from shelfsync.server.domain.paths import normalize_path
from shelfsync.server.domain.uploads import (
    UploadSession,
    UploadStatus,
    chunk_count,
    chunk_length,
    plan_chunk_size,
)
from shelfsync.server.services.auth import AuthService, Principal
from shelfsync.server.services.library_writer import LibraryWriter
from shelfsync.server.services.notifier import ChangeNotifier
from shelfsync.server.services.report import (
    LocalChange,
    ReportResult,
    ReportService,
    ReportStatus,
)
from shelfsync.server.storage.blobs import BlobStore, BodyPiece, ChunkFile
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.devices import DeviceRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.job_locks import Job, exclusive_job
from shelfsync.server.storage.uploads import UploadRepository

__all__ = ["ChunkReceipt", "ChunkReceiver", "UploadLimits", "UploadService"]

# A claim not refreshed for this long belongs to a request that died (a crash,
# a lost client); a live request refreshes its claim every _CLAIM_REFRESH_S.
_CLAIM_STALE = timedelta(seconds=30)
_CLAIM_REFRESH_S = 10.0
_DIGEST = re.compile(r"sha-256=:([A-Za-z0-9+/=]+):")


class _ContentVanished(Exception):
    """The held content of a deduplicated session was collected meanwhile."""


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_file_size_bytes: int
    max_sessions_per_device: int
    quota_bytes: int | None
    expiry: timedelta
    inline_max_bytes: int = 0  # content up to this size is stored in the database


@dataclass(frozen=True, slots=True)
class ChunkReceipt:
    index: int
    size: int
    received_count: int
    chunk_count: int


def parse_content_digest(header: str | None) -> bytes | None:
    """The SHA-256 of an RFC 9530 `Content-Digest`, or None when it names none."""
    if header is None:
        return None
    for member in header.split(","):
        match = _DIGEST.fullmatch(member.strip())
        if match:
            try:
                digest = base64.b64decode(match.group(1), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InvalidInput("Content-Digest: sha-256 value is not base64") from exc
            if len(digest) != 32:
                raise InvalidInput("Content-Digest: sha-256 value is not 32 bytes")
            return digest
    if "sha-256" in header:
        raise InvalidInput("Content-Digest: malformed sha-256 member")
    return None


def _single(blocks: list[bytes]) -> bytes:
    """The SHA-256 of a chunk that is at most one block long."""
    return blocks[0] if blocks else hashlib.sha256(b"").digest()


class ChunkReceiver:
    """Receives one chunk body piece by piece (called from worker threads)."""

    def __init__(
        self,
        service: UploadService,
        *,
        session: UploadSession,
        index: int,
        expected: int,
        claim: str | None,
        stored_digests: str | None,
        digest: bytes | None,
        declared: bytes | None = None,
    ) -> None:
        self._service = service
        self.session = session
        self.index = index
        self.expected = expected
        self._claim = claim
        self._stored = stored_digests
        self._digest = digest
        # The block digests the session was created with (`block_hashes`), when
        # it was: each block of the chunk must match its own, so a chunk of any
        # size is checked as it arrives without hashing its bytes twice.
        self._declared = declared
        # A chunk of one block (4 MiB chunks) has the SHA-256 of that block as
        # its Content-Digest: the block digest computed anyway checks it, so
        # every byte is hashed once. A longer chunk needs a hash of its own.
        self._whole = hashlib.sha256() if digest is not None and expected > BLOCK_SIZE else None
        self._hasher = ContentHasher()
        self._file: ChunkFile | None = None
        if claim is not None:
            self._file = service.blobs.open_chunk(session.id, index * session.chunk_size)
        self.received = 0
        self._done = False
        self._refreshed = time.monotonic()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self.feed_pieces([data])

    def feed_pieces(self, pieces: Sequence[BodyPiece]) -> None:
        """The next pieces of the body, in order: hashed in place, written with
        one vectored write (hashlib and the write release the GIL)."""
        if self._claim is not None and time.monotonic() - self._refreshed > _CLAIM_REFRESH_S:
            self._service.refresh_claim(self.session.id, self.index, self._claim)
            self._refreshed = time.monotonic()
        self.received += sum(len(p) for p in pieces)
        if self.received > self.expected:
            raise InvalidInput(f"chunk {self.index} is longer than its {self.expected} bytes")
        for piece in pieces:
            self._hasher.update(piece)
            if self._whole is not None:
                self._whole.update(piece)
        if self._file is not None:
            self._file.write_pieces(pieces)

    def finish(self, last: Sequence[BodyPiece] = ()) -> ChunkReceipt:
        """Take the body's `last` pieces, then check, sync and record the chunk
        (one worker-thread hop for the end of a chunk)."""
        if last:
            self.feed_pieces(last)
        if self.received != self.expected:
            raise InvalidInput(
                f"chunk {self.index} must be {self.expected} bytes, got {self.received}"
            )
        blocks = self._hasher.finish_blocks()
        if self._digest is not None:
            whole = self._whole.digest() if self._whole is not None else _single(blocks)
            if whole != self._digest:
                raise DigestMismatch(
                    "the chunk does not match its Content-Digest; nothing was kept"
                )
        if self._declared is not None and b"".join(blocks) != self._declared:
            raise DigestMismatch(
                "the chunk does not match the block_hashes its session was created with; "
                "nothing was kept"
            )
        digests = "".join(d.hex() for d in blocks)
        if self._claim is None:
            self._done = True
            # A repeat of a received chunk: fine with the same bytes, 409 with others
            # (a chunk recorded without digests has nothing to compare with).
            if self._stored and digests != self._stored:
                raise ChunkConflict(f"chunk {self.index} was already received with other bytes")
            return self._service.receipt(self.session.id, self.index)
        assert self._file is not None
        self._file.sync()
        self._file.close()
        self._file = None
        self._done = True
        return self._service.record_chunk(
            self.session, self.index, claim=self._claim, size=self.received, digests=digests
        )

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self._done and self._claim is not None:
            self._done = True
            self._service.release(self.session.id, self.index, self._claim)


class UploadService:
    def __init__(
        self,
        *,
        db: Database,
        blobs: BlobStore,
        report: ReportService,
        notifier: ChangeNotifier,
        limits: UploadLimits,
    ) -> None:
        self._db = db
        self.blobs = blobs
        self._report = report
        self._notifier = notifier
        self.limits = limits

    # -- sessions --------------------------------------------------------

    def create(
        self,
        principal: Principal,
        *,
        path: str,
        size: int,
        content_hash: str,
        base_revision: int | None,
        mtime: datetime | None = None,
        metadata: dict[str, Any] | None = None,
        chunk_size: int | None = None,
        block_hashes: list[str] | None = None,
    ) -> UploadSession:
        device = AuthService.require_device(principal)
        path = normalize_path(path)
        if not is_content_hash(content_hash):
            raise InvalidInput("content_hash must be 64 lowercase hex characters")
        if size < 0:
            raise InvalidInput("size must not be negative")
        if size > self.limits.max_file_size_bytes:
            raise TooLarge(f"files may be at most {self.limits.max_file_size_bytes} bytes")
        if (content_hash == EMPTY_HASH) != (size == 0):
            raise InvalidInput("size 0 goes with the empty content hash, and only with it")
        if metadata is not None:
            validate_metadata(metadata)
        planned = plan_chunk_size(size=size, requested=chunk_size)
        if planned is None:
            raise TooLarge("the file needs more than 10,000 chunks of 64 MiB")
        blocks = -(-size // BLOCK_SIZE)
        if block_hashes is not None:
            if len(block_hashes) != blocks or not all(is_content_hash(h) for h in block_hashes):
                raise InvalidInput(f"block_hashes must hold {blocks} lowercase hex SHA-256 digests")
            if size and hash_blocks(bytes.fromhex(h) for h in block_hashes) != content_hash:
                raise InvalidInput("block_hashes do not hash to content_hash")
        now = utcnow()
        with self._db.write() as tx:
            uploads = UploadRepository(tx)
            existing = uploads.pending_for(
                device_id=device.id, path=path, content_hash=content_hash, size=size
            )
            if existing is not None and existing.expires_at > now:
                expires = now + self.limits.expiry
                uploads.touch(existing.id, now=now, expires_at=expires)
                return replace(existing, updated_at=now, expires_at=expires)
            if uploads.count_pending(device.id, now=now) >= self.limits.max_sessions_per_device:
                raise TooManySessions(
                    f"a device may hold {self.limits.max_sessions_per_device} live upload "
                    "sessions: complete or cancel some"
                )
            contents = ContentRepository(tx)
            held = content_hash == EMPTY_HASH or (
                contents.size_for_user(principal.user_id, content_hash) is not None
            )
            if not held and self.limits.quota_bytes is not None:
                used = contents.used_bytes(principal.user_id) + uploads.pending_bytes(
                    principal.user_id, now=now
                )
                if used + size > self.limits.quota_bytes:
                    raise InsufficientStorage("this upload would exceed your storage quota")
            known = (
                contents.known_blocks(principal.user_id, set(block_hashes))
                if block_hashes and not held
                else {}
            )
            # A held content's block digests, so that bytes sent anyway for its
            # chunks are compared like any received chunk's (same 200, other 409).
            held_blocks = contents.block_digests(content_hash) if held and size else []
        session = UploadSession(
            id=str(uuid.uuid4()),
            user_id=principal.user_id,
            device_id=device.id,
            path=path,
            size=size,
            content_hash=content_hash,
            chunk_size=planned,
            chunk_count=chunk_count(size=size, chunk_size=planned),
            status=UploadStatus.PENDING,
            deduplicated=held,
            mtime=mtime,
            metadata=metadata,
            base_revision=base_revision,
            created_at=now,
            updated_at=now,
            expires_at=now + self.limits.expiry,
        )
        reused: dict[int, str] = {}
        if not held:
            declared = b"".join(bytes.fromhex(h) for h in block_hashes) if block_hashes else None
            self.blobs.create_session_file(session.id, size, declared)
            if block_hashes:
                reused = self._copy_known_chunks(session, block_hashes, known)
        try:
            with self._db.write() as tx:
                # The held content stays share-locked until this session row is
                # committed, from when on it counts as a reference (content_gc.py).
                vanished = bool(held and size) and (
                    ContentRepository(tx).size_for_user(principal.user_id, content_hash) is None
                )
                if vanished:
                    raise _ContentVanished
                uploads = UploadRepository(tx)
                uploads.insert(session)
                per_chunk = planned // BLOCK_SIZE
                for index in range(session.chunk_count) if held else ():
                    length = chunk_length(size=size, chunk_size=planned, index=index)
                    part = held_blocks[index * per_chunk : (index + 1) * per_chunk]
                    uploads.mark_received(
                        session.id,
                        index,
                        claim=None,
                        size=length,
                        block_digests="".join(part) if len(held_blocks) == blocks else "",
                    )
                for index, digests in reused.items():
                    length = chunk_length(size=size, chunk_size=planned, index=index)
                    uploads.mark_received(
                        session.id, index, claim=None, size=length, block_digests=digests
                    )
        except _ContentVanished:
            # Garbage-collected (by any process) between the two transactions:
            # start again, this time as an upload of the bytes.
            return self.create(
                principal,
                path=path,
                size=size,
                content_hash=content_hash,
                base_revision=base_revision,
                mtime=mtime,
                metadata=metadata,
                chunk_size=chunk_size,
                block_hashes=block_hashes,
            )
        except BaseException:
            self.blobs.discard_session(session.id)
            raise
        received = tuple(range(session.chunk_count)) if held else tuple(sorted(reused))
        return replace(session, received=received)

    def _copy_known_chunks(
        self, session: UploadSession, block_hashes: list[str], known: dict[str, tuple[str, int]]
    ) -> dict[int, str]:
        """Copy, server-side, every chunk made only of blocks the user already has."""
        per_chunk = session.chunk_size // BLOCK_SIZE
        reused: dict[int, str] = {}
        usable = [
            block_hashes[i * per_chunk : (i + 1) * per_chunk] for i in range(session.chunk_count)
        ]
        sources = {
            known[d][0] for digests in usable if all(d in known for d in digests) for d in digests
        }
        # Known blocks of inline content come from the database (one query).
        inline: dict[str, bytes] = {}
        if sources:
            with self._db.read() as tx:
                inline = ContentRepository(tx).inline_data(sources)
        for index in range(session.chunk_count):
            digests = usable[index]
            if not digests or not all(d in known for d in digests):
                continue
            for offset, digest in enumerate(digests):
                block = index * per_chunk + offset
                source_hash, source_block = known[digest]
                length = min(BLOCK_SIZE, session.size - block * BLOCK_SIZE)
                data = inline.get(source_hash)
                if data is not None:
                    start = source_block * BLOCK_SIZE
                    piece = data[start : start + length]
                    if len(piece) != length:
                        raise StorageFailure("stored content is shorter than its record")
                    self.blobs.write_into_session(
                        session_id=session.id, dst_offset=block * BLOCK_SIZE, data=piece
                    )
                    continue
                self.blobs.copy_into_session(
                    content_hash=source_hash,
                    src_offset=source_block * BLOCK_SIZE,
                    session_id=session.id,
                    dst_offset=block * BLOCK_SIZE,
                    length=length,
                )
            reused[index] = "".join(digests)
        return reused

    def get(self, principal: Principal, session_id: str) -> UploadSession:
        with self._db.read() as tx:
            session = UploadRepository(tx).get(session_id)
        return self._visible(principal, session)

    @staticmethod
    def _visible(principal: Principal, session: UploadSession | None) -> UploadSession:
        # Another user's session is indistinguishable from a missing one.
        if (
            session is None
            or session.user_id != principal.user_id
            or session.status is UploadStatus.CANCELLED
        ):
            raise NotFound("no such upload session")
        return session

    def cancel(self, principal: Principal, session_id: str) -> None:
        now = utcnow()
        with self._db.write() as tx:
            uploads = UploadRepository(tx)
            session = self._visible(principal, uploads.get(session_id, lock=True))
            if session.status is UploadStatus.PENDING:
                uploads.set_status(session, UploadStatus.CANCELLED, now=now)
            elif session.status is not UploadStatus.EXPIRED:
                uploads.set_status(session, UploadStatus.CANCELLED, now=now, result=session.result)
        self.blobs.discard_session(session_id)

    # -- chunks ----------------------------------------------------------

    def begin_chunk(
        self,
        principal: Principal,
        session_id: str,
        index: int,
        *,
        content_length: int | None,
        content_digest: str | None,
    ) -> ChunkReceiver:
        digest = parse_content_digest(content_digest)
        now = utcnow()
        # Not durable: a claim lost in a crash or power cut only means the chunk
        # is sent again (it was never acknowledged), and the durable commit of
        # the chunk's record makes the claim durable with it.
        with self._db.write(durable=False) as tx:
            uploads = UploadRepository(tx)
            session = self._visible(
                principal, uploads.get(session_id, lock=True, with_received=False)
            )
            self._check_pending(uploads, session, now)
            if not 0 <= index < session.chunk_count:
                raise InvalidInput(f"chunk index must be 0 to {session.chunk_count - 1}")
            expected = chunk_length(size=session.size, chunk_size=session.chunk_size, index=index)
            if content_length is not None and content_length != expected:
                raise InvalidInput(f"chunk {index} must be {expected} bytes")
            record = uploads.chunk(session_id, index)
            if record is not None and record.received:
                claim = None
                stored = record.block_digests
            elif (
                record is not None
                and record.claimed_at is not None
                and now - record.claimed_at < _CLAIM_STALE
            ):
                raise ChunkConflict(f"chunk {index} is being written by another request")
            else:
                claim = str(uuid.uuid4())
                stored = None
                uploads.claim_chunk(session_id, index, claim=claim, size=expected, now=now)
        declared = None
        if claim is not None and not session.deduplicated:
            try:
                declared = self.blobs.declared_blocks(
                    session_id,
                    first=index * (session.chunk_size // BLOCK_SIZE),
                    count=-(-expected // BLOCK_SIZE),
                )
            except BaseException:
                self.release(session_id, index, claim)
                raise
        return ChunkReceiver(
            self,
            session=session,
            index=index,
            expected=expected,
            claim=claim,
            stored_digests=stored,
            digest=digest,
            declared=declared,
        )

    def _check_pending(
        self, uploads: UploadRepository, session: UploadSession, now: datetime
    ) -> None:
        if session.status is UploadStatus.EXPIRED:
            raise Gone("the upload session expired: start a new one")
        if session.status is UploadStatus.PENDING and session.expires_at <= now:
            uploads.set_status(session, UploadStatus.EXPIRED, now=now)
            raise Gone("the upload session expired: start a new one")
        if session.status is not UploadStatus.PENDING:
            raise SessionNotPending(f"the upload session is {session.status.value}")

    def record_chunk(
        self, session: UploadSession, index: int, *, claim: str, size: int, digests: str
    ) -> ChunkReceipt:
        now = utcnow()
        with self._db.write() as tx:
            uploads = UploadRepository(tx)
            if not uploads.mark_received(
                session.id, index, claim=claim, size=size, block_digests=digests
            ):
                raise ChunkConflict(f"chunk {index} was taken over by another request")
            uploads.touch(session.id, now=now, expires_at=now + self.limits.expiry)
            received = uploads.received_count(session.id)
        return ChunkReceipt(index, size, received, session.chunk_count)

    def receipt(self, session_id: str, index: int) -> ChunkReceipt:
        with self._db.read() as tx:
            session = UploadRepository(tx).get(session_id)
        assert session is not None
        size = chunk_length(size=session.size, chunk_size=session.chunk_size, index=index)
        return ChunkReceipt(index, size, len(session.received), session.chunk_count)

    def refresh_claim(self, session_id: str, index: int, claim: str) -> None:
        with self._db.write(durable=False) as tx:  # a claim need not be durable
            UploadRepository(tx).refresh_claim(session_id, index, claim=claim, now=utcnow())

    def drop_claims(self) -> None:
        """At start-up of the only server process: no request is in flight."""
        with self._db.write() as tx:
            UploadRepository(tx).drop_claims()

    def release(self, session_id: str, index: int, claim: str) -> None:
        with self._db.write(durable=False) as tx:
            UploadRepository(tx).release_claim(session_id, index, claim=claim)

    # -- completion ------------------------------------------------------

    def complete(self, principal: Principal, session_id: str) -> tuple[UploadSession, ReportResult]:
        now = utcnow()
        with self._db.write() as tx:
            writer = LibraryWriter(tx, user_id=principal.user_id, now=now)
            uploads = UploadRepository(tx)
            session = self._visible(principal, uploads.get(session_id, lock=True))
            if session.status is UploadStatus.COMPLETED and session.result is not None:
                return session, _result_from(session.result)
            if session.status is UploadStatus.FAILED:
                raise HashMismatch("the uploaded bytes did not match content_hash")
            self._check_pending(uploads, session, now)
            chunks = {c.index: c for c in uploads.chunks(session_id) if c.received}
            missing = [i for i in range(session.chunk_count) if i not in chunks]
            if missing:
                raise MissingChunks(
                    f"{len(missing)} chunk(s) not received yet", missing=missing[:1000]
                )
            if not session.deduplicated:
                digests = [
                    bytes.fromhex(chunks[i].block_digests or "") for i in range(session.chunk_count)
                ]
                blocks = [d[k : k + 32] for d in digests for k in range(0, len(d), 32)]
                computed = hash_blocks(blocks) if blocks else EMPTY_HASH
                if computed != session.content_hash:
                    uploads.set_status(session, UploadStatus.FAILED, now=now)
                    failed = True
                else:
                    failed = False
                    # Another process's garbage collection may be removing an older
                    # copy of this very content: wait for it, or keep it off, before
                    # the session file is dropped in favour of the stored one.
                    stored = writer.contents.hold(session.content_hash)
                    inline = 0 < session.size <= self.limits.inline_max_bytes
                    data = None
                    if inline and not stored:
                        # Small: into the database with the record (module doc).
                        data = self.blobs.read_session(session.id, session.size)
                        if hash_bytes(data) != session.content_hash:
                            raise StorageFailure("an upload session's file changed on disk")
                    elif not inline:
                        self.blobs.commit_session(session.id, session.content_hash)
                    contents = writer.contents
                    contents.add(
                        user_id=principal.user_id,
                        content_hash=session.content_hash,
                        size=session.size,
                        now=now,
                    )
                    if data is not None:
                        contents.add_data(session.content_hash, data)
                    contents.add_blocks(session.content_hash, [b.hex() for b in blocks])
            else:
                failed = False
            if not failed:
                device = DeviceRepository(tx).get(session.device_id)
                if device is None:
                    raise DeviceNotFound("the session's device was deleted")
                result = self._report.apply_one(
                    writer,
                    device,
                    LocalChange(
                        op=ChangeOp.UPSERT,
                        path=session.path,
                        base_revision=session.base_revision,
                        content_hash=session.content_hash,
                        size=session.size,
                        mtime=session.mtime,
                        metadata=session.metadata,
                    ),
                )
                session = uploads.set_status(
                    session, UploadStatus.COMPLETED, now=now, result=_result_to(result)
                )
                changed = writer.finish()
        if failed:
            self.blobs.discard_session(session.id)
            raise HashMismatch("the uploaded bytes do not hash to content_hash; start again")
        if not session.deduplicated and 0 < session.size <= self.limits.inline_max_bytes:
            # Stored inline (or already stored): the file is needed no more. A
            # crash before this leaves it to the stale-file sweep.
            self.blobs.discard_session(session.id)
        if changed:
            self._notifier.notify(principal.user_id)
        return session, result

    # -- housekeeping ----------------------------------------------------

    def expire_idle(self) -> int:
        """Expire idle sessions and drop their files; 0 when another runner (another
        server process) holds the job."""
        with exclusive_job(self._db, Job.UPLOAD_EXPIRY) as mine:
            return self._expire_idle() if mine else 0

    def _expire_idle(self) -> int:
        now = utcnow()
        with self._db.write() as tx:
            uploads = UploadRepository(tx)
            expired = uploads.expired_pending(now=now, limit=1000)
            for session in expired:
                uploads.set_status(session, UploadStatus.EXPIRED, now=now)
            live = uploads.pending_ids()
            uploads.purge_finished(before=now - timedelta(days=30))
        for session in expired:
            self.blobs.discard_session(session.id)
        for stale in self.blobs.stale_session_files(live):
            self.blobs.discard_session(stale)
        return len(expired)


def _result_to(result: ReportResult) -> dict[str, Any]:
    return {
        "path": result.path,
        "status": result.status.value,
        "id": result.id,
        "revision": result.revision,
        "seq": result.seq,
        "conflict_id": result.conflict_id,
    }


def _result_from(data: dict[str, Any]) -> ReportResult:
    return ReportResult(
        path=data["path"],
        status=ReportStatus(data["status"]),
        id=data.get("id"),
        revision=data.get("revision"),
        seq=data.get("seq"),
        conflict_id=data.get("conflict_id"),
    )
