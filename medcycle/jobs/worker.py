"""A worker loop over any :class:`JobQueue`: batch take, heartbeats in the background, fenced completion.

Stages plug their logic in as a handler (a function of a batch of jobs); the loop owns the queue
semantics so no stage re-implements leases::

    def handle(batch: list[Job]) -> list[dict]:
        return [predict(job.payload) for job in batch]

    Worker(platform.jobs, "inference", handle, max_batch=8, wait_ms=50).run(stop)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from medcycle.errors import MedcycleError
from medcycle.jobs.base import Job, JobCancelled, JobQueue, LeaseLost

log = logging.getLogger(__name__)

Handler = Callable[[list[Job]], list[dict[str, Any] | None]]


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


@dataclass
class WorkerStats:
    batches: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class Heartbeat(threading.Thread):
    """Renews the leases of the jobs in hand every ``interval`` seconds until stopped.

    A job whose lease was lost (or that was cancelled) is put in ``dropped`` and no longer renewed; the
    caller must not settle it. Used by :class:`Worker` and by the serving worker::

        beat = Heartbeat(jq, jobs, interval=lease / 3, lease=lease)
        beat.start()
        try:
            ...  # work on the jobs
        finally:
            beat.halt()
    """

    def __init__(self, jq: JobQueue, jobs: Sequence[Job], interval: float, lease: float, *,
                 name: str = "medcycle-heartbeat") -> None:
        super().__init__(daemon=True, name=name)
        self.jq, self.jobs, self.interval, self.lease = jq, list(jobs), interval, lease
        self.stop = threading.Event()
        self.dropped: set[str] = set()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            for job in self.jobs:
                if job.id in self.dropped or self.stop.is_set():
                    continue
                try:
                    self.jq.heartbeat(job, lease_seconds=self.lease)
                except (LeaseLost, JobCancelled) as exc:
                    log.warning("job %s: %s", job.id, exc.message)
                    self.dropped.add(job.id)
                except MedcycleError as exc:  # backend hiccup: try again next beat
                    log.warning("heartbeat for job %s failed: %s", job.id, exc.message)

    def halt(self) -> None:
        """Stop renewing and wait for the thread (a no-op when it never started)."""
        self.stop.set()
        if self.is_alive():
            self.join()


class Worker:
    """Takes batches from ``queue`` and runs ``handler`` on them until ``stop`` is set.

    Args:
        jq: the queue backend.
        queue: queue name.
        handler: gets a batch, returns one result (or None) per job, in order. An exception fails
            the whole batch (each job retried until its attempts run out, then dead).
        max_batch: most jobs per batch; ``wait_ms``: longest wait to fill a batch.
        lease_seconds: lease per delivery; heartbeats run every third of it.
    """

    def __init__(
        self,
        jq: JobQueue,
        queue: str,
        handler: Handler,
        *,
        name: str | None = None,
        max_batch: int = 1,
        wait_ms: int = 500,
        lease_seconds: float | None = None,
    ) -> None:
        self.jq, self.queue, self.handler = jq, queue, handler
        self.name = name or default_worker_name()
        self.max_batch, self.wait_ms = max_batch, wait_ms
        self.lease = lease_seconds or jq.lease_seconds
        self.stats = WorkerStats()

    def run_once(self) -> int:
        """Take and process at most one batch; returns how many jobs it took."""
        batch = self.jq.take(
            self.queue, self.name, max_jobs=self.max_batch, wait_ms=self.wait_ms, lease_seconds=self.lease
        )
        if not batch:
            return 0
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(batch))
        beat = Heartbeat(self.jq, batch, max(self.lease / 3, 0.05), self.lease)
        beat.start()
        try:
            results = self.handler(batch)
            if len(results) != len(batch):
                raise MedcycleError(f"handler returned {len(results)} results for {len(batch)} jobs")
        except Exception as exc:  # noqa: BLE001 - a failing handler fails its batch, never the worker
            beat.stop.set()
            beat.join()
            for job in batch:
                self._settle(job, error=f"{type(exc).__name__}: {exc}")
            return len(batch)
        beat.stop.set()
        beat.join()
        for job, result in zip(batch, results, strict=True):
            if job.id not in beat.dropped:
                self._settle(job, result=result)
            else:
                self.stats.lost += 1
        return len(batch)

    def _settle(self, job: Job, *, result: dict[str, Any] | None = None, error: str | None = None) -> None:
        """Complete the job (or fail it when ``error`` is given); a lost lease is counted, not raised."""
        try:
            if error is not None:
                self.jq.fail(job, error)
                self.stats.failed += 1
            else:
                self.jq.complete(job, result)
                self.stats.completed += 1
        except (LeaseLost, JobCancelled) as exc:
            self.stats.lost += 1
            log.warning("job %s not settled: %s", job.id, exc.message)

    def run(self, stop: threading.Event, *, max_jobs: int | None = None) -> WorkerStats:
        """Loop until ``stop`` is set (or ``max_jobs`` were taken)."""
        taken = 0
        while not stop.is_set() and (max_jobs is None or taken < max_jobs):
            taken += self.run_once()
        return self.stats
