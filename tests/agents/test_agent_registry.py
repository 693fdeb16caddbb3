"""A real agent in the process registry: idle while it waits on its queue, busy with its current task, stopped
when it is told to stop."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from medcycle.agents.agent import Agent
from medcycle.agents.executor import ExecOptions, settings_env
from medcycle.agents.spec import TaskSpec
from medcycle.agents.submit import submit
from medcycle.jobs import processes
from medcycle.jobs.base import JobState
from medcycle.platform import Platform
from tests.process_registry import registered, wait_for_status, wait_until

WAITER = ("import pathlib, sys, time\n"
          "go = pathlib.Path(sys.argv[1])\n"
          "end = time.monotonic() + 60\n"
          "while not go.exists() and time.monotonic() < end:\n"
          "    time.sleep(0.05)\n")
AGENT = processes.ProcessKind.AGENT


def test_an_agent_is_idle_then_busy_then_stopped(sqlite_platform: Platform, tmp_path: Path) -> None:
    platform = sqlite_platform
    options = ExecOptions(workdir=tmp_path / "agent", name="gpu-box-7", gpus="0,1", stop_grace_s=2.0,
                          child_env=settings_env(platform.settings))
    agent = Agent(platform, "gpu", options, lease_seconds=5.0, wait_ms=100, say=lambda _line: None, beat_seconds=0.2)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    go = tmp_path / "go"
    try:
        idle = wait_for_status(platform, AGENT, "gpu-box-7", "idle")
        assert idle.current_job is None and idle.queue == "gpu"
        assert idle.details["gpus"] == "0,1" and idle.details["finished"] == 0

        script = tmp_path / "waiter.py"
        script.write_text(WAITER)
        task = submit(platform, TaskSpec(command=[sys.executable, str(script), str(go)], name="waits"),
                      queue="gpu").id
        busy = wait_for_status(platform, AGENT, "gpu-box-7", "busy")
        assert busy.current_job == task and busy.details["task_name"] == "waits"

        go.write_text("")
        wait_until(lambda: platform.jobs.get(task).state is JobState.SUCCEEDED, "the task to finish")
        wait_for_status(platform, AGENT, "gpu-box-7", "idle", finished=1)
    finally:
        go.write_text("")
        agent.shutdown.set()
        thread.join(30)
    assert not thread.is_alive()
    stopped = registered(platform, AGENT, "gpu-box-7")
    assert stopped is not None and (stopped.status, stopped.current_job) == ("stopped", None)
