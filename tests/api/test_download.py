"""GET/HEAD /sync/download/{path} (protocol section 10) at both prefixes, on both databases."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shelfsync.content_hash import EMPTY_HASH, hash_bytes
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.services.auth import Principal
from shelfsync.server.storage.blobs import BlobStore
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.users import UserRepository
from tests.api.conftest import Account

PREFIXES = pytest.mark.parametrize("prefix", ["/api/v1/sync", "/api/sync"])
V1 = "/api/v1/sync"
PROBLEM = "application/problem+json"
# 1000 bytes, every position distinguishable enough to catch an off-by-one.
DATA = bytes((i * 7 + i // 256) % 256 for i in range(1000))
MTIME = "2024-01-02T03:04:05.678Z"
MTIME_HTTP = "Tue, 02 Jan 2024 03:04:05 GMT"


def store_content(app: FastAPI, user_id: str, data: bytes, *, inline: bool = False) -> str:
    """Put bytes in the blob store (as a finished upload would) and give them to a
    user; `inline`: in the database instead, as a batch upload stores small content."""
    services = app.state.services
    blobs: BlobStore = services.blobs
    content_hash = hash_bytes(data)
    if inline:
        with services.db.write() as tx:
            contents = ContentRepository(tx)
            contents.add(user_id=user_id, content_hash=content_hash, size=len(data), now=utcnow())
            contents.add_data(content_hash, data)
        return content_hash
    if data:
        session_id = str(uuid.uuid4())
        blobs.create_session_file(session_id, len(data))
        chunk = blobs.open_chunk(session_id, 0)
        try:
            chunk.write(data)
            chunk.sync()
        finally:
            chunk.close()
        blobs.commit_session(session_id, content_hash)
    with services.db.write() as tx:
        ContentRepository(tx).add(
            user_id=user_id, content_hash=content_hash, size=len(data), now=utcnow()
        )
    return content_hash


@dataclass
class Library:
    """One user's library, written and read through a device token like a sync client."""

    client: TestClient
    app: FastAPI
    user_id: str
    headers: dict[str, str]
    revisions: dict[str, int] = field(default_factory=dict)

    def report(self, change: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(
            f"{V1}/report", json={"changes": [change]}, headers=self.headers
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()["results"][0]
        assert result["status"] == "applied", result
        self.revisions[result["path"]] = result["revision"]
        return result

    def put(
        self, path: str, data: bytes, *, mtime: str | None = MTIME, inline: bool = False
    ) -> dict[str, Any]:
        content_hash = (
            store_content(self.app, self.user_id, data, inline=inline) if data else EMPTY_HASH
        )
        return self.report(
            {
                "op": "upsert",
                "path": path,
                "content_hash": content_hash,
                "size": len(data),
                "mtime": mtime,
                "base_revision": self.revisions.get(path),
            }
        )

    def delete(self, path: str) -> dict[str, Any]:
        return self.report({"op": "delete", "path": path, "base_revision": self.revisions[path]})


@pytest.fixture
def make_library(app: FastAPI, client: TestClient) -> Callable[[str], Library]:
    """A user with one device, logged in with its device token.

    The user is written straight to storage: these tests never log in with a
    password, and skipping argon2 keeps the (many) download tests fast.
    """
    services = app.state.services

    def make(username: str) -> Library:
        with services.db.write() as tx:
            user = UserRepository(tx).add(
                user_id=str(uuid.uuid4()), username=username, password_hash="!", now=utcnow()
            )
        _status, device_token = services.devices.register(Principal(user, None), name="laptop")
        login = client.post("/api/v1/auth/device", json={"device_token": device_token})
        assert login.status_code == 200, login.text
        return Library(
            client=client,
            app=app,
            user_id=user.id,
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        )

    return make


@pytest.fixture
def lib(make_library: Callable[[str], Library]) -> Library:
    return make_library("alice")


def url(path: str, prefix: str = V1) -> str:
    """The download URL of a library path, each segment percent-encoded."""
    return f"{prefix}/download/" + "/".join(quote(s, safe="") for s in path.split("/"))


def get(lib: Library, path: str, *, prefix: str = V1, **headers: str) -> httpx.Response:
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    return lib.client.get(url(path, prefix), headers={**lib.headers, **sent})


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code


# -- whole file ---------------------------------------------------------------


@PREFIXES
def test_download_sends_content_with_every_documented_header(lib: Library, prefix: str) -> None:
    result = lib.put("docs/report.txt", DATA)
    response = get(lib, "docs/report.txt", prefix=prefix)
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["content-type"] == "text/plain"
    assert response.headers["etag"] == f'"{hash_bytes(DATA)}"'
    assert response.headers["last-modified"] == MTIME_HTTP
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["x-revision"] == "1"
    assert response.headers["x-item-id"] == result["id"]
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"report.txt\"; filename*=UTF-8''report.txt"
    )


def test_last_modified_is_the_change_time_without_an_mtime(lib: Library) -> None:
    lib.put("a.bin", DATA, mtime=None)
    modified = get(lib, "a.bin").headers["last-modified"]
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", modified)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("notes.txt", "text/plain"),
        ("photo.JPG", "image/jpeg"),
        ("song.mp3", "audio/mpeg"),
        ("backup.tar.gz", "application/gzip"),
        ("Makefile", "application/octet-stream"),
        ("archive.unknownext", "application/octet-stream"),
        ("data:text,html", "application/octet-stream"),
    ],
)
def test_content_type_comes_from_the_name(lib: Library, name: str, content_type: str) -> None:
    lib.put(name, DATA)
    response = get(lib, name)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type


