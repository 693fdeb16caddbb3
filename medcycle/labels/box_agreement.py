"""Box agreement: IoU-matched precision, recall and F1, per class and image, and the reader matrix.

Boxes of one class on one image are matched one-to-one by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``) among pairs whose IoU reaches the threshold. The assignment
maximises the number of matches first and their total IoU second (each eligible pair weighs
``n + IoU`` with ``n`` above any possible match count), so a greedy-looking pair can never cost two
matches. Boxes on different slices never match (their IoU is 0). Counts are pooled over images and
classes (micro average); nothing on either side is perfect agreement (:mod:`.policy`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medcycle.errors import ValidationFailed
from medcycle.labels import policy
from medcycle.labels.agreement import ReaderMatrix, Readings, pairwise
from medcycle.labels.model import Annotation, Box, Kind


def check_threshold(iou_threshold: float) -> None:
    if not 0.0 < iou_threshold <= 1.0:
        raise ValidationFailed(f"IoU threshold {iou_threshold} is outside (0, 1]",
                               hint="Use e.g. 0.5 (the usual detection threshold).")


def iou_table(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``table[i, j]`` = IoU of ``a[i]`` and ``b[j]``."""
    table = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i, j] = x.iou(y)
    return table


def assign(table: np.ndarray[Any, np.dtype[np.float64]], iou_threshold: float) -> list[tuple[int, int]]:
    """Most matches with IoU ≥ threshold, then most total IoU: ``[(row, column), ...]``."""
    from scipy.optimize import linear_sum_assignment

    if table.size == 0:
        return []
    eligible = table >= iou_threshold
    weight = np.where(eligible, min(table.shape) + 1 + table, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if eligible[i, j]]


@dataclass(frozen=True, slots=True)
class Counts:
    """Matched (tp), found but unmatched (fp) and reference but unmatched (fn) boxes."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return policy.ratio(self.tp, self.tp + self.fp, others=self.fn)

    @property
    def recall(self) -> float:
        return policy.ratio(self.tp, self.tp + self.fn, others=self.fp)

    @property
    def f1(self) -> float:
        return policy.f1(self.tp, self.fp, self.fn)

    def to_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision, "recall": self.recall,
                "f1": self.f1}


@dataclass(frozen=True, slots=True)
class BoxMatch:
    """The matching of ``found`` boxes to ``reference`` boxes: ``pairs`` of (found index, reference index, IoU)."""

    pairs: tuple[tuple[int, int, float], ...]
    found: int
    reference: int

    @property
    def counts(self) -> Counts:
        return Counts(len(self.pairs), self.found - len(self.pairs), self.reference - len(self.pairs))


def match_boxes(found: Sequence[Box], reference: Sequence[Box], iou_threshold: float = 0.5) -> BoxMatch:
    """Match two lists of boxes (of one class on one image) one-to-one at ``iou_threshold``."""
    check_threshold(iou_threshold)
    table = iou_table(found, reference)
    pairs = tuple((i, j, float(table[i, j])) for i, j in assign(table, iou_threshold))
    return BoxMatch(pairs, len(found), len(reference))


@dataclass(frozen=True, slots=True)
class DetectionScore:
    """Pooled counts, and the same per class and per image."""

    total: Counts
    per_class: dict[str, Counts] = field(default_factory=dict)
    per_image: dict[str, Counts] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total.to_dict(), "per_class": {k: v.to_dict() for k, v in self.per_class.items()},
                "per_image": {k: v.to_dict() for k, v in self.per_image.items()}}


def _boxes(annotations: Iterable[Annotation]) -> dict[tuple[str, str], list[Box]]:
    by_key: dict[tuple[str, str], list[Box]] = defaultdict(list)
    for a in annotations:
        if a.kind == Kind.BOX and isinstance(a.geometry, Box):
            by_key[(a.image, a.label)].append(a.geometry)
    return by_key


def box_agreement(found: Iterable[Annotation], reference: Iterable[Annotation], *, iou_threshold: float = 0.5,
                  images: Iterable[str] | None = None) -> DetectionScore:
    """Precision, recall and F1 of ``found`` boxes against ``reference`` boxes (other kinds are skipped).

    ``images`` limits the comparison to those images (e.g. the ones both readers read); by default every
    image either side has a box on.
    """
    check_threshold(iou_threshold)
    a, b = _boxes(found), _boxes(reference)
    keep = set(images) if images is not None else None
    per_class: dict[str, Counts] = defaultdict(Counts)
    per_image: dict[str, Counts] = defaultdict(Counts)
    if keep is not None:
        for image in keep:
            per_image[image] = Counts()
    for key in sorted(set(a) | set(b)):
        image, label = key
        if keep is not None and image not in keep:
            continue
        counts = match_boxes(a.get(key, []), b.get(key, []), iou_threshold).counts
        per_class[label] += counts
        per_image[image] += counts
    total = sum(per_class.values(), Counts())
    return DetectionScore(total, dict(sorted(per_class.items())), dict(sorted(per_image.items())))


def box_matrix(annotations: Iterable[Annotation], *, iou_threshold: float = 0.5,
               read: Mapping[str, Iterable[str]] | None = None) -> ReaderMatrix:
    """Reader × reader F1 of matched boxes (all classes pooled) over the images both read.

    Without ``read``, a reader read the images they drew a box on; pass ``read`` so that a read image
    without boxes counts (a box there from the other reader is then a miss, not ignored).
    """
    check_threshold(iou_threshold)
    readings = Readings.of(annotations, Kind.BOX, read=read)

    def compare(a: str, b: str) -> float:
        shared = readings.shared(a, b)
        found = [x for image in shared for x in readings.on(a, image)]
        reference = [x for image in shared for x in readings.on(b, image)]
        return box_agreement(found, reference, iou_threshold=iou_threshold, images=shared).total.f1

    return pairwise("box_f1", readings.readers, lambda a, b: len(readings.shared(a, b)), compare, 1.0)
