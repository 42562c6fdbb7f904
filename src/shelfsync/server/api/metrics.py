"""Prometheus request metrics as a pure ASGI middleware.

Pure ASGI (not BaseHTTPMiddleware) so streamed bodies and the `pathsend`
extension pass through untouched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MetricsMiddleware", "RequestMetrics", "add_process_gauges", "render_metrics"]


@dataclass(frozen=True, slots=True)
class RequestMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram

    @classmethod
    def create(cls) -> RequestMetrics:
        # A registry per app: no import-time globals, tests build many apps.
        registry = CollectorRegistry(auto_describe=True)
        requests = Counter(
            "shelfsync_http_requests",
            "HTTP requests by route template, method and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        latency = Histogram(
            "shelfsync_http_request_duration_seconds",
            "Time to the end of the response, by route template and method.",
            ["method", "route"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        return cls(registry, requests, latency)


def add_process_gauges(
    metrics: RequestMetrics,
    *,
    waiting: Callable[[], float],
    listener_up: Callable[[], float] | None,
) -> None:
    """Gauges of this server process, read at scrape time.

    With several processes each answers /metrics for itself: `pid` tells which
    one a scrape reached.
    """
    Gauge(
        "shelfsync_process",
        "This server process (always 1; the pid label tells processes apart).",
        ["pid"],
        registry=metrics.registry,
    ).labels(str(os.getpid())).set(1)
    Gauge(
        "shelfsync_feed_waiters",
        "Long-poll feed requests this process holds now.",
        registry=metrics.registry,
    ).set_function(waiting)
    if listener_up is not None:
        Gauge(
            "shelfsync_change_listener_up",
            "1 while this process LISTENs for other processes' changes (PostgreSQL).",
            registry=metrics.registry,
        ).set_function(listener_up)


def render_metrics(metrics: RequestMetrics) -> tuple[bytes, str]:
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: RequestMetrics, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.metrics = metrics
        # Routers are mounted under these prefixes; the matched route only knows
        # its own suffix, so the full template is rebuilt from them.
        self.prefixes = tuple(sorted(prefixes, key=len, reverse=True))
        # As many as the labelled series: templates, never raw paths.
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # Templates, never raw paths: label cardinality stays bounded.
            template = self._template(scope)
            method = scope["method"]
            self._counter(method, template, status).inc()
            self._histogram(method, template).observe(time.perf_counter() - start)

    # The labelled series, looked up once (labels() takes a lock and builds a key).
    def _counter(self, method: str, template: str, status: int) -> Counter:
        key = (method, template, status)
        series = self._counters.get(key)
        if series is None:
            series = self._counters[key] = self.metrics.requests.labels(
                method, template, str(status)
            )
        return series

    def _histogram(self, method: str, template: str) -> Histogram:
        key = (method, template)
        series = self._histograms.get(key)
        if series is None:
            series = self._histograms[key] = self.metrics.latency.labels(method, template)
        return series

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        suffix = getattr(route, "path_format", None)
        regex = getattr(route, "path_regex", None)
        if suffix is None or regex is None:
            return "unmatched"
        path: str = scope["path"]
        for prefix in self.prefixes:
            if path.startswith(prefix) and regex.match(path[len(prefix) :]):
                return prefix + str(suffix)
        return str(suffix)