def test_empty_file_downloads_as_an_empty_body(lib: Library) -> None:
    lib.put("empty.txt", b"")
    response = get(lib, "empty.txt")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "0"
    assert response.headers["etag"] == f'"{EMPTY_HASH}"'


def test_empty_file_has_no_satisfiable_byte_range(lib: Library) -> None:
    lib.put("empty.txt", b"")
    response = get(lib, "empty.txt", range="bytes=0-")
    assert_problem(response, 416, "range_not_satisfiable")
    assert response.headers["content-range"] == "bytes */0"


def test_nfd_request_finds_the_nfc_file(lib: Library) -> None:
    lib.put("café.txt", DATA)  # NFC
    response = lib.client.get(url("cafe\u0301.txt"), headers=lib.headers)
    assert response.status_code == 200
    assert response.content == DATA


def test_whole_file_is_handed_to_the_server_as_a_file(lib: Library) -> None:
    """With the ASGI pathsend extension on offer, the body is the object file's path."""
    lib.put("big.bin", DATA)
    messages: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"{V1}/download/big.bin",
        "raw_path": f"{V1}/download/big.bin".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", lib.headers["Authorization"].encode()),
            (b"range", b"bytes=0-0"),
            (b"if-range", b'W/"not-strong"'),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "extensions": {"http.response.pathsend": {}},
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    asyncio.run(lib.app(scope, receive, send))
    start, body = messages
    assert start["status"] == 200  # If-Range did not match: the Range was ignored
    assert body == {
        "type": "http.response.pathsend",
        "path": str(lib.app.state.services.blobs.object_path(hash_bytes(DATA))),
    }


def test_content_missing_from_disk_is_503_not_500(lib: Library) -> None:
    lib.put("lost.bin", DATA)
    lib.app.state.services.blobs.object_path(hash_bytes(DATA)).unlink()
    response = get(lib, "lost.bin")
    assert_problem(response, 503, "storage_unavailable")
    assert "retry-after" in response.headers


def make_inline(app: FastAPI, data: bytes) -> None:
    """Move stored content from its file into the database (as if a batch had stored it)."""
    services = app.state.services
    content_hash = hash_bytes(data)
    with services.db.write() as tx:
        ContentRepository(tx).add_data(content_hash, data)
    services.blobs.object_path(content_hash).unlink()


