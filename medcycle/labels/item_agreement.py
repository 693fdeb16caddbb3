"""How much the readers of one item agree: the number a task compares with its adjudication threshold.

Dataset-level statistics (Cohen's/Fleiss' kappa, Krippendorff's alpha, HD95 …) live in :mod:`.agreement`;
a kappa needs many items, so the per-item decision uses the mean over reader pairs of a simple measure
per kind, and the item's agreement is the lowest over the kinds the schema allows:

==========  =====================================================================================
class       Jaccard of the two readers' class labels (single-label schemas: 1 if equal, else 0)
box         F1 of boxes matched one-to-one per class at IoU >= 0.5 (:func:`.box_agreement.box_agreement`)
polygon     as box, with polygon IoU (both rasterised on a common pixel grid; greedy matching)
mask        Dice per class (:func:`.mask_agreement.overlap` on each reader's union of masks of that
            class), averaged over the classes either reader used; masks on different grids score 0
==========  =====================================================================================

Empty cases follow :mod:`.policy` (both readers found nothing: 1; only one did: 0).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from medcycle.errors import ValidationFailed
from medcycle.labels import policy
from medcycle.labels.box_agreement import box_agreement
from medcycle.labels.mask_agreement import overlap, reader_mask
from medcycle.labels.model import Annotation, Box, Kind, Mask, Polygon

IOU_MATCH = 0.5
METRICS = {Kind.CLASS: "class-jaccard", Kind.BOX: "box-f1@0.5", Kind.POLYGON: "polygon-f1@0.5",
           Kind.MASK: "mask-dice"}


@dataclass(frozen=True, slots=True)
class ItemAgreement:
    """The item's agreement (lowest over kinds), the metric that gave it, and each reader's mean to the others."""

    value: float
    metric: str
    by_kind: dict[str, float]
    by_reader: dict[str, float]


def _class_pair(a: Sequence[Annotation], b: Sequence[Annotation]) -> float:
    la, lb = {x.label for x in a}, {x.label for x in b}
    if not la and not lb:
        return policy.OVERLAP_BOTH_EMPTY
    return len(la & lb) / len(la | lb)


def _polygon_iou(p: Polygon, q: Polygon) -> float:
    if p.z != q.z:
        return 0.0
    bp, bq = p.bounds(), q.bounds()
    x0, y0 = min(bp.x0, bq.x0), min(bp.y0, bq.y0)
    w = int(np.ceil(max(bp.x1, bq.x1) - x0)) + 2
    h = int(np.ceil(max(bp.y1, bq.y1) - y0)) + 2
    scale = max(1.0, 256 / max(w, h))  # small polygons are drawn larger so that pixels resolve them
    size = (max(1, int(w * scale)), max(1, int(h * scale)))

    def raster(poly: Polygon) -> npt.NDArray[np.bool_]:
        img = Image.new("1", size, 0)
        ImageDraw.Draw(img).polygon([((x - x0) * scale, (y - y0) * scale) for x, y in poly.points], fill=1)
        return np.asarray(img, dtype=bool)

    ra, rb = raster(p), raster(q)
    union = int(np.logical_or(ra, rb).sum())
    return float(np.logical_and(ra, rb).sum()) / union if union else 0.0


def _iou(a: Annotation, b: Annotation) -> float:
    if isinstance(a.geometry, Box) and isinstance(b.geometry, Box):
        return a.geometry.iou(b.geometry)
    if isinstance(a.geometry, Polygon) and isinstance(b.geometry, Polygon):
        return _polygon_iou(a.geometry, b.geometry)
    return 0.0


def _match_pair(a: Sequence[Annotation], b: Sequence[Annotation]) -> float:
    """F1 of one-to-one matches of the same class at IoU >= 0.5 (greedy by IoU; polygons)."""
    tp = 0
    for label in {x.label for x in a} | {x.label for x in b}:
        xa, xb = [x for x in a if x.label == label], [x for x in b if x.label == label]
        pairs = sorted(((_iou(p, q), i, j) for i, p in enumerate(xa) for j, q in enumerate(xb)), reverse=True)
        used_a: set[int] = set()
        used_b: set[int] = set()
        for iou, i, j in pairs:
            if iou < IOU_MATCH:
                break
            if i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
                tp += 1
    return policy.f1(tp, len(a) - tp, len(b) - tp)


def _box_pair(a: Sequence[Annotation], b: Sequence[Annotation]) -> float:
    return box_agreement(a, b, iou_threshold=IOU_MATCH).total.f1


def _mask_of(annotations: Sequence[Annotation], label: str) -> Mask | None:
    mine = [x for x in annotations if x.label == label]
    return reader_mask(mine) if mine else None


def _mask_pair(a: Sequence[Annotation], b: Sequence[Annotation]) -> float:
    labels = sorted({x.label for x in a} | {x.label for x in b})
    if not labels:
        return policy.OVERLAP_BOTH_EMPTY
    scores = []
    for label in labels:
        try:
            x, y = _mask_of(a, label), _mask_of(b, label)
            if x is None or y is None:  # one reader drew none of this class: the policy decides
                present = x if x is not None else y
                assert present is not None
                fixed = policy.empty_overlap(True, not present.binary.any())
                scores.append(policy.OVERLAP_ONE_EMPTY if fixed is None else fixed)
            else:
                scores.append(overlap(x, y)[0])
        except ValidationFailed:  # drawn on different grids: nothing that can overlap
            scores.append(policy.OVERLAP_ONE_EMPTY)
    return float(np.mean(scores))


_PAIR = {Kind.CLASS: _class_pair, Kind.BOX: _box_pair, Kind.POLYGON: _match_pair, Kind.MASK: _mask_pair}


def item_agreement(readings: Mapping[str, Sequence[Annotation]], kinds: Sequence[Kind]) -> ItemAgreement | None:
    """Agreement among the readers of one item (``reader → their annotations``); None with fewer than 2 readers.

    ``kinds`` are the kinds the schema allows: a kind nobody used still counts (every reader agreed there
    was nothing of it), so a schema of boxes where one reader drew a box and the other none scores 0.
    """
    readers = sorted(readings)
    if len(readers) < 2:
        return None
    by_kind: dict[str, float] = {}
    per_reader: dict[str, list[float]] = defaultdict(list)
    for kind in dict.fromkeys(Kind(k) for k in kinds):
        pair_fn = _PAIR[kind]
        scores = []
        for ra, rb in itertools.combinations(readers, 2):
            a = [x for x in readings[ra] if Kind(x.kind) is kind]
            b = [x for x in readings[rb] if Kind(x.kind) is kind]
            s = pair_fn(a, b)
            scores.append(s)
            per_reader[ra].append(s)
            per_reader[rb].append(s)
        by_kind[METRICS[kind]] = float(np.mean(scores))
    if not by_kind:
        return None
    metric = min(by_kind, key=lambda k: (by_kind[k], k))
    return ItemAgreement(by_kind[metric], metric if len(by_kind) == 1 else f"min({','.join(sorted(by_kind))})",
                         by_kind, {r: float(np.mean(v)) for r, v in per_reader.items()})
