"""The dynamic batcher: gathers jobs until they hold ``max_images`` images/slices or ``max_delay`` has passed.

Counting images, not requests, is what keeps a batch's cost bounded: one CT series of 300 slices fills a
batch alone, thirty radiographs share one. The clock starts when the batch's first job is taken; jobs already
waiting are taken at once (no delay when the queue is busy), and the batcher waits for more only while the
batch is short and its delay lasts. It asks the queue for as many jobs as the missing images need at the
images-per-job seen so far, so a batch overshoots ``max_images`` by about one job at most. Taken jobs are
leased (the worker renews the leases while it computes); a job is never split or handed back.

Metrics: batch size in images and jobs, dispatch reason (``full``/``timeout``), queue wait per job.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from medcycle.jobs.base import Job, JobQueue
from medcycle.serving.metrics import ServingMetrics
from medcycle.store.base import utcnow

STEP_MS = 5


class DispatchReason(StrEnum):
    FULL = "full"
    TIMEOUT = "timeout"


@dataclass
class Batch:
    jobs: list[Job]
    images: int
    reason: DispatchReason
    gathered_s: float  # from the first job taken to dispatch


def job_images(job: Job) -> int:
    """Images/slices a job holds (recorded by intake), at least 1."""
    try:
        return max(1, int((job.payload or {}).get("images") or 1))
    except (TypeError, ValueError):
        return 1


class DynamicBatcher:
    """Takes batches of jobs from ``queue`` for ``worker`` (see the module docstring)."""

    def __init__(self, jq: JobQueue, queue: str, worker: str, *, max_images: int, max_delay_ms: int,
                 idle_wait_ms: int = 500, lease_seconds: float | None = None, metrics: ServingMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.jq, self.queue, self.worker = jq, queue, worker
        self.max_images, self.max_delay = max(1, max_images), max(0, max_delay_ms) / 1000
        self.idle_wait_ms, self.lease = idle_wait_ms, lease_seconds
        self.metrics = metrics or ServingMetrics()
        self.clock = clock

    def _wanted(self, jobs: list[Job], images: int) -> int:
        """How many more jobs to ask for: the images still missing over the images per job seen so far."""
        return max(1, math.ceil((self.max_images - images) / max(1.0, images / max(1, len(jobs)))))

    def _take(self, n: int, wait_ms: int) -> list[Job]:
        return self.jq.take(self.queue, self.worker, max_jobs=max(1, n), wait_ms=max(0, wait_ms),
                            lease_seconds=self.lease)

    def next_batch(self) -> Batch | None:
        """The next batch, or None when no job came within ``idle_wait_ms``."""
        jobs = self._take(1, self.idle_wait_ms)
        if not jobs:
            return None
        opened = self.clock()
        images = sum(job_images(j) for j in jobs)
        if images < self.max_images:  # whatever is already waiting, without waiting
            more = self._take(self._wanted(jobs, images), 0)
            jobs += more
            images += sum(job_images(j) for j in more)
        while images < self.max_images:
            remaining = opened + self.max_delay - self.clock()
            if remaining <= 0:
                break
            more = self._take(self._wanted(jobs, images), min(STEP_MS, max(1, int(remaining * 1000))))
            jobs += more
            images += sum(job_images(j) for j in more)
        reason = DispatchReason.FULL if images >= self.max_images else DispatchReason.TIMEOUT
        now = utcnow()
        m = self.metrics
        m.batch_images.observe(images)
        m.batch_jobs.observe(len(jobs))
        m.dispatch.labels(reason.value).inc()
        for job in jobs:
            if job.created_at is not None:
                m.queue_wait.observe(max(0.0, (now - job.created_at).total_seconds()))
        return Batch(jobs, images, reason, self.clock() - opened)
