"""Many long-polls of one library woken by one change (protocol section 6), on both backends.

One change wakes every waiter of its library at once. Waiters asking for the
same page share one feed read, but only a read that began after the change
was signalled: a waiter must never be answered from a read that could have
missed the change that woke it.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import pytest

from shelfsync.server.api.dependencies import Services
from shelfsync.server.app import build_services
from shelfsync.server.domain.accounts import SyncFilter
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.items import ChangeOp
from shelfsync.server.services import feed as feed_module
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.feed import FeedPage, FeedService
from shelfsync.server.services.report import LocalChange, ReportStatus
from shelfsync.server.settings import Settings
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database

WAITERS = 60
CONTENT = hashlib.sha256(b"wake").hexdigest()


class CountingFeed:
    """Counts the feed reads a FeedService runs (its `page`, called in a thread)."""

    def __init__(self, feed: FeedService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        self.in_flight = 0
        self._lock = threading.Lock()
        real = feed.page

        def page(principal: Principal, *, cursor: str | None, limit: int) -> FeedPage:
            with self._lock:
                self.reads += 1
                self.in_flight += 1
            try:
                return real(principal, cursor=cursor, limit=limit)
            finally:
                with self._lock:
                    self.in_flight -= 1

        monkeypatch.setattr(feed, "page", page)


def _setup(tmp_path: Path, database_url: str, db: Database) -> tuple[Services, list[Principal]]:
    services = build_services(Settings(data_dir=tmp_path / "data", database_url=database_url), db)
    user = services.accounts.add_user(username="alice", password="correct horse battery")
    owner = Principal(user, None)
    devices = [services.devices.register(owner, name=f"d{n}")[0].device for n in range(4)]
    with db.write() as tx:
        ContentRepository(tx).add(user_id=user.id, content_hash=CONTENT, size=4, now=utcnow())
    return services, [Principal(user, device) for device in devices]


def _report(services: Services, principal: Principal, path: str) -> None:
    change = LocalChange(
        op=ChangeOp.UPSERT, path=path, base_revision=None, content_hash=CONTENT, size=4
    )
    [result] = services.report.report(principal, [change])
    assert result.status is ReportStatus.APPLIED


async def _held(services: Services, count: int) -> None:
    while services.feed._notifier.waiting() < count:
        await asyncio.sleep(0.01)


def test_waiters_woken_together_share_one_read_and_all_get_the_change(
    tmp_path: Path, database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, principals = _setup(tmp_path, database_url, db)
    writer, readers = principals[0], principals[1:]
    latest = services.feed.page(writer, cursor="latest", limit=10).cursor
    counting = CountingFeed(services.feed, monkeypatch)

    async def scenario() -> list[FeedPage]:
        waiters = [
            asyncio.ensure_future(
                services.feed.wait_page(
                    readers[n % len(readers)], cursor=latest, limit=100, wait_s=30
                )
            )
            for n in range(WAITERS)
        ]
        await _held(services, WAITERS)
        # Subscribed first, then each read once (finding nothing): let those end.
        while counting.in_flight:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        reads_before_wake = counting.reads
        await asyncio.to_thread(_report, services, writer, "books/new.txt")
        pages = await asyncio.wait_for(asyncio.gather(*waiters), timeout=20)
        # Every waiter asked for the same page: the wake-up costs a handful of
        # reads (those already in flight when a waiter resumed are not shared
        # with it), not one per waiter.
        assert counting.reads - reads_before_wake < WAITERS / 4
        return pages

    pages = asyncio.run(scenario())
    assert len(pages) == WAITERS
    for page in pages:
        assert [c.path for c in page.changes] == ["books/new.txt"]
        assert page.cursor == pages[0].cursor


def test_a_read_begun_before_the_change_is_never_shared_with_a_waiter_it_woke(
    tmp_path: Path, database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, principals = _setup(tmp_path, database_url, db)
    writer, reader = principals[0], principals[1]
    latest = services.feed.page(writer, cursor="latest", limit=10).cursor
    # Without the 5 s backstop poll, a waiter answered from a stale read would
    # hold until its wait ends instead of getting the change.
    monkeypatch.setattr(feed_module, "FALLBACK_POLL_S", 60.0)
    real_page = services.feed.page
    block_next = threading.Event()
    in_slow_read = threading.Event()
    release = threading.Event()

    def page(principal: Principal, *, cursor: str | None, limit: int) -> FeedPage:
        blocked = block_next.is_set()
        block_next.clear()
        result = real_page(principal, cursor=cursor, limit=limit)
        if blocked:
            # This read has looked (and found nothing) and is slow to answer.
            in_slow_read.set()
            release.wait(10)
        return result

    monkeypatch.setattr(services.feed, "page", page)

    async def scenario() -> tuple[FeedPage, FeedPage]:
        held = asyncio.ensure_future(
            services.feed.wait_page(reader, cursor=latest, limit=100, wait_s=30)
        )
        await _held(services, 1)
        await asyncio.sleep(0.1)
        # A second request for the same page starts a read that is still in
        # flight when the change commits and wakes the first waiter.
        block_next.set()
        late = asyncio.ensure_future(
            services.feed.wait_page(reader, cursor=latest, limit=100, wait_s=30)
        )
        await asyncio.to_thread(in_slow_read.wait, 10)
        await asyncio.to_thread(_report, services, writer, "late.txt")
        await asyncio.sleep(0.1)
        release.set()
        return await asyncio.wait_for(asyncio.gather(held, late), timeout=20)

    for result in asyncio.run(scenario()):
        assert [c.path for c in result.changes] == ["late.txt"]


def test_waiters_with_different_filters_do_not_share_a_page(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    services, principals = _setup(tmp_path, database_url, db)
    writer = principals[0]
    owner = Principal(writer.user, None)
    music_only = services.devices.register(
        owner, name="music only", sync_filter=SyncFilter(include=("music/",))
    )[0].device
    filtered = Principal(writer.user, music_only)
    everything = principals[2]
    latest = services.feed.page(writer, cursor="latest", limit=10).cursor

    async def scenario() -> tuple[FeedPage, FeedPage]:
        a = asyncio.ensure_future(
            services.feed.wait_page(filtered, cursor=latest, limit=100, wait_s=2)
        )
        b = asyncio.ensure_future(
            services.feed.wait_page(everything, cursor=latest, limit=100, wait_s=30)
        )
        await _held(services, 2)
        await asyncio.to_thread(_report, services, writer, "books/other.txt")
        return await asyncio.wait_for(asyncio.gather(a, b), timeout=20)

    for_filtered, for_everything = asyncio.run(scenario())
    assert [c.path for c in for_everything.changes] == ["books/other.txt"]
    assert for_filtered.changes == []  # outside its selection: it waited out its 2 s
