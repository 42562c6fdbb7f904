"""The operator commands (`shelfsync user ...`, `shelfsync db upgrade`) on both databases."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shelfsync.cli import app as cli
from shelfsync.server.app import create_app
from shelfsync.server.services.passwords import PasswordHasher
from shelfsync.server.settings import Settings
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.migrate import current_revision, head_revision
from shelfsync.server.storage.users import UserRepository
from tests.api.conftest import FAST_HASHING
from tests.conftest import PG_ADMIN_URL, create_pg_database, drop_pg_database

PASSWORD = "correct horse battery"
# Verifying reads the cost from the stored hash; this only sets the dummy's.
HASHER = PasswordHasher(
    time_cost=FAST_HASHING["argon2_time_cost"], memory_cost_kib=FAST_HASHING["argon2_memory_kib"]
)
# Flags are given explicitly; the environment must not point anywhere else.
CLEAN_ENV: dict[str, str | None] = {
    "SHELFSYNC_DATA_DIR": None,
    "SHELFSYNC_DATABASE_URL": None,
}


class Shelfsync:
    """Runs the real command against one data directory (and database)."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.runner = CliRunner()

    @property
    def target(self) -> list[str]:
        flags = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            flags += ["--database-url", self.database_url]
        return flags

    def __call__(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        result = self.runner.invoke(cli, [*args, *self.target], input=stdin, env=CLEAN_ENV)
        return result.exit_code, result.stdout, result.stderr

    def add(self, name: str, password: str = PASSWORD) -> tuple[int, str, str]:
        return self("user", "add", name, "--password-stdin", stdin=password + "\n")

    def database(self) -> Database:
        url = self.database_url or f"sqlite:///{self.data_dir / 'shelfsync.db'}"
        return Database(url)

    def stored_user(self, name: str) -> tuple[str, int] | None:
        db = self.database()
        try:
            with db.read() as conn:
                user = UserRepository(conn).by_username(name)
        finally:
            db.dispose()
        return None if user is None else (user.password_hash, user.generation)


@pytest.fixture(params=["sqlite", "postgresql"])
def shelfsync(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shelfsync]:
    if request.param == "sqlite":
        yield Shelfsync(tmp_path / "data", None)
        return
    # An empty database: the commands must create the schema themselves.
    name = create_pg_database()
    try:
        yield Shelfsync(tmp_path / "data", f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}")
    finally:
        drop_pg_database(name)


def test_user_add_reads_the_password_from_stdin(shelfsync: Shelfsync) -> None:
    code, _, stderr = shelfsync.add("alice")
    assert code == 0, stderr
    assert "alice" in stderr
    stored = shelfsync.stored_user("alice")
    assert stored is not None
    assert HASHER.verify(stored[0], PASSWORD)


def test_user_list_shows_added_users(shelfsync: Shelfsync) -> None:
    shelfsync.add("alice")
    shelfsync.add("bob")
    code, stdout, stderr = shelfsync("user", "list")
    assert code == 0, stderr
    assert "alice" in stdout
    assert "bob" in stdout


def test_adding_an_existing_user_fails_with_a_clear_message(shelfsync: Shelfsync) -> None:
    shelfsync.add("alice")
    code, _, stderr = shelfsync.add("alice", "another password")
    assert code != 0
    assert "alice" in stderr
    assert "already exists" in stderr
    stored = shelfsync.stored_user("alice")
    assert stored is not None
    assert HASHER.verify(stored[0], PASSWORD)


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        pytest.param("alice", "short", "at least 8 characters", id="short-password"),
        pytest.param("no spaces", PASSWORD, "username must be", id="bad-username"),
    ],
)
def test_user_add_refuses_invalid_input(
    shelfsync: Shelfsync, name: str, password: str, message: str
) -> None:
    code, _, stderr = shelfsync.add(name, password)
    assert code != 0
    assert message in stderr
    assert shelfsync.stored_user(name) is None


def test_user_passwd_sets_a_new_password_and_ends_sessions(shelfsync: Shelfsync) -> None:
    shelfsync.add("alice")
    code, _, stderr = shelfsync(
        "user", "passwd", "alice", "--password-stdin", stdin="a new passphrase\n"
    )
    assert code == 0, stderr
    stored = shelfsync.stored_user("alice")
    assert stored is not None
    password_hash, generation = stored
    assert HASHER.verify(password_hash, "a new passphrase")
    assert not HASHER.verify(password_hash, PASSWORD)
    assert generation == 2


def test_user_passwd_of_an_unknown_user_fails(shelfsync: Shelfsync) -> None:
    code, _, stderr = shelfsync(
        "user", "passwd", "nobody", "--password-stdin", stdin="a new passphrase\n"
    )
    assert code != 0
    assert "nobody" in stderr


def test_user_remove_deletes_the_user(shelfsync: Shelfsync) -> None:
    shelfsync.add("alice")
    shelfsync.add("bob")
    code, _, stderr = shelfsync("user", "remove", "alice")
    assert code == 0, stderr
    assert shelfsync.stored_user("alice") is None
    assert shelfsync.stored_user("bob") is not None
    _, stdout, _ = shelfsync("user", "list")
    assert "alice" not in stdout


def test_user_remove_of_an_unknown_user_fails(shelfsync: Shelfsync) -> None:
    code, _, stderr = shelfsync("user", "remove", "nobody")
    assert code != 0
    assert "nobody" in stderr


def test_db_upgrade_brings_an_empty_database_to_head(shelfsync: Shelfsync) -> None:
    code, _, stderr = shelfsync("db", "upgrade")
    assert code == 0, stderr
    db = shelfsync.database()
    try:
        head = head_revision(db)
        assert current_revision(db) == head
    finally:
        db.dispose()
    assert f"revision {head}" in stderr


def test_db_upgrade_twice_succeeds(shelfsync: Shelfsync) -> None:
    shelfsync("db", "upgrade")
    code, _, stderr = shelfsync("db", "upgrade")
    assert code == 0, stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_app_start_creates_an_owner_only_secret(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", **FAST_HASHING)
    app = create_app(settings)
    app.state.services.db.dispose()
    assert _mode(settings.secret_path) == 0o600
    secret = settings.secret_path.read_text().strip()
    assert len(bytes.fromhex(secret)) >= 32


def test_app_start_tightens_a_readable_secret_and_keeps_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", **FAST_HASHING)
    settings.secret_path.parent.mkdir(parents=True)
    settings.secret_path.write_text("ab" * 32 + "\n")
    settings.secret_path.chmod(0o644)
    app = create_app(settings)
    app.state.services.db.dispose()
    assert _mode(settings.secret_path) == 0o600
    assert settings.secret_path.read_text().strip() == "ab" * 32


def test_app_start_keeps_the_secret_across_restarts(tmp_path: Path) -> None:
    # A new secret on every start would log every client out.
    settings = Settings(data_dir=tmp_path / "data", **FAST_HASHING)
    secrets = []
    for _ in range(2):
        app = create_app(settings)
        app.state.services.db.dispose()
        secrets.append(settings.secret_path.read_text())
    assert secrets[0] == secrets[1]
