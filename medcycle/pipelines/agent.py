"""The agent executor: each step that must execute becomes a task on a queue, run by ``medcycle agent start``.

When a run starts, the pipeline's code is captured once (commit, uncommitted diff, unpushed commits as a
bundle, untracked step files — :func:`medcycle.agents.code.capture_code`) with the package freeze. Each step
is then submitted as a :class:`~medcycle.agents.spec.TaskSpec`:

* ``command``: ``python -m medcycle.pipelines.stage --input PATH=DIGEST ... -- <the step's command>``, which
  places the outputs of earlier steps the step reads before running it (:mod:`medcycle.pipelines.stage`);
* ``datasets``: each resolved to ``NAME@<version id>``, so the agent pulls exactly the version the cache key
  covers; ``params``, ``env``, ``outputs`` and ``timeout_s`` as declared;
* ``pipeline``: ``{"run": RUN ID, "step": NAME, "key": CACHE KEY}``; the idempotency key is the run, step and
  cache key, so a retried submission never queues the step twice.

The executor waits for the job and maps its result (``exit_code``, ``outputs``, ``log_digest``, ``run_id``)
onto a :class:`~medcycle.pipelines.executors.StepResult`. An interrupted pipeline cancels the jobs it waits for.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from medcycle.errors import MedcycleError
from medcycle.jobs.base import JobState, check_queue_name
from medcycle.pipelines import keys
from medcycle.pipelines.executors import Executor, StepResult, StepTask
from medcycle.pipelines.stage import wrap

if TYPE_CHECKING:
    from medcycle.agents.spec import CodeRef, TaskSpec
    from medcycle.pipelines.spec import PipelineSpec
    from medcycle.platform import Platform

DEFAULT_WAIT_S = 7 * 24 * 3600.0
POLL_SLICE_S = 2.0


class AgentExecutor(Executor):
    """Submits steps to ``queue`` and waits for an agent to run them (see the module docstring)."""

    name = "agent"

    def __init__(self, platform: Platform, *, queue: str, priority: int = 0, wait_s: float = DEFAULT_WAIT_S) -> None:
        self.platform = platform
        self._queue = check_queue_name(queue)
        self.queue = self._queue
        self.priority = priority
        self.wait_s = wait_s
        self.code: CodeRef | None = None
        self.packages: tuple[str, str] | None = None  # (hash, object digest) of the package freeze
        self._stopping = threading.Event()
        self._jobs: set[str] = set()
        self._lock = threading.Lock()

    def prepare(self, spec: PipelineSpec) -> None:
        """Capture the code every step needs, once per run (a problem with it fails before anything runs)."""
        from medcycle.agents.code import capture_code
        from medcycle.experiments.capture import package_freeze

        files: set[str] = set()
        for step in spec.steps:
            files.update(keys.code_files(spec.code_root, step.files, step.command))
        capture = capture_code(self.platform.objects, spec.code_root,
                               required=[spec.code_root / f for f in sorted(files)])
        self.code = capture.code
        freeze, packages_hash = package_freeze()
        self.packages = (packages_hash, self.platform.objects.put(freeze).digest)

    def task_spec(self, task: StepTask) -> TaskSpec:
        """The agent task for ``task`` (see the module docstring)."""
        from medcycle.agents.spec import TaskSpec

        packages_hash, packages_digest = self.packages or (None, None)
        return TaskSpec(
            command=wrap(task.command, task.inputs, run=task.run_id, step=task.step), project=task.project,
            name=f"{task.pipeline}/{task.step}", code=self.code, env=dict(task.env),
            datasets=list(task.datasets.values()), params=dict(task.params), outputs=list(task.outputs.values()),
            timeout_s=task.timeout_s, pipeline={"run": task.run_id, "step": task.step, "key": task.key},
            packages_hash=packages_hash, packages_digest=packages_digest,
        )

    def execute(self, task: StepTask) -> StepResult:
        from medcycle.agents.errors import WaitTimedOut
        from medcycle.agents.submit import submit, wait

        job = submit(self.platform, self.task_spec(task), queue=self._queue, priority=self.priority,
                     idempotency_key=f"pipeline:{task.run_id}:{task.step}:{task.key[:16]}")
        with self._lock:
            self._jobs.add(job.id)
        waited = 0.0
        try:
            while True:
                if self._stopping.is_set():
                    return StepResult(None, job_id=job.id, error="interrupted")
                try:
                    job = wait(self.platform, job.id, timeout=min(POLL_SLICE_S, self.wait_s - waited))
                    break
                except WaitTimedOut:
                    waited += POLL_SLICE_S
                    if waited >= self.wait_s:
                        return StepResult(None, job_id=job.id,
                                          error=f"task {job.id} not finished after {self.wait_s:g} s (it goes on)")
        finally:
            with self._lock:
                self._jobs.discard(job.id)
        return self.result(job.id, job.state, job.result, job.error)

    @staticmethod
    def result(job_id: str, state: JobState, result: dict[str, Any] | None, error: str | None) -> StepResult:
        """A finished job as a step result."""
        data = result or {}
        exit_code = data.get("exit_code")
        outputs = {str(k): str(v) for k, v in (data.get("outputs") or {}).items()}
        failed = None
        if state is not JobState.SUCCEEDED:
            failed = f"task {job_id} {state.value}" + (f": {error}" if error else "")
        elif exit_code != 0:
            failed = f"task {job_id} exited with status {exit_code}"
        return StepResult(exit_code if isinstance(exit_code, int) else None, outputs, data.get("log_digest"),
                          job_id=job_id, run_id=data.get("run_id"), error=failed)

    def stop(self) -> None:
        """Stop waiting and cancel the jobs still queued or running (the pipeline was interrupted)."""
        self._stopping.set()
        with self._lock:
            jobs = list(self._jobs)
        for job_id in jobs:
            try:
                self.platform.jobs.cancel(job_id)
            except MedcycleError:
                continue
