"""``medcycle agent``: run queued tasks on this machine (see :mod:`medcycle.agents.agent`).

Wire it in ``medcycle/cli/main.py``::

    from medcycle.cli import agents as agents_cli
    app.add_typer(agents_cli.app, name="agent", help="Agents that take queued tasks and run them on this machine.")
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from medcycle.agents.environment import EnvMode
from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, emit_json, err_console
from medcycle.errors import UsageError

app = typer.Typer(no_args_is_help=True, help="Agents that take queued tasks and run them on this machine.")
_GPUS_RE = re.compile(r"^[A-Za-z0-9-]+(,[A-Za-z0-9-]+)*$")


def check_gpus(gpus: str | None) -> str | None:
    """``0,1`` (or GPU UUIDs) as given; ``none`` → no GPU (an empty CUDA_VISIBLE_DEVICES)."""
    if gpus is None:
        return None
    if gpus.strip().lower() == "none":
        return ""
    if not _GPUS_RE.match(gpus.strip()):
        raise UsageError(f"--gpus {gpus!r} is not a list of GPU indices",
                         hint="Use e.g. --gpus 0,1 (as CUDA_VISIBLE_DEVICES takes them), or --gpus none.")
    return gpus.strip()


def _write_out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _write_err(data: bytes) -> None:
    sys.stderr.buffer.write(data)
    sys.stderr.buffer.flush()


@app.command("start")
def start(
    ctx: typer.Context,
    queue: Annotated[str, typer.Option("--queue", "-q", help="Queue to take tasks from.", show_default=False)],
    gpus: Annotated[str | None, typer.Option(help="GPUs for the tasks (CUDA_VISIBLE_DEVICES), e.g. 0,1.")] = None,
    workdir: Annotated[Path | None, typer.Option(help="Git caches, venvs and task folders (default HOME/agent).")]
    = None,
    data_dir: Annotated[Path | None, typer.Option(help="Shared dataset folder (default HOME/pulls).")] = None,
    max_tasks: Annotated[int | None, typer.Option(min=1, help="Exit after this many tasks.")] = None,
    env: Annotated[EnvMode, typer.Option("--env", help="current: this interpreter; venv: one venv per package "
                                         "freeze, reused.")] = EnvMode.CURRENT,
    docker: Annotated[str | None, typer.Option(help="Run each task in this image (needs a Docker engine; "
                                               "see docs).", show_default=False)] = None,
    name: Annotated[str | None, typer.Option(help="Agent name (default HOST:PID).", show_default=False)] = None,
    lease_seconds: Annotated[float | None, typer.Option(min=0.5, help="Lease per task (default: setting "
                                                        "job_lease_seconds).", show_default=False)] = None,
    stop_grace: Annotated[float, typer.Option(min=0, help="Seconds between SIGTERM and SIGKILL when a task is "
                                              "stopped.")] = 10.0,
    keep_work: Annotated[bool, typer.Option(help="Keep each task's folder after it ends.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Do not print the tasks' output.")] = False,
    json: bool = JsonOpt,
) -> None:
    """Take tasks from QUEUE one at a time: rebuild the code, make the environment, pull the data, run, report."""
    from medcycle.agents.agent import Agent
    from medcycle.agents.executor import ExecOptions, settings_env

    cli = state(ctx)
    platform = cli.platform()
    settings = platform.settings
    err = err_console()
    options = ExecOptions(
        workdir=(workdir or settings.home / "agent").expanduser(), data_dir=data_dir, env_mode=env,
        gpus=check_gpus(gpus), docker=docker, child_env=settings_env(settings, cli.config_file),
        echo=None if quiet else (_write_err if json else _write_out), keep_work=keep_work,
        stop_grace_s=stop_grace, actor=cli.actor, name=name or "agent")
    from medcycle.monitoring.sentry import init_sentry

    init_sentry(settings, component="agent")
    agent = Agent(platform, queue, options, lease_seconds=lease_seconds, say=lambda line: err.print(line))

    def stop(signum: int, _frame: FrameType | None) -> None:
        err.print(f"agent {agent.name}: {signal.Signals(signum).name}, stopping (the running task is requeued)")
        agent.shutdown.set()

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stats = agent.run(max_tasks=max_tasks)
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
    if json:
        emit_json({"agent": agent.name, "queue": queue, **stats.to_dict()})
    else:
        err.print(f"agent {agent.name}: {stats.taken} task(s) taken, {stats.finished} finished, "
                  f"{stats.failed} failed, {stats.cancelled} cancelled, {stats.lost} lost, {stats.requeued} requeued")
