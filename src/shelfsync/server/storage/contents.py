"""Repository of the content registry: which contents exist, and whose they are."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from shelfsync.server.storage.tables import contents, user_contents

__all__ = ["ContentRepository"]


class ContentRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def size_for_user(self, user_id: str, content_hash: str) -> int | None:
        """The size of `content_hash` if this user holds it (dedupe never crosses users)."""
        row = self._conn.execute(
            sa.select(contents.c.size)
            .select_from(
                user_contents.join(
                    contents, contents.c.content_hash == user_contents.c.content_hash
                )
            )
            .where(
                user_contents.c.user_id == user_id,
                user_contents.c.content_hash == content_hash,
            )
        ).first()
        return int(row[0]) if row else None

    def sizes_for_user(self, user_id: str, hashes: set[str]) -> dict[str, int]:
        """Bulk form of size_for_user, for report batches."""
        found: dict[str, int] = {}
        ordered = sorted(hashes)
        for start in range(0, len(ordered), 500):
            part = ordered[start : start + 500]
            rows = self._conn.execute(
                sa.select(contents.c.content_hash, contents.c.size)
                .select_from(
                    user_contents.join(
                        contents, contents.c.content_hash == user_contents.c.content_hash
                    )
                )
                .where(
                    user_contents.c.user_id == user_id,
                    user_contents.c.content_hash.in_(part),
                )
            )
            found.update({str(r[0]): int(r[1]) for r in rows})
        return found

    def exists(self, content_hash: str) -> bool:
        row = self._conn.execute(
            sa.select(contents.c.content_hash).where(contents.c.content_hash == content_hash)
        ).first()
        return row is not None

    def add(self, *, user_id: str, content_hash: str, size: int, now: datetime) -> None:
        """Record stored content and give it to a user (both idempotent)."""
        insert = pg_insert if self._conn.dialect.name == "postgresql" else sqlite_insert
        self._conn.execute(
            insert(contents)
            .values(content_hash=content_hash, size=size, created_at=now)
            .on_conflict_do_nothing(index_elements=["content_hash"])
        )
        self._conn.execute(
            insert(user_contents)
            .values(user_id=user_id, content_hash=content_hash, created_at=now)
            .on_conflict_do_nothing(index_elements=["user_id", "content_hash"])
        )
