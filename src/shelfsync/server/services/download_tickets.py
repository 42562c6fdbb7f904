"""Short-lived download tickets: a browser downloads with a plain link.

A browser navigation cannot send an Authorization header, and a long-lived
token must never sit in a URL (it lands in history, logs and Referer headers).
A ticket is an HS256 token signed with a key derived from the server secret
(so it can never pass as an access token, nor one as a ticket), naming one
user, one path and one revision, valid for `TICKET_TTL_S` seconds. Redeeming
it re-checks the user (a password change ends its tickets) and resolves the
download exactly as GET /sync/download does.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.errors import AuthenticationFailed
from shelfsync.server.domain.paths import normalize_path
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.downloads import DownloadService, DownloadTarget
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.users import UserRepository

__all__ = ["TICKET_TTL_S", "DownloadTicketService", "Ticket"]

TICKET_TTL_S = 60
_ALGORITHM = "HS256"
_TYPE = "download"


@dataclass(frozen=True, slots=True)
class Ticket:
    token: str
    expires_at: datetime
    path: str
    revision: int


class DownloadTicketService:
    def __init__(self, *, db: Database, secret: bytes, downloads: DownloadService) -> None:
        self._db = db
        # Domain separation: the ticket key is not the access-token key.
        self._key = hmac.new(secret, b"shelfsync download tickets", hashlib.sha256).digest()
        self._downloads = downloads

    def issue(self, principal: Principal, *, path: str, revision: int | None) -> Ticket:
        """A ticket for what GET /sync/download would send now (NotFound if nothing)."""
        target = self._downloads.resolve(principal, path, revision)
        now = utcnow()
        expires = now + timedelta(seconds=TICKET_TTL_S)
        normalized = normalize_path(path)  # resolve() accepted it
        claims = {
            "typ": _TYPE,
            "sub": principal.user_id,
            "ugen": principal.user.generation,
            "path": normalized,
            "rev": target.revision,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM)
        return Ticket(token=token, expires_at=expires, path=normalized, revision=target.revision)

    def redeem(self, token: str) -> DownloadTarget:
        """The download a valid, unexpired ticket names; 401 for anything else."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                options={"require": ["exp", "iat", "sub", "typ", "path", "rev", "ugen"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationFailed("the download link has expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed("the download link is invalid") from exc
        sub, ugen, path, rev = claims["sub"], claims["ugen"], claims["path"], claims["rev"]
        if (
            claims["typ"] != _TYPE
            or not isinstance(sub, str)
            or not isinstance(ugen, int)
            or not isinstance(path, str)
            or not isinstance(rev, int)
        ):
            raise AuthenticationFailed("the download link is invalid")
        with self._db.read() as conn:
            user = UserRepository(conn).by_id(sub)
        if user is None or user.generation != ugen:
            raise AuthenticationFailed("the download link has been revoked")
        return self._downloads.resolve(Principal(user, None), path, rev)
