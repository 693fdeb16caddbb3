"""What the prediction log keeps of an input and an output — small, numeric, and free of patient data.

Serving calls these while it still holds the decoded image and the model's outputs, and puts the results
in a :class:`medcycle.monitoring.log.PredictionRecord`:

* :func:`header_fields` — an allow-list of acquisition fields (device, modality, body part, geometry).
  Names, ids, dates, UIDs, free text and anything not on the list are dropped, so a whole DICOM header can
  be handed over safely.
* :func:`image_statistics` — :func:`medcycle.catalog.pixels.pixel_stats` (after the modality LUT,
  MONOCHROME1 inverted) plus two texture measures on the central :data:`TEXTURE_SIDE` × :data:`TEXTURE_SIDE`
  pixels of the middle slice (at its own resolution), windowed to their 1st–99th percentiles: ``noise`` (the
  standard deviation of what a 1-pixel Gaussian removes) and ``edges`` (the mean gradient magnitude). A
  detector recalibrated or replaced moves the percentiles; a blurring reconstruction or a noisier detector
  moves the texture measures. The central window bounds their cost (a 3000 × 3000 radiograph costs what a
  256 × 256 one does, not 140 times more) while keeping noise and sharpness at the detector's own pixel
  scale, which averaging the image down would hide; the percentiles are those of every pixel.
* :func:`mask_summary` — the fraction of the image a mask covers and its number of connected components.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from medcycle.catalog.pixels import pixel_stats
from medcycle.training.order import order_statistics

# DICOM keyword → the log's field name. Acquisition facts only: nothing here identifies a patient.
HEADER_FIELDS: dict[str, str] = {
    "Modality": "modality",
    "BodyPartExamined": "body_part",
    "ViewPosition": "view_position",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "device_model",
    "PhotometricInterpretation": "photometric",
    "SOPClassUID": "sop_class_uid",  # a class of object (e.g. CT Image Storage), not an instance
    "ImageType": "image_type",
    "Rows": "rows",
    "Columns": "columns",
    "NumberOfFrames": "frames",
    "BitsStored": "bits_stored",
    "PixelSpacing": "pixel_spacing_mm",
    "ImagerPixelSpacing": "imager_pixel_spacing_mm",
    "SliceThickness": "slice_thickness_mm",
    "KVP": "kvp",
    "ConvolutionKernel": "kernel",
    "RescaleSlope": "rescale_slope",
    "RescaleIntercept": "rescale_intercept",
    "SoftwareVersions": "software_versions",
}
FIELD_NAMES = frozenset(HEADER_FIELDS.values())
MAX_TEXT = 64
#: The texture measures are taken on at most this many pixels a side: the central window of a larger plane.
TEXTURE_SIDE = 256
STAT_KEYS = ("p01", "p05", "p50", "p95", "p99", "mean", "std", "saturated_fraction", "air_fraction", "noise",
             "edges")


def _plain(value: Any) -> Any:
    """A header value as JSON: numbers stay numbers, multi-values become lists, text is trimmed."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        return int(number) if number.is_integer() and isinstance(value, int | np.integer) else number
    if isinstance(value, str | bytes):
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        text = text.strip()
        try:
            number = float(text)
        except ValueError:
            return text[:MAX_TEXT] or None
        return number if np.isfinite(number) else None
    if hasattr(value, "__iter__"):
        items = [_plain(v) for v in value]
        return [v for v in items if v is not None][:8] or None
    return _plain(str(value))


def header_fields(header: Any) -> dict[str, Any]:
    """The allow-listed acquisition fields of ``header`` (a pydicom Dataset, or a mapping by DICOM keyword
    or by the log's own field names), as JSON values. Everything else is dropped."""
    out: dict[str, Any] = {}
    if header is None:
        return out
    for keyword, name in HEADER_FIELDS.items():
        mapping = isinstance(header, Mapping)
        value = header.get(keyword, header.get(name)) if mapping else getattr(header, keyword, None)
        plain = _plain(value)
        if plain is not None:
            out[name] = plain
    return out


