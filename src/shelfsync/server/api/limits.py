"""Request size and pace limits as a pure ASGI middleware.

- Headers larger than `max_header_bytes` in all → 431 (RFC 6585 section 5).
  uvicorn's h11 parser bounds what it buffers (`h11_max_incomplete_event_size`,
  set by `shelfsync serve`), but its httptools parser has no limit of its own,
  so the total is checked here, before any route runs.
- Bodies other than chunk PUTs (JSON, at most `max_body_bytes`): a larger
  `Content-Length` → 413 before a byte is read; a chunked body is counted as
  it streams and answered 413 the moment it passes the limit. Chunk PUTs are
  bounded by their chunk's length (the upload service refuses more). A batch
  upload (`POST .../upload/batch`) is bounded by `max_batch_body_bytes`
  (its manifest plus the files' bytes; the batch service checks the details).
- A body that stalls (no bytes for `body_idle_timeout_s`) → 408: a client that
  trickles cannot hold a request (or a chunk claim) forever. The wait applies
  only while the body is incomplete; once it has ended, `receive` waits for a
  disconnect as long as it likes (long-polls rely on that). A body read
  straight into the app's buffer (api/body_reader.py) has the same timeout.

Pure ASGI (not BaseHTTPMiddleware) so streamed bodies pass through untouched.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelfsync.server.api.body_reader import BODY_READER, BodyReader, ReadBody, direct_body
from shelfsync.server.api.errors import problem_response

__all__ = ["BATCH_UPLOAD_PATH", "CHUNK_PATH", "RequestLimits", "RequestLimitsMiddleware"]

T = TypeVar("T")

# A chunk PUT (`.../upload/{id}/chunks/{index}`), at either prefix.
CHUNK_PATH = re.compile(r"/upload/[^/]+/chunks/[^/]+/?\Z")
# A batch upload, at either prefix.
BATCH_UPLOAD_PATH = re.compile(r"/upload/batch/?\Z")

_CLOSE = {"Connection": "close"}


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_body_bytes: int
    max_header_bytes: int
    body_idle_timeout_s: float
    max_batch_body_bytes: int = 0  # 0: batch uploads are bounded like JSON bodies


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, limits: RequestLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        header_bytes = sum(len(name) + len(value) + 4 for name, value in headers)
        if header_bytes > self.limits.max_header_bytes:
            response = problem_response(
                431,
                "headers_too_large",
                f"request headers may hold at most {self.limits.max_header_bytes} bytes",
                headers=_CLOSE,
            )
            await response(scope, receive, send)
            return
        bounded = not (scope["method"] == "PUT" and CHUNK_PATH.search(scope["path"]))
        limit = self.limits.max_body_bytes
        if scope["method"] == "POST" and BATCH_UPLOAD_PATH.search(scope["path"]):
            limit = max(limit, self.limits.max_batch_body_bytes)
        if bounded:
            declared = _content_length(headers)
            if declared == -1:
                response = problem_response(
                    400, "invalid_request", "Content-Length must be a number", headers=_CLOSE
                )
                await response(scope, receive, send)
                return
            if declared is not None and declared > limit:
                response = self._too_large(limit)
                await response(scope, receive, send)
                return
        reader = direct_body(scope)
        if reader is not None:
            # Read past `receive`: the same idle timeout per read, and only
            # where no size limit is counted on `receive` (chunk PUTs).
            extensions = dict(scope["extensions"])
            if bounded:
                del extensions[BODY_READER]
            else:
                extensions[BODY_READER] = _TimedBodyReader(reader, self.limits.body_idle_timeout_s)
            scope = {**scope, "extensions": extensions}
        await self.app(scope, self._receiver(receive, bounded=bounded, limit=limit), send)

    def _too_large(self, limit: int) -> JSONResponse:
        return problem_response(
            413,
            "too_large",
            f"request bodies may be at most {limit} bytes",
            headers=_CLOSE,
        )

    def _receiver(self, receive: Receive, *, bounded: bool, limit: int) -> Receive:
        timeout_s = self.limits.body_idle_timeout_s
        received = 0
        body_done = False

        async def wrapped() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                # asyncio.timeout, not wait_for: no task per body message (a
                # 1 GiB upload arrives in ~16,000 of them).
                async with asyncio.timeout(timeout_s):
                    message = await receive()
            except TimeoutError as exc:
                body_done = True
                raise HTTPException(
                    408, f"no request body bytes for {timeout_s:g} s", headers=_CLOSE
                ) from exc
            if message["type"] != "http.request":
                body_done = True
                return message
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                body_done = True
            if bounded and received > limit:
                body_done = True
                raise HTTPException(
                    413, f"request bodies may be at most {limit} bytes", headers=_CLOSE
                )
            return message

        return wrapped


class _TimedBodyReader:
    """A direct body reader (api/body_reader.py) that answers 408 when the body
    stalls, as `receive` does."""

    __slots__ = ("_reader", "_timeout_s")

    def __init__(self, reader: BodyReader, timeout_s: float) -> None:
        self._reader = reader
        self._timeout_s = timeout_s

    async def read_in_thread(
        self, work: Callable[[ReadBody], T], *, idle_timeout_s: float | None = None
    ) -> T:
        timeout_s = (
            self._timeout_s if idle_timeout_s is None else min(idle_timeout_s, self._timeout_s)
        )
        try:
            return await self._reader.read_in_thread(work, idle_timeout_s=timeout_s)
        except TimeoutError as exc:
            raise HTTPException(
                408, f"no request body bytes for {timeout_s:g} s", headers=_CLOSE
            ) from exc


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared length; None when absent, -1 when not a number."""
    for name, value in headers:
        if name.lower() == b"content-length":
            text = value.strip()
            if not text.isdigit():
                return -1
            # More digits than any real body: too large, without parsing them.
            return int(text) if len(text) <= 18 else 10**18
    return None
