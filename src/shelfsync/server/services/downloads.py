"""What GET /sync/download/{path} sends (protocol section 10): the live item at a
path, or one of its retained revisions, and where its content is: the one file
holding it, or, for small content stored inline (storage/contents.py), its
bytes from the database, read in the same transaction as the item.

The library path only ever selects a database row; the file comes from the
blob store by content hash, so no client string reaches the file system.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.errors import InvalidPath, NotFound, ShelfsyncError, StorageFailure
from shelfsync.server.domain.items import Item
from shelfsync.server.domain.paths import normalize_path
from shelfsync.server.services.auth import AuthService, Principal
from shelfsync.server.storage.access import read_access, read_access_nowait
from shelfsync.server.storage.blobs import BlobStore
from shelfsync.server.storage.contents import MAX_INLINE_BYTES, ContentRepository
from shelfsync.server.storage.engine import Database, WouldBlock
from shelfsync.server.storage.items import ItemRepository

__all__ = ["DownloadService", "DownloadTarget"]

log = logging.getLogger("shelfsync.downloads")

_NOT_FOUND = "no file at that path"


@dataclass(frozen=True, slots=True)
class DownloadTarget:
    """One revision's content, ready to send."""

    file: Path | None  # the content's file; None for empty or inline content
    size: int  # bytes
    content_hash: str
    modified: datetime  # the client's mtime if it sent one, else when the change landed
    item_id: str
    revision: int
    name: str  # the last path segment, for Content-Type and Content-Disposition
    inline: bool = False  # the bytes are stored in the database (content_data)
    data: bytes | None = None  # inline bytes, when read with the item (not by resolve_many)


