"""Batch upload and download of small files (protocol section 11.4), on both databases."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.content_hash import EMPTY_HASH, hash_bytes
from shelfsync.server.settings import Settings
from shelfsync.server.storage.contents import ContentRepository
from tests.api.conftest import FAST_HASHING, Account

V1 = "/api/v1/sync"
PREFIXES = [V1, "/api/sync"]
BATCH = "application/vnd.shelfsync.batch"

Json = dict[str, Any]


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    overrides: dict[str, Any] = getattr(request, "param", {})
    return Settings(
        data_dir=tmp_path / "data", database_url=database_url, **{**FAST_HASHING, **overrides}
    )


def with_settings(**overrides: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("settings", [overrides], indirect=True, ids=["limits"])


@dataclass
class Device:
    id: str
    headers: dict[str, str]


@pytest.fixture
def make_device(client: TestClient) -> Callable[[Account, str], Device]:
    def make(account: Account, name: str = "laptop") -> Device:
        created = client.post(f"{V1}/devices", json={"name": name}, headers=account.headers)
        assert created.status_code == 200, created.text
        token = client.post("/api/v1/auth/device", json={"device_token": created.json()["token"]})
        body = token.json()
        return Device(body["device_id"], {"Authorization": f"Bearer {body['access_token']}"})

    return make


@pytest.fixture
def laptop(alice: Account, make_device: Callable[[Account, str], Device]) -> Device:
    return make_device(alice, "laptop")


def data_of(seed: int, size: int = 3000) -> bytes:
    return random.Random(seed).randbytes(size)


def entry(path: str, data: bytes, *, base: int | None = None, **extra: Any) -> Json:
    return {
        "path": path,
        "size": len(data),
        "content_hash": hash_bytes(data),
        "base_revision": base,
        **extra,
    }


def body_of(entries: list[Json], payloads: list[bytes]) -> bytes:
    manifest = json.dumps({"files": entries}).encode()
    return struct.pack(">I", len(manifest)) + manifest + b"".join(payloads)


def post_batch(
    client: TestClient, device: Device, body: bytes, prefix: str = V1, **headers: str
) -> Any:
    return client.post(
        f"{prefix}/upload/batch",
        content=body,
        headers={**device.headers, "Content-Type": BATCH, **headers},
    )


def upload(
    client: TestClient, device: Device, files: list[tuple[str, bytes]], prefix: str = V1
) -> list[Json]:
    body = body_of([entry(p, d) for p, d in files], [d for _, d in files])
    response = post_batch(client, device, body, prefix)
    assert response.status_code == 200, response.text
    results: list[Json] = response.json()["results"]
    return results


def read_frames(raw: bytes) -> list[tuple[Json, bytes]]:
    out: list[tuple[Json, bytes]] = []
    at = 0
    while at < len(raw):
        (length,) = struct.unpack(">I", raw[at : at + 4])
        header = json.loads(raw[at + 4 : at + 4 + length])
        at += 4 + length
        size = header.get("size", 0) if header["status"] == "ok" else 0
        out.append((header, raw[at : at + size]))
        at += size
    return out


def feed_paths(client: TestClient, device: Device) -> dict[str, str]:
    page = client.get(f"{V1}/changes", params={"limit": 1000}, headers=device.headers).json()
    return {c["path"]: c["content_hash"] for c in page["changes"] if not c["deleted"]}


def object_file(app: FastAPI, content_hash: str) -> Path:
    path: Path = app.state.services.blobs.object_path(content_hash)
    return path


def inline_bytes(app: FastAPI, content_hash: str) -> bytes | None:
    """The content's bytes if it is stored in the database (content_data)."""
    with app.state.services.db.read() as tx:
        data: bytes | None = ContentRepository(tx).inline_one(content_hash)
    return data


def stored_bytes(app: FastAPI, content_hash: str) -> bytes | None:
    """The content's bytes wherever the server stores them (database or file), or None."""
    data = inline_bytes(app, content_hash)
    if data is not None:
        return data
    path = object_file(app, content_hash)
    return path.read_bytes() if path.is_file() else None


