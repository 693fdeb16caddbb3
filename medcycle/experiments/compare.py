"""Compare runs: which params differ, final and best metric values side by side, and what changed in the
code and environment (commit, dirty tree, dataset version, packages added/removed/changed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from medcycle.errors import UsageError
from medcycle.experiments.runs import RunDetail, get_run, read_packages
from medcycle.objects.base import ObjectStore

MAX_RUNS = 50


@dataclass(frozen=True, slots=True)
class Comparison:
    """``params``/``metrics``/``context`` map a name to one value per run (``None`` where a run lacks it)."""

    runs: list[dict[str, Any]]  # id, name, project, status, verdict
    params: dict[str, list[str | None]]
    differing_params: list[str]
    metrics: dict[str, list[dict[str, Any] | None]]  # {"last", "min", "max", "step"} per run
    context: dict[str, list[Any]]  # commit, branch, dirty, dataset, packages_hash, python, torch
    differing_context: list[str]
    packages: dict[str, list[str | None]]  # only packages whose version differs between runs

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "params": self.params, "differing_params": self.differing_params,
                "metrics": self.metrics, "context": self.context, "differing_context": self.differing_context,
                "packages": self.packages}


def _context(detail: RunDetail) -> dict[str, Any]:
    git = detail.capture.get("git") or {}
    system = detail.capture.get("system") or {}
    torch = system.get("torch") or {}
    return {"commit": git.get("commit"), "branch": git.get("branch"), "dirty": git.get("dirty"),
            "diff": detail.diff_digest, "dataset": detail.summary.dataset_digest or detail.summary.dataset,
            "packages_hash": detail.packages_hash, "python": (system.get("python") or {}).get("version"),
            "torch": torch.get("version"), "seed": detail.seeds.get("seed"), "host": detail.host}


def _versions(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        name, sep, version = line.partition("==")
        if sep:
            out[name] = version
    return out


def compare_runs(session: Session, refs: list[str], objects: ObjectStore | None = None) -> Comparison:
    """Compare 2 to 50 runs named by id, id prefix or name (``objects`` adds the package diff)."""
    if not 2 <= len(refs) <= MAX_RUNS:
        raise UsageError(f"compare needs 2 to {MAX_RUNS} runs, got {len(refs)}", hint="Name at least two runs.")
    details = [get_run(session, ref) for ref in refs]
    n = len(details)
    keys = sorted({k for d in details for k in d.summary.params})
    params = {k: [d.summary.params.get(k) for d in details] for k in keys}
    differing = [k for k, values in params.items() if len(set(values)) > 1]
    metric_keys = sorted({k for d in details for k in d.metrics})
    metrics: dict[str, list[dict[str, Any] | None]] = {}
    for key in metric_keys:
        row: list[dict[str, Any] | None] = []
        for d in details:
            m = d.metrics.get(key)
            row.append(None if m is None else {"last": m.last, "min": m.min, "max": m.max, "step": m.last_step})
        metrics[key] = row
    contexts = [_context(d) for d in details]
    context = {k: [c[k] for c in contexts] for k in contexts[0]}
    differing_context = [k for k, values in context.items() if len({repr(v) for v in values}) > 1]
    packages: dict[str, list[str | None]] = {}
    if objects is not None and "packages_hash" in differing_context:
        freezes = [_versions(read_packages(session, objects, d.id)) for d in details]
        for name in sorted({p for f in freezes for p in f}):
            versions = [f.get(name) for f in freezes]
            if len(set(versions)) > 1:
                packages[name] = versions
    runs = [{"id": d.id, "name": d.summary.name, "project": d.summary.project, "status": d.summary.status,
             "verdict": d.summary.verdict} for d in details]
    assert len(runs) == n
    return Comparison(runs, params, differing, metrics, context, differing_context, packages)
