"""The agent executor: steps become tasks on a queue, run by a real in-process agent (``medcycle.agents``).

The agent runs each step's command in a tree rebuilt from the captured code, so these tests count real
executions the same way as the local ones (the trace file), plus the tasks that reached the queue.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from medcycle.agents.agent import Agent
from medcycle.agents.executor import ExecOptions
from medcycle.jobs.base import JobState
from medcycle.pipelines.agent import AgentExecutor
from medcycle.pipelines.executors import StepTask
from medcycle.pipelines.runner import run_pipeline
from medcycle.pipelines.spec import load_pipeline
from medcycle.pipelines.stage import MODULE
from medcycle.pipelines.state import RunDetail, RunStatus
from medcycle.platform import Platform
from tests.pipelines.conftest import Project, states

QUEUE = "pipes"


@pytest.fixture
def project(sqlite_project: Project) -> Project:
    """SQLite only here: the runner tests cover both databases; these cover the agent path."""
    return sqlite_project


@pytest.fixture
def agent(project: Project, tmp_path: Path) -> Iterator[Agent]:
    """An agent taking tasks from ``pipes`` in a background thread, for the length of the test."""
    options = ExecOptions(workdir=tmp_path / "agent", name="pipeline-agent", stop_grace_s=2.0)
    worker = Agent(project.platform, QUEUE, options, lease_seconds=10.0, wait_ms=100, say=lambda _line: None)
    thread = threading.Thread(target=worker.run, name="test-agent", daemon=True)
    thread.start()
    yield worker
    worker.shutdown.set()
    thread.join(30)
    assert not thread.is_alive()


def run_on_agent(project: Project, **kwargs: object) -> RunDetail:
    executor = AgentExecutor(project.platform, queue=QUEUE, wait_s=120)
    return run_pipeline(project.platform, load_pipeline(project.file), executor=executor, **kwargs)  # type: ignore[arg-type]


def tasks(platform: Platform) -> int:
    return len(platform.jobs.list(QUEUE, limit=1000))


def test_the_task_an_agent_gets_for_a_step(project: Project) -> None:
    executor = AgentExecutor(project.platform, queue=QUEUE)
    executor.prepare(load_pipeline(project.file))
    assert executor.code is not None and executor.code.untracked_digest  # not a git tree: the files travel
    task = StepTask(run_id="r" * 32, pipeline="demo", project="demo", step="train", key="k" * 64,
                    command=("python", "steps/step.py", "train", "model.txt", "inputs/prepare/out/prepared.txt"),
                    code_root=project.root, inputs={"inputs/prepare/out/prepared.txt": "a" * 64},
                    datasets={"cxr": "cxr@" + "b" * 64}, params={"lr": 0.1}, env={"X": "1"},
                    outputs={"model": "model.txt"}, timeout_s=60.0)
    spec = executor.task_spec(task)
    assert spec.command == ["python", "-m", MODULE, "--run", "r" * 32, "--step", "train",
                            "--input", f"inputs/prepare/out/prepared.txt={'a' * 64}", "--", *task.command]
    assert (spec.datasets, spec.params, spec.env, spec.outputs, spec.timeout_s) == (
        ["cxr@" + "b" * 64], {"lr": 0.1}, {"X": "1"}, ["model.txt"], 60.0)
    assert spec.pipeline == {"run": "r" * 32, "step": "train", "key": "k" * 64}
    assert spec.name == "demo/train" and spec.code == executor.code and spec.packages_hash
    ok = AgentExecutor.result("j", JobState.SUCCEEDED, {"exit_code": 0, "outputs": {"model.txt": "c" * 64},
                                                         "log_digest": "d" * 64, "run_id": "run1"}, None)
    assert ok.ok and ok.outputs == {"model.txt": "c" * 64} and ok.run_id == "run1" and ok.job_id == "j"
    failed = AgentExecutor.result("j", JobState.FAILED, {"exit_code": 3}, "the command exited with status 3")
    assert not failed.ok and failed.exit_code == 3
    assert "failed: the command exited with status 3" in (failed.error or "")


@pytest.mark.slow
def test_steps_run_on_an_agent_and_reruns_are_cache_hits(project: Project, agent: Agent) -> None:
    first = run_on_agent(project)
    assert first.run.status is RunStatus.SUCCEEDED, first.run.error
    assert states(first) == {"prepare": "succeeded", "report": "succeeded", "train": "succeeded",
                             "evaluate": "succeeded"}
    assert sorted(project.executed()) == ["evaluate", "prepare", "report", "train"]
    assert first.run.executor == "agent" and first.run.queue == QUEUE and tasks(project.platform) == 4
    train = first.step("train")
    job = project.platform.jobs.get(train.job_id or "")
    assert job.state is JobState.SUCCEEDED and job.payload["pipeline"]["step"] == "train"
    written = project.platform.objects.get(train.outputs["model"]["digest"]).decode()
    assert "scan-1" in written and "--lr=0.1" in written  # the input from `prepare` was placed on the agent

    again = run_on_agent(project)
    assert set(states(again).values()) == {"cached"} and project.executed() == []
    assert tasks(project.platform) == 4  # nothing was submitted

    (project.root / "notes.txt").write_text("changed\n")
    third = run_on_agent(project)
    assert states(third) == {"prepare": "cached", "report": "succeeded", "train": "cached", "evaluate": "cached"}
    assert project.executed() == ["report"] and tasks(project.platform) == 5


def test_a_step_failing_on_the_agent_skips_its_dependants(project: Project, agent: Agent) -> None:
    (project.root / "fail-train").write_text("")
    (project.root / "pipeline.yaml").write_text(project.file.read_text().replace(
        "      params: {seed: 7}\n", "      params: {seed: 7}\n      files: [fail-*]\n"))
    run = run_on_agent(project, parallel=2)
    assert states(run) == {"prepare": "succeeded", "report": "succeeded", "train": "failed", "evaluate": "skipped"}
    train = run.step("train")
    assert train.exit_code == 3 and train.job_id and "status 3" in (train.error or "")
    assert train.log_digest and "failing on purpose" in project.platform.objects.get(train.log_digest).decode()
