"""Upload sessions (protocol section 9): states and the chunk-size rules."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shelfsync.content_hash import BLOCK_SIZE

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNKS",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "UploadSession",
    "UploadStatus",
    "chunk_count",
    "chunk_length",
    "plan_chunk_size",
]

MIB = 1024 * 1024
MIN_CHUNK_SIZE = 4 * MIB
MAX_CHUNK_SIZE = 64 * MIB
DEFAULT_CHUNK_SIZE = 8 * MIB
MAX_CHUNKS = 10_000


class UploadStatus(enum.StrEnum):
    """Where an upload session stands."""

    PENDING = "pending"  # receiving chunks
    COMPLETED = "completed"  # content verified and landed through the engine
    CANCELLED = "cancelled"  # deleted by the client or with its device
    EXPIRED = "expired"  # idle for longer than the expiry period; data removed
    FAILED = "failed"  # the content hash did not match; data removed


@dataclass(frozen=True, slots=True)
class UploadSession:
    id: str
    user_id: str
    device_id: str
    path: str
    size: int
    content_hash: str
    chunk_size: int
    chunk_count: int
    status: UploadStatus
    deduplicated: bool
    mtime: datetime | None
    metadata: dict[str, Any] | None
    base_revision: int | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    received: tuple[int, ...] = ()
    result: dict[str, Any] | None = field(default=None)


def plan_chunk_size(*, size: int, requested: int | None) -> int | None:
    """The binding chunk size: a multiple of 4 MiB in 4..64 MiB, raised so that
    there are at most 10,000 chunks. None when even 64 MiB chunks are too few."""
    chunk = requested if requested is not None else DEFAULT_CHUNK_SIZE
    chunk = -(-chunk // BLOCK_SIZE) * BLOCK_SIZE
    chunk = min(max(chunk, MIN_CHUNK_SIZE), MAX_CHUNK_SIZE)
    needed = -(-size // MAX_CHUNKS)
    if needed > chunk:
        chunk = -(-needed // BLOCK_SIZE) * BLOCK_SIZE
    if chunk > MAX_CHUNK_SIZE:
        return None
    return chunk


def chunk_count(*, size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def chunk_length(*, size: int, chunk_size: int, index: int) -> int:
    """Every chunk is chunk_size long except the last, which holds the remainder."""
    start = index * chunk_size
    return max(0, min(chunk_size, size - start))
