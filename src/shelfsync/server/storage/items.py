"""Repository of libraries, items and revisions: the feed and the history."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from shelfsync.server.domain.items import ChangeOp, Item, Revision
from shelfsync.server.storage import bulk
from shelfsync.server.storage.tables import items, libraries, revisions

__all__ = [
    "ITEM_COLUMNS",
    "FeedRow",
    "ItemRepository",
    "LibraryCounters",
    "feed_row",
    "item_from_row",
    "path_key",
    "revision_from_row",
]


def path_key(path: str) -> str:
    """The indexed key of a path (paths can be longer than an index entry).

    64 hex digits: the first 128 bits of SHA-256 of the path's folder, then
    the first 128 bits of SHA-256 of the whole path. Keys of one folder sort
    together, so the files of a folder reported, uploaded or listed together
    share a few pages of the path indexes instead of each taking a random one
    (a report of 1,000 new files of one folder into 1,000,000 items: about
    1,000 fewer pages written; issue 7, migration 0006). Two paths share a key
    only if both halves collide: 128 bits of the whole path's hash decide
    between the paths of one folder.
    """
    folder = path.rpartition("/")[0]
    return (
        hashlib.sha256(folder.encode("utf-8")).hexdigest()[:32]
        + hashlib.sha256(path.encode("utf-8")).hexdigest()[:32]
    )


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
        "from_path_hash": _from_path_key(item.from_path),
    }


def _from_path_key(from_path: str | None) -> str | None:
    return None if from_path is None else path_key(from_path)


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
_REVISION_COLUMNS = (
    *({"id": "item_id", "updated_at": "created_at"}.get(c, c) for c in _STATE_COLUMNS),
    "from_path_hash",  # revisions only: the state row plus this
)
_FROM_PATH = _STATE_COLUMNS.index("from_path")


# Built once: every download runs them; building a statement (and its cache key)
# costs several times what running it does. A path's live item and its
# tombstones are in two partial indexes (tables.py): each query names the
# `deleted` value of its index, so that the index is usable.
_AT_PATH_WHERE = (
    items.c.user_id == sa.bindparam("user_id"),
    items.c.path_hash == sa.bindparam("path_hash"),
)
_LIVE_AT_PATH = sa.select(*ITEM_COLUMNS).where(*_AT_PATH_WHERE, items.c.deleted == sa.false())
# Every tombstone at the path (rarely more than one); the latest is picked here:
# an ORDER BY seq would let SQLite choose the (user_id, seq) index instead.
_TOMBSTONES_AT_PATH = sa.select(*ITEM_COLUMNS).where(*_AT_PATH_WHERE, items.c.deleted == sa.true())


def _by_path_hashes(*, deleted: bool, postgres: bool) -> sa.Select[Any]:
    """Items (live, or tombstones) of a user at any of the path keys `:keys`.

    PostgreSQL gets the keys as one text parameter, comma-separated, split by
    the server (`= ANY (string_to_array(...))`): an IN list of 500 parameters
    costs more to render, send and parse than to run, and psycopg's dumper of a
    Python list as an array costs about 15 ms per 1,000 keys (issue 7). Path
    keys are hex digests, never holding a comma.
    """
    keys: Any
    if postgres:
        keys = sa.any_(
            sa.func.string_to_array(sa.bindparam("keys", type_=sa.Text), sa.literal_column("','"))
        )
    else:
        keys = sa.bindparam("keys", expanding=True)
    match = items.c.path_hash == keys if postgres else items.c.path_hash.in_(keys)
    return sa.select(*ITEM_COLUMNS, items.c.path_hash).where(
        items.c.user_id == sa.bindparam("user_id"),
        match,
        items.c.deleted == (sa.true() if deleted else sa.false()),
    )


_BY_PATH_HASHES = {
    (deleted, postgres): _by_path_hashes(deleted=deleted, postgres=postgres)
    for deleted in (False, True)
    for postgres in (False, True)
}


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
        params = {"user_id": user_id, "path_hash": path_key(path)}
        row = self._conn.execute(_LIVE_AT_PATH, params).first()
        if row is not None:
            return item_from_row(row)
        latest: Item | None = None
        for row in self._conn.execute(_TOMBSTONES_AT_PATH, params):
            item = item_from_row(row)
            latest = item if latest is None else _preferred(latest, item)
        return latest

    def at_paths(self, user_id: str, paths: Iterable[str]) -> dict[str, Item]:
        """Bulk form of at_path: each path that has an item (live, else the latest
        tombstone) mapped to it. Live items are read first, then tombstones for
        the paths left: one query per 500 paths on SQLite, one for all of them
        on PostgreSQL."""
        by_key = {path_key(p): p for p in paths}
        chosen: dict[str, Item] = {}
        postgres = self._conn.dialect.name == "postgresql"
        chunk = (len(by_key) or 1) if postgres else _IN_CHUNK  # an array binds as one
        # The live items first; tombstones only for the paths without one.
        for deleted in (False, True):
            keys = sorted(k for k in by_key if k not in chosen)
            for start in range(0, len(keys), chunk):
                part = keys[start : start + chunk]
                rows = self._conn.execute(
                    _BY_PATH_HASHES[deleted, postgres],
                    {"user_id": user_id, "keys": ",".join(part) if postgres else part},
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
        state becomes a revision. Three bulk statements in all."""
        if not states:
            return
        dialect = self._conn.dialect
        rows = self._state_rows(states)
        last = {row[0]: row for row in rows}  # by id; later states overwrite
        created = bulk.bind_processor(items.c.created_at, dialect)(now)
        # Items before their revisions (foreign key). Seqs only grow, so no
        # update can collide with another row's seq on the unique index.
        bulk.insert_rows(
            self._conn,
            items,
            (*_STATE_COLUMNS, "created_at"),
            [(*row, created) for key, row in last.items() if key in new_ids],
        )
        bulk.executemany(
            self._conn,
            bulk.update_sql(dialect, items, _STATE_COLUMNS[1:], key="id"),
            [row[1:] + row[:1] for key, row in last.items() if key not in new_ids],
        )
        bulk.insert_rows(
            self._conn,
            revisions,
            _REVISION_COLUMNS,
            [(*row, _from_path_key(row[_FROM_PATH])) for row in rows],
        )

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
        """The most recent revision numbered `revision` that lived at `path`.

        An item that ever lived at `path` is there now (live or a tombstone) or
        left it by a move, whose revision records `from_path_hash`; and when one
        of its revisions at `path` is retained, so is that move (retention drops
        the oldest revisions of an item first). So the candidates are those
        items, and their revision `revision` is looked up by primary key.
        """
        key = path_key(path)
        candidates = sa.union(
            sa.select(items.c.id).where(
                items.c.user_id == user_id, items.c.path_hash == key, items.c.deleted == sa.false()
            ),
            sa.select(items.c.id).where(
                items.c.user_id == user_id, items.c.path_hash == key, items.c.deleted == sa.true()
            ),
            sa.select(revisions.c.item_id).where(
                revisions.c.user_id == user_id, revisions.c.from_path_hash == key
            ),
        )
        item_ids = sorted({str(r[0]) for r in self._conn.execute(candidates)})
        latest: RowMapping | None = None
        for start in range(0, len(item_ids), _IN_CHUNK):
            rows = self._conn.execute(
                sa.select(revisions).where(
                    revisions.c.item_id.in_(item_ids[start : start + _IN_CHUNK]),
                    revisions.c.revision == revision,
                    revisions.c.path_hash == key,
                )
            ).mappings()
            for row in rows:
                if latest is None or row["seq"] > latest["seq"]:
                    latest = row
        return revision_from_row(latest) if latest is not None else None

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
    ) -> list[FeedRow]:
        """Items with seq > after_seq in seq order, as FeedRows; tombstones at or
        below `snapshot_seq` are skipped (they predate a device's first listing)."""
        skip_tombstones = snapshot_seq > after_seq
        dialect_name = self._conn.dialect.name
        stmt = _feed_statement(dialect_name, skip_tombstones=skip_tombstones)
        params = {"user_id": user_id, "after_seq": after_seq, "limit": limit}
        if skip_tombstones:
            params["snapshot_seq"] = snapshot_seq
        try:
            return _feed_rows(bulk.select_rows(self._conn, stmt, params))
        except ValueError:
            if dialect_name != "postgresql":
                raise
        # Timestamps not in ISO form (a DateStyle other than ISO): the typed read.
        typed = _feed_statement(dialect_name, skip_tombstones=skip_tombstones, typed=True)
        return [feed_row(item_from_row(r)) for r in self._conn.execute(typed, params).all()]

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


