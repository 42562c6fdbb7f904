"""Conflicts (protocol section 8): what each side held, and how it was settled."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shelfsync.server.domain.items import ChangeOp

__all__ = ["ClientSide", "Conflict", "ConflictStatus", "Resolution", "ServerSide"]


class ConflictStatus(enum.StrEnum):
    """Whether a person (or the device's policy) has settled the conflict."""

    UNRESOLVED = "unresolved"  # waiting for a resolution
    RESOLVED = "resolved"  # settled; `resolution` says how


class Resolution(enum.StrEnum):
    """The three ways to settle a conflict."""

    KEEP_SERVER = "keep_server"  # the library stays; the client version stays in history
    KEEP_CLIENT = "keep_client"  # the client version becomes the current revision
    KEEP_BOTH = "keep_both"  # the client version is saved beside, at suggested_path


@dataclass(frozen=True, slots=True)
class ServerSide:
    """The server's state of the path when the conflict was (last) detected."""

    item_id: str | None
    revision: int | None
    content_hash: str | None
    size: int | None
    mtime: datetime | None
    deleted: bool
    device_id: str | None


@dataclass(frozen=True, slots=True)
class ClientSide:
    """What the device wanted: its op and the version it holds."""

    op: ChangeOp
    content_hash: str | None
    size: int | None
    mtime: datetime | None
    metadata: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False
    from_path: str | None = None


@dataclass(frozen=True, slots=True)
class Conflict:
    id: str
    user_id: str
    device_id: str
    path: str
    status: ConflictStatus
    detected_at: datetime
    base_revision: int | None
    server: ServerSide
    client: ClientSide
    suggested_path: str
    resolution: Resolution | None = None
    resolved_at: datetime | None = None
    result_path: str | None = None
