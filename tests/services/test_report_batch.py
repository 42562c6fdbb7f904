"""A report batch decides exactly as its changes would one by one, on both databases.

The batch path (one prefetch, decisions from memory, buffered executemany
writes, savepoints only for moves and conflicts) must give every change the
result, and leave the library, history and conflicts in the state, that the
per-change path gives: each change in its own savepoint, reading the database.
Two users of one database get the same script, one through each path.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelfsync.content_hash import EMPTY_HASH
from shelfsync.server.domain.accounts import ConflictPolicy, Device, User
from shelfsync.server.domain.items import ChangeOp
from shelfsync.server.services import report as report_module
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.devices import DeviceService
from shelfsync.server.services.library_writer import LibraryWriter
from shelfsync.server.services.notifier import ChangeNotifier
from shelfsync.server.services.report import LocalChange, ReportResult, ReportService
from shelfsync.server.storage.conflicts import ConflictRepository
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.items import FeedRow, ItemRepository
from shelfsync.server.storage.users import UserRepository

NOW = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)
HELD = [hashlib.sha256(f"held {i}".encode()).hexdigest() for i in range(3)]
UNKNOWN = hashlib.sha256(b"never uploaded").hexdigest()
SIZES = {**{h: 10 + i for i, h in enumerate(HELD)}, UNKNOWN: 99, EMPTY_HASH: 0}
PATHS = ["a.txt", "b.txt", "dir/c.txt", "dir/d.txt"]


@dataclass
class Side:
    user: User
    devices: list[Device]  # [manual policy, keep_both policy]


def _side(db: Database, name: str) -> Side:
    with db.write() as tx:
        user = UserRepository(tx).add(
            user_id=str(uuid.uuid4()), username=name, password_hash="hash", now=NOW
        )
        for content_hash in HELD:
            ContentRepository(tx).add(
                user_id=user.id, content_hash=content_hash, size=SIZES[content_hash], now=NOW
            )
    owner = Principal(user, None)
    devices = DeviceService(db=db)
    laptop = devices.register(owner, name="laptop")[0].device
    phone = devices.register(owner, name="phone", conflict_policy=ConflictPolicy.KEEP_BOTH)[0]
    return Side(user, [laptop, phone.device])


def _one_by_one(
    db: Database,
    service: ReportService,
    side: Side,
    device: Device,
    changes: list[LocalChange],
    now: datetime,
) -> list[ReportResult]:
    """The per-change path: a savepoint and database reads for every change."""
    with db.write() as tx:
        writer = LibraryWriter(tx, user_id=side.user.id, now=now)
        wanted = {c.content_hash for c in changes if c.content_hash and c.op != ChangeOp.DELETE}
        sizes = writer.contents.sizes_for_user(side.user.id, wanted)
        results = [service._one(writer, device, change, sizes) for change in changes]
        writer.finish()
    return results


class Ids:
    """A consistent renaming of the ids one side mints to the other side's."""

    def __init__(self) -> None:
        self.pairs: dict[str | None, str | None] = {None: None}

    def same(self, mine: str | None, theirs: str | None) -> bool:
        return self.pairs.setdefault(mine, theirs) == theirs


def _result(r: ReportResult) -> tuple[Any, ...]:
    error = None if r.error is None else (type(r.error).__name__, str(r.error))
    return (r.path, r.status, r.revision, r.seq, r.conflict is not None, error)


def _item(i: FeedRow, devices: dict[str | None, str]) -> tuple[Any, ...]:
    return (
        i.path,
        i.revision,
        i.content_hash,
        i.size,
        i.mtime,
        json.loads(i.metadata),
        i.deleted,
        devices.get(i.device_id),
        i.updated_at,
        i.seq,
        i.op,
        i.from_path,
    )


