"""Scale-out: several server processes on one PostgreSQL database, behind nginx.

Two `shelfsync serve` processes (A and B) share one PostgreSQL database of
their own and one data directory; a private nginx, run as this user from the
very config the docs ship (docs/nginx/shelfsync.conf, rendered with free
ports), balances between them on loopback. Checked through real processes and
real sockets only:

- two devices (the `shelfsync` CLI) converge through nginx, and again while
  each is pinned to a different process;
- a long-poll held by one process wakes within a second of a report committed
  through the other (PostgreSQL LISTEN/NOTIFY), in both directions;
- writers on both processes at once keep every item's revisions gap-free, the
  library's seqs contiguous, and a feed follower complete;
- one upload session takes chunks through A and B in parallel and completes
  through B; the bytes come back through nginx;
- failed logins through both processes at once are all counted;
- `serve --workers 2` runs two processes on one port, each listening, and a
  change through one worker wakes a wait held by the other; SQLite refuses it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from shelfsync.content_hash import EMPTY_HASH, hash_bytes
from tests.conftest import PG_ADMIN_URL, create_pg_database, drop_pg_database
from tests.e2e.harness import (
    PASSWORD,
    SHELFSYNC,
    Device,
    Server,
    free_port,
    server_env,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SITE_CONFIG = Path(__file__).resolve().parents[2] / "docs" / "nginx" / "shelfsync.conf"
# The protocol's promise: a held request answers within a second of the commit.
WAKE_BUDGET_S = 1.0
# The feed's fallback poll (services/feed.py): a wake faster than this after
# the wait began came from a signal, not from the poll.
FALLBACK_POLL_S = 5.0
CHANGES = "/api/v1/sync/changes"
REPORT = "/api/v1/sync/report"
UPLOAD = "/api/v1/sync/upload"
MiB = 1024 * 1024

_users = itertools.count(1)


def _pg_url(name: str) -> str:
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


# -- nginx ------------------------------------------------------------------


@dataclass
class Nginx:
    root: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish open requests
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def render_site(*, listen_port: int, upstream_ports: list[int]) -> str:
    """docs/nginx/shelfsync.conf with this test's ports, and nothing else changed."""
    text = SITE_CONFIG.read_text()
    documented = re.findall(r"^\s*server (127\.0\.0\.1:\d+) ", text, flags=re.MULTILINE)
    assert len(documented) == len(upstream_ports), documented
    for address, port in zip(documented, upstream_ports, strict=True):
        text = text.replace(f"server {address} ", f"server 127.0.0.1:{port} ", 1)
    assert text.count("listen 80;") == 1
    return text.replace("listen 80;", f"listen 127.0.0.1:{listen_port};")


