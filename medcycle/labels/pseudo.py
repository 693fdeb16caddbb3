"""Pseudo-labels: a model's predictions stored as annotations by the reader ``model:<version>``, then reviewed.

The labels layer does not run models: it takes a :data:`Predictor` (item uids → the model's annotations of
each, built by the application layer around a model version) or the predictions themselves.
:func:`mask_annotations` and :func:`class_annotations` turn a segmenter's or a classifier's probabilities
into annotations with a ``score`` (the model's confidence), for predictors to use.

:func:`store_pseudo_labels` keeps what the model said: annotations of stage ``model``, reader and tool
``model:<version>``, content-addressed like every annotation (storing the same predictions again adds
nothing). An item the model found nothing on is recorded as such (it is among the items; it has no
annotation). ``min_score`` drops low-confidence annotations first.

:func:`send_to_review` puts them in front of people *like any reader's reading*: a labeling task in which
the model is a reader of every item, its reading already submitted. Two ways:

- ``mode="senior"`` — the model is the only reader, and every item enters the adjudication queue (lowest
  confidence first): a senior reader accepts the model's reading (``adjudicate --choose model:<version>``)
  or replaces it with their own. Nothing becomes a label without a person's decision.
- ``mode="readers"`` — ``readers_per_item`` qualified readers also read each item (blinded: they do not see
  the model's labels; ``blinded=False`` shows them, as pre-annotations to correct). When the last reader
  submits, agreement is computed with the model among the readers, and items below
  ``adjudication_threshold`` go to a senior as any disagreement does.

Either way the task's label set (``labels set create --task``) is made as for any task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import UsageError, ValidationFailed
from medcycle.labels import readers, store, tasks
from medcycle.labels.assign import balanced_assignment
from medcycle.labels.direct_tasks import open_task
from medcycle.labels.model import Annotation, Kind, Mask
from medcycle.labels.schemas import SchemaInfo, resolve_schema
from medcycle.labels.tables import AdjudicationRow, ReaderRow, TaskItemRow
from medcycle.objects.base import ObjectStore
from medcycle.store.base import utcnow

Predictor = Callable[[Sequence[str]], Mapping[str, Sequence[Annotation]]]
"""Item uids → the model's annotations of each (an item left out, or with none, means nothing found)."""

REVIEW_METRIC = "model-confidence"
TARGET_KIND = "label_task"


class ReviewMode(StrEnum):
    SENIOR = "senior"
    READERS = "readers"


def model_reader(version: str) -> str:
    """``model:<version>``, checked as a reader name."""
    return readers.check_reader(f"model:{version}")


# -- from probabilities ---------------------------------------------------------------------------------
def mask_annotations(
    item: str, probabilities: Any, classes: Sequence[str], *, spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None, direction: Sequence[float] | None = None, min_voxels: int = 1,
) -> list[Annotation]:
    """A segmenter's ``(C, *spatial)`` probabilities (channel 0 = background) as one mask per class present.

    Each voxel goes to its most likely class; a class with fewer than ``min_voxels`` voxels is left out. The
    score is the mean probability of the chosen class over the class's voxels.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim not in (3, 4) or p.shape[0] != len(classes) + 1:
        raise ValidationFailed(f"probabilities of shape {p.shape} do not fit {len(classes)} class(es) + background",
                               hint="Give (1 + classes, rows, cols) or (1 + classes, slices, rows, cols).")
    winner = p.argmax(axis=0)
    out = []
    for c, label in enumerate(classes, start=1):
        region = winner == c
        if int(region.sum()) >= max(1, min_voxels):
            out.append(Annotation(item, label, Kind.MASK,
                                  Mask(region.astype(np.uint8), tuple(spacing) if spacing else None,
                                       tuple(origin) if origin else None, tuple(direction) if direction else None),
                                  score=round(float(p[c][region].mean()), 6)))
    return out


def class_annotations(item: str, probabilities: Any, classes: Sequence[str], *, multi_label: bool = False,
                      threshold: float = 0.5) -> list[Annotation]:
    """A classifier's class probabilities as class labels: the most likely one, or (multi-label) every one
    at or above ``threshold``; the score is the class's probability."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if p.shape[0] != len(classes):
        raise ValidationFailed(f"{p.shape[0]} probabilities for {len(classes)} classes",
                               hint="Give one probability per class, in the schema's class order.")
    chosen = [int(i) for i in np.flatnonzero(p >= threshold)] if multi_label else [int(p.argmax())]
    return [Annotation(item, classes[i], Kind.CLASS, score=round(float(p[i]), 6)) for i in chosen]