def _state(db: Database, side: Side) -> tuple[list[FeedRow], dict[str, list[Any]], list[Any]]:
    with db.read() as tx:
        repo = ItemRepository(tx)
        feed = repo.feed_page(side.user.id, after_seq=0, snapshot_seq=0, limit=10_000)
        history = {
            i.id: [
                (r.revision, r.path, r.content_hash, r.seq, r.op) for r in repo.revisions_of(i.id)
            ]
            for i in feed
        }
        conflicts = sorted(
            (
                (c.path, c.status, c.base_revision, c.client, c.server.revision, c.suggested_path)
                for c in ConflictRepository(tx).unresolved(side.user.id)
            ),
            key=repr,
        )
    return feed, history, conflicts


def _assert_same(db: Database, batched: Side, single: Side, ids: Ids) -> None:
    devices = {d.id: n for n, d in enumerate(batched.devices)}
    devices |= {d.id: n for n, d in enumerate(single.devices)}
    feed_b, history_b, conflicts_b = _state(db, batched)
    feed_s, history_s, conflicts_s = _state(db, single)
    assert [_item(i, devices) for i in feed_b] == [_item(i, devices) for i in feed_s]
    for b, s in zip(feed_b, feed_s, strict=True):
        assert ids.same(b.id, s.id)
        assert history_b[b.id] == history_s[s.id]
    assert conflicts_b == conflicts_s


class Twins:
    """What makes the two sides' runs comparable: the same clock reading for the
    same batch, and ids drawn in the same order from per-side counters (ties
    between conflicts detected in one batch are broken by id)."""

    def __init__(self) -> None:
        self.now = NOW
        self.side = 0
        self._base = _real_uuid4().int >> 96
        self._drawn = [0, 0]

    def uuid4(self) -> uuid.UUID:
        self._drawn[self.side] += 1
        return uuid.UUID(int=(self._base << 96) | (self.side << 64) | self._drawn[self.side])


_real_uuid4 = uuid.uuid4


@pytest.fixture
def twins(monkeypatch: pytest.MonkeyPatch) -> Iterator[Twins]:
    twins = Twins()
    monkeypatch.setattr(report_module, "utcnow", lambda: twins.now)
    monkeypatch.setattr(uuid, "uuid4", twins.uuid4)
    return twins


def _change(
    kind: str, path: str, base: int | None, content: str, meta: int | None, to: str
) -> LocalChange:
    if kind == "delete":
        return LocalChange(op=ChangeOp.DELETE, path=path, base_revision=base)
    if kind == "move":
        return LocalChange(op=ChangeOp.MOVE, path=path, to_path=to, base_revision=base)
    size = SIZES[content] + (1 if kind == "upsert_wrong_size" else 0)
    return LocalChange(
        op=ChangeOp.UPSERT,
        path=path,
        base_revision=base,
        content_hash=content,
        size=size,
        mtime=NOW,
        metadata=None if meta is None else {"m": meta},
    )


changes = st.builds(
    _change,
    kind=st.sampled_from(["upsert"] * 5 + ["delete"] * 2 + ["move"] * 3 + ["upsert_wrong_size"]),
    path=st.sampled_from([*PATHS, "../bad", "dir/"]),
    # Mostly revisions that exist, so that edits, deletes and moves apply.
    base=st.sampled_from([None, None, 1, 1, 1, 2, 2, 3, 4]),
    content=st.sampled_from([*HELD, UNKNOWN, EMPTY_HASH]),
    meta=st.none() | st.integers(min_value=0, max_value=1),
    to=st.sampled_from(PATHS),
)
scripts = st.lists(
    st.tuples(st.integers(min_value=0, max_value=1), st.lists(changes, min_size=1, max_size=16)),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=scripts)
def test_batch_decides_as_change_by_change(
    db: Database, twins: Twins, script: list[tuple[int, list[LocalChange]]]
) -> None:
    service = ReportService(db=db, notifier=ChangeNotifier())
    twins.__init__()  # type: ignore[misc]  # each example afresh
    name = _real_uuid4().hex[:12]
    batched = _side(db, f"b{name}")
    twins.side = 1
    single = _side(db, f"s{name}")
    ids = Ids()
    # Half the paths exist from the start: moves then often apply (a free target).
    start = [_change("upsert", path, None, HELD[0], None, "") for path in PATHS[::2]]
    for number, (device_index, batch) in enumerate([(0, start), *script]):
        twins.now = NOW + timedelta(seconds=number)
        twins.side = 0
        got = service.report(Principal(batched.user, batched.devices[device_index]), batch)
        twins.side = 1
        want = _one_by_one(db, service, single, single.devices[device_index], batch, twins.now)
        assert [_result(r) for r in got] == [_result(r) for r in want]
        for g, w in zip(got, want, strict=True):
            assert ids.same(g.id, w.id)
    _assert_same(db, batched, single, ids)


