"""Scale-out: report throughput and feed wake latency with 1, 2 and 4 server processes.

Issue 8. For each process count N, a fresh scratch PostgreSQL database
(`shelfsync_bench_scale_<pid>`, copied from a template with the users made
once; both created and dropped by this script) is served by one real
`shelfsync serve --workers N` on loopback. Measured over HTTP:

- throughput, "users": W writers, each a different user (library), each POSTs
  /api/v1/sync/report batches of 1,000 new paths of already-stored content (the
  empty content, held by everyone): changes applied per second over the run.
- throughput, "one library": the same W writers as devices of one user. Every
  write locks the library's counter row, so this is one transaction at a time
  whatever N is (docs/operations.md, "How it scales").
- wake latency: 4 long-polls held on connections the kernel spreads over the
  workers, then one report; the time from the report's answer to each held
  request's answer (a cross-process wake is PostgreSQL LISTEN/NOTIFY).

Prints a table, then the ratios against 1 process last. `--json OUT` writes
every figure. On a 2-core machine the machine is the ceiling: N > 2 adds only
contention, and the client shares the cores.

    .venv/bin/python bench/scale_out.py --quick
    .venv/bin/python bench/scale_out.py --json scale_out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from shelfsync.content_hash import EMPTY_HASH

SHELFSYNC = str(Path(sys.executable).with_name("shelfsync"))
ADMIN_URL = os.environ.get("SHELFSYNC_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "bench-password-123"  # noqa: S105 (a scratch database's users)
BATCH = 1000
WRITERS = 4
WAITERS = 4
# Cheap real argon2 for the logins the setup makes (not what is measured).
SERVER_ENV = {"SHELFSYNC_ARGON2_TIME_COST": "1", "SHELFSYNC_ARGON2_MEMORY_KIB": "8192"}

Json = dict[str, Any]


def db_url(name: str) -> str:
    return f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHELFSYNC_")}
    return {**base, **SERVER_ENV}


def run_cli(*args: str, stdin: str | None = None) -> None:
    done = subprocess.run(
        [SHELFSYNC, *args], input=stdin, capture_output=True, text=True, env=env(), timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"shelfsync {' '.join(args)}: {done.stderr}")


@contextmanager
def scratch_databases(users: int, data_dir: Path) -> Iterator[str]:
    """A migrated template with `users` users; yields its name, drops it after."""
    template = f"shelfsync_bench_scale_{os.getpid()}_tpl"
    admin(f'DROP DATABASE IF EXISTS "{template}"')
    admin(f'CREATE DATABASE "{template}"')
    try:
        target = ["--data-dir", str(data_dir), "--database-url", db_url(template)]
        run_cli("db", "upgrade", *target)
        # One CLI run makes every user (the operator service, in-process).
        code = (
            "import sys\n"
            "from shelfsync.server.app import open_database\n"
            "from shelfsync.server.services.accounts import AccountService\n"
            "from shelfsync.server.services.passwords import PasswordHasher\n"
            "from shelfsync.server.settings import Settings\n"
            "s = Settings.from_env()\n"
            "db = open_database(s)\n"
            "svc = AccountService(db=db, passwords=PasswordHasher(time_cost=1, "
            "memory_cost_kib=8192))\n"
            f"for i in range({users}):\n"
            f"    svc.add_user(username=f'u{{i}}', password={PASSWORD!r})\n"
            "db.dispose()\n"
        )
        made = subprocess.run(
            [sys.executable, "-c", code],
            env={
                **env(),
                "SHELFSYNC_DATA_DIR": str(data_dir),
                "SHELFSYNC_DATABASE_URL": db_url(template),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        if made.returncode != 0:
            raise RuntimeError(made.stderr)
        yield template
    finally:
        admin(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')


@contextmanager
def served(workers: int, template: str, data_dir: Path) -> Iterator[str]:
    """`serve --workers N` on a fresh copy of the template; yields its base URL."""
    name = f"shelfsync_bench_scale_{os.getpid()}"
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    port = free_port()
    log = (data_dir.parent / f"serve-{workers}.log").open("wb")
    process = subprocess.Popen(
        [
            SHELFSYNC,
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--data-dir",
            str(data_dir),
            "--database-url",
            db_url(name),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env(),
        start_new_session=True,
    )
    try:
        wait_ready(process, f"http://127.0.0.1:{port}", db_url(name), workers)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_ready(process: subprocess.Popen[bytes], url: str, database: str, workers: int) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with {process.returncode}")
        try:
            up = httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            up = False
        if up:
            with psycopg.connect(database) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name LIKE 'shelfsync-listener-%%'"
                ).fetchone()
            if row is not None and int(row[0]) >= workers:
                return
        time.sleep(0.1)
    raise RuntimeError("the server did not get ready in 90 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def device_auth(http: httpx.Client, user: str, device: str) -> dict[str, str]:
    login = http.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
    login.raise_for_status()
    user_auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    created = http.post("/api/v1/sync/devices", json={"name": device}, headers=user_auth)
    created.raise_for_status()
    grant = http.post("/api/v1/auth/device", json={"device_token": created.json()["token"]})
    grant.raise_for_status()
    return {"Authorization": f"Bearer {grant.json()['access_token']}"}


def report_batches(
    url: str, auth: dict[str, str], prefix: str, batches: int, size: int = BATCH
) -> int:
    applied = 0
    with httpx.Client(base_url=url, timeout=120) as http:
        for b in range(batches):
            changes = [
                {
                    "op": "upsert",
                    "path": f"{prefix}/b{b:03}/f{i:04}.txt",
                    "content_hash": EMPTY_HASH,
                    "size": 0,
                    "base_revision": None,
                }
                for i in range(size)
            ]
            answer = http.post("/api/v1/sync/report", json={"changes": changes}, headers=auth)
            answer.raise_for_status()
            applied += sum(r["status"] == "applied" for r in answer.json()["results"])
    return applied


def throughput(url: str, auths: list[dict[str, str]], tag: str, batches: int) -> float:
    """Changes applied per second, the writers running at once."""
    # Warm every worker's connections and caches (not timed): small batches.
    with ThreadPoolExecutor(len(auths)) as pool:
        warm = [(a, f"warm-{tag}-{i}") for i, a in enumerate(auths)]
        list(pool.map(lambda w: report_batches(url, w[0], w[1], 2, 100), warm))
    started = time.perf_counter()
    with ThreadPoolExecutor(len(auths)) as pool:
        applied = sum(
            pool.map(
                lambda a: report_batches(url, a[1], f"{tag}-{a[0]}", batches), enumerate(auths)
            )
        )
    elapsed = time.perf_counter() - started
    expected = len(auths) * batches * BATCH
    if applied != expected:
        raise RuntimeError(f"{applied} of {expected} changes applied")
    return applied / elapsed


def wake_latencies(
    url: str, reader: dict[str, str], writer: dict[str, str], rounds: int
) -> list[float]:
    """Seconds from a report's answer to each held long-poll's answer."""
    latencies: list[float] = []
    clients = [httpx.Client(base_url=url, timeout=90) for _ in range(WAITERS)]
    try:
        with httpx.Client(base_url=url, timeout=60) as other:
            for r in range(rounds):
                cursor = (
                    clients[0]
                    .get("/api/v1/sync/changes", params={"cursor": "latest"}, headers=reader)
                    .json()["cursor"]
                )
                ended: list[float] = []

                def hold(
                    http: httpx.Client, cursor: str = cursor, ended: list[float] = ended
                ) -> None:
                    page = http.get(
                        "/api/v1/sync/changes",
                        params={"cursor": cursor, "wait": 30},
                        headers=reader,
                    )
                    page.raise_for_status()
                    ended.append(time.perf_counter())  # list.append is atomic

                threads = [threading.Thread(target=hold, args=(c,)) for c in clients]
                for t in threads:
                    t.start()
                time.sleep(0.3)  # every wait is held
                change = {
                    "op": "upsert",
                    "path": f"wake/{r}.txt",
                    "content_hash": EMPTY_HASH,
                    "size": 0,
                    "base_revision": None,
                }
                other.post(
                    "/api/v1/sync/report", json={"changes": [change]}, headers=writer
                ).raise_for_status()
                committed = time.perf_counter()
                for t in threads:
                    t.join(timeout=60)
                latencies += [max(0.0, e - committed) for e in ended]
    finally:
        for c in clients:
            c.close()
    return latencies


def measure(workers: int, template: str, data_dir: Path, args: argparse.Namespace) -> Json:
    began = time.monotonic()
    with served(workers, template, data_dir) as url, httpx.Client(base_url=url, timeout=60) as http:
        print(f"{workers} process(es) ready in {time.monotonic() - began:.1f} s", file=sys.stderr)
        users = [device_auth(http, f"u{i}", f"w{workers}") for i in range(WRITERS)]
        one_library = [device_auth(http, "u0", f"w{workers}-{i}") for i in range(WRITERS)]
        reader = device_auth(http, "u0", f"reader{workers}")
        per_user = throughput(url, users, f"users{workers}", args.batches)
        shared = throughput(url, one_library, f"one{workers}", args.batches)
        waits = sorted(wake_latencies(url, reader, one_library[0], args.rounds))
    return {
        "processes": workers,
        "users_changes_per_s": round(per_user),
        "one_library_changes_per_s": round(shared),
        "wake_p50_ms": round(statistics.median(waits) * 1000, 1),
        "wake_p95_ms": round(waits[min(len(waits) - 1, int(len(waits) * 0.95))] * 1000, 1),
        "wake_max_ms": round(waits[-1] * 1000, 1),
        "wake_samples": len(waits),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke-test run, under ~40 s")
    parser.add_argument("--processes", default="1,2,4", help="process counts to measure")
    parser.add_argument("--batches", type=int, help="timed report batches per writer")
    parser.add_argument("--rounds", type=int, help="wake-latency rounds")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    args.batches = args.batches or (1 if args.quick else 6)
    args.rounds = args.rounds or (3 if args.quick else 15)
    counts = [int(n) for n in args.processes.split(",")]
    started = time.time()
    rows: list[Json] = []
    with tempfile.TemporaryDirectory(prefix="shelfsync-bench-scale-") as tmp:
        data_dir = Path(tmp) / "data"
        with scratch_databases(WRITERS, data_dir) as template:
            for n in counts:
                rows.append(measure(n, template, data_dir, args))
                print(f"measured {n} process(es) at {time.time() - started:.0f} s", file=sys.stderr)
    print(
        f"\nscale-out on {os.cpu_count()} cores, PostgreSQL; {WRITERS} writers x "
        f"{args.batches} batches of {BATCH}; {WAITERS} waiters x {args.rounds} rounds"
    )
    header = ("processes", "users ch/s", "1 library ch/s", "wake p50 ms", "wake p95 ms")
    print("  ".join(f"{h:>15}" for h in header))
    for row in rows:
        cells = (
            row["processes"],
            row["users_changes_per_s"],
            row["one_library_changes_per_s"],
            row["wake_p50_ms"],
            row["wake_p95_ms"],
        )
        print("  ".join(f"{c:>15}" for c in cells))
    base = rows[0]
    ratios = []
    for row in rows[1:]:
        ratio = {
            "processes": row["processes"],
            "users": round(row["users_changes_per_s"] / base["users_changes_per_s"], 2),
            "one_library": round(
                row["one_library_changes_per_s"] / base["one_library_changes_per_s"], 2
            ),
        }
        ratios.append(ratio)
        print(
            f"ratio vs {base['processes']} process: {row['processes']} processes: "
            f"users x{ratio['users']}, one library x{ratio['one_library']}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "script": "scale_out",
                    "schema": 1,
                    "quick": args.quick,
                    "command": " ".join(["bench/scale_out.py", *sys.argv[1:]]),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "host": {
                        "cpus": os.cpu_count(),
                        "load_average": os.getloadavg(),
                        "python": platform.python_version(),
                    },
                    "goals": [],
                    "rows": rows,
                    "ratios": ratios,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
