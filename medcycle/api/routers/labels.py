"""Labels: schemas, readers, labeling tasks, reader queues, submissions, adjudication and label sets.

Who sees what is decided in :mod:`medcycle.labels.access`: leads (``read-data``: admins, ML engineers)
see everything; annotators only the items assigned to them (others answer 404) and, in a blinded task,
only their own labels (others' answer 403). Every refusal is written to the audit log. Creating schemas,
tasks and label sets needs ``write-data``; setting reader flags is for admins.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import NotFound, PermissionDenied, UsageError
from medcycle.labels import (
    access,
    active,
    adjudication,
    certifications,
    exams,
    honeypots,
    qualification,
    readers,
    schemas,
    scorecards,
    sets,
    store,
    tasks,
)
from medcycle.platform import Platform

if TYPE_CHECKING:
    from medcycle.cli.labels_active import ModelScorer

router = APIRouter(prefix="/v1/labels", tags=["labels"])
Viewer = Annotated[Principal, requires(Permission.VIEW)]
Labeler = Annotated[Principal, requires(Permission.LABEL)]
Reader = Annotated[Principal, requires(Permission.READ_DATA)]
Writer = Annotated[Principal, requires(Permission.WRITE_DATA)]
Admin = Annotated[Principal, requires(Permission.ADMIN)]
VIA = "api"
T = TypeVar("T")


# -- bodies ---------------------------------------------------------------------------------------------
class SchemaIn(BaseModel):
    text: str | None = Field(default=None, description="The schema file (YAML or JSON) as text.")
    schema_: dict[str, Any] | None = Field(default=None, alias="schema", description="The schema as JSON.")
    origin: str | None = Field(default=None, max_length=256, description="e.g. the file name.")


class ReaderIn(BaseModel):
    qualified: bool | None = None
    senior: bool | None = None
    certification: str | None = Field(default=None, max_length=128)
    note: str | None = None


class TaskIn(BaseModel):
    schema_: str = Field(alias="schema", description="NAME, NAME@N or a schema id prefix.")
    dataset: str | None = Field(default=None, description="A dataset version, NAME@TAG.")
    query: str | None = Field(default=None, description="A catalog filter expression.")
    readers_per_item: int = Field(default=1, ge=1, le=100)
    readers: list[str] | None = Field(default=None, description="The pool (default: every qualified reader).")
    due: str | None = Field(default=None, description="YYYY-MM-DD or an ISO date-time.")
    adjudication_threshold: float | None = Field(default=None, ge=0, le=1)
    blinded: bool = True
    seed: int = 0
    name: str | None = Field(default=None, max_length=128)


class SubmitIn(BaseModel):
    annotations: list[dict[str, Any]] = Field(
        default_factory=list, description='e.g. [{"label": "nodule", "kind": "box", "box": [x0, y0, x1, y1]}]; '
        'masks as {"kind": "mask", "mask_npy_b64": …}. An empty list means nothing found.')
    seconds: float | None = Field(default=None, ge=0, description="Time spent on the item.")
    tool: str | None = Field(default=None, max_length=128)


class AdjudicateIn(BaseModel):
    choose_reader: str | None = Field(default=None, description="Keep this reader's annotations.")
    annotations: list[dict[str, Any]] | None = Field(default=None, description="Or the senior's own annotations.")
    note: str | None = None
    seconds: float | None = Field(default=None, ge=0)
    tool: str | None = Field(default=None, max_length=128)


class LabelSetIn(BaseModel):
    task: str | None = Field(default=None, description="Make the set of a task's finished items (T-3).")
    partial: bool = False
    annotation_ids: list[str] | None = Field(default=None, description="Or name the annotations…")
    schema_: str | None = Field(default=None, alias="schema", description="…and the schema version.")
    items: list[str] | None = None
    origin: str | None = Field(default=None, max_length=256)


# -- helpers --------------------------------------------------------------------------------------------
def dataset_instances(session: Session, ref: str) -> tuple[Sequence[str], str]:
    """A dataset version's instance uids and id (the datasets layer sits above labels: wired here)."""
    from medcycle.datasets import versions

    row = versions.resolve(session, ref)
    return sorted(versions.item_states(session, row.id)), row.id


