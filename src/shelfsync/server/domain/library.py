"""What the web page reads of a library: folders, their entries, and sorting.

Folders are implicit (protocol section 3): a folder exists while a live file
lies somewhere below it, so a folder entry is an aggregate of those files.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from shelfsync.server.domain.errors import InvalidInput
from shelfsync.server.domain.paths import normalize_path

__all__ = [
    "MAX_PAGE",
    "MAX_QUERY_CHARS",
    "EntryKind",
    "FolderEntry",
    "FolderPage",
    "SortKey",
    "folder_path",
    "search_text",
]

MAX_PAGE = 1000
MAX_QUERY_CHARS = 255


class EntryKind(enum.StrEnum):
    """What one entry of a folder listing is."""

    FOLDER = "folder"  # an implicit directory holding at least one live file
    FILE = "file"  # a live item


class SortKey(enum.StrEnum):
    """How a listing is ordered; folders always come before files."""

    NAME = "name"  # by name, code point order (the same on both databases)
    SIZE = "size"  # bytes (a folder: all files below it)
    MODIFIED = "modified"  # the client's mtime, else when the change was accepted
    REVISION = "revision"  # the item's revision (folders: by name)


@dataclass(frozen=True, slots=True)
class FolderEntry:
    kind: EntryKind
    name: str  # the last segment
    path: str  # the full library path
    size: int  # bytes; a folder's is the sum of the files below it
    modified: datetime | None  # a folder's is its newest file's
    item_count: int  # 1 for a file; a folder's live files below it
    # Files only:
    id: str | None = None
    revision: int | None = None
    content_hash: str | None = None
    device_id: str | None = None
    changed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class FolderPage:
    folder: str
    entries: list[FolderEntry]
    total: int  # entries matching, over all pages
    offset: int


def folder_path(value: str | None) -> str:
    """ "" (or None, or "/") is the library's root; anything else is a valid path."""
    if value is None:
        return ""
    stripped = value.strip("/")
    return normalize_path(stripped) if stripped else ""


def search_text(value: str) -> str:
    """A name fragment to search for: non-empty, bounded, no control characters."""
    if not value or len(value) > MAX_QUERY_CHARS:
        raise InvalidInput(f"q must be 1-{MAX_QUERY_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput("q must not contain control characters")
    return value
