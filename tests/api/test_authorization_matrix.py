"""Every operation x every kind of bad or foreign credential (protocol section 2).

The operations are enumerated from `app.routes`, so a new route is in the
matrix the day it is added: the credential failures (no token, forged, expired,
revoked...) need nothing to know about it, and the cross-user rows fail until
the new route is given its expected answer in `OPERATIONS`.

Alice owns data (devices, an uploaded file, a conflict, a pending upload);
Bob, with valid tokens of his own, must get 403/404 as each operation defines
and never a byte of Alice's data. Each test builds Alice's data once and walks
every operation with one kind of credential. PostgreSQL runs a reduced set.
"""

from __future__ import annotations

import json
import statistics
import struct
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.content_hash import hash_bytes
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.settings import Settings
from tests.api.conftest import Account
from tests.api.sync_support import SyncDriver, blob, upsert

Json = dict[str, Any]

V1 = "/api/v1/sync"
ALIAS = "/api/sync"
PREFIXES = (V1, ALIAS)
# The web page's library routes: one prefix, no alias.
LIBRARY = "/api/v1/library"

# Reachable without a token; every other route must demand one.
PUBLIC = {
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/device"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("HEAD", "/openapi.json"),
    ("GET", "/api/docs"),
    ("HEAD", "/api/docs"),
    ("GET", "/api/docs/oauth2-redirect"),
    ("HEAD", "/api/docs/oauth2-redirect"),
    ("GET", "/docs/oauth2-redirect"),
    ("HEAD", "/docs/oauth2-redirect"),
    # The web page and its files.
    ("GET", "/"),
    ("GET", "/static/{name}"),
    # The cookie session: its cookie is the credential (tests/api/test_library.py).
    ("POST", "/api/v1/auth/session"),
    ("POST", "/api/v1/auth/session/refresh"),
    ("DELETE", "/api/v1/auth/session"),
    # The download ticket in the URL is the credential (tests/api/test_library.py).
    ("GET", "/api/v1/library/download"),
}

ALICE_FILE = "private/alice-diary-q7.txt"
ALICE_FILE_DATA = b"alice's secret diary entry, q7"
ALICE_PENDING = "private/alice-pending-q7.bin"
ALICE_PENDING_DATA = b"alice's pending upload, q7"
ALICE_CONFLICTED = "private/alice-conflicted-q7.txt"


# -- Alice's world -------------------------------------------------------------


@dataclass
class World:
    client: TestClient
    secret: bytes
    alice_id: str
    alice: Account
    laptop_id: str
    laptop_headers: dict[str, str]
    file_item_id: str
    conflict_id: str
    session_id: str
    bob_id: str
    bob: dict[str, str]
    bob_device_id: str
    bob_device: dict[str, str]
    bob_cursor: str
    revoked: dict[str, dict[str, str]] = field(default_factory=dict)
    # Strings that must never reach Bob: ids, names, paths, content hashes.
    secrets: set[str] = field(default_factory=set)

    def ids(self) -> dict[str, str]:
        return {
            "device": self.laptop_id,
            "conflict": self.conflict_id,
            "session": self.session_id,
            "path": ALICE_FILE,
            "bob_cursor": self.bob_cursor,
            "item": self.file_item_id,
        }


