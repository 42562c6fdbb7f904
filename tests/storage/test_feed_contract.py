"""The feed's storage contract: counters, items, revisions, on SQLite and PostgreSQL.

Each test takes `db`, so it runs once per database on a freshly migrated schema.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from shelfsync.server.domain.accounts import User
from shelfsync.server.domain.items import ChangeOp, Item
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.items import FeedRow, ItemRepository, LibraryCounters
from shelfsync.server.storage.tables import items as items_table
from shelfsync.server.storage.users import UserRepository

T0 = datetime(2026, 11, 26, 18, 27, 41, 123000, tzinfo=UTC)
A = "a" * 64
B = "b" * 64


def _add_user(db: Database, username: str = "alice") -> User:
    with db.write() as tx:
        return UserRepository(tx).add(
            user_id=str(uuid.uuid4()), username=username, password_hash="hash", now=T0
        )


def _item(
    user: User,
    path: str,
    *,
    seq: int,
    content_hash: str | None = A,
    at: datetime = T0,
    metadata: dict[str, object] | None = None,
) -> Item:
    return Item(
        id=str(uuid.uuid4()),
        user_id=user.id,
        path=path,
        revision=1,
        content_hash=content_hash,
        size=3,
        mtime=at - timedelta(hours=1),
        metadata=metadata or {},
        deleted=False,
        device_id=None,
        updated_at=at,
        seq=seq,
        op=ChangeOp.UPSERT,
    )


def _next(item: Item, *, seq: int, at: datetime | None = None, **changes: object) -> Item:
    """The item's next revision (what LibraryWriter does)."""
    return replace(
        item,
        revision=item.revision + 1,
        seq=seq,
        updated_at=at or item.updated_at,
        **changes,  # type: ignore[arg-type]
    )


def _deleted(item: Item, *, seq: int, at: datetime | None = None) -> Item:
    return _next(item, seq=seq, at=at, deleted=True, content_hash=None, size=0, op=ChangeOp.DELETE)


def _moved(item: Item, *, seq: int, to: str, at: datetime | None = None) -> Item:
    return _next(item, seq=seq, at=at, path=to, op=ChangeOp.MOVE, from_path=item.path)


def _store(db: Database, *versions: Item) -> Item:
    """Write versions in order: the first of an id is inserted, later ones replace it."""
    with db.write() as tx:
        repo = ItemRepository(tx)
        for version in versions:
            if repo.get(version.id) is None:
                repo.insert(version, now=version.updated_at)
            else:
                repo.replace(version, now=version.updated_at)
            repo.add_revision(version)
    return versions[-1]


# -- library counters --------------------------------------------------------


def test_new_library_counter_starts_at_zero(db: Database) -> None:
    user = _add_user(db)
    with db.write() as tx:
        assert LibraryCounters(tx).lock(user.id) == 0
    with db.read() as tx:
        assert LibraryCounters(tx).read(user.id) == (0, 0)


def test_lock_returns_the_stored_seq(db: Database) -> None:
    user = _add_user(db)
    with db.write() as tx:
        LibraryCounters(tx).set_seq(user.id, 17)
    with db.write() as tx:
        assert LibraryCounters(tx).lock(user.id) == 17


def test_set_seq_is_per_library(db: Database) -> None:
    alice, bob = _add_user(db, "alice"), _add_user(db, "bob")
    with db.write() as tx:
        LibraryCounters(tx).set_seq(alice.id, 5)
    with db.read() as tx:
        counters = LibraryCounters(tx)
        assert (counters.read(alice.id), counters.read(bob.id)) == ((5, 0), (0, 0))


def test_read_of_unknown_library_is_zero(db: Database) -> None:
    with db.read() as tx:
        assert LibraryCounters(tx).read(str(uuid.uuid4())) == (0, 0)


def test_set_seq_rolled_back_with_its_transaction(db: Database) -> None:
    user = _add_user(db)

    def write_then_fail() -> None:
        with db.write() as tx:
            LibraryCounters(tx).lock(user.id)
            LibraryCounters(tx).set_seq(user.id, 9)
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        write_then_fail()
    with db.read() as tx:
        assert LibraryCounters(tx).read(user.id) == (0, 0)


