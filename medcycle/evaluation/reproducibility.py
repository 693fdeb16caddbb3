"""The reproducibility suite of ``medcycle evaluate``: retrain a version from what its run recorded.

A version registered from a training run names the run, which stored the exact training config
(``config.json``: preprocessing, network, optimiser, epochs and seed), the dataset version it read (by digest)
and the weights digest it reached (its ``weights_digest`` tag, a hash of the tensors). The suite trains that
config again on the same dataset version, in process, as new tracked runs:

* **same seed** — the weights digest and every final metric of the run must come out identical (training
  is deterministic on one machine and software stack: see :mod:`medcycle.training.trainers`);
* **other seeds** (``seeds``) — each retrained network is evaluated on the judged split with the policy's
  metrics, and the spread (max - min, the recorded version included) is reported and bounded by
  ``max_metric_spread``.

Retraining costs what training cost; keep it to small configs or nightly gates.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcycle.errors import ValidationFailed

if TYPE_CHECKING:
    from medcycle.evaluation.policy import Reproducibility
    from medcycle.evaluation.predict import Loaded
    from medcycle.platform import Platform
    from medcycle.training.trainers import TrainResult

#: Options of the retraining runs: quiet and bounded (no resource sampling, no output capture).
RUN_OPTIONS = {"resources": False, "capture_output": False, "capture": False, "flush_interval": 0.05}
IGNORED = ("system/", "seconds", "time")


def _comparable(key: str) -> bool:
    return not any(part in key for part in IGNORED)


def _recorded(platform: Platform, loaded: Loaded) -> tuple[str | None, dict[str, float], str, str]:
    """The recorded run's weights digest (tensor hash), final metrics, dataset version (``NAME@vN``) and its
    digest."""
    from medcycle.experiments.runs import get_run

    version = loaded.version
    if version.run_id is None:  # load() already refuses these; kept for a clear message
        raise ValidationFailed(f"{version.ref} has no training run to reproduce", hint="Register from a run.")
    with platform.session(write=False) as session:
        detail = get_run(session, version.run_id).to_dict()
    dataset = detail.get("dataset_digest") or version.dataset_digest
    if not dataset:
        raise ValidationFailed(f"the run {version.run_id} of {version.ref} names no dataset version",
                               hint="Only runs that trained on a dataset version (data.dataset or --dataset) "
                                    "can be retrained; a folder may have changed since.")
    from medcycle.datasets.tables import DatasetRow, DatasetVersionRow

    with platform.session(write=False) as session:  # the exact version, by digest, named as NAME@vN
        row = session.get(DatasetVersionRow, str(dataset))
        owner = session.get(DatasetRow, row.dataset_id) if row is not None else None
        if row is None or owner is None:
            raise ValidationFailed(f"the dataset version {str(dataset)[:12]}… that {version.ref} was trained on "
                                   "is not in this store", hint="Restore it (or evaluate where it lives).")
        dataset_ref = f"{owner.name}@v{row.seq}"
    tags = detail.get("tags") or {}
    metrics = {k: float(v) for k, v in (version.metrics or {}).items()
               if isinstance(v, int | float) and _comparable(k)}
    return (str(tags["weights_digest"]) if tags.get("weights_digest") else None), metrics, dataset_ref, str(dataset)


def _run_metrics(platform: Platform, run_id: str) -> dict[str, float]:
    """Final values of a run's metrics, as registration records them for a version."""
    from medcycle.models.registry import run_lineage

    with platform.session(write=False) as session:
        metrics = run_lineage(session, run_id)["metrics"]
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and _comparable(k)}


