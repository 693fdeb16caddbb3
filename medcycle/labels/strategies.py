"""The arithmetic of active-learning strategies: per-item uncertainty from probabilities, and core-set picks.

Every function here is plain numpy over what a model returned; none knows about models, items or the
database (:mod:`.active` does the bookkeeping). Probabilities are channel-first: ``(C,)`` for a classifier,
``(C, H, W)`` or ``(C, D, H, W)`` for a segmenter (``C`` = 1 is read as the foreground probability of a
binary task). A segmenter's per-pixel uncertainty becomes one number per item by its mean over pixels, so
images are compared on the same scale whatever their content.

=============  ========================================================================================
entropy        ``-Σ p log p`` over classes (nats)
margin         ``1 - (p₁ - p₂)``: one minus the gap between the two most likely classes
MC-dropout     BALD, the mutual information between prediction and weights, ``H[E p] - E[H p]`` over
               ``T`` passes with dropout on (Gal et al. 2017): high where passes disagree, not merely
               where each pass is unsure
TTA            variance of the class probabilities over test-time augmentations (after undoing them),
               averaged over classes
core-set       k-center greedy on feature vectors (Sener & Savarese 2018): each pick is the candidate
               farthest from everything labelled or picked so far — diversity, not uncertainty
=============  ========================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from medcycle.errors import ValidationFailed

FloatArray = npt.NDArray[np.float64]
EPS = 1e-12


def as_probabilities(probs: Any, *, what: str = "the scorer's output") -> FloatArray:
    """``probs`` as a float64 channel-first array of class probabilities (``C`` = 1 → ``[1 - p, p]``)."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[0] < 1:
        raise ValidationFailed(f"{what} has shape {arr.shape}; expected (classes, ...)",
                               hint="Return class probabilities, channel first.")
    if not np.all(np.isfinite(arr)) or arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
        raise ValidationFailed(f"{what} holds values outside 0..1 (or NaN)",
                               hint="Return probabilities (softmax or sigmoid of the logits), not logits.")
    if arr.shape[0] == 1:
        arr = np.concatenate([1 - arr, arr])
    elif not np.allclose(arr.sum(axis=0), 1.0, atol=1e-3):
        raise ValidationFailed(f"{what}: class probabilities do not sum to 1",
                               hint="Apply softmax over the class axis (axis 0).")
    return np.clip(arr, 0.0, 1.0)


def pixel_entropy(p: FloatArray) -> FloatArray:
    out: FloatArray = -np.sum(p * np.log(p + EPS), axis=0)
    return out


def entropy(probs: Any) -> float:
    """Mean (over pixels) entropy of one item's class probabilities."""
    return float(np.mean(pixel_entropy(as_probabilities(probs))))


def margin(probs: Any) -> float:
    """Mean (over pixels) of one minus the gap between the two most likely classes."""
    p = np.sort(as_probabilities(probs), axis=0)
    return float(np.mean(1.0 - (p[-1] - p[-2])))


def _stack(samples: Sequence[Any], what: str) -> FloatArray:
    if len(samples) < 2:
        raise ValidationFailed(f"{what} needs at least 2 samples per item, got {len(samples)}",
                               hint="Ask for more passes (e.g. mc_samples=10).")
    arrays = [as_probabilities(s, what=what) for s in samples]
    if len({a.shape for a in arrays}) != 1:
        raise ValidationFailed(f"{what}: the samples of one item differ in shape",
                               hint="Undo each augmentation so every output is on the item's own grid.")
    return np.stack(arrays)


def bald(samples: Sequence[Any]) -> float:
    """Mean (over pixels) mutual information of ``T`` stochastic predictions of one item (MC-dropout)."""
    s = _stack(samples, "MC-dropout")
    info = pixel_entropy(s.mean(axis=0)) - np.mean([pixel_entropy(x) for x in s], axis=0)
    return float(np.mean(np.maximum(info, 0.0)))


def variance(samples: Sequence[Any]) -> float:
    """Mean (over classes and pixels) variance of predictions of one item under augmentations (TTA)."""
    return float(np.mean(_stack(samples, "test-time augmentation").var(axis=0)))


def k_center_greedy(features: Any, k: int, *, labelled: Any | None = None,
                    rng: np.random.Generator | None = None) -> list[int]:
    """Indices of ``k`` rows of ``features`` (N × D), each the farthest (Euclidean) from the labelled rows
    and the rows already picked. Without labelled rows the first pick is random (``rng``)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValidationFailed(f"features have shape {x.shape}; expected (items, dimensions)",
                               hint="Return one flat feature vector per item.")
    if not np.all(np.isfinite(x)):
        raise ValidationFailed("features hold NaN or infinite values", hint="Check the scorer's embedding.")
    n = x.shape[0]
    k = min(k, n)
    if k <= 0:
        return []
    lab = np.asarray(labelled, dtype=np.float64) if labelled is not None else np.empty((0, x.shape[1]))
    if lab.size and (lab.ndim != 2 or lab.shape[1] != x.shape[1]):
        raise ValidationFailed(f"labelled features have shape {lab.shape}, candidates {x.shape}",
                               hint="Give both from the same model version.")
    picks: list[int] = []
    if lab.size:
        nearest = np.full(n, np.inf)
        xx = (x**2).sum(axis=1)
        for part in range(0, lab.shape[0], 1024):  # |x - l|² = |x|² + |l|² - 2 x·l, a block of rows at a time
            block = lab[part:part + 1024]
            d = xx[:, None] + (block**2).sum(axis=1)[None, :] - 2.0 * x @ block.T
            nearest = np.minimum(nearest, np.maximum(d, 0.0).min(axis=1))
    else:
        first = int((rng or np.random.default_rng(0)).integers(n))
        picks.append(first)
        nearest = ((x - x[first]) ** 2).sum(axis=1)
    while len(picks) < k:
        nearest[picks] = -1.0
        i = int(np.argmax(nearest))
        picks.append(i)
        nearest = np.minimum(nearest, ((x - x[i]) ** 2).sum(axis=1))
    return picks
