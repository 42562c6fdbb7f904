"""Long-polling the change feed (protocol section 6) against a real server on loopback.

A reader holds `GET /sync/changes?wait=` open; a writer on another connection
reports a change; the held request must answer within a second of the commit,
carrying the change. The server is uvicorn in a background thread, so the wait
and the wake-up go through real sockets and the real event loop.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from shelfsync.server.domain.clock import utcnow
from shelfsync.server.storage.contents import ContentRepository
from tests.api.conftest import PASSWORD

CHANGES = "/api/v1/sync/changes"
CONTENT_HASH = hashlib.sha256(b"chapter one").hexdigest()
CONTENT_SIZE = 11
# The protocol's promise: a held request answers within a second of the commit.
WAKE_BUDGET_S = 1.0


@dataclass(frozen=True)
class LiveLibrary:
    base_url: str
    writer: dict[str, str]  # headers of a device-bound access token
    reader: dict[str, str]


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """The app served by uvicorn on a loopback port of its own, for this test only."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            assert time.monotonic() < deadline, "the server did not start in time"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
    assert not thread.is_alive(), "the server did not stop"


def _device_headers(
    client: httpx.Client, user_headers: dict[str, str], name: str
) -> dict[str, str]:
    created = client.post("/api/v1/sync/devices", json={"name": name}, headers=user_headers)
    assert created.status_code == 200, created.text
    grant = client.post("/api/v1/auth/device", json={"device_token": created.json()["token"]})
    assert grant.status_code == 200, grant.text
    return {"Authorization": f"Bearer {grant.json()['access_token']}"}


@pytest.fixture
def library(app: FastAPI, live_server: str) -> LiveLibrary:
    services = app.state.services
    user = services.accounts.add_user(username="alice", password=PASSWORD)
    with services.db.write() as tx:
        # The content is already stored for alice: reporting it needs no upload.
        ContentRepository(tx).add(
            user_id=user.id, content_hash=CONTENT_HASH, size=CONTENT_SIZE, now=utcnow()
        )
    with httpx.Client(base_url=live_server, timeout=10) as client:
        login = client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
        assert login.status_code == 200, login.text
        user_headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        writer = _device_headers(client, user_headers, "laptop")
        reader = _device_headers(client, user_headers, "phone")
    return LiveLibrary(live_server, writer, reader)


def _upsert(path: str) -> dict[str, Any]:
    return {
        "changes": [
            {
                "op": "upsert",
                "path": path,
                "content_hash": CONTENT_HASH,
                "size": CONTENT_SIZE,
                "base_revision": None,
            }
        ]
    }


def _position(client: httpx.Client, headers: dict[str, str]) -> str:
    response = client.get(CHANGES, params={"cursor": "latest"}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["changes"] == []
    assert body["has_more"] is False
    return str(body["cursor"])


@pytest.mark.parametrize("form", ["position", "latest"])
def test_held_request_answers_within_a_second_of_the_commit(
    library: LiveLibrary, form: str
) -> None:
    with (
        httpx.Client(base_url=library.base_url, timeout=30) as reader,
        httpx.Client(base_url=library.base_url, timeout=30) as writer,
    ):
        # `latest` itself, or the position it stands for: both wait for what comes next.
        cursor = _position(reader, library.reader) if form == "position" else "latest"

        def poll() -> tuple[float, float, httpx.Response]:
            started = time.monotonic()
            response = reader.get(
                CHANGES, params={"cursor": cursor, "wait": 10}, headers=library.reader
            )
            return started, time.monotonic(), response

        with ThreadPoolExecutor(max_workers=1) as pool:
            held = pool.submit(poll)
            time.sleep(0.5)
            assert not held.done(), "the long-poll answered before there was anything new"
            sent_at = time.monotonic()
            report = writer.post(
                "/api/v1/sync/report", json=_upsert("Books/Dune.epub"), headers=library.writer
            )
            committed_by = time.monotonic()
            started, answered_at, response = held.result(timeout=15)

    assert report.status_code == 200, report.text
    (result,) = report.json()["results"]
    assert result["status"] == "applied"
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(c["id"], c["path"], c["seq"], c["op"]) for c in body["changes"]] == [
        (result["id"], "Books/Dune.epub", result["seq"], "upsert")
    ]
    assert body["latest_seq"] == result["seq"]
    # The commit happened after the report was sent: this bounds the wake-up from above.
    latency_s = answered_at - sent_at
    print(
        f"long-poll ({form}) answered {latency_s * 1000:.1f} ms after the report was sent "
        f"({(answered_at - committed_by) * 1000:+.1f} ms after its 200), "
        f"held {answered_at - started:.2f} s"
    )
    assert latency_s < WAKE_BUDGET_S
    assert answered_at - started >= 0.45, "the request was held until the change"


def test_wait_that_times_out_answers_nothing_new_at_the_same_position(
    library: LiveLibrary,
) -> None:
    with httpx.Client(base_url=library.base_url, timeout=30) as client:
        cursor = _position(client, library.reader)
        started = time.monotonic()
        response = client.get(CHANGES, params={"cursor": cursor, "wait": 1}, headers=library.reader)
        elapsed_s = time.monotonic() - started
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["changes"] == []
    assert body["has_more"] is False
    assert body["cursor"] == cursor
    assert 0.9 <= elapsed_s < 3


def test_wait_is_bounded_to_zero_to_fifty_five_seconds(library: LiveLibrary) -> None:
    with httpx.Client(base_url=library.base_url, timeout=30) as client:
        for wait in ("56", "-1", "55.5", "soon"):
            response = client.get(CHANGES, params={"wait": wait}, headers=library.reader)
            assert response.status_code == 400, (wait, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            problem = response.json()
            assert problem["code"] == "invalid_request"
            assert "wait" in problem["detail"]
        cursor = _position(client, library.reader)
        report = client.post(
            "/api/v1/sync/report", json=_upsert("Music/song.flac"), headers=library.writer
        )
        assert report.status_code == 200, report.text
        for wait in ("0", "55"):
            # Both ends are accepted; with a change pending nothing is held.
            started = time.monotonic()
            response = client.get(
                CHANGES, params={"cursor": cursor, "wait": wait}, headers=library.reader
            )
            elapsed_s = time.monotonic() - started
            assert response.status_code == 200, response.text
            assert [c["path"] for c in response.json()["changes"]] == ["Music/song.flac"]
            assert elapsed_s < 5, "a wait with changes pending must not be held"


def test_a_long_poll_whose_client_hangs_up_is_released_at_once(
    app: FastAPI, library: LiveLibrary
) -> None:
    notifier = app.state.services.feed._notifier
    host, port = library.base_url.removeprefix("http://").split(":")
    token = library.reader["Authorization"]
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(
            (
                f"GET {CHANGES}?cursor=latest&wait=30 HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: {token}\r\n\r\n"
            ).encode()
        )
        deadline = time.monotonic() + 5
        while notifier.waiting() == 0:
            assert time.monotonic() < deadline, "the long-poll never started waiting"
            time.sleep(0.02)
    hung_up = time.monotonic()

    while notifier.waiting() > 0:
        assert time.monotonic() - hung_up < WAKE_BUDGET_S, "the abandoned poll is still held"
        time.sleep(0.02)
