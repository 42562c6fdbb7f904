"""create_app(settings): the composition root. Nothing is built at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from shelfsync import __version__
from shelfsync.server.api.dependencies import Services
from shelfsync.server.api.errors import install_error_handlers
from shelfsync.server.api.http_protocol import BODY_THREADS
from shelfsync.server.api.limits import RequestLimits, RequestLimitsMiddleware
from shelfsync.server.api.metrics import MetricsMiddleware, RequestMetrics, add_process_gauges
from shelfsync.server.api.openapi import ALIASED_PREFIX, UNVERSIONED_PREFIX, build_openapi
from shelfsync.server.api.routes import (
    auth,
    batch,
    devices,
    download,
    health,
    library,
    sync,
    upload,
    web,
)
from shelfsync.server.api.web_dependencies import WebServices
from shelfsync.server.services.accounts import AccountService
from shelfsync.server.services.auth import AuthService, LoginPolicy
from shelfsync.server.services.batch_uploads import BatchLimits, BatchUploadService
from shelfsync.server.services.conflicts import ConflictService
from shelfsync.server.services.content_gc import ContentCollector
from shelfsync.server.services.cursors import CursorCodec
from shelfsync.server.services.devices import DeviceService
from shelfsync.server.services.download_tickets import DownloadTicketService
from shelfsync.server.services.downloads import DownloadService
from shelfsync.server.services.feed import FeedService
from shelfsync.server.services.library import LibraryService
from shelfsync.server.services.notifier import ChangeNotifier
from shelfsync.server.services.passwords import PasswordHasher
from shelfsync.server.services.report import ReportService
from shelfsync.server.services.retention import RetentionService
from shelfsync.server.services.tokens import TokenIssuer
from shelfsync.server.services.uploads import UploadLimits, UploadService
from shelfsync.server.services.web_sessions import WebSessionService
from shelfsync.server.settings import Settings
from shelfsync.server.storage.blobs import BlobStore
from shelfsync.server.storage.change_channel import ChangeChannel
from shelfsync.server.storage.contents import MAX_INLINE_BYTES
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.migrate import upgrade
from shelfsync.server.storage.secret_file import load_or_create_secret

__all__ = ["build_services", "create_app", "open_database"]

log = logging.getLogger("shelfsync")

AUTH_PREFIX = "/api/v1/auth"
_CHANNEL_START_WAIT_S = 5.0

TAGS = [
    {"name": "auth", "description": "Logging in and the tokens a client holds"},
    {"name": "sync", "description": "Multi-device library synchronization"},
    {"name": "library", "description": "Browsing the library and its history (the web page)"},
    {"name": "operations", "description": "Health, readiness and metrics for operators"},
]


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    """Open the database; an empty or older one is brought to the current schema."""
    # Owner-only: the database holds password and token hashes.
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings.content_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url, pool_size=settings.db_pool_size)
    if migrate:
        upgrade(db)
    return db


def prepare_secret(settings: Settings) -> None:
    """Create the signing secret now if it does not exist yet."""
    load_or_create_secret(settings.secret_path)


def create_app_from_env() -> FastAPI:
    """The app as a server worker process builds it (settings from SHELFSYNC_*)."""
    return create_app(Settings.from_env())


def build_services(
    settings: Settings, db: Database, *, notifier: ChangeNotifier | None = None
) -> Services:
    passwords = PasswordHasher(
        time_cost=settings.argon2_time_cost, memory_cost_kib=settings.argon2_memory_kib
    )
    secret = load_or_create_secret(settings.secret_path)
    tokens = TokenIssuer(secret=secret, access_ttl_s=settings.access_token_ttl_s)
    notifier = notifier or ChangeNotifier()
    policy = LoginPolicy(
        max_failures=settings.login_max_failures,
        window_s=settings.login_window_s,
        block_s=settings.login_block_s,
        refresh_ttl_s=settings.refresh_token_ttl_s,
    )
    blobs = BlobStore(settings.content_dir)
    # Small content is stored in the database (storage/contents.py), never above its bound.
    inline_max_bytes = max(0, min(settings.inline_max_bytes, MAX_INLINE_BYTES))
    report = ReportService(db=db, notifier=notifier)
    limits = UploadLimits(
        max_file_size_bytes=settings.max_file_size_bytes,
        max_sessions_per_device=settings.max_sessions_per_device,
        quota_bytes=settings.quota_bytes,
        expiry=timedelta(seconds=settings.upload_expiry_s),
        inline_max_bytes=inline_max_bytes,
    )
    return Services(
        db=db,
        auth=AuthService(db=db, passwords=passwords, tokens=tokens, policy=policy),
        accounts=AccountService(db=db, passwords=passwords),
        devices=DeviceService(db=db),
        report=report,
        feed=FeedService(db=db, codec=CursorCodec(secret), notifier=notifier),
        conflicts=ConflictService(db=db, notifier=notifier),
        retention=RetentionService(db=db, retention=timedelta(days=settings.retention_days)),
        blobs=blobs,
        content_gc=ContentCollector(db=db, blobs=blobs, grace=timedelta(hours=1)),
        uploads=UploadService(db=db, blobs=blobs, report=report, notifier=notifier, limits=limits),
        downloads=DownloadService(db=db, blobs=blobs),
        batch_uploads=BatchUploadService(
            db=db,
            blobs=blobs,
            report=report,
            limits=BatchLimits(
                max_files=settings.batch_max_files,
                max_bytes=settings.batch_max_bytes,
                max_file_bytes=settings.batch_max_file_bytes,
                quota_bytes=settings.quota_bytes,
                inline_max_bytes=inline_max_bytes,
            ),
        ),
    )


async def _maintain(services: Services, interval_s: float) -> None:
    """Background upkeep: retention purges, on a timer, off the event loop."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            report = await asyncio.to_thread(services.retention.run_once)
            if report.tombstones or report.revisions or report.conflicts:
                log.info("retention purged %s", report)
            expired = await asyncio.to_thread(services.uploads.expire_idle)
            if expired:
                log.info("expired %d idle upload sessions", expired)
            collected = await asyncio.to_thread(services.content_gc.collect)
            if collected:
                log.info("removed %d unreferenced contents", collected)
        except Exception:
            log.exception("maintenance run failed; will retry")


