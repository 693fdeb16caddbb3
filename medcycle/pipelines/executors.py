"""How a step is executed: the :class:`Executor` interface and the local executor.

The runner hands an executor a :class:`StepTask` — the command with its references resolved, the code files
it may read, the other steps' outputs it reads (work-folder path → object digest), its dataset versions
(resolved to immutable ids), params and declared outputs — and gets a :class:`StepResult` back, in the shape
an agent's finished job reports (``exit_code``, ``outputs`` as ``{path: digest}``, ``log_digest``, run id).

:class:`LocalExecutor` runs the command as a subprocess in a fresh temporary folder holding exactly the
step's declared code files and inputs (so a step cannot quietly read a file its cache key does not cover),
pulls its datasets, stores the declared outputs and the combined stdout/stderr by digest, and removes the
folder. :class:`medcycle.pipelines.agent.AgentExecutor` sends the same task to an agent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcycle.agents.executor import runs_for_task, settings_env
from medcycle.errors import MedcycleError, UsageError
from medcycle.pipelines.references import expand_env
from medcycle.pipelines.spec import DATASET_ENV_PREFIX, dataset_env

if TYPE_CHECKING:
    from medcycle.pipelines.spec import PipelineSpec
    from medcycle.platform import Platform

LOG_TAIL_BYTES = 2000
TASK_ID_VAR = "MEDCYCLE_TASK_ID"  # start_run tags its run with it, so the step's tracked run can be found
PYTHON_NAMES = frozenset({"python", "python3"})


@dataclass(frozen=True, slots=True)
class StepTask:
    """Everything an executor needs to run one step (references already resolved)."""

    run_id: str
    pipeline: str
    project: str
    step: str
    key: str
    command: tuple[str, ...]
    code_root: Path
    files: tuple[str, ...] = ()  # code files, relative to code_root
    inputs: dict[str, str] = field(default_factory=dict)  # work-folder path -> object digest
    datasets: dict[str, str] = field(default_factory=dict)  # dataset name -> NAME@<version id>
    params: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # key -> work-folder path
    timeout_s: float | None = None

    @property
    def task_id(self) -> str:
        """What a run started inside the step is tagged ``task_id`` with (on an agent: the job id)."""
        return f"{self.run_id}.{self.step}"

    def pipeline_env(self) -> dict[str, str]:
        """Variables every step sees, on any executor (datasets come on top, where they are pulled)."""
        return {**self.env, "MEDCYCLE_PIPELINE_RUN": self.run_id, "MEDCYCLE_PIPELINE_STEP": self.step,
                "MEDCYCLE_PARAMS": json.dumps(self.params, sort_keys=True)}


@dataclass(frozen=True, slots=True)
class StepResult:
    """What an execution produced. ``outputs`` maps the work-folder paths written to their digests."""

    exit_code: int | None
    outputs: dict[str, str] = field(default_factory=dict)
    log_digest: str | None = None
    job_id: str | None = None
    run_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None


class Executor(ABC):
    """Runs steps. ``prepare`` is called once per pipeline run before any step; ``execute`` may be called
    from several threads at once (one per step running in parallel)."""

    name: str = "executor"
    queue: str | None = None

    def prepare(self, spec: PipelineSpec) -> None:  # noqa: B027 - optional hook, most executors need nothing
        """Per-run set-up (the agent executor records the code's commit and diff here)."""

    @abstractmethod
    def execute(self, task: StepTask) -> StepResult:
        """Run the step; failures of the command are a result (exit code, error), not an exception."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """The pipeline was interrupted: end what is executing now (called from another thread)."""


def log_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return ("…" if size > limit else "") + text.strip()


class LocalExecutor(Executor):
    """Runs each step as a subprocess on this machine, in a temporary folder removed afterwards.

    ``python``/``python3`` as the first argument means the interpreter medcycle runs on, so a step uses the
    same environment as the pipeline (``medcycle`` means ``python -m medcycle``, as on an agent). The
    subprocess gets this platform's store settings in ``MEDCYCLE_*`` variables (as an agent's child does), so
    a step that tracks a run or reads the catalog talks to the same platform. A run the step starts with
    :func:`medcycle.start_run` is tagged with the step's task id and recorded as the step's run.
    """

    name = "local"

    def __init__(self, platform: Platform, *, work_root: Path | None = None, actor: str = "system",
                 via: str = "library") -> None:
        self.platform = platform
        self.work_root = work_root
        self.actor = actor
        self.via = via
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _kill_group(proc)

    def _base_env(self) -> dict[str, str]:

        inherited = {k: v for k, v in os.environ.items() if not k.startswith(DATASET_ENV_PREFIX)}
        return {**inherited, **settings_env(self.platform.settings), "PYTHONUNBUFFERED": "1"}

    def execute(self, task: StepTask) -> StepResult:
        if self.work_root is not None:
            self.work_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"medcycle-step-{task.step}-", dir=self.work_root) as tmp:
            top = Path(tmp)
            work = top / "work"
            work.mkdir()
            log_path = top / "step.log"
            try:
                env = {**self._base_env(), **self._materialise(task, top, work)}
            except MedcycleError as exc:
                return StepResult(None, error=f"could not prepare the step: {exc.message}")
            exit_code, error = self._run(task, work, env, log_path)
            log_digest = self.platform.objects.put(log_path).digest
            tracked = runs_for_task(self.platform, env[TASK_ID_VAR])
            outputs: dict[str, str] = {}
            if exit_code == 0:
                for rel in task.outputs.values():
                    if (work / rel).is_file():
                        outputs[rel] = self.platform.objects.put(work / rel).digest
            if error is None and exit_code != 0:
                tail = log_tail(log_path)
                error = f"exit code {exit_code}" + (f"; output ends with:\n{tail}" if tail else "")
            return StepResult(exit_code, outputs, log_digest, run_id=tracked[0] if tracked else None, error=error)

    def _materialise(self, task: StepTask, top: Path, work: Path) -> dict[str, str]:
        """Copy the code files, fetch the inputs, pull the datasets; returns the step's variables."""
        for rel in task.files:
            dest = work / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(task.code_root / rel, dest)
        for rel, digest in task.inputs.items():
            self.platform.objects.get_to_path(digest, work / rel)
        env = {**task.pipeline_env(), "MEDCYCLE_PROJECT": task.project, TASK_ID_VAR: task.task_id}
        if task.datasets:
            from medcycle.agents.data import pull_dataset

            for name, ref in task.datasets.items():  # into the shared folder agents and `train run` use
                pulled = pull_dataset(self.platform, ref, self.platform.settings.home / "pulls", actor=self.actor)
                env[dataset_env(name)] = pulled.path
        return env

    def _run(self, task: StepTask, work: Path, env: dict[str, str], log_path: Path) -> tuple[int | None, str | None]:
        try:
            argv = local_argv(task.command, env)
        except UsageError as exc:
            return None, exc.message
        with log_path.open("wb") as log:
            try:
                proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                return 127, f"cannot start {argv[0]!r}: {exc.strerror or exc}"
            with self._lock:
                self._procs.add(proc)
            try:
                if self._stopping.is_set():
                    _kill_group(proc)
                code = proc.wait(timeout=task.timeout_s)
                return code, "interrupted" if self._stopping.is_set() else None
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return proc.wait(), f"timed out after {task.timeout_s:g} s"
            except BaseException:
                _kill_group(proc)
                proc.wait()
                raise
            finally:
                with self._lock:
                    self._procs.discard(proc)


def local_argv(command: tuple[str, ...] | list[str], env: dict[str, str]) -> list[str]:
    """The argv to run here: ``python``/``python3`` is this interpreter, ``medcycle`` is ``python -m medcycle``
    (as on an agent), and ``${MEDCYCLE_...}`` is replaced from the step's environment."""
    try:
        rest = [expand_env(a, env) for a in command[1:]]
        head = expand_env(command[0], env)
    except KeyError as exc:
        raise UsageError(f"the command names ${{{exc.args[0]}}}, which this step does not set",
                         hint="Datasets are MEDCYCLE_DATASET_<NAME> for the step's inputs.datasets.") from None
    if head in PYTHON_NAMES:
        return [sys.executable, *rest]
    if head == "medcycle":
        return [sys.executable, "-m", "medcycle", *rest]
    return [head, *rest]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