def start_nginx(root: Path, upstream_ports: list[int]) -> Nginx:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.fail("nginx is missing: `make sysdeps` installs it (Debian package nginx)")
    root.mkdir(parents=True)
    port = free_port()
    (root / "shelfsync.conf").write_text(
        render_site(listen_port=port, upstream_ports=upstream_ports)
    )
    # Everything nginx writes stays in `root`; it runs as this user, in front.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    (root / "nginx.conf").write_text(
        f"""{user}daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {root}/shelfsync.conf;
}}
"""
    )
    with (root / "stdout.log").open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                "-p",
                str(root),
                "-e",
                str(root / "error.log"),
                "-c",
                str(root / "nginx.conf"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    nginx = Nginx(root, port, process)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited {process.returncode}:\n{nginx.log()}")
        try:
            return httpx.get(f"{nginx.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout_s=15, what="nginx to answer /healthz")
    return nginx


# -- the cluster ------------------------------------------------------------


@dataclass
class Cluster:
    a: Server
    b: Server
    nginx: Nginx
    # A handle for clients: the address nginx answers on (no process of its own).
    balanced: Server

    def new_user(self) -> str:
        name = f"scale{next(_users)}"
        self.a.add_user(name)
        return name


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_template: str) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("scale_out")
    data = root / "data"
    data.mkdir()
    name = create_pg_database(template=pg_template)
    url = _pg_url(name)
    a = Server(data_dir=data, database_url=url, name="a")
    b = Server(data_dir=data, database_url=url, name="b")
    nginx: Nginx | None = None
    try:
        a.start()
        b.start()
        nginx = start_nginx(root / "nginx", [a.port, b.port])
        balanced = Server(data_dir=data, database_url=url, port=nginx.port, name="nginx")
        yield Cluster(a, b, nginx, balanced)
        for server in (a, b):
            assert server.process is not None
            assert server.process.poll() is None, f"server {server.name} died"
    finally:
        if nginx is not None:
            nginx.stop()
        for server in (a, b):
            server.stop()
        drop_pg_database(name)
    for server in (a, b):
        assert server.log_path is not None
        assert "Traceback" not in server.log_path.read_text(errors="replace")


def api_device(base_url: str, user: str, name: str) -> str:
    """A new device of `user`, registered over HTTP (no CLI run); its device token."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        login = http.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
        assert login.status_code == 200, login.text
        created = http.post(
            "/api/v1/sync/devices",
            json={"name": name},
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        )
        assert created.status_code == 200, created.text
    return str(created.json()["token"])


def token_headers(device_token: str, base_url: str) -> dict[str, str]:
    """An access token for the device, granted by the server at `base_url`."""
    granted = httpx.post(
        f"{base_url}/api/v1/auth/device", json={"device_token": device_token}, timeout=30
    )
    assert granted.status_code == 200, granted.text
    return {"Authorization": f"Bearer {granted.json()['access_token']}"}


def pin(device: Device, server: Server) -> None:
    """From now on the device's CLI talks to `server` only."""
    path = device.config_dir / "device.json"
    text = path.read_text()
    current = device.config()["server_url"]
    path.write_text(text.replace(current, server.url))


def feed_waiters(base_url: str) -> int:
    body = httpx.get(f"{base_url}/metrics", timeout=5).text
    match = re.search(r"^shelfsync_feed_waiters (\S+)$", body, flags=re.MULTILINE)
    assert match, "shelfsync_feed_waiters missing from /metrics"
    return int(float(match.group(1)))


def upsert(path: str, base_revision: int | None, n: int) -> dict[str, Any]:
    return {
        "op": "upsert",
        "path": path,
        "content_hash": EMPTY_HASH,
        "size": 0,
        "base_revision": base_revision,
        "metadata": {"n": n},
    }


def latest_cursor(http: httpx.Client, headers: dict[str, str]) -> str:
    page = http.get(CHANGES, params={"cursor": "latest"}, headers=headers)
    assert page.status_code == 200, page.text
    return str(page.json()["cursor"])


# -- devices ----------------------------------------------------------------


def test_two_devices_converge_through_nginx_and_pinned_to_different_processes(
    cluster: Cluster, tmp_path: Path
) -> None:
    user = cluster.new_user()
    laptop = Device("laptop", cluster.balanced, tmp_path / "laptop", username=user)
    desktop = Device("desktop", cluster.balanced, tmp_path / "desktop", username=user)
    laptop.login()
    desktop.login()

    # Through nginx: a small file and one of several chunks (streamed through it).
    laptop.write("notes/today.txt", "written on the laptop\n")
    laptop.write("photos/big.bin", os.urandom(9 * MiB))
    assert laptop.sync()["exit"] == 0
    assert desktop.sync()["exit"] == 0
    assert desktop.tree() == laptop.tree()

    # Pinned: the laptop talks to A only, the desktop to B only.
    pin(laptop, cluster.a)
    pin(desktop, cluster.b)
    for device in (laptop, desktop):
        assert device.sync()["exit"] == 0  # re-bound to the new address: nothing moves
    assert desktop.tree() == laptop.tree()
    desktop.write("notes/today.txt", "edited on the desktop\n")
    desktop.write("notes/desk.txt", "new on the desktop\n")
    assert desktop.sync()["exit"] == 0
    laptop.write("notes/lap.txt", "new on the laptop\n")
    (laptop.folder / "photos" / "big.bin").unlink()
    assert laptop.sync()["exit"] == 0  # takes the desktop's changes through A
    assert desktop.sync()["exit"] == 0  # takes the laptop's through B
    assert desktop.tree() == laptop.tree()
    assert laptop.tree() == {
        "notes/today.txt": hash_bytes(b"edited on the desktop\n"),
        "notes/desk.txt": hash_bytes(b"new on the desktop\n"),
        "notes/lap.txt": hash_bytes(b"new on the laptop\n"),
    }
    assert cluster.balanced.library(laptop) == laptop.tree()


# -- long-poll --------------------------------------------------------------


def test_long_poll_held_by_one_process_wakes_on_a_report_through_the_other(
    cluster: Cluster,
) -> None:
    user = cluster.new_user()
    reader = api_device(cluster.nginx.url, user, "reader")
    writer = api_device(cluster.nginx.url, user, "writer")
    for round_, (waiter, reporter) in enumerate(
        [(cluster.b, cluster.a), (cluster.a, cluster.b), (cluster.b, cluster.a)]
    ):
        reader_auth = token_headers(reader, waiter.url)
        writer_auth = token_headers(writer, reporter.url)
        answer: dict[str, Any] = {}
        with httpx.Client(base_url=waiter.url, timeout=60) as http:
            cursor = latest_cursor(http, reader_auth)

            def hold(
                http: httpx.Client = http,
                params: dict[str, Any] = {"cursor": cursor, "wait": 30},  # noqa: B006
                headers: dict[str, str] = reader_auth,
                answer: dict[str, Any] = answer,
            ) -> None:
                began = time.monotonic()
                page = http.get(CHANGES, params=params, headers=headers)
                answer.update(page=page, began=began, ended=time.monotonic())

            before = feed_waiters(waiter.url)
            holder = threading.Thread(target=hold, daemon=True)
            holder.start()
            wait_until(
                lambda before=before, waiter=waiter: feed_waiters(waiter.url) > before,
                timeout_s=10,
                what=f"the wait to be held by {waiter.name}",
            )
            reported = httpx.post(
                f"{reporter.url}{REPORT}",
                json={"changes": [upsert(f"wake/{round_}.txt", None, round_)]},
                headers=writer_auth,
                timeout=30,
            )
            committed = time.monotonic()
            assert reported.status_code == 200, reported.text
            holder.join(timeout=30)
            assert not holder.is_alive(), "the held request never answered"

        page = answer["page"]
        assert page.status_code == 200, page.text
        assert [c["path"] for c in page.json()["changes"]] == [f"wake/{round_}.txt"]
        latency = answer["ended"] - committed
        where = f"held by {waiter.name}, reported through {reporter.name}"
        assert latency < WAKE_BUDGET_S, f"{where}: woke {latency:.3f} s after the commit"
        assert answer["ended"] - answer["began"] < FALLBACK_POLL_S, f"{where}: the fallback poll"


# -- concurrent writes ------------------------------------------------------


@dataclass
class Applied:
    path: str
    revision: int
    seq: int


def test_concurrent_writes_through_both_processes_keep_revisions_gap_free(
    cluster: Cluster,
) -> None:
    user = cluster.new_user()
    writers = [api_device(cluster.nginx.url, user, f"w{i}") for i in range(4)]
    follow_auth = token_headers(api_device(cluster.nginx.url, user, "follower"), cluster.nginx.url)
    rounds, items_per_writer = 15, 3
    with httpx.Client(base_url=cluster.nginx.url, timeout=60) as http:
        start_cursor = latest_cursor(http, follow_auth)
    done = threading.Event()
    seen: list[tuple[str, int, int]] = []  # (path, revision, seq) in delivery order
    follow_errors: list[str] = []

    def follow() -> None:
        """Long-polls the feed through nginx until the writers are done and it is caught up."""
        cursor = start_cursor
        with httpx.Client(base_url=cluster.nginx.url, timeout=60) as http:
            while True:
                finished = done.is_set()
                page = http.get(
                    CHANGES,
                    params={"cursor": cursor, "wait": 0 if finished else 5, "limit": 50},
                    headers=follow_auth,
                )
                if page.status_code != 200:
                    follow_errors.append(page.text)
                    return
                body = page.json()
                seen.extend((c["path"], c["revision"], c["seq"]) for c in body["changes"])
                cursor = body["cursor"]
                if finished and not body["has_more"]:
                    return

    def write(index: int) -> list[Applied]:
        # Writers 0 and 2 go through A, 1 and 3 through B.
        base_url = (cluster.a if index % 2 == 0 else cluster.b).url
        auth = token_headers(writers[index], base_url)
        revisions: dict[str, int | None] = {
            f"w{index}/item{k}.txt": None for k in range(items_per_writer)
        }
        applied: list[Applied] = []
        with httpx.Client(base_url=base_url, timeout=60) as http:
            for n in range(rounds):
                changes = [upsert(path, rev, n) for path, rev in revisions.items()]
                answer = http.post(REPORT, json={"changes": changes}, headers=auth)
                assert answer.status_code == 200, answer.text
                for result in answer.json()["results"]:
                    assert result["status"] == "applied", result
                    revisions[result["path"]] = result["revision"]
                    applied.append(Applied(result["path"], result["revision"], result["seq"]))
        return applied

    follower_thread = threading.Thread(target=follow, daemon=True)
    follower_thread.start()
    with ThreadPoolExecutor(len(writers)) as pool:
        applied = [a for part in pool.map(write, range(len(writers))) for a in part]
    done.set()
    follower_thread.join(timeout=60)
    assert not follower_thread.is_alive()
    assert follow_errors == []

    # Every item's revisions run 1..N without a gap, N = the writes acknowledged.
    by_path: dict[str, list[int]] = {}
    for a in applied:
        by_path.setdefault(a.path, []).append(a.revision)
    assert len(by_path) == len(writers) * items_per_writer
    for path, revs in by_path.items():
        assert revs == list(range(1, rounds + 1)), (path, revs)
    # One seq per accepted change, contiguous: no seq lost or given twice.
    seqs = sorted(a.seq for a in applied)
    assert seqs == list(range(seqs[0], seqs[0] + len(applied))), "seqs have gaps or repeats"
    with psycopg.connect(cluster.a.database_url or "") as conn:
        stored = conn.execute(
            "SELECT i.path, array_agg(r.revision ORDER BY r.revision) FROM items i "
            "JOIN users u ON u.id = i.user_id JOIN revisions r ON r.item_id = i.id "
            "WHERE u.username = %s GROUP BY i.path",
            (user,),
        ).fetchall()
    assert {str(p): list(revs) for p, revs in stored} == {
        p: list(range(1, rounds + 1)) for p in by_path
    }

    # The follower's feed: seqs only grow, and it ends at every item's last revision.
    delivered = [seq for _, _, seq in seen]
    assert delivered == sorted(delivered)
    assert len(set(delivered)) == len(delivered)
    final = {path: revision for path, revision, _ in seen}
    assert final == dict.fromkeys(by_path, rounds)
    # The feed read from the start lists each item once, at its last revision.
    library: dict[str, int] = {}
    with httpx.Client(base_url=cluster.nginx.url, timeout=60) as http:
        params: dict[str, Any] = {"limit": 7}
        while True:
            body = http.get(CHANGES, params=params, headers=follow_auth).json()
            for change in body["changes"]:
                assert change["path"] not in library, "an item listed twice"
                library[change["path"]] = change["revision"]
            params["cursor"] = body["cursor"]
            if not body["has_more"]:
                break
    assert library == final


# -- uploads ----------------------------------------------------------------


def test_upload_session_takes_chunks_through_both_processes_and_completes_through_either(
    cluster: Cluster,
) -> None:
    user = cluster.new_user()
    camera = api_device(cluster.nginx.url, user, "camera")
    auth = {"a": token_headers(camera, cluster.a.url), "b": token_headers(camera, cluster.b.url)}
    urls = {"a": cluster.a.url, "b": cluster.b.url}
    data = os.urandom(3 * 4 * MiB + 12_345)
    content_hash = hash_bytes(data)
    created = httpx.post(
        f"{urls['a']}{UPLOAD}",
        json={
            "path": "video/clip.bin",
            "size": len(data),
            "content_hash": content_hash,
            "base_revision": None,
            "chunk_size": 4 * MiB,
        },
        headers=auth["a"],
        timeout=30,
    )
    assert created.status_code in (200, 201), created.text
    session = created.json()
    assert session["chunk_count"] == 4
    size = session["chunk_size"]

    def put(index: int) -> int:
        via = "a" if index % 2 == 0 else "b"
        body = data[index * size : (index + 1) * size]
        answer = httpx.put(
            f"{urls[via]}{UPLOAD}/{session['id']}/chunks/{index}",
            content=body,
            headers={**auth[via], "Content-Type": "application/octet-stream"},
            timeout=60,
        )
        assert answer.status_code in (200, 201), answer.text
        return int(answer.json()["received_count"])

    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(put, range(4)))
    assert max(counts) == 4

    completed = httpx.post(
        f"{urls['b']}{UPLOAD}/{session['id']}/complete", headers=auth["b"], timeout=60
    )
    assert completed.status_code == 200, completed.text
    result = completed.json()["result"]
    assert result["status"] == "applied", result
    # Completing again through the other process answers the same, once.
    again = httpx.post(
        f"{urls['a']}{UPLOAD}/{session['id']}/complete", headers=auth["a"], timeout=60
    )
    assert again.status_code == 200, again.text
    assert again.json()["result"] == result
    downloaded = httpx.get(
        f"{cluster.nginx.url}/api/v1/sync/download/video/clip.bin",
        headers=auth["a"],
        timeout=60,
    )
    assert downloaded.status_code == 200
    assert hashlib.sha256(downloaded.content).digest() == hashlib.sha256(data).digest()


