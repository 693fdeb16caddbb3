"""The adjudication queue: items whose readers disagreed below the task's threshold, resolved by a senior.

Items enter the queue by themselves (:func:`medcycle.labels.tasks.submit` opens an entry when the last
reading of an item scores below the threshold). A senior reader — a registered reader with the ``senior``
flag who did not read the item — resolves it either by choosing one reader's annotations or by drawing
their own (stored as annotations of stage ``adjudication``). The decision, the note and the final
annotation ids are kept; the readers' annotations stay as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import Conflict, NotFound, PermissionDenied, UsageError
from medcycle.labels import store
from medcycle.labels.model import Annotation
from medcycle.labels.readers import is_senior
from medcycle.labels.schemas import SchemaInfo
from medcycle.labels.tables import AdjudicationRow, LabelSchemaRow, TaskItemRow
from medcycle.labels.tasks import TARGET_KIND, ItemState, get_task_row, item_readers, parse_ref, ref_of
from medcycle.objects.base import ObjectStore
from medcycle.store.base import utcnow


@dataclass(frozen=True, slots=True)
class AdjudicationInfo:
    task: str
    item: str
    state: str
    metric: str
    agreement: float
    threshold: float
    readers: tuple[str, ...]
    opened_at: datetime
    resolved_by: str | None
    resolved_at: datetime | None
    decision: str | None
    note: str | None
    annotation_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "item": self.item, "state": self.state, "metric": self.metric,
                "agreement": self.agreement, "threshold": self.threshold, "readers": list(self.readers),
                "opened_at": self.opened_at.isoformat(), "resolved_by": self.resolved_by,
                "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None, "decision": self.decision,
                "note": self.note, "annotation_ids": list(self.annotation_ids)}


def _info(session: Session, row: AdjudicationRow) -> AdjudicationInfo:
    return AdjudicationInfo(ref_of(row.task_id), row.item_uid, row.state, row.metric, row.agreement, row.threshold,
                            tuple(sorted(item_readers(session, row.task_id, row.item_uid))), row.opened_at,
                            row.resolved_by, row.resolved_at, row.decision, row.note, tuple(row.annotation_ids or ()))


def adjudication_queue(
    session: Session, *, task: str | int | None = None, state: str | None = "open", limit: int = 1000,
) -> list[AdjudicationInfo]:
    """Entries (open ones by default), lowest agreement first."""
    stmt = (select(AdjudicationRow).order_by(AdjudicationRow.agreement, AdjudicationRow.task_id,
                                             AdjudicationRow.item_uid).limit(max(1, min(limit, 10_000))))
    if task is not None:
        stmt = stmt.where(AdjudicationRow.task_id == parse_ref(task))
    if state is not None:
        stmt = stmt.where(AdjudicationRow.state == state)
    return [_info(session, r) for r in session.scalars(stmt)]


def get_adjudication(session: Session, task: str | int, item: str) -> AdjudicationInfo:
    row = session.get(AdjudicationRow, (parse_ref(task), item))
    if row is None:
        raise NotFound(f"{ref_of(parse_ref(task))} has no adjudication for item {item!r}",
                       hint="See the queue: `medcycle labels adjudications`.")
    return _info(session, row)


def require_senior(session: Session, senior: str, readers: Sequence[str]) -> None:
    if not is_senior(session, senior):
        raise PermissionDenied(f"{senior} is not a senior reader and may not adjudicate",
                               hint=f"An admin can make them one: `medcycle labels reader set {senior} --senior`.")
    if senior in readers:
        raise PermissionDenied(f"{senior} read this item and may not adjudicate it",
                               hint="Ask another senior reader; an adjudicator must be independent of the readings.")


def adjudicate(
    session: Session, objects: ObjectStore, task: str | int, item: str, *, senior: str,
    choose_reader: str | None = None, annotations: Sequence[Annotation] | None = None, note: str | None = None,
    seconds: float | None = None, tool: str | None = None, actor: str | None = None, via: str = "library",
) -> AdjudicationInfo:
    """Resolve an open adjudication: keep ``choose_reader``'s annotations, or the senior's own ``annotations``."""
    task_row = get_task_row(session, task)
    row = session.get(AdjudicationRow, (task_row.id, item), with_for_update=True)
    if row is None:
        raise NotFound(f"{ref_of(task_row.id)} has no adjudication for item {item!r}",
                       hint="See the queue: `medcycle labels adjudications`.")
    if row.state != "open":
        raise Conflict(f"item {item!r} of {ref_of(task_row.id)} was already resolved by {row.resolved_by}",
                       hint="Decisions are kept as made; start a new task to read the item again.")
    readers = sorted(item_readers(session, task_row.id, item))
    require_senior(session, senior, readers)
    if (choose_reader is None) == (annotations is None):
        raise UsageError("choose one reader's annotations or give new ones (not both)",
                         hint="Pass --choose READER, or --label/--file with the senior's own annotations.")
    if choose_reader is not None:
        if choose_reader not in readers:
            raise UsageError(f"{choose_reader} did not read item {item!r}",
                             hint=f"Choose one of: {', '.join(readers)}.")
        chosen = store.find(session, task_id=task_row.id, item=item, reader=choose_reader, stage=store.Stage.READ)
        decision = f"reader:{choose_reader}"
    else:
        schema = SchemaInfo.of(session.get_one(LabelSchemaRow, task_row.schema_id))
        schema.check(annotations or ())
        chosen = store.save(session, objects, annotations or (), item=item, level=task_row.level, reader=senior,
                            task_id=task_row.id, stage=store.Stage.ADJUDICATION, tool=tool, seconds=seconds)
        decision = "new"
    now = utcnow()
    row.state, row.resolved_by, row.resolved_at, row.decision = "resolved", senior, now, decision
    row.note = (note or "").strip() or None
    row.annotation_ids = [a.id for a in chosen]
    item_row = session.get_one(TaskItemRow, (task_row.id, item))
    item_row.state, item_row.completed_at = ItemState.RESOLVED.value, now
    task_row.updated_at = now
    session.flush()
    audit.record(session, actor or senior, "labels.adjudicate", target_kind=TARGET_KIND, target_id=ref_of(task_row.id),
                 via=via, item=item, senior=senior, decision=decision, annotations=len(chosen))
    return _info(session, row)


def visible_to_senior(session: Session, task_id: int, item: str, senior: str) -> bool:
    """A senior reader sees every reading of an item that is (or was) in the adjudication queue, unless they read it."""
    if not is_senior(session, senior) or session.get(AdjudicationRow, (task_id, item)) is None:
        return False
    return senior not in item_readers(session, task_id, item)
