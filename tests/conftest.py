"""Shared fixtures: real databases (SQLite and PostgreSQL), apps and clients.

Every test that takes `database_url` runs twice, once per database. PostgreSQL
databases are created from a migrated template per test session worker and
dropped afterwards; tests never touch a database they did not create.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.migrate import upgrade

# Servers and CLI commands the tests start inherit this: real argon2id at a cost
# that keeps hundreds of logins quick on two cores.
os.environ.setdefault("SHELFSYNC_ARGON2_TIME_COST", "1")
os.environ.setdefault("SHELFSYNC_ARGON2_MEMORY_KIB", "8192")

PG_ADMIN_URL = os.environ.get("SHELFSYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_PREFIX = "shelfsync_test_"


def _pg_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True)


def create_pg_database(*, template: str | None = None) -> str:
    name = f"{PG_PREFIX}{uuid.uuid4().hex[:16]}"
    with _admin() as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    assert name.startswith(PG_PREFIX), "tests drop only databases they created"
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that per-test databases are copied from."""
    name = create_pg_database()
    db = Database(_pg_url(name))
    upgrade(db)
    db.dispose()
    yield name
    drop_pg_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    db.dispose()
    return path


@pytest.fixture(scope="session")
def pg_worker_database(pg_template: str) -> Iterator[str]:
    """One PostgreSQL database per test worker, emptied after every test.

    Emptying (TRUNCATE) costs a fraction of creating and dropping a database per
    test, which dominated the suite's time.
    """
    name = create_pg_database(template=pg_template)
    yield name
    drop_pg_database(name)


def _empty_pg_database(name: str) -> None:
    with psycopg.connect(_pg_url(name), autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            )
        ]
        # A test that left a connection in a transaction must not hang the suite.
        conn.execute("SET lock_timeout = '10s'")
        quoted = ", ".join(f'"{t}"' for t in tables)
        conn.execute(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    """A migrated, empty database of each kind, for this test only."""
    if request.param == "sqlite":
        path = tmp_path / "shelfsync.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    name = request.getfixturevalue("pg_worker_database")
    try:
        yield _pg_url(name)
    finally:
        _empty_pg_database(name)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty (unmigrated) database; parametrize indirectly with sqlite/postgresql."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = create_pg_database()
    try:
        yield _pg_url(name)
    finally:
        drop_pg_database(name)
