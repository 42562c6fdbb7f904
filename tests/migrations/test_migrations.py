"""The migrated schema is exactly `tables.py`, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from shelfsync.server.storage import migrate
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.items import ItemRepository, path_key
from shelfsync.server.storage.migrate import current_revision, head_revision, upgrade
from shelfsync.server.storage.tables import metadata

BOTH = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def empty_db(empty_database_url: str) -> Iterator[Database]:
    database = Database(empty_database_url)
    yield database
    database.dispose()


def _differences(db: Database, target: sa.MetaData) -> list[Any]:
    """What autogenerate would write to turn the live schema into `target`.

    Types and server defaults are compared too. `UTCDateTime` is a
    TypeDecorator over DateTime; Alembic compares its `impl`, so it needs no
    special case (a mismatch there would show up here as a type change).
    """
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, target))


@BOTH
def test_upgraded_empty_database_matches_declared_tables(empty_db: Database) -> None:
    upgrade(empty_db)
    assert _differences(empty_db, metadata) == []


def _op_names(differences: list[Any]) -> list[str]:
    # Column modifications come grouped in a list per column; the rest are tuples.
    flat = [op for d in differences for op in (d if isinstance(d, list) else [d])]
    return [op[0] for op in flat]


def _add_column(users: sa.Table) -> None:
    users.append_column(sa.Column("nickname", sa.String(20)))


def _widen_username(users: sa.Table) -> None:
    users.c.username.type = sa.String(128)


def _change_server_default(users: sa.Table) -> None:
    users.c.generation.server_default = sa.DefaultClause("2")


def _make_nullable(users: sa.Table) -> None:
    users.c.password_hash.nullable = True


def _add_index(users: sa.Table) -> None:
    sa.Index("ix_users_created_at", users.c.created_at)


@BOTH
@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(_add_column, ["add_column"], id="column"),
        pytest.param(_widen_username, ["modify_type"], id="type"),
        pytest.param(_change_server_default, ["modify_default"], id="server-default"),
        pytest.param(_make_nullable, ["modify_nullable"], id="nullable"),
        pytest.param(_add_index, ["add_index"], id="index"),
    ],
)
def test_schema_comparison_reports_what_the_migrations_lack(
    empty_db: Database, mutate: Callable[[sa.Table], None], expected: list[str]
) -> None:
    # Guards the equality test against comparing nothing: a declared schema
    # that no migration produces must be reported.
    upgrade(empty_db)
    declared = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(declared)
    mutate(declared.tables["users"])
    assert _op_names(_differences(empty_db, declared)) == expected


@BOTH
def test_upgrading_twice_changes_nothing(empty_db: Database) -> None:
    upgrade(empty_db)
    tables_before = set(sa.inspect(empty_db.engine).get_table_names())
    upgrade(empty_db)
    assert set(sa.inspect(empty_db.engine).get_table_names()) == tables_before
    assert current_revision(empty_db) == head_revision(empty_db)
    assert _differences(empty_db, metadata) == []


@BOTH
def test_upgraded_database_is_at_head_revision(empty_db: Database) -> None:
    assert current_revision(empty_db) is None
    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision(empty_db)
    assert head_revision(empty_db) is not None


def _add_user(conn: sa.Connection, when: str) -> None:
    """User u1, written as any revision of the schema has it."""
    conn.execute(
        sa.text(
            "INSERT INTO users (id, username, password_hash, generation, created_at) "
            "VALUES ('u1', 'alice', 'x', 1, :t)"
        ),
        {"t": when},
    )


def _whole_path_key(path: str) -> str:
    """The path key before 0006: SHA-256 of the whole path."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()


