"""Consensus of several readers: majority vote, STAPLE, box clustering — as annotations of a new reader.

Every result carries ``annotations`` by the reader ``consensus:<method>`` (``majority``, ``staple``,
``multilabel-staple``, ``box-cluster``), ready for :func:`consensus_set` to become a label set.

Rules, each chosen once:

* **Class majority** — the class most readers gave wins. A tie goes to the class listed first in the
  class order (``tie_break="order"``; list the clinically safer class first), or leaves the image
  without a consensus for adjudication (``tie_break="none"``); tied images are reported either way.
* **Mask majority** (SimpleITK ``LabelVoting``) — a pixel is foreground where more than half of the
  image's readers drew it; a tie (even number of readers) is background.
* **STAPLE** (SimpleITK ``STAPLEImageFilter`` / ``MultiLabelSTAPLEImageFilter``) — one estimate of each
  reader's sensitivity and specificity over all images together (STAPLE's model has no spatial term, so
  the images' pixels are pooled into one long image; this needs every reader to have read every image).
  The consensus is the pixels whose estimated probability is at least ``threshold`` (0.5). For
  multi-label STAPLE a reader's sensitivity for a class is its confusion-matrix diagonal, and its
  specificity is P(not that class | truth is another class), weighted by the consensus class frequencies.
* **Box clustering** — readers are taken in name order; each reader's boxes are matched one-to-one
  (Hungarian, IoU ≥ threshold) to the clusters so far, unmatched boxes open new clusters. A cluster's
  box is the coordinate-wise median (or mean) of its members; clusters drawn by fewer than
  ``min_readers`` readers (default: more than half of the image's readers) are dropped. Images read by
  one reader only get no consensus (they are listed in ``skipped``).

Masks: a reader who read an image but drew nothing has an empty mask there when ``read`` says so (see
:class:`.agreement.Readings`); consensus masks that come out empty produce no annotation.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from medcycle.errors import ValidationFailed
from medcycle.labels.agreement import Readings, choose
from medcycle.labels.box_agreement import assign, check_threshold, iou_table
from medcycle.labels.mask_agreement import mask_spacing, reader_mask, simpleitk
from medcycle.labels.model import Annotation, AnnotationSet, Box, Kind, Mask

CONSENSUS_PREFIX = "consensus:"
MAJORITY = CONSENSUS_PREFIX + "majority"
STAPLE = CONSENSUS_PREFIX + "staple"
MULTILABEL_STAPLE = CONSENSUS_PREFIX + "multilabel-staple"
BOX_CLUSTER = CONSENSUS_PREFIX + "box-cluster"


class TieBreak(StrEnum):
    ORDER = "order"  # the class listed first wins
    NONE = "none"  # no consensus: adjudicate


class MaskMethod(StrEnum):
    MAJORITY = "majority"
    STAPLE = "staple"


class Center(StrEnum):
    MEDIAN = "median"
    MEAN = "mean"


def _need_two(readers: Sequence[str], what: str) -> None:
    if len(readers) < 2:
        raise ValidationFailed(f"{what} needs at least two readers, got {len(readers)}: {', '.join(readers)}",
                               hint="Collect a second reader's labels first.")


# ---------------------------------------------------------------------------------------------- classes


@dataclass(frozen=True, slots=True)
class ClassConsensus:
    """Class consensus per image; ``ties`` are images where classes tied, ``skipped`` had too few readers."""

    annotations: tuple[Annotation, ...]
    ties: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


def majority_class(annotations: Iterable[Annotation], classes: Sequence[str], *, tie_break: str = TieBreak.ORDER,
                   min_readers: int = 2) -> ClassConsensus:
    """Majority vote of class annotations per image (one vote per reader; other kinds are skipped)."""
    rule = choose(TieBreak, tie_break, "tie break")
    order = {c: k for k, c in enumerate(classes)}
    votes: dict[str, dict[str, str]] = defaultdict(dict)  # image -> reader -> class
    for a in annotations:
        if a.kind != Kind.CLASS:
            continue
        if a.label not in order:
            raise ValidationFailed(f"class {a.label!r} is not in the class list",
                                   hint=f"Add it to classes ({', '.join(classes)}).")
        if not a.reader:
            raise ValidationFailed(f"a class annotation on {a.image!r} has no reader", hint="Set its reader.")
        given = votes[a.image].get(a.reader)
        if given is not None and given != a.label:
            raise ValidationFailed(f"reader {a.reader!r} gave image {a.image!r} two classes ({given}, {a.label})",
                                   hint="Majority vote takes one class per reader and image.")
        votes[a.image][a.reader] = a.label
    _need_two(sorted({r for by_reader in votes.values() for r in by_reader}), "a class majority vote")
    out: list[Annotation] = []
    ties: list[str] = []
    skipped: list[str] = []
    for image in sorted(votes):
        by_reader = votes[image]
        if len(by_reader) < min_readers:
            skipped.append(image)
            continue
        count = Counter(by_reader.values())
        top = max(count.values())
        leaders = sorted((c for c, n in count.items() if n == top), key=order.__getitem__)
        if len(leaders) > 1:
            ties.append(image)
            if rule is TieBreak.NONE:
                continue
        out.append(Annotation(image, leaders[0], Kind.CLASS, reader=MAJORITY, score=top / len(by_reader),
                              attributes={"votes": dict(sorted(count.items())), "readers": sorted(by_reader),
                                          "tie": len(leaders) > 1}))
    return ClassConsensus(tuple(out), tuple(ties), tuple(skipped))


# ---------------------------------------------------------------------------------------------- mask arrays

IntArray = npt.NDArray[np.integer[Any]]


def _stack(arrays: Sequence[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
    if len(arrays) < 2:
        raise ValidationFailed(f"consensus needs at least two readers' masks, got {len(arrays)}",
                               hint="Give one mask per reader.")
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) != 1:
        raise ValidationFailed(f"readers' masks have different shapes: {sorted(shapes)}",
                               hint="Give masks of the same image (the same grid).")
    out = [np.asarray(a) for a in arrays]
    if any(a.dtype.kind not in "biu" for a in out) or any(a.min(initial=0) < 0 for a in out):
        raise ValidationFailed("masks must hold non-negative integer labels or booleans",
                               hint="Threshold probabilities first, e.g. mask = prob > 0.5.")
    return out


def _images(arrays: Sequence[npt.NDArray[Any]], pooled: bool) -> list[Any]:
    sitk = simpleitk()
    if pooled:  # one long 2D image: STAPLE has no spatial term, so the layout does not matter
        return [sitk.GetImageFromArray(np.ascontiguousarray(a, dtype=np.uint8).reshape(1, -1)) for a in arrays]
    return [sitk.GetImageFromArray(np.ascontiguousarray(a, dtype=np.uint8)) for a in arrays]


def vote(arrays: Sequence[npt.NDArray[Any]]) -> npt.NDArray[np.uint8]:
    """Majority vote of label maps (binary masks included) by SimpleITK ``LabelVoting``; ties are 0."""
    arrays = _stack(arrays)
    if max(int(a.max(initial=0)) for a in arrays) > 254:
        raise ValidationFailed("label values above 254 cannot be voted", hint="Number the classes from 1.")
    if arrays[0].ndim not in (2, 3):
        raise ValidationFailed(f"masks must be 2D or 3D, got {arrays[0].ndim}D", hint="Give (rows, cols) or volumes.")
    sitk = simpleitk()
    voted = sitk.LabelVoting(_images(arrays, pooled=False), 0)
    out: npt.NDArray[np.uint8] = sitk.GetArrayFromImage(voted).astype(np.uint8)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class StapleResult:
    """Binary STAPLE: the probability of foreground, the consensus (probability ≥ threshold), per-reader rates."""

    probability: npt.NDArray[np.float64]
    consensus: npt.NDArray[np.bool_]
    sensitivity: tuple[float, ...]
    specificity: tuple[float, ...]
    iterations: int


def staple(arrays: Sequence[npt.NDArray[Any]], *, threshold: float = 0.5, confidence_weight: float = 1.0,
           max_iterations: int = 1000) -> StapleResult:
    """SimpleITK's binary STAPLE of readers' masks (any shape; nonzero is foreground)."""
    arrays = [np.asarray(a != 0, dtype=np.uint8) for a in _stack(arrays)]
    if not 0.0 < threshold < 1.0:
        raise ValidationFailed(f"threshold {threshold} is outside (0, 1)", hint="Use 0.5.")
    sitk = simpleitk()
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    f.SetConfidenceWeight(float(confidence_weight))
    f.SetMaximumIterations(int(max_iterations))
    probability = sitk.GetArrayFromImage(f.Execute(_images(arrays, pooled=True))).reshape(arrays[0].shape)
    return StapleResult(probability.astype(np.float64), probability >= threshold,
                        tuple(float(v) for v in f.GetSensitivity()), tuple(float(v) for v in f.GetSpecificity()),
                        int(f.GetElapsedIterations()))


@dataclass(frozen=True, slots=True, eq=False)
class MultiLabelStapleResult:
    """Multi-label STAPLE: the consensus label map and, per reader, a confusion matrix and per-label rates.

    ``confusion[r, i, j]`` = P(reader ``r`` says ``i`` | truth is ``j``) for labels ``0..n-1`` (row ``n`` is
    SimpleITK's "undecided"); ``sensitivity[r, l]`` and ``specificity[r, l]`` are reader ``r``'s rates for
    label ``l`` against all other labels.
    """

    consensus: npt.NDArray[np.uint8]
    confusion: npt.NDArray[np.float64]
    sensitivity: npt.NDArray[np.float64]
    specificity: npt.NDArray[np.float64]


def multilabel_staple(arrays: Sequence[npt.NDArray[Any]], *, max_iterations: int = 1000) -> MultiLabelStapleResult:
    """SimpleITK's multi-label STAPLE of readers' label maps (0 background, 1..n classes; any shape)."""
    arrays = _stack(arrays)
    if max(int(a.max(initial=0)) for a in arrays) > 254:
        raise ValidationFailed("label values above 254 are not supported", hint="Number the classes from 1.")
    sitk = simpleitk()
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(255)
    f.SetMaximumNumberOfIterations(int(max_iterations))
    consensus = sitk.GetArrayFromImage(f.Execute(_images(arrays, pooled=True))).reshape(arrays[0].shape)
    consensus = np.where(consensus == 255, 0, consensus).astype(np.uint8)  # undecided: background
    size = len(f.GetConfusionMatrix(0))
    n = int((np.sqrt(1 + 4 * size) - 1) / 2)  # the matrix is (n + 1) × n
    confusion = np.stack([np.asarray(f.GetConfusionMatrix(r), dtype=np.float64).reshape(n + 1, n)
                          for r in range(len(arrays))])
    prior = np.bincount(consensus.ravel(), minlength=n)[:n].astype(np.float64)
    prior = prior / prior.sum()
    sensitivity = np.stack([np.diag(c[:n]) for c in confusion])
    specificity = np.empty_like(sensitivity)
    for label in range(n):
        others = np.arange(n) != label
        weight = prior[others].sum()
        for r, c in enumerate(confusion):
            specificity[r, label] = (prior[others] @ (1.0 - c[label, others]) / weight) if weight else np.nan
    return MultiLabelStapleResult(consensus, confusion, sensitivity, specificity)


# ---------------------------------------------------------------------------------------------- mask annotations


@dataclass(frozen=True, slots=True)
class ReaderEstimate:
    """STAPLE's estimate of one reader's sensitivity and specificity for one class."""

    reader: str
    label: str
    sensitivity: float
    specificity: float


@dataclass(frozen=True, slots=True)
class MaskConsensus:
    """Consensus masks as annotations, the readers used and (STAPLE) each reader's estimated rates."""

    method: str
    annotations: tuple[Annotation, ...]
    readers: tuple[str, ...]
    estimates: tuple[ReaderEstimate, ...] = ()
    skipped: tuple[str, ...] = ()  # images with fewer than two readers

    def estimate(self, reader: str, label: str | None = None) -> ReaderEstimate:
        for e in self.estimates:
            if e.reader == reader and (label is None or e.label == label):
                return e
        raise ValidationFailed(f"no estimate for reader {reader!r}" + (f" and class {label!r}" if label else ""),
                               hint="Estimates come from STAPLE, for the readers it was run on.")


@dataclass(frozen=True, slots=True)
class _Image:
    """One image's readers and their masks (``None``: read, drew nothing), with a template for the geometry."""

    key: str
    readers: tuple[str, ...]
    masks: dict[str, dict[str, Mask]] = field(default_factory=dict)  # reader -> label -> mask
    template: Mask | None = None

    def array(self, reader: str, label: str) -> npt.NDArray[np.bool_]:
        assert self.template is not None
        mask = self.masks.get(reader, {}).get(label)
        return mask.binary if mask is not None else np.zeros(self.template.array.shape, dtype=bool)


def _gather(annotations: Iterable[Annotation], labels: Sequence[str],
            read: Mapping[str, Iterable[str]] | None) -> list[_Image]:
    wanted = set(labels)
    anns = [a for a in annotations if a.kind == Kind.MASK and a.label in wanted]
    readings = Readings.of(anns, Kind.MASK, read=read)
    images = sorted({image for seen in readings.read.values() for image in seen})
    out = []
    for key in images:
        readers = tuple(r for r in readings.readers if key in readings.read[r])
        masks: dict[str, dict[str, Mask]] = defaultdict(dict)
        template: Mask | None = None
        for r in readers:
            by_label: dict[str, list[Annotation]] = defaultdict(list)
            for a in readings.on(r, key):
                by_label[a.label].append(a)
            for label, group in by_label.items():
                mask = reader_mask(group)
                if template is not None:
                    mask_spacing(template, mask)
                template = template or mask
                masks[r][label] = mask
        out.append(_Image(key, readers, dict(masks), template))
    return out


def _consensus_mask(template: Mask, array: npt.NDArray[Any]) -> Mask:
    return Mask(np.asarray(array, dtype=np.uint8), template.spacing, template.origin, template.direction, template.z)


def mask_consensus(annotations: Iterable[Annotation], label: str, *, method: str = MaskMethod.STAPLE,
                   read: Mapping[str, Iterable[str]] | None = None, threshold: float = 0.5) -> MaskConsensus:
    """Consensus of the readers' masks of ``label``: per-image majority, or STAPLE over all images pooled."""
    how = choose(MaskMethod, method, "consensus method")
    images = _gather(annotations, [label], read)
    readers = tuple(sorted({r for image in images for r in image.readers}))
    _need_two(readers, "mask consensus")
    skipped = tuple(image.key for image in images if len(image.readers) < 2)
    drawn = [image for image in images if len(image.readers) >= 2 and image.template is not None]
    out: list[Annotation] = []
    if how is MaskMethod.MAJORITY:
        for image in drawn:
            assert image.template is not None
            voted = vote([image.array(r, label) for r in image.readers])
            if voted.any():
                out.append(Annotation(image.key, label, Kind.MASK, _consensus_mask(image.template, voted),
                                      reader=MAJORITY, attributes={"readers": list(image.readers)}))
        return MaskConsensus(MAJORITY, tuple(out), readers, (), skipped)
    incomplete = [image.key for image in images if image.readers != readers]
    if incomplete:
        raise ValidationFailed(f"STAPLE needs every reader on every image; {len(incomplete)} image(s) lack some "
                               f"reader: {', '.join(incomplete[:5])}",
                               hint="Run it per group of images read by the same readers, pass read= if a "
                                    "missing mask means the reader saw nothing, or use method='majority'.")
    if not drawn:  # nobody drew anything: no consensus, and rates are undefined
        nan = float("nan")
        return MaskConsensus(STAPLE, (), readers, tuple(ReaderEstimate(r, label, nan, nan) for r in readers), skipped)
    pooled = [np.concatenate([image.array(r, label).ravel() for image in drawn]) for r in readers]
    result = staple(pooled, threshold=threshold)
    start = 0
    for image in drawn:
        assert image.template is not None
        size = image.template.array.size
        consensus = result.consensus[start:start + size].reshape(image.template.array.shape)
        start += size
        if consensus.any():
            out.append(Annotation(image.key, label, Kind.MASK, _consensus_mask(image.template, consensus),
                                  reader=STAPLE, attributes={"readers": list(readers)}))
    estimates = tuple(ReaderEstimate(r, label, se, sp)
                      for r, se, sp in zip(readers, result.sensitivity, result.specificity, strict=True))
    return MaskConsensus(STAPLE, tuple(out), readers, estimates, skipped)


def multilabel_mask_consensus(annotations: Iterable[Annotation], labels: Sequence[str], *,
                              read: Mapping[str, Iterable[str]] | None = None) -> MaskConsensus:
    """Multi-label STAPLE of the readers' masks of ``labels`` (which must not overlap within a reader)."""
    if len(labels) < 1 or len(set(labels)) != len(labels):
        raise ValidationFailed("give the classes to combine, each once", hint="e.g. labels=['liver', 'tumour'].")
    images = _gather(annotations, labels, read)
    readers = tuple(sorted({r for image in images for r in image.readers}))
    _need_two(readers, "multi-label STAPLE")
    incomplete = [image.key for image in images if image.readers != readers]
    if incomplete:
        raise ValidationFailed(f"STAPLE needs every reader on every image; {len(incomplete)} image(s) lack some "
                               f"reader: {', '.join(incomplete[:5])}",
                               hint="Run it per group of images read by the same readers, or pass read=.")
    drawn = [image for image in images if image.template is not None]

    def label_map(image: _Image, reader: str) -> npt.NDArray[np.uint8]:
        assert image.template is not None
        out = np.zeros(image.template.array.shape, dtype=np.uint8)
        for k, label in enumerate(labels, start=1):
            mask = image.array(reader, label)
            if (out[mask] != 0).any():
                raise ValidationFailed(f"reader {reader!r} drew overlapping classes on image {image.key!r}",
                                       hint="Multi-label STAPLE needs one class per pixel; use mask_consensus "
                                            "per class instead.")
            out[mask] = k
        return out

    if not drawn:
        nan = float("nan")
        return MaskConsensus(MULTILABEL_STAPLE, (), readers,
                             tuple(ReaderEstimate(r, label, nan, nan) for r in readers for label in labels))
    pooled = [np.concatenate([label_map(image, r).ravel() for image in drawn]) for r in readers]
    result = multilabel_staple(pooled)
    out: list[Annotation] = []
    start = 0
    for image in drawn:
        assert image.template is not None
        size = image.template.array.size
        consensus = result.consensus[start:start + size].reshape(image.template.array.shape)
        start += size
        for k, label in enumerate(labels, start=1):
            if (consensus == k).any():
                out.append(Annotation(image.key, label, Kind.MASK, _consensus_mask(image.template, consensus == k),
                                      reader=MULTILABEL_STAPLE, attributes={"readers": list(readers)}))
    n = result.sensitivity.shape[1]
    estimates = tuple(ReaderEstimate(r, label, float(result.sensitivity[i, k]) if k < n else float("nan"),
                                     float(result.specificity[i, k]) if k < n else float("nan"))
                      for i, r in enumerate(readers) for k, label in enumerate(labels, start=1))
    return MaskConsensus(MULTILABEL_STAPLE, tuple(out), readers, estimates)


# ---------------------------------------------------------------------------------------------- boxes


@dataclass(frozen=True, slots=True)
class BoxCluster:
    """Boxes of one class on one image grouped across readers (at most one per reader), and their consensus."""

    image: str
    label: str
    box: Box
    members: tuple[tuple[str, Box], ...]
    readers: int  # readers of the image

    @property
    def agreeing(self) -> int:
        return len(self.members)


@dataclass(frozen=True, slots=True)
class BoxConsensus:
    """The kept clusters as annotations, and every cluster (kept or not) for review."""

    annotations: tuple[Annotation, ...]
    clusters: tuple[BoxCluster, ...]
    skipped: tuple[str, ...] = ()  # images with fewer than two readers


def _center(boxes: Sequence[Box], how: Center) -> Box:
    coords = np.array([[b.x0, b.y0, b.x1, b.y1] for b in boxes], dtype=np.float64)
    c = np.median(coords, axis=0) if how is Center.MEDIAN else coords.mean(axis=0)
    return Box(float(c[0]), float(c[1]), float(c[2]), float(c[3]), boxes[0].z)


def cluster_boxes(annotations: Iterable[Annotation], *, iou_threshold: float = 0.5, min_readers: int | None = None,
                  center: str = Center.MEDIAN, read: Mapping[str, Iterable[str]] | None = None) -> BoxConsensus:
    """Group the readers' boxes per image and class by IoU; keep groups drawn by at least ``min_readers``."""
    check_threshold(iou_threshold)
    how = choose(Center, center, "box centre")
    if min_readers is not None and min_readers < 1:
        raise ValidationFailed(f"min_readers must be at least 1, got {min_readers}", hint="e.g. 2 of 3 readers.")
    readings = Readings.of(annotations, Kind.BOX, read=read)
    _need_two(readings.readers, "box clustering")
    clusters: list[BoxCluster] = []
    skipped: list[str] = []
    for image in sorted({i for seen in readings.read.values() for i in seen}):
        readers = [r for r in readings.readers if image in readings.read[r]]
        if len(readers) < 2:
            skipped.append(image)
            continue
        labels = sorted({a.label for r in readers for a in readings.on(r, image)})
        for label in labels:
            groups: list[list[tuple[str, Box]]] = []
            for r in readers:
                boxes = [a.geometry for a in readings.on(r, image)
                         if a.label == label and isinstance(a.geometry, Box)]
                centers = [_center([b for _, b in g], how) for g in groups]
                matched = dict(assign(iou_table(boxes, centers), iou_threshold))
                for k, box in enumerate(boxes):
                    if k in matched:
                        groups[matched[k]].append((r, box))
                    else:
                        groups.append([(r, box)])
            clusters += [BoxCluster(image, label, _center([b for _, b in g], how), tuple(g), len(readers))
                         for g in groups]
    out = []
    for c in clusters:
        need = min_readers if min_readers is not None else c.readers // 2 + 1
        if c.agreeing >= need:
            out.append(Annotation(c.image, c.label, Kind.BOX, c.box, reader=BOX_CLUSTER, score=c.agreeing / c.readers,
                                  attributes={"agreeing": c.agreeing, "readers": c.readers,
                                              "members": [r for r, _ in c.members]}))
    return BoxConsensus(tuple(out), tuple(clusters), tuple(skipped))


def consensus_set(source: AnnotationSet, *consensus: Iterable[Annotation]) -> AnnotationSet:
    """A label set of consensus annotations on ``source``'s images and classes."""
    annotations = tuple(a for group in consensus for a in group)
    odd = sorted({a.reader or "" for a in annotations if not (a.reader or "").startswith(CONSENSUS_PREFIX)})
    if odd:
        raise ValidationFailed(f"not consensus annotations (readers {', '.join(odd[:5])})",
                               hint="Pass the annotations of a consensus result.")
    return AnnotationSet(source.images, source.classes, annotations)
