"""Chunked uploads under /api/v1/sync/upload (protocol section 9)."""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response

from shelfsync.protocol.uploads import ChunkReceipt, UploadComplete, UploadCreate, UploadSession
from shelfsync.server.api.body_reader import ReadBody, ReadersBusy, direct_body
from shelfsync.server.api.dependencies import CurrentPrincipal, ServicesDep
from shelfsync.server.api.responses import problems
from shelfsync.server.api.wire import report_result_out, upload_out, utc
from shelfsync.server.domain.errors import InvalidInput
from shelfsync.server.services.uploads import ChunkReceipt as ReceiptOut
from shelfsync.server.services.uploads import ChunkReceiver
from shelfsync.server.storage.blobs import DIRECT_BUFFERS

__all__ = ["router"]

router = APIRouter(tags=["sync"])

SessionId = Annotated[str, Path(alias="id", max_length=64, description="Upload session ID")]
# Pieces of the body are gathered up to this size before a worker thread hashes
# and writes them (the hop is amortized; a chunk holds at most two such
# batches, one being written while the next is received). 1 MiB, not a whole
# 4 MiB block: with four 16 MiB chunks in flight, 4 MiB batches held 32 MiB and
# took the server's peak RSS over the 150 MiB goal (issue 7, goal 7). The
# pieces are handed over as they came, never joined: hashing and the vectored
# write read them in place, so a body is copied only once, by the kernel, into
# the page cache.
_PIECE = 1024 * 1024


@router.post(
    "/upload",
    summary="Create an upload session for chunked upload",
    response_model=UploadSession,
    responses={
        200: {"description": "Upload session created"},
        **problems(400, 401, 403, 413, 429, 503, 507),
    },
)
def create_upload(
    body: UploadCreate, principal: CurrentPrincipal, services: ServicesDep
) -> UploadSession:
    session = services.uploads.create(
        principal,
        path=body.path,
        size=body.size,
        content_hash=body.content_hash,
        base_revision=body.base_revision,
        mtime=utc(body.mtime),
        metadata=body.metadata,
        chunk_size=body.chunk_size,
        block_hashes=body.block_hashes,
    )
    return upload_out(session)


@router.get(
    "/upload/{id}",
    summary="Get upload session status",
    response_model=UploadSession,
    responses={200: {"description": "Upload session status"}, **problems(400, 401, 403, 404, 503)},
)
def get_upload(
    session_id: SessionId, principal: CurrentPrincipal, services: ServicesDep
) -> UploadSession:
    return upload_out(services.uploads.get(principal, session_id))


@router.delete(
    "/upload/{id}",
    summary="Cancel an upload session",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Upload cancelled"}, **problems(400, 401, 403, 404, 503)},
)
def cancel_upload(
    session_id: SessionId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    services.uploads.cancel(principal, session_id)
    return Response(status_code=204)


@router.put(
    "/upload/{id}/chunks/{index}",
    summary="Upload a chunk",
    response_model=ChunkReceipt,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "Chunk binary data",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    responses={
        200: {"description": "Chunk received (durably stored)"},
        **problems(400, 401, 403, 404, 409, 410, 413, 503, 507),
    },
)
async def put_chunk(
    session_id: SessionId,
    index: Annotated[int, Path(ge=0, le=100_000, description="Chunk index")],
    request: Request,
    principal: CurrentPrincipal,
    services: ServicesDep,
    content_digest: Annotated[
        str | None,
        Header(max_length=1024, description="RFC 9530 `sha-256=:<base64>:` of the chunk."),
    ] = None,
) -> ChunkReceipt:
    length_header = request.headers.get("content-length")
    try:
        content_length = int(length_header) if length_header is not None else None
    except ValueError as exc:
        raise InvalidInput("Content-Length must be a number") from exc
    receiver = await asyncio.to_thread(
        services.uploads.begin_chunk,
        principal,
        session_id,
        index,
        content_length=content_length,
        content_digest=content_digest,
    )
    reader = direct_body(request.scope)
    receipt: ReceiptOut | None = None
    if reader is not None and content_length == receiver.expected:
        with contextlib.suppress(ReadersBusy):
            receipt = await reader.read_in_thread(partial(_land_body, receiver))
    if receipt is None:
        receipt = await _receive_pieces(request, receiver)
    return ChunkReceipt(
        index=receipt.index,
        size=receipt.size,
        received_count=receipt.received_count,
        chunk_count=receipt.chunk_count,
    )


def _land_body(receiver: ChunkReceiver, read: ReadBody) -> ReceiptOut:
    """In a body thread: the body read from the socket into an aligned buffer,
    hashed and written from there, a buffer at a time; the last goes with
    `finish` (sync and record). The socket's own buffer keeps the client
    sending while the thread hashes and writes."""
    buffer = DIRECT_BUFFERS.take()
    try:
        taken = 0
        while True:
            with memoryview(buffer) as view:
                n = read(view)
            taken += n
            if n < len(buffer) or taken >= receiver.expected:
                # A short last buffer goes as a copy: the buffer is reused.
                return receiver.finish([buffer] if n == len(buffer) else [buffer[:n]])
            receiver.feed_pieces([buffer])
    except BaseException:
        receiver.abort()
        raise
    finally:
        DIRECT_BUFFERS.give(buffer)


async def _receive_pieces(request: Request, receiver: ChunkReceiver) -> ReceiptOut:
    """The body as the server's messages bring it (any ASGI server)."""
    # While a worker thread hashes and writes one block's pieces, the next block
    # is received (at most one feed in flight per chunk, in order). The last
    # pieces go with `finish`: sync and record in the same hop.
    feeding: asyncio.Future[None] | None = None
    try:
        pieces: list[bytes] = []
        gathered = taken = 0
        async for piece in request.stream():
            if not piece:
                continue
            pieces.append(piece)
            gathered += len(piece)
            taken += len(piece)
            # The whole chunk is here: its last pieces go with `finish`.
            if gathered >= _PIECE and taken != receiver.expected:
                if feeding is not None:
                    await feeding
                feeding = asyncio.ensure_future(asyncio.to_thread(receiver.feed_pieces, pieces))
                pieces, gathered = [], 0
        if feeding is not None:
            await feeding
        return await asyncio.to_thread(receiver.finish, pieces)
    except BaseException:
        await _abort(receiver, feeding)
        raise


async def _abort(receiver: ChunkReceiver, feeding: asyncio.Future[None] | None) -> None:
    if feeding is not None:
        # The thread must be done with the file (and its buffer) before either goes.
        await asyncio.wait([feeding])
        if not feeding.cancelled():
            feeding.exception()  # retrieved: it is the one raised, or moot
    await asyncio.to_thread(receiver.abort)


@router.post(
    "/upload/{id}/complete",
    summary="Complete an upload session",
    response_model=UploadComplete,
    responses={
        200: {"description": "Upload completed"},
        **problems(400, 401, 403, 404, 409, 410, 503, 507),
    },
)
def complete_upload(
    session_id: SessionId, principal: CurrentPrincipal, services: ServicesDep
) -> UploadComplete:
    session, result = services.uploads.complete(principal, session_id)
    return UploadComplete(session=upload_out(session), result=report_result_out(result))
