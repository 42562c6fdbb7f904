"""The migrated schema is exactly `tables.py`, on SQLite and on PostgreSQL."""

from __future__ import annotations

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


@BOTH
def test_0004_backfills_the_moves_of_an_existing_library(empty_db: Database) -> None:
    """A library written before 0004: its moves get from_path_hash, so
    revision_at_path finds a revision at a path its item has left."""
    upgrade(empty_db, "0003")
    when = "2026-11-30 12:00:00"
    with empty_db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (id, username, password_hash, generation, created_at) "
                "VALUES ('u1', 'alice', 'x', 1, :t)"
            ),
            {"t": when},
        )
        conn.execute(
            sa.text(
                "INSERT INTO items (id, user_id, path, path_hash, revision, size, metadata, "
                "deleted, created_at, updated_at, seq, op, from_path) VALUES ('i1', 'u1', "
                "'b.txt', :b, 2, 0, '{}', :f, :t, :t, 2, 'move', 'a.txt')"
            ),
            {"b": path_key("b.txt"), "f": False, "t": when},
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
                    "h": path_key(path),
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
