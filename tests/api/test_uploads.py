"""Chunked, resumable uploads (protocol section 9), on SQLite and PostgreSQL.

Files are a few MiB (chunks are at least 4 MiB), generated from fixed seeds.
Stored content is checked by reading the object file the blob store names.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
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
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.tables import contents, upload_chunks, upload_sessions
from tests.api.conftest import Account

MIB = 1024 * 1024
V1 = "/api/v1/sync"
ALIAS = "/api/sync"


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    """As in conftest, plus per-test limits through indirect parametrization."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    return Settings(data_dir=tmp_path / "data", database_url=database_url, **overrides)


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


class Uploader:
    """Small protocol helpers bound to one client and prefix."""

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
        **extra: Any,
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "path": path,
            "size": len(data),
            "content_hash": hash_bytes(data),
            "base_revision": base,
            **extra,
        }
        if chunk_size is not None:
            body["chunk_size"] = chunk_size
        if with_blocks:
            body["block_hashes"] = block_hashes(data)
        return self.client.post(f"{self.prefix}/upload", json=body, headers=device.headers)

    def session(self, device: Device, path: str, data: bytes, **kwargs: Any) -> dict[str, Any]:
        response = self.create(device, path, data, **kwargs)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def put(
        self,
        device: Device,
        session: dict[str, Any],
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
        self, device: Device, session: dict[str, Any], data: bytes, index: int, **kwargs: Any
    ) -> httpx.Response:
        return self.put(device, session, index, chunk_of(session, data, index), **kwargs)

    def get(self, device: Device, session_id: str) -> httpx.Response:
        return self.client.get(f"{self.prefix}/upload/{session_id}", headers=device.headers)

    def complete(self, device: Device, session_id: str) -> httpx.Response:
        return self.client.post(
            f"{self.prefix}/upload/{session_id}/complete", headers=device.headers
        )

    def cancel(self, device: Device, session_id: str) -> httpx.Response:
        return self.client.delete(f"{self.prefix}/upload/{session_id}", headers=device.headers)

    def upload(self, device: Device, path: str, data: bytes, **kwargs: Any) -> dict[str, Any]:
        """The whole dance; answers the complete body."""
        session = self.session(device, path, data, **kwargs)
        for index in range(session["chunk_count"]):
            if index not in session["received"]:
                put = self.put_chunk(device, session, data, index)
                assert put.status_code == 200, put.text
        done = self.complete(device, session["id"])
        assert done.status_code == 200, done.text
        return dict(done.json())


def chunk_of(session: dict[str, Any], data: bytes, index: int) -> bytes:
    size = session["chunk_size"]
    return data[index * size : (index + 1) * size]


@pytest.fixture
def up(client: TestClient) -> Uploader:
    return Uploader(client)


def stored(app: FastAPI, content_hash: str) -> bytes:
    path = app.state.services.blobs.object_path(content_hash)
    assert hash_file(path) == content_hash
    return bytes(path.read_bytes())


def session_file(app: FastAPI, session_id: str) -> Path:
    return Path(app.state.services.blobs.session_path(session_id))


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = dict(response.json())
    assert body["code"] == code, body
    return body


# -- the whole flow -----------------------------------------------------------


