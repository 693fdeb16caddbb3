"""Detection metrics from boxes with scores: FROC (LUNA16 / CPM) and COCO-style mAP.

Boxes are corner coordinates, ``(x1, y1, x2, y2)`` in 2D and ``(x1, y1, z1, x2, y2, z2)`` in 3D (MONAI's
standard box mode), one :class:`ImageBoxes` per image with the ground truth and the predictions (boxes,
scores in [0, 1] or any real, class indices).

**FROC** (free-response ROC, as LUNA16 scores nodule detection): a prediction *hits* a ground-truth box when
its centre lies inside it (``hit="center"``, LUNA16's rule with boxes instead of spheres) or its IoU with it
reaches ``iou`` (``hit="iou"``). A ground-truth box is found at a threshold when a prediction hitting it scores
at least that much; a prediction hitting nothing is a false positive; further hits on a box already hit are
neither. Sweeping the threshold gives sensitivity against false positives per image; the sensitivities at
1/8, 1/4, 1/2, 1, 2, 4 and 8 FPs per image (linear interpolation on the curve, as MONAI's
``compute_froc_score`` and the LUNA16 script do) and their mean (the CPM) are reported.

**mAP** (COCO): per class and IoU threshold, predictions sorted by score (at most ``max_detections`` per
image) are matched greedily to the unmatched ground-truth box of highest IoU at or above the threshold;
precision is made monotone and read at 101 recall points; AP is their mean. ``map`` averages over IoU
0.50:0.05:0.95 and the classes that have ground truth; ``ap50`` is AP at IoU 0.5. Equal to MONAI's
``COCOMetric`` with ``matching_batch`` on the same boxes (tested).

Bootstrap intervals resample images (:func:`estimate`), like the per-case metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from medcycle.errors import ValidationFailed
from medcycle.evaluation.metrics import DEFAULT_RESAMPLES, NAN_ESTIMATE, Estimate, _interval, _resample_indices

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
COCO_IOUS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class ImageBoxes:
    """Ground truth and predictions of one image (see the module docstring for the box layout)."""

    gt_boxes: FloatArray
    pred_boxes: FloatArray
    pred_scores: FloatArray
    gt_classes: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pred_classes: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    key: str = ""

    @classmethod
    def of(cls, gt_boxes: Any, pred_boxes: Any, pred_scores: Any, *, gt_classes: Any = None,
           pred_classes: Any = None, key: str = "") -> ImageBoxes:
        """Validated arrays from lists (classes default to 0: one class)."""
        gt = _boxes(gt_boxes, "gt_boxes", key)
        pred = _boxes(pred_boxes, "pred_boxes", key)
        if gt.size and pred.size and gt.shape[1] != pred.shape[1]:
            raise ValidationFailed(f"image {key or '?'}: ground-truth boxes have {gt.shape[1]} coordinates and "
                                   f"predictions {pred.shape[1]}", hint="Use one box layout for both.")
        scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != pred.shape[0] or not np.isfinite(scores).all():
            raise ValidationFailed(f"image {key or '?'}: {pred.shape[0]} predicted boxes but {scores.shape[0]} "
                                   "finite scores", hint="Give one finite score per predicted box.")
        gc = np.zeros(gt.shape[0], np.int64) if gt_classes is None else np.asarray(gt_classes, np.int64).reshape(-1)
        pc = (np.zeros(pred.shape[0], np.int64) if pred_classes is None
              else np.asarray(pred_classes, np.int64).reshape(-1))
        if gc.shape[0] != gt.shape[0] or pc.shape[0] != pred.shape[0]:
            raise ValidationFailed(f"image {key or '?'}: one class per box is needed",
                                   hint="Give gt_classes and pred_classes of the boxes' lengths (or neither).")
        return cls(gt, pred, scores, gc, pc, key)


def _boxes(value: Any, name: str, key: str) -> FloatArray:
    arr = np.asarray(value if value is not None else [], dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] not in (4, 6):
        raise ValidationFailed(f"image {key or '?'}: {name} must be N × 4 (2D) or N × 6 (3D), got {arr.shape}",
                               hint="Corners: x1, y1, x2, y2 (or x1, y1, z1, x2, y2, z2).")
    d = arr.shape[1] // 2
    if not np.isfinite(arr).all() or np.any(arr[:, d:] < arr[:, :d]):
        raise ValidationFailed(f"image {key or '?'}: {name} has a box whose far corner is before its near one",
                               hint="Corners: x1 <= x2, y1 <= y2 (z1 <= z2).")
    return arr


def iou(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pairwise intersection over union of corner boxes, ``len(a) × len(b)``."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    d = a.shape[1] // 2
    lo = np.maximum(a[:, None, :d], b[None, :, :d])
    hi = np.minimum(a[:, None, d:], b[None, :, d:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    vol_a = np.prod(a[:, d:] - a[:, :d], axis=1)
    vol_b = np.prod(b[:, d:] - b[:, :d], axis=1)
    union = vol_a[:, None] + vol_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _hits(image: ImageBoxes, hit: str, min_iou: float) -> npt.NDArray[np.bool_]:
    """``pred × gt``: does prediction i hit ground-truth box j."""
    gt, pred = image.gt_boxes, image.pred_boxes
    if hit == "center":
        d = pred.shape[1] // 2 if pred.size else 2
        centre = (pred[:, :d] + pred[:, d:]) / 2 if pred.size else np.zeros((0, d))
        if not gt.size or not pred.size:
            return np.zeros((pred.shape[0], gt.shape[0]), dtype=bool)
        inside = (centre[:, None, :] >= gt[None, :, :d]) & (centre[:, None, :] <= gt[None, :, d:])
        return np.asarray(np.all(inside, axis=2), dtype=bool)
    return iou(pred, gt) >= min_iou


def froc_probs(images: Sequence[ImageBoxes], *, hit: str = "center", min_iou: float = 0.1
               ) -> tuple[FloatArray, FloatArray, int]:
    """The scores of the false positives, the best score on each ground-truth box (0 when missed), and the
    number of images — what MONAI's ``compute_froc_curve_data`` takes."""
    if hit not in ("center", "iou"):
        raise ValidationFailed(f"unknown FROC hit rule {hit!r}", hint="Use hit: center (LUNA16) or hit: iou.")
    fps: list[float] = []
    tps: list[float] = []
    for image in images:
        hits = _hits(image, hit, min_iou)
        fps += image.pred_scores[~hits.any(axis=1)].tolist() if hits.size else image.pred_scores.tolist()
        for j in range(image.gt_boxes.shape[0]):
            found = image.pred_scores[hits[:, j]] if hits.size else np.zeros(0)
            tps.append(float(found.max()) if found.size else 0.0)
    return np.asarray(fps, dtype=np.float64), np.asarray(tps, dtype=np.float64), len(images)