def _register(client: TestClient, headers: dict[str, str], name: str) -> tuple[str, str, str]:
    """A device over HTTP: (device id, device token, device access token)."""
    created = client.post(f"{V1}/devices", json={"name": name}, headers=headers)
    assert created.status_code == 200, created.text
    token = created.json()["token"]
    granted = client.post("/api/v1/auth/device", json={"device_token": token})
    assert granted.status_code == 200, granted.text
    return created.json()["device"]["id"], token, granted.json()["access_token"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _upload(client: TestClient, headers: dict[str, str], path: str, data: bytes) -> Json:
    body = {
        "path": path,
        "size": len(data),
        "content_hash": hash_bytes(data),
        "base_revision": None,
    }
    created = client.post(f"{V1}/upload", json=body, headers=headers)
    assert created.status_code == 200, created.text
    session: Json = created.json()
    return session


@pytest.fixture
def world(
    app: FastAPI, client: TestClient, make_user: Callable[[str], Account], settings: Settings
) -> World:
    alice = make_user("alice-q7")
    bob = make_user("bob-q7")
    driver = SyncDriver(app, client)
    alice_user = driver.adopt(alice.username, alice.access_token)
    bob_user = driver.adopt(bob.username, bob.access_token)

    laptop_id, laptop_token, laptop_access = _register(client, alice.headers, "alice-laptop-q7")
    phone_id, _, phone_access = _register(client, alice.headers, "alice-phone-q7")
    laptop, phone = _bearer(laptop_access), _bearer(phone_access)

    # A small file, through the upload API.
    session = _upload(client, laptop, ALICE_FILE, ALICE_FILE_DATA)
    chunk = client.put(
        f"{V1}/upload/{session['id']}/chunks/0", content=ALICE_FILE_DATA, headers=laptop
    )
    assert chunk.status_code == 200, chunk.text
    done = client.post(f"{V1}/upload/{session['id']}/complete", headers=laptop)
    assert done.status_code == 200, done.text
    assert done.json()["result"]["status"] == "applied", done.text
    file_item_id = done.json()["result"]["id"]

    # A conflict: both devices edit revision 1.
    v1 = alice_user.give(b"alice conflict v1 q7")
    phones = alice_user.give(b"alice conflict phone edit q7")
    laptops = alice_user.give(b"alice conflict laptop edit q7")
    for headers, change in (
        (laptop, upsert(ALICE_CONFLICTED, v1)),
        (phone, upsert(ALICE_CONFLICTED, phones, base=1)),
        (laptop, upsert(ALICE_CONFLICTED, laptops, base=1)),
    ):
        answer = client.post(f"{V1}/report", json={"changes": [change]}, headers=headers)
        assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert result["status"] == "conflict", result
    [conflict] = client.get(f"{V1}/conflicts", headers=laptop).json()["conflicts"]

    # An upload left pending.
    pending = _upload(client, laptop, ALICE_PENDING, ALICE_PENDING_DATA)
    assert pending["status"] == "pending"

    bob_device_id, _, bob_access = _register(client, bob.headers, "bob-laptop")
    bob_feed = client.get(f"{V1}/changes", headers=_bearer(bob_access))
    assert bob_feed.status_code == 200, bob_feed.text
    world = World(
        client=client,
        secret=bytes.fromhex(settings.secret_path.read_text().strip()),
        alice_id=alice_user.id,
        alice=alice,
        laptop_id=laptop_id,
        laptop_headers=laptop,
        file_item_id=file_item_id,
        conflict_id=conflict["id"],
        session_id=pending["id"],
        bob_id=bob_user.id,
        bob=bob.headers,
        bob_device_id=bob_device_id,
        bob_device=_bearer(bob_access),
        bob_cursor=bob_feed.json()["cursor"],
    )

    # Alice's own devices whose tokens must stop working at once.
    for how in ("deleted", "disabled", "rotated"):
        device_id, _, access = _register(client, alice.headers, f"alice-{how}-q7")
        if how == "deleted":
            answer = client.delete(f"{V1}/devices/{device_id}", headers=alice.headers)
            assert answer.status_code == 204, answer.text
        elif how == "disabled":
            answer = client.put(
                f"{V1}/devices/{device_id}", json={"enabled": False}, headers=alice.headers
            )
            assert answer.status_code == 200, answer.text
        else:
            answer = client.post(f"{V1}/devices/{device_id}/token", headers=alice.headers)
            assert answer.status_code == 200, answer.text
            world.secrets.add(answer.json()["token"])
        world.revoked[how] = _bearer(access)
        world.secrets.add(device_id)

    world.secrets |= {
        alice_user.id,
        alice.username,
        alice.access_token,
        alice.refresh_token,
        laptop_id,
        laptop_token,
        laptop_access,
        phone_id,
        phone_access,
        "alice-laptop-q7",
        "alice-phone-q7",
        file_item_id,
        ALICE_FILE,
        quote(ALICE_FILE, safe=""),
        hash_bytes(ALICE_FILE_DATA),
        ALICE_CONFLICTED,
        conflict["id"],
        conflict["suggested_path"],
        result["id"],
        pending["id"],
        ALICE_PENDING,
        hash_bytes(ALICE_PENDING_DATA),
        *(b.content_hash for b in (v1, phones, laptops)),
        # Part of every name and path above.
        "alice",
    }
    return world


# -- credentials -----------------------------------------------------------------


def _claims(world: World, **overrides: Any) -> Json:
    now = utcnow()
    claims: Json = {
        "sub": world.alice_id,
        "typ": "access",
        "ugen": 1,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=10)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return claims


def _forged(world: World, kind: str) -> dict[str, str]:
    """Headers for a credential that must be refused with 401."""
    past = int((utcnow() - timedelta(minutes=5)).timestamp())
    if kind == "none":
        return {}
    if kind == "malformed":
        return _bearer("not-a.jwt-at-all")
    if kind == "truncated":
        return _bearer(world.alice.access_token.rsplit(".", 1)[0])
    if kind == "not_bearer":
        return {"Authorization": f"Basic {world.alice.access_token}"}
    if kind == "bad_signature":
        return _bearer(jwt.encode(_claims(world), b"x" * 32, algorithm="HS256"))
    if kind == "alg_none":
        return _bearer(jwt.encode(_claims(world), None, algorithm="none"))
    if kind == "other_alg":
        with warnings.catch_warnings():
            # The server's 32-byte key is short for HS512: that is the point.
            warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
            return _bearer(jwt.encode(_claims(world), world.secret, algorithm="HS512"))
    if kind == "expired":
        return _bearer(jwt.encode(_claims(world, exp=past), world.secret, algorithm="HS256"))
    if kind == "wrong_type":
        return _bearer(jwt.encode(_claims(world, typ="refresh"), world.secret, algorithm="HS256"))
    if kind == "unknown_user":
        claims = _claims(world, sub=str(uuid.uuid4()))
        return _bearer(jwt.encode(claims, world.secret, algorithm="HS256"))
    if kind == "stale_user_generation":
        return _bearer(jwt.encode(_claims(world, ugen=0), world.secret, algorithm="HS256"))
    if kind == "refresh_as_access":
        return _bearer(world.alice.refresh_token)
    if kind in world.revoked:
        return world.revoked[kind]
    raise AssertionError(kind)


REFUSED = [
    "none",
    "malformed",
    "truncated",
    "not_bearer",
    "bad_signature",
    "alg_none",
    "other_alg",
    "expired",
    "wrong_type",
    "unknown_user",
    "stale_user_generation",
    "refresh_as_access",
    "deleted",
    "disabled",
    "rotated",
]
FOREIGN = ["other_user", "other_users_device", "other_user_claiming_victims_device"]


def _foreign(world: World, kind: str) -> dict[str, str]:
    if kind == "other_user":
        return world.bob
    if kind == "other_users_device":
        return world.bob_device
    assert kind == "other_user_claiming_victims_device"
    return {**world.bob, "X-Device-ID": world.laptop_id}


# -- operations ------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What Bob gets: `status` (and problem `code` unless it is a success)."""

    status: int
    code: str | None = None


OK = Expect(200)
DEVICE_REQUIRED = Expect(400, "device_required")
FORBIDDEN = Expect(403, "forbidden")
NOT_FOUND = Expect(404, "not_found")


@dataclass(frozen=True)
class Operation:
    """How to call one route, and what another user's token gets from it.

    `addressed` names the id in the URL that is Alice's; `unknown` replaces it
    to ask the same of something that does not exist.
    """

    tail: str
    as_user: Expect
    as_device: Expect
    addressed: str | None = None
    body: Json | None = None
    content: bytes | None = None
    query: Json | None = None


# Bob's own bodies: they name nothing of Alice's (apart from ids in URLs).
BOB_BLOB = blob(b"bob's own bytes")
_BOB_MANIFEST = json.dumps(
    {
        "files": [
            {
                "path": "bob/batch.bin",
                "size": BOB_BLOB.size,
                "content_hash": BOB_BLOB.content_hash,
                "base_revision": None,
            }
        ]
    }
).encode()
BOB_BATCH = struct.pack(">I", len(_BOB_MANIFEST)) + _BOB_MANIFEST + b"bob's own bytes"
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/devices"): Operation("/devices", OK, OK),
    ("POST", "/devices"): Operation("/devices", OK, OK, body={"name": "bob-extra"}),
    ("GET", "/devices/{id}"): Operation(
        "/devices/{device}", FORBIDDEN, FORBIDDEN, addressed="device"
    ),
    ("PUT", "/devices/{id}"): Operation(
        "/devices/{device}",
        FORBIDDEN,
        FORBIDDEN,
        addressed="device",
        body={"name": "pwned", "enabled": False},
    ),
    ("DELETE", "/devices/{id}"): Operation(
        "/devices/{device}", FORBIDDEN, FORBIDDEN, addressed="device"
    ),
    ("POST", "/devices/{id}/token"): Operation(
        "/devices/{device}/token", FORBIDDEN, FORBIDDEN, addressed="device"
    ),
    ("POST", "/report"): Operation(
        "/report",
        DEVICE_REQUIRED,
        OK,
        body={"changes": [upsert("bob/probe.bin", BOB_BLOB)]},
    ),
    ("GET", "/changes"): Operation("/changes", OK, OK),
    ("POST", "/ack"): Operation("/ack", DEVICE_REQUIRED, OK, body={"cursor": "{bob_cursor}"}),
    ("GET", "/conflicts"): Operation("/conflicts", OK, OK),
    ("POST", "/conflicts/{id}/resolve"): Operation(
        "/conflicts/{conflict}/resolve",
        NOT_FOUND,
        NOT_FOUND,
        addressed="conflict",
        body={"resolution": "keep_client"},
    ),
    ("POST", "/upload"): Operation(
        "/upload",
        DEVICE_REQUIRED,
        OK,
        body={
            "path": "bob/upload.bin",
            "size": BOB_BLOB.size,
            "content_hash": BOB_BLOB.content_hash,
            "base_revision": None,
        },
    ),
    ("GET", "/upload/{id}"): Operation(
        "/upload/{session}", NOT_FOUND, NOT_FOUND, addressed="session"
    ),
    ("DELETE", "/upload/{id}"): Operation(
        "/upload/{session}", NOT_FOUND, NOT_FOUND, addressed="session"
    ),
    ("PUT", "/upload/{id}/chunks/{index}"): Operation(
        "/upload/{session}/chunks/0",
        NOT_FOUND,
        NOT_FOUND,
        addressed="session",
        content=ALICE_PENDING_DATA,
    ),
    ("POST", "/upload/{id}/complete"): Operation(
        "/upload/{session}/complete", NOT_FOUND, NOT_FOUND, addressed="session"
    ),
    ("GET", "/download/{path:librarypath}"): Operation(
        "/download/{path}", NOT_FOUND, NOT_FOUND, addressed="path"
    ),
    ("HEAD", "/download/{path:librarypath}"): Operation(
        "/download/{path}", NOT_FOUND, NOT_FOUND, addressed="path"
    ),
    # Bob's own file in a batch; asking for Alice's path answers a not_found entry.
    ("POST", "/upload/batch"): Operation("/upload/batch", DEVICE_REQUIRED, OK, content=BOB_BATCH),
    ("POST", "/download/batch"): Operation(
        "/download/batch", OK, OK, body={"files": [{"path": ALICE_FILE}]}
    ),
}
# The library routes (under LIBRARY only); any token of the user works.
LIBRARY_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/folder"): Operation("/folder", OK, OK, query={"path": "private"}),
    ("GET", "/activity"): Operation("/activity", OK, OK),
    ("GET", "/items/{id}/revisions"): Operation(
        "/items/{item}/revisions", NOT_FOUND, NOT_FOUND, addressed="item"
    ),
    ("POST", "/items/{id}/restore"): Operation(
        "/items/{item}/restore", NOT_FOUND, NOT_FOUND, addressed="item", body={"revision": 1}
    ),
    ("POST", "/download-tickets"): Operation(
        "/download-tickets", NOT_FOUND, NOT_FOUND, addressed="path", body={"path": "{path}"}
    ),
}
# A few operations, for PostgreSQL.
REDUCED = {
    ("GET", "/devices/{id}"),
    ("PUT", "/devices/{id}"),
    ("POST", "/conflicts/{id}/resolve"),
    ("GET", "/upload/{id}"),
    ("GET", "/download/{path:librarypath}"),
    ("GET", "/changes"),
    ("GET", "/items/{id}/revisions"),
}