def test_inline_content_downloads_with_the_same_headers_as_a_file(lib: Library) -> None:
    lib.put("notes.txt", DATA)
    cases: list[dict[str, str]] = [
        {},
        {"Range": "bytes=10-19"},
        {"Range": "bytes=-5"},
        {"Range": "bytes=0-1,500-510,990-"},
        {"Range": "bytes=2000-"},
        {"If-None-Match": f'"{hash_bytes(DATA)}"'},
        {"If-Match": '"other"'},
        {"Range": "bytes=0-9", "If-Range": '"other"'},
    ]

    def answers() -> list[tuple[int, list[tuple[str, str]], bytes]]:
        out = []
        for extra in cases:
            for method in ("GET", "HEAD"):
                r = lib.client.request(
                    method, url("notes.txt") + "?route", headers={**lib.headers, **extra}
                )
                boundary = re.search(r"boundary=([0-9a-f]{32})", r.headers.get("content-type", ""))
                body, headers = r.content, list(r.headers.multi_items())
                if boundary:
                    body = body.replace(boundary[1].encode(), b"B")
                    headers = [(k, v.replace(boundary[1], "B")) for k, v in headers]
                out.append((r.status_code, headers, body))
        return out

    as_file = answers()
    make_inline(lib.app, DATA)
    assert not lib.app.state.services.blobs.has(hash_bytes(DATA))
    assert answers() == as_file
    whole = get(lib, "notes.txt")
    assert whole.content == DATA
    assert whole.headers["content-length"] == str(len(DATA))
    assert [s for s, _, _ in as_file][:10] == [200, 200, 206, 206, 206, 206, 206, 206, 416, 416]
    assert [s for s, _, _ in as_file][10:] == [304, 304, 412, 412, 200, 200]


def test_a_retained_revision_of_inline_content_downloads(lib: Library) -> None:
    lib.put("a.txt", b"first version", inline=True)
    lib.put("a.txt", DATA, inline=True)
    old = lib.client.get(url("a.txt") + "?revision=1", headers=lib.headers)
    assert old.status_code == 200
    assert old.content == b"first version"
    assert old.headers["etag"] == f'"{hash_bytes(b"first version")}"'
    assert get(lib, "a.txt").content == DATA


def test_inline_content_that_disagrees_with_its_record_is_503(lib: Library) -> None:
    lib.put("short.bin", DATA, inline=True)
    with lib.app.state.services.db.write() as tx:
        tx.exec_driver_sql(
            "UPDATE content_data SET data = "
            + ("X'00'" if lib.app.state.services.db.is_sqlite else "'\\x00'::bytea")
        )
    assert_problem(get(lib, "short.bin"), 503, "storage_unavailable")
    assert_problem(get(lib, "short.bin", range="bytes=0-0"), 503, "storage_unavailable")


def test_content_shorter_on_disk_than_recorded_is_503(lib: Library) -> None:
    lib.put("short.bin", DATA)
    lib.app.state.services.blobs.object_path(hash_bytes(DATA)).write_bytes(DATA[:10])
    assert_problem(get(lib, "short.bin"), 503, "storage_unavailable")


