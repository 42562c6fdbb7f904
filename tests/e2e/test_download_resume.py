"""Independent HTTP clients resume an interrupted download from a real server.

A `shelfsync serve` subprocess on a free loopback port holds a ~3 MiB file;
`curl -C -` and `wget -c` start from a partial local copy, and must finish it
byte for byte with a 206 (not a silent full re-download).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from shelfsync.content_hash import hash_bytes
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.storage.blobs import BlobStore
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.users import UserRepository
from tests.e2e.harness import free_port
from tests.page_cache import drop, resident

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
MIB = 1024 * 1024
# Large enough to be read past the page cache when it is not there (file_responses.py).
CONTENT = random.Random(3).randbytes(5 * MIB + 12_345)
LIBRARY_PATH = "media/big file ü.bin"
PARTIAL_BYTES = MIB + 7  # what "the first attempt" got before it broke


@dataclass
class Server:
    base_url: str
    token: str  # a device-bound access token
    stored: Path  # the content's file in the server's store

    @property
    def download_url(self) -> str:
        encoded = "/".join(quote(s, safe="") for s in LIBRARY_PATH.split("/"))
        return f"{self.base_url}/api/v1/sync/download/{encoded}"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make sysdeps`")
    return found


def _wait_until_up(base_url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"shelfsync serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"shelfsync serve did not come up:\n{log.read_text()}")


def _store(data_dir: Path, database_url: str, username: str, data: bytes) -> str:
    """Write the content the way a finished upload leaves it, and give it to the user."""
    content_hash = hash_bytes(data)
    blobs = BlobStore(data_dir / "content")
    session_id = str(uuid.uuid4())
    blobs.create_session_file(session_id, len(data))
    chunk = blobs.open_chunk(session_id, 0)
    try:
        chunk.write(data)
        chunk.sync()
    finally:
        chunk.close()
    blobs.commit_session(session_id, content_hash)
    db = Database(database_url)
    try:
        with db.write() as tx:
            user = UserRepository(tx).by_username(username)
            assert user is not None
            ContentRepository(tx).add(
                user_id=user.id, content_hash=content_hash, size=len(data), now=utcnow()
            )
    finally:
        db.dispose()
    return content_hash


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    data_dir = tmp_path / "server"
    env = {
        **os.environ,
        "SHELFSYNC_DATA_DIR": str(data_dir),
        "SHELFSYNC_DATABASE_URL": database_url,
    }
    shelfsync = str(Path(sys.executable).with_name("shelfsync"))
    subprocess.run(
        [shelfsync, "user", "add", "alice", "--password-stdin"],
        input=f"{PASSWORD}\n".encode(),
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [shelfsync, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(base_url, proc, log)
        with httpx.Client(base_url=base_url, timeout=30) as http:
            login = http.post(
                "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
            )
            user_headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            device = http.post("/api/v1/sync/devices", json={"name": "nas"}, headers=user_headers)
            grant = http.post("/api/v1/auth/device", json={"device_token": device.json()["token"]})
            token = grant.json()["access_token"]
            content_hash = _store(data_dir, database_url, "alice", CONTENT)
            report = http.post(
                "/api/v1/sync/report",
                json={
                    "changes": [
                        {
                            "op": "upsert",
                            "path": LIBRARY_PATH,
                            "content_hash": content_hash,
                            "size": len(CONTENT),
                            "base_revision": None,
                        }
                    ]
                },
                headers={"Authorization": f"Bearer {token}"},
            )
            assert report.json()["results"][0]["status"] == "applied", report.text
        stored = BlobStore(data_dir / "content").object_path(content_hash)
        yield Server(base_url=base_url, token=token, stored=stored)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _partial_copy(path: Path) -> Path:
    path.write_bytes(CONTENT[:PARTIAL_BYTES])
    return path


def test_curl_resumes_a_partial_download(server: Server, tmp_path: Path) -> None:
    target = _partial_copy(tmp_path / "curl.bin")
    done = subprocess.run(
        [
            _tool("curl"),
            "--silent",
            "--show-error",
            "--fail",
            "--continue-at",
            "-",
            "--header",
            f"Authorization: Bearer {server.token}",
            "--output",
            str(target),
            "--write-out",
            "%{http_code} %{size_download}",
            server.download_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    status, downloaded = done.stdout.split()
    assert status == "206"
    assert int(downloaded) == len(CONTENT) - PARTIAL_BYTES
    assert target.read_bytes() == CONTENT


def test_wget_resumes_a_partial_download(server: Server, tmp_path: Path) -> None:
    target = _partial_copy(tmp_path / "wget.bin")
    done = subprocess.run(
        [
            _tool("wget"),
            "--no-verbose",
            "--server-response",
            "--continue",
            "--header",
            f"Authorization: Bearer {server.token}",
            "--output-document",
            str(target),
            server.download_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "206 Partial Content" in done.stderr
    assert target.read_bytes() == CONTENT


def test_curl_on_a_complete_copy_leaves_it_alone(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "complete.bin"
    target.write_bytes(CONTENT)
    done = subprocess.run(
        [
            _tool("curl"),
            "--silent",
            "--show-error",
            "--continue-at",
            "-",
            "--header",
            f"Authorization: Bearer {server.token}",
            "--output",
            str(target),
            "--write-out",
            "%{http_code}",
            server.download_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "416"
    assert target.read_bytes() == CONTENT  # nothing appended, nothing lost


def test_a_whole_download_not_in_the_page_cache_is_read_past_it(server: Server) -> None:
    """Through uvicorn (ASGI 2.4): the first whole download of a file not in
    the page cache leaves it out; the next goes through the cache, and a
    client that leaves halfway costs nothing."""
    headers = {"Authorization": f"Bearer {server.token}"}
    drop(server.stored)
    response = httpx.get(server.download_url, headers=headers, timeout=30)
    assert response.status_code == 200
    assert response.content == CONTENT
    for offset in (0, 2 * MIB, len(CONTENT) - 1):
        assert not resident(server.stored, offset), offset
    with (
        httpx.Client(timeout=30) as http,
        http.stream("GET", server.download_url, headers=headers) as partial,
    ):
        assert partial.status_code == 200
        next(partial.iter_raw(MIB))  # then hang up
    again = httpx.get(server.download_url, headers=headers, timeout=30)
    assert again.content == CONTENT
    assert resident(server.stored, len(CONTENT) - 1)