def _routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app serves.

    FastAPI keeps an included router as one entry of `app.routes` that expands
    to its routes (with the prefix applied) through `effective_route_contexts`.
    """
    for route in app.routes:
        expand = getattr(route, "effective_route_contexts", None)
        for served in expand() if expand is not None else [route]:
            path, methods = getattr(served, "path", None), getattr(served, "methods", None)
            assert isinstance(path, str), f"a route of unknown shape: {served!r}"
            assert methods, f"a route of unknown shape: {served!r}"
            for method in sorted(methods):
                yield method, path


def _protected(app: FastAPI) -> list[tuple[str, str, str]]:
    """(method, prefix, tail) of every route that needs a token."""
    found = []
    for method, path in _routes(app):
        if (method, path) in PUBLIC:
            continue
        prefix = next((p for p in (*PREFIXES, LIBRARY) if path.startswith(p + "/")), None)
        assert prefix is not None, f"{method} {path}: a route outside the known prefixes"
        found.append((method, prefix, path.removeprefix(prefix)))
    return found


def _operations(app: FastAPI, database_url: str) -> list[tuple[str, str, Operation]]:
    full = database_url.startswith("sqlite")
    chosen = []
    for method, prefix, tail in _protected(app):
        if not full and ((method, tail) not in REDUCED or prefix == ALIAS):
            continue
        table = LIBRARY_OPERATIONS if prefix == LIBRARY else OPERATIONS
        operation = table.get((method, tail))
        assert operation is not None, (
            f"{method} {prefix}{tail} is not in the authorization matrix: add it to OPERATIONS"
        )
        chosen.append((method, prefix, operation))
    return chosen


def _call(
    world: World,
    method: str,
    prefix: str,
    operation: Operation,
    headers: dict[str, str],
    *,
    ids: dict[str, str] | None = None,
) -> httpx.Response:
    values = {**world.ids(), **(ids or {})}
    values["path"] = quote(values["path"], safe="/")
    url = prefix + operation.tail.format(**values)
    body = operation.body
    if body is not None:
        body = {k: v.format(**values) if isinstance(v, str) else v for k, v in body.items()}
    return world.client.request(
        method,
        url,
        headers=headers,
        json=body,
        content=operation.content,
        params=operation.query,
    )


def _assert_no_leak(world: World, response: httpx.Response, what: str) -> None:
    exposed = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    leaked = sorted(s for s in world.secrets if s in exposed)
    assert not leaked, f"{what}: {response.status_code} exposes {leaked}: {exposed}"


def _assert_problem(response: httpx.Response, expect: Expect, what: str) -> None:
    assert response.status_code == expect.status, f"{what}: {response.text}"
    if expect.code is None:
        return
    if response.request.method == "HEAD":
        assert response.content == b"", what
        return
    assert response.headers["content-type"] == "application/problem+json", what
    body = response.json()
    assert body["code"] == expect.code, f"{what}: {body}"
    assert body["status"] == expect.status, what


def _assert_alice_intact(world: World) -> None:
    """Nothing Bob tried changed Alice's data."""
    client, laptop = world.client, world.laptop_headers
    device = client.get(f"{V1}/devices/{world.laptop_id}", headers=world.alice.headers)
    assert device.status_code == 200, device.text
    assert device.json()["name"] == "alice-laptop-q7"
    assert device.json()["enabled"] is True
    session = client.get(f"{V1}/upload/{world.session_id}", headers=laptop)
    assert session.status_code == 200, session.text
    assert session.json()["status"] == "pending"
    assert session.json()["received"] == []
    [conflict] = client.get(f"{V1}/conflicts", headers=laptop).json()["conflicts"]
    assert conflict["id"] == world.conflict_id
    assert conflict["status"] == "unresolved"
    download = client.get(f"{V1}/download/{quote(ALICE_FILE)}", headers=laptop)
    assert download.status_code == 200, download.text
    assert download.content == ALICE_FILE_DATA


