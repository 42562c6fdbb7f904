"""The download hot path's one query: what authenticating a token needs to know
about its user and device, and the live item at a path, in one statement.

AuthService.authenticate reads the whole user and device rows (two statements)
and DownloadService.resolve the item (a third); a sync client downloading many
ranges pays for all three on every request, and SQLAlchemy's cost per statement
is several times the database's. This reads the same facts in one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shelfsync.server.domain.items import Item
from shelfsync.server.storage.items import ITEM_COLUMNS, item_from_row, path_key
from shelfsync.server.storage.tables import devices, items, users

__all__ = ["AccessRead", "DeviceAccess", "read_access"]


@dataclass(frozen=True, slots=True)
class DeviceAccess:
    """What authenticating needs of a (not deleted) device row."""

    id: str
    user_id: str
    enabled: bool
    token_generation: int
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class AccessRead:
    user_generation: int | None  # None: no such user
    device: DeviceAccess | None  # None: no device asked for, or none (live) with that id
    item: Item | None  # the live item at the path, if any (None without a path)


_DEVICE_COLUMNS = (
    devices.c.id,
    devices.c.user_id,
    devices.c.enabled,
    devices.c.token_generation,
    devices.c.last_seen_at,
)
# One row (users by primary key; devices by primary key; at most one live item
# per path, uq_items_live_path), or none when the user does not exist.
_READ = (
    sa.select(users.c.generation, *_DEVICE_COLUMNS, *ITEM_COLUMNS)
    .select_from(
        users.outerjoin(
            devices,
            sa.and_(devices.c.id == sa.bindparam("device_id"), devices.c.deleted_at.is_(None)),
        ).outerjoin(
            items,
            sa.and_(
                items.c.user_id == users.c.id,
                items.c.path_hash == sa.bindparam("path_hash"),
                items.c.deleted == sa.false(),
            ),
        )
    )
    .where(users.c.id == sa.bindparam("user_id"))
)
_ITEM_AT = 1 + len(_DEVICE_COLUMNS)


def read_access(
    conn: Connection, *, user_id: str, device_id: str | None, path: str | None
) -> AccessRead:
    """The user's generation, the device `device_id` and the live item at the
    (normalized) `path`, in one statement; None asks for no device or item."""
    row = conn.execute(
        _READ,
        {
            "user_id": user_id,
            "device_id": device_id,
            "path_hash": None if path is None else path_key(path),
        },
    ).first()
    if row is None:
        return AccessRead(None, None, None)
    device = None
    if row[1] is not None:
        device = DeviceAccess(row[1], row[2], bool(row[3]), row[4], row[5])
    item = item_from_row(row[_ITEM_AT:]) if row[_ITEM_AT] is not None else None
    return AccessRead(row[0], device, item)
