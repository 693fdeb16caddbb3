"""Monitoring pages: the dashboard (``/ui/monitoring``), one prediction, alerts, and reports.

The dashboard draws, for the chosen model version, source and period: requests over time by outcome,
the error rate, latency (p50/p95), the OOD refusal rate, each drift signal's statistic over its threshold
per window (with the windows that paged), open alerts, and a gallery of recent predictions — each input's
middle slice windowed as a viewer shows it, with the predicted mask's contour drawn on top. From an alert,
one click reaches the dashboard (filtered to the version and the time of the drift), the prediction, its
input, the model version and the run that trained it.

Reading needs ``view``; a prediction's record ``browse``; its image ``read-data`` (every image is audited
as ``image.view``); acknowledging and silencing ``deploy``. Forms post back here with the SameSite session
cookie and call the same library functions as ``medcycle monitor alerts ack|silence``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import MedcycleError, NotFound, UsageError
from medcycle.monitoring import alerts, dashboard, links, report
from medcycle.monitoring import log as plog
from medcycle.monitoring import reference as ref_mod
from medcycle.monitoring.overlay import overlay_png
from medcycle.web.render import SECURITY_HEADERS, renderer

router = APIRouter(prefix="/ui/monitoring", include_in_schema=False)
Viewer = Annotated[Principal, requires(Permission.VIEW)]
VIA = "web"
SEVERITY_CLASS = {"page": "status-bad", "warning": "badge-warn", "info": ""}
OUTCOME_CLASS = {"ok": "status-ok", "error": "status-bad", "timeout": "status-bad", "refused": "badge-warn"}


def _when(text: str, what: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a time", hint="Use ISO 8601, e.g. 2024-05-01T06:00+00:00.") from None
    if value.tzinfo is None:
        raise UsageError(f"{what} {text!r} has no time zone", hint="Add +00:00 for UTC.")
    return value


def _run_of(session: Any, model_version: str) -> str | None:
    from medcycle.models.registry import resolve

    try:
        return resolve(session, model_version).run_id
    except MedcycleError:
        return None


@router.get("")
def dashboard_page(
    request: Request, session: SessionDep, principal: Viewer,
    model_version: Annotated[str, Query(max_length=160)] = "", source: Annotated[str, Query(max_length=128)] = "",
    period: Annotated[str, Query(max_length=8)] = "24h", since: Annotated[str, Query(max_length=40)] = "",
    until: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    flt = dashboard.Filter.of(model_version=model_version, source=source, period=period or None,
                              since=_when(since, "since"), until=_when(until, "until"))
    timeline = dashboard.timeline(session, flt)
    drift = dashboard.drift_series(session, flt)
    can_browse = principal.can(Permission.BROWSE)
    gallery = dashboard.gallery(session, flt) if can_browse else []
    open_alerts = [a for a in alerts.list_alerts(session, limit=200) if a.state != alerts.State.RESOLVED.value
                   and (not flt.model_version or a.model_version == flt.model_version)][:20]
    refs = [r for r in ref_mod.references(session) if not flt.model_version or r.model_version == flt.model_version]
    return renderer(request).render(
        request, "monitoring.html", principal=principal, active="monitoring", flt=flt, period=period,
        choices=dashboard.choices(session), timeline=timeline, drift=drift, gallery=gallery, alerts=open_alerts,
        references=refs, severity_class=SEVERITY_CLASS, outcome_class=OUTCOME_CLASS, can_browse=can_browse,
        can_read=principal.can(Permission.READ_DATA), chart={"timeline": timeline, "drift": drift},
    )


@router.get("/predictions/{prediction_id}")
def prediction_page(request: Request, prediction_id: str, session: SessionDep, principal: Viewer) -> Response:
    principal.require(Permission.BROWSE)
    row = plog.get(session, prediction_id)
    related = [a for a in alerts.list_alerts(session, limit=500)
               if a.links.get("prediction") == links.prediction(row.id)]
    return renderer(request).render(
        request, "monitoring_prediction.html", principal=principal, active="monitoring", p=row,
        run_id=_run_of(session, row.model_version), model_link=links.model(row.model_version),
        dashboard_link=links.dashboard(row.model_version, source=row.source), alerts=related,
        can_read=principal.can(Permission.READ_DATA), outcome_class=OUTCOME_CLASS,
    )


@router.get("/predictions/{prediction_id}/overlay.png")
def overlay(prediction_id: str, platform: PlatformDep, principal: Viewer,
            mask: Annotated[int, Query(ge=0, le=1)] = 1) -> Response:
    """The input's middle slice (windowed) with the mask's contour; ``mask=0``: the input alone."""
    principal.require(Permission.READ_DATA)
    with platform.session(write=False) as session:
        row = plog.get(session, prediction_id)
        digests, mask_digest = list(row.input_digests), row.mask_digest
    if not digests:
        raise NotFound(f"prediction {prediction_id} references no stored input", hint="Nothing to draw.")
    with platform.session() as session:  # audited before the pixels leave
        audit.record(session, principal, "image.view", target_kind="prediction", target_id=prediction_id, via=VIA)
    image = platform.objects.get(digests[len(digests) // 2])
    drawn = overlay_png(image, platform.objects.get(mask_digest) if mask and mask_digest else None)
    return Response(drawn, media_type="image/png", headers={**SECURITY_HEADERS, "Cache-Control": "private, no-store"})


@router.get("/alerts")
def alerts_page(request: Request, session: SessionDep, principal: Viewer,
                state: Annotated[str, Query(max_length=16)] = "") -> Response:
    active = alerts.silences(session)
    rows = alerts.list_alerts(session, state=state or None, limit=200)
    return renderer(request).render(
        request, "monitoring_alerts.html", principal=principal, active="monitoring", rows=rows, state=state,
        hushed={r.id: alerts.silenced_by(r.key, active) for r in rows}, silences=active,
        severity_class=SEVERITY_CLASS, can_operate=principal.can(Permission.DEPLOY),
        states=[s.value for s in alerts.State],
    )


@router.get("/alerts/{alert_id}")
def alert_page(request: Request, alert_id: str, session: SessionDep, principal: Viewer,
               done: Annotated[str, Query(max_length=16)] = "") -> Response:
    row = alerts.get(session, alert_id)
    hushed = alerts.silenced_by(row.key, alerts.silences(session))
    run_id = _run_of(session, row.model_version) if row.model_version else None
    link = dict(row.links)
    if run_id and "run" not in link:
        link["run"] = links.run(run_id)
    return renderer(request).render(
        request, "monitoring_alert.html", principal=principal, active="monitoring", a=row, links=link,
        hushed=hushed, severity_class=SEVERITY_CLASS, can_operate=principal.can(Permission.DEPLOY), done=done,
    )


@router.post("/alerts/{alert_id}/ack")
def ack_form(alert_id: str, session: SessionDep, principal: Viewer) -> Response:
    principal.require(Permission.DEPLOY)
    alerts.acknowledge(session, alert_id, actor=principal.name, via=VIA)
    return RedirectResponse(f"/ui/monitoring/alerts/{alert_id}?done=ack", status_code=303)


@router.post("/alerts/{alert_id}/silence")
def silence_form(alert_id: str, session: SessionDep, principal: Viewer,
                 duration: Annotated[str, Form(max_length=8)] = "1d",
                 reason: Annotated[str, Form(max_length=2000)] = "",
                 scope: Annotated[str, Form(max_length=8)] = "alert") -> Response:
    principal.require(Permission.DEPLOY)
    row = alerts.get(session, alert_id)
    pattern = row.key if scope != "group" or not row.model_version else f"*:{row.model_version}*"
    alerts.silence(session, pattern, duration=alerts.parse_duration(duration), reason=reason, actor=principal.name,
                   via=VIA)
    return RedirectResponse(f"/ui/monitoring/alerts/{alert_id}?done=silence", status_code=303)


@router.get("/reports")
def reports_page(request: Request, session: SessionDep, principal: Viewer) -> Response:
    return renderer(request).render(request, "monitoring_reports.html", principal=principal, active="monitoring",
                                    rows=report.list_reports(session, 100))


@router.get("/reports/{report_id}")
def report_page(report_id: str, session: SessionDep, platform: PlatformDep, principal: Viewer) -> Response:
    """The stored report as it was generated (a self-contained page)."""
    row = report.get(session, report_id)
    return Response(platform.objects.get(row.html_digest), media_type="text/html; charset=utf-8",
                    headers=SECURITY_HEADERS)
