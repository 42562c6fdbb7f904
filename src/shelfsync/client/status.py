"""`shelfsync status`: what a sync would do now, without doing it.

The remote changes since the stored cursor are read into memory only (the
cursor does not move), the folder is scanned, and the plan is classified:
what goes up, what comes down, the conflicts waiting, unfinished transfers,
and how far behind the server says this device is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shelfsync.client import plan as p
from shelfsync.client.errors import CursorExpired
from shelfsync.client.http import ApiClient
from shelfsync.client.progress import format_bytes
from shelfsync.client.scan import Scanner
from shelfsync.client.state import RemoteRecord, State
from shelfsync.client.sync import plan_input

__all__ = ["FolderStatus", "folder_status"]

_SHOWN = 20


@dataclass(slots=True)
class FolderStatus:
    folder: Path
    up: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    pending_changes: int | None = None
    unfinished_uploads: list[str] = field(default_factory=list)
    partial_downloads: list[str] = field(default_factory=list)
    remote_unread: int = 0

    @property
    def in_sync(self) -> bool:
        return not (self.up or self.down or self.conflicts)

    def render(self) -> str:
        lines = [f"folder: {self.folder}"]
        if self.in_sync:
            lines.append("in sync")
        for title, entries in (
            ("to upload", self.up),
            ("to download", self.down),
            ("conflicts", self.conflicts),
            ("unfinished uploads", self.unfinished_uploads),
            ("partial downloads", self.partial_downloads),
        ):
            if entries:
                lines.append(f"{title} ({len(entries)}):")
                lines += [f"  {entry}" for entry in entries[:_SHOWN]]
                if len(entries) > _SHOWN:
                    lines.append(f"  ... and {len(entries) - _SHOWN} more")
        if self.pending_changes is not None:
            lines.append(
                f"behind the server by {self.pending_changes} change(s) (since the last ack)"
            )
        return "\n".join(lines)


def _describe(action: p.Action) -> tuple[str, str] | None:
    """('up'|'down', text) for actions that move data; None for bookkeeping."""
    match action:
        case p.ReportUpsert(path=path, base_revision=base):
            return "up", f"{path} ({'new' if base is None else 'changed'})"
        case p.ReportDelete(path=path):
            return "up", f"{path} (deleted here)"
        case p.ReportMove(from_path=src, to_path=dst):
            return "up", f"{src} -> {dst} (moved here)"
        case p.Download(path=path, expect_hash=expect):
            return "down", f"{path} ({'new' if expect is None else 'changed'})"
        case p.DeleteLocal(path=path):
            return "down", f"{path} (deleted there)"
        case p.MoveLocal(from_path=src, to_path=dst):
            return "down", f"{src} -> {dst} (moved there)"
    return None


def folder_status(*, root: Path, api: ApiClient, state: State, device_id: str) -> FolderStatus:
    result = FolderStatus(root)
    remote = {r.item_id: r for r in state.remote().values()}
    cursor = state.cursor
    while True:
        try:
            page = api.changes(cursor=cursor, limit=1000)
        except CursorExpired:
            remote, cursor = {}, None
            continue
        if cursor is None:
            remote = {}
        for change in page.changes:
            result.remote_unread += 1
            if change.deleted or change.content_hash is None:
                remote.pop(change.id, None)
            else:
                remote[change.id] = RemoteRecord(
                    change.id, change.path, change.revision, change.content_hash, change.size, None
                )
        cursor = page.cursor
        if not page.has_more:
            break
    scan = Scanner(root).scan(synced=state.synced(), cache=state.local_files())
    given = plan_input(state, scan, skip=set())
    given = p.PlanInput(
        synced=given.synced,
        local=given.local,
        remote={
            r.path: p.RemoteItem(r.item_id, r.path, r.revision, r.content_hash)
            for r in remote.values()
        },
        local_moves=given.local_moves,
        conflicts=given.conflicts,
        skip=given.skip,
    )
    for action in p.plan(given):
        described = _describe(action)
        if described is not None:
            (result.up if described[0] == "up" else result.down).append(described[1])
    open_ = {c.id: c for c in api.conflicts() if c.device_id == device_id}
    result.conflicts = [f"{c.path} (id {c.id})" for c in open_.values()]
    result.unfinished_uploads = [
        f"{u.path} ({format_bytes(u.size)})" for u in state.pending_uploads()
    ]
    result.partial_downloads = [d.path for d in state.partial_downloads()]
    result.pending_changes = api.get_device(device_id).pending_changes
    return result
