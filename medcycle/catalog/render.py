"""Display renderings of stored images: window/level presets for CT, correct MONOCHROME1, thumbnails.

``render_png(data, fmt)`` turns an object's bytes (DICOM, NIfTI or PNG) into an 8-bit PNG of its
middle slice/frame: modality LUT first (CT in HU), then a window — a named preset, the file's own
window, or the 1st–99th percentiles — then MONOCHROME1 is inverted so bone is white as on a viewer.
"""

from __future__ import annotations

import gzip
import io
import warnings
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medcycle.errors import UsageError


class Preset(StrEnum):
    AUTO = "auto"  # the file's window, else 1st-99th percentile
    LUNG = "lung"
    MEDIASTINUM = "mediastinum"
    BONE = "bone"
    BRAIN = "brain"
    ABDOMEN = "abdomen"


WINDOWS: dict[Preset, tuple[float, float]] = {  # (center, width) in HU
    Preset.LUNG: (-600.0, 1500.0),
    Preset.MEDIASTINUM: (40.0, 400.0),
    Preset.BONE: (400.0, 1800.0),
    Preset.BRAIN: (40.0, 80.0),
    Preset.ABDOMEN: (60.0, 400.0),
}


@dataclass(frozen=True, slots=True)
class Slice:
    values: NDArray[np.float64]  # 2D (or HxWx3 for colour), after the modality LUT
    monochrome1: bool
    window: tuple[float, float] | None  # from the file, if any
    color: bool


def parse_preset(value: str | None) -> Preset:
    try:
        return Preset(value or "auto")
    except ValueError:
        raise UsageError(
            f"unknown window preset {value!r}", hint=f"Use one of: {', '.join(p.value for p in Preset)}."
        ) from None


def _middle(arr: NDArray[Any], color: bool) -> NDArray[Any]:
    spatial = arr.ndim - (1 if color else 0)
    while spatial > 2:
        arr = arr[arr.shape[0] // 2]
        spatial -= 1
    return arr


def _dicom_slice(data: bytes) -> Slice:
    import pydicom
    from pydicom.pixels.processing import apply_modality_lut

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        arr = ds.pixel_array
        color = int(ds.get("SamplesPerPixel", 1)) > 1
        if not color:
            arr = apply_modality_lut(arr, ds)
    window = None
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        c = center[0] if isinstance(center, list | pydicom.multival.MultiValue) else center
        w = width[0] if isinstance(width, list | pydicom.multival.MultiValue) else width
        try:
            window = (float(c), float(w))
        except (TypeError, ValueError):
            window = None
    return Slice(
        _middle(np.asarray(arr, dtype=np.float64), color),
        ds.get("PhotometricInterpretation") == "MONOCHROME1",
        window,
        color,
    )


def _nifti_slice(data: bytes) -> Slice:
    import nibabel as nib

    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    img: Any = nib.Nifti1Image.from_bytes(raw)
    arr = np.asanyarray(img.dataobj, dtype=np.float64)
    while arr.ndim > 3:
        arr = arr[..., 0]
    if arr.ndim == 3:
        arr = arr[:, :, arr.shape[2] // 2]
    return Slice(np.rot90(arr), False, None, False)


def _png_slice(data: bytes) -> Slice:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img, dtype=np.float64)
    return Slice(arr, False, None, arr.ndim == 3)


def load_slice(data: bytes, fmt: str) -> Slice:
    if fmt == "dicom":
        return _dicom_slice(data)
    if fmt == "nifti":
        return _nifti_slice(data)
    if fmt == "png":
        return _png_slice(data)
    raise UsageError(f"cannot render format {fmt!r}")


def to_uint8(s: Slice, preset: Preset = Preset.AUTO) -> NDArray[np.uint8]:
    """Window the slice into 0-255; MONOCHROME1 comes out inverted (as a viewer shows it)."""
    v = s.values
    if s.color:
        lo, hi = float(np.min(v)), float(np.max(v))
    elif preset != Preset.AUTO:
        c, w = WINDOWS[preset]
        lo, hi = c - w / 2, c + w / 2
    elif s.window is not None and s.window[1] > 0:
        lo, hi = s.window[0] - s.window[1] / 2, s.window[0] + s.window[1] / 2
    else:
        lo, hi = (float(x) for x in np.percentile(v, [1, 99]))
    out = np.clip((v - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if s.monochrome1 and not s.color:
        out = 1.0 - out
    return np.asarray(np.round(out * 255), dtype=np.uint8)


def render_png(data: bytes, fmt: str, *, preset: Preset = Preset.AUTO, max_size: int = 256) -> bytes:
    """A PNG thumbnail (longest side ``max_size``) of the middle slice."""
    from PIL import Image

    img = Image.fromarray(to_uint8(load_slice(data, fmt), preset))
    img.thumbnail((max_size, max_size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
