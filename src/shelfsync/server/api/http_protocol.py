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
"""

from __future__ import annotations

from typing import Self

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BodyPiecesProtocol"]


class _BodyPieces:
    """What uvicorn's cycle uses of its bytearray body: `+=` a piece, `len`,
    truth, and `bytes()` when the app receives."""

    __slots__ = ("_pieces", "_size")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._size = 0

    def __iadd__(self, piece: bytes) -> Self:
        self._pieces.append(piece)
        self._size += len(piece)
        return self

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        if len(self._pieces) == 1:
            return self._pieces[0]
        return b"".join(self._pieces)


class BodyPiecesProtocol(HttpToolsProtocol):
    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        # uvicorn sets a fresh bytearray for each message it hands over.
        if type(cycle.body) is bytearray and not cycle.body:
            cycle.body = _BodyPieces()  # type: ignore[assignment]
        super().on_body(body)
