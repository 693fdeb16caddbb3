"""Per-item aggregation of pixel uncertainty (foreground, top-k, mean), the uncertainty-then-diversity hybrid,
strategy aliases and cache keys — plain numpy and the library's select_batch, no database."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from medcycle.errors import UsageError, ValidationFailed
from medcycle.labels import active, strategies


def lesion_maps() -> dict[str, np.ndarray[Any, Any]]:
    """Foreground probability maps (20×20): a large lesion segmented confidently but with a soft boundary band,
    a small lesion the model half sees, and an empty image."""
    yy, xx = np.mgrid[:20, :20]
    d = np.hypot(yy - 10, xx - 10)
    big = np.clip(1.0 - (d - 6.0) / 2.0, 0.001, 0.999)  # 1 inside r=6, a 2-px ramp to 0 outside
    small = np.where(d <= 1.5, 0.45, 0.001)
    return {"big": big, "small": small, "empty": np.full((20, 20), 0.001)}


def test_the_foreground_aggregation_ranks_a_half_seen_small_lesion_above_a_confident_large_one() -> None:
    maps = lesion_maps()
    fg = {k: strategies.entropy(v[None], "foreground") for k, v in maps.items()}
    mean = {k: strategies.entropy(v[None], "mean") for k, v in maps.items()}
    top = {k: strategies.entropy(v[None], "top1%") for k, v in maps.items()}
    assert fg["small"] > fg["big"] > fg["empty"] == 0.0
    assert mean["big"] > mean["small"]  # the whole-image mean: the big lesion's boundary band outweighs it
    assert fg["small"] == pytest.approx(strategies.entropy([0.55, 0.45]))  # every probable-fg pixel is at 0.45
    # top-k: the mean of the k most uncertain pixels, k = ceil(P% of the pixels), at least one
    u = np.arange(200, dtype=float)
    assert strategies.aggregate(u, "top1%") == pytest.approx(np.mean([198, 199]))
    assert strategies.aggregate(u, "top0.1%") == pytest.approx(199)
    assert strategies.aggregate(u, "top100%") == pytest.approx(u.mean())
    assert top["big"] > 0 and strategies.aggregate([0.3], "top5%") == pytest.approx(0.3)
    # a classifier's (C,) output is one "pixel": every aggregation gives its value
    for how in ("foreground", "mean", "top1%"):
        assert strategies.entropy([0.5, 0.5], how) == pytest.approx(math.log(2))
    with pytest.raises(UsageError, match="not a way to aggregate"):
        strategies.entropy(maps["big"][None], "median")
    with pytest.raises(UsageError, match="not a way to aggregate"):
        strategies.check_aggregate("top0%")
    with pytest.raises(ValidationFailed, match="needs the foreground"):
        strategies.aggregate(np.ones((3, 3)), "foreground")
    # MC-dropout and TTA take the probable foreground of the mean prediction
    passes = [maps["small"][None] * f for f in (0.5, 1.0, 1.5)]
    assert strategies.bald(passes, "foreground") > strategies.bald(passes, "mean") > 0
    assert strategies.variance(passes, "foreground") > strategies.variance(passes, "mean") > 0


def test_uncertain_then_diverse_spreads_a_batch_over_the_shortlist() -> None:
    scores = [0.90, 0.89, 0.88, 0.87, 0.50, 0.10]
    x = np.array([[0.0], [0.01], [0.02], [5.0], [9.0], [20.0]])  # three near-copies, then distinct cases
    assert strategies.uncertain_then_diverse(scores, x, 2, factor=1) == [0, 1]  # factor 1: rank only
    assert strategies.uncertain_then_diverse(scores, x, 2, factor=2) == [0, 3]  # the most uncertain, then far
    assert strategies.uncertain_then_diverse(scores, x, 2, factor=2.5) == [0, 4]  # k-center within the top 5
    assert strategies.uncertain_then_diverse(scores, x, 2, factor=3) == [0, 5]  # ... within all 6
    picked = strategies.uncertain_then_diverse(scores, x, 2, factor=2, labelled=np.array([[5.0]]))
    assert picked == [0, 2]  # item 3 is next to a labelled case; 2 is the farthest from both 0 and it
    with pytest.raises(UsageError, match="below 1"):
        strategies.uncertain_then_diverse(scores, x, 2, factor=0.5)
    with pytest.raises(ValidationFailed, match="6 scores but features"):
        strategies.uncertain_then_diverse(scores, x[:3], 2, factor=2)


@dataclass
class MapScorer:
    maps: dict[str, np.ndarray[Any, Any]]
    version: str = "seg@v1"

    def predict(self, items: Sequence[str], *, dropout: bool = False,
                transform: active.InputTransform | None = None) -> list[np.ndarray[Any, Any]]:
        return [self.maps[i][None] for i in items]

    def features(self, items: Sequence[str]) -> np.ndarray[Any, Any]:
        return np.array([[float(self.maps[i].sum())] for i in items])


def test_select_batch_aggregates_by_the_foreground_by_default_and_keys_the_cache_by_aggregation() -> None:
    maps = lesion_maps()
    cache = active.MemoryCache()
    batch = active.select_batch(sorted(maps), 1, "entropy", scorer=MapScorer(maps), cache=cache)
    assert batch.items == ("small",) and batch.measure == "entropy" and batch.params == {}
    mean = active.select_batch(sorted(maps), 1, "entropy", scorer=MapScorer(maps), cache=cache, aggregate="mean")
    assert mean.items == ("big",) and mean.measure == "entropy@mean" and mean.params == {"aggregate": "mean"}
    assert {k[1] for k in cache.values} == {"entropy", "entropy@mean"}  # two measures, cached apart
    mc = active.select_batch(sorted(maps), 1, "MC_Dropout", scorer=MapScorer(maps), mc_samples=3, aggregate="top5%")
    assert mc.strategy is active.Strategy.MC_DROPOUT and mc.measure == "mc-dropout:bald:t=3@top5%"
    hybrid = active.select_batch(sorted(maps), 2, "entropy", scorer=MapScorer(maps), cache=cache, diversity=1.5)
    assert hybrid.items[0] == "small" and hybrid.params == {"diversity": 1.5} and len(hybrid.items) == 2
    with pytest.raises(UsageError, match="diversity factor"):
        active.select_batch(sorted(maps), 2, "entropy", scorer=MapScorer(maps), diversity=0.9)
    # without a scorer: the model version's cached scores, or a clear refusal that says how to compute them
    cached = active.select_batch(sorted(maps), 1, "entropy", model_version="seg@v1", cache=cache)
    assert cached.items == ("small",) and cached.scored == 0
    with pytest.raises(active.NotScored, match=r"seg@v2 has no cached 'entropy' scores for 3 of 3") as exc:
        active.select_batch(sorted(maps), 1, "entropy", model_version="seg@v2", cache=cache)
    assert "medcycle labels active score --model seg@v2 --strategy entropy" in (exc.value.hint or "")
    with pytest.raises(UsageError, match="needs the score cache"):
        active.select_batch(sorted(maps), 1, "entropy", model_version="seg@v1")
