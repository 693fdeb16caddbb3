"""Run pages: the runs table (``/ui/runs``), one run (``/ui/runs/RUN``), the images a run logged, and — from
:mod:`medcycle.web.runs_compare` and :mod:`medcycle.web.runs_card` — the compare page and the experiment card.

The table takes a filter in the run filter language (``params.lr > 1e-3 and metrics.val_dice > 0.8``);
a filter, order or choice that cannot be used is shown next to the filter box with its hint (HTTP 400),
never as an error page. Listing is one :func:`~medcycle.experiments.query.list_runs` call plus a few
indexed queries for the controls, however many runs there are.

A run's page shows what it recorded: params, tags, the capture (git, the uncommitted diff, packages,
system, seeds, environment), the reproducibility verdict, metric and resource charts (series downsampled
by :func:`~medcycle.experiments.runs.metric_history`, drawn by ``static/js/runs_detail.js``), its output
in pages from the end, artifacts and models with digests, and logged images on a step slider. Image
bytes and artifact downloads need ``read-data``; every image view is audited as ``image.view``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from starlette.responses import Response

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import MedcycleError, NotFound, UsageError
from medcycle.experiments import cards, query, runs
from medcycle.experiments.ingest import STATUSES
from medcycle.experiments.runs import ArtifactInfo
from medcycle.experiments.tables import ArtifactRow
from medcycle.objects.base import check_digest
from medcycle.web import runs_card, runs_compare
from medcycle.web.render import renderer
from medcycle.web.runs_data import (
    MAX_COLUMNS,
    MAX_QUERY,
    PAGE_SIZES,
    Column,
    RunsView,
    choices,
    default_columns,
    diff_lines,
    duration,
    log_page,
    number,
    page_size,
    pages,
    parse_column,
    positive,
    series_chart,
)

router = APIRouter(prefix="/ui/runs", include_in_schema=False)
router.include_router(runs_compare.router)  # /compare before /{run}
router.include_router(runs_card.router)
Viewer = Annotated[Principal, requires(Permission.VIEW)]
Reader = Annotated[Principal, requires(Permission.READ_DATA)]

STATUS_CLASS = {"running": "state-running", "finished": "status-ok", "failed": "status-bad", "killed": "badge-warn",
                "crashed": "status-bad"}
EXAMPLES = (
    "params.lr > 1e-3 and metrics.val_dice > 0.8",
    'status == "finished" and max(metrics.val/auc) >= 0.9',
    'verdict == "reproducible"',
    'tags."card.conclusions" is not null',
)
MAX_CHARTS = 24  # metric charts on a run page (the rest are listed)
CHART_POINTS = 600  # points per series after downsampling
MAX_DIFF_LINES = 4000
STREAMS = ("", "stdout", "stderr")


# -- the runs table -------------------------------------------------------------------------------------
@router.get("")
def runs_page(
    request: Request,
    session: SessionDep,
    principal: Viewer,
    q: Annotated[str, Query(max_length=MAX_QUERY)] = "",
    project: Annotated[str, Query(max_length=128)] = "",
    status: Annotated[str, Query(max_length=16)] = "",
    hypothesis: Annotated[str, Query(max_length=128)] = "",
    col: Annotated[list[str] | None, Query(max_length=300)] = None,
    order: Annotated[str, Query(max_length=600)] = "",
    page: str = "1",
    size: str = str(PAGE_SIZES[1]),
) -> Response:
    notices: list[str] = []
    columns: list[Column] = []
    for spec in (col or [])[:MAX_COLUMNS]:
        try:
            column = parse_column(spec)
        except UsageError as exc:
            notices.append(f"{exc.message}; left out.")
            continue
        if column not in columns:
            columns.append(column)
    view = RunsView(q=q.strip(), project=project, status=status, hypothesis=hypothesis,
                    cols=tuple(c.spec for c in columns), order=order.strip(), page=positive("page", page),
                    size=page_size(size))
    common: dict[str, Any] = {"view": view, "choices": choices(session), "statuses": STATUSES[:],
                              "examples": EXAMPLES, "notices": notices, "page_sizes": PAGE_SIZES,
                              "status_class": STATUS_CLASS, "number": number, "duration": duration}
    render = renderer(request).render
    try:
        query.parse(view.q)  # errors point into the person's own text
        if view.status and view.status not in STATUSES:
            raise UsageError(f"{view.status!r} is not a run status", hint=f"Choose one of: {', '.join(STATUSES)}.")
        result = query.list_runs(session, view.filter, project=view.project or None, order=view.order or None,
                                 limit=view.size, offset=(view.page - 1) * view.size)
    except UsageError as exc:
        return render(request, "runs.html", principal=principal, active="experiments", status_code=400,
                      error=exc, result=None, columns=columns, chosen=bool(columns), n_pages=1, **common)
    shown = columns or default_columns(result.runs)
    return render(request, "runs.html", principal=principal, active="experiments", error=None, result=result,
                  columns=shown, chosen=bool(columns), n_pages=pages(result.total, view.size), **common)


# -- one run --------------------------------------------------------------------------------------------
def image_groups(run_id: str, artifacts: list[ArtifactInfo]) -> dict[str, list[dict[str, Any]]]:
    """Logged images by key, in step order, as the step slider uses them."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in artifacts:
        if a.kind == "image" and a.digest and not a.meta.get("missing"):
            groups[a.name].append({
                "step": a.step, "src": f"/ui/runs/{run_id}/images/{a.digest}.png", "digest": a.digest,
                "panels": a.meta.get("panels") or [], "shape": a.meta.get("shape"), "mask": bool(a.meta.get("mask")),
                "width": a.meta.get("width"), "height": a.meta.get("height"),
            })
    for entries in groups.values():
        entries.sort(key=lambda e: -1 if e["step"] is None else e["step"])
    return dict(sorted(groups.items()))


