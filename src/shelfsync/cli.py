"""The `shelfsync` command: serve, user, db, and the sync client's commands."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shelfsync.client.commands import register as register_client_commands
from shelfsync.server.domain.errors import ShelfsyncError
from shelfsync.server.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="shelfsync",
    help="Self-hosted multi-device library synchronization.",
    no_args_is_help=True,
    add_completion=False,
)
user_app = typer.Typer(help="Manage user accounts (operator commands).", no_args_is_help=True)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(db_app, name="db")
register_client_commands(app)

console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="SHELFSYNC_DATA_DIR",
        help="Where the SQLite file, the content folder and the signing secret live.",
        show_default="./data",
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SHELFSYNC_DATABASE_URL",
        help="sqlite:///PATH or postgresql://USER@HOST/DB (default: SQLite in the data dir).",
    ),
]


def _settings(data_dir: Path | None, database_url: str | None, **extra: object) -> Settings:
    return Settings.from_env(data_dir=data_dir, database_url=database_url, **extra)


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _read_password(password_stdin: bool, *, confirm: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    return password


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(envvar="SHELFSYNC_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="SHELFSYNC_PORT", help="Port to listen on.")] = 8080,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    log_level: Annotated[
        str, typer.Option(envvar="SHELFSYNC_LOG_LEVEL", help="debug, info, warning, error.")
    ] = "info",
) -> None:
    """Run the server (creates the schema and the signing secret on first start)."""
    import uvicorn

    from shelfsync.server.app import create_app

    settings = _settings(data_dir, database_url, host=host, port=port)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        application = create_app(settings)
    except ShelfsyncError as exc:
        _fail(exc.detail)
    console.print(
        f"shelfsync {settings.resolved_database_url.split('://')[0]} "
        f"data in {settings.data_dir.resolve()}, listening on http://{host}:{port}"
    )
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        # Long-polls may hold requests for up to 55 s: do not let them delay a stop.
        timeout_graceful_shutdown=5,
        # Idle keep-alive connections go after this long (a slow body is cut
        # by the app's own idle timeout, api/limits.py).
        timeout_keep_alive=settings.keep_alive_timeout_s,
        # The h11 parser buffers at most this much of an incomplete request
        # head (then answers 400 itself); with httptools the app's own header
        # limit answers 431.
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Bring the database to the current schema (serve does this too)."""
    from shelfsync.server.app import open_database
    from shelfsync.server.storage.migrate import current_revision

    try:
        db = open_database(_settings(data_dir, database_url))
    except ShelfsyncError as exc:
        _fail(exc.detail)
    console.print(f"database at revision {current_revision(db)}")
    db.dispose()


def _accounts(data_dir: Path | None, database_url: str | None):  # type: ignore[no-untyped-def]
    from shelfsync.server.app import open_database
    from shelfsync.server.services.accounts import AccountService
    from shelfsync.server.services.passwords import PasswordHasher

    settings = _settings(data_dir, database_url)
    db = open_database(settings)
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost, memory_cost_kib=settings.argon2_memory_kib
    )
    return db, AccountService(db=db, passwords=hasher)


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The new user's name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a user (asks for the password unless --password-stdin)."""
    password = _read_password(password_stdin, confirm=True)
    db, accounts = _accounts(data_dir, database_url)
    try:
        user = accounts.add_user(username=name, password=password)
    except ShelfsyncError as exc:
        _fail(exc.detail)
    finally:
        db.dispose()
    console.print(f"user {user.username} added")


@user_app.command("list")
def user_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List users."""
    db, accounts = _accounts(data_dir, database_url)
    try:
        users = accounts.list_users()
    finally:
        db.dispose()
    table = Table("username", "id", "created")
    for user in users:
        table.add_row(user.username, user.id, user.created_at.isoformat(timespec="seconds"))
    Console().print(table)


@user_app.command("passwd")
def user_passwd(
    name: Annotated[str, typer.Argument(help="The user whose password changes.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Set a user's password; every session of that user ends."""
    password = _read_password(password_stdin, confirm=True)
    db, accounts = _accounts(data_dir, database_url)
    try:
        accounts.set_password(username=name, password=password)
    except ShelfsyncError as exc:
        _fail(exc.detail)
    finally:
        db.dispose()
    console.print(f"password of {name} changed")


@user_app.command("remove")
def user_remove(
    name: Annotated[str, typer.Argument(help="The user to remove, with their devices.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove a user and their devices."""
    db, accounts = _accounts(data_dir, database_url)
    try:
        accounts.remove_user(username=name)
    except ShelfsyncError as exc:
        _fail(exc.detail)
    finally:
        db.dispose()
    console.print(f"user {name} removed")


def main() -> None:
    app()