def test_plain_upserts_take_no_savepoint_and_a_few_statements(db: Database) -> None:
    """1,000 upserts, edits and deletes: a fixed handful of statements, not a few per change."""
    side = _side(db, "alice")
    service = ReportService(db=db, notifier=ChangeNotifier())
    principal = Principal(side.user, side.devices[0])
    creates = [_change("upsert", f"f/{i}.txt", None, HELD[i % 3], None, "") for i in range(600)]
    service.report(principal, creates)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    later = [
        *(_change("upsert", f"f/{i}.txt", 1, HELD[(i + 1) % 3], 1, "") for i in range(300)),
        *(_change("delete", f"f/{i}.txt", 1, "", None, "") for i in range(300, 600)),
        *(_change("upsert", f"g/{i}.txt", None, EMPTY_HASH, None, "") for i in range(400)),
    ]
    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        results = service.report(principal, later)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    assert {r.status.value for r in results} == {"applied"}
    assert not [s for s in statements if "SAVEPOINT" in s.upper()]
    assert len(statements) <= 15, statements


def test_changes_after_a_move_in_one_batch_see_where_it_went(db: Database) -> None:
    side = _side(db, "alice")
    service = ReportService(db=db, notifier=ChangeNotifier())
    principal = Principal(side.user, side.devices[0])
    [created] = service.report(principal, [_change("upsert", "a.txt", None, HELD[0], None, "")])
    results = service.report(
        principal,
        [
            _change("upsert", "b.txt", None, HELD[1], None, ""),  # buffered
            _change("move", "a.txt", created.revision, "", None, "b.txt"),  # a conflict: b is live
            _change("move", "a.txt", created.revision, "", None, "c.txt"),  # applied
            _change("upsert", "a.txt", 1, HELD[2], None, ""),  # its item moved away: conflict
            _change("upsert", "c.txt", None, HELD[0], None, ""),  # what c holds now: unchanged
            _change("upsert", "a.txt", None, HELD[2], None, ""),  # a is free again: created
            _change("upsert", "c.txt", 2, HELD[2], None, ""),  # edit of the moved item
        ],
    )
    assert [(r.path, r.status.value, r.revision) for r in results] == [
        ("b.txt", "applied", 1),
        ("b.txt", "conflict", 1),
        ("c.txt", "applied", 2),
        ("a.txt", "conflict", None),
        ("c.txt", "unchanged", 2),
        ("a.txt", "applied", 1),
        ("c.txt", "applied", 3),
    ]
    assert results[2].id == created.id == results[4].id == results[6].id
    assert results[5].id != created.id


def test_a_rejected_change_leaves_the_batch_around_it_intact(db: Database) -> None:
    side = _side(db, "alice")
    service = ReportService(db=db, notifier=ChangeNotifier())
    principal = Principal(side.user, side.devices[0])
    results = service.report(
        principal,
        [
            _change("upsert", "a.txt", None, HELD[0], None, ""),
            _change("upsert", "a.txt", 1, HELD[1], None, "")._replace(metadata="not an object"),  # type: ignore[arg-type]
            _change("upsert_wrong_size", "b.txt", None, HELD[1], None, ""),
            _change("upsert", "a.txt", 1, HELD[2], None, ""),
        ],
    )
    assert [r.status.value for r in results] == ["applied", "rejected", "rejected", "applied"]
    assert (results[3].revision, results[3].seq) == (2, 2)
    with db.read() as tx:
        item = ItemRepository(tx).at_path(side.user.id, "a.txt")
    assert item is not None
    assert (item.revision, item.content_hash) == (2, HELD[2])
