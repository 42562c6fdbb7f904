"""The declared schema. Migrations must produce exactly this (tests/migrations)."""

from __future__ import annotations

import sqlalchemy as sa

from shelfsync.server.storage.types import UTCDateTime

__all__ = [
    "conflicts",
    "content_blocks",
    "content_data",
    "contents",
    "devices",
    "items",
    "libraries",
    "login_throttle",
    "metadata",
    "refresh_tokens",
    "revisions",
    "upload_chunks",
    "upload_sessions",
    "user_contents",
    "users",
]

# A naming convention makes constraint names identical on both databases, so
# Alembic can alter them later (SQLite batch mode needs names).
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    # Bumped by a password change: every older access or refresh token dies.
    sa.Column("generation", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("device_type", sa.String(16), nullable=False),
    sa.Column("os", sa.String(100)),
    sa.Column("client_version", sa.String(100)),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    # SHA-256 of the device token: the token itself is never stored.
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("token_generation", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime),
    sa.Column("last_sync_at", UTCDateTime),
    sa.Column("acked_seq", sa.BigInteger),
    sa.Column("sync_filter", sa.JSON, nullable=False),
    sa.Column("conflict_policy", sa.String(16), nullable=False, server_default="manual"),
    # Soft delete: items and history keep naming the device that made them.
    sa.Column("deleted_at", UTCDateTime),
    sa.Index("ix_devices_user_id", "user_id"),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("family_id", sa.String(36), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_generation", sa.Integer, nullable=False),
    sa.Column("issued_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("used_at", UTCDateTime),
    sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_refresh_tokens_family_id", "family_id"),
    sa.Index("ix_refresh_tokens_user_id", "user_id"),
)

# Failed-login counters live in the database so every server process sees them.
login_throttle = sa.Table(
    "login_throttle",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("window_started_at", UTCDateTime, nullable=False),
    sa.Column("blocked_until", UTCDateTime),
)

# One library per user. `seq` is the feed counter, bumped inside every writing
# transaction while this row is locked, so sequence order equals commit order.
libraries = sa.Table(
    "libraries",
    metadata,
    sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
    # Highest seq of a purged tombstone: older cursors answer 410.
    sa.Column("purged_seq", sa.BigInteger, nullable=False, server_default="0"),
)

# The current state of every item, tombstones included. Updating a row in place
# with a new seq is what makes the feed coalesced.
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("path", sa.Text, nullable=False),
    # SHA-256 of the path: paths may be 4 KiB, longer than a btree entry allows.
    sa.Column("path_hash", sa.String(64), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime", UTCDateTime),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("device_id", sa.String(36)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("op", sa.String(8), nullable=False),
    sa.Column("from_path", sa.Text),
    sa.Index("ix_items_user_seq", "user_id", "seq", unique=True),
    # A path's items: its live one (at most one) here, its tombstones below. Two
    # partial indexes, not one over every item: each new item is then entered in
    # one index keyed by a random hash, not two (issue 7, migration 0004).
    sa.Index(
        "uq_items_live_path",
        "user_id",
        "path_hash",
        unique=True,
        sqlite_where=sa.text("deleted = 0"),
        postgresql_where=sa.text("NOT deleted"),
    ),
    sa.Index(
        "ix_items_tombstone_path",
        "user_id",
        "path_hash",
        sqlite_where=sa.text("deleted = 1"),
        postgresql_where=sa.text("deleted"),
    ),
)

# Every accepted change of every item, kept for the retention period.
revisions = sa.Table(
    "revisions",
    metadata,
    sa.Column(
        "item_id", sa.String(36), sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("revision", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.String(36), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("path_hash", sa.String(64), nullable=False),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime", UTCDateTime),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("device_id", sa.String(36)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("op", sa.String(8), nullable=False),
    sa.Column("from_path", sa.Text),
    # SHA-256 of from_path, on moves only: finds the items that left a path.
    sa.Column("from_path_hash", sa.String(64)),
    # Revisions are found by item (the primary key), by content (garbage
    # collection), by user in seq order (retention), and by path through the
    # items at that path plus the items moved away from it (ItemRepository.
    # revision_at_path). No index over every revision is keyed by its path:
    # each new revision would be entered on a random page of it (issue 7).
    sa.Index("ix_revisions_content_hash", "content_hash"),
    sa.Index("ix_revisions_user_seq", "user_id", "seq"),
    sa.Index(
        "ix_revisions_moved_from",
        "user_id",
        "from_path_hash",
        sqlite_where=sa.text("from_path_hash IS NOT NULL"),
        postgresql_where=sa.text("from_path_hash IS NOT NULL"),
    ),
)

conflicts = sa.Table(
    "conflicts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("device_id", sa.String(36), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("path_hash", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detected_at", UTCDateTime, nullable=False),
    sa.Column("base_revision", sa.Integer),
    sa.Column("server_item_id", sa.String(36)),
    sa.Column("server_revision", sa.Integer),
    sa.Column("server_content_hash", sa.String(64)),
    sa.Column("server_size", sa.BigInteger),
    sa.Column("server_mtime", UTCDateTime),
    sa.Column("server_deleted", sa.Boolean, nullable=False),
    sa.Column("server_device_id", sa.String(36)),
    sa.Column("client_op", sa.String(8), nullable=False),
    sa.Column("client_content_hash", sa.String(64)),
    sa.Column("client_size", sa.BigInteger),
    sa.Column("client_mtime", UTCDateTime),
    sa.Column("client_metadata", sa.JSON, nullable=False),
    sa.Column("client_deleted", sa.Boolean, nullable=False),
    sa.Column("client_from_path", sa.Text),
    sa.Column("suggested_path", sa.Text, nullable=False),
    sa.Column("resolution", sa.String(16)),
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("result_path", sa.Text),
    sa.Index("ix_conflicts_user_status", "user_id", "status"),
    sa.Index("ix_conflicts_client_content", "client_content_hash"),
    sa.Index(
        "uq_conflicts_open_device_path",
        "device_id",
        "path_hash",
        unique=True,
        sqlite_where=sa.text("status = 'unresolved'"),
        postgresql_where=sa.text("status = 'unresolved'"),
    ),
)

# Content the server stores, once per distinct content hash.
contents = sa.Table(
    "contents",
    metadata,
    sa.Column("content_hash", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Which user holds which content: dedupe never crosses users (protocol section 7).
user_contents = sa.Table(
    "user_contents",
    metadata,
    sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column(
        "content_hash",
        sa.String(64),
        sa.ForeignKey("contents.content_hash"),
        primary_key=True,
    ),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Digests of every 4 MiB block of stored content: lets an upload of an edited
# file reuse the blocks the server already has (protocol section 9).
content_blocks = sa.Table(
    "content_blocks",
    metadata,
    sa.Column(
        "content_hash",
        sa.String(64),
        sa.ForeignKey("contents.content_hash", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("block_index", sa.Integer, primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Index("ix_content_blocks_digest", "digest"),
)

# The bytes of content stored in the database rather than as a file (small
# content, up to the server's inline limit): a content is inline exactly when
# it has a row here (storage/blobs.py has the rest). Migration 0005; on
# PostgreSQL the column's storage is EXTERNAL (no compression attempt).
content_data = sa.Table(
    "content_data",
    metadata,
    sa.Column(
        "content_hash",
        sa.String(64),
        sa.ForeignKey("contents.content_hash", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

upload_sessions = sa.Table(
    "upload_sessions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("device_id", sa.String(36), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("path_hash", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("chunk_size", sa.BigInteger, nullable=False),
    sa.Column("chunk_count", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # True when the user already held the content: no bytes travel, no file.
    sa.Column("deduplicated", sa.Boolean, nullable=False),
    sa.Column("mtime", UTCDateTime),
    sa.Column("metadata", sa.JSON),
    sa.Column("base_revision", sa.Integer),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    # The answer `complete` gave, returned again when it is called again.
    sa.Column("result", sa.JSON),
    sa.Index("ix_upload_sessions_reuse", "device_id", "path_hash", "content_hash", "status"),
    sa.Index("ix_upload_sessions_status_expiry", "status", "expires_at"),
    sa.Index("ix_upload_sessions_content", "content_hash", "status"),
    sa.Index("ix_upload_sessions_user", "user_id"),
)

upload_chunks = sa.Table(
    "upload_chunks",
    metadata,
    sa.Column(
        "session_id",
        sa.String(36),
        sa.ForeignKey("upload_sessions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("chunk_index", sa.Integer, primary_key=True),
    # "writing" while a request streams it (a claim), "received" once durable.
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("claim", sa.String(36)),
    sa.Column("claimed_at", UTCDateTime),
    sa.Column("size", sa.BigInteger, nullable=False),
    # Hex SHA-256 digests of the chunk's 4 MiB blocks, concatenated.
    sa.Column("block_digests", sa.Text),
)
