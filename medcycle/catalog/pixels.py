"""Cheap pixel statistics computed at ingest; they feed EDA, out-of-distribution checks and drift.

Values are taken after the modality LUT (rescale slope/intercept, so CT is in HU) and MONOCHROME1 is
inverted so that larger always means brighter. Large images and volumes are subsampled (one value drawn
from each of ``MAX_VALUES`` equal runs of the flattened values, at fixed places for a given size) so statistics
stay cheap: they are estimates for EDA and drift, where the difference between 65,536 spread voxels and all of
them is far below what they are used to see (one standard error of a percentile's rank is at most
``sqrt(p (1 - p) / 65536)``: 0.04 % at the 1st and 99th percentiles, 0.2 % at the median).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

MAX_VALUES = 1 << 16  # 65,536 voxels (a 256 x 256 image whole; a 512 x 512 CT slice every fourth value)
QUANTILES = np.array([0.01, 0.05, 0.50, 0.95, 0.99])
MAX_BINS_PER_VALUE = 4  # integer pixels are counted in a histogram when it has at most this many bins a value


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
        return {name: getattr(self, name) for name in self.__slots__}


def stored_sample(
    data: bytes | memoryview,
    offset: int,
    length: int,
    *,
    rows: int,
    columns: int,
    samples: int,
    frames: int,
    bits_allocated: int,
    signed: bool,
    little: bool,
) -> NDArray[Any] | None:
    """The stored values of native (uncompressed) pixel data as pydicom's ``pixel_array`` gives them, flattened
    and subsampled as :func:`pixel_stats` would, read straight from the encoded bytes (a view, no decode);
    None where that is not the same (bit depths other than 8/16/32, short pixel data: decode those)."""
    if bits_allocated not in (8, 16, 32) or min(rows, columns, samples, frames) < 1:
        return None
    count = rows * columns * samples * frames
    if count * (bits_allocated // 8) > length:
        return None
    dtype = np.dtype(("i" if signed else "u") + str(bits_allocated // 8)).newbyteorder("<" if little else ">")
    return _subsample(np.frombuffer(data, dtype=dtype, count=count, offset=offset))


def _subsample(values: NDArray[Any]) -> NDArray[Any]:
    """At most :data:`MAX_VALUES` values in their own dtype, flattened in memory order: all of them when there are
    few enough, else one value at a random place in each of :data:`MAX_VALUES` equal runs of the flattened values
    (a stratified sample; the places depend only on the number of values, so the same image always gives the same
    statistics). A plain stride would alias with the image's grid: every 256th value of a 64 x 512 x 512 volume
    lies in columns 0 and 256 only, a grid of every 7th row, column and slice misses a sphere's changing
    cross-section by more than a percent of rank."""
    flat = np.ravel(values, order="K")  # a view unless the array is scattered in memory
    if flat.size <= MAX_VALUES:
        return flat
    return flat[_sample_places(flat.size)]


@functools.lru_cache(maxsize=16)
def _sample_places(n: int) -> NDArray[np.intp]:
    """Ascending places, one drawn in each of :data:`MAX_VALUES` runs of ``0 .. n - 1`` (``n`` > MAX_VALUES) as
    equal as whole places allow (a fixed seed: the same places every time)."""
    bounds = np.arange(MAX_VALUES + 1, dtype=np.int64) * n // MAX_VALUES  # run i is bounds[i] .. bounds[i + 1] - 1
    lengths = np.diff(bounds)
    offsets = (np.random.default_rng(n).random(MAX_VALUES) * lengths).astype(np.int64)
    places: NDArray[np.intp] = (bounds[:-1] + np.minimum(offsets, lengths - 1)).astype(np.intp)
    places.flags.writeable = False
    return places


def _percentiles(flat: NDArray[Any]) -> list[float]:
    """The :data:`QUANTILES` with linear interpolation (numpy's default method), from one partial sort."""
    n = flat.size
    pos = QUANTILES * (n - 1)
    lower = np.floor(pos).astype(np.intp)
    upper = np.minimum(lower + 1, n - 1)
    part = np.partition(flat, np.unique(np.concatenate([lower, upper])))
    a = part[lower].astype(np.float64)
    b = part[upper].astype(np.float64)
    return [float(v) for v in a + (b - a) * (pos - lower)]


def pixel_stats(
    values: NDArray[Any],
    *,
    bits_stored: int | None = None,
    monochrome1: bool = False,
    hounsfield: bool = False,
    rescale: tuple[float, float] | None = None,
) -> PixelStats | None:
    """Statistics of an image or volume.

    Args:
        values: pixel values after the modality LUT, any shape (2D image, frames, 3D volume, RGB); or the
            stored values, with ``rescale``.
        bits_stored: bit depth before rescale; the top of its range counts as saturated.
        monochrome1: invert (min+max-x) so that larger means brighter, as in MONOCHROME2.
        hounsfield: values are CT Hounsfield units; air is < -900 HU. Otherwise air is the lowest 1 %
            of the value range.
        rescale: (slope, intercept) still to apply to ``values`` (``values * slope + intercept`` in float64,
            as pydicom's modality LUT computes it).

    Integer pixels stay integers until the end (partitioning and comparing them is cheaper than converting every
    value to float first), and floating-point pixels that are all whole numbers of a 16-bit range are taken as
    those integers (a decoder's float32 of integer stored values); only floating-point pixels can hold NaN or
    infinities, so only they are filtered. Integers of at most 16 bits (nearly all medical images) are counted
    instead: one histogram with a bin per integer between the extremes (``np.bincount``) says how often each value
    occurs, in order, from which the percentiles, the counts above or below a threshold, the mean and the standard
    deviation follow exactly as from the sorted values; a rescale is applied to the bins' values (it keeps or
    reverses their order). Where the extremes lie too far apart for a histogram to be cheap (more than
    :data:`MAX_BINS_PER_VALUE` bins a value) the values are sorted instead (a radix sort). Both give the results
    of the partition below; only the mean and standard deviation may differ in the last digits (a floating-point
    sum in another order).
    """
    flat = _subsample(np.asarray(values))
    if flat.dtype.kind == "f" and flat.size:
        flat = _as_small_integers(flat)
    if flat.dtype.kind in "iu" and flat.dtype.itemsize <= 2 and flat.size:
        counted = _histogram(flat)
        if counted is not None:
            return _counted_stats(*counted, rescale, bits_stored, monochrome1, hounsfield)
        ordered: NDArray[Any] = np.sort(flat, kind="stable")
        if rescale is not None:
            ordered = ordered.astype(np.float64) * rescale[0]
            ordered += rescale[1]
            if rescale[0] < 0:
                ordered = ordered[::-1]
        return _sorted_stats(ordered, bits_stored, monochrome1, hounsfield)
    if rescale is not None:
        flat = flat.astype(np.float64) * rescale[0]
        flat += rescale[1]
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    elif flat.dtype.kind not in "iub":
        flat = flat.astype(np.float64)
    if flat.size == 0:
        return None
    if flat.dtype.kind == "b":
        flat = flat.astype(np.uint8)
    lo, hi = float(flat.min()), float(flat.max())
    if monochrome1:
        # Invert about the stored range (2^bits - 1) when known, so a MONOCHROME1 image and its
        # MONOCHROME2 twin give the same statistics; else about the observed range.
        top = _mono1_top(bits_stored, lo, hi)
        flat = top - flat.astype(np.float64)
        lo, hi = top - hi, top - lo
    p01, p05, p50, p95, p99 = _percentiles(flat)
    span = hi - lo
    n = flat.size
    # Saturated: pixels clipped at the top of the stored range (or at the brightest value when the
    # bit depth is unknown or values were rescaled) — burnt-out film, clipped detectors.
    top = _saturation_top(bits_stored, hounsfield, hi)
    saturated = float(np.count_nonzero(flat >= top)) / n if span > 0 else 1.0
    air_cutoff = -900.0 if hounsfield else lo + 0.01 * span  # CT air is below -900 HU
    air: float
    if hounsfield:
        air = float(np.count_nonzero(flat < air_cutoff)) / n
    else:
        air = float(np.count_nonzero(flat <= air_cutoff)) / n if span > 0 else 1.0
    mean = float(flat.mean(dtype=np.float64))
    std = float(flat.std(dtype=np.float64))
    return PixelStats(p01, p05, p50, p95, p99, mean, std, saturated, air)


def _mono1_top(bits_stored: int | None, lo: float, hi: float) -> float:
    return float(2**bits_stored - 1) if bits_stored and lo >= 0 and hi <= 2**bits_stored - 1 else lo + hi


def _saturation_top(bits_stored: int | None, hounsfield: bool, hi: float) -> float:
    return float(2**bits_stored - 1) if bits_stored and not hounsfield and hi <= 2**bits_stored - 1 else hi


def _sorted_stats(
    ordered: NDArray[Any], bits_stored: int | None, monochrome1: bool, hounsfield: bool
) -> PixelStats:
    """:func:`pixel_stats` of values already in ascending order (the same rules, read off the order)."""
    n = ordered.size
    lo, hi = float(ordered[0]), float(ordered[-1])
    if monochrome1:
        top = _mono1_top(bits_stored, lo, hi)
        ordered = (top - ordered.astype(np.float64))[::-1]
        lo, hi = top - hi, top - lo
    pos = QUANTILES * (n - 1)
    lower = np.floor(pos).astype(np.intp)
    upper = np.minimum(lower + 1, n - 1)
    a = ordered[lower].astype(np.float64)
    b = ordered[upper].astype(np.float64)
    p01, p05, p50, p95, p99 = (float(v) for v in a + (b - a) * (pos - lower))
    span = hi - lo
    top = _saturation_top(bits_stored, hounsfield, hi)
    saturated = float(n - np.searchsorted(ordered, top, "left")) / n if span > 0 else 1.0
    air: float
    if hounsfield:
        air = float(np.searchsorted(ordered, -900.0, "left")) / n
    else:
        air = float(np.searchsorted(ordered, lo + 0.01 * span, "right")) / n if span > 0 else 1.0
    mean = float(ordered.mean(dtype=np.float64))
    std = float(ordered.std(dtype=np.float64))
    return PixelStats(p01, p05, p50, p95, p99, mean, std, saturated, air)


def _as_small_integers(flat: NDArray[Any]) -> NDArray[Any]:
    """Floating-point pixels that are all whole numbers of a 16-bit range (what a decoder gives for integer
    stored values: a modality LUT with an integer slope and intercept, a NIfTI of integer values stored as
    float) as those integers — ``uint16`` or ``int16`` — so that they are counted instead of sorted, with the
    same statistics (each integer is exact in float64); else ``flat`` itself (non-finite values, fractions,
    a wider range)."""
    lo, hi = flat.min(), flat.max()  # NaN where any is NaN: no comparison below holds
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return flat
    if lo >= 0 and hi <= np.iinfo(np.uint16).max:
        small: type[np.integer[Any]] = np.uint16
    elif lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
        small = np.int16
    else:
        return flat
    if not np.array_equal(flat, np.rint(flat)):
        return flat
    return flat.astype(small)


def _histogram(flat: NDArray[Any]) -> tuple[NDArray[np.int64], NDArray[np.intp]] | None:
    """Every integer from the least to the greatest of integer pixels (at most 16 bits) and how often each
    occurs (zero for many); None where that range would need more than :data:`MAX_BINS_PER_VALUE` bins a value."""
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo + 1 > MAX_BINS_PER_VALUE * flat.size:
        return None
    if not flat.dtype.isnative:
        flat = flat.astype(flat.dtype.newbyteorder("="))
    if flat.dtype.kind == "i":  # the unsigned twin that keeps the order (flip the sign bit): no overflow below
        bias = 1 << (8 * flat.dtype.itemsize - 1)
        shifted = flat.view(np.dtype(f"u{flat.dtype.itemsize}")) ^ np.array(bias, dtype=f"u{flat.dtype.itemsize}")
        offsets = shifted - np.array(lo + bias, dtype=shifted.dtype)
    else:
        offsets = flat - np.array(lo, dtype=flat.dtype)
    return np.arange(lo, hi + 1, dtype=np.int64), np.bincount(offsets, minlength=hi - lo + 1)


def _counted_stats(
    values: NDArray[np.int64], counts: NDArray[np.intp], rescale: tuple[float, float] | None,
    bits_stored: int | None, monochrome1: bool, hounsfield: bool,
) -> PixelStats:
    """:func:`_sorted_stats` of the values that ``values`` (ascending, distinct; the first and last occur) and
    ``counts`` describe: value ``values[j]`` ``counts[j]`` times. Each number is computed from the same float64
    values as there (a value that does not occur is never picked: a rank falls in a bin that holds values)."""
    real = values.astype(np.float64)  # compared and interpolated as float64 there too
    if rescale is not None:  # the same arithmetic per value as on the sorted values
        real *= rescale[0]
        real += rescale[1]
        if rescale[0] < 0:
            real, counts = real[::-1], counts[::-1]
    lo, hi = float(real[0]), float(real[-1])
    if monochrome1:
        top = _mono1_top(bits_stored, lo, hi)
        real, counts = (top - real)[::-1], counts[::-1]
        lo, hi = top - hi, top - lo
    ends = np.cumsum(counts)  # ends[j]: how many values are at or below real[j]
    n = int(ends[-1])
    ranks, fraction = _ranks(n)
    ab = real[np.searchsorted(ends, ranks, "right")]  # the values of the lower and upper ranks
    a, b = ab[: len(QUANTILES)], ab[len(QUANTILES):]
    p01, p05, p50, p95, p99 = (float(v) for v in a + (b - a) * fraction)

    def below(index: int) -> int:  # how many values lie before real[index]
        return int(ends[index - 1]) if index > 0 else 0

    span = hi - lo
    top = _saturation_top(bits_stored, hounsfield, hi)
    saturated = float(n - below(int(np.searchsorted(real, top, "left")))) / n if span > 0 else 1.0
    air: float
    if hounsfield:
        air = float(below(int(np.searchsorted(real, -900.0, "left")))) / n
    else:
        air = float(below(int(np.searchsorted(real, lo + 0.01 * span, "right")))) / n if span > 0 else 1.0
    weights = counts.astype(np.float64)
    # einsum, not np.dot: a dot product of this length goes to a multithreaded BLAS, whose threads then spin for
    # a tenth of a second after each call — in an ingest or serving worker, CPU taken from the next file or the
    # network beside it (about 6 ms a 512 x 512 radiograph); einsum sums in numpy's own loop, in ~40 us
    mean = float(np.einsum("i,i->", weights, real)) / n
    deviation = real - mean
    std = float(np.sqrt(np.einsum("i,i,i->", weights, deviation, deviation) / n))
    return PixelStats(p01, p05, p50, p95, p99, mean, std, saturated, air)


@functools.lru_cache(maxsize=64)
def _ranks(n: int) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """The ranks of the values below and above each of the :data:`QUANTILES` of ``n`` values (lower ones
    first), and how far between them each quantile lies (numpy's linear interpolation)."""
    pos = QUANTILES * (n - 1)
    lower = np.floor(pos).astype(np.intp)
    upper = np.minimum(lower + 1, n - 1)
    return np.concatenate([lower, upper]), pos - lower
