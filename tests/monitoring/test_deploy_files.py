"""The example Prometheus rules and Grafana dashboard only use series medcycle exports."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from medcycle.api.metrics import ApiMetrics
from medcycle.monitoring import alerts, drift
from medcycle.monitoring import reference as ref_mod
from medcycle.monitoring.metrics import MonitoringCollector
from medcycle.monitoring.reference import Reference
from medcycle.platform import Platform
from medcycle.store.base import utcnow
from tests.monitoring.test_pipeline import VERSION, record_studies

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERIES = re.compile(r"\b(medcycle_[a-z_]+?)(?:_bucket|_count|_sum)?\b")


def exported(platform: Platform) -> set[str]:
    registry = CollectorRegistry()
    registry.register(MonitoringCollector(platform))
    names = set(re.findall(r"^(medcycle_[a-z_]+)", generate_latest(registry).decode(), re.M))
    api = ApiMetrics()
    api.queue_jobs.labels("inference", "queued").set(0)
    api.queue_age.labels("inference").set(0)
    api.backend_up.labels("jobs").set(1)
    api.requests.labels("GET", "/", "200").inc()
    api.latency.labels("GET", "/").observe(0.1)
    names |= set(re.findall(r"^(medcycle_[a-z_]+)", generate_latest(api.registry).decode(), re.M))
    return names | {re.sub(r"_(bucket|count|sum|created)$", "", n) for n in names}


def used(text: str) -> set[str]:
    return set(SERIES.findall(text))


def test_rules_and_dashboard_name_only_exported_series(sqlite_platform: Platform,
                                                       phantom_reference: Reference) -> None:
    p = sqlite_platform
    with p.session() as s:
        ref_mod.store(s, p.objects, phantom_reference, model_version=VERSION)
        alerts.raise_alert(s, key=f"drift:{VERSION}:intensity", group="g", kind="drift", level="page", title="t",
                           model_version=VERSION)
    t = record_studies(p, 16, np.random.default_rng(0), utcnow().replace(microsecond=0))
    drift.evaluate(p, now=t + timedelta(minutes=5))
    have = exported(p)
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alert-rules.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 8 and all(r.get("labels", {}).get("severity") for g in rules["groups"] for r in g["rules"])
    dashboard = json.loads((DEPLOY / "grafana" / "medcycle.json").read_text())
    targets = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    wanted = set().union(*(used(e) for e in exprs + targets))
    assert not wanted - have, f"not exported: {sorted(wanted - have)}; exported: {sorted(have)}"
    assert {"medcycle_predictions_total", "medcycle_drift_ratio", "medcycle_drift_paging"} <= wanted
