"""Prometheus metrics: a registry per app (no globals), request counters and latency histograms."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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


def install_metrics(app: FastAPI, metrics: ApiMetrics) -> None:
    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        metrics.latency.labels(request.method, path).observe(time.perf_counter() - start)
        return response
