"""Render what ``run.log_image`` is given into one PNG: 2D images as they are, 3D volumes as slices and a MIP.

Inputs are NumPy arrays, torch tensors or PIL images:

- 2D: ``(H, W)``, ``(H, W, 3|4)`` or ``(1|3, H, W)`` (channel-first, as torch holds them);
- 3D: ``(D, H, W)`` or ``(1, D, H, W)``; ``axis`` says which axis the slices cut (0 = the first).

A volume becomes a horizontal strip of ``slices`` evenly spaced slices (or, with a mask, the slices where
the mask is largest) followed by the maximum-intensity projection along ``axis``. Intensities are mapped
to 8 bits through ``window=(low, high)`` or, by default, the 0.5–99.5 percentiles. A ``mask`` of the same
spatial shape (integer labels; 0 is background) is drawn as coloured contours, one colour per label.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medcycle.errors import UsageError

PALETTE = ((255, 64, 64), (64, 220, 64), (64, 140, 255), (255, 210, 0), (255, 64, 255), (0, 230, 230))
GAP = 4
MAX_PIXELS = 64 * 1024 * 1024


def to_array(image: Any) -> NDArray[Any]:
    """A NumPy array of ``image`` (torch tensors are detached and moved to the CPU)."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    elif hasattr(image, "getbands"):  # PIL
        image = np.asarray(image)
    arr = np.asarray(image)
    if arr.dtype == object or arr.size == 0:
        raise UsageError(f"cannot log an image of dtype {arr.dtype} and shape {arr.shape}",
                         hint="Pass a numeric NumPy array, torch tensor or PIL image.")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr


def _squeeze_channels(arr: NDArray[Any]) -> NDArray[Any]:
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _is_color(arr: NDArray[Any]) -> bool:
    return arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4


def to_uint8(arr: NDArray[Any], window: tuple[float, float] | None = None) -> NDArray[np.uint8]:
    """Map intensities to 0–255 through ``window`` or the 0.5–99.5 percentiles (NaN → 0)."""
    if arr.dtype == np.uint8 and window is None:
        return arr
    data = arr.astype(np.float64)
    finite = data[np.isfinite(data)]
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
    elif finite.size:
        lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    else:
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + 1.0
    scaled = np.clip((np.nan_to_num(data, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def contour(mask: NDArray[Any]) -> NDArray[np.bool_]:
    """Pixels of ``mask`` (boolean, 2D) that touch a pixel outside it (4-neighbourhood)."""
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    inner[0, :] = inner[-1, :] = False
    inner[:, 0] = inner[:, -1] = False
    edge: NDArray[np.bool_] = m & ~inner
    return edge


def overlay(gray: NDArray[np.uint8], mask: NDArray[Any] | None) -> NDArray[np.uint8]:
    """RGB of ``gray`` (2D) or an RGB image, with the contour of each label of ``mask`` drawn over it."""
    rgb = np.repeat(gray[..., None], 3, axis=2) if gray.ndim == 2 else gray[..., :3].copy()
    if mask is None:
        return rgb
    for i, label in enumerate(int(v) for v in np.unique(mask) if v != 0):
        rgb[contour(mask == label)] = PALETTE[i % len(PALETTE)]
    return rgb


def _pick_slices(depth: int, n: int, mask: NDArray[Any] | None) -> list[int]:
    n = max(1, min(n, depth))
    if mask is not None:
        area = (mask != 0).reshape(depth, -1).sum(axis=1)
        if area.any():
            best = [int(i) for i in np.argsort(-area, kind="stable")[:n] if area[i] > 0]
            return sorted(best)
    return sorted({min(depth - 1, round((i + 1) * depth / (n + 1))) for i in range(n)})


def _strip(panels: list[NDArray[np.uint8]]) -> NDArray[np.uint8]:
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + GAP * (len(panels) - 1)
    out = np.zeros((height, width, 3), dtype=np.uint8)
    x = 0
    for p in panels:
        out[: p.shape[0], x: x + p.shape[1]] = p
        x += p.shape[1] + GAP
    return out


def render(image: Any, *, mask: Any = None, slices: int = 3, axis: int = 0,
           window: tuple[float, float] | None = None) -> tuple[bytes, dict[str, Any]]:
    """PNG bytes of ``image`` (see the module doc) and a description of the panels it holds."""
    arr = _squeeze_channels(to_array(image))
    m = None if mask is None else _squeeze_channels(to_array(mask))
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and not _is_color(arr) and (m is None or m.ndim == 2):
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)  # channel-first 2D
    if arr.size > MAX_PIXELS:
        raise UsageError(f"an image of shape {arr.shape} is too large to log",
                         hint="Log a crop or a downsampled copy, or store the volume with run.log_artifact.")
    if arr.ndim == 2 or _is_color(arr):
        if m is not None and m.shape != arr.shape[:2]:
            raise UsageError(f"mask shape {m.shape} does not match image shape {arr.shape[:2]}")
        pixels = overlay(to_uint8(arr, window), m)
        meta: dict[str, Any] = {"shape": list(arr.shape), "panels": ["image"]}
    elif arr.ndim == 3:
        if not -3 <= axis < 3:
            raise UsageError(f"axis {axis} is not an axis of a 3D volume", hint="Use 0, 1 or 2.")
        vol = np.moveaxis(arr, axis, 0)
        mv = None
        if m is not None:
            if m.shape != arr.shape:
                raise UsageError(f"mask shape {m.shape} does not match volume shape {arr.shape}")
            mv = np.moveaxis(m, axis, 0)
        lo_hi = window
        if lo_hi is None:
            finite = vol[np.isfinite(vol)] if vol.dtype.kind == "f" else vol
            p = np.percentile(finite, [0.5, 99.5]) if finite.size else np.array([0.0, 1.0])
            lo_hi = (float(p[0]), float(p[1]))
        picks = _pick_slices(vol.shape[0], slices, mv)
        panels = [overlay(to_uint8(vol[i], lo_hi), None if mv is None else mv[i]) for i in picks]
        mip_mask = None if mv is None else mv.max(axis=0)
        panels.append(overlay(to_uint8(np.nanmax(vol, axis=0) if vol.dtype.kind == "f" else vol.max(axis=0), lo_hi),
                              mip_mask))
        pixels = _strip(panels)
        meta = {"shape": list(arr.shape), "axis": axis, "panels": [f"slice {i}" for i in picks] + ["MIP"]}
    else:
        raise UsageError(f"cannot log an image of shape {arr.shape}",
                         hint="Pass a 2D image (H, W[, C]) or a 3D volume (D, H, W).")
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
    meta["mask"] = m is not None
    meta["width"], meta["height"] = int(pixels.shape[1]), int(pixels.shape[0])
    return buf.getvalue(), meta
