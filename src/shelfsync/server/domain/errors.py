"""Every error the server's domain can raise, as one tree.

    ShelfsyncError
    ├── InvalidInput ................ the request is malformed for the domain
    │   ├── InvalidPath
    │   ├── InvalidCursor
    │   ├── DeviceRequired
    │   ├── AlreadyResolved ......... a conflict was settled another way
    │   └── ContentMissing .......... keep_client/keep_both without the client's bytes
    ├── CursorExpired ............... the cursor predates purged tombstones
    ├── AuthenticationFailed ........ no valid identity (bad password, token...)
    ├── LoginThrottled .............. too many failed logins (carries retry_after_s)
    ├── Forbidden ................... authenticated, but not allowed
    │   └── DeviceForbidden
    ├── NotFound
    │   ├── UserNotFound
    │   ├── DeviceNotFound
    │   └── ConflictNotFound
    ├── AlreadyExists
    │   └── UserExists
    ├── StaleState .................. a precondition no longer holds (409)
    └── Unavailable ................. a backing store is down (carries retry_after_s)

Nothing here knows HTTP: `api/errors.py` maps each class to a status and a
stable `code` in one table (the pattern of httpx/_exceptions.py).
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "AlreadyResolved",
    "AuthenticationFailed",
    "ConflictNotFound",
    "ContentMissing",
    "CursorExpired",
    "DeviceForbidden",
    "DeviceNotFound",
    "DeviceRequired",
    "Forbidden",
    "InvalidCursor",
    "InvalidInput",
    "InvalidPath",
    "LoginThrottled",
    "NotFound",
    "ShelfsyncError",
    "StaleState",
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


class CursorExpired(ShelfsyncError):
    """The cursor is older than the retained tombstones: read again without one."""

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


class StaleState(ShelfsyncError):
    """A precondition (an expected revision, a chunk's bytes) no longer holds."""


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