# -- the matrix ------------------------------------------------------------------


def test_every_route_is_public_by_name_or_in_the_matrix(app: FastAPI) -> None:
    protected = _protected(app)
    assert {(m, t) for m, p, t in protected if p != LIBRARY} == set(OPERATIONS)
    assert {(m, t) for m, p, t in protected if p == LIBRARY} == set(LIBRARY_OPERATIONS)
    # Every sync operation answers at both prefixes.
    assert {(m, p, t) for m, p, t in protected if p != LIBRARY} == {
        (m, p, t) for m, t in OPERATIONS for p in PREFIXES
    }
    # The documented operations are exactly the routes (the alias is undocumented).
    schema = app.openapi()
    documented = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method.upper() in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}
    }
    routed = {(m, p.replace("{path:librarypath}", "{path}")) for m, p in _routes(app)}
    assert documented <= routed
    assert {(m, V1 + t.replace("{path:librarypath}", "{path}")) for m, t in OPERATIONS} <= (
        documented
    )
    assert {(m, LIBRARY + t) for m, t in LIBRARY_OPERATIONS} <= documented


@pytest.mark.parametrize("kind", REFUSED)
def test_refused_credentials_get_401_everywhere(
    app: FastAPI, world: World, database_url: str, kind: str
) -> None:
    headers = _forged(world, kind)
    operations = _operations(app, database_url)
    assert operations
    for method, prefix, operation in operations:
        what = f"{kind}: {method} {prefix}{operation.tail}"
        response = _call(world, method, prefix, operation, headers)
        _assert_problem(response, Expect(401, "unauthorized"), what)
        assert response.headers["www-authenticate"].startswith("Bearer"), what
        _assert_no_leak(world, response, what)
    _assert_alice_intact(world)


