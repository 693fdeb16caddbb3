"""Reader qualification: exams, sittings, honeypots, certifications and scorecards (under ``/v1/labels``).

Readers see their own sittings (without per-item grades: they would give away the gold answers before a
re-test) and their own scorecard (which never names honeypot items); leads see everything. A reader reaching
for another reader's records is refused and audited, as in :mod:`medcycle.api.routers.labels`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from medcycle.api.deps import PlatformDep, SessionDep
from medcycle.api.routers.labels import PREFIX, TAGS, VIA, Admin, Labeler, Reader, Viewer, Writer, guarded
from medcycle.auth.roles import Principal
from medcycle.labels import access, certifications, exams, honeypots, qualification, scorecards, tasks
from medcycle.platform import Platform

router = APIRouter(prefix=PREFIX, tags=list(TAGS))


class ExamIn(BaseModel):
    name: str = Field(max_length=64)
    label_set: str = Field(description="The gold label set (id or prefix).")
    thresholds: dict[str, float] = Field(description='Pass thresholds, e.g. {"sensitivity": 0.85, "dice": 0.8}.')
    purpose: str = Field(default="exam", description="exam (sat) or honeypot (planted in live queues).")
    negative_labels: list[str] = Field(default_factory=list, description="Classes meaning 'nothing found'.")
    valid_days: int | None = Field(default=None, ge=1)
    guards: str | None = Field(default=None, description="Honeypot pool: the exam whose certification it guards.")
    window: int = Field(default=10, ge=1)
    description: str | None = None


class AttemptIn(BaseModel):
    reader: str | None = Field(default=None, description="Who sits it (leads only; default: the caller).")
    due: str | None = None
    seed: int | None = None


class PlantIn(BaseModel):
    pool: str
    per_reader: int = Field(default=1, ge=1, le=1000)
    readers: list[str] | None = None
    seed: int | None = None


class RevokeIn(BaseModel):
    reason: str = Field(min_length=1)


def _own(platform: Platform, principal: Principal, reader: str, action: str) -> None:
    guarded(platform, principal, action, None, lambda: access.check_reader_scope(principal, reader), reader=reader)


@router.get("/exams")
def list_exams(session: SessionDep, _: Viewer, purpose: exams.Purpose | None = None) -> list[dict[str, Any]]:
    return [e.to_dict() for e in exams.list_exams(session, purpose=purpose)]


@router.post("/exams", status_code=status.HTTP_201_CREATED)
def create_exam(body: ExamIn, session: SessionDep, principal: Writer) -> dict[str, Any]:
    return exams.create_exam(session, body.name, label_set=body.label_set, thresholds=body.thresholds,
                             purpose=body.purpose, negative_labels=body.negative_labels, valid_days=body.valid_days,
                             guards=body.guards, window=body.window, description=body.description,
                             actor=principal.name, via=VIA).to_dict()


@router.get("/exams/{name}")
def show_exam(name: str, session: SessionDep, _: Viewer) -> dict[str, Any]:
    return exams.get_exam(session, name).to_dict()


@router.post("/exams/{name}/retire")
def retire_exam(name: str, session: SessionDep, principal: Writer) -> dict[str, Any]:
    return exams.retire_exam(session, name, actor=principal.name, via=VIA).to_dict()


@router.post("/exams/{name}/attempts", status_code=status.HTTP_201_CREATED)
def start_attempt(name: str, body: AttemptIn, platform: PlatformDep, session: SessionDep,
                  principal: Labeler) -> dict[str, Any]:
    """A sitting for the caller (a re-test, say), or — for leads — for any reader."""
    reader = body.reader or principal.name
    _own(platform, principal, reader, "labels.exam.start")
    return qualification.start_attempt(session, platform.objects, name, reader, due=body.due, seed=body.seed,
                                       actor=principal.name, via=VIA).to_dict()


@router.get("/attempts")
def list_attempts(platform: PlatformDep, session: SessionDep, principal: Labeler, reader: str | None = None,
                  exam: str | None = None, state: qualification.AttemptState | None = None) -> list[dict[str, Any]]:
    who = None if reader is None and access.is_lead(principal) else reader or principal.name
    if who is not None:
        _own(platform, principal, who, "labels.attempts.read")
    return [a.to_dict() for a in qualification.list_attempts(session, reader=who, exam=exam, state=state)]


@router.get("/attempts/{ref}")
def show_attempt(ref: str, platform: PlatformDep, session: SessionDep, principal: Labeler,
                 items: bool = False) -> dict[str, Any]:
    """A sitting; ``items=true`` adds each item's grade (leads only)."""
    info = qualification.get_attempt(session, ref)
    _own(platform, principal, info.reader, "labels.attempt.read")
    return info.to_dict(items=items and access.is_lead(principal))