# -- throttling -------------------------------------------------------------


def test_failed_logins_through_both_processes_at_once_are_all_counted(
    cluster: Cluster,
) -> None:
    user = cluster.new_user()
    max_failures = 5  # Settings.login_max_failures
    urls = [cluster.a.url, cluster.b.url]

    def fail(index: int) -> int:
        answer = httpx.post(
            f"{urls[index % 2]}/api/v1/auth/login",
            json={"username": user, "password": "not the password"},
            timeout=30,
        )
        return answer.status_code

    with ThreadPoolExecutor(max_failures) as pool:
        statuses = list(pool.map(fail, range(max_failures)))
    assert statuses == [401] * max_failures
    # Blocked now on both processes, even with the right password.
    for url in urls:
        answer = httpx.post(
            f"{url}/api/v1/auth/login", json={"username": user, "password": PASSWORD}, timeout=30
        )
        assert answer.status_code == 429, answer.text
        assert int(answer.headers["retry-after"]) > 0


# -- serve --workers --------------------------------------------------------


@pytest.fixture
def workers_server(tmp_path: Path, pg_template: str) -> Iterator[Server]:
    name = create_pg_database(template=pg_template)
    server = Server(data_dir=tmp_path / "data", database_url=_pg_url(name), workers=2)
    server.data_dir.mkdir()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        drop_pg_database(name)


