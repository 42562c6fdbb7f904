"""Batch upload of small files: many files' bytes in one request (protocol 11.4).

The API layer parses the manifest and hands the rest of the body here piece by
piece (`BatchReceiver.feed`, from worker threads). Each file's bytes are
hashed as they pass and, when the user's store lacks that content, kept: in
memory when it is small enough to be stored inline (at most
`BatchLimits.inline_max_bytes`, and up to `_INLINE_BATCH_BYTES` per batch),
else written to a staging file. `finish` publishes the verified files
(durable: see `BlobStore.publish`), records every new content as this user's
and writes the inline ones' bytes (`content_data`) in that same durable
commit (no file, no rename, no fsync per content), and lands every
file that verified through the report engine, exactly as an upload's
`complete` would: base revision, conflicts, unchanged. A file whose bytes do
not hash to its `content_hash` is answered `rejected` (`hash_mismatch`) and
the others still land. A body that ends early or runs long keeps nothing.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shelfsync.content_hash import EMPTY_HASH, ContentHasher, is_content_hash
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.errors import (
    BatchMalformed,
    BatchTooLarge,
    BatchTruncated,
    HashMismatch,
    InsufficientStorage,
    InvalidInput,
    InvalidPath,
    ShelfsyncError,
    StorageFailure,
)
from shelfsync.server.domain.items import ChangeOp, validate_metadata
from shelfsync.server.domain.paths import normalize_path
from shelfsync.server.services.auth import AuthService, Principal
from shelfsync.server.services.report import MAX_CHANGES as REPORT_MAX_CHANGES
from shelfsync.server.services.report import (
    LocalChange,
    ReportResult,
    ReportService,
    ReportStatus,
)
from shelfsync.server.storage.blobs import BlobStore, StagedFile
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.uploads import UploadRepository

__all__ = ["BatchFileIn", "BatchLimits", "BatchReceiver", "BatchUploadService"]

# Inline content one batch holds in memory until it lands; more goes to
# staging files like larger content (bounds a request's memory).
_INLINE_BATCH_BYTES = 8 * 1024 * 1024
# Inline bytes are kept as views of the body's pieces (no copy, no allocation
# per file: small allocations from many worker threads grew the server's
# memory); a piece so kept stays alive until the batch lands. Past this many
# bytes of pieces kept, further inline bytes are copied instead.
_PINNED_BATCH_BYTES = 2 * _INLINE_BATCH_BYTES


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_files: int  # files per batch
    max_bytes: int  # the files' bytes together
    max_file_bytes: int  # one file (larger ones go through chunked sessions)
    quota_bytes: int | None
    inline_max_bytes: int = 0  # content up to this size is stored in the database


@dataclass(frozen=True, slots=True)
class BatchFileIn:
    path: str
    size: int
    content_hash: str
    base_revision: int | None
    mtime: datetime | None = None
    metadata: dict[str, Any] | None = None


@dataclass(slots=True)
class _Slot:
    """One manifest entry while its bytes stream in."""

    file: BatchFileIn
    path: str  # normalized
    store: bool  # write its bytes (this user's store lacks them, first of its hash)
    error: ShelfsyncError | None = None
    hasher: ContentHasher | None = None
    staged: StagedFile | None = None
    inline: list[bytes | memoryview] | None = None  # its bytes, to be stored in the database


class BatchReceiver:
    """Consumes the files' bytes of one batch, in manifest order."""

    def __init__(
        self, service: BatchUploadService, principal: Principal, slots: list[_Slot]
    ) -> None:
        self._service = service
        self._principal = principal
        self._slots = slots
        self._index = 0  # the slot being received
        self._left = slots[0].file.size if slots else 0  # its bytes still to come
        self._closed = False
        # Staging names: one random prefix per batch, then the slot's index
        # (session-id shaped, so the stale-file sweep covers them).
        self._stage_prefix = uuid.uuid4().hex[:27]
        self._inline_left = _INLINE_BATCH_BYTES
        self._pinned_left = _PINNED_BATCH_BYTES
        self._pinned: object = None  # the last piece inline bytes are views of
        self._open_current()

    @property
    def expected_bytes(self) -> int:
        return sum(s.file.size for s in self._slots)

    def _open_current(self) -> None:
        while self._index < len(self._slots):
            slot = self._slots[self._index]
            slot.hasher = ContentHasher()
            size = slot.file.size
            if slot.store and slot.error is None:
                if size <= self._service.limits.inline_max_bytes and size <= self._inline_left:
                    slot.inline = []
                    self._inline_left -= size
                else:
                    slot.staged = self._service.blobs.stage(
                        f"{self._stage_prefix}-{self._index:08x}"
                    )
            if slot.file.size:
                self._left = slot.file.size
                return
            self._close_current()
            self._index += 1

    def _close_current(self) -> None:
        slot = self._slots[self._index]
        assert slot.hasher is not None
        if slot.error is None and slot.hasher.hexdigest() != slot.file.content_hash:
            slot.error = HashMismatch(
                f"the bytes of {slot.file.path} do not hash to its content_hash; nothing of it "
                "was kept"
            )
        if slot.error is not None and slot.staged is not None:
            slot.staged.discard()
            slot.staged = None
        if slot.error is not None:
            slot.inline = None
        if slot.error is not None and slot.store:
            # A later entry with the same content (and right bytes) stores it instead.
            slot.store = False
            for later in self._slots[self._index + 1 :]:
                if later.file.content_hash == slot.file.content_hash and later.error is None:
                    later.store = True
                    break

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._index >= len(self._slots):
                raise BatchMalformed("the body holds more bytes than its manifest announced")
            slot = self._slots[self._index]
            take = view[: self._left]
            assert slot.hasher is not None
            slot.hasher.update(take)
            if slot.staged is not None:
                slot.staged.write(take)
            elif slot.inline is not None:
                slot.inline.append(self._keep(data, view, take))
            self._left -= len(take)
            view = view[len(take) :]
            if self._left == 0:
                self._close_current()
                self._index += 1
                self._open_current()

    def _keep(
        self, data: bytes | bytearray | memoryview, view: memoryview, take: memoryview
    ) -> bytes | memoryview:
        """`take` (a part of the piece `data`) kept for later: a view while the
        pinned budget lasts and the piece is immutable, else a copy."""
        if not isinstance(data, bytes):
            return bytes(take)  # the caller may reuse its buffer
        if data is not self._pinned:
            if self._pinned_left < len(view):
                return bytes(take)
            self._pinned_left -= len(view)
            self._pinned = data
        return take

    def finish(self) -> list[ReportResult]:
        if self._index < len(self._slots):
            slot = self._slots[self._index]
            raise BatchTruncated(
                f"the body ended inside file {self._index} ({slot.file.path}): "
                f"{self._left} of its {slot.file.size} bytes missing; nothing was kept"
            )
        self._closed = True
        return self._service.land(self._principal, self._slots)

    def abort(self) -> None:
        """Drop every staging file (a failed or abandoned request)."""
        for slot in self._slots:
            slot.inline = None
            if slot.staged is not None:
                slot.staged.discard()
                slot.staged = None


