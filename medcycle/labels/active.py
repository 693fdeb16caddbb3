"""Active learning: which items should readers label next, according to a model — and the task that labels them.

The labels layer sits below the models, so it never loads one. It takes a :class:`Scorer`: anything that,
for a list of item uids, returns the model's class probabilities (optionally with dropout on, optionally on
inputs passed through a transform) and feature vectors. The application layer builds one around a model
version (the CLI and API wire it); tests and ``bench/active_learning.py`` build their own.

Strategies (:mod:`.strategies` has the arithmetic):

==============  ========================================================================================
``random``      a seeded uniform sample (the baseline; needs no scorer)
``entropy``     highest predictive entropy first
``margin``      smallest gap between the two most likely classes first
``mc-dropout``  highest BALD over ``mc_samples`` passes with dropout on (``mc_dropout`` is read the same)
``tta``         highest variance under test-time augmentations (MONAI ``Flip`` and ``Rotate90``, undone on
                the output before comparing)
``coreset``     k-center greedy on the scorer's features, away from what is already labelled
==============  ========================================================================================

A segmenter's per-pixel uncertainty is aggregated per item over the probable foreground by default
(``aggregate="foreground"``; also ``top<P>%`` and ``mean``: :func:`.strategies.aggregate`), and
``diversity`` > 1 turns an uncertainty strategy into uncertainty + diversity (k-center on the features
among the ``diversity × size`` most uncertain).

**Scores are cached per model version** (:class:`ScoreCache`; in the database: ``label_active_scores``,
keyed by model version, measure — e.g. ``mc-dropout:bald:t=10``, ``entropy@top1%`` for a non-default
aggregation — and item), so asking for the next batch again, or with another batch size, scores only items
the version has not scored. A new model version scores afresh. :func:`score_items` is a scoring run that
only fills the cache; :func:`select_batch` given a ``model_version`` and no scorer then ranks from the cache
alone, and raises :class:`NotScored` (naming the calls that compute them) where scores are missing. Random
and core-set picks are not cached as scores (they depend on the seed and on what is labelled); core-set
caches the feature vectors instead.

The output, :class:`Batch`, is an ordered list of items with their scores. :func:`next_batch` also records it
(``label_active_batches``: strategy, parameters, model version, what was picked and why) and
:func:`create_task_from_batch` makes it the next labeling task, assigned as any task is (qualified readers
only; certifications past their expiry are applied first).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import Conflict, NotFound, UsageError, ValidationFailed
from medcycle.labels import certifications, strategies, tasks
from medcycle.labels.tables import ActiveBatchRow, ActiveScoreRow, AnnotationRow, TaskItemRow
from medcycle.store.base import utcnow

InputTransform = Callable[[npt.NDArray[Any]], npt.NDArray[Any]]
BATCH_RE = re.compile(r"^(?:[Bb]-)?(\d{1,9})$")
CHUNK = 500
TARGET_KIND = "label_active_batch"


class Strategy(StrEnum):
    RANDOM = "random"
    ENTROPY = "entropy"
    MARGIN = "margin"
    MC_DROPOUT = "mc-dropout"
    TTA = "tta"
    CORESET = "coreset"


@runtime_checkable
class Scorer(Protocol):
    """A model as active learning sees it (built by the application layer around a model version).

    ``predict`` returns, per item in order, class probabilities channel-first (``(C,)`` for a classifier,
    ``(C, *spatial)`` for a segmenter). With ``dropout=True`` dropout layers stay on (each call a new
    sample); with ``transform``, each input image (channel-first, as the network takes it) goes through it
    first. ``features`` returns one vector per item (e.g. the pooled last hidden layer), shape (N, D).
    """

    @property
    def version(self) -> str: ...

    def predict(self, items: Sequence[str], *, dropout: bool = False,
                transform: InputTransform | None = None) -> Sequence[npt.NDArray[Any]]: ...

    def features(self, items: Sequence[str]) -> npt.NDArray[Any]: ...


# -- caches ---------------------------------------------------------------------------------------------
class ScoreCache(Protocol):
    """Per model version and measure: a number per item (uncertainty) or a vector per item (features)."""

    def get(self, version: str, measure: str, items: Sequence[str]) -> dict[str, float]: ...

    def put(self, version: str, measure: str, values: Mapping[str, float]) -> None: ...

    def get_vectors(self, version: str, measure: str, items: Sequence[str]) -> dict[str, list[float]]: ...

    def put_vectors(self, version: str, measure: str, vectors: Mapping[str, Sequence[float]]) -> None: ...


@dataclass
class MemoryCache:
    """A cache in memory (one process; benchmarks and tests)."""

    values: dict[tuple[str, str, str], float] = field(default_factory=dict)
    vectors: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def get(self, version: str, measure: str, items: Sequence[str]) -> dict[str, float]:
        return {i: self.values[(version, measure, i)] for i in items if (version, measure, i) in self.values}

    def put(self, version: str, measure: str, values: Mapping[str, float]) -> None:
        self.values.update({(version, measure, i): float(v) for i, v in values.items()})

    def get_vectors(self, version: str, measure: str, items: Sequence[str]) -> dict[str, list[float]]:
        return {i: self.vectors[(version, measure, i)] for i in items if (version, measure, i) in self.vectors}

    def put_vectors(self, version: str, measure: str, vectors: Mapping[str, Sequence[float]]) -> None:
        self.vectors.update({(version, measure, i): [float(x) for x in v] for i, v in vectors.items()})


@dataclass
class SqlCache:
    """The cache in ``label_active_scores`` (shared by every process on the metadata store)."""

    session: Session

    def _rows(self, version: str, measure: str, items: Sequence[str]) -> list[ActiveScoreRow]:
        out: list[ActiveScoreRow] = []
        for part in range(0, len(items), CHUNK):
            out.extend(self.session.scalars(select(ActiveScoreRow).where(
                ActiveScoreRow.model_version == version, ActiveScoreRow.measure == measure,
                ActiveScoreRow.item_uid.in_(items[part:part + CHUNK]))))
        return out

    def get(self, version: str, measure: str, items: Sequence[str]) -> dict[str, float]:
        return {r.item_uid: float(r.value) for r in self._rows(version, measure, items) if r.value is not None}

    def _put(self, version: str, measure: str, rows: dict[str, tuple[float | None, list[float] | None]]) -> None:
        keys = list(rows)
        for part in range(0, len(keys), CHUNK):  # replace what is there (a re-score of the same version)
            self.session.execute(delete(ActiveScoreRow).where(
                ActiveScoreRow.model_version == version, ActiveScoreRow.measure == measure,
                ActiveScoreRow.item_uid.in_(keys[part:part + CHUNK])))
        now = utcnow()
        self.session.add_all([ActiveScoreRow(model_version=version, measure=measure, item_uid=i, value=v, vector=vec,
                                             computed_at=now) for i, (v, vec) in rows.items()])
        self.session.flush()

    def put(self, version: str, measure: str, values: Mapping[str, float]) -> None:
        self._put(version, measure, {i: (float(v), None) for i, v in values.items()})

    def get_vectors(self, version: str, measure: str, items: Sequence[str]) -> dict[str, list[float]]:
        return {r.item_uid: list(r.vector) for r in self._rows(version, measure, items) if r.vector is not None}

    def put_vectors(self, version: str, measure: str, vectors: Mapping[str, Sequence[float]]) -> None:
        self._put(version, measure, {i: (None, [float(x) for x in v]) for i, v in vectors.items()})


# -- test-time augmentations (MONAI) -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Augmentation:
    """An input transform and the inverse that brings a segmenter's output back onto the item's grid."""

    name: str
    forward: InputTransform
    inverse: InputTransform


def _spatial(op: Callable[[int], Any]) -> InputTransform:
    """Apply a MONAI array transform made for this many spatial dims (channel-first arrays)."""
    def run(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if x.ndim < 3:  # a classifier's (C,) output: nothing spatial to undo
            return x
        return np.ascontiguousarray(np.asarray(op(x.ndim - 1)(x)))
    return run


def tta_augmentations() -> list[Augmentation]:
    """Flips of the last two spatial axes and rotations by 90°, 180°, 270° in their plane (MONAI)."""
    monai = importlib.import_module("monai.transforms")  # re-exported implicitly: strict typing cannot see it
    Flip, Rotate90 = monai.Flip, monai.Rotate90

    def flip(axis: int) -> Augmentation:
        t = _spatial(lambda nd: Flip(spatial_axis=nd - 2 + axis))
        return Augmentation(f"flip{axis}", t, t)

    def rot(k: int) -> Augmentation:
        return Augmentation(f"rot{90 * k}", _spatial(lambda nd: Rotate90(k=k, spatial_axes=(nd - 2, nd - 1))),
                            _spatial(lambda nd: Rotate90(k=4 - k, spatial_axes=(nd - 2, nd - 1))))

    return [flip(0), flip(1), rot(1), rot(2), rot(3)]


# -- choosing -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Batch:
    """The items to label next, in the order picked, with the score that picked each (``None`` for random)."""

    strategy: Strategy
    model_version: str | None
    items: tuple[str, ...]
    scores: tuple[float | None, ...]
    measure: str | None
    n_candidates: int
    n_labelled: int
    scored: int  # items the model scored for this batch (the rest came from the cache)
    seed: int
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy.value, "model_version": self.model_version, "items": list(self.items),
                "scores": list(self.scores), "measure": self.measure, "candidates": self.n_candidates,
                "labelled": self.n_labelled, "scored": self.scored, "seed": self.seed, "params": dict(self.params)}


def parse_strategy(strategy: str) -> Strategy:
    """``strategy`` as a :class:`Strategy` (``mc_dropout`` is read as ``mc-dropout``), else a usage error."""
    try:
        return Strategy(strategy.strip().lower().replace("_", "-"))
    except ValueError:
        raise UsageError(f"{strategy!r} is not a strategy",
                         hint=f"Choose one of: {', '.join(s.value for s in Strategy)}.") from None


def measure_of(strategy: Strategy, *, mc_samples: int, augmentations: Sequence[Augmentation],
               aggregate: str = strategies.DEFAULT_AGGREGATE) -> str | None:
    """The cache key of a strategy's per-item number (``None``: random). The default aggregation over
    pixels (``foreground``) is implied; another one is appended, e.g. ``entropy@top1%``."""
    if strategy is Strategy.CORESET:
        return "features"
    if strategy is Strategy.RANDOM:
        return None
    if strategy is Strategy.MC_DROPOUT:
        base = f"mc-dropout:bald:t={mc_samples}"
    elif strategy is Strategy.TTA:
        base = "tta:variance:" + ",".join(a.name for a in augmentations)
    else:
        base = strategy.value
    return base if aggregate == strategies.DEFAULT_AGGREGATE else f"{base}@{aggregate}"


def _score(scorer: Scorer, strategy: Strategy, items: Sequence[str], mc_samples: int,
           augmentations: Sequence[Augmentation], aggregate: str) -> dict[str, float]:
    if strategy in (Strategy.ENTROPY, Strategy.MARGIN):
        fn = strategies.entropy if strategy is Strategy.ENTROPY else strategies.margin
        return {i: fn(p, aggregate) for i, p in zip(items, _predict(scorer, items), strict=True)}
    if strategy is Strategy.MC_DROPOUT:
        passes = [_predict(scorer, items, dropout=True) for _ in range(mc_samples)]
        return {i: strategies.bald([p[k] for p in passes], aggregate) for k, i in enumerate(items)}
    outputs = [_undo(a, _predict(scorer, items, transform=a.forward)) for a in augmentations]
    plain = _predict(scorer, items)
    return {i: strategies.variance([plain[k], *(o[k] for o in outputs)], aggregate) for k, i in enumerate(items)}


def _undo(aug: Augmentation, outputs: Sequence[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
    """Each output brought back onto its item's grid; outputs of one shape in one call (their channels
    stacked: the inverse acts on the spatial axes only), which saves a MONAI call per item."""
    arrays = [np.asarray(y) for y in outputs]
    if len(arrays) < 2 or len({a.shape for a in arrays}) != 1 or arrays[0].ndim < 3:
        return [aug.inverse(a) for a in arrays]
    c = arrays[0].shape[0]
    back = aug.inverse(np.concatenate(arrays))
    return [back[k * c:(k + 1) * c] for k in range(len(arrays))]


def _predict(scorer: Scorer, items: Sequence[str], **kw: Any) -> list[npt.NDArray[Any]]:
    out = list(scorer.predict(items, **kw))
    if len(out) != len(items):
        raise ValidationFailed(f"the scorer returned {len(out)} predictions for {len(items)} items",
                               hint="Return one prediction per item, in order.")
    return out


SCORE_HINT = ("compute them once per model version: `medcycle labels active score --model {version} --strategy "
              "{strategy} ...` (CLI), POST /v1/labels/active/scores (API) or medcycle.labels.active.score_items "
              "(SDK)")


class NotScored(Conflict):
    """The cache holds no score of a model version for some candidates, and no scorer was given to compute them."""


def _missing(version: str, measure: str, strategy: Strategy, missing: Sequence[str], of: int) -> NotScored:
    hint = SCORE_HINT.format(version=version, strategy=strategy.value)
    if measure == "features":
        hint += "; feature vectors are also cached by a scoring run of any strategy with --features"
    return NotScored(f"model version {version} has no cached {measure!r} scores for {len(missing)} of {of} items "
                     f"(e.g. {missing[0]})", hint=hint + ".")


@dataclass(frozen=True, slots=True)
class ScoreRun:
    """What a scoring run did: per measure, how many items it scored now and how many were cached already."""

    model_version: str
    strategy: Strategy
    measures: dict[str, dict[str, int]]

    def to_dict(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "strategy": self.strategy.value, "measures": self.measures}


def score_items(
    scorer: Scorer, items: Sequence[str], strategy: str, cache: ScoreCache, *, mc_samples: int = 10,
    aggregate: str = strategies.DEFAULT_AGGREGATE, augmentations: Sequence[Augmentation] | None = None,
    features: bool | None = None,
) -> ScoreRun:
    """Score ``items`` with the scorer's model version and cache what it has not scored yet (a scoring run).

    Afterwards :func:`select_batch` with ``model_version`` and no scorer ranks from the cache alone (the API
    does). ``features`` (default: for core-set only) also caches feature vectors, which core-set and the
    uncertainty-then-diversity hybrid (``diversity`` > 1) need.
    """
    how = parse_strategy(strategy)
    if how is Strategy.RANDOM:
        raise UsageError("random picks need no scores", hint="Ask for a batch with strategy random directly.")
    _check_options(mc_samples, aggregate)
    augs = _augs(how, augmentations)
    uniq = sorted(set(items))
    measures: dict[str, dict[str, int]] = {}
    if how is not Strategy.CORESET:
        measure = measure_of(how, mc_samples=mc_samples, augmentations=augs, aggregate=aggregate)
        assert measure is not None
        _known, fresh = _uncertainty(scorer, how, uniq, cache, measure, mc_samples, augs, aggregate)
        measures[measure] = {"scored": fresh, "cached": len(uniq) - fresh}
    if features or (features is None and how is Strategy.CORESET):
        _vectors, fresh = _features(scorer, scorer.version, "features", uniq, cache)
        measures["features"] = {"scored": fresh, "cached": len(uniq) - fresh}
    return ScoreRun(scorer.version, how, measures)


def _check_options(mc_samples: int, aggregate: str) -> None:
    if mc_samples < 2:
        raise UsageError(f"MC-dropout needs at least 2 passes, got {mc_samples}", hint="e.g. --mc-samples 10.")
    strategies.check_aggregate(aggregate)


def _augs(how: Strategy, augmentations: Sequence[Augmentation] | None) -> list[Augmentation]:
    if augmentations is not None:
        return list(augmentations)
    return tta_augmentations() if how is Strategy.TTA else []


def _uncertainty(scorer: Scorer | None, how: Strategy, pool: Sequence[str], cache: ScoreCache | None, measure: str,
                 mc_samples: int, augs: Sequence[Augmentation], aggregate: str,
                 version: str | None = None) -> tuple[dict[str, float], int]:
    """Each item's score under ``measure``: from the cache, the rest from the scorer (then cached)."""
    version = scorer.version if scorer is not None else version
    assert version is not None
    known = dict(cache.get(version, measure, pool)) if cache is not None else {}
    missing = [i for i in pool if i not in known]
    if missing and scorer is None:
        raise _missing(version, measure, how, missing, len(pool))
    fresh: dict[str, float] = {}
    for part in range(0, len(missing), 64):
        assert scorer is not None
        fresh.update(_score(scorer, how, missing[part:part + 64], mc_samples, augs, aggregate))
    if cache is not None and fresh:
        cache.put(version, measure, fresh)
    known.update(fresh)
    return known, len(fresh)


