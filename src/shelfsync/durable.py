"""Durability helpers the client and the server both need."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

__all__ = ["sync_filesystem"]

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def sync_filesystem(path: Path) -> None:
    """Flush every dirty page and inode of the file system holding the folder `path`.

    Why syncfs for a batch and not an fdatasync per file (measured here, ext4,
    1000 files of 8.6 KiB written, renamed into fan-out folders, durable):
    fdatasync each + fsync each folder 4.5-5.4 s, write all + syncfs + rename +
    syncfs 1.3-2.1 s. Every fdatasync is its own journal commit; syncfs is one
    for the lot (Linux >= 2.6.39; it reports write-back errors since 5.8). Where
    syncfs is missing (not Linux) it falls back to sync(), which is slower but
    just as durable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs is None:
            os.sync()
        elif _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(fd)
