"""Request-scoped dependencies as Annotated aliases (CurrentPrincipal, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shelfsync.server.domain.errors import AuthenticationFailed
from shelfsync.server.services.accounts import AccountService
from shelfsync.server.services.auth import AuthService, Principal
from shelfsync.server.services.batch_uploads import BatchUploadService
from shelfsync.server.services.conflicts import ConflictService
from shelfsync.server.services.content_gc import ContentCollector
from shelfsync.server.services.devices import DeviceService
from shelfsync.server.services.downloads import DownloadService
from shelfsync.server.services.feed import FeedService
from shelfsync.server.services.report import ReportService
from shelfsync.server.services.retention import RetentionService
from shelfsync.server.services.uploads import UploadService
from shelfsync.server.storage.blobs import BlobStore
from shelfsync.server.storage.engine import Database

__all__ = ["CurrentPrincipal", "Services", "ServicesDep", "client_ip"]


@dataclass(frozen=True, slots=True)
class Services:
    """Everything routes may call, built once by the composition root."""

    db: Database
    auth: AuthService
    accounts: AccountService
    devices: DeviceService
    report: ReportService
    feed: FeedService
    conflicts: ConflictService
    retention: RetentionService
    blobs: BlobStore
    content_gc: ContentCollector
    uploads: UploadService
    downloads: DownloadService
    batch_uploads: BatchUploadService


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]

_bearer = HTTPBearer(auto_error=False, description="An access token from /api/v1/auth/*.")


def _principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_device_id: Annotated[
        str | None,
        Header(
            max_length=64,
            description="With a user token: the caller's device this request acts for.",
        ),
    ] = None,
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationFailed("a bearer access token is required")
    return services.auth.authenticate(bearer=credentials.credentials, device_header=x_device_id)


CurrentPrincipal = Annotated[Principal, Depends(_principal)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
