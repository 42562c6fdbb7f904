"""The client's commands (`shelfsync login|logout|sync|status|conflicts|resolve`).

Thin: each parses its options, opens what it needs, calls the client modules
and turns a ClientError into one clear line on standard error and an exit
status. `register(app)` adds them to the `shelfsync` Typer app (cli.py).
"""

from __future__ import annotations

import enum
import os
import platform
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from shelfsync import __version__
from shelfsync.client.config import DeviceConfig, delete_config, load_config, save_config
from shelfsync.client.errors import ClientError, Unauthorized
from shelfsync.client.http import ApiClient
from shelfsync.client.progress import Reporter, make_reporter
from shelfsync.client.state import State
from shelfsync.client.summary import (
    EXIT_FAILED,
    exit_status,
    json_summary,
    summary_line,
)
from shelfsync.client.sync import PassSummary, SyncEngine
from shelfsync.client.transfer import Throttle, TransferSettings
from shelfsync.protocol.devices import DeviceCreate, DeviceTypeName

__all__ = [
    "ConflictChoice",
    "conflicts",
    "login",
    "logout",
    "register",
    "resolve",
    "status",
    "sync",
]

err = Console(stderr=True)
out = Console()

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")]
FolderArg = Annotated[
    Path | None,
    typer.Argument(help="The folder to sync (default: the one synced last).", show_default=False),
]


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def _client_errors() -> Iterator[None]:
    try:
        yield
    except Unauthorized as exc:
        _fail(f"the server refused this device ({exc}): run `shelfsync login` again")
    except ClientError as exc:
        _fail(str(exc))


class ConflictChoice(enum.StrEnum):
    """`shelfsync login --conflicts`: the device's conflict policy (protocol section 5)."""

    KEEP_BOTH = "keep_both"  # settled at once: the local version saved beside
    MANUAL = "manual"  # left for `shelfsync resolve`; nothing local changes meanwhile


def _device_type() -> DeviceTypeName:
    power = Path("/sys/class/power_supply")
    if power.is_dir() and any(p.name.startswith("BAT") for p in power.iterdir()):
        return "laptop"
    return "desktop"


def _os_name() -> str:
    try:
        release = platform.freedesktop_os_release()
        return release.get("PRETTY_NAME") or release.get("NAME") or platform.system()
    except OSError:
        return f"{platform.system()} {platform.release()}".strip()


def login(
    url: Annotated[str, typer.Argument(help="The server, e.g. http://127.0.0.1:8080")],
    username: Annotated[
        str | None, typer.Option(help="Your user name (asked if left out).")
    ] = None,
    device_name: Annotated[
        str | None, typer.Option(help="A name for this machine (default: the host name).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    conflicts: Annotated[
        ConflictChoice,
        typer.Option(
            help="keep_both: keep both versions at once (a conflict copy); "
            "manual: leave conflicts for `shelfsync resolve`."
        ),
    ] = ConflictChoice.KEEP_BOTH,
) -> None:
    """Register this machine as a device; only its device token is kept (mode 0600)."""
    with _client_errors():
        try:
            existing = load_config()
        except ClientError:
            existing = None
        if existing is not None:
            _fail(
                f"already logged in as device {existing.device_name!r} on {existing.server_url}: "
                "run `shelfsync logout` first"
            )
        name = username or typer.prompt("Username")
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("Password", hide_input=True)
        device = DeviceCreate(
            name=(device_name or socket.gethostname() or "device")[:100],
            device_type=_device_type(),
            os=_os_name()[:100],
            client_version=f"shelfsync {__version__}",
            conflict_policy=conflicts.value,
        )
        with ApiClient(url) as api:
            try:
                tokens = api.login(username=name, password=password)
            except Unauthorized:
                _fail(f"wrong user name or password for {name!r} on {api.base_url}")
            registered = api.register_device(access_token=tokens.access_token, device=device)
        path = save_config(
            DeviceConfig(
                server_url=api.base_url,
                device_id=registered.device.id,
                device_token=registered.token,
                device_name=registered.device.name,
            )
        )
    err.print(f"logged in as device {registered.device.name!r} ({path})", highlight=False)


def logout() -> None:
    """Delete this device on the server and its token here."""
    with _client_errors():
        config = load_config()
        try:
            with ApiClient(config.server_url, device_token=config.device_token) as api:
                api.delete_device(config.device_id)
        except Unauthorized:
            err.print("the server no longer knew this device; removing it here", highlight=False)
        delete_config()
    err.print(f"logged out: device {config.device_name!r} removed", highlight=False)


def _folder(folder: Path | None, config: DeviceConfig) -> Path:
    chosen = folder if folder is not None else (Path(config.folder) if config.folder else None)
    if chosen is None:
        _fail("which folder? `shelfsync sync FOLDER` (it is remembered for next time)")
    if not chosen.is_dir():
        _fail(f"{chosen} is not a directory")
    return chosen.resolve()


def sync(
    folder: FolderArg = None,
    watch: Annotated[
        bool,
        typer.Option("--watch", help="Keep running; sync changes on either side as they come."),
    ] = False,
    quiet: Quiet = False,
    limit_rate: Annotated[
        int | None,
        typer.Option(
            help="Bandwidth limit in bytes per second (env SHELFSYNC_LIMIT_RATE).",
            show_default=False,
        ),
    ] = None,
    parallel: Annotated[int, typer.Option(min=1, max=16, help="Chunks in flight at once.")] = 4,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary of each pass on standard output.")
    ] = False,
) -> None:
    """Sync FOLDER both ways once (exit 0 when in sync, 3 when conflicts wait, 1 on failure)."""
    with _client_errors():
        config = load_config()
        root = _folder(folder, config)
        if config.folder != str(root):
            save_config(replace(config, folder=str(root)))
        reporter = make_reporter(quiet=quiet)
        settings = TransferSettings(
            parallel_chunks=parallel,
            parallel_files=max(parallel * 2, 8),
            throttle=Throttle.from_env(limit_rate),
        )
        with (
            ApiClient(config.server_url, device_token=config.device_token) as api,
            _open_state(root, config) as state,
            SyncEngine(
                root=root, api=api, state=state, reporter=reporter, settings=settings
            ) as engine,
        ):
            try:
                if watch:
                    status = _watch(root, api, config, reporter, engine, as_json)
                else:
                    summary = engine.run_pass()
                    reporter.close()
                    if as_json:
                        out.print(json_summary(summary, engine), highlight=False, soft_wrap=True)
                    reporter.info(summary_line(summary, engine))
                    status = exit_status(summary, reporter)
            finally:
                reporter.close()
    raise typer.Exit(status)


