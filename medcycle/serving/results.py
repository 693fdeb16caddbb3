"""Stored results: the idempotency key, the one-row-per-key write, and the job view clients read.

A result's key is SHA-256 over the ordered input digests, the model version id and the canonical parameters.
:func:`save` inserts with ``ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL), so a redelivered job, two
workers racing on one job, or the same input sent again never makes a second row; a worker that finds the
key already stored completes its job without computing.

A job's status for clients (:class:`~medcycle.serving.schemas.JobStatus`) combines the queue state and the
result: ``failed`` with error "deadline exceeded" is ``expired``; a result whose every case the OOD gate
refused is ``refused``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from medcycle.errors import NotFound
from medcycle.jobs.base import Job, JobQueue, JobState
from medcycle.serving.schemas import JobOut, JobStatus, ModelOut, OutputOut, Params, ResultOut
from medcycle.serving.tables import ServingResultRow

if TYPE_CHECKING:
    from medcycle.platform import Platform

RESULT_REF = "serving_result"
DEADLINE_ERROR = "deadline exceeded"


def inputs_digest(digests: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def result_key(digests: Sequence[str], version_id: str, params: Params) -> str:
    """SHA-256 of the ordered input digests, the model version and the canonical parameters."""
    text = f"{inputs_digest(digests)}\n{version_id}\n{params.canonical()}"
    return hashlib.sha256(text.encode()).hexdigest()


def find(session: Session, key: str) -> ServingResultRow | None:
    return session.get(ServingResultRow, key)


def find_many(session: Session, keys: Iterable[str]) -> dict[str, ServingResultRow]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    return {r.key: r for r in session.scalars(select(ServingResultRow).where(ServingResultRow.key.in_(wanted)))}


def save(session: Session, row: ServingResultRow) -> bool:
    """Insert ``row`` unless its key exists; True when this call wrote it. Output objects get references."""
    return row.key in save_many(session, [row])


def save_many(session: Session, rows: Sequence[ServingResultRow]) -> set[str]:
    """Insert ``rows`` (one statement) except those whose key exists; returns the keys this call wrote. Their
    output objects get references."""
    from medcycle.objects.refs import add_ref

    if not rows:
        return set()
    table: Table = ServingResultRow.__table__  # type: ignore[assignment]
    values = [{c.name: getattr(row, c.name) for c in table.columns} for row in rows]
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).on_conflict_do_nothing(index_elements=["key"])
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).on_conflict_do_nothing(index_elements=["key"])
    # RETURNING says which rows this statement wrote (rowcount is not reliable across drivers)
    written = set(session.connection().execute(stmt.returning(table.c.key), values).scalars())
    for row in rows:
        if row.key in written:
            for output in row.outputs:
                add_ref(session, output["digest"], RESULT_REF, row.key)
    return written


def shares_transaction(session: Session, jq: JobQueue) -> bool:
    """Whether ``jq`` is the embedded queue on the session's own database (so jobs can complete in its
    transaction)."""
    from medcycle.jobs.sql import SqlJobQueue

    return isinstance(jq, SqlJobQueue) and jq.engine.url == session.get_bind().engine.url


def complete_jobs(session: Session, done: Sequence[tuple[Job, dict[str, Any] | None]]) -> set[str]:
    """Complete leased jobs of the embedded queue in the caller's transaction (see
    :meth:`medcycle.jobs.sql.SqlJobQueue.complete_in`); returns the ids whose lease was lost. Check
    :func:`shares_transaction` first."""
    from medcycle.jobs.sql import SqlJobQueue

    return SqlJobQueue.complete_in(session.connection(), done)


def count(session: Session, key: str | None = None) -> int:
    from sqlalchemy import func

    query = select(func.count()).select_from(ServingResultRow)
    if key is not None:
        query = query.where(ServingResultRow.key == key)
    return int(session.scalar(query) or 0)


# -- the client's view of a job -------------------------------------------------------------------------------
def status_of(job: Job, row: ServingResultRow | None) -> JobStatus:
    if job.state is JobState.QUEUED:
        return JobStatus.QUEUED
    if job.state is JobState.RUNNING:
        return JobStatus.RUNNING
    if job.state is JobState.CANCELLED:
        return JobStatus.CANCELLED
    if job.state is JobState.SUCCEEDED and row is not None:
        return JobStatus.REFUSED if row.status == JobStatus.REFUSED.value else JobStatus.DONE
    if job.state is JobState.FAILED and (job.error or "").startswith(DEADLINE_ERROR):
        return JobStatus.EXPIRED
    return JobStatus.FAILED


def result_out(row: ServingResultRow, *, requested: str, cached: bool) -> ResultOut:
    return ResultOut(
        key=row.key, status=row.status,
        model=ModelOut(requested=requested, ref=row.model_ref, version_id=row.model_version_id,
                       weights_digest=row.weights_digest),
        task=row.task, images=row.images, cases=list(row.cases),
        outputs=[OutputOut(kind=o["kind"], digest=o["digest"], media_type=o["media_type"],
                           url=f"/v1/objects/{o['digest']}") for o in row.outputs],
        compute_ms=row.compute_ms, cached=cached, created_at=row.created_at)


def job_out(platform: Platform, job: Job, *, queue: str | None = None) -> JobOut:
    """What ``GET /v1/jobs/{id}`` answers (and webhooks send)."""
    if queue is not None and job.queue != queue:
        raise NotFound(f"job {job.id} is not an inference job", hint=f"It is in queue {job.queue!r}.")
    row = None
    key = (job.result or {}).get("result")
    if key:
        with platform.session(write=False) as session:
            row = find(session, str(key))
            if row is not None:
                session.expunge(row)
    payload = job.payload or {}
    result = None
    if row is not None:
        result = result_out(row, requested=str(payload.get("model", "")),
                            cached=bool((job.result or {}).get("cached")))
    return JobOut(id=job.id, status=status_of(job, row), model=str(payload.get("model", "")),
                  images=int(payload.get("images") or 0), attempts=job.attempts, priority=job.priority,
                  created_at=job.created_at, finished_at=job.finished_at, deadline=job.deadline,
                  error=job.error if job.state in (JobState.FAILED, JobState.DEAD) else None, result=result)
