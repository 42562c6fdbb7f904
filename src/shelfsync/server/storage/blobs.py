"""The content-addressed blob store: one file per content, written crash-safely.

Small content (up to the server's inline limit) is not here: it is stored in
the database (`content_data`, see storage/contents.py), in the transaction that
records it. A content is inline exactly when it has a `content_data` row;
every other content is one file here.

Layout under the content directory:

    objects/ab/cd/<content hash>   finished, verified content (one file each)
    uploads/<session id>.part      an upload session's preallocated file
    uploads/<session id>.blocks    the block digests its client declared (32 bytes
                                   each), which every received block must match
    trash/<content hash>.<nonce>   content on its way out (garbage collection)

A session file becomes an object by `rename` after its data was fdatasynced,
followed by an fsync of the directory: a crash leaves either nothing or a
whole, verified file under objects/. A batch upload's files are staged under
uploads/ too (same naming, so the stale-file sweep covers them) and published
together: one `syncfs` makes every staged file's bytes durable, the renames
follow, and a second `syncfs` makes the renames and new folders durable.
Library paths never reach this module: files are named by content hash and
session id only, so no client-supplied string is ever joined onto a directory.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from shelfsync.direct_io import DIRECT_ALIGN, DIRECT_IO, pwrite_direct
from shelfsync.durable import sync_filesystem as _sync_filesystem
from shelfsync.server.domain.errors import InsufficientStorage, StorageFailure

__all__ = [
    "DIRECT_BUFFERS",
    "DIRECT_BUFFER_BYTES",
    "AlignedBuffers",
    "BlobStore",
    "BodyPiece",
    "ChunkFile",
    "StagedFile",
]

_HASH = re.compile(r"^[0-9a-f]{64}$")
_SESSION = re.compile(r"^[0-9a-f-]{36}$")
_COPY_STEP = 64 * 1024 * 1024
_DIGEST_BYTES = 32
# Buffers per pwritev (the kernel takes at most IOV_MAX, 1024 on Linux).
_IOV_BATCH = 512
# Direct I/O (shelfsync/direct_io.py) goes through page-aligned buffers of
# DIRECT_BUFFER_BYTES.
DIRECT_BUFFER_BYTES = 1024 * 1024
# objects/ab/cd/<hash>: the leaf folder is a name's last 65 characters off, its parent 3 more.
_FANOUT_LEAF = 65
_FANOUT_STEP = 3


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """mkdir -p, with each new directory's entry fsynced into its parent, so a
    power cut cannot lose a folder that a committed record depends on."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        _fsync_dir(folder.parent)


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.pwrite(fd, view, len(data) - len(view)) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_fanout(leaf: str) -> None:
    """objects/ab/cd for a new object, and objects/ab first when it is missing
    too (their entries are made durable by the caller's syncfs)."""
    try:
        os.mkdir(leaf)
    except FileExistsError:
        return
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            os.mkdir(leaf[:-_FANOUT_STEP])
        with contextlib.suppress(FileExistsError):
            os.mkdir(leaf)


