"""Labeling tasks: create from a dataset version or a catalog query, assign, queue, submit, progress.

A task (``T-<n>``) takes its items from a frozen dataset version (``NAME@TAG``, recorded with the version's
digest) or from a catalog query (recorded as text), at the level of its schema (instance, series or
study). Each item goes to ``readers_per_item`` qualified readers (:mod:`.assign`: balanced, never the
same item twice to one reader, deterministic for a seed). Readers work through their queue and submit;
when the last reader of an item has submitted, the readers' agreement on it is computed
(:mod:`.item_agreement`) and, if it is below the task's adjudication threshold, the item goes to the
adjudication queue (:mod:`.adjudication`) for a senior reader.

The labels layer sits below the datasets layer, so it does not resolve ``NAME@TAG`` itself: interfaces
turn a dataset version into :class:`TaskItems` (see :func:`items_from_instances`) and hand it over.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Any

from sqlalchemy import case, func, insert, select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.catalog.tables import InstanceRow, SeriesRow
from medcycle.errors import Conflict, NotFound, UsageError, ValidationFailed
from medcycle.labels import store
from medcycle.labels.assign import balanced_assignment, queue_order
from medcycle.labels.item_agreement import item_agreement
from medcycle.labels.model import Annotation, Kind, Level
from medcycle.labels.readers import check_reader, list_readers
from medcycle.labels.schemas import SchemaInfo, resolve_schema
from medcycle.labels.tables import AdjudicationRow, AssignmentRow, LabelSchemaRow, LabelTaskRow, ReaderRow, TaskItemRow
from medcycle.objects.base import ObjectStore
from medcycle.store.base import utcnow

REF_RE = re.compile(r"^(?:[Tt]-)?(\d{1,9})$")
BATCH = 500
TARGET_KIND = "label_task"


class ItemState(StrEnum):
    OPEN = "open"  # waiting for readings
    COMPLETE = "complete"  # every reader submitted; agreement at or above the threshold (or none set)
    ADJUDICATION = "adjudication"  # readers disagreed: waiting for a senior reader
    RESOLVED = "resolved"  # a senior reader decided


DONE = (ItemState.COMPLETE.value, ItemState.RESOLVED.value)


def ref_of(task_id: int) -> str:
    return f"T-{task_id}"


def parse_ref(ref: str | int) -> int:
    m = REF_RE.match(str(ref).strip())
    if not m:
        raise UsageError(f"{ref!r} is not a task reference", hint="Write T-3 (or 3); list tasks with "
                         "`medcycle labels task list`.")
    return int(m.group(1))


def parse_due(value: str | date | datetime | None) -> datetime | None:
    """A due date: ``YYYY-MM-DD`` (the end of that day, UTC) or an ISO date-time (UTC when no offset)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(23, 59, 59), UTC)
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(23, 59, 59), UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{value!r} is not a date", hint="Write YYYY-MM-DD or 2026-12-31T18:00:00+01:00.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- items ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TaskItems:
    """What a task will label: item uids at its level and where they came from."""

    uids: tuple[str, ...]
    origin: str  # "dataset chest@v1" or "query <expr>"
    origin_digest: str | None = None  # the dataset version id


def _chunks(values: Sequence[str], size: int = BATCH) -> list[Sequence[str]]:
    return [values[i:i + size] for i in range(0, len(values), size)]


def items_from_instances(
    session: Session, instance_uids: Sequence[str], level: Level | str, *, origin: str,
    origin_digest: str | None = None,
) -> TaskItems:
    """Instances (e.g. a dataset version's items) as task items at ``level`` (their series or studies)."""
    level = Level(level)
    uids = sorted(set(instance_uids))
    if level is Level.INSTANCE:
        return TaskItems(tuple(uids), origin, origin_digest)
    found: set[str] = set()
    for part in _chunks(uids):
        if level is Level.SERIES:
            stmt = select(InstanceRow.series_uid).where(InstanceRow.uid.in_(part))
        else:
            stmt = (select(SeriesRow.study_uid).join(InstanceRow, InstanceRow.series_uid == SeriesRow.uid)
                    .where(InstanceRow.uid.in_(part)))
        found.update(session.scalars(stmt.distinct()))
    return TaskItems(tuple(sorted(found)), origin, origin_digest)


