"""Prometheus metrics of the prediction log, drift and alerts, read from the database at scrape time.

Every worker writes the log; any process with the database (the API) can therefore export the whole
fleet's numbers — nothing is lost when a worker restarts, and workers need no port of their own. Register
:class:`MonitoringCollector` on a registry (the API's, :class:`medcycle.api.metrics.ApiMetrics`)::

    registry.register(MonitoringCollector(platform))

Series (``deploy/prometheus/alert-rules.yml`` and ``deploy/grafana/medcycle.json`` use them):

* ``medcycle_predictions_total{model_version, source, outcome}`` — counter of logged jobs (falls when the
  retention purge deletes old rows; Prometheus treats that as a reset, so ``rate()`` stays right).
* ``medcycle_prediction_latency_seconds{model_version, quantile}`` — p50/p95/p99 of successful jobs in
  the last ``window`` (5 minutes).
* ``medcycle_prediction_window_jobs{model_version, outcome}`` — jobs in the last ``window``.
* ``medcycle_drift_ratio{model_version, signal}`` — the latest window's statistic over its threshold (> 1:
  that window drifted); ``medcycle_drift_paging{model_version, signal}`` — 1 while a drift alert is open.
* ``medcycle_alerts_open{severity, kind}`` — open (unacknowledged) alerts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from medcycle.monitoring.tables import AlertRow, DriftWindowRow, PredictionRow
from medcycle.store.base import utcnow


class MonitoringCollector(Collector):
    def __init__(self, platform: Any, *, window: timedelta = timedelta(minutes=5)) -> None:
        self.platform = platform
        self.window = window

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            up = GaugeMetricFamily("medcycle_monitoring_up", "Monitoring metrics could be read (1) or not (0)")
            up.add_metric([], 0.0)
            yield up

    def _collect(self) -> Iterator[Metric]:
        now = utcnow()
        since = now - self.window
        total = CounterMetricFamily("medcycle_predictions", "Logged inference jobs",
                                    labels=["model_version", "source", "outcome"])
        jobs = GaugeMetricFamily("medcycle_prediction_window_jobs", "Jobs in the last window",
                                 labels=["model_version", "outcome"])
        latency = GaugeMetricFamily("medcycle_prediction_latency_seconds",
                                    "Latency quantiles of successful jobs in the last window",
                                    labels=["model_version", "quantile"])
        ratio = GaugeMetricFamily("medcycle_drift_ratio", "Latest drift window: statistic / threshold",
                                  labels=["model_version", "signal"])
        paging = GaugeMetricFamily("medcycle_drift_paging", "A drift alert is open (1)",
                                   labels=["model_version", "signal"])
        open_alerts = GaugeMetricFamily("medcycle_alerts_open", "Open alerts", labels=["severity", "kind"])
        with self.platform.session(write=False) as session:
            for version, source, outcome, n in session.execute(
                    select(PredictionRow.model_version, PredictionRow.source, PredictionRow.outcome, func.count())
                    .group_by(PredictionRow.model_version, PredictionRow.source, PredictionRow.outcome)):
                total.add_metric([version, source or "", outcome], float(n))
            recent = session.execute(select(PredictionRow.model_version, PredictionRow.outcome,
                                            PredictionRow.latency_ms).where(PredictionRow.at > since)).all()
            counts: dict[tuple[str, str], int] = {}
            lat: dict[str, list[float]] = {}
            for version, outcome, ms in recent:
                counts[(version, outcome)] = counts.get((version, outcome), 0) + 1
                if outcome == "ok" and ms is not None:
                    lat.setdefault(version, []).append(ms / 1000.0)
            for (version, outcome), n in sorted(counts.items()):
                jobs.add_metric([version, outcome], float(n))
            for version, values in sorted(lat.items()):
                for q in (0.5, 0.95, 0.99):
                    latency.add_metric([version, str(q)], float(np.quantile(values, q)))
            latest = session.execute(select(DriftWindowRow.model_version, func.max(DriftWindowRow.seq))
                                     .group_by(DriftWindowRow.model_version)).all()
            for version, seq in latest:
                row = session.scalar(select(DriftWindowRow).where(DriftWindowRow.model_version == version,
                                                                  DriftWindowRow.seq == seq))
                for signal, result in (row.signals if row is not None else {}).items():
                    if result.get("ratio") is not None:
                        ratio.add_metric([version, signal], float(result["ratio"]))
            for key, version in session.execute(select(AlertRow.key, AlertRow.model_version).where(
                    AlertRow.kind == "drift", AlertRow.state != "resolved")):
                paging.add_metric([version or "", key.rsplit(":", 1)[-1]], 1.0)
            for severity, kind, n in session.execute(
                    select(AlertRow.severity, AlertRow.kind, func.count()).where(AlertRow.state == "open")
                    .group_by(AlertRow.severity, AlertRow.kind)):
                open_alerts.add_metric([severity, kind], float(n))
        up = GaugeMetricFamily("medcycle_monitoring_up", "Monitoring metrics could be read (1) or not (0)")
        up.add_metric([], 1.0)
        yield from (total, jobs, latency, ratio, paging, open_alerts, up)
