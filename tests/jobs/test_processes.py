"""The process registry on SQLite and PostgreSQL: register, beat (one UPSERT), stop, lost, forget; the beacon."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from medcycle import __version__
from medcycle.jobs import processes as reg
from medcycle.jobs.processes import Beacon, ProcessInfo, ProcessKind, ProcessRow, Status
from medcycle.platform import Platform
from medcycle.store.base import utcnow
from tests.process_registry import wait_until


def _age(platform: Platform, process_id: str, seconds: float) -> None:
    with platform.session() as s:
        s.execute(update(ProcessRow).where(ProcessRow.id == process_id)
                  .values(last_seen_at=utcnow() - timedelta(seconds=seconds)))


def test_register_beat_stop_and_lost(platform: Platform) -> None:
    worker = ProcessInfo("host-a:11", ProcessKind.SERVING_WORKER, host="host-a", pid=11, queue="inference",
                         beat_seconds=2.0)
    agent = ProcessInfo("gpu-box-1", ProcessKind.AGENT, host="host-b", pid=22, queue="gpu")
    with platform.session() as s:
        reg.register(s, worker, state="idle", details={"device": "cpu"})
        reg.register(s, agent, state="idle", details={"gpus": "0,1"})
    with platform.session(write=False) as s:
        views = {v.id: v for v in reg.list_live(s)}
    assert set(views) == {"host-a:11", "gpu-box-1"}
    w = views["host-a:11"]
    assert (w.kind, w.host, w.pid, w.queue, w.status, w.current_job) == (
        "serving-worker", "host-a", 11, "inference", "idle", None)
    assert w.details == {"medcycle": __version__, "device": "cpu"} and w.beat_seconds == 2.0
    started = w.started_at

    with platform.session() as s:
        reg.beat(s, worker, state="busy", current_job="job-1", details={"device": "cpu", "models": ["xr@v1"]})
    with platform.session(write=False) as s:
        [w] = reg.list_live(s, kind=ProcessKind.SERVING_WORKER)
    assert (w.status, w.current_job, w.details["models"]) == ("busy", "job-1", ["xr@v1"])
    assert w.started_at == started and w.last_seen_at >= started  # a beat keeps when it started

    _age(platform, "host-a:11", 7.0)  # more than 3 beats of 2 s: lost
    with platform.session(write=False) as s:
        assert [v.id for v in reg.list_live(s)] == ["gpu-box-1"]
        listed = {v.id: v.status for v in reg.list_processes(s)}
        assert listed == {"host-a:11": "lost", "gpu-box-1": "idle"}
        assert {v.id for v in reg.list_live(s, stale_after_seconds=60)} == {"host-a:11", "gpu-box-1"}

    with platform.session() as s:
        reg.mark_stopped(s, "gpu-box-1")
    with platform.session(write=False) as s:
        assert reg.list_live(s) == []
        [stopped] = reg.list_processes(s, ProcessKind.AGENT)
    assert (stopped.status, stopped.current_job) == ("stopped", None)


def test_a_beat_without_a_row_registers_and_old_rows_are_forgotten(platform: Platform) -> None:
    info = ProcessInfo("w1", ProcessKind.SERVING_WORKER)
    with platform.session() as s:
        reg.beat(s, info, state="busy", current_job="j")
    _age(platform, "w1", (reg.FORGET_AFTER + timedelta(hours=1)).total_seconds())
    with platform.session(write=False) as s:
        assert reg.list_processes(s) == []  # not seen within a day: not listed
        assert [v.id for v in reg.list_processes(s, seen_within=None)] == ["w1"]
    with platform.session() as s:
        reg.register(s, ProcessInfo("w2", ProcessKind.AGENT), state="idle")
    with platform.session(write=False) as s:
        assert [v.id for v in reg.list_processes(s, seen_within=None)] == ["w2"]  # w1 was forgotten


def test_list_orders_busy_idle_lost_stopped(platform: Platform) -> None:
    with platform.session() as s:
        for name, state in (("a", "idle"), ("b", "busy"), ("c", "idle"), ("d", "idle")):
            reg.register(s, ProcessInfo(name, ProcessKind.AGENT, beat_seconds=1.0), state=state)
        reg.mark_stopped(s, "d")
    _age(platform, "c", 10.0)
    with platform.session(write=False) as s:
        assert [(v.id, v.status) for v in reg.list_processes(s)] == [
            ("b", "busy"), ("a", "idle"), ("c", "lost"), ("d", "stopped")]


def test_beacon_registers_beats_on_poke_and_marks_stopped(platform: Platform) -> None:
    state = {"s": Status("idle", details={"gpus": "0"})}
    beacon = Beacon(platform, ProcessInfo("agent-x", ProcessKind.AGENT, queue="gpu", beat_seconds=30.0),
                    lambda: state["s"])
    beacon.start()

    def seen() -> reg.ProcessView | None:
        with platform.session(write=False) as s:
            found = reg.list_processes(s, ProcessKind.AGENT)
        return found[0] if found else None

    try:
        wait_until(lambda: seen() is not None, "agent-x to register", 10.0)
        first = seen()
        assert first is not None and (first.status, first.details["gpus"]) == ("idle", "0")
        state["s"] = Status("busy", "task-9", {"gpus": "0"})
        beacon.poke()  # beats now, not in 30 s
        wait_until(lambda: (v := seen()) is not None and v.status == "busy" and v.current_job == "task-9",
                   "agent-x to show busy with task-9", 10.0)
    finally:
        beacon.close()
    assert not beacon.is_alive()
    now = seen()
    assert now is not None and (now.status, now.current_job) == ("stopped", None)


def test_beacon_failures_are_logged_and_ignored(platform: Platform, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Status:
        raise RuntimeError("status exploded")

    calls = {"n": 0}

    def flaky() -> Status:
        calls["n"] += 1
        return Status("idle", details={"bad": object()} if calls["n"] == 1 else {})

    bad = Beacon(platform, ProcessInfo("bad", ProcessKind.SERVING_WORKER, beat_seconds=0.05), broken)
    half = Beacon(platform, ProcessInfo("half", ProcessKind.SERVING_WORKER, beat_seconds=0.05), flaky)
    with caplog.at_level("WARNING", logger="medcycle.jobs.processes"):
        bad.start()
        half.start()
        # the first write failed (details not JSON); later beats register it
        wait_until(lambda: half.beats >= 2, "two beats of half", 10.0)
        time.sleep(0.2)
        assert bad.is_alive() and half.is_alive()
        bad.close()
        half.close()
    assert bad.beats == 1  # only its stop mark (which updates no row) was written
    assert any("could not register half" in r.getMessage() for r in caplog.records)
    assert any("status of bad failed" in r.getMessage() for r in caplog.records)
    with platform.session(write=False) as s:
        assert [(v.id, v.status) for v in reg.list_processes(s)] == [("half", "stopped")]


def test_cli_lists_processes(platform: Platform, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from medcycle.cli.errors import run
    from medcycle.cli.main import app

    with platform.session() as s:
        reg.register(s, ProcessInfo("w1", ProcessKind.SERVING_WORKER, queue="inference"), state="busy")
        reg.register(s, ProcessInfo("a1", ProcessKind.AGENT, queue="gpu"), state="idle")
    _age(platform, "a1", 3600)  # its beats stopped an hour ago: lost
    monkeypatch.setenv("MEDCYCLE_HOME", str(platform.settings.home))
    monkeypatch.setenv("MEDCYCLE_DATABASE_URL", platform.settings.resolved_database_url)
    capsys.readouterr()
    assert run(app, ["jobs", "processes", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["w1"]["status"] == "busy" and rows["a1"]["status"] == "lost" and rows["w1"]["queue"] == "inference"
    assert run(app, ["jobs", "processes", "--live", "--kind", "agent", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
