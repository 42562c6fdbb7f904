"""Entities to wire models and back: the only place that knows both shapes."""

from __future__ import annotations

from shelfsync.protocol import devices as wire
from shelfsync.server.domain.accounts import ConflictPolicy, DeviceType, SyncFilter
from shelfsync.server.services.devices import DeviceStatus

__all__ = [
    "conflict_policy_in",
    "conflict_policy_of",
    "device_out",
    "device_type_in",
    "sync_filter_in",
]


def sync_filter_in(model: wire.SyncFilter | None) -> SyncFilter | None:
    if model is None:
        return None
    return SyncFilter(include=tuple(model.include), exclude=tuple(model.exclude))


def device_type_in(name: wire.DeviceTypeName) -> DeviceType:
    return DeviceType(name)


def conflict_policy_of(name: wire.ConflictPolicyName) -> ConflictPolicy:
    return ConflictPolicy(name)


def conflict_policy_in(name: wire.ConflictPolicyName | None) -> ConflictPolicy | None:
    return None if name is None else ConflictPolicy(name)


def device_out(status: DeviceStatus, *, acked_cursor: str | None) -> wire.Device:
    d = status.device
    return wire.Device(
        id=d.id,
        name=d.name,
        device_type=d.device_type.value,
        os=d.os,
        client_version=d.client_version,
        enabled=d.enabled,
        created_at=d.created_at,
        last_seen_at=d.last_seen_at,
        last_sync_at=d.last_sync_at,
        acked_cursor=acked_cursor,
        pending_changes=status.pending_changes,
        sync_filter=wire.SyncFilter(
            include=list(d.sync_filter.include), exclude=list(d.sync_filter.exclude)
        ),
        conflict_policy=d.conflict_policy.value,
    )
