"""The download lane (api/routes/download.py, DownloadLane) answers exactly as the route.

A sync client's GET/HEAD of `<prefix>/download/{path}` is answered by a lean
pure-ASGI path; anything with a query string goes on to the FastAPI route
(which ignores a query it does not know). So each request here is sent twice,
once plain (the lane) and once with `?route` (the route), and the two answers
must agree in status, headers and body (the random multipart boundary aside).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from shelfsync.content_hash import hash_bytes
from shelfsync.server.api import file_responses
from shelfsync.server.api.routes import download
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.devices import DeviceChanges
from shelfsync.server.services.tokens import TokenIssuer
from shelfsync.server.storage.engine import WouldBlock
from shelfsync.server.storage.secret_file import load_or_create_secret
from tests.api.conftest import Account
from tests.api.test_download import DATA, Library, make_inline, make_library, url

__all__ = ["make_library"]  # the fixture, imported for pytest

PREFIXES = ("/api/v1/sync", "/api/sync")
_BOUNDARY = re.compile(rb"[0-9a-f]{32}")


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _answer(response: httpx.Response) -> Answer:
    boundary = re.search(r"boundary=([0-9a-f]{32})", response.headers.get("content-type", ""))
    body, headers = response.content, list(response.headers.multi_items())
    if boundary:
        body = body.replace(boundary[1].encode(), b"BOUNDARY")
        headers = [(k, v.replace(boundary[1], "BOUNDARY")) for k, v in headers]
    return Answer(response.status_code, headers, body)


@pytest.fixture
def lane_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the lane served (so each comparison knows it compared the two);
    a try on the event loop that would block (and is asked again) is not counted."""
    calls: list[str] = []
    real = download._serve_lean

    def spy(*args: object, **kwargs: object) -> object:
        try:
            answer = real(*args, **kwargs)  # type: ignore[arg-type]
        except WouldBlock:
            raise
        except BaseException:
            calls.append(args[2].path)  # type: ignore[attr-defined]
            raise
        calls.append(args[2].path)  # type: ignore[attr-defined]
        return answer

    monkeypatch.setattr(download, "_serve_lean", spy)
    return calls


@pytest.fixture
def lib(make_library: Callable[[str], Library]) -> Library:
    return make_library("alice")


Compare = Callable[..., Answer]


@pytest.fixture
def compare(lib: Library, lane_calls: list[str]) -> Compare:
    def run(
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        *,
        lane: bool = True,
    ) -> Answer:
        sent = headers if headers is not None else list(lib.headers.items())
        before = len(lane_calls)
        lean = _answer(lib.client.request(method, target, headers=sent))
        assert len(lane_calls) == before + lane, f"{method} {target}: lane taken {lane_calls}"
        routed = _answer(lib.client.request(method, f"{target}?route", headers=sent))
        assert len(lane_calls) == before + lane
        assert lean == routed, f"{method} {target} {headers}"
        return lean

    return run


RANGES = [
    "bytes=0-99",
    "bytes=990-",
    "bytes=-10",
    "bytes=0-9,5-19",
    "bytes=0-9,20-29,500-",  # multipart
    "items=0-9",
    "bytes=abc",
    "bytes=1000-",  # 416
    "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(20)),  # too many: 200
]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_lane_answers_files_and_ranges_as_the_route(
    lib: Library, compare: Compare, prefix: str, method: str
) -> None:
    lib.put("dir/data.bin", DATA)
    lib.put("notes.txt", b"hello")
    lib.put("empty.txt", b"")
    target = url("dir/data.bin", prefix)
    assert compare(method, target).status == 200
    assert compare(method, url("notes.txt", prefix)).status == 200
    assert compare(method, url("empty.txt", prefix)).status == 200
    for range_header in RANGES:
        compare(method, target, [*lib.headers.items(), ("Range", range_header)])
    compare(method, url("empty.txt", prefix), [*lib.headers.items(), ("Range", "bytes=0-")])


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_lane_answers_conditions_as_the_route(lib: Library, compare: Compare, method: str) -> None:
    lib.put("data.bin", DATA)
    etag = f'"{hash_bytes(DATA)}"'
    target, auth = url("data.bin"), list(lib.headers.items())
    cases = [
        [("If-None-Match", etag)],
        [("If-None-Match", f"W/{etag}")],
        [("If-None-Match", '"other"')],
        [("If-None-Match", "*")],
        [("If-Match", '"other"')],
        [("If-Match", etag), ("Range", "bytes=0-9")],
        [("If-Modified-Since", "Tue, 02 Jan 2024 03:04:05 GMT")],
        [("If-Modified-Since", "Mon, 01 Jan 2024 00:00:00 GMT")],
        [("If-Unmodified-Since", "Mon, 01 Jan 2024 00:00:00 GMT")],
        [("If-Modified-Since", "not a date")],
        [("Range", "bytes=0-9"), ("If-Range", etag)],
        [("Range", "bytes=0-9"), ("If-Range", '"other"')],
        [("Range", "bytes=0-9"), ("If-Range", "Tue, 02 Jan 2024 03:04:05 GMT")],
        # FastAPI reads the first of a repeated header; so does the lane.
        [("Range", "bytes=0-9"), ("Range", "bytes=10-19")],
        [("If-None-Match", '"other"'), ("If-None-Match", etag)],
    ]
    answers = {compare(method, target, [*auth, *case]).status for case in cases}
    assert answers >= {200, 206, 304, 412}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_lane_answers_errors_as_the_route(
    lib: Library, make_library: Callable[[str], Library], compare: Compare, prefix: str
) -> None:
    lib.put("data.bin", DATA)
    bob = make_library("bob")
    bob.put("private.bin", DATA)
    auth = list(lib.headers.items())
    assert compare("GET", url("nothing.bin", prefix)).status == 404
    assert compare("HEAD", url("nothing.bin", prefix)).status == 404
    assert compare("GET", url("private.bin", prefix)).status == 404
    assert compare("GET", f"{prefix}/download/").status == 400
    for raw in ("a//b", "a/%2E%2E/b", "%FF%FE", "a%00b", "a%0Ab"):
        assert compare("GET", f"{prefix}/download/{raw}").status == 400
    lib.delete("data.bin")
    assert compare("GET", url("data.bin", prefix)).status == 404
    # Bearer tokens the lane takes; the route refuses them alike.
    for token in ("Bearer garbage", "bearer garbage", "BEARER  garbage  "):
        assert compare("GET", url("x", prefix), [("Authorization", token)]).status == 401
    # Headers the lane leaves to the route.
    for sent in (
        [],
        [("Authorization", "Basic abc")],
        [("Authorization", "Bearer")],
        [("Authorization", "Bearer ")],
        [*auth, ("X-Device-ID", "d" * 65)],
    ):
        compare("GET", url("x", prefix), sent, lane=False)


