"""The agent runs tasks in real child processes: exact tree, data once, cancel, failures, environments."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import pytest

from medcycle.agents.enqueue import enqueue
from medcycle.agents.environment import EnvMode
from medcycle.agents.executor import ExecOptions
from medcycle.agents.spec import CodeRef, TaskSpec
from medcycle.agents.submit import submit, task_result, wait
from medcycle.experiments.runs import get_run
from medcycle.jobs.base import JobState
from medcycle.platform import Platform
from tests.agents.conftest import RunAgent, commit, make_repo
from tests.experiments.datasets import frozen_version

TRAIN = """\
import pathlib, sys
from medcycle.experiments import start_run
LR = 0.1
with start_run("agents", resources=False, capture_output=False) as run:
    run.log_metric("lr", LR)
    data = pathlib.Path(sys.argv[1]).read_text().strip()
    pathlib.Path("out").mkdir(exist_ok=True)
    pathlib.Path("out/result.txt").write_text(f"lr={LR} data={data}")
    print("trained with", LR)
"""


def test_unpushed_commit_and_dirty_diff_are_rebuilt_exactly(sqlite_platform: Platform, tmp_path: Path,
                                                             run_agent: RunAgent) -> None:
    repo = make_repo(tmp_path / "code", {"train.py": TRAIN}, remote=tmp_path / "remote.git")
    head = commit(repo, {"train.py": TRAIN.replace("0.1", "0.2")}, "unpushed: only the bundle has it")
    (repo / "train.py").write_text(TRAIN.replace("0.1", "0.3"))  # uncommitted: only the diff has it
    (repo / "data.txt").write_text("hello\n")  # untracked: only the archive has it
    done = enqueue(sqlite_platform, ["python", "train.py", "data.txt"], queue="q", cwd=repo, outputs=["out"])
    diff_digest = done.spec.code.diff_digest if done.spec.code else None
    shutil.rmtree(repo)  # the submitter's repository is gone: the remote lacks the commit, the bundle has it

    stats = run_agent(max_tasks=1)
    job = sqlite_platform.jobs.get(done.job.id)
    assert stats.finished == 1 and job.state == JobState.SUCCEEDED, job.error
    result = job.result or {}
    assert {"exit_code", "run_id", "outputs", "log_digest"} <= result.keys() and result["exit_code"] == 0
    assert result["tree"] == {"commit": head, "source": "remote+bundle", "diff_applied": True,
                              "untracked": ["data.txt"]}
    assert sqlite_platform.objects.get(result["outputs"]["out/result.txt"]) == b"lr=0.3 data=hello"
    assert b"trained with 0.3" in sqlite_platform.objects.get(result["log_digest"])
    with sqlite_platform.session() as s:
        run = get_run(s, result["run_id"])
    assert run.summary.tags["task_id"] == job.id  # start_run in the child linked itself to the task
    git_capture = run.capture["git"]
    assert (git_capture["commit"], git_capture["branch"], git_capture["dirty"]) == (head, "main", True)
    assert run.diff_digest == diff_digest  # the rebuilt tree has the very same diff
    assert git_capture["pushed"] is False and "data.txt" in git_capture["untracked"]


COUNT = """\
import json, os, pathlib
root = pathlib.Path(os.environ["MEDCYCLE_DATASET_CXR"])
files = [p for p in root.rglob("*") if p.is_file()]
print(len(files), os.environ["CUDA_VISIBLE_DEVICES"], json.loads(os.environ["MEDCYCLE_PARAMS"])["lr"],
      os.environ["MEDCYCLE_TASK_ID"], sep="|")
