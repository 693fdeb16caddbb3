"""Honeypots: gold items planted in readers' queues of live tasks, graded silently.

:func:`plant` adds items of a honeypot pool (:mod:`.exams`, ``purpose=honeypot``) to a live task, each
assigned to one reader at a random place among the items that reader has not read yet. To the reader a
honeypot is an ordinary item of the task: a real catalog item at the task's level, in the same queue,
read and submitted the same way, answered the same way. That is why only **blinded** tasks take honeypots
(an unblinded task shows each item's readers, and a honeypot has one where the others have several). A
reader is never given the same honeypot twice, nor one they have annotated before.

Once submitted, a honeypot is graded against the gold (:func:`score_pending`; also called right after a
submission by :func:`medcycle.labels.qualification.after_submit`) into the reader's scorecard. Nothing is
shown to the reader. If the pool guards an exam, :func:`judge` pools each reader's last ``window`` honeypots
scored since their certification was granted and revokes it when they fall below the pool's thresholds.

Honeypot items are working items of the task (the task counts them); :func:`planted_items` lists them so
that results of the task (label sets, agreement) can leave them out.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import Conflict, UsageError
from medcycle.labels import certifications, grading, store
from medcycle.labels.exams import Gold, Purpose, get_exam_row, load_gold, require_active
from medcycle.labels.schemas import SchemaInfo
from medcycle.labels.tables import (
    AnnotationRow,
    AssignmentRow,
    CertificationRow,
    ExamRow,
    HoneypotRow,
    LabelSchemaRow,
    TaskItemRow,
)
from medcycle.labels.tasks import TARGET_KIND, ItemState, get_task_row, ref_of
from medcycle.objects.base import ObjectStore
from medcycle.store.base import utcnow


@dataclass(frozen=True, slots=True)
class HoneypotInfo:
    task: str
    item: str
    reader: str
    pool: str
    state: str  # planted, scored
    planted_at: datetime
    scored_at: datetime | None
    grade: grading.ItemGrade | None

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "item": self.item, "reader": self.reader, "pool": self.pool, "state": self.state,
                "planted_at": self.planted_at.isoformat(),
                "scored_at": self.scored_at.isoformat() if self.scored_at else None,
                "grade": self.grade.to_dict() if self.grade else None}

    @classmethod
    def of(cls, row: HoneypotRow) -> HoneypotInfo:
        return cls(ref_of(row.task_id), row.item_uid, row.reader, row.pool, row.state, row.planted_at, row.scored_at,
                   grading.ItemGrade.from_dict(row.grade) if row.grade else None)


def _compatible(session: Session, pool: ExamRow, task_schema: SchemaInfo, task_level: str) -> None:
    if pool.level != task_level:
        raise UsageError(f"pool {pool.name!r} holds {pool.level} items; the task reads {task_level} items",
                         hint="Plant a pool of the task's level.")
    pool_schema = SchemaInfo.of(session.get_one(LabelSchemaRow, pool.schema_id))
    missing = sorted(set(pool_schema.class_names) - set(task_schema.class_names))
    if missing:
        raise UsageError(f"the task's schema {task_schema.ref} lacks class(es) of pool {pool.name!r}: "
                         f"{', '.join(missing)}", hint="Plant a pool made under the task's schema.")


def plant(
    session: Session, objects: ObjectStore, task: str | int, pool: str, *, per_reader: int = 1,
    readers: Sequence[str] | None = None, seed: int | None = None, actor: str = "system", via: str = "library",
) -> list[HoneypotInfo]:
    """Plant ``per_reader`` honeypots of ``pool`` into each reader's queue of an open, blinded task.

    A reader gets fewer when the pool runs out of items they have not seen (never an error: the result says
    what was planted). ``seed`` makes the choice repeatable; by default it is random.
    """
    row = get_task_row(session, task, for_update=True)
    if row.state != "open":
        raise Conflict(f"{ref_of(row.id)} is closed", hint="Plant honeypots in an open task.")
    if not row.blinded:
        raise UsageError(f"{ref_of(row.id)} is not blinded: its readers would see that nobody else reads a honeypot",
                         hint="Plant honeypots in blinded tasks only.")
    if per_reader < 1:
        raise UsageError(f"per reader {per_reader} is not positive", hint="e.g. --per-reader 2.")
    pool_row = get_exam_row(session, pool)
    require_active(pool_row, Purpose.HONEYPOT)
    _compatible(session, pool_row, SchemaInfo.of(session.get_one(LabelSchemaRow, row.schema_id)), row.level)
    assigned = sorted(set(session.scalars(select(AssignmentRow.reader).where(AssignmentRow.task_id == row.id))))
    targets = [r for r in (readers if readers is not None else assigned) if not r.startswith("model:")]
    outside = sorted(set(targets) - set(assigned))
    if outside:
        raise UsageError(f"reader(s) {', '.join(outside)} have nothing in {ref_of(row.id)}",
                         hint="Plant for the task's readers.")
    pool_items = sorted(load_gold(session, objects, pool_row).items)
    in_task = set(session.scalars(select(TaskItemRow.item_uid).where(TaskItemRow.task_id == row.id)))
    rng = random.Random(seed if seed is not None else random.SystemRandom().random())
    now = utcnow()
    planted: list[HoneypotRow] = []
    next_position = int(session.scalar(select(func.max(TaskItemRow.position)).where(
        TaskItemRow.task_id == row.id)) or 0) + 1
    for reader in targets:
        seen = set(session.scalars(select(HoneypotRow.item_uid).where(HoneypotRow.reader == reader)))
        seen |= set(session.scalars(select(AnnotationRow.item_uid).where(AnnotationRow.reader == reader).distinct()))
        candidates = [i for i in pool_items if i not in seen and i not in in_task]
        rng.shuffle(candidates)
        for item in candidates[:per_reader]:
            _insert_into_queue(session, row.id, item, reader, rng, next_position, now)
            next_position += 1
            in_task.add(item)
            hp = HoneypotRow(task_id=row.id, item_uid=item, reader=reader, pool=pool_row.name, state="planted",
                             planted_by=actor, planted_at=now)
            session.add(hp)
            planted.append(hp)
    row.n_items += len(planted)
    session.flush()
    audit.record(session, actor, "labels.honeypot.plant", target_kind=TARGET_KIND, target_id=pool_row.name, via=via,
                 task=ref_of(row.id), planted=len(planted), readers=len(targets))
    return [HoneypotInfo.of(h) for h in planted]


def _insert_into_queue(session: Session, task_id: int, item: str, reader: str, rng: random.Random, item_position: int,
                       now: datetime) -> None:
    """Add ``item`` to the task and to ``reader``'s queue at a random place among the items still to read."""
    waiting = sorted(session.scalars(select(AssignmentRow.position).where(
        AssignmentRow.task_id == task_id, AssignmentRow.reader == reader, AssignmentRow.state == "assigned")))
    last = session.scalar(select(func.max(AssignmentRow.position)).where(
        AssignmentRow.task_id == task_id, AssignmentRow.reader == reader))
    slot = rng.randint(0, len(waiting))
    position = waiting[slot] if slot < len(waiting) else int(last if last is not None else -1) + 1
    session.execute(update(AssignmentRow).where(
        AssignmentRow.task_id == task_id, AssignmentRow.reader == reader, AssignmentRow.position >= position)
        .values(position=AssignmentRow.position + 1).execution_options(synchronize_session=False))
    session.add(TaskItemRow(task_id=task_id, item_uid=item, position=item_position, state=ItemState.OPEN.value))
    session.add(AssignmentRow(task_id=task_id, item_uid=item, reader=reader, position=position, state="assigned",
                              assigned_at=now))
    session.flush()