def select_batch(
    candidates: Sequence[str], size: int, strategy: str, *, scorer: Scorer | None = None,
    labelled: Sequence[str] = (), cache: ScoreCache | None = None, seed: int = 0, mc_samples: int = 10,
    augmentations: Sequence[Augmentation] | None = None, aggregate: str = strategies.DEFAULT_AGGREGATE,
    diversity: float = 1.0, model_version: str | None = None,
) -> Batch:
    """The next ``size`` items out of ``candidates`` by ``strategy`` (no database needed).

    ``labelled`` are the items already labelled: never picked, and what core-set keeps away from.
    ``aggregate`` turns a segmenter's per-pixel uncertainty into one number per item (``foreground``: the
    mean over the probable foreground; ``top<P>%``: the mean of the P% most uncertain pixels; ``mean``).
    ``diversity`` > 1 makes an uncertainty strategy a hybrid: k-center greedy on the features among the
    ``diversity × size`` most uncertain candidates.
    Without a ``scorer``, ``model_version`` names a version whose scores are all in ``cache`` (nothing is
    computed; :class:`NotScored` says what is missing and how to compute it).
    """
    how = parse_strategy(strategy)
    if size < 1:
        raise UsageError(f"batch size {size} is not positive", hint="e.g. --size 20.")
    _check_options(mc_samples, aggregate)
    if diversity < 1 or not math.isfinite(diversity):
        raise UsageError(f"the diversity factor {diversity} is below 1",
                         hint="1 ranks by uncertainty only; e.g. 3 picks k-center among the 3 × size most "
                              "uncertain.")
    done = set(labelled)
    pool = sorted(set(candidates) - done)
    if not pool:
        raise UsageError("no unlabelled candidates to choose from", hint="Give items that are not labelled yet.")
    version = (scorer.version if scorer is not None else model_version) if how is not Strategy.RANDOM else None
    if how is not Strategy.RANDOM and version is None:
        raise UsageError(f"the {how.value} strategy needs a model to score the items",
                         hint="Pass a model version (--model NAME@VERSION), or use --strategy random.")
    if scorer is None and version is not None and cache is None:
        raise UsageError("ranking by cached scores needs the score cache", hint="Pass the cache (or a scorer).")
    augs = _augs(how, augmentations)
    measure = measure_of(how, mc_samples=mc_samples, augmentations=augs, aggregate=aggregate)
    params: dict[str, Any] = {"mc_samples": mc_samples} if how is Strategy.MC_DROPOUT else {}
    if how is Strategy.TTA:
        params["augmentations"] = [a.name for a in augs]
    if aggregate != strategies.DEFAULT_AGGREGATE and how not in (Strategy.RANDOM, Strategy.CORESET):
        params["aggregate"] = aggregate
    hybrid = diversity > 1 and how not in (Strategy.RANDOM, Strategy.CORESET)
    if hybrid:
        params["diversity"] = diversity
    rng = np.random.default_rng(seed)
    scored = 0
    if how is Strategy.RANDOM:
        picked = [pool[i] for i in rng.choice(len(pool), size=min(size, len(pool)), replace=False)]
        scores: list[float | None] = [None] * len(picked)
    elif how is Strategy.CORESET:
        assert version is not None
        vectors, scored = _features(scorer, version, "features", pool + sorted(done), cache)
        lab = np.array([vectors[i] for i in sorted(done)]) if done else None
        x = np.array([vectors[i] for i in pool])
        order = strategies.k_center_greedy(x, size, labelled=lab, rng=rng)
        picked = [pool[i] for i in order]
        scores = [None] * len(picked)
    else:
        assert measure is not None
        known, scored = _uncertainty(scorer, how, pool, cache, measure, mc_samples, augs, aggregate, version)
        if hybrid:
            assert version is not None
            vectors, more = _features(scorer, version, "features", pool + sorted(done), cache)
            scored += more
            lab = np.array([vectors[i] for i in sorted(done)]) if done else None
            order = strategies.uncertain_then_diverse([known[i] for i in pool], np.array([vectors[i] for i in pool]),
                                                      size, factor=diversity, labelled=lab)
            picked = [pool[i] for i in order]
        else:
            picked = sorted(pool, key=lambda i: (-known[i], i))[:size]
        scores = [known[i] for i in picked]
    return Batch(how, version, tuple(picked), tuple(scores), measure, len(pool), len(done), scored, seed, params)


