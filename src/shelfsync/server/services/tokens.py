"""Access tokens (HS256 JWTs) and opaque tokens stored only as hashes."""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from shelfsync.server.domain.errors import AuthenticationFailed

__all__ = ["AccessClaims", "TokenIssuer", "hash_opaque", "new_opaque_token"]

_ALGORITHM = "HS256"
_ACCESS = "access"
# Access tokens whose signature and claims were verified, kept to skip the
# verification when they come again (a client sends one per request). Only
# time can change a verified token's answer (this process's secret does not
# change), so a cached one is still checked against its expiry every time.
_VERIFIED_CACHE_SIZE = 1024


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
        # Per issuer (its secret); lru_cache is thread-safe and never caches a raise.
        self._verified = functools.lru_cache(maxsize=_VERIFIED_CACHE_SIZE)(self._verify)

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
        claims, expires_at = self._verified(token)
        if time.time() < expires_at:  # PyJWT's test: expired once exp <= now
            return claims
        return self._verify(token)[0]  # verified again: raises once expired

    def _verify(self, token: str) -> tuple[AccessClaims, int]:
        """The claims of a valid access token, and when it expires."""
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
        # `nbf` (never issued here) is time-dependent too: such a token is verified every time.
        expires_at = 0 if "nbf" in claims else int(claims["exp"])
        return AccessClaims(sub, ugen, did, dgen if did is not None else None), expires_at
