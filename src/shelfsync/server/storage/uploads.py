"""Repository of upload sessions and their chunks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from shelfsync.server.domain.uploads import UploadSession, UploadStatus
from shelfsync.server.storage.items import path_key
from shelfsync.server.storage.tables import upload_chunks, upload_sessions

__all__ = ["ChunkRecord", "UploadRepository"]

RECEIVED = "received"
WRITING = "writing"


class ChunkRecord:
    __slots__ = ("block_digests", "claim", "claimed_at", "index", "size", "state")

    def __init__(self, row: RowMapping) -> None:
        self.index: int = row["chunk_index"]
        self.state: str = row["state"]
        self.claim: str | None = row["claim"]
        self.claimed_at: datetime | None = row["claimed_at"]
        self.size: int = row["size"]
        self.block_digests: str | None = row["block_digests"]

    @property
    def received(self) -> bool:
        return self.state == RECEIVED


def _session(row: RowMapping, received: Sequence[int]) -> UploadSession:
    return UploadSession(
        id=row["id"],
        user_id=row["user_id"],
        device_id=row["device_id"],
        path=row["path"],
        size=row["size"],
        content_hash=row["content_hash"],
        chunk_size=row["chunk_size"],
        chunk_count=row["chunk_count"],
        status=UploadStatus(row["status"]),
        deduplicated=bool(row["deduplicated"]),
        mtime=row["mtime"],
        metadata=row["metadata"],
        base_revision=row["base_revision"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        received=tuple(received),
        result=row["result"],
    )


class UploadRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def _received(self, session_id: str) -> list[int]:
        rows = self._conn.execute(
            sa.select(upload_chunks.c.chunk_index)
            .where(upload_chunks.c.session_id == session_id, upload_chunks.c.state == RECEIVED)
            .order_by(upload_chunks.c.chunk_index)
        )
        return [int(r[0]) for r in rows]

    def received_count(self, session_id: str) -> int:
        return int(
            self._conn.execute(
                sa.select(sa.func.count())
                .select_from(upload_chunks)
                .where(upload_chunks.c.session_id == session_id, upload_chunks.c.state == RECEIVED)
            ).scalar_one()
        )

    def get(
        self, session_id: str, *, lock: bool = False, with_received: bool = True
    ) -> UploadSession | None:
        """The session; `with_received=False` leaves its `received` empty (unread)."""
        stmt = sa.select(upload_sessions).where(upload_sessions.c.id == session_id)
        if lock:
            stmt = stmt.with_for_update()
        row = self._conn.execute(stmt).mappings().first()
        if row is None:
            return None
        return _session(row, self._received(session_id) if with_received else ())

    def pending_for(
        self, *, device_id: str, path: str, content_hash: str, size: int
    ) -> UploadSession | None:
        row = (
            self._conn.execute(
                sa.select(upload_sessions)
                .where(
                    upload_sessions.c.device_id == device_id,
                    upload_sessions.c.path_hash == path_key(path),
                    upload_sessions.c.content_hash == content_hash,
                    upload_sessions.c.size == size,
                    upload_sessions.c.status == UploadStatus.PENDING.value,
                )
                .order_by(upload_sessions.c.created_at.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        return _session(row, self._received(row["id"])) if row else None

    def count_pending(self, device_id: str, *, now: datetime) -> int:
        """Live sessions: pending and not yet past their expiry (even if unswept)."""
        return int(
            self._conn.execute(
                sa.select(sa.func.count())
                .select_from(upload_sessions)
                .where(
                    upload_sessions.c.device_id == device_id,
                    upload_sessions.c.status == UploadStatus.PENDING.value,
                    upload_sessions.c.expires_at > now,
                )
            ).scalar_one()
        )

    def insert(self, session: UploadSession) -> None:
        self._conn.execute(
            upload_sessions.insert().values(
                id=session.id,
                user_id=session.user_id,
                device_id=session.device_id,
                path=session.path,
                path_hash=path_key(session.path),
                size=session.size,
                content_hash=session.content_hash,
                chunk_size=session.chunk_size,
                chunk_count=session.chunk_count,
                status=session.status.value,
                deduplicated=session.deduplicated,
                mtime=session.mtime,
                metadata=session.metadata,
                base_revision=session.base_revision,
                created_at=session.created_at,
                updated_at=session.updated_at,
                expires_at=session.expires_at,
                result=session.result,
            )
        )

    def touch(self, session_id: str, *, now: datetime, expires_at: datetime) -> None:
        self._conn.execute(
            upload_sessions.update()
            .where(upload_sessions.c.id == session_id)
            .values(updated_at=now, expires_at=expires_at)
        )

    def set_status(
        self,
        session: UploadSession,
        status: UploadStatus,
        *,
        now: datetime,
        result: dict[str, Any] | None = None,
    ) -> UploadSession:
        self._conn.execute(
            upload_sessions.update()
            .where(upload_sessions.c.id == session.id)
            .values(status=status.value, updated_at=now, result=result)
        )
        if status is not UploadStatus.PENDING and status is not UploadStatus.COMPLETED:
            self._conn.execute(
                upload_chunks.delete().where(upload_chunks.c.session_id == session.id)
            )
            return replace(session, status=status, updated_at=now, result=result, received=())
        return replace(session, status=status, updated_at=now, result=result)

    # -- chunks ----------------------------------------------------------

    def chunk(self, session_id: str, index: int) -> ChunkRecord | None:
        row = (
            self._conn.execute(
                sa.select(upload_chunks).where(
                    upload_chunks.c.session_id == session_id,
                    upload_chunks.c.chunk_index == index,
                )
            )
            .mappings()
            .first()
        )
        return ChunkRecord(row) if row else None

    def chunks(self, session_id: str) -> list[ChunkRecord]:
        rows = self._conn.execute(
            sa.select(upload_chunks)
            .where(upload_chunks.c.session_id == session_id)
            .order_by(upload_chunks.c.chunk_index)
        ).mappings()
        return [ChunkRecord(r) for r in rows]

    def claim_chunk(
        self, session_id: str, index: int, *, claim: str, size: int, now: datetime
    ) -> None:
        """Mark a chunk as being written by one request (replacing a stale claim)."""
        self._conn.execute(
            upload_chunks.delete().where(
                upload_chunks.c.session_id == session_id,
                upload_chunks.c.chunk_index == index,
                upload_chunks.c.state == WRITING,
            )
        )
        self._conn.execute(
            upload_chunks.insert().values(
                session_id=session_id,
                chunk_index=index,
                state=WRITING,
                claim=claim,
                claimed_at=now,
                size=size,
                block_digests=None,
            )
        )

    def refresh_claim(self, session_id: str, index: int, *, claim: str, now: datetime) -> None:
        self._conn.execute(
            upload_chunks.update()
            .where(
                upload_chunks.c.session_id == session_id,
                upload_chunks.c.chunk_index == index,
                upload_chunks.c.claim == claim,
            )
            .values(claimed_at=now)
        )

    def drop_claims(self) -> None:
        self._conn.execute(upload_chunks.delete().where(upload_chunks.c.state == WRITING))

    def release_claim(self, session_id: str, index: int, *, claim: str) -> None:
        self._conn.execute(
            upload_chunks.delete().where(
                upload_chunks.c.session_id == session_id,
                upload_chunks.c.chunk_index == index,
                upload_chunks.c.state == WRITING,
                upload_chunks.c.claim == claim,
            )
        )

    def mark_received(
        self, session_id: str, index: int, *, claim: str | None, size: int, block_digests: str
    ) -> bool:
        """Record a durable chunk; False when the claim was lost to another request."""
        if claim is None:
            self._conn.execute(
                upload_chunks.insert().values(
                    session_id=session_id,
                    chunk_index=index,
                    state=RECEIVED,
                    claim=None,
                    claimed_at=None,
                    size=size,
                    block_digests=block_digests,
                )
            )
            return True
        result = self._conn.execute(
            upload_chunks.update()
            .where(
                upload_chunks.c.session_id == session_id,
                upload_chunks.c.chunk_index == index,
                upload_chunks.c.state == WRITING,
                upload_chunks.c.claim == claim,
            )
            .values(state=RECEIVED, block_digests=block_digests, claim=None)
        )
        return result.rowcount == 1

    # -- housekeeping ----------------------------------------------------

    def expired_pending(self, *, now: datetime, limit: int) -> list[UploadSession]:
        rows = self._conn.execute(
            sa.select(upload_sessions)
            .where(
                upload_sessions.c.status == UploadStatus.PENDING.value,
                upload_sessions.c.expires_at < now,
            )
            .limit(limit)
        ).mappings()
        return [_session(r, ()) for r in rows]

    def pending_ids(self) -> set[str]:
        rows = self._conn.execute(
            sa.select(upload_sessions.c.id).where(
                upload_sessions.c.status == UploadStatus.PENDING.value
            )
        )
        return {str(r[0]) for r in rows}

    def cancel_for_device(self, device_id: str, *, now: datetime) -> list[str]:
        ids = [
            str(r[0])
            for r in self._conn.execute(
                sa.select(upload_sessions.c.id).where(
                    upload_sessions.c.device_id == device_id,
                    upload_sessions.c.status == UploadStatus.PENDING.value,
                )
            )
        ]
        if ids:
            self._conn.execute(
                upload_sessions.update()
                .where(upload_sessions.c.id.in_(ids))
                .values(status=UploadStatus.CANCELLED.value, updated_at=now)
            )
            self._conn.execute(upload_chunks.delete().where(upload_chunks.c.session_id.in_(ids)))
        return ids

    def purge_finished(self, *, before: datetime) -> int:
        result = self._conn.execute(
            upload_sessions.delete().where(
                upload_sessions.c.status != UploadStatus.PENDING.value,
                upload_sessions.c.updated_at < before,
            )
        )
        return result.rowcount

    def pending_bytes(self, user_id: str, *, now: datetime) -> int:
        value = self._conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(upload_sessions.c.size), 0)).where(
                upload_sessions.c.user_id == user_id,
                upload_sessions.c.status == UploadStatus.PENDING.value,
                upload_sessions.c.expires_at > now,
                upload_sessions.c.deduplicated == sa.false(),
            )
        ).scalar_one()
        return int(value)