@pytest.mark.parametrize("prefix", PREFIXES)
def test_batch_lands_every_file_as_applied_and_stores_its_bytes(
    app: FastAPI, client: TestClient, laptop: Device, prefix: str
) -> None:
    files = [(f"Docs/{i}.txt", data_of(i, 100 + i)) for i in range(20)] + [("empty", b"")]
    results = upload(client, laptop, files, prefix)
    assert [r["status"] for r in results] == ["applied"] * len(files)
    assert [r["path"] for r in results] == [p for p, _ in files]
    assert all(r["revision"] == 1 and r["id"] for r in results)
    assert feed_paths(client, laptop) == {p: hash_bytes(d) for p, d in files}
    for _, data in files[:-1]:
        # Small content is stored in the database, not as a file.
        assert inline_bytes(app, hash_bytes(data)) == data
        assert not object_file(app, hash_bytes(data)).exists()
    assert not list(app.state.services.blobs.uploads.iterdir())  # nothing staged left


@with_settings(inline_max_bytes=1000)
def test_content_over_the_inline_limit_is_stored_as_a_file(
    app: FastAPI, client: TestClient, laptop: Device
) -> None:
    small, limit, large = data_of(1, 999), data_of(2, 1000), data_of(3, 1001)
    results = upload(client, laptop, [("s", small), ("l", limit), ("x", large)])
    assert [r["status"] for r in results] == ["applied"] * 3
    assert inline_bytes(app, hash_bytes(small)) == small
    assert inline_bytes(app, hash_bytes(limit)) == limit
    assert inline_bytes(app, hash_bytes(large)) is None
    assert object_file(app, hash_bytes(large)).read_bytes() == large
    assert not object_file(app, hash_bytes(small)).exists()
    for path, data in (("s", small), ("l", limit), ("x", large)):
        assert client.get(f"{V1}/download/{path}", headers=laptop.headers).content == data
    assert not list(app.state.services.blobs.uploads.iterdir())


@with_settings(inline_max_bytes=0)
def test_with_inline_storage_off_every_content_is_a_file(
    app: FastAPI, client: TestClient, laptop: Device
) -> None:
    data = data_of(1, 100)
    upload(client, laptop, [("a", data)])
    assert inline_bytes(app, hash_bytes(data)) is None
    assert object_file(app, hash_bytes(data)).read_bytes() == data


def test_batch_again_is_unchanged_and_a_known_content_is_not_stored_twice(
    client: TestClient, laptop: Device
) -> None:
    files = [("a", data_of(1)), ("b", data_of(1)), ("c", data_of(2))]
    assert [r["status"] for r in upload(client, laptop, files)] == ["applied"] * 3
    again = upload(client, laptop, files)
    assert [r["status"] for r in again] == ["unchanged"] * 3


def test_identical_content_is_stored_once_across_users(
    app: FastAPI,
    client: TestClient,
    laptop: Device,
    bob: Account,
    make_device: Callable[[Account, str], Device],
) -> None:
    """Dedupe of inline content: one content_data row, held by each user that sent it."""
    data = data_of(9)
    bobs = make_device(bob, "bobs")
    upload(client, laptop, [("a", data), ("b", data)])
    upload(client, bobs, [("c", data)])
    with app.state.services.db.read() as tx:
        count = tx.exec_driver_sql(
            "SELECT count(*) FROM content_data WHERE content_hash = '" + hash_bytes(data) + "'"
        ).scalar_one()
        holders = tx.exec_driver_sql(
            "SELECT count(*) FROM user_contents WHERE content_hash = '" + hash_bytes(data) + "'"
        ).scalar_one()
    assert (count, holders) == (1, 2)
    assert client.get(f"{V1}/download/c", headers=bobs.headers).content == data


