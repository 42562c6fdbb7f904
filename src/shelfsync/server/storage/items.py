"""Repository of libraries, items and revisions: the feed and the history."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from shelfsync.server.domain.items import ChangeOp, Item, Revision
from shelfsync.server.storage import bulk
from shelfsync.server.storage.tables import items, libraries, revisions

__all__ = [
    "ITEM_COLUMNS",
    "ItemRepository",
    "LibraryCounters",
    "item_from_row",
    "path_key",
    "revision_from_row",
]


def path_key(path: str) -> str:
    """The indexed key of a path (paths can be longer than an index entry)."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()


# The columns an Item is made of, in Item's field order: rows are read as
# plain tuples (a feed page builds 1,000 Items; mappings cost a third more).
ITEM_COLUMNS = (
    items.c.id,
    items.c.user_id,
    items.c.path,
    items.c.revision,
    items.c.content_hash,
    items.c.size,
    items.c.mtime,
    items.c.metadata,
    items.c.deleted,
    items.c.device_id,
    items.c.updated_at,
    items.c.seq,
    items.c.op,
    items.c.from_path,
)
_OPS = {op.value: op for op in ChangeOp}


def item_from_row(row: Sequence[Any]) -> Item:
    """An Item from a row selected with ITEM_COLUMNS (extra columns may follow)."""
    return Item(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7] or {},
        bool(row[8]),
        row[9],
        row[10],
        row[11],
        _OPS[row[12]],
        row[13],
    )


def revision_from_row(row: RowMapping) -> Revision:
    return Revision(
        item_id=row["item_id"],
        revision=row["revision"],
        path=row["path"],
        content_hash=row["content_hash"],
        size=row["size"],
        mtime=row["mtime"],
        metadata=row["metadata"] or {},
        deleted=bool(row["deleted"]),
        device_id=row["device_id"],
        created_at=row["created_at"],
        seq=row["seq"],
        op=ChangeOp(row["op"]),
    )


class LibraryCounters:
    """The per-library feed counter. Lock it first in every writing transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def lock(self, user_id: str) -> int:
        """Lock the library row for this transaction and return its seq.

        On PostgreSQL the row lock serializes a library's writers, so seq order
        is commit order; SQLite's BEGIN IMMEDIATE already serializes writers.
        """
        stmt = sa.select(libraries.c.seq).where(libraries.c.user_id == user_id)
        seq = self._conn.execute(stmt.with_for_update()).scalar_one_or_none()
        if seq is None:
            self._conn.execute(libraries.insert().values(user_id=user_id, seq=0, purged_seq=0))
            seq = self._conn.execute(stmt.with_for_update()).scalar_one()
        return int(seq)

    def set_seq(self, user_id: str, seq: int) -> None:
        self._conn.execute(libraries.update().where(libraries.c.user_id == user_id).values(seq=seq))

    def read(self, user_id: str) -> tuple[int, int]:
        """(seq, purged_seq), (0, 0) for a library nothing was written to."""
        row = self._conn.execute(
            sa.select(libraries.c.seq, libraries.c.purged_seq).where(libraries.c.user_id == user_id)
        ).first()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def raise_purged(self, user_id: str, purged_seq: int) -> None:
        self._conn.execute(
            libraries.update()
            .where(libraries.c.user_id == user_id, libraries.c.purged_seq < purged_seq)
            .values(purged_seq=purged_seq)
        )


def _item_values(item: Item) -> dict[str, Any]:
    return {
        "id": item.id,
        "user_id": item.user_id,
        "path": item.path,
        "path_hash": path_key(item.path),
        "revision": item.revision,
        "content_hash": item.content_hash,
        "size": item.size,
        "mtime": item.mtime,
        "metadata": item.metadata,
        "deleted": item.deleted,
        "device_id": item.device_id,
        "updated_at": item.updated_at,
        "seq": item.seq,
        "op": item.op.value,
        "from_path": item.from_path,
    }


def _revision_values(item: Item) -> dict[str, Any]:
    """The revision row of an item's new state (the revision it was just given)."""
    return {
        "item_id": item.id,
        "revision": item.revision,
        "user_id": item.user_id,
        "path": item.path,
        "path_hash": path_key(item.path),
        "content_hash": item.content_hash,
        "size": item.size,
        "mtime": item.mtime,
        "metadata": item.metadata,
        "deleted": item.deleted,
        "device_id": item.device_id,
        "created_at": item.updated_at,
        "seq": item.seq,
        "op": item.op.value,
        "from_path": item.from_path,
    }


# Bound parameters of IN lists, per statement: far below every driver's limit.
_IN_CHUNK = 500

# An item's state as one bulk row; the same tuple is its revision's row, whose
# columns (_REVISION_COLUMNS) come in the same order under their own names.
_STATE_COLUMNS = (
    "id",
    "user_id",
    "path",
    "path_hash",
    "revision",
    "content_hash",
    "size",
    "mtime",
    "metadata",
    "deleted",
    "device_id",
    "updated_at",
    "seq",
    "op",
    "from_path",
)
_REVISION_COLUMNS = tuple(
    {"id": "item_id", "updated_at": "created_at"}.get(c, c) for c in _STATE_COLUMNS
)