@pytest.mark.parametrize("kind", FOREIGN)
def test_another_users_tokens_get_nothing_of_alices(
    app: FastAPI, world: World, database_url: str, kind: str
) -> None:
    headers = _foreign(world, kind)
    for method, prefix, operation in _operations(app, database_url):
        what = f"{kind}: {method} {prefix}{operation.tail}"
        if kind == "other_user_claiming_victims_device":
            expect = FORBIDDEN
        elif kind == "other_user":
            expect = operation.as_user
        else:
            expect = operation.as_device
        response = _call(world, method, prefix, operation, headers)
        _assert_problem(response, expect, what)
        _assert_no_leak(world, response, what)
        if operation.addressed is None or (expect is FORBIDDEN and operation.addressed != "device"):
            continue
        # Another user's and one that does not exist: the same answer, except
        # that section 5 answers 403 for another user's device and 404 for none.
        unknown = {operation.addressed: str(uuid.uuid4())}
        if operation.addressed == "path":
            unknown["path"] = "private/nothing-here.txt"
        missing = _call(world, method, prefix, operation, headers, ids=unknown)
        if kind == "other_user_claiming_victims_device":
            _assert_problem(missing, FORBIDDEN, what + " (unknown)")
        elif operation.addressed == "device":
            assert response.status_code == 403, what
            _assert_problem(missing, NOT_FOUND, what + " (unknown)")
        else:
            assert missing.status_code == response.status_code, what
            assert missing.headers.get("content-type") == response.headers.get("content-type")
            if method != "HEAD":
                theirs, nobodys = response.json(), missing.json()
                assert theirs == nobodys, what
        assert missing.headers.keys() == response.headers.keys(), what
        _assert_no_leak(world, missing, what + " (unknown)")
    _assert_alice_intact(world)


