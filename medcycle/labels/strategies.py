"""The arithmetic of active-learning strategies: per-item uncertainty from probabilities, and core-set picks.

Every function here is plain numpy over what a model returned; none knows about models, items or the
database (:mod:`.active` does the bookkeeping). Probabilities are channel-first: ``(C,)`` for a classifier,
``(C, H, W)`` or ``(C, D, H, W)`` for a segmenter (``C`` = 1 is read as the foreground probability of a
binary task).

A segmenter's per-pixel uncertainty becomes one number per item by an **aggregation** (:func:`aggregate`):

``foreground``  the mean over the *probable foreground*: pixels the model gives at least 10% probability of
                some class other than the background (channel 0), boundary included; 0 where there is none.
                Structure-wise uncertainty (as in Roy et al. 2019): a small faint lesion the model half sees
                scores high, a large lesion it segments confidently scores low whatever its size. The
                default of :func:`medcycle.labels.active.select_batch`.
``top<P>%``     the mean of the ``P`` percent most uncertain pixels (at least one).
``mean``        the mean over all pixels — dominated by the background: a large, easy lesion's boundary
                band outweighs a small lesion the model misses. The default of the functions below (what
                they compute by hand is then the plain average).

A classifier's ``(C,)`` output is one "pixel": every aggregation gives its value.

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
hybrid         :func:`uncertain_then_diverse`: the ``factor × k`` most uncertain, then k-center among them,
               so one batch does not spend its labels on near-copies of the same hard case
=============  ========================================================================================
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from medcycle.errors import UsageError, ValidationFailed

FloatArray = npt.NDArray[np.float64]
EPS = 1e-12
MEAN = "mean"
FOREGROUND = "foreground"
FOREGROUND_MIN = 0.1  # a pixel is probable foreground from this probability of a non-background class on
DEFAULT_AGGREGATE = FOREGROUND
TOP_RE = re.compile(r"^top(\d+(?:\.\d+)?)%$")
AGGREGATE_HINT = ("Use foreground (the mean over the probable foreground), top<P>% (the mean of the P% most "
                  "uncertain pixels, e.g. top1%) or mean.")


def check_aggregate(how: str) -> str:
    """``how`` if it names an aggregation (``foreground``, ``mean`` or ``top<P>%``, 0 < P <= 100), else a
    usage error."""
    m = TOP_RE.match(how)
    if how in (MEAN, FOREGROUND) or (m and 0 < float(m.group(1)) <= 100):
        return how
    raise UsageError(f"{how!r} is not a way to aggregate pixel uncertainty", hint=AGGREGATE_HINT)


def aggregate(values: Any, how: str = MEAN, *, foreground: Any | None = None) -> float:
    """One number from per-pixel (or per-voxel) uncertainty ``values``: ``mean``, the mean of the top ``P``%,
    or (``foreground``) the mean where the ``foreground`` probability map is at least 10%."""
    u = np.asarray(values, dtype=np.float64).ravel()
    if u.size == 0:
        raise ValidationFailed("no pixels to aggregate", hint="Return at least one output value per item.")
    check_aggregate(how)
    if how == MEAN or u.size == 1:
        return float(u.mean())
    if how == FOREGROUND:
        if foreground is None:
            raise ValidationFailed("the foreground aggregation needs the foreground probabilities",
                                   hint="Pass foreground=1 - p[0] (the probability of any non-background class).")
        fg = np.asarray(foreground, dtype=np.float64).ravel()
        if fg.shape != u.shape:
            raise ValidationFailed(f"foreground map of {fg.size} values for {u.size} uncertainties",
                                   hint="Give both on the same grid.")
        region = fg >= FOREGROUND_MIN
        return float(u[region].mean()) if region.any() else 0.0
    m = TOP_RE.match(how)
    assert m is not None
    k = max(1, int(np.ceil(u.size * float(m.group(1)) / 100.0)))
    return float(np.partition(u, u.size - k)[u.size - k:].mean())


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


def entropy(probs: Any, aggregate: str = MEAN) -> float:
    """Entropy of one item's class probabilities, aggregated over pixels (``mean`` or ``top<P>%``)."""
    p = as_probabilities(probs)
    return _agg(pixel_entropy(p), aggregate, p)


def margin(probs: Any, aggregate: str = MEAN) -> float:
    """One minus the gap between the two most likely classes, aggregated over pixels."""
    p = as_probabilities(probs)
    q = np.sort(p, axis=0)
    return _agg(1.0 - (q[-1] - q[-2]), aggregate, p)


def _agg(values: FloatArray, how: str, p: FloatArray) -> float:
    """Aggregate with the probable foreground of the (mean) class probabilities ``p``."""
    return aggregate(values, how, foreground=1.0 - p[0] if how == FOREGROUND else None)


def _stack(samples: Sequence[Any], what: str) -> FloatArray:
    if len(samples) < 2:
        raise ValidationFailed(f"{what} needs at least 2 samples per item, got {len(samples)}",
                               hint="Ask for more passes (e.g. mc_samples=10).")
    arrays = [as_probabilities(s, what=what) for s in samples]
    if len({a.shape for a in arrays}) != 1:
        raise ValidationFailed(f"{what}: the samples of one item differ in shape",
                               hint="Undo each augmentation so every output is on the item's own grid.")
    return np.stack(arrays)


def bald(samples: Sequence[Any], aggregate: str = MEAN) -> float:
    """Mutual information of ``T`` stochastic predictions of one item (MC-dropout), aggregated over pixels."""
    s = _stack(samples, "MC-dropout")
    info = pixel_entropy(s.mean(axis=0)) - np.mean([pixel_entropy(x) for x in s], axis=0)
    return _agg(np.maximum(info, 0.0), aggregate, s.mean(axis=0))


def variance(samples: Sequence[Any], aggregate: str = MEAN) -> float:
    """Variance of one item's predictions under augmentations (TTA): averaged over classes, then aggregated
    over pixels."""
    s = _stack(samples, "test-time augmentation")
    return _agg(s.var(axis=0).mean(axis=0), aggregate, s.mean(axis=0))


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


def uncertain_then_diverse(scores: Any, features: Any, k: int, *, factor: float,
                           labelled: Any | None = None) -> list[int]:
    """``k`` indices: the ``ceil(factor × k)`` highest ``scores`` (N) shortlisted, then k-center greedy on
    their ``features`` (N × D), away from the ``labelled`` feature rows; without labelled rows the most
    uncertain comes first. ``factor`` 1 is plain ranking by score."""
    u = np.asarray(scores, dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    if factor < 1:
        raise UsageError(f"the diversity factor {factor} is below 1",
                         hint="Give 1 (rank by uncertainty only) or more, e.g. 3: k-center among the 3k most "
                              "uncertain.")
    if x.ndim != 2 or x.shape[0] != u.shape[0]:
        raise ValidationFailed(f"{u.shape[0]} scores but features of shape {x.shape}",
                               hint="Give one score and one feature vector per candidate.")
    order = sorted(range(u.shape[0]), key=lambda i: (-u[i], i))
    short = order[:max(min(k, len(order)), int(np.ceil(factor * k)))]
    if len(short) <= k:
        return short
    lab = labelled if labelled is not None and np.asarray(labelled).size else None
    if lab is None:  # start from the most uncertain, then k-center
        rest = k_center_greedy(x[short[1:]], k - 1, labelled=x[short[:1]])
        return [short[0], *(short[1:][i] for i in rest)]
    return [short[i] for i in k_center_greedy(x[short], k, labelled=lab)]