@contextlib.contextmanager
def _io_errors() -> Iterator[None]:
    """Disk full becomes 507, any other I/O failure 503: never a 500, never silent."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("the server's content storage is full") from exc
        raise StorageFailure(f"content storage failed: {exc.strerror or exc}") from exc


class AlignedBuffers:
    """Page-aligned buffers (anonymous mmaps) for direct I/O, kept for reuse:
    memory the process already touched costs nothing to fill again, where new
    pages cost a fault each (and, on a VM that hands freed memory back to its
    host, a fault on the host as well)."""

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self._keep = keep
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, self.size)

    def give(self, buffer: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buffer)
                return
        # A view of it may still be alive (in a traceback's frame, say): then
        # it is freed with that view.
        with contextlib.suppress(BufferError):
            buffer.close()


# A piece of a chunk's body; an mmap is one of DIRECT_BUFFERS, written from
# where it is (ChunkFile.write_pieces).
BodyPiece = bytes | bytearray | memoryview | mmap.mmap

# Shared by the chunk writes here, the receive buffers of chunk PUTs (one per
# chunk in flight, api/routes/upload.py) and the direct reads of downloads.
DIRECT_BUFFERS = AlignedBuffers(DIRECT_BUFFER_BYTES, keep=16)


class ChunkFile:
    """An open session file for writing one chunk at its offset.

    With `direct` (a descriptor opened with O_DIRECT), the body is gathered in
    a page-aligned buffer and written past the page cache, 1 MiB at a time; the
    unaligned end of a file's last chunk goes through the page cache, and the
    fdatasync at the end covers both. Caching what is being written helps no
    one: the next reader is a download, which reads a new large file past the
    cache too and caches it only from its second request on
    (api/file_responses.py). So the copy into the page cache (a third of the
    server's CPU in an upload's profile) and the pages it takes are saved, as
    databases and object stores (MinIO) do for the same reason. Where the file system
    refuses an aligned direct write (EINVAL), this chunk and every later one
    go through the page cache.
    """

    def __init__(
        self, fd: int, offset: int, *, direct: int | None = None, store: BlobStore | None = None
    ) -> None:
        self._fd = fd
        self._direct = direct
        self._store = store
        self.offset = offset
        self.written = 0
        self._stage: mmap.mmap | None = None
        self._staged = 0
        if direct is not None:
            self._stage = DIRECT_BUFFERS.take()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.write_pieces([data])

    def write_pieces(self, pieces: Sequence[BodyPiece]) -> None:
        """Write the pieces in order. A whole aligned buffer (one of
        DIRECT_BUFFERS, an `mmap`) arriving at a stage boundary is written
        from where it is, not copied into the stage first."""
        if (
            len(pieces) == 1
            and self._stage is not None
            and not self._staged
            and type(pieces[0]) is mmap.mmap
            and len(pieces[0]) == DIRECT_BUFFER_BYTES
        ):
            with memoryview(pieces[0]) as whole:
                refused = self._write_direct(whole)
            if refused:
                self._refused()
            return
        views = [memoryview(p).cast("B") for p in pieces if len(p)]
        first = 0
        while first < len(views) and self._stage is not None:
            view = views[first]
            n = min(len(view), DIRECT_BUFFER_BYTES - self._staged)
            self._stage[self._staged : self._staged + n] = view[:n]
            self._staged += n
            if n == len(view):
                first += 1
            else:
                views[first] = view[n:]
            if self._staged == DIRECT_BUFFER_BYTES:
                self._flush_stage()
        if first < len(views):
            self._write_buffered(views[first:])

    def _flush_stage(self) -> None:
        """Write what is staged: its aligned part directly, the rest (only at
        the end of a file) through the page cache."""
        assert self._stage is not None
        with memoryview(self._stage) as whole:
            refused = self._write_direct(whole[: self._staged])
        self._staged = 0
        if refused:
            self._refused()

    def _write_direct(self, data: memoryview) -> bool:
        """Write `data` (page-aligned memory): its aligned part directly, the
        rest (only at the end of a file) through the page cache. True when the
        file system refused the direct write."""
        assert self._direct is not None
        with _io_errors():
            done, refused = pwrite_direct(self._direct, data, self.offset + self.written)
        self.written += done
        if done < len(data):
            self._write_buffered([data[done:]])
        return refused

    def _refused(self) -> None:
        """The file system takes no direct writes after all: this chunk's rest
        and every later chunk go through the page cache."""
        if self._store is not None:
            self._store.direct_io = False
        self._release_direct()

    def _write_buffered(self, views: list[memoryview]) -> None:
        """Write these buffers one after the other: one pwritev per up to
        _IOV_BATCH of them, no joining copy."""
        with _io_errors():
            while views:
                batch = views[:_IOV_BATCH]
                n = os.pwritev(self._fd, batch, self.offset + self.written)
                self.written += n
                # Drop what went out; a short write resumes inside a buffer.
                while n and views:
                    if n >= len(views[0]):
                        n -= len(views[0])
                        views.pop(0)
                    else:
                        views[0] = views[0][n:]
                        n = 0

    def sync(self) -> None:
        if self._staged:
            self._flush_stage()
        with _io_errors():
            os.fdatasync(self._fd)

    def close(self) -> None:
        self._release_direct()
        os.close(self._fd)

    def _release_direct(self) -> None:
        if self._stage is not None:
            stage, self._stage = self._stage, None
            DIRECT_BUFFERS.give(stage)
        if self._direct is not None:
            direct, self._direct = self._direct, None
            os.close(direct)


class StagedFile:
    """One content of a batch, written under uploads/ and not yet durable."""

    def __init__(self, path: Path | str) -> None:
        self.name = os.fspath(path)
        self._fd: int | None = None
        with _io_errors():
            self._fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    @property
    def path(self) -> Path:
        return Path(self.name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None
        view = memoryview(data)
        with _io_errors():
            while view:
                n = os.write(self._fd, view)
                view = view[n:]

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with _io_errors():
                os.close(fd)

    def discard(self) -> None:
        self.close()
        with _io_errors(), contextlib.suppress(FileNotFoundError):
            os.unlink(self.name)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.uploads = root / "uploads"
        self.trash_dir = root / "trash"
        for folder in (self.objects, self.uploads, self.trash_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._objects = str(self.objects)
        self._uploads = str(self.uploads)
        # Chunk bodies are written past the page cache until the file system
        # refuses it (ChunkFile).
        self.direct_io = DIRECT_IO

    # -- naming ----------------------------------------------------------

    def object_path(self, content_hash: str) -> Path:
        return Path(self.object_file(content_hash))

    def object_file(self, content_hash: str) -> str:
        """`object_path` as a plain string (the batch paths make thousands)."""
        if not _HASH.fullmatch(content_hash):
            raise ValueError("not a content hash")
        return f"{self._objects}/{content_hash[:2]}/{content_hash[2:4]}/{content_hash}"

    def session_path(self, session_id: str) -> Path:
        if not _SESSION.fullmatch(session_id):
            raise ValueError("not a session id")
        return self.uploads / f"{session_id}.part"

    def declared_path(self, session_id: str) -> Path:
        if not _SESSION.fullmatch(session_id):
            raise ValueError("not a session id")
        return self.uploads / f"{session_id}.blocks"

    def has(self, content_hash: str) -> bool:
        return self.object_path(content_hash).is_file()

    def ping(self) -> None:
        with _io_errors():
            os.stat(self.objects)

    # -- upload sessions -------------------------------------------------

    def create_session_file(
        self, session_id: str, size: int, declared_blocks: bytes | None = None
    ) -> None:
        """Create and preallocate, so a full disk shows now, not mid-upload;
        with the block digests the client declared, kept beside it (durably)."""
        path = self.session_path(session_id)
        declared = self.declared_path(session_id)
        with _io_errors():
            try:
                if declared_blocks:
                    _write_durably(declared, declared_blocks)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    if size:
                        os.posix_fallocate(fd, 0, size)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                _fsync_dir(self.uploads)
            except BaseException:
                path.unlink(missing_ok=True)
                declared.unlink(missing_ok=True)
                raise

    def declared_blocks(self, session_id: str, first: int, count: int) -> bytes | None:
        """The declared digests of blocks first..first+count-1, joined; None when
        the session declared none."""
        with _io_errors():
            try:
                fd = os.open(self.declared_path(session_id), os.O_RDONLY)
            except FileNotFoundError:
                return None
            try:
                data = os.pread(fd, count * _DIGEST_BYTES, first * _DIGEST_BYTES)
            finally:
                os.close(fd)
        if len(data) != count * _DIGEST_BYTES:
            raise StorageFailure("an upload session's declared block digests are cut short")
        return data

    def open_chunk(self, session_id: str, offset: int) -> ChunkFile:
        path = self.session_path(session_id)
        with _io_errors():
            fd = os.open(path, os.O_WRONLY)
            direct: int | None = None
            if self.direct_io and offset % DIRECT_ALIGN == 0:
                try:
                    direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        os.close(fd)
                        raise
                    self.direct_io = False  # the file system has no direct I/O (tmpfs, some FUSE)
        return ChunkFile(fd, offset, direct=direct, store=self)

    def session_exists(self, session_id: str) -> bool:
        return self.session_path(session_id).is_file()

    def copy_into_session(
        self, *, content_hash: str, src_offset: int, session_id: str, dst_offset: int, length: int
    ) -> None:
        """Server-side copy of stored bytes (known blocks of an edited file)."""
        with (
            _io_errors(),
            self.object_path(content_hash).open("rb") as src,
            self.session_path(session_id).open("r+b") as dst,
        ):
            done = 0
            while done < length:
                step = min(_COPY_STEP, length - done)
                n = os.copy_file_range(
                    src.fileno(), dst.fileno(), step, src_offset + done, dst_offset + done
                )
                if n == 0:
                    raise StorageFailure("stored content is shorter than its record")
                done += n
            os.fdatasync(dst.fileno())

    def write_into_session(self, *, session_id: str, dst_offset: int, data: bytes) -> None:
        """`copy_into_session` from bytes at hand (a known block of inline content)."""
        with _io_errors(), self.session_path(session_id).open("r+b") as dst:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(dst.fileno(), view[done:], dst_offset + done)
            os.fdatasync(dst.fileno())

    def read_session(self, session_id: str, size: int) -> bytes:
        """A (small) session file's bytes, for storing them inline at `complete`."""
        with _io_errors():
            fd = os.open(self.session_path(session_id), os.O_RDONLY)
            try:
                data = os.pread(fd, size + 1, 0)
            finally:
                os.close(fd)
        if len(data) != size:
            raise StorageFailure("an upload session's file does not hold its size")
        return data

    def discard_session(self, session_id: str) -> None:
        with _io_errors():
            self.session_path(session_id).unlink(missing_ok=True)
            self.declared_path(session_id).unlink(missing_ok=True)

    def commit_session(self, session_id: str, content_hash: str) -> bool:
        """Move a verified session file into place; False when the content was
        already stored (the session file is dropped: identical content is kept once)."""
        target = self.object_path(content_hash)
        source = self.session_path(session_id)
        with _io_errors():
            # Needed no more (the stored block digests are what was verified);
            # one left by a crash is swept with the session's other leftovers.
            self.declared_path(session_id).unlink(missing_ok=True)
            if target.is_file():
                source.unlink(missing_ok=True)
                return False
            if not source.is_file():
                raise StorageFailure("the upload's data is missing")
            _make_dirs(target.parent)
            with source.open("rb") as fh:
                # Chunks were fdatasynced as they arrived; this covers size/metadata.
                os.fsync(fh.fileno())
            os.rename(source, target)
            _fsync_dir(target.parent)
            # The fan-out folders too, every time: an earlier commit that created
            # them may have failed before their entries were synced.
            _fsync_dir(target.parent.parent)
            _fsync_dir(self.objects)
            _fsync_dir(self.uploads)
        return True

    # -- batches ---------------------------------------------------------

    def stage(self, stage_id: str) -> StagedFile:
        """A new staging file (a session-style name, swept when left behind)."""
        if not _SESSION.fullmatch(stage_id):
            raise ValueError("not a session id")
        return StagedFile(f"{self._uploads}/{stage_id}.part")

    def publish(self, staged: list[tuple[StagedFile, str]]) -> None:
        """Make verified staged files objects, all durable on return.

        Order: bytes durable (syncfs), then the renames, then the renames and
        new folders durable (syncfs). A crash before the end leaves whole
        files under objects/ or staging files the sweep removes, never a
        name under objects/ whose bytes were not on disk first.
        """
        if not staged:
            return
        with _io_errors():
            for file, _ in staged:
                file.close()
            _sync_filesystem(self.uploads)
            # Plain strings and os calls: pathlib cost more than the syscalls here.
            for file, content_hash in staged:
                target = self.object_file(content_hash)
                source = file.name
                if os.path.isfile(target):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(source)  # stored already: kept once
                    continue
                try:
                    os.rename(source, target)
                except FileNotFoundError:
                    # A new fan-out folder (synced by the syncfs below).
                    _make_fanout(target[:-_FANOUT_LEAF])
                    os.rename(source, target)
            _sync_filesystem(self.objects)

    # -- garbage collection ----------------------------------------------

    def trash(self, content_hash: str) -> Path | None:
        """Step 1 of removal: an atomic rename out of objects/ (undone by restore)."""
        source = self.object_path(content_hash)
        target = self.trash_dir / f"{content_hash}.{secrets.token_hex(4)}"
        with _io_errors():
            try:
                os.rename(source, target)
            except FileNotFoundError:
                return None
            _fsync_dir(source.parent)
        return target

    def empty_trash(self, path: Path) -> None:
        with _io_errors():
            path.unlink(missing_ok=True)

    def trashed(self) -> list[tuple[str, Path]]:
        """(content hash, trash file) pairs left by an interrupted collection."""
        found = []
        for entry in self.trash_dir.iterdir():
            content_hash = entry.name.split(".", 1)[0]
            if _HASH.fullmatch(content_hash):
                found.append((content_hash, entry))
        return found

    def restore(self, content_hash: str, path: Path) -> None:
        target = self.object_path(content_hash)
        with _io_errors():
            _make_dirs(target.parent)
            if target.exists():
                path.unlink(missing_ok=True)
                return
            os.rename(path, target)
            _fsync_dir(target.parent)

    def stale_session_files(self, live_ids: set[str], *, older_than_s: float = 3600) -> list[str]:
        """Session files no live session owns. A file is created just before its
        session row, so only files idle for a while are considered."""
        cutoff = time.time() - older_than_s
        stale: list[str] = []
        for entry in self.uploads.iterdir():
            session_id, dot, suffix = entry.name.partition(".")
            if dot and suffix in ("part", "blocks") and session_id not in live_ids:
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff and session_id not in stale:
                        stale.append(session_id)
        return stale
