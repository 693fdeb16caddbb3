"""No job lost or doubled under chaos: jobs with idempotency keys on the Redis Streams queue, two workers under the
real deployment supervisor, five kill -9s of a serving worker and one Redis restart from its AOF.

The scenario is ``bench/serving_chaos.py``'s (which runs it with 5,000 jobs and against Celery); this test runs
``MEDCYCLE_TEST_CHAOS_JOBS`` jobs (default 500, submitted over a minute: 5,000 take several minutes on a two-core
machine).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from medcycle.testing.services import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("serving_chaos", ROOT / "bench" / "serving_chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_no_job_lost_or_doubled_through_worker_kills_and_a_redis_restart(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        skip_or_fail("no redis-server binary to run a private Redis with AOF")
    jobs = int(os.environ.get("MEDCYCLE_TEST_CHAOS_JOBS", "500"))
    # submitted over about a minute, so the five kills and the restart fall while jobs are in flight
    chaos = _bench().MedcycleChaos(tmp_path, jobs, seed=7, kills=5, restart_redis=True, timeout_s=600,
                                   rate=jobs / 60)
    out = chaos.run()
    assert sum(a.startswith("kill -9 worker") for a in out.chaos) == 5, out.chaos  # the chaos really happened ...
    assert sum(a.startswith("redis restarted") for a in out.chaos) == 1, out.chaos
    assert all(at < 1.0 for at in chaos.chaos.at), out.chaos  # ... before the work was done
    assert len(chaos.keys) == jobs and len(set(chaos.keys.values())) == jobs  # one job per key
    assert out.resubmitted == jobs // 10 and out.extra["resubmits_answered_by_another_job"] == 0
    assert out.extra["jobs_in_queue"] == jobs  # the resubmissions (and retries during the restart) added none
    assert out.lost == 0 and out.done + out.dead == jobs, out.extra["states"]  # every job done or dead-lettered
    assert out.doubled == 0
    # one result row per (inputs, model version, params): two jobs share each input, so half as many rows
    assert out.extra["result_rows"] == out.extra["distinct_inputs_done"] and out.extra["result_rows"] <= jobs // 2
    assert out.extra["inputs_with_two_result_keys"] == 0
    assert out.done > jobs // 2  # dead letters are allowed, but the service served
    assert out.extra["jobs_logged_twice"] == 0 and out.done <= out.extra["prediction_log_rows"] <= out.done + out.dead
