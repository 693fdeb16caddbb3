"""``deploy`` with real processes on loopback: supervisor, API and workers; rollback, canary, shadow, stop."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from medcycle.errors import NotFound, UsageError
from medcycle.jobs.base import Job, JobState
from medcycle.models import registry
from medcycle.platform import Platform
from medcycle.serving import deploy as deployment
from medcycle.serving.intake import submit
from medcycle.serving.routing import bucket, follows_deployment, is_canary
from medcycle.testing.dicom import write_radiograph
from medcycle.testing.platform import make_settings
from medcycle.testing.services import free_port
from tests.serving.helpers import serving_model, wait_for

HEAVY = {"input": {"size": [384, 384], "intensity": {"kind": "percentile", "lower": 1, "upper": 99}},
         "model": {"name": "densenet-small", "width": 48, "depth": 4}}


@dataclass
class Env:
    platform: Platform
    tmp: Path
    port: int
    images: list[Path]



def finished(platform: Platform, job: Job, timeout: float = 60) -> Job:
    assert wait_for(lambda: platform.jobs.get(job.id).state.finished, timeout), f"job {job.id} did not finish"
    return platform.jobs.get(job.id)


def served_by(job: Job) -> str:
    assert job.state == JobState.SUCCEEDED, job.error
    return str((job.result or {})["model"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A home with xr@v1 (small, fast) and xr@v2 (heavy: ~0.4 s an image on one thread); production → v2."""
    tmp = tmp_path_factory.mktemp("deploy")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # one core per worker process on the 2-core test machines
        platform = Platform(make_settings(tmp / "home"))
        platform.init()
        serving_model(platform, "xr", tmp / "v1", seed=1)
        serving_model(platform, "xr", tmp / "v2", seed=2, overrides=HEAVY)
        with platform.session() as session:
            registry.promote(session, "xr@v1", "production", force_reason="test")
            registry.promote(session, "xr@v2", "production", force_reason="test")
        images = [write_radiograph(tmp / f"dx{i}.dcm", seed=i) for i in range(16)]  # one full batch
        try:
            yield Env(platform, tmp, free_port(), images)
        finally:
            deployment.stop(platform.settings)
            platform.close()