# -- storing --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PseudoLabels:
    model_version: str
    reader: str
    schema: str  # NAME@N
    items: tuple[str, ...]
    annotations: dict[str, tuple[store.AnnotationRecord, ...]]
    dropped: int  # below min_score

    def to_dict(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "reader": self.reader, "schema": self.schema,
                "items": len(self.items), "with_findings": sum(1 for v in self.annotations.values() if v),
                "annotations": sum(len(v) for v in self.annotations.values()), "dropped": self.dropped}


def _register_model(session: Session, reader: str, actor: str, via: str) -> None:
    if session.get(ReaderRow, reader) is None:  # visible in the reader list, never qualified for assignment
        readers.set_reader(session, reader, note="model (pseudo-labels)", actor=actor, via=via)


def store_pseudo_labels(
    session: Session, objects: ObjectStore, predictions: Mapping[str, Sequence[Annotation]], *, model_version: str,
    schema: str, items: Sequence[str] | None = None, min_score: float | None = None, actor: str = "system",
    via: str = "library",
) -> PseudoLabels:
    """Store a model's predictions as annotations of stage ``model`` by ``model:<version>``.

    ``items`` (default: the items predicted) are the items the model read; those without predictions are
    recorded as read with nothing found. Every annotation must fit the schema version.
    """
    reader = model_reader(model_version)
    row = resolve_schema(session, schema)
    info = SchemaInfo.of(row)
    read = list(dict.fromkeys(items if items is not None else predictions))
    extra = sorted(set(predictions) - set(read))
    if extra:
        raise ValidationFailed(f"predictions for {len(extra)} item(s) not among the items, e.g. {extra[0]}",
                               hint="List every predicted item in items (or leave items out).")
    if not read:
        raise UsageError("no items to pseudo-label", hint="Give the items the model read.")
    if min_score is not None and not 0.0 <= min_score <= 1.0:
        raise UsageError(f"min score {min_score} is not between 0 and 1", hint="e.g. --min-score 0.5.")
    dropped = 0
    kept: dict[str, list[Annotation]] = {}
    for item in read:
        anns = [Annotation(item, a.label, a.kind, a.geometry, reader, a.score, dict(a.attributes))
                for a in predictions.get(item, ())]
        for a in predictions.get(item, ()):
            if a.image != item:
                raise ValidationFailed(f"a prediction for item {item!r} is about {a.image!r}",
                                       hint="Return each item's own annotations under its uid.")
        if min_score is not None:
            dropped += sum(1 for a in anns if a.score is not None and a.score < min_score)
            anns = [a for a in anns if a.score is None or a.score >= min_score]
        try:
            info.check(anns)
        except ValidationFailed as exc:
            raise ValidationFailed(f"item {item}: {exc.message}", hint=exc.hint) from None
        kept[item] = anns
    _register_model(session, reader, actor, via)
    records = {item: tuple(store.save(session, objects, anns, item=item, level=info.level, reader=reader,
                                      stage=store.Stage.MODEL, tool=reader)) for item, anns in kept.items()}
    audit.record(session, actor, "labels.pseudo.store", target_kind="reader", target_id=reader, via=via,
                 schema=info.ref, items=len(read), annotations=sum(len(v) for v in records.values()), dropped=dropped)
    return PseudoLabels(model_version, reader, info.ref, tuple(read), records, dropped)


def pseudo_label(
    session: Session, objects: ObjectStore, items: Sequence[str], predictor: Predictor, *, model_version: str,
    schema: str, min_score: float | None = None, batch: int = 64, actor: str = "system", via: str = "library",
) -> PseudoLabels:
    """Run ``predictor`` over ``items`` (``batch`` at a time) and store what it found."""
    predictions: dict[str, Sequence[Annotation]] = {}
    wanted = list(dict.fromkeys(items))
    for part in range(0, len(wanted), max(1, batch)):
        chunk = wanted[part:part + max(1, batch)]
        got = predictor(chunk)
        stray = sorted(set(got) - set(chunk))
        if stray:
            raise ValidationFailed(f"the predictor answered for item(s) it was not asked about, e.g. {stray[0]}",
                                   hint="Return predictions keyed by the item uids given.")
        predictions.update(got)
    return store_pseudo_labels(session, objects, predictions, model_version=model_version, schema=schema,
                               items=wanted, min_score=min_score, actor=actor, via=via)


