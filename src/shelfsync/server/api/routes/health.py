"""GET /healthz, /readyz and /metrics (protocol section 11)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from shelfsync.protocol.health import Health
from shelfsync.server.api.dependencies import ServicesDep
from shelfsync.server.api.metrics import render_metrics
from shelfsync.server.api.responses import problems

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    summary="Liveness: the process answers",
    response_model=Health,
    responses={200: {"description": "Alive"}},
)
def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="Readiness: the database and the content store are reachable",
    response_model=Health,
    responses={200: {"description": "Ready"}, **problems(503)},
)
def readyz(services: ServicesDep) -> Health:
    services.db.ping()
    services.blobs.ping()
    return Health()


@router.get(
    "/metrics",
    summary="Prometheus metrics: request counts and latencies by route",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
def metrics(request: Request) -> Response:
    body, content_type = render_metrics(request.app.state.metrics)
    return Response(content=body, media_type=content_type)
