"""A prediction drawn for people: the input's middle slice, windowed as a viewer shows it, with the predicted
mask's contour on top (:func:`overlay_png`). Pixels only — no header text is ever drawn.

Inputs and masks are objects (DICOM, NIfTI or PNG, told apart by their bytes). A series stored as one
object per slice is drawn from its middle object; a 3D mask from its middle slice (NIfTI axes ``i, j, k``
are column, row, slice, as medcycle writes them).
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medcycle.errors import ValidationFailed

CONTOUR = (255, 64, 64)
MAX_SIDE = 512


def fmt_of(data: bytes) -> str:
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[:65536], 4096) if data[:2] == b"\x1f\x8b" else data
    if raw[344:348] in {b"n+1\x00", b"ni1\x00"} or (len(raw) >= 348 and int.from_bytes(raw[:4], "little") == 348):
        return "nifti"
    return "dicom"  # DICOM without a preamble; the reader checks strictly


def _mask(data: bytes, shape: tuple[int, int]) -> NDArray[np.bool_]:
    from PIL import Image

    fmt = fmt_of(data)
    arr: NDArray[Any]
    if fmt == "png":
        with Image.open(io.BytesIO(data)) as img:
            arr = np.asarray(img.convert("L"))
    elif fmt == "nifti":
        import nibabel as nib

        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        image: Any = nib.Nifti1Image.from_bytes(raw)
        arr = np.asanyarray(image.dataobj)
        while arr.ndim > 3:
            arr = arr[..., 0]
        arr = arr[:, :, arr.shape[2] // 2].T if arr.ndim == 3 else arr.T
    else:
        import pydicom

        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        arr = np.asarray(ds.pixel_array)
        while arr.ndim > 2:
            arr = arr[arr.shape[0] // 2]
    mask = np.asarray(arr) > 0
    if mask.shape != shape:
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
        mask = np.asarray(resized) > 0
    return mask


def contour(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    from scipy.ndimage import binary_dilation, binary_erosion

    edge = mask & ~binary_erosion(mask)
    return np.asarray(binary_dilation(edge) & mask | edge)


def overlay_png(image: bytes, mask: bytes | None = None, *, max_side: int = MAX_SIDE) -> bytes:
    """PNG of ``image``'s middle slice (windowed), with ``mask``'s contour drawn in red when given."""
    from PIL import Image

    from medcycle.catalog.render import load_slice, to_uint8

    try:
        gray = to_uint8(load_slice(image, fmt_of(image)))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the same answer for the page
        raise ValidationFailed(f"the input cannot be drawn: {type(exc).__name__}",
                               hint="Only DICOM, NIfTI and PNG inputs can be drawn.") from None
    rgb = np.stack([gray] * 3, axis=-1) if gray.ndim == 2 else gray[..., :3]
    if mask is not None:
        try:
            edge = contour(_mask(mask, rgb.shape[:2]))
        except Exception as exc:  # noqa: BLE001
            raise ValidationFailed(f"the mask cannot be drawn: {type(exc).__name__}",
                                   hint="Masks are drawn from PNG, NIfTI or DICOM objects.") from None
        rgb = rgb.copy()
        rgb[edge] = CONTOUR
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    elif max(img.size) < 256:  # small images are enlarged so the contour can be seen
        factor = 256 // max(img.size)
        img = img.resize((img.size[0] * factor, img.size[1] * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
