"""The migrated schema is exactly `tables.py`, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from shelfsync.server.storage.engine import Database
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
