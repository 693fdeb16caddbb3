"""Active learning: the uncertainty measures by hand, core-set picks, batches ranked and cached per model version,
MC-dropout and test-time augmentation through the scorer protocol, recorded batches that become tasks, and the
whole loop on the synthetic phantom task (every strategy; the machinery, not the benchmark's claim)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from medcycle.errors import Conflict, NotFound, UsageError, ValidationFailed
from medcycle.labels import active, strategies, tasks
from medcycle.labels.tables import ActiveScoreRow
from medcycle.platform import Platform
from medcycle.testing.active_learning import CurveConfig, run_curve
from tests.labels.task_helpers import CLASS_SCHEMA, add_schema, qualify, small_catalog


# -- measures (no database) ----------------------------------------------------------------------------
def test_uncertainty_measures_by_hand() -> None:
    assert strategies.entropy([0.5, 0.5]) == pytest.approx(math.log(2))
    assert strategies.entropy([1.0, 0.0]) == pytest.approx(0.0, abs=1e-9)
    seg = np.stack([np.full((4, 4), 0.5), np.full((4, 4), 0.5)])
    seg[:, :2] = [[[1.0]], [[0.0]]]  # half the pixels certain
    assert strategies.entropy(seg) == pytest.approx(math.log(2) / 2)
    assert strategies.entropy(np.full((1, 3, 3), 0.5)) == pytest.approx(math.log(2))  # C = 1: foreground p
    assert strategies.margin([0.7, 0.2, 0.1]) == pytest.approx(1 - 0.5)
    assert strategies.margin([1.0, 0.0]) == pytest.approx(0.0)
    same = [[0.8, 0.2]] * 4
    assert strategies.bald(same) == pytest.approx(0.0, abs=1e-9)
    split = [[1.0, 0.0], [0.0, 1.0]]  # each pass certain, the passes disagree: all of it is epistemic
    assert strategies.bald(split) == pytest.approx(math.log(2))
    assert strategies.variance([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(0.25)
    assert strategies.variance(same) == pytest.approx(0.0)
    with pytest.raises(ValidationFailed, match="not logits"):
        strategies.entropy([2.3, -1.0])
    with pytest.raises(ValidationFailed, match="do not sum to 1"):
        strategies.entropy([0.3, 0.3])
    with pytest.raises(ValidationFailed, match="at least 2 samples"):
        strategies.bald([[0.5, 0.5]])
    with pytest.raises(ValidationFailed, match="differ in shape"):
        strategies.variance([np.full((2, 3, 3), 0.5), np.full((2, 3, 4), 0.5)])


def test_k_center_greedy_picks_far_from_the_labelled_and_from_each_other() -> None:
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0]])
    assert strategies.k_center_greedy(x, 3, labelled=np.array([[0.0]])) == [5, 3, 2]
    first = strategies.k_center_greedy(x, 2, rng=np.random.default_rng(0))
    assert len(set(first)) == 2 and abs(x[first[0], 0] - x[first[1], 0]) >= 10
    assert strategies.k_center_greedy(x, 10, labelled=np.array([[0.0]])) == [5, 3, 2, 1, 4, 0]
    with pytest.raises(ValidationFailed, match="same model version"):
        strategies.k_center_greedy(x, 1, labelled=np.zeros((1, 2)))
    with pytest.raises(ValidationFailed, match="NaN"):
        strategies.k_center_greedy(np.array([[np.nan]]), 1)


# -- batches through the scorer protocol (no database) ---------------------------------------------------
@dataclass
class MapScorer:
    """Each item's foreground probability is a fixed map; MC passes jitter items named ``wobbly*``."""

    maps: dict[str, np.ndarray[Any, Any]]
    version: str = "m@1"
    calls: list[tuple[str, int]] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def predict(self, items: Sequence[str], *, dropout: bool = False,
                transform: active.InputTransform | None = None) -> list[np.ndarray[Any, Any]]:
        self.calls.append(("dropout" if dropout else "transform" if transform else "predict", len(items)))
        out = []
        for i in items:
            p = self.maps[i]
            if dropout and i.startswith("wobbly"):
                p = np.clip(p + self.rng.choice([-0.4, 0.4]), 0, 1)
            out.append(p[None])
        return out

    def features(self, items: Sequence[str]) -> np.ndarray[Any, Any]:
        self.calls.append(("features", len(items)))
        return np.array([[float(self.maps[i].mean())] for i in items])


