"""``medcycle run reproduce``: re-execute a finished run from its capture and compare final metric values.

A run that an agent executed (tagged ``task_id``) is re-run as its task again — the same code reference (bundle
of unpushed commits and untracked files included), command, datasets, params and environment — and compared
with the run at the same position among the new task's runs. Any other run is rebuilt from what it recorded:
commit, remote, branch and uncommitted diff; the entry point and its arguments (``python script.py ...``,
``python -m module ...`` or ``medcycle ...``, with paths inside the repository made relative); params, seed,
the environment variables that change numerics (allow-listed), the package freeze and the dataset version
digest.
The new run executes on this machine through the agent's executor, or on an agent with ``queue``. Final values
are compared for every metric but resource samples and wall-clock durations (:data:`DEFAULT_IGNORE`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medcycle.agents.executor import TASK_TAG, ExecOptions, execute, runs_for_task
from medcycle.agents.spec import CodeRef, TaskSpec
from medcycle.agents.submit import record_refs, submit, task_result, wait
from medcycle.errors import MedcycleError, UsageError
from medcycle.experiments.runs import RunDetail, get_run
from medcycle.platform import Platform
from medcycle.store.base import new_id

#: Captured variables that place work rather than change numbers: not carried over to the re-run.
PLACEMENT_ENV = {"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "MEDCYCLE_HOME", "SLURM_JOB_ID", "MASTER_ADDR",
                 "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NCCL_DEBUG"}
_OPTIONS_WITH_VALUE = {"-X", "-W", "-Q"}
#: Metrics left out of the comparison by default: resource samples and wall-clock durations are not results.
DEFAULT_IGNORE = ("system/*", "*seconds*")


@dataclass(frozen=True, slots=True)
class MetricDelta:
    key: str
    original: float | None
    reproduced: float | None
    delta: float | None
    within: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in asdict(self).items()}


@dataclass
class Reproduction:
    original: str
    reproduction: str | None
    task_id: str
    tolerance: float
    exit_code: int | None
    outcome: str | None
    log_digest: str | None
    metrics: list[MetricDelta] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    queued: bool = False
    ignored: list[str] = field(default_factory=list)

    @property
    def differing(self) -> list[MetricDelta]:
        return [m for m in self.metrics if not m.within]

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.reproduction is not None and not self.differing

    def to_dict(self) -> dict[str, Any]:
        return {"original": self.original, "reproduction": self.reproduction, "task_id": self.task_id,
                "queued": self.queued, "tolerance": self.tolerance, "exit_code": self.exit_code,
                "outcome": self.outcome, "log_digest": self.log_digest, "ok": self.ok,
                "metrics": [m.to_dict() for m in self.metrics], "differing": [m.key for m in self.differing],
                "ignored": self.ignored, "warnings": self.warnings}


def _inside(path: str, root: str) -> bool:
    return os.path.abspath(path) == root or os.path.abspath(path).startswith(root.rstrip("/") + "/")


def entry_command(entry: dict[str, Any], root: str) -> tuple[list[str], str]:
    """The command and working directory (relative to ``root``) that re-run a captured entry point."""
    argv = [str(a) for a in entry.get("argv") or []]
    orig = [str(a) for a in entry.get("orig_argv") or argv]
    cwd = str(entry.get("cwd") or root)
    base = cwd if _inside(cwd, root) else root
    workdir = os.path.relpath(base, root)

    def rel(arg: str) -> str:
        return os.path.relpath(arg, base) if os.path.isabs(arg) and _inside(arg, root) else arg

    rest = [rel(a) for a in argv[1:]]
    i = 1
    while i < len(orig) and orig[i].startswith("-") and orig[i] not in ("-m", "-c", "-"):
        i += 2 if orig[i] in _OPTIONS_WITH_VALUE else 1
    if i + 1 < len(orig) and orig[i] == "-m":
        return ["python", "-m", orig[i + 1], *rest], workdir
    if i < len(orig) and orig[i] in ("-c", "-"):
        raise UsageError("the run was started from `python -c` or standard input, which was not captured",
                         hint="Start runs from a script in the repository to make them reproducible.")
    script = entry.get("script_in_repo")
    if script:
        return ["python", os.path.relpath(os.path.join(root, script), base), *rest], workdir
    if argv and Path(argv[0]).name == "medcycle":
        return ["medcycle", *rest], workdir
    raise UsageError(f"the run's entry point {argv[0] if argv else '?'!r} is not in its repository",
                     hint="Only runs started from a script in the repository (or `medcycle ...`) can be re-run.")


def _code(detail: RunDetail, git: dict[str, Any], workdir: str) -> tuple[CodeRef, list[str]]:
    """The run's code from its capture: commit, remote (or the repository on this machine), branch, diff."""
    warnings = []
    root = str(git["root"])
    local = (Path(root) / ".git").exists()
    remote = git.get("remote")
    if local and (not git.get("pushed") or remote is None):
        remote = root  # the commit may exist only here: fetch it from the repository itself
    if not git.get("pushed") and not local:
        warnings.append(f"commit {git['commit'][:12]} was never pushed and {root} is not on this machine")
    if git.get("untracked"):
        warnings.append(f"{len(git['untracked'])} untracked file(s) of the original tree were not captured "
                        f"(e.g. {git['untracked'][0]})")
    return CodeRef(commit=git["commit"], remote=remote, branch=git.get("branch"), diff_digest=detail.diff_digest,
                   workdir=workdir), warnings


@dataclass(frozen=True, slots=True)
class Plan:
    """How a run is re-executed: the task, the run, which of the task's runs to compare, and caveats."""

    spec: TaskSpec
    detail: RunDetail
    run_index: int = 0  # the original is the task's n-th run (a task may start several)
    warnings: tuple[str, ...] = ()


