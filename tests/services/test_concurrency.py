"""Concurrent reports against a live feed reader, on SQLite and PostgreSQL.

Writers (threads; on PostgreSQL also separate processes, each with its own
services) report upserts and deletes on a small shared set of paths from three
devices, with current and stale bases, while a reader follows the feed seven
changes at a time. Afterwards the engine's promises are checked against the
tables (protocol sections 4, 6, 7 and 8):

- every item's history is revisions 1..n, and the item is at revision n;
- seqs are unique, one per accepted change with no gap, and the library
  counter equals the highest;
- a fresh feed lists every live item exactly once, in increasing seq order;
- the reader that followed its cursor during the writes missed nothing;
- every `applied` result is a revision of the history, every `unchanged` one
  names a revision holding that state, every `conflict` one has its client
  version on its conflict row.

Writer w acts for device w % 3 on its share of the paths, so each
(device, path) pair has one writer and its results have a known order: the
conflict row of a pair holds the client version of that writer's last
conflicting change there (a later conflict updates the open one, section 8).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import queue
import random
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
import sqlalchemy as sa

from shelfsync.server.api.dependencies import Services
from shelfsync.server.app import build_services
from shelfsync.server.domain.accounts import Device, User
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.items import ChangeOp
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.feed import FeedService
from shelfsync.server.services.report import LocalChange, ReportStatus
from shelfsync.server.settings import Settings
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.items import FeedRow, ItemRepository, LibraryCounters
from shelfsync.server.storage.tables import conflicts, items, revisions

WRITER_THREADS = 6
WRITER_PROCESSES = 3  # each process pays for its own start-up: keep the test quick
DEVICES = 3
REPORTS_PER_WRITER = 40
PAGE_LIMIT = 7
PATHS = tuple(
    f"shelf/{name}"
    for name in (
        "a.epub",
        "b.flac",
        "c.pdf",
        "d.jpg",
        "Ünïcode.txt",
        "deep/e.md",
        "deep/f.mp3",
        "g",
    )
)
CONTENTS = tuple((hashlib.sha256(f"content {n}".encode()).hexdigest(), 1000 + n) for n in range(5))
# Never registered: reporting it must answer upload_required (or conflict).
MISSING = (hashlib.sha256(b"never uploaded").hexdigest(), 4242)
TIMEOUT_S = 90.0


class Waitable(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...


@dataclass(frozen=True)
class Sent:
    """One reported change and the result it got."""

    writer: int
    order: int  # position in that writer's sequence of changes
    device_id: str
    op: ChangeOp
    path: str
    base_revision: int | None
    content_hash: str | None
    size: int | None
    metadata: dict[str, Any] | None
    status: ReportStatus
    item_id: str | None
    revision: int | None
    seq: int | None
    conflict_id: str | None


@dataclass(frozen=True)
class WriterPlan:
    writer: int
    seed: int
    user: User
    device: Device
    paths: tuple[str, ...]
    reports: int


@dataclass(frozen=True)
class Library:
    services: Services
    settings: Settings
    user: User
    devices: tuple[Device, ...]
    reader: Principal


@dataclass
class ReaderLog:
    first_latest_seq: int = -1
    seqs: list[int] = field(default_factory=list)
    last_seen: dict[str, FeedRow] = field(default_factory=dict)
    pages: int = 0
    # (latest_seq, highest seq delivered) of pages that claimed a latest_seq
    # below a change they delivered.
    latest_behind: list[tuple[int, int]] = field(default_factory=list)


# -- setting up ------------------------------------------------------------


def _library(tmp_path: Path, database_url: str, db: Database) -> Library:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    services = build_services(settings, db)
    user = services.accounts.add_user(username="alice", password="correct horse battery")
    owner = Principal(user, None)
    devices = tuple(
        services.devices.register(owner, name=f"device {n}")[0].device for n in range(DEVICES)
    )
    reader = services.devices.register(owner, name="reader")[0].device
    with db.write() as tx:
        for content_hash, size in CONTENTS:
            ContentRepository(tx).add(
                user_id=user.id, content_hash=content_hash, size=size, now=utcnow()
            )
    return Library(services, settings, user, devices, Principal(user, reader))


def _seed(library: Library) -> list[Sent]:
    """Every path exists once; two are deleted again (tombstones before the reader)."""
    device = library.devices[0]
    principal = Principal(library.user, device)
    changes = [
        LocalChange(
            op=ChangeOp.UPSERT,
            path=path,
            base_revision=None,
            content_hash=CONTENTS[0][0],
            size=CONTENTS[0][1],
            metadata={"rating": 0},
        )
        for path in PATHS
    ]
    changes += [LocalChange(op=ChangeOp.DELETE, path=path, base_revision=1) for path in PATHS[-2:]]
    results = library.services.report.report(principal, changes)
    assert [r.status for r in results] == [ReportStatus.APPLIED] * len(changes)
    return [
        _sent(-1, n, device, c, r) for n, (c, r) in enumerate(zip(changes, results, strict=True))
    ]


def _plans(library: Library, writers: int) -> list[WriterPlan]:
    """Writer w acts for device w % 3 on its share of the paths (one writer per pair)."""
    shares = max(writers // DEVICES, 1)
    return [
        WriterPlan(
            writer=w,
            seed=1000 + w,
            user=library.user,
            device=library.devices[w % DEVICES],
            paths=PATHS[w // DEVICES :: shares],
            reports=REPORTS_PER_WRITER,
        )
        for w in range(writers)
    ]


# -- writing ---------------------------------------------------------------


def _sent(writer: int, order: int, device: Device, change: LocalChange, result: Any) -> Sent:
    return Sent(
        writer=writer,
        order=order,
        device_id=device.id,
        op=change.op,
        path=change.path,
        base_revision=change.base_revision,
        content_hash=change.content_hash,
        size=change.size,
        metadata=change.metadata,
        status=result.status,
        item_id=result.id,
        revision=result.revision,
        seq=result.seq,
        conflict_id=result.conflict_id,
    )


def _current_revisions(db: Database, user_id: str, paths: Sequence[str]) -> dict[str, int | None]:
    with db.read() as tx:
        repo = ItemRepository(tx)
        found = {path: repo.at_path(user_id, path) for path in paths}
    return {path: item.revision if item else None for path, item in found.items()}


def _change(rng: random.Random, path: str, known: int | None) -> LocalChange:
    roll = rng.random()
    if known is None or roll < 0.15:
        base = None
    elif roll < 0.4:
        stale = known - rng.randint(1, 2)
        base = stale if stale >= 1 else None
    else:
        base = known
    roll = rng.random()
    if roll < 0.22:
        return LocalChange(op=ChangeOp.DELETE, path=path, base_revision=base)
    content_hash, size = MISSING if roll < 0.27 else rng.choice(CONTENTS)
    return LocalChange(
        op=ChangeOp.UPSERT,
        path=path,
        base_revision=base,
        content_hash=content_hash,
        size=size,
        metadata={"rating": rng.randint(0, 1)},
    )


def _run_writer(services: Services, plan: WriterPlan) -> list[Sent]:
    rng = random.Random(plan.seed)
    principal = Principal(plan.user, plan.device)
    known = _current_revisions(services.db, plan.user.id, plan.paths)
    out: list[Sent] = []
    for _ in range(plan.reports):
        paths = rng.sample(plan.paths, rng.randint(1, 3))
        if rng.random() < 0.5:
            # A device that just read the feed: current bases, unless someone is faster.
            known.update(_current_revisions(services.db, plan.user.id, paths))
        changes = [_change(rng, path, known[path]) for path in paths]
        results = services.report.report(principal, changes)
        for change, result in zip(changes, results, strict=True):
            out.append(_sent(plan.writer, len(out), plan.device, change, result))
            if result.revision is not None:
                known[change.path] = result.revision
    return out


def _write_thread(services: Services, plan: WriterPlan, start: Waitable) -> list[Sent]:
    start.wait(timeout=TIMEOUT_S)
    return _run_writer(services, plan)


def _write_process(
    url: str, data_dir: str, plan: WriterPlan, start: Waitable, results: Any
) -> None:
    """A writer in its own process, with its own engine and services."""
    try:
        db = Database(url)
        try:
            services = build_services(Settings(data_dir=Path(data_dir), database_url=url), db)
            start.wait(timeout=TIMEOUT_S)
            results.put((plan.writer, _run_writer(services, plan), None))
        finally:
            db.dispose()
    except BaseException:
        results.put((plan.writer, [], traceback.format_exc()))


# -- reading ---------------------------------------------------------------


def _note_page(log: ReaderLog, page: Any) -> None:
    if log.first_latest_seq < 0:
        log.first_latest_seq = page.latest_seq
    log.pages += 1
    for item in page.changes:
        log.seqs.append(item.seq)
        log.last_seen[item.id] = item
    if page.changes and page.latest_seq < page.changes[-1].seq:
        log.latest_behind.append((page.latest_seq, page.changes[-1].seq))


def _follow_feed(
    feed: FeedService, principal: Principal, writers_done: threading.Event, start: Waitable
) -> ReaderLog:
    """Page from no cursor and keep following the cursor until the writers stop."""
    start.wait(timeout=TIMEOUT_S)
    log = ReaderLog()
    cursor: str | None = None
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        finished = writers_done.is_set()
        page = feed.page(principal, cursor=cursor, limit=PAGE_LIMIT)
        _note_page(log, page)
        cursor = page.cursor
        if page.has_more:
            continue
        if finished:
            # This page started after the last write: the reader is at the end.
            return log
        time.sleep(0.005)
    raise AssertionError("the reader never reached the end of the feed")


def _read_all(feed: FeedService, principal: Principal) -> list[FeedRow]:
    entries: list[FeedRow] = []
    cursor: str | None = None
    for _ in range(10_000):
        page = feed.page(principal, cursor=cursor, limit=PAGE_LIMIT)
        entries.extend(page.changes)
        cursor = page.cursor
        if not page.has_more:
            return entries
    raise AssertionError("the feed never ended")


# -- checking --------------------------------------------------------------


@dataclass(frozen=True)
class Tables:
    items: dict[str, dict[str, Any]]
    revisions: dict[tuple[str, int], dict[str, Any]]
    conflicts: dict[str, dict[str, Any]]
    counter: int


def _tables(db: Database, user_id: str) -> Tables:
    with db.read() as tx:
        item_rows = tx.execute(sa.select(items).where(items.c.user_id == user_id)).mappings()
        item_map = {str(r["id"]): dict(r) for r in item_rows}
        revision_rows = tx.execute(
            sa.select(revisions).where(revisions.c.user_id == user_id)
        ).mappings()
        revision_map = {(str(r["item_id"]), int(r["revision"])): dict(r) for r in revision_rows}
        conflict_rows = tx.execute(
            sa.select(conflicts).where(conflicts.c.user_id == user_id)
        ).mappings()
        conflict_map = {str(r["id"]): dict(r) for r in conflict_rows}
        counter, _ = LibraryCounters(tx).read(user_id)
    return Tables(item_map, revision_map, conflict_map, counter)


def _same_state(row: dict[str, Any], sent: Sent) -> bool:
    if sent.op is ChangeOp.DELETE:
        return bool(row["deleted"])
    return (
        not row["deleted"]
        and row["content_hash"] == sent.content_hash
        and (row["metadata"] or {}) == sent.metadata
    )


def _check_history(tables: Tables) -> None:
    """(a) revisions 1..n per item, the item at n; (e) seqs unique, gap-free, counted."""
    by_item: defaultdict[str, list[int]] = defaultdict(list)
    for item_id, revision in tables.revisions:
        by_item[item_id].append(revision)
    assert set(by_item) == set(tables.items)
    for item_id, row in tables.items.items():
        numbers = sorted(by_item[item_id])
        assert numbers == list(range(1, len(numbers) + 1)), (row["path"], numbers)
        assert row["revision"] == numbers[-1]
        last = tables.revisions[(item_id, numbers[-1])]
        assert (row["seq"], row["deleted"], row["content_hash"], row["path"]) == (
            last["seq"],
            last["deleted"],
            last["content_hash"],
            last["path"],
        )
        seqs = [tables.revisions[(item_id, n)]["seq"] for n in numbers]
        assert seqs == sorted(set(seqs)), "an item's later revision has a later seq"
    # One item per path: a delete leaves a tombstone that an upsert re-creates.
    assert len({row["path"] for row in tables.items.values()}) == len(tables.items)
    item_seqs = [int(row["seq"]) for row in tables.items.values()]
    assert len(set(item_seqs)) == len(item_seqs)
    assert max(item_seqs) == tables.counter
    revision_seqs = sorted(int(row["seq"]) for row in tables.revisions.values())
    assert revision_seqs == list(range(1, tables.counter + 1)), "one seq per accepted change"


def _check_fresh_listing(tables: Tables, entries: list[FeedRow]) -> None:
    """(b) no cursor: every live item exactly once, in increasing seq order."""
    seqs = [e.seq for e in entries]
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
    ids = [e.id for e in entries]
    live = {i for i, row in tables.items.items() if not row["deleted"]}
    assert len(ids) == len(set(ids))
    assert set(ids) == live
    for entry in entries:
        row = tables.items[entry.id]
        assert (entry.revision, entry.seq, entry.path, entry.content_hash) == (
            row["revision"],
            row["seq"],
            row["path"],
            row["content_hash"],
        )


def _check_follower(tables: Tables, log: ReaderLog) -> None:
    """(c) the reader that paged during the writes ends where the library is."""
    assert all(a < b for a, b in itertools.pairwise(log.seqs)), "seq order"
    assert log.latest_behind == [], "a page's latest_seq was behind a change it carried"
    for item_id, row in tables.items.items():
        seen = log.last_seen.get(item_id)
        if seen is None:
            # Only a tombstone that predates the reader's first listing may be skipped.
            assert row["deleted"], f"live item {row['path']} never reached the reader"
            assert row["seq"] <= log.first_latest_seq, f"missed the delete of {row['path']}"
            continue
        assert (seen.revision, seen.seq, seen.deleted, seen.content_hash, seen.path) == (
            row["revision"],
            row["seq"],
            row["deleted"],
            row["content_hash"],
            row["path"],
        ), f"the reader's last view of {row['path']} is stale"
        assert json.loads(seen.metadata) == (row["metadata"] or {})
    assert set(log.last_seen) <= set(tables.items)


def _check_results(tables: Tables, sent: list[Sent]) -> None:
    """(d) results agree with the history and the conflict rows."""
    statuses = {s.status for s in sent}
    assert ReportStatus.REJECTED not in statuses
    applied = [s for s in sent if s.status is ReportStatus.APPLIED]
    # Each accepted change is exactly one revision, and each revision one change.
    applied_keys = [(s.item_id, s.revision) for s in applied]
    assert len(set(applied_keys)) == len(applied_keys)
    assert set(applied_keys) == set(tables.revisions)
    for s in applied:
        assert s.item_id is not None
        assert s.revision is not None
        row = tables.revisions[(s.item_id, s.revision)]
        assert (row["seq"], row["device_id"], row["path"]) == (s.seq, s.device_id, s.path)
        assert _same_state(row, s), (s, row)
    for s in sent:
        if s.status is ReportStatus.UNCHANGED and s.item_id is not None:
            assert s.revision is not None
            assert _same_state(tables.revisions[(s.item_id, s.revision)], s), s
        elif s.status is ReportStatus.UNCHANGED:
            assert s.op is ChangeOp.DELETE, "only a delete of nothing is unchanged on no item"
        if s.status is ReportStatus.UPLOAD_REQUIRED:
            assert s.content_hash == MISSING[0]
    assert all(row["content_hash"] != MISSING[0] for row in tables.revisions.values())
    _check_conflicts(tables, [s for s in sent if s.status is ReportStatus.CONFLICT])


def _check_conflicts(tables: Tables, conflicting: list[Sent]) -> None:
    assert conflicting, "the load should produce conflicts"
    by_pair: defaultdict[tuple[str, str], list[Sent]] = defaultdict(list)
    for s in conflicting:
        assert s.conflict_id is not None
        if s.item_id is not None:
            # The base was stale and the states differ (section 7's decision order).
            assert s.revision is not None
            server = tables.revisions[(s.item_id, s.revision)]
            assert not _same_state(server, s), s
            assert s.base_revision != s.revision, s
        by_pair[(s.device_id, s.path)].append(s)
    for (device_id, path), pair in by_pair.items():
        writers = {s.writer for s in pair}
        assert len(writers) == 1, "one writer per (device, path) in this load"
        assert len({s.conflict_id for s in pair}) == 1, "one open conflict per device and path"
        last = max(pair, key=lambda s: s.order)
        assert last.conflict_id is not None
        row = tables.conflicts[last.conflict_id]
        assert (row["device_id"], row["path"], row["status"]) == (device_id, path, "unresolved")
        client = (
            row["client_op"],
            row["client_deleted"],
            row["client_content_hash"],
            row["client_size"],
            row["base_revision"],
        )
        if last.op is ChangeOp.DELETE:
            assert client == ("delete", True, None, None, last.base_revision), (row, last)
        else:
            assert client == ("upsert", False, last.content_hash, last.size, last.base_revision)
            assert row["client_metadata"] == last.metadata
        assert row["server_revision"] == last.revision
    assert len(tables.conflicts) == len(by_pair)


def _check_all(library: Library, sent: list[Sent], log: ReaderLog) -> None:
    tables = _tables(library.services.db, library.user.id)
    _check_history(tables)
    _check_fresh_listing(tables, _read_all(library.services.feed, library.reader))
    _check_follower(tables, log)
    _check_results(tables, sent)
    assert log.pages > 1


# -- the tests -------------------------------------------------------------


def test_concurrent_reports_keep_history_feed_and_results_consistent(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    library = _library(tmp_path, database_url, db)
    sent = _seed(library)
    plans = _plans(library, WRITER_THREADS)
    start = threading.Barrier(len(plans) + 1)
    done = threading.Event()
    with ThreadPoolExecutor(max_workers=len(plans) + 1) as pool:
        reader = pool.submit(_follow_feed, library.services.feed, library.reader, done, start)
        writers = [pool.submit(_write_thread, library.services, plan, start) for plan in plans]
        try:
            for future in writers:
                sent += future.result(timeout=TIMEOUT_S)
        finally:
            done.set()
            if not all(f.done() for f in writers):
                start.abort()
        log = reader.result(timeout=TIMEOUT_S)
    _check_all(library, sent, log)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_report_processes_keep_history_feed_and_results_consistent(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    library = _library(tmp_path, database_url, db)
    sent = _seed(library)
    plans = _plans(library, WRITER_PROCESSES)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(plans) + 1)
    results = ctx.Queue()
    done = threading.Event()
    processes = [
        ctx.Process(
            target=_write_process,
            args=(database_url, str(library.settings.data_dir), plan, start, results),
        )
        for plan in plans
    ]
    for process in processes:
        process.start()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            reader = pool.submit(_follow_feed, library.services.feed, library.reader, done, start)
            try:
                failures = []
                for _ in plans:
                    _, written, failure = results.get(timeout=TIMEOUT_S)
                    sent += written
                    if failure is not None:
                        failures.append(failure)
                        start.abort()
                assert not failures, "\n".join(failures)
            finally:
                done.set()
            log = reader.result(timeout=TIMEOUT_S)
    except (queue.Empty, threading.BrokenBarrierError):
        start.abort()
        raise
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        results.close()
        results.join_thread()
    assert all(p.exitcode == 0 for p in processes)
    _check_all(library, sent, log)
