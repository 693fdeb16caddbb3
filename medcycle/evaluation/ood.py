"""The out-of-distribution gate serving calls before inference: layered, cheapest first, each with reasons.

1. :class:`HeaderRules` — a declarative selector over DICOM header fields (modality, SOP class, body part,
   view position, photometric interpretation, image type, size and spacing ranges). A CT sent to a chest
   X-ray model is refused here in microseconds, before a pixel is decoded.
2. :class:`ImageStatsDetector` — image statistics against the training distribution: the image is normalised
   (MONOCHROME1 inverted, 1st-99th percentile window, 64 × 64), described by an intensity histogram, moments,
   an 8 × 8 layout, edge and symmetry measures; the score is the Mahalanobis distance in a PCA space fitted
   on training images (Ledoit-Wolf covariance) plus the standardised error of the PCA reconstruction, so an
   image unlike anything seen is far even where the PCA space does not reach. A metal canister on an X-ray
   plate, a knee or a photograph all land far from chests.
3. :class:`ModelScores` — scores from the model itself: 1 − max softmax, the energy score, and Mahalanobis
   distance of penultimate features to the nearest class mean (tied covariance).

Every score layer is calibrated on in-distribution validation data to a chosen false-alarm rate: its
threshold is that quantile of the validation scores (:func:`calibrate`). Detectors serialise to JSON
(``to_dict``/``from_dict``) so a model version carries its gate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from medcycle.errors import ValidationFailed

FloatArray = npt.NDArray[np.float64]
SIDE = 64
HIST_BINS = 16
GRID = 8


# -- layer 1: header rules ----------------------------------------------------------------------------------
_LIST_RULES = {
    "modality": "Modality",
    "sop_class_uid": "SOPClassUID",
    "body_part": "BodyPartExamined",
    "view_position": "ViewPosition",
    "photometric": "PhotometricInterpretation",
}
_RANGE_RULES = {"rows": "Rows", "columns": "Columns", "pixel_spacing_mm": "PixelSpacing",
                "slice_thickness_mm": "SliceThickness"}
_RULE_KEYS = {*_LIST_RULES, *_RANGE_RULES, "image_type_has", "image_type_lacks", "allow_missing"}


def _header_value(header: Any, keyword: str) -> Any:
    if isinstance(header, Mapping):
        for key in (keyword, _snake(keyword)):
            if key in header:
                return header[key]
        return None
    return getattr(header, keyword, None)


def _snake(keyword: str) -> str:
    out = []
    for i, ch in enumerate(keyword):
        if ch.isupper() and i and not keyword[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


@dataclass(frozen=True, slots=True)
class HeaderRules:
    """Which headers a model accepts. Lists are allowed values (case-insensitive); ranges are ``[min, max]``.

    Example (JSON or YAML)::

        {"modality": ["CR", "DX"], "body_part": ["CHEST"], "view_position": ["PA", "AP"],
         "photometric": ["MONOCHROME1", "MONOCHROME2"], "image_type_lacks": ["LOCALIZER"],
         "rows": [256, 5000], "pixel_spacing_mm": [0.05, 0.5], "allow_missing": ["view_position"]}

    A field a rule names but the header lacks is a reason to refuse unless it is in ``allow_missing``.
    """

    allowed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    image_type_has: tuple[str, ...] = ()
    image_type_lacks: tuple[str, ...] = ()
    allow_missing: frozenset[str] = frozenset()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "header rules") -> HeaderRules:
        unknown = sorted(set(data) - _RULE_KEYS)
        if unknown:
            raise ValidationFailed(f"{where}: unknown rule(s) {', '.join(unknown)}",
                                   hint=f"Rules: {', '.join(sorted(_RULE_KEYS))}.")
        allowed: dict[str, tuple[str, ...]] = {}
        ranges: dict[str, tuple[float, float]] = {}
        for key, value in data.items():
            if key in _LIST_RULES or key in ("image_type_has", "image_type_lacks", "allow_missing"):
                if isinstance(value, str) or not isinstance(value, Sequence) or not all(
                        isinstance(v, str) and v for v in value):
                    raise ValidationFailed(f"{where}: {key} must be a list of text values",
                                           hint=f'E.g. {key}: ["CR", "DX"].')
                if key in _LIST_RULES:
                    allowed[key] = tuple(v.strip().upper() for v in value)
            elif key in _RANGE_RULES:
                if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2
                        or not all(isinstance(v, int | float) for v in value) or value[0] > value[1]):
                    raise ValidationFailed(f"{where}: {key} must be [min, max] numbers with min <= max",
                                           hint=f"E.g. {key}: [256, 5000].")
                ranges[key] = (float(value[0]), float(value[1]))
        missing = frozenset(data.get("allow_missing", ()))
        bad = sorted(missing - set(allowed) - set(ranges) - {"image_type_has", "image_type_lacks"})
        if bad:
            raise ValidationFailed(f"{where}: allow_missing names fields without a rule: {', '.join(bad)}",
                                   hint="List only fields that have a rule.")
        return cls(allowed, ranges, tuple(v.upper() for v in data.get("image_type_has", ())),
                   tuple(v.upper() for v in data.get("image_type_lacks", ())), missing)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: list(v) for k, v in self.allowed.items()}
        out.update({k: list(v) for k, v in self.ranges.items()})
        if self.image_type_has:
            out["image_type_has"] = list(self.image_type_has)
        if self.image_type_lacks:
            out["image_type_lacks"] = list(self.image_type_lacks)
        if self.allow_missing:
            out["allow_missing"] = sorted(self.allow_missing)
        return out

    def check(self, header: Any) -> list[str]:
        """Reasons to refuse ``header`` (a pydicom Dataset or a mapping of keywords / snake_case fields)."""
        reasons: list[str] = []
        for rule, values in self.allowed.items():
            got = _header_value(header, _LIST_RULES[rule])
            if got in (None, ""):
                if rule not in self.allow_missing:
                    reasons.append(f"{rule} is missing (the model accepts {', '.join(values)})")
                continue
            if str(got).strip().upper() not in values:
                reasons.append(f"{rule} {got} is not one the model accepts ({', '.join(values)})")
        for rule, (lo, hi) in self.ranges.items():
            got = _header_value(header, _RANGE_RULES[rule])
            numbers = _numbers(got)
            if not numbers:
                if rule not in self.allow_missing:
                    reasons.append(f"{rule} is missing (the model accepts {lo:g}-{hi:g})")
                continue
            outside = [n for n in numbers if not lo <= n <= hi]
            if outside:
                reasons.append(f"{rule} {', '.join(f'{n:g}' for n in numbers)} is outside {lo:g}-{hi:g}")
        image_type = [str(v).upper() for v in (_numbers_or_text(_header_value(header, "ImageType")))]
        if (self.image_type_has or self.image_type_lacks) and not image_type:
            if "image_type" not in self.allow_missing:
                reasons.append("image type is missing")
        else:
            reasons += [f"image type lacks {v}" for v in self.image_type_has if v not in image_type]
            reasons += [f"image type has {v}" for v in self.image_type_lacks if v in image_type]
        return reasons


def _numbers(value: Any) -> list[float]:
    if value is None or value == "":
        return []
    iterable = hasattr(value, "__iter__") and not isinstance(value, str | bytes)
    items = value if iterable else [value]
    out = []
    for item in items:
        try:
            out.append(float(item))
        except (TypeError, ValueError):
            return []
    return out


def _numbers_or_text(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return value.split("\\")
    return list(value) if hasattr(value, "__iter__") else [value]


# -- layer 2: image statistics ------------------------------------------------------------------------------
def normalise(pixels: npt.ArrayLike, *, monochrome1: bool = False) -> FloatArray:
    """A 2D image as brightness in [0, 1] at ``SIDE × SIDE``: the middle slice of a volume, luminance of
    colour, MONOCHROME1 inverted, windowed to its 1st-99th percentiles."""
    a = np.asarray(pixels, dtype=np.float64)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114])
    elif a.ndim == 3:
        a = a[a.shape[0] // 2]
    elif a.ndim == 4:  # frames of colour
        a = a[a.shape[0] // 2, ..., :3] @ np.array([0.299, 0.587, 0.114])
    if a.ndim != 2 or min(a.shape) < 2:
        raise ValidationFailed(f"cannot judge an image of shape {np.shape(pixels)}",
                               hint="Give a 2D image, a volume (slices, rows, cols) or a colour image.")
    a = np.where(np.isfinite(a), a, np.nanmin(a) if np.isfinite(a).any() else 0.0)
    if max(a.shape) > 4 * SIDE:  # window on a 256-pixel version: the same percentiles, 50x cheaper
        a = _resize(a, 4 * SIDE)
    lo, hi = np.percentile(a, [1, 99])
    a = np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(a)
    if monochrome1:
        a = 1.0 - a
    return _resize(a, SIDE)


def _resize(a: FloatArray, side: int) -> FloatArray:
    from PIL import Image

    img = Image.fromarray(a.astype(np.float32), mode="F")
    return np.asarray(img.resize((side, side), Image.Resampling.BOX), dtype=np.float64)


def features(pixels: npt.ArrayLike, *, monochrome1: bool = False) -> FloatArray:
    """The image-statistics feature vector of one image (see the module docstring)."""
    shape = np.shape(pixels)
    img = normalise(pixels, monochrome1=monochrome1)
    flat = img.reshape(-1)
    hist = np.histogram(flat, bins=HIST_BINS, range=(0.0, 1.0))[0] / flat.size
    mean, std = float(flat.mean()), float(flat.std())
    skew = float(np.mean(((flat - mean) / std) ** 3)) if std > 1e-9 else 0.0
    grid = img.reshape(GRID, SIDE // GRID, GRID, SIDE // GRID).mean(axis=(1, 3)).reshape(-1)
    gy, gx = np.gradient(img)
    grad = np.hypot(gx, gy)
    mirror = img[:, ::-1]
    sym = float(np.corrcoef(img.reshape(-1), mirror.reshape(-1))[0, 1]) if std > 1e-9 else 1.0
    rows, cols = (shape[-3], shape[-2]) if len(shape) == 3 and shape[-1] in (3, 4) else shape[-2:]
    aspect = math.log(max(rows, 1) / max(cols, 1))
    return np.concatenate([hist, [mean, std, skew, float(grad.mean()), float(np.mean(grad > 0.25)), sym, aspect],
                           grid])


@dataclass(slots=True)
class ImageStatsDetector:
    """Distance of an image's statistics to the training images' (PCA + Ledoit-Wolf Mahalanobis + residual)."""

    mean: FloatArray
    scale: FloatArray
    components: FloatArray  # (k, d)
    precision: FloatArray  # (k, k)
    center: FloatArray  # (k,)
    residual_scale: float
    threshold: float | None = None

    @classmethod
    def fit(cls, training: Iterable[FloatArray], *, variance: float = 0.95, max_components: int = 20
            ) -> ImageStatsDetector:
        """Fit on feature vectors of training images (:func:`features`); at least 10 images."""
        from sklearn.covariance import LedoitWolf
        from sklearn.decomposition import PCA

        x = np.asarray(list(training), dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 10:
            raise ValidationFailed(f"need at least 10 training images to fit image statistics, got {len(x)}",
                                   hint="Fit on the model's training (or validation) images.")
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 1e-6, scale, 1.0)
        z = (x - mean) / scale
        pca = PCA(n_components=min(max_components, x.shape[0] - 1, x.shape[1]), svd_solver="full").fit(z)
        k = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), variance) + 1)
        k = max(1, min(k, pca.components_.shape[0]))
        comps = pca.components_[:k]
        proj = (z - pca.mean_) @ comps.T
        lw = LedoitWolf().fit(proj)
        resid = np.linalg.norm((z - pca.mean_) - proj @ comps, axis=1)
        det = cls(mean + pca.mean_ * scale, scale, comps, lw.precision_, lw.location_,
                  float(np.median(resid)) or 1.0)
        return det

    def score(self, feats: FloatArray) -> float:
        z = (np.asarray(feats, dtype=np.float64) - self.mean) / self.scale
        proj = self.components @ z
        d = proj - self.center
        maha = math.sqrt(max(float(d @ self.precision @ d), 0.0))
        resid = float(np.linalg.norm(z - proj @ self.components)) / self.residual_scale
        return maha + resid

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "components": self.components.tolist(),
                "precision": self.precision.tolist(), "center": self.center.tolist(),
                "residual_scale": self.residual_scale, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageStatsDetector:
        try:
            mean, scale, components, precision, center = (np.asarray(data[k], dtype=np.float64) for k in
                                                            ("mean", "scale", "components", "precision", "center"))
            threshold = data.get("threshold")
            return cls(mean, scale, components, precision, center, float(data["residual_scale"]),
                       None if threshold is None else float(threshold))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationFailed(f"image-statistics detector data is incomplete: {exc}",
                                   hint="Save detectors with to_dict() and load them with from_dict().") from exc


# -- layer 3: model scores ----------------------------------------------------------------------------------
def max_softmax_score(logits: npt.ArrayLike) -> FloatArray:
    """``1 - max softmax`` per row (higher = more out of distribution; Hendrycks & Gimpel 2017)."""
    z = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return np.asarray(1.0 - p.max(axis=1))


def energy_score(logits: npt.ArrayLike, temperature: float = 1.0) -> FloatArray:
    """Negative free energy ``-T logsumexp(z / T)`` per row, negated so that higher = more OOD (Liu et al. 2020)."""
    from scipy.special import logsumexp

    z = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    return np.asarray(-temperature * logsumexp(z / temperature, axis=1))


@dataclass(slots=True)
class FeatureMahalanobis:
    """Distance of penultimate-layer features to the nearest class mean, tied covariance (Lee et al. 2018)."""

    means: FloatArray  # (classes, d)
    precision: FloatArray
    threshold: float | None = None

    @classmethod
    def fit(cls, feats: npt.ArrayLike, labels: Sequence[int]) -> FeatureMahalanobis:
        from sklearn.covariance import LedoitWolf

        x = np.asarray(feats, dtype=np.float64)
        y = np.asarray(labels)
        if x.ndim != 2 or len(y) != len(x) or len(x) < 5:
            raise ValidationFailed("features must be (cases, dims) with one label per case and >= 5 cases",
                                   hint="Pass penultimate-layer features of the training set and their labels.")
        classes = np.unique(y)
        means = np.stack([x[y == c].mean(axis=0) for c in classes])
        centred = np.concatenate([x[y == c] - means[i] for i, c in enumerate(classes)])
        return cls(means, LedoitWolf(assume_centered=True).fit(centred).precision_)

    def score(self, feats: npt.ArrayLike) -> FloatArray:
        x = np.atleast_2d(np.asarray(feats, dtype=np.float64))
        d = x[:, None, :] - self.means[None, :, :]
        m = np.einsum("ncd,de,nce->nc", d, self.precision, d)
        return np.asarray(np.sqrt(np.maximum(m.min(axis=1), 0.0)))


# -- calibration and the gate -------------------------------------------------------------------------------
def calibrate(validation_scores: Sequence[float] | npt.ArrayLike, false_alarm_rate: float) -> float:
    """The threshold that flags ``false_alarm_rate`` of in-distribution validation cases (higher score = OOD)."""
    s = np.asarray(validation_scores, dtype=np.float64)
    if not 0 < false_alarm_rate < 1:
        raise ValidationFailed(f"false-alarm rate {false_alarm_rate} is not in (0, 1)", hint="E.g. 0.05 for 5%.")
    if s.size < math.ceil(1 / false_alarm_rate):
        raise ValidationFailed(f"{s.size} validation cases cannot calibrate a {false_alarm_rate:.1%} false-alarm "
                               "rate", hint=f"Use at least {math.ceil(1 / false_alarm_rate)} in-distribution cases.")
    return float(np.quantile(s, 1 - false_alarm_rate, method="higher"))


@dataclass(frozen=True, slots=True)
class Decision:
    """The gate's answer: ``ok`` or refused by ``layer`` with ``reasons``; ``scores`` of the layers that ran."""

    ok: bool
    layer: str | None
    reasons: tuple[str, ...]
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "layer": self.layer, "reasons": list(self.reasons),
                "scores": {k: round(v, 6) for k, v in self.scores.items()}}