def froc_curve(images: Sequence[ImageBoxes], *, hit: str = "center", min_iou: float = 0.1
               ) -> tuple[FloatArray, FloatArray]:
    """False positives per image and sensitivity at every distinct prediction score (high to low),
    starting from (0, 0) above the highest score."""
    fp, tp, n = froc_probs(images, hit=hit, min_iou=min_iou)
    targets = tp.size
    scores = np.unique(np.concatenate([fp, [s for s in tp if s > 0]]))[::-1] if (fp.size or tp.size) else np.zeros(0)
    hit_scores = tp[tp > 0] if targets else tp
    fpi = [0.0] + [float(np.count_nonzero(fp >= t)) / max(n, 1) for t in scores]
    sens = [0.0] + [float(np.count_nonzero(hit_scores >= t)) / targets if targets else math.nan for t in scores]
    return np.asarray(fpi), np.asarray(sens)


def froc(images: Sequence[ImageBoxes], *, rates: Sequence[float] = FROC_RATES, hit: str = "center",
         min_iou: float = 0.1) -> dict[str, float]:
    """Sensitivity at each rate of false positives per image (``sens@0.125`` …) and their mean (``cpm``)."""
    fpi, sens = froc_curve(images, hit=hit, min_iou=min_iou)
    if not images or not np.isfinite(sens).all():
        return {**{f"sens@{r:g}": math.nan for r in rates}, "cpm": math.nan}
    at = np.interp(np.asarray(rates, dtype=np.float64), fpi, sens)
    out = {f"sens@{r:g}": float(v) for r, v in zip(rates, at, strict=True)}
    out["cpm"] = float(np.mean(at))
    return out


def _match(image: ImageBoxes, cls: int, thresholds: Sequence[float], max_detections: int
           ) -> tuple[FloatArray, npt.NDArray[np.bool_], int]:
    """Scores of the image's top predictions of class ``cls``, whether each is a true positive at each
    threshold (``T × D``), and the number of ground-truth boxes of that class."""
    gt = image.gt_boxes[image.gt_classes == cls] if image.gt_boxes.size else image.gt_boxes
    keep = image.pred_classes == cls
    scores, boxes = image.pred_scores[keep], image.pred_boxes[keep] if image.pred_boxes.size else image.pred_boxes
    order = np.argsort(-scores, kind="mergesort")[:max_detections]
    scores, boxes = scores[order], boxes[order] if boxes.size else boxes
    matched = np.zeros((len(thresholds), scores.size), dtype=bool)
    if gt.shape[0] and scores.size:
        ious = iou(boxes, gt)
        for t, thr in enumerate(thresholds):
            taken = np.zeros(gt.shape[0], dtype=bool)
            for i in range(scores.size):
                best, j_best = min(thr, 1 - 1e-10), -1
                for j in range(gt.shape[0]):
                    if taken[j] or ious[i, j] < best:
                        continue
                    best, j_best = ious[i, j], j
                if j_best >= 0:
                    taken[j_best] = True
                    matched[t, i] = True
    return scores, matched, int(gt.shape[0])


