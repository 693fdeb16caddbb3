"""Grading one reader against a reference (a gold standard): the numbers exams, honeypots and scorecards share.

Each item is graded on its own into an :class:`ItemGrade` (small, JSON-able, stored with the attempt or the
honeypot), and any collection of item grades — one exam sitting, a month of honeypots — is pooled into a
:class:`Grade`. Pooling from stored item grades is what lets a scorecard show the same metrics over any
period without reading masks again.

What is measured (every metric is "higher is better", 0..1, ``None`` when it cannot be measured):

===================  ==========================================================================================
``sensitivity``      masks: voxels of the reference found, pooled over items (as STAPLE estimates it); other
                     kinds: ``item_sensitivity``
``specificity``      masks: background voxels left alone, pooled over the items where either side drew a
                     mask (an item both left empty has no image size to count); other kinds:
                     ``item_specificity``
``item_sensitivity`` items with a finding in the reference that the reader also called positive
``item_specificity`` items without a finding in the reference that the reader also left negative
``accuracy``         items where the reader's category equals the reference's
``kappa``            Cohen's kappa (scikit-learn, through :mod:`.agreement`) of those categories
``dice``             mean per-item Dice of the masks (per class, averaged over the classes either side drew;
                     :mod:`.policy` decides empty cases: both empty 1, one empty 0)
``box_f1``           F1 of boxes matched one-to-one per class at IoU >= 0.5, pooled (:mod:`.box_agreement`)
===================  ==========================================================================================

An item's *category* is the set of labels it was given (joined with ``+``; ``(none)`` for nothing; a mask
that is all background does not count); it is *positive* when a label outside ``negative_labels`` (e.g.
``normal``) is in it. Sensitivity and specificity carry Wilson 95% intervals: with 30 items an item-level
sensitivity of 0.8 is known only to about ±0.15, which is worth seeing next to a pass threshold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from medcycle.errors import ValidationFailed
from medcycle.labels import policy
from medcycle.labels.agreement import Ratings, cohen_kappa
from medcycle.labels.box_agreement import box_agreement
from medcycle.labels.mask_agreement import mask_spacing, overlap, reader_mask
from medcycle.labels.model import Annotation, Kind, Mask

NONE = "(none)"
Z95 = 1.959963984540054


class Metric(StrEnum):
    SENSITIVITY = "sensitivity"
    SPECIFICITY = "specificity"
    ITEM_SENSITIVITY = "item_sensitivity"
    ITEM_SPECIFICITY = "item_specificity"
    ACCURACY = "accuracy"
    KAPPA = "kappa"
    DICE = "dice"
    BOX_F1 = "box_f1"


def metrics_for(kinds: Iterable[Kind | str], negative_labels: Sequence[str]) -> tuple[Metric, ...]:
    """The metrics that can be measured for a schema's kinds (pass thresholds must be among them)."""
    ks = {Kind(k) for k in kinds}
    out = [Metric.ACCURACY, Metric.KAPPA]
    if ks - {Kind.CLASS} or negative_labels:  # something can be positive and something negative
        out += [Metric.SENSITIVITY, Metric.SPECIFICITY, Metric.ITEM_SENSITIVITY, Metric.ITEM_SPECIFICITY]
    if Kind.MASK in ks:
        out.append(Metric.DICE)
    if Kind.BOX in ks:
        out.append(Metric.BOX_F1)
    return tuple(out)


