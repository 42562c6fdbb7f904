"""What uploads and downloads share: the bandwidth limit, byte counters, settings.

The limit (`--limit-rate`, or `SHELFSYNC_LIMIT_RATE` in bytes per second) is a
token bucket shared by every transfer thread: a real throttle on the bytes that
go over the wire, which is also what makes a crash test stop at a predictable
point. The counters say what actually travelled, so a resumed transfer can show
it did not send again what the server already acknowledged.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

__all__ = ["LIMIT_RATE_ENV", "Throttle", "TransferCounters", "TransferSettings"]

LIMIT_RATE_ENV = "SHELFSYNC_LIMIT_RATE"


class Throttle:
    """A token bucket: `take(n)` blocks until n bytes may go (no-op when unlimited)."""

    def __init__(self, bytes_per_s: int | None) -> None:
        self.bytes_per_s = bytes_per_s if bytes_per_s and bytes_per_s > 0 else None
        self._lock = threading.Lock()
        self._available = 0.0
        self._last = time.monotonic()

    @classmethod
    def from_env(cls, explicit: int | None = None) -> Throttle:
        if explicit is not None:
            return cls(explicit)
        raw = os.environ.get(LIMIT_RATE_ENV, "").strip()
        return cls(int(raw) if raw.isdigit() else None)

    def take(self, size_bytes: int) -> None:
        rate = self.bytes_per_s
        if rate is None:
            return
        # Large requests go through in slices, so parallel transfers share fairly.
        burst = max(rate // 10, 1)
        remaining = size_bytes
        while remaining > 0:
            piece = min(remaining, burst)
            with self._lock:
                now = time.monotonic()
                self._available = min(self._available + (now - self._last) * rate, float(burst))
                self._last = now
                self._available -= piece
                wait_s = -self._available / rate if self._available < 0 else 0.0
            if wait_s > 0:
                time.sleep(wait_s)
            remaining -= piece


@dataclass(slots=True)
class TransferCounters:
    """Bytes and chunks that went over the wire (thread-safe increments)."""

    uploaded_files: int = 0
    uploaded_bytes: int = 0
    chunks_sent: int = 0
    chunks_already_there: int = 0
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    resumed_download_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


@dataclass(frozen=True, slots=True)
class TransferSettings:
    parallel_chunks: int = 4  # chunks of one large file in flight at once
    parallel_files: int = 8  # small files in flight at once
    throttle: Throttle = field(default_factory=lambda: Throttle(None))
