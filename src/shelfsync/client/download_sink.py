"""Where a download's bytes go: its temporary file, written past the page cache.

Bytes gather in one page-aligned buffer of `BUFFER_BYTES` (the socket reads
straight into it, or `write` copies pieces in) and each full buffer is written
with O_DIRECT, from there to the disk. A buffered write copies every byte into
the page cache, into pages nobody is about to read: on the large set that copy
was a fifth of the downloading client's CPU (perf: copy_folio_from_iter_atomic
21 % of B's samples), and O_DIRECT writes cost 0.8 s less CPU per GiB here.

The file's last piece (shorter than the buffer, so of any length) is written
buffered, as is every write where O_DIRECT is not to be had: a filesystem that
refuses it (tmpfs: EINVAL at open or at the first write), a start offset out of
page alignment (a download resumed mid-page), or a system without O_DIRECT.
Buffered writes are synced and their pages dropped every `DROP_EVERY_BYTES`, so a
large download never fills memory with dirty pages. `finish` fsyncs the file
(the metadata O_DIRECT writes leave unsynced too) and drops whatever pages it
still has.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path

from shelfsync.direct_io import DIRECT_ALIGN, DIRECT_IO, pwrite_direct

__all__ = ["BUFFER_BYTES", "DIRECT_IO", "DROP_EVERY_BYTES", "DownloadSink"]

BUFFER_BYTES = 1024 * 1024

# Every this many buffered bytes they are synced and their pages dropped. A sync
# of large files otherwise fills memory with pages nobody is about to read,
# evicting what the user works with, and every page it takes is memory never
# touched before: on a VM that costs more CPU than the copy into it (a 1 GiB
# durable write here: 1.39 s of system CPU into fresh pages, 0.27 s into pages
# just freed). Measured on the large set end to end: B's CPU 4.0-4.6 -> 3.5-3.8 s.
DROP_EVERY_BYTES = 32 * 1024 * 1024


def _drop_pages(fd: int, offset: int, length: int) -> None:
    """Drop the range's pages (length 0: to the end); they must be synced,
    or the kernel keeps them."""
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


class DownloadSink:
    """The temporary file of one download from `offset` on (cut there; from 0 it
    is created if need be). Use as a context manager; `finish` makes the bytes
    durable."""

    def __init__(self, path: Path, offset: int) -> None:
        # A resumed download's file must still be there (FileNotFoundError, not a
        # new file whose hole would pass for the bytes already hashed).
        create = os.O_CREAT if offset == 0 else 0
        self._fd = os.open(path, os.O_WRONLY | create | os.O_CLOEXEC, 0o666)
        try:
            os.ftruncate(self._fd, offset)
            self._direct = self._open_direct(path) if offset % DIRECT_ALIGN == 0 else None
            self._buffer = mmap.mmap(-1, BUFFER_BYTES)
        except BaseException:
            os.close(self._fd)
            raise
        self._view = memoryview(self._buffer)
        self._fill = 0
        self._offset = offset  # where the buffer's first byte goes
        # No page before this is dirty in the cache: synced and dropped, or written direct.
        self._clean = offset

    @staticmethod
    def _open_direct(path: Path) -> int | None:
        if not DIRECT_IO:
            return None
        try:
            return os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            return None

    @property
    def direct(self) -> bool:
        """Are full buffers going out with O_DIRECT (so far)?"""
        return self._direct is not None

    def space(self) -> memoryview:
        """The buffer's free part: fill it, then call `filled`."""
        return self._view[self._fill :]

    def filled(self, count: int) -> None:
        """`count` more bytes of `space()` hold data."""
        self._fill += count
        if self._fill == BUFFER_BYTES:
            self._write_out()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), BUFFER_BYTES - self._fill)
            self._view[self._fill : self._fill + take] = view[:take]
            view = view[take:]
            self.filled(take)

    def _write_out(self, *, direct: bool = True) -> None:
        data = self._view[: self._fill]
        done = 0
        if direct and self._direct is not None:
            done, refused = pwrite_direct(self._direct, data, self._offset)
            if refused:
                self._close_direct()  # buffered from here on
        _pwrite_all(self._fd, data[done:], self._offset + done)
        buffered = done < self._fill
        self._offset += self._fill
        self._fill = 0
        if not buffered:
            self._clean = self._offset
        elif self._offset - self._clean >= DROP_EVERY_BYTES:
            os.fdatasync(self._fd)
            _drop_pages(self._fd, self._clean, self._offset - self._clean)
            self._clean = self._offset

    def finish(self) -> None:
        """Write what the buffer holds (a tail of any length: buffered), fsync
        the file, drop its pages."""
        if self._fill:
            self._write_out(direct=False)
        os.fsync(self._fd)
        # All of it, with what a resumed download read back to hash.
        _drop_pages(self._fd, 0, 0)

    def _close_direct(self) -> None:
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None

    def close(self) -> None:
        self._view.release()
        # A view of it may outlive this (held by a traceback's frame): then the
        # buffer goes when that view does.
        with contextlib.suppress(BufferError):
            self._buffer.close()
        self._close_direct()
        os.close(self._fd)

    def __enter__(self) -> DownloadSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
