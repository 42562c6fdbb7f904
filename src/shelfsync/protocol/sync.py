"""Feed, report, ack and conflict bodies (protocol sections 4, 6, 7, 8)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from shelfsync.protocol.common import Timestamp
from shelfsync.protocol.problems import Problem

__all__ = [
    "AckRequest",
    "AckResponse",
    "Change",
    "ChangesResponse",
    "ClientVersion",
    "Conflict",
    "ConflictList",
    "LocalChange",
    "ReportRequest",
    "ReportResponse",
    "ReportResult",
    "ResolveRequest",
    "ResolveResponse",
    "ServerVersion",
]

ChangeOpName = Literal["upsert", "delete", "move"]
ReportStatusName = Literal["applied", "unchanged", "upload_required", "conflict", "rejected"]
ResolutionName = Literal["keep_server", "keep_client", "keep_both"]
Revision = Annotated[int, Field(ge=1, le=2**31 - 1)]
PathText = Annotated[str, Field(min_length=1, max_length=4096)]


class LocalChange(BaseModel):
    """A change a device made locally."""

    op: ChangeOpName
    path: PathText = Field(description="The library path (protocol section 3).")
    to_path: PathText | None = Field(default=None, description="For `move`: the new path.")
    content_hash: str | None = Field(
        default=None, min_length=64, max_length=64, description="For `upsert`: the content hash."
    )
    size: int | None = Field(default=None, ge=0, le=2**53, description="For `upsert`: bytes.")
    mtime: datetime | None = Field(default=None, description="Client modification time.")
    metadata: dict[str, Any] | None = Field(
        default=None, description="Client-owned JSON object (at most 64 KiB); null keeps it."
    )
    base_revision: Revision | None = Field(
        description="The revision last synced for this path; null: believed absent."
    )


class ReportRequest(BaseModel):
    changes: list[LocalChange] = Field(min_length=1, max_length=1000)


class ReportResult(BaseModel):
    path: str
    status: ReportStatusName
    id: str | None = None
    revision: int | None = None
    seq: int | None = None
    conflict_id: str | None = None
    error: Problem | None = None


class ReportResponse(BaseModel):
    results: list[ReportResult]


class Change(BaseModel):
    """An item's latest state in the feed."""

    seq: int
    op: ChangeOpName
    id: str
    path: str
    from_path: str | None = None
    revision: int
    content_hash: str | None
    size: int
    mtime: Timestamp | None
    metadata: dict[str, Any]
    deleted: bool
    device_id: str | None
    changed_at: Timestamp


class ChangesResponse(BaseModel):
    changes: list[Change]
    cursor: str = Field(description="Opaque; pass it back to continue.")
    has_more: bool
    latest_seq: int


class AckRequest(BaseModel):
    cursor: str = Field(min_length=1, max_length=200)


class AckResponse(BaseModel):
    device_id: str
    acked_cursor: str
    pending_changes: int


class ServerVersion(BaseModel):
    revision: int | None
    content_hash: str | None
    size: int | None
    mtime: Timestamp | None
    deleted: bool
    device_id: str | None


class ClientVersion(BaseModel):
    op: ChangeOpName
    content_hash: str | None
    size: int | None
    mtime: Timestamp | None
    metadata: dict[str, Any]
    deleted: bool
    content_available: bool = Field(description="Whether the server holds these bytes.")


class Conflict(BaseModel):
    id: str
    path: str
    status: Literal["unresolved", "resolved"]
    device_id: str
    detected_at: Timestamp
    base_revision: int | None
    server: ServerVersion
    client: ClientVersion
    suggested_path: str
    resolution: ResolutionName | None = None
    resolved_at: Timestamp | None = None
    result_path: str | None = None


class ConflictList(BaseModel):
    conflicts: list[Conflict]


class ResolveRequest(BaseModel):
    resolution: ResolutionName
    expected_server_revision: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="409 when the server moved on."
    )


class ResolveResponse(BaseModel):
    conflict: Conflict
    changes: list[Change]
