"""api/http_protocol.py's DirectBody: a body read by a body thread from the socket
straight into the app's buffer, over a real uvicorn server on loopback (uvloop
and asyncio's own loop).

The connection must come back to uvicorn exactly at the next request's first
byte (keep-alive, pipelining), drop the rest of a body left half read, report
a client that goes or stalls, end the thread's read when the request is
cancelled, and leave the body to `receive` when every body thread is taken."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from shelfsync.server.api.body_reader import ReadBody, ReadersBusy, direct_body
from shelfsync.server.api.http_protocol import BODY_THREADS, BodyPiecesProtocol
from tests.api.live_server import LiveServer, body_threads_taken, trickled_body

EVENTS: list[str] = []


async def answer(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_direct(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the body in a body thread into buffers of `?buf=` bytes (at most
    `?stop=` bytes of it) and answers `direct <sha256> <size> <after>`, where
    <after> is what `receive` says once the body is all read; without a
    reader, `receive <sha256> <size>`, and with every body thread taken
    `busy, by receive <sha256> <size>`. `?idle=` is the idle timeout (408),
    `?cancel=` cancels the read after that many seconds."""
    assert scope["type"] == "http"
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    reader = direct_body(scope)
    digest = hashlib.sha256()

    async def by_receive(label: str) -> None:
        size = 0
        while True:
            message = await receive()
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await answer(send, 200, f"{label} {digest.hexdigest()} {size}")

    if reader is None:
        await by_receive("receive")
        return
    buffer = bytearray(int(query.get("buf", "65536")))
    stop = int(query.get("stop", "-1"))
    idle = float(query["idle"]) if "idle" in query else None
    cancel_s = float(query["cancel"]) if "cancel" in query else None
    sizes = [0]

    def work(read: ReadBody) -> None:
        assert threading.current_thread().name.startswith("body")
        while True:
            with memoryview(buffer) as view:
                n = read(view)
            digest.update(buffer[:n])
            sizes[0] += n
            if n < len(buffer) or 0 <= stop <= sizes[0]:
                break

    try:
        async with asyncio.timeout(cancel_s):
            await reader.read_in_thread(work, idle_timeout_s=idle)
    except ReadersBusy:
        await by_receive("busy, by receive")
        return
    except ClientDisconnect:
        EVENTS.append(f"disconnect after {sizes[0]}")
        return
    except TimeoutError:
        if cancel_s is not None:
            EVENTS.append(f"cancelled after {sizes[0]}")
            return
        await answer(send, 408, f"stalled after {sizes[0]}")
        return
    size = sizes[0]
    after = "-"
    if stop < 0:
        message = await receive()
        after = f"{message['type']}:{len(message.get('body', b''))}:{message.get('more_body')}"
    await answer(send, 200, f"direct {digest.hexdigest()} {size} {after}")


# Pausing the transport and reading its socket from a thread: uvloop's (the
# server's default loop) and asyncio's own.
@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    with LiveServer(read_direct, BodyPiecesProtocol, loop=request.param) as live:
        yield "127.0.0.1", live.port


def next_event() -> str:
    """The app's first event (it may come just after the connection closed)."""
    deadline = time.monotonic() + 10
    while not EVENTS:
        assert time.monotonic() < deadline, "the app never told of the body's end"
        time.sleep(0.01)
    return EVENTS[0]


def url(server: tuple[str, int]) -> str:
    return f"http://{server[0]}:{server[1]}"


def done(data: bytes) -> str:
    return f"direct {hashlib.sha256(data).hexdigest()} {len(data)} http.request:0:False"


