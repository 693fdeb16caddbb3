"""The active-learning benchmark's pieces: the empty-mask policy of its Dice, the pool with lesion-free studies,
the lesions-only design kept reproducible, its options, and one tiny end-to-end run (the machinery, not the
claim: ``bench/active_learning.py`` measures that)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from medcycle.errors import ValidationFailed
from medcycle.labels import policy
from medcycle.testing.active_learning import masks_dice

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("active_learning_bench", ROOT / "bench" / "active_learning.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_dice_follows_the_empty_mask_policy() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    dot = empty.copy()
    dot[1, 1] = True
    square = empty.copy()
    square[:2, :2] = True
    pred = np.stack([empty, dot, empty, dot])
    truth = np.stack([empty, empty, square, square])
    got = masks_dice(pred, truth)
    assert got[0] == policy.OVERLAP_BOTH_EMPTY == 1.0  # a normal study left clean
    assert got[1] == policy.OVERLAP_ONE_EMPTY == 0.0  # one false-positive pixel on a normal study
    assert got[2] == 0.0  # a lesion missed entirely
    assert got[3] == pytest.approx(2 * 1 / (1 + 4))
    with pytest.raises(ValidationFailed, match="differ in shape"):
        masks_dice(pred, truth[:, :2])


def test_the_pool_holds_lesion_free_studies_in_the_asked_share(bench: ModuleType) -> None:
    config = bench.Config(normal_fraction=0.7, hard_fraction=0.15)
    data = bench.lesion_set(200, 5, config)
    kinds, masks = data.kinds, data.masks
    assert (kinds == bench.NORMAL).sum() == 140
    assert (kinds == bench.HARD).sum() == round(60 * 0.15)
    assert not masks[kinds == bench.NORMAL].any()  # normal studies: empty masks
    assert all(m.any() for m in masks[kinds != bench.NORMAL])  # every other image holds a lesion
    hard_area = masks[kinds == bench.HARD].sum(axis=(1, 2)).mean()
    easy_area = masks[kinds == 0].sum(axis=(1, 2)).mean()
    assert hard_area < easy_area / 4  # the hard lesions are the small ones
    assert np.array_equal(bench.lesion_set(200, 5, config).images, data.images)  # seeded


def test_without_normals_the_draws_are_the_lesions_only_designs(bench: ModuleType) -> None:
    config = bench.Config(normal_fraction=0.0)
    data = bench.lesion_set(50, 1000, config)
    rng = np.random.default_rng(1000)  # the first design: hard positions first, then the images in order
    hard = np.zeros(50, dtype=np.int64)
    hard[rng.choice(50, round(50 * config.hard_fraction), replace=False)] = 1
    assert np.array_equal(data.kinds, hard)
    first = bench.lesion_image(rng, config.size, bool(hard[0]))
    assert np.array_equal(data.images[0, 0], first[0])
    assert np.array_equal(data.masks[0], first[1])


def test_options_lesions_only_and_bad_values(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    ns = argparse.Namespace(lesions_only=True, normal_fraction=None, pool=None, test=None, max_labels=None,
                            quick=False, fraction=0.95, test_seed=99)
    config = bench.make_config(ns)
    assert (config.normal_fraction, config.pool, config.test, config.max_labels) == (0.0, 400, 200, 70)
    ns.normal_fraction = 0.5  # an explicit option wins over the preset
    assert bench.make_config(ns).normal_fraction == 0.5
    for bad, hint in ((["--normal-fraction", "1"], "outside"), (["--max-labels", "12"], "--max-labels"),
                      (["--pool", "3", "--normal-fraction", "0.9"], "need images with a lesion"),
                      (["--jobs", "0"], "at least 1")):
        with pytest.raises(SystemExit) as exc:
            bench.main(bad)
        assert exc.value.code == 2
        assert hint in capsys.readouterr().err


def test_a_tiny_run_end_to_end(bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = bench.Config(pool=40, test=20, max_labels=20, first_steps=10, steps=3, width=4, mc_samples=2)
    monkeypatch.setattr(bench, "make_config", lambda args: tiny)  # the protocol's steps are no options
    out = tmp_path / "al.json"
    bench.main(["--seeds", "2", "--strategies", "random,entropy", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "labels to reach 0.95 x full-pool Dice" in printed
    result = json.loads(out.read_text())
    assert result["config"]["normal_fraction"] == bench.NORMAL_FRACTION
    assert result["config"]["pool"] == 40
    assert not out.with_suffix(".partial.json").exists()
    for strategy in ("random", "entropy"):
        runs = result["runs"][strategy]
        assert [r["seed"] for r in runs] == [0, 1]
        for r in runs:
            assert r["labels"] == [10, 15, 20]
            assert all(0 <= d <= 1 for d in r["dice"] + r["clean_normal"])
            assert 0 <= r["normal_labelled"][-1] <= 20
            assert r["hard_labelled"][-1] + r["normal_labelled"][-1] <= 20
        row = result["labels_to_target"][strategy]
        assert len(row["per_seed"]) == 2 and row["ci95"][0] <= row["mean"] <= row["ci95"][1]
    assert "saving_vs_random" in result["labels_to_target"]["entropy"]
    # the same runs give the same curves: every run seeds its own generators
    again = bench.run("entropy", 1, tiny)
    assert again.dice == result["runs"]["entropy"][1]["dice"]
