"""The labels pages (``/ui/labels``): tasks, a reader's queue, labeling an item, review, agreement.

Who sees what is decided by :mod:`medcycle.labels.access` — the checks the API makes — and every page and
image here goes through them (``label`` permission first: viewers get 403):

* **leads** (``read-data``: admins, ML engineers) see every task with its progress per reader, due date,
  agreement per item and adjudication queue, the agreement dashboard, and every item's review page;
* **annotators** see their queue and the items assigned to them. Any other item's page or image answers
  404, exactly like a missing one, and the attempt goes to the audit log (outcome ``denied``, via ``web``).
  In a blinded task they never see the review page (403, audited) nor another reader's labels;
* **senior readers** open the review page of adjudication items they did not read, and resolve them:
  keep one reader's labels, take the consensus, or replace them with their own.

Images come from :mod:`medcycle.web.labels_images` rather than the catalog's thumbnail route, which needs
``read-data`` (annotators lack it) and shows only the middle slice; every image served is audited as
``image.view``. Forms post back here with the SameSite session cookie; each submission calls one library
function (:func:`medcycle.labels.tasks.submit`, :func:`medcycle.labels.adjudication.adjudicate`).

On an item's page a reader draws what the schema allows (``labels_draw.js``: boxes, polygons, brush and
eraser masks, per slice); the drawing arrives as JSON form fields and is checked against the image's grid
and the schema (:func:`medcycle.web.labels_data.drawn_annotations`) before anything is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session
from starlette.responses import Response

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.catalog.render import Preset, parse_preset
from medcycle.errors import Conflict, UsageError, ValidationFailed
from medcycle.labels import access, adjudication, readers, store, tasks
from medcycle.labels.model import Annotation, Kind
from medcycle.labels.schemas import SchemaInfo
from medcycle.labels.tables import AssignmentRow, LabelSchemaRow, LabelTaskRow
from medcycle.objects.base import ObjectStore
from medcycle.platform import Platform
from medcycle.web import labels_data as data
from medcycle.web import labels_images as images
from medcycle.web.labels_review import layer_colors, review_context, review_layers
from medcycle.web.render import renderer

router = APIRouter(prefix="/ui/labels", include_in_schema=False)
Labeler = Annotated[Principal, requires(Permission.LABEL)]
VIA = "web"
TOOL = "medcycle-web"
ITEMS_PER_PAGE = 100
TOOLS = (("box", Kind.BOX), ("polygon", Kind.POLYGON), ("brush", Kind.MASK), ("eraser", Kind.MASK))
DRAWN = frozenset({Kind.BOX, Kind.POLYGON, Kind.MASK})
MAX_MASK_FIELD = 64_000_000  # characters of run lengths: far more than a hand-painted reading needs
T = TypeVar("T")

STATE_CLASS = {"open": "state-queued", "complete": "status-ok", "adjudication": "badge-warn",
               "resolved": "state-running", "closed": "state-cancelled", "assigned": "state-queued",
               "submitted": "status-ok"}


# -- helpers ----------------------------------------------------------------------------------------
def guarded(platform: Platform, principal: Principal, action: str, ref: str | None, call: Callable[[], T],
            **details: Any) -> T:
    """Run ``call``; a refusal from :mod:`medcycle.labels.access` is written to the audit log, then answered."""
    try:
        return call()
    except (access.ItemHidden, access.LabelsHidden) as exc:
        access.record_denial(platform, principal, exc, action, task=ref, via=VIA, **details)
        raise


def item_url(ref: str, item: str, page: str = "") -> str:
    return f"/ui/labels/tasks/{quote(ref)}/items/{quote(item, safe='')}" + (f"/{page}" if page else "")


def short(uid: str, keep: int = 14) -> str:
    """A long catalog uid shortened for tables (the full uid goes in a title attribute)."""
    return uid if len(uid) <= keep + 1 else "…" + uid[-keep:]


def number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


HELPERS: dict[str, Any] = {"short": short, "number": number, "duration": duration, "item_url": item_url,
                           "state_class": STATE_CLASS, "describe": data.describe}


def schema_of(session: Session, row: LabelTaskRow) -> SchemaInfo:
    return SchemaInfo.of(session.get_one(LabelSchemaRow, row.schema_id))


def my_progress(session: Session, row: LabelTaskRow, reader: str) -> tasks.ReaderProgress | None:
    return next((p for p in tasks.task_info(session, row).readers_progress if p.reader == reader), None)


def viewer(stack: images.Stack, base: str, *, layers: str = "") -> dict[str, Any]:
    """What the viewer macro and ``labels_viewer.js`` need: the image URL, slices, size, window presets."""
    params = {"slice": stack.middle, "preset": Preset.AUTO.value, "size": images.DEFAULT_SIZE}
    if layers:
        params["layers"] = layers
    return {"src": base, "initial": f"{base}?{urlencode(params, safe=',')}", "slices": stack.slices,
            "slice": stack.middle, "width": stack.width, "height": stack.height, "presets": [p.value for p in Preset],
            "ct": stack.modality == "CT", "layers": layers, "size": images.DEFAULT_SIZE}


def image_response(png: bytes) -> Response:
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=600",
                                                          "X-Content-Type-Options": "nosniff"})


# -- tasks ------------------------------------------------------------------------------------------
@router.get("")
def tasks_page(request: Request, session: SessionDep, principal: Labeler,
               state: Annotated[str, Query(pattern="^(|open|closed)$")] = "") -> Response:
    lead = access.is_lead(principal)
    infos = tasks.list_tasks(session, reader=None if lead else principal.name, state=state or None)
    mine = {t.id: next((p for p in t.readers_progress if p.reader == principal.name), None) for t in infos}
    senior = readers.is_senior(session, principal.name)
    adjudications = ([e for e in adjudication.adjudication_queue(session) if principal.name not in e.readers]
                     if senior or lead else [])
    return renderer(request).render(
        request, "labels.html", principal=principal, active="labels", lead=lead, infos=infos, mine=mine,
        state=state, senior=senior, adjudications=adjudications,
        queue=tasks.reader_queue(session, principal.name, limit=1), **HELPERS,
    )


@router.get("/queue")
def queue_page(request: Request, platform: PlatformDep, session: SessionDep, principal: Labeler,
               task: Annotated[str, Query(max_length=16)] = "",
               reader: Annotated[str, Query(max_length=64)] = "",
               done: Annotated[str, Query(max_length=128)] = "") -> Response:
    """A reader's items still to read (their own; a lead may look at anyone's), and their progress per task."""
    who = guarded(platform, principal, "labels.queue.read", task or None,
                  lambda: access.check_reader_scope(principal, reader or None), reader=reader or None)
    ref = tasks.ref_of(tasks.parse_ref(task)) if task else None
    entries = tasks.reader_queue(session, who, task=ref, limit=1000)
    progress = [(t, next((p for p in t.readers_progress if p.reader == who), None))
                for t in tasks.list_tasks(session, reader=who) if ref is None or t.ref == ref]
    senior_entries = ([e for e in adjudication.adjudication_queue(session, task=ref) if who not in e.readers]
                      if who == principal.name and readers.is_senior(session, who) else [])
    return renderer(request).render(
        request, "labels_queue.html", principal=principal, active="labels", who=who, task=ref, entries=entries,
        progress=progress, done=done, senior_entries=senior_entries, **HELPERS,
    )


@router.get("/tasks/{ref}")
def task_page(request: Request, ref: str, platform: PlatformDep, session: SessionDep, principal: Labeler,
              state: Annotated[str, Query(pattern="^(|open|complete|adjudication|resolved)$")] = "",
              page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> Response:
    """A task for its leads; a reader is sent to their queue of that task."""
    row = guarded(platform, principal, "labels.task.read", ref, lambda: access.check_task(session, principal, ref))
    if not access.is_lead(principal):
        return RedirectResponse(f"/ui/labels/queue?{urlencode({'task': tasks.ref_of(row.id)})}", status_code=303)
    info = tasks.task_info(session, row)
    total, lines = data.task_items(session, row.id, state=state or None, page=page, per_page=ITEMS_PER_PAGE)
    entries = adjudication.adjudication_queue(session, task=row.id, state=None)
    return renderer(request).render(
        request, "labels_task.html", principal=principal, active="labels", info=info, schema=schema_of(session, row),
        lines=lines, total=total, state=state, page=page, pages=max(1, -(-total // ITEMS_PER_PAGE)),
        adjudications=entries, item_states=[s.value for s in tasks.ItemState], **HELPERS,
    )


@router.get("/tasks/{ref}/agreement")
def agreement_page(request: Request, ref: str, platform: PlatformDep, session: SessionDep,
                   principal: Labeler) -> Response:
    """Reader × reader agreement of a task (leads only: it shows how each reader labelled)."""
    def check() -> LabelTaskRow:
        row = access.check_task(session, principal, ref)
        if not access.is_lead(principal):
            raise access.LabelsHidden(f"{principal.name} may not see the readers' agreement in {tasks.ref_of(row.id)}",
                                      hint="The agreement dashboard is for leads; your queue is at /ui/labels/queue.")
        return row

    row = guarded(platform, principal, "labels.agreement.read", ref, check)
    info = tasks.task_info(session, row)
    schema = schema_of(session, row)
    view = data.task_agreement(session, platform.objects, row.id, schema)
    return renderer(request).render(
        request, "labels_agreement.html", principal=principal, active="labels", info=info, schema=schema,
        view=view, scorecards=data.task_scorecards(session, [p.reader for p in info.readers_progress]), **HELPERS,
    )


# -- labeling one item ------------------------------------------------------------------------------
def drawing(schema: SchemaInfo, stack: images.Stack, width: int, height: int) -> dict[str, Any]:
    """What ``labels_draw.js`` needs: the image's pixel grid and the classes each tool may draw, with colours."""
    drawable = [c for c in schema.classes if set(c.kinds) & DRAWN]
    classes = [{"name": c.name, "kinds": [k.value for k in c.kinds if k in DRAWN],
                "color": c.color or images.PALETTE[i % len(images.PALETTE)]} for i, c in enumerate(drawable)]
    tools = [t for t, kind in TOOLS if any(kind in c.kinds for c in drawable)]
    return {"classes": classes, "tools": tools, "width": width, "height": height, "slices": stack.slices}


