"""Responses that send stored content: the whole file, or byte ranges of it.

A whole file goes to the server as a file: Starlette's FileResponse sends it
with the ASGI `http.response.pathsend` extension where the server offers it
(granian), so the kernel copies the bytes, and otherwise reads it in pieces of
`READ_PIECE_BYTES` (uvicorn: one worker-thread hop per piece, so not 64 KiB).
A file of at least `DIRECT_READ_MIN_BYTES` that is not in the page cache is
read past it (O_DIRECT) the first time it is asked for, like nginx's
`directio`: uploads are written past the page cache (storage/blobs.py), so
the first device to fetch a new file would otherwise fill the cache with
pages read once, each a page the kernel must find and zero first. A file
already cached, or asked for a second time, is read through the cache.
Byte ranges (RFC 9110 section 14) are read in a worker thread, at most
`READ_PIECE_BYTES` at a time, and never held whole in memory; pathsend cannot
carry a range (it names a whole file). A single range of at most one piece is
read by the route itself (already in a worker thread), so a small Range GET
costs no extra thread hops: per-request overhead is what bounds the rate of
1 MiB range requests. The download lane reads it on the event loop instead,
with RWF_NOWAIT: only when it is all in the page cache (else it is read in a
worker thread when sent).

Small content stored inline (in the database) arrives as bytes: `inline_whole`
and `RangesResponse(..., content=...)` send the same statuses and headers
from memory.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import mimetypes
import mmap
import os
import secrets
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import anyio
import anyio.to_thread
from fastapi import Response
from fastapi.responses import FileResponse
from starlette.types import Message, Receive, Scope, Send

from shelfsync.direct_io import DIRECT_ALIGN, DIRECT_IO
from shelfsync.server.api.errors import problem_response
from shelfsync.server.domain.errors import StorageFailure
from shelfsync.server.domain.ranges import ByteRange
from shelfsync.server.storage.blobs import DIRECT_BUFFER_BYTES, DIRECT_BUFFERS

__all__ = [
    "READ_PIECE_BYTES",
    "RangesResponse",
    "WholeFileResponse",
    "content_disposition",
    "content_type_for",
    "inline_whole",
    "whole_file",
]

log = logging.getLogger("shelfsync.api")

READ_PIECE_BYTES = 1024 * 1024
# A direct read of one piece fills one of storage's aligned buffers.
assert READ_PIECE_BYTES <= DIRECT_BUFFER_BYTES
# A whole file at least this large that is not in the page cache is read past
# it (O_DIRECT): see WholeFileResponse.
DIRECT_READ_MIN_BYTES = 4 * 1024 * 1024
_PATHSEND = "http.response.pathsend"
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

# Literal bytes (multipart delimiters and part headers), or (offset, length) of the file.
Piece = bytes | tuple[int, int]


# Both are pure and cost tens of microseconds: a client fetching many ranges
# of one file asks for the same name on every request.
@functools.lru_cache(maxsize=1024)
def content_type_for(name: str) -> str:
    """From the name's extension, else application/octet-stream."""
    # "./" keeps mimetypes from reading a name like "data:x,y" as a data: URL.
    media_type, encoding = mimetypes.guess_type("./" + name, strict=True)
    if encoding is not None:
        return _COMPRESSED.get(encoding, _OCTET_STREAM)
    return media_type or _OCTET_STREAM


@functools.lru_cache(maxsize=1024)
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


def _storage_problem() -> Response:
    exc = StorageFailure("the stored content is unavailable, try again shortly")
    return problem_response(
        503, "storage_unavailable", exc.detail, headers={"Retry-After": str(exc.retry_after_s)}
    )


def _asgi_24(scope: Scope) -> bool:
    """ASGI 2.4 and later: `send` raises OSError once the client is gone."""
    spec = scope.get("asgi", {}).get("spec_version", "2.0")
    return tuple(int(p) for p in spec.split(".")) >= (2, 4)


async def _stream_until_disconnect(stream: Callable[[], Awaitable[None]], receive: Receive) -> None:
    """Stop reading the file as soon as the client goes (as FileResponse does)."""
    async with anyio.create_task_group() as group:

        async def run() -> None:
            await stream()
            group.cancel_scope.cancel()

        group.start_soon(run)
        while (await receive())["type"] != "http.disconnect":
            pass
        group.cancel_scope.cancel()


_libc = ctypes.CDLL(None, use_errno=True)


def _first_page_cached(fd: int) -> bool:
    """mincore(2) of the file's first page: looks without reading. (A read
    with RWF_NOWAIT would say as much, but it starts readahead on a miss, so
    the next download would find the file cached.) True when unsure."""
    with mmap.mmap(fd, mmap.PAGESIZE, access=mmap.ACCESS_COPY) as mapped:
        anchor = ctypes.c_char.from_buffer(mapped)
        vector = (ctypes.c_ubyte * 1)()
        failed = _libc.mincore(
            ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(mmap.PAGESIZE), vector
        )
        del anchor  # the mapping cannot close while a ctypes object holds it
    return bool(failed or vector[0] & 1)


