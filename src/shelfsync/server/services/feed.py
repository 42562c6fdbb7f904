"""The coalesced change feed, long-poll and acks (protocol section 6)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from shelfsync.server.domain.accounts import Device, SyncFilter
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.errors import CursorExpired, InvalidCursor, InvalidInput
from shelfsync.server.domain.items import ChangeOp
from shelfsync.server.services.auth import AuthService, Principal
from shelfsync.server.services.cursors import Cursor, CursorCodec
from shelfsync.server.services.notifier import ChangeNotifier
from shelfsync.server.services.sync_filter import PathSelector, selector_for
from shelfsync.server.storage.devices import DeviceRepository
from shelfsync.server.storage.engine import Database, Tx
from shelfsync.server.storage.items import FeedRow, ItemRepository, LibraryCounters

__all__ = ["LATEST", "AckResult", "FeedPage", "FeedService", "pending_changes"]

LATEST = "latest"
MAX_LIMIT = 1000
MAX_WAIT_S = 55
# A filtered device may need many rows scanned to fill a page; bound the work
# of one request and let the cursor carry on from where it stopped.
_SCAN_BUDGET_ROWS = 20_000
# Backstop for a lost wake-up (or a change committed by another process).
FALLBACK_POLL_S = 5.0


@dataclass(frozen=True, slots=True)
class FeedPage:
    changes: list[FeedRow]
    cursor: str
    has_more: bool
    latest_seq: int


@dataclass(frozen=True, slots=True)
class AckResult:
    device_id: str
    acked_cursor: str
    pending_changes: int


@dataclass(frozen=True, slots=True)
class _SharedRead:
    started_ns: int
    task: asyncio.Future[FeedPage]


_ReadKey = tuple[asyncio.AbstractEventLoop, str, str | None, int, SyncFilter | None]


class FeedService:
    def __init__(self, *, db: Database, codec: CursorCodec, notifier: ChangeNotifier) -> None:
        self._db = db
        self._codec = codec
        self._notifier = notifier
        # Reads in flight, per event loop and page asked for (see _read_after).
        self._reads: dict[_ReadKey, _SharedRead] = {}

    # -- reading ---------------------------------------------------------

    def page(self, principal: Principal, *, cursor: str | None, limit: int) -> FeedPage:
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be 1 to {MAX_LIMIT}")
        with self._db.read() as tx:
            return self._page(tx, principal, cursor, limit)

    def _start(self, tx: Tx, principal: Principal, cursor: str | None) -> tuple[Cursor, int]:
        user_id = principal.user_id
        latest, purged = LibraryCounters(tx).read(user_id)
        if cursor is None:
            # The live library as of now, then everything after.
            return Cursor(user_id, 0, snapshot_seq=latest), latest
        if cursor == LATEST:
            return Cursor(user_id, latest), latest
        start = self._codec.decode(cursor, user_id=user_id)
        if start.seq > latest or start.snapshot_seq > latest:
            raise InvalidCursor("the cursor is ahead of this library")
        if purged > max(start.seq, start.snapshot_seq):
            raise CursorExpired(
                "the cursor is older than the retained history: read again without one",
                reason="tombstones after this cursor were purged",
            )
        return start, latest

    def _page(self, tx: Tx, principal: Principal, cursor: str | None, limit: int) -> FeedPage:
        start, latest = self._start(tx, principal, cursor)
        repo = ItemRepository(tx)
        device = principal.device
        selector = selector_for(device.sync_filter) if device is not None else None
        if selector is not None and selector.everything:
            selector = None  # every row is delivered as it is
        delivered: list[FeedRow] = []
        scanned_to = start.seq
        scanned = 0
        exhausted = False
        while len(delivered) <= limit:
            rows = repo.feed_page(
                principal.user_id,
                after_seq=scanned_to,
                snapshot_seq=start.snapshot_seq,
                limit=limit + 1,
            )
            for row in rows:
                entry = row if selector is None else self._filtered(repo, selector, start, row)
                if entry is not None:
                    delivered.append(entry)
                    if len(delivered) > limit:
                        break
                scanned_to = row.seq
            scanned += len(rows)
            if len(rows) < limit + 1 and len(delivered) <= limit:
                exhausted = True
                break
            if scanned >= _SCAN_BUDGET_ROWS:
                break
        has_more = len(delivered) > limit or not exhausted
        delivered = delivered[:limit]
        if len(delivered) == limit and has_more:
            scanned_to = delivered[-1].seq
        if not has_more:
            # Nothing more is visible: skipped tombstones are behind us for good.
            position = Cursor(principal.user_id, max(scanned_to, start.snapshot_seq))
        else:
            snapshot = start.snapshot_seq if start.snapshot_seq > scanned_to else 0
            position = Cursor(principal.user_id, scanned_to, snapshot_seq=snapshot)
        return FeedPage(delivered, self._codec.encode(position), has_more, latest)

    @staticmethod
    def _filtered(
        repo: ItemRepository, selector: PathSelector, start: Cursor, row: FeedRow
    ) -> FeedRow | None:
        """The entry a filtered device sees for `row`, or None to skip it."""
        if selector.matches(row.path):
            return row
        if row.seq <= start.snapshot_seq:
            return None  # a first listing: the device holds nothing outside its selection
        before = repo.path_as_of(row.id, start.seq)
        if before is None:
            earliest = repo.earliest_revision(row.id)
            known_new = earliest is not None and earliest[0] == 1 and earliest[1] > start.seq
            if known_new:
                return None  # created after the cursor, outside the selection
        elif not selector.matches(before):
            return None  # was outside the selection then, and is now
        # It left the selection (moved out): to this device it is gone.
        return row._replace(
            deleted=True, op=ChangeOp.DELETE, content_hash=None, size=0, from_path=None
        )

    async def wait_page(
        self, principal: Principal, *, cursor: str | None, limit: int, wait_s: float
    ) -> FeedPage:
        """Like page(), but with nothing to deliver, hold until a change or the timeout."""
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise InvalidInput(f"wait must be 0 to {MAX_WAIT_S} seconds")
        deadline = time.monotonic() + wait_s
        fresh_after_ns = time.monotonic_ns()
        while True:
            subscription = self._notifier.subscribe(principal.user_id)
            try:
                page = await self._read_after(principal, cursor, limit, fresh_after_ns)
                remaining = deadline - time.monotonic()
                if page.changes or page.has_more or remaining <= 0:
                    return page
                woken = await subscription.wait(min(remaining, FALLBACK_POLL_S))
                fired_at = subscription.fired_at_ns
                fresh_after_ns = fired_at if woken and fired_at is not None else time.monotonic_ns()
            finally:
                subscription.close()
            # Keep the position reached (the cursor may have moved past tombstones).
            cursor = page.cursor

    async def _read_after(
        self, principal: Principal, cursor: str | None, limit: int, after_ns: int
    ) -> FeedPage:
        """A page read that began after `after_ns` (so it sees every commit signalled
        before then). One change wakes every waiter of a library at once; those
        asking for the same page share one read instead of a thousand identical ones."""
        device = principal.device
        key = (
            asyncio.get_running_loop(),
            principal.user_id,
            cursor,
            limit,
            device.sync_filter if device is not None else None,
        )
        shared = self._reads.get(key)
        if shared is None or shared.started_ns <= after_ns:
            started_ns = time.monotonic_ns()
            task = asyncio.ensure_future(
                asyncio.to_thread(self.page, principal, cursor=cursor, limit=limit)
            )
            shared = _SharedRead(started_ns, task)
            self._reads[key] = shared
            task.add_done_callback(lambda _: self._forget(key, shared))
        # One waiter leaving (its client gone) must not cancel the others' read.
        return await asyncio.shield(shared.task)

    def _forget(self, key: _ReadKey, shared: _SharedRead) -> None:
        if self._reads.get(key) is shared:
            del self._reads[key]

    # -- acks ------------------------------------------------------------

    def ack(self, principal: Principal, *, cursor: str) -> AckResult:
        device = AuthService.require_device(principal)
        now = utcnow()
        with self._db.write() as tx:
            latest, _ = LibraryCounters(tx).read(principal.user_id)
            position = self._codec.decode(cursor, user_id=principal.user_id)
            if position.seq > latest or position.snapshot_seq > latest:
                raise InvalidCursor("the cursor is ahead of this library")
            acked = DeviceRepository(tx).ack(device.id, seq=position.seq, now=now)
            pending = pending_changes(tx, replace(device, acked_seq=acked))
        return AckResult(device.id, self.encode_position(principal.user_id, acked), pending)

    # -- device status ---------------------------------------------------

    def encode_position(self, user_id: str, seq: int | None) -> str:
        return self._codec.encode(Cursor(user_id, seq or 0))

    def acked_cursor(self, device: Device) -> str | None:
        if device.acked_seq is None:
            return None
        return self.encode_position(device.user_id, device.acked_seq)


def pending_changes(tx: Tx, device: Device) -> int:
    """How many feed entries the device has not acknowledged yet.

    Without an ack the device has received nothing: everything live is pending.
    """
    repo = ItemRepository(tx)
    after = device.acked_seq or 0
    live_only = device.acked_seq is None
    selector = selector_for(device.sync_filter)
    if selector.everything:
        return repo.count_after(device.user_id, after_seq=after, live_only=live_only)
    rows = repo.paths_after(device.user_id, after_seq=after, live_only=live_only)
    return sum(1 for row in rows if selector.matches(str(row[1])))