def _guarded(platform: Platform, principal: Principal, action: str, task: str | None, call: Callable[[], T],
             **details: Any) -> T:
    """Run ``call``; a refusal from :mod:`medcycle.labels.access` is audited, then answered."""
    try:
        return call()
    except (access.ItemHidden, access.LabelsHidden) as exc:
        access.record_denial(platform, principal, exc, action, task=task, via=VIA, **details)
        raise


# -- schemas --------------------------------------------------------------------------------------------
@router.get("/schemas")
def list_schemas(session: SessionDep, _: Viewer, name: str | None = None) -> list[dict[str, Any]]:
    return [s.to_dict() for s in schemas.list_schemas(session, name)]


@router.post("/schemas", status_code=status.HTTP_201_CREATED)
def add_schema(body: SchemaIn, platform: PlatformDep, session: SessionDep, principal: Writer,
               response: Response) -> dict[str, Any]:
    if (body.text is None) == (body.schema_ is None):
        raise UsageError("send the schema as text or as JSON (one of them)", hint='{"text": "name: …"}.')
    data: str | dict[str, Any] = body.text if body.text is not None else dict(body.schema_ or {})
    info = schemas.add_schema(session, platform.objects, data, origin=body.origin, actor=principal.name, via=VIA)
    if not info.created:
        response.status_code = status.HTTP_200_OK
    return info.to_dict()


@router.get("/schemas/{ref}")
def show_schema(ref: str, session: SessionDep, _: Viewer) -> dict[str, Any]:
    return schemas.get_schema(session, ref).to_dict()


# -- readers --------------------------------------------------------------------------------------------
@router.get("/readers")
def list_readers(session: SessionDep, _: Viewer) -> list[dict[str, Any]]:
    return [r.to_dict() for r in readers.list_readers(session)]


@router.put("/readers/{name}")
def set_reader(name: str, body: ReaderIn, session: SessionDep, principal: Admin) -> dict[str, Any]:
    return readers.set_reader(session, name, qualified=body.qualified, senior=body.senior,
                              certification=body.certification, note=body.note, actor=principal.name,
                              via=VIA).to_dict()


# -- tasks ----------------------------------------------------------------------------------------------
@router.post("/tasks", status_code=status.HTTP_201_CREATED)
def create_task(body: TaskIn, session: SessionDep, principal: Writer) -> dict[str, Any]:
    items = tasks.task_items(session, schema=body.schema_, dataset=body.dataset, query=body.query,
                             dataset_resolver=dataset_instances)
    info = tasks.create_task(session, items, schema=body.schema_, readers_per_item=body.readers_per_item,
                             readers=body.readers, due=body.due, adjudication_threshold=body.adjudication_threshold,
                             blinded=body.blinded, seed=body.seed, name=body.name, actor=principal.name, via=VIA)
    return info.to_dict()


@router.get("/tasks")
def list_tasks(session: SessionDep, principal: Labeler, state: str | None = None) -> list[dict[str, Any]]:
    """Every task for a lead; a reader's own tasks otherwise."""
    mine = None if access.is_lead(principal) else principal.name
    return [access.task_view(principal, t) for t in tasks.list_tasks(session, reader=mine, state=state)]


@router.get("/tasks/{ref}")
def show_task(ref: str, platform: PlatformDep, session: SessionDep, principal: Labeler) -> dict[str, Any]:
    row = _guarded(platform, principal, "labels.task.read", ref, lambda: access.check_task(session, principal, ref))
    return access.task_view(principal, tasks.task_info(session, row))


@router.post("/tasks/{ref}/close")
def close_task(ref: str, session: SessionDep, principal: Writer) -> dict[str, Any]:
    return tasks.close_task(session, ref, actor=principal.name, via=VIA).to_dict()


