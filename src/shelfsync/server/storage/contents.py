"""Repository of the content registry: which contents exist, and whose they are,
and the bytes of the contents stored in the database (`content_data`).

Content up to the server's inline limit (never above `MAX_INLINE_BYTES`) may
be stored inline: its bytes are a `content_data` row, written in the
transaction that records the content, instead of a file in the blob store. A
content is inline exactly when that row exists; readers look for the row only
for content of at most `MAX_INLINE_BYTES`, so a larger content never costs
the look-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from shelfsync.server.domain.uploads import UploadStatus
from shelfsync.server.storage import bulk
from shelfsync.server.storage.engine import BULK_BYTES_KEY
from shelfsync.server.storage.tables import (
    conflicts,
    content_blocks,
    content_data,
    contents,
    revisions,
    upload_sessions,
    user_contents,
)

__all__ = ["MAX_INLINE_BYTES", "ContentRepository"]

# The largest content ever stored inline, whatever the server's setting: a
# bound on what readers look for in `content_data` (and on a row's size).
MAX_INLINE_BYTES = 1024 * 1024
# Inline content read per statement (bounds a batch read's memory).
_READ_GROUP = 500


class ContentRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def size_for_user(self, user_id: str, content_hash: str) -> int | None:
        """The size of `content_hash` if this user holds it (dedupe never crosses users).

        Inside a write transaction the content row is share-locked until commit, so
        garbage collection (which locks it for update) cannot remove content that a
        change is about to reference.
        """
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
            .with_for_update(read=True, of=contents)
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
                .with_for_update(read=True, of=contents)
            )
            found.update({str(r[0]): int(r[1]) for r in rows})
        return found

    def hold(self, content_hash: str) -> bool:
        """Share-lock the content row until commit, if there is one (False if not).

        A writer about to place or reuse the content's file holds it so that a
        garbage collection in any process either finished before (the row and
        file are gone) or skips it (its FOR UPDATE SKIP LOCKED passes it by).
        """
        row = self._conn.execute(
            sa.select(contents.c.content_hash)
            .where(contents.c.content_hash == content_hash)
            .with_for_update(read=True)
        ).first()
        return row is not None

    def hold_many(self, content_hashes: list[str]) -> set[str]:
        """`hold` for many contents at once; returns those that have a row."""
        if not content_hashes:
            return set()
        rows = self._conn.execute(
            sa.select(contents.c.content_hash)
            .where(contents.c.content_hash.in_(sorted(content_hashes)))
            .order_by(contents.c.content_hash)
            .with_for_update(read=True)
        )
        return {str(r[0]) for r in rows}

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

    def add_many(self, *, user_id: str, sizes: dict[str, int], now: datetime) -> None:
        """`add` for many contents at once (batch uploads): two executemany,
        straight to the driver (storage/bulk.py: SQLAlchemy's per-row parameter
        handling cost more than the inserts; values bound as it would bind them)."""
        if not sizes:
            return
        dialect = self._conn.dialect
        ordered = sorted(sizes.items())  # one lock order on PostgreSQL
        at = bulk.bind_processor(contents.c.created_at, dialect)(now)
        prep = dialect.identifier_preparer
        # A content referenced again is young again: the collector's grace
        # period then protects it until the changes naming it are committed.
        created = prep.quote(contents.c.created_at.name)
        upsert = (
            bulk.insert_sql(dialect, contents, ["content_hash", "size", "created_at"])
            + f" ON CONFLICT ({prep.quote(contents.c.content_hash.name)})"
            + f" DO UPDATE SET {created} = excluded.{created}"
        )
        bulk.executemany(self._conn, upsert, [(h, n, at) for h, n in ordered])
        keys = ", ".join(prep.quote(c) for c in ("user_id", "content_hash"))
        held = (
            bulk.insert_sql(dialect, user_contents, ["user_id", "content_hash", "created_at"])
            + f" ON CONFLICT ({keys}) DO NOTHING"
        )
        bulk.executemany(self._conn, held, [(user_id, h, at) for h, _ in ordered])

    def add_blocks_many(self, blocks: dict[str, list[str]]) -> None:
        """`add_blocks` for many contents at once, one executemany (to the driver)."""
        rows = [(h, i, d) for h, digests in sorted(blocks.items()) for i, d in enumerate(digests)]
        if not rows:
            return
        dialect = self._conn.dialect
        prep = dialect.identifier_preparer
        keys = ", ".join(prep.quote(c) for c in ("content_hash", "block_index"))
        sql = (
            bulk.insert_sql(dialect, content_blocks, ["content_hash", "block_index", "digest"])
            + f" ON CONFLICT ({keys}) DO NOTHING"
        )
        bulk.executemany(self._conn, sql, rows)

    def add_blocks(self, content_hash: str, digests: list[str]) -> None:
        """Index a stored content's block digests (once per content)."""
        if not digests:
            return
        insert = pg_insert if self._conn.dialect.name == "postgresql" else sqlite_insert
        rows = [
            {"content_hash": content_hash, "block_index": i, "digest": d}
            for i, d in enumerate(digests)
        ]
        for start in range(0, len(rows), 1000):
            self._conn.execute(
                insert(content_blocks)
                .values(rows[start : start + 1000])
                .on_conflict_do_nothing(index_elements=["content_hash", "block_index"])
            )

    def block_digests(self, content_hash: str) -> list[str]:
        """A stored content's block digests (hex), in order."""
        rows = self._conn.execute(
            sa.select(content_blocks.c.digest)
            .where(content_blocks.c.content_hash == content_hash)
            .order_by(content_blocks.c.block_index)
        )
        return [str(r[0]) for r in rows]

    def known_blocks(self, user_id: str, digests: set[str]) -> dict[str, tuple[str, int]]:
        """digest -> (content hash, block index) for blocks of content this user holds."""
        found: dict[str, tuple[str, int]] = {}
        ordered = sorted(digests)
        for start in range(0, len(ordered), 500):
            part = ordered[start : start + 500]
            rows = self._conn.execute(
                sa.select(
                    content_blocks.c.digest,
                    content_blocks.c.content_hash,
                    content_blocks.c.block_index,
                )
                .select_from(
                    content_blocks.join(
                        user_contents,
                        user_contents.c.content_hash == content_blocks.c.content_hash,
                    )
                )
                .where(user_contents.c.user_id == user_id, content_blocks.c.digest.in_(part))
            )
            for digest, content_hash, index in rows:
                found.setdefault(str(digest), (str(content_hash), int(index)))
        return found

    def used_bytes(self, user_id: str) -> int:
        value = self._conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(contents.c.size), 0))
            .select_from(
                user_contents.join(
                    contents, contents.c.content_hash == user_contents.c.content_hash
                )
            )
            .where(user_contents.c.user_id == user_id)
        ).scalar_one()
        return int(value)

    # -- inline content (content_data) ---------------------------------

    def add_data(self, content_hash: str, data: bytes) -> None:
        """Store a content's bytes inline (idempotent: a second copy is dropped)."""
        self.add_data_many({content_hash: data})

    def add_data_many(self, data: Mapping[str, bytes | memoryview]) -> None:
        """Inline bytes of many contents, one executemany (each content's
        `contents` row must exist: add it first, in the same transaction)."""
        if not data:
            return
        dialect = self._conn.dialect
        bind = bulk.bind_processor(content_data.c.data, dialect)
        sql = (
            bulk.insert_sql(dialect, content_data, ["content_hash", "data"])
            + f" ON CONFLICT ({dialect.identifier_preparer.quote('content_hash')}) DO NOTHING"
        )
        bulk.executemany(self._conn, sql, [(h, bind(d)) for h, d in sorted(data.items())])
        # Counted for Database.write, which empties this connection's page cache
        # once enough content went through it (storage/engine.py).
        info = self._conn.info
        info[BULK_BYTES_KEY] = info.get(BULK_BYTES_KEY, 0) + sum(map(len, data.values()))

    def inline_data(self, content_hashes: list[str] | set[str]) -> dict[str, bytes]:
        """content hash -> bytes of those of these contents that are inline."""
        found: dict[str, bytes] = {}
        ordered = sorted(content_hashes)
        for start in range(0, len(ordered), _READ_GROUP):
            rows = self._conn.execute(
                sa.select(content_data.c.content_hash, content_data.c.data).where(
                    content_data.c.content_hash.in_(ordered[start : start + _READ_GROUP])
                )
            )
            found.update({str(h): bytes(d) for h, d in rows})
        return found

    def inline_one(self, content_hash: str) -> bytes | None:
        """The bytes of one content if it is inline."""
        row = self._conn.execute(
            sa.select(content_data.c.data).where(content_data.c.content_hash == content_hash)
        ).first()
        return None if row is None else bytes(row[0])

    def inline_hashes(self, content_hashes: list[str] | set[str]) -> set[str]:
        """Those of these contents that are inline (their bytes not read)."""
        found: set[str] = set()
        ordered = sorted(content_hashes)
        for start in range(0, len(ordered), _READ_GROUP):
            rows = self._conn.execute(
                sa.select(content_data.c.content_hash).where(
                    content_data.c.content_hash.in_(ordered[start : start + _READ_GROUP])
                )
            )
            found.update(str(r[0]) for r in rows)
        return found

    # -- garbage collection ----------------------------------------------

    def _referenced(self, content_hash: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
        """Whether anything still needs the content: a retained revision (every
        current item state is one), a conflict's client version, a live upload."""
        return sa.or_(
            sa.exists().where(revisions.c.content_hash == content_hash),
            sa.exists().where(conflicts.c.client_content_hash == content_hash),
            sa.exists().where(
                upload_sessions.c.content_hash == content_hash,
                upload_sessions.c.status == UploadStatus.PENDING.value,
            ),
        )

    def unreferenced(self, *, created_before: datetime, limit: int) -> list[str]:
        rows = self._conn.execute(
            sa.select(contents.c.content_hash)
            .where(
                contents.c.created_at < created_before,
                sa.not_(self._referenced(contents.c.content_hash)),
            )
            .limit(limit)
        )
        return [str(r[0]) for r in rows]

    def lock_if_unreferenced(
        self, content_hash: str, *, created_before: datetime | None = None
    ) -> bool:
        """Lock the content row for removal; False when it is gone, locked by a
        writer about to reference it, referenced again, or (with created_before)
        made young again since the candidates were read."""
        query = sa.select(contents.c.content_hash).where(contents.c.content_hash == content_hash)
        if created_before is not None:
            query = query.where(contents.c.created_at < created_before)
        locked = self._conn.execute(query.with_for_update(skip_locked=True)).first()
        if locked is None:
            return False
        referenced = self._conn.execute(
            sa.select(self._referenced(sa.literal(content_hash)))
        ).scalar_one()
        return not referenced

    def remove(self, content_hash: str) -> None:
        self._conn.execute(
            user_contents.delete().where(user_contents.c.content_hash == content_hash)
        )
        self._conn.execute(
            content_blocks.delete().where(content_blocks.c.content_hash == content_hash)
        )
        # Inline bytes go with the record, in the same transaction.
        self._conn.execute(content_data.delete().where(content_data.c.content_hash == content_hash))
        self._conn.execute(contents.delete().where(contents.c.content_hash == content_hash))
