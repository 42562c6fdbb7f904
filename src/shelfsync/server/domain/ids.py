"""Time-ordered ids (UUID version 7, RFC 9562) for rows inserted at high rates.

An item's id keys two B-trees: the items primary key and, as the first column,
the revisions primary key (item_id, revision). Random (version 4) ids put every
new item on a random page of both, so on a large library each new item dirties
two more pages (about 4 KiB each to the WAL, twice on SQLite with the
checkpoint; a full-page image on PostgreSQL). Version 7 ids begin with the
time in milliseconds, so new items land together at the right edge of both
trees (issue 7, report ingest). They are still UUID strings (protocol section
1); they reveal their creation time to the library's owner, who sees it anyway.
"""

from __future__ import annotations

import random
import threading
import time

__all__ = ["time_ordered_id"]

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_COUNTER_BITS = 12  # the "rand_a" field: ids made in one millisecond stay ordered


def time_ordered_id() -> str:
    """A new UUIDv7 string; ids made by one process increase strictly."""
    global _last_ms, _counter  # one clock per process, guarded by _lock
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _counter = ms, 0
        else:
            _counter += 1
            if _counter >> _COUNTER_BITS:  # 4,096 ids in one millisecond: borrow the next
                _last_ms, _counter = _last_ms + 1, 0
        ms, counter = _last_ms, _counter
        # Ids must be unique, not secret: every request is authorized by its
        # token, never by knowing an id. The module's generator is seeded from
        # os.urandom, again in a forked child; a syscall per id cost a few
        # percent of a report batch.
        rand_b = random.getrandbits(62)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
