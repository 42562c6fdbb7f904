"""uvicorn's httptools protocol, handing request bodies over without copying them.

uvicorn collects the pieces of a body the parser gives it in a `bytearray`
(`cycle.body += piece`) and hands the app `bytes(cycle.body)`: every byte of an
upload is copied twice on the event loop, into memory that keeps changing size.
`perf` of the server during a 1 GiB upload: those copies were the event loop's
largest cost and most of the server's 176,000 page faults. Here the body is
kept as the list of pieces the parser gave (`_BodyPieces`), and a receive that
finds one piece (the usual case: the app reads as fast as the pieces come) gets
that very bytes object. Flow control, HTTP parsing and everything else are
uvicorn's own.

A body with a Content-Length can also be read by a worker thread straight
into the app's own buffer (api/body_reader.py; the chunk PUT route uses it).
Even uncopied, a body arrives as one ASGI message per 256 KiB socket read
(uvloop's read size): each a bytes object uvloop fills and httptools copies,
then a message through uvicorn, the middleware and Starlette's stream, with
reading paused and resumed around it. Reading it into the app's buffer with
a callback per socket read on the event loop (the way before this one) still
cost the loop a wake-up per read and a hop to a worker per buffer to hash and
write it, one event loop for every chunk in flight. `read_in_thread` drains
what the parser already has, pauses the connection's reading, and hands the
socket to one of the server's body threads, which reads the rest with
blocking `readv` calls into the app's buffer and hashes and writes it in the
same thread: the event loop does nothing for the body. At the
Content-Length the connection goes back to uvicorn with a fresh parser (the
old one never saw those bytes), exactly at the next request's first byte.
When the app stops before the body's end, the rest is read and dropped on
the event loop after the response (as uvicorn's parser would drop it), so
the client gets its answer and the connection its next request; closing with
unread bytes instead would reset it, and the answer could be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Self, TypeVar

import httptools
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from shelfsync.server.api.body_reader import BODY_READER, ReadBody, ReadersBusy

__all__ = ["BODY_THREADS", "BodyPiecesProtocol", "DirectBody"]

T = TypeVar("T")

# The rest of a body the app answered without reading is read and dropped in
# pieces of this size.
_DISCARD_BYTES = 256 * 1024


class _BodyPieces:
    """What uvicorn's cycle uses of its bytearray body: `+=` a piece, `len`,
    truth, and `bytes()` when the app receives."""

    __slots__ = ("_pieces", "_size")

    def __init__(self) -> None:
        self._pieces: list[bytes | memoryview] = []
        self._size = 0

    def __iadd__(self, piece: bytes) -> Self:
        self._pieces.append(piece)
        self._size += len(piece)
        return self

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        if len(self._pieces) == 1 and isinstance(self._pieces[0], bytes):
            return self._pieces[0]
        return b"".join(self._pieces)

    def take_into(self, view: memoryview) -> int:
        """Move bytes from the front into `view`; what does not fit stays."""
        done = 0
        while self._pieces and done < len(view):
            piece = self._pieces[0]
            n = min(len(piece), len(view) - done)
            view[done : done + n] = piece[:n]
            done += n
            if n == len(piece):
                self._pieces.pop(0)
            else:
                self._pieces[0] = memoryview(piece)[n:]
        self._size -= done
        return done


class BodyPiecesProtocol(HttpToolsProtocol):
    # The DirectBody of the request the parser is reading, if it offered one.
    _parsing: DirectBody | None = None
    # The connection's protocol while the rest of a body waits to be dropped.
    _direct: _BodyRest | None = None

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._parsing = None
        length = _plain_length(self.headers)
        cycle = self.cycle
        if (
            length
            and cycle is not None
            and self.scope.get("path") is not None
            # A body thread reads the socket itself: not under TLS.
            and self.transport.get_extra_info("sslcontext") is None
        ):
            reader = DirectBody(self, cycle, length)
            self._parsing = reader
            extensions: dict[str, object] = self.scope.setdefault("extensions", {})  # type: ignore[assignment]
            extensions[BODY_READER] = reader

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        # uvicorn sets a fresh bytearray for each message it hands over.
        if type(cycle.body) is bytearray and not cycle.body:
            cycle.body = _BodyPieces()  # type: ignore[assignment]
        if self._parsing is not None:
            self._parsing.parsed += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._parsing = None
        super().on_message_complete()

    def body_read_past_parser(self) -> None:
        """A body read past the parser is all in: the connection is uvicorn's
        again at a message boundary, with a fresh parser (the old one never saw
        those bytes). Only a body the parser was in is read past it, so the
        message it completes is the current cycle's."""
        self.parser = httptools.HttpRequestParser(self)
        self.on_message_complete()
        self.flow.resume_reading()

    def on_response_complete(self) -> None:
        direct = self._direct
        if direct is not None and not self.transport.is_closing():
            # Answered before its body was all read: the rest is read and
            # dropped (as uvicorn's parser would), then the connection serves
            # its next request.
            direct.discard_rest(then=super().on_response_complete)
            return
        super().on_response_complete()


