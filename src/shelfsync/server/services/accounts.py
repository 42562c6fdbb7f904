"""Operator use cases for user accounts (the `shelfsync user` commands)."""

from __future__ import annotations

import uuid

from shelfsync.server.domain.accounts import User, validate_username
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.errors import InvalidInput, UserNotFound
from shelfsync.server.services.passwords import MAX_PASSWORD_BYTES, PasswordHasher
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.refresh_tokens import RefreshTokenRepository
from shelfsync.server.storage.users import UserRepository

__all__ = ["AccountService"]

MIN_PASSWORD_CHARS = 8


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD_BYTES} bytes")


class AccountService:
    def __init__(self, *, db: Database, passwords: PasswordHasher) -> None:
        self._db = db
        self._passwords = passwords

    def add_user(self, *, username: str, password: str) -> User:
        validate_username(username)
        _check_password(password)
        password_hash = self._passwords.hash(password)
        with self._db.write() as conn:
            return UserRepository(conn).add(
                user_id=str(uuid.uuid4()),
                username=username,
                password_hash=password_hash,
                now=utcnow(),
            )

    def list_users(self) -> list[User]:
        with self._db.read() as conn:
            return UserRepository(conn).all()

    def set_password(self, *, username: str, password: str) -> None:
        """New password; every session of the user ends (tokens carry the generation)."""
        _check_password(password)
        password_hash = self._passwords.hash(password)
        with self._db.write() as conn:
            users = UserRepository(conn)
            user = users.by_username(username)
            if user is None:
                raise UserNotFound(f"no user {username!r}")
            users.set_password(user_id=user.id, password_hash=password_hash)
            RefreshTokenRepository(conn).revoke_user(user.id)

    def remove_user(self, *, username: str) -> None:
        with self._db.write() as conn:
            users = UserRepository(conn)
            user = users.by_username(username)
            if user is None:
                raise UserNotFound(f"no user {username!r}")
            users.remove(user.id)