# -- the feed's read (issue 7) -------------------------------------------------
#
# A feed page is up to 1,001 rows, read on every sync, and all the server does
# with most of them is write them out as JSON. Built as Items, each row cost a
# frozen dataclass (about 3 us: one object.__setattr__ per field), two parsed
# timestamps and a decoded metadata object, all of which the wire then turned
# back into text: more than half of a page's CPU. So a page is read as FeedRows
# (plain tuples) straight from the driver (bulk.select_rows), with the
# timestamps and the metadata as the text the database holds: SQLite stores
# them as text, PostgreSQL casts them. The wire writes that text out as it is
# (api/wire.py). user_id is not read back: it is the one the query asks for.
# tests/storage/test_feed_contract.py checks every value against the typed
# columns. PostgreSQL writes timestamps as text in its DateStyle; with one
# other than the default ISO the page is read again through the typed columns.
# (to_char would not depend on DateStyle, but costs the server more than the
# whole rest of the query.)


class FeedRow(NamedTuple):
    """One entry of a feed page, as the page query reads it.

    Times are UTC as ISO text, `YYYY-MM-DD HH:MM:SS` with a fraction of 1 to 6
    digits or none (SQLite stores six; PostgreSQL drops trailing zeros).
    `metadata` is the JSON text of the item's metadata object as stored.
    """

    id: str
    path: str
    revision: int
    content_hash: str | None
    size: int
    mtime: str | None
    metadata: str
    deleted: bool
    device_id: str | None
    updated_at: str
    seq: int
    op: ChangeOp
    from_path: str | None