def test_raise_purged_is_monotonic(db: Database) -> None:
    user = _add_user(db)
    with db.write() as tx:
        LibraryCounters(tx).set_seq(user.id, 10)
    seen = []
    for value in (5, 3, 5, 8):
        with db.write() as tx:
            LibraryCounters(tx).raise_purged(user.id, value)
        with db.read() as tx:
            seen.append(LibraryCounters(tx).read(user.id))
    # A lower value and the same value again leave it; a higher one raises it.
    assert seen == [(10, 5), (10, 5), (10, 5), (10, 8)]


# -- items -------------------------------------------------------------------


def test_inserted_item_reads_back_equal(db: Database) -> None:
    user = _add_user(db)
    item = _store(db, _item(user, "books/Dune.epub", seq=1, metadata={"tags": ["sf"], "n": 1}))
    with db.read() as tx:
        repo = ItemRepository(tx)
        assert repo.get(item.id) == item
        assert repo.at_path(user.id, "books/Dune.epub") == item


def test_replace_stores_the_new_state_under_the_same_id(db: Database) -> None:
    user = _add_user(db)
    first = _item(user, "a.txt", seq=1)
    second = _next(first, seq=2, content_hash=B, metadata={"rating": 4})
    _store(db, first, second)
    with db.read() as tx:
        assert ItemRepository(tx).get(first.id) == second


def test_at_path_of_nothing_is_none(db: Database) -> None:
    user = _add_user(db)
    with db.read() as tx:
        assert ItemRepository(tx).at_path(user.id, "nothing.txt") is None


def test_at_path_prefers_the_live_item_over_tombstones(db: Database) -> None:
    user = _add_user(db)
    older = _item(user, "a.txt", seq=1)
    _store(db, older, _deleted(older, seq=2))
    live = _store(db, _item(user, "a.txt", seq=3))
    # A tombstone there with a higher seq than the live item still loses to it.
    _store(db, replace(_item(user, "a.txt", seq=4), deleted=True, content_hash=None))
    with db.read() as tx:
        repo = ItemRepository(tx)
        assert repo.at_path(user.id, "a.txt") == live
        assert repo.live_at_path(user.id, "a.txt") == live


def test_at_path_of_deleted_path_is_the_latest_tombstone(db: Database) -> None:
    user = _add_user(db)
    first, second = _item(user, "a.txt", seq=1), _item(user, "a.txt", seq=3)
    _store(db, first, _deleted(first, seq=2))
    latest = _store(db, second, _deleted(second, seq=4))
    with db.read() as tx:
        repo = ItemRepository(tx)
        assert repo.at_path(user.id, "a.txt") == latest
        assert repo.live_at_path(user.id, "a.txt") is None


def test_at_path_never_sees_another_users_item(db: Database) -> None:
    alice, bob = _add_user(db, "alice"), _add_user(db, "bob")
    _store(db, _item(bob, "a.txt", seq=1))
    with db.read() as tx:
        assert ItemRepository(tx).at_path(alice.id, "a.txt") is None


def test_a_path_holds_one_live_item(db: Database) -> None:
    user = _add_user(db)
    _store(db, _item(user, "a.txt", seq=1))
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        _store(db, _item(user, "a.txt", seq=2))


# -- the feed ----------------------------------------------------------------


def _library(db: Database, user: User) -> dict[str, Item]:
    """seq 1 a, 2 b, 3 c, then b deleted (4) and a edited (5): order c, b, a."""
    a, b, c = (_item(user, f"{n}.txt", seq=s) for n, s in (("a", 1), ("b", 2), ("c", 3)))
    _store(db, a, b, c)
    return {
        "a": _store(db, _next(a, seq=5, content_hash=B)),
        "b": _store(db, _deleted(b, seq=4)),
        "c": c,
    }


def _paths(rows: list[FeedRow]) -> list[str]:
    return [r.path for r in rows]


# The text forms a FeedRow may hold: SQLite's six-digit fraction, PostgreSQL's ISO
# DateStyle without trailing zeros (and without a fraction of 0).
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?")


