"""Detection (FROC, COCO mAP) and surface (HD95, ASD, NSD) metrics: hand-computed examples and parity with
MONAI's ``monai.metrics`` and ``monai.apps.detection`` on random cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from medcycle.errors import ValidationFailed
from medcycle.evaluation import detection as det
from medcycle.evaluation.detection import ImageBoxes
from medcycle.evaluation.surface import case_metrics


def random_images(seed: int, n: int = 14, dim: int = 2) -> list[ImageBoxes]:
    rng = np.random.default_rng(seed)

    def boxes(k: int) -> np.ndarray:
        lo = rng.uniform(0, 50, (k, dim))
        return np.concatenate([lo, lo + rng.uniform(3, 12, (k, dim))], axis=1)

    out = []
    for i in range(n):
        gt = boxes(int(rng.integers(0, 4)))
        gc = rng.integers(0, 2, len(gt))
        extra = boxes(int(rng.integers(0, 4)))
        pred = np.concatenate([gt + rng.normal(0, 1.0, gt.shape), extra])
        pred[:, dim:] = np.maximum(pred[:, dim:], pred[:, :dim] + 0.5)
        pc = np.concatenate([gc, rng.integers(0, 2, len(extra))])
        out.append(ImageBoxes.of(gt, pred, rng.uniform(0, 1, len(pred)), gt_classes=gc, pred_classes=pc,
                                 key=f"img{i}"))
    return out


def test_average_precision_by_hand() -> None:
    # two boxes; predictions: hit (0.9), miss (0.8), hit (0.7) → precision 1 up to recall 0.5, then 2/3
    gt = [[0, 0, 10, 10], [20, 20, 30, 30]]
    image = ImageBoxes.of(gt, [[0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30]], [0.9, 0.8, 0.7])
    ap = det.average_precision([image])
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert ap["map"] == pytest.approx(expected) and ap["ap50"] == pytest.approx(expected)
    # shifted so IoU is 0.6: a hit at IoU 0.50-0.60 only (3 of 10 thresholds), the rest all misses
    shifted = ImageBoxes.of([[0, 0, 10, 10]], [[2.5, 0, 12.5, 10]], [0.9])
    assert det.iou(shifted.pred_boxes, shifted.gt_boxes)[0, 0] == pytest.approx(0.6)
    assert det.average_precision([shifted])["map"] == pytest.approx(0.3)


def test_froc_by_hand() -> None:
    # image 1: a hit (0.9) and a false positive (0.6); image 2: a false positive (0.8) and a hit (0.3)
    a = ImageBoxes.of([[10, 10, 20, 20]], [[11, 11, 19, 19], [40, 40, 45, 45]], [0.9, 0.6])
    b = ImageBoxes.of([[0, 0, 8, 8]], [[30, 30, 35, 35], [1, 1, 7, 7]], [0.8, 0.3])
    fpi, sens = det.froc_curve([a, b])
    assert fpi.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0] and sens.tolist() == [0.0, 0.5, 0.5, 0.5, 1.0]
    got = det.froc([a, b])
    assert [got[f"sens@{r:g}"] for r in det.FROC_RATES] == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert got["cpm"] == pytest.approx(5.5 / 7)
    # a second hit on a found nodule is not a false positive; a box with its centre outside is
    c = ImageBoxes.of([[0, 0, 10, 10]], [[1, 1, 9, 9], [2, 2, 8, 8], [9, 9, 30, 30]], [0.9, 0.8, 0.7])
    fp, tp, _n = det.froc_probs([c])
    assert fp.tolist() == [0.7] and tp.tolist() == [0.9]


@pytest.mark.parametrize("dim", [2, 3])
def test_map_matches_monai_coco_metric(dim: int) -> None:
    from monai.apps.detection.metrics.coco import COCOMetric
    from monai.apps.detection.metrics.matching import matching_batch
    from monai.data.box_utils import box_iou

    images = random_images({2: 2, 3: 9}[dim], dim=dim)
    # MONAI accumulates recall in float32, which moves a recall of exactly j/100 off the grid of 101 recall
    # points (pycocotools and this module use float64): class sizes prime to 10 never land on the grid
    sizes = [int(sum((i.gt_classes == c).sum() for i in images)) for c in (0, 1)]
    assert all(n % 2 and n % 5 for n in sizes), sizes
    mine = det.average_precision(images)
    metric = COCOMetric(classes=["a", "b"], iou_list=[0.5], iou_range=(0.5, 0.95, 0.05), max_detection=(100,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matched = matching_batch(box_iou, metric.iou_thresholds, [i.pred_boxes for i in images],
                                 [i.pred_classes for i in images], [i.pred_scores for i in images],
                                 [i.gt_boxes for i in images], [i.gt_classes for i in images], max_detections=100)
        theirs = metric(matched)[0]
    assert 0.01 < mine["map"] < 1
    assert mine["map"] == pytest.approx(theirs["mAP_IoU_0.50_0.95_0.05_MaxDet_100"], abs=1e-9)
    assert mine["ap50"] == pytest.approx(theirs["AP_IoU_0.50_MaxDet_100"], abs=1e-9)
    assert mine["per_class"]["1"]["0.5"] == pytest.approx(theirs["b_AP_IoU_0.50_MaxDet_100"], abs=1e-9)


def test_froc_matches_monai_froc_score() -> None:
    from monai.metrics import compute_froc_curve_data, compute_froc_score

    images = random_images(1)
    fp, tp, n = det.froc_probs(images, hit="iou", min_iou=0.7)
    # MONAI (the CAMELYON code) drops its lowest threshold: equal when some target is missed (score 0)
    assert (tp == 0).any()
    fpi, sens = compute_froc_curve_data(fp, tp, tp.size, n)
    theirs = compute_froc_score(fpi, sens, det.FROC_RATES)
    assert det.froc(images, hit="iou", min_iou=0.7)["cpm"] == pytest.approx(float(theirs), abs=1e-12)


def test_detection_estimates_with_intervals_and_subgroups() -> None:
    images = random_images(5, n=30)
    out = det.evaluate_detection(images, factors={"site": ["a" if i % 3 else "b" for i in range(30)]},
                                 resamples=50, min_group=10)
    for name in ("froc", "map", "ap50"):
        e = out["overall"][name]
        assert e["ci_low"] <= e["value"] <= e["ci_high"] and e["n"] == 30 and e["resamples"] > 0
    assert set(out["groups"]["site"]) == {"a", "b"} and out["groups"]["site"]["b"]["map"]["n"] == 10
    assert det.DETECTION["froc@1"].fn(images) == det.froc(images)["sens@1"]


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"gt_boxes": [[0, 0, 1]], "pred_boxes": [], "pred_scores": []}, "N × 4"),
    ({"gt_boxes": [[5, 5, 1, 1]], "pred_boxes": [], "pred_scores": []}, "far corner"),
    ({"gt_boxes": [], "pred_boxes": [[0, 0, 1, 1]], "pred_scores": []}, "one finite score"),
])
def test_bad_boxes_are_refused(kwargs: dict, words: str) -> None:
    with pytest.raises(ValidationFailed, match=words) as info:
        ImageBoxes.of(**kwargs)
    assert info.value.hint


def blob(shape: tuple[int, ...], centre: list[float], radius: float, spacing: tuple[float, ...]) -> np.ndarray:
    grid = np.indices(shape)
    return sum(((grid[i] - centre[i]) * spacing[i]) ** 2 for i in range(len(shape))) < radius ** 2


@pytest.mark.parametrize(("shape", "spacing"), [((40, 48), (0.7, 1.3)), ((12, 30, 30), (2.5, 0.8, 0.8))])
def test_surface_metrics_match_monai_with_spacing(shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(0)
    for _ in range(3):
        centre = [rng.uniform(0.3, 0.7) * n for n in shape]
        truth = blob(shape, centre, rng.uniform(6, 12), spacing)
        pred = blob(shape, [c + rng.uniform(-2, 2) for c in centre], rng.uniform(6, 14), spacing)
        pred[tuple(int(rng.integers(0, n)) for n in shape)] = True  # a stray voxel: the 95th percentile matters
        mine = case_metrics(pred, truth, spacing, tolerance=1.5)
        p = torch.from_numpy(pred[None, None].astype(np.float32))
        t = torch.from_numpy(truth[None, None].astype(np.float32))
        s = list(spacing)
        with warnings.catch_warnings():  # MONAI warns about its own deprecated internals
            warnings.simplefilter("ignore", FutureWarning)
            hd95 = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=s).item()
            asd = compute_average_surface_distance(p, t, include_background=True, symmetric=True, spacing=s).item()
            nsd = compute_surface_dice(p, t, class_thresholds=[1.5], include_background=True, spacing=s).item()
        assert mine["hd95"] == pytest.approx(hd95, rel=1e-5) and mine["hd95"] > 1
        assert mine["asd"] == pytest.approx(asd, rel=1e-5) and mine["nsd"] == pytest.approx(nsd, rel=1e-5)
        assert 0 < mine["dice"] < 1


def test_surface_metrics_by_hand_and_edge_cases() -> None:
    truth = np.zeros((20, 20), bool)
    truth[5:10, 5:10] = True
    shifted = np.roll(truth, 2, axis=1)  # every surface point 0 or 2 columns from the other surface
    got = case_metrics(shifted, truth, (1.0, 0.5), tolerance=0.5)
    assert got["hd95"] == pytest.approx(1.0) and got["dice"] == pytest.approx(0.6)
    assert case_metrics(truth, truth)["hd95"] == 0.0 and case_metrics(truth, truth)["nsd"] == 1.0
    empty = np.zeros_like(truth)
    one_empty = case_metrics(empty, truth)
    assert math.isnan(one_empty["hd95"]) and one_empty["nsd"] == 0.0 and one_empty["dice"] == 0.0
    assert case_metrics(empty, empty)["dice"] == 1.0 and case_metrics(empty, empty)["nsd"] == 1.0
    with pytest.raises(ValidationFailed, match="spacing"):
        case_metrics(truth, truth, (1.0,))
    with pytest.raises(ValidationFailed, match="one shape"):
        case_metrics(truth, truth[:5])
