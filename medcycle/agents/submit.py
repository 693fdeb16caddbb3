"""Submitting tasks to a queue and waiting for them: what ``run enqueue``, ``run reproduce`` and pipelines call.

A finished task's result (``job.result``, or :func:`task_result`) is a dict with at least::

    {"exit_code": int, "run_id": str | None, "outputs": {relative path: object digest}, "log_digest": str}

A task whose command exits non-zero (or leaves a declared output unwritten, or runs past its timeout) ends
``failed`` — so ``medcycle jobs requeue`` can retry it — and its result is stored as an object named in the
job's error (``... (result <digest>)``); :func:`wait` and :func:`task_result` read it back, so callers get
the same dict for both states.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import PurePosixPath
from typing import Any

from medcycle.agents.errors import WaitTimedOut
from medcycle.agents.spec import TaskSpec
from medcycle.errors import MedcycleError, UsageError
from medcycle.jobs.base import Job, JobState
from medcycle.objects.refs import add_ref
from medcycle.platform import Platform

REF_KIND = "task"  # object_refs owner kind: keeps a task's code, log and outputs from `store gc`
_RESULT_RE = re.compile(r"\(result ([0-9a-f]{64})\)$")


def task_objects(spec: TaskSpec) -> list[str]:
    """Digests of the objects a task needs (diff, bundle, untracked files, package freeze)."""
    code = spec.code
    found = [code.diff_digest, code.bundle_digest, code.untracked_digest] if code is not None else []
    return [d for d in (*found, spec.packages_digest) if d]


def check_spec(spec: TaskSpec) -> TaskSpec:
    """The spec as an agent will read it back; refuses what an agent could not run.

    Raises:
        ValidationFailed: bad command, unknown fields.
        UsageError: an output path that is absolute or leaves the working directory; a ``MEDCYCLE_`` variable
            in ``env`` (the agent sets those).
    """
    spec = TaskSpec.from_payload(json.loads(json.dumps(spec.to_payload())))
    for rel in spec.outputs:
        parts = PurePosixPath(rel).parts
        if not rel or PurePosixPath(rel).is_absolute() or ".." in parts:
            raise UsageError(f"output {rel!r} must be a path inside the task's working directory",
                             hint="Give outputs relative to where the command runs, e.g. out/model.pt.")
    reserved = sorted(k for k in spec.env if k.startswith("MEDCYCLE_"))
    if reserved:
        raise UsageError(f"task environment variable {reserved[0]} is set by the agent",
                         hint="Pass params (MEDCYCLE_PARAMS) or datasets instead of MEDCYCLE_* variables.")
    return spec


def record_refs(platform: Platform, job_id: str, digests: list[str]) -> None:
    if not digests:
        return
    with platform.session() as session:
        for digest in dict.fromkeys(digests):
            add_ref(session, digest, REF_KIND, job_id)


def submit(platform: Platform, spec: TaskSpec, *, queue: str, priority: int = 0,
           idempotency_key: str | None = None) -> Job:
    """Enqueue ``spec`` on ``queue`` (higher ``priority`` first); the same ``idempotency_key`` returns the
    first job enqueued with it.

    The objects the task names must already be stored (:func:`medcycle.agents.code.capture_code` does it).

    Raises:
        ValidationFailed, UsageError: see :func:`check_spec`; a bad queue name.
        QueueFull: the queue is at its bound (retry after ``retry_after`` seconds).
    """
    spec = check_spec(spec)
    job = platform.jobs.enqueue(queue, spec.to_payload(), priority=priority, idempotency_key=idempotency_key)
    record_refs(platform, job.id, task_objects(spec))
    return job


def failure_error(message: str, result_digest: str) -> str:
    """The error a failed task's job carries: the reason and the digest of its stored result."""
    return f"{message} (result {result_digest})"


def task_result(platform: Platform, job: Job) -> dict[str, Any] | None:
    """The task's result dict: ``job.result`` when it succeeded, the stored one when its command failed."""
    if job.result is not None:
        return job.result
    match = _RESULT_RE.search(job.error or "")
    if match is None:
        return None
    try:
        data = json.loads(platform.objects.get(match.group(1)))
    except (MedcycleError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def wait(platform: Platform, job_id: str, *, timeout: float) -> Job:
    """Poll until job ``job_id`` is finished (succeeded, failed, dead or cancelled) and return it, with
    ``result`` filled in for a failed command (see the module docstring).

    Raises:
        NotFound: no such job.
        WaitTimedOut: still queued or running after ``timeout`` seconds (it goes on).
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    pause = 0.05
    while True:
        job = platform.jobs.get(job_id)
        if job.state.finished:
            if job.result is None and job.state is JobState.FAILED:
                job.result = task_result(platform, job)
            return job
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimedOut(f"task {job_id} is still {job.state.value} after {timeout:g} s",
                               hint=f"Wait longer, watch it with `medcycle jobs show {job_id}`, or cancel it with "
                                    f"`medcycle jobs cancel {job_id}`.", job_id=job_id, state=job.state.value)
        time.sleep(min(pause, remaining))
        pause = min(pause * 1.5, 1.0)
