"""GET and HEAD /api/v1/sync/download/{path} (protocol section 10).

A whole file goes to the server as a file (Starlette's FileResponse sends it
with the ASGI `http.response.pathsend` extension where the server offers it,
so the kernel copies the bytes); byte ranges are read in a worker thread, at
most `READ_PIECE_BYTES` at a time, and never held whole in memory.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import secrets
import unicodedata
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import quote

import anyio
import anyio.to_thread
from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import FileResponse
from starlette.types import Message, Receive, Scope, Send

from shelfsync.server.api.conditional import (
    Precondition,
    evaluate_preconditions,
    http_date,
    if_range_allows,
)
from shelfsync.server.api.dependencies import CurrentPrincipal, ServicesDep
from shelfsync.server.api.errors import problem_response
from shelfsync.server.api.responses import problems
from shelfsync.server.domain.errors import StorageFailure
from shelfsync.server.domain.ranges import ByteRange, parse_range
from shelfsync.server.services.downloads import DownloadTarget

__all__ = ["READ_PIECE_BYTES", "content_disposition", "content_type_for", "router"]

log = logging.getLogger("shelfsync.api")

router = APIRouter(tags=["sync"])

READ_PIECE_BYTES = 1024 * 1024
_OCTET_STREAM = "application/octet-stream"
# mimetypes reports `a.tar.gz` as type tar with encoding gzip; the bytes we send
# are the gzip stream, so the compression decides the type (RFC 6713 for gzip).
_COMPRESSED = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
}
_RANGE_HEADERS = (b"range", b"if-range")

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "File content",
        "content": {_OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
    },
    206: {"description": "Partial content: one range, or several as `multipart/byteranges`"},
    **problems(304, 400, 401, 403, 404, 412, 416, 503),
}

PathParam = Annotated[
    str,
    Path(description="The library path; URL-encode each segment (`a%20b/c%23d.txt`)."),
]
RevisionQuery = Annotated[
    int | None,
    Query(ge=1, le=2**31 - 1, description="A retained older revision instead of the current one"),
]
RangeHeader = Annotated[
    str | None,
    Header(
        alias="range",
        description="RFC 9110 byte ranges: `bytes=0-99`, `bytes=100-`, `bytes=-100`, lists",
    ),
]
IfRangeHeader = Annotated[
    str | None, Header(description="Honour Range only while the ETag is this strong one")
]
IfNoneMatchHeader = Annotated[
    str | None, Header(description="ETags the caller holds: a match answers 304")
]
IfMatchHeader = Annotated[
    str | None, Header(description="Send only while the ETag is one of these, else 412")
]
IfModifiedSinceHeader = Annotated[
    str | None, Header(description="Without If-None-Match: 304 unless modified since")
]
IfUnmodifiedSinceHeader = Annotated[
    str | None, Header(description="Without If-Match: 412 if modified since")
]


def content_type_for(name: str) -> str:
    """From the name's extension, else application/octet-stream."""
    # "./" keeps mimetypes from reading a name like "data:x,y" as a data: URL.
    media_type, encoding = mimetypes.guess_type("./" + name, strict=True)
    if encoding is not None:
        return _COMPRESSED.get(encoding, _OCTET_STREAM)
    return media_type or _OCTET_STREAM


def content_disposition(name: str) -> str:
    """`attachment` with an ASCII `filename` and the exact name in `filename*`.

    RFC 6266 section 4.3: send both; clients that know RFC 8187 use
    `filename*`. The fallback keeps printable ASCII except `"`, `\\` and `%`
    (some agents percent-decode `filename`), strips accents via NFKD, and
    turns everything else into `_`, so no name can break out of the header.
    """
    decomposed = unicodedata.normalize("NFKD", name)
    fallback = "".join(
        ch if " " <= ch <= "~" and ch not in '"\\%' else "_"
        for ch in decomposed
        if not unicodedata.combining(ch)
    ).strip()
    encoded = quote(name, safe="", encoding="utf-8", errors="strict")
    return f"attachment; filename=\"{fallback or 'download'}\"; filename*=UTF-8''{encoded}"


@router.get(
    "/download/{path:path}",
    summary="Download a file for sync (supports Range header)",
    response_class=Response,
    responses=_RESPONSES,
)
def download(
    path: PathParam,
    principal: CurrentPrincipal,
    services: ServicesDep,
    revision: RevisionQuery = None,
    range_: RangeHeader = None,
    if_range: IfRangeHeader = None,
    if_none_match: IfNoneMatchHeader = None,
    if_match: IfMatchHeader = None,
    if_modified_since: IfModifiedSinceHeader = None,
    if_unmodified_since: IfUnmodifiedSinceHeader = None,
) -> Response:
    target = services.downloads.resolve(principal, path, revision)
    return _answer(
        target,
        range_header=range_,
        if_range=if_range,
        if_none_match=if_none_match,
        if_match=if_match,
        if_modified_since=if_modified_since,
        if_unmodified_since=if_unmodified_since,
    )


@router.head(
    "/download/{path:path}",
    summary="Headers of a download, without the body",
    response_class=Response,
    responses=_RESPONSES,
)
def download_head(
    path: PathParam,
    principal: CurrentPrincipal,
    services: ServicesDep,
    revision: RevisionQuery = None,
    range_: RangeHeader = None,
    if_range: IfRangeHeader = None,
    if_none_match: IfNoneMatchHeader = None,
    if_match: IfMatchHeader = None,
    if_modified_since: IfModifiedSinceHeader = None,
    if_unmodified_since: IfUnmodifiedSinceHeader = None,
) -> Response:
    target = services.downloads.resolve(principal, path, revision)
    return _answer(
        target,
        range_header=range_,
        if_range=if_range,
        if_none_match=if_none_match,
        if_match=if_match,
        if_modified_since=if_modified_since,
        if_unmodified_since=if_unmodified_since,
    )


