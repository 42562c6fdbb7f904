"""POST /sync/report (protocol section 7), on SQLite and PostgreSQL."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.api.sync_support import (
    EMPTY,
    PREFIXES,
    SyncDevice,
    SyncDriver,
    SyncUser,
    blob,
    delete,
    move,
    upsert,
)


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


def _latest_seq(device: SyncDevice) -> int:
    seq: int = device.changes(cursor="latest")["latest_seq"]
    return seq


# -- applied -------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_new_file_with_held_content_is_applied(
    sync: SyncDriver, user: SyncUser, laptop: SyncDevice, prefix: str
) -> None:
    sync.prefix = prefix
    content = user.give(b"chapter one")
    result = laptop.report_one(upsert("books/Dune.epub", content))
    assert result["status"] == "applied"
    assert (result["path"], result["revision"], result["seq"]) == ("books/Dune.epub", 1, 1)
    [change] = laptop.changes()["changes"]
    assert change["id"] == result["id"]
    assert (change["content_hash"], change["size"]) == (content.content_hash, content.size)
    assert change["device_id"] == laptop.id


def test_empty_file_is_applied_without_any_upload(laptop: SyncDevice) -> None:
    result = laptop.report_one(upsert("empty.txt", EMPTY))
    assert result["status"] == "applied"


def test_content_held_for_one_path_is_reused_for_another(
    user: SyncUser, laptop: SyncDevice
) -> None:
    content = user.give(b"same bytes")
    laptop.applied(upsert("a.txt", content))
    assert laptop.report_one(upsert("copy/a.txt", content))["status"] == "applied"


# -- unchanged -----------------------------------------------------------------


def test_retry_of_an_applied_edit_is_unchanged(user: SyncUser, laptop: SyncDevice) -> None:
    laptop.applied(upsert("a.txt", user.give(b"v1")))
    edit = upsert("a.txt", user.give(b"v2"), base=1)
    assert laptop.applied(edit)["revision"] == 2
    retry = laptop.report_one(edit)
    assert (retry["status"], retry["revision"]) == ("unchanged", 2)


def test_same_edit_on_two_devices_is_unchanged_not_a_conflict(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    laptop.applied(upsert("a.txt", user.give(b"v1")))
    edit = upsert("a.txt", user.give(b"v2"), base=1)
    laptop.applied(edit)
    assert phone.report_one(edit)["status"] == "unchanged"
    assert laptop.conflicts() == []


@pytest.mark.parametrize("deleted_first", [False, True], ids=["absent", "already-deleted"])
def test_delete_of_a_missing_file_is_unchanged(laptop: SyncDevice, deleted_first: bool) -> None:
    if deleted_first:
        laptop.applied(upsert("a.txt", EMPTY))
        laptop.applied(delete("a.txt", base=1))
    before = _latest_seq(laptop)
    assert laptop.report_one(delete("a.txt", base=None))["status"] == "unchanged"
    assert _latest_seq(laptop) == before


# -- upload_required -------------------------------------------------------------


def test_content_the_user_lacks_is_upload_required(laptop: SyncDevice) -> None:
    result = laptop.report_one(upsert("a.txt", blob(b"never uploaded")))
    assert result["status"] == "upload_required"
    assert laptop.changes()["changes"] == []


def test_content_only_another_user_holds_is_upload_required(
    sync: SyncDriver, laptop: SyncDevice
) -> None:
    secret = sync.user("bob").give(b"bob's private bytes")
    result = laptop.report_one(upsert("guess.txt", secret))
    assert result["status"] == "upload_required"
    assert laptop.changes()["changes"] == []


# -- conflict --------------------------------------------------------------------


def test_stale_edit_over_an_edit_is_a_conflict(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    laptop.applied(upsert("a.txt", user.give(b"v1")))
    phone.applied(upsert("a.txt", user.give(b"phone edit"), base=1))
    result = laptop.report_one(upsert("a.txt", user.give(b"laptop edit"), base=1))
    assert result["status"] == "conflict"
    assert result["conflict_id"]
    assert result["revision"] == 2
    [conflict] = laptop.conflicts()
    assert conflict["id"] == result["conflict_id"]


def test_stale_delete_over_an_edit_is_a_conflict_and_keeps_the_edit(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    laptop.applied(upsert("a.txt", user.give(b"v1")))
    edit = user.give(b"phone edit")
    phone.applied(upsert("a.txt", edit, base=1))
    assert laptop.report_one(delete("a.txt", base=1))["status"] == "conflict"
    [change] = laptop.changes()["changes"]
    assert (change["deleted"], change["content_hash"]) == (False, edit.content_hash)


def test_edit_of_a_file_deleted_meanwhile_is_a_conflict(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    laptop.applied(upsert("a.txt", user.give(b"v1")))
    phone.applied(delete("a.txt", base=1))
    result = laptop.report_one(upsert("a.txt", user.give(b"laptop edit"), base=1))
    assert result["status"] == "conflict"


# -- rejected --------------------------------------------------------------------

BIG_METADATA = {"notes": "x" * (64 * 1024)}
HELD = b"12345"

# (change, problem code): each is rejected on its own, its neighbours still apply.
REJECTED: list[tuple[dict[str, Any], str]] = [
    (upsert("/abs.txt", EMPTY), "invalid_path"),
    (upsert("dir/", EMPTY), "invalid_path"),
    (upsert("a//b.txt", EMPTY), "invalid_path"),
    (upsert("a\x00b.txt", EMPTY), "invalid_path"),
    (upsert("a\x07b.txt", EMPTY), "invalid_path"),
    (upsert("../escape.txt", EMPTY), "invalid_path"),
    (upsert("a/../../b.txt", EMPTY), "invalid_path"),
    (upsert("a\\b.txt", EMPTY), "invalid_path"),
    (upsert("x" * 256, EMPTY), "invalid_path"),
    (delete("../x", base=1), "invalid_path"),
    (move("a.txt", "../b.txt", base=1), "invalid_path"),
    (upsert("a.txt", EMPTY) | {"content_hash": "G" * 64}, "invalid_request"),
    (upsert("a.txt", EMPTY) | {"content_hash": "A" * 64}, "invalid_request"),
    (upsert("a.txt", EMPTY) | {"size": 1}, "invalid_request"),
    (upsert("a.txt", blob(b"x")) | {"size": 0}, "invalid_request"),
    (upsert("a.txt", blob(HELD)) | {"size": len(HELD) + 1}, "invalid_request"),
    ({"op": "upsert", "path": "a.txt", "base_revision": None}, "invalid_request"),
    ({"op": "move", "path": "a.txt", "base_revision": 1}, "invalid_request"),
    (move("a.txt", "a.txt", base=1), "invalid_request"),
    (upsert("a.txt", EMPTY, metadata=BIG_METADATA), "invalid_request"),
]


def test_each_invalid_change_is_rejected_with_a_problem_and_the_rest_apply(
    user: SyncUser, laptop: SyncDevice
) -> None:
    user.give(HELD)
    batch = [upsert("first.txt", EMPTY)]
    batch += [change for change, _ in REJECTED]
    batch += [upsert("last.txt", EMPTY)]
    results = laptop.report(*batch)
    assert [r["status"] for r in results] == ["applied"] + ["rejected"] * len(REJECTED) + [
        "applied"
    ]
    assert [r["path"] for r in results] == [c["path"] for c in batch]
    errors = [r["error"] for r in results[1:-1]]
    assert [(e["status"], e["code"]) for e in errors] == [(400, code) for _, code in REJECTED]
    assert all(e["title"] and e["detail"] for e in errors)
    listed = sorted(c["path"] for c in laptop.changes()["changes"])
    assert listed == ["first.txt", "last.txt"]


# -- batch limits and request validation -------------------------------------------


def test_a_report_of_1000_changes_is_accepted(laptop: SyncDevice) -> None:
    # Deletes of absent paths: every change is decided, none writes (keeps this quick).
    results = laptop.report(*(delete(f"many/{n:04}.txt", base=None) for n in range(1000)))
    assert [r["path"] for r in results] == [f"many/{n:04}.txt" for n in range(1000)]
    assert {r["status"] for r in results} == {"unchanged"}


# Validation happens before any storage is touched: one database is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_report_of_1001_changes_is_400(laptop: SyncDevice) -> None:
    response = laptop.post_report([upsert(f"f{n}.txt", EMPTY) for n in range(1001)])
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert _latest_seq(laptop) == 0


# Body validation happens before any storage is touched: one database is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"op": "empty-batch"}, id="no-changes"),
        pytest.param({"op": "rename", "path": "a.txt", "base_revision": None}, id="unknown-op"),
        pytest.param(upsert("a.txt", EMPTY, base=0), id="base-revision-zero"),
        pytest.param({"op": "delete", "path": "a.txt"}, id="base-revision-missing"),
        pytest.param(upsert("a.txt", EMPTY) | {"content_hash": "ab"}, id="short-hash"),
        pytest.param(upsert("a.txt", EMPTY) | {"size": -1}, id="negative-size"),
        pytest.param(upsert("a.txt", EMPTY, metadata=[1, 2]), id="metadata-not-object"),
    ],
)
def test_malformed_report_body_is_400_naming_the_field(
    laptop: SyncDevice, change: dict[str, Any]
) -> None:
    batch = [] if change["op"] == "empty-batch" else [upsert("ok.txt", EMPTY), change]
    response = laptop.post_report(batch)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_request"
    field = "body.changes" if not batch else "body.changes.1"
    assert any(e["field"].startswith(field) for e in body["errors"])
    assert _latest_seq(laptop) == 0


# -- device required ---------------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "prefix"), [("report", PREFIXES[0]), ("ack", PREFIXES[1])])
def test_user_token_without_device_header_is_device_required(
    sync: SyncDriver, user: SyncUser, laptop: SyncDevice, endpoint: str, prefix: str
) -> None:
    cursor = laptop.changes()["cursor"]
    body: dict[str, Any] = (
        {"changes": [upsert("a.txt", EMPTY)]} if endpoint == "report" else {"cursor": cursor}
    )
    response = sync.client.post(f"{prefix}/{endpoint}", json=body, headers=user.headers)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "device_required"
    assert _latest_seq(laptop) == 0


def test_user_token_with_device_header_reports_for_that_device(
    sync: SyncDriver, make_user: Any
) -> None:
    account = make_user("carol")
    carol = sync.adopt(account.username, account.access_token)
    tablet = carol.device("tablet")
    response = sync.client.post(
        "/api/v1/sync/report",
        json={"changes": [upsert("a.txt", EMPTY)]},
        headers={**carol.headers, "X-Device-ID": tablet.id},
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["status"] == "applied"
    [change] = tablet.changes()["changes"]
    assert change["device_id"] == tablet.id


# -- identity and revisions ----------------------------------------------------------


def test_move_keeps_the_id_and_records_where_it_was(user: SyncUser, laptop: SyncDevice) -> None:
    created = laptop.applied(upsert("inbox/a.txt", user.give(b"v1")))
    moved = laptop.applied(move("inbox/a.txt", "archive/a.txt", base=1))
    assert (moved["id"], moved["revision"], moved["path"]) == (
        created["id"],
        2,
        "archive/a.txt",
    )
    [change] = laptop.changes()["changes"]
    assert (change["op"], change["path"], change["from_path"]) == (
        "move",
        "archive/a.txt",
        "inbox/a.txt",
    )


def test_retry_of_an_applied_move_is_unchanged(user: SyncUser, laptop: SyncDevice) -> None:
    laptop.applied(upsert("a.txt", user.give(b"v1")))
    change = move("a.txt", "b.txt", base=1)
    moved = laptop.applied(change)
    retry = laptop.report_one(change)
    assert (retry["status"], retry["id"], retry["revision"]) == ("unchanged", moved["id"], 2)


def test_revision_grows_by_one_with_every_accepted_change(
    user: SyncUser, laptop: SyncDevice
) -> None:
    steps = [
        upsert("a.txt", user.give(b"v1")),
        upsert("a.txt", user.give(b"v2"), base=1),
        upsert("a.txt", user.give(b"v2"), base=2, metadata={"rating": 5}),
        move("a.txt", "b.txt", base=3),
        delete("b.txt", base=4),
        upsert("b.txt", user.give(b"v3"), base=None),
    ]
    results = [laptop.applied(step) for step in steps]
    assert [r["revision"] for r in results] == [1, 2, 3, 4, 5, 6]
    assert len({r["id"] for r in results}) == 1
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


def test_upsert_over_a_deleted_file_recreates_the_same_item(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    created = laptop.applied(upsert("a.txt", user.give(b"v1")))
    laptop.applied(delete("a.txt", base=1))
    recreated = phone.applied(upsert("a.txt", user.give(b"new life")))
    assert (recreated["id"], recreated["revision"]) == (created["id"], 3)


def test_absent_metadata_keeps_the_items_metadata(user: SyncUser, laptop: SyncDevice) -> None:
    laptop.applied(upsert("a.txt", user.give(b"v1"), metadata={"tags": ["sf"]}))
    laptop.applied(upsert("a.txt", user.give(b"v2"), base=1))
    laptop.applied(upsert("a.txt", user.give(b"v3"), base=2, metadata=None))
    [change] = laptop.changes()["changes"]
    assert change["metadata"] == {"tags": ["sf"]}


def test_nfd_and_nfc_spellings_are_one_item(user: SyncUser, laptop: SyncDevice) -> None:
    nfc = "Musique/Café.flac"
    nfd = unicodedata.normalize("NFD", nfc)
    created = laptop.applied(upsert(nfd, user.give(b"v1")))
    edited = laptop.applied(upsert(nfc, user.give(b"v2"), base=1))
    assert created["path"] == nfc
    assert (edited["id"], edited["revision"]) == (created["id"], 2)
    [change] = laptop.changes()["changes"]
    assert change["path"] == nfc
