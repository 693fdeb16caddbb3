"""The Serving and Training pages in headless Chromium, on real data: a model served by a worker, tasks run by an
agent, and an idle worker and agent seen through the process registry. Any console error fails the test (the
``page`` fixture)."""

from __future__ import annotations

import re
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from medcycle.agents.agent import Agent
from medcycle.agents.executor import ExecOptions, settings_env
from medcycle.agents.spec import TaskSpec
from medcycle.agents.submit import submit, wait
from medcycle.jobs import processes
from medcycle.jobs.base import JobState
from medcycle.models import registry
from medcycle.platform import Platform
from medcycle.serving.worker import ServingWorker
from medcycle.testing.dicom import write_radiograph
from medcycle.testing.platform import make_settings
from tests.browser.helpers import log_in, shot
from tests.process_registry import wait_for_status, wait_until
from tests.serving.helpers import serve_app, serving_model

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRACKED = ("from medcycle.experiments.sdk import start_run\n"
           "with start_run('browser', name='browser-task', resources=False) as run:\n"
           "    run.log_metric('loss', 0.25, step=0)\n")


@dataclass(frozen=True, slots=True)
class Scene:
    url: str
    token: str
    platform: Platform
    served_job: str
    finished_task: str
    run_id: str
    running_task: str
    queued_task: str
    host: str


def _app(platform: Platform) -> object:
    """The app with the Serving and Training pages in it. Until ``mount_web`` includes them (and the navigation
    drops their placeholders) they are put first here, so they win over the placeholder pages."""
    from fastapi import FastAPI

    from medcycle.api.app import create_app
    from medcycle.web import agents, serving

    app = create_app(platform)
    mounted = {getattr(getattr(r, "endpoint", None), "__module__", "") for r in app.routes}
    extra = FastAPI()
    for router in (serving.router, agents.router):
        if router.routes[0].endpoint.__module__ not in mounted:  # type: ignore[attr-defined]
            extra.include_router(router)
    app.router.routes[0:0] = extra.router.routes
    return app


def _serve_one(platform: Platform, url: str, token: str, image: Path) -> str:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, trust_env=False) as c:
        r = c.post("/v1/jobs", data={"model": "xr@production"},
                   files=[("files", (image.name, image.read_bytes(), "application/dicom"))])
        assert r.status_code == 202, r.text
        job_id = str(r.json()["id"])
    worker = ServingWorker(platform, max_batch_images=1, max_delay_ms=0, idle_wait_ms=50, device="cpu",
                           name="browser-worker")
    try:
        worker.run(threading.Event(), max_jobs=1)
    finally:
        worker.close()
    assert platform.jobs.get(job_id).state is JobState.SUCCEEDED
    return job_id


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    platform = Platform(make_settings(tmp_path / "home"))
    token = platform.init().admin_token
    assert token is not None
    ref = serving_model(platform, "xr", tmp_path / "model")
    with platform.session() as session:
        registry.promote(session, ref, "production", force_reason="a browser test's untrained model")
    options = ExecOptions(workdir=tmp_path / "agent", name="gpu-box-1", stop_grace_s=2.0, gpus="0,1",
                          child_env=settings_env(platform.settings))
    agent = Agent(platform, "gpu", options, lease_seconds=3.0, wait_ms=200, say=lambda _line: None)
    thread = threading.Thread(target=agent.run, kwargs={"max_tasks": 2}, daemon=True)
    # an agent waiting on a queue nobody feeds, and a worker started after the only inference job: both idle
    idle_agent = Agent(platform, "idle-queue", ExecOptions(workdir=tmp_path / "idle-agent", name="cpu-box-2",
                                                           gpus="3"), wait_ms=200, say=lambda _line: None)
    idle_agent_thread = threading.Thread(target=idle_agent.run, daemon=True)
    idle_worker = ServingWorker(platform, max_delay_ms=0, idle_wait_ms=50, device="cpu", name="idle-worker")
    stop_worker = threading.Event()
    idle_worker_thread = threading.Thread(target=idle_worker.run, args=(stop_worker,), daemon=True)
    try:
        with serve_app(_app(platform)) as url:
            served = _serve_one(platform, url, token, write_radiograph(tmp_path / "dx.dcm"))
            idle_worker_thread.start()
            idle_agent_thread.start()
            wait_for_status(platform, processes.ProcessKind.SERVING_WORKER, "idle-worker", "idle")
            wait_for_status(platform, processes.ProcessKind.AGENT, "cpu-box-2", "idle")
            script = tmp_path / "work" / "tracked.py"
            script.parent.mkdir()
            script.write_text(TRACKED)
            finished = submit(platform, TaskSpec(command=[sys.executable, str(script)], name="tracked run",
                                                 project="browser"), queue="gpu").id
            thread.start()
            done = wait(platform, finished, timeout=120)
            assert done.state is JobState.SUCCEEDED and done.result is not None, done.error
            running = submit(platform, TaskSpec(command=[sys.executable, "-c", "import time; time.sleep(120)"],
                                                name="long sleep", project="browser"), queue="gpu").id
            queued = submit(platform, TaskSpec(command=["python", "-c", "print(1)"], name="waits for an agent",
                                               project="browser"), queue="cpu-pool").id
            wait_until(lambda: platform.jobs.get(running).state is JobState.RUNNING,
                       "the agent to take the second task", timeout=60, step=0.1)
            yield Scene(url, token, platform, served, finished, str(done.result["run_id"]), running, queued,
                        socket.gethostname())
    finally:
        agent.shutdown.set()
        idle_agent.shutdown.set()
        stop_worker.set()
        for started in (thread, idle_agent_thread, idle_worker_thread):
            if started.is_alive():
                started.join(timeout=30)
        idle_worker.close()
        platform.close()


