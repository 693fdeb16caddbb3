"""The visual review gallery of an evaluation: each case drawn with its truth and prediction, worst first.

``medcycle evaluate`` stores, next to its report, one entry per evaluated case (:func:`case_entries`): the
key, split, truth, prediction, per-case metrics, factors and a PNG preview (an object by digest) of the
network's input as training windowed it — the middle slice of a volume — with the ground-truth mask's contour
in green and the prediction's in red (segmentation), enlarged so thin contours can be seen. At most
``MAX_CASES`` cases are drawn (the worst by the default sort), so a large test set does not store thousands
of images.

Per-case metrics: segmentation has ``dice``, ``hd95``, ``asd``, ``nsd`` (:mod:`medcycle.evaluation.surface`);
classification has ``p_true`` (the probability given to the true class) and ``error`` (1 - ``p_true``).
:func:`worst_first` orders the cases by one of them, the worse end first (undefined values last).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from medcycle.errors import ValidationFailed
from medcycle.evaluation.surface import SEGMENTATION

if TYPE_CHECKING:
    from medcycle.evaluation.predict import CasePrediction
    from medcycle.objects.base import ObjectStore

MAX_CASES = 200
PREVIEW_SIDE = 256
TRUTH = (64, 220, 96)
PREDICTION = (255, 64, 64)
CLASSIFICATION_METRICS = {"error": False, "p_true": True}  # name → higher is better
VERDICTS = ("ok", "model_error", "label_error", "unsure")


def _plane(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The middle slice of a (channel-first) image or mask, as rows × columns."""
    a = np.asarray(arr)
    while a.ndim > 2:
        a = a[a.shape[0] // 2] if a.shape[0] > 1 else a[0]
    return a


def preview(image: npt.NDArray[Any], *, truth: npt.NDArray[Any] | None = None,
            pred: npt.NDArray[Any] | None = None) -> bytes:
    """PNG of ``image`` (values in [0, 1]) with the contours of ``truth`` (green) and ``pred`` (red)."""
    from PIL import Image

    from medcycle.monitoring.overlay import contour

    gray = (np.clip(_plane(image).astype(np.float64), 0.0, 1.0) * 255).astype(np.uint8)
    factor = max(1, PREVIEW_SIDE // max(gray.shape))

    def big(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.kron(a, np.ones((factor, factor), dtype=a.dtype)) if factor > 1 else a

    rgb = np.stack([big(gray)] * 3, axis=-1)
    for mask, colour in ((truth, TRUTH), (pred, PREDICTION)):
        if mask is not None:
            edge = contour(big(_plane(mask).astype(bool)))
            rgb[edge] = colour
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "PNG")
    return buf.getvalue()


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def case_entries(preds: Sequence[CasePrediction], classes: Sequence[str], *, segmentation: bool, threshold: float,
                 positive: int, objects: ObjectStore, limit: int = MAX_CASES,
                 previews: Callable[[list[str]], dict[str, bytes]] | None = None) -> list[dict[str, Any]]:
    """The gallery's entries (previews stored in ``objects``), the worst ``limit`` cases by the default sort.

    ``previews`` draws the chosen cases (keys → PNG) once they are chosen, so only ``limit`` images are ever
    held; without it the predictions' own ``preview`` is used."""
    rows: list[dict[str, Any]] = []
    for p in preds:
        entry: dict[str, Any] = {"key": p.key, "split": p.split, "factors": p.factors}
        if segmentation:
            entry["truth"], entry["predicted"] = "mask", "mask"
            entry["metrics"] = {k: _num(v) for k, v in p.metrics.items()}
            entry["spacing"] = list(p.spacing) if p.spacing is not None else None
        else:
            truth = classes[p.label] if 0 <= p.label < len(classes) else str(p.label)
            if len(classes) > 2:
                got = classes[int(np.argmax(p.probs))]
            else:
                got = classes[positive] if p.probs[positive] >= threshold else classes[1 - positive]
            p_true = float(p.probs[p.label]) if 0 <= p.label < len(p.probs) else math.nan
            entry.update({"truth": truth, "predicted": got, "probabilities": {c: round(float(v), 6) for c, v in
                                                                               zip(classes, p.probs, strict=True)},
                          "metrics": {"p_true": _num(p_true), "error": _num(1.0 - p_true)}})
        entry["_preview"] = p.preview
        rows.append(entry)
    rows = worst_first(rows, default_metric(segmentation))[:limit]
    drawn = previews([e["key"] for e in rows]) if previews is not None and rows else {}
    for entry in rows:
        png = drawn.get(entry["key"]) if previews is not None else entry["_preview"]
        del entry["_preview"]
        entry["preview"] = objects.put(png).digest if png else None
    return rows


def default_metric(segmentation: bool) -> str:
    return "dice" if segmentation else "error"


def metric_names(segmentation: bool) -> list[str]:
    return list(SEGMENTATION) if segmentation else list(CLASSIFICATION_METRICS)


def higher_is_better(metric: str) -> bool:
    if metric in SEGMENTATION:
        return SEGMENTATION[metric].higher_is_better
    if metric in CLASSIFICATION_METRICS:
        return CLASSIFICATION_METRICS[metric]
    raise ValidationFailed(f"unknown per-case metric {metric!r}",
                           hint=f"Sort by one of {', '.join([*SEGMENTATION, *CLASSIFICATION_METRICS])}.")


def worst_first(entries: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """``entries`` ordered by ``metric``, the worst first; cases where it is undefined come last."""
    higher = higher_is_better(metric)

    def key(e: dict[str, Any]) -> tuple[int, float, str]:
        v = (e.get("metrics") or {}).get(metric)
        if v is None:
            return (1, 0.0, e["key"])
        return (0, float(v) if higher else -float(v), e["key"])

    return sorted(entries, key=key)
