"""Direct I/O (O_DIRECT) the client and the server both use: the server's chunk
writes (server/storage/blobs.py) and a download's writes
(client/download_sink.py) go past the page cache from page-aligned buffers."""

from __future__ import annotations

import errno
import os

__all__ = ["DIRECT_ALIGN", "DIRECT_IO", "pwrite_direct"]

# Linux and the BSDs, not macOS.
DIRECT_IO = hasattr(os, "O_DIRECT")
# Offsets and lengths of direct writes in whole pages (any block device's
# logical block divides 4096).
DIRECT_ALIGN = 4096


def pwrite_direct(fd: int, data: memoryview, offset: int) -> tuple[int, bool]:
    """Write the page-aligned part of `data` at `offset` (aligned) through `fd`,
    opened with O_DIRECT: (bytes written, refused). It stops early at a short
    write out of alignment, and at EINVAL: refused, the file system takes no
    direct writes after all. The caller writes the rest through the page cache.
    Any other error is raised."""
    aligned = len(data) - len(data) % DIRECT_ALIGN
    done = 0
    while done < aligned:
        try:
            written = os.pwrite(fd, data[done:aligned], offset + done)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return done, True
        done += written
        if written % DIRECT_ALIGN:
            break
    return done, False
