"""``medcycle agent start``: parsing, output, exit codes (mounted as the lead will mount it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from medcycle.agents.environment import docker_argv, resolve_argv
from medcycle.agents.errors import TaskSetupFailed
from medcycle.agents.spec import TaskSpec
from medcycle.agents.submit import submit
from medcycle.cli import agents as agents_cli
from medcycle.cli.context import CliState
from medcycle.cli.errors import run as run_cli
from medcycle.jobs.base import JobState
from medcycle.platform import Platform
from tests.agents.conftest import store_env

root = typer.Typer()
root.add_typer(agents_cli.app, name="agent")


@root.callback()
def _root(ctx: typer.Context) -> None:
    ctx.obj = CliState()
    ctx.call_on_close(ctx.obj.close)


def test_agent_start_runs_tasks_and_prints_their_output(sqlite_platform: Platform, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in store_env(sqlite_platform).items():
        monkeypatch.setenv(key, value)
    job = submit(sqlite_platform, TaskSpec(command=["python", "-c", "import os; print('gpus', "
                                                    "os.environ['CUDA_VISIBLE_DEVICES'])"]), queue="cli")
    code = run_cli(root, ["agent", "start", "--queue", "cli", "--max-tasks", "1", "--gpus", "0,1", "--name", "a1",
                          "--workdir", str(tmp_path / "agent"), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out) == {"agent": "a1", "queue": "cli", "taken": 1, "finished": 1, "failed": 0,
                                   "cancelled": 0, "lost": 0, "requeued": 0}
    assert "gpus 0,1" in out.err  # with --json the task's output goes to stderr
    assert sqlite_platform.jobs.get(job.id).state == JobState.SUCCEEDED
    assert not (tmp_path / "agent" / "work").exists() or not any((tmp_path / "agent" / "work").iterdir())
    code = run_cli(root, ["agent", "start", "--queue", "cli", "--gpus", "0;rm"])
    assert code == 2 and "--gpus 0,1" in capsys.readouterr().err


def test_argv_resolution_and_the_docker_command_line(tmp_path: Path) -> None:
    env = {"MEDCYCLE_DATASET_CXR": "/data/cxr/ab12", "MEDCYCLE_HOME": "/home/m", "CUDA_VISIBLE_DEVICES": "2",
           "PATH": "/bin"}
    assert resolve_argv(["medcycle", "train", "run", "c.json", "--to", "${MEDCYCLE_DATASET_CXR}"], "/venv/py", env) == [
        "/venv/py", "-m", "medcycle", "train", "run", "c.json", "--to", "/data/cxr/ab12"]
    assert resolve_argv(["python3", "t.py"], "/venv/py", env) == ["/venv/py", "t.py"]
    assert resolve_argv(["./run.sh", "$HOME"], "/venv/py", env) == ["./run.sh", "$HOME"]  # only ${MEDCYCLE_*}
    with pytest.raises(TaskSetupFailed, match="MEDCYCLE_DATASET_CT"):
        resolve_argv(["python", "--data", "${MEDCYCLE_DATASET_CT}"], "/venv/py", env)
    argv = resolve_argv(["python", "t.py"], "/venv/py", env, container=True)
    cmd = docker_argv("team/train:1", argv, name="medcycle-task-x", tree=tmp_path / "tree", cwd=tmp_path / "tree",
                      env=env, mounts=[Path("/data/cxr/ab12"), Path("/home/m")], gpus="2")
    assert cmd[:4] == ["docker", "run", "--rm", "--init"] and cmd[-3:] == ["team/train:1", "python", "t.py"]
    assert cmd[cmd.index("--gpus"):cmd.index("--gpus") + 2] == ["--gpus", '"device=2"']
    assert "MEDCYCLE_DATASET_CXR=/data/cxr/ab12" in cmd and "-v" in cmd and "/data/cxr/ab12:/data/cxr/ab12" in cmd
    assert not any(part.startswith(("CUDA_VISIBLE_DEVICES", "PATH=")) for part in cmd)  # --gpus renumbers devices
