"""A model version's drift reference: its validation predictions, fitted signals and calibrated thresholds.

**Calibration to a false-alarm budget.** The budget is the chance, per window, that *some* signal pages
when nothing changed (default 1 in 100,000 windows). A page needs a signal to drift in ``k`` of the last
``n`` windows, so with ``S`` signals each window may flag a signal with probability ``α`` where
``S · P(Binomial(n, α) ≥ k) = budget`` (for the defaults, 3 of 4 and five signals: α ≈ 0.8 %). Each
signal's threshold is the ``1 − α`` quantile of its statistic on no-shift windows: ``W`` cases drawn from
the reference, tested against a reference refitted on the remaining cases — the situation of a live
window, whose cases the reference has never seen. For the embedding signal this is the permutation null of
the MMD statistic, drawn once here instead of per window. The sorted null statistics are kept, so every
live window also gets an empirical p-value.

**Fixed windows.** Live windows always hold exactly ``W`` successful predictions (default 32, at least
16): the thresholds were calibrated for that size, and busy hours give more windows rather than bigger
ones, so the power to notice a trivial shift does not grow with traffic.

:func:`capture` builds the reference from a dataset version's validation split run through the model
(:func:`medcycle.evaluation.predict.predict` with a :class:`~medcycle.monitoring.embeddings.FeatureTap`),
stores it as an object and records it for the version; drift uses the newest one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.errors import NotFound, UsageError, ValidationFailed
from medcycle.monitoring.signals import SIGNALS, Case, Cases, Signal, signal_from_dict
from medcycle.monitoring.tables import ReferenceRow
from medcycle.store.base import new_id, utcnow

if TYPE_CHECKING:
    from medcycle.objects.base import ObjectStore
    from medcycle.platform import Platform

DEFAULT_WINDOW = 32
MIN_WINDOW = 16
DEFAULT_K, DEFAULT_N = 3, 4
DEFAULT_BUDGET = 1e-5
MIN_NULL, MAX_NULL = 2000, 8000
REF_KIND = "monitoring_reference"
FORMAT = "medcycle.drift-reference/1"


@dataclass(frozen=True, slots=True)
class Policy:
    """How drift decides: window size, persistence (``k`` of ``n`` windows) and the false-page budget."""

    window: int = DEFAULT_WINDOW
    k: int = DEFAULT_K
    n: int = DEFAULT_N
    budget: float = DEFAULT_BUDGET
    seed: int = 0

    def __post_init__(self) -> None:
        if self.window < MIN_WINDOW:
            raise UsageError(f"a drift window of {self.window} predictions is too small to judge",
                             hint=f"Use at least {MIN_WINDOW} (default {DEFAULT_WINDOW}).")
        if not 1 <= self.k <= self.n <= 50:
            raise UsageError(f"persistence {self.k} of {self.n} windows is not possible",
                             hint="Give 1 <= k <= n <= 50, e.g. 3 of 4.")
        if not 0 < self.budget < 0.5:
            raise UsageError(f"a false-page budget of {self.budget} per window is not a probability",
                             hint="E.g. 1e-5: one false page in 100,000 windows.")

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "k": self.k, "n": self.n, "budget": self.budget, "seed": self.seed}


def page_probability(alpha: float, k: int, n: int) -> float:
    """P(at least ``k`` of ``n`` independent windows flag) when each flags with probability ``alpha``."""
    return float(sum(math.comb(n, j) * alpha**j * (1 - alpha) ** (n - j) for j in range(k, n + 1)))


def per_window_alpha(budget: float, signals: int, k: int, n: int) -> float:
    """The largest α with ``signals · P(Binomial(n, α) ≥ k) <= budget`` (bisection)."""
    lo, hi = 0.0, 0.5
    for _ in range(60):
        mid = (lo + hi) / 2
        if signals * page_probability(mid, k, n) > budget:
            hi = mid
        else:
            lo = mid
    return lo


@dataclass(frozen=True, slots=True)
class SignalResult:
    name: str
    statistic: float | None
    threshold: float
    p_value: float | None
    drift: bool
    n: int
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """The statistic over its threshold (1 = at the threshold), what dashboards draw."""
        if self.statistic is None:
            return None
        return self.statistic / self.threshold if self.threshold > 0 else (0.0 if self.statistic <= 0 else 99.0)

    def to_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        return {"statistic": None if self.statistic is None else round(self.statistic, 6),
                "threshold": round(self.threshold, 6), "p_value": None if self.p_value is None else
                round(self.p_value, 6), "ratio": None if ratio is None else round(ratio, 4), "drift": self.drift,
                "n": self.n, "detail": self.detail}


@dataclass
class Reference:
    policy: Policy
    alpha: float
    signals: dict[str, Signal]
    thresholds: dict[str, float]
    null: dict[str, list[float]]
    cases: int
    positive: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def evaluate(self, window: Sequence[Case] | Cases) -> dict[str, SignalResult]:
        """Every signal's statistic, threshold, p-value and decision for one window."""
        cases = window if isinstance(window, Cases) else Cases.of(list(window))
        out = {}
        for name, signal in self.signals.items():
            stat = signal.statistic(cases)
            threshold = self.thresholds[name]
            null = self.null.get(name) or []
            p = None
            if stat.value is not None and null:
                above = len(null) - int(np.searchsorted(null, stat.value, side="left"))
                p = (1 + above) / (len(null) + 1)
            drift = stat.value is not None and stat.value > threshold
            out[name] = SignalResult(name, stat.value, threshold, p, drift, stat.n, stat.detail)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "policy": self.policy.to_dict(), "alpha": self.alpha, "cases": self.cases,
                "positive": self.positive, "meta": self.meta, "thresholds": self.thresholds,
                "signals": {n: s.to_dict() for n, s in self.signals.items()},
                "null": {n: [float(f"{v:.6g}") for v in values] for n, values in self.null.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        if data.get("format") != FORMAT:
            raise ValidationFailed(f"not a drift reference (format {data.get('format')!r})",
                                   hint="Capture it again: medcycle monitor reference capture MODEL --on NAME@TAG.")
        return cls(Policy(**data["policy"]), float(data["alpha"]),
                   {n: signal_from_dict(n, s) for n, s in data["signals"].items()},
                   {n: float(t) for n, t in data["thresholds"].items()},
                   {n: [float(v) for v in values] for n, values in data["null"].items()}, int(data["cases"]),
                   data.get("positive"), dict(data.get("meta") or {}))

    def summary(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict(), "alpha": round(self.alpha, 6), "cases": self.cases,
                "signals": sorted(self.signals), "thresholds": {n: round(t, 6) for n, t in self.thresholds.items()},
                "positive": self.positive}


def build(cases: Sequence[Case], policy: Policy | None = None, *, positive: str | None = None,
          meta: Mapping[str, Any] | None = None, null_windows: int | None = None) -> Reference:
    """Fit every signal the reference cases support and calibrate their thresholds (module docstring)."""
    policy = policy or Policy()
    if len(cases) < 2 * policy.window:
        raise ValidationFailed(f"{len(cases)} reference cases cannot calibrate windows of {policy.window}",
                               hint=f"Capture on at least {2 * policy.window} cases (a larger split, e.g. "
                                    "--split val,test) or use a smaller --window.")
    pool = Cases.of(list(cases))
    fitted: dict[str, Signal] = {}
    for name, cls in SIGNALS.items():
        signal = cls.fit(pool)
        if signal is not None:
            fitted[name] = signal
    if not fitted:
        raise ValidationFailed("the reference cases carry nothing to test drift on",
                               hint="Give cases with header fields, input statistics, embeddings or predictions.")
    alpha = per_window_alpha(policy.budget, len(fitted), policy.k, policy.n)
    m = null_windows or int(min(MAX_NULL, max(MIN_NULL, math.ceil(40 / alpha))))
    rng = np.random.default_rng(policy.seed)
    windows = [rng.choice(len(pool), policy.window, replace=False) for _ in range(m)]
    thresholds, null = {}, {}
    for name, signal in list(fitted.items()):
        values = signal.null(pool, windows)
        values = np.sort(values[np.isfinite(values)])
        if len(values) < m // 2:
            del fitted[name]
            continue
        thresholds[name] = float(np.quantile(values, 1 - alpha, method="higher"))
        null[name] = values.tolist()
    return Reference(policy, alpha, fitted, thresholds, null, len(cases), positive, dict(meta or {}))


# -- storage ------------------------------------------------------------------------------------------------
def store(session: Session, objects: ObjectStore, ref: Reference, *, model_version: str,
          model_version_id: str | None = None, dataset_ref: str | None = None, dataset_digest: str | None = None,
          split: str | None = None, actor: str = "system", via: str = "library") -> ReferenceRow:
    """Put the reference in the object store and record it as ``model_version``'s newest."""
    from medcycle.auth import audit
    from medcycle.objects.refs import add_ref

    body = json.dumps(ref.to_dict(), separators=(",", ":")).encode()
    digest = objects.put(body).digest
    row = ReferenceRow(id=new_id(), model_version=model_version, model_version_id=model_version_id,
                       dataset_ref=dataset_ref, dataset_digest=dataset_digest, split=split, cases=ref.cases,
                       window=ref.policy.window, digest=digest, summary=ref.summary(), created_by=actor,
                       created_at=utcnow())
    session.add(row)
    session.flush()
    add_ref(session, digest, REF_KIND, row.id, size=len(body))
    audit.record(session, actor, "monitoring.reference", target_kind="model", target_id=model_version, via=via,
                 dataset=dataset_ref, cases=ref.cases)
    return row


def latest(session: Session, model_version: str) -> ReferenceRow | None:
    return session.scalar(select(ReferenceRow).where(ReferenceRow.model_version == model_version)
                          .order_by(ReferenceRow.created_at.desc(), ReferenceRow.id.desc()).limit(1))


def references(session: Session) -> list[ReferenceRow]:
    """The newest reference of every model version."""
    rows = session.scalars(select(ReferenceRow).order_by(ReferenceRow.created_at.desc(), ReferenceRow.id.desc()))
    seen: dict[str, ReferenceRow] = {}
    for row in rows:
        seen.setdefault(row.model_version, row)
    return sorted(seen.values(), key=lambda r: r.model_version)


@lru_cache(maxsize=32)
def _parse(body: bytes) -> Reference:
    return Reference.from_dict(json.loads(body))


def load(objects: ObjectStore, row: ReferenceRow) -> Reference:
    try:
        return _parse(objects.get(row.digest))
    except NotFound as exc:
        raise NotFound(f"the drift reference of {row.model_version} ({row.digest[:12]}…) is missing from the store",
                       hint=f"Capture it again: medcycle monitor reference capture {row.model_version} "
                            "--on NAME@TAG.") from exc


# -- capture from a model version and a dataset version -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Captured:
    id: str
    model_version: str
    dataset: str
    split: str
    cases: int
    summary: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model_version": self.model_version, "dataset": self.dataset, "split": self.split,
                "cases": self.cases, **self.summary}


