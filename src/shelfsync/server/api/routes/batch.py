"""Batch upload and download of small files (protocol section 11.4).

`POST /sync/upload/batch`: one frame (4-byte big-endian length + JSON
manifest), then the files' bytes in manifest order. The body is streamed:
the manifest is parsed as soon as it is in, and the bytes go on to the batch
service in pieces of about `_PIECE` bytes, handed to a worker thread.

`POST /sync/download/batch`: a JSON list of paths; the answer streams one
frame per entry (header JSON), each followed by its bytes: read from files,
or, for small content stored in the database, one query per piece of about
`_PIECE` bytes of entries.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from shelfsync.protocol.batch import (
    BATCH_MEDIA_TYPE,
    FRAME_PREFIX_BYTES,
    BatchDownloadRequest,
    BatchEntry,
    BatchManifest,
    BatchUploadResponse,
    frame,
    frame_length,
)
from shelfsync.protocol.common import format_timestamp
from shelfsync.server.api.dependencies import CurrentPrincipal, ServicesDep
from shelfsync.server.api.errors import problem_for
from shelfsync.server.api.responses import problems
from shelfsync.server.api.wire import report_result_json, utc
from shelfsync.server.domain.errors import (
    BatchMalformed,
    BatchTooLarge,
    BatchTruncated,
    ShelfsyncError,
    StorageFailure,
)
from shelfsync.server.services.batch_uploads import BatchFileIn
from shelfsync.server.services.downloads import DownloadTarget

__all__ = ["router"]

router = APIRouter(tags=["sync"])

# Body bytes gathered before a worker thread hashes and writes them; answer
# bytes read per worker-thread hop. Big enough to amortize the hop.
_PIECE = 1024 * 1024
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_dumps = partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


class _Body:
    """The request body as an async byte reader (exact reads, then the rest)."""

    def __init__(self, request: Request) -> None:
        self._stream = request.stream().__aiter__()
        self.buffer = bytearray()
        self.ended = False

    async def _more(self) -> bool:
        if self.ended:
            return False
        try:
            piece = await self._stream.__anext__()
        except StopAsyncIteration:
            self.ended = True
            return False
        self.buffer += piece
        return True

    async def exactly(self, n: int, what: str) -> bytes:
        while len(self.buffer) < n:
            if not await self._more():
                raise BatchTruncated(f"the body ended inside {what}")
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def pieces(self) -> AsyncIterator[bytes]:
        """The rest, in pieces of at least _PIECE bytes (the last may be shorter)."""
        while True:
            while len(self.buffer) < _PIECE and await self._more():
                pass
            if not self.buffer:
                return
            data = bytes(self.buffer)
            self.buffer.clear()
            yield data


async def _manifest(body: _Body, max_bytes: int) -> BatchManifest:
    length = frame_length(await body.exactly(FRAME_PREFIX_BYTES, "the manifest's length"))
    if length > max_bytes:
        raise BatchTooLarge(f"a batch manifest may be at most {max_bytes} bytes")
    raw = await body.exactly(length, "the manifest")
    try:
        return BatchManifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "manifest"
        raise BatchMalformed(
            f"the manifest is not valid ({exc.error_count()} error(s); {where}: {first.get('msg')})"
        ) from exc


def _require_batch_type(request: Request) -> None:
    """The batch media type, or none at all (RFC 9110 section 8.3: the recipient
    may then examine the data); any other type is refused."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in (BATCH_MEDIA_TYPE, ""):
        raise HTTPException(415, f"the body must be {BATCH_MEDIA_TYPE}")