"""


def test_dataset_version_is_pulled_once_into_the_shared_folder(sqlite_platform: Platform, tmp_path: Path,
                                                               run_agent: RunAgent) -> None:
    ref, version = frozen_version(sqlite_platform)
    repo = make_repo(tmp_path / "code", {"count.py": COUNT})
    jobs = [enqueue(sqlite_platform, ["python", "count.py"], queue="q", cwd=repo, datasets=[ref],
                    params={"lr": lr}).job for lr in (0.1, 0.2)]
    stats = run_agent(max_tasks=2, gpus="1", data_dir=tmp_path / "shared-data")
    assert stats.finished == 2
    first, second = (sqlite_platform.jobs.get(j.id).result or {} for j in jobs)
    (d1,), (d2,) = first["datasets"], second["datasets"]
    assert d1["path"] == d2["path"] == str(tmp_path / "shared-data" / "cxr" / version[:16])
    assert d1["version"] == version and d1["env"] == "MEDCYCLE_DATASET_CXR"
    assert d1["pull"]["items"] == 2 and d1["pull"]["linked"] == 2
    # the second task copies, links, fetches and hashes nothing: every file is already in place
    assert (d2["pull"]["linked"], d2["pull"]["copied"], d2["pull"]["fetched_objects"], d2["pull"]["unchanged"]) == (
        0, 0, 0, 2)
    assert second["tree"]["source"] == "cache"  # the repository was not fetched again either
    for job, result, lr in zip(jobs, (first, second), (0.1, 0.2), strict=True):
        count, gpus, seen_lr, task = sqlite_platform.objects.get(result["log_digest"]).decode().strip().split("|")
        assert int(count) >= 2 and gpus == "1" and float(seen_lr) == lr and task == job.id


SLEEPER = """\
import os, pathlib, sys, time
pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))
print("sleeping", flush=True)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped before the open, or between the open and the read
        return True


def test_cancel_stops_the_running_child(sqlite_platform: Platform, tmp_path: Path, background_agent: object) -> None:
    repo = make_repo(tmp_path / "code", {"sleep.py": SLEEPER})
    pid_file = tmp_path / "pid"
    job = enqueue(sqlite_platform, ["python", "sleep.py", str(pid_file)], queue="q", cwd=repo).job
    agent = background_agent("q", 1)  # type: ignore[operator]
    stop_at = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < stop_at, "the task never started"
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    assert not _gone(pid)
    cancelled_at = time.monotonic()
    sqlite_platform.jobs.cancel(job.id)
    while not (_gone(pid) and agent.stats.cancelled == 1):
        assert time.monotonic() - cancelled_at < 10, "the child outlived its cancel"
        time.sleep(0.05)
    final = sqlite_platform.jobs.get(job.id)
    assert final.state == JobState.CANCELLED and final.result is None


def test_failures_end_the_job_failed_with_a_result(sqlite_platform: Platform, tmp_path: Path,
                                                   run_agent: RunAgent) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    crash = submit(sqlite_platform, TaskSpec(command=["python", "-c", "import sys; print('boom'); sys.exit(3)"]),
                   queue="q")
    slow = submit(sqlite_platform, TaskSpec(command=["python", "-c", "import time; time.sleep(30)"], timeout_s=1),
                  queue="q")
    lazy = submit(sqlite_platform, TaskSpec(command=["python", "-c", "pass"], outputs=["model.pt"]), queue="q")
    lost = submit(sqlite_platform, TaskSpec(command=["python", "x.py"], code=CodeRef(
        commit="0123456789abcdef0123456789abcdef01234567", remote=str(tmp_path / "no-such-repo"))), queue="q")
    started = time.monotonic()
    stats = run_agent(max_tasks=4)
    assert time.monotonic() - started < 30 and stats.failed == 4
    crashed = wait(sqlite_platform, crash.id, timeout=1)
    assert crashed.state == JobState.FAILED and crashed.result is not None and crashed.result["exit_code"] == 3
    assert sqlite_platform.objects.get(crashed.result["log_digest"]) == b"boom\n"
    assert "exited with status 3" in (crashed.error or "")
    timed_out = task_result(sqlite_platform, sqlite_platform.jobs.get(slow.id)) or {}
    assert timed_out["outcome"] == "timed_out" and timed_out["exit_code"] != 0
    unwritten = sqlite_platform.jobs.get(lazy.id)
    assert "not written: model.pt" in (unwritten.error or "")
    missing = sqlite_platform.jobs.get(lost.id)
    assert missing.state == JobState.FAILED and missing.attempts == 1  # not retried: it cannot get better
    assert "commit 0123456789ab cannot be found" in (missing.error or "") and "Push the commit" in (missing.error or "")
    assert sqlite_platform.jobs.requeue(crash.id).state == JobState.QUEUED  # retry is `medcycle jobs requeue`


