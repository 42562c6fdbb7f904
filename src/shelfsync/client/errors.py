"""Every error the sync client raises, in one tree (as `httpx/_exceptions.py` draws it).

```
ClientError
 ├── NotLoggedIn            no device configuration here: run `shelfsync login`
 ├── ConfigError            the configuration or local state is unusable
 ├── UnsafePath             a path would leave the folder or is not a valid library path
 ├── ServerUnreachable      connection refused, DNS, timeout, broken stream (httpx.TransportError)
 └── ApiError               the server answered with an RFC 9457 problem
      ├── Unauthorized          401: the device token was revoked or the password is wrong
      ├── NotFound              404
      ├── CursorExpired         410 cursor_expired: read the feed again without a cursor
      ├── UploadGone            410 upload_expired, or a session no longer pending
      ├── ChunkConflict         409 chunk_conflict: another request holds or holds other bytes
      ├── MissingChunks         400 missing_chunks: `missing` lists the indexes to send
      └── HashMismatch          400 hash_mismatch: the bytes sent do not hash to content_hash
```

`client/http.py` is the only place that turns httpx exceptions and error answers
into these (architecture guide, "Errors": translate at the boundary you own).
"""

from __future__ import annotations

from shelfsync.protocol.problems import Problem

__all__ = [
    "ApiError",
    "ChunkConflict",
    "ClientError",
    "ConfigError",
    "CursorExpired",
    "HashMismatch",
    "MissingChunks",
    "NotFound",
    "NotLoggedIn",
    "ServerUnreachable",
    "Unauthorized",
    "UnsafePath",
    "UploadGone",
]


class ClientError(Exception):
    """Base of every client error; `str()` is a message fit for the user."""


class NotLoggedIn(ClientError):
    pass


class ConfigError(ClientError):
    pass


class UnsafePath(ClientError):
    pass


class ServerUnreachable(ClientError):
    pass


class ApiError(ClientError):
    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.detail} ({problem.status} {problem.code})")
        self.problem = problem

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def code(self) -> str:
        return self.problem.code


class Unauthorized(ApiError):
    pass


class NotFound(ApiError):
    pass


class CursorExpired(ApiError):
    pass


class UploadGone(ApiError):
    pass


class ChunkConflict(ApiError):
    pass


class MissingChunks(ApiError):
    @property
    def missing(self) -> list[int]:
        return list(self.problem.missing_chunks or [])


class HashMismatch(ApiError):
    pass
