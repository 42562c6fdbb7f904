"""Helpers shared by bench/transfer.py and bench/longpoll.py (not a bench script).

A real `shelfsync serve` in a scratch data dir on a free loopback port (with a
user and a device), a private nginx (static files + WebDAV PUT) like
../shared/bench/http_bench.sh starts, and the RSS of a process tree from /proc.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SHELFSYNC = str(Path(sys.executable).with_name("shelfsync"))
PASSWORD = "bench-password-123"  # noqa: S105 (a throwaway account in a scratch dir)
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


class BenchError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(
    port: int, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"exited during start-up:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise BenchError(f"port {port} never opened:\n{log.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen[bytes] | None, timeout_s: float = 15) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree_pids(root: int) -> list[int]:
    kids = _children()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(kids.get(pid, ()))
    return pids


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (and their reaped children)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / CLOCK_TICKS


def rss_bytes(pids: list[int]) -> int:
    """Sum of resident memory (VmRSS: anon + file + shmem) over these processes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * PAGE_KIB * 1024
        except (OSError, IndexError, ValueError):
            continue
    return total


@dataclass
class Shelfsync:
    """`shelfsync serve --server NAME` with one user and `devices` devices."""

    root: Path
    server: str
    devices: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    device_tokens: list[str] = field(default_factory=list)
    access_tokens: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFSYNC_")}
        # Logins are not what is measured: a cheap argon2 for the bench account.
        env["SHELFSYNC_ARGON2_TIME_COST"] = "1"
        env["SHELFSYNC_ARGON2_MEMORY_KIB"] = "8192"
        env["SHELFSYNC_ACCESS_TOKEN_TTL_S"] = "86400"  # noqa: S105 (a lifetime, not a secret)
        env.update(self.extra_env)
        return env

    def start(self) -> Shelfsync:
        self.root.mkdir(parents=True, exist_ok=True)
        added = subprocess.run(
            [
                SHELFSYNC,
                "user",
                "add",
                "bench",
                "--password-stdin",
                "--data-dir",
                str(self.data_dir),
            ],
            input=(PASSWORD + "\n").encode(),
            env=self.env(),
            capture_output=True,
            check=False,
        )
        if added.returncode != 0:
            raise BenchError(f"user add failed: {added.stderr.decode(errors='replace')}")
        self.port = free_port()
        log_path = self.root / f"server-{self.server}.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    SHELFSYNC,
                    "serve",
                    "--server",
                    self.server,
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
            )
        try:
            wait_port(self.port, self.process, log_path)
        except BaseException:
            self.stop()
            raise
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while http.get("/healthz").status_code != 200:
                if time.monotonic() > deadline:
                    raise BenchError("server not healthy")
                time.sleep(0.05)
            login = http.post(
                "/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}
            )
            user = {"Authorization": f"Bearer {_ok(login)['access_token']}"}
            for n in range(self.devices):
                made = _ok(http.post("/api/v1/sync/devices", json={"name": f"d{n}"}, headers=user))
                self.device_tokens.append(made["token"])
                grant = _ok(http.post("/api/v1/auth/device", json={"device_token": made["token"]}))
                self.access_tokens.append(grant["access_token"])
        return self

    def pids(self) -> list[int]:
        assert self.process is not None
        return tree_pids(self.process.pid)

    def rss(self) -> int:
        return rss_bytes(self.pids())

    def stop(self) -> None:
        stop(self.process)


def _ok(response: httpx.Response) -> dict[str, str]:
    if response.status_code != 200:
        raise BenchError(f"{response.request.url}: {response.status_code} {response.text[:300]}")
    body: dict[str, str] = response.json()
    return body


@dataclass
class Nginx:
    """A private nginx: GET /files/<name> from `files`, WebDAV PUT to /dav/<name>."""

    root: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def files(self) -> Path:
        return self.root / "files"

    @property
    def dav(self) -> Path:
        return self.root / "dav"

    def start(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise BenchError("nginx is not installed (make benchdeps, or apt-get install nginx)")
        conf_dir = self.root / "conf"
        for folder in (conf_dir, self.files, self.dav, self.root / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        user = "user root;" if os.geteuid() == 0 else ""
        (conf_dir / "nginx.conf").write_text(
            f"""{user}
worker_processes 1;
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on; tcp_nopush on;
  keepalive_requests 100000;
  default_type application/octet-stream;
  client_body_temp_path {self.root}/tmp;
  proxy_temp_path {conf_dir}/proxy; fastcgi_temp_path {conf_dir}/fcgi;
  uwsgi_temp_path {conf_dir}/uwsgi; scgi_temp_path {conf_dir}/scgi;
  server {{
    listen 127.0.0.1:{self.port};
    location /files/ {{ root {self.root}; }}
    location /dav/ {{
      root {self.root};
      dav_methods PUT DELETE;
      create_full_put_path on;
      client_max_body_size 0;
    }}
  }}
}}
"""
        )
        log_path = conf_dir / "stdout.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    "-p",
                    str(conf_dir),
                    "-c",
                    str(conf_dir / "nginx.conf"),
                    "-g",
                    "daemon off;",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_port(self.port, self.process, log_path)
        return self

    def stop(self) -> None:
        stop(self.process)


def make_payload(path: Path, size: int) -> None:
    """Deterministic incompressible bytes (AES-128-CTR keystream, like ../shared/bench)."""
    if path.exists() and path.stat().st_size == size:
        return
    with path.open("wb") as out:
        enc = subprocess.Popen(
            [
                "openssl",
                "enc",
                "-aes-128-ctr",
                "-K",
                "000102030405060708090a0b0c0d0e0f",
                "-iv",
                "00000000000000000000000000000001",
                "-nosalt",
                "-in",
                "/dev/zero",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert enc.stdout is not None
        left = size
        while left:
            data = enc.stdout.read(min(left, 8 << 20))
            if not data:
                break
            out.write(data)
            left -= len(data)
        enc.kill()
        enc.wait()
    if path.stat().st_size != size:
        raise BenchError("could not make the payload")
