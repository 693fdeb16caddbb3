"""What the prediction log keeps of an input and an output — small, numeric, and free of patient data.

Serving calls these while it still holds the decoded image and the model's outputs, and puts the results
in a :class:`medcycle.monitoring.log.PredictionRecord`:

* :func:`header_fields` — an allow-list of acquisition fields (device, modality, body part, geometry).
  Names, ids, dates, UIDs, free text and anything not on the list are dropped, so a whole DICOM header can
  be handed over safely.
* :func:`image_statistics` — :func:`medcycle.catalog.pixels.pixel_stats` (after the modality LUT,
  MONOCHROME1 inverted) plus two texture measures on the middle slice windowed to its 1st–99th
  percentiles: ``noise`` (the standard deviation of what a 1-pixel Gaussian removes) and ``edges`` (the
  mean gradient magnitude). A detector recalibrated or replaced moves the percentiles; a blurring
  reconstruction or a noisier detector moves the texture measures.
* :func:`mask_summary` — the fraction of the image a mask covers and its number of connected components.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from medcycle.catalog.pixels import pixel_stats

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


def _plane(values: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].mean(axis=-1)
    while a.ndim > 2:
        a = a[a.shape[0] // 2]
    return a


def texture(values: npt.NDArray[Any]) -> tuple[float, float]:
    """``(noise, edges)`` of the middle plane windowed to its 1st-99th percentiles (see the module docstring)."""
    from scipy.ndimage import gaussian_filter

    a = _plane(values)
    if a.ndim != 2 or min(a.shape) < 4:
        return 0.0, 0.0
    a = np.where(np.isfinite(a), a, 0.0)
    lo, hi = np.percentile(a, [1, 99])
    if hi <= lo:
        return 0.0, 0.0
    w = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
    noise = float(np.std(w - gaussian_filter(w, 1.0)))
    gy, gx = np.gradient(w)
    return noise, float(np.mean(np.hypot(gx, gy)))


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
