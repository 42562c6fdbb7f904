"""Repository of devices (soft-deleted, so history keeps naming them)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from shelfsync.server.domain.accounts import ConflictPolicy, Device, DeviceType, SyncFilter
from shelfsync.server.storage.tables import devices

__all__ = ["DeviceRepository"]


def _filter_json(sync_filter: SyncFilter) -> dict[str, list[str]]:
    return {"include": list(sync_filter.include), "exclude": list(sync_filter.exclude)}


def _device(row: RowMapping) -> Device:
    raw: dict[str, Any] = row["sync_filter"] or {}
    return Device(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        device_type=DeviceType(row["device_type"]),
        os=row["os"],
        client_version=row["client_version"],
        enabled=bool(row["enabled"]),
        token_generation=row["token_generation"],
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
        last_sync_at=row["last_sync_at"],
        acked_seq=row["acked_seq"],
        sync_filter=SyncFilter(
            include=tuple(raw.get("include", ())), exclude=tuple(raw.get("exclude", ()))
        ),
        conflict_policy=ConflictPolicy(row["conflict_policy"]),
    )


_LIVE = devices.c.deleted_at.is_(None)
# Built once: every request with a device token runs it (see UserRepository.by_id).
_GET = sa.select(devices).where(devices.c.id == sa.bindparam("device_id"), _LIVE)


class DeviceRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, device: Device, *, token_hash: str) -> None:
        self._conn.execute(
            devices.insert().values(
                id=device.id,
                user_id=device.user_id,
                name=device.name,
                device_type=device.device_type.value,
                os=device.os,
                client_version=device.client_version,
                enabled=device.enabled,
                token_hash=token_hash,
                token_generation=device.token_generation,
                created_at=device.created_at,
                last_seen_at=device.last_seen_at,
                last_sync_at=device.last_sync_at,
                acked_seq=device.acked_seq,
                sync_filter=_filter_json(device.sync_filter),
                conflict_policy=device.conflict_policy.value,
            )
        )

    def get(self, device_id: str) -> Device | None:
        row = self._conn.execute(_GET, {"device_id": device_id}).mappings().first()
        return _device(row) if row else None

    def by_token_hash(self, token_hash: str) -> Device | None:
        row = (
            self._conn.execute(sa.select(devices).where(devices.c.token_hash == token_hash, _LIVE))
            .mappings()
            .first()
        )
        return _device(row) if row else None

    def for_user(self, user_id: str) -> list[Device]:
        rows = self._conn.execute(
            sa.select(devices)
            .where(devices.c.user_id == user_id, _LIVE)
            .order_by(devices.c.created_at, devices.c.id)
        ).mappings()
        return [_device(r) for r in rows]

    def update(self, device: Device) -> Device:
        """Store the user-editable fields of `device`."""
        self._conn.execute(
            devices.update()
            .where(devices.c.id == device.id)
            .values(
                name=device.name,
                enabled=device.enabled,
                os=device.os,
                client_version=device.client_version,
                sync_filter=_filter_json(device.sync_filter),
                conflict_policy=device.conflict_policy.value,
            )
        )
        return device

    def rotate_token(self, device: Device, *, token_hash: str) -> Device:
        generation = device.token_generation + 1
        self._conn.execute(
            devices.update()
            .where(devices.c.id == device.id)
            .values(token_hash=token_hash, token_generation=generation)
        )
        return replace(device, token_generation=generation)

    def touch(self, device_id: str, *, now: datetime) -> None:
        self._conn.execute(
            devices.update().where(devices.c.id == device_id).values(last_seen_at=now)
        )

    def mark_synced(self, device_id: str, *, now: datetime) -> None:
        self._conn.execute(
            devices.update()
            .where(devices.c.id == device_id)
            .values(last_sync_at=now, last_seen_at=now)
        )

    def ack(self, device_id: str, *, seq: int, now: datetime) -> int:
        """Raise the acked position (never lower it); returns the stored value."""
        self._conn.execute(
            devices.update()
            .where(
                devices.c.id == device_id,
                sa.or_(devices.c.acked_seq.is_(None), devices.c.acked_seq < seq),
            )
            .values(acked_seq=seq)
        )
        self._conn.execute(
            devices.update()
            .where(devices.c.id == device_id)
            .values(last_sync_at=now, last_seen_at=now)
        )
        value = self._conn.execute(
            sa.select(devices.c.acked_seq).where(devices.c.id == device_id)
        ).scalar_one()
        return int(value)

    def holders(self, user_id: str, *, seen_since: datetime) -> list[int]:
        """Acked positions of the user's devices seen since the cutoff.

        A device that never acked counts as position 0: it has acked past no
        tombstone, so it holds them all back (protocol section 6).
        """
        rows = self._conn.execute(
            sa.select(sa.func.coalesce(devices.c.acked_seq, 0)).where(
                devices.c.user_id == user_id,
                devices.c.deleted_at.is_(None),
                devices.c.last_seen_at >= seen_since,
            )
        )
        return [int(r[0]) for r in rows]

    def mark_deleted(self, device_id: str, *, now: datetime, tombstone_hash: str) -> None:
        # The token hash is replaced so the old token can never match again.
        self._conn.execute(
            devices.update()
            .where(devices.c.id == device_id)
            .values(deleted_at=now, enabled=False, token_hash=tombstone_hash)
        )
