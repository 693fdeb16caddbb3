"""Cheap pixel statistics computed at ingest; they feed EDA, out-of-distribution checks and drift.

Values are taken after the modality LUT (rescale slope/intercept, so CT is in HU) and MONOCHROME1 is
inverted so that larger always means brighter. Large volumes are subsampled (at most ``MAX_VALUES``
voxels) so statistics stay cheap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

MAX_VALUES = 2_000_000


@dataclass(frozen=True, slots=True)
class PixelStats:
    p01: float
    p05: float
    p50: float
    p95: float
    p99: float
    mean: float
    std: float
    saturated_fraction: float
    air_fraction: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _subsample(values: NDArray[Any]) -> NDArray[np.float64]:
    flat = values.reshape(-1)
    if flat.size > MAX_VALUES:
        step = int(np.ceil(flat.size / MAX_VALUES))
        flat = flat[::step]
    return flat.astype(np.float64, copy=False)


def pixel_stats(
    values: NDArray[Any],
    *,
    bits_stored: int | None = None,
    monochrome1: bool = False,
    hounsfield: bool = False,
) -> PixelStats | None:
    """Statistics of an image or volume.

    Args:
        values: pixel values after the modality LUT, any shape (2D image, frames, 3D volume, RGB).
        bits_stored: bit depth before rescale; the top of its range counts as saturated.
        monochrome1: invert (min+max-x) so that larger means brighter, as in MONOCHROME2.
        hounsfield: values are CT Hounsfield units; air is < -900 HU. Otherwise air is the lowest 1 %
            of the value range.
    """
    flat = _subsample(np.asarray(values))
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return None
    lo, hi = float(flat.min()), float(flat.max())
    if monochrome1:
        # Invert about the stored range (2^bits - 1) when known, so a MONOCHROME1 image and its
        # MONOCHROME2 twin give the same statistics; else about the observed range.
        top = float(2**bits_stored - 1) if bits_stored and lo >= 0 and hi <= 2**bits_stored - 1 else lo + hi
        flat = top - flat
        lo, hi = top - hi, top - lo
    p01, p05, p50, p95, p99 = (float(v) for v in np.percentile(flat, [1, 5, 50, 95, 99]))
    span = hi - lo
    # Saturated: pixels clipped at the top of the stored range (or at the brightest value when the
    # bit depth is unknown or values were rescaled) — burnt-out film, clipped detectors.
    top = float(2**bits_stored - 1) if bits_stored and not hounsfield and hi <= 2**bits_stored - 1 else hi
    saturated = float(np.mean(flat >= top)) if span > 0 else 1.0
    air_cutoff = -900.0 if hounsfield else lo + 0.01 * span  # CT air is below -900 HU
    air = float(np.mean(flat < air_cutoff)) if hounsfield else (float(np.mean(flat <= air_cutoff)) if span > 0 else 1.0)
    return PixelStats(p01, p05, p50, p95, p99, float(flat.mean()), float(flat.std()), saturated, air)
