"""api/http_protocol.py: uvicorn's httptools protocol with request bodies handed
over as the parser's pieces. Bodies must arrive whole and in order whatever
pieces the socket delivers; one piece is handed over as it is (not copied)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from shelfsync.server.api.http_protocol import BodyPiecesProtocol, _BodyPieces
from tests.api.live_server import LiveServer, trickled_body


def test_one_piece_is_handed_over_as_it_is() -> None:
    body = _BodyPieces()
    assert not body
    piece = b"x" * 100_000
    body += piece
    assert len(body) == 100_000
    assert bytes(body) is piece


def test_several_pieces_are_joined_in_order() -> None:
    body = _BodyPieces()
    for piece in (b"ab", b"", b"cde", b"f"):
        body += piece
    assert len(body) == 6
    assert bytes(body) == b"abcdef"


async def echo_digest(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers the SHA-256 and length of the body it received, and the types of
    the message bodies."""
    assert scope["type"] == "http"
    digest = hashlib.sha256()
    size = 0
    kinds: set[str] = set()
    while True:
        message = await receive()
        body = message.get("body", b"")
        kinds.add(type(body).__name__)
        digest.update(body)
        size += len(body)
        if not message.get("more_body", False):
            break
    answer = f"{digest.hexdigest()} {size} {','.join(sorted(kinds))}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with LiveServer(echo_digest, BodyPiecesProtocol) as live:
        yield live.url


def expected(data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()} {len(data)} bytes"


@pytest.mark.parametrize("size", [0, 1, 65_537, 5 * 1024 * 1024 + 3])
def test_bodies_arrive_whole_over_a_real_socket(server_url: str, size: int) -> None:
    data = random.Random(size).randbytes(size)
    with httpx.Client(base_url=server_url) as client:
        for _ in range(2):  # the second on the same connection
            answer = client.post("/", content=data)
            assert answer.text == expected(data)


def test_a_trickled_body_arrives_whole(server_url: str) -> None:
    data, body = trickled_body(pause_every=7)
    with httpx.Client(base_url=server_url) as client:
        answer = client.post("/", content=body, headers={"content-length": str(len(data))})
    assert answer.text == expected(data)
