"""Report, feed, ack and conflicts under /api/v1/sync (protocol sections 6, 7, 8)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from shelfsync.protocol.sync import (
    AckRequest,
    AckResponse,
    ChangesResponse,
    ConflictList,
    ReportRequest,
    ReportResponse,
    ResolveRequest,
    ResolveResponse,
)
from shelfsync.server.api.dependencies import CurrentPrincipal, ServicesDep
from shelfsync.server.api.responses import problems
from shelfsync.server.api.wire import (
    change_out,
    changes_body,
    conflict_out,
    local_change_in,
    report_result_json,
    report_result_out,
)
from shelfsync.server.domain.conflicts import Resolution
from shelfsync.server.services.report import ReportResult

__all__ = ["router"]

router = APIRouter(tags=["sync"])

# nginx's convention for "the client closed the connection before the answer".
CLIENT_CLOSED_REQUEST = 499


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@router.post(
    "/report",
    summary="Report local changes from client",
    response_model=ReportResponse,
    responses={200: {"description": "Changes processed"}, **problems(400, 401, 403, 503)},
)
def report(body: ReportRequest, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    results = services.report.report(principal, [local_change_in(c) for c in body.changes])
    # The body ReportResponse would give, written without a model per result
    # (issue 7); response_model above still documents it.
    return Response(content=report_body(results), media_type="application/json")


def report_body(results: list[ReportResult]) -> bytes:
    """A report's results as the JSON of ReportResponse, byte for byte
    (tests/unit/test_report_wire.py): plain dicts in ReportResult's field
    order, written by orjson. A result with an error goes through the models,
    and so does the whole answer if orjson refuses it (as before, then)."""
    out = [report_result_json(r) for r in results]
    try:
        return orjson.dumps({"results": out})
    except TypeError:  # orjson.JSONEncodeError
        return (
            ReportResponse(results=[report_result_out(r) for r in results])
            .model_dump_json(by_alias=True)
            .encode()
        )


@router.get(
    "/changes",
    summary="Get changes since cursor",
    response_model=ChangesResponse,
    responses={
        200: {"description": "Changes since cursor"},
        **problems(400, 401, 403, 410, 503),
    },
)
async def changes(
    request: Request,
    principal: CurrentPrincipal,
    services: ServicesDep,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="Sync cursor; omit for the whole library, or `latest`."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Max changes (max 1000)")] = 500,
    wait: Annotated[
        float, Query(ge=0, le=55, description="Seconds to hold the request while nothing is new")
    ] = 0,
) -> Response:
    if wait > 0:
        # A long-poll whose client went away must not hold its slot (or a
        # graceful shutdown) until the wait ends.
        waiter = asyncio.ensure_future(
            services.feed.wait_page(principal, cursor=cursor, limit=limit, wait_s=wait)
        )
        gone = asyncio.ensure_future(_until_disconnected(request))
        done, _ = await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        gone.cancel()
        page = waiter.result()
    else:
        page = await services.feed.wait_page(principal, cursor=cursor, limit=limit, wait_s=0)
    # The body ChangesResponse would give, written without a model per change
    # (issue 7); response_model above still documents it.
    return Response(content=changes_body(page), media_type="application/json")


@router.post(
    "/ack",
    summary="Acknowledge processed changes",
    response_model=AckResponse,
    responses={200: {"description": "Changes acknowledged"}, **problems(400, 401, 403, 503)},
)
def ack(body: AckRequest, principal: CurrentPrincipal, services: ServicesDep) -> AckResponse:
    result = services.feed.ack(principal, cursor=body.cursor)
    return AckResponse(
        device_id=result.device_id,
        acked_cursor=result.acked_cursor,
        pending_changes=result.pending_changes,
    )


@router.get(
    "/conflicts",
    summary="List unresolved conflicts",
    response_model=ConflictList,
    responses={200: {"description": "Unresolved conflicts"}, **problems(400, 401, 403, 503)},
)
def list_conflicts(principal: CurrentPrincipal, services: ServicesDep) -> ConflictList:
    return ConflictList(
        conflicts=[
            conflict_out(c, content_available=available)
            for c, available in services.conflicts.unresolved(principal)
        ]
    )


@router.post(
    "/conflicts/{id}/resolve",
    summary="Resolve a sync conflict",
    response_model=ResolveResponse,
    responses={
        200: {"description": "Conflict resolved"},
        **problems(400, 401, 403, 404, 409, 503),
    },
)
def resolve_conflict(
    conflict_id: Annotated[str, Path(alias="id", max_length=64, description="Conflict ID")],
    body: ResolveRequest,
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> ResolveResponse:
    conflict, written = services.conflicts.resolve(
        principal,
        conflict_id,
        resolution=Resolution(body.resolution),
        expected_server_revision=body.expected_server_revision,
    )
    return ResolveResponse(
        conflict=conflict_out(
            conflict, content_available=services.conflicts.availability(conflict)
        ),
        changes=[change_out(item) for item in written],
    )
