"""Recording and resolving conflicts (protocol section 8).

Nothing here ever loses a version: keep_server leaves the client's version on
the conflict record (its content stays referenced), keep_client writes it as a
new revision (the server's version stays in history), keep_both saves it beside.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime

from shelfsync.content_hash import EMPTY_HASH
from shelfsync.server.domain.accounts import ConflictPolicy, Device
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.conflicts import (
    ClientSide,
    Conflict,
    ConflictStatus,
    Resolution,
    ServerSide,
)
from shelfsync.server.domain.errors import (
    AlreadyResolved,
    ConflictNotFound,
    ContentMissing,
    StaleState,
)
from shelfsync.server.domain.items import ChangeOp, Item
from shelfsync.server.domain.paths import conflict_path
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.library_writer import LibraryWriter
from shelfsync.server.services.notifier import ChangeNotifier
from shelfsync.server.storage.conflicts import ConflictRepository
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.devices import DeviceRepository
from shelfsync.server.storage.engine import Database

__all__ = [
    "ConflictService",
    "client_content_available",
    "content_available",
    "record_conflict",
]

_MAX_NAME_ATTEMPTS = 100


def content_available(contents: ContentRepository, user_id: str, client: ClientSide) -> bool:
    """Whether the server holds the client's version (a delete needs no bytes)."""
    if client.deleted or client.content_hash is None:
        return client.deleted
    if client.content_hash == EMPTY_HASH:
        return True
    return contents.size_for_user(user_id, client.content_hash) is not None


def client_content_available(writer: LibraryWriter, client: ClientSide) -> bool:
    return content_available(writer.contents, writer.user_id, client)


def _server_side(item: Item | None) -> ServerSide:
    if item is None:
        return ServerSide(None, None, None, None, None, True, None)
    return ServerSide(
        item_id=item.id,
        revision=item.revision,
        content_hash=item.content_hash,
        size=item.size if not item.deleted else None,
        mtime=item.mtime,
        deleted=item.deleted,
        device_id=item.device_id,
    )


def _free_conflict_path(writer: LibraryWriter, path: str, device_name: str, now: datetime) -> str:
    for attempt in range(1, _MAX_NAME_ATTEMPTS + 1):
        candidate = conflict_path(path, device_name=device_name, when=now, attempt=attempt)
        if writer.items.live_at_path(writer.user_id, candidate) is None:
            return candidate
    return conflict_path(path, device_name=f"{device_name} {uuid.uuid4().hex[:8]}", when=now)


def record_conflict(
    writer: LibraryWriter,
    *,
    device: Device,
    path: str,
    base_revision: int | None,
    client: ClientSide,
) -> Conflict:
    """Open (or update) the device's conflict at `path`; apply keep_both at once
    when the device asks for it and the client's version is at hand."""
    conflicts = ConflictRepository(writer.tx)
    latest = conflicts.latest_for(device.id, path)
    if (
        latest is not None
        and latest.status is ConflictStatus.RESOLVED
        and latest.base_revision == base_revision
        and latest.client == client
    ):
        # The same change reported again (a retry after a lost answer): the
        # conflict it raised is already settled; settling it twice would save
        # a second copy.
        return latest
    server = _server_side(writer.items.at_path(writer.user_id, path))
    existing = conflicts.open_for(device.id, path)
    suggested = _free_conflict_path(writer, path, device.name, writer.now)
    if existing is not None:
        conflict = replace(
            existing,
            detected_at=writer.now,
            base_revision=base_revision,
            server=server,
            client=client,
            suggested_path=suggested,
        )
        conflicts.replace(conflict)
    else:
        conflict = Conflict(
            id=str(uuid.uuid4()),
            user_id=writer.user_id,
            device_id=device.id,
            path=path,
            status=ConflictStatus.UNRESOLVED,
            detected_at=writer.now,
            base_revision=base_revision,
            server=server,
            client=client,
            suggested_path=suggested,
        )
        conflicts.insert(conflict)
    if device.conflict_policy is ConflictPolicy.KEEP_BOTH and client_content_available(
        writer, client
    ):
        conflict = _apply(writer, conflict, Resolution.KEEP_BOTH, device_name=device.name)
    return conflict