def items_from_query(session: Session, expr: str, level: Level | str) -> TaskItems:
    """Catalog items matching a filter expression, at ``level`` (quarantined instances never count)."""
    from medcycle.catalog.query import select_matching

    if not expr or not expr.strip():
        raise UsageError("the query is empty", hint='Give a filter, e.g. --query \'modality == "CR"\'.')
    level = Level(level)
    column = {Level.INSTANCE: InstanceRow.uid, Level.SERIES: InstanceRow.series_uid,
              Level.STUDY: SeriesRow.study_uid}[level]
    uids = sorted(set(session.scalars(select_matching(expr, column))))
    return TaskItems(tuple(uids), f"query {expr.strip()}")


DatasetResolver = Callable[[Session, str], tuple[Sequence[str], str]]
"""``NAME@TAG`` → (the dataset version's instance uids, its id). The datasets layer sits above this one, so
the interfaces pass it in (see ``medcycle.cli.labels.dataset_instances``)."""


def task_items(
    session: Session, *, schema: str, dataset: str | None = None, query: str | None = None,
    dataset_resolver: DatasetResolver | None = None,
) -> TaskItems:
    """The items a new task over a dataset version or a catalog query gets, at its schema's level."""
    if (dataset is None) == (query is None):
        raise UsageError("choose the items with a dataset version or a catalog query (one of them)",
                         hint="Pass --dataset NAME@TAG or --query EXPR.")
    level = Level(resolve_schema(session, schema).level)
    if query is not None:
        return items_from_query(session, query, level)
    assert dataset is not None
    if dataset_resolver is None:
        raise UsageError("dataset versions cannot be resolved here", hint="Use the CLI or the REST API.")
    uids, version_id = dataset_resolver(session, dataset)
    return items_from_instances(session, uids, level, origin=f"dataset {dataset}", origin_digest=version_id)


# -- views ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReaderProgress:
    reader: str
    assigned: int
    submitted: int
    seconds: float

    @property
    def remaining(self) -> int:
        return self.assigned - self.submitted

    def to_dict(self) -> dict[str, Any]:
        return {"reader": self.reader, "assigned": self.assigned, "submitted": self.submitted,
                "remaining": self.remaining, "seconds": self.seconds}


@dataclass(frozen=True, slots=True)
class TaskInfo:
    id: int
    name: str | None
    schema: str  # NAME@N
    schema_id: str
    level: Level
    origin: str
    origin_digest: str | None
    readers: tuple[str, ...]
    readers_per_item: int
    blinded: bool
    seed: int
    due_at: datetime | None
    adjudication_threshold: float | None
    state: str
    items: int
    item_states: dict[str, int]
    readers_progress: tuple[ReaderProgress, ...]
    created_by: str
    created_at: datetime
    warnings: tuple[str, ...] = field(default=())

    @property
    def ref(self) -> str:
        return ref_of(self.id)

    @property
    def done(self) -> int:
        return sum(self.item_states.get(s, 0) for s in DONE)

    @property
    def overdue(self) -> bool:
        return self.due_at is not None and self.state == "open" and self.done < self.items and utcnow() > self.due_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref, "id": self.id, "name": self.name, "schema": self.schema, "schema_id": self.schema_id,
            "level": self.level.value, "origin": self.origin, "origin_digest": self.origin_digest,
            "readers": list(self.readers), "readers_per_item": self.readers_per_item, "blinded": self.blinded,
            "seed": self.seed, "due_at": self.due_at.isoformat() if self.due_at else None,
            "adjudication_threshold": self.adjudication_threshold, "state": self.state, "items": self.items,
            "done": self.done, "progress": round(self.done / self.items, 4) if self.items else 1.0,
            "item_states": self.item_states, "overdue": self.overdue,
            "reader_progress": [r.to_dict() for r in self.readers_progress], "created_by": self.created_by,
            "created_at": self.created_at.isoformat(), "warnings": list(self.warnings),
        }


def get_task_row(session: Session, ref: str | int, *, for_update: bool = False) -> LabelTaskRow:
    task_id = parse_ref(ref)
    row = session.get(LabelTaskRow, task_id, with_for_update=for_update)
    if row is None:
        raise NotFound(f"labeling task {ref_of(task_id)} does not exist",
                       hint="List tasks with `medcycle labels task list`.")
    return row


