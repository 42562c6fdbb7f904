"""What the page cache holds of a file, and whether direct I/O works, for
tests of I/O that bypasses the cache."""

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


def direct_io_works(path: Path) -> bool:
    """Whether the file system holding `path` (a file or a folder) opens files
    with O_DIRECT."""
    probe = path / ".direct-probe" if path.is_dir() else path
    if probe != path:
        probe.write_bytes(b"")
    try:
        os.close(os.open(probe, os.O_RDONLY | os.O_DIRECT))
    except OSError:
        return False
    finally:
        if probe != path:
            probe.unlink()
    return True


def opened_direct(fd: int) -> bool:
    """Whether descriptor `fd` of this process was opened with O_DIRECT."""
    flags = Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
    return bool(int(flags, 8) & os.O_DIRECT)
