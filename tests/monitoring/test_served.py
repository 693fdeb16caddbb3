"""Monitoring with a served model: a segmentation network trained on the demo radiographs, its drift reference
captured from the validation and test splits (``monitor reference capture``), then the test split's studies
submitted through the real serving path — ``POST /v1/jobs`` (intake: de-identify, store, enqueue) → the job
queue → the serving worker → the predictor — which logs each job (stored input, predicted mask, header,
statistics, penultimate features). A CT slice the contract's header rules refuse and two undecodable studies
are sent too. The API, the pages and — in headless Chromium — the dashboard (requests, OOD rate, drift per
signal including embeddings, the gallery with mask contours), a prediction and an alert's links are checked
on that data."""

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


def _broken(dicom: Path) -> bytes:
    """A DICOM file whose (RLE-compressed) pixel data is garbage: intake checks only the header of compressed
    pixel data and stores it; the worker cannot decode it."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(dicom)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _serve(platform: Platform, token: str, ref: str, demo: DemoData) -> list[str]:
    """Submit two broken studies, one CT slice and the val and test splits' radiographs (what the reference saw)
    through ``POST /v1/jobs``, let the serving worker run them all; returns the job ids in submission order."""
    from medcycle.serving.worker import ServingWorker

    xr = [demo.root / st.image[0] for st in demo.studies if st.kind == "xr" and st.split in ("val", "test")]
    ct = next(st for st in demo.studies if st.kind == "ct")
    # the broken studies first: the dashboard's gallery shows the newest 24, which should all draw
    bodies = [(f"broken-{j}.dcm", _broken(xr[j])) for j in range(2)]
    bodies.append(("ct.dcm", (demo.root / ct.image[len(ct.image) // 2]).read_bytes()))
    bodies += [(p.name, p.read_bytes()) for p in xr]
    client = TestClient(monitoring_app(platform))
    ids = []
    for name, data in bodies:
        answer = client.post("/v1/jobs", files=[("files", (name, data, "application/dicom"))], data={"model": ref},
                             headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    worker = ServingWorker(platform, max_batch_images=8, max_delay_ms=20, idle_wait_ms=50)
    try:
        worker.run(threading.Event(), max_jobs=len(ids))
    finally:
        worker.close()
    assert worker.stats.computed + worker.stats.refused + worker.stats.failed == len(ids), worker.stats
    return ids


@pytest.fixture(scope="module")
def served(demo: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from sqlalchemy import select

    from medcycle.models import registry
    from medcycle.monitoring.tables import PredictionRow
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
        ref = registry.register(s, platform.objects, "lesions", run_id=result.run_id,
                                contract={"header_rules": {"modality": ["DX", "CR"]}}).ref
    captured = ref_mod.capture(platform, ref, dataset, split="val,test", policy=ref_mod.Policy(window=16))
    jobs = _serve(platform, token, ref, demo)
    with platform.session(write=False) as s:
        rows = {r.job_id: r for r in s.scalars(select(PredictionRow).where(PredictionRow.job_id.in_(jobs)))}
    assert set(rows) == set(jobs), "every served job is in the prediction log"
    ids = [rows[j].id for j in jobs]
    with_mask = next((rows[j].id for j in reversed(jobs) if (rows[j].mask_area or 0) > 0), None)
    assert with_mask is not None, "the trained model found no lesion at all"
    drift.evaluate(platform, now=utcnow() + drift.SETTLE + timedelta(seconds=5))  # test the served windows now
    with platform.session() as s:
        alert = alerts.raise_alert(s, key=f"drift:{ref}:intensity", group=f"model:{ref}", kind="drift",
                                   level="page", title=f"Drift in intensity of {ref}", model_version=ref,
                                   links={"dashboard": links.dashboard(ref), "prediction": links.prediction(with_mask),
                                          "input": links.prediction_image(with_mask), "model": links.model(ref)})
        alert_id = alert.id
    try:
        yield Served(platform, token, ref, dataset, captured, ids, with_mask, ids[1], alert_id)
    finally:
        platform.close()


def test_reference_captured_from_the_validation_split(served: Served) -> None:
    c = served.captured
    assert c.model_version == served.model and c.split == "val,test" and c.cases >= 32
    assert {"metadata", "intensity", "embedding", "positive_rate"} <= set(c.summary["signals"])
    with served.platform.session(write=False) as s:
        [row] = ref_mod.references(s)
        reference = ref_mod.load(served.platform.objects, row)
        tested = drift.windows(s, model_version=served.model)
    assert reference.positive is None and reference.policy.window == 16
    # the served predictions of the reference's own studies look like the reference: no signal drifts on them
    assert len(tested) >= 2 and all(w.size == 16 for w in tested)
    assert all(w.drifted == [] and w.paged == [] for w in tested), [w.signals for w in tested]
    assert all(w.signals["metadata"]["statistic"] is not None for w in tested)  # log and reference read headers alike


def test_served_predictions_feed_the_embedding_signal(served: Served) -> None:
    """The worker logs each computed job's penultimate features; the drift windows test them against the
    reference's PCA with the MMD permutation test."""
    from sqlalchemy import select

    from medcycle.monitoring.tables import PredictionRow

    with served.platform.session(write=False) as s:
        rows = list(s.scalars(select(PredictionRow).where(PredictionRow.model_version == served.model)))
        [ref_row] = ref_mod.references(s)
        reference = ref_mod.load(served.platform.objects, ref_row)
        tested = drift.windows(s, model_version=served.model)
    by_outcome: dict[str, list[PredictionRow]] = {}
    for r in rows:
        by_outcome.setdefault(r.outcome, []).append(r)
    assert len(by_outcome["refused"]) == 1 and len(by_outcome["error"]) == 2
    ok = by_outcome["ok"]
    dims = {len(plog.decode_embedding(r.embedding)) for r in ok if r.embedding is not None}  # type: ignore[arg-type]
    assert all(r.embedding is not None for r in ok) and len(dims) == 1
    signal = reference.signals["embedding"]
    assert dims == {len(signal.mean)}  # type: ignore[attr-defined]
    assert all(r.embedding is None for r in by_outcome["refused"] + by_outcome["error"])
    for w in tested:
        emb = w.signals["embedding"]
        assert emb["statistic"] is not None and emb["n"] == w.size, emb
    # the same features as the reference's capture (same layer, pooling, preprocessing): a served study the
    # reference also saw lands on one of its points
    pool = signal.project(np.stack([plog.decode_embedding(r.embedding) for r in ok]))  # type: ignore[attr-defined,misc]
    ref_points = signal.points  # type: ignore[attr-defined]
    nearest = np.sqrt(((pool[:, None, :] - ref_points[None, :, :]) ** 2).sum(-1)).min(axis=1)
    assert int((nearest < 1e-3).sum()) >= 8, nearest


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
    assert detail.status_code == 200 and "cannot be decoded" in detail.text
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
    # requests: every job submitted through the API, as the worker logged it
    assert tab.locator("[data-testid=stat-total]").inner_text() == str(len(served.predictions))
    refused = tab.locator(".stat", has=tab.locator(".stat-label", has_text="Refused (OOD)")).locator(".stat-value")
    assert refused.inner_text() == "1"
    # the OOD rate chart draws the refused CT slice: some bucket's share is above zero
    assert tab.evaluate("() => document.querySelector('[data-mchart=ood]').data"
                        ".some(t => (t.y || []).some(v => v > 0))")
    # drift per signal, embeddings included, from the served windows
    rows = tab.locator("[data-testid=drift-table] tbody tr")
    ratios = {rows.nth(i).locator("td").nth(0).inner_text(): rows.nth(i).locator("td").nth(1).inner_text()
              for i in range(rows.count())}
    assert {"metadata", "intensity", "embedding"} <= set(ratios), ratios
    assert ratios["embedding"] != "—" and abs(float(ratios["embedding"])) < 1, ratios  # tested, not drifting
    assert tab.evaluate("() => document.querySelector('[data-mchart=drift]').data.map(t => t.name)"
                        ".some(n => String(n).includes('embedding'))")
    # the gallery: served inputs with the predicted masks' contours drawn in red
    gallery = tab.locator("[data-testid=gallery] img")
    assert gallery.count() >= 10
    gallery.last.scroll_into_view_if_needed()  # the tiles load lazily
    tab.wait_for_function("() => [...document.querySelectorAll('[data-testid=gallery] img')]"
                          ".every(i => i.complete && i.naturalWidth > 0)")
    contoured = tab.evaluate("""() => [...document.querySelectorAll('[data-testid=gallery] img')].filter(img => {
        const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data;
        for (let i = 0; i < d.length; i += 4) if (d[i] === 255 && d[i + 1] === 64 && d[i + 2] === 64) return true;
        return false; }).length""")
    assert contoured >= 1, "no gallery tile shows a mask contour"
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
    assert console_errors == []


def _shot(tab: Page, name: str) -> None:
    folder = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(folder / f"{name}.png"), full_page=True)