def _plain_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The Content-Length of a body sent without a transfer coding, else 0."""
    length = 0
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit() or length:
                return 0  # httptools refuses these; nothing to offer
            length = int(value)
        elif name == b"transfer-encoding":
            return 0
    return length


class DirectBody:
    """A request body read by a body thread (see the module's text)."""

    def __init__(self, protocol: BodyPiecesProtocol, cycle: RequestResponseCycle, length: int):
        self._protocol = protocol
        self._cycle = cycle
        self.length = length
        self.parsed = 0  # bytes of the body the parser has seen

    async def read_in_thread(
        self, work: Callable[[ReadBody], T], *, idle_timeout_s: float | None = None
    ) -> T:
        """As BodyReader.read_in_thread (api/body_reader.py)."""
        cycle, protocol = self._cycle, self._protocol
        if cycle.disconnected or cycle.response_complete:
            raise ClientDisconnect
        # Every piece the parser gave is in a _BodyPieces (on_body); an empty
        # bytearray is uvicorn's fresh body. Reading is paused from here on,
        # so the parser adds nothing to it while the thread takes from it.
        pieces = cycle.body if isinstance(cycle.body, _BodyPieces) else None
        from_socket = protocol._parsing is self and cycle.more_body
        remaining = self.length - self.parsed if from_socket else 0
        body = _ThreadBody(protocol.transport, pieces, remaining, idle_timeout_s)
        executor = BODY_THREADS.claim(body)
        if executor is None:
            raise ReadersBusy
        try:
            if cycle.waiting_for_100_continue and not cycle.transport.is_closing():
                cycle.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                cycle.waiting_for_100_continue = False
            if remaining > 0:
                protocol.flow.pause_reading()
            done = asyncio.get_running_loop().run_in_executor(executor, work, body.read)
            try:
                return await asyncio.shield(done)
            except asyncio.CancelledError:
                # The thread must be done with the socket (and the app's
                # buffers) before the connection or they are touched again.
                body.cut()
                await asyncio.wait([done])
                if not done.cancelled():
                    done.exception()  # retrieved: the cancellation is what is raised
                raise
            finally:
                if remaining > 0:
                    self._hand_back(body)
        finally:
            BODY_THREADS.release(body)

    def _hand_back(self, body: _ThreadBody) -> None:
        """The thread is done: the connection is the event loop's again."""
        protocol = self._protocol
        if body.remaining == 0:
            protocol.body_read_past_parser()
        elif body.gone:
            protocol.transport.close()
        else:
            # Stopped before the body's end: the rest is dropped after the answer.
            protocol._direct = _BodyRest(protocol, body.remaining)
            protocol.transport.set_protocol(protocol._direct)


class _ThreadBody:
    """The body's bytes for a body thread: first the parser's pieces, then the socket."""

    def __init__(
        self,
        transport: asyncio.Transport,
        pieces: _BodyPieces | None,
        remaining: int,
        idle_timeout_s: float | None,
    ) -> None:
        self._pieces = pieces
        self.remaining = remaining  # bytes of the body still in the socket
        self.gone = False  # the peer closed, reset, or the read was cut
        self._fd = -1
        if remaining > 0:
            sock = transport.get_extra_info("socket")
            if sock is None:  # the transport is closed already
                raise ClientDisconnect
            self._fd = sock.fileno()
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN)
        self._timeout_ms = None if idle_timeout_s is None else max(1, int(idle_timeout_s * 1000))

    def read(self, view: memoryview) -> int:
        done = self._pieces.take_into(view) if self._pieces is not None else 0
        while done < len(view) and self.remaining > 0:
            try:
                # The socket is non-blocking (the event loop's): poll when empty.
                n = os.readv(self._fd, [view[done : done + min(len(view) - done, self.remaining)]])
            except BlockingIOError:
                if not self._poll.poll(self._timeout_ms):
                    raise TimeoutError("no body bytes within the idle timeout") from None
                continue
            except OSError as exc:
                self.gone = True
                raise ClientDisconnect from exc
            if n == 0:
                self.gone = True
                raise ClientDisconnect
            done += n
            self.remaining -= n
        return done

    def cut(self) -> None:
        """Make the thread's read end now (called from the event loop); a body
        already all read leaves the connection as it is."""
        if self._fd >= 0 and self.remaining > 0:
            self.gone = True
            with contextlib.suppress(OSError), socket.socket(fileno=os.dup(self._fd)) as sock:
                sock.shutdown(socket.SHUT_RD)


