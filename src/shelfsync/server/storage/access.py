"""The download hot path's one query: what authenticating a token needs to know
about its user and device, and the live item at a path, in one statement.

AuthService.authenticate reads the whole user and device rows (two statements)
and DownloadService.resolve the item (a third); a sync client downloading many
ranges pays for all three on every request, and SQLAlchemy's cost per statement
is several times the database's. This reads the same facts in one, and the
item's content bytes too when that content is stored inline (small content,
storage/contents.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shelfsync.server.domain.items import Item
from shelfsync.server.storage.contents import MAX_INLINE_BYTES
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.items import ITEM_COLUMNS, item_from_row, path_key
from shelfsync.server.storage.tables import content_data, devices, items, users

__all__ = ["AccessRead", "DeviceAccess", "read_access", "read_access_nowait"]


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
    data: bytes | None = None  # the item's content bytes, when they are stored inline


_DEVICE_COLUMNS = (
    devices.c.id,
    devices.c.user_id,
    devices.c.enabled,
    devices.c.token_generation,
    devices.c.last_seen_at,
)
# One row (users by primary key; devices by primary key; at most one live item
# per path, uq_items_live_path; at most one content_data row per content, only
# looked for when the content is small enough to be inline), or none when the
# user does not exist.
_READ = (
    sa.select(users.c.generation, *_DEVICE_COLUMNS, *ITEM_COLUMNS, content_data.c.data)
    .select_from(
        users.outerjoin(
            devices,
            sa.and_(devices.c.id == sa.bindparam("device_id"), devices.c.deleted_at.is_(None)),
        )
        .outerjoin(
            items,
            sa.and_(
                items.c.user_id == users.c.id,
                items.c.path_hash == sa.bindparam("path_hash"),
                items.c.deleted == sa.false(),
            ),
        )
        .outerjoin(
            content_data,
            sa.and_(
                content_data.c.content_hash == items.c.content_hash,
                items.c.size > 0,
                items.c.size <= MAX_INLINE_BYTES,
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
    return _access_read(conn.execute(_READ, _params(user_id, device_id, path)).first())


def read_access_nowait(
    db: Database, *, user_id: str, device_id: str | None, path: str | None
) -> AccessRead:
    """`read_access` for an event loop thread (Database.first_nowait): the same
    answer, or WouldBlock instead of any wait."""
    return _access_read(db.first_nowait(_READ, _params(user_id, device_id, path)))


def _params(user_id: str, device_id: str | None, path: str | None) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "device_id": device_id,
        "path_hash": None if path is None else path_key(path),
    }


def _access_read(row: Sequence[Any] | None) -> AccessRead:
    if row is None:
        return AccessRead(None, None, None)
    device = None
    if row[1] is not None:
        device = DeviceAccess(row[1], row[2], bool(row[3]), row[4], row[5])
    item = item_from_row(row[_ITEM_AT:-1]) if row[_ITEM_AT] is not None else None
    data = row[-1]
    return AccessRead(row[0], device, item, None if data is None else bytes(data))
