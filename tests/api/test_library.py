"""The library endpoints behind the web page (protocol section 14), on both databases:
folder listings (paging, sort, search), history, restore, activity, download
tickets and the cookie session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.content_hash import hash_bytes
from shelfsync.server.domain import clock
from shelfsync.server.services import download_tickets
from tests.api.conftest import Account
from tests.api.sync_support import SyncDevice, SyncDriver, SyncUser, delete, upsert

Json = dict[str, Any]
LIB = "/api/v1/library"
SESSION = "/api/v1/auth/session"
CSRF = {"X-Requested-With": "shelfsync"}


@pytest.fixture
def driver(app: FastAPI, client: TestClient) -> SyncDriver:
    return SyncDriver(app, client)


@pytest.fixture
def alice_user(driver: SyncDriver) -> SyncUser:
    return driver.user("alice")


@pytest.fixture
def laptop(alice_user: SyncUser) -> SyncDevice:
    return alice_user.device("laptop")


def put(device: SyncDevice, path: str, data: bytes, *, base: int | None = None) -> Json:
    """Content through the real upload API (so downloads have bytes), then applied."""
    client = device.client
    body = {"path": path, "size": len(data), "content_hash": hash_bytes(data)}
    session = client.post(
        "/api/v1/sync/upload", json={**body, "base_revision": base}, headers=device.headers
    )
    assert session.status_code == 200, session.text
    session_id = session.json()["id"]
    if data and 0 not in session.json()["received"]:
        chunk = client.put(
            f"/api/v1/sync/upload/{session_id}/chunks/0", content=data, headers=device.headers
        )
        assert chunk.status_code == 200, chunk.text
    done = client.post(f"/api/v1/sync/upload/{session_id}/complete", headers=device.headers)
    assert done.status_code == 200, done.text
    result: Json = done.json()["result"]
    assert result["status"] == "applied", result
    return result


def listing(client: TestClient, headers: dict[str, str], **params: Any) -> Json:
    response = client.get(f"{LIB}/folder", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def names(page: Json) -> list[str]:
    return [e["name"] for e in page["entries"]]


def problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code, response.text


# -- listing -------------------------------------------------------------------


def test_folder_lists_subfolders_first_with_their_totals(
    client: TestClient, alice_user: SyncUser, laptop: SyncDevice
) -> None:
    laptop.report(
        upsert("Books/Dune.epub", alice_user.give(b"dune")),
        upsert("Books/SciFi/Foundation.epub", alice_user.give(b"foundation!")),
        upsert("Music/a.mp3", alice_user.give(b"mp3")),
        upsert("readme.txt", alice_user.give(b"hello")),
    )
    root = listing(client, alice_user.headers)
    assert [(e["kind"], e["name"]) for e in root["entries"]] == [
        ("folder", "Books"),
        ("folder", "Music"),
        ("file", "readme.txt"),
    ]
    books = root["entries"][0]
    assert (books["path"], books["size"], books["item_count"]) == ("Books", 15, 2)
    assert books["id"] is None
    assert books["revision"] is None
    assert root["total"] == 3
    assert root["next_offset"] is None

    inner = listing(client, alice_user.headers, path="Books")
    assert [(e["kind"], e["path"]) for e in inner["entries"]] == [
        ("folder", "Books/SciFi"),
        ("file", "Books/Dune.epub"),
    ]
    dune = inner["entries"][1]
    assert dune["revision"] == 1
    assert dune["size"] == 4
    assert dune["content_hash"] == hash_bytes(b"dune")
    assert dune["device_id"] == laptop.id
    # An unknown folder is simply empty (folders are implicit).
    assert listing(client, alice_user.headers, path="Nope")["entries"] == []


def test_paging_returns_every_entry_once_in_order(
    client: TestClient, alice_user: SyncUser, laptop: SyncDevice
) -> None:
    content = alice_user.give(b"x")
    laptop.report(
        *[upsert(f"d{i}/f.txt", content) for i in range(3)],
        *[upsert(f"f{i}.txt", content) for i in range(4)],
    )
    everything = names(listing(client, alice_user.headers, limit=1000))
    assert everything == ["d0", "d1", "d2", "f0.txt", "f1.txt", "f2.txt", "f3.txt"]
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = listing(client, alice_user.headers, limit=2, offset=offset)
        assert page["total"] == 7
        assert len(page["entries"]) <= 2
        seen += names(page)
        offset = page["next_offset"]
    assert seen == everything


@pytest.mark.parametrize(
    ("sort", "order", "expected"),
    [
        ("name", "asc", ["B.txt", "Z.txt", "a.txt", "é.txt"]),
        ("name", "desc", ["é.txt", "a.txt", "Z.txt", "B.txt"]),
        ("size", "asc", ["é.txt", "Z.txt", "B.txt", "a.txt"]),
        ("size", "desc", ["a.txt", "B.txt", "Z.txt", "é.txt"]),
        # Ties are broken by name, in the same direction.
        ("revision", "desc", ["Z.txt", "B.txt", "é.txt", "a.txt"]),
        ("revision", "asc", ["a.txt", "é.txt", "B.txt", "Z.txt"]),
    ],
)
def test_files_sort_by_the_chosen_key(
    client: TestClient,
    alice_user: SyncUser,
    laptop: SyncDevice,
    sort: str,
    order: str,
    expected: list[str],
) -> None:
    sizes = {"a.txt": 4, "B.txt": 3, "Z.txt": 2, "é.txt": 1}
    for name, size in sizes.items():
        laptop.applied(upsert(name, alice_user.give((name.encode() * size)[:size])))
    # Revisions (sizes kept): Z.txt edited twice, B.txt once.
    laptop.applied(upsert("Z.txt", alice_user.give(b"z1"), base=1))
    laptop.applied(upsert("Z.txt", alice_user.give(b"z3"), base=2))
    laptop.applied(upsert("B.txt", alice_user.give(b"b22"), base=1))
    page = listing(client, alice_user.headers, sort=sort, order=order)
    assert names(page) == expected


def test_search_finds_names_below_the_folder_case_insensitively(
    client: TestClient, alice_user: SyncUser, laptop: SyncDevice
) -> None:
    content = alice_user.give(b"x")
    laptop.report(
        upsert("Books/Dune.epub", content),
        upsert("Books/old/dune-notes.txt", content),
        upsert("Books/100%_done.txt", content),
        upsert("Books/100x done.txt", content),
        upsert("Music/Dune theme.mp3", content),
        upsert("Books/Dunes/other.txt", content),
    )
    found = listing(client, alice_user.headers, path="Books", q="DUNE")
    # Names only (not folder names on the way), below Books only.
    assert sorted(e["path"] for e in found["entries"]) == [
        "Books/Dune.epub",
        "Books/old/dune-notes.txt",
    ]
    assert all(e["kind"] == "file" for e in found["entries"])
    # LIKE wildcards in the query are plain characters.
    wild = listing(client, alice_user.headers, path="Books", q="%_")
    assert [e["path"] for e in wild["entries"]] == ["Books/100%_done.txt"]


def test_deleted_and_moved_items_leave_their_folder(
    client: TestClient, alice_user: SyncUser, laptop: SyncDevice
) -> None:
    content = alice_user.give(b"x")
    laptop.report(upsert("a/gone.txt", content), upsert("a/moved.txt", content))
    laptop.applied(delete("a/gone.txt", base=1))
    laptop.applied(
        {"op": "move", "path": "a/moved.txt", "to_path": "b/moved.txt", "base_revision": 1}
    )
    assert names(listing(client, alice_user.headers)) == ["b"]
    assert listing(client, alice_user.headers, path="a")["entries"] == []


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": 0}, "invalid_request"),
        ({"limit": 1001}, "invalid_request"),
        ({"offset": -1}, "invalid_request"),
        ({"sort": "color"}, "invalid_request"),
        ({"order": "up"}, "invalid_request"),
        ({"path": "a/../b"}, "invalid_path"),
        ({"q": "a\x01"}, "invalid_request"),
    ],
)
def test_bad_listing_parameters_are_400(
    client: TestClient, alice_user: SyncUser, params: Json, code: str
) -> None:
    problem(client.get(f"{LIB}/folder", params=params, headers=alice_user.headers), 400, code)


# -- history and restore ---------------------------------------------------------


def test_revisions_are_listed_newest_first_in_pages(
    client: TestClient, alice_user: SyncUser, laptop: SyncDevice
) -> None:
    item = laptop.applied(upsert("n.txt", alice_user.give(b"1")))
    for base, data in enumerate((b"22", b"333", b"4444"), start=1):
        laptop.applied(upsert("n.txt", alice_user.give(data), base=base))
    url = f"{LIB}/items/{item['id']}/revisions"
    first = client.get(url, params={"limit": 3}, headers=alice_user.headers).json()
    assert first["item"]["revision"] == 4
    assert first["item"]["path"] == "n.txt"
    assert [r["revision"] for r in first["revisions"]] == [4, 3, 2]
    assert [r["size"] for r in first["revisions"]] == [4, 3, 2]
    assert first["next_before"] == 2
    rest = client.get(
        url, params={"limit": 3, "before": first["next_before"]}, headers=alice_user.headers
    ).json()
    assert [r["revision"] for r in rest["revisions"]] == [1]
    assert rest["next_before"] is None


def test_restore_is_a_new_revision_that_every_device_receives(
    client: TestClient, alice_user: SyncUser, laptop: SyncDevice
) -> None:
    phone = alice_user.device("phone")
    item = laptop.applied(upsert("doc.txt", alice_user.give(b"first"), metadata={"t": 1}))
    laptop.applied(upsert("doc.txt", alice_user.give(b"second"), base=1, metadata={"t": 2}))
    _, cursor = phone.read_all()
    restored = client.post(
        f"{LIB}/items/{item['id']}/restore",
        json={"revision": 1, "expected_revision": 2},
        headers=alice_user.headers,
    )
    assert restored.status_code == 200, restored.text
    change = restored.json()["change"]
    assert change["revision"] == 3
    assert change["content_hash"] == hash_bytes(b"first")
    assert change["metadata"] == {"t": 1}
    assert change["device_id"] is None
    feed = phone.changes(cursor=cursor)
    assert [(c["id"], c["revision"], c["content_hash"]) for c in feed["changes"]] == [
        (item["id"], 3, hash_bytes(b"first"))
    ]
    # Through a device token, the device is named as the author.
    by_device = client.post(
        f"{LIB}/items/{item['id']}/restore", json={"revision": 2}, headers=laptop.headers
    )
    assert by_device.json()["change"]["device_id"] == laptop.id


def test_restore_against_a_newer_revision_is_409(
    client: TestClient, alice_user: SyncUser, laptop: SyncDevice
) -> None:
    item = laptop.applied(upsert("doc.txt", alice_user.give(b"first")))
    laptop.applied(upsert("doc.txt", alice_user.give(b"second"), base=1))
    answer = client.post(
        f"{LIB}/items/{item['id']}/restore",
        json={"revision": 1, "expected_revision": 1},
        headers=alice_user.headers,
    )
    problem(answer, 409, "stale_revision")


def test_restore_recreates_a_deleted_item_but_not_a_delete(
    client: TestClient, alice_user: SyncUser, laptop: SyncDevice
) -> None:
    item = laptop.applied(upsert("doc.txt", alice_user.give(b"first")))
    laptop.applied(delete("doc.txt", base=1))
    url = f"{LIB}/items/{item['id']}/restore"
    problem(client.post(url, json={"revision": 2}, headers=alice_user.headers), 404, "not_found")
    problem(client.post(url, json={"revision": 9}, headers=alice_user.headers), 404, "not_found")
    back = client.post(url, json={"revision": 1}, headers=alice_user.headers)
    assert back.status_code == 200, back.text
    assert back.json()["change"]["deleted"] is False
    assert names(listing(client, alice_user.headers)) == ["doc.txt"]


def test_activity_lists_latest_changes_newest_first(
    client: TestClient, alice_user: SyncUser, laptop: SyncDevice
) -> None:
    content = alice_user.give(b"x")
    for i in range(3):
        laptop.applied(upsert(f"f{i}.txt", content))
    laptop.applied(upsert("f0.txt", alice_user.give(b"y"), base=1))
    first = client.get(f"{LIB}/activity", params={"limit": 2}, headers=alice_user.headers).json()
    assert [(c["path"], c["revision"]) for c in first["changes"]] == [
        ("f0.txt", 2),
        ("f2.txt", 1),
    ]
    rest = client.get(
        f"{LIB}/activity",
        params={"limit": 2, "before_seq": first["next_before_seq"]},
        headers=alice_user.headers,
    ).json()
    assert [c["path"] for c in rest["changes"]] == ["f1.txt"]
    assert rest["next_before_seq"] is None


# -- another user ------------------------------------------------------------------


def test_another_users_library_is_invisible(
    client: TestClient, driver: SyncDriver, alice_user: SyncUser, laptop: SyncDevice
) -> None:
    item = put(laptop, "secret/diary.txt", b"dear diary")
    bob = driver.user("bob")
    assert listing(client, bob.headers)["entries"] == []
    assert listing(client, bob.headers, path="secret", q="diary")["entries"] == []
    assert client.get(f"{LIB}/activity", headers=bob.headers).json()["changes"] == []
    for url, body in (
        (f"{LIB}/items/{{}}/revisions", None),
        (f"{LIB}/items/{{}}/restore", {"revision": 1}),
    ):
        method = "POST" if body else "GET"
        theirs = client.request(method, url.format(item["id"]), json=body, headers=bob.headers)
        nobodys = client.request(method, url.format("0" * 36), json=body, headers=bob.headers)
        problem(theirs, 404, "not_found")
        assert theirs.json() == nobodys.json()
    ticket = client.post(
        f"{LIB}/download-tickets", json={"path": "secret/diary.txt"}, headers=bob.headers
    )
    problem(ticket, 404, "not_found")
    assert "diary" not in ticket.text
    # Alice's item is untouched.
    assert listing(client, alice_user.headers, path="secret")["entries"][0]["revision"] == 1


def test_library_routes_need_a_token(client: TestClient) -> None:
    for method, url in (
        ("GET", f"{LIB}/folder"),
        ("GET", f"{LIB}/activity"),
        ("GET", f"{LIB}/items/x/revisions"),
        ("POST", f"{LIB}/items/x/restore"),
        ("POST", f"{LIB}/download-tickets"),
    ):
        problem(client.request(method, url, json={}), 401, "unauthorized")


# -- download tickets -----------------------------------------------------------


def test_a_ticket_downloads_exactly_one_revision(
    client: TestClient, alice_user: SyncUser, laptop: SyncDevice
) -> None:
    put(laptop, "Docs/report.txt", b"version one")
    put(laptop, "Docs/report.txt", b"version two!", base=1)
    issued = client.post(
        f"{LIB}/download-tickets",
        json={"path": "Docs/report.txt", "revision": 1},
        headers=alice_user.headers,
    )
    assert issued.status_code == 200, issued.text
    ticket = issued.json()
    assert ticket["revision"] == 1
    assert ticket["url"].startswith(f"{LIB}/download?ticket=")
    # No Authorization header: the ticket is the credential.
    got = client.get(ticket["url"])
    assert got.status_code == 200, got.text
    assert got.content == b"version one"
    assert got.headers["etag"] == f'"{hash_bytes(b"version one")}"'
    assert got.headers["content-disposition"].startswith("attachment;")
    assert got.headers["x-content-type-options"] == "nosniff"
    resumed = client.get(ticket["url"], headers={"Range": "bytes=8-"})
    assert resumed.status_code == 206
    assert resumed.content == b"one"
    # Without a revision, the current one.
    current = client.post(
        f"{LIB}/download-tickets", json={"path": "Docs/report.txt"}, headers=alice_user.headers
    ).json()
    assert current["revision"] == 2
    assert client.get(current["url"]).content == b"version two!"


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "file"])
def test_a_ticket_downloads_small_content_wherever_it_is_stored(
    app: FastAPI,
    client: TestClient,
    alice_user: SyncUser,
    laptop: SyncDevice,
    monkeypatch: pytest.MonkeyPatch,
    inline: bool,
) -> None:
    """Small content is stored in the database by default; a ticket sends it
    (whole, or one range) exactly as it sends a file."""
    uploads = app.state.services.uploads
    if not inline:
        monkeypatch.setattr(uploads, "limits", replace(uploads.limits, inline_max_bytes=0))
    data = b"some small content"
    put(laptop, "a.txt", data)
    assert app.state.services.blobs.has(hash_bytes(data)) is not inline
    issued = client.post(
        f"{LIB}/download-tickets", json={"path": "a.txt"}, headers=alice_user.headers
    ).json()
    whole = client.get(issued["url"])
    assert (whole.status_code, whole.content) == (200, data)
    assert whole.headers["content-length"] == str(len(data))
    assert whole.headers["etag"] == f'"{hash_bytes(data)}"'
    part = client.get(issued["url"], headers={"Range": "bytes=5-"})
    assert (part.status_code, part.content) == (206, data[5:])
    assert part.headers["content-range"] == f"bytes 5-{len(data) - 1}/{len(data)}"


def test_forged_expired_or_misused_tickets_are_refused(
    client: TestClient,
    alice_user: SyncUser,
    laptop: SyncDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put(laptop, "a.txt", b"alpha")
    issued = client.post(
        f"{LIB}/download-tickets", json={"path": "a.txt"}, headers=alice_user.headers
    ).json()
    token = parse_qs(urlsplit(issued["url"]).query)["ticket"][0]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (tampered, alice_user.access_token, "x"):
        problem(client.get(f"{LIB}/download", params={"ticket": bad}), 401, "unauthorized")
    # A ticket is no access token either.
    problem(
        client.get(f"{LIB}/folder", headers={"Authorization": f"Bearer {token}"}),
        401,
        "unauthorized",
    )
    # Issued 61 s ago: expired.
    past = clock.utcnow() - timedelta(seconds=download_tickets.TICKET_TTL_S + 1)
    monkeypatch.setattr(download_tickets, "utcnow", lambda: past)
    old = client.post(
        f"{LIB}/download-tickets", json={"path": "a.txt"}, headers=alice_user.headers
    ).json()
    expired = client.get(old["url"])
    problem(expired, 401, "unauthorized")
    assert "expired" in expired.json()["detail"]


# -- the cookie session ---------------------------------------------------------------


def test_cookie_session_rotates_refuses_cross_site_and_ends_on_logout(
    client: TestClient, alice: Account, make_user: Callable[[str], Account]
) -> None:
    started = client.post(SESSION, json={"refresh_token": alice.refresh_token}, headers=CSRF)
    assert started.status_code == 200, started.text
    cookie = started.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert f"Path={SESSION}" in cookie
    assert "refresh_token" not in started.json()
    assert started.json()["username"] == "alice"
    # The login's refresh token was spent: it cannot start a second session.
    again = client.post(SESSION, json={"refresh_token": alice.refresh_token}, headers=CSRF)
    problem(again, 401, "unauthorized")
    client.cookies.clear()
    alice2 = make_user("alice2")
    started = client.post(SESSION, json={"refresh_token": alice2.refresh_token}, headers=CSRF)
    first_cookie = client.cookies.get("shelfsync_session")
    assert first_cookie

    # CSRF: no custom header, or another origin or site, is refused.
    problem(client.post(f"{SESSION}/refresh"), 403, "csrf_rejected")
    problem(
        client.post(f"{SESSION}/refresh", headers={**CSRF, "Origin": "https://evil.example"}),
        403,
        "csrf_rejected",
    )
    problem(
        client.post(f"{SESSION}/refresh", headers={**CSRF, "Sec-Fetch-Site": "cross-site"}),
        403,
        "csrf_rejected",
    )
    problem(client.delete(SESSION), 403, "csrf_rejected")

    refreshed = client.post(f"{SESSION}/refresh", headers=CSRF)
    assert refreshed.status_code == 200, refreshed.text
    token = refreshed.json()["access_token"]
    assert (
        client.get(f"{LIB}/folder", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
    assert client.cookies.get("shelfsync_session") != first_cookie

    ended = client.delete(SESSION, headers=CSRF)
    assert ended.status_code == 204
    assert client.cookies.get("shelfsync_session") is None
    # The revoked chain cannot be refreshed, whichever of its tokens is shown.
    for value in (first_cookie, refreshed.cookies.get("shelfsync_session")):
        client.cookies.set("shelfsync_session", value or "", path=SESSION)
        problem(client.post(f"{SESSION}/refresh", headers=CSRF), 401, "unauthorized")
        client.cookies.clear()
    problem(client.post(f"{SESSION}/refresh", headers=CSRF), 401, "unauthorized")


def test_the_page_is_served_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/static/app.js">' in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    for missing in ("/static/nope.js", "/static/..%2Fapp.py", "/static/.hidden.js"):
        assert client.get(missing).status_code == 404, missing
