"""``/readyz`` when a backend is down or hung: a bounded answer, one check in flight per backend."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medcycle.api.app import create_app
from medcycle.api.routers import system
from medcycle.platform import BackendHealth, Platform
from medcycle.testing.platform import make_settings
from medcycle.testing.redis import _start_server, _stop
from medcycle.testing.services import skip_or_fail


def _jobs(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    return next(b for b in body["backends"] if b["name"] == "jobs")


@pytest.fixture
def own_redis() -> Iterator[tuple[str, int]]:
    """A redis-server of this test alone: it is frozen and killed."""
    started = _start_server()
    if started is None:
        skip_or_fail("no `redis-server` binary to start a Redis this test can freeze and stop")
    url, proc, tmp = started
    try:
        yield url, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        _stop(proc, tmp)


def test_a_frozen_then_stopped_redis_gets_a_bounded_503(own_redis: tuple[str, int], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url, pid = own_redis
    monkeypatch.setattr(system, "READY_TIMEOUT_S", 1.0)
    with Platform(make_settings(tmp_path / "home", queue_url=url)) as platform:
        platform.init()
        pings = []
        real_ping = platform.jobs.ping
        monkeypatch.setattr(platform.jobs, "ping", lambda: (pings.append(1), real_ping())[1])
        client = TestClient(create_app(platform))
        ready = client.get("/readyz")
        assert ready.status_code == 200 and _jobs(ready)["ok"] is True

        os.kill(pid, signal.SIGSTOP)  # connected, silent: the client's own socket timeout is 30 s
        before = len(pings)
        for _ in range(3):
            started = time.monotonic()
            ready = client.get("/readyz")
            assert time.monotonic() - started < 5.0
            assert ready.status_code == 503
            assert "no answer" in str(_jobs(ready)["detail"]), ready.json()
            assert client.head("/readyz").status_code == 503
        assert len(pings) - before == 1  # one check in flight, waited on by every later probe
        others = {b["name"]: b["ok"] for b in ready.json()["backends"]}
        assert others["database"] is True and others["objects"] is True

        os.kill(pid, signal.SIGCONT)  # the check in flight answers; the next probe is ready again
        deadline = time.monotonic() + 10
        while (ready := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.status_code == 200, ready.json()

        os.kill(pid, signal.SIGKILL)  # down: refused at once, with the reason
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "unreachable" in str(_jobs(ready)["detail"])


def test_a_hung_database_check_is_bounded_and_not_repeated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "READY_TIMEOUT_S", 0.5)
    with Platform(make_settings(tmp_path / "home")) as platform:
        platform.init()
        client = TestClient(create_app(platform))
        release, calls = threading.Event(), []

        def hung() -> BackendHealth:
            calls.append(1)
            release.wait(30)
            return BackendHealth("database", "db", True, "late")

        monkeypatch.setattr(platform, "_database_health", hung)
        try:
            for _ in range(3):
                ready = client.get("/readyz")
                assert ready.status_code == 503
                database = next(b for b in ready.json()["backends"] if b["name"] == "database")
                assert database["ok"] is False and "no answer" in database["detail"]
            assert len(calls) == 1
        finally:
            release.set()

        def broken() -> BackendHealth:
            raise RuntimeError("driver bug")

        monkeypatch.setattr(platform, "_database_health", broken)
        deadline = time.monotonic() + 5
        while "failed" not in str(client.get("/readyz").json()["backends"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = client.get("/readyz")
        database = next(b for b in ready.json()["backends"] if b["name"] == "database")
        assert ready.status_code == 503 and database["detail"] == "the check failed (RuntimeError)"
