"""``medcycle monitor …`` (the sub-app, mounted on a root command here until the lead registers it)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer

from medcycle.cli.errors import run
from medcycle.cli.monitor import app as monitor_app
from medcycle.monitoring import reference as ref_mod
from medcycle.monitoring.reference import Reference
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.store.base import utcnow
from tests.experiments.webhook import chat_server
from tests.monitoring.conftest import WINDOW
from tests.monitoring.test_pipeline import VERSION, record_studies

ROOT = typer.Typer()
ROOT.add_typer(monitor_app, name="monitor")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    h = tmp_path / "home"
    monkeypatch.setenv("MEDCYCLE_HOME", str(h))
    monkeypatch.setenv("COLUMNS", "200")
    return h


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(ROOT, ["monitor", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def ok_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_report_drift_alerts_and_purge_from_the_command_line(home: Path, capsys: pytest.CaptureFixture[str],
                                                             phantom_reference: Reference) -> None:
    platform = Platform(load_settings(home=home))
    platform.init()
    with platform.session() as s:
        ref_mod.store(s, platform.objects, phantom_reference, model_version=VERSION)
    start = utcnow() - timedelta(hours=2)
    record_studies(platform, 3 * WINDOW, np.random.default_rng(0), start)
    platform.close()

    [drift] = ok_json(capsys, "drift")
    assert drift["model_version"] == VERSION and drift["windows"] == 3
    assert ok_json(capsys, "reference", "list")[0]["signals"] == sorted(phantom_reference.signals)
    logged = ok_json(capsys, "log", "--limit", "5")
    assert len(logged) == 5 and logged[0]["model_version"] == VERSION

    with chat_server() as chat:
        made = ok_json(capsys, "report", "--since", "1d", "--post", "--url", chat.url, "--format", "json")
        assert made["posted"]["status"] == 200 and chat.received[0]["json"]["type"] == "medcycle.report"
    code, out, _ = cli(capsys, "report", "--since", "3h")
    assert code == 0 and "48 jobs: 48 succeeded" in out

    with Platform(load_settings(home=home)) as p, p.session() as s:
        from medcycle.monitoring import alerts

        alert_id = alerts.raise_alert(s, key="error_rate:phantom@v1", group="model:phantom@v1", kind="error_rate",
                                      level="page", title="errors").id
    [listed] = ok_json(capsys, "alerts", "list", "--state", "open")
    assert listed["id"] == alert_id
    with chat_server() as chat:
        sent = ok_json(capsys, "alerts", "send", "--url", chat.url)
        assert sent["alerts"] == 1 and len(chat.received) == 1
    silenced = ok_json(capsys, "alerts", "silence", alert_id, "--for", "2h", "--reason", "known outage")
    assert silenced["pattern"] == "error_rate:phantom@v1"
    assert ok_json(capsys, "alerts", "ack", alert_id)["state"] == "acknowledged"
    code, _, err = cli(capsys, "alerts", "silence", "x*", "--for", "2h")
    assert code == 2 and "needs a reason" in err and "Hint:" in err
    code, _, err = cli(capsys, "alerts", "list", "--state", "sleeping")
    assert code == 2 and "not an alert state" in err
    code, _, err = cli(capsys, "report", "--since", "yesterday")
    assert code == 2 and "neither a duration nor a time" in err

    assert ok_json(capsys, "purge", "--days", "1")["removed"] == 0
    assert ok_json(capsys, "purge", "--days", "0.05")["removed"] == 48  # older than 1.2 hours
    code, _, err = cli(capsys, "reference", "capture", "nope@v1", "--on", "x@v1", "--persist", "3")
    assert code == 2 and "K/N" in err
