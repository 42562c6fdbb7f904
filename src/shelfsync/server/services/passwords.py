"""Password hashing with argon2id (RFC 9106 defaults from argon2-cffi)."""

from __future__ import annotations

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["PasswordHasher"]

MAX_PASSWORD_BYTES = 1024


class PasswordHasher:
    def __init__(self) -> None:
        self._hasher = argon2.PasswordHasher()
        # Verified against when the user does not exist, so an unknown name
        # costs the same time as a wrong password.
        self._dummy = self._hasher.hash("shelfsync-timing-equalizer")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        target = password_hash or self._dummy
        try:
            ok = self._hasher.verify(target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return ok and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
