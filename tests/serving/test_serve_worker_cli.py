"""``medcycle serve-worker``: parses its options, processes jobs, reports, and refuses bad settings with exit codes.
(The lead registers the command in ``medcycle.cli.main``; here it is mounted on a root of its own.)"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import typer

from medcycle.cli.errors import run
from medcycle.cli.serve_worker import worker
from medcycle.platform import Platform
from medcycle.serving import cpu, intake
from tests.serving.core_fixtures import CLS, SrvTemplate


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """A root so serve-worker is a sub-command, as in ``medcycle``."""

    app.command("serve-worker")(worker)
    return app


def _env(monkeypatch: pytest.MonkeyPatch, platform: Platform) -> list[dict[str, Any]]:
    """The worker's environment; ``cpu.apply`` is recorded, not run (it would lower this test process's
    priority for good: tests/serving/test_cpu_share.py runs it in child processes)."""
    calls: list[dict[str, Any]] = []

    def record(**kwargs: Any) -> cpu.CpuShare:
        calls.append(kwargs)
        return cpu.CpuShare(threads=kwargs["threads"] or 1, priority=kwargs["priority"], nice=0, cores=1)

    monkeypatch.setattr(cpu, "apply", record)
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(platform.settings.home))
    monkeypatch.setenv("MEDCYCLE_ENVIRONMENT", "test")
    monkeypatch.setenv("MEDCYCLE_SECRET_KEY", platform.settings.secret_key.get_secret_value())
    return calls


def test_serve_worker_processes_jobs_and_reports(srv_platform: Platform, srv_template: SrvTemplate,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    calls = _env(monkeypatch, srv_platform)
    jobs = [intake.submit(srv_platform, [p], model=CLS) for p in srv_template.radiographs[:2]]
    code = run(_app(), ["serve-worker", "--queue", "inference", "--max-batch-images", "8", "--max-delay-ms", "5",
                        "--max-jobs", "2", "--no-webhooks", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["jobs"] == 2 and out["computed"] == 2 and out["batches"] == 1
    # the defaults: all cores, nice 10, freed memory kept
    assert calls == [{"threads": 0, "workers": 1, "priority": "low", "keep_memory": True}]
    assert all(srv_platform.jobs.get(j.id).state.value == "succeeded" for j in jobs)


def test_serve_worker_refuses_a_delay_near_the_lease(srv_platform: Platform, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _env(monkeypatch, srv_platform)
    code = run(_app(), ["serve-worker", "--max-delay-ms", "5000", "--lease-seconds", "2", "--max-jobs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "max_delay_ms 5000" in err and "Hint:" in err
    monkeypatch.setenv("MEDCYCLE_SERVING_MAX_BATCH_IMAGES", "0")
    code = run(_app(), ["serve-worker", "--max-jobs", "1"])
    assert code == 78 and "max_batch_images" in capsys.readouterr().err


def test_serve_worker_takes_its_cpu_share_from_options_and_settings(srv_platform: Platform,
                                                                    srv_template: SrvTemplate,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    calls = _env(monkeypatch, srv_platform)
    for image in srv_template.radiographs[:2]:  # one job for each run below (it exits after one)
        intake.submit(srv_platform, [image], model=CLS)
    code = run(_app(), ["serve-worker", "--threads", "3", "--priority", "low", "--max-jobs", "1",
                        "--max-batch-images", "1", "--max-delay-ms", "0", "--no-webhooks"])
    capsys.readouterr()
    monkeypatch.setenv("MEDCYCLE_SERVING_CPU_THREADS", "2")
    monkeypatch.setenv("MEDCYCLE_SERVING_WORKER_PRIORITY", "normal")
    monkeypatch.setenv("MEDCYCLE_SERVING_KEEP_FREED_MEMORY", "false")
    code2 = run(_app(), ["serve-worker", "--max-jobs", "1", "--max-delay-ms", "0", "--no-webhooks"])
    assert (code, code2) == (0, 0)
    assert calls == [{"threads": 3, "workers": 1, "priority": "low", "keep_memory": True},
                     {"threads": 2, "workers": 1, "priority": "normal", "keep_memory": False}]
    code = run(_app(), ["serve-worker", "--priority", "urgent", "--max-jobs", "1"])
    err = capsys.readouterr().err
    assert code == 78 and "worker_priority" in err and len(calls) == 2


def test_serve_worker_warms_the_models_it_is_told_before_taking_jobs(srv_platform: Platform,
                                                                     srv_template: SrvTemplate,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from medcycle.serving.predictor import Predictor

    _env(monkeypatch, srv_platform)
    events: list[str] = []
    real_warm = Predictor.warm

    def warm(self: Predictor) -> None:
        events.append(f"warm {self.ref}")
        real_warm(self)

    monkeypatch.setattr(Predictor, "warm", warm)
    job = intake.submit(srv_platform, [srv_template.radiographs[0]], model=CLS)
    code = run(_app(), ["serve-worker", "--warm", CLS, "--max-jobs", "1", "--max-delay-ms", "0", "--no-webhooks"])
    err = capsys.readouterr().err
    assert code == 0 and srv_platform.jobs.get(job.id).state.value == "succeeded"
    assert events == [f"warm {CLS}@v1"]  # loaded and warmed once, before the job; the job found it loaded
    assert f"{CLS}@v1 loaded and warm" in err and "image(s) per forward pass" in err
    code = run(_app(), ["serve-worker", "--warm", "no-such-model", "--max-jobs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--warm no-such-model" in err and "Hint:" in err
