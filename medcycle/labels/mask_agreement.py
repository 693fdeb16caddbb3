"""Mask agreement: Dice, IoU, HD95 and ASSD with spacing (2D and 3D, anisotropic), and the reader matrix.

Dice and IoU come from SimpleITK's ``LabelOverlapMeasuresImageFilter``. HD95 and ASSD follow MONAI's
definitions (see :mod:`.agreement`): each mask's surface is SimpleITK's ``BinaryContour`` (face
connectivity) of the mask padded with background, and each surface voxel's distance to the other surface
is found, as MONAI does on CPU, with a k-d tree (``scipy.spatial.KDTree``) over the other surface's voxel
centres in mm — exact in float64, and it touches only surface voxels, so large volumes stay cheap. Both
masks are cropped to the bounding box of their union first, which changes no distance; small images run
SimpleITK single-threaded (thread start-up costs more than the work). Cases with
an empty mask never reach the libraries: :mod:`.policy` decides them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from medcycle.errors import ValidationFailed
from medcycle.labels import policy
from medcycle.labels.agreement import ReaderMatrix, Readings, choose, pairwise
from medcycle.labels.model import Annotation, Kind, Mask

BoolArray = npt.NDArray[np.bool_]
HD_PERCENTILE = 95.0
SMALL = 1 << 18  # voxels below which SimpleITK's threads cost more than they save


class MaskMetric(StrEnum):
    DICE = "dice"
    IOU = "iou"
    HD95 = "hd95"
    ASSD = "assd"


class Aggregate(StrEnum):
    """How per-image values of a reader pair become one number."""

    MEAN = "mean"  # a one-empty image makes a distance mean inf, on purpose (see policy)
    MEDIAN = "median"


@dataclass(frozen=True, slots=True)
class MaskScores:
    """Overlap (0..1) and surface distances (mm) of two masks of the same image."""

    dice: float
    iou: float
    hd95: float
    assd: float

    def to_dict(self) -> dict[str, Any]:
        return {"dice": self.dice, "iou": self.iou, "hd95": policy.json_number(self.hd95),
                "assd": policy.json_number(self.assd)}


def simpleitk() -> Any:
    """SimpleITK, imported on first use (its SWIG wrappers are untyped, so it is handled as ``Any``)."""
    return importlib.import_module("SimpleITK")


def _close(x: Sequence[float] | None, y: Sequence[float] | None) -> bool:
    if x is None or y is None:
        return True
    return len(x) == len(y) and bool(np.allclose(x, y, rtol=1e-5, atol=1e-6))


def mask_spacing(a: Mask, b: Mask) -> tuple[float, ...]:
    """The spacing two masks share (1 mm per axis when neither has one); an error when they do not align."""
    if a.array.shape != b.array.shape:
        raise ValidationFailed(f"masks of shapes {a.array.shape} and {b.array.shape} cannot be compared",
                               hint="Compare masks drawn on the same image (resample one onto the other's grid).")
    if (a.spacing is None) != (b.spacing is None):
        raise ValidationFailed("one mask has a spacing and the other has none",
                               hint="Give both masks the spacing of their series, or neither (pixel units).")
    if not _close(a.spacing, b.spacing):
        raise ValidationFailed(f"masks have different spacings {a.spacing} and {b.spacing}",
                               hint="Compare masks drawn on the same grid (resample one onto the other's).")
    if not (_close(a.origin, b.origin) and _close(a.direction, b.direction)) or a.z != b.z:
        raise ValidationFailed("masks lie at different positions (origin, direction or slice differ)",
                               hint="Compare masks of the same image and slice; stack per-slice masks into a "
                                    "3D mask first.")
    return a.spacing or (1.0,) * a.array.ndim


def _image(array: BoolArray, spacing: Sequence[float]) -> Any:
    sitk = simpleitk()
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing([float(s) for s in reversed(spacing)])  # SimpleITK orders axes x, y, z
    return image


def overlap(a: Mask, b: Mask) -> tuple[float, float]:
    """(Dice, IoU) of two masks' foreground."""
    spacing = mask_spacing(a, b)
    fa, fb = a.binary, b.binary
    fixed = policy.empty_overlap(not fa.any(), not fb.any())
    if fixed is not None:
        return fixed, fixed
    measures = _filter("LabelOverlapMeasuresImageFilter", fa.size)
    measures.Execute(_image(fa, spacing), _image(fb, spacing))
    return float(measures.GetDiceCoefficient()), float(measures.GetJaccardCoefficient())


def _filter(name: str, voxels: int) -> Any:
    f = getattr(simpleitk(), name)()
    if voxels < SMALL:
        f.SetNumberOfThreads(1)
    return f