@BOTH
def test_0004_backfills_the_moves_of_an_existing_library(empty_db: Database) -> None:
    """A library written before 0004: its moves get from_path_hash, so
    revision_at_path finds a revision at a path its item has left."""
    upgrade(empty_db, "0003")
    when = "2026-11-30 12:00:00"
    with empty_db.engine.begin() as conn:
        _add_user(conn, when)
        conn.execute(
            sa.text(
                "INSERT INTO items (id, user_id, path, path_hash, revision, size, metadata, "
                "deleted, created_at, updated_at, seq, op, from_path) VALUES ('i1', 'u1', "
                "'b.txt', :b, 2, 0, '{}', :f, :t, :t, 2, 'move', 'a.txt')"
            ),
            {"b": _whole_path_key("b.txt"), "f": False, "t": when},
        )
        for number, path, op, from_path in (
            (1, "a.txt", "upsert", None),
            (2, "b.txt", "move", "a.txt"),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO revisions (item_id, revision, user_id, path, path_hash, size, "
                    "metadata, deleted, created_at, seq, op, from_path) VALUES ('i1', :n, 'u1', "
                    ":p, :h, 0, '{}', :f, :t, :n, :op, :fp)"
                ),
                {
                    "n": number,
                    "p": path,
                    "h": _whole_path_key(path),
                    "f": False,
                    "t": when,
                    "op": op,
                    "fp": from_path,
                },
            )
    upgrade(empty_db)
    assert _differences(empty_db, metadata) == []
    with empty_db.read() as tx:
        hashes = tx.execute(
            sa.text("SELECT revision, from_path_hash FROM revisions ORDER BY revision")
        ).all()
        found = ItemRepository(tx).revision_at_path("u1", "a.txt", 1)
    assert [tuple(r) for r in hashes] == [(1, None), (2, path_key("a.txt"))]
    assert found is not None
    assert (found.item_id, found.path) == ("i1", "a.txt")


@BOTH
def test_0005_adds_the_table_of_inline_content(empty_db: Database) -> None:
    """An existing store (its contents all files) gains `content_data`, empty;
    on PostgreSQL its bytes are stored without compression (EXTERNAL). A
    downgrade is refused while any content is stored inline."""
    upgrade(empty_db, "0004")
    with empty_db.engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO contents (content_hash, size, created_at) VALUES (:h, 3, :t)"),
            {"h": "a" * 64, "t": "2026-11-30 12:00:00"},
        )
    upgrade(empty_db, "0005")
    assert _differences(empty_db, metadata) == [] or head_revision(empty_db) != "0005"
    with empty_db.write() as tx:
        assert tx.execute(sa.text("SELECT count(*) FROM content_data")).scalar_one() == 0
        tx.execute(
            sa.text("INSERT INTO content_data (content_hash, data) VALUES (:h, :d)"),
            {"h": "a" * 64, "d": b"abc"},
        )
        if empty_db.dialect == "postgresql":
            storage = tx.execute(
                sa.text(
                    "SELECT attstorage FROM pg_attribute WHERE attrelid = 'content_data'::regclass "
                    "AND attname = 'data'"
                )
            ).scalar_one()
            assert storage == "e"
    config = migrate._config(empty_db)
    with pytest.raises(RuntimeError, match="content_data"):
        command.downgrade(config, "0004")
    assert current_revision(empty_db) == "0005"
    with empty_db.write() as tx:
        tx.execute(sa.text("DELETE FROM content_data"))
    command.downgrade(config, "0004")
    assert current_revision(empty_db) == "0004"
    assert "content_data" not in sa.inspect(empty_db.engine).get_table_names()
    upgrade(empty_db)
    assert _differences(empty_db, metadata) == []


# Paths whose keys the databases' own functions must compute exactly as
# storage.items.path_key does: no folder, nested folders, non-ASCII, quotes,
# regular-expression and LIKE characters, and a line break in each part.
_AWKWARD_PATHS = (
    "a.txt",
    "dir/b.txt",
    "dir/sub/c d.txt",
    "Müsik/naïve 日本語/🎵.flac",
    "o'brien/50% [draft].*.txt",
    "line\nbreak/f\ng.txt",
)


def _stored_keys(db: Database) -> list[tuple[str, str, str]]:
    """Every stored path key beside the path it must be the key of, sorted."""
    with db.read() as tx:
        rows = []
        for table, key, path in (
            ("items", "path_hash", "path"),
            ("revisions", "path_hash", "path"),
            ("revisions", "from_path_hash", "from_path"),
            ("conflicts", "path_hash", "path"),
            ("upload_sessions", "path_hash", "path"),
        ):
            query = f"SELECT {path}, {key} FROM {table} WHERE {path} IS NOT NULL"
            rows += [(f"{table}.{key}", r[0], r[1]) for r in tx.execute(sa.text(query))]
    return sorted(rows)


