"""The web page's session: a rotating refresh token held in an HttpOnly cookie.

The page logs in with the ordinary login (protocol section 2) and hands the
refresh token it got to `start`, which spends it at once (rotation) and
returns a fresh one for the cookie: the page keeps only short-lived access
tokens, in memory. `refresh` rotates the cookie's token on every reload or
expiry; `end` revokes the whole chain (logout). Reuse of a spent token revokes
the chain too (AuthService.refresh), so a stolen cookie value dies with the
next legitimate refresh.
"""

from __future__ import annotations

from dataclasses import dataclass

from shelfsync.server.domain.errors import AuthenticationFailed
from shelfsync.server.services.auth import AuthService
from shelfsync.server.services.tokens import hash_opaque
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.refresh_tokens import RefreshTokenRepository

__all__ = ["WebSession", "WebSessionService"]


@dataclass(frozen=True, slots=True)
class WebSession:
    access_token: str
    expires_in_s: int
    refresh_token: str  # for the cookie only, never for the page's script
    username: str


class WebSessionService:
    def __init__(self, *, db: Database, auth: AuthService) -> None:
        self._db = db
        self._auth = auth

    def start(self, *, refresh_token: str) -> WebSession:
        """Trade a refresh token from /auth/login for a cookie session."""
        return self.refresh(refresh_token=refresh_token)

    def refresh(self, *, refresh_token: str | None) -> WebSession:
        if not refresh_token:
            raise AuthenticationFailed("no session: log in")
        pair = self._auth.refresh(refresh_token=refresh_token)
        principal = self._auth.authenticate(bearer=pair.access_token)
        return WebSession(
            access_token=pair.access_token,
            expires_in_s=pair.expires_in_s,
            refresh_token=pair.refresh_token,
            username=principal.user.username,
        )

    def end(self, *, refresh_token: str | None) -> None:
        """Revoke the session's chain; an unknown or empty token is nothing to end."""
        if not refresh_token:
            return
        with self._db.write() as conn:
            tokens = RefreshTokenRepository(conn)
            token = tokens.by_hash(hash_opaque(refresh_token))
            if token is not None:
                tokens.revoke_family(token.family_id)