def planted_items(session: Session, task_id: int) -> set[str]:
    """The honeypot items of a task (to leave out of its label set and agreement statistics)."""
    return set(session.scalars(select(HoneypotRow.item_uid).where(HoneypotRow.task_id == task_id)))


def _grade(session: Session, objects: ObjectStore, hp: HoneypotRow, gold: Gold, seconds: float | None) -> None:
    reading = [store.load(objects, r) for r in store.find(session, task_id=hp.task_id, item=hp.item_uid,
                                                           reader=hp.reader, stage=store.Stage.READ)]
    graded = grading.grade_item(hp.item_uid, gold.of(hp.item_uid), reading, kinds=gold.exam.kinds,
                                negative_labels=gold.exam.negative_labels, seconds=seconds)
    hp.state, hp.scored_at, hp.grade = "scored", utcnow(), graded.to_dict()


def score_pending(session: Session, objects: ObjectStore, *, task_id: int | None = None, item: str | None = None,
                  reader: str | None = None) -> list[HoneypotInfo]:
    """Grade every planted honeypot its reader has submitted (optionally of one task / item / reader)."""
    stmt = (select(HoneypotRow, AssignmentRow.seconds)
            .join(AssignmentRow, (AssignmentRow.task_id == HoneypotRow.task_id)
                  & (AssignmentRow.item_uid == HoneypotRow.item_uid) & (AssignmentRow.reader == HoneypotRow.reader))
            .where(HoneypotRow.state == "planted", AssignmentRow.state == "submitted")
            .order_by(HoneypotRow.task_id, HoneypotRow.item_uid))
    if task_id is not None:
        stmt = stmt.where(HoneypotRow.task_id == task_id)
    if item is not None:
        stmt = stmt.where(HoneypotRow.item_uid == item)
    if reader is not None:
        stmt = stmt.where(HoneypotRow.reader == reader)
    golds: dict[str, Gold] = {}
    done = []
    for hp, seconds in session.execute(stmt).all():
        if hp.pool not in golds:
            golds[hp.pool] = load_gold(session, objects, hp.pool)
        _grade(session, objects, hp, golds[hp.pool], seconds)
        done.append(hp)
    session.flush()
    return [HoneypotInfo.of(h) for h in done]