def _from_task(platform: Platform, detail: RunDetail) -> Plan | None:
    """The plan for a run an agent executed: its task again (code, bundle, files, command, data, params)."""
    task_id = detail.summary.tags.get(TASK_TAG)
    if not task_id:
        return None
    try:
        original = TaskSpec.from_payload(platform.jobs.get(task_id).payload)
    except MedcycleError:
        return None
    siblings = runs_for_task(platform, task_id)
    seed = detail.seeds.get("seed")
    spec = dataclasses.replace(original, reproduces=detail.id, name=f"reproduce {detail.summary.name}",
                               pipeline=None, seed=seed if isinstance(seed, int) else original.seed)
    return Plan(spec, detail, siblings.index(detail.id) if detail.id in siblings else 0)


def task_from_run(platform: Platform, ref: str) -> Plan:
    """The plan that re-executes run ``ref`` (see the module docstring).

    Raises:
        NotFound: no such run.
        UsageError: the run is still running, captured no commit, or was not started from a script.
    """
    with platform.session(write=False) as session:
        detail = get_run(session, ref)
    s = detail.summary
    if s.status == "running":
        raise UsageError(f"run {s.id[:12]} is still running", hint="Reproduce it once it has ended.")
    plan = _from_task(platform, detail)
    if plan is not None:
        return plan
    git = detail.capture.get("git") or {}
    if not git.get("repository") or not git.get("commit"):
        raise UsageError(f"run {s.id[:12]} captured no git commit",
                         hint="Runs started with capture on, from a committed git repository, can be re-run.")
    command, workdir = entry_command(detail.capture.get("entry") or {}, str(git["root"]))
    code, warnings = _code(detail, git, workdir)
    env = {k: str(v) for k, v in (detail.capture.get("env") or {}).items()
           if k not in PLACEMENT_ENV and not k.startswith("MEDCYCLE_")}
    seed = detail.seeds.get("seed")
    spec = TaskSpec(command=command, project=s.project, name=f"reproduce {s.name}", code=code, env=env,
                    datasets=[s.dataset_digest] if s.dataset_digest else [], params=dict(s.params),
                    hypothesis=s.hypothesis, reproduces=s.id, seed=seed if isinstance(seed, int) else None,
                    packages_hash=detail.packages_hash, packages_digest=detail.packages_digest)
    return Plan(spec, detail, 0, tuple(warnings))


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def compare_final(platform: Platform, original: str, reproduced: str, tolerance: float,
                  ignore: Sequence[str] = DEFAULT_IGNORE) -> tuple[list[MetricDelta], list[str]]:
    """Last value of every metric of both runs, with Δ = reproduced − original; and the keys left out
    (those matching a glob of ``ignore``)."""
    with platform.session(write=False) as session:
        a, b = get_run(session, original).metrics, get_run(session, reproduced).metrics
    out, ignored = [], []
    for key in sorted(a.keys() | b.keys()):
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in ignore):
            ignored.append(key)
            continue
        if key not in a or key not in b:
            o = a[key].last if key in a else None
            r = b[key].last if key in b else None
            out.append(MetricDelta(key, o, r, None, False))
            continue
        o, r = a[key].last, b[key].last
        if o is None or r is None:  # non-finite values are stored as null: equal only if both are
            out.append(MetricDelta(key, o, r, None, o is None and r is None))
            continue
        delta = 0.0 if _same(o, r) else r - o
        out.append(MetricDelta(key, o, r, delta, _same(o, r) or abs(delta) <= tolerance))
    return out, ignored


def reproduce(platform: Platform, ref: str, *, tolerance: float = 1e-6, queue: str | None = None,
              priority: int = 0, timeout: float = 86_400.0, options: ExecOptions | None = None,
              ignore: Sequence[str] = DEFAULT_IGNORE) -> Reproduction:
    """Re-execute run ``ref`` (here, or on an agent of ``queue``) and compare its final metrics (those matching
    a glob of ``ignore`` left out).

    Raises:
        NotFound, UsageError: see :func:`task_from_run`.
        TaskSetupFailed: the tree, environment or data could not be rebuilt here.
        WaitTimedOut: the queued task did not finish within ``timeout`` seconds.
    """
    if tolerance < 0 or not math.isfinite(tolerance):
        raise UsageError(f"tolerance {tolerance!r} must be a finite number ≥ 0", hint="E.g. --tolerance 1e-6.")
    plan = task_from_run(platform, ref)
    warnings = list(plan.warnings)
    if queue is not None:
        job = wait(platform, submit(platform, plan.spec, queue=queue, priority=priority).id, timeout=timeout)
        task_id, result = job.id, task_result(platform, job) or {}
        if not result:
            warnings.append(f"the task ended {job.state.value}: {job.error or 'no result'}")
    else:
        task_id = new_id()
        options = options or ExecOptions(workdir=platform.settings.home / "agent", name="reproduce")
        done = execute(platform, plan.spec, task_id, options)
        record_refs(platform, task_id, done.digests)
        result = done.result
    runs = list(result.get("run_ids") or ([result["run_id"]] if result.get("run_id") else []))
    new_run = runs[plan.run_index] if plan.run_index < len(runs) else None
    report = Reproduction(original=plan.detail.id, reproduction=new_run, task_id=task_id, tolerance=tolerance,
                          exit_code=result.get("exit_code"), outcome=result.get("outcome"),
                          log_digest=result.get("log_digest"), warnings=warnings, queued=queue is not None)
    if new_run is None:
        report.warnings.append("the re-run started no tracked run (it failed before start_run?)")
    else:
        report.metrics, report.ignored = compare_final(platform, plan.detail.id, new_run, tolerance, ignore)
    return report
