"""GET and HEAD /api/v1/sync/download/{path} (protocol section 10).

The route decides what to send (preconditions, then ranges); the responses of
`api/file_responses.py` send it (the whole file as a file, ranges in pieces).

The request a sync client sends (a bearer token, maybe Range and conditional
headers, no query) is the hot one: a resumed download or a reader of random
ranges sends many. `DownloadLane`, a pure-ASGI middleware inside the request
limits and metrics, answers it without the router and FastAPI's request
machinery (route matching, dependency solving, parameter models, three
worker-thread hops): it reads the headers the way FastAPI would, then
authenticates and finds the item with one database statement
(DownloadService.resolve_for_token: the same checks in the same order as the
route's) and decides with the route's own `_answer`, on the event loop where
nothing has to wait (SQLite; see DownloadLane), else in one worker-thread call; domain
errors go through the app's own exception handlers. So the answer is the same
(tests/api/test_download_lean.py compares the two). Anything else (a query
such as `?revision=`, no or a malformed Authorization, an X-Device-ID FastAPI
would refuse, a root_path) goes on to the route, which also documents the
operation in OpenAPI.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send

from shelfsync.server.api.conditional import (
    Precondition,
    evaluate_preconditions,
    http_date,
    if_range_allows,
)
from shelfsync.server.api.dependencies import CurrentPrincipal, Services, ServicesDep
from shelfsync.server.api.errors import problem_response
from shelfsync.server.api.file_responses import (
    RangesResponse,
    content_disposition,
    content_type_for,
    inline_whole,
    whole_file,
)
from shelfsync.server.api.responses import problems
from shelfsync.server.domain.errors import InvalidPath, ShelfsyncError
from shelfsync.server.domain.ranges import ByteRange, parse_range
from shelfsync.server.services.downloads import DownloadTarget
from shelfsync.server.storage.engine import WouldBlock

__all__ = ["DownloadLane", "router"]


class _LibraryPathConvertor(Convertor[str]):
    """Starlette's `path`, except that it also matches a newline (`.*` does not),
    so a path with control characters gets normalize_path's 400, not a 404."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Starlette keeps convertors in one table; registering twice is harmless.
register_url_convertor("librarypath", _LibraryPathConvertor())

router = APIRouter(tags=["sync"])
_OCTET_STREAM = "application/octet-stream"