class _FirstReads:
    """The files read past the page cache lately (the last `keep`): a second
    request for one is read through the cache, which keeps it for the
    requests after. One request says little (a new file fetched by its one
    other device); a second says it is wanted again, as nginx's
    `proxy_cache_min_uses 2` caches on the second use."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first(self, key: str) -> bool:
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self._keep:
                self._seen.popitem(last=False)
            return True


_READ_PAST_ONCE = _FirstReads(keep=4096)


class _DirectReader:
    """Reads a file past the page cache, READ_PIECE_BYTES at a time, into one
    page-aligned buffer from storage's pool (each piece is copied out into
    bytes for the ASGI server, so the buffer is free again at once); through
    the page cache from the first refused read on."""

    def __init__(self, path: Path, fd: int) -> None:
        self._path = path
        self._fd = fd
        self._buffer: mmap.mmap | None = DIRECT_BUFFERS.take()

    @classmethod
    def open(cls, path: Path) -> _DirectReader | None:
        """A reader for a file whose first page is not in the page cache; None
        for a cached file (cheaper to read from there) or where the file system
        has no direct I/O."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        except OSError:
            return None
        try:
            # mmap and so mincore see the page cache whatever the open flags.
            if not _first_page_cached(fd) and _READ_PAST_ONCE.first(os.fspath(path)):
                return cls(path, fd)
        except OSError:
            pass
        os.close(fd)
        return None

    def read(self, offset: int, remaining: int) -> bytes:
        length = min(READ_PIECE_BYTES, remaining)
        if self._buffer is not None and offset % DIRECT_ALIGN:
            self._buffered()  # after a short read that ended inside a page
        if self._buffer is not None:
            # Whole pages: the last piece asks for the rest of its page and gets
            # the file's end.
            want = -(-length // DIRECT_ALIGN) * DIRECT_ALIGN
            with memoryview(self._buffer) as whole:
                try:
                    n = os.preadv(self._fd, [whole[:want]], offset)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                else:
                    return bytes(whole[: min(n, length)])
            self._buffered()
        return os.pread(self._fd, length, offset)

    def _buffered(self) -> None:
        """Blocks larger than a page, or no direct reads after all."""
        fd = os.open(self._path, os.O_RDONLY)
        os.close(self._fd)
        self._fd = fd
        self._give_back()

    def _give_back(self) -> None:
        if self._buffer is not None:
            buffer, self._buffer = self._buffer, None
            DIRECT_BUFFERS.give(buffer)

    def close(self) -> None:
        self._give_back()
        os.close(self._fd)


class WholeFileResponse(FileResponse):
    """The whole file, as a file (pathsend or sendfile where the server can).

    The route already decided about ranges (a Range still on the request was
    ignored on purpose), so FileResponse must not act on Range or If-Range.
    """

    chunk_size = READ_PIECE_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.stat_result is None:
            try:
                self.stat_result = await anyio.to_thread.run_sync(os.stat, self.path)
            except OSError:
                # Checked moments ago by the service; gone now. Still a 503, not a 500.
                log.exception("stored content vanished before it was sent")
                await _storage_problem()(scope, receive, send)
                return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _RANGE_HEADERS]
        scope = {**scope, "headers": headers}
        if (
            scope["method"] != "HEAD"
            and DIRECT_IO
            and _PATHSEND not in scope.get("extensions", {})
            and self.stat_result.st_size >= DIRECT_READ_MIN_BYTES
        ):
            reader = await anyio.to_thread.run_sync(_DirectReader.open, Path(self.path))
            if reader is not None:
                try:
                    await self._send_direct(reader, self.stat_result.st_size, scope, receive, send)
                finally:
                    reader.close()
                return
        await super().__call__(scope, receive, send)

    async def _send_direct(
        self, reader: _DirectReader, size: int, scope: Scope, receive: Receive, send: Send
    ) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )

        async def stream() -> None:
            offset = 0
            while offset < size:
                data = await anyio.to_thread.run_sync(reader.read, offset, size - offset)
                if not data:
                    # Headers are out; breaking the connection is the only honest answer.
                    raise StorageFailure("the stored content ended early")
                offset += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": offset < size})

        if _asgi_24(scope):
            try:
                await stream()
            except OSError as exc:
                log.info("download ended early: %s", exc)
        else:
            await _stream_until_disconnect(stream, receive)


