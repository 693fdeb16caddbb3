"""Queue administration: stats, job listing, cancel and requeue (the work itself is in each stage)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.api.schemas import JobOut, QueueOut
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import NotFound
from medcycle.jobs.base import Job, JobState

router = APIRouter(prefix="/v1/queues", tags=["queues"])
Viewer = Annotated[Principal, requires(Permission.VIEW)]
Operator = Annotated[Principal, requires(Permission.TRAIN)]


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        queue=job.queue,
        state=job.state.value,
        priority=job.priority,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        payload=job.payload,
        result=job.result,
        error=job.error,
        lease_owner=job.lease_owner,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


def _job_in(platform: PlatformDep, queue: str, job_id: str) -> Job:
    job = platform.jobs.get(job_id)
    if job.queue != queue:
        raise NotFound(f"job {job_id} is not in queue {queue!r}", hint=f"It is in queue {job.queue!r}.")
    return job


@router.get("", response_model=list[QueueOut])
def list_queues(platform: PlatformDep, _: Viewer) -> list[QueueOut]:
    out = []
    for name in platform.jobs.queues():
        s = platform.jobs.stats(name)
        out.append(QueueOut(queue=s.queue, counts=s.counts, limit=s.limit))
    return out


@router.get("/{queue}/jobs", response_model=list[JobOut])
def list_jobs(
    queue: str,
    platform: PlatformDep,
    _: Viewer,
    state: JobState | None = None,
    limit: int = Query(default=100, ge=1, le=10_000),
) -> list[JobOut]:
    return [job_out(j) for j in platform.jobs.list(queue, state, limit)]


@router.get("/{queue}/jobs/{job_id}", response_model=JobOut)
def get_job(queue: str, job_id: str, platform: PlatformDep, _: Viewer) -> JobOut:
    return job_out(_job_in(platform, queue, job_id))


@router.post("/{queue}/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(queue: str, job_id: str, platform: PlatformDep, session: SessionDep, principal: Operator) -> JobOut:
    _job_in(platform, queue, job_id)
    job = platform.jobs.cancel(job_id)
    audit.record(session, principal, "job.cancel", target_kind="job", target_id=job_id, via="api", queue=queue)
    return job_out(job)


@router.post("/{queue}/jobs/{job_id}/requeue", response_model=JobOut)
def requeue_job(queue: str, job_id: str, platform: PlatformDep, session: SessionDep, principal: Operator) -> JobOut:
    _job_in(platform, queue, job_id)
    job = platform.jobs.requeue(job_id)
    audit.record(session, principal, "job.requeue", target_kind="job", target_id=job_id, via="api", queue=queue)
    return job_out(job)