def task_info(session: Session, row: LabelTaskRow, *, warnings: Sequence[str] = ()) -> TaskInfo:
    schema = session.get_one(LabelSchemaRow, row.schema_id)
    states = {s: int(n) for s, n in session.execute(
        select(TaskItemRow.state, func.count()).where(TaskItemRow.task_id == row.id).group_by(TaskItemRow.state))}
    progress = [ReaderProgress(r, int(n), int(done or 0), float(secs or 0.0)) for r, n, done, secs in session.execute(
        select(AssignmentRow.reader, func.count(),
               func.sum(case((AssignmentRow.state == "submitted", 1), else_=0)),
               func.sum(AssignmentRow.seconds))
        .where(AssignmentRow.task_id == row.id).group_by(AssignmentRow.reader).order_by(AssignmentRow.reader))]
    return TaskInfo(row.id, row.name, f"{schema.name}@{schema.version}", schema.id, Level(row.level), row.origin,
                    row.origin_digest, tuple(row.readers), row.readers_per_item, bool(row.blinded), row.seed,
                    row.due_at, row.adjudication_threshold, row.state, row.n_items,
                    {s.value: states.get(s.value, 0) for s in ItemState}, tuple(progress), row.created_by,
                    row.created_at, tuple(warnings))


def get_task(session: Session, ref: str | int) -> TaskInfo:
    return task_info(session, get_task_row(session, ref))


def list_tasks(session: Session, *, reader: str | None = None, state: str | None = None) -> list[TaskInfo]:
    """Tasks, newest first; with ``reader``, only tasks that assign that reader something."""
    stmt = select(LabelTaskRow).order_by(LabelTaskRow.id.desc())
    if reader is not None:
        stmt = stmt.where(LabelTaskRow.id.in_(select(AssignmentRow.task_id).where(AssignmentRow.reader == reader)))
    if state is not None:
        stmt = stmt.where(LabelTaskRow.state == state)
    return [task_info(session, r) for r in session.scalars(stmt)]