def test_foreign_cursors_and_content_are_not_alices(world: World) -> None:
    """Alice's cursor is an invalid cursor for Bob; her content is not his."""
    client = world.client
    # The leak detector itself: it does flag Alice's own data.
    own = client.get(f"{V1}/devices/{world.laptop_id}", headers=world.alice.headers)
    with pytest.raises(AssertionError, match="exposes"):
        _assert_no_leak(world, own, "self-check")
    cursor = client.get(f"{V1}/changes", headers=world.laptop_headers).json()["cursor"]
    for response in (
        client.get(f"{V1}/changes", params={"cursor": cursor}, headers=world.bob_device),
        client.post(f"{V1}/ack", json={"cursor": cursor}, headers=world.bob_device),
    ):
        _assert_problem(response, Expect(400, "invalid_cursor"), response.request.url.path)
        _assert_no_leak(world, response, response.request.url.path)
    # Content is never shared across users: naming Alice's hash gets Bob nothing.
    alices = {"content_hash": hash_bytes(ALICE_FILE_DATA), "size": len(ALICE_FILE_DATA)}
    change = {"op": "upsert", "path": "bob/mine.txt", "base_revision": None, **alices}
    report = client.post(f"{V1}/report", json={"changes": [change]}, headers=world.bob_device)
    assert report.status_code == 200, report.text
    assert report.json()["results"][0]["status"] == "upload_required"
    session = client.post(
        f"{V1}/upload",
        json={"path": "bob/mine.txt", "base_revision": None, **alices},
        headers=world.bob_device,
    )
    assert session.status_code == 200, session.text
    assert session.json()["received"] == []


