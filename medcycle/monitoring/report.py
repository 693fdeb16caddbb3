"""Reports over a period of the prediction log: what was processed, how it went, what drifted, what broke.

A report holds successes, errors, timeouts and refusals; requests per source and per model version;
latency percentiles; the OOD refusal rate; score and mask-area histograms (drawn as PNG images); the drift
windows tested in the period and which signals paged; the most frequent errors with an example each; and
the alerts raised. :func:`generate` stores it as a self-contained HTML page (an object, referenced by a
:class:`~medcycle.monitoring.tables.ReportRow`) and can post a summary with a link to the team chat.
Scheduled reports carry a ``slot`` (``2024-05-01T14:00``) so a slot is reported once, however many
schedulers run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from jinja2 import Environment, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.errors import NotFound, UsageError
from medcycle.monitoring import charts, links
from medcycle.monitoring.tables import AlertRow, DriftWindowRow, PredictionRow, ReportRow
from medcycle.store.base import new_id, utcnow

OUTCOMES = ("ok", "error", "timeout", "refused")
PERCENTILES = (50, 90, 95, 99)
BINS = 10
TOP_ERRORS = 10
REF_KIND = "monitoring_report"


@dataclass
class Report:
    start: datetime
    end: datetime
    totals: dict[str, int]
    by_source: list[dict[str, Any]]
    by_version: list[dict[str, Any]]
    latency_ms: dict[str, float | None]
    ood: dict[str, Any]
    histograms: list[dict[str, Any]]
    drift: list[dict[str, Any]]
    top_errors: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    id: str | None = None
    images: dict[str, bytes] = field(default_factory=dict)

    @property
    def headline(self) -> str:
        t = self.totals
        paging = sum(len(d["paged"]) for d in self.drift)
        return (f"{t['total']} jobs: {t['ok']} succeeded, {t['error']} failed, {t['timeout']} timed out, "
                f"{t['refused']} refused (OOD)" + (f"; drift paged on {paging} signal(s)" if paging else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "headline": self.headline,
                "totals": self.totals, "by_source": self.by_source, "by_version": self.by_version,
                "latency_ms": self.latency_ms, "ood": self.ood, "histograms": self.histograms, "drift": self.drift,
                "top_errors": self.top_errors, "alerts": self.alerts}


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"p{p}": None for p in PERCENTILES}
    got = np.percentile(np.asarray(values, dtype=np.float64), PERCENTILES)
    return {f"p{p}": round(float(v), 2) for p, v in zip(PERCENTILES, got, strict=True)}


def _counts(rows: Sequence[Any]) -> dict[str, int]:
    c = Counter(r.outcome for r in rows)
    return {"total": len(rows), **{o: int(c.get(o, 0)) for o in OUTCOMES}}


def build(session: Session, start: datetime, end: datetime) -> Report:
    """The report of the log between ``start`` (exclusive) and ``end`` (inclusive)."""
    if end <= start:
        raise UsageError("a report's period must end after it starts", hint="Give --since earlier than now.")
    rows = session.execute(select(
        PredictionRow.id, PredictionRow.outcome, PredictionRow.source, PredictionRow.model_version,
        PredictionRow.latency_ms, PredictionRow.score, PredictionRow.mask_area, PredictionRow.ood_ok,
        PredictionRow.error_class, PredictionRow.error_message, PredictionRow.predicted,
    ).where(PredictionRow.at > start, PredictionRow.at <= end).order_by(PredictionRow.at)).all()
    totals = _counts(rows)
    by_source = [{"source": s, **_counts([r for r in rows if (r.source or "(none)") == s])}
                 for s in sorted({r.source or "(none)" for r in rows})]
    by_version, histograms = [], []
    for v in sorted({r.model_version for r in rows}):
        mine = [r for r in rows if r.model_version == v]
        ok = [r for r in mine if r.outcome == "ok"]
        lat = _percentiles([r.latency_ms for r in ok if r.latency_ms is not None])
        scores = [r.score for r in ok if r.score is not None]
        areas = [r.mask_area for r in ok if r.mask_area is not None]
        by_version.append({"model_version": v, **_counts(mine), "latency_p50_ms": lat["p50"],
                           "latency_p95_ms": lat["p95"],
                           "mean_score": round(float(np.mean(scores)), 4) if scores else None,
                           "predicted": dict(Counter(r.predicted for r in ok if r.predicted).most_common(10))})
        if scores:
            counts, edges = np.histogram(scores, bins=BINS, range=(0.0, 1.0))
            histograms.append({"model_version": v, "kind": "score", "counts": counts.tolist(),
                               "edges": edges.round(4).tolist()})
        if areas:
            top = max(max(areas), 1e-6)
            counts, edges = np.histogram(areas, bins=BINS, range=(0.0, top))
            histograms.append({"model_version": v, "kind": "mask_area", "counts": counts.tolist(),
                               "edges": edges.round(6).tolist()})
    checked = [r for r in rows if r.ood_ok is not None or r.outcome == "refused"]
    refused = totals["refused"]
    ood = {"checked": len(checked), "refused": refused,
           "rate": round(refused / len(checked), 4) if checked else None}
    errors = Counter((r.error_class or r.outcome) for r in rows if r.outcome in ("error", "timeout"))
    top_errors = []
    for name, count in errors.most_common(TOP_ERRORS):
        example = next(r for r in reversed(rows) if r.outcome in ("error", "timeout")
                       and (r.error_class or r.outcome) == name)
        top_errors.append({"error": name, "count": count, "example": example.error_message,
                           "prediction": example.id})
    drift = []
    for v in sorted({w.model_version for w in session.scalars(select(DriftWindowRow).where(
            DriftWindowRow.last_at > start, DriftWindowRow.last_at <= end))}):
        ws = list(session.scalars(select(DriftWindowRow).where(
            DriftWindowRow.model_version == v, DriftWindowRow.last_at > start, DriftWindowRow.last_at <= end)
            .order_by(DriftWindowRow.seq)))
        drifted = Counter(name for w in ws for name in w.drifted)
        drift.append({"model_version": v, "windows": len(ws), "drifted": dict(drifted),
                      "paged": sorted({name for w in ws for name in w.paged}),
                      "signals": sorted({name for w in ws for name in w.signals})})
    raised = session.scalars(select(AlertRow).where(AlertRow.last_at > start, AlertRow.first_at <= end)
                             .order_by(AlertRow.first_at))
    alert_list = [{"id": a.id, "severity": a.severity, "state": a.state, "title": a.title, "count": a.count,
                   "first_at": a.first_at.isoformat()} for a in raised]
    latency = _percentiles([r.latency_ms for r in rows if r.outcome == "ok" and r.latency_ms is not None])
    return Report(start, end, totals, by_source, by_version, latency, ood, histograms, drift, top_errors, alert_list)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>medcycle report {{ r.start | t }} – {{ r.end | t }}</title>
<style>body{font:14px/1.5 system-ui,sans-serif;max-width:70rem;margin:2rem auto;color:#0f172a;padding:0 1rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #cbd5e1;padding:3px 9px;text-align:left}
th{background:#f1f5f9}.num{text-align:right}.bad{color:#b91c1c}.figs img{margin:0 1rem 1rem 0}</style></head>
<body>
<h1>Monitoring report</h1>
<p>{{ r.start | t }} – {{ r.end | t }}. <strong>{{ r.headline }}</strong>.
{% if base %}<a href="{{ base }}{{ dashboard }}">Open the dashboard</a>.{% endif %}</p>
<h2>Jobs</h2>
<table><tr><th></th><th>total</th><th>succeeded</th><th>failed</th><th>timed out</th><th>refused (OOD)</th></tr>
<tr><th>all</th>{% for k in cols %}<td class="num">{{ r.totals[k] }}</td>{% endfor %}</tr>
{% for s in r.by_source %}<tr><th>{{ s.source }}</th>
{% for k in cols %}<td class="num">{{ s[k] }}</td>{% endfor %}</tr>{% endfor %}
</table>
<h2>Latency of successful jobs (ms)</h2>
<table><tr>{% for k, v in r.latency_ms.items() %}<th>{{ k }}</th>{% endfor %}</tr>
<tr>{% for k, v in r.latency_ms.items() %}<td class="num">{{ v if v is not none else "—" }}</td>{% endfor %}</tr>
</table>
<h2>Model versions</h2>
<table><tr><th>version</th><th>jobs</th><th>succeeded</th><th>failed</th><th>refused</th><th>p50 ms</th>
<th>p95 ms</th><th>mean score</th><th>predicted</th></tr>
{% for v in r.by_version %}<tr><td>{{ v.model_version }}</td><td class="num">{{ v.total }}</td>
<td class="num">{{ v.ok }}</td><td class="num">{{ v.error + v.timeout }}</td><td class="num">{{ v.refused }}</td>
<td class="num">{{ v.latency_p50_ms or "—" }}</td><td class="num">{{ v.latency_p95_ms or "—" }}</td>
<td class="num">{{ v.mean_score if v.mean_score is not none else "—" }}</td>
<td>{% for k, n in v.predicted.items() %}{{ k }} {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}</td>
</tr>{% endfor %}
</table>
<p>Out-of-distribution: {{ r.ood.refused }} of {{ r.ood.checked }} inputs refused
{%- if r.ood.rate is not none %} ({{ "%.1f" | format(100 * r.ood.rate) }} %){% endif %}.</p>
{% if images %}<h2>Prediction histograms</h2>
<div class="figs">{% for name, uri in images %}<img alt="{{ name }}" src="{{ uri }}">{% endfor %}</div>{% endif %}
<h2>Drift</h2>
{% if r.drift %}
<table><tr><th>version</th><th>windows tested</th><th>windows drifting, by signal</th><th>paged</th></tr>
{% for d in r.drift %}<tr><td>{{ d.model_version }}</td><td class="num">{{ d.windows }}</td>
<td>{% for k, n in d.drifted.items() %}{{ k }} {{ n }}{% if not loop.last %}, {% endif %}
{% else %}none{% endfor %}</td>
<td class="{{ 'bad' if d.paged else '' }}">{{ d.paged | join(", ") or "no" }}</td></tr>{% endfor %}</table>
{% else %}<p>No drift windows were tested in this period.</p>{% endif %}
<h2>Top errors</h2>
{% if r.top_errors %}<table><tr><th>error</th><th>count</th><th>example</th></tr>
{% for e in r.top_errors %}<tr><td>{{ e.error }}</td><td class="num">{{ e.count }}</td>
<td>{% if base %}<a href="{{ base }}/ui/monitoring/predictions/{{ e.prediction }}">{{ e.example or "—" }}</a>
{% else %}{{ e.example or "—" }}{% endif %}</td></tr>{% endfor %}</table>
{% else %}<p>No errors.</p>{% endif %}
<h2>Alerts</h2>
{% if r.alerts %}<table><tr><th>severity</th><th>state</th><th>alert</th><th>count</th></tr>
{% for a in r.alerts %}<tr><td>{{ a.severity }}</td><td>{{ a.state }}</td>
<td>{% if base %}<a href="{{ base }}/ui/monitoring/alerts/{{ a.id }}">{{ a.title }}</a>{% else %}{{ a.title }}
{% endif %}</td><td class="num">{{ a.count }}</td></tr>{% endfor %}</table>
{% else %}<p>No alerts.</p>{% endif %}
</body></html>
"""
_ENV = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_ENV.filters["t"] = lambda d: d.strftime("%Y-%m-%d %H:%M UTC")


