"""Read-only queries behind the web page: folder listings, name search, history
pages and recent activity. Writes never come through here (the library writer
owns them).

Folders are implicit, so a listing is computed from the live items below the
folder, grouped by their next path segment in the database: one pass over the
user's live items, with only the requested page leaving the database. The
string functions used (substr, length, rtrim, replace, lower) count code points
on both databases; only "position of a character" differs (`instr` on SQLite,
`strpos` on PostgreSQL). Names sort in code point order on both (PostgreSQL's
"C" collation; SQLite's default BINARY is the same for UTF-8).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from shelfsync.server.domain.items import Item, Revision
from shelfsync.server.domain.library import EntryKind, FolderEntry, FolderPage, SortKey
from shelfsync.server.storage.items import (
    ITEM_COLUMNS,
    item_from_row,
    path_key,
    revision_from_row,
)
from shelfsync.server.storage.tables import items, revisions

__all__ = ["LibraryQueries"]

_LIKE_ESCAPE = "\\"


def _like_fragment(text: str) -> str:
    escaped = text.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2).replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class LibraryQueries:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._postgres = conn.dialect.name == "postgresql"

    # -- string helpers (the one dialect difference) ---------------------

    def _position(self, text: Any, char: str) -> Any:
        if self._postgres:
            return sa.func.strpos(text, char, type_=sa.Integer)
        return sa.func.instr(text, char, type_=sa.Integer)

    def _ordered(self, text: Any) -> Any:
        return sa.collate(text, "C") if self._postgres else text

    @staticmethod
    def _last_segment(path: Any) -> Any:
        # rtrim(path, <every character of path but '/'>) leaves the directory part
        # with its trailing '/'; what follows it is the name. Portable SQL.
        directory = sa.func.rtrim(path, sa.func.replace(path, "/", ""))
        return sa.func.substr(path, sa.func.length(directory) + 1)

    def _live_below(self, user_id: str, folder: str) -> list[Any]:
        conditions: list[Any] = [items.c.user_id == user_id, items.c.deleted == sa.false()]
        if folder:
            prefix = folder + "/"
            conditions.append(sa.func.substr(items.c.path, 1, len(prefix)) == prefix)
        return conditions

    # -- listing ---------------------------------------------------------

    def list_folder(
        self,
        user_id: str,
        folder: str,
        *,
        sort: SortKey,
        descending: bool,
        offset: int,
        limit: int,
    ) -> FolderPage:
        """Immediate entries of `folder` ("" = root): folders first, then files."""
        start = len(folder) + 2 if folder else 1
        rest = sa.func.substr(items.c.path, start)
        slash = self._position(rest, "/")
        below = self._live_below(user_id, folder)

        # One row per file below a sub-folder, named by that sub-folder; grouped
        # outside, so PostgreSQL sees one column (not two copies of an expression).
        per_file = (
            sa.select(
                sa.func.substr(rest, 1, slash - 1).label("name"),
                items.c.size,
                sa.func.coalesce(items.c.mtime, items.c.updated_at).label("modified"),
            )
            .where(*below, slash > 0)
            .subquery()
        )
        folders = (
            sa.select(
                per_file.c.name,
                sa.func.count().label("item_count"),
                sa.func.sum(per_file.c.size).label("size"),
                sa.func.max(per_file.c.modified).label("modified"),
            )
            .group_by(per_file.c.name)
            .subquery()
        )
        folder_count = int(
            self._conn.execute(sa.select(sa.func.count()).select_from(folders)).scalar_one()
        )
        file_count = int(
            self._conn.execute(
                sa.select(sa.func.count()).select_from(items).where(*below, slash == 0)
            ).scalar_one()
        )

        entries: list[FolderEntry] = []
        if offset < folder_count:
            key = {
                SortKey.SIZE: folders.c.size,
                SortKey.MODIFIED: folders.c.modified,
            }.get(sort)
            name_key = self._ordered(folders.c.name)
            order = [key, name_key] if key is not None else [name_key]
            stmt = (
                sa.select(folders)
                .order_by(*(o.desc() if descending else o.asc() for o in order))
                .offset(offset)
                .limit(limit)
            )
            for row in self._conn.execute(stmt).mappings():
                name = str(row["name"])
                entries.append(
                    FolderEntry(
                        kind=EntryKind.FOLDER,
                        name=name,
                        path=f"{folder}/{name}" if folder else name,
                        size=int(row["size"] or 0),
                        modified=row["modified"],
                        item_count=int(row["item_count"]),
                    )
                )
        remaining = limit - len(entries)
        if remaining > 0:
            file_offset = max(0, offset - folder_count)
            stmt = self._files(rest, sort=sort, descending=descending).where(*below, slash == 0)
            rows = self._conn.execute(stmt.offset(file_offset).limit(remaining)).mappings()
            entries.extend(self._file_entry(row) for row in rows)
        return FolderPage(
            folder=folder, entries=entries, total=folder_count + file_count, offset=offset
        )

    def search(
        self,
        user_id: str,
        folder: str,
        *,
        text: str,
        sort: SortKey,
        descending: bool,
        offset: int,
        limit: int,
    ) -> FolderPage:
        """Live files anywhere below `folder` whose name contains `text`.

        Case-insensitive for ASCII letters on SQLite (its lower() folds only
        those) and for all letters on PostgreSQL.
        """
        name = self._last_segment(items.c.path)
        matches = [
            *self._live_below(user_id, folder),
            sa.func.lower(name).like(_like_fragment(text.lower()), escape=_LIKE_ESCAPE),
        ]
        total = int(
            self._conn.execute(
                sa.select(sa.func.count()).select_from(items).where(*matches)
            ).scalar_one()
        )
        stmt = self._files(name, sort=sort, descending=descending).where(*matches)
        rows = self._conn.execute(stmt.offset(offset).limit(limit)).mappings()
        return FolderPage(
            folder=folder, entries=[self._file_entry(r) for r in rows], total=total, offset=offset
        )

    def _files(self, name: Any, *, sort: SortKey, descending: bool) -> sa.Select[Any]:
        key = {
            SortKey.SIZE: items.c.size,
            SortKey.MODIFIED: sa.func.coalesce(items.c.mtime, items.c.updated_at),
            SortKey.REVISION: items.c.revision,
        }.get(sort)
        name_key = self._ordered(name)
        order = [name_key, self._ordered(items.c.path)]
        if key is not None:
            order.insert(0, key)
        return sa.select(items, name.label("entry_name")).order_by(
            *(o.desc() if descending else o.asc() for o in order)
        )

    @staticmethod
    def _file_entry(row: RowMapping) -> FolderEntry:
        return FolderEntry(
            kind=EntryKind.FILE,
            name=str(row["entry_name"]),
            path=row["path"],
            size=int(row["size"]),
            modified=row["mtime"] or row["updated_at"],
            item_count=1,
            id=row["id"],
            revision=int(row["revision"]),
            content_hash=row["content_hash"],
            device_id=row["device_id"],
            changed_at=row["updated_at"],
        )

    # -- items, history, activity ----------------------------------------

    def item(self, user_id: str, item_id: str) -> Item | None:
        """The item (live or a tombstone) if it is this user's."""
        row = self._conn.execute(
            sa.select(*ITEM_COLUMNS).where(items.c.id == item_id, items.c.user_id == user_id)
        ).first()
        return item_from_row(row) if row else None

    def revision(self, item_id: str, revision: int) -> Revision | None:
        row = (
            self._conn.execute(
                sa.select(revisions).where(
                    revisions.c.item_id == item_id, revisions.c.revision == revision
                )
            )
            .mappings()
            .first()
        )
        return revision_from_row(row) if row else None

    def live_item_at(self, user_id: str, path: str) -> str | None:
        """The id of the live item at `path`, if any (paths are matched by their key)."""
        row = self._conn.execute(
            sa.select(items.c.id).where(
                items.c.user_id == user_id,
                items.c.path_hash == path_key(path),
                items.c.deleted == sa.false(),
            )
        ).first()
        return str(row[0]) if row else None

    def revisions(self, item_id: str, *, before: int | None, limit: int) -> list[Revision]:
        """Retained revisions, newest first (keyset: revision < `before`)."""
        stmt = sa.select(revisions).where(revisions.c.item_id == item_id)
        if before is not None:
            stmt = stmt.where(revisions.c.revision < before)
        stmt = stmt.order_by(revisions.c.revision.desc()).limit(limit)
        return [revision_from_row(r) for r in self._conn.execute(stmt).mappings()]

    def recent(self, user_id: str, *, before_seq: int | None, limit: int) -> list[Item]:
        """Items by their last change, newest first (the feed's order, reversed):
        an index range scan of (user_id, seq)."""
        stmt = sa.select(*ITEM_COLUMNS).where(items.c.user_id == user_id)
        if before_seq is not None:
            stmt = stmt.where(items.c.seq < before_seq)
        stmt = stmt.order_by(items.c.seq.desc()).limit(limit)
        return [item_from_row(r) for r in self._conn.execute(stmt)]
