"""Active learning: which items should readers label next, according to a model — and the task that labels them.

The labels layer sits below the models, so it never loads one. It takes a :class:`Scorer`: anything that,
for a list of item uids, returns the model's class probabilities (optionally with dropout on, optionally on
inputs passed through a transform) and feature vectors. The application layer builds one around a model
version (the CLI and API wire it); tests and ``bench/active_learning.py`` build their own.

Strategies (:mod:`.strategies` has the arithmetic):

==============  ========================================================================================
``random``      a seeded uniform sample (the baseline; needs no scorer)
``entropy``     highest mean predictive entropy first
``margin``      smallest gap between the two most likely classes first
``mc-dropout``  highest BALD over ``mc_samples`` passes with dropout on
``tta``         highest variance under test-time augmentations (MONAI ``Flip`` and ``Rotate90``, undone on
                the output before comparing)
``coreset``     k-center greedy on the scorer's features, away from what is already labelled
==============  ========================================================================================

**Scores are cached per model version** (:class:`ScoreCache`; in the database: ``label_active_scores``,
keyed by model version, measure — e.g. ``mc-dropout:bald:t=10`` — and item), so asking for the next batch
again, or with another batch size, scores only items the version has not scored. A new model version
scores afresh. Random and core-set picks are not cached as scores (they depend on the seed and on what is
labelled); core-set caches the feature vectors instead.

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
from sqlalchemy import delete, select
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


def measure_of(strategy: Strategy, *, mc_samples: int, augmentations: Sequence[Augmentation]) -> str | None:
    if strategy is Strategy.MC_DROPOUT:
        return f"mc-dropout:bald:t={mc_samples}"
    if strategy is Strategy.TTA:
        return "tta:variance:" + ",".join(a.name for a in augmentations)
    if strategy is Strategy.CORESET:
        return "features"
    return None if strategy is Strategy.RANDOM else strategy.value


def _score(scorer: Scorer, strategy: Strategy, items: Sequence[str], mc_samples: int,
           augmentations: Sequence[Augmentation]) -> dict[str, float]:
    if strategy in (Strategy.ENTROPY, Strategy.MARGIN):
        fn = strategies.entropy if strategy is Strategy.ENTROPY else strategies.margin
        return {i: fn(p) for i, p in zip(items, _predict(scorer, items), strict=True)}
    if strategy is Strategy.MC_DROPOUT:
        passes = [_predict(scorer, items, dropout=True) for _ in range(mc_samples)]
        return {i: strategies.bald([p[k] for p in passes]) for k, i in enumerate(items)}
    outputs = [[a.inverse(np.asarray(y)) for y in _predict(scorer, items, transform=a.forward)]
               for a in augmentations]
    plain = _predict(scorer, items)
    return {i: strategies.variance([plain[k], *(o[k] for o in outputs)]) for k, i in enumerate(items)}


def _predict(scorer: Scorer, items: Sequence[str], **kw: Any) -> list[npt.NDArray[Any]]:
    out = list(scorer.predict(items, **kw))
    if len(out) != len(items):
        raise ValidationFailed(f"the scorer returned {len(out)} predictions for {len(items)} items",
                               hint="Return one prediction per item, in order.")
    return out


def select_batch(
    candidates: Sequence[str], size: int, strategy: str, *, scorer: Scorer | None = None,
    labelled: Sequence[str] = (), cache: ScoreCache | None = None, seed: int = 0, mc_samples: int = 10,
    augmentations: Sequence[Augmentation] | None = None,
) -> Batch:
    """The next ``size`` items out of ``candidates`` by ``strategy`` (no database needed).

    ``labelled`` are the items already labelled: never picked, and what core-set keeps away from.
    """
    try:
        how = Strategy(strategy)
    except ValueError:
        raise UsageError(f"{strategy!r} is not a strategy",
                         hint=f"Choose one of: {', '.join(s.value for s in Strategy)}.") from None
    if size < 1:
        raise UsageError(f"batch size {size} is not positive", hint="e.g. --size 20.")
    if mc_samples < 2:
        raise UsageError(f"MC-dropout needs at least 2 passes, got {mc_samples}", hint="e.g. --mc-samples 10.")
    done = set(labelled)
    pool = sorted(set(candidates) - done)
    if not pool:
        raise UsageError("no unlabelled candidates to choose from", hint="Give items that are not labelled yet.")
    if how is not Strategy.RANDOM and scorer is None:
        raise UsageError(f"the {how.value} strategy needs a model to score the items",
                         hint="Pass a model version (or use --strategy random).")
    augs = list(augmentations) if augmentations is not None else (tta_augmentations() if how is Strategy.TTA else [])
    measure = measure_of(how, mc_samples=mc_samples, augmentations=augs)
    version = scorer.version if scorer is not None and how is not Strategy.RANDOM else None
    params: dict[str, Any] = {"mc_samples": mc_samples} if how is Strategy.MC_DROPOUT else {}
    if how is Strategy.TTA:
        params["augmentations"] = [a.name for a in augs]
    rng = np.random.default_rng(seed)
    scored = 0
    if how is Strategy.RANDOM:
        picked = [pool[i] for i in rng.choice(len(pool), size=min(size, len(pool)), replace=False)]
        scores: list[float | None] = [None] * len(picked)
    elif how is Strategy.CORESET:
        assert scorer is not None and version is not None and measure is not None
        vectors, scored = _features(scorer, version, measure, pool + sorted(done), cache)
        lab = np.array([vectors[i] for i in sorted(done)]) if done else None
        x = np.array([vectors[i] for i in pool])
        order = strategies.k_center_greedy(x, size, labelled=lab, rng=rng)
        picked = [pool[i] for i in order]
        scores = [None] * len(picked)
    else:
        assert scorer is not None and version is not None and measure is not None
        known = dict(cache.get(version, measure, pool)) if cache is not None else {}
        missing = [i for i in pool if i not in known]
        fresh: dict[str, float] = {}
        for part in range(0, len(missing), 64):
            fresh.update(_score(scorer, how, missing[part:part + 64], mc_samples, augs))
        if cache is not None and fresh:
            cache.put(version, measure, fresh)
        known.update(fresh)
        scored = len(fresh)
        ranked = sorted(pool, key=lambda i: (-known[i], i))[:size]
        picked, scores = ranked, [known[i] for i in ranked]
    return Batch(how, version, tuple(picked), tuple(scores), measure, len(pool), len(done), scored, seed, params)


def _features(scorer: Scorer, version: str, measure: str, items: Sequence[str],
              cache: ScoreCache | None) -> tuple[dict[str, list[float]], int]:
    known = dict(cache.get_vectors(version, measure, items)) if cache is not None else {}
    missing = [i for i in items if i not in known]
    fresh: dict[str, list[float]] = {}
    for part in range(0, len(missing), 256):
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
    augmentations: Sequence[Augmentation] | None = None, actor: str = "system", via: str = "library",
) -> BatchInfo:
    """Choose and record the next batch; ``labelled`` defaults to the candidates already in a task or annotated.

    Scores come from (and go to) the database cache for the scorer's model version.
    """
    done = sorted(labelled_items(session, candidates)) if labelled is None else list(labelled)
    batch = select_batch(candidates, size, strategy, scorer=scorer, labelled=done, cache=SqlCache(session), seed=seed,
                         mc_samples=mc_samples, augmentations=augmentations)
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