def _answer(
    target: DownloadTarget,
    *,
    range_header: str | None,
    if_range: str | None,
    if_none_match: str | None,
    if_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
) -> Response:
    validators = {
        "ETag": f'"{target.content_hash}"',
        "Last-Modified": http_date(target.modified),
        "X-Revision": str(target.revision),
        "X-Item-Id": target.item_id,
        # The caller's own data: no shared cache; revalidate (cheap with the ETag).
        "Cache-Control": "private, no-cache",
    }
    verdict = evaluate_preconditions(
        etag_opaque=target.content_hash,
        modified=target.modified,
        if_match=if_match,
        if_unmodified_since=if_unmodified_since,
        if_none_match=if_none_match,
        if_modified_since=if_modified_since,
    )
    if verdict is Precondition.NOT_MODIFIED:
        return Response(status_code=304, headers=validators)
    if verdict is Precondition.FAILED:
        return problem_response(
            412, "precondition_failed", "the file changed: its ETag no longer matches"
        )
    media_type = content_type_for(target.name)
    headers = {
        **validators,
        "Accept-Ranges": "bytes",
        "Content-Type": media_type,
        "Content-Disposition": content_disposition(target.name),
        "X-Content-Type-Options": "nosniff",
    }
    ranges: list[ByteRange] | None = None
    if range_header is not None and if_range_allows(if_range, target.content_hash):
        ranges = parse_range(range_header, target.size)  # RangeNotSatisfiable: 416
    if ranges is None or target.file is None:
        headers["Content-Length"] = str(target.size)
        if target.file is None:
            return Response(status_code=200, headers=headers)
        return _WholeFile(target.file, headers=headers, media_type=media_type)
    if len(ranges) == 1:
        first, last = ranges[0]
        headers["Content-Range"] = f"bytes {first}-{last}/{target.size}"
        return _Parts(target.file, [(first, last - first + 1)], headers=headers)
    boundary = secrets.token_hex(16)
    headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    return _Parts(
        target.file, _multipart(ranges, boundary, media_type, target.size), headers=headers
    )


def _multipart(
    ranges: list[ByteRange], boundary: str, media_type: str, size: int
) -> list[bytes | tuple[int, int]]:
    """The body of a multipart/byteranges answer (RFC 9110 section 14.6):
    delimiter and part headers as bytes, each part's data as (offset, length)."""
    pieces: list[bytes | tuple[int, int]] = []
    for index, (first, last) in enumerate(ranges):
        head = (
            ("\r\n" if index else "")
            + f"--{boundary}\r\n"
            + f"Content-Type: {media_type}\r\n"
            + f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n"
        )
        pieces.append(head.encode("ascii"))
        pieces.append((first, last - first + 1))
    pieces.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return pieces


def _storage_problem() -> Response:
    exc = StorageFailure("the stored content is unavailable")
    return problem_response(
        503,
        "storage_unavailable",
        exc.detail,
        headers={"Retry-After": str(exc.retry_after_s)},
    )


class _WholeFile(FileResponse):
    """The whole file, as a file: pathsend or sendfile where the server can.

    Range decisions were made above (a Range left here was ignored on purpose),
    so FileResponse must not act on the request's Range or If-Range again.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self.stat_result = await anyio.to_thread.run_sync(os.stat, self.path)
        except OSError:
            log.exception("stored content vanished before it was sent")
            await _storage_problem()(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _RANGE_HEADERS]
        await super().__call__({**scope, "headers": headers}, receive, send)


class _Parts(Response):
    """Byte ranges of one file plus literal bytes, streamed from a worker thread."""

    def __init__(
        self,
        file: FilePath,
        pieces: list[bytes | tuple[int, int]],
        *,
        headers: dict[str, str],
    ) -> None:
        self._file = file
        self._pieces = pieces
        length = sum(len(p) if isinstance(p, bytes) else p[1] for p in pieces)
        super().__init__(status_code=206, headers={**headers, "Content-Length": str(length)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        if scope["method"] == "HEAD":
            await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        try:
            fd = await anyio.to_thread.run_sync(os.open, self._file, os.O_RDONLY)
        except OSError:
            log.exception("stored content vanished before it was sent")
            await _storage_problem()(scope, receive, send)
            return
        try:
            await send(start)
            spec = scope.get("asgi", {}).get("spec_version", "2.0")
            if tuple(int(p) for p in spec.split(".")) >= (2, 4):
                # ASGI 2.4: send raises OSError once the client is gone.
                await self._stream(fd, send)
            else:
                await self._stream_until_disconnect(fd, receive, send)
        finally:
            os.close(fd)

    async def _stream_until_disconnect(self, fd: int, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                await self._stream(fd, send)
                group.cancel_scope.cancel()

            group.start_soon(stream)
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

    async def _stream(self, fd: int, send: Send) -> None:
        for piece in self._pieces:
            if isinstance(piece, bytes):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                continue
            offset, remaining = piece
            while remaining:
                data = await anyio.to_thread.run_sync(
                    os.pread, fd, min(READ_PIECE_BYTES, remaining), offset
                )
                if not data:
                    # Headers are out; breaking the connection is the only honest answer.
                    raise StorageFailure("the stored content ended early")
                offset += len(data)
                remaining -= len(data)
                await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
