"""The bulk item writes and reads agree with the one-row ones, on SQLite and PostgreSQL.

`store_states` (executemany straight to the driver, storage/bulk.py) must store
byte for byte what insert/replace/add_revision store, and `at_paths` must
answer what `at_path` answers for every path.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shelfsync.server.domain.accounts import User
from shelfsync.server.domain.items import ChangeOp, Item
from shelfsync.server.storage import bulk
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.items import ItemRepository
from shelfsync.server.storage.users import UserRepository

T0 = datetime(2026, 11, 26, 18, 27, 41, 123456, tzinfo=UTC)
A, B = "a" * 64, "b" * 64


def _add_user(db: Database, username: str) -> User:
    with db.write() as tx:
        return UserRepository(tx).add(
            user_id=str(uuid.uuid4()), username=username, password_hash="hash", now=T0
        )


def _history(user: User) -> list[Item]:
    """States in the order a writer makes them: creations, edits, a delete, a
    move, a re-creation; odd metadata, mtimes in other zones, unicode paths."""
    first = Item(
        id=str(uuid.uuid4()),
        user_id=user.id,
        path="Bücher/Dune — Part 1.epub",
        revision=1,
        content_hash=A,
        size=3,
        mtime=datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-7))),
        metadata={"tags": ["sf", "ünïcode"], "n": 1, "nested": {"x": None, "f": 1.5}},
        deleted=False,
        device_id=str(uuid.uuid4()),
        updated_at=T0,
        seq=1,
        op=ChangeOp.UPSERT,
    )
    other = replace(first, id=str(uuid.uuid4()), path="notes.txt", mtime=None, metadata={}, seq=2)
    later = T0 + timedelta(seconds=1)
    edited = replace(first, revision=2, content_hash=B, size=4, seq=3, updated_at=later)
    deleted = replace(
        other, revision=2, content_hash=None, size=0, deleted=True, seq=4, op=ChangeOp.DELETE
    )
    moved = replace(
        edited, revision=3, path="Archive/Dune.epub", from_path=edited.path, op=ChangeOp.MOVE, seq=5
    )
    recreated = replace(
        deleted, revision=3, content_hash=A, size=3, deleted=False, seq=6, op=ChangeOp.UPSERT
    )
    return [first, other, edited, deleted, moved, recreated]


def _rows(db: Database, user: User) -> dict[str, list[tuple[Any, ...]]]:
    """What the driver hands back for the user's items and revisions, ids masked."""
    ids: dict[str, str] = {}

    def is_id(value: Any) -> bool:
        if not isinstance(value, str) or len(value) != 36:
            return False
        try:
            uuid.UUID(value)
        except ValueError:
            return False
        return True

    def mask(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(ids.setdefault(v, f"id{len(ids)}") if is_id(v) else v for v in row)

    with db.read() as tx:
        param = "?" if db.is_sqlite else "%s"
        found = {}
        for table, order in (("items", "seq"), ("revisions", "seq")):
            result = tx.exec_driver_sql(
                f"SELECT * FROM {table} WHERE user_id = {param} ORDER BY {order}",
                (user.id,),
            )
            found[table] = [mask(tuple(r)) for r in result]
    return found


def test_store_states_stores_exactly_what_one_row_writes_store(db: Database) -> None:
    one, many = _add_user(db, "one"), _add_user(db, "many")
    with db.write() as tx:
        repo = ItemRepository(tx)
        seen: set[str] = set()
        for state in _history(one):
            if state.id in seen:
                repo.replace(state, now=T0)
            else:
                repo.insert(state, now=T0)
                seen.add(state.id)
            repo.add_revision(state)
    states = _history(many)
    with db.write() as tx:
        new_ids = {s.id for s in states if s.revision == 1}
        ItemRepository(tx).store_states(states, new_ids=new_ids, now=T0)
    assert _rows(db, many) == _rows(db, one)


def test_store_states_updates_items_written_in_an_earlier_batch(db: Database) -> None:
    user = _add_user(db, "alice")
    first, *rest = _history(user)
    with db.write() as tx:
        ItemRepository(tx).store_states([first], new_ids={first.id}, now=T0)
    with db.write() as tx:
        ItemRepository(tx).store_states(rest, new_ids={rest[0].id}, now=T0)
    with db.read() as tx:
        repo = ItemRepository(tx)
        assert repo.get(first.id) == rest[3]  # the move: the item's last state
        assert [r.revision for r in repo.revisions_of(first.id)] == [3, 2, 1]


def test_at_paths_answers_what_at_path_answers(db: Database) -> None:
    user, other = _add_user(db, "alice"), _add_user(db, "bob")
    history = _history(user)
    # A live item over an older tombstone, and two tombstones at one path.
    at = "shared.txt"
    old = replace(history[0], id=str(uuid.uuid4()), path=at, seq=10, revision=1)
    live = replace(old, id=str(uuid.uuid4()), seq=12)
    gone_1 = replace(old, id=str(uuid.uuid4()), path="gone.txt", seq=13)
    gone_2 = replace(gone_1, id=str(uuid.uuid4()), seq=15)
    states = [
        *history,
        old,
        replace(old, revision=2, deleted=True, content_hash=None, seq=11, op=ChangeOp.DELETE),
        live,
        gone_1,
        replace(gone_1, revision=2, deleted=True, content_hash=None, seq=14, op=ChangeOp.DELETE),
        gone_2,
        replace(gone_2, revision=2, deleted=True, content_hash=None, seq=16, op=ChangeOp.DELETE),
    ]
    theirs = replace(history[0], id=str(uuid.uuid4()), user_id=other.id, path="theirs.txt")
    with db.write() as tx:
        repo = ItemRepository(tx)
        repo.store_states(states, new_ids={s.id for s in states if s.revision == 1}, now=T0)
        repo.insert_many([theirs], now=T0)
    paths = {s.path for s in states} | {s.from_path for s in states if s.from_path}
    paths |= {"theirs.txt", "never.txt"}
    with db.read() as tx:
        repo = ItemRepository(tx)
        found = repo.at_paths(user.id, paths)
        assert {p: found.get(p) for p in paths} == {p: repo.at_path(user.id, p) for p in paths}
    assert found[at] == live
    assert found["gone.txt"].seq == 16
    assert "theirs.txt" not in found


def test_at_paths_reads_more_paths_than_one_query_binds(db: Database) -> None:
    user = _add_user(db, "alice")
    template = _history(user)[1]
    states = [
        replace(template, id=str(uuid.uuid4()), path=f"many/{i:04}.txt", seq=i + 1)
        for i in range(1201)
    ]
    with db.write() as tx:
        ItemRepository(tx).insert_many(states, now=T0)
    with db.read() as tx:
        found = ItemRepository(tx).at_paths(user.id, [s.path for s in states] + ["none"])
    assert found == {s.path: s for s in states}


def test_feed_page_reads_with_an_index_range_scan(db: Database) -> None:
    """The page query must cost O(page): a range scan of ix_items_user_seq."""
    user = _add_user(db, "alice")
    template = _history(user)[1]
    with db.write() as tx:
        ItemRepository(tx).insert_many(
            [
                replace(template, id=str(uuid.uuid4()), path=f"p/{i}.txt", seq=i + 1)
                for i in range(2000)
            ],
            now=T0,
        )
    for snapshot in (0, 5000):  # an ordinary cursor, and a first listing in progress
        plan = _plan(db, user.id, after_seq=1000, snapshot_seq=snapshot)
        assert "ix_items_user_seq" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # SQLite sorting
        assert "Sort" not in plan, plan  # PostgreSQL sorting


def _plan(db: Database, user_id: str, *, after_seq: int, snapshot_seq: int) -> str:
    """EXPLAIN of the feed page query, as ItemRepository.feed_page sends it."""
    captured: list[tuple[str, Any]] = []
    read_rows = bulk.select_rows

    def capture(conn: Any, statement: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        captured.append(bulk.driver_select(conn.dialect, statement, params))
        return read_rows(conn, statement, params)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bulk, "select_rows", capture)
        with db.read() as tx:
            ItemRepository(tx).feed_page(
                user_id, after_seq=after_seq, snapshot_seq=snapshot_seq, limit=1001
            )
    [(statement, params)] = [c for c in captured if "FROM items" in c[0]]
    explain = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
    with db.read() as tx:
        if not db.is_sqlite:
            # A table this small is cheaper to read whole; what must hold is that
            # the index serves the query (range and order) when the table is big.
            tx.exec_driver_sql("SET LOCAL enable_seqscan = off")
        args = tuple(params) if isinstance(params, list) else params
        rows = tx.exec_driver_sql(explain + statement, args).all()
    return "\n".join(" ".join(str(v) for v in row) for row in rows)
