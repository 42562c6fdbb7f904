"""Repository of failed-login counters, shared by every server process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from shelfsync.server.storage.tables import login_throttle

__all__ = ["ThrottleRepository", "ThrottleState"]


@dataclass(frozen=True, slots=True)
class ThrottleState:
    failures: int
    window_started_at: datetime
    blocked_until: datetime | None


class ThrottleRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, key: str) -> ThrottleState | None:
        row = (
            self._conn.execute(sa.select(login_throttle).where(login_throttle.c.key == key))
            .mappings()
            .first()
        )
        if row is None:
            return None
        return ThrottleState(row["failures"], row["window_started_at"], row["blocked_until"])

    def lock(self, key: str, *, now: datetime) -> ThrottleState:
        """The key's state, row-locked until commit (created empty if missing).

        Failures are counted read-modify-write; without the lock two processes
        (or threads) recording a failure at once would both count from the same
        value and one failure would be lost.
        """
        insert = pg_insert if self._conn.dialect.name == "postgresql" else sqlite_insert
        self._conn.execute(
            insert(login_throttle)
            .values(key=key, failures=0, window_started_at=now, blocked_until=None)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        row = (
            self._conn.execute(
                sa.select(login_throttle).where(login_throttle.c.key == key).with_for_update()
            )
            .mappings()
            .one()
        )
        return ThrottleState(row["failures"], row["window_started_at"], row["blocked_until"])

    def put(self, key: str, state: ThrottleState) -> None:
        values = {
            "failures": state.failures,
            "window_started_at": state.window_started_at,
            "blocked_until": state.blocked_until,
        }
        # An upsert, because two processes may record the first failure at once.
        insert = pg_insert if self._conn.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(login_throttle).values(key=key, **values)
        self._conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=values))

    def clear(self, key: str) -> None:
        self._conn.execute(login_throttle.delete().where(login_throttle.c.key == key))

    def purge_before(self, when: datetime) -> int:
        result = self._conn.execute(
            login_throttle.delete().where(
                login_throttle.c.window_started_at < when,
                sa.or_(
                    login_throttle.c.blocked_until.is_(None),
                    login_throttle.c.blocked_until < when,
                ),
            )
        )
        return result.rowcount
