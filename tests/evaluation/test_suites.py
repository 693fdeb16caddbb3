"""``medcycle evaluate`` suites on real trained models: segmentation surface metrics per case with intervals
and subgroups, reproducibility by retraining (same seed → same weights; other seeds → a spread), the load smoke
test behind the serving predictor, and the review gallery's stored cases."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from medcycle.errors import ValidationFailed
from medcycle.evaluation.policy import parse
from medcycle.evaluation.run import evaluate
from medcycle.models import cards, registry
from medcycle.platform import Platform
from medcycle.training.config import TrainingConfig, example, validate
from medcycle.training.trainers import train_version


def tiny(task: str, dataset: str, *, epochs: int) -> TrainingConfig:
    data = example(task, dataset)
    data["training"] = {**data["training"], "threads": 1, "epochs": epochs, "early_stopping": None}
    if task == "classification-2d":
        data["model"] = {"name": "tiny-cnn", "width": 8, "depth": 2}
    data["input"] = {**data["input"], "size": [32, 32]}
    return validate(data)


def register(p: Platform, name: str, cfg: TrainingConfig, dataset: str, run_options: dict[str, Any]) -> str:
    result = train_version(p, cfg, dataset=dataset, run_options=run_options)
    with p.session() as s:
        return registry.register(s, p.objects, name, run_id=result.run_id, task=cfg.task.value).ref


def test_segmentation_surface_metrics_per_case_with_intervals_and_subgroups(
        sqlite_platform: Platform, loaded: dict[str, str], run_options: dict[str, Any]) -> None:
    p = sqlite_platform
    ref = register(p, "lesion-seg", tiny("segmentation-2d", loaded["demo-xr"], epochs=2), loaded["demo-xr"],
                   run_options)
    policy = parse({"metrics": {"hd95": {"max": 1000}, "nsd": {"min": 0.0}}, "factors": ["source"], "min_group": 2,
                    "subgroups": {"dice": {"min": 0.0}}, "bootstrap": {"resamples": 100},
                    "segmentation": {"nsd_tolerance": 2.0}, "gallery": {"limit": 5}}, "seg.yaml")
    ev = evaluate(p, ref, loaded["demo-xr"], policy)
    assert ev.passed, [g.to_dict() for g in ev.gates if not g.passed]
    assert set(ev.metrics) == {"dice", "hd95", "asd", "nsd"}
    for name, e in ev.metrics.items():
        assert e["n"] + e["undefined"] == ev.cases, name
        if e["value"] is not None:
            assert e["ci_low"] <= e["value"] <= e["ci_high"], name
    assert ev.metrics["dice"]["n"] == ev.cases  # Dice is defined on every case
    groups = ev.disaggregated["source"]
    assert groups and all(set(v) == {"dice", "hd95", "asd", "nsd"} for v in groups.values())
    # the gallery holds the worst cases by Dice first, each with a preview PNG and per-case metrics
    assert len(ev.cases_list) == 5
    dice = [c["metrics"]["dice"] for c in ev.cases_list]
    assert dice == sorted(dice)
    assert p.objects.get(ev.cases_list[0]["preview"]).startswith(b"\x89PNG")
    # distances are in mm: the demo radiographs carry PixelSpacing, scaled to the 32-pixel input
    assert ev.cases_list[0]["spacing"] is not None and ev.cases_list[0]["spacing"][0] > 0
    with p.session() as s:
        summary = registry.gate_reports(s, ref)[0].summary
    stored = json.loads(p.objects.get(summary["reports"]["cases"]))
    assert stored["segmentation"] and [c["key"] for c in stored["cases"]] == [c["key"] for c in ev.cases_list]
    # a bound on a metric the task lacks is a named failure, not a crash
    failed = evaluate(p, ref, loaded["demo-xr"], parse({"metrics": {"auroc": {"min": 0.5}},
                                                        "bootstrap": {"resamples": 10}}, "x.yaml"), record=False)
    assert not failed.passed and "auroc is not computed" in failed.gates[0].reasons[0]


def test_reproducibility_and_load_suites(sqlite_platform: Platform, loaded: dict[str, str],
                                         run_options: dict[str, Any], tmp_path: Path) -> None:
    p = sqlite_platform
    ref = register(p, "nodules", tiny("classification-2d", loaded["demo-xr"], epochs=2), loaded["demo-xr"],
                   run_options)
    policy = parse({"metrics": {"auroc": {"min": 0.0}}, "bootstrap": {"resamples": 50},
                    "reproducibility": {"seeds": [7], "max_metric_spread": {"auroc": 1.0}},
                    "load": {"requests": 12, "batch": 4, "warmup": 1, "p99_ms_max": 60000, "min_throughput": 0.01},
                    "gallery": {"limit": 0}}, "repro.yaml")
    ev = evaluate(p, ref, loaded["demo-xr"], policy, journal_dir=tmp_path / "journals")
    gates = {g.name: g for g in ev.gates}
    assert ev.passed, [g.to_dict() for g in ev.gates if not g.passed]
    rep = gates["reproducibility"].data
    assert rep["same_seed"]["identical_weights"] and rep["same_seed"]["identical_metrics"]
    assert rep["same_seed"]["weights_digest"] == rep["same_seed"]["recorded_weights_digest"]
    assert any(r["metric"] == "val/auroc" for r in rep["same_seed"]["metrics"])
    seeds = rep["seeds"]
    assert [r["seed"] for r in seeds] == [0, 7] and seeds[1]["weights_digest"] != rep["same_seed"]["weights_digest"]
    spread = rep["spread"]["auroc"]
    assert spread["spread"] == pytest.approx(spread["max"] - spread["min"]) and spread["spread"] > 0
    assert seeds[0]["metrics"]["auroc"] == pytest.approx(ev.metrics["auroc"]["value"], abs=1e-6)
    load = gates["load"].data
    assert load["requests"] == 12 and load["batch"] == 4 and load["statuses"] == {"ok": 12}
    assert 0 < load["p50_ms"] <= load["p99_ms"] <= load["max_ms"] and load["throughput"] > 0
    assert ev.cases_list == []  # gallery limit 0: nothing drawn

    # results reach the model card
    with p.session() as s:
        card = cards.build(s, ref)
    assert card["evaluation"]["reproducibility"]["same_seed"]["identical_weights"] is True
    assert card["evaluation"]["load"]["requests"] == 12
    md = cards.markdown(card)
    assert "Reproducibility" in md and "p99" in md

    # impossible bounds fail with reasons that name the numbers
    strict = parse({"reproducibility": {"retrain": False, "seeds": [7], "max_metric_spread": {"auroc": 0.0}},
                    "load": {"requests": 4, "p99_ms_max": 0.0001, "min_throughput": 1e9},
                    "bootstrap": {"resamples": 10}}, "strict.yaml")
    bad = evaluate(p, ref, loaded["demo-xr"], strict, record=False, journal_dir=tmp_path / "journals")
    gates = {g.name: g for g in bad.gates}
    assert not gates["reproducibility"].passed and "spreads" in gates["reproducibility"].reasons[0]
    assert "same_seed" not in gates["reproducibility"].data
    assert not gates["load"].passed and any("p99 latency" in r for r in gates["load"].reasons)
    assert any("throughput" in r for r in gates["load"].reasons)


@pytest.mark.parametrize(("doc", "words"), [
    ({"reproducibility": {"seeds": "1"}}, "seeds must be a list"),
    ({"reproducibility": {"seed": [1]}}, "reproducibility takes"),
    ({"reproducibility": {"max_metric_spread": {"auroc": -1}}}, "numbers >= 0"),
    ({"load": {"requests": 0}}, "requests must be an integer >= 1"),
    ({"load": {"requests": 4, "batch": 8}}, "batch at most requests"),
    ({"load": {"p99": 3}}, "load takes"),
    ({"segmentation": {"spacing": [1]}}, "2 or 3 voxel sizes"),
    ({"gallery": {"limit": -1}}, "limit must be an integer"),
])
def test_bad_suite_settings_are_refused(doc: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationFailed, match=words) as info:
        parse(doc, "gates.yaml")
    assert "gates.yaml" in info.value.message and info.value.hint


def test_defaults_of_the_new_suites() -> None:
    policy = parse({"reproducibility": True, "load": {}}, "p.yaml")
    assert policy.reproducibility is not None and policy.reproducibility.retrain and not policy.reproducibility.seeds
    assert policy.load is not None and policy.load.requests == 64 and policy.gallery_limit == 200
    assert math.isclose(policy.nsd_tolerance, 1.0)