def maps() -> dict[str, np.ndarray[Any, Any]]:
    return {"sure-bg": np.full((4, 4), 0.01), "sure-fg": np.full((4, 4), 0.99), "half": np.full((4, 4), 0.5),
            "mostly": np.full((4, 4), 0.8), "wobbly": np.full((4, 4), 0.5), "wobbly2": np.full((4, 4), 0.95)}


def test_batches_rank_by_uncertainty_skip_labelled_items_and_cache_per_model_version() -> None:
    scorer, cache = MapScorer(maps()), active.MemoryCache()
    items = sorted(maps())
    batch = active.select_batch(items, 3, "entropy", scorer=scorer, cache=cache, labelled=["wobbly"])
    assert batch.items == ("half", "mostly", "wobbly2") and batch.scored == 5
    assert batch.scores[0] == pytest.approx(math.log(2)) and batch.scores == tuple(sorted(batch.scores, reverse=True))
    assert batch.model_version == "m@1" and batch.measure == "entropy" and batch.n_labelled == 1
    calls = len(scorer.calls)
    again = active.select_batch(items, 4, "entropy", scorer=scorer, cache=cache, labelled=["wobbly"])
    assert again.items[:3] == batch.items and again.scored == 0 and len(scorer.calls) == calls  # from the cache
    newer = MapScorer(maps(), version="m@2")
    assert active.select_batch(items, 2, "entropy", scorer=newer, cache=cache).scored == len(items)
    assert active.select_batch(items, 2, "margin", scorer=scorer, cache=cache).items == ("half", "wobbly")
    # random needs no model, is seeded, never picks a labelled item
    r1 = active.select_batch(items, 3, "random", labelled=["half"], seed=1)
    assert r1 == active.select_batch(items, 3, "random", labelled=["half"], seed=1)
    assert "half" not in r1.items and r1.scores == (None, None, None) and r1.model_version is None
    assert {active.select_batch(items, 3, "random", seed=s).items for s in range(6)} != {r1.items}
    with pytest.raises(UsageError, match="not a strategy"):
        active.select_batch(items, 3, "vibes", scorer=scorer)
    with pytest.raises(UsageError, match="needs a model"):
        active.select_batch(items, 3, "entropy")
    with pytest.raises(UsageError, match="no unlabelled candidates"):
        active.select_batch(["half"], 3, "random", labelled=["half"])
    with pytest.raises(UsageError, match="not positive"):
        active.select_batch(items, 0, "random")


def test_mc_dropout_finds_items_the_passes_disagree_on() -> None:
    scorer = MapScorer(maps())
    batch = active.select_batch(sorted(maps()), 2, "mc-dropout", scorer=scorer, mc_samples=8)
    assert set(batch.items) == {"wobbly", "wobbly2"}  # "half" is as unsure, but every pass says so
    assert [c for c in scorer.calls if c[0] == "dropout"] == [("dropout", 6)] * 8
    assert batch.measure == "mc-dropout:bald:t=8" and batch.params == {"mc_samples": 8}
    with pytest.raises(UsageError, match="at least 2 passes"):
        active.select_batch(sorted(maps()), 2, "mc-dropout", scorer=scorer, mc_samples=1)


