"""The job-queue contract on the embedded SQL backend, on SQLite and on PostgreSQL."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from medcycle.jobs.base import Job, JobState
from medcycle.jobs.sql import SqlJobQueue
from medcycle.jobs.worker import Worker
from medcycle.store.engine import create_engine_for
from medcycle.store.migrate import upgrade
from tests.jobs.contract import QueueContract, WorkerCommand


class TestSqlQueue(QueueContract):
    @pytest.fixture
    def jq(self, db_url: str) -> Iterator[SqlJobQueue]:
        engine = create_engine_for(db_url)
        upgrade(engine)
        try:
            yield SqlJobQueue(engine, lease_seconds=1.0, max_attempts=5, limit=50)
        finally:
            engine.dispose()

    @pytest.fixture
    def worker_cmd(self, db_url: str, tmp_path: Path) -> WorkerCommand:
        argv = [
            sys.executable,
            "-m",
            "medcycle.testing.job_worker",
            "--queue-url",
            "embedded",
            "--database-url",
            db_url,
        ]
        return argv, {"MEDCYCLE_HOME": str(tmp_path / "home")}


@pytest.fixture
def sql_jq(db_url: str) -> Iterator[SqlJobQueue]:
    engine = create_engine_for(db_url)
    upgrade(engine)
    try:
        yield SqlJobQueue(engine, lease_seconds=1.0, max_attempts=3, limit=1000)
    finally:
        engine.dispose()


def test_worker_batches_heartbeats_and_settles(sql_jq: SqlJobQueue) -> None:
    jobs = [sql_jq.enqueue("w", {"n": i}) for i in range(10)]
    seen: list[int] = []

    def handle(batch: list[Job]) -> list[dict[str, int] | None]:
        # Longer than the lease: only the background heartbeats keep these jobs ours.
        threading.Event().wait(1.6)
        seen.extend(j.payload["n"] for j in batch)
        return [{"double": j.payload["n"] * 2} for j in batch]

    worker = Worker(sql_jq, "w", handle, name="w1", max_batch=4, wait_ms=100, lease_seconds=1.0)
    stats = worker.run(threading.Event(), max_jobs=10)
    assert sorted(seen) == list(range(10))
    assert stats.batch_sizes == [4, 4, 2]
    assert stats.completed == 10 and stats.lost == 0
    for job in jobs:
        done = sql_jq.get(job.id)
        assert done.state == JobState.SUCCEEDED and done.attempts == 1
        assert done.result == {"double": job.payload["n"] * 2}


def test_worker_failure_retries_then_dead_letters(sql_jq: SqlJobQueue) -> None:
    job = sql_jq.enqueue("f", {"n": 1})

    def broken(batch: list[Job]) -> list[dict[str, int] | None]:
        raise RuntimeError("model exploded")

    worker = Worker(sql_jq, "f", broken, name="w1", wait_ms=0)
    for _ in range(3):
        assert worker.run_once() == 1
    assert worker.run_once() == 0
    dead = sql_jq.get(job.id)
    assert dead.state == JobState.DEAD
    assert dead.attempts == 3 and "model exploded" in (dead.error or "")
    assert worker.stats.failed == 3
