"""POST /sync/report: local changes in, one result each (protocol section 7).

A batch is one transaction holding the library lock; each change is applied
atomically on its own, so a bad change never takes the others down. The 200
goes out only after the commit.

The batch path (issue 7: at least 10,000 changes/s) reads the current item of
every path in the batch with one query, decides in memory, and writes through
a buffering LibraryWriter (executemany at the end). The decisions are the very
same code as for a single change, fed from that in-memory view, which is kept
exact: a path's current item is the last state written there. A change that
needs more than that view (a move, or a conflict to record) flushes the buffer
and runs the single-change path, in a savepoint, against the database; the
paths it touched are then read again when next needed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, NamedTuple

from shelfsync.content_hash import EMPTY_HASH, is_content_hash
from shelfsync.server.domain.accounts import Device
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.conflicts import ClientSide, Conflict
from shelfsync.server.domain.decisions import Current, Verdict, decide_move, decide_write
from shelfsync.server.domain.errors import InvalidInput, InvalidPath, ShelfsyncError
from shelfsync.server.domain.items import ChangeOp, Item, ItemState, validate_metadata
from shelfsync.server.domain.paths import normalize_path
from shelfsync.server.services.auth import AuthService, Principal
from shelfsync.server.services.conflicts import record_conflict
from shelfsync.server.services.library_writer import LibraryWriter
from shelfsync.server.services.notifier import ChangeNotifier
from shelfsync.server.storage.devices import DeviceRepository
from shelfsync.server.storage.engine import Database

__all__ = ["LocalChange", "ReportResult", "ReportService", "ReportStatus"]

MAX_CHANGES = 1000


class ReportStatus(enum.StrEnum):
    """The outcome of one reported change."""

    APPLIED = "applied"  # now the current state (new revision and seq)
    UNCHANGED = "unchanged"  # the server already holds that state
    UPLOAD_REQUIRED = "upload_required"  # this user's store lacks the content: upload it
    CONFLICT = "conflict"  # stale base and different states; see conflict_id
    REJECTED = "rejected"  # invalid change; see error


# LocalChange and ReportResult are plain immutable records made once per
# reported change (up to 1,000 a request): a NamedTuple is made in less than
# half the time of a frozen dataclass (which calls object.__setattr__ per field).
class LocalChange(NamedTuple):
    op: ChangeOp
    path: str
    base_revision: int | None
    to_path: str | None = None
    content_hash: str | None = None
    size: int | None = None
    mtime: datetime | None = None
    # None keeps the item's metadata; an object replaces it.
    metadata: dict[str, Any] | None = None


class ReportResult(NamedTuple):
    path: str
    status: ReportStatus
    id: str | None = None
    revision: int | None = None
    seq: int | None = None
    conflict_id: str | None = None
    error: ShelfsyncError | None = None
    conflict: Conflict | None = None


# The current item at a (normalized) path, as ItemRepository.at_path answers.
CurrentOf = Callable[[str], Item | None]


class _NeedsDatabase(Exception):
    """Raised, before anything is written, by a change that a buffered batch
    cannot decide from its in-memory view: it is run on its own instead."""


class _BatchView:
    """The current item at each path of a batch, read in one query up front and
    then kept up to date with what the batch writes."""

    def __init__(self, writer: LibraryWriter, paths: Iterable[str]) -> None:
        self._writer = writer
        wanted = set(paths)
        found = writer.items.at_paths(writer.user_id, wanted)
        self._current: dict[str, Item | None] = {p: found.get(p) for p in wanted}

    def current(self, path: str) -> Item | None:
        if path in self._current:
            return self._current[path]
        self._writer.flush()
        item = self._writer.items.at_path(self._writer.user_id, path)
        self._current[path] = item
        return item

    def wrote(self, written: Iterable[Item]) -> None:
        """Buffered writes change items in place: each is now current at its path."""
        for item in written:
            self._current[item.path] = item

    def forget(self, written: Iterable[Item]) -> None:
        """After the single-change path: read the paths it touched again."""
        for item in written:
            self._current.pop(item.path, None)
            if item.from_path is not None:
                self._current.pop(item.from_path, None)


def _batch_paths(changes: list[LocalChange]) -> dict[str, str]:
    """The valid paths of the batch's upserts and deletes, each mapped to its
    normalized form (the path it will look up)."""
    paths: dict[str, str] = {}
    for change in changes:
        if change.op is ChangeOp.MOVE or change.path in paths:
            continue
        try:
            paths[change.path] = normalize_path(change.path)
        except InvalidPath:
            continue  # rejected when its turn comes
    return paths


def _current(item: Item | None) -> Current | None:
    return None if item is None else Current(item.revision, item.state)


def _of(path: str, status: ReportStatus, item: Item | None, **extra: Any) -> ReportResult:
    if item is None:
        return ReportResult(path, status, **extra)
    return ReportResult(path, status, id=item.id, revision=item.revision, seq=item.seq, **extra)


class ReportService:
    def __init__(self, *, db: Database, notifier: ChangeNotifier) -> None:
        self._db = db
        self._notifier = notifier

    def report(self, principal: Principal, changes: list[LocalChange]) -> list[ReportResult]:
        device = AuthService.require_device(principal)
        if not 1 <= len(changes) <= MAX_CHANGES:
            raise InvalidInput(f"a report carries 1 to {MAX_CHANGES} changes")
        now = utcnow()
        with self._db.write() as tx:
            writer = LibraryWriter(tx, user_id=principal.user_id, now=now)
            wanted = {c.content_hash for c in changes if c.content_hash and c.op != ChangeOp.DELETE}
            sizes = writer.contents.sizes_for_user(principal.user_id, wanted)
            results = self._batch(writer, device, changes, sizes)
            changed = writer.finish()
            DeviceRepository(tx).mark_synced(device.id, now=now)
        if changed:
            self._notifier.notify(principal.user_id)
        return results

    def apply_one(self, writer: LibraryWriter, device: Device, change: LocalChange) -> ReportResult:
        """One change through the decision table, inside a caller's transaction
        (upload completion uses this to land its content)."""
        sizes: dict[str, int] = {}
        if change.content_hash:
            size = writer.contents.size_for_user(writer.user_id, change.content_hash)
            if size is not None:
                sizes[change.content_hash] = size
        return self._one(writer, device, change, sizes)

    def _batch(
        self,
        writer: LibraryWriter,
        device: Device,
        changes: list[LocalChange],
        sizes: dict[str, int],
    ) -> list[ReportResult]:
        """Every change of a report, in order, through a buffering writer."""
        results: list[ReportResult] = []
        with writer.buffered():
            normalized = _batch_paths(changes)
            view = _BatchView(writer, normalized.values())
            for change in changes:
                before = len(writer.written)
                try:
                    with writer.atomic():
                        result = self._decide(
                            writer, device, change, sizes, view.current, normalized
                        )
                except (InvalidInput, InvalidPath) as exc:
                    result = ReportResult(change.path, ReportStatus.REJECTED, error=exc)
                except _NeedsDatabase:
                    with writer.unbuffered():
                        result = self._one(writer, device, change, sizes)
                    view.forget(writer.written[before:])
                else:
                    view.wrote(writer.written[before:])
                results.append(result)
        return results

    def _one(
        self, writer: LibraryWriter, device: Device, change: LocalChange, sizes: dict[str, int]
    ) -> ReportResult:
        """One change on its own, in a savepoint, deciding from the database."""

        def current_of(path: str) -> Item | None:
            return writer.items.at_path(writer.user_id, path)

        try:
            with writer.atomic():
                return self._decide(writer, device, change, sizes, current_of)
        except (InvalidInput, InvalidPath) as exc:
            return ReportResult(change.path, ReportStatus.REJECTED, error=exc)

    def _decide(
        self,
        writer: LibraryWriter,
        device: Device,
        change: LocalChange,
        sizes: dict[str, int],
        current_of: CurrentOf,
        normalized: dict[str, str] | None = None,
    ) -> ReportResult:
        # `normalized`: paths this batch already normalized (the others raise here).
        path = normalized.get(change.path) if normalized is not None else None
        if path is None:
            path = normalize_path(change.path)
        if change.base_revision is not None and change.base_revision < 1:
            raise InvalidInput("base_revision must be null or a revision number (1 or more)")
        if change.op is ChangeOp.MOVE:
            return self._move(writer, device, change, path)
        if change.op is ChangeOp.DELETE:
            return self._delete(writer, device, change, path, current_of)
        return self._upsert(writer, device, change, path, sizes, current_of)

    def _upsert(
        self,
        writer: LibraryWriter,
        device: Device,
        change: LocalChange,
        path: str,
        sizes: dict[str, int],
        current_of: CurrentOf,
    ) -> ReportResult:
        content_hash, size = change.content_hash, change.size
        if content_hash is None or size is None:
            raise InvalidInput("an upsert needs content_hash and size")
        if not is_content_hash(content_hash):
            raise InvalidInput("content_hash must be 64 lowercase hex characters")
        if size < 0:
            raise InvalidInput("size must not be negative")
        if (content_hash == EMPTY_HASH) != (size == 0):
            raise InvalidInput("size 0 goes with the empty content hash, and only with it")
        stored_size = 0 if content_hash == EMPTY_HASH else sizes.get(content_hash)
        if stored_size is not None and stored_size != size:
            raise InvalidInput(f"size {size} does not match the stored content ({stored_size})")
        current = current_of(path)
        metadata = (
            validate_metadata(change.metadata)
            if change.metadata is not None
            else (current.metadata if current is not None and not current.deleted else {})
        )
        incoming = ItemState(deleted=False, content_hash=content_hash, metadata=metadata)
        verdict = decide_write(
            current=_current(current), base_revision=change.base_revision, incoming=incoming
        )
        if verdict is Verdict.UNCHANGED:
            return _of(path, ReportStatus.UNCHANGED, current)
        if verdict is Verdict.CONFLICT:
            client = ClientSide(
                op=ChangeOp.UPSERT,
                content_hash=content_hash,
                size=size,
                mtime=change.mtime,
                metadata=metadata,
            )
            return self._conflict(writer, device, change, path, client, current)
        if stored_size is None:
            return _of(path, ReportStatus.UPLOAD_REQUIRED, current)
        item = writer.upsert(
            existing=current,
            path=path,
            content_hash=content_hash,
            size=size,
            mtime=change.mtime,
            metadata=metadata,
            device_id=device.id,
        )
        return _of(path, ReportStatus.APPLIED, item)

    def _delete(
        self,
        writer: LibraryWriter,
        device: Device,
        change: LocalChange,
        path: str,
        current_of: CurrentOf,
    ) -> ReportResult:
        current = current_of(path)
        incoming = ItemState(deleted=True, content_hash=None, metadata={})
        verdict = decide_write(
            current=_current(current), base_revision=change.base_revision, incoming=incoming
        )
        if verdict is Verdict.UNCHANGED or current is None:
            return _of(path, ReportStatus.UNCHANGED, current)
        if verdict is Verdict.CONFLICT:
            client = ClientSide(
                op=ChangeOp.DELETE, content_hash=None, size=None, mtime=None, deleted=True
            )
            return self._conflict(writer, device, change, path, client, current)
        item = writer.delete(current, device_id=device.id)
        return _of(path, ReportStatus.APPLIED, item)

    def _move(
        self, writer: LibraryWriter, device: Device, change: LocalChange, path: str
    ) -> ReportResult:
        if change.to_path is None:
            raise InvalidInput("a move needs to_path")
        to_path = normalize_path(change.to_path)
        if to_path == path:
            raise InvalidInput("to_path must differ from path")
        if writer.buffering:
            raise _NeedsDatabase  # it reads history: run it on its own
        source = writer.items.at_path(writer.user_id, path)
        target = writer.items.at_path(writer.user_id, to_path)
        based_on = (
            writer.items.revision_at_path(writer.user_id, path, change.base_revision)
            if change.base_revision is not None
            else None
        )
        moved = writer.items.get(based_on.item_id) if based_on is not None else None
        already_moved = moved is not None and not moved.deleted and moved.path == to_path
        verdict = decide_move(
            source=_current(source),
            target=_current(target),
            base_revision=change.base_revision,
            already_moved=already_moved,
        )
        if verdict is Verdict.APPLY and source is not None:
            item = writer.move(source, to_path=to_path, device_id=device.id)
            return _of(to_path, ReportStatus.APPLIED, item)
        if verdict is Verdict.UNCHANGED:
            return _of(to_path, ReportStatus.UNCHANGED, moved)
        # The client's version is the content it moved: what it sent, else its base.
        content_hash = change.content_hash or (based_on.content_hash if based_on else None)
        size = change.size if change.content_hash else (based_on.size if based_on else None)
        client = ClientSide(
            op=ChangeOp.MOVE,
            content_hash=content_hash,
            size=size,
            mtime=change.mtime,
            metadata=based_on.metadata if based_on is not None else {},
            from_path=path,
        )
        return self._conflict(writer, device, change, to_path, client, target)

    def _conflict(
        self,
        writer: LibraryWriter,
        device: Device,
        change: LocalChange,
        path: str,
        client: ClientSide,
        current: Item | None,
    ) -> ReportResult:
        if writer.buffering:
            raise _NeedsDatabase  # conflicts are recorded from the database, in a savepoint
        conflict = record_conflict(
            writer, device=device, path=path, base_revision=change.base_revision, client=client
        )
        return _of(path, ReportStatus.CONFLICT, current, conflict_id=conflict.id, conflict=conflict)
