"""The request metrics (a plain ASGI middleware) and the order in which routes are matched."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medcycle.api.app import create_app
from medcycle.api.metrics import ApiMetrics, install_metrics
from medcycle.platform import Platform


@pytest.fixture
def app(platform: Platform) -> FastAPI:
    return create_app(platform, web=False)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def count(metrics: ApiMetrics, method: str, route: str, status: str) -> float:
    value = metrics.registry.get_sample_value(
        "medcycle_http_requests_total", {"method": method, "route": route, "status": status})
    return value or 0.0


def timed(metrics: ApiMetrics, method: str, route: str) -> float:
    value = metrics.registry.get_sample_value("medcycle_http_request_seconds_count", {"method": method, "route": route})
    return value or 0.0


def test_each_request_is_counted_by_route_template_and_status(app: FastAPI, client: TestClient) -> None:
    metrics: ApiMetrics = app.state.metrics
    for _ in range(3):
        assert client.get("/livez").status_code == 200
    assert count(metrics, "GET", "/livez", "200") == 3
    assert timed(metrics, "GET", "/livez") == 3
    # the route's template, not the path: one series for every job id
    assert client.get("/v1/jobs/no-such-job").status_code == 401
    assert client.get("/v1/jobs/another").status_code == 401
    assert count(metrics, "GET", "/v1/jobs/{job_id}", "401") == 2
    assert client.get("/nowhere").status_code == 404
    assert count(metrics, "GET", "unmatched", "404") == 1
    text = client.get("/metrics").text
    assert 'medcycle_http_requests_total{method="GET",route="/livez",status="200"} 3.0' in text


def test_a_request_whose_handler_raises_is_counted_as_500() -> None:
    app = FastAPI()
    metrics = ApiMetrics()
    install_metrics(app, metrics)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/fine")
    def fine() -> dict[str, int]:
        return {"ok": 1}

    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/boom").status_code == 500
        assert c.get("/fine").status_code == 200
    assert count(metrics, "GET", "/boom", "500") == 1
    assert timed(metrics, "GET", "/boom") == 1
    assert count(metrics, "GET", "/fine", "200") == 1
    with TestClient(app, raise_server_exceptions=True) as c, pytest.raises(RuntimeError, match="a bug"):
        c.get("/boom")  # the error goes on to the server once it is counted
    assert count(metrics, "GET", "/boom", "500") == 2


def test_the_metrics_middleware_does_not_touch_other_scopes() -> None:
    started: list[str] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:  # the lifespan scope passes straight through
        started.append("up")
        yield
        started.append("down")

    app = FastAPI(lifespan=lifespan)
    install_metrics(app, metrics := ApiMetrics())
    with TestClient(app):
        pass
    assert started == ["up", "down"]
    assert not [s for m in metrics.requests.collect() for s in m.samples if s.name.endswith("_total")]


def test_hot_paths_are_matched_before_the_rest_of_the_api(app: FastAPI) -> None:
    """Routes are tried one by one in the order they were added (the OpenAPI document lists them in that order):
    probes, job submission and DICOMweb intake come before the other routers, so that a refusal under overload
    does not first try a hundred routes."""
    paths = list(app.openapi()["paths"])
    jobs = paths.index("/v1/jobs")
    assert paths.index("/livez") < jobs
    hot = {p for p in paths if p.startswith(("/v1/jobs", "/dicomweb"))}
    assert {p for p in paths[jobs:jobs + len(hot)]} == hot
    assert all(paths.index(p) > jobs + len(hot) - 1 for p in paths if p.startswith(("/v1/catalog", "/v1/datasets",
                                                                                      "/v1/models", "/v1/users")))