@pytest.mark.parametrize("prefix", [V1, ALIAS])
def test_upload_in_reverse_order_completes_and_repeats(
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
    assert session_file(app, session["id"]).is_file()

    for index in (2, 1, 0):
        chunk = chunk_of(session, data, index)
        put = up.put(laptop, session, index, chunk, headers={"Content-Digest": content_digest(chunk)})
        assert put.status_code == 200, put.text
        assert put.json() == {
            "index": index,
            "size": len(chunk),
            "received_count": 3 - index,
            "chunk_count": 3,
        }
    status = up.get(laptop, session["id"])
    assert status.status_code == 200
    assert status.json()["received"] == [0, 1, 2]

    done = up.complete(laptop, session["id"])
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["session"]["status"] == "completed"
    assert body["session"]["id"] == session["id"]
    assert body["result"]["status"] == "applied"
    assert body["result"]["path"] == "books/novel.epub"
    assert body["result"]["revision"] == 1
    assert body["result"]["id"]
    assert stored(app, session["content_hash"]) == data
    assert not session_file(app, session["id"]).exists()

    again = up.complete(laptop, session["id"])
    assert again.status_code == 200
    assert again.json() == body
    # The library shows it: the same upsert reported now is unchanged, not a new revision.
    report = client.post(
        f"{prefix}/report",
        json={
            "changes": [
                {
                    "op": "upsert",
                    "path": "books/novel.epub",
                    "content_hash": session["content_hash"],
                    "size": len(data),
                    "base_revision": 1,
                }
            ]
        },
        headers=laptop.headers,
    )
    assert report.status_code == 200, report.text
    assert report.json()["results"][0]["status"] in ("unchanged", "applied")


def test_single_small_chunk_default_chunk_size(app: FastAPI, up: Uploader, laptop: Device) -> None:
    data = payload(1000, seed=2)
    body = up.upload(laptop, "small.bin", data, chunk_size=None)
    assert body["session"]["chunk_size"] == 8 * MIB
    assert body["session"]["chunk_count"] == 1
    assert body["result"]["status"] == "applied"
    assert stored(app, hash_bytes(data)) == data


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(None, 8 * MIB), (1, 4 * MIB), (5 * MIB, 8 * MIB), (12 * MIB, 12 * MIB), (2**40, 64 * MIB)],
)
def test_chunk_size_is_clamped_and_binding(
    up: Uploader, laptop: Device, requested: int | None, expected: int
) -> None:
    data = payload(20 * MIB, seed=3)
    session = up.session(laptop, "clamp.bin", data, chunk_size=requested)
    assert session["chunk_size"] == expected
    assert session["chunk_count"] == -(-len(data) // expected)


def test_same_device_path_and_content_returns_the_pending_session(
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
    # Once completed, the same request opens a new session.
    assert up.put_chunk(laptop, first, data, 0).status_code == 200
    assert up.complete(laptop, first["id"]).status_code == 200
    assert up.session(laptop, "same.bin", data)["id"] != first["id"]


def test_parallel_chunk_puts(app: FastAPI, up: Uploader, laptop: Device) -> None:
    data = payload(22 * MIB + 5, seed=6)
    session = up.session(laptop, "parallel.bin", data)
    assert session["chunk_count"] == 6
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(
            pool.map(lambda i: up.put_chunk(laptop, session, data, i), range(6))
        )
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    assert sorted(r.json()["received_count"] for r in responses)[-1] == 6
    assert up.get(laptop, session["id"]).json()["received"] == list(range(6))
    done = up.complete(laptop, session["id"])
    assert done.status_code == 200, done.text
    assert stored(app, session["content_hash"]) == data


# -- chunk rules --------------------------------------------------------------


def test_resent_chunk_same_bytes_200_other_bytes_409(
    app: FastAPI, up: Uploader, laptop: Device
) -> None:
    data = payload(9 * MIB, seed=7)
    session = up.session(laptop, "resend.bin", data)
    assert up.put_chunk(laptop, session, data, 0).status_code == 200
    again = up.put_chunk(laptop, session, data, 0)
    assert again.status_code == 200, again.text
    assert again.json() == {
        "index": 0,
        "size": 4 * MIB,
        "received_count": 1,
        "chunk_count": 3,
    }
    other = bytearray(chunk_of(session, data, 0))
    other[12345] ^= 0xFF
    problem(up.put(laptop, session, 0, bytes(other)), 409, "chunk_conflict")
    assert up.get(laptop, session["id"]).json()["received"] == [0]
    # The original bytes stay: the upload completes with them.
    body = up.upload(laptop, "resend.bin", data)
    assert body["session"]["id"] == session["id"]
    assert stored(app, session["content_hash"]) == data


def test_content_digest_checked(app: FastAPI, up: Uploader, laptop: Device) -> None:
    data = payload(9 * MIB, seed=8)
    session = up.session(laptop, "digest.bin", data)
    chunk = chunk_of(session, data, 0)
    wrong = content_digest(chunk[:-1] + b"!")
    problem(
        up.put(laptop, session, 0, chunk, headers={"Content-Digest": wrong}),
        400,
        "digest_mismatch",
    )
    assert up.get(laptop, session["id"]).json()["received"] == []  # nothing kept
    problem(
        up.put(laptop, session, 0, chunk, headers={"Content-Digest": "sha-256=:nope:"}),
        400,
        "invalid_request",
    )
    sha512 = "sha-512=:" + base64.b64encode(hashlib.sha512(b"x").digest()).decode() + ":"
    only_other = up.put(laptop, session, 1, chunk_of(session, data, 1), headers={
        "Content-Digest": sha512
    })
    assert only_other.status_code == 200, only_other.text  # unknown algorithms are ignored
    good = up.put(
        laptop,
        session,
        0,
        chunk,
        headers={"Content-Digest": f"{sha512}, {content_digest(chunk)}"},
    )
    assert good.status_code == 200, good.text
    # A bad digest on a received chunk changes nothing either.
    problem(
        up.put(laptop, session, 0, chunk, headers={"Content-Digest": wrong}),
        400,
        "digest_mismatch",
    )
    assert up.get(laptop, session["id"]).json()["received"] == [0, 1]
    assert up.put_chunk(laptop, session, data, 2).status_code == 200
    assert up.complete(laptop, session["id"]).status_code == 200
    assert stored(app, session["content_hash"]) == data


def _pieces(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_wrong_length_or_index_is_400(app: FastAPI, up: Uploader, laptop: Device) -> None:
    data = payload(9 * MIB, seed=9)
    session = up.session(laptop, "length.bin", data)
    first, last = chunk_of(session, data, 0), chunk_of(session, data, 2)
    assert len(last) == 1 * MIB
    problem(up.put(laptop, session, 0, first[:-1]), 400, "invalid_request")
    problem(up.put(laptop, session, 0, first + b"x"), 400, "invalid_request")
    problem(up.put(laptop, session, 2, last + b"x"), 400, "invalid_request")
    problem(up.put(laptop, session, 2, first), 400, "invalid_request")
    problem(up.put(laptop, session, 2, b""), 400, "invalid_request")
    # Without Content-Length (chunked transfer), the length is checked as it streams.
    problem(up.put(laptop, session, 0, _pieces(first[:-10])), 400, "invalid_request")
    problem(up.put(laptop, session, 0, _pieces(first + b"extra")), 400, "invalid_request")
    # Index out of range.
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
    assert up.get(laptop, session["id"]).json()["received"] == []
    # Nothing of that was kept, nothing blocks the right bytes now.
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
    # Bob's attempts did nothing to alice's session.
    assert up.get(laptop, session["id"]).json()["status"] == "pending"
    assert up.put_chunk(laptop, session, data, 0).status_code == 200


def test_missing_chunks_then_hash_mismatch(app: FastAPI, up: Uploader, laptop: Device) -> None:
    data = payload(10 * MIB, seed=11)
    lie = payload(10 * MIB, seed=12)  # the same length, other bytes
    session = up.session(laptop, "lie.bin", data)
    assert up.put_chunk(laptop, session, lie, 1).status_code == 200
    missing = problem(up.complete(laptop, session["id"]), 400, "missing_chunks")
    assert missing["missing_chunks"] == [0, 2]
    assert up.put_chunk(laptop, session, lie, 0).status_code == 200
    assert problem(up.complete(laptop, session["id"]), 400, "missing_chunks")[
        "missing_chunks"
    ] == [2]
    assert up.put_chunk(laptop, session, lie, 2).status_code == 200
    problem(up.complete(laptop, session["id"]), 400, "hash_mismatch")
    failed = up.get(laptop, session["id"]).json()
    assert failed["status"] == "failed"
    assert not session_file(app, session["id"]).exists()
    assert not app.state.services.blobs.has(session["content_hash"])
    assert not app.state.services.blobs.has(hash_bytes(lie))
    # The same answer again; the session takes no more chunks.
    problem(up.complete(laptop, session["id"]), 400, "hash_mismatch")
    problem(up.put_chunk(laptop, session, data, 0), 409, "upload_not_pending")
    # A new session for the same file starts from nothing and works.
    fresh = up.session(laptop, "lie.bin", data)
    assert fresh["id"] != session["id"]
    assert fresh["received"] == []
    assert up.upload(laptop, "lie.bin", data)["result"]["status"] == "applied"
    assert stored(app, session["content_hash"]) == data


# -- through the engine -------------------------------------------------------


@pytest.mark.parametrize("resolution", ["keep_client", "keep_both"])
def test_stale_base_becomes_conflict_with_client_content_held(
    app: FastAPI,
    client: TestClient,
    up: Uploader,
    laptop: Device,
    alice: Account,
    make_device: Callable[[Account, str], Device],
    resolution: str,
) -> None:
    desktop = make_device(alice, "desktop")
    v1, v2, v3 = (payload(MIB + n, seed=20 + n) for n in range(3))
    first = up.upload(laptop, "notes/plan.txt", v1)["result"]
    assert (first["status"], first["revision"]) == ("applied", 1)
    second = up.upload(laptop, "notes/plan.txt", v2, base=1)["result"]
    assert (second["status"], second["revision"]) == ("applied", 2)
    # The desktop edited revision 1 meanwhile.
    done = up.upload(desktop, "notes/plan.txt", v3, base=1)
    result = done["result"]
    assert result["status"] == "conflict"
    assert result["conflict_id"]
    assert done["session"]["status"] == "completed"
    assert stored(app, hash_bytes(v3)) == v3
    again = up.complete(desktop, done["session"]["id"])
    assert again.status_code == 200
    assert again.json() == done

    listed = client.get(f"{V1}/conflicts", headers=alice.headers).json()["conflicts"]
    (conflict,) = listed
    assert conflict["id"] == result["conflict_id"]
    assert conflict["client"]["content_hash"] == hash_bytes(v3)
    assert conflict["client"]["content_available"] is True
    assert conflict["server"]["revision"] == 2

    resolved = client.post(
        f"{V1}/conflicts/{conflict['id']}/resolve",
        json={"resolution": resolution},
        headers=alice.headers,
    )
    assert resolved.status_code == 200, resolved.text
    changes = {c["path"]: c for c in resolved.json()["changes"]}
    if resolution == "keep_client":
        assert changes["notes/plan.txt"]["content_hash"] == hash_bytes(v3)
        assert changes["notes/plan.txt"]["revision"] == 3
    else:
        beside = changes[conflict["suggested_path"]]
        assert beside["content_hash"] == hash_bytes(v3)
        assert "notes/plan.txt" not in changes  # the library version stays


def test_unchanged_when_the_library_already_holds_that_state(
    up: Uploader, laptop: Device, alice: Account, make_device: Callable[[Account, str], Device]
) -> None:
    data = payload(MIB, seed=30)
    assert up.upload(laptop, "same.txt", data)["result"]["revision"] == 1
    desktop = make_device(alice, "desktop")
    # The same edit from another device that believed the path absent: no conflict.
    result = up.upload(desktop, "same.txt", data)["result"]
    assert result["status"] == "unchanged"
    assert result["revision"] == 1


# -- dedupe and delta ---------------------------------------------------------


def test_delta_only_the_changed_chunk_travels(
    app: FastAPI, up: Uploader, laptop: Device
) -> None:
    old = payload(12 * MIB, seed=40)  # three 4 MiB blocks
    assert up.upload(laptop, "video.mkv", old, with_blocks=True)["result"]["revision"] == 1
    new = bytearray(old)
    new[100:200] = b"\x00" * 100  # an edit inside the first block
    new = bytes(new)
    session = up.session(laptop, "video.mkv", new, base=1, with_blocks=True)
    assert session["chunk_size"] == 4 * MIB
    assert session["chunk_count"] == 3
    assert session["received"] == [1, 2]
    put = up.put_chunk(laptop, session, new, 0)
    assert put.status_code == 200, put.text
    assert put.json()["received_count"] == 3
    done = up.complete(laptop, session["id"])
    assert done.status_code == 200, done.text
    assert done.json()["result"]["status"] == "applied"
    assert done.json()["result"]["revision"] == 2
    assert stored(app, hash_bytes(new)) == new
    assert stored(app, hash_bytes(old)) == old


def test_delta_with_an_uneven_tail_and_default_chunks(
    app: FastAPI, up: Uploader, laptop: Device
) -> None:
    old = payload(10 * MIB + 77, seed=41)  # blocks: 4, 4, 2 MiB + 77
    up.upload(laptop, "doc.pdf", old)
    new = old[: 8 * MIB] + payload(2 * MIB + 77, seed=42)  # the tail changed
    # 8 MiB chunks: chunk 0 = blocks 0-1 (known), chunk 1 = block 2 (new).
    session = up.session(laptop, "doc.pdf", new, base=1, chunk_size=None, with_blocks=True)
    assert (session["chunk_size"], session["received"]) == (8 * MIB, [0])
    assert up.put_chunk(laptop, session, new, 1).status_code == 200
    assert up.complete(laptop, session["id"]).json()["result"]["revision"] == 2
    assert stored(app, hash_bytes(new)) == new
    # A shifted copy of a known block in another position is reused as well.
    moved = old[4 * MIB : 8 * MIB] + old[: 4 * MIB]
    session = up.session(laptop, "moved.pdf", moved, with_blocks=True)
    assert session["received"] == [0, 1]
    assert up.complete(laptop, session["id"]).status_code == 200
    assert stored(app, hash_bytes(moved)) == moved


def test_dedupe_needs_no_bytes(app: FastAPI, up: Uploader, laptop: Device) -> None:
    data = payload(9 * MIB, seed=50)
    up.upload(laptop, "a/original.bin", data)
    session = up.session(laptop, "b/copy.bin", data)
    assert session["received"] == [0, 1, 2]
    assert not session_file(app, session["id"]).exists()
    # A client that sends anyway is not refused.
    assert up.put_chunk(laptop, session, data, 1).status_code == 200
    done = up.complete(laptop, session["id"])
    assert done.status_code == 200, done.text
    assert done.json()["result"]["status"] == "applied"
    assert done.json()["result"]["path"] == "b/copy.bin"
    assert stored(app, session["content_hash"]) == data


def test_empty_file(up: Uploader, laptop: Device) -> None:
    session = up.session(laptop, "empty.txt", b"")
    assert (session["chunk_count"], session["received"]) == (0, [])
    done = up.complete(laptop, session["id"])
    assert done.status_code == 200, done.text
    assert done.json()["result"]["status"] == "applied"


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
    # Partly the same blocks: still nothing.
    mixed = data[: 4 * MIB] + payload(MIB, seed=61)
    assert up.session(phone, "mixed.bin", mixed, with_blocks=True)["received"] == []
    # Bob must send every byte; his upload then lands in his own library.
    done = up.upload(phone, "guess.bin", data)
    assert done["session"]["id"] == session["id"]
    assert done["result"]["status"] == "applied"
    assert stored(app, session["content_hash"]) == data


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
    problem(up.get(laptop, session["id"]), 404, "not_found")
    problem(up.put_chunk(laptop, session, data, 1), 404, "not_found")
    problem(up.complete(laptop, session["id"]), 404, "not_found")
    problem(up.cancel(laptop, session["id"]), 404, "not_found")
    assert not session_file(app, session["id"]).exists()
    # The same file again: a fresh session.
    assert up.session(laptop, "cancel.bin", data)["received"] == []


@with_settings(upload_expiry_s=3600)
def test_expiry_is_configurable(up: Uploader, laptop: Device) -> None:
    session = up.session(laptop, "x.bin", payload(100, seed=80))
    from datetime import datetime

    created = datetime.fromisoformat(session["created_at"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(session["expires_at"].replace("Z", "+00:00"))
    assert expires - created == timedelta(hours=1)


def test_default_expiry_is_a_day(up: Uploader, laptop: Device) -> None:
    session = up.session(laptop, "x.bin", payload(100, seed=81))
    from datetime import datetime

    created = datetime.fromisoformat(session["created_at"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(session["expires_at"].replace("Z", "+00:00"))
    assert expires - created == timedelta(hours=24)


def _expire(db: Database, session_id: str) -> None:
    with db.write() as tx:
        tx.execute(
            upload_sessions.update()
            .where(upload_sessions.c.id == session_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


def test_expired_session_is_410_and_its_data_removed(
    app: FastAPI, db: Database, up: Uploader, laptop: Device
) -> None:
    data = payload(5 * MIB, seed=82)
    session = up.session(laptop, "old.bin", data)
    keep = up.session(laptop, "fresh.bin", data)
    assert up.put_chunk(laptop, session, data, 0).status_code == 200
    _expire(db, session["id"])
    problem(up.put_chunk(laptop, session, data, 1), 410, "upload_expired")
    problem(up.complete(laptop, session["id"]), 410, "upload_expired")

    assert app.state.services.uploads.expire_idle() == 1
    assert not session_file(app, session["id"]).exists()
    assert session_file(app, keep["id"]).is_file()
    with db.read() as tx:
        rows = tx.execute(
            sa.select(sa.func.count())
            .select_from(upload_chunks)
            .where(upload_chunks.c.session_id == session["id"])
        ).scalar_one()
    assert rows == 0
    shown = up.get(laptop, session["id"])
    assert shown.status_code == 200
    assert shown.json()["status"] == "expired"
    assert shown.json()["received"] == []
    problem(up.put_chunk(laptop, session, data, 1), 410, "upload_expired")
    problem(up.complete(laptop, session["id"]), 410, "upload_expired")
    # Idempotent housekeeping; a new session for the same file starts afresh.
    assert app.state.services.uploads.expire_idle() == 0
    fresh = up.session(laptop, "old.bin", data)
    assert fresh["id"] != session["id"]
    assert fresh["received"] == []


@with_settings(upload_expiry_s=1)
def test_idle_sessions_expire_by_the_configured_period(
    app: FastAPI, up: Uploader, laptop: Device
) -> None:
    import time

    data = payload(100, seed=83)
    session = up.session(laptop, "idle.bin", data)
    time.sleep(1.2)
    assert app.state.services.uploads.expire_idle() == 1
    assert not session_file(app, session["id"]).exists()
    problem(up.put_chunk(laptop, session, data, 0), 410, "upload_expired")


# -- limits -------------------------------------------------------------------


@with_settings(max_file_size_bytes=5 * MIB)
def test_too_large_is_413(up: Uploader, laptop: Device) -> None:
    problem(up.create(laptop, "big.bin", payload(5 * MIB + 1, seed=90)), 413, "too_large")
    assert up.create(laptop, "ok.bin", payload(5 * MIB, seed=90)).status_code == 200


@with_settings(max_sessions_per_device=2)
def test_too_many_sessions_is_429_with_retry_after(
    up: Uploader, laptop: Device, alice: Account, make_device: Callable[[Account, str], Device]
) -> None:
    files = [payload(1000, seed=100 + n) for n in range(3)]
    first = up.session(laptop, "0.bin", files[0])
    up.session(laptop, "1.bin", files[1])
    refused = up.create(laptop, "2.bin", files[2])
    problem(refused, 429, "too_many_sessions")
    assert int(refused.headers["Retry-After"]) > 0
    # The same file again is its pending session, not a new one.
    assert up.session(laptop, "0.bin", files[0])["id"] == first["id"]
    # The limit is per device.
    assert up.create(make_device(alice, "desktop"), "2.bin", files[2]).status_code == 200
    # Finishing one frees a slot.
    assert up.put_chunk(laptop, first, files[0], 0).status_code == 200
    assert up.complete(laptop, first["id"]).status_code == 200
    assert up.create(laptop, "2.bin", files[2]).status_code == 200
    problem(up.create(laptop, "3.bin", payload(10, seed=1)), 429, "too_many_sessions")


@with_settings(quota_bytes=10 * MIB)
def test_quota_is_507(
    app: FastAPI, up: Uploader, laptop: Device, bob: Account,
    make_device: Callable[[Account, str], Device],
) -> None:
    a, b = payload(6 * MIB, seed=110), payload(5 * MIB, seed=111)
    up.upload(laptop, "a.bin", a)
    problem(up.create(laptop, "b.bin", b), 507, "insufficient_storage")
    # Content already held costs nothing: a copy fits.
    assert up.upload(laptop, "copy-of-a.bin", a)["result"]["status"] == "applied"
    # Pending uploads count too.
    small = payload(3 * MIB, seed=112)
    up.session(laptop, "small.bin", small)
    problem(up.create(laptop, "more.bin", payload(2 * MIB, seed=113)), 507, "insufficient_storage")
    # The quota is per user.
    assert up.create(make_device(bob, "phone"), "b.bin", b).status_code == 200


# -- requests -----------------------------------------------------------------


def test_creation_validates(up: Uploader, laptop: Device, alice: Account) -> None:
    data = payload(9 * MIB, seed=120)
    problem(up.create(laptop, "../escape", data), 400, "invalid_path")
    bad_blocks = up.client.post(
        f"{V1}/upload",
        json={
            "path": "x.bin",
            "size": len(data),
            "content_hash": hash_bytes(data),
            "base_revision": None,
            "block_hashes": block_hashes(data)[:2],
        },
        headers=laptop.headers,
    )
    problem(bad_blocks, 400, "invalid_request")
    lying_blocks = up.client.post(
        f"{V1}/upload",
        json={
            "path": "x.bin",
            "size": len(data),
            "content_hash": hash_bytes(data),
            "base_revision": None,
            "block_hashes": block_hashes(payload(9 * MIB, seed=121)),
        },
        headers=laptop.headers,
    )
    problem(lying_blocks, 400, "invalid_request")
    problem(
        up.client.post(
            f"{V1}/upload",
            json={"path": "x.bin", "size": 5, "content_hash": "A" * 64, "base_revision": None},
            headers=laptop.headers,
        ),
        400,
        "invalid_request",
    )
    problem(
        up.client.post(f"{V1}/upload", json={"path": "x.bin"}, headers=laptop.headers),
        400,
        "invalid_request",
    )
    # A user token names no device.
    no_device = up.client.post(
        f"{V1}/upload",
        json={
            "path": "x.bin",
            "size": len(data),
            "content_hash": hash_bytes(data),
            "base_revision": None,
        },
        headers=alice.headers,
    )
    problem(no_device, 400, "device_required")
    # ...unless X-Device-ID names one of the user's devices.
    with_header = up.client.post(
        f"{V1}/upload",
        json={
            "path": "x.bin",
            "size": len(data),
            "content_hash": hash_bytes(data),
            "base_revision": None,
        },
        headers={**alice.headers, "X-Device-ID": laptop.id},
    )
    assert with_header.status_code == 200, with_header.text


def test_every_contents_row_has_its_file(
    app: FastAPI, db: Database, up: Uploader, laptop: Device
) -> None:
    for n in range(3):
        up.upload(laptop, f"f{n}.bin", payload(MIB + n, seed=130 + n))
    with db.read() as tx:
        hashes = [str(r[0]) for r in tx.execute(sa.select(contents.c.content_hash))]
    assert len(hashes) == 3
    for content_hash in hashes:
        assert hash_file(app.state.services.blobs.object_path(content_hash)) == content_hash