def _preferred(a: Item, b: Item) -> Item:
    """What at_path picks of two items at one path: the live one, else the latest."""
    if a.deleted != b.deleted:
        return b if a.deleted else a
    return a if a.seq > b.seq else b


class ItemRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # -- current state ---------------------------------------------------

    def at_path(self, user_id: str, path: str) -> Item | None:
        """The live item at `path`, else the latest tombstone there, else None."""
        row = self._conn.execute(
            sa.select(*ITEM_COLUMNS)
            .where(items.c.user_id == user_id, items.c.path_hash == path_key(path))
            .order_by(items.c.deleted.asc(), items.c.seq.desc())
            .limit(1)
        ).first()
        return item_from_row(row) if row else None

    def at_paths(self, user_id: str, paths: Iterable[str]) -> dict[str, Item]:
        """Bulk form of at_path: each path that has an item (live, else the latest
        tombstone) mapped to it, in one query per 500 paths."""
        by_key = {path_key(p): p for p in paths}
        keys = sorted(by_key)
        chosen: dict[str, Item] = {}
        for start in range(0, len(keys), _IN_CHUNK):
            rows = self._conn.execute(
                sa.select(*ITEM_COLUMNS, items.c.path_hash).where(
                    items.c.user_id == user_id,
                    items.c.path_hash.in_(keys[start : start + _IN_CHUNK]),
                )
            )
            for row in rows:
                item, key = item_from_row(row), row[-1]
                seen = chosen.get(key)
                chosen[key] = item if seen is None else _preferred(seen, item)
        return {by_key[key]: item for key, item in chosen.items()}

    def live_at_path(self, user_id: str, path: str) -> Item | None:
        item = self.at_path(user_id, path)
        return item if item is not None and not item.deleted else None

    def get(self, item_id: str) -> Item | None:
        row = self._conn.execute(sa.select(*ITEM_COLUMNS).where(items.c.id == item_id)).first()
        return item_from_row(row) if row else None

    def insert(self, item: Item, *, now: datetime) -> None:
        self._conn.execute(items.insert().values(created_at=now, **_item_values(item)))

    def replace(self, item: Item, *, now: datetime) -> None:
        values = _item_values(item)
        del values["id"]
        self._conn.execute(items.update().where(items.c.id == item.id).values(**values))

    # -- bulk writes (storage/bulk.py) -------------------------------------

    def _state_rows(self, states: Sequence[Item]) -> list[tuple[Any, ...]]:
        """Each item's state as a driver row in _STATE_COLUMNS order."""
        dialect = self._conn.dialect
        when = bulk.bind_processor(items.c.updated_at, dialect)
        json = bulk.bind_processor(items.c.metadata, dialect)
        flag = bulk.bind_processor(items.c.deleted, dialect)
        # A batch's states share one updated_at: convert it once.
        last: datetime | None = None
        last_bound: Any = None
        rows = []
        for s in states:
            if s.updated_at is not last:
                last, last_bound = s.updated_at, when(s.updated_at)
            rows.append(
                (
                    s.id,
                    s.user_id,
                    s.path,
                    path_key(s.path),
                    s.revision,
                    s.content_hash,
                    s.size,
                    when(s.mtime),
                    json(s.metadata),
                    flag(s.deleted),
                    s.device_id,
                    last_bound,
                    s.seq,
                    s.op.value,
                    s.from_path,
                )
            )
        return rows

    def store_states(self, states: Sequence[Item], *, new_ids: set[str], now: datetime) -> None:
        """Bulk form of insert/replace plus add_revision, for a run of states in
        the order they were made: each item's last state goes into `items`
        (inserted when its id is in `new_ids`, else updated by id), and every
        state becomes a revision. Three executemany statements in all."""
        if not states:
            return
        dialect = self._conn.dialect
        rows = self._state_rows(states)
        last = {row[0]: row for row in rows}  # by id; later states overwrite
        created = bulk.bind_processor(items.c.created_at, dialect)(now)
        # Items before their revisions (foreign key). Seqs only grow, so no
        # update can collide with another row's seq on the unique index.
        bulk.executemany(
            self._conn,
            bulk.insert_sql(dialect, items, (*_STATE_COLUMNS, "created_at")),
            [(*row, created) for key, row in last.items() if key in new_ids],
        )
        bulk.executemany(
            self._conn,
            bulk.update_sql(dialect, items, _STATE_COLUMNS[1:], key="id"),
            [row[1:] + row[:1] for key, row in last.items() if key not in new_ids],
        )
        bulk.executemany(self._conn, bulk.insert_sql(dialect, revisions, _REVISION_COLUMNS), rows)

    def insert_many(self, new_items: Sequence[Item], *, now: datetime) -> None:
        """New items, each with its first revision (seeding, tests)."""
        self.store_states(new_items, new_ids={i.id for i in new_items}, now=now)

    # -- history ---------------------------------------------------------

    def add_revision(self, item: Item) -> None:
        self._conn.execute(revisions.insert().values(**_revision_values(item)))

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

    def revisions_of(self, item_id: str) -> list[Revision]:
        rows = self._conn.execute(
            sa.select(revisions)
            .where(revisions.c.item_id == item_id)
            .order_by(revisions.c.revision.desc())
        ).mappings()
        return [revision_from_row(r) for r in rows]

    def revision_at_path(self, user_id: str, path: str, revision: int) -> Revision | None:
        """The most recent revision numbered `revision` that lived at `path`."""
        row = (
            self._conn.execute(
                sa.select(revisions)
                .where(
                    revisions.c.user_id == user_id,
                    revisions.c.path_hash == path_key(path),
                    revisions.c.revision == revision,
                )
                .order_by(revisions.c.seq.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        return revision_from_row(row) if row else None

    def path_as_of(self, item_id: str, seq: int) -> str | None:
        """Where the item was once the feed had reached `seq` (None: not yet created)."""
        row = self._conn.execute(
            sa.select(revisions.c.path, revisions.c.deleted)
            .where(revisions.c.item_id == item_id, revisions.c.seq <= seq)
            .order_by(revisions.c.revision.desc())
            .limit(1)
        ).first()
        if row is None or row[1]:
            return None
        return str(row[0])

    def earliest_revision(self, item_id: str) -> tuple[int, int] | None:
        """(revision, seq) of the oldest retained revision of an item."""
        row = self._conn.execute(
            sa.select(revisions.c.revision, revisions.c.seq)
            .where(revisions.c.item_id == item_id)
            .order_by(revisions.c.revision)
            .limit(1)
        ).first()
        return (int(row[0]), int(row[1])) if row else None

    # -- the feed --------------------------------------------------------

    def feed_page(
        self, user_id: str, *, after_seq: int, snapshot_seq: int, limit: int
    ) -> list[Item]:
        """Items with seq > after_seq in seq order; tombstones at or below
        `snapshot_seq` are skipped (they predate a device's first listing)."""
        stmt = (
            sa.select(*ITEM_COLUMNS)
            .where(items.c.user_id == user_id, items.c.seq > after_seq)
            .order_by(items.c.seq)
            .limit(limit)
        )
        if snapshot_seq > after_seq:
            stmt = stmt.where(sa.or_(items.c.deleted == sa.false(), items.c.seq > snapshot_seq))
        return [item_from_row(r) for r in self._conn.execute(stmt).all()]

    def count_after(self, user_id: str, *, after_seq: int, live_only: bool) -> int:
        stmt = (
            sa.select(sa.func.count())
            .select_from(items)
            .where(items.c.user_id == user_id, items.c.seq > after_seq)
        )
        if live_only:
            stmt = stmt.where(items.c.deleted == sa.false())
        return int(self._conn.execute(stmt).scalar_one())

    def paths_after(self, user_id: str, *, after_seq: int, live_only: bool) -> Sequence[Any]:
        stmt = sa.select(items.c.id, items.c.path, items.c.deleted).where(
            items.c.user_id == user_id, items.c.seq > after_seq
        )
        if live_only:
            stmt = stmt.where(items.c.deleted == sa.false())
        return self._conn.execute(stmt).all()

    # -- retention -------------------------------------------------------

    def purgeable_tombstones(
        self, user_id: str, *, deleted_before: datetime, max_seq: int | None, limit: int
    ) -> list[tuple[str, int]]:
        stmt = (
            sa.select(items.c.id, items.c.seq)
            .where(
                items.c.user_id == user_id,
                items.c.deleted == sa.true(),
                items.c.updated_at < deleted_before,
            )
            .order_by(items.c.seq)
            .limit(limit)
        )
        if max_seq is not None:
            stmt = stmt.where(items.c.seq <= max_seq)
        return [(str(r[0]), int(r[1])) for r in self._conn.execute(stmt)]

    def delete_items(self, item_ids: Sequence[str]) -> None:
        if item_ids:
            self._conn.execute(revisions.delete().where(revisions.c.item_id.in_(item_ids)))
            self._conn.execute(items.delete().where(items.c.id.in_(item_ids)))

    def purge_old_revisions(self, user_id: str, *, replaced_before: datetime) -> int:
        """Drop revisions replaced before the cutoff; a revision stays retrievable for
        the retention period counted from when the next one replaced it."""
        newer = revisions.alias("newer")
        replaced = (
            sa.select(newer.c.revision)
            .where(
                newer.c.item_id == revisions.c.item_id,
                newer.c.revision == revisions.c.revision + 1,
                newer.c.created_at < replaced_before,
            )
            .exists()
        )
        result = self._conn.execute(
            revisions.delete().where(revisions.c.user_id == user_id, replaced)
        )
        return result.rowcount

    def users_with_items(self) -> list[str]:
        return [str(r[0]) for r in self._conn.execute(sa.select(libraries.c.user_id))]