def _as_item(row: FeedRow, user_id: str) -> Item:
    """What a FeedRow's text stands for, through Python's own parsers."""

    def when(text: str) -> datetime:
        assert _ISO_TIME.fullmatch(text), text
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    return Item(
        row.id,
        user_id,
        row.path,
        row.revision,
        row.content_hash,
        row.size,
        None if row.mtime is None else when(row.mtime),
        json.loads(row.metadata) or {},
        row.deleted,
        row.device_id,
        when(row.updated_at),
        row.seq,
        row.op,
        row.from_path,
    )


def test_feed_page_is_in_seq_order_one_entry_per_item(db: Database) -> None:
    user = _add_user(db)
    _library(db, user)
    with db.read() as tx:
        page = ItemRepository(tx).feed_page(user.id, after_seq=0, snapshot_seq=0, limit=10)
    assert [(i.path, i.seq) for i in page] == [("c.txt", 3), ("b.txt", 4), ("a.txt", 5)]


def test_feed_page_is_keyset_paged(db: Database) -> None:
    user = _add_user(db)
    _library(db, user)
    with db.read() as tx:
        repo = ItemRepository(tx)
        pages = {
            name: _paths(repo.feed_page(user.id, after_seq=after, snapshot_seq=0, limit=limit))
            for name, after, limit in (
                ("limit", 0, 2),
                ("after-is-exclusive", 3, 10),
                ("after-the-end", 5, 10),
            )
        }
    assert pages == {
        "limit": ["c.txt", "b.txt"],
        "after-is-exclusive": ["b.txt", "a.txt"],
        "after-the-end": [],
    }


def test_feed_page_skips_tombstones_within_the_snapshot(db: Database) -> None:
    user = _add_user(db)
    _library(db, user)
    with db.read() as tx:
        page = ItemRepository(tx).feed_page(user.id, after_seq=0, snapshot_seq=5, limit=10)
    assert _paths(page) == ["c.txt", "a.txt"]


def test_feed_page_delivers_tombstones_after_the_snapshot(db: Database) -> None:
    user = _add_user(db)
    _library(db, user)
    with db.read() as tx:
        page = ItemRepository(tx).feed_page(user.id, after_seq=0, snapshot_seq=3, limit=10)
    assert _paths(page) == ["c.txt", "b.txt", "a.txt"]


def test_feed_page_is_per_library(db: Database) -> None:
    alice, bob = _add_user(db, "alice"), _add_user(db, "bob")
    _library(db, alice)
    with db.read() as tx:
        assert ItemRepository(tx).feed_page(bob.id, after_seq=0, snapshot_seq=0, limit=10) == []


def test_feed_page_reads_every_value_as_the_typed_columns_do(db: Database) -> None:
    """The feed reads its rows as the database's text (issue 7): what that text
    stands for must equal the items read through the columns' types (get)."""
    user = _add_user(db)
    metadata: list[dict[str, object]] = [
        {},
        {"shelf": 3, "tags": ["a", "b"], "nested": {"x": None, "y": False}},
        {"title": "Bücher — 日本語 😀", "ratio": 0.1, "big": 2**70, "neg": -1.5e-7},
        {"quote": '"\\\n\t', "empty": "", "list": []},
    ]
    times = [
        T0,
        datetime(2026, 1, 1, tzinfo=UTC),  # no fraction of a second
        datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1999, 6, 30, 12, 0, 0, 100000, tzinfo=UTC),  # trailing zeros
    ]
    stored: list[Item] = []
    seq = 0
    for i, at in enumerate(times):
        seq += 1
        item = replace(
            _item(user, f"dir/file {i} é.txt", seq=seq, at=at, metadata=metadata[i % 4]),
            mtime=None if i == 3 else times[-1 - i],
            device_id=None if i % 2 else str(uuid.uuid4()),
        )
        stored.append(_store(db, item))
    seq += 1
    stored[0] = _store(db, _moved(stored[0], seq=seq, to="moved/ü.txt", at=times[2]))
    seq += 1
    stored[1] = _store(db, _deleted(stored[1], seq=seq, at=times[4]))
    with db.read() as tx:
        repo = ItemRepository(tx)
        rows = repo.feed_page(user.id, after_seq=0, snapshot_seq=0, limit=100)
        typed = [repo.get(r.id) for r in rows]
    page = [_as_item(r, user.id) for r in rows]
    assert page == typed
    assert sorted(page, key=lambda i: i.seq) == sorted(stored, key=lambda i: i.seq)
    assert all(type(r.deleted) is bool and type(r.op) is ChangeOp for r in rows)