def test_serving_page_shows_the_deployment_the_worker_and_the_job(page: Page, scene: Scene) -> None:
    log_in(page, scene.url, scene.token, "/ui/serving")
    assert page.locator("main h1").inner_text() == "Serving"
    assert page.locator("a.nav-link.active").get_attribute("href") == "/ui/serving"
    aliases = page.locator("[data-testid=aliases] tbody tr")
    assert aliases.count() == 1
    assert re.search(r"xr\s+production\s+xr@v1\s+force", aliases.first.inner_text())
    row = page.locator(f"tr[data-job='{scene.served_job}']")
    text = row.inner_text()
    assert "done" in text and "xr@production" in text and "xr@v1" in text and " ms" in text
    assert page.locator("[data-testid=queue] .count-cell.state-succeeded dd").inner_text() == "1"
    assert row.locator("[data-testid=result-link]").get_attribute("href") == f"/v1/jobs/{scene.served_job}"
    assert row.locator("[data-testid=job-worker]").inner_text() == "on browser-worker"
    workers = page.locator("[data-testid=registered-workers]")
    idle = workers.locator("tr[data-worker='idle-worker']").inner_text()
    assert re.search(r"idle-worker\s+idle\s+" + re.escape(scene.host), idle) and "cpu" in idle
    gone = workers.locator("tr[data-worker='browser-worker']").inner_text()  # its loop ended after one job
    assert "stopped" in gone and "xr@v1" in gone and scene.host in gone
    assert workers.locator("tbody tr").first.get_attribute("data-worker") == "idle-worker"  # live ones first
    shot(page, "serving")

    result = page.request.get(f"{scene.url}/v1/jobs/{scene.served_job}")  # the session cookie reads the API too
    assert result.ok and result.json()["result"]["model"]["ref"] == "xr@v1"
    row.locator("[data-testid=prediction-link]").click()
    page.wait_for_url(re.compile(r"/ui/monitoring/predictions/"))
    assert "xr@v1" in page.locator("main").inner_text()
    shot(page, "serving-prediction")


def test_training_page_shows_agents_and_tasks_and_cancels(page: Page, scene: Scene) -> None:
    log_in(page, scene.url, scene.token, "/ui/training")
    assert page.locator("main h1").inner_text() == "Training queue and agents"
    agent = page.locator("tr[data-agent='gpu-box-1']")
    assert "busy" in agent.inner_text() and scene.running_task[:12] in agent.inner_text()
    assert "long sleep" in agent.inner_text() and "0,1" in agent.inner_text() and scene.host in agent.inner_text()
    idle = page.locator("tr[data-agent='cpu-box-2']")
    assert re.search(r"cpu-box-2\s+idle\s+" + re.escape(scene.host), idle.inner_text())
    assert idle.locator("td").nth(3).inner_text() == "3"  # its GPUs
    finished = page.locator(f"[data-testid=tasks-finished] tr[data-task='{scene.finished_task}']")
    assert "succeeded" in finished.inner_text() and "exit 0" in finished.inner_text()
    assert finished.locator("[data-testid=run-link]").get_attribute("href") == f"/ui/runs/{scene.run_id}"
    queued = page.locator(f"[data-testid=tasks-queued] tr[data-task='{scene.queued_task}']")
    assert "cpu-pool" in queued.inner_text()
    shot(page, "training")

    queued.locator("[data-testid=cancel]").click()
    page.wait_for_url(f"{scene.url}/ui/training?done=cancel")
    assert "Cancel requested" in page.locator("[data-testid=done]").inner_text()
    assert scene.platform.jobs.get(scene.queued_task).state is JobState.CANCELLED
    assert "cancelled" in page.locator(f"tr[data-task='{scene.queued_task}']").inner_text()

    page.locator(f"tr[data-task='{scene.running_task}'] [data-testid=cancel]").click()
    page.wait_for_url(f"{scene.url}/ui/training?done=cancel")
    assert scene.platform.jobs.get(scene.running_task).cancel_requested
    wait_until(lambda: scene.platform.jobs.get(scene.running_task).state is JobState.CANCELLED,
               "the agent to stop the cancelled task", step=0.2)
    page.reload()
    stopped = page.locator(f"[data-testid=tasks-finished] tr[data-task='{scene.running_task}']")
    assert "cancelled" in stopped.inner_text()
    shot(page, "training-cancelled")

    page.locator(f"tr[data-task='{scene.finished_task}'] [data-testid=run-link]").click()
    page.wait_for_url(f"{scene.url}/ui/runs/{scene.run_id}")
    assert "browser-task" in page.locator("main").inner_text()


def test_a_cross_site_cancel_is_refused(scene: Scene) -> None:
    with httpx.Client(base_url=scene.url, headers={"Authorization": f"Bearer {scene.token}"}, trust_env=False) as c:
        forged = c.post(f"/ui/training/tasks/{scene.queued_task}/cancel", headers={"Sec-Fetch-Site": "cross-site"})
        assert forged.status_code == 403
        assert scene.platform.jobs.get(scene.queued_task).state is JobState.QUEUED
        missing = c.post("/ui/training/tasks/nope/cancel")
        assert missing.status_code == 404
        not_a_task = c.post(f"/ui/training/tasks/{scene.served_job}/cancel")
        assert not_a_task.status_code == 404 and "not a training task" in not_a_task.text
