"""A request body read straight into the app's own buffer, where the server offers it.

`shelfsync serve` with uvicorn offers one for every body with a Content-Length
(api/http_protocol.py) under the scope's `extensions`; other servers (granian,
the test client) do not, and the app reads ASGI messages as usual.
"""

from __future__ import annotations

from typing import Protocol

from starlette.types import Scope

__all__ = ["BODY_READER", "BodyReader", "direct_body"]

# The key of a request's reader in the scope's `extensions`.
BODY_READER = "shelfsync.body_reader"


class BodyReader(Protocol):
    async def read_into(self, view: memoryview, *, idle_timeout_s: float | None = None) -> int:
        """Fill `view` with the body's next bytes: all of it, or less only at
        the body's end (0 once it is all read). Raises starlette's
        ClientDisconnect, or TimeoutError when no byte came for `idle_timeout_s`."""
        ...


def direct_body(scope: Scope) -> BodyReader | None:
    reader: BodyReader | None = scope.get("extensions", {}).get(BODY_READER)
    return reader
