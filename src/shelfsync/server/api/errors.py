"""One table from domain errors to HTTP, and RFC 9457 problem+json rendering."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from shelfsync.protocol.problems import FieldError, Problem
from shelfsync.server.domain import errors as e

__all__ = [
    "PROBLEM_TABLE",
    "install_error_handlers",
    "problem_for",
    "problem_response",
]

log = logging.getLogger("shelfsync.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"

# The one mapping: most specific class first; the first isinstance match wins.
PROBLEM_TABLE: tuple[tuple[type[e.ShelfsyncError], int, str], ...] = (
    (e.InvalidPath, 400, "invalid_path"),
    (e.InvalidCursor, 400, "invalid_cursor"),
    (e.DeviceRequired, 400, "device_required"),
    (e.AlreadyResolved, 400, "already_resolved"),
    (e.ContentMissing, 400, "content_missing"),
    (e.BatchTruncated, 400, "batch_truncated"),
    (e.BatchMalformed, 400, "batch_malformed"),
    (e.InvalidInput, 400, "invalid_request"),
    (e.MissingChunks, 400, "missing_chunks"),
    (e.HashMismatch, 400, "hash_mismatch"),
    (e.DigestMismatch, 400, "digest_mismatch"),
    (e.Gone, 410, "upload_expired"),
    (e.BatchTooLarge, 413, "batch_too_large"),
    (e.TooLarge, 413, "too_large"),
    (e.TooManySessions, 429, "too_many_sessions"),
    (e.AuthenticationFailed, 401, "unauthorized"),
    (e.LoginThrottled, 429, "too_many_attempts"),
    (e.DeviceForbidden, 403, "forbidden"),
    (e.CrossSiteRequest, 403, "csrf_rejected"),
    (e.Forbidden, 403, "forbidden"),
    (e.UserNotFound, 404, "not_found"),
    (e.DeviceNotFound, 404, "not_found"),
    (e.ConflictNotFound, 404, "not_found"),
    (e.NotFound, 404, "not_found"),
    (e.CursorExpired, 410, "cursor_expired"),
    (e.ChunkConflict, 409, "chunk_conflict"),
    (e.SessionNotPending, 409, "upload_not_pending"),
    (e.StaleState, 409, "stale_revision"),
    (e.UserExists, 409, "already_exists"),
    (e.AlreadyExists, 409, "already_exists"),
    (e.RangeNotSatisfiable, 416, "range_not_satisfiable"),
    (e.StorageFailure, 503, "storage_unavailable"),
    (e.Unavailable, 503, "unavailable"),
    (e.InsufficientStorage, 507, "insufficient_storage"),
)

# Codes for errors raised by the framework itself (routing, methods, bodies).
_FRAMEWORK_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    431: "headers_too_large",
}


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[FieldError] | None = None,
    reason: str | None = None,
    missing_chunks: list[int] | None = None,
) -> JSONResponse:
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        code=code,
        errors=errors,
        reason=reason,
        missing_chunks=missing_chunks,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def problem_for(exc: e.ShelfsyncError) -> Problem:
    """The problem body for a domain error (also used inside report results)."""
    for cls, status, code in PROBLEM_TABLE:
        if isinstance(exc, cls):
            return Problem(
                title=HTTPStatus(status).phrase, status=status, detail=exc.detail, code=code
            )
    return Problem(title="Internal Server Error", status=500, detail="internal", code="internal")


def _for_domain(exc: e.ShelfsyncError) -> JSONResponse:
    for cls, status, code in PROBLEM_TABLE:
        if isinstance(exc, cls):
            headers: dict[str, str] = {}
            if isinstance(
                exc, e.LoginThrottled | e.Unavailable | e.InsufficientStorage | e.TooManySessions
            ):
                headers["Retry-After"] = str(exc.retry_after_s)
            if status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="shelfsync"'
            if isinstance(exc, e.RangeNotSatisfiable):
                # RFC 9110 section 15.5.17: a 416 names the current length.
                headers["Content-Range"] = f"bytes */{exc.size}"
            reason = exc.reason if isinstance(exc, e.CursorExpired) else None
            missing = exc.missing if isinstance(exc, e.MissingChunks) else None
            return problem_response(
                status,
                code,
                exc.detail,
                headers=headers or None,
                reason=reason,
                missing_chunks=missing,
            )
    log.error("unmapped domain error %s", type(exc).__name__)
    return problem_response(500, "internal", "internal server error")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path.

    RFC 9110 section 15.5.6: a 405 lists the target's supported methods.
    Starlette's own Allow names only the first route whose path matched, but
    one path is often served by several routes (GET and POST /devices), so
    each method is tried against the routes on a scope of its own.
    """
    allowed: list[str] = []
    for method in _METHODS:
        probe: Scope = {
            "type": "http",
            "method": method,
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
            "headers": request.scope.get("headers", []),
        }
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def install_error_handlers(app: FastAPI) -> None:
    async def on_domain(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, e.ShelfsyncError)
        return _for_domain(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = [
            FieldError(field=_location(tuple(err.get("loc", ()))), message=str(err.get("msg")))
            for err in exc.errors()
        ][:50]
        names = ", ".join(sorted({f.field for f in fields})) or "the request"
        return problem_response(400, "invalid_request", f"invalid: {names}", errors=fields)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        code = _FRAMEWORK_CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_"))
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        headers = dict(exc.headers or {})
        if status == 405 and (allowed := _allowed_methods(request)):
            headers["Allow"] = ", ".join(allowed)
        return problem_response(status, code, detail, headers=headers or None)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(500, "internal", "internal server error")

    app.add_exception_handler(e.ShelfsyncError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