def whole_file(path: Path, *, headers: dict[str, str], media_type: str) -> Response:
    """The whole-file answer, stat'ed here: call it from a worker thread (a sync
    route), so sending it needs no thread hop of its own."""
    try:
        stat_result = os.stat(path)
    except OSError:
        log.exception("stored content vanished before it was sent")
        return _storage_problem()
    return WholeFileResponse(path, headers=headers, media_type=media_type, stat_result=stat_result)


def inline_whole(data: bytes, *, headers: dict[str, str], body: bool) -> Response:
    """The whole-file answer for content held in memory (inline content); the
    headers (Content-Length included) are the caller's, as for `whole_file`."""
    return Response(content=data if body else b"", status_code=200, headers=headers)


class RangesResponse(Response):
    """206 Partial Content: byte ranges of one file, streamed from a worker
    thread, or of content at hand (`content`: inline content), sent at once."""

    def __init__(
        self,
        file: Path | None,
        pieces: list[Piece],
        *,
        headers: dict[str, str],
        content: bytes | None = None,
    ) -> None:
        self._file = file
        self._pieces = pieces
        self._data: bytes | bytearray | None = None
        if content is not None:
            self._data = b"".join(
                p if isinstance(p, bytes) else content[p[0] : p[0] + p[1]] for p in pieces
            )
        length = sum(len(p) if isinstance(p, bytes) else p[1] for p in pieces)
        super().__init__(status_code=206, headers={**headers, "Content-Length": str(length)})

    @classmethod
    def single(
        cls,
        file: Path | None,
        byte_range: ByteRange,
        *,
        size: int,
        headers: dict[str, str],
        prefetch: bool = False,
        content: bytes | None = None,
        nowait: bool = False,
        buffer_body: bool = False,
    ) -> RangesResponse:
        """One range; with `prefetch` (call it from a worker thread) a range of
        at most READ_PIECE_BYTES is read now and sent in one message. With
        `nowait` too (on the event loop) it is read now only if that cannot
        wait for the disk (all of it is in the page cache), else when sent;
        with `buffer_body` (the ASGI server sends any bytes-like body, as
        uvicorn does; granian sends nothing for a bytearray) the buffer it is
        read into is sent as it is, else copied into bytes first."""
        first, last = byte_range
        response = cls(
            file,
            [(first, last - first + 1)],
            headers={**headers, "Content-Range": f"bytes {first}-{last}/{size}"},
            content=content,
        )
        if prefetch and content is None and last - first + 1 <= READ_PIECE_BYTES:
            response._prefetch(first, last - first + 1, nowait=nowait, buffer=buffer_body)
        return response

    def _prefetch(self, offset: int, length: int, *, nowait: bool, buffer: bool) -> None:
        assert self._file is not None
        try:
            fd = os.open(self._file, os.O_RDONLY)
        except OSError:
            log.exception("stored content vanished before it was sent")
            return  # __call__ opens it again and answers 503
        try:
            if nowait:
                # Into a buffer that is then sent as it is (no copy into bytes).
                data: bytes | bytearray = bytearray(length)
                if os.preadv(fd, [data], offset, os.RWF_NOWAIT) != length:
                    return  # partly on disk only: __call__ reads it in a worker thread
            else:
                data = os.pread(fd, length, offset)
        except BlockingIOError:
            return  # on disk only (EAGAIN): __call__ reads it in a worker thread
        except OSError as exc:
            if nowait and exc.errno == errno.EOPNOTSUPP:
                return  # the file system cannot say: __call__ reads it in a worker thread
            log.exception("reading stored content failed")
            return
        finally:
            os.close(fd)
        if len(data) == length:
            self._data = data if buffer or isinstance(data, bytes) else bytes(data)

    @classmethod
    def multipart(
        cls,
        file: Path | None,
        ranges: list[ByteRange],
        *,
        size: int,
        media_type: str,
        headers: dict[str, str],
        content: bytes | None = None,
    ) -> RangesResponse:
        """multipart/byteranges (RFC 9110 section 14.6): each part with its own
        Content-Type and Content-Range, CRLF line ends, a fresh random boundary."""
        boundary = secrets.token_hex(16)
        pieces: list[Piece] = []
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
        content_type = f"multipart/byteranges; boundary={boundary}"
        return cls(file, pieces, headers={**headers, "Content-Type": content_type}, content=content)

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
        if self._data is not None:
            await send(start)
            await send({"type": "http.response.body", "body": self._data, "more_body": False})
            return
        assert self._file is not None
        try:
            fd = await anyio.to_thread.run_sync(os.open, self._file, os.O_RDONLY)
        except OSError:
            log.exception("stored content vanished before it was sent")
            await _storage_problem()(scope, receive, send)
            return
        try:
            await send(start)
            if _asgi_24(scope):
                try:
                    await self._stream(fd, send)
                except OSError as exc:
                    log.info("range download ended early: %s", exc)
            else:
                await _stream_until_disconnect(lambda: self._stream(fd, send), receive)
        finally:
            os.close(fd)

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
