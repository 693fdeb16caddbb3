"""Operational alert rules over the recent prediction log: error rate, OOD refusals, latency.

Each rule looks at the last ``period`` (default one hour) per model version and needs at least
``min_jobs`` jobs before it says anything (a quiet night with two jobs, one failed, is not a 50 % error
rate anyone should be woken for). Thresholds are deliberately coarse — these catch outages and broken
feeds; slow changes are drift's business:

* ``error_rate`` — failed + timed-out jobs: warning at 5 %, page at 20 %.
* ``ood_rate`` — inputs the OOD gate refused: warning at 10 %, page at 30 % (a feed sending the wrong
  studies).
* ``latency`` — the 95th percentile of successful jobs above ``latency_p95_ms`` (default 10 s): warning.

A rule whose condition has cleared resolves its open alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.monitoring import alerts, links
from medcycle.monitoring.tables import PredictionRow
from medcycle.store.base import utcnow


@dataclass(frozen=True, slots=True)
class Rules:
    period: timedelta = timedelta(hours=1)
    min_jobs: int = 20
    error_warning: float = 0.05
    error_page: float = 0.20
    ood_warning: float = 0.10
    ood_page: float = 0.30
    latency_p95_ms: float = 10_000.0

    @classmethod
    def from_settings(cls, settings: Any) -> Rules:
        return cls(latency_p95_ms=float(getattr(settings, "monitoring_latency_p95_ms", 10_000.0)))


def _level(rate: float, warning: float, page: float) -> alerts.Severity | None:
    if rate >= page:
        return alerts.Severity.PAGE
    if rate >= warning:
        return alerts.Severity.WARNING
    return None


def check(session: Session, *, rules: Rules | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """Apply the rules to the last period; returns what fired (and resolves what cleared)."""
    rules = rules or Rules()
    now = now or utcnow()
    since = now - rules.period
    rows = session.execute(select(PredictionRow.model_version, PredictionRow.outcome, PredictionRow.latency_ms,
                                  PredictionRow.id, PredictionRow.error_class)
                           .where(PredictionRow.at > since, PredictionRow.at <= now)).all()
    by_version: dict[str, list[Any]] = {}
    for row in rows:
        by_version.setdefault(row.model_version, []).append(row)
    fired = []
    for version, jobs in sorted(by_version.items()):
        n = len(jobs)
        failed = [j for j in jobs if j.outcome in ("error", "timeout")]
        refused = [j for j in jobs if j.outcome == "refused"]
        latencies = [j.latency_ms for j in jobs if j.outcome == "ok" and j.latency_ms is not None]
        p95 = float(np.percentile(latencies, 95)) if len(latencies) >= rules.min_jobs else None
        checks: list[tuple[str, alerts.Severity | None, str, list[Any], dict[str, Any]]] = [
            ("error_rate", _level(len(failed) / n, rules.error_warning, rules.error_page) if n >= rules.min_jobs
             else None, f"{len(failed)} of {n} jobs of {version} failed or timed out in the last "
             f"{rules.period}", failed, {"rate": round(len(failed) / n, 4), "jobs": n}),
            ("ood_rate", _level(len(refused) / n, rules.ood_warning, rules.ood_page) if n >= rules.min_jobs
             else None, f"{len(refused)} of {n} inputs to {version} were refused as out of distribution in the last "
             f"{rules.period}", refused, {"rate": round(len(refused) / n, 4), "jobs": n}),
            ("latency", alerts.Severity.WARNING if p95 is not None and p95 > rules.latency_p95_ms else None,
             f"95th percentile latency of {version} is {p95 or 0:.0f} ms (limit {rules.latency_p95_ms:.0f} ms)",
             [], {"p95_ms": p95, "jobs": len(latencies)}),
        ]
        for kind, level, title, examples, details in checks:
            key = f"{kind}:{version}"
            if level is None:
                if n >= rules.min_jobs:
                    alerts.resolve(session, key, now=now)
                continue
            link = {"dashboard": links.dashboard(version, since=since), "model": links.model(version)}
            if examples:
                link["prediction"] = links.prediction(examples[-1].id)
                classes: dict[str, int] = {}
                for e in examples:
                    classes[e.error_class or e.outcome] = classes.get(e.error_class or e.outcome, 0) + 1
                details = {**details, "top": sorted(classes.items(), key=lambda kv: -kv[1])[:5]}
            alert = alerts.raise_alert(session, key=key, group=f"model:{version}", kind=kind, level=level,
                                       title=title, details=details, links=link, model_version=version, now=now)
            alert.links = {**alert.links, "alert": links.alert(alert.id)}
            fired.append({"kind": kind, "model_version": version, "severity": level.value, "alert": alert.id})
    return fired