def _listeners(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'shelfsync-listener-%%'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _worker_of(http: httpx.Client) -> str:
    """The pid of the worker this (kept-alive) connection reached."""
    body = http.get("/metrics").text
    match = re.search(r'^shelfsync_process\{pid="(\d+)"\} 1\.0$', body, flags=re.MULTILINE)
    assert match, "shelfsync_process missing from /metrics"
    return match.group(1)


def test_serve_workers_on_postgresql_wakes_a_wait_held_by_the_other_worker(
    workers_server: Server,
) -> None:
    server = workers_server
    assert server.database_url is not None
    wait_until(
        lambda: _listeners(server.database_url or "") == 2,
        timeout_s=20,
        what="both workers to LISTEN",
    )
    server.add_user("alice")
    reader_auth = token_headers(api_device(server.url, "alice", "reader"), server.url)
    writer_auth = token_headers(api_device(server.url, "alice", "writer"), server.url)

    # Connections land on either worker; keep-alive keeps each on its worker.
    clients: dict[str, httpx.Client] = {}
    opened: list[httpx.Client] = []
    try:
        for _ in range(40):
            http = httpx.Client(base_url=server.url, timeout=60)
            opened.append(http)
            clients.setdefault(_worker_of(http), http)
            if len(clients) == 2:
                break
        assert len(clients) == 2, "every connection reached the same worker"
        (wait_pid, wait_http), (report_pid, report_http) = clients.items()
        assert wait_pid != report_pid
        cursor = latest_cursor(wait_http, reader_auth)
        answer: dict[str, Any] = {}

        def hold() -> None:
            page = wait_http.get(
                CHANGES, params={"cursor": cursor, "wait": 30}, headers=reader_auth
            )
            answer.update(page=page, ended=time.monotonic())

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        time.sleep(0.5)  # the wait is held (its worker's gauge is not addressable)
        reported = report_http.post(
            REPORT, json={"changes": [upsert("workers/one.txt", None, 1)]}, headers=writer_auth
        )
        committed = time.monotonic()
        assert reported.status_code == 200, reported.text
        assert _worker_of(report_http) == report_pid
        holder.join(timeout=30)
        assert not holder.is_alive()
    finally:
        for http in opened:
            http.close()
    assert answer["page"].status_code == 200
    assert [c["path"] for c in answer["page"].json()["changes"]] == ["workers/one.txt"]
    assert answer["ended"] - committed < WAKE_BUDGET_S


def test_serve_workers_on_sqlite_is_refused_naming_postgresql(tmp_path: Path) -> None:
    done = subprocess.run(
        [SHELFSYNC, "serve", "--workers", "2", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PostgreSQL" in done.stderr
    assert "--database-url" in done.stderr