def _features(scorer: Scorer | None, version: str, measure: str, items: Sequence[str],
              cache: ScoreCache | None) -> tuple[dict[str, list[float]], int]:
    known = dict(cache.get_vectors(version, measure, items)) if cache is not None else {}
    missing = [i for i in items if i not in known]
    if missing and scorer is None:
        raise _missing(version, measure, Strategy.CORESET, missing, len(items))
    fresh: dict[str, list[float]] = {}
    for part in range(0, len(missing), 256):
        assert scorer is not None
        chunk = missing[part:part + 256]
        x = np.asarray(scorer.features(chunk), dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != len(chunk):
            raise ValidationFailed(f"the scorer returned features of shape {x.shape} for {len(chunk)} items",
                                   hint="Return one flat vector per item: shape (items, dimensions).")
        fresh.update({i: [float(v) for v in row] for i, row in zip(chunk, x, strict=True)})
    if cache is not None and fresh:
        cache.put_vectors(version, measure, fresh)
    known.update(fresh)
    return known, len(fresh)


# -- the database: candidates, recorded batches, tasks ----------------------------------------------------
def labelled_items(session: Session, items: Iterable[str]) -> set[str]:
    """Which of ``items`` are already labelled or being labelled: in any task, or with any annotation."""
    wanted = sorted(set(items))
    found: set[str] = set()
    for part in range(0, len(wanted), CHUNK):
        chunk = wanted[part:part + CHUNK]
        found.update(session.scalars(select(TaskItemRow.item_uid).where(TaskItemRow.item_uid.in_(chunk)).distinct()))
        found.update(session.scalars(select(AnnotationRow.item_uid).where(AnnotationRow.item_uid.in_(chunk))
                                     .distinct()))
    return found


def cached_measures(session: Session, model_version: str) -> dict[str, int]:
    """The measures cached for a model version, with how many items each holds."""
    rows = session.execute(select(ActiveScoreRow.measure, func.count()).where(
        ActiveScoreRow.model_version == model_version).group_by(ActiveScoreRow.measure))
    return {str(m): int(n) for m, n in rows}


def batch_ref(batch_id: int) -> str:
    return f"B-{batch_id}"


@dataclass(frozen=True, slots=True)
class BatchInfo:
    id: int
    batch: Batch
    task: str | None
    created_by: str
    created_at: datetime

    @property
    def ref(self) -> str:
        return batch_ref(self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "id": self.id, **self.batch.to_dict(), "task": self.task,
                "created_by": self.created_by, "created_at": self.created_at.isoformat()}

    @classmethod
    def of(cls, row: ActiveBatchRow) -> BatchInfo:
        batch = Batch(Strategy(row.strategy), row.model_version, tuple(row.items), tuple(row.scores),
                      row.params.get("measure"), row.n_candidates, row.n_labelled, int(row.params.get("scored", 0)),
                      row.seed, {k: v for k, v in row.params.items() if k not in ("measure", "scored")})
        return cls(row.id, batch, tasks.ref_of(row.task_id) if row.task_id else None, row.created_by, row.created_at)


def next_batch(
    session: Session, candidates: Sequence[str], size: int, strategy: str, *, scorer: Scorer | None = None,
    labelled: Sequence[str] | None = None, seed: int = 0, mc_samples: int = 10,
    augmentations: Sequence[Augmentation] | None = None, aggregate: str = strategies.DEFAULT_AGGREGATE,
    diversity: float = 1.0, model_version: str | None = None, actor: str = "system", via: str = "library",
) -> BatchInfo:
    """Choose and record the next batch; ``labelled`` defaults to the candidates already in a task or annotated.

    Scores come from (and go to) the database cache for the scorer's model version; without a scorer, from
    the cache of ``model_version`` alone (:class:`NotScored` if some are missing).
    """
    done = sorted(labelled_items(session, candidates)) if labelled is None else list(labelled)
    batch = select_batch(candidates, size, strategy, scorer=scorer, labelled=done, cache=SqlCache(session), seed=seed,
                         mc_samples=mc_samples, augmentations=augmentations, aggregate=aggregate,
                         diversity=diversity, model_version=model_version)
    row = ActiveBatchRow(model_version=batch.model_version, strategy=batch.strategy.value,
                         params={**batch.params, "measure": batch.measure, "scored": batch.scored}, seed=seed,
                         n_candidates=batch.n_candidates, n_labelled=batch.n_labelled, items=list(batch.items),
                         scores=[None if s is None or not math.isfinite(s) else s for s in batch.scores],
                         created_by=actor, created_at=utcnow())
    session.add(row)
    session.flush()
    audit.record(session, actor, "labels.active.batch", target_kind=TARGET_KIND, target_id=batch_ref(row.id), via=via,
                 strategy=batch.strategy.value, model_version=batch.model_version, items=len(batch.items),
                 candidates=batch.n_candidates, scored=batch.scored)
    return BatchInfo.of(row)


def get_batch_row(session: Session, ref: str | int) -> ActiveBatchRow:
    m = BATCH_RE.match(str(ref).strip())
    if not m:
        raise UsageError(f"{ref!r} is not a batch reference", hint="Write B-3 (or 3); list them with "
                         "`medcycle labels active list`.")
    row = session.get(ActiveBatchRow, int(m.group(1)))
    if row is None:
        raise NotFound(f"active-learning batch B-{m.group(1)} does not exist",
                       hint="List batches with `medcycle labels active list`.")
    return row


def get_batch(session: Session, ref: str | int) -> BatchInfo:
    return BatchInfo.of(get_batch_row(session, ref))


def list_batches(session: Session) -> list[BatchInfo]:
    return [BatchInfo.of(r) for r in session.scalars(select(ActiveBatchRow).order_by(ActiveBatchRow.id.desc()))]


def create_task_from_batch(
    session: Session, ref: str | int, *, schema: str, readers_per_item: int = 1, readers: Sequence[str] | None = None,
    due: str | date | datetime | None = None, adjudication_threshold: float | None = None, blinded: bool = True,
    seed: int = 0, name: str | None = None, actor: str = "system", via: str = "library",
) -> tasks.TaskInfo:
    """Make a recorded batch the next labeling task (once), assigned to qualified readers as any task is."""
    row = get_batch_row(session, ref)
    if row.task_id is not None:
        raise Conflict(f"{batch_ref(row.id)} already became {tasks.ref_of(row.task_id)}",
                       hint="Choose a new batch: `medcycle labels active next ...`.")
    certifications.expire(session, actor=actor, via=via)  # lapsed certifications do not get new work
    model = f", {row.model_version}" if row.model_version else ""
    items = tasks.TaskItems(tuple(row.items), f"active learning {batch_ref(row.id)} ({row.strategy}{model})")
    info = tasks.create_task(session, items, schema=schema, readers_per_item=readers_per_item, readers=readers,
                             due=due, adjudication_threshold=adjudication_threshold, blinded=blinded, seed=seed,
                             name=name, actor=actor, via=via)
    row.task_id = info.id
    session.flush()
    return info