@router.post("/attempts/{ref}/score")
def score_attempt(ref: str, platform: PlatformDep, session: SessionDep, principal: Labeler) -> dict[str, Any]:
    with platform.session(write=False) as own:  # checked before this request's session takes SQLite's write lock
        reader = qualification.get_attempt_row(own, ref).reader
    _own(platform, principal, reader, "labels.attempt.score")
    return qualification.score_attempt(session, platform.objects, ref, actor=principal.name, via=VIA).to_dict()


@router.post("/attempts/{ref}/cancel")
def cancel_attempt(ref: str, session: SessionDep, principal: Writer) -> dict[str, Any]:
    return qualification.cancel_attempt(session, ref, actor=principal.name, via=VIA).to_dict()


@router.post("/tasks/{ref}/honeypots", status_code=status.HTTP_201_CREATED)
def plant_honeypots(ref: str, body: PlantIn, platform: PlatformDep, session: SessionDep,
                    principal: Writer) -> list[dict[str, Any]]:
    return [h.to_dict() for h in honeypots.plant(session, platform.objects, ref, body.pool, per_reader=body.per_reader,
                                                 readers=body.readers, seed=body.seed, actor=principal.name, via=VIA)]


@router.get("/honeypots")
def list_honeypots(session: SessionDep, _: Reader, reader: str | None = None, pool: str | None = None,
                   task: str | None = None) -> list[dict[str, Any]]:
    """Planted honeypots and their grades (leads only: this names the honeypot items)."""
    task_id = tasks.parse_ref(task) if task is not None else None
    return [h.to_dict() for h in honeypots.results(session, reader=reader, pool=pool, task_id=task_id)]


@router.get("/certifications")
def list_certifications(platform: PlatformDep, session: SessionDep, principal: Labeler, reader: str | None = None,
                        due_within: Annotated[int | None, Query(ge=0, le=3650)] = None) -> list[dict[str, Any]]:
    """Where readers stand with each exam (a reader: their own); ``due_within`` lists re-tests due."""
    who = None if reader is None and access.is_lead(principal) else reader or principal.name
    if who is not None:
        _own(platform, principal, who, "labels.certifications.read")
    found = (certifications.retest_due(session, within_days=due_within) if due_within is not None
             else certifications.certifications(session, reader=who))
    return [c.to_dict() for c in found if who is None or c.reader == who]


@router.post("/readers/{name}/certifications/{exam}/revoke")
def revoke_certification(name: str, exam: str, body: RevokeIn, session: SessionDep,
                         principal: Admin) -> dict[str, Any]:
    return certifications.revoke(session, name, exam, reason=body.reason, actor=principal.name, via=VIA).to_dict()


@router.post("/qualification/refresh")
def refresh_qualification(platform: PlatformDep, session: SessionDep, principal: Writer) -> dict[str, Any]:
    """Grade finished sittings and submitted honeypots, judge honeypot pools, expire certifications."""
    return qualification.refresh(session, platform.objects, actor=principal.name, via=VIA).to_dict()


@router.get("/scorecards")
def list_scorecards(session: SessionDep, _: Reader, period: str = "month") -> list[dict[str, Any]]:
    return [c.to_dict() for c in scorecards.scorecards(session, period=period)]


@router.get("/readers/{name}/scorecard")
def reader_scorecard(name: str, platform: PlatformDep, session: SessionDep, principal: Labeler,
                     period: str = "month") -> dict[str, Any]:
    _own(platform, principal, name, "labels.scorecard.read")
    return scorecards.scorecard(session, name, period=period).to_dict()
