"""Prometheus metrics: a registry per app (no globals), request counters and latency histograms."""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medcycle.platform import Platform


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "medcycle_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "medcycle_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.queue_jobs = Gauge(
            "medcycle_queue_jobs", "Jobs per queue and state", ["queue", "state"], registry=self.registry
        )
        self.queue_age = Gauge(
            "medcycle_queue_oldest_queued_seconds",
            "Age of the oldest job still waiting per queue (0 when none waits)",
            ["queue"],
            registry=self.registry,
        )
        self.backend_up = Gauge(
            "medcycle_backend_up", "Backend reachable (1) or not (0)", ["backend"], registry=self.registry
        )

    def render(self, platform: Platform) -> Response:
        try:
            for queue in platform.jobs.queues():
                stats = platform.jobs.stats(queue)
                for state, n in stats.counts.items():
                    self.queue_jobs.labels(queue, state).set(n)
                self.queue_age.labels(queue).set(stats.oldest_queued_seconds or 0.0)
        except Exception:  # noqa: BLE001 - a scrape must not fail because a backend is down
            self.backend_up.labels("jobs").set(0)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class _Measure:
    """Counts each HTTP request by method, route template and status, and times it to its response's start.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs the app in a
    task group of its own and streams the response through memory channels, which costs every request about a
    tenth of a millisecond on the event loop — the loop that answers the refusals of an overload. A request whose
    app raises before it answers is counted as a 500 (what the server answers) and the error goes on."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def measured(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start" and not status:
                status = int(message["status"])
                self._record(scope, status, start)
            await send(message)

        try:
            await self.app(scope, receive, measured)
        finally:
            if not status:  # the app raised (or ended) without answering: the server answers 500
                self._record(scope, 500, start)

    def _record(self, scope: Scope, status: int, start: float) -> None:
        route = scope.get("route")  # set by the router on this scope when a route matched
        path = getattr(route, "path", "unmatched")
        method = scope.get("method", "")
        self.metrics.requests.labels(method, path, str(status)).inc()
        self.metrics.latency.labels(method, path).observe(time.perf_counter() - start)


def install_metrics(app: FastAPI, metrics: ApiMetrics) -> None:
    app.add_middleware(_Measure, metrics=metrics)
