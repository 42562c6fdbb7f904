"""Conflicts: recording, listing and resolving (protocol section 8), on both databases."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.server.domain import clock
from shelfsync.server.services import conflicts as conflict_service
from tests.api.sync_support import (
    PREFIXES,
    Blob,
    SyncDevice,
    SyncDriver,
    SyncUser,
    blob,
    delete,
    move,
    upsert,
)

Json = dict[str, Any]

# `<stem> (conflict <device name> <YYYY-MM-DD HHMMSS>)<ext>`
SUGGESTED = re.compile(r"notes \(conflict laptop \d{4}-\d{2}-\d{2} \d{6}\)\.txt")


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


@dataclass
class Scene:
    """notes.txt: v1 on both devices, the phone's edit applied, the laptop's in conflict."""

    original: Blob
    server: Blob
    client: Blob
    conflict: Json
    item_id: str
    cursor: str  # the feed position right after the conflict


def _conflict_on_notes(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice, *, upload: bool = True
) -> Scene:
    original = user.give(b"v1")
    created = laptop.applied(upsert("notes.txt", original))
    server = user.give(b"phone's edit")
    phone.applied(upsert("notes.txt", server, base=1))
    client = user.give(b"laptop's edit") if upload else blob(b"laptop's edit, not uploaded")
    result = laptop.report_one(upsert("notes.txt", client, base=1))
    assert result["status"] == "conflict", result
    [conflict] = laptop.conflicts()
    assert conflict["id"] == result["conflict_id"]
    cursor = laptop.changes(cursor="latest")["cursor"]
    return Scene(original, server, client, conflict, created["id"], cursor)


# -- recording ------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_stale_edit_opens_a_conflict_showing_both_sides(
    sync: SyncDriver, user: SyncUser, laptop: SyncDevice, phone: SyncDevice, prefix: str
) -> None:
    sync.prefix = prefix
    scene = _conflict_on_notes(user, laptop, phone)
    conflict = scene.conflict
    assert conflict == conflict | {
        "path": "notes.txt",
        "status": "unresolved",
        "device_id": laptop.id,
        "base_revision": 1,
    }
    assert conflict["server"] == conflict["server"] | {
        "revision": 2,
        "content_hash": scene.server.content_hash,
        "size": scene.server.size,
        "deleted": False,
        "device_id": phone.id,
    }
    assert conflict["client"] == conflict["client"] | {
        "op": "upsert",
        "content_hash": scene.client.content_hash,
        "size": scene.client.size,
        "deleted": False,
        "content_available": True,
    }
    assert SUGGESTED.fullmatch(conflict["suggested_path"])
    assert conflict.get("resolution") is None


def test_conflict_leaves_the_library_as_it_was(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    scene = _conflict_on_notes(user, laptop, phone)
    [change] = laptop.changes()["changes"]
    assert (change["revision"], change["content_hash"]) == (2, scene.server.content_hash)


def test_later_conflicting_write_updates_the_open_conflict(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    scene = _conflict_on_notes(user, laptop, phone, upload=False)
    assert scene.conflict["client"]["content_available"] is False
    uploaded = user.give(b"laptop's edit, uploaded at last")
    again = laptop.report_one(upsert("notes.txt", uploaded, base=1))
    assert (again["status"], again["conflict_id"]) == ("conflict", scene.conflict["id"])
    [conflict] = laptop.conflicts()
    assert conflict["id"] == scene.conflict["id"]
    assert conflict["client"]["content_hash"] == uploaded.content_hash
    assert conflict["client"]["content_available"] is True


def test_each_device_has_its_own_conflict_at_a_path(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    _conflict_on_notes(user, laptop, phone)
    tablet = user.device("tablet")
    result = tablet.report_one(upsert("notes.txt", user.give(b"tablet's edit"), base=1))
    assert result["status"] == "conflict"
    listed = {(c["device_id"], c["path"]) for c in laptop.conflicts()}
    assert listed == {(laptop.id, "notes.txt"), (tablet.id, "notes.txt")}


def test_move_conflict_is_recorded_at_the_target_as_a_move(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    song = user.give(b"song")
    laptop.applied(upsert("a.mp3", song))
    phone.applied(upsert("b.mp3", user.give(b"other song")))
    result = laptop.report_one(move("a.mp3", "b.mp3", base=1))
    assert (result["status"], result["path"]) == ("conflict", "b.mp3")
    [conflict] = laptop.conflicts()
    assert (conflict["path"], conflict["client"]["op"]) == ("b.mp3", "move")
    assert conflict["client"]["content_hash"] == song.content_hash


def test_conflicts_are_listed_only_to_their_owner(
    sync: SyncDriver, user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    _conflict_on_notes(user, laptop, phone)
    assert sync.user("bob").device().conflicts() == []


# -- resolving ---------------------------------------------------------------------


def test_keep_server_leaves_the_library_and_closes_the_conflict(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    scene = _conflict_on_notes(user, laptop, phone)
    body = laptop.resolve(scene.conflict["id"], "keep_server")
    assert body["changes"] == []
    assert body["conflict"] == body["conflict"] | {
        "status": "resolved",
        "resolution": "keep_server",
        "result_path": "notes.txt",
    }
    assert body["conflict"]["resolved_at"]
    assert laptop.changes(cursor=scene.cursor)["changes"] == []
    assert laptop.conflicts() == []


@pytest.mark.parametrize("prefix", PREFIXES)
def test_keep_client_makes_the_client_version_current(
    sync: SyncDriver, user: SyncUser, laptop: SyncDevice, phone: SyncDevice, prefix: str
) -> None:
    sync.prefix = prefix
    scene = _conflict_on_notes(user, laptop, phone)
    body = laptop.resolve(scene.conflict["id"], "keep_client")
    [change] = body["changes"]
    assert (change["id"], change["path"], change["revision"], change["content_hash"]) == (
        scene.item_id,
        "notes.txt",
        3,
        scene.client.content_hash,
    )
    assert phone.changes(cursor=scene.cursor)["changes"] == [change]
    assert body["conflict"]["resolution"] == "keep_client"


def test_keep_client_of_a_delete_deletes_the_item(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    laptop.applied(upsert("a.txt", user.give(b"v1")))
    phone.applied(upsert("a.txt", user.give(b"phone's edit"), base=1))
    result = laptop.report_one(delete("a.txt", base=1))
    assert result["status"] == "conflict"
    [change] = laptop.resolve(result["conflict_id"], "keep_client")["changes"]
    assert (change["op"], change["deleted"], change["revision"]) == ("delete", True, 3)


def test_keep_client_without_the_client_content_is_400_content_missing(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    scene = _conflict_on_notes(user, laptop, phone, upload=False)
    response = laptop.post_resolve(scene.conflict["id"], "keep_client")
    assert response.status_code == 400
    assert response.json()["code"] == "content_missing"
    [still_open] = laptop.conflicts()
    assert still_open["status"] == "unresolved"
    assert laptop.changes(cursor=scene.cursor)["changes"] == []


def test_keep_both_saves_the_client_version_at_the_suggested_path(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    scene = _conflict_on_notes(user, laptop, phone)
    body = laptop.resolve(scene.conflict["id"], "keep_both")
    suggested = scene.conflict["suggested_path"]
    assert body["conflict"]["result_path"] == suggested
    [copy] = body["changes"]
    assert (copy["path"], copy["content_hash"], copy["revision"]) == (
        suggested,
        scene.client.content_hash,
        1,
    )
    assert copy["id"] != scene.item_id
    assert phone.changes(cursor=scene.cursor)["changes"] == [copy]
    library = {c["path"]: c["content_hash"] for c in phone.changes()["changes"]}
    assert library == {"notes.txt": scene.server.content_hash, suggested: copy["content_hash"]}


def test_keep_both_resolved_later_still_uses_the_suggested_path(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = _conflict_on_notes(user, laptop, phone)
    later = clock.utcnow() + timedelta(hours=3)
    monkeypatch.setattr(conflict_service, "utcnow", lambda: later)
    body = laptop.resolve(scene.conflict["id"], "keep_both")
    assert body["conflict"]["result_path"] == scene.conflict["suggested_path"]
    assert [c["path"] for c in body["changes"]] == [scene.conflict["suggested_path"]]


def test_replaying_the_same_resolution_answers_200_and_changes_nothing(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    scene = _conflict_on_notes(user, laptop, phone)
    first = laptop.resolve(scene.conflict["id"], "keep_client")
    cursor = laptop.changes(cursor="latest")["cursor"]
    replay = laptop.resolve(scene.conflict["id"], "keep_client")
    assert replay["conflict"] == first["conflict"]
    assert laptop.changes(cursor=cursor)["changes"] == []


def test_another_resolution_after_resolving_is_400_already_resolved(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    scene = _conflict_on_notes(user, laptop, phone)
    laptop.resolve(scene.conflict["id"], "keep_server")
    response = laptop.post_resolve(scene.conflict["id"], "keep_client")
    assert response.status_code == 400
    assert response.json()["code"] == "already_resolved"
    assert laptop.changes(cursor=scene.cursor)["changes"] == []


def test_stale_expected_server_revision_is_409_and_resolves_nothing(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    scene = _conflict_on_notes(user, laptop, phone)
    phone.applied(upsert("notes.txt", user.give(b"phone again"), base=2))
    response = laptop.post_resolve(scene.conflict["id"], "keep_client", expected_server_revision=2)
    assert response.status_code == 409
    assert response.json()["status"] == 409
    assert len(laptop.conflicts()) == 1
    body = laptop.resolve(scene.conflict["id"], "keep_client", expected_server_revision=3)
    assert [c["revision"] for c in body["changes"]] == [4]


@pytest.mark.parametrize("whose", ["another-users", "unknown"])
def test_conflict_that_is_not_the_callers_is_404(
    sync: SyncDriver, user: SyncUser, laptop: SyncDevice, phone: SyncDevice, whose: str
) -> None:
    scene = _conflict_on_notes(user, laptop, phone)
    bobs = sync.user("bob").device()
    if whose == "another-users":
        response = bobs.post_resolve(scene.conflict["id"], "keep_client")
    else:
        response = laptop.post_resolve("00000000-0000-0000-0000-000000000000", "keep_client")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert len(laptop.conflicts()) == 1


def test_unknown_resolution_is_400(user: SyncUser, laptop: SyncDevice, phone: SyncDevice) -> None:
    scene = _conflict_on_notes(user, laptop, phone)
    response = laptop.post_resolve(scene.conflict["id"], "keep_neither")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


# -- keep_both policy ------------------------------------------------------------------


def test_keep_both_policy_resolves_the_conflict_at_once(user: SyncUser, phone: SyncDevice) -> None:
    laptop = user.device("laptop", conflict_policy="keep_both")
    cursor = phone.changes(cursor="latest")["cursor"]
    scene = _conflict_on_notes_unlisted(user, laptop, phone)
    assert laptop.conflicts() == []
    changes = phone.changes(cursor=cursor)["changes"]
    copies = [c for c in changes if c["path"] != "notes.txt"]
    [copy] = copies
    assert SUGGESTED.fullmatch(copy["path"])
    assert copy["content_hash"] == scene["client"].content_hash
    replay = laptop.resolve(scene["conflict_id"], "keep_both")
    assert replay["conflict"] == replay["conflict"] | {
        "status": "resolved",
        "resolution": "keep_both",
        "result_path": copy["path"],
    }
    assert laptop.post_resolve(scene["conflict_id"], "keep_server").status_code == 400


def test_keep_both_policy_waits_for_the_client_content(user: SyncUser, phone: SyncDevice) -> None:
    laptop = user.device("laptop", conflict_policy="keep_both")
    laptop.applied(upsert("notes.txt", user.give(b"v1")))
    phone.applied(upsert("notes.txt", user.give(b"phone's edit"), base=1))
    missing = blob(b"laptop's edit")
    assert laptop.report_one(upsert("notes.txt", missing, base=1))["status"] == "conflict"
    [waiting] = laptop.conflicts()
    assert waiting["client"]["content_available"] is False
    user.give(b"laptop's edit")
    assert laptop.report_one(upsert("notes.txt", missing, base=1))["status"] == "conflict"
    assert laptop.conflicts() == []
    copies = [c["path"] for c in phone.changes()["changes"] if c["path"] != "notes.txt"]
    assert len(copies) == 1
    assert SUGGESTED.fullmatch(copies[0])


def _conflict_on_notes_unlisted(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> dict[str, Any]:
    laptop.applied(upsert("notes.txt", user.give(b"v1")))
    phone.applied(upsert("notes.txt", user.give(b"phone's edit"), base=1))
    client = user.give(b"laptop's edit")
    result = laptop.report_one(upsert("notes.txt", client, base=1))
    assert result["status"] == "conflict"
    return {"conflict_id": result["conflict_id"], "client": client}


def test_keep_client_of_a_move_conflict_moves_the_item_and_keeps_the_other_in_history(
    user: SyncUser, laptop: SyncDevice, phone: SyncDevice
) -> None:
    song = laptop.applied(upsert("a.mp3", user.give(b"song")))
    other = phone.applied(upsert("b.mp3", user.give(b"other song")))
    result = laptop.report_one(move("a.mp3", "b.mp3", base=1))
    assert result["status"] == "conflict"
    changes = laptop.resolve(result["conflict_id"], "keep_client")["changes"]
    assert [(c["id"], c["op"], c["path"]) for c in changes] == [
        (other["id"], "delete", "b.mp3"),
        (song["id"], "move", "b.mp3"),
    ]
    library = {c["path"]: c["id"] for c in phone.changes()["changes"]}
    assert library == {"b.mp3": song["id"]}
