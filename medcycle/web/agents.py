"""The Training page (``/ui/training``): queued training tasks and the agents that take them.

A task is a job whose payload is a :class:`~medcycle.agents.spec.TaskSpec` (``medcycle run enqueue``,
``run reproduce --queue``, pipeline steps on agents), on any queue. The page shows:

* the agents: those of the process registry (:mod:`medcycle.jobs.processes`: every running ``medcycle agent
  start`` writes its state every few seconds) — busy, idle, lost (its heartbeats stopped) or stopped, with
  their machine and GPUs — merged with the lease owner of each running task (its current task, its last
  heartbeat, whether its lease still holds) and the agents named by finished tasks (the last time each one
  finished a task is listed too);
* the tasks, queued, running and finished, per queue: name, project, command, attempts, the agent, the exit
  code, and links to the runs each one made (runs started inside a task carry its id as a tag);
* a Cancel button on a queued or running task (``train`` permission), which does what
  ``medcycle jobs cancel`` does: a queued task never runs, a running one is stopped at its agent's next
  heartbeat. Forgery is refused as on every form: the session cookie is ``SameSite=Lax`` and a post whose
  ``Sec-Fetch-Site`` or ``Origin`` names another site is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from starlette.responses import Response

from medcycle.api.deps import PlatformDep, PrincipalDep, SessionDep
from medcycle.auth import audit
from medcycle.auth.roles import Permission
from medcycle.errors import NotFound
from medcycle.jobs import processes
from medcycle.jobs.base import Job, JobState
from medcycle.platform import Platform
from medcycle.store.base import utcnow
from medcycle.web.datasets import _same_site
from medcycle.web.render import renderer

router = APIRouter(prefix="/ui/training", include_in_schema=False)

PER_QUEUE = 100  # jobs looked at per queue
CANCELLABLE = (JobState.QUEUED, JobState.RUNNING)
DONE_MESSAGES = {"cancel": "Cancel requested: a queued task will not run; a running one stops at its agent's next "
                           "heartbeat."}


@dataclass(frozen=True, slots=True)
class TaskLine:
    """One task as the page lists it."""

    id: str
    queue: str
    state: str
    name: str
    project: str
    command: str
    hypothesis: str | None
    datasets: list[str]
    attempts: int
    max_attempts: int
    agent: str | None
    exit_code: int | None
    runs: list[str]
    created_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    error: str | None

    @property
    def cancellable(self) -> bool:
        return self.state in {s.value for s in CANCELLABLE} and not self.cancel_requested


@dataclass(frozen=True, slots=True)
class AgentLine:
    """An agent: registered (idle, busy, lost, stopped), working now (holding a task), or last seen finishing
    one."""

    name: str
    state: str  # busy | lease expired | idle | starting | lost | stopped
    task: str | None
    task_name: str | None
    last_heartbeat: datetime | None
    lease_expires_at: datetime | None
    last_finished_at: datetime | None
    tasks_done: int
    host: str | None = None  # from the process registry (None: an agent known only from its tasks)
    pid: int | None = None
    gpus: str | None = None
    started_at: datetime | None = None


def _is_task(job: Job) -> bool:
    from medcycle.agents.spec import TASK_KIND

    return isinstance(job.payload, dict) and job.payload.get("kind") == TASK_KIND


def task_jobs(platform: Platform) -> list[Job]:
    """Every task among the newest :data:`PER_QUEUE` jobs of each queue (plus every running task)."""
    found: dict[str, Job] = {}
    for queue in platform.jobs.queues():
        for state in (None, JobState.RUNNING, JobState.QUEUED):
            for job in platform.jobs.list(queue, state, PER_QUEUE):
                if _is_task(job):
                    found.setdefault(job.id, job)
    return sorted(found.values(), key=lambda j: j.created_at or utcnow(), reverse=True)


def _runs_by_task(session: Any, ids: list[str]) -> dict[str, list[str]]:
    from medcycle.agents.executor import TASK_TAG
    from medcycle.experiments.tables import RunRow, RunTagRow

    out: dict[str, list[str]] = {}
    if not ids:
        return out
    rows = session.execute(select(RunTagRow.value, RunRow.id).join(RunRow, RunRow.id == RunTagRow.run_id)
                           .where(RunTagRow.key == TASK_TAG, RunTagRow.value.in_(ids)).order_by(RunRow.started_at))
    for task_id, run_id in rows:
        out.setdefault(str(task_id), []).append(str(run_id))
    return out


def task_lines(session: Any, jobs: list[Job]) -> list[TaskLine]:
    from medcycle.agents.submit import _RESULT_RE

    runs = _runs_by_task(session, [j.id for j in jobs])
    out = []
    for job in jobs:
        p = job.payload
        result = job.result or {}
        exit_code = result.get("exit_code")
        error = job.error if job.state in (JobState.FAILED, JobState.DEAD) else None
        if error and _RESULT_RE.search(error):
            error = _RESULT_RE.sub("", error).strip()
        agent = result.get("agent") or (job.lease_owner if job.state is JobState.RUNNING else None)
        out.append(TaskLine(
            id=job.id, queue=job.queue, state=job.state.value, name=str(p.get("name") or ""),
            project=str(p.get("project") or "default"), command=" ".join(str(c) for c in p.get("command") or []),
            hypothesis=p.get("hypothesis"), datasets=list(p.get("datasets") or []), attempts=job.attempts,
            max_attempts=job.max_attempts, agent=str(agent) if agent else None,
            exit_code=int(exit_code) if isinstance(exit_code, int) else None,
            runs=runs.get(job.id) or [str(r) for r in result.get("run_ids") or []],
            created_at=job.created_at, finished_at=job.finished_at, cancel_requested=job.cancel_requested,
            error=error))
    return out


def agent_lines(jobs: list[Job], registered: list[processes.ProcessView] | None = None) -> list[AgentLine]:
    """Agents holding a task now, then the registered ones, then agents seen finishing tasks (from the tasks'
    results). A task's lease says ``busy`` (or ``lease expired``) over what the registry says."""
    now = utcnow()
    agents: dict[str, dict[str, Any]] = {}
    for proc in registered or []:
        a = agents.setdefault(proc.id, {"done": 0, "finished": None})
        a.update(state=proc.status, beat=proc.last_seen_at, host=proc.host, pid=proc.pid,
                 gpus=proc.details.get("gpus"), started=proc.started_at)
        if proc.current_job and proc.live:
            a.update(task=proc.current_job, task_name=proc.details.get("task_name") or None)
    for job in jobs:
        if job.state is JobState.RUNNING and job.lease_owner:
            a = agents.setdefault(job.lease_owner, {"done": 0, "finished": None})
            stale = job.lease_expires_at is not None and job.lease_expires_at < now
            beat = max((t for t in (a.get("beat"), job.updated_at) if t is not None), default=None)
            a.update(state="lease expired" if stale else "busy", task=job.id, task_name=job.payload.get("name"),
                     beat=beat, ends=job.lease_expires_at)
    for job in jobs:
        name = (job.result or {}).get("agent")
        if job.state.finished and name:
            a = agents.setdefault(str(name), {"done": 0, "finished": None})
            a["done"] += 1
            if job.finished_at is not None and (a["finished"] is None or job.finished_at > a["finished"]):
                a["finished"] = job.finished_at
    out = [AgentLine(name=name, state=a.get("state", "idle"), task=a.get("task"), task_name=a.get("task_name"),
                     last_heartbeat=a.get("beat"), lease_expires_at=a.get("ends"), last_finished_at=a["finished"],
                     tasks_done=a["done"], host=a.get("host"), pid=a.get("pid"),
                     gpus=str(a["gpus"]) if a.get("gpus") else None, started_at=a.get("started"))
           for name, a in agents.items()]
    order = {"busy": 0, "lease expired": 1, "idle": 2, "starting": 2, "stopping": 3, processes.LOST: 4, "stopped": 5}
    return sorted(out, key=lambda a: (order.get(a.state, 6), a.name))