def average_precision(images: Sequence[ImageBoxes], *, thresholds: Sequence[float] = COCO_IOUS,
                      max_detections: int = 100) -> dict[str, Any]:
    """COCO AP per class and IoU threshold: ``{"map", "ap50", "per_class": {cls: {iou: ap}}}``."""
    classes = sorted({int(c) for im in images for c in im.gt_classes.tolist()}
                     | {int(c) for im in images for c in im.pred_classes.tolist()})
    table: dict[int, dict[float, float]] = {}
    for cls in classes:
        per: list[tuple[FloatArray, npt.NDArray[np.bool_], int]] = [_match(im, cls, thresholds, max_detections)
                                                                       for im in images]
        n_gt = sum(p[2] for p in per)
        if n_gt == 0:
            continue  # COCO leaves a class without ground truth out of the mean
        scores = np.concatenate([p[0] for p in per]) if per else np.zeros(0)
        order = np.argsort(-scores, kind="mergesort")
        table[cls] = {}
        for t, thr in enumerate(thresholds):
            tp = np.concatenate([p[1][t] for p in per])[order] if scores.size else np.zeros(0, dtype=bool)
            tps, fps = np.cumsum(tp), np.cumsum(~tp)
            recall = tps / n_gt
            precision = tps / np.maximum(tps + fps, np.finfo(np.float64).eps)
            for i in range(precision.size - 1, 0, -1):  # monotone: the best precision at this recall or more
                precision[i - 1] = max(precision[i - 1], precision[i])
            idx = np.searchsorted(recall, RECALL_POINTS, side="left")
            q = np.where(idx < precision.size, precision[np.minimum(idx, max(precision.size - 1, 0))]
                         if precision.size else 0.0, 0.0)
            table[cls][round(float(thr), 4)] = float(np.mean(q))
    if not table:
        return {"map": math.nan, "ap50": math.nan, "per_class": {}}
    all_ap = [ap for per in table.values() for ap in per.values()]
    ap50 = [per[0.5] for per in table.values() if 0.5 in per]
    return {"map": float(np.mean(all_ap)), "ap50": float(np.mean(ap50)) if ap50 else math.nan,
            "per_class": {str(c): {f"{k:g}": v for k, v in per.items()} for c, per in table.items()}}


@dataclass(frozen=True, slots=True)
class DetectionSpec:
    name: str
    fn: Callable[[Sequence[ImageBoxes]], float]
    higher_is_better: bool
    description: str


def _froc_at(rate: float | None) -> Callable[[Sequence[ImageBoxes]], float]:
    def fn(images: Sequence[ImageBoxes]) -> float:
        values = froc(images)
        return values["cpm"] if rate is None else values[f"sens@{rate:g}"]

    return fn


DETECTION: dict[str, DetectionSpec] = {s.name: s for s in (
    DetectionSpec("froc", _froc_at(None), True, "mean sensitivity at 1/8 … 8 false positives per image (CPM)"),
    *(DetectionSpec(f"froc@{r:g}", _froc_at(r), True, f"sensitivity at {r:g} false positives per image")
      for r in FROC_RATES),
    DetectionSpec("map", lambda ims: float(average_precision(ims)["map"]), True,
                  "COCO mAP over IoU 0.50:0.05:0.95"),
    DetectionSpec("ap50", lambda ims: float(average_precision(ims, thresholds=(0.5,))["ap50"]), True,
                  "average precision at IoU 0.5"),
)}


def estimate(name: str, images: Sequence[ImageBoxes], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
             alpha: float = 0.05) -> Estimate:
    """Detection metric ``name`` with a percentile bootstrap interval over images."""
    if name not in DETECTION:
        raise ValidationFailed(f"unknown detection metric {name!r}", hint=f"Choose from {', '.join(DETECTION)}.")
    if not images:
        return NAN_ESTIMATE
    fn = DETECTION[name].fn
    value = fn(images)
    boots = [fn([images[i] for i in idx]) for idx in _resample_indices(len(images), resamples, seed)]
    low, high, kept = _interval(boots, alpha)
    return Estimate(value, low, high, len(images), kept)


def evaluate_detection(images: Sequence[ImageBoxes], *, metrics: Sequence[str] | None = None,
                       factors: dict[str, Sequence[str | None]] | None = None, resamples: int = DEFAULT_RESAMPLES,
                       seed: int = 0, alpha: float = 0.05, min_group: int = 10) -> dict[str, Any]:
    """Every chosen detection metric overall and per subgroup (images grouped by each factor's value)."""
    names = list(metrics) if metrics is not None else ["froc", "map", "ap50"]
    overall = {n: estimate(n, images, resamples=resamples, seed=seed, alpha=alpha).to_dict() for n in names}
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for factor, values in (factors or {}).items():
        if len(values) != len(images):
            raise ValidationFailed(f"factor {factor!r} has {len(values)} values for {len(images)} images",
                                   hint="Give one value per image (None where unknown).")
        groups[factor] = {}
        for g in sorted({v for v in values if v is not None}):
            sub = [im for im, v in zip(images, values, strict=True) if v == g]
            if len(sub) >= min_group:
                groups[factor][g] = {n: estimate(n, sub, resamples=resamples, seed=seed, alpha=alpha).to_dict()
                                     for n in names}
    return {"overall": overall, "groups": groups}
