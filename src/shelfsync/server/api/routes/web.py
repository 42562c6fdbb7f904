"""The web page at `/` (static files shipped in the package) and its cookie
session under /api/v1/auth/session (protocol section 14).

The page is plain ES modules talking to the public JSON API. Its defences:

- Tokens stay out of script-readable storage: the refresh token rides in an
  HttpOnly, SameSite=Strict cookie (Secure over https) scoped to the session
  path, and access tokens live only in the page's memory.
- CSRF: the only requests a cookie authenticates are the session ones below,
  and they need the custom `X-Requested-With` header (a cross-site form or
  image cannot send it; a cross-site script would need a CORS preflight we
  never grant) and, when the browser sends `Origin` or `Sec-Fetch-Site`, a
  same-origin one. Every other route needs a bearer token, which a forged
  request cannot carry.
- A strict Content-Security-Policy (no inline script, nothing from another
  origin, no framing) on the page and its files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Cookie, Header, Request, Response
from fastapi.responses import FileResponse

from shelfsync.protocol.library import SessionStart, SessionToken
from shelfsync.server.api.errors import problem_response
from shelfsync.server.api.responses import problems
from shelfsync.server.api.web_dependencies import WebServicesDep
from shelfsync.server.domain.errors import CrossSiteRequest
from shelfsync.server.services.web_sessions import WebSession

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "STATIC_DIR",
    "page_router",
    "session_router",
]

STATIC_DIR = Path(__file__).resolve().parents[2] / "web" / "static"
SESSION_COOKIE = "shelfsync_session"
SESSION_PATH = "/api/v1/auth/session"
CSRF_HEADER = "X-Requested-With"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    )
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
_ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(?:js|css|svg|png|ico)$")
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

page_router = APIRouter(include_in_schema=False)
session_router = APIRouter(tags=["auth"])


def _assets() -> dict[str, Path]:
    """The shipped files by name: only these are ever served (no path from a URL
    reaches the file system)."""
    return {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and _ASSET_NAME.match(p.name)}


_ASSETS = _assets()


@page_router.get("/")
def index() -> Response:
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
    )


@page_router.get("/static/{name}")
def asset(name: str) -> Response:
    file = _ASSETS.get(name)
    if file is None:
        return problem_response(404, "not_found", "no such file")
    return FileResponse(file, media_type=_MEDIA_TYPES[file.suffix], headers=_PAGE_HEADERS)


# -- the cookie session ---------------------------------------------------------


def _require_same_origin(request: Request, marker: str | None) -> None:
    if not marker:
        raise CrossSiteRequest(f"the {CSRF_HEADER} header is required")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in {"same-origin", "none"}:
        raise CrossSiteRequest("cross-site requests are refused")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise CrossSiteRequest("cross-origin requests are refused")


def _answer(request: Request, session: WebSession) -> Response:
    settings = request.app.state.settings
    body = SessionToken(
        access_token=session.access_token,
        expires_in=session.expires_in_s,
        username=session.username,
    )
    response = Response(
        content=body.model_dump_json(),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
    response.set_cookie(
        SESSION_COOKIE,
        session.refresh_token,
        max_age=settings.refresh_token_ttl_s,
        path=SESSION_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


CsrfHeader = Annotated[
    str | None,
    Header(
        alias=CSRF_HEADER,
        max_length=64,
        description="Required (any value, e.g. `shelfsync`): the page's CSRF proof.",
    ),
]
SessionCookie = Annotated[
    str | None,
    Cookie(
        alias=SESSION_COOKIE,
        max_length=512,
        description="The session's refresh token (HttpOnly; set by these routes).",
    ),
]
_SET_COOKIE: dict[str, Any] = {
    "Set-Cookie": {
        "description": f"`{SESSION_COOKIE}`: HttpOnly, SameSite=Strict, Path={SESSION_PATH}",
        "schema": {"type": "string"},
    }
}


@session_router.post(
    "/session",
    summary="Start a web session from a refresh token (sets an HttpOnly cookie)",
    response_model=SessionToken,
    responses={
        200: {"description": "Session started", "headers": _SET_COOKIE},
        **problems(400, 401, 403, 503),
    },
)
def start_session(
    body: SessionStart, request: Request, web: WebServicesDep, marker: CsrfHeader = None
) -> Response:
    """Spends the refresh token from `/auth/login` and keeps its successor in
    a cookie the page's script cannot read; answers an access token."""
    _require_same_origin(request, marker)
    return _answer(request, web.sessions.start(refresh_token=body.refresh_token))


@session_router.post(
    "/session/refresh",
    summary="A new access token for the cookie's session (rotates the cookie)",
    response_model=SessionToken,
    responses={
        200: {"description": "Session refreshed", "headers": _SET_COOKIE},
        **problems(400, 401, 403, 503),
    },
)
def refresh_session(
    request: Request,
    web: WebServicesDep,
    marker: CsrfHeader = None,
    cookie: SessionCookie = None,
) -> Response:
    """How the page gets (back) an access token, e.g. after a reload."""
    _require_same_origin(request, marker)
    return _answer(request, web.sessions.refresh(refresh_token=cookie))


@session_router.delete(
    "/session",
    summary="Log out: revoke the session and clear its cookie",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "Logged out", "headers": _SET_COOKIE},
        **problems(400, 403, 503),
    },
)
def end_session(
    request: Request,
    web: WebServicesDep,
    marker: CsrfHeader = None,
    cookie: SessionCookie = None,
) -> Response:
    _require_same_origin(request, marker)
    web.sessions.end(refresh_token=cookie)
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE,
        path=SESSION_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response
