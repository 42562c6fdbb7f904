"""Lookups by path without an index over every row keyed by the path (migration 0004).

Items are found by path through two partial indexes (live, tombstones), and
"revision r that lived at path p" through the items at p plus the items moved
away from p. Both must answer what a scan of every row answers, on SQLite and
PostgreSQL, and must use those indexes.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from shelfsync.server.domain.accounts import User
from shelfsync.server.domain.items import Item
from shelfsync.server.services.library_writer import LibraryWriter
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.items import ItemRepository, path_key
from shelfsync.server.storage.tables import revisions
from shelfsync.server.storage.users import UserRepository

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HASHES = ["a" * 64, "b" * 64, "c" * 64]
PATHS = [f"dir/{name}.txt" for name in "pqrstu"]


def _add_user(db: Database, username: str) -> User:
    with db.write() as tx:
        return UserRepository(tx).add(
            user_id=str(uuid.uuid4()), username=username, password_hash="hash", now=T0
        )


def _random_history(db: Database, user: User, seed: int, steps: int) -> None:
    """Creations, edits, deletes, re-creations and moves (onto free paths and
    onto tombstones) over a few paths, each step its own transaction."""
    rng = random.Random(seed)
    for step in range(steps):
        with db.write() as tx:
            writer = LibraryWriter(tx, user_id=user.id, now=T0 + timedelta(seconds=step))
            path = rng.choice(PATHS)
            current = writer.items.at_path(user.id, path)
            live = current if current is not None and not current.deleted else None
            action = rng.random()
            if live is not None and action < 0.35:
                target = rng.choice([p for p in PATHS if p != path])
                if writer.items.live_at_path(user.id, target) is None:
                    writer.move(live, to_path=target, device_id=None)
            elif live is not None and action < 0.6:
                writer.delete(live, device_id=None)
            else:
                writer.upsert(
                    existing=current,
                    path=path,
                    content_hash=rng.choice(HASHES),
                    size=1,
                    mtime=None,
                    metadata={},
                    device_id=None,
                )
            writer.finish()


def _scan_revision_at_path(db: Database, user_id: str, path: str, number: int) -> Any:
    """What revision_at_path must answer, from every revision row."""
    with db.read() as tx:
        rows = tx.execute(
            sa.select(revisions.c.item_id, revisions.c.seq).where(
                revisions.c.user_id == user_id,
                revisions.c.path == path,
                revisions.c.revision == number,
            )
        ).all()
    return max(rows, key=lambda r: r[1], default=None)


def test_revision_at_path_answers_what_a_scan_of_revisions_answers(db: Database) -> None:
    user, other = _add_user(db, "alice"), _add_user(db, "bob")
    for seed in range(3):
        _random_history(db, user, seed=seed, steps=60)
    _random_history(db, other, seed=99, steps=30)  # the same paths, another user
    with db.read() as tx:
        top = max(r.revision for p in PATHS for r in _items_at(tx, user.id, p))
    checked = 0
    for path in [*PATHS, "never.txt"]:
        for number in range(1, top + 2):
            expected = _scan_revision_at_path(db, user.id, path, number)
            with db.read() as tx:
                found = ItemRepository(tx).revision_at_path(user.id, path, number)
            got = None if found is None else (found.item_id, found.seq)
            assert got == (None if expected is None else (expected[0], expected[1]))
            checked += found is not None
    assert checked > 20  # the histories did move things around


def _items_at(tx: Any, user_id: str, path: str) -> list[Item]:
    repo = ItemRepository(tx)
    item = repo.at_path(user_id, path)
    return [] if item is None else [item]


def test_moves_record_the_hash_of_the_path_they_left(db: Database) -> None:
    user = _add_user(db, "alice")
    with db.write() as tx:
        writer = LibraryWriter(tx, user_id=user.id, now=T0)
        item = writer.upsert(
            existing=None,
            path="a.txt",
            content_hash=HASHES[0],
            size=1,
            mtime=None,
            metadata={},
            device_id=None,
        )
        writer.move(item, to_path="b.txt", device_id=None)
        writer.finish()
    with db.read() as tx:
        rows = tx.execute(
            sa.select(revisions.c.revision, revisions.c.from_path_hash).order_by(
                revisions.c.revision
            )
        ).all()
    assert [tuple(r) for r in rows] == [(1, None), (2, path_key("a.txt"))]


def _plans(db: Database, run: Any) -> list[str]:
    """EXPLAIN of every statement `run` executes."""
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        captured.append((statement, params))

    sa.event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.read() as tx:
            run(ItemRepository(tx))
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", capture)
    plans = []
    with db.read() as tx:
        if not db.is_sqlite:
            # A test-sized table is cheaper to scan: ask whether an index serves.
            tx.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for statement, params in captured:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            prefix = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
            rows = tx.exec_driver_sql(prefix + statement, params).all()
            plans.append(" / ".join(str(r[-1]) for r in rows))
    return plans


def test_path_lookups_use_the_partial_indexes(db: Database) -> None:
    user = _add_user(db, "alice")
    for seed in range(2):
        _random_history(db, user, seed=seed, steps=40)
    plans = _plans(
        db,
        lambda repo: (
            repo.at_path(user.id, "never.txt"),
            repo.at_paths(user.id, [*PATHS, "never.txt"]),
            repo.revision_at_path(user.id, PATHS[0], 1),
        ),
    )
    assert plans
    for plan in plans:
        # Every lookup is an index search, never a scan of the table.
        assert "SCAN items" not in plan, plan
        assert "SCAN revisions" not in plan, plan
        assert "Seq Scan" not in plan, plan
    joined = "\n".join(plans)
    for index in ("uq_items_live_path", "ix_items_tombstone_path", "ix_revisions_moved_from"):
        assert index in joined, joined


def test_the_keys_of_a_folders_paths_sort_together() -> None:
    """A folder's files share the first half of their keys (the folder's), so
    they are neighbours in every index keyed by path; the second half tells
    them apart (migration 0006)."""
    keys = [path_key(f"Music/Album/{n:02}.flac") for n in range(20)]
    assert len(set(keys)) == 20
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in keys)
    assert {k[:32] for k in keys} == {path_key("Music/Album/cover.jpg")[:32]}
    assert path_key("Music/Other/01.flac")[:32] != keys[0][:32]
    assert path_key("Music/Album")[:32] == path_key("Music/x")[:32] != keys[0][:32]
    assert path_key("top.txt")[:32] == path_key("other.txt")[:32]
