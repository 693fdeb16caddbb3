"""What the labels pages show, put together from the labels library (no rules of its own are decided here).

* :func:`form_annotations` turns the labeling form (class choices and the boxes drawn on the canvas, as
  JSON) into annotations through :func:`medcycle.labels.store.annotation_from_dict`, so a bad box gets the
  same error, naming the field, as it would through the API.
* :func:`drawn_annotations` turns what the reader drew on the item page — boxes, polygons and painted masks
  (JSON in hidden form fields) — into annotations, checked against the image they were drawn on (every
  vertex inside it, a mask the size of its slices, a slice that exists) and against the task's schema (a
  class that allows that kind), each error naming the field (``polygons[1].points[3]``). Masks come as
  row-major run lengths per class and slice and are stored one per class: ``(rows, cols)`` on a 2D image,
  ``(slices, rows, cols)`` on a volume, on the grid of :func:`medcycle.web.labels_images.stack_geometry`.
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

import numpy as np
import numpy.typing as npt
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
from medcycle.labels.formats.rle import unruns
from medcycle.labels.mask_agreement import MaskMetric, mask_matrix
from medcycle.labels.model import Annotation, Box, Kind, Mask, Polygon
from medcycle.labels.policy import json_number
from medcycle.labels.schemas import SchemaInfo
from medcycle.labels.tables import AdjudicationRow, AssignmentRow, TaskItemRow
from medcycle.objects.base import ObjectStore
from medcycle.web.labels_images import Grid

MAX_BOXES = 500  # boxes in one submission from the page
MAX_POLYGONS = 500  # polygons in one submission from the page
MAX_VERTICES = 10_000  # vertices of one polygon
MAX_MASK_PIXELS = 1 << 28  # painted slices × rows × cols in one submission (256 Mi pixels)
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


def _entries(text: str, field: str, example: str, limit: int) -> list[dict[str, Any]]:
    """The JSON list of mappings a drawing field holds (blank: none)."""
    text = (text or "").strip()
    if not text:
        return []
    try:
        drawn = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"{field}: not JSON ({exc.msg} at character {exc.pos})",
                               hint="Draw on the image; the page fills this field.") from None
    if not isinstance(drawn, list):
        raise ValidationFailed(f"{field}: expected a list", hint=f"e.g. {example}.")
    if len(drawn) > limit:
        raise ValidationFailed(f"{field}: {len(drawn)} entries in one reading (at most {limit})",
                               hint="Submit the item through the API if it really needs that many.")
    for i, entry in enumerate(drawn):
        if not isinstance(entry, dict):
            raise ValidationFailed(f"{field}[{i}]: expected a mapping with label", hint=f"e.g. {example}.")
    return drawn


def _check_class(label: Any, kind: Kind, schema: SchemaInfo, where: str) -> str:
    if not isinstance(label, str) or not label:
        raise ValidationFailed(f"{where}.label: give the class name", hint="Choose the class before drawing.")
    cls = schema.label_class(label)
    allowed = ", ".join(c.name for c in schema.classes if kind in c.kinds) or "none"
    if cls is None:
        raise ValidationFailed(f"{where}.label: {label!r} is not a class of {schema.ref}",
                               hint=f"Choose a {kind.value} class: {allowed}.")
    if kind not in cls.kinds:
        raise ValidationFailed(f"{where}.label: {label!r} may be a {'/'.join(k.value for k in cls.kinds)} in "
                               f"{schema.ref}, not a {kind.value}", hint=f"Choose a {kind.value} class: {allowed}.")
    return label


def _check_slice(z: Any, grid: Grid, where: str, *, required: bool) -> int | None:
    if z is None:
        if required and grid.slices > 1:
            raise ValidationFailed(f"{where}.z: this item has {grid.slices} slices; say which one it was drawn on",
                                   hint="Draw it again: the page records the slice shown.")
        return None
    if not isinstance(z, int) or isinstance(z, bool) or not 0 <= z < grid.slices:
        raise ValidationFailed(f"{where}.z: {z!r} is not a slice of this item (0 to {grid.slices - 1})",
                               hint="Slices count from 0; draw it again on the slice shown.")
    return z


def _inside(x: float, y: float, grid: Grid) -> bool:
    return 0 <= x <= grid.width and 0 <= y <= grid.height


def _outside(where: str, x: float, y: float, grid: Grid) -> ValidationFailed:
    return ValidationFailed(f"{where}: ({x:g}, {y:g}) lies outside the {grid.width} × {grid.height} image",
                            hint=f"Coordinates are pixels: x from 0 to {grid.width} (columns), y from 0 to "
                            f"{grid.height} (rows).")


def _polygon(entry: Mapping[str, Any], item: str, reader: str, schema: SchemaInfo, grid: Grid,
             where: str) -> Annotation:
    label = _check_class(entry.get("label"), Kind.POLYGON, schema, where)
    points = entry.get("points")
    if not isinstance(points, list):
        raise ValidationFailed(f"{where}.points: give the vertices as [[x, y], …]", hint="Click at least three.")
    if len(points) < 3:
        raise ValidationFailed(f"{where}.points: a polygon needs at least 3 vertices, got {len(points)}",
                               hint="Click at least three points on the image, then close the polygon.")
    if len(points) > MAX_VERTICES:
        raise ValidationFailed(f"{where}.points: {len(points)} vertices (at most {MAX_VERTICES})",
                               hint="Outline it with fewer points.")
    z = _check_slice(entry.get("z"), grid, where, required=True)
    ann = store.annotation_from_dict({"label": label, "kind": "polygon", "points": points, "z": z}, item=item,
                                     reader=reader, where=where)
    assert isinstance(ann.geometry, Polygon)
    for i, (x, y) in enumerate(ann.geometry.points):
        if not _inside(x, y, grid):
            raise _outside(f"{where}.points[{i}]", x, y, grid)
    xs = np.array([p[0] for p in ann.geometry.points])
    ys = np.array([p[1] for p in ann.geometry.points])
    if abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))) < 1e-9:
        raise ValidationFailed(f"{where}.points: the vertices lie on one line (the polygon encloses nothing)",
                               hint="Outline an area: at least three points not on one line.")
    return ann


def _mask_plane(entry: Mapping[str, Any], grid: Grid, where: str) -> npt.NDArray[np.bool_]:
    rows, cols = entry.get("rows"), entry.get("columns")
    if (rows, cols) != (grid.height, grid.width):
        raise ValidationFailed(f"{where}: a mask of {rows!r} × {cols!r} (rows × columns) does not fit the image's "
                               f"{grid.height} × {grid.width}", hint="Paint it again on this item: the page "
                               "paints on the image's own pixels.")
    counts = entry.get("counts")
    if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        raise ValidationFailed(f"{where}.counts: expected run lengths (whole numbers)",
                               hint="Row-major runs, starting with a run of background.")
    if len(counts) > grid.width * grid.height + 1:
        raise ValidationFailed(f"{where}.counts: more runs than pixels", hint="Paint it again.")
    try:
        flat = unruns(counts, grid.width * grid.height)
    except ValueError as exc:
        raise ValidationFailed(f"{where}.counts: {exc}", hint="Paint it again: the runs must cover the image "
                               "exactly once.") from None
    return flat.reshape(grid.height, grid.width)


def _masks(entries: Sequence[Mapping[str, Any]], item: str, reader: str, schema: SchemaInfo,
           grid: Grid) -> list[Annotation]:
    if len(entries) * grid.width * grid.height > MAX_MASK_PIXELS:
        raise ValidationFailed(f"masks: {len(entries)} painted slices of {grid.width} × {grid.height} are too "
                               "much for one submission from the page", hint="Submit large masks through the API "
                               "(`medcycle labels submit … --file`).")
    painted: dict[str, npt.NDArray[np.uint8]] = {}
    seen: set[tuple[str, int | None]] = set()
    for i, entry in enumerate(entries):
        where = f"masks[{i}]"
        label = _check_class(entry.get("label"), Kind.MASK, schema, where)
        z = _check_slice(entry.get("z"), grid, where, required=True)
        if (label, z) in seen:
            raise ValidationFailed(f"{where}: a second mask of {label!r}" + (f" on slice {z}" if z is not None
                                                                           else ""),
                                   hint="Send one mask per class and slice.")
        seen.add((label, z))
        plane = _mask_plane(entry, grid, where)
        volume = painted.setdefault(label, grid.empty())
        if volume.ndim == 3:
            assert z is not None
            volume[z][plane] = 1
        else:
            volume[plane] = 1
    return [Annotation(item, label, Kind.MASK, grid.mask(arr), reader=reader)
            for label, arr in painted.items() if arr.any()]  # a mask erased to nothing is nothing found


def drawn_annotations(item: str, reader: str, *, schema: SchemaInfo, grid: Grid, classes: Sequence[str], boxes: str,
                      polygons: str, masks: str) -> list[Annotation]:
    """The reading of the item page: class labels, boxes, polygons and masks, checked against image and schema."""
    out = form_annotations(item, reader, classes, boxes)
    for i, a in enumerate(x for x in out if x.kind == Kind.BOX):
        g = a.geometry
        assert isinstance(g, Box)
        _check_class(a.label, Kind.BOX, schema, f"boxes[{i}]")
        _check_slice(g.z, grid, f"boxes[{i}]", required=False)
        for x, y in ((g.x0, g.y0), (g.x1, g.y1)):
            if not _inside(x, y, grid):
                raise _outside(f"boxes[{i}].box", x, y, grid)
    example = '[{"label": "nodule", "points": [[x, y], [x, y], [x, y]], "z": 3}]'
    out.extend(_polygon(e, item, reader, schema, grid, f"polygons[{i}]")
               for i, e in enumerate(_entries(polygons, "polygons", example, MAX_POLYGONS)))
    example = '[{"label": "nodule", "z": 3, "rows": 512, "columns": 512, "counts": [0, 12, …]}]'
    limit = max(1, grid.slices) * max(1, len(schema.classes))
    out.extend(_masks(_entries(masks, "masks", example, limit), item, reader, schema, grid))
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
