"""Read-only library endpoints under /api/v1/library, plus restore and download
tickets (protocol section 14). Any token of the user works; another user's
items are 404, the same as ones that do not exist."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, Path, Query, Response

from shelfsync.protocol.library import (
    ActivityList,
    DownloadTicket,
    DownloadTicketRequest,
    FolderEntry,
    FolderListing,
    RestoreRequest,
    RestoreResponse,
    RevisionEntry,
    RevisionList,
    SortName,
)
from shelfsync.server.api.conditional import if_range_allows
from shelfsync.server.api.dependencies import CurrentPrincipal
from shelfsync.server.api.file_responses import (
    RangesResponse,
    WholeFileResponse,
    content_disposition,
    content_type_for,
    inline_whole,
)
from shelfsync.server.api.responses import problems
from shelfsync.server.api.web_dependencies import WebServicesDep
from shelfsync.server.api.wire import change_out
from shelfsync.server.domain import library as domain
from shelfsync.server.domain.ranges import parse_range

__all__ = ["LIBRARY_PREFIX", "router", "ticket_router"]

LIBRARY_PREFIX = "/api/v1/library"

router = APIRouter(tags=["library"])
# Authenticated by the ticket in the URL, not by a bearer token.
ticket_router = APIRouter(tags=["library"])

ItemId = Annotated[str, Path(alias="id", max_length=64, description="Item ID")]
Limit = Annotated[int, Query(ge=1, le=domain.MAX_PAGE, description="Entries per page")]


def _entry(entry: domain.FolderEntry) -> FolderEntry:
    return FolderEntry(
        kind=entry.kind.value,
        name=entry.name,
        path=entry.path,
        size=entry.size,
        modified=entry.modified,
        item_count=entry.item_count,
        id=entry.id,
        revision=entry.revision,
        content_hash=entry.content_hash,
        device_id=entry.device_id,
        changed_at=entry.changed_at,
    )


@router.get(
    "/folder",
    summary="List a folder (or search the files below it by name)",
    response_model=FolderListing,
    responses={200: {"description": "One page of the folder"}, **problems(400, 401, 403, 503)},
)
def list_folder(
    principal: CurrentPrincipal,
    web: WebServicesDep,
    path: Annotated[
        str, Query(max_length=4096, description='The folder; "" (default) is the root.')
    ] = "",
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=domain.MAX_QUERY_CHARS,
            description="Only files anywhere below the folder whose name contains this "
            "(case-insensitive).",
        ),
    ] = None,
    sort: Annotated[SortName, Query(description="Sort key; folders come first")] = "name",
    order: Annotated[
        str, Query(pattern="^(asc|desc)$", description="`asc` (default) or `desc`")
    ] = "asc",
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="Entries to skip")] = 0,
    limit: Limit = 100,
) -> FolderListing:
    """Sub-folders first, then files, each sorted by `sort` (ties by name).
    Folders are implicit: an unknown folder is an empty listing, not a 404."""
    page = web.library.list_folder(
        principal,
        path=path,
        sort=domain.SortKey(sort),
        descending=order == "desc",
        offset=offset,
        limit=limit,
        query=q,
    )
    end = page.offset + len(page.entries)
    return FolderListing(
        path=page.folder,
        entries=[_entry(e) for e in page.entries],
        total=page.total,
        offset=page.offset,
        next_offset=end if end < page.total else None,
    )


@router.get(
    "/activity",
    summary="Recent changes across devices",
    response_model=ActivityList,
    responses={200: {"description": "Newest first"}, **problems(400, 401, 403, 503)},
)
def activity(
    principal: CurrentPrincipal,
    web: WebServicesDep,
    before_seq: Annotated[
        int | None, Query(ge=1, le=2**62, description="Only changes older than this seq")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=domain.MAX_PAGE, description="Changes per page")] = 50,
) -> ActivityList:
    """Each item once, in its latest state (the feed's entries, newest first).
    For live updates, long-poll `GET /api/v1/sync/changes?cursor=latest&wait=…`."""
    changed, next_before = web.library.activity(principal, before_seq=before_seq, limit=limit)
    return ActivityList(changes=[change_out(i) for i in changed], next_before_seq=next_before)


@router.get(
    "/items/{id}/revisions",
    summary="An item and its retained revisions",
    response_model=RevisionList,
    responses={
        200: {"description": "The item and its history"},
        **problems(400, 401, 403, 404, 503),
    },
)
def item_revisions(
    item_id: ItemId,
    principal: CurrentPrincipal,
    web: WebServicesDep,
    before: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="Only revisions older than this")
    ] = None,
    limit: Limit = 100,
) -> RevisionList:
    """The item (live or deleted) and its retained revisions, newest first."""
    history = web.library.history(principal, item_id, before=before, limit=limit)
    return RevisionList(
        item=change_out(history.item),
        revisions=[
            RevisionEntry(
                revision=r.revision,
                op=r.op.value,
                path=r.path,
                content_hash=r.content_hash,
                size=r.size,
                mtime=r.mtime,
                deleted=r.deleted,
                device_id=r.device_id,
                changed_at=r.created_at,
                seq=r.seq,
            )
            for r in history.revisions
        ],
        next_before=history.next_before,
    )


@router.post(
    "/items/{id}/restore",
    summary="Restore an older revision (a new revision with its content)",
    response_model=RestoreResponse,
    responses={
        200: {"description": "Restored: the new revision"},
        **problems(400, 401, 403, 404, 409, 503),
    },
)
def restore(
    item_id: ItemId, body: RestoreRequest, principal: CurrentPrincipal, web: WebServicesDep
) -> RestoreResponse:
    """An ordinary change: the next revision of the item carries the old
    revision's content and metadata, gets the next seq and reaches every
    device through the feed. A deleted item is re-created. `409
    stale_revision` when `expected_revision` is no longer current; `400
    content_missing` when the old content is no longer stored."""
    item = web.library.restore(
        principal, item_id, revision=body.revision, expected_revision=body.expected_revision
    )
    return RestoreResponse(change=change_out(item))


@router.post(
    "/download-tickets",
    summary="A short-lived link that downloads one file revision",
    response_model=DownloadTicket,
    responses={200: {"description": "The link"}, **problems(400, 401, 403, 404, 503)},
)
def issue_ticket(
    body: DownloadTicketRequest, principal: CurrentPrincipal, web: WebServicesDep
) -> DownloadTicket:
    """For a browser: navigate to `url` (valid 60 s, for this path and revision
    only) and the file streams to disk, with no token in any header or URL."""
    ticket = web.tickets.issue(principal, path=body.path, revision=body.revision)
    return DownloadTicket(
        url=f"{LIBRARY_PREFIX}/download?ticket={quote(ticket.token, safe='')}",
        expires_at=ticket.expires_at,
        path=ticket.path,
        revision=ticket.revision,
    )


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


@ticket_router.get(
    "/download",
    summary="Download with a ticket (no Authorization header)",
    response_class=Response,
    responses={
        200: {
            "description": "File content",
            "headers": {
                "ETag": _header('`"<content_hash>"`'),
                "Content-Disposition": _header("`attachment` with the file's name"),
            },
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        206: {"description": "One byte range (resuming)"},
        **problems(400, 401, 404, 416, 503),
    },
)
def download_with_ticket(
    web: WebServicesDep,
    ticket: Annotated[str, Query(min_length=1, max_length=4096, description="From a ticket")],
    range_: Annotated[
        str | None, Header(alias="range", description="`bytes=<have>-` to resume")
    ] = None,
    if_range: Annotated[
        str | None, Header(description="Honour Range only while the ETag is this one")
    ] = None,
) -> Response:
    """The bytes, as `GET /sync/download` sends them (one range at most)."""
    target = web.tickets.redeem(ticket)
    media_type = content_type_for(target.name)
    headers = {
        "ETag": f'"{target.content_hash}"',
        "Accept-Ranges": "bytes",
        "Content-Type": media_type,
        "Content-Disposition": content_disposition(target.name),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
        "Referrer-Policy": "no-referrer",
    }
    ranges = None
    if range_ is not None and if_range_allows(if_range, target.content_hash):
        ranges = parse_range(range_, target.size)  # RangeNotSatisfiable: 416
    content = target.data  # small content stored in the database: its bytes
    if ranges is None or len(ranges) != 1 or (target.file is None and content is None):
        headers["Content-Length"] = str(target.size)
        if content is not None:
            return inline_whole(content, headers=headers, body=True)
        if target.file is None:  # empty content has no file
            return Response(status_code=200, headers=headers)
        return WholeFileResponse(target.file, headers=headers, media_type=media_type)
    return RangesResponse.single(
        target.file, ranges[0], size=target.size, headers=headers, content=content
    )