@router.post(
    "/upload/batch",
    summary="Upload many small files in one request",
    response_model=BatchUploadResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": (
                "A 4-byte big-endian length, that many bytes of JSON (`BatchManifest`), then "
                "every file's bytes concatenated in manifest order (protocol section 11.4)."
            ),
            "content": {BATCH_MEDIA_TYPE: _BINARY},
        }
    },
    responses={
        200: {"description": "Every file's result, in manifest order"},
        **problems(400, 401, 403, 413, 415, 503, 507),
    },
)
async def upload_batch(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Land many small files, each as its own upload's `complete` would.

    One result per manifest entry, in order, shaped as report results: a file
    whose bytes do not hash to its `content_hash` is `rejected` with code
    `hash_mismatch`, and the others still land. The 200 is sent once every
    landed file is durable and recorded. A body that is truncated
    (`400 batch_truncated`), malformed or longer than its manifest says
    (`400 batch_malformed`) keeps nothing. Over the limits (files per batch,
    bytes per batch, bytes per file): `413 batch_too_large`.
    """
    _require_batch_type(request)
    body = _Body(request)
    settings = request.app.state.settings
    manifest = await _manifest(body, settings.max_json_body_bytes)
    files = [
        BatchFileIn(
            path=f.path,
            size=f.size,
            content_hash=f.content_hash,
            base_revision=f.base_revision,
            mtime=utc(f.mtime),
            metadata=f.metadata,
        )
        for f in manifest.files
    ]
    receiver = await asyncio.to_thread(services.batch_uploads.begin, principal, files)
    try:
        async for piece in body.pieces():
            await asyncio.to_thread(receiver.feed, piece)
        results = await asyncio.to_thread(receiver.finish)
    except BaseException:
        await asyncio.to_thread(receiver.abort)
        raise
    # The answer's JSON built straight from the results: a model per file (and
    # FastAPI validating the lot again) cost more than landing them. Same shape
    # as `BatchUploadResponse`, which stays the documented response model.
    return Response(
        content=json.dumps({"results": [report_result_json(r) for r in results]}).encode(),
        media_type="application/json",
    )


def _entry_header(path: str, target: DownloadTarget | ShelfsyncError) -> bytes:
    if isinstance(target, ShelfsyncError):
        # No path echoed: entries come in request order (and a refusal says nothing more).
        entry = BatchEntry(status="error", error=problem_for(target))
        return frame(entry.model_dump_json(exclude_none=True).encode())
    # An ok entry, as `BatchEntry(...).model_dump_json(exclude_none=True)` would
    # write it, without building the model (one per file of every batch).
    header: dict[str, object] = {
        "path": path,
        "status": "ok",
        "id": target.item_id,
        "revision": target.revision,
        "content_hash": target.content_hash,
        "size": target.size,
    }
    if target.modified is not None:
        header["mtime"] = format_timestamp(target.modified)
    return frame(_dumps(header).encode())


def _read_entries(
    entries: list[tuple[str, DownloadTarget | ShelfsyncError]],
    read_inline: Callable[[set[str]], dict[str, bytes]],
) -> list[bytes]:
    """Frames and bytes of some entries (run in a worker thread): the inline
    contents among them read with one query, the others from their files."""
    inline = read_inline(
        {t.content_hash for _, t in entries if isinstance(t, DownloadTarget) and t.inline}
    )
    out: list[bytes] = []
    for path, target in entries:
        if isinstance(target, DownloadTarget) and target.inline:
            data = inline.get(target.content_hash, b"")
            if len(data) != target.size:
                # Collected meanwhile, or damaged: this entry fails alone.
                out.append(_entry_header(path, StorageFailure("the stored content is unavailable")))
                continue
            out.append(_entry_header(path, target))
            out.append(data)
        elif isinstance(target, DownloadTarget) and target.file is not None:
            try:
                fd = os.open(target.file, os.O_RDONLY)
                try:
                    data = os.read(fd, target.size + 1)
                finally:
                    os.close(fd)
            except OSError:
                data = b""
            if len(data) != target.size:
                # Never bytes that disagree with the header: this entry fails alone.
                failed = StorageFailure("the stored content is unavailable")
                out.append(_entry_header(path, failed))
                continue
            out.append(_entry_header(path, target))
            out.append(data)
        else:
            out.append(_entry_header(path, target))
    return out


@router.post(
    "/download/batch",
    summary="Download many small files in one request",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": (
                "Per requested file, in order: a 4-byte big-endian length, that many bytes of "
                "JSON (`BatchEntry`), then `size` bytes of content (none for an error entry)."
            ),
            "content": {BATCH_MEDIA_TYPE: _BINARY},
        },
        **problems(400, 401, 403, 413, 503),
    },
)
async def download_batch(
    body: BatchDownloadRequest, principal: CurrentPrincipal, services: ServicesDep
) -> StreamingResponse:
    """The current content (or a retained `revision`) of many small files.

    Each entry answers alone: an unknown or deleted path is an `error` entry
    with a `not_found` problem, a file larger than the batch file limit one
    with `batch_too_large` (fetch it with `GET /sync/download/{path}`).
    """
    limits = services.batch_uploads.limits
    if len(body.files) > limits.max_files:
        raise BatchTooLarge(f"a batch download names at most {limits.max_files} files")
    wanted = [(w.path, w.revision) for w in body.files]
    found = await asyncio.to_thread(services.downloads.resolve_many, principal, wanted)
    entries: list[tuple[str, DownloadTarget | ShelfsyncError]] = []
    for (path, _), target in zip(wanted, found, strict=True):
        if isinstance(target, DownloadTarget) and target.size > limits.max_file_bytes:
            target = BatchTooLarge(
                f"files in a batch may be at most {limits.max_file_bytes} bytes; "
                "download this one on its own"
            )
        entries.append((path, target))

    async def stream() -> AsyncIterator[bytes]:
        start = 0
        while start < len(entries):
            end, size = start, 0
            while end < len(entries) and (end == start or size < _PIECE):
                target = entries[end][1]
                size += target.size if isinstance(target, DownloadTarget) else 0
                end += 1
            # One send per piece: thousands of tiny sends cost more than the copy.
            # A piece's inline contents are read in one query (about _PIECE
            # bytes of them at a time: bounded memory).
            yield b"".join(
                await asyncio.to_thread(
                    _read_entries, entries[start:end], services.downloads.inline_data
                )
            )
            start = end

    return StreamingResponse(stream(), media_type=BATCH_MEDIA_TYPE)