# -- ranges -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("range_header", "status", "content_range", "body"),
    [
        ("bytes=0-99", 206, "bytes 0-99/1000", DATA[0:100]),
        ("bytes=0-0", 206, "bytes 0-0/1000", DATA[0:1]),
        ("bytes=999-999", 206, "bytes 999-999/1000", DATA[999:]),
        ("bytes=990-", 206, "bytes 990-999/1000", DATA[990:]),
        ("bytes=0-", 206, "bytes 0-999/1000", DATA),
        ("bytes=-10", 206, "bytes 990-999/1000", DATA[990:]),
        ("bytes=-5000", 206, "bytes 0-999/1000", DATA),
        ("bytes=500-5000", 206, "bytes 500-999/1000", DATA[500:]),
        ("bytes=0-9,5-19", 206, "bytes 0-19/1000", DATA[0:20]),  # coalesced: one part
        ("bytes=0-9,2000-", 206, "bytes 0-9/1000", DATA[0:10]),  # unsatisfiable part dropped
        ("BYTES=10-19", 206, "bytes 10-19/1000", DATA[10:20]),
        ("items=0-9", 200, None, DATA),  # another unit: ignored
        ("bytes=9-0", 200, None, DATA),  # invalid: ignored
        ("bytes=abc", 200, None, DATA),
        ("bytes=", 200, None, DATA),
        ("bytes=1000-", 416, "bytes */1000", None),
        ("bytes=5000-6000", 416, "bytes */1000", None),
        ("bytes=-0", 416, "bytes */1000", None),
    ],
    ids=lambda value: f"{len(value)}B" if isinstance(value, bytes) else None,
)
def test_range_header_table(
    lib: Library, range_header: str, status: int, content_range: str | None, body: bytes | None
) -> None:
    lib.put("data.bin", DATA)
    response = get(lib, "data.bin", range=range_header)
    assert response.status_code == status, response.text
    assert response.headers.get("content-range") == content_range
    if body is None:
        assert_problem(response, 416, "range_not_satisfiable")
        return
    assert response.content == body
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["etag"] == f'"{hash_bytes(DATA)}"'
    assert response.headers["content-type"] == "application/octet-stream"