# -- creating ------------------------------------------------------------------------------------------
def _pool(session: Session, readers: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The qualified readers to assign, and warnings about named readers left out."""
    from medcycle.labels.certifications import expire

    expire(session)  # lapsed certifications no longer count
    if readers is None:
        return [r.name for r in list_readers(session, qualified=True)], []
    names = [check_reader(r.strip()) for r in readers if r.strip()]
    if len(set(names)) != len(names):
        raise UsageError("a reader is named twice", hint="Name each reader once.")
    rows = {r.name: r for r in session.scalars(select(ReaderRow).where(ReaderRow.name.in_(names)))}
    unknown = [n for n in names if n not in rows]
    if unknown:
        raise NotFound(f"reader(s) not registered: {', '.join(unknown)}",
                       hint="Register and qualify them: `medcycle labels reader set NAME --qualified`.")
    left_out = [n for n in names if not rows[n].qualified]
    warnings = [f"reader {n} is not qualified and was left out of the assignment" for n in left_out]
    return [n for n in names if rows[n].qualified], warnings


def create_task(
    session: Session, items: TaskItems, *, schema: str, readers_per_item: int = 1, readers: Sequence[str] | None = None,
    due: str | date | datetime | None = None, adjudication_threshold: float | None = None, blinded: bool = True,
    seed: int = 0, name: str | None = None, actor: str = "system", via: str = "library",
) -> TaskInfo:
    """A task over ``items`` under a schema version, assigned to qualified readers.

    Args:
        readers: the pool; ``None`` means every qualified reader. Named readers who are registered but not
            qualified are left out (with a warning in the result); unregistered names are an error.
        adjudication_threshold: items whose agreement falls below it go to the adjudication queue
            (needs ``readers_per_item`` >= 2).
    """
    schema_row = resolve_schema(session, schema)
    level = Level(schema_row.level)
    if not items.uids:
        raise UsageError(f"no items to label ({items.origin})", hint="Choose a dataset version or query with items.")
    if adjudication_threshold is not None:
        if not 0.0 <= adjudication_threshold <= 1.0:
            raise UsageError(f"adjudication threshold {adjudication_threshold} is not between 0 and 1",
                             hint="Agreement is 0 (none) to 1 (perfect); e.g. --adjudication-threshold 0.8.")
        if readers_per_item < 2:
            raise UsageError("adjudication needs at least 2 readers per item",
                             hint="Pass --readers-per-item 2 or more, or drop --adjudication-threshold.")
    if name is not None and (not name.strip() or len(name) > 128):
        raise UsageError("a task name is 1-128 characters", hint="e.g. --name 'pneumothorax round 1'.")
    pool, warnings = _pool(session, readers)
    assignment = balanced_assignment(items.uids, pool, readers_per_item, seed=seed)
    order = queue_order(assignment, seed=seed)
    now = utcnow()
    row = LabelTaskRow(name=name, schema_id=schema_row.id, level=level.value, origin=items.origin[:512],
                       origin_digest=items.origin_digest, readers=sorted(pool), readers_per_item=readers_per_item,
                       blinded=blinded, seed=seed, due_at=parse_due(due), adjudication_threshold=adjudication_threshold,
                       state="open", n_items=len(items.uids), created_by=actor, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    task_items = [{"task_id": row.id, "item_uid": uid, "position": i, "state": ItemState.OPEN.value}
                  for i, uid in enumerate(items.uids)]
    rows = [{"task_id": row.id, "item_uid": uid, "reader": r, "position": order[(uid, r)], "state": "assigned",
             "assigned_at": now} for uid, rs in assignment.items() for r in rs]
    for part in range(0, len(task_items), 5000):
        session.execute(insert(TaskItemRow), task_items[part:part + 5000])
    for part in range(0, len(rows), 5000):
        session.execute(insert(AssignmentRow), rows[part:part + 5000])
    audit.record(session, actor, "labels.task.create", target_kind=TARGET_KIND, target_id=ref_of(row.id), via=via,
                 origin=row.origin, schema=f"{schema_row.name}@{schema_row.version}", items=row.n_items,
                 readers=len(pool), readers_per_item=readers_per_item)
    return task_info(session, row, warnings=warnings)


def close_task(session: Session, ref: str | int, *, actor: str = "system", via: str = "library") -> TaskInfo:
    """Stop a task: queues no longer offer its items and submissions are refused (nothing is deleted)."""
    row = get_task_row(session, ref, for_update=True)
    if row.state != "closed":
        row.state, row.updated_at = "closed", utcnow()
        audit.record(session, actor, "labels.task.close", target_kind=TARGET_KIND, target_id=ref_of(row.id), via=via)
    return task_info(session, row)


# -- queues --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QueueEntry:
    task: str
    item: str
    level: Level
    position: int
    due_at: datetime | None
    schema: str

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "item": self.item, "level": self.level.value, "position": self.position,
                "due_at": self.due_at.isoformat() if self.due_at else None, "schema": self.schema}


def reader_queue(session: Session, reader: str, *, task: str | int | None = None, limit: int = 100) -> list[QueueEntry]:
    """What ``reader`` still has to read in open tasks: earliest due first, then task, then queue position."""
    stmt = (select(AssignmentRow.item_uid, AssignmentRow.position, LabelTaskRow.id, LabelTaskRow.level,
                   LabelTaskRow.due_at, LabelSchemaRow.name, LabelSchemaRow.version)
            .join(LabelTaskRow, LabelTaskRow.id == AssignmentRow.task_id)
            .join(LabelSchemaRow, LabelSchemaRow.id == LabelTaskRow.schema_id)
            .where(AssignmentRow.reader == reader, AssignmentRow.state == "assigned", LabelTaskRow.state == "open")
            .order_by(LabelTaskRow.due_at.is_(None), LabelTaskRow.due_at, LabelTaskRow.id, AssignmentRow.position)
            .limit(max(1, min(limit, 10_000))))
    if task is not None:
        stmt = stmt.where(AssignmentRow.task_id == parse_ref(task))
    return [QueueEntry(ref_of(t), uid, Level(lvl), pos, due, f"{sn}@{sv}")
            for uid, pos, t, lvl, due, sn, sv in session.execute(stmt)]


def item_readers(session: Session, task_id: int, item: str) -> dict[str, str]:
    """``reader → assignment state`` for one item of a task."""
    stmt = select(AssignmentRow.reader, AssignmentRow.state).where(
        AssignmentRow.task_id == task_id, AssignmentRow.item_uid == item)
    return {reader: state for reader, state in session.execute(stmt)}


# -- submitting ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SubmitResult:
    task: str
    item: str
    reader: str
    annotations: tuple[store.AnnotationRecord, ...]
    item_state: ItemState
    agreement: float | None
    metric: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "item": self.item, "reader": self.reader,
                "annotations": [a.to_dict() for a in self.annotations], "item_state": self.item_state.value,
                "agreement": self.agreement, "metric": self.metric}


def not_assigned(task_id: int, item: str, reader: str) -> NotFound:
    """The one answer for "not yours": it does not say whether the item exists (so it leaks nothing)."""
    return NotFound(f"{ref_of(task_id)} has no item {item!r} assigned to {reader}",
                    hint=f"See what is assigned: `medcycle labels queue --reader {reader}`.")


def submit(
    session: Session, objects: ObjectStore, ref: str | int, item: str, reader: str, annotations: Sequence[Annotation],
    *, seconds: float | None = None, tool: str | None = None, actor: str | None = None, via: str = "library",
) -> SubmitResult:
    """Store ``reader``'s annotations of an assigned item; when every reader is in, score agreement.

    An empty list is a valid reading for boxes, polygons and masks ("nothing found"); a schema of class
    labels only needs at least one. A reading is submitted once: annotations are immutable.
    """
    task = get_task_row(session, ref)
    if task.state != "open":
        raise Conflict(f"{ref_of(task.id)} is closed", hint="Closed tasks take no more readings.")
    item_row = session.get(TaskItemRow, (task.id, item), with_for_update=True)  # one item's readers in turn
    assignment = session.get(AssignmentRow, (task.id, item, reader))
    if item_row is None or assignment is None:
        raise not_assigned(task.id, item, reader)
    if assignment.state == "submitted":
        raise Conflict(f"{reader} already submitted {item!r} in {ref_of(task.id)}",
                       hint="Annotations are immutable; a senior reader can resolve it by adjudication.")
    schema = SchemaInfo.of(session.get_one(LabelSchemaRow, task.schema_id))
    schema.check(annotations)
    if not annotations and schema.kinds == {Kind.CLASS}:
        raise ValidationFailed(f"no class label given for {item!r}",
                               hint=f"Give one of {', '.join(schema.class_names)}.")
    records = store.save(session, objects, annotations, item=item, level=task.level, reader=reader, task_id=task.id,
                         stage=store.Stage.READ, tool=tool, seconds=seconds)
    now = utcnow()
    assignment.state, assignment.submitted_at, assignment.seconds = "submitted", now, seconds
    session.flush()
    state, value, metric = _score_item(session, objects, task, item_row, schema)
    from medcycle.labels.qualification import after_submit  # grade a honeypot or a finished exam sitting now

    after_submit(session, objects, task.id, item, reader, actor=actor or reader, via=via)
    audit.record(session, actor or reader, "labels.submit", target_kind=TARGET_KIND, target_id=ref_of(task.id),
                 via=via, item=item, reader=reader, annotations=len(records), item_state=state.value)
    return SubmitResult(ref_of(task.id), item, reader, tuple(records), state, value, metric)


def readings(
    session: Session, objects: ObjectStore, task_id: int, item: str, *, submitted_only: bool = True,
) -> dict[str, list[Annotation]]:
    """``reader → annotations`` of the first reading of ``item`` (every assigned reader who submitted)."""
    out: dict[str, list[Annotation]] = {r: [] for r, s in item_readers(session, task_id, item).items()
                                        if s == "submitted" or not submitted_only}
    for rec in store.find(session, task_id=task_id, item=item, stage=store.Stage.READ):
        if rec.reader in out:
            out[rec.reader].append(store.load(objects, rec))
    return out


def _score_item(
    session: Session, objects: ObjectStore, task: LabelTaskRow, item_row: TaskItemRow, schema: SchemaInfo,
) -> tuple[ItemState, float | None, str | None]:
    states = item_readers(session, task.id, item_row.item_uid)
    if any(s != "submitted" for s in states.values()):
        return ItemState.OPEN, None, None
    now = utcnow()
    result = item_agreement(readings(session, objects, task.id, item_row.item_uid), sorted(schema.kinds))
    if result is not None:
        item_row.agreement, item_row.metric = result.value, result.metric
    threshold = task.adjudication_threshold
    if result is not None and threshold is not None and result.value < threshold:
        item_row.state = ItemState.ADJUDICATION.value
        session.add(AdjudicationRow(task_id=task.id, item_uid=item_row.item_uid, state="open", metric=result.metric,
                                    agreement=result.value, threshold=threshold, opened_at=now, annotation_ids=[]))
    else:
        item_row.state, item_row.completed_at = ItemState.COMPLETE.value, now
    task.updated_at = now
    session.flush()
    return ItemState(item_row.state), item_row.agreement, item_row.metric


def item_states(session: Session, task_id: int) -> dict[str, tuple[ItemState, float | None]]:
    """``item → (state, agreement)`` for every item of a task."""
    stmt = select(TaskItemRow.item_uid, TaskItemRow.state, TaskItemRow.agreement).where(TaskItemRow.task_id == task_id)
    return {uid: (ItemState(s), a) for uid, s, a in session.execute(stmt)}


def assignments_of(session: Session, task_id: int) -> dict[str, list[str]]:
    """``reader → items`` assigned in a task (in queue order)."""
    out: dict[str, list[str]] = defaultdict(list)
    stmt = (select(AssignmentRow.reader, AssignmentRow.item_uid).where(AssignmentRow.task_id == task_id)
            .order_by(AssignmentRow.reader, AssignmentRow.position))
    for reader, uid in session.execute(stmt):
        out[reader].append(uid)
    return dict(out)