def test_lane_answers_missing_content_as_the_route(lib: Library, compare: Compare) -> None:
    lib.put("lost.bin", DATA)
    lib.put("short.bin", DATA[:500])
    lib.app.state.services.blobs.object_path(hash_bytes(DATA)).unlink()
    lib.app.state.services.blobs.object_path(hash_bytes(DATA[:500])).write_bytes(b"x")
    for path in ("lost.bin", "short.bin"):
        assert compare("GET", url(path)).status == 503
        assert compare("GET", url(path), [*lib.headers.items(), ("Range", "bytes=0-9")]).status == (
            503
        )


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_lane_answers_inline_content_as_the_route_and_as_its_file(
    lib: Library, compare: Compare, method: str
) -> None:
    """Small content stored in the database: the lane (its one statement reads
    the bytes too) and the route answer alike, and as they did for the file."""
    lib.put("dir/data.bin", DATA)
    lib.put("notes.txt", b"hello")
    etag = f'"{hash_bytes(DATA)}"'
    auth = list(lib.headers.items())
    cases: list[tuple[str, list[tuple[str, str]]]] = [
        (url("dir/data.bin"), auth),
        (url("notes.txt"), auth),
        *((url("dir/data.bin"), [*auth, ("Range", r)]) for r in RANGES),
        *(
            (url("dir/data.bin"), [*auth, *c])
            for c in (
                [("If-None-Match", etag)],
                [("If-None-Match", '"other"')],
                [("If-Match", '"other"')],
                [("If-Modified-Since", "Tue, 02 Jan 2024 03:04:05 GMT")],
                [("Range", "bytes=0-9"), ("If-Range", etag)],
                [("Range", "bytes=0-9"), ("If-Range", '"other"')],
            )
        ),
    ]
    as_files = [compare(method, target, headers) for target, headers in cases]
    make_inline(lib.app, DATA)
    make_inline(lib.app, b"hello")
    assert [compare(method, target, headers) for target, headers in cases] == as_files
    assert as_files[0].status == 200
    if method == "GET":
        assert as_files[0].body == DATA


def test_lane_answers_broken_inline_content_as_the_route(lib: Library, compare: Compare) -> None:
    lib.put("short.bin", DATA, inline=True)
    with lib.app.state.services.db.write() as tx:
        tx.exec_driver_sql("DELETE FROM content_data")
        tx.exec_driver_sql(
            "INSERT INTO content_data (content_hash, data) VALUES ('"
            + hash_bytes(DATA)
            + "', "
            + ("X'00'" if lib.app.state.services.db.is_sqlite else "'\\x00'::bytea")
            + ")"
        )
    assert compare("GET", url("short.bin")).status == 503
    assert compare(
        "GET", url("short.bin"), [*lib.headers.items(), ("Range", "bytes=0-0")]
    ).status == (503)


def test_lane_refuses_a_revoked_device_at_once(lib: Library, compare: Compare) -> None:
    lib.put("data.bin", DATA)
    assert compare("GET", url("data.bin")).status == 200
    services = lib.app.state.services
    owner = Principal(next(u for u in services.accounts.list_users() if u.id == lib.user_id), None)
    (status,) = services.devices.list(owner)
    services.devices.update(owner, status.device.id, DeviceChanges(enabled=False))
    assert compare("GET", url("data.bin")).status == 401