def _header(description: str, kind: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": kind}}


_ETAG_HEADER = _header('`"<content_hash>"`: a strong validator')
_CONTENT_HEADERS = {
    "ETag": _ETAG_HEADER,
    "Last-Modified": _header("The client's mtime, else when the change was accepted"),
    "Accept-Ranges": _header("`bytes`"),
    "X-Revision": _header("The revision sent", "integer"),
    "X-Item-Id": _header("The item's id"),
    "Content-Disposition": _header("`attachment` with `filename` and `filename*`"),
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    **problems(304, 400, 401, 403, 404, 412, 416, 503),
    200: {
        "description": "File content",
        "headers": _CONTENT_HEADERS,
        "content": {_OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
    },
    206: {
        "description": "Partial content: one range, or several as `multipart/byteranges`",
        "headers": {**_CONTENT_HEADERS, "Content-Range": _header("For a single range")},
    },
}
_RESPONSES[304] = {**_RESPONSES[304], "headers": {"ETag": _ETAG_HEADER}}
_RESPONSES[416] = {
    **_RESPONSES[416],
    "headers": {"Content-Range": _header("`bytes */<size>`")},
}

PathParam = Annotated[
    str,
    Path(description="The library path; URL-encode each segment (`a%20b/c%23d.txt`)."),
]
RevisionQuery = Annotated[
    int | None,
    Query(ge=1, le=2**31 - 1, description="A retained older revision instead of the current one"),
]
RangeHeader = Annotated[
    str | None,
    Header(
        alias="range",
        description="RFC 9110 byte ranges: `bytes=0-99`, `bytes=100-`, `bytes=-100`, lists",
    ),
]
IfRangeHeader = Annotated[
    str | None, Header(description="Honour Range only while the ETag is this strong one")
]
IfNoneMatchHeader = Annotated[
    str | None, Header(description="ETags the caller holds: a match answers 304")
]
IfMatchHeader = Annotated[
    str | None, Header(description="Send only while the ETag is one of these, else 412")
]
IfModifiedSinceHeader = Annotated[
    str | None, Header(description="Without If-None-Match: 304 unless modified since")
]
IfUnmodifiedSinceHeader = Annotated[
    str | None, Header(description="Without If-Match: 412 if modified since")
]


@router.get(
    "/download/{path:librarypath}",
    summary="Download a file for sync (supports Range header)",
    response_class=Response,
    responses=_RESPONSES,
)
def download(
    path: PathParam,
    request: Request,
    principal: CurrentPrincipal,
    services: ServicesDep,
    revision: RevisionQuery = None,
    range_: RangeHeader = None,
    if_range: IfRangeHeader = None,
    if_none_match: IfNoneMatchHeader = None,
    if_match: IfMatchHeader = None,
    if_modified_since: IfModifiedSinceHeader = None,
    if_unmodified_since: IfUnmodifiedSinceHeader = None,
) -> Response:
    """The current content at `path`, or retained revision `?revision=N`.

    Headers: `Content-Length`, `Content-Type` (from the name, else
    `application/octet-stream`), `ETag: "<content_hash>"` (strong),
    `Last-Modified` (the client's mtime, else when the change was accepted),
    `Accept-Ranges: bytes`, `X-Revision`, `X-Item-Id`, `Content-Disposition:
    attachment` with an ASCII `filename` and the exact UTF-8 `filename*`.

    Ranges (RFC 9110): `bytes=a-b`, `bytes=a-`, `bytes=-n` and lists; ends past
    the content are clamped. One range answers 206 with `Content-Range`;
    several answer 206 `multipart/byteranges`, overlapping or adjacent ones
    merged first (parts otherwise in the order asked). The header is ignored
    (200, whole file) when its unit is not `bytes`, it does not parse, it is
    longer than 4 KiB, or more than 16 parts remain. No range overlapping the
    content: 416 with `Content-Range: bytes */<size>`.

    Conditions (RFC 9110 section 13.2.2 order): `If-Match` / `If-Unmodified-Since`
    failing: 412; `If-None-Match` matching (weak comparison, `*` and lists) or,
    without it, `If-Modified-Since` not older than `Last-Modified`: 304 with the
    `ETag`. `If-Range` keeps the range only when it is exactly the strong `ETag`;
    a date or weak tag sends the whole file with 200.

    Unknown, deleted or another user's path: 404. Invalid path: 400 `invalid_path`.
    """
    _require_utf8(request.scope)
    target = services.downloads.resolve(principal, path, revision)
    return _answer(
        target,
        body=True,
        range_header=range_,
        if_range=if_range,
        if_none_match=if_none_match,
        if_match=if_match,
        if_modified_since=if_modified_since,
        if_unmodified_since=if_unmodified_since,
    )


@router.head(
    "/download/{path:librarypath}",
    summary="Headers of a download, without the body",
    response_class=Response,
    responses=_RESPONSES,
)
def download_head(
    path: PathParam,
    request: Request,
    principal: CurrentPrincipal,
    services: ServicesDep,
    revision: RevisionQuery = None,
    range_: RangeHeader = None,
    if_range: IfRangeHeader = None,
    if_none_match: IfNoneMatchHeader = None,
    if_match: IfMatchHeader = None,
    if_modified_since: IfModifiedSinceHeader = None,
    if_unmodified_since: IfUnmodifiedSinceHeader = None,
) -> Response:
    """Exactly the status and headers the same GET would answer, without a body."""
    _require_utf8(request.scope)
    target = services.downloads.resolve(principal, path, revision)
    return _answer(
        target,
        body=False,
        range_header=range_,
        if_range=if_range,
        if_none_match=if_none_match,
        if_match=if_match,
        if_modified_since=if_modified_since,
        if_unmodified_since=if_unmodified_since,
    )


def _require_utf8(scope: Scope) -> None:
    """Servers decode %-escapes leniently (%FF becomes U+FFFD); a library path
    must be UTF-8, so the raw request path is checked strictly (section 3)."""
    raw_path = scope.get("raw_path")
    if raw_path is None:
        return
    try:
        unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPath("the path must be percent-encoded UTF-8") from exc


def _answer(
    target: DownloadTarget,
    *,
    body: bool,
    range_header: str | None,
    if_range: str | None,
    if_none_match: str | None,
    if_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
    nowait: bool = False,
    buffer_body: bool = False,
) -> Response:
    validators = {
        "ETag": f'"{target.content_hash}"',
        "Last-Modified": http_date(target.modified),
        "X-Revision": str(target.revision),
        "X-Item-Id": target.item_id,
        # The caller's own data: no shared cache; revalidate (cheap with the ETag).
        "Cache-Control": "private, no-cache",
    }
    verdict = evaluate_preconditions(
        etag_opaque=target.content_hash,
        modified=target.modified,
        if_match=if_match,
        if_unmodified_since=if_unmodified_since,
        if_none_match=if_none_match,
        if_modified_since=if_modified_since,
    )
    if verdict is Precondition.NOT_MODIFIED:
        return Response(status_code=304, headers=validators)
    if verdict is Precondition.FAILED:
        return problem_response(
            412, "precondition_failed", "the file changed: its ETag no longer matches"
        )
    media_type = content_type_for(target.name)
    headers = {
        **validators,
        "Accept-Ranges": "bytes",
        "Content-Type": media_type,
        "Content-Disposition": content_disposition(target.name),
        "X-Content-Type-Options": "nosniff",
    }
    ranges: list[ByteRange] | None = None
    if range_header is not None and if_range_allows(if_range, target.content_hash):
        ranges = parse_range(range_header, target.size)  # RangeNotSatisfiable: 416
    content = target.data  # inline content: its bytes, read with the item
    if ranges is None or (target.file is None and content is None):
        headers["Content-Length"] = str(target.size)
        if content is not None:
            return inline_whole(content, headers=headers, body=body)
        if target.file is None:  # empty content has no file
            return Response(status_code=200, headers=headers)
        # Routes are sync (a worker thread): stat (and small ranges) are read here.
        return whole_file(target.file, headers=headers, media_type=media_type)
    if len(ranges) == 1:
        return RangesResponse.single(
            target.file,
            ranges[0],
            size=target.size,
            headers=headers,
            prefetch=body,
            content=content,
            nowait=nowait,
            buffer_body=buffer_body,
        )
    return RangesResponse.multipart(
        target.file,
        ranges,
        size=target.size,
        media_type=media_type,
        headers=headers,
        content=content,
    )


# -- the lean lane (module docstring) ----------------------------------------------

# X-Device-ID's max_length in api/dependencies.py: a longer one gets the route's 400.
_DEVICE_ID_MAX = 64
_CONDITION_HEADERS = (
    b"range",
    b"if-range",
    b"if-none-match",
    b"if-match",
    b"if-modified-since",
    b"if-unmodified-since",
)


@dataclass(frozen=True, slots=True)
class _LeanRequest:
    """What the route's parameters would hold, for a request the lane answers."""

    path: str
    token: str
    device_header: str | None
    conditions: dict[bytes, str]  # the first value of each of _CONDITION_HEADERS sent


def _lean_request(scope: Scope, starts: tuple[str, ...]) -> _LeanRequest | None:
    """The download request's parameters as FastAPI reads them (the first value
    of each header, latin-1), or None when the route must see the request."""
    if scope.get("query_string") or scope.get("root_path"):
        return None  # ?revision= (FastAPI validates it), or anything else
    route_path: str = scope["path"]
    for start in starts:
        if route_path.startswith(start):
            # The route's `{path:librarypath}` ([\s\S]*) takes all the rest.
            path = route_path[len(start) :]
            break
    else:
        return None
    authorization: str | None = None
    device_header: str | None = None
    conditions: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == b"x-device-id":
            if device_header is None:
                device_header = value.decode("latin-1")
        elif name in _CONDITION_HEADERS and name not in conditions:
            conditions[name] = value.decode("latin-1")
    if not authorization or (device_header is not None and len(device_header) > _DEVICE_ID_MAX):
        return None  # the route's 401, or its 400
    # fastapi.security.HTTPBearer, as api/dependencies.py uses it.
    scheme, _, param = authorization.partition(" ")
    token = param.strip()
    if not scheme or not token or scheme.lower() != "bearer":
        return None
    return _LeanRequest(path, token, device_header, conditions)


def _serve_lean(
    services: Services,
    scope: Scope,
    lean: _LeanRequest,
    *,
    body: bool,
    nowait: bool = False,
    buffer_body: bool = False,
) -> Response:
    """The route's work in its order (authenticate, check the raw path, resolve,
    answer), with one database statement: in a worker thread, or with `nowait`
    on the event loop (WouldBlock when that would wait for the database)."""
    target = services.downloads.resolve_for_token(
        services.auth,
        bearer=lean.token,
        device_header=lean.device_header,
        path=lean.path,
        check_request=lambda: _require_utf8(scope),
        nowait=nowait,
    )
    get = lean.conditions.get
    return _answer(
        target,
        body=body,
        range_header=get(b"range"),
        if_range=get(b"if-range"),
        if_none_match=get(b"if-none-match"),
        if_match=get(b"if-match"),
        if_modified_since=get(b"if-modified-since"),
        if_unmodified_since=get(b"if-unmodified-since"),
        nowait=nowait,
        buffer_body=buffer_body,
    )


class DownloadLane:
    """Pure-ASGI middleware: GET/HEAD `<prefix>/download/{path}` of a sync
    client, answered as the route would answer it (module docstring).

    Install it inside RequestLimitsMiddleware and MetricsMiddleware (add it
    first), so their limits and counts apply. It sets `scope["route"]` as the
    router would, so metrics name the same route template.

    On SQLite (Database.reads_nowait) it answers on the event loop: the
    database statement (Database.first_nowait) and a range in the page cache
    (RWF_NOWAIT) are cheaper than the hop to a worker thread (goal 4); what
    would wait (a lock, a write of last_seen_at, PostgreSQL) goes to a worker
    thread as before, and a range not in the page cache is read by one when
    sent. `buffer_bodies`: the ASGI server sends any bytes-like body
    (uvicorn), so a range is sent from the buffer it was read into.
    """

    def __init__(
        self, app: ASGIApp, prefixes: tuple[str, ...], *, buffer_bodies: bool = False
    ) -> None:
        self.app = app
        self._buffer_bodies = buffer_bodies
        self._starts = tuple(f"{prefix}/download/" for prefix in prefixes)
        self._routes = {
            method: route
            for route in router.routes
            if isinstance(route, APIRoute)
            for method in route.methods or ()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["method"]) if scope["type"] == "http" else None
        lean = _lean_request(scope, self._starts) if route is not None else None
        if route is None or lean is None:
            await self.app(scope, receive, send)
            return
        scope["route"], scope["endpoint"] = route, route.endpoint
        scope["path_params"] = {"path": lean.path}
        services: Services = scope["app"].state.services
        body = scope["method"] == "GET"
        try:
            try:
                if not services.db.reads_nowait:
                    raise WouldBlock
                # On the loop: cheaper than the hop to a worker thread (goal 4).
                response = _serve_lean(
                    services,
                    scope,
                    lean,
                    body=body,
                    nowait=True,
                    buffer_body=self._buffer_bodies,
                )
            except WouldBlock:
                response = await run_in_threadpool(_serve_lean, services, scope, lean, body=body)
        except ShelfsyncError as exc:
            response = await _handled(scope, receive, send, exc)
        await response(scope, receive, send)


async def _handled(scope: Scope, receive: Receive, send: Send, exc: ShelfsyncError) -> Response:
    """The answer of the app's exception handler for `exc`, looked up as
    Starlette's ExceptionMiddleware does (by the exception's class hierarchy)."""
    handlers = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        if cls is not Exception and cls in handlers:
            answer = handlers[cls](Request(scope, receive, send), exc)
            response: Response = await answer if inspect.isawaitable(answer) else answer
            return response
    raise exc
