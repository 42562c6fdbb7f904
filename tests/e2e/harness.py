"""A real `shelfsync serve` on a free loopback port, and devices driving the real CLI.

Everything goes through processes and the public HTTP API: the server is a
subprocess with its own data directory, users are added with
`shelfsync user add`, and each device is the `shelfsync` command with its own
SHELFSYNC_CONFIG_DIR and folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shelfsync.content_hash import hash_file

__all__ = [
    "PASSWORD",
    "Device",
    "Server",
    "folder_tree",
    "free_port",
    "server_env",
    "wait_until",
]

PASSWORD = "e2e-password-123"
SHELFSYNC = str(Path(sys.executable).parent / "shelfsync")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env() -> dict[str, str]:
    """The environment for a test's server or CLI: only flags decide where data
    goes, while the suite's cheap argon2 cost is kept."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SHELFSYNC_") or k.startswith("SHELFSYNC_ARGON2_")
    }


def wait_until(predicate: Any, *, timeout_s: float, step_s: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")


def folder_tree(folder: Path) -> dict[str, str]:
    """Relative path -> content hash of every file, outside `.shelfsync/`."""
    tree: dict[str, str] = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if rel == ".shelfsync" or rel.startswith(".shelfsync/") or not path.is_file():
            continue
        tree[rel] = hash_file(path)
    return tree


def folder_dirs(folder: Path) -> set[str]:
    """Directories that hold a file (directories are implicit in the library)."""
    return {
        str(Path(rel).parent.as_posix())
        for rel in folder_tree(folder)
        if Path(rel).parent.as_posix() != "."
    }


@dataclass
class Server:
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # PostgreSQL instead of the data dir's SQLite; several servers may share it
    # (and the data dir) as separate processes, or one server run `workers`.
    database_url: str | None = None
    workers: int = 1
    name: str = "server"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def target(self) -> list[str]:
        """The CLI flags that point a command at this server's data."""
        flags = ["--data-dir", str(self.data_dir)]
        if self.database_url is not None:
            flags += ["--database-url", self.database_url]
        return flags

    def add_user(self, name: str, password: str = PASSWORD) -> None:
        subprocess.run(
            [SHELFSYNC, "user", "add", name, "--password-stdin", *self.target],
            input=f"{password}\n".encode(),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        self.log_path = self.data_dir.parent / f"{self.name}.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                SHELFSYNC,
                "serve",
                "--port",
                str(self.port),
                *self.target,
                "--workers",
                str(self.workers),
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            # Workers are child processes: a group of their own lets stop() end them all.
            start_new_session=self.workers > 1,
        )
        log.close()

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()}")  # type: ignore[union-attr]
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout_s=30, step_s=0.1, what="the server to answer /healthz")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=3)  # abandoned long polls hold a graceful stop
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.workers > 1:
            # No worker outlives its supervisor (they would keep the port and database).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def library(self, device: Device) -> dict[str, str]:
        """The server's live library (path -> content hash), read through the feed."""
        with device.api() as client:
            tree: dict[str, str] = {}
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                page = client.get("/api/v1/sync/changes", params=params).json()
                for change in page["changes"]:
                    if change["deleted"]:
                        tree.pop(change["path"], None)
                    else:
                        tree[change["path"]] = change["content_hash"]
                cursor = page["cursor"]
                if not page["has_more"]:
                    return tree


@dataclass
class Device:
    name: str
    server: Server
    home: Path
    username: str = "alice"

    @property
    def folder(self) -> Path:
        return self.home / "folder"

    @property
    def config_dir(self) -> Path:
        return self.home / "config"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFSYNC_")}
        env.update(SHELFSYNC_CONFIG_DIR=str(self.config_dir), **extra)
        return env

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        timeout_s: float = 120,
        **env: str,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [SHELFSYNC, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(**env),
            timeout=timeout_s,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"`shelfsync {' '.join(args)}` on {self.name} exited {done.returncode}:\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done

    def login(self, *extra: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.run(
            "login",
            self.server.url,
            "--username",
            self.username,
            "--device-name",
            self.name,
            "--password-stdin",
            *extra,
            stdin=f"{PASSWORD}\n",
        )

    def sync(self, *extra: str, check: bool = True, **env: str) -> dict[str, Any]:
        """One pass; its JSON summary."""
        done = self.run("sync", str(self.folder), "--json", *extra, check=check, **env)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        summary: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        summary["exit"] = done.returncode
        summary["stderr"] = done.stderr
        return summary

    def spawn(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """A background `shelfsync` run; its output goes to `HOME/spawn.log`."""
        with (self.home / "spawn.log").open("ab") as log:
            return subprocess.Popen(
                [SHELFSYNC, *args], stdout=log, stderr=subprocess.STDOUT, env=self.env(**env)
            )

    def log(self) -> str:
        return (self.home / "spawn.log").read_text(errors="replace")

    def state_rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows from the client's local state (FOLDER/.shelfsync/state.db), read-only."""
        db = self.folder / ".shelfsync" / "state.db"
        if not db.exists():
            return []
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []  # not created yet
        finally:
            conn.close()

    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.config_dir / "device.json").read_text())
        return data

    @contextmanager
    def api(self) -> Iterator[httpx.Client]:
        """An httpx client with this device's access token (public API only)."""
        config = self.config()
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            grant = client.post(
                "/api/v1/auth/device", json={"device_token": config["device_token"]}
            ).json()
            client.headers["Authorization"] = f"Bearer {grant['access_token']}"
            yield client

    def write(self, rel: str, data: bytes | str) -> Path:
        path = self.folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def tree(self) -> dict[str, str]:
        return folder_tree(self.folder)
