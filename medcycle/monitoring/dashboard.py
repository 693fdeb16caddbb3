"""What the monitoring dashboard draws, computed from the log: one call per page, filtered by model version,
source and period.

* :func:`timeline` — per time bucket: jobs by outcome, error rate, OOD refusal rate, latency p50/p95.
* :func:`drift_series` — per stored drift window: each signal's statistic over its threshold (1 = the
  threshold; above it the window drifted), with the windows that paged.
* :func:`gallery` — the newest predictions with an input to draw.
* :func:`choices` — the versions and sources there are, for the filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.errors import UsageError
from medcycle.monitoring.drift import windows
from medcycle.monitoring.tables import PredictionRow, ReferenceRow
from medcycle.store.base import utcnow

PERIODS = {"6h": timedelta(hours=6), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
MAX_ROWS = 200_000


@dataclass(frozen=True, slots=True)
class Filter:
    model_version: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def of(cls, *, model_version: str | None = None, source: str | None = None, period: str | None = None,
           since: datetime | None = None, until: datetime | None = None, now: datetime | None = None) -> Filter:
        now = now or utcnow()
        if since is None:
            if period and period not in PERIODS:
                raise UsageError(f"{period!r} is not a period", hint=f"Use one of: {', '.join(PERIODS)}.")
            since = now - PERIODS[period or "24h"]
        if until is not None and until <= since:
            raise UsageError("the period ends before it starts", hint="Give since earlier than until.")
        return cls(model_version or None, source or None, since, until)

    def apply(self, query: Any) -> Any:
        if self.model_version:
            query = query.where(PredictionRow.model_version == self.model_version)
        if self.source:
            query = query.where(PredictionRow.source == self.source)
        if self.since is not None:
            query = query.where(PredictionRow.at > self.since)
        if self.until is not None:
            query = query.where(PredictionRow.at <= self.until)
        return query


def _bucket(span: timedelta) -> timedelta:
    for size in (timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1), timedelta(hours=6),
                 timedelta(days=1)):
        if span / size <= 96:
            return size
    return timedelta(days=1)


def timeline(session: Session, flt: Filter, *, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    rows = session.execute(flt.apply(select(PredictionRow.at, PredictionRow.outcome, PredictionRow.latency_ms))
                           .order_by(PredictionRow.at).limit(MAX_ROWS)).all()
    start = flt.since or (rows[0].at if rows else now - timedelta(hours=24))
    end = flt.until or now
    size = _bucket(end - start)
    n = max(1, int(np.ceil((end - start) / size)))
    outcomes = ("ok", "error", "timeout", "refused")
    counts = {o: [0] * n for o in outcomes}
    lat: list[list[float]] = [[] for _ in range(n)]
    for row in rows:
        i = min(max(int((row.at - start) / size), 0), n - 1)
        if row.outcome in counts:
            counts[row.outcome][i] += 1
        if row.outcome == "ok" and row.latency_ms is not None:
            lat[i].append(row.latency_ms)
    totals = [sum(counts[o][i] for o in outcomes) for i in range(n)]
    error_rate = [None if not t else round((counts["error"][i] + counts["timeout"][i]) / t, 4)
                  for i, t in enumerate(totals)]
    ood_rate = [None if not t else round(counts["refused"][i] / t, 4) for i, t in enumerate(totals)]
    p50 = [None if not v else round(float(np.percentile(v, 50)), 1) for v in lat]
    p95 = [None if not v else round(float(np.percentile(v, 95)), 1) for v in lat]
    return {"buckets": [(start + i * size).isoformat() for i in range(n)], "bucket_seconds": size.total_seconds(),
            "counts": counts, "error_rate": error_rate, "ood_rate": ood_rate, "latency_p50_ms": p50,
            "latency_p95_ms": p95, "total": len(rows),
            "summary": {o: sum(counts[o]) for o in outcomes}}


def drift_series(session: Session, flt: Filter) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for w in windows(session, model_version=flt.model_version, since=flt.since):
        if flt.until is not None and w.last_at > flt.until:
            continue
        series = out.setdefault(w.model_version, {"at": [], "seq": [], "signals": {}, "paged": []})
        series["at"].append(w.last_at.isoformat())
        series["seq"].append(w.seq)
        k = len(series["at"]) - 1
        for name, result in w.signals.items():
            values = series["signals"].setdefault(name, [None] * k)
            values.extend([None] * (k - len(values)))
            values.append(result.get("ratio"))
        for name in w.paged:
            series["paged"].append({"at": w.last_at.isoformat(), "signal": name})
    for series in out.values():
        for values in series["signals"].values():
            values.extend([None] * (len(series["at"]) - len(values)))
    return out


def gallery(session: Session, flt: Filter, *, limit: int = 24) -> list[PredictionRow]:
    """The newest predictions that reference a stored input (JSON columns cannot be compared in SQL everywhere,
    so the check is made here over a few times ``limit`` rows)."""
    query = flt.apply(select(PredictionRow)).order_by(PredictionRow.at.desc(), PredictionRow.id.desc())
    rows = session.scalars(query.limit(limit * 4))
    return [r for r in rows if r.input_digests][:limit]


def choices(session: Session) -> dict[str, list[str]]:
    versions = set(session.scalars(select(PredictionRow.model_version).distinct()))
    versions |= set(session.scalars(select(ReferenceRow.model_version).distinct()))
    sources = {s for s in session.scalars(select(PredictionRow.source).distinct()) if s}
    return {"model_versions": sorted(versions), "sources": sorted(sources), "periods": list(PERIODS)}
