"""Browsing a library and its history, and restoring an old revision (the web page).

Everything here is read-only except `restore`, which is an ordinary change:
it goes through the library writer that reports use, so it gets the next
revision and seq, lands in the feed and reaches every device. Any of the
user's tokens may call these; another user's item is NotFound, exactly like
one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from shelfsync.content_hash import EMPTY_HASH
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.errors import ContentMissing, InvalidInput, NotFound, StaleState
from shelfsync.server.domain.items import Item, Revision
from shelfsync.server.domain.library import (
    MAX_PAGE,
    FolderPage,
    SortKey,
    folder_path,
    search_text,
)
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.library_writer import LibraryWriter
from shelfsync.server.services.notifier import ChangeNotifier
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.library_queries import LibraryQueries

__all__ = ["History", "LibraryService"]

_NO_ITEM = "no such item"


@dataclass(frozen=True, slots=True)
class History:
    """An item and one page of its retained revisions, newest first."""

    item: Item
    revisions: list[Revision]
    # The `before` that continues the listing; None when this page is the last.
    next_before: int | None


def _page_size(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1 to {MAX_PAGE}")
    return limit


class LibraryService:
    def __init__(self, *, db: Database, notifier: ChangeNotifier) -> None:
        self._db = db
        self._notifier = notifier

    def list_folder(
        self,
        principal: Principal,
        *,
        path: str | None,
        sort: SortKey,
        descending: bool,
        offset: int,
        limit: int,
        query: str | None = None,
    ) -> FolderPage:
        """A folder's entries, or (with `query`) the files below it whose name
        contains the query. An empty or unknown folder lists nothing (folders
        are implicit, so "no such folder" and "empty" are the same thing)."""
        folder = folder_path(path)
        size = _page_size(limit)
        if offset < 0:
            raise InvalidInput("offset must not be negative")
        with self._db.read() as conn:
            queries = LibraryQueries(conn)
            if query is not None:
                return queries.search(
                    principal.user_id,
                    folder,
                    text=search_text(query),
                    sort=sort,
                    descending=descending,
                    offset=offset,
                    limit=size,
                )
            return queries.list_folder(
                principal.user_id,
                folder,
                sort=sort,
                descending=descending,
                offset=offset,
                limit=size,
            )

    def item(self, principal: Principal, item_id: str) -> Item:
        with self._db.read() as conn:
            item = LibraryQueries(conn).item(principal.user_id, item_id)
        if item is None:
            raise NotFound(_NO_ITEM)
        return item

    def history(
        self, principal: Principal, item_id: str, *, before: int | None, limit: int
    ) -> History:
        size = _page_size(limit)
        with self._db.read() as conn:
            queries = LibraryQueries(conn)
            item = queries.item(principal.user_id, item_id)
            if item is None:
                raise NotFound(_NO_ITEM)
            # One more than asked tells whether another page follows.
            found = queries.revisions(item.id, before=before, limit=size + 1)
        page = found[:size]
        next_before = page[-1].revision if len(found) > size else None
        return History(item=item, revisions=page, next_before=next_before)

    def activity(
        self, principal: Principal, *, before_seq: int | None, limit: int
    ) -> tuple[list[Item], int | None]:
        """Items by their latest change, newest first, and the `before_seq` that
        continues the listing (None: no more)."""
        size = _page_size(limit)
        with self._db.read() as conn:
            found = LibraryQueries(conn).recent(
                principal.user_id, before_seq=before_seq, limit=size + 1
            )
        page = found[:size]
        return page, (page[-1].seq if len(found) > size else None)

    def restore(
        self,
        principal: Principal,
        item_id: str,
        *,
        revision: int,
        expected_revision: int | None,
    ) -> Item:
        """Make revision `revision`'s content and metadata the item's next revision.

        The restored version lands where the item is now (a deleted item is
        re-created at the path of its tombstone). StaleState (409) when the item
        moved on from `expected_revision`, or a live item of its own already
        occupies a deleted item's path; ContentMissing when the old revision's
        content is no longer stored; NotFound for an unknown or purged revision,
        or one that was a delete.
        """
        device_id = principal.device.id if principal.device is not None else None
        with self._db.write() as tx:
            # The writer first: it locks the library, so what is read below
            # stays true until the commit.
            writer = LibraryWriter(tx, user_id=principal.user_id, now=utcnow())
            queries = LibraryQueries(tx)
            item = queries.item(principal.user_id, item_id)
            if item is None:
                raise NotFound(_NO_ITEM)
            old = queries.revision(item.id, revision)
            if old is None or old.deleted or old.content_hash is None:
                raise NotFound(f"no retained revision {revision} with content")
            if expected_revision is not None and expected_revision != item.revision:
                raise StaleState(
                    f"the item is at revision {item.revision} now, not {expected_revision}"
                )
            if item.deleted and queries.live_item_at(principal.user_id, item.path) is not None:
                raise StaleState("another item now lives at that path")
            if (
                old.content_hash != EMPTY_HASH
                and ContentRepository(tx).size_for_user(principal.user_id, old.content_hash) is None
            ):
                raise ContentMissing("that revision's content is no longer stored")
            restored = writer.upsert(
                existing=item,
                path=item.path,
                content_hash=old.content_hash,
                size=old.size,
                mtime=old.mtime,
                metadata=old.metadata,
                device_id=device_id,
            )
            changed = writer.finish()
        if changed:
            self._notifier.notify(principal.user_id)
        return restored
