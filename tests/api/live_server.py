"""The app on a real uvicorn server on loopback, in a thread (its lifespan is
the TestClient's), and a body that trickles in to send it."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from shelfsync.server.api.http_protocol import BODY_THREADS


class LiveServer:
    def __init__(
        self,
        app: ASGIApp,
        http: Any = "auto",
        *,
        max_header_bytes: int = 65536,
        loop: str = "auto",
    ) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            http=http,
            loop=loop,  # type: ignore[arg-type]
            log_level="error",
            lifespan="off",
            timeout_keep_alive=5,
            h11_max_incomplete_event_size=max_header_bytes,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def trickled_body(pause_every: int) -> tuple[bytes, Iterator[bytes]]:
    """A body of many small pieces with a pause before every `pause_every`-th:
    some arrive while the app waits, some pile up behind it."""
    pieces = [random.Random(i).randbytes(1 + i * 997 % 70_000) for i in range(40)]

    def trickle() -> Iterator[bytes]:
        for i, piece in enumerate(pieces):
            if i % pause_every == 0:
                time.sleep(0.01)
            yield piece

    return b"".join(pieces), trickle()


@contextlib.contextmanager
def body_threads_taken() -> Iterator[int]:
    """Every body thread of the process taken (by placeholders): bodies go
    through `receive`. Yields how many were free."""
    placeholders: list[Any] = []
    while BODY_THREADS.claim(placeholder := object()) is not None:  # type: ignore[arg-type]
        placeholders.append(placeholder)
    try:
        yield len(placeholders)
    finally:
        for placeholder in placeholders:
            BODY_THREADS.release(placeholder)
