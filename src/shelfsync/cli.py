"""The `shelfsync` command: serve, user, db, and the sync client's commands."""

from __future__ import annotations

import enum
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from shelfsync.client.commands import register as register_client_commands

if TYPE_CHECKING:
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


_FACTORY = "shelfsync.server.app:create_app_from_env"


class AsgiServer(enum.StrEnum):
    UVICORN = "uvicorn"
    GRANIAN = "granian"


def _settings(data_dir: Path | None, database_url: str | None, **extra: object) -> Settings:
    # Imported here: the client's commands (`sync` runs twice per benchmark run)
    # never load the server's modules.
    from shelfsync.server.settings import Settings

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
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="SHELFSYNC_WORKERS",
            help="Server processes on this port (more than one needs PostgreSQL).",
        ),
    ] = 1,
    # Default chosen by measurement (bench/transfer.py and bench/longpoll.py run
    # both servers in one go; 2 cores shared with other load, so compare within
    # a run). granian moves large files faster (whole files go out with the ASGI
    # pathsend extension, i.e. sendfile: download 1260 vs 729 MB/s; upload 50 vs
    # 36 MB/s, server CPU 7.4 vs 9.3 s/GiB), but uvicorn is the default: it is
    # one process (granian adds a supervisor: peak RSS 160 vs 128-137 MiB against
    # the 150 MiB goal, and a SIGKILLed supervisor leaves its worker serving,
    # against SQLite's one-process rule), idle long-polls cost less (41 vs 60 KiB
    # each; 1,000 woken in 2.8 vs 4.2 s) and it starts in half the time (13-17 s
    # vs 24-26 s to /healthz on the loaded machine: two interpreters import the
    # app under granian).
    server: Annotated[
        AsgiServer,
        typer.Option(
            envvar="SHELFSYNC_SERVER",
            help="The HTTP server that runs the app: uvicorn (default: one process) "
            "or granian (faster for large files, several processes).",
        ),
    ] = AsgiServer.UVICORN,
    log_level: Annotated[
        str, typer.Option(envvar="SHELFSYNC_LOG_LEVEL", help="debug, info, warning, error.")
    ] = "info",
) -> None:
    """Run the server (creates the schema and the signing secret on first start)."""
    from shelfsync.server.app import create_app, open_database, prepare_secret
    from shelfsync.server.domain.errors import ShelfsyncError

    settings = _settings(data_dir, database_url, host=host, port=port)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    url = settings.resolved_database_url
    if workers > 1 and url.startswith("sqlite"):
        _fail(
            "SQLite is served by one process; for --workers above 1 use PostgreSQL "
            "(--database-url postgresql://USER@HOST/DB)",
            code=2,
        )
    in_process = workers == 1 and server is AsgiServer.UVICORN
    try:
        if in_process:
            # uvicorn sends any bytes-like body: ranges go out from their read buffers.
            application = create_app(settings, buffer_bodies=True)
        else:
            # Migrate and make the secret once, here, before the workers race for it.
            open_database(settings).dispose()
            prepare_secret(settings)
    except ShelfsyncError as exc:
        _fail(exc.detail)
    console.print(
        f"shelfsync {url.split('://')[0]} data in {settings.data_dir.resolve()}, "
        f"listening on http://{host}:{port} ({server.value}, {workers} "
        f"process{'es' if workers > 1 else ''})"
    )
    if in_process:
        _run_uvicorn(application, settings, workers=1, log_level=log_level)
        return
    # Each worker process builds its own app from the environment.
    os.environ["SHELFSYNC_DATA_DIR"] = str(settings.data_dir.resolve())
    os.environ["SHELFSYNC_DATABASE_URL"] = url
    if server is AsgiServer.GRANIAN:
        _run_granian(settings, workers=workers, log_level=log_level)
    else:
        _run_uvicorn(_FACTORY, settings, workers=workers, log_level=log_level)


def _run_uvicorn(target: object, settings: Settings, *, workers: int, log_level: str) -> None:
    import uvicorn

    from shelfsync.server.api.http_protocol import BodyPiecesProtocol

    uvicorn.run(
        target,  # type: ignore[arg-type]
        # httptools (uvicorn's choice when installed), bodies handed over uncopied.
        http=BodyPiecesProtocol,
        host=settings.host,
        port=settings.port,
        workers=workers,
        factory=workers > 1,
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


def _run_granian(settings: Settings, *, workers: int, log_level: str) -> NoReturn:
    """Become granian's supervisor (exec, same pid: signals and exit codes stay
    the caller's). The supervisor only watches its workers, so it should not
    keep this process's imports (typer, rich, the client, the app and its
    migrations: ~70 MiB of RSS); each forked worker builds the app itself."""
    argv = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(workers),
        "--factory",
        "--no-ws",
        "--log-level",
        log_level.lower(),
        "--no-access-log",
        "--respawn-failed-workers",
        # Long-polls may hold requests for up to 55 s: do not let them delay a stop.
        "--workers-kill-timeout",
        "5",
        # Requests a worker serves at once (default: the backlog, 1024): 1,000
        # held long-polls must leave room for the rest.
        "--backpressure",
        "4096",
        _FACTORY,
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # noqa: S606 (this interpreter, a fixed argv)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Bring the database to the current schema (serve does this too)."""
    from shelfsync.server.app import open_database
    from shelfsync.server.domain.errors import ShelfsyncError
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
    from shelfsync.server.domain.errors import ShelfsyncError

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
    from rich.table import Table

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
    from shelfsync.server.domain.errors import ShelfsyncError

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
    from shelfsync.server.domain.errors import ShelfsyncError

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
