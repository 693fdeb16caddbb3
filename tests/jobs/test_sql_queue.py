"""The job-queue contract on the embedded SQL backend, on SQLite and on PostgreSQL."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from medcycle.jobs.base import Job, JobState
from medcycle.jobs.sql import SqlJobQueue
from medcycle.jobs.tables import JobRow
from medcycle.jobs.worker import Worker
from medcycle.store.base import utcnow
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


def test_a_take_merges_expired_leases_and_priority_levels_in_order(sql_jq: SqlJobQueue) -> None:
    stale = sql_jq.enqueue("m", {"name": "stale"}, priority=1)
    assert [j.id for j in sql_jq.take("m", "w0", lease_seconds=0.05)] == [stale.id]
    later = sql_jq.enqueue("m", {"name": "later"}, priority=3)
    (held,) = sql_jq.take("m", "w0")
    sql_jq.fail(held, "try again later", delay_seconds=60)  # queued, at the top level, but not yet available
    for name, priority in [("low", 0), ("top", 5), ("mid", 1), ("neg", -2), ("top2", 5)]:
        sql_jq.enqueue("m", {"name": name}, priority=priority)
    time.sleep(0.1)  # the stale lease expires: it competes by its priority and age again
    taken = sql_jq.take("m", "w1", max_jobs=4)
    assert [j.payload["name"] for j in taken] == ["top", "top2", "stale", "mid"]
    assert [j.payload["name"] for j in sql_jq.take("m", "w1", max_jobs=10)] == ["low", "neg"]
    assert sql_jq.get(later.id).state == JobState.QUEUED


def _instructions(jq: SqlJobQueue, queue: str, n: int) -> int:
    """SQLite virtual-machine instructions (in hundreds) one take of ``n`` jobs runs."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_progress_handler(count, 100)

    jq.engine.dispose()  # new connections, each with the counter
    event.listen(jq.engine, "connect", on_connect)
    try:
        taken = jq.take(queue, "w", max_jobs=n)
    finally:
        event.remove(jq.engine, "connect", on_connect)
        jq.engine.dispose()
    assert len(taken) == n
    return steps[0]


def test_a_take_reads_what_it_hands_out_however_long_the_queue_and_its_history(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'take.db'}")
    upgrade(engine)
    jq = SqlJobQueue(engine, limit=100_000)
    try:
        for i in range(40):
            jq.enqueue("t", {"i": i})
        small = _instructions(jq, "t", 16)
        now = utcnow()
        row = {"queue": "t", "priority": 0, "payload": {}, "attempts": 1, "max_attempts": 3, "available_at": now,
               "cancel_requested": False, "created_at": now, "updated_at": now}
        with engine.begin() as conn:  # a long history, and a long backlog at two priority levels
            conn.execute(JobRow.__table__.insert(), [{**row, "id": f"done{i}", "state": "succeeded"}
                                                     for i in range(20_000)])
            conn.execute(JobRow.__table__.insert(), [{**row, "id": f"wait{i}", "state": "queued", "attempts": 0,
                                                      "priority": i % 2} for i in range(5_000)])
        large = _instructions(jq, "t", 16)
        # the same work: the 16 jobs of the highest level in index order, not a sort of 25,000 rows
        assert large < 2 * small + 10, (small, large)
    finally:
        engine.dispose()
