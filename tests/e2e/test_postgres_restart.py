"""PostgreSQL restarted under a live `shelfsync serve` (protocol: 503 `unavailable`).

A real server process runs on a fresh PostgreSQL database while a client
thread loops: a user login, a report of one new file (device token), a feed
read and the user's device list. Meanwhile the machine's PostgreSQL cluster is
stopped, left down for about two seconds and started again. Checked:

- every answer is a 200 or a clean `503 unavailable`: a problem+json body with
  `Retry-After`. A 500, any other status, or a connection shelfsync refused or
  dropped fails the test;
- the outage was actually hit (some 503s were seen);
- afterwards the same server process answers again, without a restart, and
  keeps answering;
- no acknowledged write is lost: every report that got a 200 is in the
  library at its revision (read straight from the database), and the feed read
  from the start lists each of them exactly once.

Restarting the cluster breaks every other test using PostgreSQL at that
moment, so this test carries the `pg_restart` marker: `make test` runs it on
its own, after the parallel run. The cluster is up again when the test ends,
whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from shelfsync.content_hash import EMPTY_HASH
from tests.conftest import PG_ADMIN_URL, create_pg_database, drop_pg_database
from tests.e2e.harness import free_port, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.pg_restart]

SHELFSYNC = str(Path(sys.executable).with_name("shelfsync"))
PASSWORD = "correct horse battery"
START_TIMEOUT_S = 30.0
OUTAGE_S = 2.0
RECOVERY_DEADLINE_S = 30.0
ROUNDS_AFTER_RECOVERY = 10


def _cluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _pg_ready() -> bool:
    ready = subprocess.run(
        ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False, timeout=30
    )
    return ready.returncode == 0


def _ensure_cluster_up() -> None:
    if not _pg_ready():
        # It may have started meanwhile: pg_isready decides below.
        with contextlib.suppress(subprocess.CalledProcessError):
            _cluster("start")
    deadline = time.monotonic() + 60
    while not _pg_ready():
        assert time.monotonic() < deadline, "PostgreSQL did not come back"
        time.sleep(0.2)


def _can_restart_cluster() -> bool:
    return (
        os.geteuid() == 0
        and Path("/etc/postgresql").is_dir()
        and PG_ADMIN_URL.startswith("postgresql://postgres@127.0.0.1:5432/")
    )


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base_url: str
    database_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    if not _can_restart_cluster():
        pytest.skip("needs root and the machine's own PostgreSQL cluster")
    name = create_pg_database()
    database_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    target = ["--data-dir", str(tmp_path / "data"), "--database-url", database_url]
    added = subprocess.run(
        [SHELFSYNC, "user", "add", "alice", "--password-stdin", *target],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [SHELFSYNC, "serve", "--host", "127.0.0.1", "--port", str(port), *target],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_env(),
        )
    served = Served(process, f"http://127.0.0.1:{port}", database_url, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"server exited:\n{served.log()}"
            assert time.monotonic() < deadline, f"server not healthy:\n{served.log()}"
            try:
                if httpx.get(f"{served.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _ensure_cluster_up()
        drop_pg_database(name)


@dataclass
class Client:
    """Loops login, report, feed and device list; records every answer."""

    base_url: str
    device_headers: dict[str, str]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (monotonic time, operation, status) of every answer
    answers: list[tuple[float, str, int]] = field(default_factory=list)
    # clean rounds: time each round (all four operations 200) ended
    clean_rounds: list[float] = field(default_factory=list)
    # path -> (item id, revision) of every acknowledged report
    acknowledged: dict[str, tuple[str, int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, timeout=30) as http:
                n = 0
                while not self.stop.is_set():
                    if self.one_round(http, n):
                        with self.lock:
                            self.clean_rounds.append(time.monotonic())
                    n += 1
        except BaseException as exc:
            self.error = exc

    def send(self, http: httpx.Client, op: str, method: str, url: str, **kw: Any) -> Any:
        """The JSON body of a 200; None after a clean 503; a failure otherwise."""
        try:
            response = http.request(method, url, **kw)
        except httpx.TransportError as exc:
            self.failures.append(f"{op}: no answer from shelfsync: {exc!r}")
            time.sleep(0.05)
            return None
        with self.lock:
            self.answers.append((time.monotonic(), op, response.status_code))
        if response.status_code == 200:
            return response.json()
        if response.status_code == 503 and self._clean_503(response):
            time.sleep(0.05)
            return None
        self.failures.append(f"{op}: {response.status_code} {response.headers} {response.text}")
        return None

    @staticmethod
    def _clean_503(response: httpx.Response) -> bool:
        if not response.headers.get("content-type", "").startswith("application/problem+json"):
            return False
        if not response.headers.get("retry-after", "").isdigit():
            return False
        body = response.json()
        return bool(body.get("status") == 503 and body.get("code") == "unavailable")

    def one_round(self, http: httpx.Client, n: int) -> bool:
        login = self.send(
            http,
            "login",
            "POST",
            "/api/v1/auth/login",
            json={"username": "alice", "password": PASSWORD},
        )
        path = f"restart/f{n:05}.txt"
        change = {
            "op": "upsert",
            "path": path,
            "content_hash": EMPTY_HASH,
            "size": 0,
            "base_revision": None,
        }
        report = self.send(
            http,
            "report",
            "POST",
            "/api/v1/sync/report",
            json={"changes": [change]},
            headers=self.device_headers,
        )
        if report is not None:
            (result,) = report["results"]
            assert result["status"] == "applied", result
            with self.lock:
                self.acknowledged[path] = (result["id"], result["revision"])
        feed = self.send(
            http,
            "feed",
            "GET",
            "/api/v1/sync/changes",
            params={"cursor": "latest"},
            headers=self.device_headers,
        )
        devices = None
        if login is not None:
            user = {"Authorization": f"Bearer {login['access_token']}"}
            devices = self.send(http, "devices", "GET", "/api/v1/sync/devices", headers=user)
        return None not in (login, report, feed, devices)


def _device_headers(base_url: str) -> dict[str, str]:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        login = http.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
        assert login.status_code == 200, login.text
        user = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = http.post("/api/v1/sync/devices", json={"name": "laptop"}, headers=user)
        assert created.status_code == 200, created.text
        granted = http.post("/api/v1/auth/device", json={"device_token": created.json()["token"]})
        assert granted.status_code == 200, granted.text
    return {"Authorization": f"Bearer {granted.json()['access_token']}"}


def _whole_feed(base_url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    with httpx.Client(base_url=base_url, timeout=30, headers=headers) as http:
        while True:
            page = http.get("/api/v1/sync/changes", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            changes += body["changes"]
            if not body["has_more"]:
                return changes
            params["cursor"] = body["cursor"]


def test_postgres_restart_answers_503_then_recovers_without_losing_writes(
    served: Served,
) -> None:
    headers = _device_headers(served.base_url)
    client = Client(served.base_url, headers)
    worker = threading.Thread(target=client.run, name="pg-restart-client", daemon=True)
    worker.start()
    try:
        time.sleep(1.0)
        assert client.clean_rounds, f"no clean round before the restart: {client.failures}"
        stopped_at = time.monotonic()
        _cluster("stop")
        time.sleep(OUTAGE_S)
        _cluster("start")
        _ensure_cluster_up()
        up_at = time.monotonic()
        # The same process answers again, and keeps answering.
        deadline = up_at + RECOVERY_DEADLINE_S
        while True:
            with client.lock:
                after = [t for t in client.clean_rounds if t > up_at]
            if len(after) >= ROUNDS_AFTER_RECOVERY:
                break
            assert client.error is None, client.error
            assert time.monotonic() < deadline, (
                f"no recovery within {RECOVERY_DEADLINE_S}s: {client.failures[-5:]}"
            )
            time.sleep(0.1)
    finally:
        client.stop.set()
        worker.join(timeout=60)
        _ensure_cluster_up()
    assert not worker.is_alive()
    if client.error is not None:
        raise client.error
    assert served.process.poll() is None, f"the server died:\n{served.log()}"
    assert client.failures == [], client.failures[:10]

    statuses = {status for _, _, status in client.answers}
    assert statuses <= {200, 503}, statuses
    outage = [(op, s) for t, op, s in client.answers if s == 503]
    assert outage, "no request hit the outage"
    assert all(t >= stopped_at for t, _, s in client.answers if s == 503)
    # Once a round succeeded after the restart, everything after it did too.
    first_ok = min(t for t in client.clean_rounds if t > up_at)
    late = [(op, s) for t, op, s in client.answers if t > first_ok and s != 200]
    assert late == [], late

    # No acknowledged write lost: in the tables, and once each in the feed.
    with psycopg.connect(served.database_url) as conn:
        rows = conn.execute(
            "SELECT path, id::text, revision FROM items WHERE NOT deleted"
        ).fetchall()
    library = {str(path): (str(item_id), int(rev)) for path, item_id, rev in rows}
    for path, (item_id, revision) in client.acknowledged.items():
        assert library.get(path) == (item_id, revision), path
    feed = _whole_feed(served.base_url, headers)
    ids = [change["id"] for change in feed]
    assert len(ids) == len(set(ids)), "an item appears twice in the feed"
    fed = {change["path"]: (change["id"], change["revision"]) for change in feed}
    for path, entry in client.acknowledged.items():
        assert fed.get(path) == entry, path
    print(
        f"postgres restart: {len(client.answers)} answers, {len(outage)} clean 503s, "
        f"{len(client.acknowledged)} acknowledged reports, none lost"
    )
