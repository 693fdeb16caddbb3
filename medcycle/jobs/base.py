"""Durable job queues: the contract every backend keeps.

Semantics (see ``docs/architecture.md``):

* **At-least-once with leases.** ``take`` hands a job out under a lease (``lease_seconds``) that the
  worker renews with ``heartbeat``. A job whose worker dies is redelivered once the lease expires.
* **Fenced completion.** Each delivery carries a ``token``; ``complete``/``fail``/``heartbeat`` with a
  stale token (the lease expired and the job went to someone else) raise :class:`LeaseLost`, so a job
  is completed exactly once even when delivered twice.
* **Redelivery counter and dead letters.** ``attempts`` counts deliveries; past ``max_attempts`` a job
  goes to ``dead`` instead of being handed out again. ``requeue`` brings a dead job back.
* **Idempotency key.** Enqueueing the same key on a queue twice returns the first job.
* **Priorities.** Higher ``priority`` is taken first; FIFO within a priority.
* **Cancel.** A queued job is never handed out after ``cancel``; a running one is flagged so its
  worker's next heartbeat raises :class:`JobCancelled`.
* **Bounded.** ``enqueue`` raises :class:`~medcycle.errors.QueueFull` (HTTP 429 + Retry-After) once
  ``limit`` jobs are queued or running.
* **Batch take.** ``take(max_jobs=N, wait_ms=T)`` returns up to N jobs, waiting at most T ms for them.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from medcycle.errors import Conflict, NotFound, QueueFull, UsageError


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in {JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED}


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)


class LeaseLost(Conflict):
    """The worker's lease on the job expired and the job was handed to another worker (or finished)."""

    code = "lease_lost"


class JobCancelled(Conflict):
    """The job was cancelled while running; the worker should stop and not complete it."""

    code = "job_cancelled"


@dataclass(slots=True)
class Job:
    """A job as seen by a caller or (with ``token``) by the worker holding its lease."""

    id: str
    queue: str
    state: JobState
    payload: dict[str, Any]
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 5
    idempotency_key: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    token: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    deadline: datetime | None = None
    cancel_requested: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            if name == "token":
                continue
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


@dataclass(slots=True)
class QueueStats:
    queue: str
    counts: dict[str, int] = field(default_factory=dict)
    limit: int = 0
    oldest_queued_seconds: float | None = None  # age of the oldest job still waiting (since it was submitted)

    @property
    def active(self) -> int:
        return sum(self.counts.get(s.value, 0) for s in ACTIVE_STATES)


def check_queue_name(queue: str) -> str:
    if not queue or len(queue) > 128 or not all(c.isalnum() or c in "-_.:" for c in queue):
        raise UsageError(
            f"queue name {queue!r} is not valid",
            hint="Use 1-128 characters: letters, digits, '-', '_', '.', ':'.",
        )
    return queue


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"job {job_id} does not exist", hint="List jobs with `medcycle jobs list`.", job_id=job_id)


class JobQueue(ABC):
    """A durable queue backend. One instance serves every named queue; it is thread-safe."""

    url: str
    lease_seconds: float
    max_attempts: int
    limit: int

    @abstractmethod
    def enqueue(
        self,
        queue: str,
        payload: dict[str, Any],
        *,
        priority: int = 0,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        deadline: datetime | None = None,
    ) -> Job:
        """Add a job; returns the existing job when ``idempotency_key`` was used before on this queue."""

    @abstractmethod
    def take(
        self,
        queue: str,
        worker: str,
        *,
        max_jobs: int = 1,
        wait_ms: int = 0,
        lease_seconds: float | None = None,
    ) -> builtins.list[Job]:
        """Lease up to ``max_jobs`` jobs (highest priority first), waiting at most ``wait_ms`` for them.

        Jobs past their deadline are not handed out: they end ``failed`` with error ``deadline exceeded``.
        """

    @abstractmethod
    def heartbeat(self, job: Job, *, lease_seconds: float | None = None) -> Job:
        """Extend the lease; raises LeaseLost or JobCancelled."""

    @abstractmethod
    def complete(self, job: Job, result: dict[str, Any] | None = None) -> Job:
        """Mark the leased job succeeded; raises LeaseLost when the lease is no longer ours."""

    @abstractmethod
    def fail(self, job: Job, error: str, *, retry: bool = True, delay_seconds: float = 0.0) -> Job:
        """Record a failure: requeue (until ``max_attempts``, then ``dead``) or end ``failed`` when not retried."""

    @abstractmethod
    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job, or ask a running job's worker to stop."""

    @abstractmethod
    def requeue(self, job_id: str) -> Job:
        """Put a dead or failed job back in its queue with a fresh attempt counter."""

    @abstractmethod
    def get(self, job_id: str) -> Job:
        """The job, or NotFound."""

    @abstractmethod
    def list(self, queue: str | None = None, state: JobState | None = None, limit: int = 100) -> builtins.list[Job]:
        """Jobs, newest first."""

    def check_capacity(self, queue: str) -> int:
        """The places left in ``queue``; raise :class:`QueueFull` when it is at its bound — a cheap early refusal
        before a caller does the work of an enqueue (reading an upload); ``enqueue`` still enforces the bound."""
        active = self.active_count(queue)
        if active >= self.limit:
            raise QueueFull(f"queue {queue!r} is full ({active} of {self.limit} jobs waiting or running)",
                            retry_after=max(1, round(self.lease_seconds / 10)), queue=queue)
        return self.limit - active

    def active_count(self, queue: str) -> int:
        """Jobs waiting or running in ``queue``."""
        return self.stats(queue).active

    @abstractmethod
    def stats(self, queue: str) -> QueueStats:
        """Counts per state and the queue's limit."""

    @abstractmethod
    def queues(self) -> builtins.list[str]:
        """Names of queues that hold any job."""

    @abstractmethod
    def ping(self) -> None:
        """Raise BackendUnavailable when the backend cannot be reached."""

    def close(self) -> None:
        return None