def _surface(mask: BoolArray) -> npt.NDArray[np.float64]:
    """Index coordinates of the surface voxels of ``mask`` (outside the array is background, as in MONAI)."""
    padded = np.pad(mask, 1)
    f = _filter("BinaryContourImageFilter", padded.size)
    f.SetFullyConnected(False)
    f.SetBackgroundValue(0)
    f.SetForegroundValue(1)
    contour = f.Execute(_image(padded, (1.0,) * padded.ndim))
    return (np.argwhere(simpleitk().GetArrayViewFromImage(contour)) - 1).astype(np.float64)


def _distances_from(points: npt.NDArray[np.float64], to_points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    from scipy.spatial import KDTree

    distances: npt.NDArray[np.float64] = KDTree(to_points, leafsize=32).query(points, k=1)[0]
    return distances


def _bounding_box(mask: BoolArray) -> tuple[slice, ...]:
    coords = np.argwhere(mask)
    return tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(coords.min(axis=0), coords.max(axis=0), strict=True))


def surface_distances(a: Mask, b: Mask) -> tuple[float, float]:
    """(HD95, ASSD) in mm between two masks' surfaces, symmetric."""
    spacing = mask_spacing(a, b)
    fa, fb = a.binary, b.binary
    fixed = policy.empty_distance(not fa.any(), not fb.any())
    if fixed is not None:
        return fixed, fixed
    box = _bounding_box(fa | fb)
    scale = np.asarray(spacing, dtype=np.float64)
    pa, pb = _surface(fa[box]) * scale, _surface(fb[box]) * scale
    d_ab, d_ba = _distances_from(pa, pb), _distances_from(pb, pa)
    hd95 = max(float(np.percentile(d_ab, HD_PERCENTILE)), float(np.percentile(d_ba, HD_PERCENTILE)))
    return hd95, float(np.concatenate([d_ab, d_ba]).mean())


def mask_scores(a: Mask, b: Mask) -> MaskScores:
    """Dice, IoU, HD95 and ASSD of two masks of the same image (spacing from the masks)."""
    dice, iou = overlap(a, b)
    hd95, assd = surface_distances(a, b)
    return MaskScores(dice, iou, hd95, assd)


def mask_metric(a: Mask, b: Mask, metric: str) -> float:
    """One of :class:`MaskMetric` (computing only what it needs)."""
    m = choose(MaskMetric, metric, "mask metric")
    if m in (MaskMetric.DICE, MaskMetric.IOU):
        return overlap(a, b)[0 if m is MaskMetric.DICE else 1]
    return surface_distances(a, b)[0 if m is MaskMetric.HD95 else 1]


def reader_mask(annotations: Sequence[Annotation]) -> Mask:
    """One reader's mask of one label on one image: the union of their mask annotations there."""
    masks = [a.geometry for a in annotations if isinstance(a.geometry, Mask)]
    if not masks:
        raise ValidationFailed("no mask annotations given", hint="Give mask annotations.")
    first = masks[0]
    union = first.binary
    for m in masks[1:]:
        mask_spacing(first, m)
        union = union | m.binary
    return Mask(union.astype(np.uint8), first.spacing, first.origin, first.direction, first.z)


_EMPTY = Mask(np.zeros((1, 1), np.uint8))


def _empty_like(mask: Mask) -> Mask:
    return Mask(np.zeros(mask.array.shape, np.uint8), mask.spacing, mask.origin, mask.direction, mask.z)


def mask_matrix(annotations: Iterable[Annotation], label: str, *, metric: str = MaskMetric.DICE,
                read: Mapping[str, Iterable[str]] | None = None, aggregate: str = Aggregate.MEAN) -> ReaderMatrix:
    """Reader × reader agreement on the masks of ``label``, aggregated over the images both read.

    Without ``read``, a reader read the images they drew a ``label`` mask on; pass ``read`` so that a
    read image without a mask counts as an empty mask (see :class:`.agreement.Readings`).
    """
    m = choose(MaskMetric, metric, "mask metric")
    how = choose(Aggregate, aggregate, "aggregate")
    readings = Readings.of(annotations, Kind.MASK, label=label, read=read)
    masks = {(r, image): reader_mask(anns)
             for r, by_image in readings.found.items() for image, anns in by_image.items()}

    def one(a: str, b: str, image: str) -> float:
        ma, mb = masks.get((a, image)), masks.get((b, image))
        present = ma if ma is not None else mb
        if present is None:  # both read the image and drew nothing
            return mask_metric(_EMPTY, _EMPTY, m)
        return mask_metric(ma if ma is not None else _empty_like(present),
                           mb if mb is not None else _empty_like(present), m)

    def compare(a: str, b: str) -> float:
        values = [one(a, b, image) for image in readings.shared(a, b)]
        return float(np.mean(values) if how is Aggregate.MEAN else np.median(values))

    perfect = 1.0 if m in (MaskMetric.DICE, MaskMetric.IOU) else 0.0
    return pairwise(m.value, readings.readers, lambda a, b: len(readings.shared(a, b)), compare, perfect)
