"""Items, revisions and feed entries (protocol sections 4 and 6)."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shelfsync.server.domain.errors import InvalidInput

__all__ = [
    "MAX_METADATA_BYTES",
    "ChangeOp",
    "Item",
    "ItemState",
    "Revision",
    "metadata_size",
    "validate_metadata",
]

MAX_METADATA_BYTES = 64 * 1024

JsonObject = dict[str, Any]


class ChangeOp(enum.StrEnum):
    """What an item's last change was, as the feed reports it."""

    UPSERT = "upsert"  # created, re-created, or content/metadata changed
    DELETE = "delete"  # now a tombstone
    MOVE = "move"  # the path changed (from_path says where it was)


@dataclass(frozen=True, slots=True)
class ItemState:
    """What "the same state" compares (protocol section 7): content and metadata."""

    deleted: bool
    content_hash: str | None
    metadata: JsonObject

    def same_as(self, other: ItemState) -> bool:
        if self.deleted or other.deleted:
            return self.deleted and other.deleted
        return self.content_hash == other.content_hash and self.metadata == other.metadata


@dataclass(frozen=True, slots=True)
class Item:
    """The current state of one item; `seq` is its place in the coalesced feed."""

    id: str
    user_id: str
    path: str
    revision: int
    content_hash: str | None
    size: int
    mtime: datetime | None
    metadata: JsonObject
    deleted: bool
    device_id: str | None
    updated_at: datetime
    seq: int
    op: ChangeOp
    from_path: str | None = None

    @property
    def state(self) -> ItemState:
        return ItemState(self.deleted, self.content_hash, self.metadata)


@dataclass(frozen=True, slots=True)
class Revision:
    """One accepted change of an item, kept for the retention period."""

    item_id: str
    revision: int
    path: str
    content_hash: str | None
    size: int
    mtime: datetime | None
    metadata: JsonObject = field(default_factory=dict)
    deleted: bool = False
    device_id: str | None = None
    created_at: datetime | None = None
    seq: int = 0
    op: ChangeOp = ChangeOp.UPSERT


def metadata_size(metadata: JsonObject) -> int:
    return len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def validate_metadata(metadata: JsonObject | None) -> JsonObject:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be a JSON object")
    if metadata_size(metadata) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return metadata