def _watch(
    root: Path,
    api: ApiClient,
    config: DeviceConfig,
    reporter: Reporter,
    engine: SyncEngine,
    as_json: bool,
) -> int:
    def on_summary(summary: PassSummary) -> None:
        if as_json:
            out.print(json_summary(summary, engine), highlight=False, soft_wrap=True)
        if summary.actions:
            reporter.info(summary_line(summary, engine))
        for path, why in sorted(summary.failed.items()):
            reporter.warn(f"not synced: {path}: {why}")

    from shelfsync.client.watch import Watcher  # watchfiles: only for --watch

    watcher = Watcher(
        root=root,
        poll_api=lambda: ApiClient(api.base_url, device_token=config.device_token),
        state=engine.state,
        reporter=reporter,
        run_pass=engine.run_pass,
        on_summary=on_summary,
    )

    def stop(_signum: int, _frame: object) -> None:
        if watcher.stop.is_set():
            # Asked twice: leave now. Transfers resume where they stopped.
            os._exit(130)
        reporter.info("stopping after the current pass (again to stop at once)")
        watcher.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return watcher.run()


@contextmanager
def _open_state(root: Path, config: DeviceConfig) -> Iterator[State]:
    with State(root) as state:
        state.lock_folder()
        if state.bind(server_url=config.server_url, device_id=config.device_id):
            if state.get_meta("bound_before"):
                err.print("this folder was synced as another device: reconciling by content")
            state.set_meta("bound_before", "1")
        yield state


def status(folder: FolderArg = None) -> None:
    """What waits to go up or down, conflicts, and how far behind this device is."""
    from shelfsync.client.status import folder_status  # only `status` needs it

    with _client_errors():
        config = load_config()
        root = _folder(folder, config)
        # Read-only, and without the folder lock: it may run beside `sync --watch`.
        with (
            ApiClient(config.server_url, device_token=config.device_token) as api,
            State(root) as state,
        ):
            if state.get_meta("device_id") not in (None, config.device_id):
                _fail("this folder was synced as another device: run `shelfsync sync` first")
            report = folder_status(root=root, api=api, state=state, device_id=config.device_id)
    out.print(report.render(), highlight=False, soft_wrap=True)


def conflicts() -> None:
    """List the unresolved conflicts of your library."""
    with _client_errors():
        config = load_config()
        with ApiClient(config.server_url, device_token=config.device_token) as api:
            found = api.conflicts()
    if not found:
        out.print("no conflicts")
        return
    from rich.table import Table  # only here

    table = Table("id", "path", "server", "this side", "detected")
    for c in found:
        server = "deleted" if c.server.deleted else f"rev {c.server.revision}, {c.server.size} B"
        client = "deleted" if c.client.deleted else f"{c.client.op}, {c.client.size} B"
        if not c.client.content_available and not c.client.deleted:
            client += " (not uploaded)"
        table.add_row(c.id, c.path, server, client, c.detected_at.isoformat(timespec="seconds"))
    out.print(table)


def resolve(
    conflict_id: Annotated[str, typer.Argument(metavar="ID", help="From `shelfsync conflicts`.")],
    keep_server: Annotated[bool, typer.Option("--keep-server", help="The library stays.")] = False,
    keep_client: Annotated[
        bool, typer.Option("--keep-client", help="The device's version becomes current.")
    ] = False,
    keep_both: Annotated[
        bool, typer.Option("--keep-both", help="The device's version is saved beside it.")
    ] = False,
) -> None:
    """Settle a conflict; the next sync brings every folder in line."""
    chosen = [
        name
        for name, flag in (
            ("keep_server", keep_server),
            ("keep_client", keep_client),
            ("keep_both", keep_both),
        )
        if flag
    ]
    if len(chosen) != 1:
        _fail("choose exactly one of --keep-server, --keep-client, --keep-both", code=2)
    with _client_errors():
        config = load_config()
        with ApiClient(config.server_url, device_token=config.device_token) as api:
            answer = api.resolve(conflict_id, resolution=chosen[0])
    where = f" ({answer.conflict.result_path})" if answer.conflict.result_path else ""
    err.print(f"resolved {answer.conflict.path}: {chosen[0]}{where}", highlight=False)


def register(app: typer.Typer) -> None:
    for command in (login, logout, sync, status, conflicts, resolve):
        app.command()(command)