def images(report: Report) -> list[tuple[str, bytes]]:
    out = []
    for h in report.histograms:
        what = "score" if h["kind"] == "score" else "mask area"
        out.append((f"{h['model_version']} {what}",
                    charts.histogram_png(h["counts"], h["edges"], f"{h['model_version']}: {what}")))
    return out


def render_html(report: Report, *, base_url: str = "") -> str:
    pictures = [(name, charts.data_uri(png)) for name, png in images(report)]
    return _ENV.from_string(_PAGE).render(r=report, images=pictures, base=base_url.rstrip("/"),
                                          cols=("total", "ok", "error", "timeout", "refused"),
                                          dashboard=links.dashboard(since=report.start, until=report.end))


def slack_payload(report: Report, url: str, dashboard: str) -> dict[str, Any]:
    t = report.totals
    period = f"{report.start:%Y-%m-%d %H:%M} – {report.end:%Y-%m-%d %H:%M} UTC"
    lat = report.latency_ms
    facts = [("Succeeded", t["ok"]), ("Failed", t["error"]), ("Timed out", t["timeout"]), ("Refused (OOD)",
             t["refused"]), ("Latency p50 / p95", f"{lat['p50'] or '—'} / {lat['p95'] or '—'} ms"),
             ("Sources", ", ".join(f"{s['source']} {s['total']}" for s in report.by_source[:6]) or "—")]
    drift = "; ".join(f"{d['model_version']}: {d['windows']} windows"
                      + (f", *paged on {', '.join(d['paged'])}*" if d["paged"] else ", no page")
                      for d in report.drift) or "no windows tested"
    errors = "\n".join(f"• `{e['error']}` ×{e['count']}" for e in report.top_errors[:5]) or "none"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": f"medcycle report {period}"[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in facts]},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Drift*\n{drift}"[:3000]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Top errors*\n{errors}"[:3000]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{url}|Full report> · <{dashboard}|Dashboard>"}]},
    ]
    return {"text": f"medcycle report {period}: {report.headline} {url}", "blocks": blocks}


