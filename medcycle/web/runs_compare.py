"""The compare page (``/ui/runs/compare?ids=A,B`` or ``?ids=A&ids=B``): how 2 to 20 runs differ.

* overlaid curves, one chart per metric, one line per run (downsampled series);
* parallel coordinates over the params that differ and the runs' final metric values;
* params side by side, the differing ones highlighted; the code and environment context
  (commit, branch, dirty tree, dataset, packages, Python, torch, seed, host) the same way, and the
  packages whose versions differ;
* code: whether the runs share a commit, and how their captured uncommitted diffs differ from the first
  run's (a diff of the two patches). Different commits are named with the ``git diff`` that shows them.

Runs are shown oldest first, so the baseline is the run the others changed from. Drawn by
``static/js/runs_compare.js`` from the page's JSON block.

This page's Content-Security-Policy also allows ``'unsafe-eval'`` for scripts: plotly's ``parcoords`` draws
with WebGL through regl, which builds its drawing functions with ``new Function`` and fails (plotly then
claims WebGL is missing) without it. Scripts still come only from this server and none runs inline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import MedcycleError, UsageError
from medcycle.experiments import compare, runs
from medcycle.experiments.cards import default_key_metrics
from medcycle.experiments.runs import resolve_run
from medcycle.web.render import CONTENT_SECURITY_POLICY, renderer
from medcycle.web.runs_data import PALETTE, diff_of_diffs, number, numeric, series_chart

router = APIRouter()
Viewer = Annotated[Principal, requires(Permission.VIEW)]

MAX_COMPARE = 20
MAX_CURVES = 12  # metrics drawn as overlaid curves (the rest can be chosen)
MAX_PARCOORDS_PARAMS = 12
MAX_PARCOORDS_METRICS = 8
CURVE_POINTS = 400
MAX_DIFF_LINES = 1500
PARCOORDS_CSP = CONTENT_SECURITY_POLICY.replace("script-src 'self';", "script-src 'self' 'unsafe-eval';")


def run_refs(ids: list[str] | None) -> list[str]:
    """Run references from ``ids`` (repeated and/or comma-separated), in order, without repeats."""
    refs = list(dict.fromkeys(p.strip() for value in ids or [] for p in value.split(",") if p.strip()))
    if len(refs) < 2:
        raise UsageError("choose at least two runs to compare",
                         hint="Tick two or more runs in the runs table, then press Compare.")
    if len(refs) > MAX_COMPARE:
        raise UsageError(f"{len(refs)} runs chosen; the compare page shows at most {MAX_COMPARE}",
                         hint="Narrow the choice, or use `medcycle run compare` for a table of up to 50.")
    return refs


def curve_keys(metrics: dict[str, list[dict[str, Any] | None]], asked: list[str] | None) -> list[str]:
    """The metrics to overlay: those asked for, else the ones most runs share (evaluation metrics first)."""
    keys = [k for k in metrics if not k.startswith("system/")]
    if asked:
        unknown = [k for k in asked if k not in metrics]
        if unknown:
            raise UsageError(f"none of the runs logged {unknown[0]!r}",
                             hint=f"Their metrics: {', '.join(keys[:30]) or 'none'}.")
        return list(dict.fromkeys(asked))[:MAX_CURVES]
    count = {k: sum(v is not None for v in metrics[k]) for k in keys}
    ordered = sorted(default_key_metrics(keys, len(keys)), key=lambda k: -count[k])  # stable: eval ones first
    return ordered[:MAX_CURVES]


def _padded(values: list[float | None]) -> list[float]:
    """An axis range around ``values`` with a margin, so lines at the extremes stay visible."""
    present = [v for v in values if v is not None]
    lo, hi = (min(present), max(present)) if present else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    return [lo - pad, hi + pad]


def parcoords(comparison: compare.Comparison, metric_keys: list[str]) -> dict[str, Any]:
    """Dimensions for plotly's ``parcoords``: differing params (numbers as they are, text as categories)
    and final metric values; a missing value is null."""
    dims: list[dict[str, Any]] = []
    for key in comparison.differing_params[:MAX_PARCOORDS_PARAMS]:
        texts = comparison.params[key]
        nums = [numeric(t) for t in texts]
        if all(n is not None or t is None for n, t in zip(nums, texts, strict=True)) and any(
                n is not None for n in nums):
            dims.append({"label": key, "values": nums, "range": _padded(nums)})
        else:
            cats = sorted({t if t is not None else "(none)" for t in texts})
            dims.append({"label": key, "values": [cats.index(t if t is not None else "(none)") for t in texts],
                         "tickvals": list(range(len(cats))), "ticktext": [c[:24] for c in cats],
                         "range": [-0.3, len(cats) - 0.7]})
    for key in metric_keys[:MAX_PARCOORDS_METRICS]:
        values = [m["last"] if m else None for m in comparison.metrics[key]]
        dims.append({"label": key, "values": values, "range": _padded(values), "metric": True})
    return {"dimensions": dims}


@dataclass(frozen=True, slots=True)
class CodeDiff:
    """How one run's code differs from the first run's."""

    name: str
    same_commit: bool
    commit: str | None
    base_commit: str | None
    same_diff: bool
    lines: list[tuple[str, str]]
    cut: bool
    problem: str | None


def code_diffs(session: Any, objects: Any, comparison: compare.Comparison) -> list[CodeDiff]:
    texts: list[str] = []
    problems: list[str | None] = []
    for run in comparison.runs:
        try:
            data = runs.read_diff(session, objects, run["id"])
        except MedcycleError as exc:
            texts.append("")
            problems.append(exc.message)
            continue
        texts.append(data.decode("utf-8", errors="replace") if data else "")
        problems.append(None)
    commits, digests = comparison.context["commit"], comparison.context["diff"]
    base = comparison.runs[0]["name"]
    out = []
    for i, run in enumerate(comparison.runs[1:], start=1):
        same = digests[i] == digests[0]
        lines, cut = ([], False) if same else diff_of_diffs(texts[0], texts[i], base, run["name"], MAX_DIFF_LINES)
        out.append(CodeDiff(run["name"], commits[i] == commits[0], commits[i], commits[0], same, lines, cut,
                            problems[i] or problems[0]))
    return out


@router.get("/compare")
def compare_page(
    request: Request,
    platform: PlatformDep,
    session: SessionDep,
    principal: Viewer,
    ids: Annotated[list[str] | None, Query(max_length=4096)] = None,
    metric: Annotated[list[str] | None, Query(max_length=256)] = None,
) -> Response:
    rows = [resolve_run(session, ref) for ref in run_refs(ids)]
    ordered = [r.id for r in sorted(rows, key=lambda r: (r.started_at, r.id))]
    comparison = compare.compare_runs(session, list(dict.fromkeys(ordered)), platform.objects)
    keys = curve_keys(comparison.metrics, metric)
    curves: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    for i, run in enumerate(comparison.runs):
        have = [k for k in keys if comparison.metrics[k][i] is not None]
        if have:
            for key, series in runs.metric_history(session, run["id"], have, CURVE_POINTS).items():
                curves[key].append({"run": i, **series_chart(series)})
    final_keys = [k for k in comparison.metrics if not k.startswith("system/")]
    metric_order = default_key_metrics(final_keys, len(final_keys))
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(comparison.runs))]
    data = {"runs": [{"id": r["id"], "name": r["name"], "color": colors[i]} for i, r in enumerate(comparison.runs)],
            "curves": [{"key": k, "series": curves[k]} for k in keys],
            "parcoords": parcoords(comparison, metric_order)}
    return renderer(request).render(
        request, "runs_compare.html", principal=principal, active="experiments",
        headers={"Content-Security-Policy": PARCOORDS_CSP},
        c=comparison, colors=colors, curve_keys=keys, all_metrics=final_keys, data=data,
        code=code_diffs(session, platform.objects, comparison), number=number,
        ids=",".join(r["id"] for r in comparison.runs),
    )
