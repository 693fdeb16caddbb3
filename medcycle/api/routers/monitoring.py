"""Monitoring over REST: the prediction log, dashboard data, drift, alerts and silences, reports, references.

Reading summaries needs ``view``; single prediction records ``browse``; acknowledging, silencing, running
drift and generating reports ``deploy``; capturing a reference ``train``. ``/v1/monitoring/metrics`` exports
the monitoring series in the Prometheus text format (the same collector the app's ``/metrics`` can carry).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth.roles import Permission, Principal
from medcycle.monitoring import alerts, dashboard, drift, report
from medcycle.monitoring import log as plog
from medcycle.monitoring import reference as ref_mod
from medcycle.monitoring.metrics import MonitoringCollector
from medcycle.monitoring.tables import PredictionRow

router = APIRouter(prefix="/v1/monitoring", tags=["monitoring"])
Viewer = Annotated[Principal, requires(Permission.VIEW)]
Browser = Annotated[Principal, requires(Permission.BROWSE)]
Operator = Annotated[Principal, requires(Permission.DEPLOY)]
Trainer = Annotated[Principal, requires(Permission.TRAIN)]
VIA = "api"


class SilenceIn(BaseModel):
    pattern: str = Field(description="An alert key, a shell pattern over keys, or an alert id.")
    duration: str = Field("1d", description="30m, 2h, 1d, 1w (at most 30 days).")
    reason: str


class ReportIn(BaseModel):
    since: datetime | None = None
    until: datetime | None = None
    post: bool = False
    format: str = "slack"


class CaptureIn(BaseModel):
    model: str
    dataset: str
    split: str = "val"
    window: int = ref_mod.DEFAULT_WINDOW
    k: int = ref_mod.DEFAULT_K
    n: int = ref_mod.DEFAULT_N
    budget: float = ref_mod.DEFAULT_BUDGET


def prediction_dict(row: PredictionRow, *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id, "at": row.at.isoformat(), "job_id": row.job_id, "model_version": row.model_version,
        "source": row.source, "outcome": row.outcome, "predicted": row.predicted, "score": row.score,
        "mask_area": row.mask_area, "mask_components": row.mask_components, "latency_ms": row.latency_ms,
        "ood_ok": row.ood_ok, "ood_score": row.ood_score, "error_class": row.error_class,
    }
    if full:
        out.update({"header": row.header, "input_stats": row.input_stats, "input_digests": row.input_digests,
                    "mask_digest": row.mask_digest, "probabilities": row.probabilities, "ood_layer": row.ood_layer,
                    "ood_reasons": row.ood_reasons, "error_message": row.error_message,
                    "embedding_dims": None if not row.embedding else len(row.embedding) // 4})
    return out


def _filter(model_version: str | None, source: str | None, period: str | None, since: datetime | None,
            until: datetime | None) -> dashboard.Filter:
    return dashboard.Filter.of(model_version=model_version, source=source, period=period, since=since, until=until)


@router.get("/predictions")
def predictions(session: SessionDep, _: Browser, model_version: str | None = None, source: str | None = None,
                outcome: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
    return [prediction_dict(r) for r in plog.recent(session, model_version=model_version, source=source,
                                                    outcome=outcome, limit=limit)]


@router.get("/predictions/{prediction_id}")
def prediction(prediction_id: str, session: SessionDep, _: Browser) -> dict[str, Any]:
    return prediction_dict(plog.get(session, prediction_id), full=True)


@router.get("/timeline")
def timeline(session: SessionDep, _: Viewer, model_version: str | None = None, source: str | None = None,
             period: str | None = None, since: datetime | None = None, until: datetime | None = None
             ) -> dict[str, Any]:
    flt = _filter(model_version, source, period, since, until)
    return {**dashboard.timeline(session, flt), "drift": dashboard.drift_series(session, flt)}


@router.post("/drift")
def run_drift(platform: PlatformDep, _: Operator, model_version: str | None = None) -> list[dict[str, Any]]:
    return [d.to_dict() for d in drift.evaluate(platform, model_version=model_version)]


@router.get("/alerts")
def list_alerts(session: SessionDep, _: Viewer, state: str | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    active = alerts.silences(session)
    return [alerts.to_dict(r, active=active) for r in alerts.list_alerts(session, state=state, limit=limit)]


@router.get("/alerts/{alert_id}")
def show_alert(alert_id: str, session: SessionDep, _: Viewer) -> dict[str, Any]:
    return alerts.to_dict(alerts.get(session, alert_id), active=alerts.silences(session))


@router.post("/alerts/{alert_id}/ack")
def ack_alert(alert_id: str, session: SessionDep, principal: Operator) -> dict[str, Any]:
    return alerts.to_dict(alerts.acknowledge(session, alert_id, actor=principal.name, via=VIA))


@router.get("/silences")
def list_silences(session: SessionDep, _: Viewer) -> list[dict[str, Any]]:
    return [alerts.silence_dict(s) for s in alerts.silences(session)]


@router.post("/silences", status_code=status.HTTP_201_CREATED)
def add_silence(body: SilenceIn, session: SessionDep, principal: Operator) -> dict[str, Any]:
    row = alerts.silence(session, alerts.pattern_of(session, body.pattern), duration=alerts.parse_duration(
        body.duration), reason=body.reason, actor=principal.name, via=VIA)
    return alerts.silence_dict(row)


@router.get("/reports")
def list_reports(session: SessionDep, _: Viewer, limit: Annotated[int, Query(ge=1, le=500)] = 50
                 ) -> list[dict[str, Any]]:
    return [{"id": r.id, "slot": r.slot, "period_start": r.period_start.isoformat(),
             "period_end": r.period_end.isoformat(), "headline": r.summary.get("headline"),
             "posted_to": r.posted_to, "post_status": r.post_status} for r in report.list_reports(session, limit)]


@router.post("/reports", status_code=status.HTTP_201_CREATED)
def make_report(body: ReportIn, platform: PlatformDep, principal: Operator) -> dict[str, Any]:
    return report.generate(platform, since=body.since, until=body.until, post=body.post, format=body.format,
                           actor=principal.name).to_dict()


@router.get("/reports/{report_id}")
def show_report(report_id: str, session: SessionDep, _: Viewer) -> dict[str, Any]:
    row = report.get(session, report_id)
    return {"id": row.id, "slot": row.slot, "html_digest": row.html_digest, "summary": row.summary,
            "posted_to": row.posted_to, "post_status": row.post_status}


@router.get("/reports/{report_id}/html", response_model=None)
def report_html(report_id: str, session: SessionDep, platform: PlatformDep, _: Viewer) -> Response:
    from medcycle.web.render import SECURITY_HEADERS

    row = report.get(session, report_id)
    return Response(platform.objects.get(row.html_digest), media_type="text/html; charset=utf-8",
                    headers=SECURITY_HEADERS)


@router.get("/references")
def list_references(session: SessionDep, _: Viewer) -> list[dict[str, Any]]:
    return [{"id": r.id, "model_version": r.model_version, "dataset": r.dataset_ref, "split": r.split,
             "cases": r.cases, "window": r.window, "summary": r.summary, "created_at": r.created_at.isoformat()}
            for r in ref_mod.references(session)]


@router.post("/references", status_code=status.HTTP_201_CREATED)
def capture_reference(body: CaptureIn, platform: PlatformDep, principal: Trainer) -> dict[str, Any]:
    policy = ref_mod.Policy(window=body.window, k=body.k, n=body.n, budget=body.budget)
    return ref_mod.capture(platform, body.model, body.dataset, split=body.split, policy=policy,
                           actor=principal.name, via=VIA).to_dict()


@router.get("/metrics", response_model=None)
def metrics(platform: PlatformDep, _: Viewer) -> Response:
    registry = CollectorRegistry()
    registry.register(MonitoringCollector(platform))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
