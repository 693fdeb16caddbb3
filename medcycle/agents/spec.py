"""The task an agent executes: the contract between ``run enqueue``, pipelines and ``agent start``.

A task is a job payload on a :mod:`medcycle.jobs` queue (kind ``"task"``). It names code by commit plus the
captured uncommitted diff (an object digest), never by a path on the submitter's machine alone, so an agent
on another machine can rebuild the exact tree. Datasets are named ``NAME@TAG`` (or a version digest) and are
pulled by the agent into its shared cache; outputs listed in ``outputs`` are stored by digest after the
command exits and returned in the job result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from medcycle.errors import ValidationFailed

TASK_KIND = "task"
SPEC_VERSION = 1


@dataclass(frozen=True, slots=True)
class CodeRef:
    """Where the code comes from: a git remote (or a local repository path) at a commit, plus a diff."""

    commit: str | None = None
    remote: str | None = None  # URL or local path of a repository the agent can clone/fetch from
    branch: str | None = None
    diff_digest: str | None = None  # object digest of the uncommitted diff (``git apply`` on the commit)
    workdir: str = "."  # the command's working directory, relative to the repository root
    bundle_digest: str | None = None  # object digest of a ``git bundle`` of the commits no remote branch has
    untracked_digest: str | None = None  # object digest of a tar.gz of untracked files the command needs


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One unit of work for an agent."""

    command: list[str]
    project: str = "default"
    name: str | None = None
    code: CodeRef | None = None
    env: dict[str, str] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)  # NAME@TAG; exposed as MEDCYCLE_DATASET_<NAME> paths
    params: dict[str, Any] = field(default_factory=dict)  # exposed as MEDCYCLE_PARAMS (JSON)
    hypothesis: str | None = None
    outputs: list[str] = field(default_factory=list)  # paths relative to the workdir, stored by digest after
    timeout_s: float | None = None
    reproduces: str | None = None  # the run id this task re-executes (``run reproduce``)
    pipeline: dict[str, Any] | None = None  # {"run": pipeline run id, "step": step name} for pipeline steps
    seed: int | None = None  # exposed as MEDCYCLE_SEED (``run reproduce`` passes the original run's seed)
    packages_hash: str | None = None  # SHA-256 of the submitter's package freeze: the key of ``--env venv``
    packages_digest: str | None = None  # object digest of that freeze (``name==version`` lines)

    def to_payload(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = TASK_KIND
        data["spec_version"] = SPEC_VERSION
        return data

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TaskSpec:
        if payload.get("kind") != TASK_KIND:
            raise ValidationFailed(f"job payload is not a task (kind={payload.get('kind')!r})",
                                   hint="Only enqueue tasks with medcycle run enqueue or a pipeline.")
        data = {k: v for k, v in payload.items() if k not in {"kind", "spec_version"}}
        command = data.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise ValidationFailed("task command must be a non-empty list of strings",
                                   hint="Give the command as an argv list, e.g. ['python', 'train.py'].")
        code = data.get("code")
        try:
            return cls(**{**data, "code": CodeRef(**code) if isinstance(code, dict) else None})
        except TypeError as exc:
            raise ValidationFailed(f"task payload has unknown or missing fields: {exc}",
                                   hint="Submit tasks with a matching medcycle version.") from exc
