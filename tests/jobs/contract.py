"""The job-queue contract, one suite for every backend (see ``medcycle/jobs/base.py``).

A backend's test class inherits :class:`QueueContract` and provides two fixtures:

* ``jq`` — an empty :class:`JobQueue` with a short lease (about 1 s) and a small bound (about 50);
* ``worker_cmd`` — ``(argv_prefix, env)`` that launches ``python -m medcycle.testing.job_worker`` against
  the same backend: the prefix carries ``--queue-url`` (and ``--database-url``), the suite adds the rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from medcycle.errors import Conflict, NotFound, QueueFull, UsageError
from medcycle.jobs.base import Job, JobCancelled, JobQueue, JobState, LeaseLost

WorkerCommand = tuple[list[str], dict[str, str]]


def _take_one(jq: JobQueue, queue: str, worker: str = "w1", wait_ms: int = 0) -> Job:
    jobs = jq.take(queue, worker, wait_ms=wait_ms)
    assert len(jobs) == 1, f"expected one job from {queue!r}, got {jobs}"
    return jobs[0]


class QueueContract:
    """Tests every backend must pass; fixtures ``jq`` and ``worker_cmd`` come from the subclass."""

    # -- basics ------------------------------------------------------------------------------------
    def test_enqueue_take_complete(self, jq: JobQueue) -> None:
        job = jq.enqueue("basic", {"image": "sha256:abc", "n": 1})
        assert job.state == JobState.QUEUED
        assert job.attempts == 0
        assert job.token is None
        assert job.created_at is not None
        assert job.created_at.tzinfo is not None

        taken = _take_one(jq, "basic", "w1")
        assert taken.id == job.id
        assert taken.state == JobState.RUNNING
        assert taken.payload == {"image": "sha256:abc", "n": 1}
        assert taken.attempts == 1
        assert taken.token
        assert taken.lease_owner == "w1"
        assert taken.lease_expires_at is not None
        assert taken.lease_expires_at > datetime.now(UTC) - timedelta(seconds=1)
        assert jq.get(job.id).token is None, "get() must not leak the lease token"

        done = jq.complete(taken, {"label": "cat"})
        assert done.state == JobState.SUCCEEDED
        assert done.result == {"label": "cat"}
        assert done.finished_at is not None
        assert jq.get(job.id).state == JobState.SUCCEEDED
        assert jq.take("basic", "w1") == []

    def test_get_list_stats_queues(self, jq: JobQueue) -> None:
        with pytest.raises(NotFound):
            jq.get("0" * 32)
        first = jq.enqueue("lst", {"n": 1})
        second = jq.enqueue("lst", {"n": 2})
        jq.enqueue("other", {"n": 3})
        jq.complete(_take_one(jq, "lst"))
        assert [j.id for j in jq.list("lst")] == [second.id, first.id]
        assert [j.id for j in jq.list("lst", JobState.SUCCEEDED)] == [first.id]
        assert len(jq.list()) == 3
        assert len(jq.list(limit=2)) == 2
        stats = jq.stats("lst")
        assert stats.counts == {"queued": 1, "succeeded": 1}
        assert stats.active == 1
        assert stats.limit == jq.limit
        assert set(jq.queues()) == {"lst", "other"}
        jq.ping()

    def test_capacity_check_refuses_before_the_bound_is_crossed(self, jq: JobQueue) -> None:
        from medcycle.errors import QueueFull

        original = jq.limit
        jq.limit = 2
        try:
            assert jq.check_capacity("cap") == 2  # empty: room, two places
            first = jq.enqueue("cap", {"n": 1})
            jq.enqueue("cap", {"n": 2})
            assert jq.active_count("cap") == 2
            with pytest.raises(QueueFull, match="is full") as info:
                jq.check_capacity("cap")
            assert info.value.retry_after >= 1
            taken = _take_one(jq, "cap")  # running still counts; finished does not
            assert jq.active_count("cap") == 2
            jq.complete(taken)
            assert taken.id == first.id and jq.active_count("cap") == 1
            assert jq.check_capacity("cap") == 1
        finally:
            jq.limit = original

    def test_stats_give_the_age_of_the_oldest_waiting_job(self, jq: JobQueue) -> None:
        assert jq.stats("age").oldest_queued_seconds is None
        jq.enqueue("age", {"n": 1})
        time.sleep(0.3)
        jq.enqueue("age", {"n": 2})
        started = time.monotonic()
        age = jq.stats("age").oldest_queued_seconds
        assert age is not None and 0.25 <= age < 30, age  # the first job's age, not the second's
        _take_one(jq, "age")  # the oldest leaves the queue: the age is now the second job's
        later = jq.stats("age").oldest_queued_seconds
        elapsed = time.monotonic() - started
        # the second job is at least 0.3 s younger than the first, however long the take took on a busy machine
        # (the first job's age would have grown by the time between the two looks, about `elapsed`)
        assert later is not None and later < age + elapsed - 0.25, (age, later, elapsed)
        jq.complete(_take_one(jq, "age"))
        assert jq.stats("age").oldest_queued_seconds is None

    def test_updates_need_a_leased_job(self, jq: JobQueue) -> None:
        job = jq.enqueue("tok", {})
        _take_one(jq, "tok")
        with pytest.raises(UsageError):
            jq.complete(jq.get(job.id))

    # -- ordering ----------------------------------------------------------------------------------
    def test_fifo_within_a_priority(self, jq: JobQueue) -> None:
        ids = [jq.enqueue("fifo", {"n": i}).id for i in range(6)]
        assert [_take_one(jq, "fifo").id for _ in ids] == ids

    def test_higher_priority_first(self, jq: JobQueue) -> None:
        for name, priority in [("a", 0), ("b", 5), ("c", -1), ("d", 5), ("e", 1)]:
            jq.enqueue("prio", {"name": name}, priority=priority)
        jobs = jq.take("prio", "w1", max_jobs=5)
        assert [j.payload["name"] for j in jobs] == ["b", "d", "e", "a", "c"]

    # -- batches and waiting -----------------------------------------------------------------------
    def test_batch_take_returns_up_to_n(self, jq: JobQueue) -> None:
        for i in range(3):
            jq.enqueue("batch", {"n": i})
        assert len(jq.take("batch", "w1", max_jobs=2)) == 2
        start = time.monotonic()
        rest = jq.take("batch", "w1", max_jobs=5, wait_ms=500)
        assert len(rest) == 1
        assert time.monotonic() - start < 0.5 + 1.5
        with pytest.raises(UsageError):
            jq.take("batch", "w1", max_jobs=0)

    def test_take_waits_at_most_wait_ms(self, jq: JobQueue) -> None:
        start = time.monotonic()
        assert jq.take("empty", "w1", max_jobs=4, wait_ms=300) == []
        elapsed = time.monotonic() - start
        assert 0.25 <= elapsed < 0.3 + 1.5

    def test_waiting_take_wakes_for_a_new_job(self, jq: JobQueue) -> None:
        timer = threading.Timer(0.3, lambda: jq.enqueue("wake", {"late": True}))
        start = time.monotonic()
        timer.start()
        try:
            jobs = jq.take("wake", "w1", max_jobs=1, wait_ms=5000)
        finally:
            timer.join()
        assert [j.payload for j in jobs] == [{"late": True}]
        assert time.monotonic() - start < 2.0

    # -- leases ------------------------------------------------------------------------------------
    def test_expired_lease_redelivers_and_fences_the_stale_worker(self, jq: JobQueue) -> None:
        job = jq.enqueue("lease", {"n": 1})
        first = _take_one(jq, "lease", "w1")
        time.sleep(jq.lease_seconds + 0.5)
        second = _take_one(jq, "lease", "w2", wait_ms=2000)
        assert second.id == job.id
        assert second.attempts == 2
        assert second.token != first.token
        assert second.lease_owner == "w2"
        with pytest.raises(LeaseLost):
            jq.heartbeat(first)
        with pytest.raises(LeaseLost):
            jq.complete(first, {"by": "w1"})
        jq.complete(second, {"by": "w2"})
        with pytest.raises(LeaseLost):
            jq.complete(first, {"by": "w1"})
        final = jq.get(job.id)
        assert final.state == JobState.SUCCEEDED
        assert final.result == {"by": "w2"}
        assert final.attempts == 2

    def test_heartbeat_keeps_the_job(self, jq: JobQueue) -> None:
        job = jq.enqueue("hb", {})
        held = _take_one(jq, "hb", "w1")
        for _ in range(6):  # 2.4 leases in all
            time.sleep(jq.lease_seconds * 0.4)
            held = jq.heartbeat(held)
            assert jq.take("hb", "thief") == []
        assert held.lease_expires_at is not None
        assert held.lease_expires_at > datetime.now(UTC)
        assert jq.complete(held).state == JobState.SUCCEEDED
        assert jq.get(job.id).attempts == 1

    def test_longer_lease_given_at_take_is_honoured(self, jq: JobQueue) -> None:
        jq.enqueue("long", {})
        held = jq.take("long", "w1", lease_seconds=jq.lease_seconds * 4)[0]
        time.sleep(jq.lease_seconds * 1.5)
        assert jq.take("long", "thief") == []
        held = jq.heartbeat(held, lease_seconds=jq.lease_seconds * 4)
        assert jq.complete(held).state == JobState.SUCCEEDED

    # -- failures, dead letters --------------------------------------------------------------------
    def test_fail_retries_until_dead_and_requeue_revives(self, jq: JobQueue) -> None:
        job = jq.enqueue("dl", {}, max_attempts=2)
        failed = jq.fail(_take_one(jq, "dl"), "boom 1")
        assert failed.state == JobState.QUEUED
        assert failed.error == "boom 1"
        second = _take_one(jq, "dl")
        assert second.attempts == 2
        dead = jq.fail(second, "boom 2")
        assert dead.state == JobState.DEAD
        assert dead.error == "boom 2"
        assert jq.take("dl", "w1") == []
        with pytest.raises(UsageError):
            jq.requeue(_running(jq, "dl"))
        revived = jq.requeue(job.id)
        assert revived.state == JobState.QUEUED
        assert revived.attempts == 0
        third = _take_one(jq, "dl")
        assert third.attempts == 1
        assert jq.complete(third).state == JobState.SUCCEEDED

    def test_lease_expiry_past_max_attempts_is_dead(self, jq: JobQueue) -> None:
        job = jq.enqueue("dl2", {}, max_attempts=1)
        _take_one(jq, "dl2")
        time.sleep(jq.lease_seconds + 0.5)
        assert jq.take("dl2", "w2", wait_ms=300) == []
        dead = jq.get(job.id)
        assert dead.state == JobState.DEAD
        assert dead.attempts == 1
        assert jq.requeue(job.id).state == JobState.QUEUED
        assert _take_one(jq, "dl2").id == job.id

    def test_fail_without_retry_and_with_delay(self, jq: JobQueue) -> None:
        once = jq.enqueue("nf", {})
        assert jq.fail(_take_one(jq, "nf"), "bad input", retry=False).state == JobState.FAILED
        assert jq.get(once.id).error == "bad input"

        later = jq.enqueue("delay", {})
        jq.fail(_take_one(jq, "delay"), "busy", delay_seconds=1.0)
        assert jq.take("delay", "w1") == []
        start = time.monotonic()
        again = _take_one(jq, "delay", wait_ms=4000)
        assert again.id == later.id
        assert again.attempts == 2
        assert 0.5 <= time.monotonic() - start < 1.0 + 1.5

    # -- idempotency, cancel, deadlines, bound -----------------------------------------------------
    def test_idempotency_key_returns_the_first_job(self, jq: JobQueue) -> None:
        first = jq.enqueue("idem", {"n": 1}, idempotency_key="digest+model+params")
        again = jq.enqueue("idem", {"n": 2}, idempotency_key="digest+model+params")
        assert again.id == first.id
        assert again.payload == {"n": 1}
        assert len(jq.list("idem")) == 1
        assert jq.enqueue("idem-other", {"n": 1}, idempotency_key="digest+model+params").id != first.id
        jq.complete(_take_one(jq, "idem"))
        done = jq.enqueue("idem", {"n": 3}, idempotency_key="digest+model+params")
        assert done.id == first.id
        assert done.state == JobState.SUCCEEDED

    def test_cancel_queued_job_is_never_handed_out(self, jq: JobQueue) -> None:
        doomed = jq.enqueue("cq", {"n": 1})
        kept = jq.enqueue("cq", {"n": 2})
        assert jq.cancel(doomed.id).state == JobState.CANCELLED
        assert [j.id for j in jq.take("cq", "w1", max_jobs=5)] == [kept.id]
        assert jq.get(doomed.id).state == JobState.CANCELLED
        with pytest.raises(NotFound):
            jq.cancel("0" * 32)

    def test_cancel_running_job_stops_its_worker(self, jq: JobQueue) -> None:
        job = jq.enqueue("cr", {})
        held = _take_one(jq, "cr")
        flagged = jq.cancel(job.id)
        assert flagged.state == JobState.RUNNING
        assert flagged.cancel_requested
        with pytest.raises(JobCancelled):
            jq.heartbeat(held)
        assert jq.get(job.id).state == JobState.CANCELLED
        with pytest.raises(Conflict):
            jq.complete(held)
        assert jq.get(job.id).state == JobState.CANCELLED

    def test_deadline_expired_jobs_fail_unhanded(self, jq: JobQueue) -> None:
        past = jq.enqueue("dead-line", {"n": 1}, deadline=datetime.now(UTC) - timedelta(seconds=1))
        soon = jq.enqueue("dead-line", {"n": 2}, deadline=datetime.now(UTC) + timedelta(seconds=0.3))
        fine = jq.enqueue("dead-line", {"n": 3}, deadline=datetime.now(UTC) + timedelta(hours=1))
        time.sleep(0.6)
        assert [j.id for j in jq.take("dead-line", "w1", max_jobs=5)] == [fine.id]
        for job in (past, soon):
            ended = jq.get(job.id)
            assert ended.state == JobState.FAILED
            assert ended.error == "deadline exceeded"
            assert ended.attempts == 0

    def test_bounded_queue_pushes_back(self, jq: JobQueue) -> None:
        first = jq.enqueue("bound", {"n": 0}, idempotency_key="first")
        for i in range(1, jq.limit):
            jq.enqueue("bound", {"n": i})
        with pytest.raises(QueueFull) as info:
            jq.enqueue("bound", {"n": "one too many"})
        assert info.value.retry_after >= 1
        assert info.value.http_status == 429
        assert jq.enqueue("bound", {}, idempotency_key="first").id == first.id
        held = _take_one(jq, "bound")
        with pytest.raises(QueueFull):
            jq.enqueue("bound", {"n": "running still counts"})
        jq.complete(held)
        assert jq.enqueue("bound", {"n": "room again"}).state == JobState.QUEUED
        jq.enqueue("bound-other", {"n": "another queue has its own bound"})

    # -- concurrency and crashes -------------------------------------------------------------------
    def test_concurrent_workers_never_share_a_job(self, jq: JobQueue) -> None:
        total, threads = 200, 8
        lock = threading.Lock()
        holding: set[str] = set()
        completed: Counter[str] = Counter()
        errors: list[BaseException] = []
        enqueued: list[str] = []
        stop_at = time.monotonic() + 45

        def produce() -> None:
            try:
                i = 0
                while i < total and time.monotonic() < stop_at:
                    try:
                        enqueued.append(jq.enqueue("conc", {"n": i}).id)
                        i += 1
                    except QueueFull:
                        time.sleep(0.01)
            except BaseException as exc:
                errors.append(exc)

        def consume(name: str) -> None:
            try:
                while time.monotonic() < stop_at:
                    with lock:
                        if sum(completed.values()) >= total or errors:
                            return
                    # A long lease: this test is about mutual exclusion, not expiry (a slow write lock
                    # under contention must not turn into a legitimate redelivery).
                    for job in jq.take("conc", name, max_jobs=3, wait_ms=50, lease_seconds=60):
                        with lock:
                            assert job.id not in holding, f"{job.id} held twice at once"
                            holding.add(job.id)
                        time.sleep(0.001)
                        with lock:
                            holding.discard(job.id)
                        jq.complete(job, {"by": name})
                        with lock:
                            completed[job.id] += 1
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=consume, args=(f"w{i}",)) for i in range(threads)]
        workers.append(threading.Thread(target=produce))
        for t in workers:
            t.start()
        for t in workers:
            t.join(timeout=60)
        assert not errors, errors
        assert len(enqueued) == total
        assert set(completed) == set(enqueued)
        assert all(n == 1 for n in completed.values())
        assert jq.stats("conc").counts == {"succeeded": total}

    def test_kill_9_worker_job_is_redelivered(
        self, jq: JobQueue, worker_cmd: WorkerCommand, tmp_path: Path
    ) -> None:
        argv, extra_env = worker_cmd
        env = {**os.environ, **extra_env}
        results = tmp_path / "completed.txt"
        job = jq.enqueue("kill", {"n": 1})

        def launch(name: str, work_seconds: float) -> tuple[subprocess.Popen[bytes], Path]:
            log = tmp_path / f"{name}.log"
            cmd = [*argv, "--queue", "kill", "--worker", name, "--work-seconds", str(work_seconds),
                   "--lease-seconds", str(jq.lease_seconds), "--count", "1", "--results-file", str(results),
                   "--timeout", "60"]  # fmt: skip
            with log.open("wb") as out:
                return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT), log

        doomed, doomed_log = launch("doomed", 60)
        try:
            stop_at = time.monotonic() + 30
            while jq.get(job.id).state != JobState.RUNNING:
                assert doomed.poll() is None, f"worker exited early:\n{doomed_log.read_text()}"
                assert time.monotonic() < stop_at, f"worker never took the job:\n{doomed_log.read_text()}"
                time.sleep(0.05)
            assert jq.get(job.id).lease_owner == "doomed"
            os.kill(doomed.pid, signal.SIGKILL)
        finally:
            if doomed.poll() is None:
                doomed.kill()
            doomed.wait(timeout=30)
        assert doomed.returncode == -signal.SIGKILL
        assert not results.exists()

        survivor, survivor_log = launch("survivor", 0.2)
        try:
            rc = survivor.wait(timeout=60)
        finally:
            if survivor.poll() is None:
                survivor.kill()
                survivor.wait(timeout=30)
        assert rc == 0, survivor_log.read_text()
        assert results.read_text().split() == [job.id]
        final = jq.get(job.id)
        assert final.state == JobState.SUCCEEDED
        assert final.attempts == 2
        assert final.lease_owner == "survivor"
        assert final.result == {"worker": "survivor"}


def _running(jq: JobQueue, queue: str) -> str:
    """Put a fresh job of ``queue`` in the running state and return its id."""
    job = jq.enqueue(queue, {"running": True})
    assert _take_one(jq, queue, "other").id == job.id
    return job.id