def test_revoked_device_tokens_cannot_be_exchanged(
    app: FastAPI, client: TestClient, alice: Account
) -> None:
    tokens = {}
    for how in ("deleted", "disabled", "rotated"):
        device_id, token, _ = _register(client, alice.headers, how)
        tokens[how] = token
        if how == "deleted":
            client.delete(f"{V1}/devices/{device_id}", headers=alice.headers)
        elif how == "disabled":
            client.put(f"{V1}/devices/{device_id}", json={"enabled": False}, headers=alice.headers)
        else:
            client.post(f"{V1}/devices/{device_id}/token", headers=alice.headers)
    for how, token in tokens.items():
        answer = client.post("/api/v1/auth/device", json={"device_token": token})
        assert answer.status_code == 401, how
        assert answer.json()["code"] == "unauthorized"


# -- timing ------------------------------------------------------------------------

TIMED = [
    ("GET", ("GET", "/devices/{id}")),
    ("PUT", ("PUT", "/devices/{id}")),
    ("POST", ("POST", "/conflicts/{id}/resolve")),
    ("GET", ("GET", "/upload/{id}")),
    ("GET", ("GET", "/download/{path:librarypath}")),
]
ROUNDS = 30


def _medians_ms(*calls: Callable[[], httpx.Response]) -> list[float]:
    """The median time of each call over ROUNDS, interleaved so drift hits all alike."""
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(ROUNDS):
        for call, spent in zip(calls, times, strict=True):
            started = time.perf_counter()
            call()
            spent.append((time.perf_counter() - started) * 1000)
    return [statistics.median(spent) for spent in times]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_not_yours_and_does_not_exist_take_similar_time(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = []
    for method, key in TIMED:
        operation = OPERATIONS[key]
        assert operation.addressed is not None
        unknown = {operation.addressed: str(uuid.uuid4())}
        if operation.addressed == "path":
            unknown["path"] = "private/nothing-here.txt"

        def theirs(op: Operation = operation, m: str = method) -> httpx.Response:
            return _call(world, m, V1, op, world.bob_device)

        def nobodys(
            op: Operation = operation, m: str = method, ids: dict[str, str] = unknown
        ) -> httpx.Response:
            return _call(world, m, V1, op, world.bob_device, ids=ids)

        theirs(), nobodys()  # warm up
        mine, none = _medians_ms(theirs, nobodys)
        figures.append(f"{method} {key[1]}: another user's {mine:.2f} ms, unknown {none:.2f} ms")
        assert mine <= 3 * none + 5, figures[-1]
        assert none <= 3 * mine + 5, figures[-1]
    with capsys.disabled():
        print("\n" + "\n".join(figures))
    _assert_alice_intact(world)
