"""Fewer indexes keyed by a random hash on items and revisions (issue 7).

Report ingest is bound by the databases' index writes: on a large library each
index keyed by a random SHA-256 costs about one page written per new row.

- items: `ix_items_user_path` (user_id, path_hash) over every item duplicated,
  for live items, the partial unique index `uq_items_live_path`. It becomes
  `ix_items_tombstone_path`, over tombstones only; lookups by path ask the live
  index, then the tombstone index.
- revisions: `ix_revisions_user_path` (user_id, path_hash, revision) served
  only "revision r that lived at path p" (a move's base). That is now answered
  from the items at p plus the items moved away from p: moves record
  `from_path_hash` (backfilled here), in the partial `ix_revisions_moved_from`.
  Retention's per-user scan gets `ix_revisions_user_seq`, which new revisions
  enter at its end.

Revision ID: 0004
Revises: 0003
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BACKFILL_CHUNK = 1000


def _backfill_from_path_hash() -> None:
    conn = op.get_bind()
    revisions = sa.table(
        "revisions",
        sa.column("item_id", sa.String),
        sa.column("revision", sa.Integer),
        sa.column("from_path", sa.Text),
        sa.column("from_path_hash", sa.String),
    )
    moved = conn.execute(
        sa.select(revisions.c.item_id, revisions.c.revision, revisions.c.from_path).where(
            revisions.c.from_path.is_not(None)
        )
    ).all()
    update = (
        revisions.update()
        .where(
            revisions.c.item_id == sa.bindparam("b_item_id"),
            revisions.c.revision == sa.bindparam("b_revision"),
        )
        .values(from_path_hash=sa.bindparam("b_hash"))
    )
    for start in range(0, len(moved), _BACKFILL_CHUNK):
        conn.execute(
            update,
            [
                {
                    "b_item_id": item_id,
                    "b_revision": number,
                    # storage.items.path_key; a migration keeps its own copy.
                    "b_hash": hashlib.sha256(from_path.encode("utf-8")).hexdigest(),
                }
                for item_id, number, from_path in moved[start : start + _BACKFILL_CHUNK]
            ],
        )


def upgrade() -> None:
    op.create_index(
        "ix_items_tombstone_path",
        "items",
        ["user_id", "path_hash"],
        unique=False,
        sqlite_where=sa.text("deleted = 1"),
        postgresql_where=sa.text("deleted"),
    )
    op.drop_index("ix_items_user_path", table_name="items")

    op.add_column("revisions", sa.Column("from_path_hash", sa.String(length=64), nullable=True))
    _backfill_from_path_hash()
    op.create_index(
        "ix_revisions_moved_from",
        "revisions",
        ["user_id", "from_path_hash"],
        unique=False,
        sqlite_where=sa.text("from_path_hash IS NOT NULL"),
        postgresql_where=sa.text("from_path_hash IS NOT NULL"),
    )
    op.create_index("ix_revisions_user_seq", "revisions", ["user_id", "seq"], unique=False)
    op.drop_index("ix_revisions_user_path", table_name="revisions")


def downgrade() -> None:
    op.create_index(
        "ix_revisions_user_path", "revisions", ["user_id", "path_hash", "revision"], unique=False
    )
    op.drop_index("ix_revisions_user_seq", table_name="revisions")
    op.drop_index(
        "ix_revisions_moved_from",
        table_name="revisions",
        sqlite_where=sa.text("from_path_hash IS NOT NULL"),
        postgresql_where=sa.text("from_path_hash IS NOT NULL"),
    )
    with op.batch_alter_table("revisions") as batch:
        batch.drop_column("from_path_hash")
    op.create_index("ix_items_user_path", "items", ["user_id", "path_hash"], unique=False)
    op.drop_index(
        "ix_items_tombstone_path",
        table_name="items",
        sqlite_where=sa.text("deleted = 1"),
        postgresql_where=sa.text("deleted"),
    )
