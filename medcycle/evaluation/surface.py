"""Per-case segmentation metrics of one binary mask against another, in millimetres when the spacing is known.

* ``dice`` — overlap, 1.0 when both masks are empty;
* ``hd95`` — the 95th percentile Hausdorff distance (symmetric: the larger of the two directed percentiles);
* ``asd`` — the average symmetric surface distance (the mean of both directions' distances together);
* ``nsd`` — the normalised surface Dice at a tolerance in mm: the fraction of both surfaces within the
  tolerance of the other.

The surfaces are the mask voxels that a binary erosion removes (SciPy's ``binary_erosion``, face
connectivity); distances are Euclidean distance transforms with the voxel ``spacing`` (row, column[, slice]
in the array's axis order). These are the definitions of MONAI's ``compute_hausdorff_distance``
(``percentile=95``), ``compute_average_surface_distance`` (``symmetric=True``) and ``compute_surface_dice``,
and the values agree with them (tested). When a mask is empty and the other is not, the distances are
undefined (NaN, left out of the means and counted) and the NSD is 0; both empty gives NaN distances and NSD 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from medcycle.errors import ValidationFailed

BoolArray = npt.NDArray[np.bool_]
DEFAULT_TOLERANCE_MM = 1.0


@dataclass(frozen=True, slots=True)
class PerCaseSpec:
    name: str
    higher_is_better: bool
    unit: str
    description: str


SEGMENTATION: dict[str, PerCaseSpec] = {s.name: s for s in (
    PerCaseSpec("dice", True, "", "Dice overlap of the foreground"),
    PerCaseSpec("hd95", False, "mm", "95th percentile symmetric Hausdorff distance"),
    PerCaseSpec("asd", False, "mm", "average symmetric surface distance"),
    PerCaseSpec("nsd", True, "", "normalised surface Dice at the tolerance"),
)}


def _edges(mask: BoolArray) -> BoolArray:
    from scipy.ndimage import binary_erosion

    if not mask.any():
        return mask
    return np.asarray(mask & ~binary_erosion(mask), dtype=bool)


def _check(pred: Any, truth: Any, spacing: Sequence[float] | None) -> tuple[BoolArray, BoolArray, tuple[float, ...]]:
    p, t = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if p.shape != t.shape or p.ndim not in (2, 3):
        raise ValidationFailed(f"masks must be 2-D or 3-D and of one shape, got {p.shape} and {t.shape}",
                               hint="Compare the prediction with the mask of the same image, resampled alike.")
    s = tuple(float(x) for x in spacing) if spacing is not None else (1.0,) * p.ndim
    if len(s) != p.ndim or not all(x > 0 and math.isfinite(x) for x in s):
        raise ValidationFailed(f"spacing {spacing} does not fit a {p.ndim}-D mask",
                               hint=f"Give {p.ndim} positive voxel sizes in mm, in the array's axis order.")
    return p, t, s


def surface_distances(pred: Any, truth: Any, spacing: Sequence[float] | None = None
                      ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Distances from each surface voxel of ``pred`` to ``truth``'s surface, and back."""
    from scipy.ndimage import distance_transform_edt

    p, t, s = _check(pred, truth, spacing)
    ep, et = _edges(p), _edges(t)
    if not ep.any() or not et.any():
        return np.zeros(0), np.zeros(0)
    to_t = distance_transform_edt(~et, sampling=s)
    to_p = distance_transform_edt(~ep, sampling=s)
    return np.asarray(to_t[ep], dtype=np.float64), np.asarray(to_p[et], dtype=np.float64)


def case_metrics(pred: Any, truth: Any, spacing: Sequence[float] | None = None, *,
                 tolerance: float = DEFAULT_TOLERANCE_MM) -> dict[str, float]:
    """``dice``, ``hd95``, ``asd`` and ``nsd`` of one case (see the module docstring)."""
    p, t, s = _check(pred, truth, spacing)
    if tolerance < 0:
        raise ValidationFailed(f"surface tolerance {tolerance} is negative", hint="E.g. 1.0 (mm).")
    np_, nt = int(p.sum()), int(t.sum())
    dice = 1.0 if np_ + nt == 0 else 2.0 * float((p & t).sum()) / (np_ + nt)
    if np_ == 0 or nt == 0:
        return {"dice": dice, "hd95": math.nan, "asd": math.nan, "nsd": 1.0 if np_ == nt else 0.0}
    d_pt, d_tp = surface_distances(p, t, s)
    hd95 = max(float(np.percentile(d_pt, 95)), float(np.percentile(d_tp, 95)))
    asd = float(np.concatenate([d_pt, d_tp]).mean())
    nsd = float((np.count_nonzero(d_pt <= tolerance) + np.count_nonzero(d_tp <= tolerance)) / (d_pt.size + d_tp.size))
    return {"dice": dice, "hd95": hd95, "asd": asd, "nsd": nsd}