@dataclass(slots=True)
class OODGate:
    """Header rules, then image statistics, then model scores; the first layer that refuses decides."""

    header: HeaderRules | None = None
    image: ImageStatsDetector | None = None

    def check(self, *, header: Any = None, pixels: npt.ArrayLike | None = None, monochrome1: bool | None = None,
              model_scores: Mapping[str, tuple[float, float]] | None = None) -> Decision:
        """Judge one input.

        Args:
            header: a pydicom Dataset or a mapping of header fields (for the header rules).
            pixels: the decoded image (for the image statistics); ``monochrome1`` defaults from the header.
            model_scores: ``{name: (score, threshold)}`` from the model layer, computed by the caller once
                the model has run (e.g. ``{"energy": (energy_score(logits)[0], t)}``).
        """
        scores: dict[str, float] = {}
        if self.header is not None and header is not None:
            reasons = self.header.check(header)
            if reasons:
                return Decision(False, "header", tuple(reasons), scores)
        if self.image is not None and pixels is not None:
            if monochrome1 is None:
                monochrome1 = str(_header_value(header, "PhotometricInterpretation") or "").upper() == "MONOCHROME1"
            value = self.image.score(features(pixels, monochrome1=monochrome1))
            scores["image"] = value
            if self.image.threshold is not None and value > self.image.threshold:
                return Decision(False, "image", (f"image statistics are far from the training images "
                                                 f"(score {value:.2f} > {self.image.threshold:.2f})",), scores)
        for name, (value, threshold) in (model_scores or {}).items():
            scores[name] = float(value)
            if value > threshold:
                return Decision(False, "model", (f"{name} score {value:.3f} is above {threshold:.3f}",), scores)
        return Decision(True, None, (), scores)

    def to_dict(self) -> dict[str, Any]:
        return {"header": self.header.to_dict() if self.header else None,
                "image": self.image.to_dict() if self.image else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OODGate:
        return cls(HeaderRules.from_dict(data["header"]) if data.get("header") else None,
                   ImageStatsDetector.from_dict(data["image"]) if data.get("image") else None)
