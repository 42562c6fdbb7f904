"""Entities to wire models and back: the only place that knows both shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pydantic_core

from shelfsync.protocol import devices as wire
from shelfsync.protocol import sync as sync_wire
from shelfsync.protocol import uploads as upload_wire
from shelfsync.protocol.problems import Problem
from shelfsync.server.api.errors import problem_for
from shelfsync.server.domain.accounts import ConflictPolicy, DeviceType, SyncFilter
from shelfsync.server.domain.conflicts import Conflict
from shelfsync.server.domain.items import ChangeOp, Item
from shelfsync.server.domain.uploads import UploadSession
from shelfsync.server.services.devices import DeviceStatus
from shelfsync.server.services.feed import FeedPage
from shelfsync.server.services.report import LocalChange, ReportResult

__all__ = [
    "change_out",
    "changes_body",
    "conflict_out",
    "conflict_policy_in",
    "conflict_policy_of",
    "device_out",
    "device_type_in",
    "local_change_in",
    "report_result_out",
    "sync_filter_in",
    "upload_out",
    "utc",
    "wire_time",
]


def sync_filter_in(model: wire.SyncFilter | None) -> SyncFilter | None:
    if model is None:
        return None
    return SyncFilter(include=tuple(model.include), exclude=tuple(model.exclude))


def device_type_in(name: wire.DeviceTypeName) -> DeviceType:
    return DeviceType(name)


def conflict_policy_of(name: wire.ConflictPolicyName) -> ConflictPolicy:
    return ConflictPolicy(name)


def conflict_policy_in(name: wire.ConflictPolicyName | None) -> ConflictPolicy | None:
    return None if name is None else ConflictPolicy(name)


def device_out(status: DeviceStatus, *, acked_cursor: str | None) -> wire.Device:
    d = status.device
    return wire.Device(
        id=d.id,
        name=d.name,
        device_type=d.device_type.value,
        os=d.os,
        client_version=d.client_version,
        enabled=d.enabled,
        created_at=d.created_at,
        last_seen_at=d.last_seen_at,
        last_sync_at=d.last_sync_at,
        acked_cursor=acked_cursor,
        pending_changes=status.pending_changes,
        sync_filter=wire.SyncFilter(
            include=list(d.sync_filter.include), exclude=list(d.sync_filter.exclude)
        ),
        conflict_policy=d.conflict_policy.value,
    )


# A report carries up to 1,000 changes: calling the enum class costs ten times this lookup.
_OPS_IN: dict[str, ChangeOp] = {op.value: op for op in ChangeOp}


def local_change_in(model: sync_wire.LocalChange) -> LocalChange:
    return LocalChange(
        op=_OPS_IN[model.op],
        path=model.path,
        base_revision=model.base_revision,
        to_path=model.to_path,
        content_hash=model.content_hash,
        size=model.size,
        mtime=model.mtime.astimezone(UTC)
        if model.mtime and model.mtime.tzinfo
        else (model.mtime.replace(tzinfo=UTC) if model.mtime else None),
        metadata=model.metadata,
    )


def report_result_out(result: ReportResult) -> sync_wire.ReportResult:
    error: Problem | None = None
    if result.error is not None:
        error = problem_for(result.error)
    return sync_wire.ReportResult(
        path=result.path,
        status=result.status.value,
        id=result.id,
        revision=result.revision,
        seq=result.seq,
        conflict_id=result.conflict_id,
        error=error,
    )


def report_result_json(result: ReportResult) -> dict[str, Any]:
    """`report_result_out(result)` as its JSON object, in the model's field
    order, without building the model for a result that carries no error (a
    report or a batch upload answers up to a thousand of them)."""
    if result.error is not None:
        return report_result_out(result).model_dump(mode="json")
    return {
        "path": result.path,
        "status": result.status.value,
        "id": result.id,
        "revision": result.revision,
        "seq": result.seq,
        "conflict_id": result.conflict_id,
        "error": None,
    }


def change_out(item: Item) -> sync_wire.Change:
    return sync_wire.Change(
        seq=item.seq,
        op=item.op.value,
        id=item.id,
        path=item.path,
        from_path=item.from_path,
        revision=item.revision,
        content_hash=item.content_hash,
        size=item.size,
        mtime=item.mtime,
        metadata=item.metadata,
        deleted=item.deleted,
        device_id=item.device_id,
        changed_at=item.updated_at,
    )


_OP_NAMES: dict[ChangeOp, str] = {op: op.value for op in ChangeOp}
_EMPTY_OBJECT = orjson.Fragment(b"{}")


def wire_time(text: str) -> str:
    """A feed row's time (UTC, ISO text: `YYYY-MM-DD HH:MM:SS` and a fraction
    of 0 to 6 digits) as format_timestamp writes it: milliseconds (truncated), `Z`."""
    if len(text) >= 23:
        return text[:10] + "T" + text[11:23] + "Z"
    # PostgreSQL drops the fraction's trailing zeros, and a fraction of 0.
    return text[:10] + "T" + text[11:19] + "." + text[20:].ljust(3, "0") + "Z"


def _metadata_json(text: str) -> Any:
    """A feed row's metadata for orjson: its stored JSON text as it is, or
    decoded where that text is not JSON the wire may carry as it is."""
    if text == "{}":
        return _EMPTY_OBJECT
    # Python's json module writes NaN and infinities as bare words (not JSON);
    # the model writes them as null. A string holding those words only takes
    # the slow way. `null` (no metadata) is written as {}.
    if text[:1] == "{" and "NaN" not in text and "Infinity" not in text:
        return orjson.Fragment(text)
    return json.loads(text) or {}


def changes_body(page: FeedPage) -> bytes:
    """A feed page as the JSON of sync_wire.ChangesResponse.

    A page is up to 1,000 changes: building a pydantic model per change and
    serializing it cost more than reading the page (issue 7). Here each change
    is a plain dict with Change's fields in Change's order, written by orjson,
    from the page's rows as read (times and metadata as stored text, see
    storage/items.py): the times are cut to the protocol's form, and metadata
    goes out as its stored JSON text. The values are the model's
    (tests/unit/test_feed_wire.py); only the metadata's white space may differ.
    What orjson refuses (an integer beyond 64 bits in metadata that had to be
    decoded) is written by pydantic-core as the model would. Changes of one
    batch share `changed_at`, so a time equal to the previous one reuses its text.
    """
    names = _OP_NAMES
    metadata_json = _metadata_json
    last_changed: str | None = None
    last_changed_text = ""
    changes: list[dict[str, Any]] = []
    append = changes.append
    for row in page.changes:
        changed = row.updated_at
        if changed != last_changed:
            last_changed, last_changed_text = changed, wire_time(changed)
        mtime = row.mtime
        append(
            {
                "seq": row.seq,
                "op": names[row.op],
                "id": row.id,
                "path": row.path,
                "from_path": row.from_path,
                "revision": row.revision,
                "content_hash": row.content_hash,
                "size": row.size,
                "mtime": None if mtime is None else wire_time(mtime),
                "metadata": metadata_json(row.metadata),
                "deleted": row.deleted,
                "device_id": row.device_id,
                "changed_at": last_changed_text,
            }
        )
    body = {
        "changes": changes,
        "cursor": page.cursor,
        "has_more": page.has_more,
        "latest_seq": page.latest_seq,
    }
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError
        for change, row in zip(changes, page.changes, strict=True):
            change["metadata"] = json.loads(row.metadata) or {}
        # NaN and infinities become null, as in the model's JSON.
        return pydantic_core.to_json(body, inf_nan_mode="null")


def conflict_out(conflict: Conflict, *, content_available: bool) -> sync_wire.Conflict:
    server, client = conflict.server, conflict.client
    return sync_wire.Conflict(
        id=conflict.id,
        path=conflict.path,
        status=conflict.status.value,
        device_id=conflict.device_id,
        detected_at=conflict.detected_at,
        base_revision=conflict.base_revision,
        server=sync_wire.ServerVersion(
            revision=server.revision,
            content_hash=server.content_hash,
            size=server.size,
            mtime=server.mtime,
            deleted=server.deleted,
            device_id=server.device_id,
        ),
        client=sync_wire.ClientVersion(
            op=client.op.value,
            content_hash=client.content_hash,
            size=client.size,
            mtime=client.mtime,
            metadata=client.metadata,
            deleted=client.deleted,
            content_available=content_available,
        ),
        suggested_path=conflict.suggested_path,
        resolution=conflict.resolution.value if conflict.resolution else None,
        resolved_at=conflict.resolved_at,
        result_path=conflict.result_path,
    )


def utc(value: datetime | None) -> datetime | None:
    """Client times without a zone are taken as UTC (protocol section 1)."""
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def upload_out(session: UploadSession) -> upload_wire.UploadSession:
    return upload_wire.UploadSession(
        id=session.id,
        path=session.path,
        size=session.size,
        content_hash=session.content_hash,
        chunk_size=session.chunk_size,
        chunk_count=session.chunk_count,
        received=list(session.received),
        status=session.status.value,
        created_at=session.created_at,
        expires_at=session.expires_at,
    )
