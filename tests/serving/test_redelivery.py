"""kill -9 a worker process after it stored its batch's results but before it completed the jobs: the jobs are
redelivered once their lease expires, and the next worker process answers them from the stored results —
no result row, output object reference or prediction-log record is doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from medcycle.jobs.base import JobState
from medcycle.monitoring.tables import PredictionRow
from medcycle.objects.tables import ObjectRefRow
from medcycle.serving import intake, results
from medcycle.testing.platform import TEST_SECRET
from tests.serving.core_fixtures import CLS, SrvTemplate, srv_copy

ROOT = Path(__file__).resolve().parents[2]


def _env(platform_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCYCLE_")}
    env.update({"MEDCYCLE_HOME": str(platform_home), "MEDCYCLE_ENVIRONMENT": "test", "MEDCYCLE_SECRET_KEY": TEST_SECRET,
                "MEDCYCLE_JOB_LEASE_SECONDS": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    return env


def _wait_for(path: Path, proc: subprocess.Popen[bytes], seconds: float) -> None:
    until = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, "the worker process ended before pausing"
        assert time.monotonic() < until, f"the worker did not store its batch within {seconds:.0f} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_mid_batch_never_doubles_a_result(srv_template: SrvTemplate, tmp_path: Path) -> None:
    platform = srv_copy(srv_template, tmp_path, job_lease_seconds=1.0)
    try:
        jobs = [intake.submit(platform, [path], model=CLS, idempotency_key=f"k{n}")
                for n, path in enumerate(srv_template.radiographs[:3])]
        jobs.append(intake.submit(platform, [srv_template.radiographs[0]], model=CLS))  # same input as job 0
        env = _env(platform.settings.home)
        flag = tmp_path / "stored"
        first = subprocess.Popen([sys.executable, "-m", "tests.serving.core_worker_proc", "--pause-file", str(flag)],
                                 cwd=ROOT, env=env)
        try:
            _wait_for(flag, first, 180)
            assert set(flag.read_text().split()) == {j.id for j in jobs}  # one batch held all four
            with platform.session(write=False) as s:
                assert results.count(s) == 3  # results stored (two jobs share one input: computed once) ...
            assert all(platform.jobs.get(j.id).state is JobState.RUNNING for j in jobs)  # ... jobs not completed
            os.kill(first.pid, signal.SIGKILL)
        finally:
            first.kill()
            first.wait(timeout=30)
        second = subprocess.run([sys.executable, "-m", "tests.serving.core_worker_proc", "--max-jobs", "4"],
                                cwd=ROOT, env=env, timeout=180, check=False)
        assert second.returncode == 0
        done = [platform.jobs.get(j.id) for j in jobs]
        assert all(j.state is JobState.SUCCEEDED and j.attempts == 2 for j in done), [(j.state, j.error) for j in done]
        assert all(j.result and j.result["cached"] for j in done)  # the second worker computed nothing
        keys = [str(j.result["result"]) for j in done if j.result]
        assert keys[0] == keys[3] and len(set(keys)) == 3
        with platform.session(write=False) as s:
            assert results.count(s) == 3 and all(results.count(s, k) == 1 for k in keys)
            per_key = s.execute(select(ObjectRefRow.owner_id, func.count()).where(
                ObjectRefRow.owner_kind == results.RESULT_REF).group_by(ObjectRefRow.owner_id)).all()
            assert {k for k, _ in per_key} == set(keys) and all(n == 2 for _, n in per_key)  # png + sc each
            logged = s.execute(select(PredictionRow.job_id, func.count()).group_by(PredictionRow.job_id)).all()
            assert {j: n for j, n in logged} == {j.id: 1 for j in jobs}
    finally:
        platform.close()