def test_a_hash_mismatch_rejects_that_file_and_the_others_land(
    app: FastAPI, client: TestClient, laptop: Device
) -> None:
    good, bad, claimed = data_of(1), data_of(2), data_of(3)
    entries = [entry("good", good), {**entry("bad", claimed), "size": len(bad)}]
    response = post_batch(client, laptop, body_of(entries, [good, bad]))
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert first["status"] == "applied"
    assert second["status"] == "rejected"
    assert second["error"]["code"] == "hash_mismatch"
    assert feed_paths(client, laptop) == {"good": hash_bytes(good)}
    for content in (claimed, bad):
        assert stored_bytes(app, hash_bytes(content)) is None


def test_a_mismatch_does_not_stop_a_later_entry_with_the_same_content(
    client: TestClient, laptop: Device
) -> None:
    data = data_of(5)
    wrong = data_of(6, len(data))
    response = post_batch(
        client, laptop, body_of([entry("x", data), entry("y", data)], [wrong, data])
    )
    assert [r["status"] for r in response.json()["results"]] == ["rejected", "applied"]
    download = client.get(f"{V1}/download/y", headers=laptop.headers)
    assert download.content == data


def test_an_invalid_entry_is_rejected_alone(client: TestClient, laptop: Device) -> None:
    data = data_of(7)
    entries = [entry("../escape", data), entry("fine", data), entry("empty", b"")]
    entries[2]["content_hash"] = hash_bytes(b"not empty")
    response = post_batch(client, laptop, body_of(entries, [data, data]))
    statuses = [
        (r["status"], (r.get("error") or {}).get("code")) for r in response.json()["results"]
    ]
    assert statuses == [
        ("rejected", "invalid_path"),
        ("applied", None),
        ("rejected", "invalid_request"),
    ]


def test_a_stale_base_inside_a_batch_is_a_conflict_with_its_content_kept(
    client: TestClient, alice: Account, make_device: Callable[[Account, str], Device]
) -> None:
    laptop, phone = make_device(alice, "laptop"), make_device(alice, "phone")
    assert upload(client, laptop, [("notes.md", data_of(1))])[0]["revision"] == 1
    edit_laptop, edit_phone, other = data_of(2), data_of(3), data_of(4)
    on_phone = post_batch(
        client, phone, body_of([entry("notes.md", edit_phone, base=1)], [edit_phone])
    ).json()["results"]
    assert (on_phone[0]["status"], on_phone[0]["revision"]) == ("applied", 2)
    body = body_of(
        [entry("notes.md", edit_laptop, base=1), entry("other", other)], [edit_laptop, other]
    )
    stale, fine = post_batch(client, laptop, body).json()["results"]
    assert fine["status"] == "applied"
    assert stale["status"] == "conflict"
    assert stale["revision"] == 2
    conflicts = client.get(f"{V1}/conflicts", headers=laptop.headers).json()["conflicts"]
    mine = next(c for c in conflicts if c["id"] == stale["conflict_id"])
    assert mine["client"]["content_hash"] == hash_bytes(edit_laptop)
    assert mine["client"]["content_available"] is True
    assert feed_paths(client, laptop)["notes.md"] == hash_bytes(edit_phone)


@pytest.mark.parametrize(
    ("cut", "code"),
    [
        (2, "batch_truncated"),  # inside the length prefix
        (10, "batch_truncated"),  # inside the manifest
        (-1, "batch_truncated"),  # inside the last file's bytes
    ],
)
def test_a_truncated_body_keeps_nothing(
    app: FastAPI, client: TestClient, laptop: Device, cut: int, code: str
) -> None:
    files = [("a", data_of(1)), ("b", data_of(2))]
    body = body_of([entry(p, d) for p, d in files], [d for _, d in files])
    response = post_batch(client, laptop, body[:cut])
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert feed_paths(client, laptop) == {}
    assert stored_bytes(app, hash_bytes(data_of(1))) is None
    assert not list(app.state.services.blobs.uploads.iterdir())


