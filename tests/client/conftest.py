"""The real app in process (its ASGI transport) for client tests, with one user
whose devices `make_api` registers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from shelfsync.client.http import ApiClient, RetryPolicy
from shelfsync.server.app import create_app
from shelfsync.server.settings import Settings
from shelfsync.server.storage.engine import Database

PASSWORD = "correct horse battery"


@pytest.fixture
def server(tmp_path: Path, db: Database, database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "server",
        database_url=database_url,
        argon2_time_cost=1,
        argon2_memory_kib=8192,
    )
    app = create_app(settings, db=db)
    app.state.services.accounts.add_user(username="alice", password=PASSWORD)
    with TestClient(app) as client:
        yield client


class _InProcess(httpx.BaseTransport):
    """The TestClient's ASGI transport, answers read whole (httpx.Client wants sync streams)."""

    def __init__(self, client: TestClient) -> None:
        self._inner = client._transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        content = response.read()
        return httpx.Response(response.status_code, headers=response.headers, content=content)


@pytest.fixture
def make_api(server: TestClient) -> Iterator[Callable[[str], ApiClient]]:
    made: list[ApiClient] = []

    def make(name: str) -> ApiClient:
        login = server.post(
            "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
        ).json()
        device = server.post(
            "/api/v1/sync/devices",
            json={"name": name},
            headers={"Authorization": f"Bearer {login['access_token']}"},
        ).json()
        api = ApiClient(
            "http://testserver",
            device_token=device["token"],
            transport=_InProcess(server),
            retry=RetryPolicy(attempts=2, first_delay_s=0.01),
        )
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()
