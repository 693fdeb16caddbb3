"""What the labels pages show, put together from the labels library (no rules of its own are decided here).

* :func:`form_annotations` turns the labeling form (class choices and the boxes drawn on the canvas, as
  JSON) into annotations through :func:`medcycle.labels.store.annotation_from_dict`, so a bad box gets the
  same error, naming the field, as it would through the API.
* :func:`item_consensus` is the consensus a reviewer sees next to the readings: class majority (ties go to
  the class listed first in the schema), box clustering, mask majority vote — the library's
  :mod:`medcycle.labels.consensus`, on the item's submitted readings (a reader who read the item and drew
  nothing counts as an empty reading).
* :func:`task_agreement` is the reader × reader agreement of a whole task: Cohen's kappa and percent
  agreement for class labels (with Krippendorff's alpha over all readers), matched-box F1 for boxes, Dice
  per class for masks — from :mod:`medcycle.labels.agreement` and friends.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medcycle.errors import ValidationFailed
from medcycle.labels import store
from medcycle.labels.agreement import (
    Ratings,
    ReaderMatrix,
    kappa_matrix,
    krippendorff_alpha,
    percent_agreement_matrix,
)
from medcycle.labels.box_agreement import box_matrix
from medcycle.labels.consensus import MaskMethod, cluster_boxes, majority_class, mask_consensus
from medcycle.labels.mask_agreement import MaskMetric, mask_matrix
from medcycle.labels.model import Annotation, Box, Kind, Mask, Polygon
from medcycle.labels.policy import json_number
from medcycle.labels.schemas import SchemaInfo
from medcycle.labels.tables import AdjudicationRow, AssignmentRow, TaskItemRow
from medcycle.objects.base import ObjectStore

MAX_BOXES = 500  # boxes in one submission from the page
MAX_SECONDS = 7 * 24 * 3600.0  # time on one item: a week means the page was left open, not read


# -- the labeling form ------------------------------------------------------------------------------
def parse_seconds(value: str) -> float | None:
    """The time the page measured on the item (blank: not measured, e.g. without JavaScript)."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
        raise ValidationFailed(f"seconds: {value!r} is not a time spent on the item",
                               hint="The page measures it; reload the item and submit again.")
    return round(seconds, 1)


def form_annotations(item: str, reader: str, classes: Sequence[str], boxes: str) -> list[Annotation]:
    """The class labels chosen and the boxes drawn (``[{"label", "box": [x0, y0, x1, y1], "z"}]``) as annotations."""
    out = [store.annotation_from_dict({"label": c, "kind": "class"}, item=item, reader=reader, where=f"classes[{i}]")
           for i, c in enumerate(dict.fromkeys(c for c in classes if c))]
    text = (boxes or "").strip()
    if not text:
        return out
    try:
        drawn = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"boxes: not JSON ({exc.msg} at character {exc.pos})",
                               hint="Draw the boxes on the image; the page fills this field.") from None
    if not isinstance(drawn, list):
        raise ValidationFailed("boxes: expected a list of boxes", hint='e.g. [{"label": "nodule", "box": [x0, y0, '
                               'x1, y1], "z": 3}].')
    if len(drawn) > MAX_BOXES:
        raise ValidationFailed(f"boxes: {len(drawn)} boxes in one reading (at most {MAX_BOXES})",
                               hint="Submit the item through the API if it really has that many findings.")
    for i, entry in enumerate(drawn):
        if not isinstance(entry, dict):
            raise ValidationFailed(f"boxes[{i}]: expected a mapping with label and box", hint="Draw the box again.")
        out.append(store.annotation_from_dict({"label": entry.get("label"), "kind": "box", "box": entry.get("box"),
                                               "z": entry.get("z")}, item=item, reader=reader, where=f"boxes[{i}]"))
    return out


def boxes_json(annotations: Sequence[Annotation]) -> str:
    """Boxes in the form field's JSON (to show a reading again, e.g. after a refused submission)."""
    return json.dumps([{"label": a.label, "box": [g.x0, g.y0, g.x1, g.y1], "z": g.z}
                       for a in annotations if isinstance(g := a.geometry, Box)])


def describe(annotation: Annotation) -> str:
    """One annotation in a few words, for the tables next to the images."""
    g = annotation.geometry
    where = ""
    if isinstance(g, Box):
        where = f" [{g.x0:g}, {g.y0:g}, {g.x1:g}, {g.y1:g}]" + (f" on slice {g.z}" if g.z is not None else "")
    elif isinstance(g, Polygon):
        where = f" of {len(g.points)} points" + (f" on slice {g.z}" if g.z is not None else "")
    elif isinstance(g, Mask):
        shape = "×".join(str(n) for n in g.array.shape)
        where = f" {shape}, {int(g.binary.sum())} px" + (f" on slice {g.z}" if g.z is not None else "")
    kind = annotation.kind.value if isinstance(annotation.kind, Kind) else str(annotation.kind)
    return f"{annotation.label} ({kind}{where})"