def results(session: Session, *, reader: str | None = None, pool: str | None = None, task_id: int | None = None,
            scored_only: bool = False, since: datetime | None = None) -> list[HoneypotInfo]:
    """Honeypots, oldest first."""
    stmt = select(HoneypotRow).order_by(HoneypotRow.planted_at, HoneypotRow.task_id, HoneypotRow.item_uid)
    if reader is not None:
        stmt = stmt.where(HoneypotRow.reader == reader)
    if pool is not None:
        stmt = stmt.where(HoneypotRow.pool == pool)
    if task_id is not None:
        stmt = stmt.where(HoneypotRow.task_id == task_id)
    if scored_only:
        stmt = stmt.where(HoneypotRow.state == "scored")
    if since is not None:
        stmt = stmt.where(HoneypotRow.scored_at > since)
    return [HoneypotInfo.of(r) for r in session.scalars(stmt)]


@dataclass(frozen=True, slots=True)
class Judgement:
    reader: str
    pool: str
    exam: str
    grade: grading.Grade
    failures: tuple[str, ...]
    revoked: bool

    def to_dict(self) -> dict[str, Any]:
        return {"reader": self.reader, "pool": self.pool, "exam": self.exam, "grade": self.grade.to_dict(),
                "failures": list(self.failures), "revoked": self.revoked}


def judge(session: Session, *, reader: str | None = None, actor: str = "system", via: str = "library") -> list[
        Judgement]:
    """For pools that guard an exam: revoke the exam's certification of readers whose last ``window``
    honeypots (scored since the certification was granted) fall below the pool's thresholds."""
    out: list[Judgement] = []
    for pool in session.scalars(select(ExamRow).where(ExamRow.purpose == Purpose.HONEYPOT.value,
                                                      ExamRow.guards.is_not(None)).order_by(ExamRow.name)):
        assert pool.guards is not None
        stmt = select(CertificationRow).where(CertificationRow.exam == pool.guards,
                                              CertificationRow.state == certifications.CertState.ACTIVE.value)
        if reader is not None:
            stmt = stmt.where(CertificationRow.reader == reader)
        for cert in list(session.scalars(stmt)):
            scored = results(session, reader=cert.reader, pool=pool.name, scored_only=True, since=cert.granted_at)
            scored.sort(key=lambda h: h.scored_at or h.planted_at)
            if len(scored) < pool.window:
                continue
            grades = [h.grade for h in scored[-pool.window:] if h.grade is not None]
            pooled = grading.Grade.pool(grades)
            failures = tuple(pooled.failures(pool.thresholds))
            if failures:
                certifications.revoke(session, cert.reader, pool.guards, actor=actor, via=via,
                                      reason=f"honeypots (last {pool.window} of {pool.name}): {'; '.join(failures)}; "
                                             "re-test required")
            out.append(Judgement(cert.reader, pool.name, pool.guards, pooled, failures, bool(failures)))
    return out


def by_reader(infos: Sequence[HoneypotInfo]) -> dict[str, list[HoneypotInfo]]:
    out: dict[str, list[HoneypotInfo]] = defaultdict(list)
    for h in infos:
        out[h.reader].append(h)
    return dict(out)
