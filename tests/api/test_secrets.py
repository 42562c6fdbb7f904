"""Secrets stay secret: the signing key's mode, hashed tokens at rest, clean logs."""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.content_hash import EMPTY_HASH
from shelfsync.server.services.tokens import hash_opaque
from shelfsync.server.settings import Settings
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.tables import devices, metadata, refresh_tokens

V1 = "/api/v1/sync"
PASSWORD = "Tr0ub4dor&3-very-secret-pässword"
WRONG_PASSWORDS = ("Tr0ub4dor&3-wrong-guess", "another-wrong-guess-9f2", "x" * 2000)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Session:
    """Every secret handed out while driving the API as a client does."""

    passwords: list[str] = field(default_factory=lambda: [PASSWORD, *WRONG_PASSWORDS])
    access_tokens: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)
    device_tokens: list[str] = field(default_factory=list)

    @property
    def opaque_tokens(self) -> list[str]:
        return self.refresh_tokens + self.device_tokens

    @property
    def everything(self) -> list[str]:
        return self.passwords + self.access_tokens + self.opaque_tokens


def _drive(app: FastAPI, client: TestClient) -> Session:
    """Log in, fail to, refresh, register and exchange devices, sync a little."""
    seen = Session()
    app.state.services.accounts.add_user(username="carol", password=PASSWORD)
    for username, password in (
        ("carol", WRONG_PASSWORDS[0]),
        ("nobody-here", WRONG_PASSWORDS[1]),
        ("carol", WRONG_PASSWORDS[2]),
    ):
        failed = client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert failed.status_code in (400, 401), failed.text
    login = client.post("/api/v1/auth/login", json={"username": "carol", "password": PASSWORD})
    assert login.status_code == 200, login.text
    seen.access_tokens.append(login.json()["access_token"])
    seen.refresh_tokens.append(login.json()["refresh_token"])

    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": seen.refresh_tokens[-1]})
    assert refreshed.status_code == 200, refreshed.text
    seen.access_tokens.append(refreshed.json()["access_token"])
    seen.refresh_tokens.append(refreshed.json()["refresh_token"])
    # A spent refresh token presented again: refused (and its chain revoked).
    reused = client.post("/api/v1/auth/refresh", json={"refresh_token": seen.refresh_tokens[0]})
    assert reused.status_code == 401, reused.text
    user = _bearer(seen.access_tokens[-1])

    created = client.post(f"{V1}/devices", json={"name": "laptop"}, headers=user)
    assert created.status_code == 200, created.text
    device_id = created.json()["device"]["id"]
    seen.device_tokens.append(created.json()["token"])
    rotated = client.post(f"{V1}/devices/{device_id}/token", headers=user)
    assert rotated.status_code == 200, rotated.text
    seen.device_tokens.append(rotated.json()["token"])
    stale = client.post("/api/v1/auth/device", json={"device_token": seen.device_tokens[0]})
    assert stale.status_code == 401, stale.text
    granted = client.post("/api/v1/auth/device", json={"device_token": seen.device_tokens[-1]})
    assert granted.status_code == 200, granted.text
    seen.access_tokens.append(granted.json()["access_token"])
    device = _bearer(seen.access_tokens[-1])

    change = {
        "op": "upsert",
        "path": "notes/empty.txt",
        "content_hash": EMPTY_HASH,
        "size": 0,
        "base_revision": None,
    }
    for method, url, body, headers in (
        ("POST", f"{V1}/report", {"changes": [change]}, device),
        ("GET", f"{V1}/changes", None, device),
        ("GET", f"{V1}/devices", None, user),
        ("GET", f"{V1}/conflicts", None, device),
        ("GET", f"{V1}/download/notes/empty.txt", None, device),
        ("GET", f"{V1}/devices/{device_id}", None, user),
    ):
        answer = client.request(method, url, json=body, headers=headers)
        assert answer.status_code == 200, answer.text
    # Refused tokens are not logged either.
    for token in (seen.refresh_tokens[0], seen.device_tokens[0], seen.access_tokens[0] + "x"):
        refused = client.get(f"{V1}/devices", headers=_bearer(token))
        assert refused.status_code == 401, refused.text
    return seen


def test_signing_secret_is_owner_only(app: FastAPI, settings: Settings) -> None:
    mode = stat.S_IMODE(settings.secret_path.stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert len(bytes.fromhex(settings.secret_path.read_text().strip())) >= 32


def test_tokens_and_passwords_are_stored_only_hashed(
    app: FastAPI, client: TestClient, db: Database
) -> None:
    seen = _drive(app, client)
    with db.read() as conn:
        stored_hashes = {
            row.token_hash
            for table in (devices, refresh_tokens)
            for row in conn.execute(sa.select(table.c.token_hash))
        }
        # Every value of every table, as text: none holds a raw secret.
        dumped = [
            f"{table.name}.{column}={value}"
            for table in metadata.sorted_tables
            for row in conn.execute(sa.select(table))
            for column, value in row._mapping.items()
            if value is not None
        ]
    assert dumped
    for secret in seen.everything:
        holding = [value for value in dumped if secret in value]
        assert not holding, f"a raw secret is stored: {holding}"
    # What is stored is the token's digest (a rotated device token's is replaced).
    current = [*seen.refresh_tokens, seen.device_tokens[-1]]
    assert {hash_opaque(token) for token in current} <= stored_hashes
    assert hash_opaque(seen.device_tokens[0]) not in stored_hashes


def test_no_password_or_token_reaches_the_logs(
    app: FastAPI, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert logging.getLogger().level == logging.DEBUG
    seen = _drive(app, client)
    assert caplog.records, "nothing was logged: the capture is not working"
    formatter = logging.Formatter()
    for record in caplog.records:
        parts = [str(record.msg), repr(record.args), record.getMessage()]
        if record.exc_info:
            parts.append(formatter.formatException(record.exc_info))
        # Extra fields a handler might print.
        parts.extend(repr(value) for value in vars(record).values())
        text = "\n".join(parts)
        for secret in seen.everything:
            assert secret not in text, f"{record.name} logged a secret: {record.getMessage()}"