def test_higher_priority_runs_first(sqlite_platform: Platform, run_agent: RunAgent) -> None:
    low = submit(sqlite_platform, TaskSpec(command=["python", "-c", "pass"]), queue="q", priority=0)
    high = submit(sqlite_platform, TaskSpec(command=["python", "-c", "pass"]), queue="q", priority=5)
    run_agent(max_tasks=2)
    done = {j.id: sqlite_platform.jobs.get(j.id).finished_at for j in (low, high)}
    assert done[high.id] is not None and done[low.id] is not None and done[high.id] < done[low.id]


PREFIX = "import sys, medcycle.experiments; print(sys.prefix)"


def test_venv_is_made_once_per_freeze_and_reused(sqlite_platform: Platform, tmp_path: Path, run_agent: RunAgent,
                                                 options: ExecOptions) -> None:
    jobs = [submit(sqlite_platform, TaskSpec(command=["python", "-c", PREFIX]), queue="q") for _ in range(2)]
    assert run_agent(max_tasks=2, env_mode=EnvMode.VENV).finished == 2, sqlite_platform.jobs.get(jobs[0].id).error
    first, second = (sqlite_platform.jobs.get(j.id).result or {} for j in jobs)
    assert first["env"]["created"] is True and second["env"]["created"] is False
    prefix = first["env"]["prefix"]
    assert prefix == second["env"]["prefix"] and prefix.startswith(str(options.workdir.resolve() / "envs"))
    for result in (first, second):  # the child ran in the venv, and saw the agent's packages through it
        assert sqlite_platform.objects.get(result["log_digest"]).decode().strip() == prefix


def test_venv_missing_package_is_a_clear_setup_error(sqlite_platform: Platform, run_agent: RunAgent,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no network here: pip fails at once instead of retrying
    freeze = sqlite_platform.objects.put(b"zz-medcycle-not-a-package==9.9.9\n").digest
    job = submit(sqlite_platform, TaskSpec(command=["python", "-c", "pass"], packages_hash="f" * 64,
                                           packages_digest=freeze), queue="q")
    assert run_agent(max_tasks=1, env_mode=EnvMode.VENV).failed == 1
    failed = sqlite_platform.jobs.get(job.id)
    assert "cannot install 1 package(s) the task needs (zz-medcycle-not-a-package==9.9.9)" in (failed.error or "")
    assert "--env current" in (failed.error or "")


def test_submit_and_wait_give_the_result_contract(sqlite_platform: Platform, background_agent: object) -> None:
    spec = TaskSpec(command=["python", "-c", "import os; open('a.txt', 'w').write(os.environ['MEDCYCLE_SEED'])"],
                    outputs=["a.txt"], seed=11)
    job = submit(sqlite_platform, spec, queue="q", idempotency_key="once")
    assert submit(sqlite_platform, dataclasses.replace(spec), queue="q", idempotency_key="once").id == job.id
    background_agent("q", 1)  # type: ignore[operator]
    done = wait(sqlite_platform, job.id, timeout=60)
    assert done.state == JobState.SUCCEEDED and done.result is not None
    assert done.result["exit_code"] == 0 and done.result["run_id"] is None
    assert sqlite_platform.objects.get(done.result["outputs"]["a.txt"]) == b"11"
    assert isinstance(done.result["log_digest"], str) and os.path.isabs(done.result["cwd"])
