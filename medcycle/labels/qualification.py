"""Reader qualification: exam sittings, grading, certification, re-testing — and the one call that keeps it current.

The pieces (each its own module):

- :mod:`.exams` — gold-standard sets with pass thresholds (exams, and honeypot pools);
- :mod:`.grading` — a reader against the gold: sensitivity/specificity, kappa, Dice, box F1, time;
- :mod:`.certifications` — where each reader stands with each exam, and the ``qualified`` flag that gates
  assignment (:func:`medcycle.labels.tasks.create_task` assigns only qualified readers);
- :mod:`.honeypots` — gold items hidden in live queues, graded silently, guarding certifications;
- :mod:`.scorecards` — per-reader results over time.

This module runs a sitting. :func:`start_attempt` gives the reader a task of their own (``A-<n>``, read
through the ordinary queue: blinded, one reader, the exam's items in a seeded order of its own) — the reader
need not be qualified to sit it. When every item is submitted, :func:`score_attempt` grades the readings
against the gold, records pass or fail with the reasons, closes the task and certifies (or not). A re-test is
simply another sitting; the latest one decides.

:func:`after_submit` is what a submission should trigger (it grades a honeypot or finishes a sitting as
soon as the last item is in); :func:`refresh` does everything due at once — grading finished sittings and
submitted honeypots, judging honeypot pools, expiring certifications — for a scheduled job or the CLI.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import Conflict, NotFound, UsageError
from medcycle.labels import certifications, grading, honeypots, readers, store
from medcycle.labels.direct_tasks import open_task
from medcycle.labels.exams import TARGET_KIND, Purpose, get_exam_row, load_gold, require_active
from medcycle.labels.honeypots import HoneypotInfo, Judgement
from medcycle.labels.model import Annotation
from medcycle.labels.tables import AssignmentRow, ExamAttemptRow, HoneypotRow, LabelSchemaRow, ReaderRow
from medcycle.labels.tasks import close_task, parse_due, ref_of
from medcycle.objects.base import ObjectStore
from medcycle.store.base import utcnow

ATTEMPT_RE = re.compile(r"^(?:[Aa]-)?(\d{1,9})$")


class AttemptState(StrEnum):
    OPEN = "open"
    PASSED = "passed"
    FAILED = "failed"
    CANCELLED = "cancelled"


def attempt_ref(attempt_id: int) -> str:
    return f"A-{attempt_id}"


def parse_attempt(ref: str | int) -> int:
    m = ATTEMPT_RE.match(str(ref).strip())
    if not m:
        raise UsageError(f"{ref!r} is not an exam attempt", hint="Write A-3 (or 3); list them with "
                         "`medcycle labels exam attempts`.")
    return int(m.group(1))


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    id: int
    exam: str
    reader: str
    task: str
    state: AttemptState
    started_at: datetime
    finished_at: datetime | None
    items: int
    submitted: int
    grade: dict[str, Any] | None
    failures: tuple[str, ...]
    item_grades: tuple[grading.ItemGrade, ...] = field(default=(), repr=False)

    @property
    def ref(self) -> str:
        return attempt_ref(self.id)

    @property
    def passed(self) -> bool | None:
        return None if self.state in (AttemptState.OPEN, AttemptState.CANCELLED) else self.state is AttemptState.PASSED

    def to_dict(self, *, items: bool = False) -> dict[str, Any]:
        out = {"ref": self.ref, "id": self.id, "exam": self.exam, "reader": self.reader, "task": self.task,
               "state": self.state.value, "passed": self.passed, "started_at": self.started_at.isoformat(),
               "finished_at": self.finished_at.isoformat() if self.finished_at else None, "items": self.items,
               "submitted": self.submitted, "grade": self.grade, "failures": list(self.failures)}
        if items:
            out["item_grades"] = [g.to_dict() for g in self.item_grades]
        return out


def _info(session: Session, row: ExamAttemptRow) -> AttemptInfo:
    counts = {s: int(n) for s, n in session.execute(
        select(AssignmentRow.state, func.count()).where(AssignmentRow.task_id == row.task_id,
                                                        AssignmentRow.reader == row.reader)
        .group_by(AssignmentRow.state))}
    return AttemptInfo(row.id, row.exam, row.reader, ref_of(row.task_id), AttemptState(row.state), row.started_at,
                       row.finished_at, sum(counts.values()), counts.get("submitted", 0), row.grade,
                       tuple(row.failures or ()), tuple(grading.ItemGrade.from_dict(g) for g in row.item_grades or ()))


def get_attempt_row(session: Session, ref: str | int, *, for_update: bool = False) -> ExamAttemptRow:
    attempt_id = parse_attempt(ref)
    row = session.get(ExamAttemptRow, attempt_id, with_for_update=for_update)
    if row is None:
        raise NotFound(f"exam attempt {attempt_ref(attempt_id)} does not exist",
                       hint="List attempts with `medcycle labels exam attempts`.")
    return row


def get_attempt(session: Session, ref: str | int) -> AttemptInfo:
    return _info(session, get_attempt_row(session, ref))


def list_attempts(session: Session, *, reader: str | None = None, exam: str | None = None,
                  state: str | None = None) -> list[AttemptInfo]:
    """Attempts, newest first."""
    stmt = select(ExamAttemptRow).order_by(ExamAttemptRow.id.desc())
    if reader is not None:
        stmt = stmt.where(ExamAttemptRow.reader == reader)
    if exam is not None:
        stmt = stmt.where(ExamAttemptRow.exam == exam)
    if state is not None:
        stmt = stmt.where(ExamAttemptRow.state == AttemptState(state).value)
    return [_info(session, r) for r in session.scalars(stmt)]


def start_attempt(
    session: Session, objects: ObjectStore, exam: str, reader: str, *, due: str | date | datetime | None = None,
    seed: int | None = None, actor: str = "system", via: str = "library",
) -> AttemptInfo:
    """Give ``reader`` a sitting of ``exam``: a blinded task of its items, in their queue.

    The reader is registered if they are not yet (unqualified). One open sitting per reader and exam.
    """
    readers.check_reader(reader)
    row = get_exam_row(session, exam)
    require_active(row, Purpose.EXAM)
    open_ = session.scalar(select(ExamAttemptRow.id).where(ExamAttemptRow.reader == reader, ExamAttemptRow.exam == exam,
                                                           ExamAttemptRow.state == AttemptState.OPEN.value))
    if open_ is not None:
        raise Conflict(f"{reader} already has an open sitting of {exam!r}: {attempt_ref(open_)}",
                       hint=f"Finish it (then `medcycle labels exam score {attempt_ref(open_)}`) or cancel it.")
    if session.get(ReaderRow, reader) is None:
        readers.set_reader(session, reader, actor=actor, via=via)
    gold = load_gold(session, objects, row)
    schema = session.get_one(LabelSchemaRow, row.schema_id)
    task = open_task(session, schema, {item: [reader] for item in gold.items}, origin=f"exam {exam}",
                     name=f"exam {exam}", blinded=True, due_at=parse_due(due),
                     seed=seed if seed is not None else random.SystemRandom().randrange(1 << 31), actor=actor, via=via)
    attempt = ExamAttemptRow(exam=exam, reader=reader, task_id=task.id, state=AttemptState.OPEN.value,
                             started_at=utcnow(), item_grades=[], failures=[], created_by=actor)
    session.add(attempt)
    session.flush()
    audit.record(session, actor, "labels.exam.start", target_kind=TARGET_KIND, target_id=exam, via=via,
                 reader=reader, attempt=attempt_ref(attempt.id), task=ref_of(task.id), items=len(gold.items))
    return _info(session, attempt)


def _readings(session: Session, objects: ObjectStore, task_id: int, reader: str) -> dict[str, list[Annotation]]:
    out: dict[str, list[Annotation]] = defaultdict(list)
    for rec in store.find(session, task_id=task_id, reader=reader, stage=store.Stage.READ):
        out[rec.item].append(store.load(objects, rec))
    return dict(out)


def score_attempt(session: Session, objects: ObjectStore, ref: str | int, *, actor: str = "system",
                  via: str = "library") -> AttemptInfo:
    """Grade a finished sitting, record pass or fail, close its task and certify (or not).

    Raises:
        Conflict: the sitting is not open, or items are still unread.
    """
    row = get_attempt_row(session, ref, for_update=True)
    if row.state != AttemptState.OPEN.value:
        raise Conflict(f"{attempt_ref(row.id)} was already {row.state}", hint="Start a new sitting to re-test.")
    seconds = {item: secs for item, state, secs in session.execute(
        select(AssignmentRow.item_uid, AssignmentRow.state, AssignmentRow.seconds).where(
            AssignmentRow.task_id == row.task_id, AssignmentRow.reader == row.reader))}
    unread = session.scalar(select(func.count()).select_from(AssignmentRow).where(
        AssignmentRow.task_id == row.task_id, AssignmentRow.reader == row.reader, AssignmentRow.state != "submitted"))
    if unread:
        raise Conflict(f"{attempt_ref(row.id)}: {row.reader} has {unread} item(s) of {ref_of(row.task_id)} left",
                       hint="Grade the sitting once every item is submitted.", unread=unread)
    exam = get_exam_row(session, row.exam)
    gold = load_gold(session, objects, exam)
    items = grading.grade_readings(gold.reference(), _readings(session, objects, row.task_id, row.reader),
                                   kinds=gold.exam.kinds, negative_labels=gold.exam.negative_labels, seconds=seconds)
    grade = grading.Grade.pool(items)
    failures = grade.failures(exam.thresholds)
    now = utcnow()
    row.state = (AttemptState.FAILED if failures else AttemptState.PASSED).value
    row.finished_at, row.grade, row.failures = now, grade.to_dict(), failures
    row.item_grades = [g.to_dict() for g in items]
    session.flush()
    close_task(session, row.task_id, actor=actor, via=via)
    audit.record(session, actor, "labels.exam.score", target_kind=TARGET_KIND, target_id=row.exam, via=via,
                 reader=row.reader, attempt=attempt_ref(row.id), passed=not failures, failures=failures)
    if failures:
        certifications.record(session, row.reader, row.exam, certifications.CertState.FAILED, attempt_id=row.id,
                              reason=f"{attempt_ref(row.id)}: {'; '.join(failures)}", actor=actor, via=via)
    else:
        certifications.grant(session, row.reader, row.exam, attempt_id=row.id, at=now, actor=actor, via=via)
    return _info(session, row)


def cancel_attempt(session: Session, ref: str | int, *, actor: str = "system", via: str = "library") -> AttemptInfo:
    """Abandon an open sitting (its task is closed; nothing is graded; the certification is unchanged)."""
    row = get_attempt_row(session, ref, for_update=True)
    if row.state != AttemptState.OPEN.value:
        raise Conflict(f"{attempt_ref(row.id)} was already {row.state}", hint="Only open sittings can be cancelled.")
    row.state, row.finished_at = AttemptState.CANCELLED.value, utcnow()
    close_task(session, row.task_id, actor=actor, via=via)
    audit.record(session, actor, "labels.exam.cancel", target_kind=TARGET_KIND, target_id=row.exam, via=via,
                 reader=row.reader, attempt=attempt_ref(row.id))
    return _info(session, row)


def _complete(session: Session, row: ExamAttemptRow) -> bool:
    return not session.scalar(select(func.count()).select_from(AssignmentRow).where(
        AssignmentRow.task_id == row.task_id, AssignmentRow.reader == row.reader, AssignmentRow.state != "submitted"))


def after_submit(session: Session, objects: ObjectStore, task_id: int, item: str, reader: str, *,
                 actor: str = "system", via: str = "library") -> None:
    """What a submission triggers here: grade a honeypot (and judge its reader), or finish a complete sitting.

    Cheap when neither applies (two primary-key/indexed lookups), so it can run after every submission.
    """
    hp = session.get(HoneypotRow, (task_id, item))
    if hp is not None and hp.reader == reader and hp.state == "planted":
        honeypots.score_pending(session, objects, task_id=task_id, item=item, reader=reader)
        honeypots.judge(session, reader=reader, actor=actor, via=via)
        return
    attempt = session.scalar(select(ExamAttemptRow).where(ExamAttemptRow.task_id == task_id,
                                                          ExamAttemptRow.reader == reader,
                                                          ExamAttemptRow.state == AttemptState.OPEN.value))
    if attempt is not None and _complete(session, attempt):
        score_attempt(session, objects, attempt.id, actor=actor, via=via)


@dataclass(frozen=True, slots=True)
class RefreshReport:
    attempts: tuple[AttemptInfo, ...]
    honeypots: tuple[HoneypotInfo, ...]
    judgements: tuple[Judgement, ...]
    expired: tuple[certifications.CertificationInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"attempts": [a.to_dict() for a in self.attempts],
                "honeypots": len(self.honeypots), "judgements": [j.to_dict() for j in self.judgements],
                "revoked": [j.reader for j in self.judgements if j.revoked],
                "expired": [c.to_dict() for c in self.expired]}


def refresh(session: Session, objects: ObjectStore, *, now: datetime | None = None, actor: str = "system",
            via: str = "library") -> RefreshReport:
    """Everything due: grade complete sittings and submitted honeypots, judge pools, expire certifications."""
    scored = [score_attempt(session, objects, row.id, actor=actor, via=via) for row in list(session.scalars(
        select(ExamAttemptRow).where(ExamAttemptRow.state == AttemptState.OPEN.value).order_by(ExamAttemptRow.id)))
        if _complete(session, row)]
    graded = honeypots.score_pending(session, objects)
    judged = honeypots.judge(session, actor=actor, via=via)
    expired = certifications.expire(session, now=now, actor=actor, via=via)
    return RefreshReport(tuple(scored), tuple(graded), tuple(judged), tuple(expired))
