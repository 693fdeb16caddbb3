"""Monitoring with a real model: a segmentation network trained on the demo radiographs, its drift reference
captured from the validation split (``monitor reference capture``), then its predictions on the test split
logged as serving logs them (stored input, predicted mask, header, statistics, penultimate features). The
API, the pages and — in headless Chromium — the dashboard, a prediction with its mask contour, and an
alert's links are checked on that data."""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medcycle.monitoring import alerts, drift, links
from medcycle.monitoring import log as plog
from medcycle.monitoring import reference as ref_mod
from medcycle.monitoring.describe import image_statistics, mask_summary
from medcycle.monitoring.log import PredictionRecord
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.store.base import utcnow
from medcycle.training.demo_data import DemoData, load
from tests.monitoring.conftest import pin_deid_key
from tests.training.conftest import quick

if TYPE_CHECKING:
    from playwright.sync_api import Page

SECRET = "m" * 40
pytestmark = pytest.mark.slow  # trains a small segmentation network once for the module (about 30 s)


@dataclass
class Served:
    platform: Platform
    token: str
    model: str
    dataset: str
    captured: ref_mod.Captured
    predictions: list[str]
    with_mask: str
    failed: str
    alert: str


def monitoring_app(platform: Platform) -> FastAPI:
    """The app with the monitoring routers in front (the lead wires them into create_app and drops the nav
    placeholder; until then this test puts them first so they win over the placeholder page)."""
    from medcycle.api.app import create_app
    from medcycle.api.routers import monitoring as api_monitoring
    from medcycle.web import monitoring as web_monitoring

    app = create_app(platform)
    extra = FastAPI()
    extra.include_router(api_monitoring.router)
    extra.include_router(web_monitoring.router)
    app.router.routes[0:0] = extra.router.routes
    return app


def _serve(platform: Platform, ref: str, folder: Path, n_failed: int = 2) -> tuple[list[str], str | None]:
    """Predict the test split with the registered model and log each job as the serving worker does."""
    import pydicom
    import torch
    from PIL import Image

    from medcycle.evaluation.predict import load as load_model
    from medcycle.evaluation.predict import predict
    from medcycle.monitoring.embeddings import FeatureTap
    from medcycle.training.data import index, read_volume

    loaded = load_model(platform, ref)
    chosen = index(folder, loaded.config).split("test")
    started = time.perf_counter()
    with torch.no_grad(), FeatureTap(loaded.model) as tap:
        preds = predict(loaded, folder, "test")
    per_case_ms = (time.perf_counter() - started) * 1000 / len(preds)
    masks = np.concatenate(tap.outputs()).argmax(axis=1) > 0
    feats = tap.features()
    ids, with_mask = [], None
    now = utcnow() - timedelta(minutes=30)
    with platform.session() as s:
        for i, (pred, sample) in enumerate(zip(preds, chosen, strict=True)):
            path = Path(sample.image[0])
            digest = platform.objects.put(path.read_bytes()).digest
            png = io.BytesIO()
            Image.fromarray(masks[i].astype(np.uint8) * 255).save(png, "PNG")
            mask_digest = platform.objects.put(png.getvalue()).digest
            area, parts = mask_summary(masks[i])
            rid = plog.record(s, PredictionRecord(
                model_version=ref, job_id=f"job-{i}", source=pred.factors.get("source"), at=now + timedelta(seconds=i),
                header=pydicom.dcmread(path), input_digests=[digest], input_stats=image_statistics(read_volume(
                    sample.image)), embedding=feats[i], mask_area=area, mask_components=parts,
                mask_digest=mask_digest, latency_ms=per_case_ms, ood_ok=True, ood_score=1.0))
            ids.append(rid)
            if area > 0 and with_mask is None:
                with_mask = rid
        for j in range(n_failed):
            ids.append(plog.record(s, PredictionRecord(
                model_version=ref, outcome="error", at=now + timedelta(seconds=100 + j), source="clinic-a",
                error_class="DecodeError", error_message="cannot decode the pixel data")))
    return ids, with_mask