_FEED_COLUMNS = tuple(c for c in ITEM_COLUMNS if c is not items.c.user_id)
_feed_statements: dict[tuple[str, bool, bool], sa.Select[Any]] = {}


def utc_text(value: datetime) -> str:
    """A FeedRow time: `value` in UTC as SQLite stores it (six digits of fraction)."""
    naive = value.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(sep=" ", timespec="microseconds")


def feed_row(item: Item) -> FeedRow:
    """The FeedRow of a typed Item (the page read again through the typed columns)."""
    return FeedRow(
        item.id,
        item.path,
        item.revision,
        item.content_hash,
        item.size,
        None if item.mtime is None else utc_text(item.mtime),
        json.dumps(item.metadata),
        item.deleted,
        item.device_id,
        utc_text(item.updated_at),
        item.seq,
        item.op,
        item.from_path,
    )


def _as_text(column: sa.Column[Any], dialect_name: str) -> sa.ColumnElement[Any]:
    """The column's stored value as text, with no result processing."""
    if dialect_name != "postgresql":
        return sa.type_coerce(column, sa.String).label(column.name)  # stored as text
    return sa.cast(column, sa.Text).label(column.name)


def _feed_statement(
    dialect_name: str, *, skip_tombstones: bool, typed: bool = False
) -> sa.Select[Any]:
    """The page query: _FEED_COLUMNS with times and metadata as text, or
    (typed) ITEM_COLUMNS through their types, for item_from_row."""
    key = (dialect_name, skip_tombstones, typed)
    stmt = _feed_statements.get(key)
    if stmt is None:
        text_columns = {items.c.mtime, items.c.metadata, items.c.updated_at}
        columns = (
            ITEM_COLUMNS
            if typed
            else tuple(_as_text(c, dialect_name) if c in text_columns else c for c in _FEED_COLUMNS)
        )
        stmt = (
            sa.select(*columns)
            .where(
                items.c.user_id == sa.bindparam("user_id"),
                items.c.seq > sa.bindparam("after_seq"),
            )
            .order_by(items.c.seq)
            .limit(sa.bindparam("limit"))
        )
        if skip_tombstones:
            stmt = stmt.where(
                sa.or_(items.c.deleted == sa.false(), items.c.seq > sa.bindparam("snapshot_seq"))
            )
        _feed_statements[key] = stmt
    return stmt


def _iso_text(value: str) -> bool:
    """Whether a time read as text is in the ISO form FeedRow holds."""
    return len(value) >= 19 and value[4] == "-" and value[10] == " " and value[13] == ":"


def _feed_rows(rows: list[tuple[Any, ...]]) -> list[FeedRow]:
    """FeedRows from rows of _feed_statement (_FEED_COLUMNS, times and metadata
    as text); ValueError when the times are not in ISO form."""
    # One DateStyle, one form: the first row tells for the page.
    if rows and not _iso_text(rows[0][9]):
        raise ValueError("timestamps are not in ISO form")
    ops = _OPS
    return [
        FeedRow(i, path, rev, h, size, mtime, meta or "{}", bool(gone), dev, at, seq, ops[op], frm)
        for (i, path, rev, h, size, mtime, meta, gone, dev, at, seq, op, frm) in rows
    ]