def central_window(plane: npt.NDArray[Any], side: int = TEXTURE_SIDE) -> npt.NDArray[Any]:
    """The central ``side`` pixels of each axis of ``plane`` longer than that (a view)."""
    index = tuple(slice((n - side) // 2, (n - side) // 2 + side) if n > side else slice(None) for n in plane.shape)
    return plane[index]


def _plane(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The middle plane (a view where possible), colour averaged to gray; in its own dtype, or float64 for RGB."""
    a = np.asarray(values)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].mean(axis=-1)
    while a.ndim > 2:
        a = a[a.shape[0] // 2]
    return a


def _working_dtype(dtype: np.dtype[Any]) -> type[np.floating[Any]]:
    """float32 where it holds every value exactly (float32 and smaller floats, integers of at most 16 bits),
    else float64: the percentiles are then those of the values themselves."""
    if dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize <= 2) or (dtype.kind == "f" and dtype.itemsize <= 4):
        return np.float32
    return np.float64


def _central_gradient(w: npt.NDArray[Any], axis: int, out: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``np.gradient(w, axis=axis)`` (unit spacing, first-order edges) into ``out``, by slicing."""
    wv, ov = np.moveaxis(w, axis, 0), np.moveaxis(out, axis, 0)
    np.subtract(wv[2:], wv[:-2], out=ov[1:-1])
    ov[1:-1] *= 0.5
    np.subtract(wv[1], wv[0], out=ov[0])
    np.subtract(wv[-1], wv[-2], out=ov[-1])
    return out


def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> npt.NDArray[np.float64]:
    """scipy.ndimage's Gaussian kernel (radius ``int(truncate * sigma + 0.5)``, weights summing to 1)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k: npt.NDArray[np.float64] = np.exp(-0.5 / sigma**2 * x**2)
    k /= k.sum()
    return k


def _smooth(w: npt.NDArray[Any], sigma: float = 1.0) -> npt.NDArray[Any]:
    """``scipy.ndimage.gaussian_filter(w, sigma)`` (``mode="reflect"``) of a 2D array in its own precision, as
    two separable passes of symmetric pairs of shifted slices (faster than scipy on float32 images)."""
    k = _gaussian_kernel(sigma).astype(w.dtype)
    r = k.size // 2
    out = w
    for axis in (0, 1):
        n = out.shape[axis]
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        p = np.moveaxis(np.pad(out, pad, mode="symmetric"), axis, 0)  # numpy's symmetric is scipy's reflect
        res = p[r:r + n] * k[r]
        tmp = np.empty_like(res)
        for i in range(1, r + 1):
            np.add(p[r - i:r - i + n], p[r + i:r + i + n], out=tmp)
            tmp *= k[r + i]
            res += tmp
        out = np.moveaxis(res, 0, axis)
    return np.ascontiguousarray(out)


def _percentiles_1_99(flat: npt.NDArray[Any]) -> tuple[float, float]:
    """``np.percentile(flat, [1, 99])`` (linear interpolation, the same arithmetic) from one partial selection."""
    n = flat.size
    pos = np.array([0.01, 0.99]) * (n - 1)  # numpy's virtual indices: q / 100 * (n - 1)
    below = np.floor(pos).astype(np.intp)
    above = np.minimum(below + 1, n - 1)
    values = order_statistics(flat, [*below, *above]).astype(np.float64)
    a, b, t = values[:2], values[2:], pos - below
    diff = b - a
    lerp = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)  # numpy's _lerp
    return float(lerp[0]), float(lerp[1])


def texture(values: npt.NDArray[Any]) -> tuple[float, float]:
    """``(noise, edges)`` of the middle plane's :func:`central_window`, windowed to its 1st-99th percentiles
    (see the module docstring).

    Non-finite values count as 0. Computed in float32 where the pixels fit it exactly (float32 images, integers
    of up to 16 bits), with one partial selection for the percentiles, the Gaussian as separable shifted slices
    and the gradient by slicing; the results are those of the float64 definition (``np.percentile``,
    ``scipy.ndimage.gaussian_filter``, ``np.gradient``, ``np.hypot``) to about 1e-6 relative.
    """
    plane = _plane(values)
    if plane.ndim != 2 or min(plane.shape) < 4:
        return 0.0, 0.0
    plane = central_window(plane)
    a = np.array(plane, dtype=_working_dtype(plane.dtype))  # a copy: the window is computed in place
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        a[~np.isfinite(a)] = 0.0
    lo, hi = _percentiles_1_99(a.reshape(-1))
    if hi <= lo:
        return 0.0, 0.0
    w = a
    w -= a.dtype.type(lo)
    w /= a.dtype.type(hi - lo)
    np.clip(w, 0.0, 1.0, out=w)
    residual = _smooth(w)
    np.subtract(w, residual, out=residual)
    noise = float(np.std(residual))
    gy = _central_gradient(w, 0, residual)  # the residual is no longer needed
    gx = _central_gradient(w, 1, np.empty_like(w))
    gx *= gx
    gy *= gy
    gx += gy
    np.sqrt(gx, out=gx)  # hypot(gx, gy): the gradients are at most 1, nothing to overflow
    return noise, float(np.mean(gx))


def image_statistics(values: npt.ArrayLike, *, bits_stored: int | None = None, monochrome1: bool = False,
                     hounsfield: bool = False) -> dict[str, float]:
    """The input statistics the log keeps (:data:`STAT_KEYS`), from pixel values after the modality LUT.

    Pass raw MONOCHROME1 values with ``monochrome1=True`` (they are inverted, as at ingest); values already
    inverted (as :func:`medcycle.training.data.read_dicom` returns them) with ``monochrome1=False``.
    """
    arr = np.asarray(values)
    stats = pixel_stats(arr, bits_stored=bits_stored, monochrome1=monochrome1, hounsfield=hounsfield)
    if stats is None:
        return {}
    out = {k: float(v) for k, v in stats.to_dict().items()}
    out["noise"], out["edges"] = texture(arr)
    return out


def mask_summary(mask: npt.ArrayLike) -> tuple[float, int]:
    """``(area, components)``: the fraction of pixels (voxels) in the mask and its connected components."""
    from scipy.ndimage import label

    m = np.asarray(mask) > 0
    if m.size == 0:
        return 0.0, 0
    _labels, n = label(m)
    return float(m.mean()), int(n)
