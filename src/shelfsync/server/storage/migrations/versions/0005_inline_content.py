"""Small content stored in the database (issue 7).

`content_data` holds the bytes of a content that is stored inline: one row per
content hash, beside its `contents` row (and removed with it). A content is
inline exactly when it has a row here; otherwise its bytes are the file
objects/ab/cd/<hash>. Batch uploads (and `complete` of small sessions) write
content up to the server's inline limit here, in the transaction that records
it, instead of staging, renaming and syncing a file per content.

On PostgreSQL the column's storage is EXTERNAL: values too large for the row
go to TOAST uncompressed (file content is mostly compressed already; pglz
would only cost CPU on write).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "content_data",
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["content_hash"],
            ["contents.content_hash"],
            name=op.f("fk_content_data_content_hash_contents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("content_hash", name=op.f("pk_content_data")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE content_data ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    # Inline content would be lost: refuse while there is any.
    count = op.get_bind().execute(sa.text("SELECT count(*) FROM content_data")).scalar_one()
    if count:
        raise RuntimeError(
            f"{count} content(s) are stored in the database (content_data); "
            "a downgrade below 0005 would lose them"
        )
    op.drop_table("content_data")
