"""The Dropbox content hash (protocol section 1), streaming, used by both sides.

Content is split into 4 MiB blocks; each block is SHA-256'd; the hash is the
SHA-256 of the concatenated block digests. Empty content hashes to SHA-256 of
the empty string. `rclone hashsum dropbox FILE` computes the same value.
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "BLOCK_SIZE",
    "EMPTY_HASH",
    "ContentHasher",
    "hash_blocks",
    "hash_bytes",
    "hash_file",
    "hash_stream",
    "is_content_hash",
]

BLOCK_SIZE = 4 * 1024 * 1024
EMPTY_HASH = hashlib.sha256(b"").hexdigest()
_HEX = frozenset("0123456789abcdef")


def is_content_hash(value: str) -> bool:
    return len(value) == 64 and set(value) <= _HEX


def hash_blocks(block_digests: Iterable[bytes]) -> str:
    """The content hash from the raw 32-byte digests of its blocks, in order."""
    overall = hashlib.sha256()
    for digest in block_digests:
        overall.update(digest)
    return overall.hexdigest()


class ContentHasher:
    """Feed bytes in any sizes; read `block_digests` and `hexdigest()`."""

    def __init__(self) -> None:
        self._block = hashlib.sha256()
        self._block_fill = 0
        self.block_digests: list[bytes] = []
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview | mmap.mmap) -> None:
        view = memoryview(data)
        self.size += len(view)
        while view:
            take = min(BLOCK_SIZE - self._block_fill, len(view))
            self._block.update(view[:take])
            self._block_fill += take
            view = view[take:]
            if self._block_fill == BLOCK_SIZE:
                self.block_digests.append(self._block.digest())
                self._block = hashlib.sha256()
                self._block_fill = 0

    def finish_blocks(self) -> list[bytes]:
        """Close the last partial block (if any) and return every block digest."""
        if self._block_fill:
            self.block_digests.append(self._block.digest())
            self._block = hashlib.sha256()
            self._block_fill = 0
        return self.block_digests

    def hexdigest(self) -> str:
        digests = self.finish_blocks()
        return hash_blocks(digests) if digests else EMPTY_HASH


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    if len(data) <= BLOCK_SIZE:
        # One block (the usual small file): its digest, hashed again.
        if not len(data):
            return EMPTY_HASH
        return hashlib.sha256(hashlib.sha256(data).digest()).hexdigest()
    hasher = ContentHasher()
    hasher.update(data)
    return hasher.hexdigest()


def hash_stream(stream: BinaryIO, *, read_size: int = BLOCK_SIZE) -> ContentHasher:
    hasher = ContentHasher()
    while chunk := stream.read(read_size):
        hasher.update(chunk)
    hasher.finish_blocks()
    return hasher


def hash_file(path: Path) -> str:
    with path.open("rb", buffering=0) as fh:
        return hash_stream(fh).hexdigest()