def categorical_of(factors: Mapping[str, str | None]) -> dict[str, str | None]:
    """Catalog factors (``model`` is the device model) as the prediction log's categorical fields."""
    return {"manufacturer": factors.get("manufacturer"), "device_model": factors.get("model"),
            "modality": factors.get("modality"), "body_part": factors.get("body_part"),
            "view_position": factors.get("view_position")}


def _categorical(paths: Sequence[str], factors: Mapping[str, str | None]) -> dict[str, str | None]:
    """The categorical fields as serving logs them — from the image's own DICOM header, through the same
    allow-list; the catalog's factors for images without one (NIfTI, PNG)."""
    from medcycle.monitoring.describe import header_fields

    path = Path(paths[len(paths) // 2])
    try:
        import pydicom

        fields = header_fields(pydicom.dcmread(path, stop_before_pixels=True))
    except Exception:  # noqa: BLE001 - not DICOM (or unreadable): the catalog's factors
        return categorical_of(factors)
    from medcycle.monitoring.signals import CATEGORICAL

    return {f: (None if fields.get(f) is None else str(fields[f])) for f in CATEGORICAL}


def capture(platform: Platform, model_ref: str, dataset_ref: str, *, split: str = "val", policy: Policy | None = None,
            positive: str | None = None, data_dir: Path | None = None, actor: str = "system", via: str = "library",
            log: Callable[[str], None] = lambda _m: None) -> Captured:
    """Compute ``model_ref``'s reference on ``split`` (comma-separated splits allowed) of ``dataset_ref``."""
    from medcycle.datasets import transfer
    from medcycle.datasets.versions import resolve as resolve_dataset
    from medcycle.evaluation.predict import load as load_model
    from medcycle.evaluation.predict import predict
    from medcycle.monitoring.describe import image_statistics
    from medcycle.monitoring.embeddings import FeatureTap, embedding_layer
    from medcycle.training.data import index, read_volume

    loaded = load_model(platform, model_ref)
    with platform.session(write=False) as session:
        digest = resolve_dataset(session, dataset_ref).id
    folder = data_dir or platform.settings.home / "pulls" / "monitoring" / digest[:16]
    log(f"pulling {dataset_ref} into {folder}")
    transfer.pull(platform, dataset_ref, folder, actor=actor, via=via)
    seg = loaded.config.task.segmentation
    if positive is not None and not seg and positive not in loaded.classes:
        raise UsageError(f"{positive!r} is not a class of {loaded.version.ref}",
                         hint=f"Choose one of {', '.join(loaded.classes)}.")
    pos_name = None if seg else (positive or loaded.classes[-1])
    samples = index(folder, loaded.config)
    cases: list[Case] = []
    names = [s.strip() for s in split.split(",") if s.strip()]
    for name in names:
        chosen = samples.split(name)
        with FeatureTap(loaded.model, layer=embedding_layer(loaded.model, loaded.version.contract)) as tap:
            preds = predict(loaded, folder, name)
        feats, outputs = tap.features(), tap.outputs()
        masks = np.concatenate(outputs).argmax(axis=1) > 0 if seg else None
        if len(preds) != len(chosen) or len(feats) != len(preds):
            raise ValidationFailed(f"predictions of split {name} did not line up with its samples",
                                   hint="Report this: the model produced an unexpected number of outputs.")
        for i, (pred, sample) in enumerate(zip(preds, chosen, strict=True)):
            stats = image_statistics(read_volume(sample.image))
            if masks is not None:
                area = float(masks[i].mean())
                score, is_pos = None, area > 0
            else:
                p = loaded.classes.index(pos_name) if pos_name else len(pred.probs) - 1
                score, area = float(pred.probs[p]), None
                is_pos = int(np.argmax(pred.probs)) == p
            cases.append(Case(_categorical(sample.image, pred.factors), stats, feats[i], score, is_pos, area))
        log(f"{len(preds)} cases of split {name} predicted")
    ref = build(cases, policy, positive=pos_name,
                meta={"model_version": loaded.version.ref, "dataset": dataset_ref, "split": ",".join(names)})
    with platform.session() as session:
        row = store(session, platform.objects, ref, model_version=loaded.version.ref,
                    model_version_id=loaded.version.id, dataset_ref=dataset_ref, dataset_digest=digest,
                    split=",".join(names), actor=actor, via=via)
        rid = row.id
    return Captured(rid, loaded.version.ref, dataset_ref, ",".join(names), len(cases), ref.summary())