def _text_object(read: Any) -> tuple[str | None, str | None]:
    """The text of a captured object, or why it cannot be shown."""
    try:
        data = read()
    except MedcycleError as exc:
        return None, exc.message
    if data is None:
        return None, None
    if isinstance(data, list):
        return "\n".join(data), None
    return bytes(data).decode("utf-8", errors="replace"), None


@router.get("/{run}")
def run_page(
    request: Request,
    run: str,
    platform: PlatformDep,
    session: SessionDep,
    principal: Viewer,
    stream: Annotated[str, Query(max_length=8)] = "",
    log_page_no: Annotated[str, Query(alias="log_page", max_length=12)] = "1",
) -> Response:
    if stream not in STREAMS:
        raise UsageError(f"{stream!r} is not an output stream", hint="Choose stdout, stderr or both.")
    detail = runs.get_run(session, run)
    rid = detail.id
    metric_keys = [k for k in detail.metrics if not k.startswith("system/")]
    system_keys = [k for k in detail.metrics if k.startswith("system/")]
    charted = metric_keys[:MAX_CHARTS]
    history = runs.metric_history(session, rid, charted + system_keys, CHART_POINTS) if charted or system_keys else {}
    charts = {"metrics": [series_chart(history[k]) for k in charted],
              "system": [series_chart(history[k], by_time=True) for k in system_keys]}
    diff_text, diff_problem = _text_object(lambda: runs.read_diff(session, platform.objects, rid))
    diff, diff_cut = diff_lines(diff_text, MAX_DIFF_LINES) if diff_text else ([], False)
    packages, packages_problem = _text_object(lambda: runs.read_packages(session, platform.objects, rid))
    log_text = runs.read_log(session, rid, stream=stream or None) if detail.log_bytes else ""
    logs = log_page(log_text, positive("log page", log_page_no))
    plain = [m for m in detail.metrics.values() if not m.key.startswith("system/")]
    return renderer(request).render(
        request, "runs_detail.html", principal=principal, active="experiments",
        d=detail, s=detail.summary, capture=detail.capture, git=detail.capture.get("git") or {},
        system=detail.capture.get("system") or {}, entry=detail.capture.get("entry") or {},
        charts=charts, plain=plain, uncharted=metric_keys[MAX_CHARTS:],
        diff=diff, diff_cut=diff_cut, diff_problem=diff_problem, packages=packages, packages_problem=packages_problem,
        logs=logs, stream=stream, streams=STREAMS, images=image_groups(rid, detail.artifacts),
        artifacts=[a for a in detail.artifacts if a.kind != "image"],
        conclusions=cards.conclusions_of(detail.summary.tags),
        tags={k: v for k, v in detail.summary.tags.items() if k not in cards.CARD_TAGS},
        can_read=principal.can(Permission.READ_DATA), can_train=principal.can(Permission.TRAIN),
        status_class=STATUS_CLASS, number=number, duration=duration,
    )


@router.get("/{run}/images/{digest}.png")
def run_image(run: str, digest: str, platform: PlatformDep, session: SessionDep, principal: Reader) -> Response:
    """A PNG the run logged with ``log_image`` (only one of its own; audited as ``image.view``)."""
    row = runs.resolve_run(session, run)
    check_digest(digest)
    owned = session.scalar(select(ArtifactRow.seq).where(ArtifactRow.run_id == row.id, ArtifactRow.digest == digest,
                                                         ArtifactRow.kind == "image").limit(1))
    if owned is None:
        raise NotFound(f"run {row.id[:12]} logged no image {digest[:12]}", hint="Open the run's page for its images.")
    audit.record_read(platform, principal, "image.view", target_kind="run", target_id=row.id, via="web",
                      digest=digest)
    return Response(platform.objects.get(digest), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})
