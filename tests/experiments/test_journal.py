"""Durability and delivery: kill -9 loses nothing flushed, offline runs sync exactly once, replays are no-ops."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medcycle.errors import Conflict
from medcycle.experiments import runs
from medcycle.experiments.ingest import LocalSink, apply_records
from medcycle.experiments.journal import Journal
from medcycle.experiments.records import Kind, Record, metrics_record
from medcycle.experiments.sdk import start_run
from medcycle.experiments.sync import sync_journals
from medcycle.experiments.tables import RunRow
from medcycle.platform import Platform
from tests.experiments.conftest import FlakySink

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import os, signal, sys
from pathlib import Path
from medcycle.experiments.sdk import start_run
from medcycle.platform import Platform
from medcycle.testing.platform import make_settings
from tests.experiments.conftest import FlakySink

home, url, journals = sys.argv[1:4]
platform = Platform(make_settings(Path(home), database_url=url))
sink = FlakySink(platform)
run = start_run("crash", sink=sink, journal_dir=journals, capture=False, capture_output=False, resources=False,
                flush_interval=3600)
for i in range(1000):
    run.log_metric("loss", i / 7, step=i)
assert run.flush(timeout=60) is True          # delivered
sink.down = True
for i in range(1000, 2000):
    run.log_metric("loss", i / 7, step=i)
run.log_params({"lr": 0.1})
assert run.flush(timeout=60) is False         # durable in the journal only
for i in range(2000, 2500):
    run.log_metric("loss", i / 7, step=i)     # never flushed
print(run.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _series(platform: Platform, run_id: str) -> list[int]:
    with platform.session() as s:
        return list(runs.read_series(s, run_id, "loss").steps)


def test_kill_9_loses_nothing_flushed(platform: Platform, db_url: str, tmp_path: Path) -> None:
    journals = tmp_path / "journals"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "child"), db_url, str(journals)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_id = proc.stdout.split()[0]
    assert _series(platform, run_id) == list(range(1000))  # what the first flush delivered
    results = sync_journals(journals, LocalSink(platform))
    assert [(r.run_id, r.outcome, r.crashed) for r in results] == [(run_id, "synced", True)]
    steps = _series(platform, run_id)
    assert steps[:2000] == list(range(2000)) and steps == sorted(set(steps))  # all flushed points, once each
    with platform.session() as s:
        row = s.get_one(RunRow, run_id)
        assert row.status == "crashed" and row.ended_at is not None
        assert runs.get_run(s, run_id).summary.params == {"lr": "0.1"}
    assert sync_journals(journals, LocalSink(platform)) == []  # delivered journals are gone


def test_offline_run_continues_and_sync_writes_everything_once(
    platform: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = FlakySink(platform)
    sink.down = True
    journals = tmp_path / "journals"
    run = start_run("offline", sink=sink, journal_dir=journals, capture=False, capture_output=False, resources=False,
                    flush_interval=0.05, params={"lr": 0.01})
    for i in range(300):
        run.log_metric("loss", 1 / (i + 1), step=i)
    run.log_artifact(b"predictions", "preds.json")
    assert run.flush(timeout=5) is False and run.offline
    assert run.end(timeout=5) is False  # kept for sync
    assert "medcycle run sync" in capsys.readouterr().err
    with platform.session() as s:
        assert s.get(RunRow, run.id) is None
    results = sync_journals(journals, LocalSink(platform), target="db:elsewhere")
    assert [r.outcome for r in results] == ["skipped"]  # written for another store
    results = sync_journals(journals, LocalSink(platform))
    assert [(r.outcome, r.crashed) for r in results] == [("synced", False)]
    assert _series(platform, run.id) == list(range(300))
    with platform.session() as s:
        detail = runs.get_run(s, run.id)
    assert detail.summary.status == "finished" and detail.summary.params == {"lr": "0.01"}
    assert platform.objects.get(detail.artifacts[0].digest or "") == b"predictions"
    assert sync_journals(journals, LocalSink(platform)) == []


def test_reconnect_and_lost_acknowledgements_deliver_exactly_once(platform: Platform, tmp_path: Path) -> None:
    sink = FlakySink(platform)
    run = start_run("flaky", sink=sink, journal_dir=tmp_path / "j", capture=False, capture_output=False,
                    resources=False, flush_interval=0.05)
    sink.down = True
    for i in range(100):
        run.log_metric("loss", float(i), step=i)
    assert run.flush(timeout=2) is False and run.offline
    sink.down = False
    sink.lose_acks = 1  # the store applies, the answer is lost, the writer sends again
    deadline = time.monotonic() + 30
    while run.offline or not run.flush(timeout=1):
        assert time.monotonic() < deadline, "the writer never reconnected"
    for i in range(100, 200):
        run.log_metric("loss", float(i), step=i)
    assert run.end() is True
    assert _series(platform, run.id) == list(range(200))
    assert sink.applied_batches >= 2


def test_replays_are_skipped_and_gaps_refused(platform: Platform) -> None:
    run_id = "ab" * 16
    start = Record(Kind.START, {"project": "p", "started_at": 1.7e9}, seq=1)
    from array import array

    points = metrics_record({"m": (array("q", [0, 1]), array("d", [1.0, 2.0]), array("d", [0.5, 0.25]))})
    points.seq = 2
    with platform.session() as s:
        assert apply_records(s, run_id, [start, points]) == 2
    with platform.session() as s:
        assert apply_records(s, run_id, [points, start]) == 2  # a replay changes nothing
        assert list(runs.read_series(s, run_id, "m").values) == [0.5, 0.25]
    gap = Record(Kind.TAGS, {"tags": {"a": "b"}}, seq=5)
    with pytest.raises(Conflict), platform.session() as s:
        apply_records(s, run_id, [gap])
    orphan = Record(Kind.PARAMS, {"params": {"a": "1"}}, seq=1)
    with pytest.raises(Conflict), platform.session() as s:
        apply_records(s, "cd" * 16, [orphan])


def test_sync_leaves_live_journals_alone(platform: Platform, tmp_path: Path) -> None:
    live = Journal.create(tmp_path, "ef" * 16, "db:x")
    try:
        results = sync_journals(tmp_path, LocalSink(platform))
        assert [(r.run_id, r.outcome) for r in results] == [("ef" * 16, "live")]
    finally:
        live.close()
    results = sync_journals(tmp_path, LocalSink(platform))
    assert [r.outcome for r in results] == ["empty"]  # its writer died before writing anything
    assert not (tmp_path / ("ef" * 16)).exists()
