"""GET /sync/changes and POST /sync/ack (protocol section 6), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.server.domain.clock import utcnow
from tests.api.sync_support import (
    EMPTY,
    PREFIXES,
    SyncDevice,
    SyncDriver,
    SyncUser,
    delete,
    move,
    upsert,
)

Json = dict[str, Any]


@pytest.fixture
def sync(app: FastAPI, client: TestClient) -> SyncDriver:
    return SyncDriver(app, client)


@pytest.fixture
def user(sync: SyncDriver) -> SyncUser:
    return sync.user("alice")


@pytest.fixture
def laptop(user: SyncUser) -> SyncDevice:
    return user.device("laptop")


@pytest.fixture
def phone(user: SyncUser) -> SyncDevice:
    return user.device("phone")


def _paths(changes: list[Json]) -> list[str]:
    return [c["path"] for c in changes]


# -- listing and paging ----------------------------------------------------------


def test_first_listing_holds_the_live_library_only(laptop: SyncDevice) -> None:
    laptop.report(*(upsert(f"{n}.txt", EMPTY) for n in "abcd"))
    laptop.report(delete("b.txt", base=1), move("c.txt", "c2.txt", base=1))
    page = laptop.changes()
    assert sorted(_paths(page["changes"])) == ["a.txt", "c2.txt", "d.txt"]
    assert all(not c["deleted"] for c in page["changes"])
    assert (page["has_more"], page["latest_seq"]) == (False, 6)


def test_changes_come_in_seq_order_with_every_field(user: SyncUser, laptop: SyncDevice) -> None:
    content = user.give(b"hello")
    laptop.applied(
        upsert("a.txt", content, metadata={"tags": ["x"]}, mtime="2026-01-02T03:04:05.678Z")
    )
    laptop.applied(upsert("b.txt", EMPTY))
    first, second = laptop.changes()["changes"]
    assert first["seq"] < second["seq"]
    assert first == first | {
        "op": "upsert",
        "path": "a.txt",
        "revision": 1,
        "content_hash": content.content_hash,
        "size": content.size,
        "mtime": "2026-01-02T03:04:05.678Z",
        "metadata": {"tags": ["x"]},
        "deleted": False,
        "device_id": laptop.id,
    }
    assert first["changed_at"].endswith("Z")


def test_paging_with_a_limit_delivers_every_item_exactly_once(
    user: SyncUser, laptop: SyncDevice
) -> None:
    laptop.report(*(upsert(f"f{n}.txt", user.give(b"%d" % n)) for n in range(9)))
    laptop.report(
        upsert("f0.txt", user.give(b"edited"), base=1),
        delete("f3.txt", base=1),
        move("f5.txt", "moved/f5.txt", base=1),
    )
    pages = []
    cursor = None
    while True:
        page = laptop.changes(limit=2, **({"cursor": cursor} if cursor else {}))
        pages.append(page["changes"])
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    delivered = [c for page in pages for c in page]
    assert all(len(page) <= 2 for page in pages)
    assert len({c["id"] for c in delivered}) == len(delivered) == 8
    assert [c["seq"] for c in delivered] == sorted(c["seq"] for c in delivered)
    assert "f3.txt" not in _paths(delivered)
    assert laptop.changes(cursor=cursor)["changes"] == []


def test_change_made_during_a_first_listing_is_not_lost(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    laptop.report(*(upsert(f"f{n}.txt", EMPTY) for n in range(4)))
    first = phone.changes(limit=2)
    assert first["has_more"]
    already_seen = first["changes"][0]["path"]
    laptop.applied(upsert(already_seen, user.give(b"edited meanwhile"), base=1))
    laptop.applied(delete("f3.txt", base=1))
    rest, _ = phone.read_all(first["cursor"], limit=2)
    latest = {c["path"]: c for c in rest}
    assert latest[already_seen]["revision"] == 2
    assert latest["f3.txt"]["deleted"] is True


def test_changes_after_a_cursor_include_deletes_and_moves(laptop: SyncDevice) -> None:
    laptop.report(upsert("a.txt", EMPTY), upsert("b.txt", EMPTY), upsert("c.txt", EMPTY))
    cursor = laptop.changes()["cursor"]
    laptop.report(delete("a.txt", base=1), move("b.txt", "d.txt", base=1))
    changes = laptop.changes(cursor=cursor)["changes"]
    assert [(c["op"], c["path"], c.get("from_path"), c["deleted"]) for c in changes] == [
        ("delete", "a.txt", None, True),
        ("move", "d.txt", "b.txt", False),
    ]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_latest_cursor_starts_from_now(sync: SyncDriver, laptop: SyncDevice, prefix: str) -> None:
    sync.prefix = prefix
    laptop.report(upsert("old.txt", EMPTY))
    now = laptop.changes(cursor="latest")
    assert (now["changes"], now["has_more"], now["latest_seq"]) == ([], False, 1)
    laptop.report(upsert("new.txt", EMPTY))
    assert _paths(laptop.changes(cursor=now["cursor"])["changes"]) == ["new.txt"]


def test_ten_edits_of_one_item_appear_once_in_their_latest_state(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    cursor = phone.changes(cursor="latest")["cursor"]
    laptop.applied(upsert("a.txt", user.give(b"edit 0")))
    for n in range(1, 10):
        laptop.applied(upsert("a.txt", user.give(b"edit %d" % n), base=n))
    laptop.applied(upsert("b.txt", EMPTY))
    changes = phone.changes(cursor=cursor)["changes"]
    assert [(c["path"], c["revision"]) for c in changes] == [("a.txt", 10), ("b.txt", 1)]
    assert changes[0]["content_hash"] == user.give(b"edit 9").content_hash


def test_another_users_library_is_invisible(sync: SyncDriver, laptop: SyncDevice) -> None:
    laptop.report(upsert("private.txt", EMPTY))
    bobs = sync.user("bob").device("bob's phone")
    page = bobs.changes()
    assert (page["changes"], page["latest_seq"]) == ([], 0)


# -- query validation -----------------------------------------------------------------


# Query validation happens before any storage is touched: one database is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": 0}, id="limit-0"),
        pytest.param({"limit": 1001}, id="limit-1001"),
        pytest.param({"limit": "many"}, id="limit-not-a-number"),
        pytest.param({"wait": 56}, id="wait-56"),
        pytest.param({"wait": -1}, id="wait-negative"),
    ],
)
def test_limit_and_wait_out_of_range_are_400(laptop: SyncDevice, params: Json) -> None:
    response = laptop.get_changes(**params)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_request"
    assert [e["field"] for e in body["errors"]] == [f"query.{next(iter(params))}"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("limit", [1, 1000])
def test_limit_bounds_are_accepted(laptop: SyncDevice, limit: int) -> None:
    laptop.report(upsert("a.txt", EMPTY), upsert("b.txt", EMPTY))
    page = laptop.changes(limit=limit)
    assert (len(page["changes"]), page["has_more"]) == (min(limit, 2), limit < 2)


# -- cursors ---------------------------------------------------------------------------


def _flip(cursor: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_every_kind_of_bad_cursor_is_400_invalid_cursor(
    sync: SyncDriver, user: SyncUser, laptop: SyncDevice
) -> None:
    laptop.report(upsert("a.txt", EMPTY))
    good = laptop.changes()["cursor"]
    bob = sync.user("bob")
    bob.device().report(upsert("b.txt", EMPTY), upsert("c.txt", EMPTY))
    bad = {
        "garbage": "not a cursor",
        "forged": base64.urlsafe_b64encode(bytes(45)).decode().rstrip("="),
        "tampered": _flip(good, 8),
        "truncated": good[:-3],
        "another-users": sync.cursor_for(bob, 1),
        "ahead-of-library": sync.cursor_for(user, 2),
        "snapshot-ahead-of-library": sync.cursor_for(user, 0, snapshot_seq=2),
    }
    answers = {
        (kind, endpoint): (response.status_code, response.json()["code"])
        for kind, cursor in bad.items()
        for endpoint, response in (
            ("changes", laptop.get_changes(cursor=cursor)),
            ("ack", laptop.post_ack(cursor)),
        )
    }
    assert answers == dict.fromkeys(answers, (400, "invalid_cursor"))
    assert len(answers) == 2 * len(bad)
    assert laptop.status()["acked_cursor"] is None


# -- acks and device status ----------------------------------------------------------


def test_acks_are_monotonic(laptop: SyncDevice, phone: SyncDevice) -> None:
    laptop.report(upsert("a.txt", EMPTY))
    older = phone.changes()["cursor"]
    laptop.report(upsert("b.txt", EMPTY), upsert("c.txt", EMPTY))
    newer = phone.changes(cursor=older)["cursor"]
    acked = phone.ack(newer)
    assert (acked["device_id"], acked["pending_changes"]) == (phone.id, 0)
    again = phone.ack(older)
    assert again == acked
    assert phone.status()["acked_cursor"] == acked["acked_cursor"]


def test_ack_counts_what_is_still_pending(laptop: SyncDevice, phone: SyncDevice) -> None:
    laptop.report(upsert("a.txt", EMPTY))
    cursor = phone.changes()["cursor"]
    laptop.report(upsert("b.txt", EMPTY), delete("a.txt", base=1))
    assert phone.ack(cursor)["pending_changes"] == 2


def test_device_status_shows_true_sync_progress(laptop: SyncDevice, phone: SyncDevice) -> None:
    fresh = phone.status()
    assert (fresh["acked_cursor"], fresh["pending_changes"], fresh["last_sync_at"]) == (
        None,
        0,
        None,
    )
    laptop.report(upsert("a.txt", EMPTY), upsert("b.txt", EMPTY), upsert("c.txt", EMPTY))
    laptop.report(delete("c.txt", base=1))
    # Never acked: everything live is pending (tombstones mean nothing to it yet).
    behind = phone.status()
    assert (behind["pending_changes"], behind["last_sync_at"]) == (2, None)
    acked = phone.ack(phone.changes()["cursor"])
    synced = phone.status()
    assert synced["acked_cursor"] == acked["acked_cursor"]
    assert synced["pending_changes"] == 0
    assert synced["last_sync_at"] is not None
    laptop.report(delete("a.txt", base=1), upsert("d.txt", EMPTY))
    assert phone.status()["pending_changes"] == 2
    assert laptop.status()["last_sync_at"] is not None


# -- selective sync --------------------------------------------------------------------

SELECTION = {"include": ["Music/**", "*.pdf"], "exclude": ["*.tmp"]}


def test_filtered_device_sees_matching_paths_only(user: SyncUser, laptop: SyncDevice) -> None:
    filtered = user.device("phone", sync_filter=SELECTION)
    laptop.report(
        *(
            upsert(p, EMPTY)
            for p in ("Music/a.mp3", "Music/b.tmp", "Docs/c.txt", "Docs/d.pdf", "e.pdf")
        )
    )
    listed, cursor = filtered.read_all()
    assert sorted(_paths(listed)) == ["Docs/d.pdf", "Music/a.mp3", "e.pdf"]
    laptop.report(upsert("Docs/new.txt", EMPTY), upsert("Music/new.mp3", EMPTY))
    assert _paths(filtered.changes(cursor=cursor)["changes"]) == ["Music/new.mp3"]


def test_item_moved_out_of_the_selection_arrives_as_a_delete(
    user: SyncUser, laptop: SyncDevice
) -> None:
    filtered = user.device("phone", sync_filter=SELECTION)
    song = laptop.applied(upsert("Music/a.mp3", EMPTY))
    cursor = filtered.changes()["cursor"]
    laptop.applied(move("Music/a.mp3", "Archive/a.mp3", base=1))
    [change] = filtered.changes(cursor=cursor)["changes"]
    assert (change["id"], change["op"], change["deleted"], change["path"]) == (
        song["id"],
        "delete",
        True,
        "Archive/a.mp3",
    )


def test_item_moved_into_the_selection_arrives(user: SyncUser, laptop: SyncDevice) -> None:
    filtered = user.device("phone", sync_filter=SELECTION)
    laptop.applied(upsert("Inbox/a.mp3", EMPTY))
    cursor = filtered.changes()["cursor"]
    laptop.applied(move("Inbox/a.mp3", "Music/a.mp3", base=1))
    [change] = filtered.changes(cursor=cursor)["changes"]
    assert (change["path"], change["deleted"]) == ("Music/a.mp3", False)


def test_changes_outside_the_selection_are_not_pending(user: SyncUser, laptop: SyncDevice) -> None:
    filtered = user.device("phone", sync_filter=SELECTION)
    filtered.ack(filtered.changes()["cursor"])
    laptop.report(upsert("Music/a.mp3", EMPTY), upsert("Docs/b.txt", EMPTY))
    assert filtered.status()["pending_changes"] == 1


# -- retention and expired cursors -------------------------------------------------------


def _reader_behind_a_tombstone(laptop: SyncDevice, phone: SyncDevice, *, ack: bool) -> str:
    """The phone holds a cursor from before a.txt was deleted; returns that cursor."""
    laptop.report(upsert("a.txt", EMPTY), upsert("b.txt", EMPTY))
    cursor = phone.changes()["cursor"]
    if ack:
        phone.ack(cursor)
    laptop.applied(delete("a.txt", base=1))
    return cursor


LATER = timedelta(days=31)  # one retention period (30 days) and a day


@pytest.mark.parametrize("ack", [True, False], ids=["acked-before", "never-acked"])
def test_tombstone_is_held_back_for_a_recent_device_that_has_not_acked_it(
    sync: SyncDriver, laptop: SyncDevice, phone: SyncDevice, ack: bool
) -> None:
    cursor = _reader_behind_a_tombstone(laptop, phone, ack=ack)
    future = utcnow() + LATER
    laptop.set_columns(last_seen_at=future - timedelta(days=90))
    phone.set_columns(last_seen_at=future - timedelta(days=1))
    sync.retention(future)
    [change] = phone.changes(cursor=cursor)["changes"]
    assert (change["path"], change["deleted"]) == ("a.txt", True)


def test_tombstone_acked_by_every_recent_device_is_purged(
    sync: SyncDriver, laptop: SyncDevice, phone: SyncDevice
) -> None:
    old = _reader_behind_a_tombstone(laptop, phone, ack=True)
    phone.ack(phone.changes(cursor=old)["cursor"])
    future = utcnow() + LATER
    laptop.set_columns(last_seen_at=future - timedelta(days=90))
    phone.set_columns(last_seen_at=future - timedelta(days=1))
    sync.retention(future)
    assert phone.get_changes(cursor=old).status_code == 410


@pytest.mark.parametrize("prefix", PREFIXES)
def test_cursor_behind_purged_tombstones_is_410_cursor_expired(
    sync: SyncDriver, laptop: SyncDevice, phone: SyncDevice, prefix: str
) -> None:
    sync.prefix = prefix
    old = _reader_behind_a_tombstone(laptop, phone, ack=True)
    # The phone was last seen long ago: it holds nothing back.
    future = utcnow() + LATER
    for device in (laptop, phone):
        device.set_columns(last_seen_at=future - timedelta(days=90))
    sync.retention(future)
    response = phone.get_changes(cursor=old)
    assert response.status_code == 410
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert (problem["status"], problem["code"]) == (410, "cursor_expired")
    assert problem["reason"]
    # The way back: list again without a cursor.
    assert _paths(phone.changes()["changes"]) == ["b.txt"]


def test_cursor_after_the_purged_tombstones_stays_valid(
    sync: SyncDriver, laptop: SyncDevice, phone: SyncDevice
) -> None:
    _reader_behind_a_tombstone(laptop, phone, ack=False)
    current = phone.changes()["cursor"]
    laptop.report(upsert("c.txt", EMPTY))
    future = utcnow() + LATER
    for device in (laptop, phone):
        device.set_columns(last_seen_at=future - timedelta(days=90))
    sync.retention(future)
    assert _paths(phone.changes(cursor=current)["changes"]) == ["c.txt"]