@router.get("/queue")
def queue(
    platform: PlatformDep, session: SessionDep, principal: Labeler,
    reader: Annotated[str | None, Query(description="Whose queue (leads only; default: yours).")] = None,
    task: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    who = _guarded(platform, principal, "labels.queue.read", task,
                   lambda: access.check_reader_scope(principal, reader), reader=reader)
    return [e.to_dict() for e in tasks.reader_queue(session, who, task=task, limit=limit)]


@router.get("/tasks/{ref}/items/{item}")
def show_item(ref: str, item: str, platform: PlatformDep, session: SessionDep, principal: Labeler) -> dict[str, Any]:
    view = _guarded(platform, principal, "labels.item.read", ref,
                    lambda: access.item_view(session, principal, ref, item), item=item)
    return view.to_dict()


@router.get("/tasks/{ref}/items/{item}/annotations")
def item_annotations(ref: str, item: str, platform: PlatformDep, session: SessionDep, principal: Labeler,
                     reader: str | None = None) -> list[dict[str, Any]]:
    def call() -> list[store.AnnotationRecord]:
        row = access.check_task(session, principal, ref)
        return access.visible_annotations(session, principal, row, item, reader=reader)

    found = _guarded(platform, principal, "labels.annotations.read", ref, call, item=item, reader=reader)
    return [a.to_dict() for a in found]


@router.get("/tasks/{ref}/items/{item}/image.png", response_class=Response)
async def item_image(ref: str, item: str, platform: PlatformDep, session: SessionDep, principal: Labeler,
                     size: Annotated[int, Query(ge=16, le=2048)] = 512) -> Response:
    """The item's image (an instance, or the middle instance of a series or study), windowed. Audited."""
    from medcycle.catalog.render import render_png

    def call() -> tuple[str, str, str]:
        row = access.check_task(session, principal, ref)
        access.check_item(session, principal, row, item)
        return _instance_of(session, row.level, item)

    uid, digest, fmt = _guarded(platform, principal, "labels.image.view", ref, call, item=item)
    data = await run_in_threadpool(platform.objects.get, digest)
    png = await run_in_threadpool(render_png, data, fmt, max_size=size)
    await run_in_threadpool(audit.record_read, platform, principal, "image.view", target_kind="instance",
                            target_id=uid, via=VIA, task=ref, item=item)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})