def test_deploy_rollback_canary_shadow_and_stop_with_real_processes(env: Env) -> None:
    platform, settings = env.platform, env.platform.settings
    result = deployment.deploy(platform, "xr@production", workers=2, port=env.port, wait_s=240)
    assert result.started_supervisor and result.versions == {"xr@production": "xr@v2"}
    status = result.status
    assert status["generation"] == 1 and status["state"] == "ready"
    workers = [p for p in status["processes"] if p["role"] == "worker"]
    assert len(workers) == 2 and {p["state"] for p in workers} == {"ready"}  # loaded and warmed first
    for worker in workers:
        warmed = json.loads((deployment.deploy_dir(settings) / "workers" / f"{worker['name']}.json").read_text())
        assert warmed["versions"] == {"xr@production": "xr@v2", "xr@v1": "xr@v1"}  # v1: the rollback target
        if sys.platform.startswith("linux"):  # workers yield the CPU to the API (serving worker_priority: low)
            assert os.getpriority(os.PRIO_PROCESS, worker["pid"]) >= 10
    assert wait_for(lambda: httpx.get(f"http://127.0.0.1:{env.port}/livez", timeout=1).status_code == 200
                    if _listening(env.port) else False, 60, 0.2)

    # -- rollback: a job in flight finishes on v2, the next job runs on v1 within a second --------------------
    in_flight = submit(platform, env.images, model="xr@production")
    assert wait_for(lambda: platform.jobs.get(in_flight.id).state == JobState.RUNNING, 30)
    # taken is not yet computing: the batch is decoded and its version resolved first (well under a second for
    # 16 small radiographs); v2 then needs seconds for them, so 1 s after the take the job is computing on v2
    # (asserted below: it is still running)
    time.sleep(1.0)
    started = time.monotonic()
    with platform.session() as session:
        move = registry.rollback(session, "xr", "production")
    flipped = time.monotonic()
    assert move.to_ref == "xr@v1" and flipped - started < 1.0  # the flip itself: one transaction
    assert platform.jobs.get(in_flight.id).state == JobState.RUNNING  # still computing on v2
    nxt = submit(platform, env.images[:1], model="xr@production")  # the client's upload: checked, stored, queued
    done = finished(platform, nxt, 10)
    assert done.created_at is not None and done.finished_at is not None
    took = (done.finished_at - done.created_at).total_seconds()  # queued → served (the service's share)
    # within a second on an idle machine (one small image on an idle worker); 2 s leaves room for a loaded one
    # (1.02 s was seen at load 3.3 on two cores) while a worker still on the old version would fail regardless
    assert served_by(done) == "xr@v1" and took < 2.0, f"served by {served_by(done)} {took:.2f} s after queueing"
    assert time.monotonic() - flipped < 5.0
    assert served_by(finished(platform, in_flight)) == "xr@v2"

    # -- canary and shadow: one new generation, warmed before it takes over --------------------------------
    result = deployment.deploy(platform, "xr@production", workers=1, canary_percent=50, candidate="xr@v2",
                               shadow="xr@v2", wait_s=240)
    assert result.status["generation"] == 2 and result.spec.port == env.port  # unchanged options are kept
    assert {p["state"] for p in result.status["processes"] if p["generation"] == 2 and p["role"] == "worker"} == {
        "ready"}
    assert wait_for(lambda: {p["generation"] for p in deployment.read_status(settings)["processes"]
                             if p["role"] == "worker"} == {2}, 60, 0.1)  # the old generation stopped
    jobs = [submit(platform, env.images[i % 8:i % 8 + 1], model="xr@production", idempotency_key=f"c{i}")
            for i in range(10)]
    served = {job.id: served_by(finished(platform, job)) for job in jobs}
    expected = {job.id: "xr@v2" if is_canary(job.id, 50) else "xr@v1" for job in jobs}
    assert served == expected  # a stable share: the job id decides
    pinned = finished(platform, submit(platform, env.images[:1], model="xr@v1", idempotency_key="pinned"))
    assert served_by(pinned) == "xr@v1"  # a pinned version is never routed

    primary = [job for job in jobs if served[job.id] == "xr@v1"]  # the shadow ran on copies of these, only logging
    log_file = deployment.deploy_dir(settings) / "supervisor.log"
    assert wait_for(lambda: all(f'"job": "{job.id}"' in log_file.read_text() for job in primary), 60, 0.2)
    line = next(x for x in log_file.read_text().splitlines() if f'"job": "{primary[0].id}"' in x)
    assert '"shadow": "xr@v2"' in line and '"served_by": "xr@v1"' in line
    assert not any(f'"job": "{job.id}"' in log_file.read_text() for job in jobs if job not in primary)
    from medcycle.serving import results

    everything = [in_flight, nxt, pinned, *jobs]
    keys = {str((platform.jobs.get(j.id).result or {})["result"]) for j in everything}
    with platform.session(write=False) as session:  # every stored result is a served job's: the shadow wrote none
        assert results.count(session) == len(keys)

    # -- status from the command line, then stop -----------------------------------------------------------
    status_out = _cli(env, "deploy", "--status", "--json")
    assert json.loads(status_out)["generation"] == 2
    pids = [p["pid"] for p in deployment.read_status(settings)["processes"]]
    assert deployment.stop(settings)
    assert not any(_alive(pid) for pid in pids) and not _listening(env.port)
    assert deployment.read_status(settings)["supervisor_alive"] is False


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def _cli(env: Env, *args: str) -> str:
    import typer

    from medcycle.cli.serving import register

    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    result = CliRunner().invoke(app, list(args), obj=None, env={"MEDCYCLE_HOME": str(env.platform.settings.home),
                                                               "MEDCYCLE_ENVIRONMENT": "test",
                                                               "MEDCYCLE_SECRET_KEY": "s" * 40})
    assert result.exit_code == 0, result.output
    return result.output


def test_specs_are_checked_before_anything_runs(sqlite_platform: Platform) -> None:
    with pytest.raises(UsageError, match="candidate"):
        deployment.DeploymentSpec(model="xr@production", canary_percent=10)
    with pytest.raises(UsageError, match="canary share"):
        deployment.DeploymentSpec(model="xr@production", candidate="xr@v2")
    with pytest.raises(UsageError, match="version of the deployed model"):
        deployment.DeploymentSpec(model="xr@production", canary_percent=5, candidate="other@v1")
    with pytest.raises(UsageError, match="workers"):
        deployment.DeploymentSpec(model="xr", workers=0)
    with pytest.raises(NotFound) as missing:
        deployment.deploy(sqlite_platform, "nosuch@production", wait_s=None)
    assert missing.value.hint
    assert deployment.read_spec(sqlite_platform.settings) is None  # nothing was written
    with pytest.raises(UsageError, match="none deployed"):
        deployment.default_model(sqlite_platform)


def test_canary_buckets_are_stable_and_proportional() -> None:
    import uuid

    ids = [uuid.uuid4().hex for _ in range(20_000)]
    assert all(bucket(i) == bucket(i) for i in ids[:100])
    share = sum(is_canary(i, 10) for i in ids) / len(ids)
    assert 0.09 < share < 0.11
    assert not any(is_canary(i, 0) for i in ids) and all(is_canary(i, 100) for i in ids)
    spec = deployment.DeploymentSpec(model="xr@production")
    assert follows_deployment("xr@production", spec) and follows_deployment("xr", spec)
    assert follows_deployment("xr@staging", spec)
    assert not follows_deployment("xr@v3", spec) and not follows_deployment("other@production", spec)
