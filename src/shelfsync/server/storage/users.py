"""Repository of user accounts."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from shelfsync.server.domain.accounts import User
from shelfsync.server.domain.errors import UserExists
from shelfsync.server.storage.tables import libraries, users

__all__ = ["UserRepository"]


def _user(row: RowMapping) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        password_hash=row["password_hash"],
        generation=row["generation"],
        created_at=row["created_at"],
    )


# Built once: every authenticated request runs it, and building a statement
# (and its cache key) costs several times what running it does.
_BY_ID = sa.select(users).where(users.c.id == sa.bindparam("user_id"))


class UserRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, *, user_id: str, username: str, password_hash: str, now: datetime) -> User:
        if self.by_username(username) is not None:
            raise UserExists(f"user {username!r} already exists")
        try:
            with self._conn.begin_nested():
                self._conn.execute(
                    users.insert().values(
                        id=user_id,
                        username=username,
                        password_hash=password_hash,
                        generation=1,
                        created_at=now,
                    )
                )
                self._conn.execute(libraries.insert().values(user_id=user_id, seq=0, purged_seq=0))
        except sa.exc.IntegrityError as exc:
            raise UserExists(f"user {username!r} already exists") from exc
        return User(user_id, username, password_hash, 1, now)

    def by_username(self, username: str) -> User | None:
        row = (
            self._conn.execute(sa.select(users).where(users.c.username == username))
            .mappings()
            .first()
        )
        return _user(row) if row else None

    def by_id(self, user_id: str) -> User | None:
        row = self._conn.execute(_BY_ID, {"user_id": user_id}).mappings().first()
        return _user(row) if row else None

    def all(self) -> list[User]:
        rows = self._conn.execute(sa.select(users).order_by(users.c.username)).mappings()
        return [_user(r) for r in rows]

    def set_password(self, *, user_id: str, password_hash: str) -> None:
        self._conn.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(password_hash=password_hash, generation=users.c.generation + 1)
        )

    def rehash(self, *, user_id: str, password_hash: str) -> None:
        """Replace the hash after a parameter upgrade, without ending sessions."""
        self._conn.execute(
            users.update().where(users.c.id == user_id).values(password_hash=password_hash)
        )

    def remove(self, user_id: str) -> None:
        self._conn.execute(users.delete().where(users.c.id == user_id))
