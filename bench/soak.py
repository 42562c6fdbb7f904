"""Soak test: many simulated devices against one real `shelfsync serve` process.

For each database (SQLite, then PostgreSQL) one server process is started on a
fresh data directory and database; `--devices` simulated devices (default 100,
ten per user) then work concurrently for `--duration` seconds (default 180):

- report: 1-10 upserts (metadata edits, new empty notes) and the odd delete of
  the device's own notes, with the bases it holds;
- upload: a new or changed file, 1-64 KiB (every tenth one 4 MiB + 1 KiB, two
  chunks): create the session, PUT each chunk, complete;
- download: one of its own files, checked against the expected content hash;
- feed: a long-poll (`wait=1`) following its own cursor.

Each device writes only under its own folder, so every answer is known in
advance: a report change must come back `applied`, an upload must complete
`applied`. Any other answer, any 4xx/5xx other than a 429/503 carrying
`Retry-After` (which is honoured and counted as throttling), and any request
that gets no answer count as errors. At the end, for every user, the feed read
from the start lists each live item exactly once, and every device's last
acknowledged state of each of its paths is what the library holds (deleted
notes are absent). The server's resident memory (the process and its children)
is sampled every few seconds: the maximum of the last third of the run must
not exceed the middle third's maximum by more than `--rss-tolerance`.

Prints, per database, throughput and p50/p99 latencies per operation, RSS at
start, middle and end, and the error count. Exits non-zero on any error, lost
or duplicated change, or memory that keeps growing.

    .venv/bin/python bench/soak.py --duration 60
    .venv/bin/python bench/soak.py --databases sqlite --devices 20 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg

from shelfsync.content_hash import EMPTY_HASH, hash_bytes

SHELFSYNC = str(Path(sys.executable).with_name("shelfsync"))
PG_ADMIN_URL = os.environ.get("SHELFSYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_PREFIX = "shelfsync_soak_"
PASSWORD = "soak-password-123"  # noqa: S105 (a throwaway test account)
DEVICES_PER_USER = 10
MIB = 1024 * 1024
CHUNK = 4 * MIB
LONG_POLL_S = 1
RSS_EVERY_S = 3.0
MAX_RETRY_AFTER_S = 10.0

Json = dict[str, Any]


class SoakError(AssertionError):
    """A broken promise (an unexpected answer, a lost or duplicated change)."""


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    throttled: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    errors: list[str] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass
class Device:
    index: int
    username: str
    token: str  # the long-lived device token, exchanged for access tokens
    headers: dict[str, str] = field(default_factory=dict)
    cursor: str | None = None
    # path -> (item id, revision, content hash) of the last acknowledged state
    held: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    counter: int = 0

    @property
    def folder(self) -> str:
        return f"d{self.index:03}"


class Server:
    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.pg_name: str | None = None
        if kind == "sqlite":
            self.database_url = f"sqlite:///{root / 'shelfsync.db'}"
        else:
            self.pg_name = f"{PG_PREFIX}{uuid.uuid4().hex[:16]}"
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.pg_name}"')
            self.database_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{self.pg_name}"
        self.target = ["--data-dir", str(root / "data"), "--database-url", self.database_url]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SHELFSYNC_") or k.startswith("SHELFSYNC_ARGON2_")
        }

    def add_user(self, name: str) -> None:
        done = subprocess.run(
            [SHELFSYNC, "user", "add", name, "--password-stdin", *self.target],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise SoakError(f"user add {name}: {done.stderr}")

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    SHELFSYNC,
                    "serve",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    *self.target,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SoakError(f"server exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SoakError("server did not become healthy")

    def rss_mib(self) -> float:
        """Resident memory of the server process and its children, in MiB."""
        assert self.process is not None
        pids = [self.process.pid]
        tasks = Path(f"/proc/{self.process.pid}/task")
        for task in tasks.glob("*/children"):
            pids += [int(p) for p in task.read_text().split()]
        kib = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        kib += int(line.split()[1])
            except FileNotFoundError:
                pass
        return kib / 1024

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.pg_name is not None:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')


class Worker:
    """One simulated device's loop."""

    def __init__(self, device: Device, http: httpx.AsyncClient, stats: Stats, seed: int) -> None:
        self.device = device
        self.http = http
        self.stats = stats
        self.rng = random.Random(seed)

    async def call(
        self,
        op: str,
        method: str,
        url: str,
        *,
        extra_headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send until an answer other than documented throttling comes back."""
        while True:
            started = time.perf_counter()
            try:
                response = await self.http.request(
                    method, url, headers={**self.device.headers, **(extra_headers or {})}, **kwargs
                )
            except httpx.TransportError as exc:
                self.stats.errors.append(f"{op}: no answer: {exc!r}")
                await asyncio.sleep(0.5)
                continue
            elapsed = time.perf_counter() - started
            if response.status_code == 401:
                await self.authenticate()  # the access token expired: exchange again
                continue
            if response.status_code in (429, 503) and "retry-after" in response.headers:
                self.stats.throttled[response.status_code] += 1
                await asyncio.sleep(min(float(response.headers["retry-after"]), MAX_RETRY_AFTER_S))
                continue
            if response.status_code in (200, 304):
                self.stats.latencies[op].append(elapsed)
                return response
            raise SoakError(f"{op} {url}: {response.status_code} {response.text[:500]}")

    async def authenticate(self) -> None:
        granted = await self.http.post(
            "/api/v1/auth/device", json={"device_token": self.device.token}
        )
        if granted.status_code != 200:
            raise SoakError(f"device token exchange: {granted.status_code} {granted.text}")
        self.device.headers = {"Authorization": f"Bearer {granted.json()['access_token']}"}

    async def run(self, deadline: float) -> None:
        try:
            while time.monotonic() < deadline:
                roll = self.rng.random()
                if roll < 0.35:
                    await self.report()
                elif roll < 0.55:
                    await self.upload()
                elif roll < 0.75:
                    await self.download()
                else:
                    await self.feed()
        except SoakError as exc:
            self.stats.errors.append(f"device {self.device.index}: {exc}")

    async def report(self) -> None:
        d = self.device
        notes = [p for p in d.held if "/notes/" in p]
        changes: list[Json] = []
        for _ in range(self.rng.randint(1, 10)):
            d.counter += 1
            if notes and self.rng.random() < 0.7:
                path = self.rng.choice(notes)
            else:
                path = f"{d.folder}/notes/n{d.counter:06}.txt"
            if any(c["path"] == path for c in changes):
                continue
            base = d.held[path][1] if path in d.held else None
            changes.append(
                {
                    "op": "upsert",
                    "path": path,
                    "content_hash": EMPTY_HASH,
                    "size": 0,
                    "metadata": {"v": d.counter},
                    "base_revision": base,
                }
            )
        if notes and self.rng.random() < 0.2:
            victim = self.rng.choice(notes)
            if all(c["path"] != victim for c in changes):
                changes.append({"op": "delete", "path": victim, "base_revision": d.held[victim][1]})
        response = await self.call(
            "report", "POST", "/api/v1/sync/report", json={"changes": changes}
        )
        results = response.json()["results"]
        if len(results) != len(changes):
            raise SoakError(f"report: {len(changes)} changes, {len(results)} results")
        for change, result in zip(changes, results, strict=True):
            # `unchanged` only after a retry of an applied batch.
            if result["status"] not in ("applied", "unchanged"):
                raise SoakError(f"report {change}: {result}")
            if change["op"] == "delete":
                del d.held[change["path"]]
                d.deleted.add(change["path"])
            else:
                d.held[change["path"]] = (result["id"], result["revision"], EMPTY_HASH)
                d.deleted.discard(change["path"])

    async def upload(self) -> None:
        d = self.device
        files = [p for p in d.held if "/files/" in p]
        d.counter += 1
        if files and self.rng.random() < 0.3:
            path = self.rng.choice(files)
        else:
            path = f"{d.folder}/files/u{d.counter:06}.bin"
        size = CHUNK + 1024 if d.counter % 10 == 0 else self.rng.randint(1024, 64 * 1024)
        data = self.rng.randbytes(size)
        content_hash = hash_bytes(data)
        base = d.held[path][1] if path in d.held else None
        created = await self.call(
            "upload_create",
            "POST",
            "/api/v1/sync/upload",
            json={
                "path": path,
                "size": size,
                "content_hash": content_hash,
                "base_revision": base,
                "chunk_size": CHUNK,
            },
        )
        session = created.json()
        chunk_size = session["chunk_size"]
        for index in range(session["chunk_count"]):
            if index in session["received"]:
                continue
            body = data[index * chunk_size : (index + 1) * chunk_size]
            await self.call(
                "upload_chunk",
                "PUT",
                f"/api/v1/sync/upload/{session['id']}/chunks/{index}",
                content=body,
                extra_headers={"Content-Type": "application/octet-stream"},
            )
            self.stats.bytes_up += len(body)
        done = await self.call(
            "upload_complete", "POST", f"/api/v1/sync/upload/{session['id']}/complete"
        )
        result = done.json()["result"]
        if result["status"] not in ("applied", "unchanged"):
            raise SoakError(f"upload {path}: {result}")
        d.held[path] = (result["id"], result["revision"], content_hash)

    async def download(self) -> None:
        d = self.device
        files = [p for p in d.held if "/files/" in p]
        if not files:
            await self.upload()
            return
        path = self.rng.choice(files)
        url = "/api/v1/sync/download/" + "/".join(quote(s, safe="") for s in path.split("/"))
        response = await self.call("download", "GET", url)
        expected = d.held[path][2]
        if hash_bytes(response.content) != expected:
            raise SoakError(f"download {path}: wrong content")
        self.stats.bytes_down += len(response.content)

    async def feed(self) -> None:
        d = self.device
        while True:
            params: Json = {"wait": LONG_POLL_S, "limit": 1000}
            if d.cursor is not None:
                params["cursor"] = d.cursor
            response = await self.call("feed", "GET", "/api/v1/sync/changes", params=params)
            page = response.json()
            d.cursor = page["cursor"]
            if not page["has_more"]:
                return


async def whole_feed(http: httpx.AsyncClient, headers: dict[str, str]) -> list[Json]:
    changes: list[Json] = []
    params: Json = {"limit": 1000}
    while True:
        response = await http.get("/api/v1/sync/changes", params=params, headers=headers)
        if response.status_code != 200:
            raise SoakError(f"final feed: {response.status_code} {response.text}")
        page = response.json()
        changes += page["changes"]
        if not page["has_more"]:
            return changes
        params["cursor"] = page["cursor"]


def check_library(devices: list[Device], feeds: dict[str, list[Json]]) -> list[str]:
    """Each live item once in its user's feed; every acknowledged state there."""
    problems: list[str] = []
    for username, feed in feeds.items():
        ids = [c["id"] for c in feed]
        paths = [c["path"] for c in feed]
        if len(ids) != len(set(ids)) or len(paths) != len(set(paths)):
            problems.append(f"{username}: an item appears twice in the feed from the start")
        if any(c.get("deleted") for c in feed):
            problems.append(f"{username}: a tombstone in the feed from the start")
        library = {c["path"]: (c["id"], c["revision"], c.get("content_hash")) for c in feed}
        for device in (d for d in devices if d.username == username):
            for path, state in device.held.items():
                if library.get(path) != state:
                    problems.append(f"{path}: acknowledged {state}, library {library.get(path)}")
            problems += [f"{p}: deleted but still listed" for p in device.deleted if p in library]
            mine = {p for p in library if p.startswith(device.folder + "/")}
            problems += [f"{p}: listed, never acknowledged" for p in mine - set(device.held)]
    return problems


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def soak(kind: str, args: argparse.Namespace) -> bool:
    with tempfile.TemporaryDirectory(prefix=f"shelfsync-soak-{kind}-") as tmp:
        server = Server(kind, Path(tmp))
        try:
            return await _soak_on(server, args)
        finally:
            server.stop()


async def _soak_on(server: Server, args: argparse.Namespace) -> bool:
    users = [
        f"user{u:02}" for u in range((args.devices + DEVICES_PER_USER - 1) // DEVICES_PER_USER)
    ]
    for name in users:
        server.add_user(name)
    server.start()
    limits = httpx.Limits(max_connections=args.devices + 10, max_keepalive_connections=args.devices)
    stats = Stats()
    devices: list[Device] = []
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=LONG_POLL_S + 60, limits=limits
    ) as http:
        user_headers: dict[str, dict[str, str]] = {}
        for name in users:
            login = await http.post(
                "/api/v1/auth/login", json={"username": name, "password": PASSWORD}
            )
            if login.status_code != 200:
                raise SoakError(f"login {name}: {login.text}")
            user_headers[name] = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for i in range(args.devices):
            name = users[i // DEVICES_PER_USER]
            created = await http.post(
                "/api/v1/sync/devices", json={"name": f"device{i}"}, headers=user_headers[name]
            )
            if created.status_code != 200:
                raise SoakError(f"device {i}: {created.text}")
            devices.append(Device(i, name, created.json()["token"]))
        workers = [Worker(d, http, stats, args.seed + d.index) for d in devices]
        for worker in workers:
            await worker.authenticate()

        rss: list[tuple[float, float]] = [(0.0, server.rss_mib())]
        started = time.monotonic()
        deadline = started + args.duration
        tasks = [asyncio.create_task(w.run(deadline)) for w in workers]
        while not all(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=RSS_EVERY_S)
            rss.append((time.monotonic() - started, server.rss_mib()))
        elapsed = time.monotonic() - started
        for task in tasks:
            task.result()

        feeds = {name: await whole_feed(http, headers) for name, headers in user_headers.items()}
    problems = check_library(devices, feeds)
    if server.process is None or server.process.poll() is not None:
        problems.append("the server process died")
    log = server.log_path.read_text(errors="replace")
    if "Traceback" in log:
        problems.append("the server log holds a traceback")

    third = args.duration / 3
    middle = [m for t, m in rss if third <= t < 2 * third]
    last = [m for t, m in rss if t >= 2 * third]
    rss_ok = bool(middle and last) and max(last) <= max(middle) * (1 + args.rss_tolerance)

    print(f"\n== {server.kind}: {args.devices} devices, {elapsed:.0f} s")
    print(f"{'operation':<16}{'count':>8}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    total = 0
    for op in ("report", "upload_create", "upload_chunk", "upload_complete", "download", "feed"):
        values = stats.latencies.get(op, [])
        total += len(values)
        print(
            f"{op:<16}{len(values):>8}{len(values) / elapsed:>9.1f}"
            f"{percentile(values, 50) * 1000:>9.1f}{percentile(values, 99) * 1000:>9.1f}"
        )
    print(f"{'all requests':<16}{total:>8}{total / elapsed:>9.1f}")
    print(f"feed = long-poll with wait={LONG_POLL_S}s (its latency includes the wait)")
    print(f"uploaded {stats.bytes_up / MIB:.1f} MiB, downloaded {stats.bytes_down / MIB:.1f} MiB")
    print(
        f"RSS MiB: start {rss[0][1]:.0f}, middle-third max {max(middle, default=0):.0f}, "
        f"last-third max {max(last, default=0):.0f}, end {rss[-1][1]:.0f} "
        f"({'levels off' if rss_ok else 'STILL GROWING'})"
    )
    throttled = ", ".join(f"{k}: {v}" for k, v in sorted(stats.throttled.items())) or "none"
    print(f"throttled (429/503 with Retry-After, retried): {throttled}")
    print(f"errors: {len(stats.errors)}; lost or duplicated changes: {len(problems)}")
    for line in (stats.errors + problems)[:20]:
        print(f"  {line}")
    return not stats.errors and not problems and rss_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds per database")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument(
        "--rss-tolerance", type=float, default=0.10, help="allowed growth, last third vs middle"
    )
    args = parser.parse_args()
    ok = True
    for kind in args.databases.split(","):
        ok = asyncio.run(soak(kind.strip(), args)) and ok
    print("\nsoak:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
