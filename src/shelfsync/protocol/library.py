"""Library browsing bodies: folders, history, restore, activity, download
tickets and the web page's cookie session (protocol section 14)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from shelfsync.protocol.common import Timestamp
from shelfsync.protocol.sync import Change, ChangeOpName

__all__ = [
    "ActivityList",
    "DownloadTicket",
    "DownloadTicketRequest",
    "EntryKindName",
    "FolderEntry",
    "FolderListing",
    "RestoreRequest",
    "RestoreResponse",
    "RevisionEntry",
    "RevisionList",
    "SessionStart",
    "SessionToken",
    "SortName",
]

EntryKindName = Literal["folder", "file"]
SortName = Literal["name", "size", "modified", "revision"]


class FolderEntry(BaseModel):
    """One entry of a folder: a sub-folder (implicit) or a live file."""

    kind: EntryKindName
    name: str = Field(description="The last path segment.")
    path: str = Field(description="The full library path.")
    size: int = Field(description="Bytes; for a folder, of every file below it.")
    modified: Timestamp | None = Field(
        description="The client's mtime, else when the change was accepted; "
        "for a folder, its newest file's."
    )
    item_count: int = Field(description="1 for a file; for a folder, the files below it.")
    id: str | None = Field(default=None, description="Files: the item id.")
    revision: int | None = Field(default=None, description="Files: the current revision.")
    content_hash: str | None = Field(default=None, description="Files: the content hash.")
    device_id: str | None = Field(default=None, description="Files: who made the last change.")
    changed_at: Timestamp | None = Field(
        default=None, description="Files: when the last change was accepted."
    )


class FolderListing(BaseModel):
    path: str = Field(description='The folder listed ("" is the root).')
    entries: list[FolderEntry]
    total: int = Field(description="Entries in the whole listing, over all pages.")
    offset: int
    next_offset: int | None = Field(description="Where the next page starts; null at the end.")


class RevisionEntry(BaseModel):
    """One retained revision of an item."""

    revision: int
    op: ChangeOpName
    path: str = Field(description="Where the item was in this revision.")
    content_hash: str | None
    size: int
    mtime: Timestamp | None
    deleted: bool
    device_id: str | None
    changed_at: Timestamp | None
    seq: int


class RevisionList(BaseModel):
    item: Change = Field(description="The item as it is now (possibly a tombstone).")
    revisions: list[RevisionEntry] = Field(description="Newest first.")
    next_before: int | None = Field(
        description="Pass as `before` for the next (older) page; null at the end."
    )


class RestoreRequest(BaseModel):
    revision: int = Field(ge=1, le=2**31 - 1, description="The revision to bring back.")
    expected_revision: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="The item's current revision as the user saw it: 409 when it moved on.",
    )


class RestoreResponse(BaseModel):
    change: Change = Field(description="The new revision, as the feed delivers it.")


class ActivityList(BaseModel):
    changes: list[Change] = Field(description="Items by their latest change, newest first.")
    next_before_seq: int | None = Field(
        description="Pass as `before_seq` for older changes; null at the end."
    )


class DownloadTicketRequest(BaseModel):
    path: str = Field(min_length=1, max_length=4096, description="The library path.")
    revision: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="A retained older revision."
    )


class DownloadTicket(BaseModel):
    url: str = Field(description="A relative URL that downloads the file without a token header.")
    expires_at: Timestamp
    path: str
    revision: int


class SessionStart(BaseModel):
    refresh_token: str = Field(
        min_length=1, max_length=512, description="From /auth/login; it is spent here."
    )


class SessionToken(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_in: int = Field(description="Seconds until the access token expires.")
    username: str
