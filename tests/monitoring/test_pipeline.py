"""The monitoring pipeline on a real database: log → drift windows → pages (deduplicated, resolved) → chat;
alerts' cooldown, acknowledge and silence; reports stored and posted to a real local webhook; the schedule;
Prometheus metrics. The chat is a real HTTP server on loopback (tests/experiments/webhook.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from medcycle.errors import ConfigError, Conflict, UsageError
from medcycle.monitoring import alerts, drift, notify, operations, report, schedule
from medcycle.monitoring import log as plog
from medcycle.monitoring import reference as ref_mod
from medcycle.monitoring.log import PredictionRecord
from medcycle.monitoring.metrics import MonitoringCollector
from medcycle.monitoring.reference import Reference
from medcycle.monitoring.tables import DriftWindowRow
from medcycle.platform import Platform
from medcycle.settings import Settings
from tests.experiments.webhook import chat_server
from tests.monitoring.conftest import WINDOW
from tests.monitoring.phantoms import SHIFTS, Shift, study

VERSION = "phantom@v1"
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=ZoneInfo("UTC"))


def record_studies(p: Platform, n: int, rng: np.random.Generator, start: datetime, *, shift: Shift = Shift(),
                   source: str = "clinic-a", version: str = VERSION) -> datetime:
    """Log ``n`` phantom studies one second apart; returns the time after the last."""
    with p.session() as s:
        for i in range(n):
            st = study(rng, shift)
            c = st.case
            assert c.score is not None
            plog.record(s, PredictionRecord(
                model_version=version, source=source, at=start + timedelta(seconds=i), header=st.header,
                input_stats=c.stats, embedding=np.asarray(c.embedding), latency_ms=float(rng.uniform(40, 90)),
                probabilities={"normal": 1 - c.score, "lesion": c.score}, positive="lesion", ood_ok=True,
                ood_score=float(rng.uniform(0, 2))))
    return start + timedelta(seconds=n)


@pytest.fixture
def stored(platform: Platform, phantom_reference: Reference) -> Platform:
    """A platform on SQLite and on PostgreSQL, with the phantom reference stored for ``VERSION``."""
    with platform.session() as s:
        ref_mod.store(s, platform.objects, phantom_reference, model_version=VERSION, split="val")
    return platform


def test_drift_over_the_log_pages_once_counts_up_and_resolves(stored: Platform) -> None:
    p = stored
    rng = np.random.default_rng(11)
    t = record_studies(p, 4 * WINDOW, rng, T0)
    t = record_studies(p, 5 * WINDOW + 7, rng, t, shift=SHIFTS["intensity x1.15"])  # 7 wait for a full window
    [result] = drift.evaluate(p, now=t + timedelta(minutes=5))
    assert result.windows == 9 and result.pending == 7
    assert [pg["signal"] for pg in result.paged] == ["intensity"] and 6 <= result.paged[0]["window"] <= 9
    with p.session(write=False) as s:
        [alert] = alerts.list_alerts(s)
        assert alert.key == f"drift:{VERSION}:intensity" and alert.severity == "page" and alert.state == "open"
        assert alert.count == 9 - result.paged[0]["window"] + 1  # one count per window while it persists
        assert {"dashboard", "prediction", "input", "model", "alert"} <= set(alert.links)
        assert alert.links["model"] == "/ui/models/phantom/v1"
        windows = list(drift.windows(s, model_version=VERSION))
        assert [w.seq for w in windows] == list(range(1, 10))
        assert "intensity" in windows[-1].drifted and windows[-1].signals["intensity"]["ratio"] > 1

    assert drift.evaluate(p, now=t + timedelta(minutes=5))[0].windows == 0  # nothing new: idempotent
    t = record_studies(p, 5 * WINDOW, rng, t + timedelta(seconds=1))  # the shift is over
    [after] = drift.evaluate(p, now=t + timedelta(minutes=5))
    assert after.windows == 5 and "intensity" in after.resolved
    with p.session(write=False) as s:
        assert alerts.list_alerts(s)[0].state == "resolved"


def test_drift_waits_for_a_reference_and_for_settled_predictions(stored: Platform) -> None:
    from medcycle.errors import NotFound

    with pytest.raises(NotFound) as info:
        drift.evaluate(stored, model_version="other@v1")
    assert "reference capture" in (info.value.hint or "")
    t = record_studies(stored, WINDOW, np.random.default_rng(0), T0)
    assert drift.evaluate(stored, now=t)[0].windows == 0  # younger than the settle time
    assert drift.evaluate(stored, now=t + drift.SETTLE)[0].windows == 1


def _raise(s: Any, key: str, level: str = "warning", group: str = "model:m@v1", **kw: Any) -> alerts.AlertRow:
    return alerts.raise_alert(s, key=key, group=group, kind="test", level=level, title=f"{key} went wrong",
                              links={"dashboard": "/ui/monitoring?model_version=m%40v1"}, **kw)


def test_alerts_dedup_group_cooldown_ack_silence_and_reach_the_chat(platform: Platform) -> None:
    p = platform
    settings: Settings = p.settings
    with chat_server() as chat, p.session() as s:
        a = _raise(s, "error_rate:m@v1", now=T0)
        b = _raise(s, "ood_rate:m@v1", now=T0)
        _raise(s, "latency:m@v1", level="info", now=T0)  # info is never sent
        assert _raise(s, "error_rate:m@v1", now=T0 + timedelta(minutes=1)).id == a.id and a.count == 2
        sent = notify.send_due(s, settings, url=chat.url, now=T0 + timedelta(minutes=2))
        assert (sent.groups, sent.alerts, len(chat.received)) == (1, 2, 1)  # one message for the group
        message = chat.received[0]["json"]
        assert "error_rate:m@v1 went wrong (×2)" in message["text"]
        assert "http://127.0.0.1:8080/ui/monitoring?model_version=m%40v1" in str(message["blocks"])
        assert notify.send_due(s, settings, url=chat.url, now=T0 + timedelta(hours=1)).alerts == 0  # cooldown
        _raise(s, "error_rate:m@v1", level="page", now=T0 + timedelta(hours=1))  # escalation: at once
        assert notify.send_due(s, settings, url=chat.url, format="json", now=T0 + timedelta(hours=1)).alerts == 1
        body = chat.received[-1]["json"]
        assert body["type"] == "medcycle.alerts" and body["alerts"][0]["severity"] == "page"
        alerts.acknowledge(s, a.id, actor="alice", now=T0 + timedelta(hours=2))
        alerts.silence(s, "ood_rate:*", duration=alerts.parse_duration("1d"), reason="feed swap", actor="alice",
                       now=T0 + timedelta(hours=2))
        assert notify.send_due(s, settings, url=chat.url, now=T0 + timedelta(hours=8)).alerts == 0
        assert notify.send_due(s, settings, url=chat.url, now=T0 + timedelta(days=2)).alerts == 1  # silence over
        assert [x.id for x in alerts.due(s, now=T0 + timedelta(days=2))] == []
        assert alerts.to_dict(b)["silenced_until"] is None
        assert "s3cr3t" not in str(sent.to_dict())  # the webhook path is a secret
        with pytest.raises(UsageError):
            alerts.silence(s, "x", duration=timedelta(days=40), reason="too long", actor="a")
        with pytest.raises(UsageError):
            alerts.silence(s, "x", duration=timedelta(hours=1), reason=" ", actor="a")
        alerts.resolve(s, "error_rate:m@v1")
        with pytest.raises(Conflict):
            alerts.acknowledge(s, a.id, actor="alice")
        # without a webhook and without Sentry nothing is marked sent
        _raise(s, "new:m@v1", now=T0 + timedelta(days=3))
        skipped = notify.send_due(s, settings, now=T0 + timedelta(days=3))
        assert skipped.skipped and alerts.due(s, now=T0 + timedelta(days=3))


def test_operational_rules_fire_and_clear(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    with p.session() as s:
        for i in range(30):
            outcome = "error" if i % 3 == 0 else "refused" if i % 3 == 1 else "ok"
            plog.record(s, PredictionRecord(model_version="m@v1", outcome=outcome, at=T0 + timedelta(seconds=i),
                                            error_class="DecodeError" if outcome == "error" else None,
                                            latency_ms=50.0))
        fired = operations.check(s, now=T0 + timedelta(minutes=1))
        assert {(f["kind"], f["severity"]) for f in fired} == {("error_rate", "page"), ("ood_rate", "page")}
        row = next(a for a in alerts.list_alerts(s) if a.kind == "error_rate")
        assert row.details["top"] == [["DecodeError", 10]] or row.details["top"] == [("DecodeError", 10)]
        for i in range(40):
            plog.record(s, PredictionRecord(model_version="m@v1", at=T0 + timedelta(hours=2, seconds=i),
                                            latency_ms=50.0))
        assert operations.check(s, now=T0 + timedelta(hours=2, minutes=1)) == []
        assert {a.state for a in alerts.list_alerts(s)} == {"resolved"}


def test_report_is_stored_as_html_and_posted_to_a_local_webhook(stored: Platform) -> None:
    p = stored
    rng = np.random.default_rng(3)
    t = record_studies(p, 2 * WINDOW, rng, T0, source="clinic-a")
    t = record_studies(p, WINDOW, rng, t, source="clinic-b")
    with p.session() as s:
        plog.record(s, PredictionRecord(model_version=VERSION, outcome="error", at=t, error_class="DecodeError",
                                        error_message="cannot decode PatientName=Doe^Jane", source="clinic-b"))
        plog.record(s, PredictionRecord(model_version=VERSION, outcome="timeout", at=t, source="clinic-b"))
        plog.record(s, PredictionRecord(model_version=VERSION, outcome="refused", at=t, ood_ok=False,
                                        source="clinic-a"))
    drift.evaluate(p, now=t + timedelta(minutes=5))
    with chat_server() as chat:
        done = report.generate(p, since=T0 - timedelta(hours=1), until=t + timedelta(minutes=5), post=True,
                               url=chat.url, slot="2026-01-05T14:00")
        assert done.posted is not None and done.posted["status"] == 200
        [received] = chat.received
    body = received["json"]
    assert body["text"].startswith("medcycle report") and f"/ui/monitoring/reports/{done.id}" in body["text"]
    assert "51 jobs: 48 succeeded, 1 failed, 1 timed out, 1 refused (OOD)" in body["text"]
    html = p.objects.get(done.html_digest).decode()
    assert html.count('src="data:image/png;base64,') == 1  # the score histogram of the one version
    for text in ("clinic-a", "clinic-b", "DecodeError", "p95", "windows tested"):
        assert text in html
    assert "Doe" not in html and "Jane" not in html
    summary = done.summary
    assert summary["totals"] == {"total": 51, "ok": 48, "error": 1, "timeout": 1, "refused": 1}
    assert [s["source"] for s in summary["by_source"]] == ["clinic-a", "clinic-b"]
    assert summary["latency_ms"]["p50"] is not None and summary["drift"][0]["windows"] == 3
    again = report.generate(p, slot="2026-01-05T14:00")
    assert again.existing and again.id == done.id  # a slot is reported once
    with chat_server() as chat:
        chat.status = 500
        failed = report.generate(p, post=True, url=chat.url, format="json")
    assert failed.posted is not None and "answered 500" in failed.posted["error"]
    with p.session(write=False) as s:
        assert report.get(s, failed.id).post_status.startswith("failed")
    with pytest.raises(UsageError):
        report.generate(p, format="teams")


def test_schedule_times_and_one_loop(stored: Platform) -> None:
    sched = schedule.Schedule(schedule.parse_times("22:00, 06:00,14:00"), schedule.zone("Europe/Berlin"), 60.0)
    now = datetime(2026, 1, 5, 12, 0, tzinfo=ZoneInfo("UTC"))  # 13:00 in Berlin
    assert sched.previous(now) == datetime(2026, 1, 5, 5, 0, tzinfo=ZoneInfo("UTC"))
    assert sched.next(now) == datetime(2026, 1, 5, 13, 0, tzinfo=ZoneInfo("UTC"))
    assert sched.slot_name(sched.next(now)) == "2026-01-05T14:00"
    assert len(sched.slots_between(now, now + timedelta(days=1))) == 3
    for bad in ("25:00", "6am", ""):
        with pytest.raises(ConfigError):
            schedule.parse_times(bad)
    with pytest.raises(ConfigError):
        schedule.zone("Mars/Olympus")

    import threading

    stop = threading.Event()
    lines: list[str] = []
    clock_now = datetime.now(ZoneInfo("UTC"))

    def echo(line: str) -> None:
        lines.append(line)
        if line.startswith("report"):
            stop.set()

    schedule.run(stored, stop=stop, post=False, clock=lambda: clock_now, echo=echo)
    with stored.session(write=False) as s:
        [made] = report.list_reports(s)
    assert made.slot == schedule.Schedule.from_settings(stored.settings).slot_name(made.period_end)
    assert any(line.startswith("report ") for line in lines)


def test_prometheus_collector_exports_the_log(stored: Platform) -> None:
    p = stored
    t = record_studies(p, WINDOW, np.random.default_rng(4), datetime.now(ZoneInfo("UTC")) - timedelta(minutes=10))
    with p.session() as s:
        plog.record(s, PredictionRecord(model_version=VERSION, outcome="error", source="clinic-a"))
        _raise(s, "error_rate:phantom@v1", level="page")
    drift.evaluate(p, now=t + timedelta(minutes=5))
    registry = CollectorRegistry()
    registry.register(MonitoringCollector(p, window=timedelta(hours=1)))
    text = generate_latest(registry).decode()
    assert f'medcycle_predictions_total{{model_version="{VERSION}",outcome="ok",source="clinic-a"}} 16.0' in text
    assert f'medcycle_prediction_window_jobs{{model_version="{VERSION}",outcome="error"}} 1.0' in text
    assert 'medcycle_prediction_latency_seconds{model_version="phantom@v1",quantile="0.95"}' in text
    assert 'medcycle_drift_ratio{model_version="phantom@v1",signal="intensity"}' in text
    assert 'medcycle_alerts_open{kind="test",severity="page"} 1.0' in text
    assert "medcycle_monitoring_up 1.0" in text
    with p.session(write=False) as s:
        assert s.query(DriftWindowRow).count() == 1
