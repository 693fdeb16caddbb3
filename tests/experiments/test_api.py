"""The runs API and the remote SDK over it: batch ingest, part-wise uploads, listings, downsampled series."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medcycle.api.errors import install_error_handlers
from medcycle.api.routers import objects, runs
from medcycle.auth import users
from medcycle.errors import PermissionDenied
from medcycle.experiments.remote import HttpSink, RemoteRuns
from medcycle.experiments.sdk import start_run
from medcycle.platform import Platform


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    # The app as the lead will wire it: the runs router next to the objects router.
    app = FastAPI()
    app.state.platform = platform
    install_error_handlers(app)
    app.include_router(objects.router)
    app.include_router(runs.router)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def token(platform: Platform, name: str, role: str) -> dict[str, str]:
    with platform.session() as s:
        users.create_user(s, name, role)
        return {"Authorization": f"Bearer {users.create_token(s, name).secret}"}


def test_remote_sdk_round_trip(platform: Platform, client: TestClient, tmp_path: Path, dirty_repo: Path) -> None:
    client.headers.update(token(platform, "eng", "ml-engineer"))
    uploads: list[str] = []
    client.event_hooks["request"].append(
        lambda r: uploads.append(r.url.path) if r.method == "POST" and r.url.path == "/v1/objects" else None)
    sink = HttpSink("http://testserver", client=client, part_size=1024 * 1024)
    big = tmp_path / "weights.bin"
    big.write_bytes(np.random.default_rng(0).bytes(3 * 1024 * 1024 + 5))
    with start_run("remote", name="r1", sink=sink, journal_dir=tmp_path / "j", code_path=dirty_repo,
                   capture_output=False, resources=False, flush_interval=0.05, params={"lr": 0.1}) as run:
        for i in range(5000):
            run.log_metric("loss", 1.0 / (i + 1), step=i)
        run.log_image("val/case", np.eye(8))
        digest = run.log_artifact(big, kind="model")
    assert len(uploads) == 4 + 3  # 4 parts, then the image, the diff and the freeze
    assert platform.objects.get(digest) == big.read_bytes() and digest == hashlib.sha256(big.read_bytes()).hexdigest()
    uploads.clear()
    sink.put_object(big, digest)  # resumes: every part is already there
    assert uploads == []

    remote = RemoteRuns("http://testserver", client=client)
    listing = remote.list_runs("params.lr > 0.01 and metrics.loss < 0.001")
    assert listing["total"] == 1 and listing["runs"][0]["name"] == "r1"
    shown = remote.get_run(run.id[:8])
    assert shown["created_by"] == "eng" and shown["capture"]["git"]["dirty"] is True
    series = remote.metrics(run.id, ["loss"], max_points=100)["series"]["loss"]
    assert series["downsampled"] and series["count"] == 5000 and len(series["values"]) <= 100
    assert series["steps"][0] == 0 and series["steps"][-1] == 4999
    raw = remote.metrics(run.id)["series"]["loss"]
    assert raw["values"] == [1.0 / (i + 1) for i in range(5000)]
    assert "+lr = 0.01" in client.get(f"/v1/runs/{run.id}/diff").text
    assert client.get(f"/v1/runs/{run.id}/applied").json()["applied_seq"] > 5


def test_ingest_needs_train_permission_and_is_idempotent(platform: Platform, client: TestClient,
                                                         tmp_path: Path) -> None:
    viewer = token(platform, "vi", "viewer")
    assert client.get("/v1/runs", headers=viewer).status_code == 200
    denied = client.post("/v1/runs/" + "ab" * 16 + "/records", content=b"", headers=viewer)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    sink = HttpSink("http://testserver", client=TestClient(client.app, headers=viewer))
    with pytest.raises(PermissionDenied):
        sink.applied_seq("ab" * 16)
    engineer = token(platform, "eng", "ml-engineer")
    bad = client.post("/v1/runs/" + "ab" * 16 + "/records", content=b"\x05\x00\x00\x00junk", headers=engineer)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_failed"
    assert client.get("/v1/runs/nope", headers=viewer).status_code == 404


def test_an_unreachable_server_means_offline(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    sink = HttpSink("http://medcycle.invalid", transport=httpx.MockTransport(refuse))
    run = start_run("p", sink=sink, journal_dir=tmp_path, capture=False, capture_output=False, resources=False,
                    flush_interval=0.05)
    run.log_metric("loss", 1.0)
    assert run.flush(timeout=2) is False and run.offline
    assert run.end(timeout=2) is False
    assert (tmp_path / run.id / "journal.mcj").is_file()


def test_routes(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    paths = set(app.openapi()["paths"])
    assert {"/v1/runs", "/v1/runs/{run}", "/v1/runs/{run}/metrics", "/v1/runs/{run_id}/records",
            "/v1/runs/compare", "/v1/runs/objects/assemble", "/v1/runs/{run}/log"} <= paths
