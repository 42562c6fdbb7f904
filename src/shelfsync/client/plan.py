"""Reconcile: a PURE function from three trees to actions (base x local x remote).

- `synced` (the base): per path, the item id, revision and content hash last
  synced here;
- `local`: per path, the content hash of the file on disk now, plus the moves
  the scanner found (synced path -> new path);
- `remote`: per path, the server's live item as the change feed told it.

The server is the arbiter. Local changes are reported with the revision they
are based on, and the server applies them or records a conflict; remote changes
are applied here only over a local file that is still what was last synced
(every local action carries the hash it expects, checked again right before it
touches the disk). A path changed on both sides is reported (so the server
keeps the local version as a conflict) and replaced locally only once the
server holds that version: after a `keep_both`/resolved conflict, or when both
sides already agree. No local modification is ever dropped.

Moves keep item ids on both sides: a clean local move is reported as a move
(based on the remote revision: a move commutes with a remote edit, which then
comes down), a clean remote move is a local rename (which carries a local edit
along). A move that is not clean (target taken, item deleted, conflict) falls
back to the per-path table, which is always correct, just less economical.
Applying a plan and planning again converges: once the trees agree the plan is
empty (tests/client/test_plan.py checks both with hypothesis).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Action",
    "Base",
    "ConflictMark",
    "DeleteLocal",
    "Download",
    "ForgetConflict",
    "ForgetSynced",
    "MarkSynced",
    "MoveLocal",
    "PlanInput",
    "RelocateSynced",
    "RemoteItem",
    "ReportDelete",
    "ReportMove",
    "ReportUpsert",
    "plan",
]


@dataclass(frozen=True, slots=True)
class Base:
    item_id: str
    revision: int
    content_hash: str


@dataclass(frozen=True, slots=True)
class RemoteItem:
    item_id: str
    path: str
    revision: int
    content_hash: str


@dataclass(frozen=True, slots=True)
class ConflictMark:
    """A conflict the server recorded for a path, with the local version reported."""

    local_hash: str | None  # None: the local change was a delete
    resolved: bool  # the server holds (or settled) the local version: local may change


@dataclass(frozen=True, slots=True)
class PlanInput:
    synced: Mapping[str, Base]
    local: Mapping[str, str]  # path -> content hash
    remote: Mapping[str, RemoteItem]  # path -> live item
    local_moves: Sequence[tuple[str, str]] = ()
    conflicts: Mapping[str, ConflictMark] = field(default_factory=dict)
    skip: frozenset[str] = frozenset()  # unreadable or failing paths: left for later


# -- actions (each one idempotent: a precondition or the server makes a repeat a no-op)


@dataclass(frozen=True, slots=True)
class MoveLocal:
    """Rename a local file (a remote move); `synced_from`'s record follows it."""

    from_path: str
    to_path: str
    synced_from: str
    expect_hash: str


@dataclass(frozen=True, slots=True)
class DeleteLocal:
    path: str
    expect_hash: str


@dataclass(frozen=True, slots=True)
class Download:
    path: str
    item_id: str
    revision: int
    content_hash: str
    expect_hash: str | None  # None: the path must still be free locally


@dataclass(frozen=True, slots=True)
class ReportUpsert:
    path: str
    content_hash: str
    base_revision: int | None


@dataclass(frozen=True, slots=True)
class ReportDelete:
    path: str
    base_revision: int


@dataclass(frozen=True, slots=True)
class ReportMove:
    from_path: str
    to_path: str
    base_revision: int
    item_id: str


@dataclass(frozen=True, slots=True)
class MarkSynced:
    """Both sides already agree: record it (no transfer)."""

    path: str
    item_id: str
    revision: int
    content_hash: str


@dataclass(frozen=True, slots=True)
class ForgetSynced:
    path: str


@dataclass(frozen=True, slots=True)
class RelocateSynced:
    """The same move was made on both sides: the synced record follows it."""

    from_path: str
    to_path: str


@dataclass(frozen=True, slots=True)
class ForgetConflict:
    path: str


Action = (
    MoveLocal
    | DeleteLocal
    | Download
    | ReportUpsert
    | ReportDelete
    | ReportMove
    | MarkSynced
    | ForgetSynced
    | RelocateSynced
    | ForgetConflict
)


