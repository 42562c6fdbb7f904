"""Password hashing with argon2id (RFC 9106 defaults from argon2-cffi)."""

from __future__ import annotations

import functools

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["PasswordHasher"]

MAX_PASSWORD_BYTES = 1024


@functools.cache
def _dummy_hash(time_cost: int, memory_cost_kib: int) -> str:
    # Verified against when the user does not exist, so an unknown name costs
    # the same time as a wrong password. Same parameters, so the same cost.
    hasher = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib)
    return hasher.hash("shelfsync-timing-equalizer")


class PasswordHasher:
    """argon2id; the defaults are argon2-cffi's (RFC 9106 second recommendation)."""

    def __init__(
        self,
        *,
        time_cost: int = argon2.DEFAULT_TIME_COST,
        memory_cost_kib: int = argon2.DEFAULT_MEMORY_COST,
    ) -> None:
        self._hasher = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib)
        self._dummy = _dummy_hash(time_cost, memory_cost_kib)

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
