"""Tasks with an explicit assignment: exam sittings and pseudo-label reviews.

:func:`medcycle.labels.tasks.create_task` draws readers from the qualified pool, which is right for live
work and wrong for two cases this layer also needs: an exam is sat by a reader who is *not yet* qualified,
and a pseudo-label review has a model (``model:<version>``, never qualified) as one of its readers. Both are
ordinary tasks once created — the same queue, submission, agreement, adjudication, blinding and label sets —
only their assignment is given instead of drawn. Each reader's queue is still put in its own seeded order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import UsageError
from medcycle.labels.assign import queue_order
from medcycle.labels.readers import check_reader
from medcycle.labels.tables import AssignmentRow, LabelSchemaRow, LabelTaskRow, TaskItemRow
from medcycle.labels.tasks import TARGET_KIND, ItemState, ref_of
from medcycle.store.base import utcnow

CHUNK = 5000


def open_task(
    session: Session, schema: LabelSchemaRow, assignment: Mapping[str, Sequence[str]], *, origin: str,
    name: str | None = None, blinded: bool = True, seed: int = 0, due_at: datetime | None = None,
    adjudication_threshold: float | None = None, submitted: Sequence[str] = (), actor: str = "system",
    via: str = "library",
) -> LabelTaskRow:
    """A task over ``assignment`` (item → readers) under ``schema``.

    ``submitted`` readers' assignments start as submitted (a model whose reading is stored with the task).
    ``readers_per_item`` records the most readers any item has.
    """
    if not assignment:
        raise UsageError("no items to put in the task", hint="Give at least one item.")
    for item, readers in assignment.items():
        if not readers or len(set(readers)) != len(readers):
            raise UsageError(f"item {item!r} needs distinct readers", hint="Name each reader of an item once.")
        for r in readers:
            check_reader(r)
    items = list(assignment)
    order = queue_order({i: tuple(rs) for i, rs in assignment.items()}, seed=seed)
    pool = sorted({r for rs in assignment.values() for r in rs})
    now = utcnow()
    row = LabelTaskRow(name=name, schema_id=schema.id, level=schema.level, origin=origin[:512], origin_digest=None,
                       readers=pool, readers_per_item=max(len(rs) for rs in assignment.values()), blinded=blinded,
                       seed=seed, due_at=due_at, adjudication_threshold=adjudication_threshold, state="open",
                       n_items=len(items), created_by=actor, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    done = set(submitted)
    item_rows = [{"task_id": row.id, "item_uid": uid, "position": i, "state": ItemState.OPEN.value}
                 for i, uid in enumerate(items)]
    rows = [{"task_id": row.id, "item_uid": uid, "reader": r, "position": order[(uid, r)],
             "state": "submitted" if r in done else "assigned", "assigned_at": now,
             "submitted_at": now if r in done else None} for uid, rs in assignment.items() for r in rs]
    for part in range(0, len(item_rows), CHUNK):
        session.execute(insert(TaskItemRow), item_rows[part:part + CHUNK])
    for part in range(0, len(rows), CHUNK):
        session.execute(insert(AssignmentRow), rows[part:part + CHUNK])
    audit.record(session, actor, "labels.task.create", target_kind=TARGET_KIND, target_id=ref_of(row.id), via=via,
                 origin=row.origin, schema=f"{schema.name}@{schema.version}", items=len(items), readers=len(pool),
                 readers_per_item=row.readers_per_item)
    return row
