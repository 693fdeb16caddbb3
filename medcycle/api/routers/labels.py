"""Labels: schemas, readers, labeling tasks, reader queues, submissions, adjudication and label sets.

Who sees what is decided in :mod:`medcycle.labels.access`: leads (``read-data``: admins, ML engineers)
see everything; annotators only the items assigned to them (others answer 404) and, in a blinded task,
only their own labels (others' answer 403). Every refusal is written to the audit log. Creating schemas,
tasks and label sets needs ``write-data``; setting reader flags is for admins.

Reader qualification (exams, sittings, honeypots, certifications, scorecards) is in
:mod:`medcycle.api.routers.labels_qualification`, active learning in :mod:`medcycle.api.routers.labels_active`:
routers of their own under the same prefix and tag, using the permissions and helpers defined here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import NotFound, PermissionDenied, UsageError
from medcycle.labels import access, adjudication, readers, schemas, sets, store, tasks
from medcycle.platform import Platform

PREFIX, TAGS = "/v1/labels", ["labels"]
router = APIRouter(prefix=PREFIX, tags=list(TAGS))
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


# -- active-learning bodies (used by labels_active) -----------------------------------------------------
# Defined here, not in labels_active: the hypotheses API has a ScoreIn too, so OpenAPI names this one after
# its module (medcycle__api__routers__labels__ScoreIn), and moving it would rename the published schema.
STRATEGIES = "random, entropy, margin, mc_dropout (or mc-dropout), tta or coreset"


class ActiveOptions(BaseModel):
    strategy: str = Field(default="random", description=f"One of {STRATEGIES}.")
    model: str | None = Field(default=None, max_length=200,
                              description="The model version whose scores rank the items, NAME@vN (not random).")
    mc_samples: int = Field(default=10, ge=2, le=100, description="MC-dropout passes (part of the cache key).")
    aggregate: str = Field(default="foreground", max_length=32,
                           description="Pixel uncertainty → one number per item: foreground, top<P>% or mean.")


class ScoreIn(ActiveOptions):
    schema_: str = Field(alias="schema", description="The label schema (gives the item level).")
    dataset: str | None = Field(default=None, description="Items of a dataset version, NAME@TAG.")
    query: str | None = Field(default=None, description="Items matching a catalog filter expression.")
    features: bool | None = Field(default=None, description="Also cache feature vectors (default: for coreset; "
                                  "needed by coreset and by diversity > 1).")


# -- helpers --------------------------------------------------------------------------------------------
def dataset_instances(session: Session, ref: str) -> tuple[Sequence[str], str]:
    """A dataset version's instance uids and id (the datasets layer sits above labels: wired here)."""
    from medcycle.datasets import versions

    row = versions.resolve(session, ref)
    return sorted(versions.item_states(session, row.id)), row.id


def guarded(platform: Platform, principal: Principal, action: str, task: str | None, call: Callable[[], T],
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
    row = guarded(platform, principal, "labels.task.read", ref, lambda: access.check_task(session, principal, ref))
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
    who = guarded(platform, principal, "labels.queue.read", task,
                   lambda: access.check_reader_scope(principal, reader), reader=reader)
    return [e.to_dict() for e in tasks.reader_queue(session, who, task=task, limit=limit)]


@router.get("/tasks/{ref}/items/{item}")
def show_item(ref: str, item: str, platform: PlatformDep, session: SessionDep, principal: Labeler) -> dict[str, Any]:
    view = guarded(platform, principal, "labels.item.read", ref,
                    lambda: access.item_view(session, principal, ref, item), item=item)
    return view.to_dict()


@router.get("/tasks/{ref}/items/{item}/annotations")
def item_annotations(ref: str, item: str, platform: PlatformDep, session: SessionDep, principal: Labeler,
                     reader: str | None = None) -> list[dict[str, Any]]:
    def call() -> list[store.AnnotationRecord]:
        row = access.check_task(session, principal, ref)
        return access.visible_annotations(session, principal, row, item, reader=reader)

    found = guarded(platform, principal, "labels.annotations.read", ref, call, item=item, reader=reader)
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

    uid, digest, fmt = guarded(platform, principal, "labels.image.view", ref, call, item=item)
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

    guarded(platform, principal, "labels.submit", ref, check, item=item)
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
