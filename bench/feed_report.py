"""Feed pages and report ingest on a large library, through a real server.

Goal (issue 7, goal 5): on a library of 1,000,000 items, a feed page of 1,000
changes at the start, middle and end of the feed has a p50 of at most 25 ms and
at most 1.5x the same page on a 10,000-item library (the cost must not grow
with the library); report ingest of already-stored content reaches at least
10,000 changes/s. On SQLite and on PostgreSQL.

For each database two libraries are built, each in a database of its own (a
SQLite file, or a scratch PostgreSQL database `shelfsync_bench_<pid>_<n>` that
this script creates and drops): the big one (1,000,000 items, `--quick`
20,000) and the 10,000-item anchor. They are seeded through the storage layer
(bulk inserts in one transaction: items, their revisions, the content they
point at; 2% of the items are tombstones, scattered), then each is served by a
real `shelfsync serve` process on loopback and measured over HTTP:

- feed: GET /api/v1/sync/changes?limit=1000 at three positions, alternating
  big and small library request by request so both see the same machine
  load: `start` (no cursor: the live library, a first listing), `middle` (a
  first listing half done: seq = N/2, snapshot = N, as paging produces it) and
  `end` (an ordinary cursor 1,000 changes before the end). Cursors are built
  with the server's own codec and secret. Ratio = p50(big) / p50(10k).
- ingest: POST /api/v1/sync/report with batches of 1,000 upserts of new paths
  whose content the user already holds (dedupe), every one `applied`, into
  both libraries. Anchors: the 10,000 changes/s goal, and the floor: the same
  rows (items, revisions, counter) bulk-inserted in-process through the
  storage layer in one transaction per batch, with no decisions and no HTTP,
  into the big library, alternating with its report batches.

Prints a table per database and the ratios last; `--json OUT` writes every
figure for docs/benchmarks.md.

    .venv/bin/python bench/feed_report.py --quick
    .venv/bin/python bench/feed_report.py --backend postgresql --json feed.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from _common import host_info, now_iso

from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.ids import time_ordered_id
from shelfsync.server.domain.items import ChangeOp, Item
from shelfsync.server.services.accounts import AccountService
from shelfsync.server.services.cursors import Cursor, CursorCodec
from shelfsync.server.services.passwords import PasswordHasher
from shelfsync.server.settings import Settings
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.items import ItemRepository, LibraryCounters
from shelfsync.server.storage.migrate import upgrade
from shelfsync.server.storage.secret_file import load_or_create_secret

SHELFSYNC = str(Path(sys.executable).with_name("shelfsync"))
PG_ADMIN_URL = os.environ.get("SHELFSYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_PREFIX = "shelfsync_bench_"
PASSWORD = "bench-password-123"  # noqa: S105 (a throwaway account in a scratch database)
PAGE = 1000
SMALL_ITEMS = 10_000
DISTINCT_CONTENTS = 1000
TOMBSTONE_EVERY = 50  # 2% of the seeded items are tombstones
SEED_CHUNK = 20_000
GOAL_P50_MS = 25.0
GOAL_RATIO = 1.5
GOAL_INGEST_PER_S = 10_000.0
POSITIONS = ("start", "middle", "end")

Json = dict[str, Any]


class BenchError(AssertionError):
    """The server answered something other than what the benchmark expects."""


def content_of(k: int) -> tuple[str, int]:
    """The k-th seeded content: (hash, size). Stands for bytes the user uploaded."""
    return hashlib.sha256(f"bench content {k}".encode()).hexdigest(), 1000 + k


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class Library:
    """One seeded library in a database of its own, and the server serving it."""

    kind: str
    items: int
    root: Path
    pg_name: str | None = None
    user_id: str = ""
    seed_s: float = 0.0
    process: subprocess.Popen[bytes] | None = None
    base_url: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        if self.pg_name is not None:
            return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{self.pg_name}"
        return f"sqlite:///{self.root / 'shelfsync.db'}"

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.root / "data", database_url=self.database_url)


@contextmanager
def library(kind: str, items: int, tag: str) -> Iterator[Library]:
    with tempfile.TemporaryDirectory(prefix=f"shelfsync-bench-{kind}-{tag}-") as tmp:
        lib = Library(kind, items, Path(tmp))
        if kind == "postgresql":
            lib.pg_name = f"{PG_PREFIX}{os.getpid()}_{tag}"
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{lib.pg_name}"')
        try:
            yield lib
        finally:
            stop_server(lib)
            if lib.pg_name is not None:
                assert lib.pg_name.startswith(PG_PREFIX)
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{lib.pg_name}" WITH (FORCE)')


# -- seeding -------------------------------------------------------------------


def seed(lib: Library) -> None:
    """The user, the content they hold, and `lib.items` items with their revisions."""
    started = time.perf_counter()
    settings = lib.settings
    settings.data_dir.mkdir(parents=True, mode=0o700)
    db = Database(settings.resolved_database_url)
    upgrade(db)
    load_or_create_secret(settings.secret_path)  # the server's, so cursors can be built here
    try:
        hasher = PasswordHasher(time_cost=1, memory_cost_kib=8192)
        user = AccountService(db=db, passwords=hasher).add_user(username="bench", password=PASSWORD)
        lib.user_id = user.id
        now = utcnow()
        with db.write() as tx:
            if db.is_sqlite:
                # This connection only: a bigger page cache for a million-row load.
                tx.exec_driver_sql("PRAGMA cache_size=-262144")
            contents = ContentRepository(tx)
            for k in range(DISTINCT_CONTENTS):
                content_hash, size = content_of(k)
                contents.add(user_id=user.id, content_hash=content_hash, size=size, now=now)
            repo = ItemRepository(tx)
            counters = LibraryCounters(tx)
            counters.lock(user.id)
            for start in range(0, lib.items, SEED_CHUNK):
                batch = [
                    seeded_item(user.id, i, now)
                    for i in range(start, min(lib.items, start + SEED_CHUNK))
                ]
                repo.insert_many(batch, now=now)
            counters.set_seq(user.id, lib.items)
        if not db.is_sqlite:
            # What autovacuum would have done by the time a library is this big.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
    finally:
        db.dispose()
    lib.seed_s = time.perf_counter() - started


def seeded_item(user_id: str, i: int, now: Any) -> Item:
    deleted = i % TOMBSTONE_EVERY == TOMBSTONE_EVERY - 1
    content_hash, size = content_of(i % DISTINCT_CONTENTS)
    return Item(
        id=str(uuid.uuid4()),
        user_id=user_id,
        path=f"library/shelf{i // 1000:04}/book{i:07}.epub",
        revision=2 if deleted else 1,
        content_hash=None if deleted else content_hash,
        size=0 if deleted else size,
        mtime=None if deleted else now - timedelta(days=1),
        metadata={} if deleted else {"shelf": i // 1000},
        deleted=deleted,
        device_id=None,
        updated_at=now,
        seq=i + 1,
        op=ChangeOp.DELETE if deleted else ChangeOp.UPSERT,
    )


# -- the server ------------------------------------------------------------------


# --server-src: run the server from another source tree (a before/after comparison
# on the same machine at the same time, e.g. `git archive HEAD~1 | tar -x -C /tmp/old`).
SERVER_SRC: str | None = None


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFSYNC_")}
    if SERVER_SRC is not None:
        env["PYTHONPATH"] = SERVER_SRC
    env["SHELFSYNC_ACCESS_TOKEN_TTL_S"] = "86400"  # noqa: S105 (a lifetime, not a secret)
    return env


def start_server(lib: Library) -> None:
    port = free_port()
    lib.base_url = f"http://127.0.0.1:{port}"
    log = (lib.root / "server.log").open("ab")
    lib.process = subprocess.Popen(
        [
            SHELFSYNC,
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--data-dir",
            str(lib.root / "data"),
            "--database-url",
            lib.database_url,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=server_env(),
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if lib.process.poll() is not None:
            raise BenchError(f"server exited:\n{(lib.root / 'server.log').read_text()}")
        try:
            if httpx.get(f"{lib.base_url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    else:
        raise BenchError("server did not become healthy")
    with httpx.Client(base_url=lib.base_url, timeout=60) as http:
        login = http.post("/api/v1/auth/login", json={"username": "bench", "password": PASSWORD})
        user_headers = {"Authorization": f"Bearer {expect(login)['access_token']}"}
        device = expect(
            http.post("/api/v1/sync/devices", json={"name": "bench"}, headers=user_headers)
        )
        granted = expect(http.post("/api/v1/auth/device", json={"device_token": device["token"]}))
    lib.headers = {"Authorization": f"Bearer {granted['access_token']}"}


def stop_server(lib: Library) -> None:
    if lib.process is not None and lib.process.poll() is None:
        lib.process.terminate()
        try:
            lib.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lib.process.kill()
            lib.process.wait()


def expect(response: httpx.Response) -> Json:
    if response.status_code != 200:
        raise BenchError(f"{response.request.url}: {response.status_code} {response.text[:500]}")
    body: Json = response.json()
    return body


# -- feed ------------------------------------------------------------------------


def feed_cursor(lib: Library, position: str) -> str | None:
    n = lib.items
    if position == "start":
        return None
    codec = CursorCodec(load_or_create_secret(lib.settings.secret_path))
    if position == "middle":
        return codec.encode(Cursor(lib.user_id, n // 2, snapshot_seq=n))
    return codec.encode(Cursor(lib.user_id, n - PAGE))


def time_page(http: httpx.Client, lib: Library, cursor: str | None) -> float:
    params: Json = {"limit": PAGE}
    if cursor is not None:
        params["cursor"] = cursor
    started = time.perf_counter()
    response = http.get("/api/v1/sync/changes", params=params, headers=lib.headers)
    elapsed = time.perf_counter() - started
    page = expect(response)
    if len(page["changes"]) != PAGE:
        raise BenchError(f"a page of {len(page['changes'])} changes, not {PAGE}")
    return elapsed


def measure_feed(big: Library, small: Library, rounds: int) -> dict[str, Json]:
    results: dict[str, Json] = {}
    with (
        httpx.Client(base_url=big.base_url, timeout=60) as big_http,
        httpx.Client(base_url=small.base_url, timeout=60) as small_http,
    ):
        for position in POSITIONS:
            cursors = {id(big): feed_cursor(big, position), id(small): feed_cursor(small, position)}
            times: dict[int, list[float]] = {id(big): [], id(small): []}
            for i in range(rounds + 5):
                pair = [(big_http, big), (small_http, small)]
                if i % 2:
                    pair.reverse()
                for http, lib in pair:
                    elapsed = time_page(http, lib, cursors[id(lib)])
                    if i >= 5:  # warm-up: connections, caches, prepared statements
                        times[id(lib)].append(elapsed)
            b, s = times[id(big)], times[id(small)]
            results[position] = {
                "big_p50_ms": percentile(b, 50) * 1000,
                "big_p95_ms": percentile(b, 95) * 1000,
                "small_p50_ms": percentile(s, 50) * 1000,
                "small_p95_ms": percentile(s, 95) * 1000,
                "ratio": percentile(b, 50) / percentile(s, 50),
                "rounds": rounds,
            }
    return results


# -- ingest ----------------------------------------------------------------------


def ingest_batch(tag: str, batch: int) -> list[Json]:
    rng = random.Random(f"{tag}{batch}")
    changes = []
    for i in range(PAGE):
        content_hash, size = content_of(rng.randrange(DISTINCT_CONTENTS))
        changes.append(
            {
                "op": "upsert",
                "path": f"ingest/{tag}/batch{batch:04}/file{i:04}.epub",
                "content_hash": content_hash,
                "size": size,
                "base_revision": None,
            }
        )
    return changes


def report_batch(http: httpx.Client, lib: Library, b: int) -> float:
    """One timed POST /sync/report of a batch of new paths; every change applied."""
    body = {"changes": ingest_batch("http", b)}
    started = time.perf_counter()
    response = http.post("/api/v1/sync/report", json=body, headers=lib.headers)
    elapsed = time.perf_counter() - started
    results = expect(response)["results"]
    statuses = {r["status"] for r in results}
    if len(results) != PAGE or statuses != {"applied"}:
        raise BenchError(f"report: {len(results)} results, statuses {statuses}")
    return elapsed


def report_figures(times: list[float]) -> Json:
    return {
        "batches": len(times),
        "batch_p50_ms": percentile(times, 50) * 1000,
        "changes_per_s": PAGE * len(times) / sum(times),
    }


def measure_report(lib: Library, batches: int) -> Json:
    times: list[float] = []
    with httpx.Client(base_url=lib.base_url, timeout=120) as http:
        for b in range(batches + 1):
            elapsed = report_batch(http, lib, b)
            if b:  # the first batch warms the connections up
                times.append(elapsed)
    return report_figures(times)


def measure_report_and_floor(lib: Library, batches: int) -> tuple[Json, Json]:
    """Report batches and floor batches into one library, alternating batch by
    batch, so that both see the same machine load and the same library size."""
    db = Database(lib.database_url, pool_size=1)
    report_times: list[float] = []
    floor_times: list[float] = []
    try:
        with httpx.Client(base_url=lib.base_url, timeout=120) as http:
            for b in range(batches + 1):
                # Alternate which goes first, too: the one after a checkpoint pays none.
                for which in ("report", "floor") if b % 2 else ("floor", "report"):
                    if which == "report":
                        elapsed = report_batch(http, lib, b)
                        times = report_times
                    else:
                        elapsed = floor_batch(db, lib, b)
                        times = floor_times
                    if b:  # the first batch warms the connections up
                        times.append(elapsed)
    finally:
        db.dispose()
    floor = {"batches": batches, "changes_per_s": PAGE * len(floor_times) / sum(floor_times)}
    return report_figures(report_times), floor


def floor_batch(db: Database, lib: Library, b: int) -> float:
    """The same rows written in-process through the storage layer: no decisions, no HTTP.

    Ids are made as the server makes them (time-ordered, domain/ids.py), so the
    floor's rows cost the database what the server's cost.
    """
    changes = ingest_batch("floor", b)
    started = time.perf_counter()
    now = utcnow()
    with db.write() as tx:
        counters = LibraryCounters(tx)
        seq = counters.lock(lib.user_id)
        written = [
            Item(
                id=time_ordered_id(),
                user_id=lib.user_id,
                path=c["path"],
                revision=1,
                content_hash=c["content_hash"],
                size=c["size"],
                mtime=None,
                metadata={},
                deleted=False,
                device_id=None,
                updated_at=now,
                seq=seq + 1 + i,
                op=ChangeOp.UPSERT,
            )
            for i, c in enumerate(changes)
        ]
        ItemRepository(tx).insert_many(written, now=now)
        counters.set_seq(lib.user_id, seq + len(written))
    return time.perf_counter() - started


# -- driver ----------------------------------------------------------------------


def run_backend(kind: str, args: argparse.Namespace) -> Json:
    with library(kind, args.items, "big") as big, library(kind, SMALL_ITEMS, "small") as small:
        for lib in (small, big):
            seed(lib)
            print(f"{kind}: seeded {lib.items:,} items in {lib.seed_s:.1f} s", flush=True)
            start_server(lib)
        feed = measure_feed(big, small, args.rounds)
        report_big, floor = measure_report_and_floor(big, args.batches)
        report_small = measure_report(small, args.batches)
    return {
        "items": args.items,
        "small_items": SMALL_ITEMS,
        "seed_s": {"big": big.seed_s, "small": small.seed_s},
        "feed": feed,
        "report": {"big": report_big, "small": report_small, "floor": floor},
    }


def print_backend(kind: str, result: Json) -> None:
    n = result["items"]
    print(f"\n== {kind}: feed pages of {PAGE} (ms), {n:,} vs {SMALL_ITEMS:,} items")
    print(f"{'position':<10}{'big p50':>9}{'big p95':>9}{'10k p50':>9}{'10k p95':>9}{'ratio':>8}")
    for position, f in result["feed"].items():
        print(
            f"{position:<10}{f['big_p50_ms']:>9.1f}{f['big_p95_ms']:>9.1f}"
            f"{f['small_p50_ms']:>9.1f}{f['small_p95_ms']:>9.1f}{f['ratio']:>8.2f}"
        )
    r = result["report"]
    print(f"== {kind}: report ingest, batches of {PAGE} already-stored contents")
    print(f"{'library':<10}{'changes/s':>11}{'batch p50 ms':>14}")
    print(f"{f'{n:,}':<10}{r['big']['changes_per_s']:>11,.0f}{r['big']['batch_p50_ms']:>14.1f}")
    small = r["small"]
    print(f"{f'{SMALL_ITEMS:,}':<10}{small['changes_per_s']:>11,.0f}{small['batch_p50_ms']:>14.1f}")
    print(f"{'floor':<10}{r['floor']['changes_per_s']:>11,.0f}  (bulk insert, no HTTP)")


def verdicts(kind: str, result: Json) -> list[tuple[str, bool]]:
    lines = []
    for position, f in result["feed"].items():
        lines.append(
            (
                f"{kind} feed {position}: ratio p50({result['items']:,})/p50(10k) = "
                f"{f['ratio']:.2f} (goal <= {GOAL_RATIO}), p50 {f['big_p50_ms']:.1f} ms "
                f"(goal <= {GOAL_P50_MS:.0f})",
                f["ratio"] <= GOAL_RATIO and f["big_p50_ms"] <= GOAL_P50_MS,
            )
        )
    r = result["report"]
    rate = r["big"]["changes_per_s"]
    lines.append(
        (
            f"{kind} report ingest: ratio rate/goal = {rate / GOAL_INGEST_PER_S:.2f} "
            f"({rate:,.0f}/s, goal >= {GOAL_INGEST_PER_S:,.0f}/s); "
            f"ratio rate/floor = {rate / r['floor']['changes_per_s']:.2f}",
            rate >= GOAL_INGEST_PER_S,
        )
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 items, fewer rounds")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--items", type=int, help="items in the big library")
    parser.add_argument("--rounds", type=int, help="timed feed requests per position and library")
    parser.add_argument("--batches", type=int, help="timed report batches per library")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--server-src", help="run the server from this src/ directory")
    args = parser.parse_args()
    global SERVER_SRC  # one switch for the whole run
    SERVER_SRC = args.server_src
    args.items = args.items or (20_000 if args.quick else 1_000_000)
    args.rounds = args.rounds or (10 if args.quick else 100)
    args.batches = args.batches or (3 if args.quick else 20)
    kinds = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    started, host = now_iso(), host_info()
    results = {kind: run_backend(kind, args) for kind in kinds}
    for kind, result in results.items():
        print_backend(kind, result)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "goal": {
                        "p50_ms": GOAL_P50_MS,
                        "ratio": GOAL_RATIO,
                        "ingest_per_s": GOAL_INGEST_PER_S,
                    },
                    "quick": args.quick,
                    "command": " ".join(["bench/feed_report.py", *sys.argv[1:]]),
                    "started": started,
                    "finished": now_iso(),
                    "host": host,
                    "server_src": args.server_src,
                    # Shared machines: the load says how far to trust absolute times.
                    "loadavg_at_end": list(os.getloadavg()),
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )
    print()
    ok = True
    for kind, result in results.items():
        for line, met in verdicts(kind, result):
            ok = ok and met
            print(f"{'ok  ' if met else 'MISS'} {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