def label_page(request: Request, session: Session, objects: ObjectStore, principal: Principal, row: LabelTaskRow,
               item: str, *, done: str = "", error: Exception | None = None, chosen: tuple[str, ...] = (),
               boxes: str = "[]", polygons: str = "[]", masks: str = "[]", status_code: int = 200) -> Response:
    """The labeling view (also shown again, with the error and what was drawn, when a submission is refused)."""
    ref = tasks.ref_of(row.id)
    schema = schema_of(session, row)
    stack = images.item_stack(session, row.level, item)
    if stack.width <= 0 or stack.height <= 0:  # the catalog lacks the size: read it from the first plane
        grid = images.stack_geometry(session, objects, stack, placed=False)
        stack = images.Stack(stack.item, stack.planes, grid.width, grid.height, stack.modality)
    assignment = session.get(AssignmentRow, (row.id, item, principal.name))
    submitted = assignment is not None and assignment.state == "submitted"
    records = access.visible_annotations(session, principal, row, item, reader=principal.name) if submitted else []
    mine = [store.load(objects, r) for r in records]
    queue = tasks.reader_queue(session, principal.name, task=ref, limit=10_000)
    following = next((e.item for e in queue if e.item != item), None)
    base = item_url(ref, item, "overlay.png" if submitted else "image.png")
    return renderer(request).render(
        request, "labels_item.html", principal=principal, active="labels", status_code=status_code, task=row,
        ref=ref, item=item, schema=schema, stack=stack, view=viewer(stack, base, layers=principal.name if submitted
                                                                    else ""),
        submitted=submitted, records=records, mine=mine, remaining=len(queue), following=following,
        progress=my_progress(session, row, principal.name), done=done, error=error, chosen=chosen, boxes=boxes,
        polygons=polygons, masks=masks, draw=drawing(schema, stack, stack.width, stack.height),
        class_options=[c for c in schema.classes if Kind.CLASS in c.kinds],
        colors=layer_colors(session, principal, row, access.check_item(session, principal, row, item), item),
        **HELPERS,
    )