def test_lane_takes_user_tokens_and_device_headers_as_the_route(
    app: FastAPI, client: TestClient, alice: Account, bob: Account, lane_calls: list[str]
) -> None:
    mine = client.post("/api/v1/sync/devices", json={"name": "pc"}, headers=alice.headers)
    theirs = client.post("/api/v1/sync/devices", json={"name": "pc"}, headers=bob.headers)
    cases = [
        alice.headers,
        {**alice.headers, "X-Device-ID": mine.json()["device"]["id"]},
        {**alice.headers, "X-Device-ID": theirs.json()["device"]["id"]},  # 403
        {**alice.headers, "X-Device-ID": ""},
        {**alice.headers, "X-Device-ID": "no-such-device"},
    ]
    statuses = []
    for headers in cases:
        lean = _answer(client.get(url("nothing.bin"), headers=headers))
        routed = _answer(client.get(url("nothing.bin") + "?route", headers=headers))
        assert lean == routed, headers
        statuses.append(lean.status)
    assert statuses == [404, 404, 403, 404, 403]
    assert len(lane_calls) == len(cases)


def test_lane_refuses_an_expired_token_as_the_route(
    app: FastAPI, lib: Library, compare: Compare
) -> None:
    lib.put("data.bin", DATA)
    secret = load_or_create_secret(app.state.settings.secret_path)
    issuer = TokenIssuer(secret=secret, access_ttl_s=-10)
    expired = issuer.issue_access(user_id=lib.user_id, user_generation=1, now=utcnow())
    answer = compare("GET", url("data.bin"), [("Authorization", f"Bearer {expired}")])
    assert answer.status == 401


def test_lane_requests_are_counted_under_the_route_template(lib: Library) -> None:
    lib.put("data.bin", DATA)
    for prefix in PREFIXES:
        lib.client.get(url("data.bin", prefix), headers=lib.headers)
        lib.client.head(url("nothing.bin", prefix), headers=lib.headers)
    metrics = lib.client.get("/metrics").text
    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "shelfsync_http_requests_total"
    }
    for prefix in PREFIXES:
        assert counts[("GET", f"{prefix}/download/{{path}}", "200")] == 1
        assert counts[("HEAD", f"{prefix}/download/{{path}}", "404")] == 1


def test_lane_answers_on_the_event_loop_on_sqlite(
    lib: Library, compare: Compare, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker thread for the statement and a range in the page cache on
    SQLite; PostgreSQL (a round trip of any length) goes to one."""
    lib.put("data.bin", DATA)
    compare("GET", url("data.bin"))  # writes last_seen_at: a worker thread
    hops: list[object] = []
    real = download.run_in_threadpool

    async def counted(func: Callable[..., object], *args: object, **kwargs: object) -> object:
        hops.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(download, "run_in_threadpool", counted)
    answer = lib.client.get(url("data.bin"), headers={**lib.headers, "Range": "bytes=10-99"})
    assert (answer.status_code, answer.content) == (206, DATA[10:100])
    assert len(hops) == (0 if lib.app.state.services.db.reads_nowait else 1)


def _eagain(*args: object) -> int:
    raise BlockingIOError(errno.EAGAIN, "not in the page cache")


def _unsupported(*args: object) -> int:
    raise OSError(errno.EOPNOTSUPP, "RWF_NOWAIT not supported")


def _partly(*args: object) -> int:
    return 1  # only the first page was in the page cache


@pytest.mark.parametrize("preadv", [_eagain, _unsupported, _partly])
def test_lane_reads_a_range_not_in_the_page_cache_when_sending_it(
    lib: Library, compare: Compare, monkeypatch: pytest.MonkeyPatch, preadv: Callable[..., int]
) -> None:
    lib.put("data.bin", DATA)
    monkeypatch.setattr(file_responses.os, "preadv", preadv)
    for range_header in ["bytes=0-99", "bytes=990-", "bytes=-10"]:
        answer = compare("GET", url("data.bin"), [*lib.headers.items(), ("Range", range_header)])
        assert answer.status == 206


@pytest.mark.parametrize("buffer_body", [True, False])
def test_lane_sends_a_range_from_its_read_buffer_where_the_server_takes_one(
    lib: Library, buffer_body: bool
) -> None:
    services = lib.app.state.services
    if not services.db.reads_nowait:
        pytest.skip("PostgreSQL: answered in a worker thread")
    lib.put("data.bin", DATA)
    assert lib.client.get(url("data.bin"), headers=lib.headers).status_code == 200  # last_seen_at
    scope = {
        "path": "/api/v1/sync/download/data.bin",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", lib.headers["Authorization"].encode()),
            (b"range", b"bytes=3-40"),
        ],
    }
    lean = download._lean_request(scope, ("/api/v1/sync/download/",))
    assert lean is not None
    response = download._serve_lean(
        services, scope, lean, body=True, nowait=True, buffer_body=buffer_body
    )
    assert isinstance(response, file_responses.RangesResponse)
    assert response._data == DATA[3:41]
    assert type(response._data) is (bytearray if buffer_body else bytes)
