"""Device bodies (protocol section 5)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from shelfsync.protocol.common import Timestamp

__all__ = [
    "ConflictPolicyName",
    "Device",
    "DeviceCreate",
    "DeviceList",
    "DeviceRegistered",
    "DeviceToken",
    "DeviceTypeName",
    "DeviceUpdate",
    "SyncFilter",
]

DeviceTypeName = Literal["desktop", "laptop", "mobile", "tablet", "server", "browser", "other"]
ConflictPolicyName = Literal["manual", "keep_both"]

Glob = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class SyncFilter(BaseModel):
    """Selective sync: the device's feed carries only paths matching these globs."""

    include: list[Glob] = Field(default_factory=list, max_length=200)
    exclude: list[Glob] = Field(default_factory=list, max_length=200)


class DeviceCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    device_type: DeviceTypeName = "other"
    os: str | None = Field(default=None, max_length=100)
    client_version: str | None = Field(default=None, max_length=100)
    sync_filter: SyncFilter | None = None
    conflict_policy: ConflictPolicyName = "manual"


class DeviceUpdate(BaseModel):
    """Any subset of the fields; those left out keep their value."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    enabled: bool | None = None
    os: str | None = Field(default=None, max_length=100)
    client_version: str | None = Field(default=None, max_length=100)
    sync_filter: SyncFilter | None = None
    conflict_policy: ConflictPolicyName | None = None


class Device(BaseModel):
    id: str
    name: str
    device_type: DeviceTypeName
    os: str | None
    client_version: str | None
    enabled: bool
    created_at: Timestamp
    last_seen_at: Timestamp | None
    last_sync_at: Timestamp | None
    acked_cursor: str | None = Field(description="The last cursor this device acknowledged.")
    pending_changes: int = Field(description="Changes after its acked cursor.")
    sync_filter: SyncFilter
    conflict_policy: ConflictPolicyName


class DeviceRegistered(BaseModel):
    device: Device
    token: str = Field(description="The device token, shown only here and on rotation.")


class DeviceList(BaseModel):
    devices: list[Device]


class DeviceToken(BaseModel):
    device_id: str
    token: str
