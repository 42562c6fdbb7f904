"""A request body read by a worker thread straight from the socket into the app's
own buffers, where the server offers it.

`shelfsync serve` with uvicorn offers one for every body with a Content-Length on
a plain-TCP connection (api/http_protocol.py) under the scope's `extensions`;
other servers (granian, the test client) do not, and the app reads ASGI
messages as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from starlette.types import Scope

__all__ = ["BODY_READER", "BodyReader", "ReadBody", "ReadersBusy", "direct_body"]

# The key of a request's reader in the scope's `extensions`.
BODY_READER = "shelfsync.body_reader"

T = TypeVar("T")

# Called in the worker thread: fills the view with the body's next bytes, all
# of it, or less only at the body's end (0 once it is all read). Raises
# starlette's ClientDisconnect, or TimeoutError when no byte came for the
# idle timeout.
ReadBody = Callable[[memoryview], int]


class ReadersBusy(Exception):
    """Every body thread of the server is taken; nothing of the body was read."""


class BodyReader(Protocol):
    async def read_in_thread(
        self, work: Callable[[ReadBody], T], *, idle_timeout_s: float | None = None
    ) -> T:
        """Run `work(read)` in one of the server's body threads and return what
        it returns; the connection is that thread's until `work` returns.
        Raises ReadersBusy (then the body is still there for `receive`), or
        what `work` raises."""
        ...


def direct_body(scope: Scope) -> BodyReader | None:
    reader: BodyReader | None = scope.get("extensions", {}).get(BODY_READER)
    return reader
