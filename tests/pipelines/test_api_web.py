"""The pipelines API (JSON list/show) and web pages (runs table, the graph drawn with each step's state)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medcycle.api.app import create_app
from medcycle.api.routers import pipelines as pipelines_router
from medcycle.auth import users
from medcycle.pipelines.state import RunDetail, StepInfo, StepState
from medcycle.platform import Platform
from medcycle.web import pipelines as pipelines_pages
from tests.pipelines.conftest import Project

ERROR_KEYS = {"code", "message", "hint", "details"}


def make_app(platform: Platform) -> FastAPI:
    """The app with the pipelines router and pages, as ``medcycle.api.app`` / ``medcycle.web`` will wire them."""
    app = create_app(platform, web=True)
    paths = {getattr(r, "path", "") for r in app.routes}
    if "/v1/pipelines/runs" not in paths:
        app.include_router(pipelines_router.router)
    if "/ui/pipelines/{run}" not in paths:
        before = len(app.router.routes)
        app.include_router(pipelines_pages.router)
        ours = app.router.routes[before:]
        del app.router.routes[before:]
        app.router.routes[0:0] = ours
    return app


@pytest.fixture
def client(sqlite_project: Project) -> Iterator[TestClient]:
    with TestClient(make_app(sqlite_project.platform), raise_server_exceptions=False, follow_redirects=False) as c:
        yield c


def token_for(platform: Platform, name: str, role: str) -> dict[str, str]:
    with platform.session() as s:
        users.create_user(s, name, role)
        secret = users.create_token(s, name).secret
    return {"Authorization": f"Bearer {secret}"}


class Graph(HTMLParser):
    """The SVG graph's nodes (``data-step`` → ``data-state``) and edges (``data-edge``)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.nodes: dict[str, str] = {}
        self.edges: list[str] = []
        self.svg = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg" and a.get("data-testid") == "pipeline-graph":
            self.svg += 1
        if tag == "g" and a.get("data-step"):
            self.nodes[str(a["data-step"])] = str(a["data-state"])
        if tag == "path" and a.get("data-edge"):
            self.edges.append(str(a["data-edge"]))


def test_api_lists_and_shows_runs(sqlite_project: Project, client: TestClient) -> None:
    viewer = token_for(sqlite_project.platform, "vi", "viewer")
    first = sqlite_project.run()
    second = sqlite_project.run()
    assert client.get("/v1/pipelines/runs").status_code == 401
    r = client.get("/v1/pipelines/runs", headers=viewer)
    assert r.status_code == 200
    body = r.json()
    assert [x["id"] for x in body["runs"]] == [second.run.id, first.run.id]
    assert body["runs"][0]["counts"]["cached"] == 4 and body["runs"][1]["counts"]["succeeded"] == 4
    assert client.get("/v1/pipelines/runs?pipeline=other", headers=viewer).json()["runs"] == []
    r = client.get(f"/v1/pipelines/runs/{first.run.id[:8]}", headers=viewer)
    assert r.status_code == 200
    shown = r.json()
    assert shown["id"] == first.run.id and {s["name"]: s["state"] for s in shown["steps"]} == {
        "prepare": "succeeded", "report": "succeeded", "train": "succeeded", "evaluate": "succeeded"}
    assert ["train", "evaluate"] in shown["edges"] and shown["spec"]["pipeline"] == "demo"
    assert shown["steps"][0]["cache_key"] and shown["steps"][0]["outputs"]
    r = client.get("/v1/pipelines/runs/nope", headers=viewer)
    assert r.status_code == 404 and set(r.json()["error"]) == ERROR_KEYS
    assert client.get("/v1/pipelines/runs?limit=5000", headers=viewer).status_code == 422


def test_pages_draw_the_graph_with_each_steps_state(sqlite_project: Project, client: TestClient) -> None:
    viewer = token_for(sqlite_project.platform, "vi", "viewer")
    (sqlite_project.root / "data.txt").unlink()  # prepare fails: train and evaluate are skipped, report runs
    failed = sqlite_project.run()
    r = client.get(f"/ui/pipelines/{failed.run.id}", headers=viewer)
    assert r.status_code == 200, r.text
    graph = Graph(r.text)
    assert graph.svg == 1
    assert graph.nodes == {"prepare": "failed", "report": "succeeded", "train": "skipped", "evaluate": "skipped"}
    assert sorted(graph.edges) == ["prepare->evaluate", "prepare->train", "train->evaluate"]
    assert "files pattern &#39;data.txt&#39; matches no file" in r.text
    assert 'id="step-train" data-state="skipped"' in r.text and "Refresh" not in r.headers

    (sqlite_project.root / "data.txt").write_text("back\n")
    fixed = sqlite_project.run()
    page = client.get(f"/ui/pipelines/{fixed.run.id}", headers=viewer).text
    assert Graph(page).nodes == {"prepare": "succeeded", "report": "cached", "train": "succeeded",
                                 "evaluate": "succeeded"}
    assert "cache hit" in page and "reused from the cache" in page
    digest = fixed.step("train").outputs["model"]["digest"]
    assert f">{digest[:12]}</code>" in page and f'href="/v1/objects/{digest}"' not in page  # viewer: no bytes
    reader = token_for(sqlite_project.platform, "eng", "ml-engineer")
    assert f'href="/v1/objects/{digest}"' in client.get(f"/ui/pipelines/{fixed.run.id}", headers=reader).text

    listing = client.get("/ui/pipelines", headers=viewer)
    assert listing.status_code == 200
    assert re.search(rf'href="/ui/pipelines/{fixed.run.id}"', listing.text)
    assert "1 failed" in listing.text and "1 cached" in listing.text
    assert client.get("/ui/pipelines/nope", headers=viewer).status_code == 404


def test_the_drawing_lays_steps_out_by_depth() -> None:
    def step(name: str, state: StepState, needs: list[str], position: int) -> StepInfo:
        return StepInfo(name=name, position=position, needs=needs, state=state, cache_key=None, cache_hit=False,
                        forced=False, inputs={}, outputs={}, command=[], job_id=None, tracked_run_id=None,
                        exit_code=None, log_digest=None, started_at=None, ended_at=None, error=None)

    steps = [step("a", StepState.CACHED, [], 0), step("b", StepState.RUNNING, ["a"], 1),
             step("c", StepState.PENDING, ["a"], 2), step("d", StepState.PENDING, ["b", "c"], 3)]
    drawing = pipelines_pages.draw(RunDetail(run=None, steps=steps, spec={}))  # type: ignore[arg-type]
    x = {n.name: n.x for n in drawing.nodes}
    y = {n.name: n.y for n in drawing.nodes}
    assert x["a"] < x["b"] == x["c"] < x["d"] and y["b"] < y["c"]
    assert {n.name: n.label for n in drawing.nodes} == {"a": "cache hit", "b": "running", "c": "pending",
                                                        "d": "pending"}
    assert len(drawing.edges) == 4 and all(e.path.startswith("M") for e in drawing.edges)
    assert drawing.width > x["d"] + pipelines_pages.NODE_W and drawing.height >= 2 * pipelines_pages.NODE_H
