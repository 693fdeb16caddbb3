"""Drift signals: one statistic per window of predictions against the model's reference; higher = more drift.

* ``metadata`` — categorical acquisition fields (manufacturer, device model, modality, body part, view):
  the population stability index (PSI) of each field's categories in the window against the reference,
  with a half-count of smoothing so an unseen category is finite but large; the statistic is the largest
  PSI over the fields (the chi-square statistic is reported beside it).
* ``intensity`` — input statistics (percentiles, mean, spread, noise, edges) standardised *within each
  device* (manufacturer + model) by the reference's median and robust scale — scanners differ far more from
  each other than a recalibrated detector differs from itself, so a pooled test would miss a 15 % gain
  change inside the scanner mix. Devices with fewer than ``MIN_GROUP`` reference cases, and new ones, are
  standardised against the pooled reference. The statistic is the largest ``|trimmed mean of z| · √n`` over
  the features (20 % trimmed, so one odd image does not make a window drift — that is the OOD gate's job).
* ``embedding`` — penultimate-layer features, standardised and reduced by PCA (at most ``PCA_DIMS``
  whitened components) fitted on the reference; the statistic is the unbiased MMD² with a Gaussian kernel
  (median-heuristic bandwidth) between the window and the reference. Its null distribution is the
  permutation distribution drawn by re-partitioning the reference (:mod:`medcycle.monitoring.reference`).
* ``positive_rate`` — the share of positive predictions (classification: the positive class; segmentation:
  a non-empty mask) as a binomial z score against the reference share.
* ``score`` — the PSI of the positive-class score histogram over the reference's decile bins.
* ``mask_area`` — the two-sample Kolmogorov–Smirnov distance of mask areas (segmentation).

Every statistic is turned into a decision by a threshold calibrated on no-shift windows drawn from the
reference itself; nothing here uses a textbook p-value, whose power grows with the sample until trivial
shifts fire.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
CATEGORICAL = ("manufacturer", "device_model", "modality", "body_part", "view_position")
INTENSITY = ("p05", "p50", "p95", "mean", "std", "noise", "edges")
MISSING = "(missing)"
MIN_GROUP = 8
PCA_DIMS = 8
MMD_POOL = 1000
TRIM = 0.2
SCORE_BINS = 10
SMOOTH = 0.5


@dataclass(frozen=True, slots=True)
class Case:
    """What drift looks at in one prediction (a log row, or a reference case)."""

    categorical: Mapping[str, str | None] = field(default_factory=dict)
    stats: Mapping[str, float] = field(default_factory=dict)
    embedding: Sequence[float] | F64 | None = None
    score: float | None = None
    positive: bool | None = None
    mask_area: float | None = None


@dataclass
class Cases:
    """Cases as columns (NaN = missing), so windows and partitions are cheap index operations."""

    categorical: dict[str, npt.NDArray[np.object_]]
    device: npt.NDArray[np.object_]
    stats: F64  # (n, len(INTENSITY))
    embedding: F64 | None  # (n, d), NaN rows where missing
    score: F64
    positive: F64
    mask_area: F64

    @classmethod
    def of(cls, cases: Sequence[Case]) -> Cases:
        n = len(cases)
        cat = {f: np.array([(c.categorical.get(f) or MISSING) for c in cases], dtype=object) for f in CATEGORICAL}
        device = np.array(["|".join(c.categorical.get(f) or MISSING for f in ("manufacturer", "device_model"))
                           for c in cases], dtype=object)
        stats = np.array([[float(c.stats.get(k, math.nan)) for k in INTENSITY] for c in cases],
                         dtype=np.float64).reshape(n, len(INTENSITY))
        dims = {len(np.asarray(c.embedding).reshape(-1)) for c in cases if c.embedding is not None}
        embedding: F64 | None = None
        if len(dims) == 1:
            d = dims.pop()
            embedding = np.full((n, d), math.nan)
            for i, c in enumerate(cases):
                if c.embedding is not None:
                    embedding[i] = np.asarray(c.embedding, dtype=np.float64).reshape(-1)

        def col(values: list[float | None]) -> F64:
            return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)

        return cls(cat, device, stats, embedding, col([c.score for c in cases]),
                   col([None if c.positive is None else float(c.positive) for c in cases]),
                   col([c.mask_area for c in cases]))

    def __len__(self) -> int:
        return len(self.device)

    def take(self, idx: I64) -> Cases:
        return Cases({f: v[idx] for f, v in self.categorical.items()}, self.device[idx], self.stats[idx],
                     None if self.embedding is None else self.embedding[idx], self.score[idx], self.positive[idx],
                     self.mask_area[idx])


@dataclass(frozen=True, slots=True)
class Stat:
    value: float | None  # None: too few usable cases in the window
    n: int
    detail: dict[str, Any] = field(default_factory=dict)


class Signal(ABC):
    """A fitted reference for one signal. Subclasses set ``name`` and implement the three abstract methods."""

    name: ClassVar[str] = ""
    min_share: ClassVar[float] = 0.5  # a window needs this share of cases with the signal's data

    @classmethod
    @abstractmethod
    def fit(cls, ref: Cases) -> Signal | None:  # None: the reference lacks this signal's data
        """The signal fitted on the reference cases."""

    @abstractmethod
    def statistic(self, win: Cases) -> Stat:
        """The signal's statistic on a window of live cases."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The fitted reference as JSON."""

    def null(self, pool: Cases, windows: Sequence[I64]) -> F64:
        """Statistics of ``windows`` (index arrays into ``pool``) against a reference refitted on the rest."""
        out = np.full(len(windows), math.nan)
        everything = np.arange(len(pool))
        for i, w in enumerate(windows):
            rest = np.setdiff1d(everything, w, assume_unique=True)
            fitted = type(self).fit(pool.take(rest))
            if fitted is not None:
                value = fitted.statistic(pool.take(w)).value
                out[i] = math.nan if value is None else value
        return out


