"""http.py: httpx errors and problem answers become client errors; retries; tokens."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from shelfsync.client.errors import (
    ApiError,
    ChunkConflict,
    CursorExpired,
    HashMismatch,
    MissingChunks,
    NotFound,
    ServerUnreachable,
    Unauthorized,
    UploadGone,
)
from shelfsync.client.http import ApiClient, RetryPolicy, encode_library_path

Handler = Callable[[httpx.Request], httpx.Response]
GRANT = {"access_token": "jwt-1", "token_type": "Bearer", "expires_in": 900, "device_id": "d1"}
FEED = {"changes": [], "cursor": "c", "has_more": False, "latest_seq": 0}


def problem(status: int, code: str, **extra: object) -> httpx.Response:
    body = {
        "type": "about:blank",
        "title": "x",
        "status": status,
        "detail": f"{code}!",
        "code": code,
    }
    body.update(extra)
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client_for(sleeps: list[float]) -> Iterator[Callable[[Handler], ApiClient]]:
    made: list[ApiClient] = []

    def make(handler: Handler) -> ApiClient:
        def route(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/api/v1/auth/device":
                return httpx.Response(200, json=GRANT)
            return handler(request)

        api = ApiClient(
            "http://server.test",
            device_token="tok",
            transport=httpx.MockTransport(route),
            retry=RetryPolicy(attempts=3, first_delay_s=0.01),
            sleep=sleeps.append,
        )
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param(problem(404, "not_found"), NotFound, id="404"),
        pytest.param(problem(410, "cursor_expired", reason="purged"), CursorExpired, id="cursor"),
        pytest.param(problem(410, "upload_expired"), UploadGone, id="upload-expired"),
        pytest.param(problem(409, "upload_not_pending"), UploadGone, id="not-pending"),
        pytest.param(problem(409, "chunk_conflict"), ChunkConflict, id="chunk-conflict"),
        pytest.param(problem(400, "hash_mismatch"), HashMismatch, id="hash-mismatch"),
        pytest.param(problem(400, "invalid_path"), ApiError, id="other-code"),
        pytest.param(httpx.Response(500, text="<html>oops</html>"), ApiError, id="not-json"),
    ],
)
def test_problem_answers_become_typed_errors(
    client_for: Callable[[Handler], ApiClient], answer: httpx.Response, error: type[ApiError]
) -> None:
    api = client_for(lambda _: answer)
    with pytest.raises(error) as caught:
        api.changes(cursor="x")
    assert type(caught.value) is error
    assert caught.value.status == answer.status_code


def test_missing_chunks_lists_what_to_send(client_for: Callable[[Handler], ApiClient]) -> None:
    api = client_for(lambda _: problem(400, "missing_chunks", missing_chunks=[2, 5]))
    with pytest.raises(MissingChunks) as caught:
        api.complete_upload("s1")
    assert caught.value.missing == [2, 5]


def test_transport_errors_become_server_unreachable_after_retries(
    client_for: Callable[[Handler], ApiClient], sleeps: list[float]
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = client_for(refuse)
    with pytest.raises(ServerUnreachable, match="cannot reach") as caught:
        api.conflicts()
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(sleeps) == 2  # three attempts


def test_a_broken_download_stream_becomes_server_unreachable(
    client_for: Callable[[Handler], ApiClient],
) -> None:
    class Broken(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"half"
            raise httpx.ReadError("connection reset")

    api = client_for(lambda _: httpx.Response(200, stream=Broken()))
    with pytest.raises(ServerUnreachable), api.download("a/b.bin") as stream:
        b"".join(stream.iter_bytes())


def test_a_chunk_sent_in_pieces_has_its_length_and_goes_whole_again_on_a_retry(
    client_for: Callable[[Handler], ApiClient], sleeps: list[float]
) -> None:
    class Pieces:
        def __len__(self) -> int:
            return 7

        def __iter__(self) -> Iterator[bytes]:
            yield b"abc"
            yield b"defg"

    received: list[tuple[str | None, str | None, bytes]] = []
    receipt = {"index": 3, "size": 7, "received_count": 1, "chunk_count": 4}

    def handler(request: httpx.Request) -> httpx.Response:
        body = request.read()
        received.append(
            (request.headers.get("content-length"), request.headers.get("transfer-encoding"), body)
        )
        if len(received) == 1:
            raise httpx.WriteError("connection reset", request=request)
        return httpx.Response(200, json=receipt)

    api = client_for(handler)
    answer = api.put_chunk("s1", index=3, data=Pieces(), content_digest=None)
    assert answer.size == 7
    assert received == [("7", None, b"abcdefg")] * 2
    assert len(sleeps) == 1


def test_throttled_answers_are_retried_after_retry_after(
    client_for: Callable[[Handler], ApiClient], sleeps: list[float]
) -> None:
    answers = [httpx.Response(503, headers={"Retry-After": "2"}), httpx.Response(200, json=FEED)]
    api = client_for(lambda _: answers.pop(0))
    assert api.changes(cursor=None).cursor == "c"
    assert sleeps == [2.0]


def test_a_rejected_access_token_is_renewed_once(
    client_for: Callable[[Handler], ApiClient],
) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return problem(401, "unauthorized") if len(seen) == 1 else httpx.Response(200, json=FEED)

    api = client_for(handler)
    api.changes(cursor=None)
    assert seen == ["Bearer jwt-1", "Bearer jwt-1"]
    assert api.device_id == "d1"


def test_a_revoked_device_is_unauthorized(client_for: Callable[[Handler], ApiClient]) -> None:
    api = client_for(lambda _: problem(401, "unauthorized"))
    with pytest.raises(Unauthorized):
        api.conflicts()


def test_report_sends_null_base_revisions_and_upload_keeps_them(
    client_for: Callable[[Handler], ApiClient],
) -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return problem(400, "invalid_request")

    from shelfsync.protocol.uploads import UploadCreate

    api = client_for(handler)
    with pytest.raises(ApiError):
        api.create_upload(UploadCreate(path="a", size=1, content_hash="0" * 64, base_revision=None))
    assert bodies[0]["base_revision"] is None
    assert "block_hashes" not in bodies[0]


def test_paths_are_percent_encoded_per_segment() -> None:
    assert encode_library_path("a b/c#d/é?.txt") == "a%20b/c%23d/%C3%A9%3F.txt"
