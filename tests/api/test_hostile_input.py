"""Hostile input: every nasty request gets its documented 4xx, never a 500.

Paths, cursors, JSON bodies, headers and chunk bodies from a client that is
broken or malicious. Where a request could leave a trace, the test checks that
storage is unchanged afterwards. The size and pace limits (api/limits.py) are
checked in-process and, for what only a real socket shows (a trickled body,
oversized headers), against a real uvicorn server on loopback.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.content_hash import hash_bytes
from shelfsync.server.api.http_protocol import BodyPiecesProtocol
from shelfsync.server.settings import Settings
from tests.api.conftest import FAST_HASHING
from tests.api.live_server import LiveServer
from tests.api.sync_support import SyncDevice, SyncDriver, SyncUser, blob, upsert

V1 = "/api/v1/sync"
MIB = 1024 * 1024
# Small limits, so the limit tests send little.
JSON_LIMIT = 256 * 1024
HEADER_LIMIT = 64 * 1024

Json = dict[str, Any]


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        max_json_body_bytes=JSON_LIMIT,
        max_header_bytes=HEADER_LIMIT,
        **FAST_HASHING,
    )


@pytest.fixture
def sync(app: FastAPI, client: TestClient) -> SyncDriver:
    return SyncDriver(app, client)


@pytest.fixture
def user(sync: SyncDriver) -> SyncUser:
    return sync.user("alice")


@pytest.fixture
def laptop(user: SyncUser) -> SyncDevice:
    return user.device("laptop")


def problem(response: httpx.Response, status: int, code: str | None = None) -> Json:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: Json = response.json()
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body


def library(device: SyncDevice) -> list[Json]:
    changes, _ = device.read_all()
    return changes


def raw_post(device: SyncDevice, tail: str, body: bytes) -> httpx.Response:
    return device.client.post(
        device.url(tail),
        content=body,
        headers={**device.headers, "Content-Type": "application/json"},
    )


def upload_body(path: Any, **extra: Any) -> Json:
    return {
        "path": path,
        "size": 3,
        "content_hash": hash_bytes(b"abc"),
        "base_revision": None,
        **extra,
    }


# -- paths -------------------------------------------------------------------

BAD_PATHS = {
    "dotdot": "../etc/passwd",
    "inner_dotdot": "a/../../b",
    "dot": "a/./b",
    "leading_slash": "/abs",
    "trailing_slash": "dir/",
    "empty_segment": "a//b",
    "nul": "a\x00b",
    "control": "a\x1fb",
    "del": "a\x7fb",
    "newline": "a\nb",
    "backslash": "a\\b",
    "five_thousand_bytes": "a/" * 2499 + "aa",
    "multibyte_over_4096": "é" * 2049,
    "segment_300_bytes": "d/" + "x" * 300,
    "lone_surrogate": "\ud800",
}


@pytest.mark.parametrize("path", BAD_PATHS.values(), ids=BAD_PATHS.keys())
def test_bad_path_in_a_report_is_rejected_and_nothing_is_stored(
    laptop: SyncDevice, path: str
) -> None:
    # json.dumps escapes a lone surrogate as "\ud800": the raw JSON a client sends.
    response = raw_post(
        laptop, "/report", json.dumps({"changes": [upsert(path, blob(b""))]}).encode()
    )
    if response.status_code == 400:  # refused by the body's schema (too long)
        problem(response, 400, "invalid_request")
    else:
        assert response.status_code == 200, response.text
        (result,) = response.json()["results"]
        assert result["status"] == "rejected", result
        assert result["error"]["code"] == "invalid_path"
        assert result["error"]["status"] == 400
    assert library(laptop) == []


@pytest.mark.parametrize("path", BAD_PATHS.values(), ids=BAD_PATHS.keys())
def test_bad_path_for_an_upload_is_400(laptop: SyncDevice, path: str) -> None:
    response = raw_post(laptop, "/upload", json.dumps(upload_body(path)).encode())
    body = problem(response, 400)
    assert body["code"] in {"invalid_path", "invalid_request"}


@pytest.mark.parametrize(
    "raw",
    [
        "..",
        "%2e%2e",
        "%2E%2E/%2e%2e/etc/passwd",
        "a/%2e%2e/%2e%2e/secret",
        "a%00b",
        "a%1fb",
        "a%5Cb",
        "a%2F%2Fb",
        "%ED%A0%80",  # a UTF-8-encoded lone surrogate
        "%FF%FE",  # not UTF-8 at all
        "x" * 300,
        "a/" * 2499 + "aa",
    ],
)
def test_bad_download_path_is_a_4xx_never_a_500(laptop: SyncDevice, raw: str) -> None:
    response = laptop.client.get(laptop.url(f"/download/{raw}"), headers=laptop.headers)
    assert response.status_code in {400, 404}, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_nfd_and_nfc_spellings_are_one_entry(laptop: SyncDevice) -> None:
    nfc = unicodedata.normalize("NFC", "café/naïve.txt")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    content = blob(b"")
    first = laptop.applied(upsert(nfc, content))
    second = laptop.report_one(upsert(nfd, content))
    assert second["status"] == "unchanged"
    assert second["id"] == first["id"]
    other = laptop.report_one(upsert(nfd, blob(b"x")))
    assert other["status"] in {"conflict", "upload_required"}
    assert [c["path"] for c in library(laptop)] == [nfc]


# -- cursors -----------------------------------------------------------------

CURSORS = {
    "garbage": ("!!not a cursor!!", "invalid_cursor"),
    "empty_ish": ("=", "invalid_cursor"),
    "random_base64": (base64.urlsafe_b64encode(os.urandom(48)).decode(), "invalid_cursor"),
    "random_base64_short": (base64.urlsafe_b64encode(b"\x00\x01").decode(), "invalid_cursor"),
    "nul": ("abc\x00def", "invalid_cursor"),
    "huge": ("A" * 5000, "invalid_request"),
}


@pytest.mark.parametrize(("cursor", "code"), CURSORS.values(), ids=CURSORS.keys())
def test_bad_cursor_is_400(laptop: SyncDevice, cursor: str, code: str) -> None:
    problem(laptop.get_changes(cursor=cursor), 400, code)
    problem(laptop.post_ack(cursor), 400, code)


# -- JSON bodies -------------------------------------------------------------


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


BAD_REPORT_BODIES: dict[str, bytes] = {
    "deep_array": b'{"changes": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "deep_metadata": (
        '{"changes": [{"op": "upsert", "path": "a", "base_revision": null, "metadata": '
        + _nested(10_000)
        + "}]}"
    ).encode(),
    "invalid_utf8": b'{"changes": [{"op": "delete", "path": "\xff\xfe", "base_revision": 1}]}',
    "not_json": b"{nope",
    "empty": b"",
    "array": b"[]",
    "changes_not_list": b'{"changes": "x"}',
    "changes_empty": b'{"changes": []}',
    "size_1e999999": (
        b'{"changes": [{"op": "upsert", "path": "a", "size": 1e999999, "base_revision": null,'
        b' "content_hash": "' + hash_bytes(b"").encode() + b'"}]}'
    ),
    "size_string": (
        b'{"changes": [{"op": "upsert", "path": "a", "size": "big", "base_revision": null,'
        b' "content_hash": "' + hash_bytes(b"").encode() + b'"}]}'
    ),
    "revision_nan": b'{"changes": [{"op": "delete", "path": "a", "base_revision": NaN}]}',
    "revision_float": b'{"changes": [{"op": "delete", "path": "a", "base_revision": 1.5}]}',
    "op_unknown": b'{"changes": [{"op": "chmod", "path": "a", "base_revision": null}]}',
    "metadata_list": (
        b'{"changes": [{"op": "upsert", "path": "a", "size": 0, "base_revision": null,'
        b' "content_hash": "' + hash_bytes(b"").encode() + b'", "metadata": [1, 2]}]}'
    ),
    "metadata_string": (
        b'{"changes": [{"op": "upsert", "path": "a", "size": 0, "base_revision": null,'
        b' "content_hash": "' + hash_bytes(b"").encode() + b'", "metadata": "x"}]}'
    ),
    "thousand_and_one_changes": json.dumps(
        {"changes": [upsert(f"f{i}", blob(b"")) for i in range(1001)]}
    ).encode(),
}


@pytest.mark.parametrize("body", BAD_REPORT_BODIES.values(), ids=BAD_REPORT_BODIES.keys())
def test_bad_report_body_is_400_and_nothing_is_stored(laptop: SyncDevice, body: bytes) -> None:
    problem(raw_post(laptop, "/report", body), 400, "invalid_request")
    assert library(laptop) == []


HUGE_NUMBERS = {
    "size_2_70": {"size": 2**70},
    "size_negative": {"size": -1},
    "base_revision_2_70": {"base_revision": 2**70},
    "base_revision_negative_2_70": {"base_revision": -(2**70)},
    "metadata_over_64k": {"metadata": {"blob": "x" * (64 * 1024 + 1)}},
}


@pytest.mark.parametrize("extra", HUGE_NUMBERS.values(), ids=HUGE_NUMBERS.keys())
def test_out_of_range_values_in_a_report_are_refused(laptop: SyncDevice, extra: Json) -> None:
    change = {**upsert("a.txt", blob(b"")), **extra}
    response = laptop.post_report([change])
    if response.status_code == 400:
        problem(response, 400, "invalid_request")
    else:
        assert response.status_code == 200, response.text
        (result,) = response.json()["results"]
        assert result["status"] == "rejected", result
        assert result["error"]["status"] == 400
    assert library(laptop) == []


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({"size": 2**70}, 400),
        ({"size": 2**53}, 413),
        ({"base_revision": 2**70}, 400),
        ({"chunk_size": 2**70}, 400),
        ({"metadata": {"blob": "x" * (64 * 1024 + 1)}}, 400),
        ({"metadata": [1]}, 400),
        ({"mtime": "yesterday"}, 400),
        ({"mtime": "99999-01-01T00:00:00Z"}, 400),
        ({"block_hashes": ["zz"]}, 400),
        ({"content_hash": "A" * 64}, 400),
    ],
)
def test_bad_upload_creation_is_a_4xx(laptop: SyncDevice, extra: Json, status: int) -> None:
    response = laptop.client.post(
        laptop.url("/upload"), json=upload_body("a.bin", **extra), headers=laptop.headers
    )
    problem(response, status)


@pytest.mark.parametrize(
    ("tail", "body"),
    [
        ("/devices", {"name": "x" * 10_000}),
        ("/devices", {"name": "ok", "device_type": "toaster"}),
        ("/devices", {"name": "ok", "sync_filter": {"include": "not-a-list"}}),
        ("/devices", {"name": "ok", "sync_filter": {"include": ["[" * 5000]}}),
        ("/ack", {"cursor": 12}),
        ("/conflicts/00000000-0000-0000-0000-000000000000/resolve", {"resolution": "all"}),
    ],
)
def test_wrong_types_are_400(user: SyncUser, laptop: SyncDevice, tail: str, body: Json) -> None:
    headers = user.headers if tail == "/devices" else laptop.headers
    response = laptop.client.post(laptop.url(tail), json=body, headers=headers)
    problem(response, 400)


# -- size limits (api/limits.py) ---------------------------------------------


def test_json_body_over_the_limit_is_413_before_it_is_read(laptop: SyncDevice) -> None:
    body = json.dumps({"changes": [upsert("a", blob(b""), metadata={"x": "y" * JSON_LIMIT})]})
    problem(raw_post(laptop, "/report", body.encode()), 413, "too_large")
    assert library(laptop) == []


def test_streamed_json_body_over_the_limit_is_413(laptop: SyncDevice) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"changes": [{"op": "delete", "path": "a", "base_revision": 1, "x": "'
        for _ in range(64):
            yield b"y" * 64 * 1024
        yield b'"}]}'

    response = laptop.client.post(
        laptop.url("/report"),
        content=pieces(),
        headers={**laptop.headers, "Content-Type": "application/json"},
    )
    problem(response, 413, "too_large")
    assert "content-length" not in {k.lower() for k in response.request.headers}


@pytest.mark.parametrize("length", ["10000000000000000000000000", str(JSON_LIMIT + 1)])
def test_declared_length_over_the_limit_is_413(laptop: SyncDevice, length: str) -> None:
    response = laptop.client.post(
        laptop.url("/report"),
        content=b"{}",
        headers={**laptop.headers, "Content-Type": "application/json", "Content-Length": length},
    )
    problem(response, 413, "too_large")


def test_non_numeric_content_length_is_400(laptop: SyncDevice) -> None:
    response = laptop.client.post(
        laptop.url("/report"),
        content=b"{}",
        headers={**laptop.headers, "Content-Type": "application/json", "Content-Length": "ten"},
    )
    problem(response, 400, "invalid_request")


def test_oversized_headers_are_431(laptop: SyncDevice) -> None:
    response = laptop.client.get(
        laptop.url("/changes"), headers={**laptop.headers, "X-Junk": "j" * HEADER_LIMIT}
    )
    problem(response, 431, "headers_too_large")


# -- download headers ----------------------------------------------------------


@pytest.fixture
def stored(user: SyncUser, laptop: SyncDevice) -> bytes:
    data = bytes(range(256)) * 4
    response = laptop.client.post(
        laptop.url("/upload"),
        json={
            "path": "file.bin",
            "size": len(data),
            "content_hash": hash_bytes(data),
            "base_revision": None,
        },
        headers=laptop.headers,
    )
    assert response.status_code == 200, response.text
    upload_id = response.json()["id"]
    put = laptop.client.put(
        laptop.url(f"/upload/{upload_id}/chunks/0"), content=data, headers=laptop.headers
    )
    assert put.status_code == 200, put.text
    done = laptop.client.post(laptop.url(f"/upload/{upload_id}/complete"), headers=laptop.headers)
    assert done.status_code == 200, done.text
    return data


@pytest.mark.parametrize(
    ("range_header", "status"),
    [
        ("bytes=abc", 200),  # malformed: ignored (RFC 9110 section 14.2)
        ("bytes=5-1", 200),
        ("bytes=--1", 200),
        ("chars=0-1", 200),
        ("bytes=" + "0" * 5000 + "-1", 200),
        ("bytes=99999999999999999999999999-", 416),
        ("bytes=-0", 416),
        # 10,000 ranges: past the parser's bounds, so the whole content (200),
        # or past the header limit altogether (431).
        ("bytes=" + "0-0," * 9_999 + "0-0", 200),
        ("bytes=" + ",".join(f"{i}-{i}" for i in range(10_000)), 431),
    ],
)
def test_hostile_range_headers(
    laptop: SyncDevice, stored: bytes, range_header: str, status: int
) -> None:
    response = laptop.client.get(
        laptop.url("/download/file.bin"), headers={**laptop.headers, "Range": range_header}
    )
    allowed = {200, 206} if status == 200 else {status}
    assert response.status_code in allowed, response.text
    if response.status_code == 200:
        assert response.content == stored


# -- chunk PUTs ------------------------------------------------------------------

CHUNK = 4 * MIB


def _digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


@pytest.fixture
def session(laptop: SyncDevice) -> Json:
    data = b"z" * 10
    response = laptop.client.post(
        laptop.url("/upload"),
        json={
            "path": "up.bin",
            "size": len(data),
            "content_hash": hash_bytes(data),
            "base_revision": None,
        },
        headers=laptop.headers,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


CHUNK_CASES = {
    "short_body": (b"z" * 9, {}, 400),
    "long_body": (b"z" * 11, {}, 400),
    "empty_body": (b"", {}, 400),
    "huge_content_length": (b"z" * 10, {"Content-Length": "99999999999999999999"}, 400),
    "non_numeric_content_length": (b"z" * 10, {"Content-Length": "ten"}, 400),
    "digest_not_base64": (b"z" * 10, {"Content-Digest": "sha-256=:!!!:"}, 400),
    "digest_no_colons": (b"z" * 10, {"Content-Digest": "sha-256=abc"}, 400),
    "digest_wrong_length": (b"z" * 10, {"Content-Digest": "sha-256=:AAAA:"}, 400),
    "digest_mismatch": (b"z" * 10, {"Content-Digest": _digest(b"other")}, 400),
}


@pytest.mark.parametrize(
    ("body", "headers", "status"), CHUNK_CASES.values(), ids=CHUNK_CASES.keys()
)
def test_bad_chunk_put_is_refused_and_keeps_nothing(
    laptop: SyncDevice, session: Json, body: bytes, headers: dict[str, str], status: int
) -> None:
    url = laptop.url(f"/upload/{session['id']}/chunks/0")
    response = laptop.client.put(url, content=body, headers={**laptop.headers, **headers})
    problem(response, status)
    again = laptop.client.get(laptop.url(f"/upload/{session['id']}"), headers=laptop.headers)
    assert again.json()["received"] == []
    # Nothing holds the chunk: the right bytes go in at once.
    good = laptop.client.put(url, content=b"z" * 10, headers=laptop.headers)
    assert good.status_code == 200, good.text


@pytest.mark.parametrize("index", ["-1", "1", "100001", "99999999999999999999999", "x"])
def test_chunk_index_out_of_range_is_400(laptop: SyncDevice, session: Json, index: str) -> None:
    url = laptop.url(f"/upload/{session['id']}/chunks/{index}")
    problem(laptop.client.put(url, content=b"z" * 10, headers=laptop.headers), 400)


# -- a real server: trickled bodies and oversized headers -----------------------


@pytest.fixture
def slow_settings(settings: Settings) -> Settings:
    return replace(settings, body_idle_timeout_s=2.0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
# uvicorn's own protocol (the chunk read from ASGI messages), and `shelfsync
# serve`'s (read straight into the route's buffers, api/http_protocol.py).
@pytest.mark.parametrize("http", ["auto", BodyPiecesProtocol], ids=["messages", "direct"])
def test_a_trickled_chunk_times_out_while_others_are_served(
    tmp_path: Path, database_url: str, slow_settings: Settings, http: Any
) -> None:
    from shelfsync.server.app import create_app
    from shelfsync.server.storage.engine import Database

    db = Database(database_url)
    app = create_app(slow_settings, db=db)
    try:
        with TestClient(app) as client:
            sync = SyncDriver(app, client)
            device = sync.user("alice").device("laptop")
            data = b"t" * 100
            created = client.post(
                f"{V1}/upload",
                json={
                    "path": "slow.bin",
                    "size": 100,
                    "content_hash": hash_bytes(data),
                    "base_revision": None,
                },
                headers=device.headers,
            )
            assert created.status_code == 200, created.text
            upload_id = created.json()["id"]
            chunk_path = f"{V1}/upload/{upload_id}/chunks/0"
            with LiveServer(app, http, max_header_bytes=HEADER_LIMIT) as live:
                slow = socket.create_connection(("127.0.0.1", live.port))
                slow.settimeout(10)
                slow.sendall(
                    f"PUT {chunk_path} HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: {device.headers['Authorization']}\r\n"
                    "Content-Type: application/octet-stream\r\n"
                    "Content-Length: 100\r\n\r\n".encode()
                    + data[:10]
                )
                started = time.monotonic()
                with httpx.Client(base_url=live.url, timeout=5) as other:
                    # The server goes on serving while the chunk stalls.
                    for _ in range(3):
                        assert other.get("/healthz").status_code == 200
                        status = other.get(f"{V1}/upload/{upload_id}", headers=device.headers)
                        assert status.status_code == 200
                        assert status.json()["received"] == []
                    assert time.monotonic() - started < 1.5
                    answer = b""
                    while b"\r\n\r\n" not in answer:
                        piece = slow.recv(4096)
                        if not piece:
                            break
                        answer += piece
                    slow.close()
                    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
                    assert time.monotonic() - started < 6
                    # The claim is gone: the whole chunk goes in at once.
                    put = other.put(chunk_path, content=data, headers=device.headers)
                    assert put.status_code == 200, put.text
    finally:
        db.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("size", [HEADER_LIMIT + 1, 1024 * 1024])
def test_a_real_server_answers_oversized_headers(app: FastAPI, size: int) -> None:
    with LiveServer(app, max_header_bytes=HEADER_LIMIT) as live:
        conn = socket.create_connection(("127.0.0.1", live.port))
        conn.settimeout(10)
        try:
            conn.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"j" * size + b"\r\n\r\n"
            )
            answer = conn.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            answer = b""
        finally:
            conn.close()
        # httptools hands the head to the app (431 from api/limits.py); h11
        # refuses a head bigger than its buffer itself (400).
        assert answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), answer[:200]
        with httpx.Client(base_url=live.url, timeout=5) as other:
            assert other.get("/healthz").status_code == 200