def parse_byteranges(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/byteranges body strictly by RFC 9110 section 14.6 / RFC 2046."""
    media_type, _, params = response.headers["content-type"].partition(";")
    assert media_type == "multipart/byteranges"
    match = re.fullmatch(r"\s*boundary=([0-9A-Za-z'()+_,./:=?-]{1,70})", params)
    assert match, params
    delimiter = b"--" + match[1].encode()
    body = response.content
    assert body.startswith(delimiter + b"\r\n")
    assert body.endswith(b"\r\n" + delimiter + b"--\r\n")
    inner = body[len(delimiter) + 2 : -(len(delimiter) + 6)]
    parts: list[tuple[dict[str, str], bytes]] = []
    for raw in inner.split(b"\r\n" + delimiter + b"\r\n"):
        head, _, data = raw.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("ascii").split("\r\n"):
            name, _, value = line.partition(": ")
            headers[name.lower()] = value
        parts.append((headers, data))
    return parts


@PREFIXES
def test_three_ranges_come_as_multipart_byteranges(lib: Library, prefix: str) -> None:
    lib.put("notes.txt", DATA)
    response = get(lib, "notes.txt", prefix=prefix, range="bytes=0-9, 100-199, -5")
    assert response.status_code == 206
    assert "content-range" not in response.headers
    assert response.headers["content-length"] == str(len(response.content))
    parts = parse_byteranges(response)
    assert [(h["content-type"], h["content-range"], d) for h, d in parts] == [
        ("text/plain", "bytes 0-9/1000", DATA[0:10]),
        ("text/plain", "bytes 100-199/1000", DATA[100:200]),
        ("text/plain", "bytes 995-999/1000", DATA[995:]),
    ]


def test_multipart_parts_keep_the_asked_order(lib: Library) -> None:
    lib.put("data.bin", DATA)
    response = get(lib, "data.bin", range="bytes=900-909,0-9")
    ranges = [h["content-range"] for h, _ in parse_byteranges(response)]
    assert ranges == ["bytes 900-909/1000", "bytes 0-9/1000"]


def test_ranges_of_a_file_larger_than_a_read_piece(lib: Library) -> None:
    big = bytes(range(256)) * (5 * 4096 + 3)  # ~5 MiB: several 1 MiB reads per part
    lib.put("big.bin", big)
    response = get(lib, "big.bin", range="bytes=1-3000000,4000000-")
    parts = parse_byteranges(response)
    assert [d for _, d in parts] == [big[1:3000001], big[4000000:]]
    single = get(lib, "big.bin", range="bytes=1048570-")
    assert single.status_code == 206
    assert single.content == big[1048570:]


def test_too_many_ranges_send_the_whole_file(lib: Library) -> None:
    lib.put("data.bin", DATA)
    many = ",".join(f"{i * 20}-{i * 20 + 1}" for i in range(17))
    response = get(lib, "data.bin", range=f"bytes={many}")
    assert response.status_code == 200
    assert response.content == DATA


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_unsatisfiable_range_is_416_naming_the_size(lib: Library, method: str) -> None:
    lib.put("data.bin", DATA)
    response = lib.client.request(
        method, url("data.bin"), headers={**lib.headers, "Range": "bytes=1000-"}
    )
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */1000"


# -- conditional requests -----------------------------------------------------


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        ("{etag}", 206),  # strong match: the range is sent
        ("W/{etag}", 200),  # weak: never good enough for If-Range
        ('"0000"', 200),  # another version: the whole new one
        (MTIME_HTTP, 200),  # a date (even the exact Last-Modified) is not trusted
        ("not a validator", 200),
    ],
)
def test_if_range_honours_only_a_strong_etag_match(
    lib: Library, if_range: str, status: int
) -> None:
    lib.put("data.bin", DATA)
    etag = f'"{hash_bytes(DATA)}"'
    response = get(lib, "data.bin", range="bytes=10-19", if_range=if_range.format(etag=etag))
    assert response.status_code == status
    assert response.content == (DATA[10:20] if status == 206 else DATA)


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", "W/{etag}", "*", '"other", {etag}', '"other",W/{etag}', ' "a,b" , {etag} '],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_none_match_hit_is_304_with_the_etag(
    lib: Library, if_none_match: str, method: str
) -> None:
    lib.put("data.bin", DATA)
    etag = f'"{hash_bytes(DATA)}"'
    response = lib.client.request(
        method,
        url("data.bin"),
        headers={**lib.headers, "If-None-Match": if_none_match.format(etag=etag)},
    )
    assert response.status_code == 304
    assert response.headers["etag"] == etag
    assert response.content == b""


@pytest.mark.parametrize("if_none_match", ['"other"', 'W/"other"', "garbage", '"a", "b"'])
def test_if_none_match_miss_sends_the_file(lib: Library, if_none_match: str) -> None:
    lib.put("data.bin", DATA)
    response = get(lib, "data.bin", if_none_match=if_none_match)
    assert response.status_code == 200
    assert response.content == DATA


def test_if_none_match_is_checked_before_the_range(lib: Library) -> None:
    lib.put("data.bin", DATA)
    response = get(lib, "data.bin", if_none_match="*", range="bytes=5000-")
    assert response.status_code == 304


def test_if_none_match_of_an_old_version_gets_the_new_one(lib: Library) -> None:
    lib.put("data.bin", DATA)
    old = get(lib, "data.bin").headers["etag"]
    lib.put("data.bin", DATA[::-1])
    response = get(lib, "data.bin", if_none_match=old)
    assert response.status_code == 200
    assert response.content == DATA[::-1]


def test_if_modified_since_the_last_modification_is_304(lib: Library) -> None:
    lib.put("data.bin", DATA)
    assert get(lib, "data.bin", if_modified_since=MTIME_HTTP).status_code == 304
    earlier = "Tue, 02 Jan 2024 03:04:04 GMT"
    assert get(lib, "data.bin", if_modified_since=earlier).status_code == 200
    # If-None-Match takes precedence over If-Modified-Since (RFC 9110 13.2.2)
    both = get(lib, "data.bin", if_modified_since=MTIME_HTTP, if_none_match='"other"')
    assert both.status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"if_match": "{etag}"}, 200),
        ({"if_match": "*"}, 200),
        ({"if_match": '"other"'}, 412),
        ({"if_match": "W/{etag}"}, 412),  # If-Match compares strongly
        ({"if_unmodified_since": MTIME_HTTP}, 200),
        ({"if_unmodified_since": "Mon, 01 Jan 2024 00:00:00 GMT"}, 412),
    ],
)
def test_if_match_and_if_unmodified_since_fail_with_412(
    lib: Library, headers: dict[str, str], status: int
) -> None:
    lib.put("data.bin", DATA)
    etag = f'"{hash_bytes(DATA)}"'
    sent = {k.replace("_", "-"): v.format(etag=etag) for k, v in headers.items()}
    response = lib.client.get(url("data.bin"), headers={**lib.headers, **sent})
    assert response.status_code == status
    if status == 412:
        assert_problem(response, 412, "precondition_failed")


# -- HEAD ---------------------------------------------------------------------


@PREFIXES
@pytest.mark.parametrize("range_header", [None, "bytes=0-9", "bytes=0-9,20-29"])
def test_head_sends_the_headers_of_get_without_a_body(
    lib: Library, prefix: str, range_header: str | None
) -> None:
    lib.put("notes.txt", DATA)
    extra = {"Range": range_header} if range_header else {}
    got = lib.client.get(url("notes.txt", prefix), headers={**lib.headers, **extra})
    head = lib.client.head(url("notes.txt", prefix), headers={**lib.headers, **extra})
    assert head.status_code == got.status_code
    assert head.content == b""
    same = {"content-length", "etag", "last-modified", "accept-ranges", "content-range"}
    same |= {"x-revision", "x-item-id", "content-disposition"}
    for name in same:
        assert head.headers.get(name) == got.headers.get(name), name
    if range_header and "," in range_header:
        # the boundary is fresh per response; the rest of the type is not
        assert head.headers["content-type"].startswith("multipart/byteranges; boundary=")
    else:
        assert head.headers["content-type"] == got.headers["content-type"]


def test_head_of_unknown_path_is_404(lib: Library) -> None:
    response = lib.client.head(url("nothing.txt"), headers=lib.headers)
    assert response.status_code == 404


# -- revisions, deletes, other users -------------------------------------------


@PREFIXES
def test_revision_query_serves_an_older_version(lib: Library, prefix: str) -> None:
    first = lib.put("doc.txt", DATA)
    lib.put("doc.txt", b"second version")
    current = get(lib, "doc.txt", prefix=prefix)
    assert current.content == b"second version"
    assert current.headers["x-revision"] == "2"
    old = lib.client.get(url("doc.txt", prefix), params={"revision": 1}, headers=lib.headers)
    assert old.status_code == 200
    assert old.content == DATA
    assert old.headers["x-revision"] == "1"
    assert old.headers["x-item-id"] == first["id"]
    assert old.headers["etag"] == f'"{hash_bytes(DATA)}"'
    ranged = lib.client.get(
        url("doc.txt", prefix), params={"revision": 1}, headers={**lib.headers, "Range": "bytes=-3"}
    )
    assert ranged.status_code == 206
    assert ranged.content == DATA[-3:]
    latest = lib.client.get(url("doc.txt", prefix), params={"revision": 2}, headers=lib.headers)
    assert latest.content == b"second version"


def test_revision_that_does_not_exist_is_404(lib: Library) -> None:
    lib.put("doc.txt", DATA)
    response = lib.client.get(url("doc.txt"), params={"revision": 2}, headers=lib.headers)
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("revision", ["0", "-1", "abc", "1.5", str(2**31)])
def test_revision_must_be_a_revision_number(lib: Library, revision: str) -> None:
    lib.put("doc.txt", DATA)
    response = lib.client.get(url("doc.txt"), params={"revision": revision}, headers=lib.headers)
    assert_problem(response, 400, "invalid_request")


def test_deleted_path_is_404_but_its_old_revision_stays_downloadable(lib: Library) -> None:
    lib.put("gone.txt", DATA)
    lib.delete("gone.txt")
    assert_problem(get(lib, "gone.txt"), 404, "not_found")
    old = lib.client.get(url("gone.txt"), params={"revision": 1}, headers=lib.headers)
    assert old.status_code == 200
    assert old.content == DATA
    tombstone = lib.client.get(url("gone.txt"), params={"revision": 2}, headers=lib.headers)
    assert_problem(tombstone, 404, "not_found")


@PREFIXES
def test_unknown_path_is_404(lib: Library, prefix: str) -> None:
    assert_problem(get(lib, "never/was.txt", prefix=prefix), 404, "not_found")


def test_directory_is_not_a_file(lib: Library) -> None:
    lib.put("dir/file.txt", DATA)
    assert_problem(get(lib, "dir"), 404, "not_found")


def test_another_users_path_is_404_like_an_unknown_one(
    make_library: Callable[[str], Library],
) -> None:
    alices = make_library("alice")
    bobs = make_library("bob")
    bobs.put("secret.txt", DATA)
    for revision in (None, 1):
        params = {"revision": revision} if revision else {}
        response = alices.client.get(url("secret.txt"), params=params, headers=alices.headers)
        assert_problem(response, 404, "not_found")
    assert get(bobs, "secret.txt").content == DATA


def test_download_needs_a_token(lib: Library) -> None:
    lib.put("data.bin", DATA)
    response = lib.client.get(url("data.bin"))
    assert_problem(response, 401, "unauthorized")


def test_user_token_can_download_without_naming_a_device(
    app: FastAPI, client: TestClient, alice: Account
) -> None:
    registered = client.post(f"{V1}/devices", json={"name": "pc"}, headers=alice.headers)
    device = client.post("/api/v1/auth/device", json={"device_token": registered.json()["token"]})
    alices = Library(
        client=client,
        app=app,
        user_id=_user_id(app, "alice"),
        headers={"Authorization": f"Bearer {device.json()['access_token']}"},
    )
    alices.put("mine.txt", DATA)
    response = client.get(url("mine.txt"), headers=alice.headers)
    assert response.status_code == 200
    assert response.content == DATA


def _user_id(app: FastAPI, username: str) -> str:
    return next(u.id for u in app.state.services.accounts.list_users() if u.username == username)


# -- invalid paths ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_path",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E/%2E%2E/etc/passwd",
        "a/%2E%2E/%2E%2E/b",
        "a/%2e/b",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "a//b",
        "a/b/",
        "a%00b",
        "a%0Ab",
        "a%5Cb",  # backslash
        "",
        "%FF%FE",  # not UTF-8
    ],
)
def test_invalid_path_is_400_never_a_file(lib: Library, raw_path: str) -> None:
    lib.put("etc/passwd", DATA)  # a real file the traversal could be aiming at
    for prefix in ("/api/v1/sync", "/api/sync"):
        response = lib.client.get(f"{prefix}/download/{raw_path}", headers=lib.headers)
        assert_problem(response, 400, "invalid_path")


def test_percent_encoded_segments_are_decoded(lib: Library) -> None:
    name = "music/A Tribe #1/?what & why%.mp3"
    lib.put(name, DATA)
    response = get(lib, name)
    assert response.status_code == 200
    assert response.content == DATA


# -- Content-Disposition --------------------------------------------------------


def _disposition(header: str) -> tuple[str, str]:
    match = re.fullmatch(r'attachment; filename="([^"\\]*)"; filename\*=UTF-8\'\'(\S+)', header)
    assert match, header
    assert all(c.isalnum() or c in "%-._~" for c in match[2]), match[2]
    return match[1], unquote(match[2], errors="strict")


@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ("résumé.pdf", "resume.pdf"),
        ("日本語のファイル.txt", "________.txt"),
        ("emoji 🎉.png", "emoji _.png"),
        ('say "hi".txt', "say _hi_.txt"),
        ("100% done.txt", "100_ done.txt"),
        ("semi;colon, comma=x.txt", "semi;colon, comma=x.txt"),
        ("it's fine.txt", "it's fine.txt"),
        ("ﬁle.txt", "file.txt"),  # NFKD: the ligature becomes "fi"
        ("\u202eevil\u202dtxt.exe", "_evil_txt.exe"),  # bidi overrides
        ("🎉", "_"),
        ("  spaced  ", "spaced"),
    ],
)
def test_content_disposition_is_safe_for_any_name(lib: Library, name: str, fallback: str) -> None:
    lib.put(f"folder/{name}", DATA)
    response = get(lib, f"folder/{name}")
    assert response.status_code == 200
    header = response.headers["content-disposition"]
    assert header.isascii()
    ascii_name, exact = _disposition(header)
    assert ascii_name == fallback
    assert exact == name
