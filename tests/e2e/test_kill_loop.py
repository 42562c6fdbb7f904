"""A real server killed with SIGKILL again and again while a client works.

One `shelfsync serve` process (SQLite) is killed with `kill -9` at random,
seeded moments, `SHELFSYNC_KILL_LOOPS` times (default 5; a soak run sets 50),
while a client thread does, round after round: a report of 200 changes,
an upload (create, chunk PUTs, complete), a batch upload of small files and
an upload of one small file (both stored in the database), a conflicting
report and its resolution. The client retries whatever did not get an answer until it does.

After every kill, on the data the dead process left:

- `PRAGMA integrity_check` is `ok` (the file opened read-only);
- every acknowledged (200) write is there: applied report results are the
  current state or in history, completed uploads' items exist with their
  content, resolved conflicts are resolved that way;
- every object file's content hash equals its name (nothing half-written), and
  no `contents` row points at missing bytes: each has its file, or, for small
  content stored in the database, a `content_data` row that hashes to it;
  every acknowledged small content is there.

After every restart, every acknowledged chunk is listed in its session's
`received`. At the end the client has finished all its work, by retrying.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shelfsync.content_hash import EMPTY_HASH, hash_bytes, hash_file
from shelfsync.server.storage.blobs import BlobStore
from tests.e2e.harness import free_port, server_env

pytestmark = pytest.mark.e2e

SHELFSYNC = str(Path(sys.executable).with_name("shelfsync"))
PASSWORD = "correct horse battery"
MIB = 1024 * 1024
CHUNK = 4 * MIB
BATCH = 200
SMALL_FILES = 20
START_TIMEOUT_S = 30.0
CALL_DEADLINE_S = 60.0
KILL_LOOPS = int(os.environ.get("SHELFSYNC_KILL_LOOPS", "5"))
SEED = int(os.environ.get("SHELFSYNC_KILL_SEED", "20261126"))
RESOLUTIONS = ("keep_server", "keep_both", "keep_client")

Json = dict[str, Any]


class Server:
    """One data directory served by a process that gets killed."""

    def __init__(self, root: Path) -> None:
        self.data_dir = root / "data"
        self.db_path = root / "shelfsync.db"
        self.log_path = root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.blobs_root = self.data_dir / "content"

    @property
    def target(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--database-url", f"sqlite:///{self.db_path}"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        port = free_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [SHELFSYNC, "serve", "--port", str(port), "--log-level", "warning", *self.target],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(),
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    self.base_url = url  # the client follows the server here
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        pytest.fail(f"server not healthy after {START_TIMEOUT_S}s:\n{self.log()}")

    def kill(self) -> None:
        """kill -9: no shutdown handler, no flush, no goodbye."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        assert self.process.returncode == -signal.SIGKILL

    def add_user(self, name: str) -> None:
        added = subprocess.run(
            [SHELFSYNC, "user", "add", name, "--password-stdin", *self.target],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            env=server_env(),
            timeout=60,
            check=False,
        )
        assert added.returncode == 0, added.stderr

    def device_headers(self, username: str) -> dict[str, str]:
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            login = http.post(
                "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            user = {"Authorization": f"Bearer {login.json()['access_token']}"}
            created = http.post("/api/v1/sync/devices", json={"name": "laptop"}, headers=user)
            assert created.status_code == 200, created.text
            granted = http.post(
                "/api/v1/auth/device", json={"device_token": created.json()["token"]}
            )
            assert granted.status_code == 200, granted.text
        return {"Authorization": f"Bearer {granted.json()['access_token']}"}

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the database file read-only (the server may be dead or alive)."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()


@dataclass
class Ledger:
    """What the server acknowledged with a 200 (appended by the client thread)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # (item id, revision) of applied report results and resolution changes
    revisions: list[tuple[str, int]] = field(default_factory=list)
    chunks: list[tuple[str, int]] = field(default_factory=list)
    # (session id, item id, revision, content hash)
    completed: list[tuple[str, str, int, str]] = field(default_factory=list)
    resolved: list[tuple[str, str]] = field(default_factory=list)
    # content hashes of small files a batch upload acknowledged
    stored: list[str] = field(default_factory=list)

    def add(self, name: str, entry: Any) -> None:
        with self.lock:
            getattr(self, name).append(entry)

    def snapshot(self) -> Ledger:
        with self.lock:
            return Ledger(
                revisions=list(self.revisions),
                chunks=list(self.chunks),
                completed=list(self.completed),
                resolved=list(self.resolved),
                stored=list(self.stored),
            )


class Client:
    """A device doing a mix of work against whichever server process is up."""

    def __init__(self, server: Server, headers: dict[str, str], ledger: Ledger) -> None:
        self.server = server
        self.headers = headers
        self.ledger = ledger
        self.stop = threading.Event()
        self.rounds = 0
        self.retries = 0
        self.error: BaseException | None = None
        self.batch_revisions: dict[str, int] = {}
        self.uploads: dict[str, str] = {}  # path -> content hash

    def call(
        self,
        method: str,
        path: str,
        *,
        retry_on: Callable[[httpx.Response], bool] = lambda r: r.status_code >= 500,
        **kwargs: Any,
    ) -> Json:
        """Send until a 200 comes back; connection failures and 5xx are retried."""
        deadline = time.monotonic() + CALL_DEADLINE_S
        with httpx.Client(timeout=30, headers=self.headers) as http:
            while True:
                assert time.monotonic() < deadline, f"{method} {path} never succeeded"
                try:
                    response = http.request(
                        method, f"{self.server.base_url}/api/v1/sync{path}", **kwargs
                    )
                except httpx.TransportError:
                    self.retries += 1
                    time.sleep(0.02)
                    continue
                if response.status_code == 200:
                    body: Json = response.json()
                    return body
                assert retry_on(response), (
                    f"{method} {path}: {response.status_code} {response.text}"
                )
                self.retries += 1
                time.sleep(0.05)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.one_round(self.rounds)
                self.rounds += 1
        except BaseException as exc:
            self.error = exc

    def one_round(self, r: int) -> None:
        self.report_batch(r)
        path, data = f"up/r{r}.bin", random.Random(r).randbytes(2 * CHUNK + 1013 * r + 1)
        self.upload(path, data)
        self.batch_upload(r)
        # A small session: stored in the database at `complete`.
        self.upload(f"up/s{r}.txt", random.Random(-r).randbytes(5000 + r))
        self.conflict(path, RESOLUTIONS[r % len(RESOLUTIONS)])

    def batch_upload(self, r: int) -> None:
        files = [
            (f"small/r{r}-{i:02}.txt", random.Random(1000 * r + i).randbytes(1000 + 37 * i))
            for i in range(SMALL_FILES)
        ]
        manifest = json.dumps(
            {
                "files": [
                    {
                        "path": p,
                        "size": len(d),
                        "content_hash": hash_bytes(d),
                        "base_revision": None,
                    }
                    for p, d in files
                ]
            }
        ).encode()
        body = struct.pack(">I", len(manifest)) + manifest + b"".join(d for _, d in files)
        results = self.call(
            "POST",
            "/upload/batch",
            content=body,
            headers={"Content-Type": "application/vnd.shelfsync.batch"},
        )["results"]
        assert len(results) == SMALL_FILES
        for (_, data), result in zip(files, results, strict=True):
            # A retry of a batch that landed answers `unchanged`.
            assert result["status"] in ("applied", "unchanged"), result
            if result["status"] == "applied":
                self.ledger.add("revisions", (result["id"], result["revision"]))
            self.ledger.add("stored", hash_bytes(data))

    def report_batch(self, r: int) -> None:
        changes = [
            {
                "op": "upsert",
                "path": f"batch/f{i:03}.txt",
                "content_hash": EMPTY_HASH,
                "size": 0,
                "metadata": {"round": r},
                "base_revision": self.batch_revisions.get(f"batch/f{i:03}.txt"),
            }
            for i in range(BATCH)
        ]
        results = self.call("POST", "/report", json={"changes": changes})["results"]
        assert len(results) == BATCH
        for change, result in zip(changes, results, strict=True):
            # A retry of an applied change is `unchanged`: the state is already there.
            assert result["status"] in ("applied", "unchanged"), result
            if result["status"] == "applied":
                self.ledger.add("revisions", (result["id"], result["revision"]))
            self.batch_revisions[change["path"]] = result["revision"]

    def upload(self, path: str, data: bytes) -> None:
        content_hash = hash_bytes(data)
        session = self.call(
            "POST",
            "/upload",
            json={
                "path": path,
                "size": len(data),
                "content_hash": content_hash,
                "base_revision": None,
                "chunk_size": CHUNK,
            },
        )
        session_id = session["id"]
        for index in range(session["chunk_count"]):
            if index in session["received"]:
                continue
            receipt = self.call(
                "PUT",
                f"/upload/{session_id}/chunks/{index}",
                content=data[index * CHUNK : (index + 1) * CHUNK],
                headers={"Content-Type": "application/octet-stream"},
                # A claim by a request the kill cut off is dropped at start-up.
                retry_on=lambda r: r.status_code >= 500 or r.status_code == 409,
            )
            assert receipt["index"] == index
            self.ledger.add("chunks", (session_id, index))
        done = self.call("POST", f"/upload/{session_id}/complete")
        result = done["result"]
        assert result["status"] == "applied", result
        self.ledger.add("completed", (session_id, result["id"], result["revision"], content_hash))
        self.ledger.add("revisions", (result["id"], result["revision"]))
        self.uploads[path] = content_hash

    def conflict(self, path: str, resolution: str) -> None:
        change = {
            "op": "upsert",
            "path": path,
            "content_hash": EMPTY_HASH,
            "size": 0,
            "base_revision": None,
        }
        (result,) = self.call("POST", "/report", json={"changes": [change]})["results"]
        assert result["status"] == "conflict", result
        resolved = self.call(
            "POST", f"/conflicts/{result['conflict_id']}/resolve", json={"resolution": resolution}
        )
        assert resolved["conflict"]["resolution"] == resolution
        for item in resolved["changes"]:
            self.ledger.add("revisions", (item["id"], item["revision"]))
        self.ledger.add("resolved", (result["conflict_id"], resolution))


def check_dead_state(server: Server, ledger: Ledger) -> None:
    """Everything acknowledged survived, on the files the killed process left."""
    assert server.query("PRAGMA integrity_check") == [("ok",)]
    current = set(server.query("SELECT id, revision FROM items"))
    history = set(server.query("SELECT item_id, revision FROM revisions"))
    for entry in ledger.revisions:
        assert entry in current or entry in history, f"acknowledged revision lost: {entry}"
    sessions = dict(server.query("SELECT id, status FROM upload_sessions"))
    for session_id, item_id, revision, content_hash in ledger.completed:
        assert sessions.get(session_id) == "completed", session_id
        rows = server.query(
            "SELECT content_hash FROM items WHERE id = ? AND revision = ? "
            "UNION ALL SELECT content_hash FROM revisions WHERE item_id = ? AND revision = ?",
            item_id,
            revision,
            item_id,
            revision,
        )
        assert (content_hash,) in rows, f"completed upload {session_id} lost its item"
    conflict_rows = {
        str(row[0]): (row[1], row[2])
        for row in server.query("SELECT id, status, resolution FROM conflicts")
    }
    for conflict_id, resolution in ledger.resolved:
        status, stored = conflict_rows[conflict_id]
        assert (status, stored) == ("resolved", resolution), conflict_id
    recorded = check_objects(server)
    for content_hash in ledger.stored:
        assert content_hash in recorded, f"acknowledged small content {content_hash} lost"


def check_objects(server: Server) -> set[str]:
    """Every object file whole; every contents row's bytes there and right (in
    its file, or in the database for small content). Answers the recorded hashes."""
    blobs = BlobStore(server.blobs_root)
    for path in blobs.objects.rglob("*"):
        if path.is_file():
            assert hash_file(path) == path.name, f"half-written object file {path}"
    inline = dict(server.query("SELECT content_hash, data FROM content_data"))
    recorded: set[str] = set()
    for (content_hash,) in server.query("SELECT content_hash FROM contents"):
        recorded.add(content_hash)
        if content_hash in inline:
            assert hash_bytes(inline[content_hash]) == content_hash, content_hash
            continue
        path = blobs.object_path(content_hash)
        assert path.is_file(), f"contents row {content_hash} has no file"
        assert hash_file(path) == content_hash
    assert set(inline) <= recorded, "content_data rows without their record"
    return recorded


def check_chunks(server: Server, headers: dict[str, str], ledger: Ledger) -> None:
    """Through the restarted server: every acknowledged chunk is received."""
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as http:
        for session_id in {s for s, _ in ledger.chunks}:
            response = http.get(f"/api/v1/sync/upload/{session_id}")
            assert response.status_code == 200, response.text
            received = set(response.json()["received"])
            acked = {i for s, i in ledger.chunks if s == session_id}
            assert acked <= received, (session_id, acked, received)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    try:
        yield srv
    finally:
        if srv.process is not None and srv.process.poll() is None:
            srv.kill()


def test_kill_9_loop_while_a_client_works(server: Server) -> None:
    server.add_user("alice")
    server.start()
    headers = server.device_headers("alice")
    ledger = Ledger()
    client = Client(server, headers, ledger)
    worker = threading.Thread(target=client.run, name="kill-loop-client", daemon=True)
    worker.start()
    rng = random.Random(SEED)
    try:
        for _ in range(KILL_LOOPS):
            time.sleep(rng.uniform(0.05, 1.0))
            assert client.error is None, client.error
            server.kill()
            acknowledged = ledger.snapshot()
            check_dead_state(server, acknowledged)
            server.start()
            check_chunks(server, headers, acknowledged)
    finally:
        client.stop.set()
        worker.join(timeout=120)
    assert not worker.is_alive(), "the client did not finish its work"
    if client.error is not None:
        raise client.error
    print(f"kill loop: {KILL_LOOPS} kills, {client.rounds} rounds, {client.retries} retries")
    assert client.rounds >= 1
    assert client.retries > 0, "no kill ever hit a request"

    # The client finished everything: the library holds its last state.
    final = ledger.snapshot()
    check_chunks(server, headers, final)
    rows = server.query("SELECT path, revision FROM items WHERE deleted = 0")
    library = {str(path): int(revision) for path, revision in rows}
    for path, revision in client.batch_revisions.items():
        assert library[path] == revision, path
    assert set(client.uploads) <= set(library)
    server.kill()
    check_dead_state(server, final)
