"""Access tokens (HS256 JWTs) and opaque tokens stored only as hashes."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from shelfsync.server.domain.errors import AuthenticationFailed

__all__ = ["AccessClaims", "TokenIssuer", "hash_opaque", "new_opaque_token"]

_ALGORITHM = "HS256"
_ACCESS = "access"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    user_generation: int
    device_id: str | None
    device_generation: int | None


def new_opaque_token(prefix: str) -> tuple[str, str]:
    """A random 256-bit token and the SHA-256 hex digest that is stored instead."""
    token = f"{prefix}_{secrets.token_urlsafe(32)}"
    return token, hash_opaque(token)


def hash_opaque(token: str) -> str:
    # The tokens carry 256 random bits, so a fast hash is enough (no dictionary
    # to attack) and lookup by digest keeps comparisons out of Python.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenIssuer:
    def __init__(self, *, secret: bytes, access_ttl_s: int) -> None:
        self._secret = secret
        self.access_ttl_s = access_ttl_s

    def issue_access(
        self,
        *,
        user_id: str,
        user_generation: int,
        now: datetime,
        device_id: str | None = None,
        device_generation: int | None = None,
    ) -> str:
        claims: dict[str, object] = {
            "sub": user_id,
            "typ": _ACCESS,
            "ugen": user_generation,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.access_ttl_s)).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        if device_id is not None:
            claims["did"] = device_id
            claims["dgen"] = device_generation
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def decode_access(self, token: str) -> AccessClaims:
        """Verify signature, algorithm, expiry and type; anything else is 401."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                # Only our algorithm: this refuses `none` and key-confusion tricks.
                algorithms=[_ALGORITHM],
                options={"require": ["exp", "iat", "sub", "typ"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationFailed("the access token has expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed("the access token is invalid") from exc
        if claims.get("typ") != _ACCESS:
            raise AuthenticationFailed("the token is not an access token")
        sub, ugen = claims.get("sub"), claims.get("ugen")
        did, dgen = claims.get("did"), claims.get("dgen")
        if not isinstance(sub, str) or not isinstance(ugen, int):
            raise AuthenticationFailed("the access token is invalid")
        if did is not None and (not isinstance(did, str) or not isinstance(dgen, int)):
            raise AuthenticationFailed("the access token is invalid")
        return AccessClaims(sub, ugen, did, dgen if did is not None else None)
