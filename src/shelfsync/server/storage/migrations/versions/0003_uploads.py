"""Upload sessions, their chunks, and the block index of stored content.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from shelfsync.server.storage.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "content_blocks",
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("block_index", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["content_hash"],
            ["contents.content_hash"],
            name=op.f("fk_content_blocks_content_hash_contents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("content_hash", "block_index", name=op.f("pk_content_blocks")),
    )
    op.create_index("ix_content_blocks_digest", "content_blocks", ["digest"], unique=False)
    op.create_table(
        "upload_sessions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("path_hash", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("chunk_size", sa.BigInteger(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("deduplicated", sa.Boolean(), nullable=False),
        sa.Column("mtime", UTCDateTime(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("base_revision", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_upload_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upload_sessions")),
    )
    op.create_index(
        "ix_upload_sessions_content", "upload_sessions", ["content_hash", "status"], unique=False
    )
    op.create_index(
        "ix_upload_sessions_reuse",
        "upload_sessions",
        ["device_id", "path_hash", "content_hash", "status"],
        unique=False,
    )
    op.create_index(
        "ix_upload_sessions_status_expiry",
        "upload_sessions",
        ["status", "expires_at"],
        unique=False,
    )
    op.create_index("ix_upload_sessions_user", "upload_sessions", ["user_id"], unique=False)
    op.create_table(
        "upload_chunks",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("claim", sa.String(length=36), nullable=True),
        sa.Column("claimed_at", UTCDateTime(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("block_digests", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["upload_sessions.id"],
            name=op.f("fk_upload_chunks_session_id_upload_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "chunk_index", name=op.f("pk_upload_chunks")),
    )


def downgrade() -> None:
    op.drop_table("upload_chunks")
    op.drop_index("ix_upload_sessions_user", table_name="upload_sessions")
    op.drop_index("ix_upload_sessions_status_expiry", table_name="upload_sessions")
    op.drop_index("ix_upload_sessions_reuse", table_name="upload_sessions")
    op.drop_index("ix_upload_sessions_content", table_name="upload_sessions")
    op.drop_table("upload_sessions")
    op.drop_index("ix_content_blocks_digest", table_name="content_blocks")
    op.drop_table("content_blocks")