@pytest.fixture(scope="module")
def served(demo: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from medcycle.models import registry
    from medcycle.training.trainers import train_version

    home = tmp_path_factory.mktemp("served") / "home"
    platform = Platform(load_settings(home=home, environment="test", secret_key=SECRET))
    token = platform.init().admin_token
    assert token is not None
    pin_deid_key(platform)
    dataset = load(platform, demo.root, kinds=("xr",))["demo-xr"]
    config = quick("segmentation-2d", input={"size": [32, 32]}, training={"epochs": 3})
    result = train_version(platform, config, dataset=dataset, run_options={
        "journal_dir": home / "journals", "resources": False, "capture_output": False, "capture": False,
        "flush_interval": 0.05})
    with platform.session() as s:
        ref = registry.register(s, platform.objects, "lesions", run_id=result.run_id).ref
    captured = ref_mod.capture(platform, ref, dataset, split="val,test", policy=ref_mod.Policy(window=16))
    with platform.session(write=False) as s:
        row = ref_mod.latest(s, ref)
        assert row is not None and row.dataset_digest is not None
        folder = platform.settings.home / "pulls" / "monitoring" / row.dataset_digest[:16]
    ids, with_mask = _serve(platform, ref, folder)
    assert with_mask is not None, "the trained model found no lesion at all"
    with platform.session() as s:
        alert = alerts.raise_alert(s, key=f"drift:{ref}:intensity", group=f"model:{ref}", kind="drift",
                                   level="page", title=f"Drift in intensity of {ref}", model_version=ref,
                                   links={"dashboard": links.dashboard(ref), "prediction": links.prediction(with_mask),
                                          "input": links.prediction_image(with_mask), "model": links.model(ref)})
        alert_id = alert.id
    try:
        yield Served(platform, token, ref, dataset, captured, ids, with_mask, ids[-1], alert_id)
    finally:
        platform.close()


def test_reference_captured_from_the_validation_split(served: Served) -> None:
    c = served.captured
    assert c.model_version == served.model and c.split == "val,test" and c.cases >= 32
    assert {"metadata", "intensity", "embedding", "positive_rate"} <= set(c.summary["signals"])
    with served.platform.session(write=False) as s:
        [row] = ref_mod.references(s)
        reference = ref_mod.load(served.platform.objects, row)
    assert reference.positive is None and reference.policy.window == 16
    # the logged predictions of the same model look like the reference: no signal drifts on them
    [result] = drift.evaluate(served.platform, now=utcnow())
    assert result.windows >= 1 and result.paged == []
    assert "metadata" not in result.drifted  # reference and log read the same header fields the same way


def test_api_and_pages_on_the_served_model(served: Served) -> None:
    client = TestClient(monitoring_app(served.platform))
    auth = {"Authorization": f"Bearer {served.token}"}
    timeline = client.get("/v1/monitoring/timeline", params={"model_version": served.model}, headers=auth).json()
    assert timeline["total"] == len(served.predictions) and timeline["summary"]["error"] == 2
    one = client.get(f"/v1/monitoring/predictions/{served.with_mask}", headers=auth).json()
    assert one["mask_area"] > 0 and one["header"]["modality"] == "DX" and "Demo" not in str(one)
    listed = client.get("/v1/monitoring/predictions", params={"outcome": "error"}, headers=auth).json()
    assert listed[0]["id"] == served.failed
    assert client.get("/v1/monitoring/predictions", headers={}).status_code == 401
    text = client.get("/v1/monitoring/metrics", headers=auth).text
    assert f'medcycle_predictions_total{{model_version="{served.model}"' in text
    made = client.post("/v1/monitoring/reports", json={"since": "2000-01-01T00:00:00+00:00"}, headers=auth)
    assert made.status_code == 201 and made.json()["headline"].startswith(f"{len(served.predictions)} jobs")
    html = client.get(f"/v1/monitoring/reports/{made.json()['id']}/html", headers=auth)
    assert html.status_code == 200 and "Monitoring report" in html.text
    refs = client.get("/v1/monitoring/references", headers=auth).json()
    assert refs[0]["model_version"] == served.model

    client.cookies.clear()
    login = client.post("/login", data={"token": served.token, "next": "/ui/monitoring"}, follow_redirects=False)
    assert login.status_code in (302, 303)
    dash = client.get("/ui/monitoring", params={"model_version": served.model})
    assert dash.status_code == 200
    assert f"/ui/monitoring/predictions/{served.with_mask}/overlay.png" in dash.text
    assert "Drift per signal" in dash.text and "Open alerts" in dash.text
    png = client.get(f"/ui/monitoring/predictions/{served.with_mask}/overlay.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    from PIL import Image

    drawn = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
    red = (drawn[..., 0] == 255) & (drawn[..., 1] == 64) & (drawn[..., 2] == 64)
    assert red.any(), "the mask contour is drawn in red"
    plain = np.asarray(Image.open(io.BytesIO(client.get(
        f"/ui/monitoring/predictions/{served.with_mask}/overlay.png?mask=0").content)).convert("RGB"))
    assert not ((plain[..., 0] == 255) & (plain[..., 1] == 64) & (plain[..., 2] == 64)).any()
    with served.platform.session(write=False) as s:
        from medcycle.auth import audit

        assert any(e.action == "image.view" and e.target_id == served.with_mask for e in audit.query(s, limit=50))
    detail = client.get(f"/ui/monitoring/predictions/{served.failed}")
    assert detail.status_code == 200 and "DecodeError" in detail.text
    alert_page = client.get(f"/ui/monitoring/alerts/{served.alert}")
    for target in ("dashboard", "prediction", "input", "model", "run"):
        assert f'data-link="{target}"' in alert_page.text, target
    assert client.get("/ui/monitoring/alerts").status_code == 200
    assert client.get("/ui/monitoring/reports").status_code == 200
    assert client.get("/ui/monitoring", params={"period": "1y"}).status_code == 400


@pytest.fixture(scope="module")
def live(served: Served) -> Iterator[str]:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(monitoring_app(served.platform), log_level="warning", lifespan="off",
                                           ws="none", http="h11", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/livez", timeout=2, trust_env=False).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.mark.browser
def test_dashboard_prediction_and_alert_in_the_browser(served: Served, live: str, page: Page,
                                                       console_errors: list[str]) -> None:
    tab = page
    tab.goto(f"{live}/ui/monitoring?model_version={served.model}")
    tab.wait_for_url(re.compile(r"/login\?next="))
    tab.fill("#token", served.token)
    tab.click("button[type=submit]")
    tab.wait_for_url(re.compile(r"/ui/monitoring"))
    assert tab.locator("main h1").inner_text() == "Monitoring"
    for chart in ("requests", "errors", "latency", "ood", "drift"):
        tab.wait_for_selector(f"[data-mchart={chart}] .main-svg")
    assert tab.locator("[data-testid=stat-total]").inner_text() == str(len(served.predictions))
    gallery = tab.locator("[data-testid=gallery] img")
    assert gallery.count() >= 10
    tab.wait_for_function("() => [...document.querySelectorAll('[data-testid=gallery] img')]"
                          ".slice(0, 4).every(i => i.complete && i.naturalWidth > 0)")
    _shot(tab, "monitoring-dashboard")
    tab.click(f"a[href='/ui/monitoring/predictions/{served.with_mask}']")
    tab.wait_for_selector("[data-testid=overlay]")
    tab.wait_for_function("() => document.querySelector('[data-testid=overlay]').naturalWidth >= 256")
    _shot(tab, "monitoring-prediction")
    tab.goto(f"{live}/ui/monitoring/alerts/{served.alert}")
    for target in ("dashboard", "prediction", "input", "model", "run"):
        assert tab.locator(f"[data-link={target}]").count() == 1
    tab.click("[data-link=dashboard]")
    tab.wait_for_url(re.compile(r"/ui/monitoring\?model_version="))
    tab.go_back()
    tab.click("[data-testid=ack]")
    tab.wait_for_url(re.compile(r"done=ack"))
    assert tab.locator("[data-testid=alert-state]").inner_text() == "acknowledged"
    tab.fill("input[name=reason]", "expected: scanner swap at clinic-a")
    tab.click("[data-testid=silence]")
    tab.wait_for_url(re.compile(r"done=silence"))
    assert "silenced until" in tab.locator(".lead").inner_text()


def _shot(tab: Page, name: str) -> None:
    folder = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(folder / f"{name}.png"), full_page=True)

