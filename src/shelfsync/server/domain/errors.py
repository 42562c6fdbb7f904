"""Every error the server's domain can raise, as one tree.

    ShelfsyncError
    ├── InvalidInput ................ the request is malformed for the domain
    │   ├── InvalidPath
    │   ├── InvalidCursor
    │   ├── DeviceRequired
    │   ├── AlreadyResolved ......... a conflict was settled another way
    │   ├── ContentMissing .......... keep_client/keep_both without the client's bytes
    │   └── BatchMalformed .......... a batch body that does not parse (or ends early)
    │       └── BatchTruncated ...... a batch body that ended before its manifest's bytes
    ├── CursorExpired ............... the cursor predates purged tombstones
    ├── AuthenticationFailed ........ no valid identity (bad password, token...)
    ├── LoginThrottled .............. too many failed logins (carries retry_after_s)
    ├── Forbidden ................... authenticated, but not allowed
    │   ├── DeviceForbidden
    │   └── CrossSiteRequest ........ a cookie-session request without the page's CSRF proof
    ├── NotFound
    │   ├── UserNotFound
    │   ├── DeviceNotFound
    │   └── ConflictNotFound
    ├── AlreadyExists
    │   └── UserExists
    ├── StaleState .................. a precondition no longer holds (409)
    │   ├── ChunkConflict ........... other bytes for a received chunk, or one in flight
    │   └── SessionNotPending ....... the upload session is completed or failed
    ├── RangeNotSatisfiable ......... no requested byte range overlaps the content (carries size)
    ├── Gone ........................ an upload session expired (410)
    ├── TooLarge .................... over a size limit (413)
    │   └── BatchTooLarge ........... a batch over its file count or byte limits
    ├── TooManySessions ............. too many live upload sessions (429)
    ├── MissingChunks ............... complete before every chunk arrived (400)
    ├── HashMismatch ................ the bytes do not hash to the promised hash (400)
    ├── DigestMismatch .............. a chunk's Content-Digest does not match (400)
    ├── Unavailable ................. a backing store is down (carries retry_after_s)
    │   └── StorageFailure .......... the content store failed an operation
    └── InsufficientStorage ......... the content store (or a quota) is full

Nothing here knows HTTP: `api/errors.py` maps each class to a status and a
stable `code` in one table (the pattern of httpx/_exceptions.py).
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "AlreadyResolved",
    "AuthenticationFailed",
    "BatchMalformed",
    "BatchTooLarge",
    "BatchTruncated",
    "ChunkConflict",
    "ConflictNotFound",
    "ContentMissing",
    "CrossSiteRequest",
    "CursorExpired",
    "DeviceForbidden",
    "DeviceNotFound",
    "DeviceRequired",
    "DigestMismatch",
    "Forbidden",
    "Gone",
    "HashMismatch",
    "InsufficientStorage",
    "InvalidCursor",
    "InvalidInput",
    "InvalidPath",
    "LoginThrottled",
    "MissingChunks",
    "NotFound",
    "RangeNotSatisfiable",
    "SessionNotPending",
    "ShelfsyncError",
    "StaleState",
    "StorageFailure",
    "TooLarge",
    "TooManySessions",
    "Unavailable",
    "UserExists",
    "UserNotFound",
]


class ShelfsyncError(Exception):
    """Root of every domain error; `detail` is safe to show to the caller."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(ShelfsyncError):
    """The input is well-formed JSON but breaks a domain rule."""


class InvalidPath(InvalidInput):
    """A library path breaks the rules of protocol section 3."""


class InvalidCursor(InvalidInput):
    """A feed cursor is malformed, forged, foreign or ahead of the library."""


class DeviceRequired(InvalidInput):
    """The operation acts for a device and the request names none."""


class AlreadyResolved(InvalidInput):
    """The conflict was already resolved with a different resolution."""


class ContentMissing(InvalidInput):
    """The client's version was never uploaded, so it cannot be kept."""


class BatchMalformed(InvalidInput):
    """A batch body whose framing or manifest does not parse (protocol section 11.4)."""


class BatchTruncated(BatchMalformed):
    """A batch body that ended before the bytes its manifest announced."""


class CursorExpired(ShelfsyncError):
    """The cursor is older than the retained tombstones: read again without one."""

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


class StaleState(ShelfsyncError):
    """A precondition (an expected revision, a chunk's bytes) no longer holds."""


class RangeNotSatisfiable(ShelfsyncError):
    """No range of a Range header overlaps the content (RFC 9110 section 15.5.17).

    `size` is the content's length, which the answer names (`bytes */<size>`).
    """

    def __init__(self, detail: str | None = None, *, size: int) -> None:
        super().__init__(detail or f"no requested range overlaps the {size} bytes of content")
        self.size = size


class AuthenticationFailed(ShelfsyncError):
    """No valid identity: wrong credentials, or a bad, expired or revoked token."""


class LoginThrottled(ShelfsyncError):
    """Too many failed logins; the caller may try again after `retry_after_s`."""

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Forbidden(ShelfsyncError):
    """The caller is known but may not do this."""


class DeviceForbidden(Forbidden):
    """The device belongs to another user, or is disabled for this use."""


class CrossSiteRequest(Forbidden):
    """A request riding on the web session cookie lacks the page's custom header,
    or comes from another origin: it may be a cross-site request forgery."""


class NotFound(ShelfsyncError):
    """The thing named does not exist (or is not visible to the caller)."""


class UserNotFound(NotFound):
    """No user by that name."""


class DeviceNotFound(NotFound):
    """No device with that id."""


class ConflictNotFound(NotFound):
    """No such conflict in the caller's library."""


class AlreadyExists(ShelfsyncError):
    """Creating something that already exists."""


class UserExists(AlreadyExists):
    """A user by that name already exists."""


class Unavailable(ShelfsyncError):
    """A backing store cannot be reached; the caller should retry later."""

    def __init__(self, detail: str, *, retry_after_s: int = 5) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class StorageFailure(Unavailable):
    """The content store failed (an I/O error): retry later, nothing was kept."""


class InsufficientStorage(ShelfsyncError):
    """No room: the disk is full or the user's quota is used up."""

    def __init__(self, detail: str, *, retry_after_s: int = 60) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Gone(ShelfsyncError):
    """The upload session expired; its data was removed."""


class TooLarge(ShelfsyncError):
    """Over a configured size limit."""


class TooManySessions(ShelfsyncError):
    """The device has too many live upload sessions."""

    def __init__(self, detail: str, *, retry_after_s: int = 60) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class MissingChunks(ShelfsyncError):
    """`complete` was called before every chunk was received."""

    def __init__(self, detail: str, *, missing: list[int]) -> None:
        super().__init__(detail)
        self.missing = missing


class HashMismatch(ShelfsyncError):
    """The uploaded bytes do not hash to the session's content hash."""


class DigestMismatch(ShelfsyncError):
    """A chunk's Content-Digest header does not match its bytes."""


class ChunkConflict(StaleState):
    """Other bytes for an already received chunk, or a chunk another request is writing."""


class SessionNotPending(StaleState):
    """The upload session no longer takes chunks (completed or failed)."""


class BatchTooLarge(TooLarge):
    """A batch over its limits: files per batch, bytes per batch or per file."""
