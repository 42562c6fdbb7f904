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

A body with a Content-Length can also be read straight into the app's own
buffer (api/body_reader.py; the chunk PUT route uses it).
Even uncopied, a body arrives as one ASGI message per 256 KiB socket read
(uvloop's read size): each a bytes object uvloop fills and httptools copies,
then a message through uvicorn, the middleware and Starlette's stream, with
reading paused and resumed around it. That was the event loop's work per
uploaded GiB (4,096 messages), and one event loop serves every chunk in
flight. `read_into` drains what the parser already has, then swaps the
connection's protocol for an `asyncio.BufferedProtocol` (`_BodyInto`) whose
buffer is the caller's: the event loop reads the rest of the body from the
socket into it, one small callback per read, until the Content-Length is
reached; then the connection goes back to uvicorn with a fresh parser (the
old one never saw those bytes), exactly at the next request's first byte.
When the app answers without reading a body to its end, the rest is read and
dropped after the response (as uvicorn's parser would drop it), so the client
gets its answer and the connection its next request; closing with unread
bytes instead would reset it, and the answer could be lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Self

import httptools
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from shelfsync.server.api.body_reader import BODY_READER

__all__ = ["BodyPiecesProtocol", "DirectBody"]

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
    # The connection's protocol while a body is read past the parser.
    _direct: _BodyInto | None = None

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._parsing = None
        length = _plain_length(self.headers)
        cycle = self.cycle
        if length and cycle is not None and self.scope.get("path") is not None:
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
    """A request body read into the caller's buffers (see the module's text)."""

    def __init__(self, protocol: BodyPiecesProtocol, cycle: RequestResponseCycle, length: int):
        self._protocol = protocol
        self._cycle = cycle
        self.length = length
        self.parsed = 0  # bytes of the body the parser has seen
        self.taken = 0  # bytes of the body handed to the app by read_into
        self._into: _BodyInto | None = None

    async def read_into(self, view: memoryview, *, idle_timeout_s: float | None = None) -> int:
        """As BodyReader.read_into (api/body_reader.py)."""
        cycle = self._cycle
        if cycle.waiting_for_100_continue and not cycle.transport.is_closing():
            cycle.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False
        # Every piece the parser gave is in a _BodyPieces (on_body); an empty
        # bytearray is uvicorn's fresh body.
        body = cycle.body
        done = body.take_into(view) if isinstance(body, _BodyPieces) else 0
        while done < len(view) and self.taken + done < self.length:
            if cycle.disconnected or cycle.response_complete:
                raise ClientDisconnect
            if self._into is None and not self._take_over():
                # The parser is past this body's end (all of it is in cycle.body).
                break
            assert self._into is not None
            done = await self._into.fill(view, done, idle_timeout_s)
        self.taken += done
        return done

    def _take_over(self) -> bool:
        protocol, cycle = self._protocol, self._cycle
        remaining = self.length - self.parsed
        if protocol._parsing is not self or not cycle.more_body or remaining <= 0:
            return False
        self._into = protocol._direct = _BodyInto(protocol, remaining)
        protocol.flow.pause_reading()
        protocol.transport.set_protocol(self._into)
        return True


class _BodyInto(asyncio.BufferedProtocol):
    """The connection's protocol while a body is read into the app's buffer."""

    def __init__(self, owner: BodyPiecesProtocol, remaining: int) -> None:
        self._owner = owner
        self._transport = owner.transport
        self.remaining = remaining
        self._view: memoryview | None = None
        self._filled = 0
        self._waiter: asyncio.Future[None] | None = None
        self._lost = False
        self._then: Callable[[], None] | None = None

    async def fill(self, view: memoryview, done: int, idle_timeout_s: float | None) -> int:
        if self._lost:
            raise ClientDisconnect
        self._view, self._filled = view, done
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._transport.resume_reading()
        try:
            # The idle timeout is checked when it runs out: a body that stops
            # is cut between one and two timeouts after its last byte.
            while True:
                remaining = self.remaining
                try:
                    async with asyncio.timeout(idle_timeout_s):
                        await asyncio.shield(waiter)
                    break
                except TimeoutError:
                    if self.remaining == remaining:  # nothing came meanwhile
                        raise
        finally:
            if not waiter.done():
                waiter.cancel()
                if not self._lost:
                    self._transport.pause_reading()
            self._view, self._waiter = None, None
        return self._filled

    def discard_rest(self, *, then: Callable[[], None]) -> None:
        """Read the rest of the body into a scratch buffer, then give the
        connection back and call `then`."""
        self._then = then
        self._view, self._filled = memoryview(bytearray(_DISCARD_BYTES)), 0
        self._transport.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self._view
        assert view is not None  # reading is paused while there is none
        # Discarding, `_filled` stays 0: the scratch buffer over and over.
        return view[self._filled : self._filled + min(len(view) - self._filled, self.remaining)]

    def buffer_updated(self, nbytes: int) -> None:
        assert self._view is not None
        self.remaining -= nbytes
        if self._then is None:
            self._filled += nbytes
        if self.remaining == 0:
            self._transport.pause_reading()
            self._give_back()
            if self._then is not None:
                self._then()
                return
        elif self._then is not None or self._filled < len(self._view):
            return
        else:
            self._transport.pause_reading()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _give_back(self) -> None:
        """The body is in: the connection is uvicorn's again, at a message boundary."""
        owner = self._owner
        owner._direct = None
        self._transport.set_protocol(owner)
        owner.parser = httptools.HttpRequestParser(owner)
        # Taken over only while the parser was in this body: its cycle is current.
        owner.on_message_complete()
        owner.flow.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ClientDisconnect())
        self._owner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._owner.pause_writing()

    def resume_writing(self) -> None:
        self._owner.resume_writing()
