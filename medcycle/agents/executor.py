"""Running one task: rebuild its tree, make its environment, pull its data, run the command, keep what it made.

The same code runs a task for an agent (:mod:`medcycle.agents.agent`) and for ``medcycle run reproduce`` on
this machine. The command runs as a child in its own session (process group) that the kernel kills when the
agent dies (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the agent leaves no orphan training on the GPU. Its
output (stdout and stderr, merged in order) streams to a log file and to the agent's console, and is stored
as an object when the child ends. Stopping a task (cancel, lost lease, agent shutdown, timeout) sends
SIGTERM to the whole group, then SIGKILL after a grace period.

The child gets the agent's environment plus:

==========================  =====================================================================
``MEDCYCLE_TASK_ID``        the task (job) id; ``start_run`` tags the run with it (``task_id``)
``MEDCYCLE_PARAMS``         the task's params as JSON
``MEDCYCLE_PROJECT``        the task's project (and ``MEDCYCLE_HYPOTHESIS`` when it names one)
``MEDCYCLE_SEED``           the seed, when the task names one (``run reproduce`` does)
``MEDCYCLE_DATASET_<NAME>`` the folder each dataset version was pulled to
``MEDCYCLE_HOME``, ...      the agent's store settings, so the SDK in the child writes to the same store
``CUDA_VISIBLE_DEVICES``    the agent's ``--gpus``
==========================  =====================================================================
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select

from medcycle.agents.data import ENV_PREFIX, pull_all
from medcycle.agents.environment import EnvMode, docker_argv, prepare_env, resolve_argv
from medcycle.agents.errors import TaskSetupFailed
from medcycle.agents.spec import TaskSpec
from medcycle.agents.workspace import command_dir, materialize
from medcycle.experiments.tables import RunRow, RunTagRow
from medcycle.platform import Platform
from medcycle.settings import Environment, Settings

TASK_TAG = "task_id"  # the tag start_run puts on a run started inside a task (sdk.py)
PR_SET_PDEATHSIG = 1
Echo = Callable[[bytes], None]


class Outcome(StrEnum):
    FINISHED = "finished"  # exit status 0 and every declared output written
    FAILED = "failed"  # non-zero exit status, or a declared output missing
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"  # the lease went to another agent
    STOPPED = "stopped"  # the agent is shutting down


class StopSignal:
    """Why a running task must stop, set once by whoever notices first (lease keeper, agent, Ctrl-C)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: Outcome | None = None
        self._lock = threading.Lock()

    def set(self, reason: Outcome) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
                self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


@dataclass
class ExecOptions:
    """How this machine runs tasks.

    Args:
        workdir: the agent's folder: ``repos/`` (git caches), ``envs/`` (venvs), ``work/`` (one per task).
        data_dir: the shared dataset folder (default ``HOME/pulls``).
        child_env: store settings handed to the child (default: from the platform's settings).
        echo: receives the child's output as it comes (the agent prints it).
        keep_work: keep each task's folder (default: removed once its log and outputs are stored).
    """

    workdir: Path
    data_dir: Path | None = None
    env_mode: EnvMode = EnvMode.CURRENT
    gpus: str | None = None
    docker: str | None = None
    child_env: dict[str, str] | None = None
    echo: Echo | None = None
    keep_work: bool = False
    stop_grace_s: float = 10.0
    actor: str = "agent"
    name: str = "agent"


@dataclass
class TaskOutcome:
    outcome: Outcome
    result: dict[str, Any]
    error: str | None = None
    digests: list[str] = field(default_factory=list)  # objects stored for the task (log, outputs)


