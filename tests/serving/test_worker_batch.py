"""The serving worker's per-batch path: one transaction for a batch's results, log records and job completions
(embedded queue), fenced completion inside it, the Redis fallback, and the prefetching loop."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from medcycle.jobs.base import JobState
from medcycle.jobs.sql import SqlJobQueue
from medcycle.monitoring.tables import PredictionRow
from medcycle.platform import Platform
from medcycle.serving import intake, results
from medcycle.serving.predlog import LogEntry, log_predictions
from medcycle.serving.tables import ServingResultRow
from medcycle.serving.worker import ServingWorker
from medcycle.store.base import utcnow
from tests.serving.core_fixtures import CLS, SrvTemplate, srv_copy


def _submit(platform: Platform, template: SrvTemplate, n: int) -> list[str]:
    return [intake.submit(platform, [template.radiographs[i % len(template.radiographs)]], model=CLS,
                          params={"threshold": 0.01 * (i + 1)}).id for i in range(n)]


def _counts(platform: Platform) -> tuple[int, int]:
    with platform.session(write=False) as s:
        return (int(s.scalar(select(func.count()).select_from(ServingResultRow)) or 0),
                int(s.scalar(select(func.count()).select_from(PredictionRow)) or 0))


def test_a_batch_is_stored_and_completed_in_one_transaction(srv_platform: Platform, srv_template: SrvTemplate,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _submit(srv_platform, srv_template, 6)

    def no_separate_completion(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the batch's jobs complete in its results' transaction, not one by one")

    monkeypatch.setattr(SqlJobQueue, "complete", no_separate_completion)
    commits: list[tuple[int, int, list[str]]] = []
    real = results.complete_jobs

    def spy(session: Any, done: Sequence[Any]) -> set[str]:
        lost = real(session, done)
        # inside the transaction: this session sees the rows, a separate connection does not yet
        mine = int(session.scalar(select(func.count()).select_from(ServingResultRow)) or 0)
        with srv_platform.engine.connect() as other:
            theirs = int(other.scalar(select(func.count()).select_from(ServingResultRow)) or 0)
        commits.append((mine, theirs, [j.id for j, _ in done]))
        return lost

    monkeypatch.setattr(results, "complete_jobs", spy)
    worker = ServingWorker(srv_platform, max_batch_images=8, max_delay_ms=50, idle_wait_ms=50)
    try:
        worker.run(threading.Event(), max_jobs=6)
    finally:
        worker.close()
    assert [(m, t) for m, t, _ in commits] == [(6, 0)] and sorted(commits[0][2]) == sorted(ids)
    for job_id in ids:
        job = srv_platform.jobs.get(job_id)
        assert job.state is JobState.SUCCEEDED and job.result is not None and not job.result["cached"]
    assert _counts(srv_platform) == (6, 6) and worker.stats.computed == 6
    with srv_platform.session(write=False) as s:
        logged = list(s.scalars(select(PredictionRow)))
    assert all(r.embedding is not None and r.input_stats and r.header.get("modality") for r in logged)


def test_a_failing_store_stores_nothing_and_retries_the_batch(srv_platform: Platform,
                                                              srv_template: SrvTemplate) -> None:
    ids = _submit(srv_platform, srv_template, 3)

    def broken_log(session: Any, entries: Sequence[LogEntry]) -> None:
        log_predictions(session, entries)
        raise RuntimeError("disk full")  # not a MedcycleError: the whole transaction goes

    worker = ServingWorker(srv_platform, max_batch_images=8, max_delay_ms=50, idle_wait_ms=50,
                           prediction_log=broken_log)
    try:
        assert worker.run_once() == 3
    finally:
        worker.close()
    assert _counts(srv_platform) == (0, 0)
    for job_id in ids:
        job = srv_platform.jobs.get(job_id)
        assert job.state is JobState.QUEUED and job.attempts == 1 and "disk full" in (job.error or "")
    assert worker.stats.retried == 3


def test_completion_in_the_transaction_is_fenced(platform: Platform) -> None:
    """A job whose lease went to another worker is reported lost and left to that worker; the others complete."""
    import time

    jq = platform.jobs
    assert isinstance(jq, SqlJobQueue)
    for i in range(3):
        jq.enqueue("fenced", {"i": i})
    mine = jq.take("fenced", "me", max_jobs=3, lease_seconds=0.3)
    time.sleep(0.4)
    [stolen] = jq.take("fenced", "other", max_jobs=1)
    with platform.session() as session:
        assert results.shares_transaction(session, jq)
        lost = results.complete_jobs(session, [(j, {"n": j.payload["i"]}) for j in mine])
    assert lost == {stolen.id}
    for job in mine:
        now = jq.get(job.id)
        if job.id == stolen.id:
            assert now.state is JobState.RUNNING and now.lease_owner == "other"
        else:
            assert now.state is JobState.SUCCEEDED and now.result == {"n": job.payload["i"]}
            assert now.finished_at is not None and now.finished_at <= utcnow()
    jq.complete(stolen, {"by": "other"})  # the other worker still holds it
    assert jq.get(stolen.id).result == {"by": "other"}


def test_results_are_written_once_per_key(platform: Platform) -> None:
    def row(key: str) -> ServingResultRow:
        return ServingResultRow(key=key, status="done", model="m", model_version_id="v", model_ref="m@v1",
                                weights_digest="0" * 64, task="classification-2d", inputs_digest="1" * 64,
                                params={}, images=1, cases=[], outputs=[], compute_ms=1.0, job_id=None,
                                created_at=utcnow())

    with platform.session() as session:
        assert results.save_many(session, [row("a"), row("b")]) == {"a", "b"}
    with platform.session() as session:
        assert results.save_many(session, [row("b"), row("c")]) == {"c"}
        assert results.save(session, row("c")) is False
    with platform.session(write=False) as session:
        assert results.count(session) == 3


def test_a_redis_queue_completes_after_the_transaction(srv_template: SrvTemplate, tmp_path: Path,
                                                       redis_url: str) -> None:
    platform = srv_copy(srv_template, tmp_path, auth_enabled=False, queue_url=redis_url)
    try:
        ids = _submit(platform, srv_template, 3)
        worker = ServingWorker(platform, max_batch_images=8, max_delay_ms=50, idle_wait_ms=50)
        try:
            worker.run(threading.Event(), max_jobs=3)
        finally:
            worker.close()
        assert all(platform.jobs.get(i).state is JobState.SUCCEEDED for i in ids)
        assert _counts(platform) == (3, 3) and worker.stats.computed == 3
    finally:
        platform.close()


def test_the_loop_takes_the_next_batch_while_one_computes(srv_platform: Platform, srv_template: SrvTemplate) -> None:
    """With prefetch, the second batch is taken (and decoding) before the first is stored; every batch taken is
    processed, also the one in hand when the loop is told to stop."""
    ids = _submit(srv_platform, srv_template, 6)
    order: list[str] = []
    worker = ServingWorker(srv_platform, max_batch_images=2, max_delay_ms=0, idle_wait_ms=50)
    take, store = worker.take, worker._store

    def taking() -> Any:
        hand = take()
        if hand is not None:
            order.append("take")
        return hand

    def storing(*args: Any) -> Any:
        order.append("store")
        return store(*args)

    worker.take = taking  # type: ignore[method-assign]
    worker._store = storing  # type: ignore[method-assign]
    try:
        worker.run(threading.Event(), max_jobs=6)
    finally:
        worker.close()
    assert order[:3] == ["take", "take", "store"], order
    assert order.count("take") == order.count("store") == 3
    assert all(srv_platform.jobs.get(i).state is JobState.SUCCEEDED for i in ids)


def test_one_job_that_trips_the_model_fails_alone_and_is_retried_later(srv_platform: Platform,
                                                                       srv_template: SrvTemplate,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error in a batch: its jobs are tried one by one, so the healthy ones complete; the job that
    fails alone is redelivered after a delay that doubles with each delivery (1, 2, 4 … s)."""
    from medcycle.serving import worker as worker_module
    from medcycle.serving.predictor import Predictor

    ids = _submit(srv_platform, srv_template, 3)
    poison = ids[1]
    real = Predictor.predict
    calls: list[int] = []

    def predict(self: Predictor, batch: Sequence[Any], prepared: Any = None) -> Any:
        calls.append(len(batch))
        if any(abs(c.params.threshold - 0.02) < 1e-9 for c in batch):  # the second job's input
            raise RuntimeError("a library tripped on this input")
        return real(self, batch, prepared)

    monkeypatch.setattr(Predictor, "predict", predict)
    worker = ServingWorker(srv_platform, max_batch_images=8, max_delay_ms=50, idle_wait_ms=50)
    try:
        assert worker.run_once() == 3
    finally:
        worker.close()
    assert calls == [3, 1, 1, 1]  # the batch, then each job alone
    states = {i: srv_platform.jobs.get(i) for i in ids}
    assert [states[i].state for i in ids] == [JobState.SUCCEEDED, JobState.QUEUED, JobState.SUCCEEDED]
    assert "a library tripped" in (states[poison].error or "") and _counts(srv_platform) == (2, 2)
    assert worker.stats.retried == 1 and worker.stats.computed == 2
    from medcycle.jobs.tables import JobRow

    with srv_platform.session(write=False) as s:
        available = s.scalar(select(JobRow.available_at).where(JobRow.id == poison))
    assert available is not None
    assert (available.replace(tzinfo=None) - utcnow().replace(tzinfo=None)).total_seconds() > 0.5  # not at once
    assert [worker_module.retry_delay(n) for n in (1, 2, 3, 4, 8, 20)] == [1.0, 2.0, 4.0, 8.0, 60.0, 60.0]
