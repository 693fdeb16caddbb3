"""``medcycle serve-worker``: parses its options, processes jobs, reports, and refuses bad settings with exit codes.
(The lead registers the command in ``medcycle.cli.main``; here it is mounted on a root of its own.)"""

from __future__ import annotations

import json
import os

import pytest
import typer

from medcycle.cli.errors import run
from medcycle.cli.serve_worker import worker
from medcycle.platform import Platform
from medcycle.serving import intake
from tests.serving.core_fixtures import CLS, SrvTemplate


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """A root so serve-worker is a sub-command, as in ``medcycle``."""

    app.command("serve-worker")(worker)
    return app


def _env(monkeypatch: pytest.MonkeyPatch, platform: Platform) -> None:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(platform.settings.home))
    monkeypatch.setenv("MEDCYCLE_ENVIRONMENT", "test")
    monkeypatch.setenv("MEDCYCLE_SECRET_KEY", platform.settings.secret_key.get_secret_value())


def test_serve_worker_processes_jobs_and_reports(srv_platform: Platform, srv_template: SrvTemplate,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _env(monkeypatch, srv_platform)
    jobs = [intake.submit(srv_platform, [p], model=CLS) for p in srv_template.radiographs[:2]]
    code = run(_app(), ["serve-worker", "--queue", "inference", "--max-batch-images", "8", "--max-delay-ms", "5",
                        "--max-jobs", "2", "--no-webhooks", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["jobs"] == 2 and out["computed"] == 2 and out["batches"] == 1
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
