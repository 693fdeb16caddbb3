"""From network outputs to findings: pure functions of arrays, testable without a model.

* Classification: class probabilities per image; a case's finding is the image with the highest probability
  of the positive class (binary: the last class, positive from ``threshold``, default 0.5) or, with more
  classes, the most probable class of the mean probabilities.
* Segmentation: logits are resized to the input's grid (bilinear / trilinear) before the argmax, so the mask
  lies on the original pixels; per class: voxels, connected components (face connectivity), area in mm²
  (one image) or volume in mm³ (a volume or a series), and the fraction of the image it covers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import torch

U8 = NDArray[np.uint8]
DEFAULT_THRESHOLD = 0.5


def _r(x: float) -> float:
    return round(float(x), 6)


def classification_finding(probs: Sequence[Sequence[float]], classes: Sequence[str],
                           threshold: float | None = None) -> dict[str, Any]:
    """The finding of a case from its images' class probabilities (``(images, classes)``)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(classes) or p.shape[0] == 0:
        raise ValueError(f"probabilities of shape {p.shape} do not fit {len(classes)} classes")
    if len(classes) == 2:
        t = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        k = int(np.argmax(p[:, 1]))
        score = float(p[k, 1])
        positive = score >= t
        out: dict[str, Any] = {"class": classes[1] if positive else classes[0], "positive": positive,
                               "positive_class": classes[1], "score": _r(score), "threshold": t}
    else:
        mean = p.mean(axis=0)
        best = int(np.argmax(mean))
        k = int(np.argmax(p[:, best]))
        out = {"class": classes[best], "positive": None, "score": _r(mean[best]), "threshold": None,
               "probabilities": {c: _r(v) for c, v in zip(classes, mean, strict=True)}}
    if p.shape[0] > 1:
        out["image"] = k  # which image (slice) of the case decided it
    return out


def mask_from_logits(logits: torch.Tensor, shape: Sequence[int]) -> U8:
    """Class indices on the grid ``shape`` from logits ``(C, *spatial)`` of the model's input size."""
    import torch
    import torch.nn.functional as F

    target = tuple(int(s) for s in shape)
    x = logits.detach().float()[None]
    if tuple(x.shape[2:]) != target:
        mode = "bilinear" if len(target) == 2 else "trilinear"
        x = F.interpolate(x, size=target, mode=mode, align_corners=False)
    mask: U8 = torch.argmax(x[0], dim=0).to(torch.uint8).cpu().numpy()
    return mask


def measure_mask(mask: NDArray[Any], classes: Sequence[str],
                 spacing: tuple[float, float, float] | None = None) -> dict[str, Any]:
    """Per class (mask value 1…K): voxels, components, area (mm², one image) or volume (mm³), fraction."""
    from scipy import ndimage

    m = np.asarray(mask)
    planar = m.ndim == 2 or (m.ndim == 3 and m.shape[0] == 1)
    out: dict[str, Any] = {}
    total = 0
    components = 0
    for value, name in enumerate(classes, start=1):
        hit = m == value
        voxels = int(hit.sum())
        total += voxels
        count = int(ndimage.label(hit)[1]) if voxels else 0
        components += count
        entry: dict[str, Any] = {"voxels": voxels, "components": count, "fraction": _r(voxels / max(m.size, 1))}
        if spacing is not None and all(math.isfinite(s) and s > 0 for s in spacing):
            dz, dy, dx = spacing
            if planar:
                entry["area_mm2"] = _r(voxels * dy * dx)
            else:
                entry["volume_mm3"] = _r(voxels * dz * dy * dx)
        out[name] = entry
    return {"classes": out, "components": components, "foreground_fraction": _r(total / max(m.size, 1)),
            "found": total > 0, "shape": list(m.shape)}