class DownloadService:
    def __init__(self, *, db: Database, blobs: BlobStore) -> None:
        self._db = db
        self._blobs = blobs

    def resolve(self, principal: Principal, path: str, revision: int | None) -> DownloadTarget:
        """The content at `path` (the live item), or its retained `revision`.

        Unknown, deleted, another user's path, or a revision that is gone or
        was a delete: NotFound, all alike, so nothing about other libraries
        can be inferred. Content recorded but missing or short on disk:
        StorageFailure (503), never a 500 and never a truncated body.
        """
        with self._db.read() as conn:
            target = self._lookup(ItemRepository(conn), principal, path, revision)
            data = (
                ContentRepository(conn).inline_one(target.content_hash)
                if 0 < target.size <= MAX_INLINE_BYTES
                else None
            )
        if target.size == 0:
            return target
        return self._with_content(target, data)

    def resolve_for_token(
        self,
        auth: AuthService,
        *,
        bearer: str,
        device_header: str | None,
        path: str,
        check_request: Callable[[], None],
        nowait: bool = False,
    ) -> DownloadTarget:
        """`auth.authenticate(...)`, then `check_request()`, then `resolve(..., path,
        None)`: the same checks in the same order, so the same answers and errors,
        but the user, the device and the item are read in one statement (the
        download hot path: a sync client fetching ranges asks this per request).

        `nowait` (on an event loop): WouldBlock instead of waiting for the
        database (Database.first_nowait) or writing to it (note_seen), before
        anything is changed: the caller then asks again without it."""
        claims = auth.verify(bearer)
        now = utcnow()
        normalized: str | None = None
        path_error: ShelfsyncError | None = None
        try:
            normalized = normalize_path(path)
        except ShelfsyncError as exc:
            path_error = exc  # raised after authentication, as resolve() would
        device_id = auth.device_wanted(claims, device_header)
        if nowait:
            read = read_access_nowait(
                self._db, user_id=claims.user_id, device_id=device_id, path=normalized
            )
        else:
            with self._db.read() as conn:
                read = read_access(
                    conn, user_id=claims.user_id, device_id=device_id, path=normalized
                )
        auth.check_access(
            claims,
            device_header=device_header,
            user_generation=read.user_generation,
            device=read.device,
        )
        if nowait and auth.seen_is_stale(read.device, now=now):
            raise WouldBlock
        auth.note_seen(read.device, now=now)
        check_request()
        if path_error is not None or normalized is None:
            raise path_error or InvalidPath("invalid path")
        target = self._live(read.item, normalized)
        if target.size == 0:
            return target
        return self._with_content(target, read.data)

    def resolve_many(
        self, principal: Principal, wanted: list[tuple[str, int | None]]
    ) -> list[DownloadTarget | ShelfsyncError]:
        """`resolve` for many (path, revision) pairs in one read; a failure is
        that entry's answer (batch downloads, protocol section 11.4)."""
        found: list[DownloadTarget | ShelfsyncError] = []
        normalized: dict[str, str] = {}
        for path, revision in wanted:
            if revision is None:
                with contextlib.suppress(ShelfsyncError):
                    normalized[path] = normalize_path(path)
        with self._db.read() as conn:
            items = ItemRepository(conn)
            # The current items in one query per 500 paths; retained revisions one by one.
            current = items.at_paths(principal.user_id, set(normalized.values()))
            for path, revision in wanted:
                try:
                    if revision is None and path in normalized:
                        found.append(self._live(current.get(normalized[path]), normalized[path]))
                    else:
                        found.append(self._lookup(items, principal, path, revision))
                except ShelfsyncError as exc:
                    found.append(exc)
            # Which are inline, in one query per 500 (their bytes are read later,
            # a group at a time: `inline_data`).
            inline = ContentRepository(conn).inline_hashes(
                {
                    t.content_hash
                    for t in found
                    if isinstance(t, DownloadTarget) and 0 < t.size <= MAX_INLINE_BYTES
                }
            )
        out: list[DownloadTarget | ShelfsyncError] = []
        for entry in found:
            if isinstance(entry, DownloadTarget) and entry.size:
                if entry.content_hash in inline:
                    entry = replace(entry, inline=True)
                else:
                    try:
                        entry = self._with_file(entry)
                    except StorageFailure as exc:
                        entry = exc
            out.append(entry)
        return out

    def inline_data(self, content_hashes: set[str]) -> dict[str, bytes]:
        """The bytes of these inline contents (one query per 500): what a batch
        download reads per group of entries (bounded memory). A content missing
        from the answer was collected meanwhile (that entry fails alone)."""
        if not content_hashes:
            return {}
        with self._db.read() as conn:
            return ContentRepository(conn).inline_data(content_hashes)

    @staticmethod
    def _live(live: Item | None, normalized: str) -> DownloadTarget:
        if live is None or live.deleted or live.content_hash is None:
            raise NotFound(_NOT_FOUND)
        return DownloadTarget(
            file=None,
            size=live.size,
            content_hash=live.content_hash,
            modified=live.mtime or live.updated_at,
            item_id=live.id,
            revision=live.revision,
            name=normalized.rpartition("/")[2],
        )

    @staticmethod
    def _lookup(
        items: ItemRepository, principal: Principal, path: str, revision: int | None
    ) -> DownloadTarget:
        normalized = normalize_path(path)
        if revision is None:
            target = DownloadService._live(
                items.live_at_path(principal.user_id, normalized), normalized
            )
        else:
            # Live, else the latest tombstone: deleted content stays
            # downloadable by revision for the retention period (section 4).
            item = items.at_path(principal.user_id, normalized)
            old = items.revision(item.id, revision) if item is not None else None
            if item is None or old is None or old.deleted or old.content_hash is None:
                raise NotFound(f"no retained revision {revision} at that path")
            target = DownloadTarget(
                file=None,
                size=old.size,
                content_hash=old.content_hash,
                modified=old.mtime or old.created_at or item.updated_at,
                item_id=item.id,
                revision=old.revision,
                name=normalized.rpartition("/")[2],
            )
        return target

    def _with_content(self, target: DownloadTarget, data: bytes | None) -> DownloadTarget:
        """With its inline bytes when it has them, else with its file."""
        if data is None:
            return self._with_file(target)
        if len(data) != target.size:
            log.error(
                "inline content %s is %d bytes, %d on record",
                target.content_hash,
                len(data),
                target.size,
            )
            raise StorageFailure("the stored content does not match its record")
        return replace(target, inline=True, data=data)

    def _with_file(self, target: DownloadTarget) -> DownloadTarget:
        try:
            file = self._blobs.object_path(target.content_hash)
            info = os.stat(file)
        except (OSError, ValueError) as exc:
            log.error(
                "content %s of item %s is unreadable: %s", target.content_hash, target.item_id, exc
            )
            raise StorageFailure("the stored content is unavailable") from exc
        if not stat.S_ISREG(info.st_mode) or info.st_size != target.size:
            # Never send a body that disagrees with Content-Length and the ETag.
            log.error(
                "content %s is %d bytes on disk, %d on record",
                target.content_hash,
                info.st_size,
                target.size,
            )
            raise StorageFailure("the stored content does not match its record")
        return replace(target, file=file)