@router.get("/tasks/{ref}/items/{item}")
def item_page(request: Request, ref: str, item: str, platform: PlatformDep, session: SessionDep,
              principal: Labeler, done: Annotated[str, Query(max_length=128)] = "") -> Response:
    """The labeling view of an item assigned to the caller; leads and adjudicators go to its review."""
    def check() -> LabelTaskRow:
        row = access.check_task(session, principal, ref)
        access.check_item(session, principal, row, item)
        return row

    row = guarded(platform, principal, "labels.item.read", ref, check, item=item)
    if session.get(AssignmentRow, (row.id, item, principal.name)) is None:
        return RedirectResponse(item_url(tasks.ref_of(row.id), item, "review"), status_code=303)
    return label_page(request, session, platform.objects, principal, row, item, done=done)


@router.post("/tasks/{ref}/items/{item}")
def submit_form(
    request: Request, ref: str, item: str, platform: PlatformDep, principal: Labeler,
    classes: Annotated[list[str], Form(max_length=128)] = [],  # noqa: B006 - FastAPI copies form defaults
    boxes: Annotated[str, Form(max_length=200_000)] = "",
    polygons: Annotated[str, Form(max_length=2_000_000)] = "",
    masks: Annotated[str, Form(max_length=MAX_MASK_FIELD)] = "",
    seconds: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Submit the caller's reading through :func:`medcycle.labels.tasks.submit`; then on to the next item.

    What was drawn is checked against the image it was drawn on and the task's schema first
    (:func:`medcycle.web.labels_data.drawn_annotations`); a refusal shows the page again with the error
    and the drawing kept.
    """
    with platform.session(write=False) as session:
        def check() -> LabelTaskRow:
            row = access.check_task(session, principal, ref)
            if access.check_item(session, principal, row, item) is access.Role.ADJUDICATOR:
                raise access.ItemHidden(f"{tasks.ref_of(row.id)} has no item {item!r} assigned to {principal.name}",
                                        hint="Your queue lists your items: /ui/labels/queue.")
            return row

        row = guarded(platform, principal, "labels.submit", ref, check, item=item)
        task_ref = tasks.ref_of(row.id)
        schema = schema_of(session, row)
        stack = images.item_stack(session, row.level, item)
        grid = images.stack_geometry(session, platform.objects, stack, placed=bool(masks.strip()))
    try:
        anns = data.drawn_annotations(item, principal.name, schema=schema, grid=grid, classes=classes, boxes=boxes,
                                      polygons=polygons, masks=masks)
        spent = data.parse_seconds(seconds)
        with platform.session() as session:
            tasks.submit(session, platform.objects, task_ref, item, principal.name, anns, seconds=spent, tool=TOOL,
                         actor=principal.name, via=VIA)
    except (ValidationFailed, Conflict, UsageError) as exc:
        with platform.session(write=False) as session:
            row = tasks.get_task_row(session, task_ref)
            return label_page(request, session, platform.objects, principal, row, item, error=exc,
                              chosen=tuple(classes), boxes=boxes if boxes.strip() else "[]",
                              polygons=polygons if polygons.strip() else "[]", masks=masks if masks.strip() else "[]",
                              status_code=exc.http_status)
    with platform.session(write=False) as session:
        following = next((e.item for e in tasks.reader_queue(session, principal.name, task=task_ref, limit=10_000)),
                         None)
    done = urlencode({"done": item})
    if following is not None:
        return RedirectResponse(f"{item_url(task_ref, following)}?{done}", status_code=303)
    return RedirectResponse(f"/ui/labels/queue?{urlencode({'task': task_ref, 'done': item})}", status_code=303)


# -- review and adjudication ------------------------------------------------------------------------
def check_review(session: Session, principal: Principal, ref: str, item: str) -> tuple[LabelTaskRow, access.Role]:
    """The task and the caller's role, if they may see every reading of the item (never a blinded reader)."""
    row = access.check_task(session, principal, ref)
    role = access.check_item(session, principal, row, item)
    if role is access.Role.READER and row.blinded:
        raise access.LabelsHidden(f"{tasks.ref_of(row.id)} is blinded: {principal.name} may not review the "
                                  "readings of other readers", hint="Readers of a blinded task see only their own "
                                  "labels; your queue is at /ui/labels/queue.")
    return row, role


@router.get("/tasks/{ref}/items/{item}/review")
def review_page(request: Request, ref: str, item: str, platform: PlatformDep, session: SessionDep,
                principal: Labeler, resolved: Annotated[str, Query(max_length=8)] = "") -> Response:
    row, role = guarded(platform, principal, "labels.review.read", ref,
                        lambda: check_review(session, principal, ref, item), item=item)
    context = review_context(session, platform.objects, principal, row, role, item)
    stack = images.item_stack(session, row.level, item)
    ref = tasks.ref_of(row.id)
    return renderer(request).render(
        request, "labels_review.html", principal=principal, active="labels", task=row, ref=ref, item=item,
        stack=stack, view=viewer(stack, item_url(ref, item, "overlay.png"), layers=context.layer_param),
        resolved=resolved, r=context, lead=access.is_lead(principal),
        class_options=[c for c in context.schema.classes if Kind.CLASS in c.kinds],
        box_options=[c for c in context.schema.classes if Kind.BOX in c.kinds], **HELPERS,
    )


@router.post("/tasks/{ref}/items/{item}/review")
def resolve_form(
    ref: str, item: str, platform: PlatformDep, principal: Labeler,
    action: Annotated[str, Form(max_length=96)],
    note: Annotated[str, Form(max_length=4000)] = "",
    classes: Annotated[list[str], Form(max_length=128)] = [],  # noqa: B006 - FastAPI copies form defaults
    boxes: Annotated[str, Form(max_length=200_000)] = "",
    seconds: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Resolve the item's adjudication: keep one reader's labels, take the consensus, or the senior's own."""
    choose: str | None = None
    own: list[Annotation] | None = None
    with platform.session(write=False) as session:
        row, _ = guarded(platform, principal, "labels.adjudicate", ref,
                         lambda: check_review(session, principal, ref, item), item=item)
        task_ref = tasks.ref_of(row.id)
        if action.startswith("reader:"):
            choose = action.removeprefix("reader:")
        elif action == "consensus":
            readings = tasks.readings(session, platform.objects, row.id, item)
            consensus = data.item_consensus(item, readings, schema_of(session, row))
            if not consensus.annotations:
                raise UsageError("there is no consensus to accept for this item",
                                 hint="Keep one reader's labels, or give your own.")
            own = [Annotation(item, a.label, a.kind, a.geometry, reader=principal.name, score=a.score,
                              attributes={"consensus": a.reader}) for a in consensus.annotations]
        elif action == "own":
            own = data.form_annotations(item, principal.name, classes, boxes)
        else:
            raise UsageError(f"unknown review action {action!r}",
                             hint="Use the page's buttons: keep a reader's labels, accept the consensus, or "
                             "submit your own.")
    spent = data.parse_seconds(seconds)
    with platform.session() as session:
        adjudication.adjudicate(session, platform.objects, task_ref, item, senior=principal.name, choose_reader=choose,
                                annotations=own, note=note, seconds=spent, tool=TOOL, actor=principal.name, via=VIA)
    return RedirectResponse(f"{item_url(task_ref, item, 'review')}?resolved=1", status_code=303)


# -- images -----------------------------------------------------------------------------------------
def _plane(session: Session, platform: Platform, principal: Principal, ref: str, item: str, slice_: int | None,
           action: str) -> tuple[LabelTaskRow, access.Role, images.Stack, images.Plane]:
    def check() -> tuple[LabelTaskRow, access.Role]:
        row = access.check_task(session, principal, ref)
        return row, access.check_item(session, principal, row, item)

    row, role = guarded(platform, principal, action, ref, check, item=item)
    stack = images.item_stack(session, row.level, item)
    return row, role, stack, stack.plane(slice_)


def _audited_bytes(platform: Platform, principal: Principal, ref: str, item: str, plane: images.Plane,
                   index: int) -> bytes:
    content = platform.objects.get(plane.digest)
    audit.record_read(platform, principal, "image.view", target_kind="instance", target_id=plane.instance, via=VIA,
                      task=ref, item=item, slice=index)
    return content


@router.get("/tasks/{ref}/items/{item}/image.png", response_class=Response)
def image_png(ref: str, item: str, platform: PlatformDep, session: SessionDep, principal: Labeler,
              slice: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
              preset: Annotated[str, Query(max_length=16)] = Preset.AUTO.value,
              size: Annotated[int, Query(ge=64, le=1024)] = images.DEFAULT_SIZE) -> Response:
    """One slice of the item, windowed (CT presets in HU; MONOCHROME1 shown as on a viewer). Audited."""
    chosen = parse_preset(preset)
    row, _, stack, plane = _plane(session, platform, principal, ref, item, slice, "labels.image.view")
    index = stack.middle if slice is None else slice
    content = _audited_bytes(platform, principal, tasks.ref_of(row.id), item, plane, index)
    img, _ = images.render_plane(content, plane, preset=chosen, size=size)
    return image_response(images.png_bytes(img))


@router.get("/tasks/{ref}/items/{item}/overlay.png", response_class=Response)
def overlay_png(ref: str, item: str, platform: PlatformDep, session: SessionDep, principal: Labeler,
                layers: Annotated[str, Query(max_length=2000)] = "",
                slice: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
                preset: Annotated[str, Query(max_length=16)] = Preset.AUTO.value,
                size: Annotated[int, Query(ge=64, le=1024)] = images.DEFAULT_SIZE) -> Response:
    """One slice with the chosen readers' labels (and ``consensus``, ``adjudication``) drawn over it. Audited.

    A blinded reader may ask only for their own layer; any other layer is refused (403) and audited.
    """
    chosen = parse_preset(preset)
    names = tuple(dict.fromkeys(n.strip() for n in layers.split(",") if n.strip()))
    row, role, stack, plane = _plane(session, platform, principal, ref, item, slice, "labels.image.view")
    task_ref = tasks.ref_of(row.id)
    drawn = guarded(platform, principal, "labels.annotations.read", task_ref,
                    lambda: review_layers(session, platform.objects, principal, row, role, item, names),
                    item=item, layers=",".join(names)[:200])
    index = stack.middle if slice is None else slice
    content = _audited_bytes(platform, principal, task_ref, item, plane, index)
    img, native = images.render_plane(content, plane, preset=chosen, size=size)
    img = images.draw_layers(img, native, drawn, index=index, slices=stack.slices)
    return image_response(images.png_bytes(img))