def payload(report: Report, url: str, dashboard: str, format: str) -> dict[str, Any]:
    if format == "json":
        return {"type": "medcycle.report", "version": 1, "text": f"medcycle report: {report.headline}",
                "url": url, "dashboard": dashboard, "report": report.to_dict()}
    return slack_payload(report, url, dashboard)


@dataclass(frozen=True, slots=True)
class Generated:
    id: str
    html_digest: str
    summary: dict[str, Any]
    posted: dict[str, Any] | None
    existing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "html_digest": self.html_digest, "headline": self.summary.get("headline"),
                "posted": self.posted, "existing": self.existing, "url": links.report(self.id)}


def generate(platform: Any, *, since: datetime | None = None, until: datetime | None = None, slot: str | None = None,
             post: bool = False, url: str | None = None, format: str = "slack", actor: str = "system",
             transport: Any = None) -> Generated:
    """Build, store and (with ``post``) send the report of ``since``–``until`` (default: since the last report,
    or the last 8 hours)."""
    from medcycle.experiments.cards import WebhookFailed, default_base_url, resolve_webhook
    from medcycle.monitoring.notify import check_format, post_json
    from medcycle.objects.refs import add_ref

    check_format(format)
    until = until or utcnow()
    with platform.session(write=False) as session:
        if slot is not None:
            done = session.scalar(select(ReportRow).where(ReportRow.slot == slot))
            if done is not None:
                return Generated(done.id, done.html_digest, dict(done.summary), None, existing=True)
        if since is None:
            last = session.scalar(select(ReportRow.period_end).where(ReportRow.period_end < until)
                                  .order_by(ReportRow.period_end.desc()).limit(1))
            since = last or until - timedelta(hours=8)
        report = build(session, since, until)
    base = default_base_url(platform.settings)
    report.id = new_id()
    html = render_html(report, base_url=base)
    digest = platform.objects.put(html.encode()).digest
    summary = report.to_dict()
    posted: dict[str, Any] | None = None
    status: str | None = None
    target: str | None = None
    if post:
        hook = resolve_webhook(platform.settings, url)
        try:
            result = post_json(hook, payload(report, f"{base}{links.report(report.id)}",
                                             f"{base}{links.dashboard(since=report.start, until=report.end)}",
                                             format), format=format, transport=transport)
            posted, status, target = result.to_dict(), f"{result.status}", result.target
        except WebhookFailed as exc:
            status, target = f"failed: {exc.message}"[:256], str(exc.details.get("target", ""))[:256] or None
            posted = {"error": exc.message}
    with platform.session() as session:
        session.add(ReportRow(id=report.id, slot=slot, period_start=report.start, period_end=report.end,
                              summary=summary, html_digest=digest, posted_to=target, post_status=status,
                              created_by=actor, created_at=utcnow()))
        session.flush()
        add_ref(session, digest, REF_KIND, report.id, size=len(html))
    return Generated(report.id, digest, summary, posted)


def get(session: Session, report_id: str) -> ReportRow:
    row = session.get(ReportRow, report_id)
    if row is None:
        raise NotFound(f"no report {report_id!r}", hint="See `medcycle monitor report --list` or the reports page.")
    return row


def list_reports(session: Session, limit: int = 50) -> list[ReportRow]:
    return list(session.scalars(select(ReportRow).order_by(ReportRow.period_end.desc()).limit(limit)))


__all__ = ["Generated", "Report", "build", "generate", "get", "list_reports", "render_html"]
