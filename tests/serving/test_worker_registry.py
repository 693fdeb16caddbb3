"""A real serving worker in the process registry: idle while it waits, busy with the job it computes (and the
model version it loaded), stopped when its loop ends; the finished job's result names the worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from medcycle.jobs import processes
from medcycle.jobs.base import Job, JobState
from medcycle.platform import Platform
from medcycle.serving import intake
from medcycle.serving.worker import ServingWorker
from medcycle.testing.dicom import write_radiograph
from tests.serving.helpers import serving_model


def _row(platform: Platform, name: str) -> processes.ProcessView | None:
    with platform.session(write=False) as s:
        found = [v for v in processes.list_processes(s, processes.ProcessKind.SERVING_WORKER) if v.id == name]
    return found[0] if found else None


def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_serving_worker_is_idle_then_busy_then_stopped(platform: Platform, tmp_path: Path) -> None:
    ref = serving_model(platform, "xr", tmp_path / "model")
    computing, release = threading.Event(), threading.Event()

    def hold(jobs: Sequence[Job]) -> None:  # after the results are stored, before the jobs complete
        computing.set()
        assert release.wait(30)

    worker = ServingWorker(platform, max_batch_images=1, max_delay_ms=0, idle_wait_ms=50, device="cpu",
                           name="registry-worker", after_store=hold, beat_seconds=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        _until(lambda: (r := _row(platform, "registry-worker")) is not None and r.status == "idle", "idle")
        idle = _row(platform, "registry-worker")
        assert idle is not None and idle.current_job is None and idle.queue == worker.cfg.queue
        assert idle.details["device"] == "cpu" and idle.details["models"] == [] and idle.details["medcycle"]

        job_id = intake.submit(platform, [write_radiograph(tmp_path / "dx.dcm")], model=ref).id
        assert computing.wait(60), "the worker did not take the job"
        _until(lambda: (r := _row(platform, "registry-worker")) is not None and r.status == "busy", "busy")
        busy = _row(platform, "registry-worker")
        assert busy is not None and busy.current_job == job_id and busy.details["jobs"] == 1
        assert busy.details["models"] == [ref] and busy.details["device"] == "cpu"
        release.set()

        _until(lambda: platform.jobs.get(job_id).state is JobState.SUCCEEDED, "the job to finish")
        _until(lambda: (r := _row(platform, "registry-worker")) is not None and r.status == "idle", "idle again")
        done = platform.jobs.get(job_id)
        assert done.result is not None and done.result["worker"] == "registry-worker"
    finally:
        release.set()
        stop.set()
        thread.join(30)
        worker.close()
    assert not thread.is_alive()
    stopped = _row(platform, "registry-worker")
    assert stopped is not None and (stopped.status, stopped.current_job) == ("stopped", None)
    with platform.session(write=False) as s:
        assert processes.list_live(s) == []