@pytest.mark.parametrize(
    "body",
    [
        struct.pack(">I", 5) + b"nope!",  # not JSON
        struct.pack(">I", 2) + b"{}",  # no files
        struct.pack(">I", 13) + b'{"files": []}',  # empty list
        body_of([{"path": "a", "size": 1}], [b"x"]),  # fields missing
        body_of([entry("a", b"x")], [b"x", b"extra"]),  # longer than announced
    ],
    ids=["not-json", "no-files", "empty", "fields-missing", "too-long"],
)
def test_a_malformed_body_is_a_400_and_keeps_nothing(
    client: TestClient, laptop: Device, body: bytes
) -> None:
    response = post_batch(client, laptop, body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "batch_malformed"
    assert feed_paths(client, laptop) == {}


def test_a_body_of_another_media_type_is_refused(client: TestClient, laptop: Device) -> None:
    body = body_of([entry("a", b"x")], [b"x"])
    response = post_batch(client, laptop, body, **{"Content-Type": "application/json"})
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@with_settings(batch_max_files=3, batch_max_bytes=10_000, batch_max_file_bytes=4000)
@pytest.mark.parametrize(
    "sizes",
    [[10, 10, 10, 10], [3999, 3999, 3999], [4001]],
    ids=["too-many-files", "too-many-bytes", "file-too-large"],
)
def test_batches_over_the_limits_are_413(
    client: TestClient, laptop: Device, sizes: list[int]
) -> None:
    files = [(f"f{i}", data_of(i, size)) for i, size in enumerate(sizes)]
    body = body_of([entry(p, d) for p, d in files], [d for _, d in files])
    response = post_batch(client, laptop, body)
    assert response.status_code == 413
    assert response.json()["code"] == "batch_too_large"
    assert feed_paths(client, laptop) == {}


@with_settings(quota_bytes=5000)
def test_a_batch_over_the_quota_is_507(client: TestClient, laptop: Device) -> None:
    files = [("a", data_of(1)), ("b", data_of(2))]
    body = body_of([entry(p, d) for p, d in files], [d for _, d in files])
    response = post_batch(client, laptop, body)
    assert response.status_code == 507
    assert response.json()["code"] == "insufficient_storage"


def test_a_batch_needs_a_device_and_a_token(client: TestClient, alice: Account) -> None:
    body = body_of([entry("a", b"x")], [b"x"])
    anonymous = client.post(f"{V1}/upload/batch", content=body, headers={"Content-Type": BATCH})
    assert anonymous.status_code == 401
    as_user = client.post(
        f"{V1}/upload/batch", content=body, headers={**alice.headers, "Content-Type": BATCH}
    )
    assert as_user.status_code == 400
    assert as_user.json()["code"] == "device_required"


@with_settings(inline_max_bytes=0)  # content as files: syncfs is on the way
def test_a_storage_failure_is_503_and_keeps_nothing(
    app: FastAPI, client: TestClient, laptop: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("shelfsync.server.storage.blobs._sync_filesystem", broken)
    files = [("a", data_of(1))]
    body = body_of([entry(p, d) for p, d in files], [d for _, d in files])
    response = post_batch(client, laptop, body)
    assert response.status_code == 503
    assert response.json()["code"] == "storage_unavailable"
    assert feed_paths(client, laptop) == {}


# -- downloads -----------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_batch_download_streams_each_file_with_its_header(
    client: TestClient, laptop: Device, prefix: str
) -> None:
    files = [(f"d/{i}", data_of(i, 50 * i)) for i in range(1, 6)] + [("e", b"")]
    upload(client, laptop, files)
    wanted = [{"path": p} for p, _ in files] + [{"path": "missing"}, {"path": "../bad"}]
    response = client.post(
        f"{prefix}/download/batch", json={"files": wanted}, headers=laptop.headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == BATCH
    frames = read_frames(response.content)
    assert len(frames) == len(wanted)
    for (path, data), (header, got) in zip(files, frames, strict=False):
        assert header["path"] == path
        assert header["status"] == "ok"
        assert header["content_hash"] == hash_bytes(data)
        assert header["size"] == len(data)
        assert header["revision"] == 1
        assert got == data
    assert frames[-2][0]["error"]["code"] == "not_found"
    assert frames[-1][0]["error"]["code"] == "invalid_path"
    assert frames[len(files) - 1][0]["content_hash"] == EMPTY_HASH


def test_batch_download_of_a_retained_revision(client: TestClient, laptop: Device) -> None:
    first, second = data_of(1), data_of(2)
    upload(client, laptop, [("a", first)])
    post_batch(client, laptop, body_of([entry("a", second, base=1)], [second]))
    response = client.post(
        f"{V1}/download/batch",
        json={"files": [{"path": "a", "revision": 1}, {"path": "a"}]},
        headers=laptop.headers,
    )
    (old, old_bytes), (new, new_bytes) = read_frames(response.content)
    assert (old["revision"], old_bytes) == (1, first)
    assert (new["revision"], new_bytes) == (2, second)


@with_settings(batch_max_files=2, batch_max_file_bytes=1000)
def test_batch_download_limits(client: TestClient, laptop: Device) -> None:
    upload(client, laptop, [("small", data_of(1, 10)), ("big", data_of(2, 1000))])
    too_many = client.post(
        f"{V1}/download/batch",
        json={"files": [{"path": "a"}, {"path": "b"}, {"path": "c"}]},
        headers=laptop.headers,
    )
    assert too_many.status_code == 413
    assert too_many.json()["code"] == "batch_too_large"


@with_settings(batch_max_file_bytes=1000)
def test_batch_download_names_files_too_large_for_it(client: TestClient, laptop: Device) -> None:
    big = data_of(2, 1500)
    session = client.post(
        f"{V1}/upload",
        json={
            "path": "big",
            "size": len(big),
            "content_hash": hash_bytes(big),
            "base_revision": None,
        },
        headers=laptop.headers,
    ).json()
    put = client.put(f"{V1}/upload/{session['id']}/chunks/0", content=big, headers=laptop.headers)
    assert put.status_code == 200, put.text
    done = client.post(f"{V1}/upload/{session['id']}/complete", headers=laptop.headers)
    assert done.json()["result"]["status"] == "applied"
    response = client.post(
        f"{V1}/download/batch", json={"files": [{"path": "big"}]}, headers=laptop.headers
    )
    ((header, data),) = read_frames(response.content)
    assert header["status"] == "error"
    assert header["error"]["code"] == "batch_too_large"
    assert data == b""


def test_batch_download_is_only_for_the_callers_library(
    client: TestClient, laptop: Device, bob: Account, make_device: Callable[[Account, str], Device]
) -> None:
    upload(client, laptop, [("secret", data_of(1))])
    bobs = make_device(bob, "bobs")
    response = client.post(
        f"{V1}/download/batch", json={"files": [{"path": "secret"}]}, headers=bobs.headers
    )
    ((header, data),) = read_frames(response.content)
    assert header["status"] == "error"
    assert header["error"]["code"] == "not_found"
    assert data == b""
    anonymous = client.post(f"{V1}/download/batch", json={"files": [{"path": "secret"}]})
    assert anonymous.status_code == 401


# -- inline content (stored in the database) -------------------------------------


class _DiskFull(Exception):
    """What the drivers raise for a full disk: SQLITE_FULL, PostgreSQL's 53100."""

    sqlite_errorcode = 13
    sqlstate = "53100"


class _IoError(Exception):
    sqlite_errorcode = 10  # SQLITE_IOERR
    sqlstate = "58030"  # io_error


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [(_DiskFull, 507, "insufficient_storage"), (_IoError, 503, "unavailable")],
    ids=["disk_full", "io_error"],
)
def test_a_database_failure_storing_inline_content_keeps_nothing(
    app: FastAPI,
    client: TestClient,
    laptop: Device,
    monkeypatch: pytest.MonkeyPatch,
    error: type[Exception],
    status: int,
    code: str,
) -> None:
    def broken(self: ContentRepository, data: dict[str, bytes]) -> None:
        raise sa.exc.OperationalError("INSERT INTO content_data", {}, error("failed"))

    monkeypatch.setattr(ContentRepository, "add_data_many", broken)
    files = [("a", data_of(1)), ("b", data_of(2))]
    body = body_of([entry(p, d) for p, d in files], [d for _, d in files])
    response = post_batch(client, laptop, body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert response.headers["retry-after"]
    monkeypatch.undo()
    assert feed_paths(client, laptop) == {}
    for _, data in files:
        assert stored_bytes(app, hash_bytes(data)) is None
    assert not list(app.state.services.blobs.uploads.iterdir())
    # Once the database takes writes again, the same batch lands.
    assert [r["status"] for r in upload(client, laptop, files)] == ["applied"] * 2


@with_settings(inline_max_bytes=1000)
def test_batch_download_mixes_inline_and_file_content(
    app: FastAPI, client: TestClient, laptop: Device
) -> None:
    files = [(f"m/{i}", data_of(i, size)) for i, size in enumerate([10, 999, 1000, 1001, 3000])]
    upload(client, laptop, files)
    assert [inline_bytes(app, hash_bytes(d)) is not None for _, d in files] == [
        True,
        True,
        True,
        False,
        False,
    ]
    wanted = [{"path": p} for p, _ in reversed(files)] + [{"path": "m/0"}]
    response = client.post(f"{V1}/download/batch", json={"files": wanted}, headers=laptop.headers)
    assert response.status_code == 200
    frames = read_frames(response.content)
    expected = [*reversed(files), files[0]]
    assert [(h["path"], h["status"]) for h, _ in frames] == [(p, "ok") for p, _ in expected]
    assert [got for _, got in frames] == [d for _, d in expected]


def test_batch_download_reads_inline_content_a_group_at_a_time(
    app: FastAPI, client: TestClient, laptop: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One query per piece of about 1 MiB of entries: neither one per file nor
    every file's bytes at once."""
    files = [(f"g/{i:02d}", data_of(i, 60_000)) for i in range(60)]  # 3.6 MB, all inline
    for start in range(0, len(files), 15):
        upload(client, laptop, files[start : start + 15])
    reads: list[int] = []
    real = ContentRepository.inline_data

    def counted(self: ContentRepository, hashes: set[str]) -> dict[str, bytes]:
        found = real(self, hashes)
        reads.append(sum(len(d) for d in found.values()))
        return found

    monkeypatch.setattr(ContentRepository, "inline_data", counted)
    response = client.post(
        f"{V1}/download/batch",
        json={"files": [{"path": p} for p, _ in files]},
        headers=laptop.headers,
    )
    assert [got for _, got in read_frames(response.content)] == [d for _, d in files]
    assert 3 <= len(reads) <= 5
    assert max(reads) <= 1024 * 1024 + 60_000


def test_batch_download_of_inline_content_collected_meanwhile_fails_that_entry(
    app: FastAPI, client: TestClient, laptop: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone, kept = data_of(1), data_of(2)
    upload(client, laptop, [("gone", gone), ("kept", kept)])
    downloads = app.state.services.downloads
    real = downloads.inline_data
    monkeypatch.setattr(
        downloads,
        "inline_data",
        lambda hashes: {h: d for h, d in real(hashes).items() if h != hash_bytes(gone)},
    )
    response = client.post(
        f"{V1}/download/batch",
        json={"files": [{"path": "gone"}, {"path": "kept"}]},
        headers=laptop.headers,
    )
    (first, first_bytes), (second, second_bytes) = read_frames(response.content)
    assert first["status"] == "error"
    assert first["error"]["code"] == "storage_unavailable"
    assert first_bytes == b""
    assert (second["status"], second_bytes) == ("ok", kept)
