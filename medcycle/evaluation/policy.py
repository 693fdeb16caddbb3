"""Release-gate policies: a declarative YAML/JSON file (nothing in it is evaluated as code).

.. code-block:: yaml

    split: test                       # the split judged
    positive: lesion                  # classification: the positive class (default: the last class)
    operating_point: {sensitivity: 0.9, on: val}   # or {threshold: 0.5}
    bootstrap: {resamples: 1000, seed: 0, alpha: 0.05}
    factors: [source, manufacturer]   # subgroups reported (and gated by `subgroups`)
    min_group: 10
    metrics: {auroc: {min: 0.80}, sensitivity: {min: 0.70, min_ci_low: 0.6}}
    subgroups: {auroc: {min: 0.70}}   # every reported subgroup
    non_inferiority: {against: production, metric: auroc, margin: 0.03}
    regression: true                  # every pinned case must pass
    stress: {noise: [0.05], blur: [1.0], contrast: [0.7], resolution: [0.5], jpeg: [30],
             max_drop: {auroc: 0.10}}
    ood: {path: ood-cases, false_alarm_rate: 0.05, min_flagged: 0.95}
    segmentation: {nsd_tolerance: 1.0}  # mm; metrics/subgroups may then name dice, hd95, asd, nsd
    reproducibility: {retrain: true, seeds: [1, 2], max_metric_spread: {auroc: 0.05}}
    load: {requests: 64, batch: 8, p99_ms_max: 500, min_throughput: 20}
    gallery: {limit: 200}             # cases drawn for the review gallery (0: none)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcycle.errors import UsageError, ValidationFailed

TOP_KEYS = {"split", "positive", "operating_point", "bootstrap", "factors", "min_group", "metrics", "subgroups",
            "non_inferiority", "regression", "stress", "ood", "segmentation", "reproducibility", "load", "gallery"}
STRESS_KINDS = ("noise", "blur", "contrast", "resolution", "jpeg")


@dataclass(frozen=True, slots=True)
class Bound:
    min: float | None = None
    max: float | None = None
    min_ci_low: float | None = None

    def failures(self, name: str, value: float | None, ci_low: float | None) -> list[str]:
        if value is None:
            return [f"{name} could not be computed"]
        out = []
        if self.min is not None and value < self.min:
            out.append(f"{name} {value:.4f} < {self.min:g}")
        if self.max is not None and value > self.max:
            out.append(f"{name} {value:.4f} > {self.max:g}")
        if self.min_ci_low is not None and (ci_low is None or ci_low < self.min_ci_low):
            out.append(f"{name} 95% CI low end {ci_low if ci_low is not None else float('nan'):.4f} "
                       f"< {self.min_ci_low:g}")
        return out


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    split: str = "test"
    positive: str | None = None
    threshold: float | None = 0.5
    target_sensitivity: float | None = None
    operating_split: str = "val"
    resamples: int = 1000
    seed: int = 0
    alpha: float = 0.05
    factors: tuple[str, ...] = ("source", "manufacturer")
    min_group: int = 10
    metrics: dict[str, Bound] = field(default_factory=dict)
    subgroups: dict[str, Bound] = field(default_factory=dict)
    non_inferiority: dict[str, Any] | None = None
    regression: bool = False
    stress: dict[str, tuple[float, ...]] = field(default_factory=dict)
    stress_max_drop: dict[str, float] = field(default_factory=dict)
    ood: dict[str, Any] | None = None
    nsd_tolerance: float = 1.0
    spacing: tuple[float, ...] | None = None
    reproducibility: Reproducibility | None = None
    load: Load | None = None
    gallery_limit: int = 200


@dataclass(frozen=True, slots=True)
class Reproducibility:
    """Retrain from the version's recorded run: the same seed must give the same weights and metrics; other
    seeds show how much the metrics move (``max_metric_spread`` bounds max - min over all seeds)."""

    retrain: bool = True
    seeds: tuple[int, ...] = ()
    max_metric_spread: dict[str, float] = field(default_factory=dict)
    require_identical: bool = True


@dataclass(frozen=True, slots=True)
class Load:
    """A bounded load smoke test of the version behind the serving predictor."""

    requests: int = 64
    batch: int = 1
    warmup: int = 2
    p99_ms_max: float | None = None
    p50_ms_max: float | None = None
    min_throughput: float | None = None


def _number(data: Any, key: str, where: str, *, integer: bool = False, low: float = 0.0) -> Any:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)) \
            or value < low:
        kind = "an integer" if integer else "a number"
        raise ValidationFailed(f"{where}.{key} must be {kind} >= {low:g}", hint=f"E.g. {key}: {max(low, 1):g}.")
    return int(value) if integer else float(value)


def _reproducibility(data: Any, name: str) -> Reproducibility:
    where = f"{name}: reproducibility"
    keys = {"retrain", "seeds", "max_metric_spread", "require_identical"}
    if data is True:
        return Reproducibility()
    if not isinstance(data, dict) or set(data) - keys:
        raise ValidationFailed(f"{where} takes {', '.join(sorted(keys))}",
                               hint="E.g. reproducibility: {retrain: true, seeds: [1, 2], "
                                    "max_metric_spread: {auroc: 0.05}}.")
    seeds = data.get("seeds", [])
    if not isinstance(seeds, list) or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32
                                              for x in seeds) or len(seeds) > 10:
        raise ValidationFailed(f"{where}.seeds must be a list of up to 10 seeds (integers >= 0)",
                               hint="E.g. seeds: [1, 2].")
    spread = data.get("max_metric_spread", {})
    if not isinstance(spread, dict) or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
                                               for v in spread.values()):
        raise ValidationFailed(f"{where}.max_metric_spread maps metrics to numbers >= 0", hint="E.g. {auroc: 0.05}.")
    return Reproducibility(retrain=bool(data.get("retrain", True)), seeds=tuple(int(x) for x in seeds),
                           max_metric_spread={str(k): float(v) for k, v in spread.items()},
                           require_identical=bool(data.get("require_identical", True)))


def _load(data: Any, name: str) -> Load:
    where = f"{name}: load"
    keys = {"requests", "batch", "warmup", "p99_ms_max", "p50_ms_max", "min_throughput"}
    if not isinstance(data, dict) or set(data) - keys:
        raise ValidationFailed(f"{where} takes {', '.join(sorted(keys))}",
                               hint="E.g. load: {requests: 64, p99_ms_max: 500, min_throughput: 20}.")
    kw: dict[str, Any] = {}
    for key in ("requests", "batch", "warmup"):
        if key in data:
            kw[key] = _number(data, key, where, integer=True, low=0 if key == "warmup" else 1)
    for key in ("p99_ms_max", "p50_ms_max", "min_throughput"):
        if key in data:
            kw[key] = _number(data, key, where)
    out = Load(**kw)
    if out.requests > 10_000 or out.batch > out.requests:
        raise ValidationFailed(f"{where}: requests must be at most 10000 and batch at most requests",
                               hint="It is a smoke test: e.g. requests: 64, batch: 8.")
    return out


def _bounds(data: Any, where: str) -> dict[str, Bound]:
    if not isinstance(data, dict):
        raise ValidationFailed(f"{where} must map metric names to bounds",
                               hint=f"E.g. {where}: {{auroc: {{min: 0.8}}}}")
    out = {}
    for metric, spec in data.items():
        if not isinstance(spec, dict) or not spec or set(spec) - {"min", "max", "min_ci_low"} or not all(
                isinstance(v, int | float) for v in spec.values()):
            raise ValidationFailed(f"{where}.{metric} must be {{min|max|min_ci_low: number}}",
                                   hint=f"E.g. {where}: {{{metric}: {{min: 0.8}}}}.")
        out[str(metric)] = Bound(**{k: float(v) for k, v in spec.items()})
    return out


def parse(data: Any, name: str = "policy") -> Policy:
    """Validate a policy document; every error names the file and the key."""
    if not isinstance(data, dict):
        raise ValidationFailed(f"{name}: a policy must be a mapping", hint="See docs/evaluation.md for an example.")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise ValidationFailed(f"{name}: unknown key(s) {', '.join(unknown)}",
                               hint=f"Keys: {', '.join(sorted(TOP_KEYS))}.")
    kw: dict[str, Any] = {"name": name}
    if "split" in data:
        kw["split"] = str(data["split"])
    if "positive" in data:
        kw["positive"] = str(data["positive"])
    op = data.get("operating_point")
    if isinstance(op, dict):  # YAML 1.1 reads an unquoted `on:` key as the boolean true
        op = {("on" if k is True else k): v for k, v in op.items()}
    if op is not None:
        if not isinstance(op, dict) or (("threshold" in op) == ("sensitivity" in op)) or set(op) - {
                "threshold", "sensitivity", "on"}:
            raise ValidationFailed(f"{name}: operating_point needs exactly one of threshold or sensitivity",
                                   hint="E.g. operating_point: {sensitivity: 0.9, on: val}.")
        if "threshold" in op:
            kw["threshold"] = float(op["threshold"])
        else:
            kw["threshold"], kw["target_sensitivity"] = None, float(op["sensitivity"])
            kw["operating_split"] = str(op.get("on", "val"))
    boot = data.get("bootstrap") or {}
    if not isinstance(boot, dict) or set(boot) - {"resamples", "seed", "alpha"}:
        raise ValidationFailed(f"{name}: bootstrap takes resamples, seed and alpha", hint="E.g. {resamples: 1000}.")
    kw.update({k: (int(v) if k != "alpha" else float(v)) for k, v in boot.items()})
    if "factors" in data:
        if not isinstance(data["factors"], list) or not all(isinstance(f, str) for f in data["factors"]):
            raise ValidationFailed(f"{name}: factors must be a list of field names",
                                   hint="E.g. [source, manufacturer].")
        kw["factors"] = tuple(data["factors"])
    if "min_group" in data:
        kw["min_group"] = int(data["min_group"])
    if "metrics" in data:
        kw["metrics"] = _bounds(data["metrics"], f"{name}: metrics")
    if "subgroups" in data:
        kw["subgroups"] = _bounds(data["subgroups"], f"{name}: subgroups")
    ni = data.get("non_inferiority")
    if ni is not None:
        if not isinstance(ni, dict) or set(ni) - {"against", "metric", "margin"} or "margin" not in ni:
            raise ValidationFailed(f"{name}: non_inferiority needs margin (and against, metric)",
                                   hint="E.g. non_inferiority: {against: production, metric: auroc, margin: 0.03}.")
        kw["non_inferiority"] = {"against": str(ni.get("against", "production")),
                                 "metric": str(ni.get("metric", "auroc")), "margin": float(ni["margin"])}
    if "regression" in data:
        kw["regression"] = bool(data["regression"])
    stress = data.get("stress")
    if stress is not None:
        if not isinstance(stress, dict) or set(stress) - {*STRESS_KINDS, "max_drop"}:
            raise ValidationFailed(f"{name}: stress takes {', '.join(STRESS_KINDS)} and max_drop",
                                   hint="E.g. stress: {noise: [0.05], max_drop: {auroc: 0.1}}.")
        levels = {}
        for kind in STRESS_KINDS:
            if kind in stress:
                values = stress[kind]
                if not isinstance(values, list) or not values or not all(isinstance(v, int | float) for v in values):
                    raise ValidationFailed(f"{name}: stress.{kind} must be a list of levels",
                                           hint=f"E.g. {kind}: [0.05].")
                levels[kind] = tuple(float(v) for v in values)
        kw["stress"] = levels
        drop = stress.get("max_drop", {})
        if not isinstance(drop, dict) or not all(isinstance(v, int | float) for v in drop.values()):
            raise ValidationFailed(f"{name}: stress.max_drop maps metrics to numbers", hint="E.g. {auroc: 0.1}.")
        kw["stress_max_drop"] = {str(k): float(v) for k, v in drop.items()}
    ood = data.get("ood")
    if ood is not None:
        if not isinstance(ood, dict) or set(ood) - {"path", "false_alarm_rate", "min_flagged", "max_false_alarms"}:
            raise ValidationFailed(f"{name}: ood takes path, false_alarm_rate, min_flagged, max_false_alarms",
                                   hint="E.g. ood: {path: ood-cases, false_alarm_rate: 0.05, min_flagged: 0.95}.")
        kw["ood"] = dict(ood)
    seg = data.get("segmentation")
    if seg is not None:
        if not isinstance(seg, dict) or set(seg) - {"nsd_tolerance", "spacing"}:
            raise ValidationFailed(f"{name}: segmentation takes nsd_tolerance and spacing",
                                   hint="E.g. segmentation: {nsd_tolerance: 1.0} (mm).")
        if "nsd_tolerance" in seg:
            kw["nsd_tolerance"] = _number(seg, "nsd_tolerance", f"{name}: segmentation")
        if "spacing" in seg:
            sp = seg["spacing"]
            if not isinstance(sp, list) or len(sp) not in (2, 3) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in sp):
                raise ValidationFailed(f"{name}: segmentation.spacing must be 2 or 3 voxel sizes in mm (> 0)",
                                       hint="Leave it out to read the spacing from each image's header.")
            kw["spacing"] = tuple(float(v) for v in sp)
    if "reproducibility" in data and data["reproducibility"] is not None:
        kw["reproducibility"] = _reproducibility(data["reproducibility"], name)
    if "load" in data and data["load"] is not None:
        kw["load"] = _load(data["load"], name)
    gallery = data.get("gallery")
    if gallery is not None:
        if not isinstance(gallery, dict) or set(gallery) - {"limit"}:
            raise ValidationFailed(f"{name}: gallery takes limit", hint="E.g. gallery: {limit: 200}.")
        if "limit" in gallery:
            kw["gallery_limit"] = _number(gallery, "limit", f"{name}: gallery", integer=True)
    return Policy(**kw)


def load_policy(path: str | Path) -> Policy:
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError(f"policy file {p} does not exist", hint="Give the path of a YAML or JSON policy.") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"{p} is not valid YAML: {exc}", hint="Check its indentation and quotes.") from exc
    return parse(data, str(p))
