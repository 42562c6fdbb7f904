"""API fixtures: the real app on each database, driven in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.server.app import build_services, create_app
from shelfsync.server.settings import Settings
from shelfsync.server.storage.engine import Database

PASSWORD = "correct horse battery"


# Real argon2id, at a cost that keeps hundreds of logins quick.
FAST_HASHING = {"argon2_time_cost": 1, "argon2_memory_kib": 8192}


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, **FAST_HASHING)


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    return create_app(settings, db=db)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@dataclass
class Account:
    username: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@pytest.fixture
def make_user(app: FastAPI, client: TestClient) -> Callable[[str], Account]:
    """Create a user through the operator service and log in over HTTP."""

    def make(username: str) -> Account:
        app.state.services.accounts.add_user(username=username, password=PASSWORD)
        response = client.post(
            "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return Account(username, PASSWORD, body["access_token"], body["refresh_token"])

    return make


@pytest.fixture
def alice(make_user: Callable[[str], Account]) -> Account:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[[str], Account]) -> Account:
    return make_user("bob")


__all__ = ["FAST_HASHING", "PASSWORD", "Account", "build_services"]