def _retrained(platform: Platform, loaded: Loaded, result: TrainResult) -> Loaded:
    import torch

    from medcycle.evaluation.predict import Loaded as LoadedModel
    from medcycle.training.models import build_model, out_channels

    if not result.model_digest:  # pragma: no cover - train() always logs the model
        raise ValidationFailed(f"the retraining run {result.run_id} logged no model", hint="See its log.")
    model = build_model(loaded.config, out_channels(loaded.config, loaded.classes))
    state = torch.load(io.BytesIO(platform.objects.get(result.model_digest)), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    version = dataclasses.replace(loaded.version, weights_digest=result.model_digest, run_id=result.run_id)
    return LoadedModel(version, loaded.config, loaded.classes, model)


def run_suite(platform: Platform, loaded: Loaded, spec: Reproducibility, *, baseline: dict[str, float | None],
              score: Callable[[Loaded], dict[str, float | None]], journal_dir: Path | None = None,
              log: Callable[[str], None] = lambda _m: None) -> tuple[list[str], dict[str, Any]]:
    """Retrain (see the module docstring); returns the gate's reasons and its data.

    ``baseline`` holds the evaluated version's metrics on the judged split; ``score`` evaluates a retrained
    network the same way.
    """
    from medcycle.training.trainers import train_version

    recorded_digest, recorded_metrics, dataset, dataset_digest = _recorded(platform, loaded)
    options: dict[str, Any] = dict(RUN_OPTIONS)
    if journal_dir is not None:
        options["journal_dir"] = journal_dir
    seed = loaded.config.training.seed
    reasons: list[str] = []
    data: dict[str, Any] = {"original_run": loaded.version.run_id, "dataset": dataset, "dataset_digest": dataset_digest,
                            "seed": seed}
    if spec.retrain:
        log(f"reproducibility: retraining {loaded.version.ref} with its seed {seed}")
        same = train_version(platform, loaded.config, dataset=dataset, run_options=options)
        new_metrics = _run_metrics(platform, same.run_id)
        metric_rows: list[dict[str, Any]] = []
        for key, before in sorted(recorded_metrics.items()):
            after = new_metrics.get(key)
            equal = after is not None and (before == after or (math.isnan(before) and math.isnan(after)))
            metric_rows.append({"metric": key, "recorded": before, "retrained": after, "identical": equal})
        identical_weights = recorded_digest is not None and same.weights_digest == recorded_digest
        data["same_seed"] = {"run": same.run_id, "weights_digest": same.weights_digest,
                             "recorded_weights_digest": recorded_digest, "identical_weights": identical_weights,
                             "metrics": metric_rows,
                             "identical_metrics": all(r["identical"] for r in metric_rows)}
        if spec.require_identical:
            if recorded_digest is None:
                reasons.append(f"the run {loaded.version.run_id} recorded no weights digest to compare with")
            elif not identical_weights:
                reasons.append(f"retraining with seed {seed} gave weights {same.weights_digest[:12]}…, "
                               f"not the recorded {recorded_digest[:12]}…")
            differing = [str(r["metric"]) for r in metric_rows if not r["identical"]]
            if differing:
                reasons.append("retraining with the same seed changed " + ", ".join(differing[:5]))
    per_seed: list[dict[str, Any]] = [{"seed": seed, "run": loaded.version.run_id, "metrics": baseline}]
    for other in spec.seeds:
        if other == seed:
            continue
        log(f"reproducibility: retraining {loaded.version.ref} with seed {other}")
        config = loaded.config.model_copy(update={"training": loaded.config.training.model_copy(
            update={"seed": other})})
        result = train_version(platform, config, dataset=dataset, run_options=options)
        retrained = _retrained(platform, dataclasses.replace(loaded, config=config), result)
        per_seed.append({"seed": other, "run": result.run_id, "weights_digest": result.weights_digest,
                         "metrics": score(retrained)})
    spread: dict[str, dict[str, float | None]] = {}
    if len(per_seed) > 1:
        for name in sorted({k for row in per_seed for k in row["metrics"]}):
            values = [row["metrics"].get(name) for row in per_seed]
            finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
            spread[name] = {"min": min(finite) if finite else None, "max": max(finite) if finite else None,
                            "spread": (max(finite) - min(finite)) if finite else None}
    data["seeds"] = per_seed
    data["spread"] = spread
    for name, limit in sorted(spec.max_metric_spread.items()):
        got = spread.get(name, {}).get("spread")
        if got is None:
            reasons.append(f"{name}: no spread to judge (give seeds, and a metric the task computes)")
        elif got > limit:
            reasons.append(f"{name} spreads {got:.4f} across seeds {[r['seed'] for r in per_seed]} "
                           f"(limit {limit:g})")
    return reasons, data