@BOTH
def test_0006_gives_every_stored_path_the_folder_clustered_key(empty_db: Database) -> None:
    """A library written before 0006 (keys: SHA-256 of the whole path) is
    re-keyed in every table and column that stores a path key; its items are
    found by path afterwards; a downgrade restores the old keys."""
    upgrade(empty_db, "0005")
    when = "2026-11-30 12:00:00"
    with empty_db.engine.begin() as conn:
        _add_user(conn, when)
        for n, path in enumerate(_AWKWARD_PATHS):
            moved_from = _AWKWARD_PATHS[n - 1]
            conn.execute(
                sa.text(
                    "INSERT INTO items (id, user_id, path, path_hash, revision, size, metadata, "
                    "deleted, created_at, updated_at, seq, op, from_path) VALUES (:id, 'u1', "
                    ":p, :h, 2, 0, '{}', :d, :t, :t, :n, 'move', :fp)"
                ),
                {
                    "id": f"i{n}",
                    "p": path,
                    "h": _whole_path_key(path),
                    "d": n == 0,  # one tombstone
                    "t": when,
                    "n": n + 1,
                    "fp": moved_from,
                },
            )
            for number, at, from_path in ((1, moved_from, None), (2, path, moved_from)):
                conn.execute(
                    sa.text(
                        "INSERT INTO revisions (item_id, revision, user_id, path, path_hash, "
                        "size, metadata, deleted, created_at, seq, op, from_path, "
                        "from_path_hash) VALUES (:id, :r, 'u1', :p, :h, 0, '{}', :d, :t, :n, "
                        "'move', :fp, :fh)"
                    ),
                    {
                        "id": f"i{n}",
                        "r": number,
                        "p": at,
                        "h": _whole_path_key(at),
                        "d": False,
                        "t": when,
                        "n": n + 1,
                        "fp": from_path,
                        "fh": None if from_path is None else _whole_path_key(from_path),
                    },
                )
            conn.execute(
                sa.text(
                    "INSERT INTO conflicts (id, user_id, device_id, path, path_hash, status, "
                    "detected_at, server_deleted, client_op, client_metadata, client_deleted, "
                    "suggested_path) VALUES (:id, 'u1', 'd1', :p, :h, 'unresolved', :t, :f, "
                    "'upsert', '{}', :f, :p)"
                ),
                {"id": f"c{n}", "p": path, "h": _whole_path_key(path), "t": when, "f": False},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO upload_sessions (id, user_id, device_id, path, path_hash, size, "
                    "content_hash, chunk_size, chunk_count, status, deduplicated, created_at, "
                    "updated_at, expires_at) VALUES (:id, 'u1', 'd1', :p, :h, 1, :c, 1, 1, "
                    "'pending', :f, :t, :t, :t)"
                ),
                {
                    "id": f"s{n}",
                    "p": path,
                    "h": _whole_path_key(path),
                    "c": "c" * 64,
                    "t": when,
                    "f": False,
                },
            )
    before = _stored_keys(empty_db)
    # Per path: its item, two revisions (one of them a move from it), a conflict, a session.
    assert len(before) == 6 * len(_AWKWARD_PATHS)
    assert all(key == _whole_path_key(path) for _, path, key in before)

    upgrade(empty_db)
    assert _differences(empty_db, metadata) == []
    after = _stored_keys(empty_db)
    assert [(t, p) for t, p, _ in after] == [(t, p) for t, p, _ in before]
    for column, path, key in after:
        assert key == path_key(path), (column, path)
    with empty_db.read() as tx:
        found = ItemRepository(tx).at_paths("u1", _AWKWARD_PATHS)
    assert {p: i.id for p, i in found.items()} == {p: f"i{n}" for n, p in enumerate(_AWKWARD_PATHS)}

    command.downgrade(migrate._config(empty_db), "0005")
    assert _stored_keys(empty_db) == before