def _apply(
    writer: LibraryWriter, conflict: Conflict, resolution: Resolution, *, device_name: str
) -> Conflict:
    client = conflict.client
    result_path = conflict.path
    if resolution is Resolution.KEEP_CLIENT:
        result_path = _keep_client(writer, conflict)
    elif resolution is Resolution.KEEP_BOTH and not client.deleted:
        if not client_content_available(writer, client) or client.content_hash is None:
            raise ContentMissing("the client's version was never uploaded: upload it first")
        # Saved where the conflict said it would be (protocol section 8), unless
        # that name was taken since; then a fresh one, stamped now.
        result_path = conflict.suggested_path
        if writer.items.live_at_path(writer.user_id, result_path) is not None:
            result_path = _free_conflict_path(writer, conflict.path, device_name, writer.now)
        writer.upsert(
            existing=writer.items.at_path(writer.user_id, result_path),
            path=result_path,
            content_hash=client.content_hash,
            size=client.size or 0,
            mtime=client.mtime,
            metadata=client.metadata,
            device_id=conflict.device_id,
        )
    resolved = replace(
        conflict,
        status=ConflictStatus.RESOLVED,
        resolution=resolution,
        resolved_at=writer.now,
        result_path=result_path,
    )
    ConflictRepository(writer.tx).replace(resolved)
    return resolved


def _keep_client(writer: LibraryWriter, conflict: Conflict) -> str:
    client, path = conflict.client, conflict.path
    current = writer.items.at_path(writer.user_id, path)
    live = current if current is not None and not current.deleted else None
    if client.deleted:
        if live is not None:
            writer.delete(live, device_id=conflict.device_id)
        return path
    if client.op is ChangeOp.MOVE and client.from_path is not None:
        source = writer.items.live_at_path(writer.user_id, client.from_path)
        if source is not None and (
            client.content_hash is None or source.content_hash == client.content_hash
        ):
            if live is not None:
                # The client's version takes the path; the displaced one stays in history.
                writer.delete(live, device_id=conflict.device_id)
            writer.move(source, to_path=path, device_id=conflict.device_id)
            return path
    if not client_content_available(writer, client) or client.content_hash is None:
        raise ContentMissing("the client's version was never uploaded: upload it first")
    writer.upsert(
        existing=current,
        path=path,
        content_hash=client.content_hash,
        size=client.size or 0,
        mtime=client.mtime,
        metadata=client.metadata,
        device_id=conflict.device_id,
    )
    return path


class ConflictService:
    def __init__(self, *, db: Database, notifier: ChangeNotifier) -> None:
        self._db = db
        self._notifier = notifier

    def unresolved(self, principal: Principal) -> list[tuple[Conflict, bool]]:
        """The user's open conflicts, each with whether the client's bytes are held."""
        with self._db.read() as tx:
            contents = ContentRepository(tx)
            return [
                (c, content_available(contents, principal.user_id, c.client))
                for c in ConflictRepository(tx).unresolved(principal.user_id)
            ]

    def availability(self, conflict: Conflict) -> bool:
        with self._db.read() as tx:
            return content_available(ContentRepository(tx), conflict.user_id, conflict.client)

    def resolve(
        self,
        principal: Principal,
        conflict_id: str,
        *,
        resolution: Resolution,
        expected_server_revision: int | None = None,
    ) -> tuple[Conflict, list[Item]]:
        with self._db.write() as tx:
            writer = LibraryWriter(tx, user_id=principal.user_id, now=utcnow())
            conflict = ConflictRepository(tx).get(conflict_id)
            if conflict is None or conflict.user_id != principal.user_id:
                raise ConflictNotFound("no such conflict")
            if conflict.status is ConflictStatus.RESOLVED:
                if conflict.resolution is resolution:
                    return conflict, []
                raise AlreadyResolved(
                    f"the conflict was already resolved with {conflict.resolution}"
                )
            if expected_server_revision is not None:
                current = writer.items.at_path(principal.user_id, conflict.path)
                revision = current.revision if current is not None else None
                if revision != expected_server_revision:
                    raise StaleState(
                        f"the server revision is now {revision}, not {expected_server_revision}"
                    )
            device = DeviceRepository(tx).get(conflict.device_id)
            device_name = device.name if device is not None else "deleted device"
            resolved = _apply(writer, conflict, resolution, device_name=device_name)
            changed = writer.finish()
            written = list(writer.written)
        if changed:
            self._notifier.notify(principal.user_id)
        return resolved, written
