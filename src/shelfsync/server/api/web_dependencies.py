"""What the web page's routes call: built once by the composition root and kept
apart from `Services`, so the sync routes' container stays as it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from shelfsync.server.services.download_tickets import DownloadTicketService
from shelfsync.server.services.library import LibraryService
from shelfsync.server.services.web_sessions import WebSessionService

__all__ = ["WebServices", "WebServicesDep"]


@dataclass(frozen=True, slots=True)
class WebServices:
    library: LibraryService
    tickets: DownloadTicketService
    sessions: WebSessionService


def _web_services(request: Request) -> WebServices:
    web: WebServices = request.app.state.web_services
    return web


WebServicesDep = Annotated[WebServices, Depends(_web_services)]
