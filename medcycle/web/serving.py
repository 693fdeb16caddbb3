"""The Serving page (``/ui/serving``): what is deployed, who is answering, and the requests it answered.

* the deployment the supervisor runs (``medcycle deploy``: its spec and the processes it last reported), and
  every model's aliases with their last move (a promotion or a rollback);
* the serving workers of the process registry (:mod:`medcycle.jobs.processes`) — busy, idle, lost (its
  heartbeats stopped: killed, or its machine is gone) or stopped — with their machine, device, loaded model
  versions, the jobs in hand and their last heartbeat;
* the workers holding jobs of the inference queue now — the lease owner of each running job, its last
  heartbeat and when its lease runs out;
* the queue: jobs per state and the age of the oldest queued job;
* the recent jobs: status, requested model and the version that answered, latency (queued to finished) and
  compute time, the worker that answered, with links to the result (``GET /v1/jobs/ID``) and to the
  prediction on the monitoring page.

Reading needs ``view``. Deploying, promoting and rolling back are done with ``medcycle deploy`` and
``medcycle model``; cancelling a request with ``DELETE /v1/jobs/ID``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import Response

from medcycle.api.deps import PlatformDep, PrincipalDep, SessionDep
from medcycle.auth.roles import Permission
from medcycle.jobs.base import Job, JobState
from medcycle.monitoring import links
from medcycle.platform import Platform
from medcycle.store.base import utcnow
from medcycle.web.render import renderer

router = APIRouter(prefix="/ui/serving", include_in_schema=False)

RECENT_JOBS = 50
OLDEST_SCAN = 1000  # queued jobs looked at to find the oldest
STATES = tuple(s.value for s in JobState)


@dataclass(frozen=True, slots=True)
class JobLine:
    """One inference job as the page lists it."""

    id: str
    status: str
    state: str
    requested: str
    answered_by: str | None
    worker: str | None  # the serving worker that completed the job
    images: int
    attempts: int
    created_at: datetime | None
    finished_at: datetime | None
    latency_ms: float | None
    compute_ms: float | None
    cached: bool
    prediction: str | None  # the monitoring page of the job's (first) logged prediction
    error: str | None


@dataclass(frozen=True, slots=True)
class Holder:
    """A worker holding jobs now: its name, how many, its last heartbeat and when its lease ends."""

    name: str
    jobs: int
    last_heartbeat: datetime | None
    lease_expires_at: datetime | None
    stale: bool


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds() * 1000)


def job_lines(platform: Platform, session: Any, jobs: list[Job]) -> list[JobLine]:
    """The jobs with their stored results and predictions (two queries for the lot)."""
    from medcycle.monitoring.tables import PredictionRow
    from medcycle.serving import results

    keys = {j.id: str((j.result or {}).get("result")) for j in jobs if (j.result or {}).get("result")}
    rows = results.find_many(session, keys.values())
    predictions: dict[str, str] = {}
    ids = [j.id for j in jobs]
    if ids:
        for pid, job_id in session.execute(select(PredictionRow.id, PredictionRow.job_id)
                                           .where(PredictionRow.job_id.in_(ids)).order_by(PredictionRow.at)):
            predictions.setdefault(str(job_id), str(pid))
    out = []
    for job in jobs:
        row = rows.get(keys.get(job.id, ""))
        payload = job.payload or {}
        out.append(JobLine(
            id=job.id, status=results.status_of(job, row).value, state=job.state.value,
            requested=str(payload.get("model", "")), answered_by=row.model_ref if row is not None else None,
            worker=str((job.result or {}).get("worker") or "") or None,
            images=int(payload.get("images") or 0), attempts=job.attempts, created_at=job.created_at,
            finished_at=job.finished_at, latency_ms=_ms(job.created_at, job.finished_at),
            compute_ms=row.compute_ms if row is not None else None, cached=bool((job.result or {}).get("cached")),
            prediction=links.prediction(predictions[job.id]) if job.id in predictions else None,
            error=job.error if job.state in (JobState.FAILED, JobState.DEAD) else None))
    return out


def holders(running: list[Job]) -> list[Holder]:
    """Workers (lease owners) of the running jobs, most recent heartbeat first."""
    now = utcnow()
    by_owner: dict[str, list[Job]] = {}
    for job in running:
        by_owner.setdefault(job.lease_owner or "unknown", []).append(job)
    out = []
    for name, jobs in by_owner.items():
        beat = max((j.updated_at for j in jobs if j.updated_at is not None), default=None)
        ends = max((j.lease_expires_at for j in jobs if j.lease_expires_at is not None), default=None)
        out.append(Holder(name, len(jobs), beat, ends, stale=ends is not None and ends < now))
    return sorted(out, key=lambda h: h.last_heartbeat or now, reverse=True)


def oldest_queued_age(platform: Platform, queue: str) -> float | None:
    """Seconds the oldest queued job has waited (among the newest :data:`OLDEST_SCAN`); None when none wait."""
    queued = platform.jobs.list(queue, JobState.QUEUED, OLDEST_SCAN)
    times = [j.created_at for j in queued if j.created_at is not None]
    return (utcnow() - min(times)).total_seconds() if times else None


def alias_table(session: Any) -> list[dict[str, Any]]:
    """Every model with its aliases, each with its last move (promote, rollback) and who made it."""
    from medcycle.models import registry

    out = []
    for model in registry.list_models(session):
        moves = registry.alias_history(session, model["name"])
        last: dict[str, Any] = {}
        for move in moves:  # oldest first: the last one wins
            last[move.alias] = move
        out.append({**model, "moves": last})
    return out


@router.get("")
def serving_page(request: Request, platform: PlatformDep, session: SessionDep, principal: PrincipalDep) -> Response:
    from medcycle.jobs import processes
    from medcycle.serving import deploy
    from medcycle.serving.config import load_serving_settings

    principal.require(Permission.VIEW)
    cfg = load_serving_settings(platform.settings)
    queue = cfg.queue
    stats = platform.jobs.stats(queue)
    recent = platform.jobs.list(queue, None, RECENT_JOBS)
    running = platform.jobs.list(queue, JobState.RUNNING, 200)
    status = deploy.read_status(platform.settings)
    lines = job_lines(platform, session, recent)
    finished = [line.latency_ms for line in lines if line.latency_ms is not None and line.state == "succeeded"]
    return renderer(request).render(
        request, "serving.html", principal=principal, active="serving", queue=queue, stats=stats, states=STATES,
        oldest_age=oldest_queued_age(platform, queue), jobs=lines, holders=holders(running),
        workers=processes.list_processes(session, processes.ProcessKind.SERVING_WORKER),
        models=alias_table(session), deployment=status.get("spec"), processes=status.get("processes") or [],
        supervisor_alive=bool(status.get("supervisor_alive")), generation=status.get("generation"),
        median_latency=sorted(finished)[len(finished) // 2] if finished else None, recent=RECENT_JOBS,
        can_browse=principal.can(Permission.BROWSE),
    )
