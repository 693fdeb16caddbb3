"""Who may see which items and labels of a labeling task — one rule, checked here, used by the API and UI.

- **Leads** (anyone who may read all data: admins, ML engineers) see every task, item and annotation.
- **Readers** (annotators) only ever see the items assigned to them. Asking for any other item — or a task
  they have nothing in — gets the same 404 a missing one gets, so nothing about it leaks.
- In a **blinded** task a reader sees only their own annotations: asking for another reader's is a 403,
  and an item's agreement or adjudication state (which would betray the others' labels) is not shown.
  In an unblinded task a reader sees every reading of the items assigned to them.
- A **senior reader** sees every reading of the items in the adjudication queue, unless they read the item.

Every refusal is an :class:`ItemHidden` (404) or :class:`LabelsHidden` (403); the interfaces record it in
the audit log with :func:`record_denial` (its own transaction, so the refusal's rollback keeps it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import NotFound, PermissionDenied
from medcycle.labels import store
from medcycle.labels.adjudication import visible_to_senior
from medcycle.labels.readers import is_senior
from medcycle.labels.tables import AdjudicationRow, AssignmentRow, LabelTaskRow, TaskItemRow
from medcycle.labels.tasks import TaskInfo, get_task_row, parse_ref, ref_of

if TYPE_CHECKING:
    from medcycle.platform import Platform


class ItemHidden(NotFound):
    """A task or item the caller may not see: answered exactly like one that does not exist."""


class LabelsHidden(PermissionDenied):
    """Another reader's annotations, asked for by a reader who may not see them."""


class Role(StrEnum):
    LEAD = "lead"
    READER = "reader"  # assigned the item
    ADJUDICATOR = "adjudicator"  # senior reader of an item in the adjudication queue


def is_lead(principal: Principal) -> bool:
    return principal.can(Permission.READ_DATA)


def _hidden_task(ref: str | int) -> ItemHidden:
    return ItemHidden(f"labeling task {ref_of(parse_ref(ref))} does not exist",
                      hint="List your tasks with GET /v1/labels/tasks.")


def _hidden_item(task_id: int, item: str, who: str) -> ItemHidden:
    return ItemHidden(f"{ref_of(task_id)} has no item {item!r} assigned to {who}",
                      hint="Your queue lists your items: GET /v1/labels/queue.")


def check_task(session: Session, principal: Principal, ref: str | int) -> LabelTaskRow:
    """The task, if the caller may see it (a lead, a reader with items in it, or a senior with entries in it)."""
    if is_lead(principal):
        return get_task_row(session, ref)  # a plain NotFound: nothing is withheld from a lead
    try:
        row = get_task_row(session, ref)
    except NotFound:
        raise _hidden_task(ref) from None
    mine = session.scalar(select(AssignmentRow.item_uid).where(
        AssignmentRow.task_id == row.id, AssignmentRow.reader == principal.name).limit(1))
    if mine is None and not (is_senior(session, principal.name) and session.scalar(
            select(AdjudicationRow.item_uid).where(AdjudicationRow.task_id == row.id).limit(1)) is not None):
        raise _hidden_task(ref)
    return row


def check_item(session: Session, principal: Principal, task: LabelTaskRow, item: str) -> Role:
    """How the caller may see ``item`` of ``task``; :class:`ItemHidden` when not at all."""
    if is_lead(principal):
        if session.get(TaskItemRow, (task.id, item)) is None:
            raise NotFound(f"{ref_of(task.id)} has no item {item!r}", hint="List its items with the task's queue.")
        return Role.LEAD
    if session.get(TaskItemRow, (task.id, item)) is None:
        raise _hidden_item(task.id, item, principal.name)
    if session.get(AssignmentRow, (task.id, item, principal.name)) is not None:
        return Role.READER
    if visible_to_senior(session, task.id, item, principal.name):
        return Role.ADJUDICATOR
    raise _hidden_item(task.id, item, principal.name)


def check_reader_scope(principal: Principal, reader: str | None) -> str:
    """The reader whose queue (or tasks) the caller asks for: their own, or anyone's for a lead."""
    if reader is None or reader == principal.name:
        return principal.name
    if not is_lead(principal):
        raise LabelsHidden(f"{principal.name} may not see the work of {reader}",
                           hint="Readers see their own queue only; leave out the reader.")
    return reader


def visible_annotations(
    session: Session, principal: Principal, task: LabelTaskRow, item: str, *, reader: str | None = None,
) -> list[store.AnnotationRecord]:
    """The annotations of ``item`` the caller may see (optionally only ``reader``'s)."""
    role = check_item(session, principal, task, item)
    others = reader is not None and reader != principal.name
    if role is Role.READER and task.blinded and others:
        raise LabelsHidden(f"{ref_of(task.id)} is blinded: {principal.name} may not see the labels of {reader}",
                           hint="Readers of a blinded task see only their own labels.")
    found = store.find(session, task_id=task.id, item=item, reader=reader)
    if role is Role.READER and task.blinded:
        found = [a for a in found if a.reader == principal.name]
    return found


@dataclass(frozen=True, slots=True)
class ItemView:
    """One item of a task as the caller may see it."""

    task: str
    item: str
    level: str
    role: Role
    assignment: str | None  # the caller's: assigned / submitted
    state: str | None  # the item's (hidden from blinded readers)
    agreement: float | None
    metric: str | None
    readers: tuple[str, ...]  # who read it (hidden from blinded readers)
    annotations: tuple[store.AnnotationRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "item": self.item, "level": self.level, "role": self.role.value,
                "assignment": self.assignment, "state": self.state, "agreement": self.agreement,
                "metric": self.metric, "readers": list(self.readers),
                "annotations": [a.to_dict() for a in self.annotations]}


def item_view(session: Session, principal: Principal, ref: str | int, item: str) -> ItemView:
    task = check_task(session, principal, ref)
    role = check_item(session, principal, task, item)
    mine = session.get(AssignmentRow, (task.id, item, principal.name))
    row = session.get_one(TaskItemRow, (task.id, item))
    annotations = visible_annotations(session, principal, task, item)
    blind = role is Role.READER and task.blinded
    readers = () if blind else tuple(sorted(session.scalars(select(AssignmentRow.reader).where(
        AssignmentRow.task_id == task.id, AssignmentRow.item_uid == item))))
    return ItemView(ref_of(task.id), item, task.level, role, mine.state if mine else None,
                    None if blind else row.state, None if blind else row.agreement, None if blind else row.metric,
                    readers, tuple(annotations))


def task_view(principal: Principal, info: TaskInfo) -> dict[str, Any]:
    """A task's summary for the caller: a reader sees their own progress, not the other readers'."""
    data = info.to_dict()
    if not is_lead(principal):
        data["reader_progress"] = [r for r in data["reader_progress"] if r["reader"] == principal.name]
        data["readers"] = [r for r in data["readers"] if r == principal.name]
        if info.blinded:
            data["item_states"] = {}
    return data


def record_denial(
    platform: Platform, principal: Principal, error: ItemHidden | LabelsHidden, action: str, *,
    task: str | int | None = None, via: str = "api", **details: Any,
) -> None:
    """Write the refused attempt to the audit log in its own committed transaction."""
    target = str(task)[:64] if task is not None else None
    with platform.session(write=True) as session:
        audit.record(session, principal, action, target_kind="label_task", target_id=target, outcome="denied",
                     via=via, status=error.http_status, reason=error.message, **details)