# -- consensus of one item --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConsensusView:
    annotations: tuple[Annotation, ...]
    methods: tuple[str, ...]
    notes: tuple[str, ...]


def item_consensus(item: str, readings: Mapping[str, Sequence[Annotation]], schema: SchemaInfo) -> ConsensusView:
    """The consensus of the submitted ``readings`` (``reader → annotations``) of ``item`` under ``schema``."""
    readers = sorted(readings)
    if len(readers) < 2:
        return ConsensusView((), (), ("A consensus needs at least two submitted readings.",))
    anns = [a for r in readers for a in readings[r]]
    read = {r: [item] for r in readers}
    out: list[Annotation] = []
    methods: list[str] = []
    notes: list[str] = []
    kinds = schema.kinds
    if Kind.CLASS in kinds and any(a.kind == Kind.CLASS for a in anns):
        if schema.multi_label:
            notes.append("Several class labels per item are allowed here: no class majority is formed.")
        else:
            try:
                classes = majority_class(anns, schema.class_names)
            except ValidationFailed as exc:
                notes.append(f"Class majority: {exc.message}.")
            else:
                out.extend(classes.annotations)
                methods.append("class majority")
                if classes.ties:
                    notes.append("The class votes tied: the class listed first in the schema was taken.")
    if Kind.BOX in kinds:
        try:
            out.extend(cluster_boxes(anns, read=read).annotations)
            methods.append("box clustering (IoU ≥ 0.5, more than half of the readers)")
        except ValidationFailed as exc:
            notes.append(f"Box clustering: {exc.message}.")
    mask_classes = [c.name for c in schema.classes if Kind.MASK in c.kinds]
    for label in mask_classes:
        try:
            out.extend(mask_consensus(anns, label, method=MaskMethod.MAJORITY, read=read).annotations)
        except ValidationFailed as exc:
            notes.append(f"Mask majority of {label}: {exc.message}.")
    if mask_classes:
        methods.append("mask majority vote")
    if Kind.POLYGON in kinds:
        notes.append("Polygons have no consensus method: review them reader by reader.")
    return ConsensusView(tuple(out), tuple(methods), tuple(notes))


# -- the items of a task ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ItemLine:
    item: str
    state: str
    agreement: float | None
    metric: str | None
    readers: dict[str, str]  # reader -> assigned / submitted
    seconds: float  # all readers together


def task_items(session: Session, task_id: int, *, state: str | None, page: int,
               per_page: int) -> tuple[int, list[ItemLine]]:
    """The number of items (in ``state``, if given) and page ``page`` of them, lowest agreement first."""
    where = [TaskItemRow.task_id == task_id] + ([TaskItemRow.state == state] if state else [])
    total = int(session.scalar(select(func.count()).select_from(TaskItemRow).where(*where)) or 0)
    rows = list(session.execute(
        select(TaskItemRow.item_uid, TaskItemRow.state, TaskItemRow.agreement, TaskItemRow.metric).where(*where)
        .order_by(TaskItemRow.agreement.is_(None), TaskItemRow.agreement, TaskItemRow.position)
        .limit(per_page).offset((page - 1) * per_page)))
    readers: dict[str, dict[str, str]] = defaultdict(dict)
    seconds: dict[str, float] = defaultdict(float)
    if rows:
        stmt = (select(AssignmentRow.item_uid, AssignmentRow.reader, AssignmentRow.state, AssignmentRow.seconds)
                .where(AssignmentRow.task_id == task_id, AssignmentRow.item_uid.in_([r[0] for r in rows]))
                .order_by(AssignmentRow.reader))
        for uid, reader, assignment, secs in session.execute(stmt):
            readers[uid][reader] = assignment
            seconds[uid] += float(secs or 0.0)
    return total, [ItemLine(uid, s, a, m, readers[uid], seconds[uid]) for uid, s, a, m in rows]


def open_adjudications(session: Session, task_id: int | None = None) -> int:
    stmt = select(func.count()).select_from(AdjudicationRow).where(AdjudicationRow.state == "open")
    if task_id is not None:
        stmt = stmt.where(AdjudicationRow.task_id == task_id)
    return int(session.scalar(stmt) or 0)


# -- agreement of a task ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MatrixView:
    title: str
    matrix: ReaderMatrix

    def chart(self) -> dict[str, Any]:
        values = [[json_number(float(v)) for v in row] for row in self.matrix.values]
        return {"title": self.title, "metric": self.matrix.metric, "readers": list(self.matrix.readers),
                "values": [[v if isinstance(v, float) else None for v in row] for row in values],
                "shared": self.matrix.shared.tolist()}


@dataclass(frozen=True, slots=True)
class AgreementView:
    matrices: tuple[MatrixView, ...]
    summary: tuple[tuple[str, float | None], ...]
    notes: tuple[str, ...]
    readings: int  # submitted (reader, item) pairs
    item_agreement: tuple[float, ...]  # per scored item, for the histogram

    def chart(self) -> dict[str, Any]:
        return {"matrices": [m.chart() for m in self.matrices], "items": list(self.item_agreement)}


