"""Drive the sync API the way a client does: users, devices, content, reports, feed.

A test builds a `SyncDriver` from the `app` and `client` fixtures. Users are
made in the store and given an access token signed with the server's own key
(logging in costs an argon2 verification, which the auth tests cover); devices
are registered over HTTP and authenticate with their device token, so every
request under test goes through the real routes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.content_hash import EMPTY_HASH, hash_bytes
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.services.cursors import Cursor, CursorCodec
from shelfsync.server.services.tokens import TokenIssuer
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.secret_file import load_or_create_secret
from shelfsync.server.storage.tables import devices
from shelfsync.server.storage.users import UserRepository

__all__ = [
    "EMPTY",
    "PREFIXES",
    "Blob",
    "SyncDevice",
    "SyncDriver",
    "SyncUser",
    "blob",
    "delete",
    "move",
    "upsert",
]

PREFIXES = ["/api/v1/sync", "/api/sync"]

Json = dict[str, Any]


@dataclass(frozen=True)
class Blob:
    """Some content, as a report names it."""

    content_hash: str
    size: int


EMPTY = Blob(EMPTY_HASH, 0)


def blob(data: bytes) -> Blob:
    return Blob(hash_bytes(data), len(data))


def upsert(path: str, content: Blob, *, base: int | None = None, **extra: Any) -> Json:
    return {
        "op": "upsert",
        "path": path,
        "content_hash": content.content_hash,
        "size": content.size,
        "base_revision": base,
        **extra,
    }


def delete(path: str, *, base: int | None) -> Json:
    return {"op": "delete", "path": path, "base_revision": base}


def move(path: str, to_path: str, *, base: int | None) -> Json:
    return {"op": "move", "path": path, "to_path": to_path, "base_revision": base}


@dataclass
class SyncUser:
    driver: SyncDriver
    id: str
    name: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def give(self, data: bytes) -> Blob:
        """Put content in this user's store, as a finished upload would."""
        content = blob(data)
        with self.driver.services.db.write() as tx:
            ContentRepository(tx).add(
                user_id=self.id, content_hash=content.content_hash, size=content.size, now=utcnow()
            )
        return content

    def device(self, name: str = "laptop", **body: Any) -> SyncDevice:
        return self.driver.device(self, name, **body)


@dataclass
class SyncDevice:
    driver: SyncDriver
    user: SyncUser
    id: str
    name: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    @property
    def client(self) -> TestClient:
        return self.driver.client

    def url(self, tail: str) -> str:
        return f"{self.driver.prefix}{tail}"

    # -- report --------------------------------------------------------------

    def post_report(self, changes: list[Json]) -> httpx.Response:
        return self.client.post(
            self.url("/report"), json={"changes": changes}, headers=self.headers
        )

    def report(self, *changes: Json) -> list[Json]:
        response = self.post_report(list(changes))
        assert response.status_code == 200, response.text
        results: list[Json] = response.json()["results"]
        assert len(results) == len(changes)
        return results

    def report_one(self, change: Json) -> Json:
        return self.report(change)[0]

    def applied(self, change: Json) -> Json:
        result = self.report_one(change)
        assert result["status"] == "applied", result
        return result

    # -- feed ----------------------------------------------------------------

    def get_changes(self, **params: Any) -> httpx.Response:
        return self.client.get(self.url("/changes"), params=params, headers=self.headers)

    def changes(self, **params: Any) -> Json:
        response = self.get_changes(**params)
        assert response.status_code == 200, response.text
        page: Json = response.json()
        return page

    def read_all(self, cursor: str | None = None, *, limit: int = 1000) -> tuple[list[Json], str]:
        """Every page from `cursor` on; returns the changes and the final cursor."""
        found: list[Json] = []
        while True:
            params: Json = {"limit": limit}
            if cursor is not None:
                params["cursor"] = cursor
            page = self.changes(**params)
            found.extend(page["changes"])
            cursor = page["cursor"]
            if not page["has_more"]:
                return found, cursor

    def post_ack(self, cursor: str) -> httpx.Response:
        return self.client.post(self.url("/ack"), json={"cursor": cursor}, headers=self.headers)

    def ack(self, cursor: str) -> Json:
        response = self.post_ack(cursor)
        assert response.status_code == 200, response.text
        body: Json = response.json()
        return body

    # -- conflicts -------------------------------------------------------------

    def conflicts(self) -> list[Json]:
        response = self.client.get(self.url("/conflicts"), headers=self.headers)
        assert response.status_code == 200, response.text
        found: list[Json] = response.json()["conflicts"]
        return found

    def post_resolve(self, conflict_id: str, resolution: str, **extra: Any) -> httpx.Response:
        return self.client.post(
            self.url(f"/conflicts/{conflict_id}/resolve"),
            json={"resolution": resolution, **extra},
            headers=self.headers,
        )

    def resolve(self, conflict_id: str, resolution: str, **extra: Any) -> Json:
        response = self.post_resolve(conflict_id, resolution, **extra)
        assert response.status_code == 200, response.text
        body: Json = response.json()
        return body

    # -- status ----------------------------------------------------------------

    def status(self) -> Json:
        response = self.client.get(self.url(f"/devices/{self.id}"), headers=self.user.headers)
        assert response.status_code == 200, response.text
        body: Json = response.json()
        return body

    def set_columns(self, **values: Any) -> None:
        """Change the stored device directly (e.g. when it was last seen)."""
        with self.driver.services.db.write() as tx:
            tx.execute(sa.update(devices).where(devices.c.id == self.id).values(**values))


class SyncDriver:
    def __init__(self, app: FastAPI, client: TestClient, *, prefix: str = PREFIXES[0]) -> None:
        self.app = app
        self.client = client
        self.prefix = prefix
        self.services = app.state.services
        self._secret = load_or_create_secret(app.state.settings.secret_path)
        self._tokens = TokenIssuer(secret=self._secret, access_ttl_s=3600)

    def user(self, name: str = "alice") -> SyncUser:
        with self.services.db.write() as tx:
            user = UserRepository(tx).add(
                user_id=str(uuid.uuid4()), username=name, password_hash="!", now=utcnow()
            )
        token = self._tokens.issue_access(user_id=user.id, user_generation=1, now=utcnow())
        return SyncUser(self, user.id, name, token)

    def adopt(self, username: str, access_token: str) -> SyncUser:
        """A user made by the `make_user` fixture (logged in over HTTP)."""
        with self.services.db.read() as tx:
            user = UserRepository(tx).by_username(username)
        assert user is not None
        return SyncUser(self, user.id, username, access_token)

    def device(self, user: SyncUser, name: str = "laptop", **body: Any) -> SyncDevice:
        created = self.client.post(
            f"{self.prefix}/devices", json={"name": name, **body}, headers=user.headers
        )
        assert created.status_code == 200, created.text
        granted = self.client.post(
            "/api/v1/auth/device", json={"device_token": created.json()["token"]}
        )
        assert granted.status_code == 200, granted.text
        grant = granted.json()
        return SyncDevice(self, user, grant["device_id"], name, grant["access_token"])

    def cursor_for(self, user: SyncUser, seq: int, *, snapshot_seq: int = 0) -> str:
        """A genuine cursor (signed by this server) at any position."""
        return CursorCodec(self._secret).encode(Cursor(user.id, seq, snapshot_seq=snapshot_seq))

    def retention(self, now: datetime) -> None:
        self.services.retention.run_once(now=now)