def _psi(window_counts: F64, ref_counts: F64) -> float:
    k = len(ref_counts)
    w = (window_counts + SMOOTH) / (window_counts.sum() + SMOOTH * k)
    r = (ref_counts + SMOOTH) / (ref_counts.sum() + SMOOTH * k)
    return float(np.sum((w - r) * np.log(w / r)))


# -- metadata -----------------------------------------------------------------------------------------------
@dataclass
class Metadata(Signal):
    name: ClassVar[str] = "metadata"
    counts: dict[str, dict[str, float]]  # field → category → reference count

    @classmethod
    def fit(cls, ref: Cases) -> Metadata | None:
        counts: dict[str, dict[str, float]] = {}
        for f, values in ref.categorical.items():
            cats, n = np.unique(values.astype(str), return_counts=True)
            if not (len(cats) == 1 and cats[0] == MISSING):
                counts[f] = {str(c): float(k) for c, k in zip(cats, n, strict=True)}
        return cls(counts) if counts else None

    def statistic(self, win: Cases) -> Stat:
        best, detail = 0.0, {}
        fields: dict[str, Any] = {}
        for f, ref in self.counts.items():
            values = win.categorical[f].astype(str)
            cats, n = np.unique(values, return_counts=True)
            seen = dict(zip(cats.tolist(), n.tolist(), strict=True))
            keys = sorted(set(ref) | set(seen))
            rc = np.array([ref.get(k, 0.0) for k in keys])
            wc = np.array([float(seen.get(k, 0)) for k in keys])
            psi = _psi(wc, rc)
            expected = rc / rc.sum() * wc.sum()
            chi2 = float(np.sum((wc - expected) ** 2 / np.maximum(expected, SMOOTH)))
            share = wc / max(wc.sum(), 1.0) - rc / rc.sum()
            top = keys[int(np.argmax(share))]
            fields[f] = {"psi": round(psi, 4), "chi2": round(chi2, 2), "top": top,
                         "unseen": sorted(k for k in seen if k not in ref)[:5]}
            if psi >= best:
                best, detail = psi, {"field": f, "category": top}
        return Stat(best, len(win), {**detail, "fields": fields})

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metadata:
        return cls({f: {k: float(v) for k, v in c.items()} for f, c in data["counts"].items()})

    def null(self, pool: Cases, windows: Sequence[I64]) -> F64:
        codes: dict[str, tuple[I64, int, list[str]]] = {}
        for f in self.counts:
            cats, inverse = np.unique(pool.categorical[f].astype(str), return_inverse=True)
            codes[f] = (inverse.astype(np.int64), len(cats), cats.tolist())
        totals = {f: np.bincount(c, minlength=k).astype(np.float64) for f, (c, k, _) in codes.items()}
        out = np.zeros(len(windows))
        for i, w in enumerate(windows):
            best = 0.0
            for f, (c, k, _) in codes.items():
                wc = np.bincount(c[w], minlength=k).astype(np.float64)
                rc = totals[f] - wc
                present = (rc > 0) | (wc > 0)
                best = max(best, _psi(wc[present], rc[present]))
            out[i] = best
        return out


