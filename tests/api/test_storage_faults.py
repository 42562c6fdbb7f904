"""The content store failing underneath a live server (protocol sections 9 and 10).

Faults are injected at the operating-system boundary of the blob store: the
`os` that `shelfsync.server.storage.blobs` calls is swapped for a proxy that
hands every call to the real `os`, except that, while a fault is armed, the
calls that write or make data durable (`pwrite`, `posix_fallocate`, `fsync`,
`fdatasync`, `rename`, `copy_file_range`) fail with `ENOSPC` (disk full) or
`EIO` (a failing disk). A failing `pwrite` first writes part of its data, as a
filling disk does. All of our own code runs unchanged.

Checked, on SQLite and PostgreSQL: session creation, chunk PUT and complete
answer 507 (disk full) or 503 (I/O error) with `Retry-After` and a problem
body; a failed chunk is not listed in `received`; what was stored before stays
whole (downloads are byte-identical, every object file hashes to its name, no
`contents` row points at a missing file); and once the fault is gone the same
upload finishes by simply retrying.

One test needs no injection at all: where the server runs as root, the content
folder is a real 8 MiB tmpfs that fills up (skipped where it cannot be mounted).
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.content_hash import hash_bytes, hash_file
from shelfsync.server.app import create_app
from shelfsync.server.settings import Settings
from shelfsync.server.storage import blobs as blobs_module
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.tables import content_data, contents, upload_sessions
from tests.api.conftest import FAST_HASHING
from tests.api.sync_support import SyncDevice, SyncDriver

MIB = 1024 * 1024
CHUNK = 4 * MIB
V1 = "/api/v1/sync"

Json = dict[str, Any]

# The calls that put bytes or names on disk, or make them durable.
WRITE_CALLS = frozenset(
    {"pwrite", "posix_fallocate", "fsync", "fdatasync", "rename", "copy_file_range"}
)

# errno -> (HTTP status, problem code, Retry-After)
EXPECTED = {
    errno.ENOSPC: (507, "insufficient_storage", "60"),
    errno.EIO: (503, "storage_unavailable", "5"),
}


class FaultyOs:
    """The real `os`, whose write calls fail while a fault is armed."""

    def __init__(self) -> None:
        self.errno: int | None = None
        self.calls: frozenset[str] = WRITE_CALLS
        self.skip = 0
        self.failures = 0
        self._partial_done = False

    def arm(self, code: int, *, calls: frozenset[str] = WRITE_CALLS, skip: int = 0) -> None:
        """Fail the `calls`, after letting the first `skip` of them through."""
        self.errno = code
        self.calls = calls
        self.skip = skip
        self.failures = 0
        self._partial_done = False

    def disarm(self) -> None:
        self.errno = None

    def _should_fail(self, name: str) -> bool:
        if self.errno is None or name not in self.calls:
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        return True

    def _raise(self) -> None:
        assert self.errno is not None
        self.failures += 1
        raise OSError(self.errno, os.strerror(self.errno))

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        if self._should_fail("pwrite"):
            view = memoryview(data)
            if not self._partial_done and len(view) > 1:
                # A filling disk: part of the data lands, the next write fails.
                self._partial_done = True
                return os.pwrite(fd, view[: len(view) // 2], offset)
            self._raise()
        return os.pwrite(fd, data, offset)

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name not in WRITE_CALLS or not callable(real):
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._should_fail(name):
                self._raise()
            return real(*args, **kwargs)

        return call


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyOs]:
    proxy = FaultyOs()
    monkeypatch.setattr(blobs_module, "os", proxy)
    yield proxy
    proxy.disarm()


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def chunks_of(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def assert_storage_problem(response: httpx.Response, code: int) -> None:
    status, problem_code, retry_after = EXPECTED[code]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == retry_after
    body = response.json()
    assert body["status"] == status
    assert body["code"] == problem_code
    assert body["detail"]


class Uploader:
    def __init__(self, device: SyncDevice) -> None:
        self.device = device
        self.client: TestClient = device.client

    def create(self, path: str, data: bytes) -> httpx.Response:
        return self.client.post(
            f"{V1}/upload",
            json={
                "path": path,
                "size": len(data),
                "content_hash": hash_bytes(data),
                "base_revision": None,
                "chunk_size": CHUNK,
            },
            headers=self.device.headers,
        )

    def put(self, session_id: str, index: int, data: bytes) -> httpx.Response:
        return self.client.put(
            f"{V1}/upload/{session_id}/chunks/{index}",
            content=data,
            headers={**self.device.headers, "Content-Type": "application/octet-stream"},
        )

    def complete(self, session_id: str) -> httpx.Response:
        return self.client.post(f"{V1}/upload/{session_id}/complete", headers=self.device.headers)

    def session(self, session_id: str) -> Json:
        response = self.client.get(f"{V1}/upload/{session_id}", headers=self.device.headers)
        assert response.status_code == 200, response.text
        body: Json = response.json()
        return body

    def download(self, path: str) -> bytes:
        response = self.client.get(f"{V1}/download/{path}", headers=self.device.headers)
        assert response.status_code == 200, response.text
        return response.content

    def upload(self, path: str, data: bytes) -> Json:
        created = self.create(path, data)
        assert created.status_code == 200, created.text
        session_id = created.json()["id"]
        for index, chunk in enumerate(chunks_of(data)):
            put = self.put(session_id, index, chunk)
            assert put.status_code == 200, put.text
        done = self.complete(session_id)
        assert done.status_code == 200, done.text
        result: Json = done.json()["result"]
        assert result["status"] == "applied", result
        return result


def check_store(app: FastAPI, db: Database) -> None:
    """Every object file hashes to its name; every contents row has its file, or
    its bytes in the database (small content) hashing to it."""
    store = app.state.services.blobs
    for path in store.objects.rglob("*"):
        if path.is_file():
            assert hash_file(path) == path.name, f"damaged object {path}"
    with db.read() as tx:
        hashes = [str(r[0]) for r in tx.execute(sa.select(contents.c.content_hash))]
        inline = {str(h): bytes(d) for h, d in tx.execute(sa.select(content_data))}
    for content_hash in hashes:
        if content_hash in inline:
            assert hash_bytes(inline[content_hash]) == content_hash
            continue
        path = store.object_path(content_hash)
        assert path.is_file(), f"contents row {content_hash} has no file"
        assert hash_file(path) == content_hash


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["disk_full", "io_error"])
def test_storage_faults_fail_cleanly_and_recover(
    code: int, app: FastAPI, client: TestClient, db: Database, faults: FaultyOs
) -> None:
    driver = SyncDriver(app, client)
    device = driver.user("alice").device("laptop")
    up = Uploader(device)
    store = app.state.services.blobs

    # Content stored before the disk fails.
    kept = payload(CHUNK + 1000, seed=1)
    up.upload("keep/old.bin", kept)

    def intact() -> None:
        assert up.download("keep/old.bin") == kept
        check_store(app, db)

    new = payload(2 * CHUNK + 777, seed=2)
    pieces = chunks_of(new)
    assert len(pieces) == 3

    # 1. Session creation: preallocation fails; no session, no file is left.
    faults.arm(code)
    assert_storage_problem(up.create("media/new.bin", new), code)
    assert faults.failures == 1
    assert list(store.uploads.iterdir()) == []
    with db.read() as tx:
        assert tx.execute(sa.select(sa.func.count()).select_from(upload_sessions)).scalar() == 1
    intact()  # reads still work while writes fail

    # With the fault gone, creating it works.
    faults.disarm()
    created = up.create("media/new.bin", new)
    assert created.status_code == 200, created.text
    session_id = created.json()["id"]
    assert up.put(session_id, 0, pieces[0]).status_code == 200

    # 2. Chunk PUTs: part of the data lands, then the write fails, or the
    # data is all written and making it durable fails. Never listed as received.
    for calls in (WRITE_CALLS, frozenset({"fdatasync"})):
        for index in (1, 2):
            faults.arm(code, calls=calls)
            assert_storage_problem(up.put(session_id, index, pieces[index]), code)
            assert faults.failures == 1
            assert up.session(session_id)["received"] == [0]
            intact()
    faults.disarm()
    # The failed chunk's claim was let go: retrying is accepted at once.
    for index in (1, 2):
        put = up.put(session_id, index, pieces[index])
        assert put.status_code == 200, put.text
    assert up.session(session_id)["received"] == [0, 1, 2]

    # 3. complete: each write call on its way fails in turn (the directory
    # fsyncs, the data fsync, the rename, the fsyncs after it), and each
    # failed attempt leaves a state the next attempt finishes from.
    attempts = 0
    for skip in range(30):
        faults.arm(code, skip=skip)
        done = up.complete(session_id)
        if done.status_code == 200:
            break
        assert_storage_problem(done, code)
        assert faults.failures == 1
        attempts += 1
        session = up.session(session_id)
        assert session["status"] == "pending"
        assert session["received"] == [0, 1, 2]
        intact()
    else:
        pytest.fail("complete never succeeded")
    faults.disarm()
    assert attempts >= 3  # the upload really went through failures first
    body = done.json()
    assert body["session"]["status"] == "completed"
    assert body["result"]["status"] == "applied"
    # Calling it again answers the same.
    again = up.complete(session_id)
    assert again.status_code == 200, again.text
    assert again.json()["result"] == body["result"]

    assert up.download("media/new.bin") == new
    intact()
    assert store.object_path(hash_bytes(new)).is_file()
    assert not store.session_path(session_id).exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["disk_full", "io_error"])
def test_storage_faults_on_the_first_upload(
    code: int, app: FastAPI, client: TestClient, db: Database, faults: FaultyOs
) -> None:
    """An empty store: the object folders do not exist yet when `complete` fails."""
    driver = SyncDriver(app, client)
    up = Uploader(driver.user("alice").device("laptop"))
    store = app.state.services.blobs
    data = payload(CHUNK, seed=3)
    created = up.create("a.bin", data)
    assert created.status_code == 200, created.text
    session_id = created.json()["id"]
    assert up.put(session_id, 0, data).status_code == 200

    faults.arm(code, calls=frozenset({"rename"}))
    assert_storage_problem(up.complete(session_id), code)
    assert store.session_path(session_id).is_file()
    assert not store.object_path(hash_bytes(data)).exists()
    with db.read() as tx:
        assert tx.execute(sa.select(sa.func.count()).select_from(contents)).scalar() == 0
    missing = up.client.get(f"{V1}/download/a.bin", headers=up.device.headers)
    assert missing.status_code == 404

    faults.disarm()
    done = up.complete(session_id)
    assert done.status_code == 200, done.text
    assert up.download("a.bin") == data
    check_store(app, db)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs) as the content folder; needs root."""
    mount_point = tmp_path / "data" / "content"
    mount_point.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace')}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_really_full_disk_answers_507_until_space_returns(
    tmp_path: Path, database_url: str, db: Database, tiny_disk: Path
) -> None:
    """No injection: the content folder is a small filesystem that fills up."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, **FAST_HASHING)
    app = create_app(settings, db=db)
    with TestClient(app) as client:
        up = Uploader(SyncDriver(app, client).user("alice").device("laptop"))
        store = app.state.services.blobs
        kept = payload(3 * MIB, seed=4)
        up.upload("keep/old.bin", kept)
        filler = tiny_disk / "filler"
        filler.write_bytes(b"\0" * (4 * MIB))  # someone else's data fills the disk

        new = payload(3 * MIB, seed=5)
        refused = up.create("media/new.bin", new)
        assert_storage_problem(refused, errno.ENOSPC)
        assert list(store.uploads.iterdir()) == []
        assert up.download("keep/old.bin") == kept
        check_store(app, db)

        filler.unlink()  # space returns
        up.upload("media/new.bin", new)
        assert up.download("media/new.bin") == new
        assert up.download("keep/old.bin") == kept
        check_store(app, db)
