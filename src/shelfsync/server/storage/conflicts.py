"""Repository of conflicts (one unresolved per device and path)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from shelfsync.server.domain.conflicts import (
    ClientSide,
    Conflict,
    ConflictStatus,
    Resolution,
    ServerSide,
)
from shelfsync.server.domain.items import ChangeOp
from shelfsync.server.storage.items import path_key
from shelfsync.server.storage.tables import conflicts

__all__ = ["ConflictRepository"]


def _conflict(row: RowMapping) -> Conflict:
    return Conflict(
        id=row["id"],
        user_id=row["user_id"],
        device_id=row["device_id"],
        path=row["path"],
        status=ConflictStatus(row["status"]),
        detected_at=row["detected_at"],
        base_revision=row["base_revision"],
        server=ServerSide(
            item_id=row["server_item_id"],
            revision=row["server_revision"],
            content_hash=row["server_content_hash"],
            size=row["server_size"],
            mtime=row["server_mtime"],
            deleted=bool(row["server_deleted"]),
            device_id=row["server_device_id"],
        ),
        client=ClientSide(
            op=ChangeOp(row["client_op"]),
            content_hash=row["client_content_hash"],
            size=row["client_size"],
            mtime=row["client_mtime"],
            metadata=row["client_metadata"] or {},
            deleted=bool(row["client_deleted"]),
            from_path=row["client_from_path"],
        ),
        suggested_path=row["suggested_path"],
        resolution=Resolution(row["resolution"]) if row["resolution"] else None,
        resolved_at=row["resolved_at"],
        result_path=row["result_path"],
    )


def _values(c: Conflict) -> dict[str, Any]:
    return {
        "user_id": c.user_id,
        "device_id": c.device_id,
        "path": c.path,
        "path_hash": path_key(c.path),
        "status": c.status.value,
        "detected_at": c.detected_at,
        "base_revision": c.base_revision,
        "server_item_id": c.server.item_id,
        "server_revision": c.server.revision,
        "server_content_hash": c.server.content_hash,
        "server_size": c.server.size,
        "server_mtime": c.server.mtime,
        "server_deleted": c.server.deleted,
        "server_device_id": c.server.device_id,
        "client_op": c.client.op.value,
        "client_content_hash": c.client.content_hash,
        "client_size": c.client.size,
        "client_mtime": c.client.mtime,
        "client_metadata": c.client.metadata,
        "client_deleted": c.client.deleted,
        "client_from_path": c.client.from_path,
        "suggested_path": c.suggested_path,
        "resolution": c.resolution.value if c.resolution else None,
        "resolved_at": c.resolved_at,
        "result_path": c.result_path,
    }


class ConflictRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, conflict_id: str) -> Conflict | None:
        row = (
            self._conn.execute(sa.select(conflicts).where(conflicts.c.id == conflict_id))
            .mappings()
            .first()
        )
        return _conflict(row) if row else None

    def open_for(self, device_id: str, path: str) -> Conflict | None:
        row = (
            self._conn.execute(
                sa.select(conflicts).where(
                    conflicts.c.device_id == device_id,
                    conflicts.c.path_hash == path_key(path),
                    conflicts.c.status == ConflictStatus.UNRESOLVED.value,
                )
            )
            .mappings()
            .first()
        )
        return _conflict(row) if row else None

    def latest_for(self, device_id: str, path: str) -> Conflict | None:
        """The device's most recent conflict at `path`, resolved or not."""
        row = (
            self._conn.execute(
                sa.select(conflicts)
                .where(
                    conflicts.c.device_id == device_id,
                    conflicts.c.path_hash == path_key(path),
                )
                .order_by(conflicts.c.detected_at.desc(), conflicts.c.id)
                .limit(1)
            )
            .mappings()
            .first()
        )
        return _conflict(row) if row else None

    def unresolved(self, user_id: str) -> list[Conflict]:
        rows = self._conn.execute(
            sa.select(conflicts)
            .where(
                conflicts.c.user_id == user_id,
                conflicts.c.status == ConflictStatus.UNRESOLVED.value,
            )
            .order_by(conflicts.c.detected_at, conflicts.c.id)
        ).mappings()
        return [_conflict(r) for r in rows]

    def insert(self, conflict: Conflict) -> None:
        self._conn.execute(conflicts.insert().values(id=conflict.id, **_values(conflict)))

    def replace(self, conflict: Conflict) -> None:
        self._conn.execute(
            conflicts.update().where(conflicts.c.id == conflict.id).values(**_values(conflict))
        )

    def purge_resolved(self, user_id: str, *, resolved_before: Any) -> int:
        result = self._conn.execute(
            conflicts.delete().where(
                conflicts.c.user_id == user_id,
                conflicts.c.status == ConflictStatus.RESOLVED.value,
                conflicts.c.resolved_at < resolved_before,
            )
        )
        return result.rowcount
