"""The API server process's set-up (medcycle.api.server): switch interval, warm-up and the frozen heap.

Freezing happens in a child process: frozen objects in the test process would outlive the tests that made them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medcycle.api import server
from medcycle.errors import BackendUnavailable, ConfigError
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.testing.platform import TEST_SECRET, make_settings

CHILD = """
import gc, json, sys, time
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.api.app import create_app
from medcycle.api.server import prepare
platform = Platform(load_settings())
create_app(platform, migrate=False)
before = len(gc.get_objects())
done = prepare(platform)
from medcycle.catalog.deid_tables import basic_profile
print(json.dumps({"done": done, "interval": sys.getswitchinterval(), "frozen": gc.get_freeze_count(),
                  "tracked_before": before, "tracked_after": len(gc.get_objects()),
                  "profile_cached": basic_profile.cache_info().currsize,
                  "sqlite_loaded": "sqlite3" in sys.modules or "psycopg" in sys.modules}))
"""


def _child(home: Path, **env: str) -> dict[str, Any]:
    Platform(make_settings(home)).init()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MEDCYCLE_")}
    environ.update({"MEDCYCLE_HOME": str(home), "MEDCYCLE_ENVIRONMENT": "test", "MEDCYCLE_SECRET_KEY": TEST_SECRET,
                    **env})
    done = subprocess.run([sys.executable, "-c", CHILD], env=environ, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_prepare_warms_up_then_freezes_the_heap_and_shortens_the_switch_interval(tmp_path: Path) -> None:
    got = _child(tmp_path / "home")
    assert got["interval"] == pytest.approx(0.0005)  # the default, 0.5 ms
    assert got["profile_cached"] == 1 and got["sqlite_loaded"]  # what the first requests would have loaded
    assert got["frozen"] > 50_000 and got["done"]["frozen"] == got["frozen"]
    # what a full collection still walks is what requests make from now on: almost nothing of the start-up
    assert got["tracked_after"] < got["tracked_before"] / 20


def test_the_freeze_can_be_turned_off_and_the_interval_set(tmp_path: Path) -> None:
    got = _child(tmp_path / "home", MEDCYCLE_API_FREEZE_HEAP="false", MEDCYCLE_API_SWITCH_INTERVAL_MS="2")
    assert got["interval"] == pytest.approx(0.002)
    assert got["frozen"] == 0 and got["done"]["frozen"] == 0
    assert got["tracked_after"] > got["tracked_before"] / 2


@pytest.mark.parametrize("value", ["0", "-1", "101", "fast"])
def test_a_bad_switch_interval_is_refused_with_the_setting_named(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(home=tmp_path / "home", api_switch_interval_ms=value)
    assert "api_switch_interval_ms" in err.value.message


def test_warm_up_with_the_database_unreachable_logs_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    platform = Platform(make_settings(tmp_path / "home"))
    platform.init()

    def down() -> None:
        raise BackendUnavailable("the embedded job queue is unavailable: disk I/O error", hint="Check the disk.")

    monkeypatch.setattr(platform.jobs, "ping", down)
    with caplog.at_level(logging.WARNING, logger="medcycle.api.server"):
        server.warm(platform)  # does not raise: /readyz reports the database
    assert "the embedded job queue is unavailable" in caplog.text
    platform.close()


def test_medcycle_serve_prepares_the_process_before_uvicorn_takes_requests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from medcycle.cli.errors import run
    from medcycle.cli.main import app

    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDCYCLE_ENVIRONMENT", "test")
    monkeypatch.setenv("MEDCYCLE_SECRET_KEY", TEST_SECRET)
    Platform(make_settings(tmp_path / "home")).init()
    calls: list[str] = []
    monkeypatch.setattr(server, "prepare", lambda platform: calls.append(f"prepare {platform.settings.home.name}"))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(f"run {type(app).__name__} {kw['port']}"))
    assert run(app, ["serve", "--port", "8765"]) == 0
    assert calls == ["prepare home", "run FastAPI 8765"]


def test_the_server_parses_http_with_httptools() -> None:
    """uvicorn picks its C parser (a dependency) over the pure-Python h11 for `medcycle serve`'s default
    ``http="auto"``: h11 cost the API about 2 ms of CPU more for each 512 KiB upload."""
    import uvicorn
    from fastapi import FastAPI

    config = uvicorn.Config(FastAPI(), http="auto")
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
