"""Libraries, items, revisions, conflicts and the content registry.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from shelfsync.server.storage.types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contents",
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("content_hash", name=op.f("pk_contents")),
    )
    op.create_table(
        "conflicts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("path_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detected_at", UTCDateTime(), nullable=False),
        sa.Column("base_revision", sa.Integer(), nullable=True),
        sa.Column("server_item_id", sa.String(length=36), nullable=True),
        sa.Column("server_revision", sa.Integer(), nullable=True),
        sa.Column("server_content_hash", sa.String(length=64), nullable=True),
        sa.Column("server_size", sa.BigInteger(), nullable=True),
        sa.Column("server_mtime", UTCDateTime(), nullable=True),
        sa.Column("server_deleted", sa.Boolean(), nullable=False),
        sa.Column("server_device_id", sa.String(length=36), nullable=True),
        sa.Column("client_op", sa.String(length=8), nullable=False),
        sa.Column("client_content_hash", sa.String(length=64), nullable=True),
        sa.Column("client_size", sa.BigInteger(), nullable=True),
        sa.Column("client_mtime", UTCDateTime(), nullable=True),
        sa.Column("client_metadata", sa.JSON(), nullable=False),
        sa.Column("client_deleted", sa.Boolean(), nullable=False),
        sa.Column("client_from_path", sa.Text(), nullable=True),
        sa.Column("suggested_path", sa.Text(), nullable=False),
        sa.Column("resolution", sa.String(length=16), nullable=True),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("result_path", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_conflicts_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conflicts")),
    )
    op.create_index("ix_conflicts_user_status", "conflicts", ["user_id", "status"], unique=False)
    op.create_index(
        "ix_conflicts_client_content", "conflicts", ["client_content_hash"], unique=False
    )
    op.create_index(
        "uq_conflicts_open_device_path",
        "conflicts",
        ["device_id", "path_hash"],
        unique=True,
        sqlite_where=sa.text("status = 'unresolved'"),
        postgresql_where=sa.text("status = 'unresolved'"),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("path_hash", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime", UTCDateTime(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("from_path", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_items_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
    )
    op.create_index("ix_items_user_path", "items", ["user_id", "path_hash"], unique=False)
    op.create_index("ix_items_user_seq", "items", ["user_id", "seq"], unique=True)
    op.create_index(
        "uq_items_live_path",
        "items",
        ["user_id", "path_hash"],
        unique=True,
        sqlite_where=sa.text("deleted = 0"),
        postgresql_where=sa.text("NOT deleted"),
    )
    op.create_table(
        "libraries",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("purged_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_libraries_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_libraries")),
    )
    # Every existing user gets an empty library.
    op.execute("INSERT INTO libraries (user_id, seq, purged_seq) SELECT id, 0, 0 FROM users")
    op.create_table(
        "user_contents",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["content_hash"],
            ["contents.content_hash"],
            name=op.f("fk_user_contents_content_hash_contents"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_contents_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "content_hash", name=op.f("pk_user_contents")),
    )
    op.create_table(
        "revisions",
        sa.Column("item_id", sa.String(length=36), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("path_hash", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime", UTCDateTime(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("from_path", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_revisions_item_id_items"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("item_id", "revision", name=op.f("pk_revisions")),
    )
    op.create_index("ix_revisions_content_hash", "revisions", ["content_hash"], unique=False)
    op.create_index(
        "ix_revisions_user_path", "revisions", ["user_id", "path_hash", "revision"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_revisions_user_path", table_name="revisions")
    op.drop_index("ix_revisions_content_hash", table_name="revisions")
    op.drop_table("revisions")
    op.drop_table("user_contents")
    op.drop_table("libraries")
    op.drop_index(
        "uq_items_live_path",
        table_name="items",
        sqlite_where=sa.text("deleted = 0"),
        postgresql_where=sa.text("NOT deleted"),
    )
    op.drop_index("ix_items_user_seq", table_name="items")
    op.drop_index("ix_items_user_path", table_name="items")
    op.drop_table("items")
    op.drop_index(
        "uq_conflicts_open_device_path",
        table_name="conflicts",
        sqlite_where=sa.text("status = 'unresolved'"),
        postgresql_where=sa.text("status = 'unresolved'"),
    )
    op.drop_index("ix_conflicts_user_status", table_name="conflicts")
    op.drop_index("ix_conflicts_client_content", table_name="conflicts")
    op.drop_table("conflicts")
    op.drop_table("contents")