# -- intensity ----------------------------------------------------------------------------------------------
def _robust(x: F64) -> tuple[F64, F64]:
    """Median and a robust scale (1.4826·MAD, at least a quarter of the SD) of each column; rows are finite."""
    med = np.median(x, axis=0)
    mad = 1.4826 * np.median(np.abs(x - med), axis=0)
    sd = x.std(axis=0)
    scale = np.maximum(np.maximum(mad, 0.25 * sd), 1e-9 + 1e-6 * np.abs(med))
    return med, scale


def _trimmed_mean(z: F64) -> F64:
    """Column means of the finite rows ``z`` after dropping the lowest and highest ``TRIM`` of each column."""
    n = z.shape[0]
    k = int(n * TRIM)
    s = np.sort(z, axis=0)
    return np.asarray(s[k: n - k].mean(axis=0) if n - 2 * k > 0 else s.mean(axis=0))


@dataclass
class Intensity(Signal):
    name: ClassVar[str] = "intensity"
    features: list[str]
    pooled: tuple[F64, F64]
    groups: dict[str, tuple[F64, F64]]

    @classmethod
    def fit(cls, ref: Cases) -> Intensity | None:
        x = ref.stats
        usable = [j for j in range(x.shape[1]) if np.sum(np.isfinite(x[:, j])) >= 2 * MIN_GROUP
                  and np.nanstd(x[:, j]) > 0]
        if not usable:
            return None
        rows = np.isfinite(x[:, usable]).all(axis=1)
        if rows.sum() < 2 * MIN_GROUP:
            return None
        x, devices = x[rows][:, usable], ref.device[rows].astype(str)
        groups = {}
        for dev in np.unique(devices):
            members = x[devices == dev]
            if len(members) >= MIN_GROUP:
                groups[str(dev)] = _robust(members)
        return cls([INTENSITY[j] for j in usable], _robust(x), groups)

    def _columns(self) -> list[int]:
        return [INTENSITY.index(f) for f in self.features]

    def z(self, win: Cases) -> F64:
        x = win.stats[:, self._columns()]
        med = np.broadcast_to(self.pooled[0], x.shape).copy()
        scale = np.broadcast_to(self.pooled[1], x.shape).copy()
        devices = win.device.astype(str)
        for dev, (m, s) in self.groups.items():
            rows = devices == dev
            med[rows], scale[rows] = m, s
        return np.asarray((x - med) / scale)

    def statistic(self, win: Cases) -> Stat:
        z = self.z(win)
        rows = np.isfinite(z).all(axis=1)
        n = int(rows.sum())
        if n < max(2, self.min_share * len(win)):
            return Stat(None, n, {"reason": "too few cases with input statistics"})
        t = _trimmed_mean(z[rows]) * math.sqrt(n)
        j = int(np.argmax(np.abs(t)))
        return Stat(float(abs(t[j])), n, {"feature": self.features[j], "shift_sd": round(float(t[j]) / math.sqrt(n), 3),
                                          "by_feature": {f: round(float(v), 3) for f, v in
                                                         zip(self.features, t, strict=True)}})

    def null(self, pool: Cases, windows: Sequence[I64]) -> F64:
        """The generic refit-on-the-rest null, with the groups' rows found once."""
        cols = self._columns()
        x = pool.stats[:, cols]
        finite = np.asarray(np.isfinite(x).all(axis=1), dtype=bool)
        names, code = np.unique(pool.device.astype(str), return_inverse=True)
        members = [np.flatnonzero((code == g) & finite) for g in range(len(names))]
        out = np.full(len(windows), math.nan)
        keep = np.empty(len(pool), dtype=bool)
        med = np.empty((len(names) + 1, len(cols)))
        scale = np.empty_like(med)
        for i, w in enumerate(windows):
            ok = finite[w]
            if ok.sum() < max(2, self.min_share * len(w)):
                continue
            keep[:] = finite
            keep[w] = False
            med[-1], scale[-1] = _robust(x[keep])  # the last row: pooled
            for g, idx in enumerate(members):
                rows = idx[keep[idx]]
                med[g], scale[g] = _robust(x[rows]) if len(rows) >= MIN_GROUP else (med[-1], scale[-1])
            which = code[w][ok]
            t = _trimmed_mean((x[w][ok] - med[which]) / scale[which]) * math.sqrt(int(ok.sum()))
            out[i] = float(np.max(np.abs(t)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"features": self.features, "pooled": [a.tolist() for a in self.pooled],
                "groups": {k: [a.tolist() for a in v] for k, v in self.groups.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Intensity:
        def pair(v: Sequence[Sequence[float]]) -> tuple[F64, F64]:
            return np.asarray(v[0], dtype=np.float64), np.asarray(v[1], dtype=np.float64)

        return cls(list(data["features"]), pair(data["pooled"]), {k: pair(v) for k, v in data["groups"].items()})


# -- embedding ----------------------------------------------------------------------------------------------
def _sq_dists(a: F64, b: F64) -> F64:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.asarray(np.maximum(d, 0.0))


def mmd2(kxx: F64, kyy_sum: float, ny: int, kxy: F64) -> float:
    """Unbiased MMD² from the window's kernel block, the reference's off-diagonal kernel sum and the cross block."""
    nx = kxx.shape[0]
    sxx = (kxx.sum() - np.trace(kxx)) / (nx * (nx - 1))
    syy = kyy_sum / (ny * (ny - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


@dataclass
class Embedding(Signal):
    name: ClassVar[str] = "embedding"
    mean: F64
    scale: F64
    components: F64  # (k, d), rows scaled so projections have unit variance
    centre: F64  # (k,)
    gamma: float
    points: F64  # the reference pool, projected (≤ MMD_POOL)
    kyy_sum: float

    @classmethod
    def fit(cls, ref: Cases, *, seed: int = 0) -> Embedding | None:
        if ref.embedding is None:
            return None
        x = ref.embedding[np.isfinite(ref.embedding).all(axis=1)]
        if len(x) < 2 * MIN_GROUP:
            return None
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 1e-9, scale, 1.0)
        z = (x - mean) / scale
        _u, s, vt = np.linalg.svd(z, full_matrices=False)  # z is centred
        if s[0] <= 0:
            return None
        k = max(1, min(PCA_DIMS, int(np.sum(s > s[0] * 1e-6)), len(x) - 1))
        sd = s[:k] / math.sqrt(len(x) - 1)
        components = vt[:k] / sd[:, None]
        centre = np.zeros(k)
        proj = z @ components.T
        rng = np.random.default_rng(seed)
        pool = proj[rng.choice(len(proj), MMD_POOL, replace=False)] if len(proj) > MMD_POOL else proj
        d = _sq_dists(pool[:500], pool[:500])
        median = float(np.median(d[np.triu_indices(len(d), 1)]))
        gamma = 1.0 / median if median > 0 else 1.0
        kyy = np.exp(-gamma * _sq_dists(pool, pool))
        return cls(mean, scale, components, centre, gamma, pool, float(kyy.sum() - np.trace(kyy)))

    def project(self, emb: F64) -> F64:
        return np.asarray(((emb - self.mean) / self.scale) @ self.components.T - self.centre)

    def statistic(self, win: Cases) -> Stat:
        if win.embedding is None or win.embedding.shape[1] != self.mean.shape[0]:
            return Stat(None, 0, {"reason": "no embeddings of the reference's size in the window"})
        x = win.embedding[np.isfinite(win.embedding).all(axis=1)]
        if len(x) < max(2, self.min_share * len(win)):
            return Stat(None, len(x), {"reason": "too few cases with embeddings"})
        p = self.project(x)
        kxx = np.exp(-self.gamma * _sq_dists(p, p))
        kxy = np.exp(-self.gamma * _sq_dists(p, self.points))
        return Stat(mmd2(kxx, self.kyy_sum, len(self.points), kxy), len(x), {"dims": int(self.components.shape[0])})

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "components": self.components.tolist(),
                "centre": self.centre.tolist(), "gamma": self.gamma, "points": self.points.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Embedding:
        arr = {k: np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "components", "points", "centre")}
        pool = arr["points"]
        kyy = np.exp(-float(data["gamma"]) * _sq_dists(pool, pool))
        return cls(arr["mean"], arr["scale"], arr["components"], arr["centre"], float(data["gamma"]), pool,
                   float(kyy.sum() - np.trace(kyy)))

    def null(self, pool: Cases, windows: Sequence[I64]) -> F64:
        """Permutation null: windows re-drawn from the projected reference pool, the rest as reference."""
        p = self.points
        k = np.exp(-self.gamma * _sq_dists(p, p))
        np.fill_diagonal(k, 0.0)
        row = k.sum(axis=1)
        total = float(row.sum())
        n = len(p)
        rng = np.random.default_rng(len(windows))
        out = np.empty(len(windows))
        for i, w in enumerate(windows):
            size = min(len(w), n // 2)
            idx = rng.choice(n, size, replace=False)
            sww = float(k[np.ix_(idx, idx)].sum())
            sw_all = float(row[idx].sum())
            swr = sw_all - sww
            srr = total - 2.0 * sw_all + sww
            m = n - size
            out[i] = sww / (size * (size - 1)) + srr / (m * (m - 1)) - 2.0 * swr / (size * m)
        return out


# -- predictions --------------------------------------------------------------------------------------------
@dataclass
class PositiveRate(Signal):
    name: ClassVar[str] = "positive_rate"
    rate: float
    cases: int

    @classmethod
    def fit(cls, ref: Cases) -> PositiveRate | None:
        v = ref.positive[np.isfinite(ref.positive)]
        return cls(float(v.mean()), len(v)) if len(v) >= 2 * MIN_GROUP else None

    def statistic(self, win: Cases) -> Stat:
        v = win.positive[np.isfinite(win.positive)]
        if len(v) < max(2, self.min_share * len(win)):
            return Stat(None, len(v), {"reason": "too few predictions"})
        p0 = min(max(self.rate, 0.5 / self.cases), 1 - 0.5 / self.cases)
        rate = float(v.mean())
        return Stat(abs(rate - p0) / math.sqrt(p0 * (1 - p0) / len(v)), len(v),
                    {"rate": round(rate, 4), "reference": round(self.rate, 4)})

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "cases": self.cases}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PositiveRate:
        return cls(float(data["rate"]), int(data["cases"]))

    def null(self, pool: Cases, windows: Sequence[I64]) -> F64:
        v = pool.positive
        ok = np.isfinite(v)
        total, count = float(np.nansum(v)), int(ok.sum())
        out = np.empty(len(windows))
        for i, w in enumerate(windows):
            wv = v[w][ok[w]]
            m = count - len(wv)
            p0 = (total - float(wv.sum())) / m
            p0 = min(max(p0, 0.5 / m), 1 - 0.5 / m)
            out[i] = abs(float(wv.mean()) - p0) / math.sqrt(p0 * (1 - p0) / len(wv)) if len(wv) else math.nan
        return out


@dataclass
class Score(Signal):
    name: ClassVar[str] = "score"
    edges: F64  # inner bin edges (deciles of the reference scores)
    counts: F64

    @classmethod
    def fit(cls, ref: Cases) -> Score | None:
        s = ref.score[np.isfinite(ref.score)]
        if len(s) < 2 * MIN_GROUP:
            return None
        edges = np.unique(np.quantile(s, np.linspace(0, 1, SCORE_BINS + 1)[1:-1]))
        return cls(edges, np.bincount(np.searchsorted(edges, s, side="right"), minlength=len(edges) + 1)
                   .astype(np.float64))

    def statistic(self, win: Cases) -> Stat:
        s = win.score[np.isfinite(win.score)]
        if len(s) < max(2, self.min_share * len(win)):
            return Stat(None, len(s), {"reason": "too few scores"})
        wc = np.bincount(np.searchsorted(self.edges, s, side="right"), minlength=len(self.edges) + 1)
        return Stat(_psi(wc.astype(np.float64), self.counts), len(s),
                    {"mean": round(float(s.mean()), 4),
                     "reference_mean": round(float(np.sum(self.counts * _centres(self.edges)) / self.counts.sum()),
                                             4)})

    def to_dict(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Score:
        return cls(np.asarray(data["edges"], dtype=np.float64), np.asarray(data["counts"], dtype=np.float64))


def _centres(edges: F64) -> F64:
    bounds = np.concatenate([[0.0], edges, [1.0]])
    return np.asarray((bounds[:-1] + bounds[1:]) / 2)


def ks_distance(a: F64, b: F64) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


@dataclass
class MaskArea(Signal):
    name: ClassVar[str] = "mask_area"
    areas: F64  # sorted reference areas (≤ 2000, evenly spaced quantiles)

    @classmethod
    def fit(cls, ref: Cases) -> MaskArea | None:
        a = np.sort(ref.mask_area[np.isfinite(ref.mask_area)])
        if len(a) < 2 * MIN_GROUP or np.all(a == a[0]):
            return None
        if len(a) > 2000:
            a = np.quantile(a, np.linspace(0, 1, 2000))
        return cls(a)

    def statistic(self, win: Cases) -> Stat:
        a = win.mask_area[np.isfinite(win.mask_area)]
        if len(a) < max(2, self.min_share * len(win)):
            return Stat(None, len(a), {"reason": "too few masks"})
        return Stat(ks_distance(a, self.areas), len(a), {"median": round(float(np.median(a)), 5),
                                                         "reference_median": round(float(np.median(self.areas)), 5)})

    def to_dict(self) -> dict[str, Any]:
        return {"areas": self.areas.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaskArea:
        return cls(np.asarray(data["areas"], dtype=np.float64))


SIGNALS: dict[str, type[Signal]] = {s.name: s for s in (Metadata, Intensity, Embedding, PositiveRate, Score,
                                                        MaskArea)}


def signal_from_dict(name: str, data: Mapping[str, Any]) -> Signal:
    cls: Any = SIGNALS[name]
    loaded: Signal = cls.from_dict(data)
    return loaded