# -- review ---------------------------------------------------------------------------------------------
def send_to_review(
    session: Session, objects: ObjectStore, pseudo: PseudoLabels, *, mode: str = ReviewMode.SENIOR,
    readers_per_item: int = 1, reviewers: Sequence[str] | None = None, adjudication_threshold: float | None = None,
    blinded: bool = True, due: str | date | datetime | None = None, seed: int = 0, name: str | None = None,
    actor: str = "system", via: str = "library",
) -> tasks.TaskInfo:
    """A task in which the model is a reader of every pseudo-labelled item (its reading submitted).

    ``mode="senior"``: every item waits in the adjudication queue for a senior reader (lowest model confidence
    first). ``mode="readers"``: ``readers_per_item`` qualified readers (from ``reviewers``, default all
    qualified) read each item too; ``adjudication_threshold`` sends disagreements to a senior.
    """
    try:
        how = ReviewMode(mode)
    except ValueError:
        raise UsageError(f"{mode!r} is not a review mode", hint="Use senior or readers.") from None
    schema_row = resolve_schema(session, pseudo.schema)
    items = list(pseudo.items)
    if how is ReviewMode.SENIOR:
        if adjudication_threshold is not None:
            raise UsageError("a senior review sends every item to adjudication; it takes no threshold",
                             hint="Drop --adjudication-threshold, or use --mode readers.")
        assignment = {i: [pseudo.reader] for i in items}
    else:
        pool = [r.name for r in readers.list_readers(session, qualified=True) if not r.name.startswith("model:")]
        if reviewers is not None:
            named = [readers.check_reader(r) for r in reviewers]
            unqualified = sorted(set(named) - set(pool))
            if unqualified:
                raise UsageError(f"reader(s) {', '.join(unqualified)} are not qualified",
                                 hint="Review with qualified readers (they pass an exam, or an admin qualifies them).")
            pool = named
        if adjudication_threshold is not None and not 0.0 <= adjudication_threshold <= 1.0:
            raise UsageError(f"adjudication threshold {adjudication_threshold} is not between 0 and 1",
                             hint="e.g. --adjudication-threshold 0.8.")
        humans = balanced_assignment(items, pool, readers_per_item, seed=seed)
        assignment = {i: [*humans[i], pseudo.reader] for i in items}
    row = open_task(session, schema_row, assignment, origin=f"pseudo-labels of {pseudo.reader} ({how.value} review)",
                    name=name, blinded=blinded, seed=seed, due_at=tasks.parse_due(due),
                    adjudication_threshold=adjudication_threshold if how is ReviewMode.READERS else None,
                    submitted=[pseudo.reader], actor=actor, via=via)
    readings = {i: [store.load(objects, r) for r in pseudo.annotations.get(i, ())] for i in items}
    for item in items:  # the model's reading of the task, like any reader's (stage read, in the task)
        store.save(session, objects, readings[item], item=item, level=schema_row.level, reader=pseudo.reader,
                   task_id=row.id, stage=store.Stage.READ, tool=pseudo.reader)
    if how is ReviewMode.SENIOR:
        now = utcnow()
        for item in items:
            confidence = confidence_of(readings[item])
            if confidence is None:  # nothing found (reviewed last), or findings without a score (first)
                confidence = 1.0 if not readings[item] else 0.0
            session.add(AdjudicationRow(task_id=row.id, item_uid=item, state="open", metric=REVIEW_METRIC,
                                        agreement=confidence, threshold=1.0, opened_at=now, annotation_ids=[]))
        for item_row in session.scalars(select(TaskItemRow).where(TaskItemRow.task_id == row.id)):
            item_row.state = tasks.ItemState.ADJUDICATION.value
        session.flush()
    audit.record(session, actor, "labels.pseudo.review", target_kind=TARGET_KIND, target_id=tasks.ref_of(row.id),
                 via=via, reader=pseudo.reader, mode=how.value, items=len(items))
    return tasks.task_info(session, row)


def confidence_of(annotations: Sequence[Annotation]) -> float | None:
    """The mean score of a reading (``None`` when no annotation has one)."""
    scores = [a.score for a in annotations if a.score is not None]
    return float(np.mean(scores)) if scores else None