def _instance_of(session: Session, level: str, item: str) -> tuple[str, str, str]:
    from medcycle.catalog.tables import InstanceRow, SeriesRow

    stmt = select(InstanceRow.uid, InstanceRow.digest, InstanceRow.format).where(InstanceRow.state == "ok")
    if level == "instance":
        stmt = stmt.where(InstanceRow.uid == item)
    elif level == "series":
        stmt = stmt.where(InstanceRow.series_uid == item)
    else:
        stmt = stmt.join(SeriesRow, SeriesRow.uid == InstanceRow.series_uid).where(SeriesRow.study_uid == item)
    rows = list(session.execute(stmt.order_by(InstanceRow.series_uid, InstanceRow.uid)))
    if not rows:
        raise NotFound(f"item {item!r} has no image in the catalog", hint="The instance may have been quarantined.")
    uid, digest, fmt = rows[len(rows) // 2]
    return str(uid), str(digest), str(fmt)


@router.post("/tasks/{ref}/items/{item}/annotations", status_code=status.HTTP_201_CREATED)
def submit(ref: str, item: str, body: SubmitIn, platform: PlatformDep, session: SessionDep,
           principal: Labeler) -> dict[str, Any]:
    """Submit the caller's reading of an item assigned to them (an empty list: nothing found)."""
    def check() -> None:
        # in a read session of its own: this request's session must not hold SQLite's write lock while a
        # refusal is written to the audit log
        with platform.session(write=False) as own:
            row = access.check_task(own, principal, ref)
            if access.check_item(own, principal, row, item) is access.Role.ADJUDICATOR:
                raise access.ItemHidden(f"{tasks.ref_of(row.id)} has no item {item!r} assigned to {principal.name}",
                                        hint="Your queue lists your items: GET /v1/labels/queue.")

    _guarded(platform, principal, "labels.submit", ref, check, item=item)
    anns = store.annotations_from_list(body.annotations, item=item, reader=principal.name)
    result = tasks.submit(session, platform.objects, ref, item, principal.name, anns, seconds=body.seconds,
                          tool=body.tool, actor=principal.name, via=VIA)
    out = result.to_dict()
    task = tasks.get_task_row(session, ref)
    if task.blinded and not access.is_lead(principal):  # the state would tell a reader whether the others agreed
        out["item_state"], out["agreement"], out["metric"] = "submitted", None, None
    return out


# -- adjudication ---------------------------------------------------------------------------------------
@router.get("/adjudications")
def adjudications(session: SessionDep, principal: Labeler, task: str | None = None,
                  state: Annotated[str | None, Query(description="open (default), resolved or all")] = "open",
                  ) -> list[dict[str, Any]]:
    """The adjudication queue: all of it for leads; for a senior reader, the items they did not read."""
    lead = access.is_lead(principal)
    if not lead and not readers.is_senior(session, principal.name):
        raise PermissionDenied(f"{principal.name} is not a senior reader",
                               hint="Only senior readers and leads see the adjudication queue.")
    entries = adjudication.adjudication_queue(session, task=task, state=None if state == "all" else state)
    return [e.to_dict() for e in entries if lead or principal.name not in e.readers]


@router.post("/tasks/{ref}/items/{item}/adjudication")
def adjudicate(ref: str, item: str, body: AdjudicateIn, platform: PlatformDep, session: SessionDep,
               principal: Labeler) -> dict[str, Any]:
    anns = (None if body.annotations is None
            else store.annotations_from_list(body.annotations, item=item, reader=principal.name))
    return adjudication.adjudicate(session, platform.objects, ref, item, senior=principal.name,
                                   choose_reader=body.choose_reader, annotations=anns, note=body.note,
                                   seconds=body.seconds, tool=body.tool, actor=principal.name, via=VIA).to_dict()


# -- label sets -----------------------------------------------------------------------------------------
@router.post("/sets", status_code=status.HTTP_201_CREATED)
def create_set(body: LabelSetIn, platform: PlatformDep, session: SessionDep, principal: Writer,
               response: Response) -> dict[str, Any]:
    if body.task is not None:
        info = sets.label_set_from_task(session, platform.objects, body.task, partial=body.partial,
                                        actor=principal.name, via=VIA)
    elif body.annotation_ids is not None and body.schema_ is not None:
        info = sets.create_label_set(session, platform.objects, body.annotation_ids, schema=body.schema_,
                                     items=body.items, origin=body.origin, actor=principal.name, via=VIA)
    else:
        raise UsageError("give a task, or annotation_ids with a schema",
                         hint='{"task": "T-3"} or {"annotation_ids": [...], "schema": "NAME@N"}.')
    if not info.created:
        response.status_code = status.HTTP_200_OK
    return info.to_dict()


@router.get("/sets")
def list_sets(session: SessionDep, _: Viewer) -> list[dict[str, Any]]:
    return [s.to_dict() for s in sets.list_label_sets(session)]


@router.get("/sets/{ref}")
def show_set(ref: str, session: SessionDep, _: Viewer) -> dict[str, Any]:
    return sets.get_label_set(session, ref).to_dict()


@router.get("/sets/{ref}/dataset-labels")
async def dataset_labels(ref: str, platform: PlatformDep, principal: Reader,
                         format: Annotated[str, Query(pattern="^(json|csv)$")] = "json") -> Response:
    """The set's class labels per item, as a dataset version takes them (CSV for `dataset labels import`)."""
    def read() -> sets.DatasetLabels:
        with platform.session(write=False) as session:
            return sets.dataset_labels(session, platform.objects, ref)

    labels = await run_in_threadpool(read)
    await run_in_threadpool(audit.record_read, platform, principal, "labels.set.read", target_kind="label_set",
                            target_id=labels.label_set, via=VIA)
    if format == "csv":
        return Response(labels.to_csv(), media_type="text/csv; charset=utf-8")
    return Response(json.dumps(labels.to_dict()), media_type="application/json")


# -- reader qualification: exams, sittings, honeypots, certifications, scorecards ---------------------------
# Readers see their own sittings (without per-item grades: they would give away the gold answers before a
# re-test) and their own scorecard (which never names honeypot items); leads see everything.
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
    _guarded(platform, principal, action, None, lambda: access.check_reader_scope(principal, reader), reader=reader)


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


# -- active learning ------------------------------------------------------------------------------------
# A batch by any strategy: random needs no model; the others rank by a model version's scores, read from
# the score cache (computed once per version by POST /v1/labels/active/scores, `medcycle labels active score`
# or medcycle.labels.active.score_items), or — with "score": true — computed in the request for what is not
# cached yet (the model loaded as the CLI loads it).
STRATEGIES = "random, entropy, margin, mc_dropout (or mc-dropout), tta or coreset"


class ActiveOptions(BaseModel):
    strategy: str = Field(default="random", description=f"One of {STRATEGIES}.")
    model: str | None = Field(default=None, max_length=200,
                              description="The model version whose scores rank the items, NAME@vN (not random).")
    mc_samples: int = Field(default=10, ge=2, le=100, description="MC-dropout passes (part of the cache key).")
    aggregate: str = Field(default="foreground", max_length=32,
                           description="Pixel uncertainty → one number per item: foreground, top<P>% or mean.")


class BatchIn(ActiveOptions):
    schema_: str = Field(alias="schema", description="The label schema (gives the item level).")
    dataset: str | None = Field(default=None, description="Candidates: a dataset version, NAME@TAG.")
    query: str | None = Field(default=None, description="Candidates: a catalog filter expression.")
    size: int = Field(default=20, ge=1, le=10_000)
    seed: int = 0
    diversity: float = Field(default=1.0, ge=1.0, le=100.0, description="> 1: k-center on the features among "
                             "the diversity × size most uncertain (needs cached features).")
    score: bool = Field(default=False, description="Score what the model version has not scored yet, now (loads "
                        "the model; 2D models). Default: cached scores only.")


class ScoreIn(ActiveOptions):
    schema_: str = Field(alias="schema", description="The label schema (gives the item level).")
    dataset: str | None = Field(default=None, description="Items of a dataset version, NAME@TAG.")
    query: str | None = Field(default=None, description="Items matching a catalog filter expression.")
    features: bool | None = Field(default=None, description="Also cache feature vectors (default: for coreset; "
                                  "needed by coreset and by diversity > 1).")


class BatchTaskIn(BaseModel):
    schema_: str = Field(alias="schema")
    readers_per_item: int = Field(default=1, ge=1, le=100)
    readers: list[str] | None = None
    due: str | None = None
    adjudication_threshold: float | None = Field(default=None, ge=0, le=1)
    blinded: bool = True
    seed: int = 0
    name: str | None = Field(default=None, max_length=128)


def _model_version(session: Session, strategy: active.Strategy, model: str | None) -> str | None:
    """The model version's canonical reference (``None`` for random); a clear 4xx when it is missing or unknown."""
    if strategy is active.Strategy.RANDOM:
        return None
    if model is None:
        raise UsageError(f"the {strategy.value} strategy ranks items by a model version's scores; give \"model\"",
                         hint='Send "model": "NAME@vN" with scores cached by `medcycle labels active score --model '
                              'NAME@vN --strategy ...` (or POST /v1/labels/active/scores), or "strategy": "random".')
    from medcycle.models.registry import info, resolve

    return info(session, resolve(session, model)).ref


def _scorer(platform: Platform, session: Session, schema: str, model: str) -> ModelScorer:
    """The registered model loaded as the CLI loads it (the interface layer's wiring of the scorer protocol)."""
    from medcycle.cli.labels_active import ModelScorer
    from medcycle.labels.schemas import resolve_schema

    return ModelScorer(platform, model, level=resolve_schema(session, schema).level)


@router.get("/active/batches")
def list_batches(session: SessionDep, _: Reader) -> list[dict[str, Any]]:
    return [b.to_dict() for b in active.list_batches(session)]


@router.get("/active/batches/{ref}")
def show_batch(ref: str, session: SessionDep, _: Reader) -> dict[str, Any]:
    return active.get_batch(session, ref).to_dict()


@router.post("/active/batches", status_code=status.HTTP_201_CREATED)
def create_batch(body: BatchIn, platform: PlatformDep, session: SessionDep, principal: Writer) -> dict[str, Any]:
    """The next batch among the candidates not yet labelled, by any strategy; recorded (B-N), ready to become a
    task (POST /v1/labels/active/batches/{ref}/task)."""
    how = active.parse_strategy(body.strategy)
    version = _model_version(session, how, body.model)
    items = tasks.task_items(session, schema=body.schema_, dataset=body.dataset, query=body.query,
                             dataset_resolver=dataset_instances)
    candidates: Sequence[str] = items.uids
    scorer = None
    if body.score and version is not None:
        scorer = _scorer(platform, session, body.schema_, version)
        candidates = scorer.images_only(session, candidates)
    elif version is not None:  # the model's mask instances were never scored: leave them out
        from medcycle.cli.labels_active import images_only, mask_modality
        from medcycle.labels.schemas import resolve_schema

        candidates = images_only(session, candidates, level=resolve_schema(session, body.schema_).level,
                                 mask_modality=mask_modality(session, platform.objects, version))
    return active.next_batch(session, candidates, body.size, how.value, scorer=scorer, model_version=version,
                             seed=body.seed, mc_samples=body.mc_samples, aggregate=body.aggregate,
                             diversity=body.diversity, actor=principal.name, via=VIA).to_dict()


@router.post("/active/scores")
def score_items(body: ScoreIn, platform: PlatformDep, session: SessionDep, principal: Writer) -> dict[str, Any]:
    """A scoring run: a model version scores the items (all of them, labelled or not) under a strategy's
    measure, and the cache keeps what it had not scored yet."""
    how = active.parse_strategy(body.strategy)
    version = _model_version(session, how, body.model)
    if version is None:
        raise UsageError("random picks need no scores", hint=f"Choose one of {STRATEGIES} other than random.")
    items = tasks.task_items(session, schema=body.schema_, dataset=body.dataset, query=body.query,
                             dataset_resolver=dataset_instances)
    scorer = _scorer(platform, session, body.schema_, version)
    candidates = scorer.images_only(session, items.uids)
    run = active.score_items(scorer, candidates, how.value, active.SqlCache(session), mc_samples=body.mc_samples,
                             aggregate=body.aggregate, features=body.features)
    audit.record(session, principal.name, "labels.active.score", target_kind="model_version", target_id=version,
                 via=VIA, strategy=how.value, items=len(candidates), measures=run.measures)
    return {**run.to_dict(), "items": len(candidates)}


@router.get("/active/scores")
def cached_scores(session: SessionDep, _: Reader,
                  model: Annotated[str, Query(description="The model version, NAME@vN.")]) -> dict[str, Any]:
    """What the score cache holds for a model version: items per measure."""
    from medcycle.models.registry import info, resolve

    version = info(session, resolve(session, model)).ref
    return {"model_version": version, "measures": active.cached_measures(session, version)}


@router.post("/active/batches/{ref}/task", status_code=status.HTTP_201_CREATED)
def batch_task(ref: str, body: BatchTaskIn, session: SessionDep, principal: Writer) -> dict[str, Any]:
    return active.create_task_from_batch(session, ref, schema=body.schema_, readers_per_item=body.readers_per_item,
                                         readers=body.readers, due=body.due,
                                         adjudication_threshold=body.adjudication_threshold, blinded=body.blinded,
                                         seed=body.seed, name=body.name, actor=principal.name, via=VIA).to_dict()
