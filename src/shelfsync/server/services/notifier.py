"""Wakes long-polling feed readers when a library changes.

Writers run in worker threads and call `notify` after their commit; readers are
asyncio tasks. A reader subscribes *before* it reads the feed, so a commit that
lands between its read and its wait still wakes it.

With several server processes (PostgreSQL) a change must also wake readers held
by the other processes: `forward_to` gives the notifier a publisher (the
process's LISTEN/NOTIFY channel, storage/change_channel.py) that `notify` hands
the library to, and the channel calls `wake` for signals from other processes,
and `wake_all` after a gap in which signals may have been lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable

__all__ = ["ChangeNotifier", "Subscription"]


class Subscription:
    """One reader's interest in one library, valid for one wake-up."""

    def __init__(self, notifier: ChangeNotifier, user_id: str) -> None:
        self._notifier = notifier
        self.user_id = user_id
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        # When the first wake-up was signalled (time.monotonic_ns), after the
        # commit that caused it: a read begun later sees that commit.
        self.fired_at_ns: int | None = None

    def _fire(self, at_ns: int) -> None:
        if self.fired_at_ns is None:
            self.fired_at_ns = at_ns
        # A reader whose event loop has closed (its server stopping) has nobody
        # left to wake; the waker (a writer, the change channel) carries on.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout_s: float) -> bool:
        """True when woken by a change, False when the timeout passed."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout=max(timeout_s, 0))
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._notifier._unsubscribe(self)


class ChangeNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._publish: Callable[[str], None] | None = None

    def forward_to(self, publish: Callable[[str], None]) -> None:
        """Also send every `notify` to the other server processes (non-blocking)."""
        self._publish = publish

    def subscribe(self, user_id: str) -> Subscription:
        subscription = Subscription(self, user_id)
        with self._lock:
            self._subscribers[user_id].add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subs = self._subscribers.get(subscription.user_id)
            if subs is not None:
                subs.discard(subscription)
                if not subs:
                    del self._subscribers[subscription.user_id]

    def notify(self, user_id: str) -> None:
        """Thread-safe, after a commit: wake every reader of this library, here and
        (when forwarding) in the other server processes."""
        self.wake(user_id)
        if self._publish is not None:
            self._publish(user_id)

    def wake(self, user_id: str) -> None:
        """Thread-safe: wake this process's readers of this library."""
        # One moment for all: waiters woken together can then share a read begun
        # after it, however the loop below interleaves with their event loop.
        now = time.monotonic_ns()
        with self._lock:
            subs = list(self._subscribers.get(user_id, ()))
        for subscription in subs:
            subscription._fire(now)

    def wake_all(self) -> None:
        """Thread-safe: wake every reader in this process (they read again)."""
        now = time.monotonic_ns()
        with self._lock:
            subs = [s for group in self._subscribers.values() for s in group]
        for subscription in subs:
            subscription._fire(now)

    def waiting(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subscribers.values())