def check_thresholds(thresholds: Mapping[str, float], kinds: Iterable[Kind | str],
                     negative_labels: Sequence[str]) -> dict[str, float]:
    """Validated pass thresholds ``metric → minimum`` (each between 0 and 1; kappa between -1 and 1)."""
    allowed = metrics_for(kinds, negative_labels)
    out: dict[str, float] = {}
    if not thresholds:
        raise ValidationFailed("an exam needs at least one pass threshold",
                               hint=f"e.g. --pass sensitivity=0.85; measurable here: {', '.join(allowed)}.")
    for name, value in thresholds.items():
        if name not in {m.value for m in allowed}:
            extra = (" (sensitivity/specificity of class labels need --negative, e.g. --negative normal)"
                     if name in {m.value for m in Metric} and name not in {"dice", "box_f1"} else "")
            raise ValidationFailed(f"{name!r} cannot be a pass threshold here{extra}",
                                   hint=f"Measurable for this schema: {', '.join(allowed)}.")
        low = -1.0 if name == Metric.KAPPA else 0.0
        if not isinstance(value, int | float) or isinstance(value, bool) or not low <= float(value) <= 1.0:
            raise ValidationFailed(f"pass threshold {name}={value!r} is not between {low:g} and 1",
                                   hint="Metrics are fractions, e.g. sensitivity=0.85.")
        out[name] = float(value)
    return dict(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class ItemGrade:
    """One item of a reading compared with the reference."""

    item: str
    reference: str  # the reference's category
    reading: str  # the reader's
    reference_positive: bool
    reading_positive: bool
    voxels: tuple[int, int, int, int] | None = None  # tp, fn, fp, tn (masks)
    dice: float | None = None
    boxes: tuple[int, int, int] | None = None  # tp, fp, fn (boxes)
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"item": self.item, "reference": self.reference, "reading": self.reading,
                "reference_positive": self.reference_positive, "reading_positive": self.reading_positive,
                "voxels": list(self.voxels) if self.voxels is not None else None, "dice": self.dice,
                "boxes": list(self.boxes) if self.boxes is not None else None, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ItemGrade:
        vox, boxes = data.get("voxels"), data.get("boxes")
        return cls(str(data["item"]), str(data["reference"]), str(data["reading"]), bool(data["reference_positive"]),
                   bool(data["reading_positive"]),
                   (int(vox[0]), int(vox[1]), int(vox[2]), int(vox[3])) if vox is not None else None,
                   None if data.get("dice") is None else float(data["dice"]),
                   (int(boxes[0]), int(boxes[1]), int(boxes[2])) if boxes is not None else None,
                   None if data.get("seconds") is None else float(data["seconds"]))


def _present(a: Annotation) -> bool:
    return not (isinstance(a.geometry, Mask) and not a.geometry.binary.any())


def category(annotations: Sequence[Annotation]) -> str:
    labels = sorted({a.label for a in annotations if _present(a)})
    return "+".join(labels) if labels else NONE


def _positive(annotations: Sequence[Annotation], negative_labels: Sequence[str]) -> bool:
    return any(_present(a) and a.label not in negative_labels for a in annotations)


def _mask_counts(reference: Sequence[Annotation], reading: Sequence[Annotation]) -> tuple[
        tuple[int, int, int, int] | None, float | None]:
    ref = [a for a in reference if isinstance(a.geometry, Mask)]
    got = [a for a in reading if isinstance(a.geometry, Mask)]
    labels = sorted({a.label for a in ref} | {a.label for a in got})
    if not labels:
        return None, policy.OVERLAP_BOTH_EMPTY
    tp = fn = fp = tn = 0
    dices: list[float] = []
    for label in labels:
        mine = [a for a in got if a.label == label]
        theirs = [a for a in ref if a.label == label]
        x = reader_mask(mine) if mine else None
        y = reader_mask(theirs) if theirs else None
        template = y if y is not None else x
        assert template is not None
        x = x if x is not None else Mask(np.zeros(template.array.shape, np.uint8), template.spacing, template.origin,
                                         template.direction, template.z)
        y = y if y is not None else Mask(np.zeros(template.array.shape, np.uint8), x.spacing, x.origin, x.direction,
                                         x.z)
        try:
            mask_spacing(x, y)
        except ValidationFailed:  # drawn on another grid: nothing of it can overlap the reference
            fg_ref, fg_read = int(y.binary.sum()), int(x.binary.sum())
            fn, fp, tn = fn + fg_ref, fp + fg_read, tn + max(0, y.array.size - fg_ref - fg_read)
            dices.append(policy.OVERLAP_ONE_EMPTY if fg_ref or fg_read else policy.OVERLAP_BOTH_EMPTY)
            continue
        a, b = x.binary, y.binary
        tp += int(np.count_nonzero(a & b))
        fp += int(np.count_nonzero(a & ~b))
        fn += int(np.count_nonzero(~a & b))
        tn += int(np.count_nonzero(~a & ~b))
        dices.append(overlap(x, y)[0])
    return (tp, fn, fp, tn), float(np.mean(dices))


def grade_item(item: str, reference: Sequence[Annotation], reading: Sequence[Annotation], *,
               kinds: Iterable[Kind | str], negative_labels: Sequence[str] = (),
               seconds: float | None = None) -> ItemGrade:
    """Compare one reader's annotations of ``item`` (possibly none) with the reference's."""
    ks = {Kind(k) for k in kinds}
    voxels, dice = _mask_counts(reference, reading) if Kind.MASK in ks else (None, None)
    boxes = None
    if Kind.BOX in ks:
        counts = box_agreement(reading, reference, iou_threshold=0.5).total
        boxes = (counts.tp, counts.fp, counts.fn)
    return ItemGrade(item, category(reference), category(reading), _positive(reference, negative_labels),
                     _positive(reading, negative_labels), voxels, dice, boxes, seconds)


def grade_readings(reference: Mapping[str, Sequence[Annotation]], readings: Mapping[str, Sequence[Annotation]], *,
                   kinds: Iterable[Kind | str], negative_labels: Sequence[str] = (),
                   seconds: Mapping[str, float | None] | None = None) -> list[ItemGrade]:
    """Grade a reader on every reference item (an item they left without annotations is an empty reading).

    Raises:
        ValidationFailed: the reader annotated items that are not in the reference.
    """
    extra = sorted(set(readings) - set(reference))
    if extra:
        raise ValidationFailed(f"{len(extra)} item(s) read are not in the reference, e.g. {extra[0]}",
                               hint="Grade readings of the reference's items only.")
    ks = list(kinds)
    return [grade_item(item, reference[item], readings.get(item, ()), kinds=ks, negative_labels=negative_labels,
                       seconds=(seconds or {}).get(item)) for item in sorted(reference)]


def wilson(hits: int, total: int) -> tuple[float, float] | None:
    """The Wilson score 95% interval of ``hits / total`` (``None`` for no trials)."""
    if total <= 0:
        return None
    p = hits / total
    denominator = 1 + Z95**2 / total
    centre = (p + Z95**2 / (2 * total)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / total + Z95**2 / (4 * total**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _ratio(hits: int, total: int) -> float | None:
    return hits / total if total else None


@dataclass(frozen=True, slots=True)
class Grade:
    """Item grades pooled: metrics (``None`` = not measurable), Wilson intervals and the counts behind them."""

    items: int
    metrics: dict[str, float | None]
    intervals: dict[str, tuple[float, float]]
    counts: dict[str, int]
    seconds_per_item: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "metrics": {str(k): v for k, v in self.metrics.items()},
                "intervals": {str(k): [lo, hi] for k, (lo, hi) in self.intervals.items()}, "counts": dict(self.counts),
                "seconds_per_item": self.seconds_per_item}

    def failures(self, thresholds: Mapping[str, float]) -> list[str]:
        """The thresholds not met, as readable reasons (a metric that could not be measured fails)."""
        out = []
        for name, minimum in sorted(thresholds.items()):
            value = self.metrics.get(name)
            if value is None:
                out.append(f"{name} could not be measured")
            elif value < minimum:
                out.append(f"{name} {value:.3f} < {minimum:g}")
        return out

    @classmethod
    def pool(cls, grades: Sequence[ItemGrade]) -> Grade:
        n = len(grades)
        itp = sum(1 for g in grades if g.reference_positive and g.reading_positive)
        ifn = sum(1 for g in grades if g.reference_positive and not g.reading_positive)
        ifp = sum(1 for g in grades if not g.reference_positive and g.reading_positive)
        itn = sum(1 for g in grades if not g.reference_positive and not g.reading_positive)
        counts = {"item_tp": itp, "item_fn": ifn, "item_fp": ifp, "item_tn": itn}
        metrics: dict[str, float | None] = {}
        intervals: dict[str, tuple[float, float]] = {}

        def put(name: str, hits: int, total: int) -> None:
            metrics[name] = _ratio(hits, total)
            ci = wilson(hits, total)
            if ci is not None:
                intervals[name] = ci

        put(Metric.ITEM_SENSITIVITY, itp, itp + ifn)
        put(Metric.ITEM_SPECIFICITY, itn, itn + ifp)
        metrics[Metric.ACCURACY] = _ratio(sum(1 for g in grades if g.reference == g.reading), n)
        metrics[Metric.KAPPA] = _kappa(grades)
        voxels = [g.voxels for g in grades if g.voxels is not None]
        if voxels:
            vtp, vfn, vfp, vtn = (int(sum(v[k] for v in voxels)) for k in range(4))
            counts.update({"voxel_tp": vtp, "voxel_fn": vfn, "voxel_fp": vfp, "voxel_tn": vtn})
            put(Metric.SENSITIVITY, vtp, vtp + vfn)
            put(Metric.SPECIFICITY, vtn, vtn + vfp)
        else:
            put(Metric.SENSITIVITY, itp, itp + ifn)
            put(Metric.SPECIFICITY, itn, itn + ifp)
        dices = [g.dice for g in grades if g.dice is not None]
        metrics[Metric.DICE] = float(np.mean(dices)) if dices else None
        boxes = [g.boxes for g in grades if g.boxes is not None]
        if boxes:
            btp, bfp, bfn = (int(sum(b[k] for b in boxes)) for k in range(3))
            counts.update({"box_tp": btp, "box_fp": bfp, "box_fn": bfn})
            metrics[Metric.BOX_F1] = policy.f1(btp, bfp, bfn)
        else:
            metrics[Metric.BOX_F1] = None
        secs = [g.seconds for g in grades if g.seconds is not None]
        return cls(n, {str(k): metrics[k] for k in sorted(metrics)}, {str(k): v for k, v in sorted(intervals.items())},
                   counts,
                   float(np.mean(secs)) if secs else None)


def _kappa(grades: Sequence[ItemGrade]) -> float | None:
    if not grades:
        return None
    ratings = Ratings.from_table({"reader": {g.item: g.reading for g in grades},
                                  "reference": {g.item: g.reference for g in grades}})
    value = cohen_kappa(ratings, "reader", "reference")
    return None if math.isnan(value) else value
