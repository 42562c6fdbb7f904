"""Path keys that keep a folder's paths together (issue 7, report ingest).

Every stored path key (`path_hash` of items, revisions, conflicts and upload
sessions, and revisions' `from_path_hash`) was SHA-256 of the path, so each
new file landed on a random page of the path indexes. A key is now the first
half of SHA-256 of the path's folder followed by the first half of SHA-256 of
the path (storage.items.path_key): a folder's files are neighbours in every
path index. The columns keep their type and width; only the values change,
in one statement per column.

SQLite computes the keys with a Python function registered on the
migration's connection; PostgreSQL with its own sha256(). Both must agree
with storage.items.path_key (tests/migrations compare them on awkward paths).

Revision ID: 0006
Revises: 0005
"""

import hashlib
import sqlite3
from collections.abc import Callable

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (table, key column, path column) for every stored path key.
_KEYS = (
    ("items", "path_hash", "path"),
    ("revisions", "path_hash", "path"),
    ("revisions", "from_path_hash", "from_path"),
    ("conflicts", "path_hash", "path"),
    ("upload_sessions", "path_hash", "path"),
)
_SQLITE_FUNCTION = "shelfsync_path_key_0006"


def _folder_clustered_key(path: str) -> str:
    """storage.items.path_key as of this revision; a migration keeps its own copy."""
    folder = path.rpartition("/")[0]
    return (
        hashlib.sha256(folder.encode("utf-8")).hexdigest()[:32]
        + hashlib.sha256(path.encode("utf-8")).hexdigest()[:32]
    )


def _whole_path_key(path: str) -> str:
    """The key before this revision."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()


def _pg_sha256_hex(text: str) -> str:
    return f"encode(sha256(convert_to({text}, 'UTF8')), 'hex')"


def _pg_folder_clustered_key(column: str) -> str:
    # Python's rpartition("/")[0]: all before the last slash, '' without one.
    folder = (
        f"CASE WHEN strpos({column}, '/') > 0 "
        f"THEN regexp_replace({column}, '/[^/]*$', '') ELSE '' END"
    )
    return f"left({_pg_sha256_hex(folder)}, 32) || left({_pg_sha256_hex(column)}, 32)"


def _rekey(python_key: Callable[[str], str], pg_key: Callable[[str], str]) -> None:
    conn = op.get_bind()
    sql_key = pg_key
    if conn.dialect.name == "sqlite":
        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        driver.create_function(_SQLITE_FUNCTION, 1, python_key, deterministic=True)

        def sql_key(column: str) -> str:
            return f"{_SQLITE_FUNCTION}({column})"

    for table, key, path in _KEYS:
        # Names from _KEYS only; no value is spliced into the statement.
        statement = f"UPDATE {table} SET {key} = {sql_key(path)} WHERE {path} IS NOT NULL"  # noqa: S608
        conn.exec_driver_sql(statement)


def upgrade() -> None:
    _rekey(_folder_clustered_key, _pg_folder_clustered_key)


def downgrade() -> None:
    _rekey(_whole_path_key, _pg_sha256_hex)
