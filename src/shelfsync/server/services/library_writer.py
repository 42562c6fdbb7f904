"""Writes accepted changes into one library inside one open transaction.

Every writer locks the library's counter row first, so on PostgreSQL the
writers of one library are serialized and `seq` order equals commit order (the
architecture guide's rule); SQLite's BEGIN IMMEDIATE gives the same. Each
accepted change becomes a new revision of its item and a new `seq`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

from shelfsync.server.domain.items import ChangeOp, Item
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Tx, savepoint
from shelfsync.server.storage.items import ItemRepository, LibraryCounters

__all__ = ["LibraryWriter"]


class LibraryWriter:
    def __init__(self, tx: Tx, *, user_id: str, now: datetime) -> None:
        self.tx = tx
        self.user_id = user_id
        self.now = now
        self.items = ItemRepository(tx)
        self.contents = ContentRepository(tx)
        self._counters = LibraryCounters(tx)
        self.seq = self._counters.lock(user_id)
        self._start_seq = self.seq
        self.written: list[Item] = []

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """One change, atomic on its own: on error nothing of it stays."""
        seq, written = self.seq, len(self.written)
        try:
            with savepoint(self.tx):
                yield
        except BaseException:
            self.seq = seq
            del self.written[written:]
            raise

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _store(self, item: Item, *, new: bool) -> Item:
        if new:
            self.items.insert(item, now=self.now)
        else:
            self.items.replace(item, now=self.now)
        self.items.add_revision(item)
        self.written.append(item)
        return item

    def upsert(
        self,
        *,
        existing: Item | None,
        path: str,
        content_hash: str,
        size: int,
        mtime: datetime | None,
        metadata: dict[str, Any],
        device_id: str | None,
    ) -> Item:
        """Create the item, re-create a tombstone, or give a live one new content."""
        if existing is None:
            item = Item(
                id=str(uuid.uuid4()),
                user_id=self.user_id,
                path=path,
                revision=1,
                content_hash=content_hash,
                size=size,
                mtime=mtime,
                metadata=metadata,
                deleted=False,
                device_id=device_id,
                updated_at=self.now,
                seq=self._next_seq(),
                op=ChangeOp.UPSERT,
            )
            return self._store(item, new=True)
        item = replace(
            existing,
            path=path,
            revision=existing.revision + 1,
            content_hash=content_hash,
            size=size,
            mtime=mtime,
            metadata=metadata,
            deleted=False,
            device_id=device_id,
            updated_at=self.now,
            seq=self._next_seq(),
            op=ChangeOp.UPSERT,
            from_path=None,
        )
        return self._store(item, new=False)

    def delete(self, existing: Item, *, device_id: str | None) -> Item:
        """A tombstone; the content stays in the item's history."""
        item = replace(
            existing,
            revision=existing.revision + 1,
            content_hash=None,
            size=0,
            deleted=True,
            device_id=device_id,
            updated_at=self.now,
            seq=self._next_seq(),
            op=ChangeOp.DELETE,
            from_path=None,
        )
        return self._store(item, new=False)

    def move(self, existing: Item, *, to_path: str, device_id: str | None) -> Item:
        item = replace(
            existing,
            path=to_path,
            revision=existing.revision + 1,
            device_id=device_id,
            updated_at=self.now,
            seq=self._next_seq(),
            op=ChangeOp.MOVE,
            from_path=existing.path,
        )
        return self._store(item, new=False)

    def finish(self) -> bool:
        """Store the counter; True when anything was written (readers to wake)."""
        if self.seq != self._start_seq:
            self._counters.set_seq(self.user_id, self.seq)
            return True
        return False
