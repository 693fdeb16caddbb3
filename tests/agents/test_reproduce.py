"""``run reproduce``: a finished run re-executed from its capture, final metrics compared."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import typer
from sqlalchemy import select

from medcycle.agents.enqueue import enqueue
from medcycle.agents.reproduce import entry_command, reproduce, task_from_run
from medcycle.cli import runs as runs_cli
from medcycle.cli.context import CliState
from medcycle.cli.errors import run as run_cli
from medcycle.errors import UsageError
from medcycle.experiments.runs import get_run
from medcycle.experiments.sdk import start_run
from medcycle.experiments.tables import RunRow
from medcycle.jobs.base import JobState
from medcycle.platform import Platform
from tests.agents.conftest import PY, RunAgent, commit, make_repo, store_env

root = typer.Typer()
root.add_typer(runs_cli.app, name="run")


@root.callback()
def _root(ctx: typer.Context) -> None:
    ctx.obj = CliState()
    ctx.call_on_close(ctx.obj.close)


SCRIPT = """\
import random
from medcycle.experiments import start_run
OFFSET = 0.0
with start_run("repro", resources=False, capture_output=False) as run:
    {seed}
    run.log_params({{"n": 3, "offset": OFFSET}})
    score = sum(random.random() for _ in range(3)) + OFFSET
    for step in range(3):
        run.log_metric("loss", 1.0 / (step + 1) + score, step=step)
    run.log_metric("score", score)
"""
SEEDED = SCRIPT.format(seed="random.seed(3)")  # (run.seed(3) would do the same, and import torch: seconds)
UNSEEDED = SCRIPT.format(seed="pass")


def run_ids(platform: Platform) -> set[str]:
    with platform.session() as s:
        return set(s.scalars(select(RunRow.id)))


def original_run(platform: Platform, repo: Path, *args: str) -> str:
    """Run ``python train.py ARGS`` in ``repo`` as a person would, against the test store; returns the run id."""
    before = run_ids(platform)
    subprocess.run([PY, "train.py", *args], cwd=repo, env={**os.environ, **store_env(platform)}, check=True,
                   capture_output=True)
    (new,) = run_ids(platform) - before
    return new


def test_seeded_run_reproduces_with_zero_difference(sqlite_platform: Platform, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "code", {"train.py": SEEDED})  # no remote: the commit exists only here
    (repo / "train.py").write_text(SEEDED.replace("OFFSET = 0.0", "OFFSET = 5.0"))  # uncommitted, captured as diff
    original = original_run(sqlite_platform, repo)

    report = reproduce(sqlite_platform, original, tolerance=1e-9)
    assert report.ok, report.to_dict()
    assert [(m.key, m.delta, m.within) for m in report.metrics] == [("loss", 0.0, True), ("score", 0.0, True)]
    assert report.metrics[1].original is not None and report.metrics[1].original > 5  # the diff was applied
    with sqlite_platform.session() as s:
        old, new = get_run(s, original), get_run(s, report.reproduction or "")
    assert new.summary.tags["task_id"] == report.task_id
    assert new.capture["git"]["commit"] == old.capture["git"]["commit"] and new.diff_digest == old.diff_digest
    assert new.summary.params == old.summary.params


def test_unseeded_run_reports_the_difference(sqlite_platform: Platform, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "code", {"train.py": UNSEEDED})
    original = original_run(sqlite_platform, repo)
    for key, value in store_env(sqlite_platform).items():
        monkeypatch.setenv(key, value)
    code = run_cli(root, ["run", "reproduce", original[:8], "--workdir", str(tmp_path / "agent"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False and report["exit_code"] == 0
    assert report["differing"] == ["loss", "score"]
    score = report["metrics"][1]
    assert score["key"] == "score" and score["within"] is False and abs(score["delta"]) > 1e-6
    code = run_cli(root, ["run", "reproduce", original[:8], "--tolerance", "10", "--ignore", "loss",
                          "--workdir", str(tmp_path / "a")])
    out = capsys.readouterr()
    assert code == 0 and "reproduced within tolerance" in out.out and "not compared: loss" in out.err


def test_agent_run_is_reproduced_on_a_queue_from_its_task(sqlite_platform: Platform, tmp_path: Path,
                                                          run_agent: RunAgent, background_agent: object) -> None:
    repo = make_repo(tmp_path / "code", {"train.py": UNSEEDED}, remote=tmp_path / "remote.git")
    commit(repo, {"train.py": SEEDED}, "seeded, never pushed")
    job = enqueue(sqlite_platform, ["python", "train.py"], queue="q", cwd=repo).job
    shutil.rmtree(repo)  # only the task's bundle holds the commit now
    assert run_agent(max_tasks=1).finished == 1
    original = (sqlite_platform.jobs.get(job.id).result or {})["run_id"]
    plan = task_from_run(sqlite_platform, original)
    payload = sqlite_platform.jobs.get(job.id).payload
    assert plan.spec.code is not None and plan.spec.code.bundle_digest == payload["code"]["bundle_digest"]
    assert plan.spec.command == payload["command"]  # the original task again (its code, bundle included)
    assert plan.spec.reproduces == original and not plan.warnings
    background_agent("q", 1)  # type: ignore[operator]
    report = reproduce(sqlite_platform, original, queue="q", timeout=120)
    assert report.queued and report.ok, report.to_dict()
    assert {m.key: m.delta for m in report.metrics} == {"loss": 0.0, "score": 0.0}
    assert sqlite_platform.jobs.get(report.task_id).state == JobState.SUCCEEDED


def test_what_cannot_be_reproduced_says_why(sqlite_platform: Platform, tmp_path: Path) -> None:
    with start_run("repro", platform=sqlite_platform, capture=False, resources=False, capture_output=False,
                   journal_dir=tmp_path / "j") as run:
        run.log_metric("x", 1.0)
    with pytest.raises(UsageError, match="captured no git commit") as info:
        reproduce(sqlite_platform, run.id)
    assert info.value.hint
    with pytest.raises(UsageError, match="python -c"):
        entry_command({"argv": ["-c"], "orig_argv": [PY, "-c", "print(1)"], "cwd": "/r"}, "/r")
    assert entry_command({"argv": ["/r/src/t.py", "--cfg", "/r/c.yaml", "/etc/x"], "orig_argv": [PY, "-u", "src/t.py"],
                          "script_in_repo": "src/t.py", "cwd": "/r/src"}, "/r") == (
        ["python", "t.py", "--cfg", "../c.yaml", "/etc/x"], "src")
    assert entry_command({"argv": ["/r/m/__main__.py", "a"], "orig_argv": [PY, "-X", "dev", "-m", "m", "a"],
                          "cwd": "/r"}, "/r") == (["python", "-m", "m", "a"], ".")
    with pytest.raises(UsageError, match="tolerance"):
        reproduce(sqlite_platform, run.id, tolerance=-1)