@dataclass
class PixelScorer:
    """Foreground probability from each pixel's own value (``equivariant``) or also from its column."""

    images: dict[str, np.ndarray[Any, Any]]
    equivariant: bool = True
    version: str = "px@1"

    def predict(self, items: Sequence[str], *, dropout: bool = False,
                transform: active.InputTransform | None = None) -> list[np.ndarray[Any, Any]]:
        out = []
        for i in items:
            x = self.images[i][None]  # (1, H, W), as the network takes it
            x = transform(x) if transform else x
            p = 1 / (1 + np.exp(-x[0]))
            if not self.equivariant:
                p = p * np.linspace(0.2, 1.0, p.shape[1])[None, :]
            out.append(np.stack([1 - p, p]))
        return out

    def features(self, items: Sequence[str]) -> np.ndarray[Any, Any]:
        raise AssertionError("not used")


def test_test_time_augmentation_undoes_each_monai_transform_before_comparing() -> None:
    rng = np.random.default_rng(3)
    images = {f"i{k}": rng.normal(size=(6, 8)) for k in range(4)}
    augs = active.tta_augmentations()
    assert [a.name for a in augs] == ["flip0", "flip1", "rot90", "rot180", "rot270"]
    x = rng.normal(size=(1, 6, 8))
    for a in augs:
        moved = a.forward(x)
        assert not np.array_equal(moved, x) and np.array_equal(a.inverse(moved), x)
    assert augs[2].forward(x).shape == (1, 8, 6)
    flat = active.select_batch(sorted(images), 2, "tta", scorer=PixelScorer(images))
    assert all(s == pytest.approx(0.0, abs=1e-12) for s in flat.scores)  # a pixelwise model is equivariant
    assert flat.params == {"augmentations": [a.name for a in augs]}
    skew = active.select_batch(sorted(images), 2, "tta", scorer=PixelScorer(images, equivariant=False))
    assert all(s is not None and s > 1e-3 for s in skew.scores)


def test_coreset_keeps_away_from_what_is_labelled_and_caches_features() -> None:
    scorer, cache = MapScorer(maps()), active.MemoryCache()
    batch = active.select_batch(sorted(maps()), 2, "coreset", scorer=scorer, cache=cache, labelled=["sure-fg"])
    assert batch.items == ("sure-bg", "half") and batch.measure == "features"
    assert scorer.calls == [("features", 6)]
    active.select_batch(sorted(maps()), 3, "coreset", scorer=scorer, cache=cache)
    assert scorer.calls == [("features", 6)]  # the vectors came from the cache


# -- the database ----------------------------------------------------------------------------------------
def test_a_recorded_batch_is_cached_per_model_version_and_becomes_a_task(platform: Platform) -> None:
    uids = small_catalog(platform, patients=3, per_series=2)  # 6 instances
    add_schema(platform, CLASS_SCHEMA)
    qualify(platform, "ann", "bob")
    probs = [0.5, 0.6, 0.7, 0.9, 0.99, 0.3]
    scorer = MapScorer({u: np.full((2, 2), p) for u, p in zip(uids, probs, strict=True)}, version="cxr@3")
    with platform.session() as s:
        b1 = active.next_batch(s, uids, 2, "entropy", scorer=scorer, actor="lead")
        assert b1.ref == "B-1" and b1.batch.items == (uids[0], uids[1]) and b1.batch.scored == 6
        assert s.scalar(select(func.count()).select_from(ActiveScoreRow).where(
            ActiveScoreRow.model_version == "cxr@3", ActiveScoreRow.measure == "entropy")) == 6
    with platform.session() as s:  # another session: the cache is in the database
        again = active.next_batch(s, uids, 3, "entropy", scorer=MapScorer(scorer.maps, version="cxr@3"))
        assert again.batch.scored == 0 and again.batch.items[:2] == b1.batch.items
        task = active.create_task_from_batch(s, b1.ref, schema="chest", readers_per_item=2, actor="lead")
        assert set(tasks.get_task(s, task.ref).to_dict()["readers"]) == {"ann", "bob"}
        assert task.items == 2 and "active learning B-1 (entropy, cxr@3)" in task.origin
        assert active.get_batch(s, "B-1").task == task.ref
        with pytest.raises(Conflict, match="already became"):
            active.create_task_from_batch(s, "B-1", schema="chest")
        # items in a task are labelled: the next batch leaves them out by itself
        assert active.labelled_items(s, uids) == set(b1.batch.items)
        b3 = active.next_batch(s, uids, 2, "entropy", scorer=scorer)
        assert not set(b3.batch.items) & set(b1.batch.items) and b3.batch.n_labelled == 2
        assert [b.ref for b in active.list_batches(s)] == ["B-3", "B-2", "B-1"]
        assert b3.to_dict()["scores"][0] == pytest.approx(strategies.entropy([0.3, 0.7]))
        with pytest.raises(NotFound, match="B-9"):
            active.get_batch(s, "B-9")
        with pytest.raises(UsageError, match="not a batch reference"):
            active.get_batch(s, "T-1")


