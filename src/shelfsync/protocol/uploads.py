"""Upload bodies (protocol section 9)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from shelfsync.protocol.common import Timestamp
from shelfsync.protocol.sync import ReportResult

__all__ = ["ChunkReceipt", "UploadComplete", "UploadCreate", "UploadSession"]

Hex64 = Annotated[str, Field(min_length=64, max_length=64)]


class UploadCreate(BaseModel):
    path: str = Field(min_length=1, max_length=4096)
    size: int = Field(ge=0, le=2**53)
    content_hash: Hex64
    mtime: datetime | None = None
    metadata: dict[str, Any] | None = None
    base_revision: int | None = Field(ge=1, le=2**31 - 1)
    chunk_size: int | None = Field(
        default=None, ge=1, le=2**40, description="Wish; the server's answer is binding."
    )
    block_hashes: list[Hex64] | None = Field(
        default=None,
        max_length=2**20,
        description="SHA-256 of each 4 MiB block: known blocks are not sent again.",
    )


class UploadSession(BaseModel):
    id: str
    path: str
    size: int
    content_hash: str
    chunk_size: int
    chunk_count: int
    received: list[int]
    status: Literal["pending", "completed", "cancelled", "expired", "failed"]
    created_at: Timestamp
    expires_at: Timestamp


class ChunkReceipt(BaseModel):
    index: int
    size: int
    received_count: int
    chunk_count: int


class UploadComplete(BaseModel):
    session: UploadSession
    result: ReportResult
