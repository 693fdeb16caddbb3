"""Training on dataset versions: scores on the demo data, determinism, segmentation in 2D and 3D, tracking."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("monai", reason="the train extra (torch, monai) is not installed")

from medcycle.errors import UsageError
from medcycle.experiments.runs import get_run
from medcycle.experiments.sdk import start_run
from medcycle.platform import Platform
from medcycle.training.demo_data import DemoData
from medcycle.training.trainers import resolve_device, train, train_version
from tests.training.conftest import quick


def test_classification_on_demo_data_reaches_a_meaningful_auroc(
    sqlite_platform: Platform, loaded: dict[str, str], run_options: dict[str, Any]
) -> None:
    config = quick("classification-2d", training={"epochs": 8, "early_stopping": None},
                   tracking={"project": "chest", "hypothesis": None, "tags": {"team": "ml"}})
    result = train_version(sqlite_platform, config, dataset=loaded["demo-xr"], run_options=run_options)

    assert result.best >= 0.8, result.history
    assert result.samples["train"] >= 30 and result.samples["val"] >= 10
    assert result.classes == ["normal", "lesion"] and result.device == "cpu" and not result.amp
    with sqlite_platform.session() as session:
        run = get_run(session, result.run_id).to_dict()
    assert run["status"] == "finished" and run["dataset_digest"]  # the exact version it read
    assert run["metrics"]["val/auroc"] is not None
    assert run["params"]["task"] == "classification-2d" and run["params"]["model.name"] == "densenet-small"
    assert run["params"]["runtime.device"] == "cpu"
    models = {a["name"]: a for a in run["artifacts"] if a["kind"] == "model"}
    assert models["model"]["digest"] == result.model_digest
    assert models["model"]["meta"]["weights_digest"] == result.weights_digest
    assert "checkpoint" in models and "config.json" in {a["name"] for a in run["artifacts"]}
    assert run["tags"]["weights_digest"] == result.weights_digest and run["tags"]["team"] == "ml"


def test_the_same_seed_gives_the_same_weights(demo: DemoData, sqlite_platform: Platform,
                                              run_options: dict[str, Any]) -> None:
    def once(seed: int) -> tuple[str, str | None, float]:
        config = quick("classification-2d", path=demo.root, input={"size": [32, 32]},  # flips, intensity scaling
                       model={"name": "tiny-cnn", "width": 4, "depth": 2},
                       training={"epochs": 2, "seed": seed, "early_stopping": None})
        with start_run("det", platform=sqlite_platform, **run_options) as run:
            result = train(config, demo.root, run)
        return result.weights_digest, result.model_digest, result.final["val/loss"]

    first, second, other = once(3), once(3), once(4)
    assert first == second  # weights, stored checkpoint bytes and metrics
    assert other[0] != first[0]


def test_segmentation_2d_pairs_masks_of_the_study_and_reports_dice(
    sqlite_platform: Platform, loaded: dict[str, str], run_options: dict[str, Any]
) -> None:
    config = quick("segmentation-2d", input={"size": [32, 32]}, training={"epochs": 2})
    result = train_version(sqlite_platform, config, dataset=loaded["demo-xr"], run_options=run_options)

    assert result.monitor == "val/dice" and result.classes == ["lesion"]
    assert 0.0 <= result.final["val/dice"] <= 1.0 and math.isfinite(result.final["val/loss"])
    with sqlite_platform.session() as session:
        run = get_run(session, result.run_id).to_dict()
    images = {a["name"] for a in run["artifacts"] if a["kind"] == "image"}
    assert {"val/prediction", "val/truth"} <= images


def test_segmentation_3d_smoke_on_two_volumes(demo: DemoData, tmp_path: Path, sqlite_platform: Platform,
                                              run_options: dict[str, Any]) -> None:
    """One epoch on two tiny volumes; masks are the NIfTI files named in the manifest's mask column."""
    with (demo.root / "manifest.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["modality"] == "CT"]
    series = sorted({r["series"] for r in rows if r["labels"] == "nodule"})[:2]
    folder = tmp_path / "two"
    folder.mkdir()
    with (folder / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            if r["series"] in series:
                split = "train" if r["series"] == series[0] else "val"
                writer.writerow({**r, "split": split, "path": str(demo.root / r["path"]),
                                 "mask": str(demo.root / r["mask"])})
    config = quick("segmentation-3d", path=folder, training={"epochs": 1, "batch_size": 1})
    with start_run("ct", platform=sqlite_platform, **run_options) as run:
        result = train(config, folder, run)
    assert result.epochs == 1 and result.samples["train"] == 1 and result.samples["val"] == 1
    assert 0.0 <= result.final["val/dice"] <= 1.0


def test_cuda_is_refused_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UsageError, match="no GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_a_config_without_a_dataset_is_refused(sqlite_platform: Platform) -> None:
    config = quick("classification-2d")
    config = config.model_copy(update={"data": config.data.model_copy(update={"dataset": None})})
    with pytest.raises(UsageError, match="names no dataset"):
        train_version(sqlite_platform, config)


def test_val_dice_scores_images_without_a_lesion_as_the_evaluation_does() -> None:
    """An image without a lesion counts 1 when nothing is predicted on it and 0 on a false positive, so the best
    epoch is never one that marks healthy images (the release gate's per-case Dice scores them the same way)."""
    import torch

    from medcycle.training.trainers import evaluate

    config = quick("segmentation-2d")
    lesion = torch.zeros(1, 1, 8, 8)
    lesion[0, 0, 2:5, 2:5] = 1
    empty = torch.zeros(1, 1, 8, 8)

    class Fixed(torch.nn.Module):
        """Predicts the lesion where the image is bright, plus ``spot`` pixels in a corner."""

        def __init__(self, spot: int) -> None:
            super().__init__()
            self.spot = spot

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            fg = (x > 0.5).float()
            fg[..., 7, : self.spot] = 1
            return torch.cat([1 - fg, fg], dim=1) * 10

    class Loader(list[dict[str, torch.Tensor]]):
        dataset = [0, 1]

    loader = Loader([{"image": lesion.clone(), "mask": lesion}, {"image": empty.clone(), "mask": empty}])
    clean, _ = evaluate(config, Fixed(0).eval(), loader, torch.device("cpu"), False, ["lesion"])
    spotted, _ = evaluate(config, Fixed(1).eval(), loader, torch.device("cpu"), False, ["lesion"])
    assert clean["val/dice"] == pytest.approx(1.0)
    # the lesion image: 9 true pixels, 10 predicted (9 + the spot) → 18/19; the healthy image: a false positive → 0
    assert spotted["val/dice"] == pytest.approx((18 / 19 + 0.0) / 2)