def request(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: t", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Responses:
    """Responses read off a raw socket, one after the other."""

    def __init__(self, sock: socket.socket) -> None:
        self.file = sock.makefile("rb")

    def next(self) -> tuple[int, str]:
        status_line = self.file.readline()
        if not status_line:
            raise EOFError
        status = int(status_line.split()[1])
        length = 0
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, self.file.read(length).decode()


@pytest.mark.parametrize(
    ("size", "buf"),
    [(1, 4096), (65_537, 4096), (1024 * 1024, 1024 * 1024), (5 * 1024 * 1024 + 3, 1024 * 1024)],
)
def test_bodies_arrive_whole_into_the_apps_buffers(
    server: tuple[str, int], size: int, buf: int
) -> None:
    data = random.Random(size).randbytes(size)
    with httpx.Client(base_url=url(server)) as client:
        for _ in range(3):  # on one connection: each time handed back intact
            assert client.post(f"/?buf={buf}", content=data).text == done(data)


def test_a_trickled_body_arrives_whole(server: tuple[str, int]) -> None:
    data, body = trickled_body(pause_every=5)
    with httpx.Client(base_url=url(server)) as client:
        sent = client.post("/?buf=100000", content=body, headers={"content-length": str(len(data))})
        assert sent.text == done(data)
        assert client.post("/?buf=7", content=b"again").text == done(b"again")


def test_pipelined_requests_after_a_body_read_directly(server: tuple[str, int]) -> None:
    first = random.Random(1).randbytes(3 * 1024 * 1024 + 11)
    second = random.Random(2).randbytes(70_000)
    with socket.create_connection(server) as sock:
        # Both requests in one go: the second starts right where the first body ends.
        sock.sendall(
            request("/?buf=65536", first) + request("/?buf=4096", second) + request("/", b"x")
        )
        responses = Responses(sock)
        assert responses.next() == (200, done(first))
        assert responses.next() == (200, done(second))
        assert responses.next() == (200, done(b"x"))


def test_a_body_answered_half_read_is_dropped_and_the_connection_goes_on(
    server: tuple[str, int],
) -> None:
    data = random.Random(3).randbytes(4 * 1024 * 1024)
    with socket.create_connection(server) as sock:
        responses = Responses(sock)
        for _ in range(2):
            sock.sendall(request("/?buf=65536&stop=1048576", data))
            status, text = responses.next()
            assert status == 200
            assert text.endswith(" 1048576 -")
        # The rest of each body was read and dropped, not taken for a request.
        sock.sendall(request("/", b"next"))
        assert responses.next() == (200, done(b"next"))


def test_a_client_that_goes_mid_body_is_reported(server: tuple[str, int]) -> None:
    EVENTS.clear()
    data = random.Random(4).randbytes(2 * 1024 * 1024)
    with socket.create_connection(server) as sock:
        sock.sendall(request("/?buf=65536", data)[: 1024 * 1024])
        time.sleep(0.2)
    event = next_event()
    assert event.startswith("disconnect after ")
    assert int(event.rsplit(" ", 1)[1]) < len(data)


def test_a_stalled_body_times_out(server: tuple[str, int]) -> None:
    data = b"y" * 200_000
    with socket.create_connection(server) as sock:
        sock.sendall(request("/?buf=65536&idle=0.3", data)[:100_000])
        status, text = Responses(sock).next()
    assert status == 408
    assert text.startswith("stalled after ")


def test_a_body_that_keeps_coming_slowly_is_not_cut(server: tuple[str, int]) -> None:
    # Each byte within the idle timeout of the one before: no 408, though the
    # whole buffer takes longer than the timeout to fill.
    data = b"z" * 12
    with socket.create_connection(server) as sock:
        message = request("/?buf=65536&idle=0.5", data)
        head = len(message) - len(data)
        sock.sendall(message[:head])
        for i in range(len(data)):
            time.sleep(0.1)
            sock.sendall(message[head + i : head + i + 1])
        assert Responses(sock).next() == (200, done(data))


def test_expect_100_continue_is_answered_before_the_body(server: tuple[str, int]) -> None:
    data = random.Random(5).randbytes(300_000)
    with socket.create_connection(server) as sock:
        message = request("/?buf=65536", data, "Expect: 100-continue")
        sock.sendall(message[: len(message) - len(data)])
        sock.settimeout(10)
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(data)
        assert Responses(sock).next() == (200, done(data))


def test_a_chunked_body_is_offered_no_reader(server: tuple[str, int]) -> None:
    data = random.Random(6).randbytes(200_000)
    with httpx.Client(base_url=url(server)) as client:
        sent = client.post("/", content=iter([data[:1000], data[1000:]]))
    assert sent.text == f"receive {hashlib.sha256(data).hexdigest()} {len(data)}"


def test_readers_on_many_connections_at_once(server: tuple[str, int]) -> None:
    bodies = [random.Random(10 + i).randbytes(2 * 1024 * 1024 + i) for i in range(6)]

    async def main() -> list[str]:
        async with httpx.AsyncClient(base_url=url(server)) as client:
            sent = await asyncio.gather(
                *(client.post("/?buf=1048576", content=body) for body in bodies)
            )
        return [r.text for r in sent]

    assert asyncio.run(main()) == [done(body) for body in bodies]


@pytest.mark.parametrize("end", ["cancel", "stop"])
def test_a_read_the_server_ends_frees_its_thread_and_closes_the_connection(
    server: tuple[str, int], end: str
) -> None:
    # `cancel`: the request's task is cancelled while its thread waits on the
    # socket. `stop`: a forced stop (the app's lifespan ends while a client
    # stalls mid-body). Either way the thread's read is cut at once, not at the
    # idle timeout, and the connection closed.
    EVENTS.clear()
    query = "buf=65536&cancel=0.3" if end == "cancel" else "buf=65536"
    with socket.create_connection(server) as sock:
        sock.sendall(request(f"/?{query}", b"c" * 300_000)[:150_000])
        if end == "stop":
            deadline = time.monotonic() + 10
            while BODY_THREADS.reading == 0:
                assert time.monotonic() < deadline, "no body thread took the body"
                time.sleep(0.01)
            started = time.monotonic()
            BODY_THREADS.stop()
            assert time.monotonic() - started < 5
        sock.settimeout(10)
        assert sock.recv(1024) == b""
    told = "cancelled after " if end == "cancel" else "disconnect after "
    assert next_event().startswith(told)
    assert BODY_THREADS.reading == 0
    with httpx.Client(base_url=url(server)) as client:
        assert client.post("/?buf=4096", content=b"after").text == done(b"after")


def test_with_every_body_thread_taken_the_body_stays_for_receive(
    server: tuple[str, int],
) -> None:
    with body_threads_taken() as claimed:
        assert claimed == BODY_THREADS.count
        data = random.Random(7).randbytes(100_000)
        with httpx.Client(base_url=url(server)) as client:
            sent = client.post("/?buf=4096", content=data)
            assert sent.text == f"busy, by receive {hashlib.sha256(data).hexdigest()} {len(data)}"
            # And the connection goes on.
            assert client.post("/?buf=4096", content=b"x").text == "busy, by receive " + (
                f"{hashlib.sha256(b'x').hexdigest()} 1"
            )


def test_the_apps_lifespan_end_stops_the_body_threads(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    stops: list[str] = []
    monkeypatch.setattr(BODY_THREADS, "stop", lambda: stops.append("stop"))
    with TestClient(app):
        assert stops == []
    assert stops == ["stop"]