def settings_env(settings: Settings, config_file: Path | None = None) -> dict[str, str]:
    """The ``MEDCYCLE_*`` variables that make a child process use the same store as ``settings``."""
    env = {"MEDCYCLE_HOME": str(settings.home), "MEDCYCLE_DATABASE_URL": settings.resolved_database_url,
           "MEDCYCLE_OBJECT_STORE_URL": settings.resolved_object_store_url, "MEDCYCLE_QUEUE_URL": settings.queue_url,
           "MEDCYCLE_CACHE_DIR": str(settings.resolved_cache_dir), "MEDCYCLE_ENVIRONMENT": settings.environment.value,
           "MEDCYCLE_S3_REGION": settings.s3_region}
    if settings.s3_endpoint_url:
        env["MEDCYCLE_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    if settings.s3_access_key_id:
        env["MEDCYCLE_S3_ACCESS_KEY_ID"] = settings.s3_access_key_id
    if settings.s3_secret_access_key is not None:
        env["MEDCYCLE_S3_SECRET_ACCESS_KEY"] = settings.s3_secret_access_key.get_secret_value()
    if settings.environment is not Environment.DEVELOPMENT:  # the child's settings refuse the default key there
        env["MEDCYCLE_SECRET_KEY"] = settings.secret_key.get_secret_value()
    if config_file is not None:
        env["MEDCYCLE_CONFIG"] = str(Path(config_file).resolve())
    return env


def runs_for_task(platform: Platform, task_id: str) -> list[str]:
    """Ids of the runs started inside task ``task_id``, oldest first."""
    with platform.session(write=False) as session:
        return list(session.scalars(
            select(RunRow.id).join(RunTagRow, RunTagRow.run_id == RunRow.id)
            .where(RunTagRow.key == TASK_TAG, RunTagRow.value == task_id).order_by(RunRow.started_at)))


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def spawn(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, killed by the kernel when this process dies (Linux).

    The kernel signals the child when the *thread* that started it ends, so call this from a thread that waits
    for the child (as :func:`run_child` does).
    """
    libc, parent = _libc(), os.getpid()

    def in_child() -> None:  # runs between fork and exec: no locks, no allocation-heavy work
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the agent died before prctl took effect
            os._exit(137)

    try:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=in_child)
    except FileNotFoundError as exc:
        raise TaskSetupFailed(f"the task's program {argv[0]!r} was not found on this machine",
                              hint="Install it for the agent, or name it by a path inside the repository.") from exc
    except PermissionError as exc:
        raise TaskSetupFailed(f"the task's program {argv[0]!r} cannot be executed",
                              hint="Make it executable (chmod +x, then commit) or run it through python.") from exc


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pump(stream: IO[bytes], log: Path, echo: Echo | None) -> threading.Thread:
    def run() -> None:
        with log.open("ab") as out:
            while chunk := stream.read1(65536):  # type: ignore[attr-defined]
                out.write(chunk)
                out.flush()
                if echo is not None:
                    with contextlib.suppress(Exception):
                        echo(chunk)

    thread = threading.Thread(target=run, name="medcycle-task-log", daemon=True)
    thread.start()
    return thread


def _stop(proc: subprocess.Popen[bytes], grace: float, docker_name: str | None) -> int:
    if docker_name is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["docker", "kill", docker_name], capture_output=True, timeout=30, check=False)
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        return proc.wait()


def run_child(argv: list[str], cwd: Path, env: dict[str, str], log: Path, stop: StopSignal, *,
              timeout_s: float | None, grace: float, echo: Echo | None = None,
              docker_name: str | None = None) -> tuple[int, Outcome | None]:
    """Run the child to its end or until ``stop``/the timeout; returns its exit status and why it was stopped."""
    proc = spawn(argv, cwd, env)
    assert proc.stdout is not None
    pump = _pump(proc.stdout, log, echo)
    deadline = time.monotonic() + timeout_s if timeout_s else None
    stopped: Outcome | None = None
    try:
        while True:
            try:
                code = proc.wait(0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if stop.is_set():
                stopped = stop.reason
            elif deadline is not None and time.monotonic() > deadline:
                stopped = Outcome.TIMED_OUT
            if stopped is not None:
                code = _stop(proc, grace, docker_name)
                break
    except BaseException:  # Ctrl-C in `run reproduce`: the child (in its own session) would not see it
        _stop(proc, grace, docker_name)
        raise
    finally:
        _kill_group(proc.pid, signal.SIGKILL)  # what the command left running in its group ends with it
        pump.join(10)
        proc.stdout.close()
    return code, stopped


def _child_env(spec: TaskSpec, task_id: str, base: dict[str, str], gpus: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(spec.env)
    env.update(base)
    env.update({"MEDCYCLE_TASK_ID": task_id, "MEDCYCLE_PARAMS": json.dumps(spec.params, sort_keys=True, default=str),
                "MEDCYCLE_PROJECT": spec.project, "PYTHONUNBUFFERED": "1"})
    for key, value in (("MEDCYCLE_HYPOTHESIS", spec.hypothesis), ("MEDCYCLE_SEED", spec.seed)):
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    return env


def _store_outputs(platform: Platform, cwd: Path, tree: Path, wanted: list[str]) -> tuple[dict[str, str], list[str]]:
    """Store each declared output (a file, or every file under a folder) by digest."""
    outputs: dict[str, str] = {}
    missing: list[str] = []
    for rel in wanted:
        path = (cwd / rel).resolve()
        if path != tree and tree not in path.parents:
            missing.append(rel)
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
        if not files:
            missing.append(rel)
        for file in files:
            outputs[os.path.relpath(file, cwd)] = platform.objects.put(file).digest
    return outputs, missing


def _last_line(log: Path, limit: int = 300) -> str:
    """The log's last non-empty line (often the exception), for the job's error."""
    with log.open("rb") as fh:
        fh.seek(max(0, log.stat().st_size - 8192))
        lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


def execute(platform: Platform, spec: TaskSpec, task_id: str, options: ExecOptions,
            stop: StopSignal | None = None) -> TaskOutcome:
    """Run ``spec`` as task ``task_id`` on this machine; see the module docstring.

    Raises:
        TaskSetupFailed: the tree, environment or data could not be made (nothing ran).
        MedcycleError: the store failed.
    """
    stop = stop or StopSignal()
    started = time.monotonic()
    root = options.workdir.resolve()
    work = root / "work" / f"{task_id[:16]}-{uuid.uuid4().hex[:6]}"
    work.mkdir(parents=True)
    log = work / "task.log"
    log.touch()
    result: dict[str, Any] = {"exit_code": None, "run_id": None, "outputs": {}, "log_digest": None,
                              "task_id": task_id, "agent": options.name}
    try:
        tree_path = work / "tree"
        tree = materialize(platform.objects, spec.code, tree_path, root / "repos")
        cwd = command_dir(tree_path, spec.code)
        penv = prepare_env(options.env_mode, root / "envs", platform.objects, spec.packages_hash,
                           spec.packages_digest)
        pulled = pull_all(platform, list(spec.datasets), options.data_dir or platform.settings.home / "pulls",
                          actor=f"agent:{options.name}")
        env = _child_env(spec, task_id, options.child_env if options.child_env is not None
                         else settings_env(platform.settings), options.gpus)
        env.update({p.env: p.path for p in pulled})
        if penv.prefix is not None:
            env.update(VIRTUAL_ENV=penv.prefix, PATH=f"{penv.prefix}/bin{os.pathsep}{env.get('PATH', '')}")
            env.pop("PYTHONHOME", None)
        argv = resolve_argv(spec.command, penv.python, env, container=options.docker is not None)
        docker_name = None
        if options.docker:
            docker_name = f"medcycle-task-{task_id[:16]}-{uuid.uuid4().hex[:6]}"
            argv = docker_argv(options.docker, argv, name=docker_name, tree=tree_path, cwd=cwd, env=env,
                               mounts=[Path(p.path) for p in pulled] + [platform.settings.home], gpus=options.gpus)
        result.update(argv=argv, cwd=str(cwd), tree=tree.to_dict(), env=penv.to_dict(),
                      datasets=[p.to_dict() for p in pulled])
        if stop.is_set():  # cancelled (or the agent told to stop) while the task was being prepared
            code, stopped = -1, stop.reason
        else:
            code, stopped = run_child(argv, cwd, env, log, stop, timeout_s=spec.timeout_s, grace=options.stop_grace_s,
                                      echo=options.echo, docker_name=docker_name)
        result["exit_code"] = code
        info = platform.objects.put(log)
        result["log_digest"] = info.digest
        digests = [info.digest]
        result["run_ids"] = runs_for_task(platform, task_id)
        result["run_id"] = result["run_ids"][0] if result["run_ids"] else None
        result["seconds"] = round(time.monotonic() - started, 3)
        if stopped is not None:
            error = f"timed out after {spec.timeout_s or 0:.0f} s" if stopped is Outcome.TIMED_OUT else None
            result["outcome"] = stopped.value
            return TaskOutcome(stopped, result, error, digests)
        outputs, missing = _store_outputs(platform, cwd, tree_path.resolve(), list(spec.outputs))
        result.update(outputs=outputs, missing_outputs=missing)
        digests += list(outputs.values())
        if code != 0:
            last = _last_line(log)
            outcome, error = Outcome.FAILED, f"the command exited with status {code}" + (f": {last}" if last else "")
        elif missing:
            outcome, error = Outcome.FAILED, f"declared output(s) not written: {', '.join(missing)}"
        else:
            outcome, error = Outcome.FINISHED, None
        result["outcome"] = outcome.value
        return TaskOutcome(outcome, result, error, digests)
    finally:
        if not options.keep_work:
            shutil.rmtree(work, ignore_errors=True)
