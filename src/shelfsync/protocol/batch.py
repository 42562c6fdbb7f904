"""Batch upload and download of small files (protocol section 11.4).

Both directions use one framing, media type `application/vnd.shelfsync.batch`:
a 4-byte big-endian unsigned length, that many bytes of UTF-8 JSON, then raw
bytes whose count the JSON announces.

- Upload body: one frame whose JSON is a `BatchManifest`, followed by every
  file's bytes concatenated in manifest order (`size` bytes each), and nothing
  after them.
- Download body: per requested entry, in request order, one frame whose JSON
  is a `BatchEntry`, followed by its `size` bytes (none for an error entry).
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from shelfsync.protocol.common import Timestamp
from shelfsync.protocol.problems import Problem
from shelfsync.protocol.sync import ReportResult

__all__ = [
    "BATCH_MEDIA_TYPE",
    "FRAME_PREFIX_BYTES",
    "BatchDownloadRequest",
    "BatchEntry",
    "BatchFile",
    "BatchManifest",
    "BatchUploadResponse",
    "BatchWanted",
    "frame",
    "frame_length",
]

BATCH_MEDIA_TYPE = "application/vnd.shelfsync.batch"
FRAME_PREFIX_BYTES = 4
_PREFIX = struct.Struct(">I")

Hex64 = Annotated[str, Field(min_length=64, max_length=64)]
PathText = Annotated[str, Field(min_length=1, max_length=4096)]


def frame(header: bytes) -> bytes:
    """The length prefix and the header JSON of one frame."""
    return _PREFIX.pack(len(header)) + header


def frame_length(prefix: bytes) -> int:
    """The JSON length a 4-byte prefix announces."""
    (length,) = _PREFIX.unpack(prefix)
    return int(length)


class BatchFile(BaseModel):
    """One file of a batch upload: what `POST /sync/upload` would carry."""

    path: PathText = Field(description="The library path (protocol section 3).")
    size: int = Field(ge=0, le=2**53, description="Bytes of this file in the body.")
    content_hash: Hex64 = Field(description="The content hash of those bytes (section 11.1).")
    base_revision: int | None = Field(
        ge=1, le=2**31 - 1, description="As in a report: null means believed absent."
    )
    mtime: datetime | None = None
    metadata: dict[str, Any] | None = Field(
        default=None, description="Client-owned JSON object; null keeps the item's."
    )


class BatchManifest(BaseModel):
    files: list[BatchFile] = Field(min_length=1, max_length=10_000)


class BatchUploadResponse(BaseModel):
    """One report result per manifest entry, in order (section 8)."""

    results: list[ReportResult]


class BatchWanted(BaseModel):
    path: PathText
    revision: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="A retained revision; null: the current."
    )


class BatchDownloadRequest(BaseModel):
    files: list[BatchWanted] = Field(min_length=1, max_length=10_000)


class BatchEntry(BaseModel):
    """The header of one entry of a batch download; `size` bytes follow it.

    Entries come in request order; an error entry does not repeat the path.
    """

    path: str | None = None
    status: Literal["ok", "error"]
    id: str | None = None
    revision: int | None = None
    content_hash: str | None = None
    size: int = 0
    mtime: Timestamp | None = None
    error: Problem | None = None
