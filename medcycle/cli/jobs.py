"""``medcycle jobs``: inspect and manage durable queues."""

from __future__ import annotations

from typing import Annotated

import typer

from medcycle.auth import audit
from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, emit_json, table
from medcycle.jobs.base import JobState

app = typer.Typer(no_args_is_help=True)


@app.command("queues")
def queues(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """Every queue with counts per state."""
    jq = state(ctx).platform().jobs
    stats = [jq.stats(q) for q in jq.queues()]
    if json:
        emit_json([{"queue": s.queue, "counts": s.counts, "limit": s.limit} for s in stats])
    else:
        states = [s.value for s in JobState]
        table(
            "Queues",
            ["queue", *states, "limit"],
            [(s.queue, *[s.counts.get(x, 0) for x in states], s.limit) for s in stats],
        )


@app.command("processes")
def processes_(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="serving-worker or agent (default: every kind).")] = None,
    live: Annotated[bool, typer.Option("--live", help="Only processes that beat recently and are not stopped.")]
    = False,
    json: bool = JsonOpt,
) -> None:
    """Serving workers and agents that registered in the last day: busy, idle, lost (beats stopped) or stopped."""
    from medcycle.jobs import processes

    with state(ctx).platform().session(write=False) as session:
        views = processes.list_processes(session, kind)
    if live:
        views = [v for v in views if v.live]
    rows = [{"id": v.id, "kind": v.kind, "status": v.status, "host": v.host, "pid": v.pid, "queue": v.queue,
             "current_job": v.current_job, "last_seen_at": v.last_seen_at.isoformat(),
             "started_at": v.started_at.isoformat(), "details": v.details} for v in views]
    if json:
        emit_json(rows)
    else:
        table("Processes", ["id", "kind", "status", "queue", "current job", "last seen"],
              [(r["id"], r["kind"], r["status"], r["queue"], r["current_job"], r["last_seen_at"]) for r in rows])


@app.command("list")
def list_(
    ctx: typer.Context,
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None,
    job_state: Annotated[JobState | None, typer.Option("--state", help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    json: bool = JsonOpt,
) -> None:
    """Newest jobs first."""
    jobs = state(ctx).platform().jobs.list(queue, job_state, limit)
    if json:
        emit_json([j.to_dict() for j in jobs])
    else:
        table(
            "Jobs",
            ["id", "queue", "state", "prio", "attempts", "worker", "created", "error"],
            [
                (
                    j.id,
                    j.queue,
                    j.state.value,
                    j.priority,
                    f"{j.attempts}/{j.max_attempts}",
                    j.lease_owner,
                    j.created_at,
                    (j.error or "")[:60],
                )
                for j in jobs
            ],
        )


@app.command("show")
def show(ctx: typer.Context, job_id: str, json: bool = JsonOpt) -> None:
    """One job in full."""
    job = state(ctx).platform().jobs.get(job_id)
    if json:
        emit_json(job.to_dict())
    else:
        table(f"Job {job.id}", ["field", "value"], list(job.to_dict().items()))


@app.command("cancel")
def cancel(ctx: typer.Context, job_id: str) -> None:
    """Cancel a queued job, or ask a running job's worker to stop."""
    platform = state(ctx).platform()
    job = platform.jobs.cancel(job_id)
    with platform.session() as session:
        audit.record(session, state(ctx).actor, "job.cancel", target_kind="job", target_id=job_id, via="cli")
    typer.echo(f"{job.id}: {job.state.value}{' (cancel requested)' if job.cancel_requested else ''}")


@app.command("requeue")
def requeue(ctx: typer.Context, job_id: str) -> None:
    """Put a dead, failed or cancelled job back in its queue."""
    platform = state(ctx).platform()
    job = platform.jobs.requeue(job_id)
    with platform.session() as session:
        audit.record(session, state(ctx).actor, "job.requeue", target_kind="job", target_id=job_id, via="cli")
    typer.echo(f"{job.id}: {job.state.value}")