@router.get("")
def training_page(request: Request, platform: PlatformDep, session: SessionDep, principal: PrincipalDep,
                  done: Annotated[str, Query(max_length=16)] = "") -> Response:
    principal.require(Permission.VIEW)
    jobs = task_jobs(platform)
    lines = task_lines(session, jobs)
    groups = {"queued": [t for t in lines if t.state == "queued"],
              "running": [t for t in lines if t.state == "running"],
              "finished": [t for t in lines if t.state not in ("queued", "running")]}
    return renderer(request).render(
        request, "agents.html", principal=principal, active="training",
        agents=agent_lines(jobs, processes.list_processes(session, processes.ProcessKind.AGENT)), groups=groups,
        queues=sorted({t.queue for t in lines}), can_cancel=principal.can(Permission.TRAIN),
        done=DONE_MESSAGES.get(done), per_queue=PER_QUEUE,
    )


@router.post("/tasks/{task_id}/cancel")
def cancel_task(request: Request, task_id: str, platform: PlatformDep, session: SessionDep,
                principal: PrincipalDep) -> Response:
    """Cancel a queued or running task (``train``), as ``medcycle jobs cancel`` does."""
    principal.require(Permission.TRAIN)
    _same_site(request)
    job = platform.jobs.get(task_id)
    if not _is_task(job):
        raise NotFound(f"job {task_id} is not a training task", hint="Cancel other jobs with `medcycle jobs cancel`.")
    platform.jobs.cancel(task_id)
    audit.record(session, principal.name, "job.cancel", target_kind="job", target_id=task_id, via="web")
    return RedirectResponse("/ui/training?done=cancel", status_code=303)