def plan(given: PlanInput) -> list[Action]:
    """The actions that bring the three trees together (empty when they agree)."""
    actions: list[Action] = []
    touched: set[str] = set()
    remote_by_id = {item.item_id: item for item in given.remote.values()}

    def free_here(path: str) -> bool:
        return (
            path not in given.local
            and path not in given.synced
            and path not in touched
            and path not in given.skip
            and path not in given.conflicts
        )

    for from_path, to_path in given.local_moves:
        action = _local_move(given, remote_by_id, from_path, to_path, touched, free_here)
        if action is not None:
            actions.append(action)

    for path in sorted(given.synced):
        base = given.synced[path]
        remote = remote_by_id.get(base.item_id)
        if (
            remote is None
            or remote.path == path
            or path in touched
            or path in given.skip
            or path in given.conflicts
            or remote.path in touched
            or remote.path in given.skip
        ):
            continue
        if path not in given.local:
            if remote.content_hash == base.content_hash and remote.path not in given.local:
                # Deleted here, only moved there: the delete follows the move.
                actions += [ReportDelete(remote.path, remote.revision), ForgetSynced(path)]
                touched.update((path, remote.path))
            continue
        if free_here(remote.path):
            actions.append(MoveLocal(path, remote.path, path, given.local[path]))
            touched.update((path, remote.path))

    paths = set(given.synced) | set(given.local) | set(given.remote)
    for path in sorted(paths - touched - given.skip):
        actions.extend(
            _reconcile_path(
                path,
                base=given.synced.get(path),
                local=given.local.get(path),
                remote=given.remote.get(path),
                mark=given.conflicts.get(path),
            )
        )
    return actions


def _local_move(
    given: PlanInput,
    remote_by_id: Mapping[str, RemoteItem],
    from_path: str,
    to_path: str,
    touched: set[str],
    free_here: Callable[[str], bool],
) -> Action | None:
    base = given.synced.get(from_path)
    involved = {from_path, to_path}
    if (
        base is None
        or to_path not in given.local
        or involved & touched
        or involved & given.skip
        or any(p in given.conflicts for p in involved)
    ):
        return None
    remote = remote_by_id.get(base.item_id)
    if remote is None:
        return None  # deleted remotely: the file at to_path is simply new
    if remote.path == from_path:
        if to_path in given.remote or to_path in given.synced:
            return None  # the target is taken remotely: per-path rules decide
        touched.update(involved)
        return ReportMove(from_path, to_path, remote.revision, base.item_id)
    if remote.path == to_path:
        touched.update(involved)
        return RelocateSynced(from_path, to_path)
    # Moved differently on both sides: the remote move wins, the file follows it.
    if free_here(remote.path):
        touched.update((*involved, remote.path))
        return MoveLocal(to_path, remote.path, from_path, given.local[to_path])
    return None


def _reconcile_path(
    path: str,
    *,
    base: Base | None,
    local: str | None,
    remote: RemoteItem | None,
    mark: ConflictMark | None,
) -> list[Action]:
    """The three-way table for one path."""
    base_hash = base.content_hash if base is not None else None
    remote_hash = remote.content_hash if remote is not None else None
    same_item = base is not None and remote is not None and base.item_id == remote.item_id
    # A new revision with the same content (metadata, a move back) is no content change.
    remote_same = (base is None and remote is None) or (same_item and remote_hash == base_hash)
    local_same = local == base_hash
    out: list[Action] = []
    keep_mark = False
    if local_same and remote_same:
        if remote is not None and base is not None and remote.revision != base.revision:
            out.append(MarkSynced(path, remote.item_id, remote.revision, remote.content_hash))
    elif local_same:
        out.extend(_take_remote(path, local=local, remote=remote))
    elif remote_same:
        based_on = remote.revision if remote is not None else None
        if local is None:
            assert based_on is not None  # local_same is False, so a base existed
            out.append(ReportDelete(path, based_on))
        else:
            out.append(ReportUpsert(path, local, based_on))
    elif local == remote_hash:
        out.append(
            MarkSynced(path, remote.item_id, remote.revision, remote.content_hash)
            if remote is not None
            else ForgetSynced(path)
        )
    elif mark is not None and mark.local_hash == local:
        keep_mark = True
        if mark.resolved:
            # The server holds the local version (conflict copy, history): take its state.
            out.extend(_take_remote(path, local=local, remote=remote))
    elif local is None:
        assert base is not None
        out.append(ReportDelete(path, base.revision))
    else:
        out.append(ReportUpsert(path, local, base.revision if base is not None else None))
    if mark is not None and not keep_mark:
        out.append(ForgetConflict(path))
    return out


def _take_remote(path: str, *, local: str | None, remote: RemoteItem | None) -> list[Action]:
    if remote is None:
        return [DeleteLocal(path, local)] if local is not None else [ForgetSynced(path)]
    if local == remote.content_hash:
        return [MarkSynced(path, remote.item_id, remote.revision, remote.content_hash)]
    return [Download(path, remote.item_id, remote.revision, remote.content_hash, local)]
