"""Uploads survive `kill -9` of a real server process (protocol section 9).

A real `shelfsync serve` runs on loopback over one data directory; it is
killed with SIGKILL while chunk PUTs are in flight, or just around `complete`,
and started again on the same data. Afterwards:

- a session's `received` is exact: every chunk that got a 200 is listed, every
  listed chunk was fully and correctly stored (the final content, built without
  re-sending them, equals the original byte for byte), and the others are simply
  sent again;
- `complete` succeeds exactly once: repeated calls answer the same item,
  revision and seq, and the feed holds one revision per path;
- the object file is whole (its content hash is right), no session file is
  left behind, and no `contents` row points at a missing file.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from shelfsync.content_hash import hash_bytes, hash_file
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.storage.blobs import BlobStore
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.tables import content_data, contents, upload_chunks
from tests.conftest import create_pg_database, drop_pg_database
from tests.e2e.harness import free_port, server_env

pytestmark = pytest.mark.e2e

SHELFSYNC = str(Path(sys.executable).with_name("shelfsync"))
PASSWORD = "correct horse battery"
MIB = 1024 * 1024
CHUNK = 4 * MIB
START_TIMEOUT_S = 30.0

Json = dict[str, Any]


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Node:
    """One data directory and database, served by a process that can be killed."""

    data_dir: Path
    database_url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    base_url: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--database-url", self.database_url]

    @property
    def blobs(self) -> BlobStore:
        return BlobStore(self.data_dir / "content")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [SHELFSYNC, "serve", "--port", str(port), "--log-level", "warning", *self.target],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"server not healthy after {START_TIMEOUT_S}s:\n{self.log()}")

    def kill(self) -> None:
        """kill -9: no shutdown handler, no flush, no goodbye."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        assert self.process.returncode == -signal.SIGKILL

    def sign_in(self) -> None:
        """Add alice with the CLI, register a device, act as that device."""
        added = subprocess.run(
            [SHELFSYNC, "user", "add", "alice", "--password-stdin", *self.target],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            env=server_env(),
            timeout=60,
            check=False,
        )
        assert added.returncode == 0, added.stderr
        with self.http() as http:
            login = http.post(
                "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            user = {"Authorization": f"Bearer {login.json()['access_token']}"}
            created = http.post("/api/v1/sync/devices", json={"name": "laptop"}, headers=user)
            assert created.status_code == 200, created.text
            device = http.post(
                "/api/v1/auth/device", json={"device_token": created.json()["token"]}
            )
            assert device.status_code == 200, device.text
        self.headers = {"Authorization": f"Bearer {device.json()['access_token']}"}

    def http(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)

    def create(self, http: httpx.Client, path: str, data: bytes) -> Json:
        response = http.post(
            "/api/v1/sync/upload",
            json={
                "path": path,
                "size": len(data),
                "content_hash": hash_bytes(data),
                "base_revision": None,
                "chunk_size": CHUNK,
            },
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def check_store(self) -> set[str]:
        """No contents row points at missing or damaged bytes (its file, or for
        small content its row in the database); answers the hashes."""
        db = Database(self.database_url)
        try:
            with db.read() as tx:
                hashes = {str(r[0]) for r in tx.execute(sa.select(contents.c.content_hash))}
                inline = {str(h): bytes(d) for h, d in tx.execute(sa.select(content_data))}
        finally:
            db.dispose()
        blobs = self.blobs
        for content_hash in hashes:
            if content_hash in inline:
                assert hash_bytes(inline[content_hash]) == content_hash
                continue
            path = blobs.object_path(content_hash)
            assert path.is_file(), f"contents row {content_hash} has no file"
            assert hash_file(path) == content_hash
        return hashes


@pytest.fixture
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    pg_name = None
    if request.param == "postgresql":
        pg_name = create_pg_database(template=request.getfixturevalue("pg_template"))
        url = f"{request.getfixturevalue('pg_admin_base')}/{pg_name}"
    else:
        url = f"sqlite:///{tmp_path / 'shelfsync.db'}"
    server = Node(tmp_path / "data", url, tmp_path / "server.log")
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()
        if pg_name is not None:
            drop_pg_database(pg_name)


@pytest.fixture(scope="session")
def pg_admin_base() -> str:
    from tests.conftest import PG_ADMIN_URL

    return PG_ADMIN_URL.rsplit("/", 1)[0]


def _slow_body(
    data: bytes,
    *,
    pause: float,
    halfway: threading.Event,
    sent: threading.Event,
    hold: threading.Event | None = None,
) -> Iterator[bytes]:
    """A chunk body trickled out in 64 KiB pieces (chunked transfer encoding);
    with `hold`, it stops halfway until `hold` is set, then ends short."""
    pieces = [data[i : i + 64 * 1024] for i in range(0, len(data), 64 * 1024)]
    for n, piece in enumerate(pieces):
        if n == len(pieces) // 2:
            halfway.set()
            if hold is not None:
                hold.wait(timeout=60)
                return
        yield piece
        time.sleep(pause)
    sent.set()


@pytest.mark.parametrize("node", ["sqlite", "postgresql"], indirect=True)
def test_kill_9_while_chunks_are_in_flight(node: Node) -> None:
    node.start()
    node.sign_in()
    data = payload(40 * MIB - 1000, seed=1)
    with node.http() as http:
        session = node.create(http, "media/film.mkv", data)
        assert (session["chunk_size"], session["chunk_count"]) == (CHUNK, 10)
        for index in (0, 1):
            put = http.put(
                f"/api/v1/sync/upload/{session['id']}/chunks/{index}",
                content=data[index * CHUNK : (index + 1) * CHUNK],
            )
            assert put.status_code == 200, put.text

    # Chunks 2-5 go at once, 6-7 trickle, 8-9 stop halfway; the server dies
    # when the first trickling one is acknowledged and 8-9 are half-sent: some
    # PUTs are done, some maybe being written or committed, some half-sent.
    pauses = {2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.005, 7: 0.005, 8: 0.01, 9: 0.01}
    held = {8, 9}
    killed = threading.Event()
    acked: dict[int, httpx.Response] = {}
    halfway = {i: threading.Event() for i in pauses}
    sent = {i: threading.Event() for i in pauses}
    trickled_ack = threading.Event()
    lock = threading.Lock()

    def send(index: int) -> None:
        chunk = data[index * CHUNK : (index + 1) * CHUNK]
        body: Any = chunk
        if pauses[index]:
            body = _slow_body(
                chunk,
                pause=pauses[index],
                halfway=halfway[index],
                sent=sent[index],
                hold=killed if index in held else None,
            )
        else:
            halfway[index].set()
            sent[index].set()
        try:
            with node.http(timeout=60) as http:
                response = http.put(
                    f"/api/v1/sync/upload/{session['id']}/chunks/{index}", content=body
                )
        except httpx.TransportError:
            return  # the server died under it
        with lock:
            acked[index] = response
        if pauses[index] and response.status_code == 200:
            trickled_ack.set()

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in pauses]
    for thread in threads:
        thread.start()
    assert trickled_ack.wait(timeout=30), node.log()
    assert all(halfway[i].wait(timeout=30) for i in held)
    node.kill()
    killed.set()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert all(r.status_code == 200 for r in acked.values()), [r.text for r in acked.values()]
    assert acked.keys() & {6, 7}
    half_sent = {i for i in pauses if not sent[i].is_set()}
    assert held <= half_sent

    node.start()
    with node.http() as http:
        status = http.get(f"/api/v1/sync/upload/{session['id']}")
        assert status.status_code == 200, status.text
        received = set(status.json()["received"])
        assert status.json()["status"] == "pending"
        # Every 200 was durable; nothing half-sent counts.
        assert received >= {0, 1} | set(acked), (received, set(acked))
        assert not received & half_sent, (received, half_sent)
        missing = sorted(set(range(10)) - received)
        assert missing

        if node.database_url.startswith("postgresql"):
            # PostgreSQL may serve several processes: a dead request's claim on a
            # chunk holds until it goes stale (30 s without a refresh). Until
            # then the chunk answers 409; age the claims instead of waiting.
            claimed = _claimed(node, session["id"])
            assert claimed <= set(missing)
            for index in claimed:
                busy = http.put(
                    f"/api/v1/sync/upload/{session['id']}/chunks/{index}",
                    content=data[index * CHUNK : (index + 1) * CHUNK],
                )
                assert busy.status_code == 409, busy.text
                assert busy.json()["code"] == "chunk_conflict"
            _age_claims(node, session["id"])
        else:
            # SQLite means one server process: claims left by the crash are gone.
            assert _claimed(node, session["id"]) == set()

        for index in missing:
            again = http.put(
                f"/api/v1/sync/upload/{session['id']}/chunks/{index}",
                content=data[index * CHUNK : (index + 1) * CHUNK],
            )
            assert again.status_code == 200, again.text
        assert http.get(f"/api/v1/sync/upload/{session['id']}").json()["received"] == list(
            range(10)
        )
        done = http.post(f"/api/v1/sync/upload/{session['id']}/complete")
        assert done.status_code == 200, done.text
        assert done.json()["result"]["status"] == "applied"

        # Every byte reads back as sent (listed chunks were never sent again).
        assert _read_back(node, http, "media/film.mkv", hash_bytes(data)) == data
    assert node.check_store() == {hash_bytes(data)}
    assert list(node.blobs.uploads.iterdir()) == []
    assert "Traceback" not in node.log()


def _claimed(node: Node, session_id: str) -> set[int]:
    db = Database(node.database_url)
    try:
        with db.read() as tx:
            rows = tx.execute(
                sa.select(upload_chunks.c.chunk_index).where(
                    upload_chunks.c.session_id == session_id, upload_chunks.c.state == "writing"
                )
            )
            return {int(r[0]) for r in rows}
    finally:
        db.dispose()


def _age_claims(node: Node, session_id: str) -> None:
    db = Database(node.database_url)
    try:
        with db.write() as tx:
            tx.execute(
                upload_chunks.update()
                .where(upload_chunks.c.session_id == session_id)
                .where(upload_chunks.c.state == "writing")
                .values(claimed_at=utcnow() - timedelta(minutes=5))
            )
    finally:
        db.dispose()


def _read_back(node: Node, http: httpx.Client, path: str, content_hash: str) -> bytes:
    """Through the download route when the server has one, else from the object file."""
    routes = http.get("/openapi.json")
    if routes.status_code == 200 and "/api/v1/sync/download/{path}" in routes.json()["paths"]:
        response = http.get(f"/api/v1/sync/download/{path}")
        assert response.status_code == 200, response.text
        assert response.headers["etag"] == f'"{content_hash}"'
        return bytes(response.content)
    object_path = node.blobs.object_path(content_hash)
    assert hash_file(object_path) == content_hash
    return bytes(object_path.read_bytes())


def _complete(
    node: Node,
    session_id: str,
    go: threading.Barrier,
    pause: float,
    answered: dict[int, httpx.Response],
    key: int,
) -> None:
    """Fire one complete after the others' start and `pause`; note a 200."""
    go.wait(timeout=30)
    time.sleep(pause)
    try:
        with node.http() as http:
            response = http.post(f"/api/v1/sync/upload/{session_id}/complete")
    except httpx.TransportError:
        return  # the server died under it
    answered[key] = response


def _upload_chunks(node: Node, http: httpx.Client, path: str, data: bytes) -> Json:
    session = node.create(http, path, data)
    for index in range(session["chunk_count"]):
        put = http.put(
            f"/api/v1/sync/upload/{session['id']}/chunks/{index}",
            content=data[index * CHUNK : (index + 1) * CHUNK],
        )
        assert put.status_code == 200, put.text
    return session


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.0002)