def _matrix(title: str, build: Callable[[], ReaderMatrix], notes: list[str]) -> MatrixView | None:
    try:
        return MatrixView(title, build())
    except ValidationFailed as exc:
        notes.append(f"{title}: {exc.message}.")
        return None


def task_agreement(session: Session, objects: ObjectStore, task_id: int, schema: SchemaInfo) -> AgreementView:
    """Reader × reader agreement over the submitted readings of a task (every item two readers share)."""
    read: dict[str, set[str]] = defaultdict(set)
    for reader, uid in session.execute(select(AssignmentRow.reader, AssignmentRow.item_uid).where(
            AssignmentRow.task_id == task_id, AssignmentRow.state == "submitted")):
        read[reader].add(uid)
    scored = tuple(float(v) for v in session.scalars(select(TaskItemRow.agreement).where(
        TaskItemRow.task_id == task_id, TaskItemRow.agreement.is_not(None))) if v is not None)
    n_readings = sum(len(v) for v in read.values())
    notes: list[str] = []
    if len(read) < 2:
        notes.append("Agreement needs at least two readers with submitted readings.")
        return AgreementView((), (), tuple(notes), n_readings, scored)
    kinds = schema.kinds
    records = [r for r in store.find(session, task_id=task_id, stage=store.Stage.READ)
               if r.item in read.get(r.reader, ()) and (r.kind is not Kind.MASK or Kind.MASK in kinds)]
    anns = [store.load(objects, r) for r in records]
    matrices: list[MatrixView | None] = []
    summary: list[tuple[str, float | None]] = []
    if Kind.CLASS in kinds:
        if schema.multi_label:
            notes.append("Class labels: several per item are allowed, so kappa (one class per reader and item) "
                         "is not computed.")
        else:
            categories = [c.name for c in schema.classes if Kind.CLASS in c.kinds]
            table: dict[str, dict[str, str | None]] = {r: dict.fromkeys(sorted(read[r])) for r in sorted(read)}
            for a in anns:
                if a.kind == Kind.CLASS and a.reader is not None:
                    table[a.reader][a.image] = a.label
            ratings = Ratings.from_table(table, categories)
            matrices.append(_matrix("Cohen's kappa (class labels)", lambda: kappa_matrix(ratings), notes))
            matrices.append(_matrix("Percent agreement (class labels)", lambda: percent_agreement_matrix(ratings),
                                    notes))
            try:
                alpha = krippendorff_alpha(ratings)
                summary.append(("Krippendorff's alpha, nominal (all readers)", None if math.isnan(alpha) else alpha))
            except ValidationFailed as exc:
                notes.append(f"Krippendorff's alpha: {exc.message}.")
    reading_sets = {r: sorted(items) for r, items in read.items()}
    if Kind.BOX in kinds:
        matrices.append(_matrix("Matched-box F1 (IoU ≥ 0.5)", lambda: box_matrix(anns, read=reading_sets), notes))
    for c in schema.classes:
        if Kind.MASK in c.kinds:
            matrices.append(_matrix(f"Dice of {c.name} masks", partial(mask_matrix, anns, c.name,
                                                                      metric=MaskMetric.DICE, read=reading_sets),
                                    notes))
    if Kind.POLYGON in kinds:
        notes.append("Polygons: see the agreement per item (matched F1) in the task's item table.")
    if scored:
        summary.append(("Mean item agreement", sum(scored) / len(scored)))
    return AgreementView(tuple(m for m in matrices if m is not None), tuple(summary), tuple(notes), n_readings,
                         scored)


@dataclass(frozen=True, slots=True)
class Scorecards:
    """The task's readers' scorecards (:mod:`medcycle.labels.scorecards`) and their periods, ready to chart."""

    cards: tuple[Any, ...]  # medcycle.labels.scorecards.Scorecard

    def chart(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for card in self.cards:
            x, seconds, sensitivity, kappa = [], [], [], []
            for p in card.periods:
                gold = p.honeypots or p.exams
                x.append(p.start.isoformat())
                seconds.append(p.seconds_per_study)
                sensitivity.append(gold.metrics.get("sensitivity") if gold else None)
                kappa.append(gold.metrics.get("kappa") if gold else None)
            out[card.reader] = {"x": x, "seconds": seconds, "sensitivity": sensitivity, "kappa": kappa}
        return out


def task_scorecards(session: Session, readers: Sequence[str]) -> Scorecards | None:
    """The readers' scorecards by month; ``None`` when reader qualification is not part of this installation."""
    try:
        from medcycle.labels import scorecards
    except ImportError:  # pragma: no cover - the qualification modules ship with the labels layer
        return None
    return Scorecards(tuple(scorecards.scorecard(session, r) for r in readers))
