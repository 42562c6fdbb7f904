"""A model of one device and the server, to drive plan.py in property tests.

The model server follows the report decision table of protocol sections 7-8
(base current -> apply; same state -> unchanged; else conflict, kept beside
under `keep_both`). The model device applies actions with the same
preconditions as the real executor (client/sync.py): a local action happens
only over the expected local content, a report is not repeated for a local
version already recorded as a conflict.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from shelfsync.client.plan import (
    Action,
    Base,
    ConflictMark,
    DeleteLocal,
    Download,
    ForgetConflict,
    ForgetSynced,
    MarkSynced,
    MoveLocal,
    PlanInput,
    RelocateSynced,
    RemoteItem,
    ReportDelete,
    ReportMove,
    ReportUpsert,
    plan,
)

__all__ = ["ModelDevice", "ModelItem", "ModelServer", "converge"]


@dataclass(frozen=True)
class ModelItem:
    id: str
    path: str
    revision: int
    content_hash: str | None  # None: deleted (a tombstone)


@dataclass
class ModelServer:
    items: dict[str, ModelItem] = field(default_factory=dict)
    keep_both: bool = True
    # Every client version the server holds because of a conflict.
    conflict_versions: list[tuple[str, str | None]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def live(self) -> dict[str, RemoteItem]:
        return {
            i.path: RemoteItem(i.id, i.path, i.revision, i.content_hash)
            for i in self.items.values()
            if i.content_hash is not None
        }

    def at_path(self, path: str) -> ModelItem | None:
        found = [i for i in self.items.values() if i.path == path]
        live = [i for i in found if i.content_hash is not None]
        if live:
            return live[0]
        return max(found, key=lambda i: i.revision) if found else None

    def _write(self, current: ModelItem | None, path: str, content: str | None) -> ModelItem:
        if current is None:
            item = ModelItem(f"n{next(self._ids)}", path, 1, content)
        else:
            item = replace(current, path=path, revision=current.revision + 1, content_hash=content)
        self.items[item.id] = item
        return item

    @staticmethod
    def _base_current(current: ModelItem | None, base: int | None) -> bool:
        if current is None:
            return base is None
        if current.content_hash is None:
            return base is None or base == current.revision
        return base == current.revision

    def _conflict(self, path: str, content: str | None) -> str:
        self.conflict_versions.append((path, content))
        if self.keep_both and content is not None:
            n = 1
            while f"{path}~c{n}" in self.live():
                n += 1
            self._write(None, f"{path}~c{n}", content)
        return "conflict"

    def upsert(self, path: str, content: str, base: int | None) -> tuple[str, ModelItem | None]:
        current = self.at_path(path)
        if self._base_current(current, base):
            return "applied", self._write(current, path, content)
        if current is not None and current.content_hash == content:
            return "unchanged", current
        return self._conflict(path, content), current

    def delete(self, path: str, base: int) -> tuple[str, ModelItem | None]:
        current = self.at_path(path)
        if current is None or current.content_hash is None:
            return "unchanged", current
        if self._base_current(current, base):
            return "applied", self._write(current, path, None)
        return self._conflict(path, None), current

    def move(self, src: str, dst: str, base: int, item_id: str) -> tuple[str, ModelItem | None]:
        source, target = self.at_path(src), self.at_path(dst)
        free = target is None or target.content_hash is None
        live = source is not None and source.content_hash is not None
        if live and source is not None and source.revision == base and free:
            return "applied", self._write(source, dst, source.content_hash)
        moved = self.items.get(item_id)
        if moved is not None and moved.content_hash is not None and moved.path == dst:
            return "unchanged", moved
        content = source.content_hash if source is not None else None
        return self._conflict(dst, content), target


@dataclass
class ModelDevice:
    local: dict[str, str]
    synced: dict[str, Base]
    conflicts: dict[str, ConflictMark] = field(default_factory=dict)

    def snapshot(self) -> tuple[object, ...]:
        return (dict(self.local), dict(self.synced), dict(self.conflicts))

    def plan_input(self, server: ModelServer, moves: list[tuple[str, str]]) -> PlanInput:
        return PlanInput(
            synced=self.synced,
            local=self.local,
            remote=server.live(),
            local_moves=moves,
            conflicts=self.conflicts,
        )

    def apply(self, actions: list[Action], server: ModelServer) -> None:
        for action in actions:
            self._apply(action, server)

    def _mark(self, path: str, local_hash: str | None, server: ModelServer) -> None:
        self.conflicts[path] = ConflictMark(local_hash, resolved=server.keep_both)

    def _apply(self, action: Action, server: ModelServer) -> None:
        match action:
            case MoveLocal(from_path=src, to_path=dst, synced_from=origin, expect_hash=h):
                if self.local.get(src) == h and dst not in self.local:
                    self.local[dst] = self.local.pop(src)
                    if origin in self.synced:
                        self.synced[dst] = self.synced.pop(origin)
            case DeleteLocal(path=p, expect_hash=h):
                if self.local.get(p) == h:
                    del self.local[p]
                    self.synced.pop(p, None)
            case Download(path=p, item_id=i, revision=r, content_hash=h, expect_hash=e):
                if self.local.get(p) == e:
                    self.local[p] = h
                    self.synced[p] = Base(i, r, h)
            case ReportUpsert(path=p, content_hash=h, base_revision=b):
                mark = self.conflicts.get(p)
                if self.local.get(p) != h or (mark is not None and mark.local_hash == h):
                    return
                status, item = server.upsert(p, h, b)
                if status == "conflict":
                    self._mark(p, h, server)
                elif item is not None:
                    self.synced[p] = Base(item.id, item.revision, h)
            case ReportDelete(path=p, base_revision=b):
                mark = self.conflicts.get(p)
                if p in self.local or (mark is not None and mark.local_hash is None):
                    return
                status, _ = server.delete(p, b)
                if status == "conflict":
                    self._mark(p, None, server)
                else:
                    self.synced.pop(p, None)
            case ReportMove(from_path=src, to_path=dst, base_revision=b, item_id=i):
                base = self.synced.get(src)
                if base is None or dst not in self.local:
                    return
                status, item = server.move(src, dst, b, i)
                if status == "conflict":
                    self._mark(dst, self.local.get(dst), server)
                elif item is not None:
                    self.synced.pop(src)
                    self.synced[dst] = Base(item.id, item.revision, base.content_hash)
            case MarkSynced(path=p, item_id=i, revision=r, content_hash=h):
                self.synced[p] = Base(i, r, h)
            case ForgetSynced(path=p):
                self.synced.pop(p, None)
            case RelocateSynced(from_path=src, to_path=dst):
                if src in self.synced:
                    self.synced[dst] = self.synced.pop(src)
            case ForgetConflict(path=p):
                self.conflicts.pop(p, None)


def converge(
    device: ModelDevice, server: ModelServer, moves: list[tuple[str, str]], *, rounds: int = 8
) -> int:
    """Plan and apply until the plan is empty; the number of rounds it took."""
    for round_no in range(rounds):
        # The scanner finds a move again each round while it is still pending.
        pending = [
            (a, c)
            for a, c in moves
            if a in device.synced
            and a not in device.local
            and c in device.local
            and c not in device.synced
        ]
        actions = plan(device.plan_input(server, pending))
        if not actions:
            return round_no
        device.apply(actions, server)
    raise AssertionError(f"no fixpoint after {rounds} rounds: {actions}")
