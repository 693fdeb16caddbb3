"""A client's view of ``/v1/jobs`` (review): idempotency keys sent at once from several threads, an empty key,
webhooks of jobs the queue ends without a worker (expired while queued, cancelled), and webhook addresses that
only reach the worker's own cloud."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from medcycle.platform import Platform
from medcycle.serving.config import ServingSettings
from medcycle.serving.webhooks import WebhookSender
from medcycle.serving.worker import ServingWorker
from tests.serving.core_fixtures import CLS, SrvTemplate, srv_client
from tests.serving.helpers import serve_app, serve_handler


def _dicom(path: Path) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (path.name, path.read_bytes(), "application/dicom"))


class _Hook(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        _Hook.bodies.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0")))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return None


@pytest.fixture
def hook_url() -> Iterator[str]:
    _Hook.bodies = []
    with serve_handler(_Hook) as url:
        yield url


def test_jobs_the_queue_ends_without_a_worker_still_get_their_webhook(srv_platform: Platform,
                                                                      srv_template: SrvTemplate,
                                                                      hook_url: str) -> None:
    # Before: only jobs settled in a worker's batch queued their webhook; one that expired while queued (the
    # queue ends it when a worker would take it), was cancelled, or was dead-lettered never got its POST.
    cfg = ServingSettings(webhook_backoff_s=0.05)
    client = srv_client(srv_platform, cfg)
    files = [_dicom(srv_template.radiographs[0])]
    stale = client.post("/v1/jobs", data={"model": CLS, "webhook": hook_url, "deadline_s": "0.2"}, files=files)
    cancelled = client.post("/v1/jobs", data={"model": CLS, "webhook": hook_url}, files=files)
    assert stale.status_code == cancelled.status_code == 202, (stale.text, cancelled.text)
    assert client.delete(f"/v1/jobs/{cancelled.json()['id']}").json()["status"] == "cancelled"
    time.sleep(0.3)
    dead = client.post("/v1/jobs", data={"model": CLS, "webhook": hook_url}, files=files).json()
    for _ in range(10):  # a job whose every delivery fails (as a worker fails it) is dead-lettered
        taken = srv_platform.jobs.take(cfg.queue, "test-worker", max_jobs=1, wait_ms=0)
        if not taken:
            break
        srv_platform.jobs.fail(taken[0], "boom")
    assert client.get(f"/v1/jobs/{dead['id']}").json()["status"] == "failed"
    assert ServingWorker(srv_platform, settings=cfg, idle_wait_ms=50).run_once() == 0  # the queue ends it
    assert client.get(f"/v1/jobs/{stale.json()['id']}").json()["status"] == "expired"
    sender = WebhookSender(srv_platform, cfg)
    try:
        until = time.monotonic() + 20
        while len(_Hook.bodies) < 3 and time.monotonic() < until:
            sender.run_once(wait_ms=50)
        for _ in range(3):  # nothing is sent twice
            sender.sweep()
            sender.run_once(wait_ms=20)
    finally:
        sender.close()
    got = sorted((b["id"], b["status"]) for b in _Hook.bodies)
    assert got == sorted([(stale.json()["id"], "expired"), (cancelled.json()["id"], "cancelled"),
                          (dead["id"], "failed")]), got


def test_an_empty_idempotency_key_is_refused_not_ignored(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    # Before: "Idempotency-Key:" with no value (an unset variable in a script) was taken as no key, so every retry
    # queued another job; the docs say a key is 1-200 characters.
    client = srv_client(srv_platform)
    r = client.post("/v1/jobs", data={"model": CLS}, files=[_dicom(srv_template.radiographs[0])],
                    headers={"Idempotency-Key": ""})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "idempotency key" in error["message"] and error["hint"], error
    assert srv_platform.jobs.stats("inference").counts == {}


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/hook",
                                 "http://2852039166/hook", "http://0.0.0.0:8080/hook",
                                 "http://metadata.google.internal/computeMetadata/v1/"])
def test_a_webhook_to_a_metadata_or_link_local_address_is_refused(srv_platform: Platform,
                                                                  srv_template: SrvTemplate, url: str) -> None:
    client = srv_client(srv_platform)
    r = client.post("/v1/jobs", data={"model": CLS, "webhook": url}, files=[_dicom(srv_template.radiographs[0])])
    assert r.status_code == 400, r.text
    assert "link-local" in r.json()["error"]["message"] and r.json()["error"]["hint"]
    assert srv_platform.jobs.stats("inference").counts == {}
    ok = client.post("/v1/jobs", data={"model": CLS, "webhook": "http://127.0.0.1:9/hook"},
                     files=[_dicom(srv_template.radiographs[0])])
    assert ok.status_code == 202, ok.text  # loopback and private receivers stay allowed


def test_one_key_sent_at_once_from_several_threads_makes_one_job(srv_platform: Platform,
                                                                 srv_template: SrvTemplate) -> None:
    from medcycle.api.app import create_app
    from medcycle.api.routers import inference

    app = create_app(srv_platform, web=False)
    if not any(getattr(r, "path", "") == "/v1/jobs" for r in app.routes):
        app.include_router(inference.router)
    same, other = ([_dicom(p)] for p in srv_template.radiographs[:2])
    barrier = threading.Barrier(4)  # within the intake's waiting room (more are shed with 429 by design)
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=30, trust_env=False) as client:

        def post(files: list[Any]) -> httpx.Response:
            barrier.wait(timeout=10)
            return client.post("/v1/jobs", data={"model": CLS}, files=files, headers={"Idempotency-Key": "k-1"})

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(post, [same, same, other, other]))
    ids = {r.json()["id"] for r in answers if r.status_code == 202}
    codes = sorted(r.status_code for r in answers)
    assert len(ids) == 1 and srv_platform.jobs.stats("inference").counts == {"queued": 1}, codes
    assert codes == [202, 202, 422, 422], codes  # whichever body came first is the job; the other is refused
    refused = [r.json()["error"] for r in answers if r.status_code == 422]
    assert all(e["code"] == "idempotency_key_reused" and e["hint"] for e in refused), refused
