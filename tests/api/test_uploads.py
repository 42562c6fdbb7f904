"""Chunked, resumable uploads (protocol section 9), on SQLite and PostgreSQL.

Files are a few MiB (chunks are at least 4 MiB), generated from fixed seeds.
Stored content is checked by reading the object file the blob store names and
hashing it. Each test walks through several related behaviours: the per-test
fixtures (a database, an app, users, devices) cost more than the requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.content_hash import BLOCK_SIZE, hash_bytes, hash_file
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.settings import Settings
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.tables import contents, upload_chunks, upload_sessions
from tests.api.conftest import FAST_HASHING, Account

MIB = 1024 * 1024
V1 = "/api/v1/sync"
ALIAS = "/api/sync"

Json = dict[str, Any]


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    """As in conftest, plus per-test limits through indirect parametrization."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    return Settings(
        data_dir=tmp_path / "data", database_url=database_url, **{**FAST_HASHING, **overrides}
    )


def with_settings(**overrides: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("settings", [overrides], indirect=True, ids=["limits"])


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def block_hashes(data: bytes) -> list[str]:
    return [
        hashlib.sha256(data[i : i + BLOCK_SIZE]).hexdigest()
        for i in range(0, len(data), BLOCK_SIZE)
    ]


def content_digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Device:
    id: str
    headers: dict[str, str]


@pytest.fixture
def make_device(client: TestClient) -> Callable[[Account, str], Device]:
    """Register a device and authenticate as it with its device token."""

    def make(account: Account, name: str = "laptop") -> Device:
        created = client.post(f"{V1}/devices", json={"name": name}, headers=account.headers)
        assert created.status_code == 200, created.text
        token = client.post("/api/v1/auth/device", json={"device_token": created.json()["token"]})
        assert token.status_code == 200, token.text
        body = token.json()
        return Device(body["device_id"], {"Authorization": f"Bearer {body['access_token']}"})

    return make


@pytest.fixture
def laptop(alice: Account, make_device: Callable[[Account, str], Device]) -> Device:
    return make_device(alice, "laptop")


def chunk_of(session: Json, data: bytes, index: int) -> bytes:
    size = session["chunk_size"]
    return data[index * size : (index + 1) * size]


class Uploader:
    """Small protocol helpers bound to one client and path prefix."""

    def __init__(self, client: TestClient, prefix: str = V1) -> None:
        self.client = client
        self.prefix = prefix

    def create(
        self,
        device: Device,
        path: str,
        data: bytes,
        *,
        base: int | None = None,
        chunk_size: int | None = 4 * MIB,
        with_blocks: bool = False,
    ) -> httpx.Response:
        body: Json = {
            "path": path,
            "size": len(data),
            "content_hash": hash_bytes(data),
            "base_revision": base,
        }
        if chunk_size is not None:
            body["chunk_size"] = chunk_size
        if with_blocks:
            body["block_hashes"] = block_hashes(data)
        return self.client.post(f"{self.prefix}/upload", json=body, headers=device.headers)

    def session(self, device: Device, path: str, data: bytes, **kwargs: Any) -> Json:
        response = self.create(device, path, data, **kwargs)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def put(
        self,
        device: Device,
        session: Json,
        index: int,
        body: bytes | Iterator[bytes],
        *,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return self.client.put(
            f"{self.prefix}/upload/{session['id']}/chunks/{index}",
            content=body,
            headers={**device.headers, **(headers or {})},
        )

    def put_chunk(
        self, device: Device, session: Json, data: bytes, index: int, **kwargs: Any
    ) -> httpx.Response:
        return self.put(device, session, index, chunk_of(session, data, index), **kwargs)

    def get(self, device: Device, session_id: str) -> httpx.Response:
        return self.client.get(f"{self.prefix}/upload/{session_id}", headers=device.headers)

    def received(self, device: Device, session_id: str) -> list[int]:
        response = self.get(device, session_id)
        assert response.status_code == 200, response.text
        return list(response.json()["received"])

    def complete(self, device: Device, session_id: str) -> httpx.Response:
        return self.client.post(
            f"{self.prefix}/upload/{session_id}/complete", headers=device.headers
        )

    def cancel(self, device: Device, session_id: str) -> httpx.Response:
        return self.client.delete(f"{self.prefix}/upload/{session_id}", headers=device.headers)

    def upload(self, device: Device, path: str, data: bytes, **kwargs: Any) -> Json:
        """Create, send what is missing, complete; answers the complete body."""
        session = self.session(device, path, data, **kwargs)
        for index in range(session["chunk_count"]):
            if index not in session["received"]:
                put = self.put_chunk(device, session, data, index)
                assert put.status_code == 200, put.text
        done = self.complete(device, session["id"])
        assert done.status_code == 200, done.text
        return dict(done.json())


@pytest.fixture
def up(client: TestClient) -> Uploader:
    return Uploader(client)


def stored(app: FastAPI, content_hash: str) -> bytes:
    """The bytes of a stored content, after checking its file hashes right (or,
    for small content, stored in the database, its bytes)."""
    inline = inline_bytes(app, content_hash)
    if inline is not None:
        assert hash_bytes(inline) == content_hash
        return inline
    path = app.state.services.blobs.object_path(content_hash)
    assert hash_file(path) == content_hash
    return bytes(path.read_bytes())


def session_file(app: FastAPI, session_id: str) -> Path:
    return Path(app.state.services.blobs.session_path(session_id))


def problem(response: httpx.Response, status: int, code: str) -> Json:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = dict(response.json())
    assert body["code"] == code, body
    assert body["status"] == status
    return body


def _pieces(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    """A body without Content-Length (chunked transfer encoding)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


# -- the whole flow -----------------------------------------------------------


@pytest.mark.parametrize("prefix", [V1, ALIAS])
def test_chunks_in_reverse_order_complete_and_complete_again(
    app: FastAPI, client: TestClient, laptop: Device, prefix: str
) -> None:
    up = Uploader(client, prefix)
    data = payload(10 * MIB + 123, seed=1)
    session = up.session(laptop, "books/novel.epub", data)
    assert session["chunk_size"] == 4 * MIB
    assert session["chunk_count"] == 3
    assert session["received"] == []
    assert session["status"] == "pending"
    assert session["path"] == "books/novel.epub"
    assert session["size"] == len(data)
    assert session["content_hash"] == hash_bytes(data)
    assert session_file(app, session["id"]).is_file()

    for index in (2, 1, 0):
        chunk = chunk_of(session, data, index)
        put = up.put(
            laptop, session, index, chunk, headers={"Content-Digest": content_digest(chunk)}
        )
        assert put.status_code == 200, put.text
        assert put.json() == {
            "index": index,
            "size": len(chunk),
            "received_count": 3 - index,
            "chunk_count": 3,
        }
        assert up.received(laptop, session["id"]) == list(range(index, 3))

    done = up.complete(laptop, session["id"])
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["session"]["id"] == session["id"]
    assert body["session"]["status"] == "completed"
    assert body["session"]["received"] == [0, 1, 2]
    result = body["result"]
    assert (result["status"], result["path"], result["revision"]) == (
        "applied",
        "books/novel.epub",
        1,
    )
    assert result["id"]
    assert result["seq"] >= 1
    assert stored(app, session["content_hash"]) == data
    assert not session_file(app, session["id"]).exists()

    # The same answer again, and the session reads as completed.
    again = up.complete(laptop, session["id"])
    assert again.status_code == 200
    assert again.json() == body
    assert up.get(laptop, session["id"]).json()["status"] == "completed"
    # The library holds it once: the feed shows one revision of the path.
    feed = client.get(f"{prefix}/changes", headers=laptop.headers).json()["changes"]
    assert [(c["path"], c["revision"], c["content_hash"]) for c in feed] == [
        ("books/novel.epub", 1, session["content_hash"])
    ]


def test_session_shape_chunk_size_and_expiry(app: FastAPI, up: Uploader, laptop: Device) -> None:
    data = payload(20 * MIB, seed=3)
    # chunk_size: a multiple of 4 MiB in 4..64 MiB, default 8 MiB, and binding.
    for n, (requested, expected) in enumerate(
        [(None, 8 * MIB), (1, 4 * MIB), (5 * MIB, 8 * MIB), (12 * MIB, 12 * MIB), (2**40, 64 * MIB)]
    ):
        session = up.session(laptop, f"clamp/{n}.bin", data, chunk_size=requested)
        assert session["chunk_size"] == expected, requested
        assert session["chunk_count"] == -(-len(data) // expected)
        problem(
            up.put(laptop, session, 0, data[: 4 * MIB] if expected != 4 * MIB else data[:1]),
            400,
            "invalid_request",
        )
        # Idle sessions expire after 24 hours by default.
        assert timestamp(session["expires_at"]) - timestamp(session["created_at"]) == timedelta(
            hours=24
        )
    # A small file is one chunk holding all of it.
    small = payload(1000, seed=2)
    done = up.upload(laptop, "small.bin", small, chunk_size=None)
    assert (done["session"]["chunk_size"], done["session"]["chunk_count"]) == (8 * MIB, 1)
    assert stored(app, hash_bytes(small)) == small
    assert inline_bytes(app, hash_bytes(small)) == small  # small: stored in the database
    # An empty file has no chunk at all.
    empty = up.session(laptop, "empty.txt", b"")
    assert (empty["chunk_count"], empty["received"]) == (0, [])
    completed = up.complete(laptop, empty["id"])
    assert completed.status_code == 200, completed.text
    assert completed.json()["result"]["status"] == "applied"


def test_same_device_path_and_content_resume_the_pending_session(
    up: Uploader,
    laptop: Device,
    alice: Account,
    make_device: Callable[[Account, str], Device],
) -> None:
    data = payload(5 * MIB, seed=4)
    first = up.session(laptop, "same.bin", data)
    assert up.put_chunk(laptop, first, data, 1).status_code == 200
    again = up.session(laptop, "same.bin", data)
    assert again["id"] == first["id"]
    assert again["received"] == [1]  # resume from here
    # Another path, other content or another device: a new session.
    assert up.session(laptop, "other.bin", data)["id"] != first["id"]
    assert up.session(laptop, "same.bin", payload(5 * MIB, seed=5))["id"] != first["id"]
    desktop = make_device(alice, "desktop")
    assert up.session(desktop, "same.bin", data)["id"] != first["id"]
    # Once completed, the same request opens a new session (nothing pending is left).
    assert up.put_chunk(laptop, first, data, 0).status_code == 200
    assert up.complete(laptop, first["id"]).status_code == 200
    later = up.session(laptop, "same.bin", data, base=1)
    assert later["id"] != first["id"]
    # ...which needs no bytes: the user holds that content now.
    assert later["received"] == [0, 1]


def test_parallel_chunk_puts_and_completes(
    app: FastAPI, db: Database, up: Uploader, laptop: Device
) -> None:
    data = payload(22 * MIB + 5, seed=6)
    session = up.session(laptop, "parallel.bin", data)
    assert session["chunk_count"] == 6
    start = threading.Barrier(6)

    def send(index: int) -> httpx.Response:
        start.wait(timeout=30)
        return up.put_chunk(laptop, session, data, index)

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(send, range(6)))
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    assert sorted(r.json()["index"] for r in responses) == list(range(6))
    assert max(r.json()["received_count"] for r in responses) == 6
    assert up.received(laptop, session["id"]) == list(range(6))

    # Two completes at once: one lands the change, both answer the same.
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda _: up.complete(laptop, session["id"]), range(2)))
    assert [d.status_code for d in done] == [200, 200], [d.text for d in done]
    assert done[0].json() == done[1].json()
    assert done[0].json()["result"]["revision"] == 1
    assert stored(app, session["content_hash"]) == data
    with db.read() as tx:
        rows = tx.execute(sa.select(contents.c.content_hash)).all()
    assert [r[0] for r in rows] == [session["content_hash"]]


# -- chunk rules --------------------------------------------------------------


def test_resent_chunks_and_content_digest(app: FastAPI, up: Uploader, laptop: Device) -> None:
    data = payload(9 * MIB, seed=7)
    session = up.session(laptop, "resend.bin", data)
    chunk = chunk_of(session, data, 0)

    # A wrong Content-Digest: 400, and nothing is kept.
    wrong = content_digest(chunk[:-1] + b"!")
    problem(
        up.put(laptop, session, 0, chunk, headers={"Content-Digest": wrong}), 400, "digest_mismatch"
    )
    assert up.received(laptop, session["id"]) == []
    # A malformed one is a bad request; one naming other algorithms only is ignored.
    problem(
        up.put(laptop, session, 0, chunk, headers={"Content-Digest": "sha-256=:nope:"}),
        400,
        "invalid_request",
    )
    sha512 = "sha-512=:" + base64.b64encode(hashlib.sha512(b"x").digest()).decode() + ":"
    only_other = up.put_chunk(laptop, session, data, 1, headers={"Content-Digest": sha512})
    assert only_other.status_code == 200, only_other.text
    # The right digest among others.
    good = up.put(
        laptop, session, 0, chunk, headers={"Content-Digest": f"{sha512}, {content_digest(chunk)}"}
    )
    assert good.status_code == 200, good.text
    assert good.json()["received_count"] == 2

    # The same bytes again: 200, nothing changes.
    again = up.put_chunk(laptop, session, data, 0)
    assert again.status_code == 200, again.text
    assert again.json() == {"index": 0, "size": 4 * MIB, "received_count": 2, "chunk_count": 3}
    # Other bytes for a received index: 409 (also with a matching digest, also streamed).
    flipped = bytearray(chunk)
    flipped[12345] ^= 0xFF
    other = bytes(flipped)
    problem(up.put(laptop, session, 0, other), 409, "chunk_conflict")
    problem(
        up.put(laptop, session, 0, other, headers={"Content-Digest": content_digest(other)}),
        409,
        "chunk_conflict",
    )
    problem(up.put(laptop, session, 0, _pieces(other)), 409, "chunk_conflict")
    # A bad digest on a received chunk changes nothing either.
    problem(
        up.put(laptop, session, 0, chunk, headers={"Content-Digest": wrong}), 400, "digest_mismatch"
    )
    assert up.received(laptop, session["id"]) == [0, 1]

    # The original bytes stayed: the upload completes with them.
    body = up.upload(laptop, "resend.bin", data)
    assert body["session"]["id"] == session["id"]
    assert stored(app, session["content_hash"]) == data


def test_chunks_are_checked_against_the_declared_block_hashes(
    app: FastAPI, up: Uploader, laptop: Device
) -> None:
    """A session created with block_hashes checks every block of a chunk of any
    size against them, without a Content-Digest: other bytes are 400, nothing kept."""
    data = payload(2 * 8 * MIB + 3 * MIB, seed=17)  # 8 MiB chunks of 2 blocks, short tail
    session = up.session(laptop, "declared.bin", data, chunk_size=8 * MIB, with_blocks=True)
    assert session["chunk_count"] == 3
    blobs = app.state.services.blobs
    assert blobs.declared_path(session["id"]).is_file()
    for index in (0, 2):
        chunk = bytearray(chunk_of(session, data, index))
        chunk[-1] ^= 0x01  # the chunk's last block differs
        problem(up.put(laptop, session, index, bytes(chunk)), 400, "digest_mismatch")
        # Streamed, too.
        problem(up.put(laptop, session, index, _pieces(bytes(chunk))), 400, "digest_mismatch")
    assert up.received(laptop, session["id"]) == []
    for index in range(3):
        put = up.put_chunk(laptop, session, data, index)
        assert put.status_code == 200, put.text
    done = up.complete(laptop, session["id"])
    assert done.status_code == 200, done.text
    assert stored(app, hash_bytes(data)) == data
    assert list(blobs.uploads.iterdir()) == []  # the declared digests went with it

    # Cancelling removes them too.
    other = payload(9 * MIB, seed=18)
    cancelled = up.session(laptop, "cancelled.bin", other, with_blocks=True)
    assert blobs.declared_path(cancelled["id"]).is_file()
    assert up.cancel(laptop, cancelled["id"]).status_code == 204
    assert list(blobs.uploads.iterdir()) == []


def test_wrong_length_or_index_is_400(app: FastAPI, up: Uploader, laptop: Device) -> None:
    data = payload(9 * MIB, seed=9)
    session = up.session(laptop, "length.bin", data)
    first, last = chunk_of(session, data, 0), chunk_of(session, data, 2)
    assert len(last) == 1 * MIB
    problem(up.put(laptop, session, 0, first[:-1]), 400, "invalid_request")
    problem(up.put(laptop, session, 0, first + b"x"), 400, "invalid_request")
    problem(up.put(laptop, session, 2, last + b"x"), 400, "invalid_request")
    problem(up.put(laptop, session, 2, last[:-1]), 400, "invalid_request")
    problem(up.put(laptop, session, 2, first), 400, "invalid_request")
    problem(up.put(laptop, session, 2, b""), 400, "invalid_request")
    # Without Content-Length (chunked transfer) the length is checked as it streams.
    problem(up.put(laptop, session, 0, _pieces(first[:-10])), 400, "invalid_request")
    problem(up.put(laptop, session, 0, _pieces(first + b"extra")), 400, "invalid_request")
    # The index must be in range.
    problem(up.put(laptop, session, 3, last), 400, "invalid_request")
    problem(up.put(laptop, session, 99, last), 400, "invalid_request")
    problem(up.put(laptop, session, -1, last), 400, "invalid_request")
    problem(
        up.client.put(
            f"{V1}/upload/{session['id']}/chunks/x", content=last, headers=laptop.headers
        ),
        400,
        "invalid_request",
    )
    assert up.received(laptop, session["id"]) == []
    # Nothing of that was kept and nothing blocks the right bytes now.
    assert up.put(laptop, session, 0, _pieces(first)).status_code == 200
    assert up.put_chunk(laptop, session, data, 1).status_code == 200
    assert up.put_chunk(laptop, session, data, 2).status_code == 200
    assert up.complete(laptop, session["id"]).status_code == 200
    assert stored(app, session["content_hash"]) == data


def test_unknown_and_other_users_sessions_are_404(
    up: Uploader,
    laptop: Device,
    bob: Account,
    make_device: Callable[[Account, str], Device],
) -> None:
    data = payload(5 * MIB, seed=10)
    session = up.session(laptop, "mine.bin", data)
    phone = make_device(bob, "phone")
    unknown = {**session, "id": "00000000-0000-4000-8000-000000000000"}
    for who, target in ((laptop, unknown), (phone, session)):
        problem(up.get(who, target["id"]), 404, "not_found")
        problem(up.put_chunk(who, target, data, 0), 404, "not_found")
        problem(up.complete(who, target["id"]), 404, "not_found")
        problem(up.cancel(who, target["id"]), 404, "not_found")
    problem(up.get(laptop, "not-a-uuid"), 404, "not_found")
    # Bob's attempts did nothing to alice's session.
    assert up.received(laptop, session["id"]) == []
    assert up.get(laptop, session["id"]).json()["status"] == "pending"
    assert up.put_chunk(laptop, session, data, 0).status_code == 200


def test_missing_chunks_then_hash_mismatch_fails_the_session(
    app: FastAPI, up: Uploader, laptop: Device
) -> None:
    data = payload(10 * MIB, seed=11)
    lie = payload(10 * MIB, seed=12)  # the same length, other bytes
    session = up.session(laptop, "lie.bin", data)
    assert up.put_chunk(laptop, session, lie, 1).status_code == 200
    missing = problem(up.complete(laptop, session["id"]), 400, "missing_chunks")
    assert missing["missing_chunks"] == [0, 2]
    assert up.put_chunk(laptop, session, lie, 0).status_code == 200
    missing = problem(up.complete(laptop, session["id"]), 400, "missing_chunks")
    assert missing["missing_chunks"] == [2]
    assert up.put_chunk(laptop, session, lie, 2).status_code == 200

    problem(up.complete(laptop, session["id"]), 400, "hash_mismatch")
    assert up.get(laptop, session["id"]).json()["status"] == "failed"
    assert not session_file(app, session["id"]).exists()
    assert not app.state.services.blobs.has(session["content_hash"])
    assert not app.state.services.blobs.has(hash_bytes(lie))
    # The same answer again; the session takes no more chunks.
    problem(up.complete(laptop, session["id"]), 400, "hash_mismatch")
    problem(up.put_chunk(laptop, session, data, 0), 409, "upload_not_pending")
    # Nothing reached the library.
    assert up.client.get(f"{V1}/changes", headers=laptop.headers).json()["changes"] == []
    # A new session for the same file starts from nothing and works.
    fresh = up.session(laptop, "lie.bin", data)
    assert fresh["id"] != session["id"]
    assert fresh["received"] == []
    assert up.upload(laptop, "lie.bin", data)["result"]["status"] == "applied"
    assert stored(app, session["content_hash"]) == data


def test_complete_does_not_read_the_content_again(
    app: FastAPI, up: Uploader, laptop: Device
) -> None:
    """The hash check at `complete` uses the block digests taken while each chunk
    streamed to disk. Shown by changing the session file behind the server's back
    after the chunks were acknowledged: complete reads none of it, so it neither
    notices nor fails (a real client cannot do this; the test reaches into the disk)."""
    data = payload(5 * MIB, seed=140)
    session = up.session(laptop, "trusted.bin", data)
    for index in (0, 1):
        assert up.put_chunk(laptop, session, data, index).status_code == 200
    with session_file(app, session["id"]).open("r+b") as fh:
        fh.seek(4 * MIB + 10)
        fh.write(b"\0" * 16)
    done = up.complete(laptop, session["id"])
    assert done.status_code == 200, done.text
    assert done.json()["result"]["status"] == "applied"
    on_disk = app.state.services.blobs.object_path(session["content_hash"]).read_bytes()
    assert len(on_disk) == len(data)
    assert on_disk[: 4 * MIB + 10] == data[: 4 * MIB + 10]
    assert on_disk[4 * MIB + 10 : 4 * MIB + 26] == b"\0" * 16


# -- through the engine -------------------------------------------------------


def test_stale_base_becomes_a_conflict_whose_content_is_held(
    app: FastAPI,
    client: TestClient,
    up: Uploader,
    laptop: Device,
    alice: Account,
    make_device: Callable[[Account, str], Device],
) -> None:
    desktop = make_device(alice, "desktop")
    for path, resolution, seed in (
        ("notes/plan.txt", "keep_client", 20),
        ("notes/list.md", "keep_both", 30),
    ):
        v1, v2, v3 = (payload(MIB + n, seed=seed + n) for n in range(3))
        first = up.upload(laptop, path, v1)["result"]
        assert (first["status"], first["revision"]) == ("applied", 1)
        second = up.upload(laptop, path, v2, base=1)["result"]
        assert (second["status"], second["revision"]) == ("applied", 2)
        # The desktop edited revision 1 meanwhile.
        done = up.upload(desktop, path, v3, base=1)
        result = done["result"]
        assert result["status"] == "conflict", result
        assert result["conflict_id"]
        assert done["session"]["status"] == "completed"
        assert stored(app, hash_bytes(v3)) == v3
        again = up.complete(desktop, done["session"]["id"])
        assert again.status_code == 200
        assert again.json() == done

        listed = client.get(f"{V1}/conflicts", headers=alice.headers).json()["conflicts"]
        (conflict,) = [c for c in listed if c["path"] == path]
        assert conflict["id"] == result["conflict_id"]
        assert conflict["device_id"] == desktop.id
        assert conflict["base_revision"] == 1
        assert conflict["server"]["revision"] == 2
        assert conflict["client"]["content_hash"] == hash_bytes(v3)
        assert conflict["client"]["content_available"] is True

        resolved = client.post(
            f"{V1}/conflicts/{conflict['id']}/resolve",
            json={"resolution": resolution},
            headers=alice.headers,
        )
        assert resolved.status_code == 200, resolved.text
        changes = {c["path"]: c for c in resolved.json()["changes"]}
        if resolution == "keep_client":
            assert changes[path]["content_hash"] == hash_bytes(v3)
            assert changes[path]["revision"] == 3
        else:
            beside = changes[conflict["suggested_path"]]
            assert beside["content_hash"] == hash_bytes(v3)
            assert path not in changes  # the library version stays

    # The same state from another device that believed the path absent: unchanged.
    same = payload(MIB, seed=40)
    assert up.upload(laptop, "same.txt", same)["result"]["revision"] == 1
    result = up.upload(desktop, "same.txt", same)["result"]
    assert (result["status"], result["revision"]) == ("unchanged", 1)


# -- dedupe and delta ---------------------------------------------------------


def test_delta_and_dedupe_send_only_what_the_user_lacks(
    app: FastAPI, db: Database, up: Uploader, laptop: Device
) -> None:
    old = payload(12 * MIB, seed=50)  # three 4 MiB blocks
    assert up.upload(laptop, "video.mkv", old, with_blocks=True)["result"]["revision"] == 1

    # Edited inside its first 4 MiB: only chunk 0 travels.
    new = bytearray(old)
    new[100:200] = b"\x00" * 100
    edited = bytes(new)
    session = up.session(laptop, "video.mkv", edited, base=1, with_blocks=True)
    assert (session["chunk_size"], session["chunk_count"]) == (4 * MIB, 3)
    assert session["received"] == [1, 2]
    # A reused chunk behaves like a received one: same bytes 200, others 409.
    assert up.put_chunk(laptop, session, edited, 2).status_code == 200
    problem(up.put_chunk(laptop, session, payload(12 * MIB, seed=51), 2), 409, "chunk_conflict")
    problem(up.complete(laptop, session["id"]), 400, "missing_chunks")
    put = up.put_chunk(laptop, session, edited, 0)
    assert put.status_code == 200, put.text
    assert put.json()["received_count"] == 3
    done = up.complete(laptop, session["id"])
    assert done.status_code == 200, done.text
    assert (done.json()["result"]["status"], done.json()["result"]["revision"]) == ("applied", 2)
    assert stored(app, hash_bytes(edited)) == edited
    assert stored(app, hash_bytes(old)) == old

    # An uneven tail, 8 MiB chunks, the old one uploaded without block_hashes:
    # chunk 0 = blocks 0-1 (known), chunk 1 = block 2 (new).
    doc = payload(10 * MIB + 77, seed=52)
    up.upload(laptop, "doc.pdf", doc)
    tail = doc[: 8 * MIB] + payload(2 * MIB + 77, seed=53)
    session = up.session(laptop, "doc.pdf", tail, base=1, chunk_size=None, with_blocks=True)
    assert (session["chunk_size"], session["received"]) == (8 * MIB, [0])
    assert up.put_chunk(laptop, session, tail, 1).status_code == 200
    assert up.complete(laptop, session["id"]).json()["result"]["revision"] == 2
    assert stored(app, hash_bytes(tail)) == tail
    # Known blocks are found wherever they were: swapped halves need no bytes.
    swapped = doc[4 * MIB : 8 * MIB] + doc[: 4 * MIB]
    session = up.session(laptop, "swapped.pdf", swapped, with_blocks=True)
    assert session["received"] == [0, 1]
    assert up.complete(laptop, session["id"]).status_code == 200
    assert stored(app, hash_bytes(swapped)) == swapped

    # Content the user already has: every chunk at once, and no session file.
    session = up.session(laptop, "copies/video.mkv", edited)
    assert session["received"] == [0, 1, 2]
    assert not session_file(app, session["id"]).exists()
    # Sent anyway: the same bytes are fine, other bytes are refused as for any
    # received chunk.
    assert up.put_chunk(laptop, session, edited, 1).status_code == 200
    assert up.put_chunk(laptop, session, edited, 0).status_code == 200
    problem(up.put_chunk(laptop, session, old, 0), 409, "chunk_conflict")
    done = up.complete(laptop, session["id"])
    assert done.status_code == 200, done.text
    assert (done.json()["result"]["status"], done.json()["result"]["path"]) == (
        "applied",
        "copies/video.mkv",
    )

    # No record points at missing bytes, and nothing is left in the upload area.
    with db.read() as tx:
        hashes = {str(r[0]) for r in tx.execute(sa.select(contents.c.content_hash))}
    assert hashes == {hash_bytes(b) for b in (old, edited, doc, tail, swapped)}
    for content_hash in hashes:
        assert hash_file(app.state.services.blobs.object_path(content_hash)) == content_hash
    assert list(app.state.services.blobs.uploads.iterdir()) == []


def test_another_users_content_gives_nothing_away(
    app: FastAPI,
    up: Uploader,
    laptop: Device,
    bob: Account,
    make_device: Callable[[Account, str], Device],
) -> None:
    data = payload(9 * MIB, seed=60)
    up.upload(laptop, "secret.bin", data, with_blocks=True)
    phone = make_device(bob, "phone")
    session = up.session(phone, "guess.bin", data, with_blocks=True)
    assert session["received"] == []
    assert session_file(app, session["id"]).is_file()
    # Partly the same blocks, without block_hashes: still nothing.
    mixed = data[: 4 * MIB] + payload(MIB, seed=61)
    assert up.session(phone, "mixed.bin", mixed, with_blocks=True)["received"] == []
    assert up.session(phone, "plain.bin", data)["received"] == []
    # Bob must send every byte; his upload then lands in his own library.
    done = up.upload(phone, "guess.bin", data)
    assert done["session"]["id"] == session["id"]
    assert (done["result"]["status"], done["result"]["revision"]) == ("applied", 1)
    assert stored(app, session["content_hash"]) == data
    # Alice's library is untouched by it.
    feed = up.client.get(f"{V1}/changes", headers=laptop.headers).json()["changes"]
    assert [c["path"] for c in feed] == ["secret.bin"]


# -- cancel and expiry --------------------------------------------------------


def test_cancel_removes_the_session_and_its_data(
    app: FastAPI, up: Uploader, laptop: Device
) -> None:
    data = payload(5 * MIB, seed=70)
    session = up.session(laptop, "cancel.bin", data)
    assert up.put_chunk(laptop, session, data, 0).status_code == 200
    assert session_file(app, session["id"]).is_file()
    cancelled = up.cancel(laptop, session["id"])
    assert cancelled.status_code == 204
    assert cancelled.content == b""
    assert not session_file(app, session["id"]).exists()
    problem(up.get(laptop, session["id"]), 404, "not_found")
    problem(up.put_chunk(laptop, session, data, 1), 404, "not_found")
    problem(up.complete(laptop, session["id"]), 404, "not_found")
    problem(up.cancel(laptop, session["id"]), 404, "not_found")
    # The same file again: a fresh session.
    fresh = up.session(laptop, "cancel.bin", data)
    assert fresh["id"] != session["id"]
    assert fresh["received"] == []


def _expire_now(db: Database, session_id: str) -> None:
    with db.write() as tx:
        tx.execute(
            upload_sessions.update()
            .where(upload_sessions.c.id == session_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


@with_settings(upload_expiry_s=3600)
def test_expired_sessions_are_410_and_their_data_removed(
    app: FastAPI, db: Database, up: Uploader, laptop: Device
) -> None:
    data = payload(5 * MIB, seed=82)
    session = up.session(laptop, "old.bin", data)
    # The expiry period is configurable.
    assert timestamp(session["expires_at"]) - timestamp(session["created_at"]) == timedelta(hours=1)
    keep = up.session(laptop, "fresh.bin", data)
    assert up.put_chunk(laptop, session, data, 0).status_code == 200
    # A chunk pushes the expiry forward.
    moved = up.get(laptop, session["id"]).json()["expires_at"]
    assert timestamp(moved) >= timestamp(session["expires_at"])

    _expire_now(db, session["id"])
    problem(up.put_chunk(laptop, session, data, 1), 410, "upload_expired")
    problem(up.complete(laptop, session["id"]), 410, "upload_expired")

    assert app.state.services.uploads.expire_idle() == 1
    assert not session_file(app, session["id"]).exists()
    assert session_file(app, keep["id"]).is_file()
    with db.read() as tx:
        chunk_rows = tx.execute(
            sa.select(sa.func.count())
            .select_from(upload_chunks)
            .where(upload_chunks.c.session_id == session["id"])
        ).scalar_one()
    assert chunk_rows == 0
    shown = up.get(laptop, session["id"])
    assert shown.status_code == 200
    assert (shown.json()["status"], shown.json()["received"]) == ("expired", [])
    problem(up.put_chunk(laptop, session, data, 1), 410, "upload_expired")
    problem(up.complete(laptop, session["id"]), 410, "upload_expired")
    # Housekeeping again finds nothing; a new session for the same file starts afresh.
    assert app.state.services.uploads.expire_idle() == 0
    fresh = up.session(laptop, "old.bin", data)
    assert fresh["id"] != session["id"]
    assert fresh["received"] == []
    # The other session was not touched.
    assert up.upload(laptop, "fresh.bin", data)["session"]["id"] == keep["id"]
    assert stored(app, hash_bytes(data)) == data


# -- limits -------------------------------------------------------------------


@with_settings(max_file_size_bytes=5 * MIB, max_sessions_per_device=2)
def test_too_large_is_413_and_too_many_sessions_429(
    up: Uploader, laptop: Device, alice: Account, make_device: Callable[[Account, str], Device]
) -> None:
    problem(up.create(laptop, "big.bin", payload(5 * MIB + 1, seed=90)), 413, "too_large")
    files = [payload(1000, seed=100 + n) for n in range(4)]
    first = up.session(laptop, "0.bin", files[0])
    up.session(laptop, "1.bin", payload(5 * MIB, seed=90))  # the maximum size is fine
    refused = up.create(laptop, "2.bin", files[2])
    problem(refused, 429, "too_many_sessions")
    assert int(refused.headers["Retry-After"]) > 0
    # The same file again is its pending session, not a new one.
    assert up.session(laptop, "0.bin", files[0])["id"] == first["id"]
    # The limit is per device.
    assert up.create(make_device(alice, "desktop"), "2.bin", files[2]).status_code == 200
    # Finishing or cancelling one frees a slot.
    assert up.put_chunk(laptop, first, files[0], 0).status_code == 200
    assert up.complete(laptop, first["id"]).status_code == 200
    second = up.session(laptop, "2.bin", files[2])
    problem(up.create(laptop, "3.bin", files[3]), 429, "too_many_sessions")
    assert up.cancel(laptop, second["id"]).status_code == 204
    assert up.create(laptop, "3.bin", files[3]).status_code == 200


@with_settings(quota_bytes=10 * MIB, max_file_size_bytes=2**50)
def test_quota_is_507(
    up: Uploader,
    laptop: Device,
    bob: Account,
    make_device: Callable[[Account, str], Device],
) -> None:
    # Beyond 10,000 chunks of 64 MiB no chunk size fits, whatever the size limit.
    beyond = {
        "path": "huge.bin",
        "size": 10_000 * 64 * MIB + 1,
        "content_hash": "ab" * 32,
        "base_revision": None,
    }
    problem(up.client.post(f"{V1}/upload", json=beyond, headers=laptop.headers), 413, "too_large")
    a, b = payload(6 * MIB, seed=110), payload(5 * MIB, seed=111)
    up.upload(laptop, "a.bin", a)
    problem(up.create(laptop, "b.bin", b), 507, "insufficient_storage")
    # Content already held costs nothing: a copy fits.
    assert up.upload(laptop, "copy-of-a.bin", a)["result"]["status"] == "applied"
    # Pending uploads count too.
    up.session(laptop, "small.bin", payload(3 * MIB, seed=112))
    problem(up.create(laptop, "more.bin", payload(2 * MIB, seed=113)), 507, "insufficient_storage")
    assert up.create(laptop, "tiny.bin", payload(MIB, seed=114)).status_code == 200
    # The quota is per user.
    assert up.create(make_device(bob, "phone"), "b.bin", b).status_code == 200


# -- requests -----------------------------------------------------------------


def test_creation_validates(up: Uploader, laptop: Device, alice: Account) -> None:
    data = payload(9 * MIB, seed=120)
    base: Json = {
        "path": "x.bin",
        "size": len(data),
        "content_hash": hash_bytes(data),
        "base_revision": None,
    }

    def post(body: Json, headers: dict[str, str] = laptop.headers) -> httpx.Response:
        return up.client.post(f"{V1}/upload", json=body, headers=headers)

    problem(post({**base, "path": "../escape"}), 400, "invalid_path")
    problem(post({**base, "block_hashes": block_hashes(data)[:2]}), 400, "invalid_request")
    other_blocks = block_hashes(payload(9 * MIB, seed=121))
    problem(post({**base, "block_hashes": other_blocks}), 400, "invalid_request")
    problem(post({**base, "content_hash": "A" * 64}), 400, "invalid_request")
    problem(post({**base, "size": -1}), 400, "invalid_request")
    problem(post({**base, "size": 0}), 400, "invalid_request")  # not the empty hash
    problem(post({**base, "chunk_size": 0}), 400, "invalid_request")
    problem(post({"path": "x.bin"}), 400, "invalid_request")
    # A user token names no device...
    problem(post(base, alice.headers), 400, "device_required")
    # ...unless X-Device-ID names one of the user's devices.
    with_header = post(base, {**alice.headers, "X-Device-ID": laptop.id})
    assert with_header.status_code == 200, with_header.text


# -- small content is stored in the database -----------------------------------------


BATCH = "application/vnd.shelfsync.batch"


def inline_bytes(app: FastAPI, content_hash: str) -> bytes | None:
    with app.state.services.db.read() as tx:
        data: bytes | None = ContentRepository(tx).inline_one(content_hash)
    return data


def batch_upload(client: TestClient, device: Device, files: list[tuple[str, bytes]]) -> list[Json]:
    manifest = json.dumps(
        {
            "files": [
                {"path": p, "size": len(d), "content_hash": hash_bytes(d), "base_revision": None}
                for p, d in files
            ]
        }
    ).encode()
    body = struct.pack(">I", len(manifest)) + manifest + b"".join(d for _, d in files)
    response = client.post(
        f"{V1}/upload/batch", content=body, headers={**device.headers, "Content-Type": BATCH}
    )
    assert response.status_code == 200, response.text
    results: list[Json] = response.json()["results"]
    return results


def content_data_rows(db: Database) -> int:
    with db.read() as tx:
        return int(tx.exec_driver_sql("SELECT count(*) FROM content_data").scalar_one())


def test_a_small_session_is_stored_inline_at_complete(
    app: FastAPI, db: Database, up: Uploader, laptop: Device
) -> None:
    small = payload(50_000, seed=70)
    session = up.session(laptop, "small.bin", small)
    assert up.put_chunk(laptop, session, small, 0).status_code == 200
    done = up.complete(laptop, session["id"])
    assert done.status_code == 200, done.text
    assert done.json()["result"]["status"] == "applied"
    assert inline_bytes(app, hash_bytes(small)) == small
    assert not app.state.services.blobs.has(hash_bytes(small))
    assert not session_file(app, session["id"]).exists()
    # Complete again answers the same; the download finds the bytes.
    assert up.complete(laptop, session["id"]).json() == done.json()
    got = up.client.get(f"{V1}/download/small.bin", headers=laptop.headers)
    assert got.content == small
    assert list(app.state.services.blobs.uploads.iterdir()) == []
    assert content_data_rows(db) == 1


def test_inline_content_is_stored_once_across_batch_and_session_uploads(
    app: FastAPI,
    db: Database,
    client: TestClient,
    up: Uploader,
    laptop: Device,
    bob: Account,
    make_device: Callable[[Account, str], Device],
) -> None:
    bobs = make_device(bob, "bobs")
    first, second = payload(3000, seed=71), payload(4000, seed=72)
    # Batch first, then sessions: alice's own session is deduplicated at once;
    # bob sends the bytes (dedupe never crosses users) and nothing new is stored.
    assert batch_upload(client, laptop, [("a", first)])[0]["status"] == "applied"
    mine = up.session(laptop, "again", first)
    assert mine["received"] == [0]  # deduplicated: nothing to send
    assert up.complete(laptop, mine["id"]).status_code == 200
    assert up.upload(bobs, "b", first)["result"]["status"] == "applied"
    # A session first, then a batch of the same content by another user.
    assert up.upload(bobs, "c", second)["result"]["status"] == "applied"
    assert batch_upload(client, laptop, [("d", second)])[0]["status"] == "applied"

    assert content_data_rows(db) == 2
    with db.read() as tx:
        holders = tx.exec_driver_sql("SELECT count(*) FROM user_contents").scalar_one()
    assert holders == 4
    for content in (first, second):
        assert inline_bytes(app, hash_bytes(content)) == content
        assert not app.state.services.blobs.has(hash_bytes(content))
    for device, path, content in (
        (laptop, "again", first),
        (bobs, "b", first),
        (bobs, "c", second),
        (laptop, "d", second),
    ):
        assert client.get(f"{V1}/download/{path}", headers=device.headers).content == content
    assert list(app.state.services.blobs.uploads.iterdir()) == []


def test_a_delta_upload_reuses_a_block_of_inline_content(
    app: FastAPI, db: Database, client: TestClient, up: Uploader, laptop: Device
) -> None:
    """A new file whose last 4 MiB block is a small file's whole content: that
    block is copied server-side from the database."""
    small = payload(20_000, seed=73)
    assert batch_upload(client, laptop, [("small.txt", small)])[0]["status"] == "applied"
    assert inline_bytes(app, hash_bytes(small)) == small
    big = payload(4 * MIB, seed=74) + small
    session = up.session(laptop, "big.bin", big, with_blocks=True)
    assert session["received"] == [1]
    assert up.put_chunk(laptop, session, big, 0).status_code == 200
    done = up.complete(laptop, session["id"])
    assert done.status_code == 200, done.text
    assert stored(app, hash_bytes(big)) == big
    assert client.get(f"{V1}/download/big.bin", headers=laptop.headers).content == big