# -- the loop on phantoms --------------------------------------------------------------------------------
TINY = CurveConfig(pool=40, test=20, size=24, start=4, step=4, max_labels=12, first_steps=10, steps=5, mc_samples=3)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny tensors on a shared machine: one thread, not two spinning against each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("strategy", ["random", "entropy", "margin", "mc-dropout", "tta", "coreset"])
@pytest.mark.usefixtures("one_thread")
def test_the_active_learning_loop_runs_on_the_phantom_task(strategy: str) -> None:
    curve = run_curve(strategy, 3, TINY)
    assert curve.labels == (4, 8, 12) and len(curve.dice) == 3
    assert all(0.0 <= d <= 1.0 for d in curve.dice)
    assert len(curve.picked) == len(set(curve.picked)) == 12
    assert curve.picked[:4] == run_curve("random", 3, TINY).picked[:4]  # the same start for every strategy
    assert curve.scored == (0 if strategy == "random" else 40 + 40 if strategy == "coreset" else 36 + 32)
    assert curve.labels_to(-1.0) == 4 and curve.labels_to(2.0) is None


def test_the_api_records_random_batches_and_makes_them_tasks(platform: Platform) -> None:
    from fastapi.testclient import TestClient

    from tests.labels.task_helpers import token_for
    from tests.labels.test_api import make_app

    small_catalog(platform, patients=2, per_series=3)
    add_schema(platform, CLASS_SCHEMA)
    qualify(platform, "ann")
    lead, ann = token_for(platform, "lead", "admin"), token_for(platform, "ann", "annotator")
    body = {"schema": "chest", "query": 'modality != "none"', "size": 4, "seed": 2}
    with TestClient(make_app(platform), raise_server_exceptions=False) as c:
        assert c.post("/v1/labels/active/batches", json=body, headers=ann).status_code == 403
        r = c.post("/v1/labels/active/batches", json={**body, "strategy": "entropy"}, headers=lead)
        assert r.status_code == 400 and "--model" in r.json()["error"]["hint"]
        batch = c.post("/v1/labels/active/batches", json=body, headers=lead).json()
        assert batch["ref"] == "B-1" and len(batch["items"]) == 4 and batch["candidates"] == 6
        r = c.post("/v1/labels/active/batches/B-1/task", json={"schema": "chest"}, headers=lead)
        assert r.status_code == 201 and r.json()["items"] == 4 and r.json()["readers"] == ["ann"]
        assert c.post("/v1/labels/active/batches/B-1/task", json={"schema": "chest"}, headers=lead).status_code == 409
        assert c.get("/v1/labels/active/batches/B-1", headers=lead).json()["task"] == r.json()["ref"]
        assert c.get("/v1/labels/active/batches", headers=ann).status_code == 403
        second = c.post("/v1/labels/active/batches", json=body, headers=lead).json()
        assert second["candidates"] == 2 and second["labelled"] == 4  # what is in a task is not offered again