def test_feed_page_reads_json_text_stored_with_white_space(db: Database) -> None:
    """Metadata JSON text written by something other than SQLAlchemy's encoder."""
    user = _add_user(db)
    item = _store(db, _item(user, "a.txt", seq=1))
    with db.write() as tx:
        tx.execute(
            sa.update(items_table)
            .where(items_table.c.id == item.id)
            .values(metadata=sa.text("' {\"k\" : 1} '"))
        )
    with db.read() as tx:
        repo = ItemRepository(tx)
        [row] = repo.feed_page(user.id, after_seq=0, snapshot_seq=0, limit=10)
        read = _as_item(row, user.id)
        assert read == repo.get(item.id)
    assert read.metadata == {"k": 1}


@pytest.mark.parametrize("datestyle", ["SQL, DMY", "Postgres, MDY", "German"])
def test_feed_page_reads_times_in_any_datestyle(db: Database, datestyle: str) -> None:
    """PostgreSQL writes timestamps as text in the session's DateStyle; the feed
    reads them as the typed columns do whatever it is."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's DateStyle")
    user = _add_user(db)
    _library(db, user)
    with db.read() as tx:
        tx.exec_driver_sql(f"SET LOCAL DateStyle = '{datestyle}'")
        repo = ItemRepository(tx)
        rows = repo.feed_page(user.id, after_seq=0, snapshot_seq=0, limit=10)
        page = [_as_item(r, user.id) for r in rows]
        assert page == [repo.get(i.id) for i in page]
    assert [i.seq for i in page] == [3, 4, 5]
    assert all(i.updated_at == T0 for i in page if i.path == "c.txt")


def test_count_after_counts_feed_entries(db: Database) -> None:
    user = _add_user(db)
    _library(db, user)
    with db.read() as tx:
        repo = ItemRepository(tx)
        counts = {
            name: repo.count_after(user.id, after_seq=after, live_only=live_only)
            for name, after, live_only in (
                ("everything", 0, False),
                ("live-only", 0, True),
                ("after-a-position", 3, False),
                ("live-after-a-position", 4, True),
                ("caught-up", 5, False),
            )
        }
    assert counts == {
        "everything": 3,
        "live-only": 2,
        "after-a-position": 2,
        "live-after-a-position": 1,
        "caught-up": 0,
    }


# -- history -----------------------------------------------------------------


def test_every_version_is_a_retrievable_revision(db: Database) -> None:
    user = _add_user(db)
    first = _item(user, "a.txt", seq=1)
    second = _next(first, seq=2, content_hash=B)
    _store(db, first, second)
    with db.read() as tx:
        repo = ItemRepository(tx)
        history = repo.revisions_of(first.id)
        one = repo.revision(first.id, 1)
    assert [(r.revision, r.content_hash) for r in history] == [(2, B), (1, A)]
    assert one is not None
    assert (one.path, one.seq, one.created_at) == ("a.txt", 1, T0)


def test_revision_at_path_is_the_latest_item_with_that_revision_there(db: Database) -> None:
    user = _add_user(db)
    old = _item(user, "a.txt", seq=1)
    _store(db, old, _moved(old, seq=2, to="b.txt"))
    new = _store(db, _item(user, "a.txt", seq=3, content_hash=B))
    with db.read() as tx:
        repo = ItemRepository(tx)
        found = repo.revision_at_path(user.id, "a.txt", 1)
        moved = repo.revision_at_path(user.id, "b.txt", 2)
        missing = repo.revision_at_path(user.id, "a.txt", 2)
    assert found is not None
    assert (found.item_id, found.content_hash) == (new.id, B)
    assert moved is not None
    assert moved.item_id == old.id
    assert missing is None


def test_path_as_of_follows_the_item_through_the_feed(db: Database) -> None:
    user = _add_user(db)
    _store(db, _item(user, "filler.txt", seq=1))
    item = _item(user, "a.txt", seq=2)
    moved = _moved(item, seq=3, to="b.txt")
    _store(db, item, moved, _deleted(moved, seq=4))
    with db.read() as tx:
        repo = ItemRepository(tx)
        positions = [repo.path_as_of(item.id, seq) for seq in range(1, 6)]
    assert positions == [None, "a.txt", "b.txt", None, None]


def test_purge_keeps_current_revisions_and_recent_replacements(db: Database) -> None:
    user = _add_user(db)
    day = timedelta(days=1)
    first = _item(user, "a.txt", seq=1, at=T0)
    second = _next(first, seq=2, at=T0 + 10 * day, content_hash=B)
    third = _next(second, seq=3, at=T0 + 40 * day, content_hash=A)
    _store(db, first, second, third)
    untouched = _store(db, _item(user, "old.txt", seq=4, at=T0))
    with db.write() as tx:
        purged = ItemRepository(tx).purge_old_revisions(user.id, replaced_before=T0 + 35 * day)
    with db.read() as tx:
        repo = ItemRepository(tx)
        kept = [r.revision for r in repo.revisions_of(first.id)]
        kept_untouched = [r.revision for r in repo.revisions_of(untouched.id)]
    # Revision 1 was replaced on day 10 (before the cutoff); revision 2 on day 40.
    assert (purged, kept, kept_untouched) == (1, [3, 2], [1])


def test_purge_of_revisions_is_per_library(db: Database) -> None:
    alice, bob = _add_user(db, "alice"), _add_user(db, "bob")
    first = _item(bob, "a.txt", seq=1, at=T0)
    _store(db, first, _next(first, seq=2, at=T0 + timedelta(days=1), content_hash=B))
    with db.write() as tx:
        purged = ItemRepository(tx).purge_old_revisions(
            alice.id, replaced_before=T0 + timedelta(days=99)
        )
    assert purged == 0


# -- retention -------------------------------------------------------------


def _tombstones(db: Database, user: User) -> list[Item]:
    """Tombstones at seq 2 (day 0), 4 (day 1) and 6 (day 5); live items between."""
    made = []
    for n, (seq, day) in enumerate(((2, 0), (4, 1), (6, 5))):
        _store(db, _item(user, f"live-{n}.txt", seq=seq - 1))
        item = _item(user, f"dead-{n}.txt", seq=seq - 1 + 100, at=T0 + timedelta(days=day))
        made.append(_store(db, item, _deleted(item, seq=seq)))
    return made


def test_purgeable_tombstones_honour_age_max_seq_and_limit(db: Database) -> None:
    user = _add_user(db)
    made = {t.seq: t.id for t in _tombstones(db, user)}
    cases = {
        # name: (deleted before day, max_seq, limit)
        "all-old-enough": (10, None, 10),
        "only-older-than-cutoff": (3, None, 10),
        "held-back-above-max-seq": (10, 4, 10),
        "max-seq-between-tombstones": (10, 3, 10),
        "limit-takes-oldest-first": (10, None, 2),
        "nothing-old-enough": (0, None, 10),
    }
    with db.read() as tx:
        repo = ItemRepository(tx)
        found = {
            name: repo.purgeable_tombstones(
                user.id,
                deleted_before=T0 + timedelta(days=day),
                max_seq=max_seq,
                limit=limit,
            )
            for name, (day, max_seq, limit) in cases.items()
        }
    expected_seqs = {
        "all-old-enough": [2, 4, 6],
        "only-older-than-cutoff": [2, 4],
        "held-back-above-max-seq": [2, 4],
        "max-seq-between-tombstones": [2],
        "limit-takes-oldest-first": [2, 4],
        "nothing-old-enough": [],
    }
    assert found == {
        name: [(made[seq], seq) for seq in seqs] for name, seqs in expected_seqs.items()
    }


def test_deleted_items_leave_feed_and_history(db: Database) -> None:
    user = _add_user(db)
    gone, kept = _tombstones(db, user)[:2]
    with db.write() as tx:
        ItemRepository(tx).delete_items([gone.id])
    with db.read() as tx:
        repo = ItemRepository(tx)
        assert repo.get(gone.id) is None
        assert repo.revisions_of(gone.id) == []
        assert repo.get(kept.id) == kept
