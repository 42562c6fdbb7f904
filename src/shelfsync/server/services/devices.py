"""The device registry (protocol section 5)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from shelfsync.server.domain.accounts import (
    ConflictPolicy,
    Device,
    DeviceType,
    SyncFilter,
    validate_device_name,
)
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.errors import DeviceForbidden, DeviceNotFound
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.feed import pending_changes
from shelfsync.server.services.tokens import new_opaque_token
from shelfsync.server.storage.devices import DeviceRepository
from shelfsync.server.storage.engine import Database, Tx
from shelfsync.server.storage.uploads import UploadRepository

__all__ = ["DeviceChanges", "DeviceService", "DeviceStatus"]


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A device with what is derived from the feed: how far behind it is."""

    device: Device
    pending_changes: int


@dataclass(frozen=True, slots=True)
class DeviceChanges:
    """A partial update: None leaves a field as it is."""

    name: str | None = None
    enabled: bool | None = None
    os: str | None = None
    client_version: str | None = None
    sync_filter: SyncFilter | None = None
    conflict_policy: ConflictPolicy | None = None


class DeviceService:
    def __init__(self, *, db: Database) -> None:
        self._db = db

    def register(
        self,
        principal: Principal,
        *,
        name: str,
        device_type: DeviceType = DeviceType.OTHER,
        os: str | None = None,
        client_version: str | None = None,
        sync_filter: SyncFilter | None = None,
        conflict_policy: ConflictPolicy = ConflictPolicy.MANUAL,
    ) -> tuple[DeviceStatus, str]:
        token, digest = new_opaque_token("ssd")
        device = Device(
            id=str(uuid.uuid4()),
            user_id=principal.user_id,
            name=validate_device_name(name),
            device_type=device_type,
            os=os,
            client_version=client_version,
            enabled=True,
            token_generation=1,
            created_at=utcnow(),
            last_seen_at=None,
            last_sync_at=None,
            acked_seq=None,
            sync_filter=sync_filter or SyncFilter(),
            conflict_policy=conflict_policy,
        )
        with self._db.write() as conn:
            DeviceRepository(conn).add(device, token_hash=digest)
        return self._status(device), token

    def list(self, principal: Principal) -> list[DeviceStatus]:
        with self._db.read() as conn:
            return [
                self._status(d, conn) for d in DeviceRepository(conn).for_user(principal.user_id)
            ]

    def get(self, principal: Principal, device_id: str) -> DeviceStatus:
        with self._db.read() as conn:
            return self._status(self._owned(DeviceRepository(conn), principal, device_id), conn)

    def update(self, principal: Principal, device_id: str, changes: DeviceChanges) -> DeviceStatus:
        with self._db.write() as conn:
            repo = DeviceRepository(conn)
            device = self._owned(repo, principal, device_id)
            updated = replace(
                device,
                name=device.name if changes.name is None else validate_device_name(changes.name),
                enabled=device.enabled if changes.enabled is None else changes.enabled,
                os=device.os if changes.os is None else changes.os,
                client_version=(
                    device.client_version
                    if changes.client_version is None
                    else changes.client_version
                ),
                sync_filter=device.sync_filter
                if changes.sync_filter is None
                else changes.sync_filter,
                conflict_policy=(
                    device.conflict_policy
                    if changes.conflict_policy is None
                    else changes.conflict_policy
                ),
            )
            repo.update(updated)
        return self._status(updated)

    def delete(self, principal: Principal, device_id: str) -> None:
        _, tombstone = new_opaque_token("deleted")
        with self._db.write() as conn:
            repo = DeviceRepository(conn)
            self._owned(repo, principal, device_id)
            now = utcnow()
            repo.mark_deleted(device_id, now=now, tombstone_hash=tombstone)
            # Its upload sessions end with it; their files go with the next sweep.
            UploadRepository(conn).cancel_for_device(device_id, now=now)

    def rotate_token(self, principal: Principal, device_id: str) -> str:
        token, digest = new_opaque_token("ssd")
        with self._db.write() as conn:
            repo = DeviceRepository(conn)
            repo.rotate_token(self._owned(repo, principal, device_id), token_hash=digest)
        return token

    @staticmethod
    def _owned(repo: DeviceRepository, principal: Principal, device_id: str) -> Device:
        device = repo.get(device_id)
        if device is None:
            raise DeviceNotFound("no such device")
        if device.user_id != principal.user_id:
            raise DeviceForbidden("that device belongs to another user")
        return device

    def _status(self, device: Device, tx: Tx | None = None) -> DeviceStatus:
        if tx is None:
            with self._db.read() as read_tx:
                return self._status(device, read_tx)
        return DeviceStatus(device=device, pending_changes=pending_changes(tx, device))