class BatchUploadService:
    def __init__(
        self, *, db: Database, blobs: BlobStore, report: ReportService, limits: BatchLimits
    ) -> None:
        self._db = db
        self.blobs = blobs
        self._report = report
        self.limits = limits

    def begin(self, principal: Principal, files: list[BatchFileIn]) -> BatchReceiver:
        """Check the manifest against the limits and the quota; a receiver for its bytes."""
        AuthService.require_device(principal)
        limits = self.limits
        if not 1 <= len(files) <= limits.max_files:
            raise BatchTooLarge(f"a batch carries 1 to {limits.max_files} files")
        total = 0
        for f in files:
            if f.size < 0:
                raise BatchMalformed(f"{f.path}: size must not be negative")
            if f.size > limits.max_file_bytes:
                raise BatchTooLarge(
                    f"{f.path}: files in a batch may be at most {limits.max_file_bytes} bytes; "
                    "upload larger ones in chunks"
                )
            total += f.size
        if total > limits.max_bytes:
            raise BatchTooLarge(f"a batch may carry at most {limits.max_bytes} bytes of files")
        slots = [self._slot(f) for f in files]
        hashes = {s.file.content_hash for s in slots if s.error is None and s.file.size}
        now = utcnow()
        with self._db.read() as tx:
            contents = ContentRepository(tx)
            held = contents.sizes_for_user(principal.user_id, hashes) if hashes else {}
            new_sizes: dict[str, int] = {}
            for slot in slots:
                h = slot.file.content_hash
                if slot.error is not None or not slot.file.size or h in held:
                    continue
                if h not in new_sizes:
                    new_sizes[h] = slot.file.size
                    slot.store = True
            if new_sizes and limits.quota_bytes is not None:
                used = contents.used_bytes(principal.user_id) + UploadRepository(tx).pending_bytes(
                    principal.user_id, now=now
                )
                if used + sum(new_sizes.values()) > limits.quota_bytes:
                    raise InsufficientStorage("this batch would exceed your storage quota")
        return BatchReceiver(self, principal, slots)

    @staticmethod
    def _slot(f: BatchFileIn) -> _Slot:
        """Checks of one entry; a failure rejects that file only (its bytes are skipped)."""
        error: ShelfsyncError | None = None
        path = f.path
        try:
            path = normalize_path(f.path)
            if not is_content_hash(f.content_hash):
                raise InvalidInput("content_hash must be 64 lowercase hex characters")
            if (f.content_hash == EMPTY_HASH) != (f.size == 0):
                raise InvalidInput("size 0 goes with the empty content hash, and only with it")
            if f.base_revision is not None and f.base_revision < 1:
                raise InvalidInput("base_revision must be null or a revision number (1 or more)")
            if f.metadata is not None:
                validate_metadata(f.metadata)
        except (InvalidInput, InvalidPath) as exc:
            error = exc
        return _Slot(file=f, path=path, store=False, error=error)

    def land(self, principal: Principal, slots: list[_Slot]) -> list[ReportResult]:
        """Publish the verified files, record the new contents (with the inline
        ones' bytes, in the same durable commit), and report every verified file."""
        staged = [(s.staged, s.file.content_hash) for s in slots if s.staged is not None]
        try:
            self.blobs.publish(staged)
        finally:
            for slot in slots:
                slot.staged = None
        stored = [s for s in slots if s.store and s.error is None]
        if stored:
            with self._db.write() as tx:
                contents = ContentRepository(tx)
                # The collector may have removed a content between `publish`
                # (which found its file and dropped the copy just received)
                # and now. Rows held here cannot go until commit, so a file
                # present now stays; a missing one is reported for a retry,
                # unless the content is stored inline. Inline bytes are kept
                # until here: a content recorded already (held now) is stored
                # in one form or the other, the others are written below.
                held = contents.hold_many([s.file.content_hash for s in stored])
                missing = [
                    s
                    for s in stored
                    if s.inline is None
                    and not os.path.isfile(self.blobs.object_file(s.file.content_hash))
                ]
                if missing:
                    inline = contents.inline_hashes({s.file.content_hash for s in missing})
                    for slot in missing:
                        if slot.file.content_hash not in inline:
                            slot.error = StorageFailure(
                                "the stored copy of this content went away meanwhile; send it again"
                            )
                stored = [s for s in stored if s.error is None]
                blocks: dict[str, list[str]] = {}
                for slot in stored:
                    assert slot.hasher is not None
                    # Its 4 MiB block digests, indexed as `complete` does.
                    blocks[slot.file.content_hash] = [d.hex() for d in slot.hasher.block_digests]
                contents.add_many(
                    user_id=principal.user_id,
                    sizes={s.file.content_hash: s.file.size for s in stored},
                    now=utcnow(),
                )
                contents.add_data_many(
                    {
                        s.file.content_hash: s.inline[0]
                        if len(s.inline) == 1
                        else b"".join(s.inline)
                        for s in stored
                        if s.inline is not None and s.file.content_hash not in held
                    }
                )
                contents.add_blocks_many(blocks)
            for slot in slots:
                slot.inline = None
        changes = [
            LocalChange(
                op=ChangeOp.UPSERT,
                path=s.path,
                base_revision=s.file.base_revision,
                content_hash=s.file.content_hash,
                size=s.file.size,
                mtime=s.file.mtime,
                metadata=s.file.metadata,
            )
            for s in slots
            if s.error is None
        ]
        landed: list[ReportResult] = []
        for start in range(0, len(changes), REPORT_MAX_CHANGES):
            landed += self._report.report(principal, changes[start : start + REPORT_MAX_CHANGES])
        reported = iter(landed)
        results: list[ReportResult] = []
        for slot in slots:
            if slot.error is not None:
                results.append(
                    ReportResult(slot.file.path, ReportStatus.REJECTED, error=slot.error)
                )
            else:
                results.append(next(reported))
        return results
