"""`Database.write(durable=False)`: its commit does not wait for the disk, and it
never leaves that setting behind for the durable writes after it."""

from __future__ import annotations

import sqlalchemy as sa

from shelfsync.server.storage.engine import Database


def _level(tx: sa.Connection, sqlite: bool) -> str:
    if sqlite:
        # 1 = NORMAL, 2 = FULL
        return {1: "lazy", 2: "durable"}[int(tx.exec_driver_sql("PRAGMA synchronous").scalar_one())]
    value = tx.exec_driver_sql("SHOW synchronous_commit").scalar_one()
    return "lazy" if value == "off" else "durable"


def test_a_lazy_write_commits_and_leaves_durable_writes_durable(db: Database) -> None:
    one = Database(db.url, pool_size=1)  # every transaction on the same connection
    try:
        seen = []
        for durable in (True, False, True, False, False, True):
            with one.write(durable=durable) as tx:
                seen.append(_level(tx, one.is_sqlite))
                tx.exec_driver_sql("SELECT 1")
        assert seen == ["durable", "lazy", "durable", "lazy", "lazy", "durable"]
        with one.write() as tx:
            assert _level(tx, one.is_sqlite) == "durable"
    finally:
        one.dispose()