@pytest.mark.parametrize("node", ["sqlite", "postgresql"], indirect=True)
def test_kill_9_around_complete(node: Node) -> None:
    node.start()
    node.sign_in()
    with node.http() as http:
        # How long one complete takes here (loaded machines differ a lot).
        warm_data = payload(MIB, seed=99)
        warm = _upload_chunks(node, http, "warm-up.bin", warm_data)
        began = time.monotonic()
        assert http.post(f"/api/v1/sync/upload/{warm['id']}/complete").status_code == 200
        latency = time.monotonic() - began
    every: list[tuple[Json, bytes, str]] = [(warm, warm_data, "warm-up.bin")]

    # Each round: four fully sent sessions whose completes start a third of a
    # complete apart (so they are at different steps when the server dies); it
    # is killed right after the first session file is renamed into the store
    # (while its transaction has not committed yet), or right after the first
    # answer (the others not yet done).
    for round_no, moment in enumerate(("renamed", "answered")):
        sessions: list[tuple[Json, bytes, str]] = []
        with node.http() as http:
            for k in range(4):
                data = payload(MIB + 1000 * k + round_no, seed=100 + 10 * round_no + k)
                path = f"round{round_no}/file{k}.bin"
                sessions.append((_upload_chunks(node, http, path, data), data, path))

        answered: dict[int, httpx.Response] = {}
        go = threading.Barrier(len(sessions) + 1)
        threads = [
            threading.Thread(
                target=_complete,
                args=(node, s["id"], go, k * latency / 3, answered, k),
                daemon=True,
            )
            for k, (s, _, _) in enumerate(sessions)
        ]
        for thread in threads:
            thread.start()
        go.wait(timeout=30)
        if moment == "renamed":
            parts = [node.blobs.session_path(s["id"]) for s, _, _ in sessions]
            _wait_for(lambda: not all(p.exists() for p in parts))  # noqa: B023
        else:
            _wait_for(lambda: bool(answered))  # noqa: B023
        node.kill()
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive()

        # Right after the crash, before anything runs again: no dangling record.
        node.check_store()
        node.start()
        with node.http() as http:
            for k, (session, data, path) in enumerate(sessions):
                first = http.post(f"/api/v1/sync/upload/{session['id']}/complete")
                assert first.status_code == 200, first.text
                second = http.post(f"/api/v1/sync/upload/{session['id']}/complete")
                assert second.status_code == 200, second.text
                assert first.json() == second.json()
                if k in answered:  # answered before the kill: the same answer now
                    assert answered[k].status_code == 200, answered[k].text
                    assert answered[k].json() == first.json()
                result = first.json()["result"]
                assert (result["status"], result["path"], result["revision"]) == (
                    "applied",
                    path,
                    1,
                )
                assert first.json()["session"]["status"] == "completed"
                object_path = node.blobs.object_path(session["content_hash"])
                assert hash_file(object_path) == session["content_hash"]
                assert object_path.read_bytes() == data
                assert not node.blobs.session_path(session["id"]).exists()
        every += sessions

    # Exactly once: one revision per path in the feed, each the uploaded content.
    with node.http() as http:
        feed = http.get("/api/v1/sync/changes", params={"limit": 1000}).json()["changes"]
    assert sorted((c["path"], c["revision"], c["content_hash"]) for c in feed) == sorted(
        (path, 1, s["content_hash"]) for s, _, path in every
    )
    assert node.check_store() == {s["content_hash"] for s, _, _ in every}
    assert list(node.blobs.uploads.iterdir()) == []
    assert "Traceback" not in node.log()