def create_app(
    settings: Settings, *, db: Database | None = None, buffer_bodies: bool = False
) -> FastAPI:
    """The app. `buffer_bodies`: the ASGI server that runs it sends any
    bytes-like body (uvicorn does; granian does not), so a body read into a
    buffer needs no copy into bytes (download.DownloadLane)."""
    database = db or open_database(settings)
    notifier = ChangeNotifier()
    # PostgreSQL may be shared by several server processes: changes committed by
    # one must wake long-polls held by the others (LISTEN/NOTIFY, no broker).
    channel = ChangeChannel.for_database(
        database, on_change=notifier.wake, on_gap=notifier.wake_all
    )
    if channel is not None:
        notifier.forward_to(channel.publish)
    services = build_services(settings, database, notifier=notifier)
    # Finish whatever a crash interrupted before serving anyone (on PostgreSQL
    # under the GC's advisory lock: skipped while another process collects).
    services.content_gc.recover()
    if database.is_sqlite:
        # SQLite means one server process: any chunk claim left is from a crash.
        # (On PostgreSQL other processes' claims are live; stale ones time out.)
        services.uploads.drop_claims()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if channel is not None:
            channel.start()
            # Listening before the first request, so no cross-process wake-up is
            # missed; a database that is down does not hold the start for long.
            await asyncio.to_thread(channel.wait_connected, _CHANNEL_START_WAIT_S)
        maintenance = asyncio.create_task(_maintain(services, settings.maintenance_interval_s))
        try:
            yield
        finally:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
            # Bodies still read by a thread now (a forced stop) are cut.
            await asyncio.to_thread(BODY_THREADS.stop)
            if channel is not None:
                await asyncio.to_thread(channel.stop)
            if db is None:
                database.dispose()

    app = FastAPI(
        title="shelfsync",
        version=__version__,
        description="Self-hosted multi-device library synchronization.",
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        # FastAPI's native OpenTelemetry asks the global providers on every
        # request (~20 us); shelfsync's metrics are its own (/metrics, Prometheus).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    app.state.web_services = WebServices(
        library=LibraryService(db=database, notifier=notifier),
        tickets=DownloadTicketService(
            db=database,
            secret=load_or_create_secret(settings.secret_path),
            downloads=services.downloads,
        ),
        sessions=WebSessionService(db=database, auth=services.auth),
    )
    app.state.settings = settings
    app.state.metrics = RequestMetrics.create()
    app.state.change_channel = channel
    add_process_gauges(
        app.state.metrics,
        waiting=notifier.waiting,
        listener_up=None if channel is None else (lambda: float(channel.connected)),
    )
    install_error_handlers(app)

    app.include_router(auth.router, prefix=AUTH_PREFIX)
    for prefix, listed in ((ALIASED_PREFIX, True), (UNVERSIONED_PREFIX, False)):
        # The same handlers answer at both prefixes; the docs list each once.
        app.include_router(devices.router, prefix=prefix, include_in_schema=listed)
        app.include_router(sync.router, prefix=prefix, include_in_schema=listed)
        # Before upload/download: `/upload/batch` must not match `/upload/{id}`.
        app.include_router(batch.router, prefix=prefix, include_in_schema=listed)
        app.include_router(upload.router, prefix=prefix, include_in_schema=listed)
        app.include_router(download.router, prefix=prefix, include_in_schema=listed)
    app.include_router(health.router)
    app.include_router(web.session_router, prefix=AUTH_PREFIX)
    app.include_router(library.router, prefix=library.LIBRARY_PREFIX)
    app.include_router(library.ticket_router, prefix=library.LIBRARY_PREFIX)
    app.include_router(web.page_router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # Innermost: a sync client's download GET/HEAD, answered as its route would,
    # without the router (per-request cost, goal 4); limits and metrics apply.
    app.add_middleware(
        download.DownloadLane,
        prefixes=(ALIASED_PREFIX, UNVERSIONED_PREFIX),
        buffer_bodies=buffer_bodies,
    )
    # Inside the metrics middleware, so its 413/431/408 answers are counted.
    app.add_middleware(
        RequestLimitsMiddleware,
        limits=RequestLimits(
            max_body_bytes=settings.max_json_body_bytes,
            # A batch upload: its manifest (a JSON body) and the files' bytes.
            max_batch_body_bytes=4 + settings.max_json_body_bytes + settings.batch_max_bytes,
            max_header_bytes=settings.max_header_bytes,
            body_idle_timeout_s=settings.body_idle_timeout_s,
        ),
    )
    app.add_middleware(
        MetricsMiddleware,
        metrics=app.state.metrics,
        prefixes=(AUTH_PREFIX, ALIASED_PREFIX, UNVERSIONED_PREFIX, library.LIBRARY_PREFIX),
    )
    return app