class _BodyThreads:
    """The threads that read bodies, as many as may read at once: a body
    thread waits on its client for the whole body, so bodies do not take the
    event loop's default threads, which every other request needs; a body
    that finds them all taken is read through `receive` instead."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._lock = threading.Lock()
        self._reading: set[_ThreadBody] = set()
        self._executor: ThreadPoolExecutor | None = None

    def claim(self, body: _ThreadBody) -> ThreadPoolExecutor | None:
        """The executor to read `body` in, or None when every thread is taken."""
        with self._lock:
            if len(self._reading) == self.count:
                return None
            self._reading.add(body)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.count, thread_name_prefix="body")
            return self._executor

    def release(self, body: _ThreadBody) -> None:
        with self._lock:
            self._reading.discard(body)

    @property
    def reading(self) -> int:
        with self._lock:
            return len(self._reading)

    def stop(self) -> None:
        """The server is stopping: cut every body still being read and wait for
        its thread. A graceful stop waits for its requests first, so only a
        forced one finds any; without this, the process would wait at exit for
        those clients (up to the idle timeout for a stalled one)."""
        with self._lock:
            bodies = list(self._reading)
            executor, self._executor = self._executor, None
        for body in bodies:
            body.cut()
        if executor is not None:
            executor.shutdown(wait=True)


# Eight: two devices each sending four chunks at once.
BODY_THREADS = _BodyThreads(8)


class _BodyRest(asyncio.BufferedProtocol):
    """The connection's protocol while the rest of a body the app stopped
    reading waits to be dropped (after the answer: `discard_rest`)."""

    def __init__(self, owner: BodyPiecesProtocol, remaining: int) -> None:
        self._owner = owner
        self._transport = owner.transport
        self.remaining = remaining
        self._scratch = memoryview(bytearray(0))
        self._then: Callable[[], None] | None = None

    def discard_rest(self, *, then: Callable[[], None]) -> None:
        """Read the rest of the body into a scratch buffer, then give the
        connection back and call `then`."""
        self._then = then
        self._scratch = memoryview(bytearray(_DISCARD_BYTES))
        self._transport.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._scratch[: min(len(self._scratch), self.remaining)]

    def buffer_updated(self, nbytes: int) -> None:
        self.remaining -= nbytes
        if self.remaining == 0:
            self._transport.pause_reading()
            owner = self._owner
            owner._direct = None
            self._transport.set_protocol(owner)
            owner.body_read_past_parser()  # its answer is already sent
            assert self._then is not None
            self._then()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._owner.pause_writing()

    def resume_writing(self) -> None:
        self._owner.resume_writing()
