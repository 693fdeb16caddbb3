"""``medcycle run enqueue``: turn a training config or any command into a task, capture its code, submit it.

A single argument ending in ``.json``, ``.toml``, ``.yaml`` or ``.yml`` that names a file is a training config:
it is validated here (a bad config fails now, not on the agent) and the task runs ``medcycle train run CONFIG``
with the config's dataset version pulled by the agent into its shared folder (``--to ${MEDCYCLE_DATASET_X}``).
Anything else is a command, run as given in the same folder relative to the repository root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcycle.agents.code import CodeCapture, argv_files, capture_code
from medcycle.agents.data import env_name, resolve_ref
from medcycle.agents.spec import TaskSpec
from medcycle.agents.submit import submit
from medcycle.errors import UsageError
from medcycle.experiments.capture import package_freeze
from medcycle.jobs.base import Job
from medcycle.platform import Platform

CONFIG_SUFFIXES = (".json", ".toml", ".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Enqueued:
    job: Job
    spec: TaskSpec
    capture: CodeCapture

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job.id, "job": self.job.to_dict(), "task": self.spec.to_payload(),
                "code": self.capture.to_dict()}


def is_config(args: Sequence[str], cwd: Path) -> bool:
    return len(args) == 1 and args[0].lower().endswith(CONFIG_SUFFIXES) and (cwd / args[0]).is_file()


def _dataset_envs(platform: Platform, refs: Sequence[str]) -> dict[str, str]:
    """Each dataset ref → its ``MEDCYCLE_DATASET_<NAME>`` (resolving them now: a typo fails at submission)."""
    with platform.session(write=False) as session:
        return {ref: env_name(resolve_ref(session, ref).dataset) for ref in refs}


def build_task(platform: Platform, args: Sequence[str], *, cwd: Path, project: str | None = None,
               hypothesis: str | None = None, datasets: Sequence[str] = (), outputs: Sequence[str] = (),
               params: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
               include: Sequence[Path] = (), name: str | None = None, timeout_s: float | None = None,
               seed: int | None = None) -> tuple[TaskSpec, CodeCapture]:
    """The task for ``args`` (a config file, or a command) run from ``cwd``, with its code captured and stored.

    Raises:
        UsageError: no command; a config that does not validate; an unknown dataset version; code that cannot
            travel (see :func:`medcycle.agents.code.capture_code`).
    """
    if not args:
        raise UsageError("nothing to run", hint="Pass a training config, or a command after `--`: "
                         "medcycle run enqueue --queue gpu -- python train.py --lr 0.01")
    cwd = cwd.resolve()
    task_params: dict[str, Any] = {}
    required = [Path(p) if Path(p).is_absolute() else cwd / p for p in include]
    envs = _dataset_envs(platform, datasets)
    if is_config(args, cwd):
        from medcycle.training.config import load_config

        path = (cwd / args[0]).resolve()
        config = load_config(path)
        refs = list(datasets) or ([config.data.dataset] if config.data.dataset else [])
        if len(refs) > 1:
            raise UsageError("a training config reads one dataset version", hint="Pass --dataset once.")
        envs = _dataset_envs(platform, refs)
        command = ["medcycle", "train", "run", os.path.relpath(path, cwd)]
        for ref in refs:
            command += ["--dataset", ref, "--to", f"${{{envs[ref]}}}"]
        for key, value in (("project", project), ("hypothesis", hypothesis)):
            if value:
                command += ["--set", f"tracking.{key}={value}"]
        task_params = config.params()
        project, hypothesis = project or config.tracking.project, hypothesis or config.tracking.hypothesis
        datasets, required, files = refs, [path, *required], []
    else:
        command, files = list(args), argv_files(args, cwd)
    capture = capture_code(platform.objects, cwd, files=files, required=required)
    freeze, packages_hash = package_freeze()
    spec = TaskSpec(command=command, project=project or "default", name=name, code=capture.code,
                    env=dict(env or {}), datasets=list(datasets), params={**task_params, **(params or {})},
                    hypothesis=hypothesis, outputs=list(outputs), timeout_s=timeout_s, seed=seed,
                    packages_hash=packages_hash, packages_digest=platform.objects.put(freeze).digest)
    return spec, capture


def enqueue(platform: Platform, args: Sequence[str], *, queue: str, cwd: Path | None = None, priority: int = 0,
            idempotency_key: str | None = None, **options: Any) -> Enqueued:
    """Build the task (see :func:`build_task`) and submit it; returns the job, the spec and the code capture."""
    spec, capture = build_task(platform, args, cwd=cwd or Path.cwd(), **options)
    job = submit(platform, spec, queue=queue, priority=priority, idempotency_key=idempotency_key)
    return Enqueued(job=job, spec=spec, capture=capture)
