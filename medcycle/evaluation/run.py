"""``medcycle evaluate``: a model version on a dataset version, judged by a policy's release gates.

Suites, each a gate with reasons: **metrics** (with bootstrap intervals, overall and per subgroup),
**non-inferiority** against the version an alias points at (paired bootstrap on the same cases),
**regression** (every case pinned for the model must pass), **stress** (noise, blur, contrast, resolution,
JPEG artefacts: metric curves and a maximum drop), **OOD** (the image-statistics gate fitted on the
training split, calibrated on validation, judged on the evaluated split and on a folder of OOD cases),
**reproducibility** (retrain from the version's run: same seed → same weights and metrics; other seeds → the
metrics' spread; :mod:`medcycle.evaluation.reproducibility`) and **load** (a bounded number of cases through
the serving predictor: p50/p99 latency and throughput; :mod:`medcycle.evaluation.load`). Segmentation is
judged per case by Dice, HD95, ASD and NSD (:mod:`medcycle.evaluation.surface`). The report is written as
JSON, Markdown and HTML, stored as objects and recorded as the version's gate report, which promotion
requires; the cases with previews go to the review gallery (:mod:`medcycle.evaluation.gallery`).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medcycle.errors import NotFound, ValidationFailed
from medcycle.evaluation import metrics as m
from medcycle.evaluation.policy import Policy
from medcycle.evaluation.predict import CasePrediction, Loaded, Perturb, load, predict
from medcycle.evaluation.surface import SEGMENTATION
from medcycle.platform import Platform

F32 = npt.NDArray[np.float32]


@dataclass
class Gate:
    name: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "reasons": self.reasons, "data": self.data}


@dataclass
class Evaluation:
    model: str
    dataset: str
    dataset_digest: str
    policy: str
    split: str
    cases: int
    gates: list[Gate]
    metrics: dict[str, Any]
    disaggregated: dict[str, Any]
    report_id: str | None = None
    report_digests: dict[str, str] = field(default_factory=dict)
    cases_list: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "dataset": self.dataset, "dataset_digest": self.dataset_digest,
                "policy": self.policy, "split": self.split, "cases": self.cases, "passed": self.passed,
                "gates": [g.to_dict() for g in self.gates], "metrics": self.metrics,
                "disaggregated": self.disaggregated, "report_id": self.report_id,
                "report_digests": self.report_digests}


# -- perturbations (stress suite); images are in [0, 1] after the training transforms --------------------------
def perturbation(kind: str, level: float, seed: int = 0) -> Perturb:
    rng = np.random.default_rng(seed)

    def spatial(x: F32) -> tuple[int, ...]:
        return tuple(range(1, x.ndim))  # channel first

    def apply(x: F32) -> F32:
        if kind == "noise":
            y = x + rng.normal(0.0, level, x.shape)
        elif kind == "blur":
            from scipy.ndimage import gaussian_filter

            y = gaussian_filter(x, sigma=[0.0, *([level] * (x.ndim - 1))])
        elif kind == "contrast":
            mean = x.mean(axis=spatial(x), keepdims=True)
            y = (x - mean) * level + mean
        elif kind == "resolution":
            from scipy.ndimage import zoom

            small = zoom(x, [1.0, *([level] * (x.ndim - 1))], order=1)
            y = zoom(small, [1.0, *(a / b for a, b in zip(x.shape[1:], small.shape[1:], strict=True))], order=1)
            y = y[tuple(slice(0, n) for n in x.shape)]
        elif kind == "jpeg":
            from PIL import Image

            flat = x.reshape(-1, *x.shape[-2:])
            out = []
            for plane in flat:
                buf = io.BytesIO()
                Image.fromarray((np.clip(plane, 0, 1) * 255).astype(np.uint8)).save(buf, "JPEG", quality=int(level))
                out.append(np.asarray(Image.open(buf), dtype=np.float32) / 255.0)
            y = np.stack(out).reshape(x.shape)
        else:
            raise ValidationFailed(f"unknown perturbation {kind!r}", hint="noise, blur, contrast, resolution, jpeg.")
        return np.clip(y, 0.0, 1.0).astype(np.float32)

    return apply


# -- helpers ------------------------------------------------------------------------------------------------
def _positive(loaded: Loaded, policy: Policy) -> int:
    if policy.positive is None:
        return len(loaded.classes) - 1
    if policy.positive not in loaded.classes:
        raise ValidationFailed(f"{policy.name}: positive class {policy.positive!r} is not one the model predicts",
                               hint=f"Choose one of {', '.join(loaded.classes)}.")
    return loaded.classes.index(policy.positive)


def _scores(preds: list[CasePrediction], pos: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    y = np.asarray([int(p.label == pos) for p in preds], dtype=np.int64)
    s = np.asarray([p.probs[pos] for p in preds], dtype=np.float64)
    return y, s


def _factors(preds: list[CasePrediction], names: tuple[str, ...]) -> dict[str, list[str | None]]:
    out = {f: [p.factors.get(f) for p in preds] for f in names}
    return {f: v for f, v in out.items() if any(x is not None for x in v)}


def _point(loaded: Loaded, preds: list[CasePrediction], pos: int, threshold: float, names: list[str]
           ) -> dict[str, float]:
    if loaded.config.task.segmentation:
        out = {}
        for name in SEGMENTATION:
            values = [p.metrics[name] for p in preds if name in p.metrics and math.isfinite(p.metrics[name])]
            out[name] = float(np.mean(values)) if values else math.nan
        return out
    y, s = _scores(preds, pos)
    return {n: m.CLASSIFICATION[n].fn(y, s, threshold) for n in names if n in m.CLASSIFICATION}


def _per_case(preds: list[CasePrediction], name: str) -> list[float]:
    return [p.metrics.get(name, math.nan) for p in preds]


def _segmentation_estimates(preds: list[CasePrediction], policy: Policy) -> dict[str, Any]:
    out = {}
    for name in SEGMENTATION:
        values = _per_case(preds, name)
        est = m.summarise_per_case(values, resamples=policy.resamples, seed=policy.seed, alpha=policy.alpha)
        out[name] = {**est.to_dict(), "undefined": int(sum(1 for v in values if not math.isfinite(v)))}
    return out


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


# -- the run ------------------------------------------------------------------------------------------------
def evaluate(platform: Platform, ref: str, dataset: str, policy: Policy, *, data_dir: Path | None = None,
             actor: str = "system", via: str = "library", record: bool = True,
             log: Callable[[str], None] = lambda _m: None, journal_dir: Path | None = None) -> Evaluation:
    """Judge model version ``ref`` on dataset version ``dataset`` (``NAME@TAG``) by ``policy``.

    ``journal_dir`` is where the reproducibility suite's training runs keep their journals (default
    ``HOME/journals``)."""
    from medcycle.datasets import transfer
    from medcycle.datasets.versions import resolve as resolve_dataset

    loaded = load(platform, ref)
    with platform.session(write=False) as session:
        version = resolve_dataset(session, dataset)
        digest = version.id
    folder = data_dir or platform.settings.home / "pulls" / "evaluation" / digest[:16]
    log(f"pulling {dataset} into {folder}")
    transfer.pull(platform, dataset, folder, actor=actor, via=via)
    seg = loaded.config.task.segmentation
    pos = -1 if seg else _positive(loaded, policy)
    threshold = policy.threshold if policy.threshold is not None else 0.5
    if not seg and policy.target_sensitivity is not None:
        y_val, s_val = _scores(predict(loaded, folder, policy.operating_split, **_seg_options(policy)), pos)
        threshold = m.threshold_for_sensitivity(y_val, s_val, policy.target_sensitivity)
        log(f"operating point {threshold:.4f} for sensitivity {policy.target_sensitivity} on {policy.operating_split}")
    render = record and policy.gallery_limit > 0
    preds = predict(loaded, folder, policy.split, **_seg_options(policy))
    log(f"{len(preds)} cases of split {policy.split} predicted by {loaded.version.ref}")
    gates: list[Gate] = []
    factors = _factors(preds, policy.factors)
    overall: dict[str, Any]
    groups: dict[str, Any]
    if seg:
        overall = _segmentation_estimates(preds, policy)
        groups = {}
        for f, values in factors.items():
            groups[f] = {}
            for g in sorted({v for v in values if v is not None}):
                sub = [p for p, v in zip(preds, values, strict=True) if v == g]
                if len(sub) >= policy.min_group:
                    groups[f][g] = _segmentation_estimates(sub, policy)
    else:
        y, s = _scores(preds, pos)
        report = m.evaluate_classification(y, s, threshold=threshold, factors=factors, resamples=policy.resamples,
                                           seed=policy.seed, alpha=policy.alpha, min_group=policy.min_group)
        as_dict = report.to_dict()
        overall, groups = as_dict["overall"], as_dict["groups"]
    reasons = []
    for name, bound in policy.metrics.items():
        if name not in overall:
            reasons.append(f"metric {name} is not computed for {loaded.config.task.value}")
            continue
        reasons += bound.failures(name, overall[name]["value"], overall[name]["ci_low"])
    gates.append(Gate("metrics", not reasons, reasons, {"threshold": threshold, "overall": overall}))
    if policy.subgroups:
        reasons = []
        for f, by in groups.items():
            for g, values in by.items():
                for name, bound in policy.subgroups.items():
                    if name in values:
                        reasons += [f"{f}={g}: {r}" for r in bound.failures(name, values[name]["value"],
                                                                             values[name]["ci_low"])]
        gates.append(Gate("subgroups", not reasons, reasons, {"groups": groups}))
    if policy.non_inferiority is not None:
        gates.append(_non_inferiority(platform, loaded, folder, policy, preds, pos, threshold, log))
    if policy.regression:
        gates.append(_regression(platform, loaded, folder, policy, pos, threshold))
    if policy.stress:
        gates.append(_stress(loaded, folder, policy, preds, pos, threshold, log))
    if policy.ood is not None:
        gates.append(_ood(loaded, folder, policy))
    if policy.reproducibility is not None:
        gates.append(_reproducibility(platform, loaded, folder, policy, preds, pos, threshold, log, journal_dir))
    if policy.load is not None:
        gates.append(_load(loaded, folder, policy, log))
    result = Evaluation(loaded.version.ref, dataset, digest, policy.name, policy.split, len(preds), gates,
                        overall, groups)
    if render:
        from medcycle.evaluation.gallery import case_entries

        def draw(keys: list[str]) -> dict[str, bytes]:  # only the chosen cases are drawn
            return {p.key: p.preview for p in predict(loaded, folder, policy.split, keys=keys, render=True,
                                                      **_seg_options(policy)) if p.preview is not None}

        result.cases_list = case_entries(preds, loaded.classes, segmentation=seg, threshold=threshold, positive=pos,
                                         objects=platform.objects, limit=policy.gallery_limit, previews=draw)
    if record:
        _record(platform, result, policy, actor=actor, via=via)
    return result


def _non_inferiority(platform: Platform, loaded: Loaded, folder: Path, policy: Policy, preds: list[CasePrediction],
                     pos: int, threshold: float, log: Callable[[str], None]) -> Gate:
    from medcycle.models.registry import resolve

    ni = policy.non_inferiority or {}
    against = f"{loaded.version.model}@{ni['against']}"
    try:
        with platform.session(write=False) as session:
            ref_row = resolve(session, against)
            ref_id = ref_row.id
    except NotFound:
        return Gate("non_inferiority", True, [], {"skipped": f"{against} does not exist yet: nothing to compare"})
    if ref_id == loaded.version.id:
        return Gate("non_inferiority", True, [], {"skipped": f"{against} is the version evaluated"})
    reference = load(platform, against)
    log(f"comparing with {reference.version.ref} on the same {len(preds)} cases")
    ref_preds = {p.key: p for p in predict(reference, folder, policy.split, **_seg_options(policy))}
    margin, metric = float(ni["margin"]), str(ni["metric"])
    if loaded.config.task.segmentation:
        metric = metric if metric in SEGMENTATION else "dice"
        diffs = [p.metrics[metric] - ref_preds[p.key].metrics[metric] for p in preds
                 if p.key in ref_preds and math.isfinite(p.metrics.get(metric, math.nan))
                 and math.isfinite(ref_preds[p.key].metrics.get(metric, math.nan))]
        est = m.summarise_per_case(diffs, resamples=policy.resamples, seed=policy.seed, alpha=policy.alpha)
    else:
        y, s_new = _scores(preds, pos)
        s_ref = np.asarray([ref_preds[p.key].probs[pos] for p in preds], dtype=np.float64)
        est = m.paired_difference(metric, y, s_new, s_ref, threshold=threshold, resamples=policy.resamples,
                                  seed=policy.seed, alpha=policy.alpha)
    higher = (m.CLASSIFICATION[metric].higher_is_better if metric in m.CLASSIFICATION
              else SEGMENTATION[metric].higher_is_better if metric in SEGMENTATION else True)
    ok = (est.low > -margin) if higher else (est.high < margin)
    reasons = [] if ok else [f"{metric} difference {est.value:+.4f} (95% CI {est.low:+.4f} to {est.high:+.4f}) "
                             f"against {reference.version.ref} crosses the margin {margin:g}"]
    return Gate("non_inferiority", ok, reasons, {"against": reference.version.ref, "metric": metric,
                                                  "margin": margin, "difference": est.to_dict()})


def _regression(platform: Platform, loaded: Loaded, folder: Path, policy: Policy, pos: int, threshold: float
                ) -> Gate:
    from medcycle.models.registry import pinned_cases
    from medcycle.training.data import index

    with platform.session(write=False) as session:
        pinned = pinned_cases(session, loaded.version.model)
    if not pinned:
        return Gate("regression", True, [], {"pinned": 0})
    samples = index(folder, loaded.config)
    where = {s.key: split for split, items in samples.splits.items() for s in items}
    found: dict[str, CasePrediction] = {}
    for split in sorted({where[c.case_key] for c in pinned if c.case_key in where}):
        for p in predict(loaded, folder, split, keys=[c.case_key for c in pinned], **_seg_options(policy)):
            found[p.key] = p
    reasons, rows = [], []
    for case in pinned:
        hit = found.get(case.case_key)
        if hit is None:
            reasons.append(f"pinned case {case.case_key} is not in this dataset version")
            rows.append({"case": case.case_key, "expected": case.expected, "got": None, "passed": False})
            continue
        p = hit
        if loaded.config.task.segmentation:
            got: Any = _num(p.dice if p.dice is not None else math.nan)
            ok = p.dice is not None and p.dice >= float(case.expected)
        else:
            got = loaded.classes[int(np.argmax(p.probs))] if len(loaded.classes) > 2 else (
                loaded.classes[pos] if p.probs[pos] >= threshold else loaded.classes[1 - pos])
            ok = got == case.expected
        rows.append({"case": case.case_key, "expected": case.expected, "got": got, "passed": ok,
                     "reason": case.reason})
        if not ok:
            reasons.append(f"pinned case {case.case_key}: expected {case.expected}, got {got}")
    return Gate("regression", not reasons, reasons, {"pinned": len(pinned), "cases": rows})


def _stress(loaded: Loaded, folder: Path, policy: Policy, preds: list[CasePrediction], pos: int, threshold: float,
            log: Callable[[str], None]) -> Gate:
    watched = list(policy.stress_max_drop) or (["dice"] if loaded.config.task.segmentation else ["auroc"])
    base = _point(loaded, preds, pos, threshold, watched)
    curves: dict[str, list[dict[str, Any]]] = {}
    reasons = []
    for kind, levels in policy.stress.items():
        curves[kind] = []
        for level in levels:
            got = _point(loaded, predict(loaded, folder, policy.split, perturb=perturbation(kind, level, policy.seed),
                                         **_seg_options(policy)), pos, threshold, watched)
            curves[kind].append({"level": level, **{k: _num(v) for k, v in got.items()}})
            log(f"stress {kind} {level:g}: " + ", ".join(f"{k} {v:.4f}" for k, v in got.items()))
            for name, drop in policy.stress_max_drop.items():
                if name in got and base.get(name) is not None and base[name] - got[name] > drop:
                    reasons.append(f"{kind} {level:g}: {name} drops {base[name] - got[name]:.4f} "
                                   f"(from {base[name]:.4f}) > {drop:g}")
    return Gate("stress", not reasons, reasons, {"baseline": {k: _num(v) for k, v in base.items()},
                                                 "curves": curves})


def _seg_options(policy: Policy) -> dict[str, Any]:
    return {"tolerance": policy.nsd_tolerance, "spacing": policy.spacing}


def _reproducibility(platform: Platform, loaded: Loaded, folder: Path, policy: Policy, preds: list[CasePrediction],
                     pos: int, threshold: float, log: Callable[[str], None], journal_dir: Path | None) -> Gate:
    from medcycle.evaluation.reproducibility import run_suite

    spec = policy.reproducibility
    assert spec is not None
    watched = list(spec.max_metric_spread) or list(policy.metrics) or (
        ["dice"] if loaded.config.task.segmentation else ["auroc"])

    def score(model: Loaded) -> dict[str, float | None]:
        got = _point(model, predict(model, folder, policy.split, **_seg_options(policy)), pos, threshold, watched)
        return {k: _num(v) for k, v in got.items()}

    baseline = {k: _num(v) for k, v in _point(loaded, preds, pos, threshold, watched).items()}
    reasons, data = run_suite(platform, loaded, spec, baseline=baseline, score=score,
                              journal_dir=journal_dir, log=log)
    return Gate("reproducibility", not reasons, reasons, data)


def _load(loaded: Loaded, folder: Path, policy: Policy, log: Callable[[str], None]) -> Gate:
    from medcycle.evaluation.load import failures, run_load

    spec = policy.load
    assert spec is not None
    result = run_load(loaded, folder, policy.split, spec)
    log(f"load: {result.requests} cases in batches of {result.batch}: p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms, {result.throughput:.1f} cases/s")
    reasons = failures(result, spec)
    limits = {k: v for k, v in (("p99_ms_max", spec.p99_ms_max), ("p50_ms_max", spec.p50_ms_max),
                                ("min_throughput", spec.min_throughput)) if v is not None}
    return Gate("load", not reasons, reasons, {**result.to_dict(), "limits": limits})


def _ood(loaded: Loaded, folder: Path, policy: Policy) -> Gate:
    from medcycle.evaluation import ood
    from medcycle.training.data import index, read_file

    spec = policy.ood or {}
    far = float(spec.get("false_alarm_rate", 0.05))
    samples = index(folder, loaded.config)

    def feats(paths: tuple[str, ...]) -> npt.NDArray[np.float64]:
        arr = read_file(paths[len(paths) // 2])
        return ood.features(arr)

    train = [feats(s.image) for s in samples.split("train")]
    val = [feats(s.image) for s in samples.split(policy.operating_split)]
    test = [feats(s.image) for s in samples.split(policy.split)]
    det = ood.ImageStatsDetector.fit(train)
    det.threshold = ood.calibrate([det.score(f) for f in val], far)
    alarms = float(np.mean([det.score(f) > det.threshold for f in test]))
    data: dict[str, Any] = {"false_alarm_rate": far, "test_false_alarms": round(alarms, 4),
                            "detector": det.to_dict()}
    reasons = []
    limit = float(spec.get("max_false_alarms", 2 * far))
    if alarms > limit:
        reasons.append(f"{alarms:.1%} of {policy.split} cases flagged as OOD (limit {limit:.1%})")
    if spec.get("path"):
        root = Path(str(spec["path"]))
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        if not files:
            raise ValidationFailed(f"{policy.name}: ood.path {root} holds no files",
                                   hint="Point it at a folder of out-of-distribution images (DICOM, PNG, NIfTI).")
        flagged = [det.score(ood.features(read_file(p))) > det.threshold for p in files]
        rate = float(np.mean(flagged))
        data["ood_cases"], data["ood_flagged"] = len(files), round(rate, 4)
        need = float(spec.get("min_flagged", 0.95))
        if rate < need:
            missed = [p.name for p, f in zip(files, flagged, strict=True) if not f][:5]
            reasons.append(f"only {rate:.1%} of OOD cases flagged (need {need:.0%}); missed e.g. {', '.join(missed)}")
    return Gate("ood", not reasons, reasons, data)


def markdown(ev: Evaluation) -> str:
    lines = [f"# Evaluation of {ev.model} on {ev.dataset}", "",
             f"Policy `{ev.policy}`, split `{ev.split}`, {ev.cases} cases — **{'PASSED' if ev.passed else 'FAILED'}**",
             "", "| gate | result | reasons |", "|---|---|---|"]
    for g in ev.gates:
        lines.append(f"| {g.name} | {'pass' if g.passed else 'FAIL'} | {'; '.join(g.reasons) or '—'} |")
    lines += ["", "## Metrics (95% CI)", "", "| metric | value | CI |", "|---|---|---|"]
    for name, e in ev.metrics.items():
        lines.append(f"| {name} | {e['value']} | {e['ci_low']}–{e['ci_high']} |")
    for f, by in ev.disaggregated.items():
        lines += ["", f"## By {f}", "", "| group | metric | value | CI | n |", "|---|---|---|---|---|"]
        for g, values in by.items():
            lines += [f"| {g} | {k} | {e['value']} | {e['ci_low']}–{e['ci_high']} | {e['n']} |"
                      for k, e in values.items()]
    for g in ev.gates:
        if g.name == "reproducibility":
            lines += ["", "## Reproducibility", ""]
            same = g.data.get("same_seed")
            if same:
                lines.append(f"* same seed ({g.data.get('seed')}): weights identical {same['identical_weights']}, "
                             f"metrics identical {same['identical_metrics']} (run {same['run']})")
            for row in g.data.get("seeds", []):
                lines.append(f"* seed {row['seed']}: " + ", ".join(f"{k} {v}" for k, v in row["metrics"].items()))
            for name, sp in g.data.get("spread", {}).items():
                lines.append(f"* spread of {name}: {sp['spread']} ({sp['min']}–{sp['max']})")
        if g.name == "load":
            d = g.data
            lines += ["", "## Load", "", f"{d['requests']} cases in batches of {d['batch']}: p50 {d['p50_ms']} ms, "
                      f"p99 {d['p99_ms']} ms, {d['throughput']} cases/s"]
        if g.name == "stress":
            lines += ["", "## Stress curves", ""]
            for kind, points in g.data["curves"].items():
                lines.append(f"* {kind}: " + ", ".join(
                    f"{p['level']:g} → " + ", ".join(f"{k} {v}" for k, v in p.items() if k != "level")
                    for p in points))
    return "\n".join(lines) + "\n"


def _record(platform: Platform, ev: Evaluation, policy: Policy, *, actor: str, via: str) -> None:
    from markdown_it import MarkdownIt

    from medcycle.models.registry import record_gate_report

    md = markdown(ev)
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Evaluation</title>"
            "<style>body{font:14px/1.5 system-ui,sans-serif;max-width:70rem;margin:2rem auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>"
            + MarkdownIt("commonmark", {"html": False}).enable("table").render(md) + "</body></html>")
    body = ev.to_dict()
    digests = {"json": platform.objects.put(json.dumps(body, indent=2, default=str).encode()).digest,
               "md": platform.objects.put(md.encode()).digest, "html": platform.objects.put(page.encode()).digest}
    if ev.cases_list:
        cases = {"segmentation": bool(ev.cases_list and ev.cases_list[0].get("truth") == "mask"),
                 "cases": ev.cases_list}
        digests["cases"] = platform.objects.put(json.dumps(cases, default=str).encode()).digest
    summary = {"passed": ev.passed, "gates": [{"name": g.name, "passed": g.passed, "reasons": g.reasons}
                                              for g in ev.gates],
               "metrics": ev.metrics, "disaggregated": ev.disaggregated, "factors": list(policy.factors),
               "suites": {g.name: {"passed": g.passed, **{k: v for k, v in g.data.items() if k != "detector"}}
                          for g in ev.gates}, "reports": digests}
    with platform.session() as session:
        from medcycle.objects.refs import add_ref

        for kind in ("md", "html", "cases"):
            if kind in digests:
                add_ref(session, digests[kind], "gate_report_" + kind, ev.model)
        for case in ev.cases_list:
            if case.get("preview"):
                add_ref(session, case["preview"], "gate_report_preview", ev.model)
        ev.report_id = record_gate_report(session, ev.model, passed=ev.passed, summary=summary, policy=policy.name,
                                          dataset_digest=ev.dataset_digest, report_digest=digests["json"],
                                          actor=actor, via=via)
    ev.report_digests = digests
