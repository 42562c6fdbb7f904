"""What the page cache holds of a file, for tests of I/O that bypasses it."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_PAGE = mmap.PAGESIZE


def resident(path: Path, offset: int) -> bool:
    """Whether the page holding `offset` is in the page cache. mincore looks
    without reading; a read that may not wait (RWF_NOWAIT) would start
    readahead and so change the answer for whoever asks next."""
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) as mapped:
        anchor = ctypes.c_char.from_buffer(mapped, offset - offset % _PAGE)
        vector = (ctypes.c_ubyte * 1)()
        failed = _libc.mincore(
            ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(_PAGE), vector
        )
        del anchor  # the mapping cannot close while a ctypes object holds it
        if failed:
            raise OSError(ctypes.get_errno(), "mincore failed")
        return bool(vector[0] & 1)


def drop(path: Path) -> None:
    """Evict the file's (synced) pages."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
