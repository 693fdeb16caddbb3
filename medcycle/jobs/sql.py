"""Embedded job queue: a table in the metadata store.

SQLite: every state change runs in a ``BEGIN IMMEDIATE`` transaction (one writer at a time, WAL lets
readers go on). PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` lets any number of workers take jobs
concurrently without ever holding the same one; enqueue takes a per-queue advisory lock so the bound
is exact. Idle workers poll with a cheap read before asking for the write lock.

On SQLite a take reads only the rows it hands out, however many jobs wait or have ended in the queue: queued
jobs one priority level at a time (the highest level left, found from the ``(queue, state, priority, seq)``
index, then that level's oldest jobs in index order), and expired leases through the ``(state,
lease_expires_at)`` index; the two are merged by priority, then age. On PostgreSQL it stays one statement, so
that ``SKIP LOCKED`` locks only the rows it hands out; its planner reads the runnable rows through the state
indexes (an OR of bitmap scans) and sorts them, never the queue's ended jobs.
"""

from __future__ import annotations

import builtins
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, bindparam, func, or_, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import OperationalError

from medcycle.errors import BackendUnavailable, QueueFull, UsageError
from medcycle.jobs.base import (
    ACTIVE_STATES,
    Job,
    JobCancelled,
    JobQueue,
    JobState,
    LeaseLost,
    QueueStats,
    check_queue_name,
    job_not_found,
)
from medcycle.jobs.tables import JobRow
from medcycle.store.base import new_id, utcnow
from medcycle.store.engine import IMMEDIATE, is_sqlite

T: Table = JobRow.__table__  # type: ignore[assignment]
POLL_MIN_S = 0.02
POLL_MAX_S = 0.25
# Built once: constructing a statement costs more than SQLite running it (enqueue is on every request's path).
_BY_KEY = select(T).where(T.c.queue == bindparam("q"), T.c.idempotency_key == bindparam("k"))
_ACTIVE = (select(func.count()).select_from(T)
           .where(T.c.queue == bindparam("q"), T.c.state.in_([s.value for s in ACTIVE_STATES])))
_INSERT = T.insert()
# the take's statements (see the module docstring); each reads rows in an index's order
_QUEUED, _RUNNING = JobState.QUEUED.value, JobState.RUNNING.value
_TOP_LEVEL = select(func.max(T.c.priority)).where(T.c.queue == bindparam("q"), T.c.state == _QUEUED)
_NEXT_LEVEL = _TOP_LEVEL.where(T.c.priority < bindparam("below"))
_LEVEL = (select(T).where(T.c.queue == bindparam("q"), T.c.state == _QUEUED, T.c.priority == bindparam("p"),
                          T.c.available_at <= bindparam("now", type_=T.c.available_at.type))
          .order_by(T.c.seq).limit(bindparam("n")))
_EXPIRED = (select(T).where(T.c.state == _RUNNING, T.c.lease_expires_at < bindparam("now", type_=T.c.available_at.type),
                            T.c.queue == bindparam("q"))
            .order_by(T.c.priority.desc(), T.c.seq).limit(bindparam("n")))
# PostgreSQL: one statement, so that FOR UPDATE SKIP LOCKED locks only the rows handed out (its planner reads the
# two states through their indexes, an OR of bitmap scans, and sorts the runnable rows: ended jobs are not read)
_RUNNABLE_LOCKED = (select(T).where(T.c.queue == bindparam("q"), or_(
    and_(T.c.state == _QUEUED, T.c.available_at <= bindparam("now", type_=T.c.available_at.type)),
    and_(T.c.state == _RUNNING, T.c.lease_expires_at < bindparam("now", type_=T.c.available_at.type))))
    .order_by(T.c.priority.desc(), T.c.seq).limit(bindparam("n")).with_for_update(skip_locked=True))
_ANY_QUEUED = select(T.c.seq).where(T.c.queue == bindparam("q"), T.c.state == _QUEUED,
                                    T.c.available_at <= bindparam("now", type_=T.c.available_at.type)).limit(1)
_ANY_EXPIRED = select(T.c.seq).where(T.c.state == _RUNNING,
                                     T.c.lease_expires_at < bindparam("now", type_=T.c.available_at.type),
                                     T.c.queue == bindparam("q")).limit(1)
_NOW = bindparam("b_now", type_=T.c.finished_at.type)
_COMPLETE_FENCED = (update(T)
                    .where(T.c.id == bindparam("b_id"), T.c.token == bindparam("b_token"),
                           T.c.state == JobState.RUNNING.value)
                    .values(state=JobState.SUCCEEDED.value, result=bindparam("b_result", type_=T.c.result.type),
                            error=None, token=None, finished_at=_NOW, updated_at=_NOW))


def _row_to_job(row: Mapping[str, Any] | RowMapping, *, with_token: bool = False) -> Job:
    return Job(
        id=row["id"],
        queue=row["queue"],
        state=JobState(row["state"]),
        payload=row["payload"] or {},
        priority=row["priority"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        idempotency_key=row["idempotency_key"],
        result=row["result"],
        error=row["error"],
        token=row["token"] if with_token else None,
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        deadline=row["deadline"],
        cancel_requested=bool(row["cancel_requested"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )


class SqlJobQueue(JobQueue):
    def __init__(self, engine: Engine, *, lease_seconds: float = 30.0, max_attempts: int = 5, limit: int = 10_000):
        self.engine = engine
        self.url = "embedded"
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.limit = limit
        self._sqlite = is_sqlite(engine)
        # SQLite has one writer. Threads of this process queue on a lock (fair, no busy polling);
        # other processes wait in SQLite's busy handler (busy_timeout).
        self._writer = threading.Lock() if self._sqlite else None

    # -- transactions ------------------------------------------------------------------------------
    @contextmanager
    def _write(self, queue: str | None = None) -> Iterator[Connection]:
        with self._writer or nullcontext(), self._write_unlocked(queue) as conn:
            yield conn

    @contextmanager
    def _write_unlocked(self, queue: str | None) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                if self._sqlite:
                    conn = conn.execution_options(**{IMMEDIATE: True})
                with conn.begin():
                    if queue is not None and not self._sqlite:
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(queue.encode())})
                    yield conn
        except OperationalError as exc:
            raise BackendUnavailable(
                f"the job table could not be reached: {exc.orig}", hint="Run `medcycle doctor` to check the database."
            ) from exc

    def _read(self) -> Connection:
        return self.engine.connect()

    # -- producer side -----------------------------------------------------------------------------
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
        check_queue_name(queue)
        if not isinstance(payload, dict):
            raise UsageError("a job payload must be a JSON object", hint="Pass a dict of ids and parameters.")
        now = utcnow()
        with self._write(queue) as conn:
            if idempotency_key is not None:
                existing = conn.execute(_BY_KEY, {"q": queue, "k": idempotency_key}).mappings().first()
                if existing is not None:
                    return _row_to_job(existing)
            active = conn.execute(_ACTIVE, {"q": queue}).scalar_one()
            if active >= self.limit:
                raise QueueFull(
                    f"queue {queue!r} is full ({active} of {self.limit} jobs waiting or running)",
                    retry_after=max(1, round(self.lease_seconds / 10)),
                    queue=queue,
                )
            values = {
                "id": new_id(),
                "queue": queue,
                "state": JobState.QUEUED.value,
                "priority": int(priority),
                "payload": payload,
                "idempotency_key": idempotency_key,
                "attempts": 0,
                "max_attempts": max_attempts or self.max_attempts,
                "available_at": now,
                "deadline": deadline,
                "cancel_requested": False,
                "created_at": now,
                "updated_at": now,
            }
            conn.execute(_INSERT, values)
        # the row as written (no read back): a new job has no result, token, lease or end yet
        unset = {"result": None, "error": None, "token": None, "lease_owner": None, "lease_expires_at": None,
                 "finished_at": None}
        written = {"payload": dict(payload), "deadline": deadline.astimezone(UTC) if deadline is not None else None}
        return _row_to_job({**values, **unset, **written})

    # -- consumer side -----------------------------------------------------------------------------
    def _any_runnable(self, queue: str) -> bool:
        values = {"q": queue, "now": utcnow()}
        with self._read() as conn:
            return (conn.execute(_ANY_QUEUED, values).first() is not None
                    or conn.execute(_ANY_EXPIRED, values).first() is not None)

    def _candidates(self, conn: Connection, queue: str, n: int, now: datetime) -> builtins.list[RowMapping]:
        """The ``n`` runnable jobs (queued and available, or leased with the lease expired) a take hands out first:
        highest priority, then oldest (locked against other takers on PostgreSQL, skipping rows they hold)."""
        if not self._sqlite:
            return list(conn.execute(_RUNNABLE_LOCKED, {"q": queue, "now": now, "n": n}).mappings())
        rows = list(conn.execute(_EXPIRED, {"q": queue, "now": now, "n": n}).mappings())
        level = conn.execute(_TOP_LEVEL, {"q": queue}).scalar()
        queued: builtins.list[RowMapping] = []
        while level is not None:
            queued += conn.execute(_LEVEL, {"q": queue, "p": level, "now": now, "n": n - len(queued)}).mappings()
            if len(queued) >= n:
                break
            level = conn.execute(_NEXT_LEVEL, {"q": queue, "below": level}).scalar()
        # both lists are in (priority desc, seq) order: the first n of the two together
        return sorted(rows + queued, key=lambda r: (-r["priority"], r["seq"]))[:n]

    def _take_once(self, queue: str, worker: str, n: int, lease: float) -> builtins.list[Job]:
        taken: builtins.list[Job] = []
        with self._write() as conn:
            while len(taken) < n:
                now = utcnow()
                rows = self._candidates(conn, queue, n - len(taken), now)
                if not rows:
                    break
                for row in rows:
                    job = self._deliver(conn, row, worker, now, lease)
                    if job is not None:
                        taken.append(job)
        return taken

    def _deliver(self, conn: Connection, row: RowMapping, worker: str, now: datetime, lease: float) -> Job | None:
        """Hand ``row`` to ``worker``, or end it (cancelled, past deadline, out of attempts)."""
        end: tuple[JobState, str | None] | None = None
        deadline = row["deadline"]
        if row["cancel_requested"]:
            end = (JobState.CANCELLED, "cancelled")
        elif deadline is not None and deadline < now:
            end = (JobState.FAILED, "deadline exceeded")
        elif row["attempts"] >= row["max_attempts"]:
            end = (
                JobState.DEAD,
                f"lease expired after {row['attempts']} deliveries (last worker: {row['lease_owner']})",
            )
        if end is not None:
            conn.execute(
                update(T)
                .where(T.c.seq == row["seq"])
                .values(state=end[0].value, error=end[1], token=None, updated_at=now, finished_at=now)
            )
            return None
        token = uuid.uuid4().hex
        values = {
            "state": JobState.RUNNING.value,
            "attempts": row["attempts"] + 1,
            "token": token,
            "lease_owner": worker,
            "lease_expires_at": now + timedelta(seconds=lease),
            "updated_at": now,
        }
        conn.execute(update(T).where(T.c.seq == row["seq"]).values(**values))
        return _row_to_job({**row, **values}, with_token=True)

    def take(
        self,
        queue: str,
        worker: str,
        *,
        max_jobs: int = 1,
        wait_ms: int = 0,
        lease_seconds: float | None = None,
    ) -> builtins.list[Job]:
        check_queue_name(queue)
        if max_jobs < 1:
            raise UsageError("max_jobs must be at least 1")
        lease = lease_seconds or self.lease_seconds
        deadline = time.monotonic() + max(wait_ms, 0) / 1000
        taken: builtins.list[Job] = []
        pause = POLL_MIN_S
        while True:
            if self._any_runnable(queue):
                taken += self._take_once(queue, worker, max_jobs - len(taken), lease)
                pause = POLL_MIN_S
            remaining = deadline - time.monotonic()
            if len(taken) >= max_jobs or remaining <= 0:
                return taken
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, POLL_MAX_S)

    def _owned(self, job: Job) -> Any:
        if not job.token:
            raise UsageError(f"job {job.id} is not a leased job", hint="Only a job returned by take() can be updated.")
        return and_(T.c.id == job.id, T.c.token == job.token, T.c.state == JobState.RUNNING.value)

    def _lost(self, conn: Connection, job: Job) -> LeaseLost | JobCancelled:
        row = conn.execute(select(T).where(T.c.id == job.id)).mappings().first()
        if row is None:
            raise job_not_found(job.id)
        if row["state"] == JobState.CANCELLED.value:
            return JobCancelled(f"job {job.id} was cancelled", hint="Stop working on it; do not retry.", job_id=job.id)
        return LeaseLost(
            f"the lease on job {job.id} was lost (now {row['state']}, held by {row['lease_owner']})",
            hint="Another worker took the job after the lease expired; heartbeat more often than the lease.",
            job_id=job.id,
        )

    def heartbeat(self, job: Job, *, lease_seconds: float | None = None) -> Job:
        now = utcnow()
        expires = now + timedelta(seconds=lease_seconds or self.lease_seconds)
        cancelled = False
        with self._write() as conn:
            row = conn.execute(select(T).where(self._owned(job))).mappings().first()
            if row is None:
                raise self._lost(conn, job)
            if row["cancel_requested"]:
                # Settle the job as cancelled and commit before telling the worker.
                conn.execute(
                    update(T)
                    .where(T.c.seq == row["seq"])
                    .values(
                        state=JobState.CANCELLED.value, error="cancelled", token=None, updated_at=now, finished_at=now
                    )
                )
                cancelled = True
            else:
                conn.execute(update(T).where(T.c.seq == row["seq"]).values(lease_expires_at=expires, updated_at=now))
        if cancelled:
            raise JobCancelled(f"job {job.id} was cancelled", hint="Stop working on it.", job_id=job.id)
        job.lease_expires_at = expires
        return job

    def _finish(self, job: Job, **values: Any) -> Job:
        now = utcnow()
        with self._write() as conn:
            done = conn.execute(update(T).where(self._owned(job)).values(updated_at=now, **values))
            if done.rowcount != 1:
                raise self._lost(conn, job)
            row = conn.execute(select(T).where(T.c.id == job.id)).mappings().one()
            return _row_to_job(row)

    def complete(self, job: Job, result: dict[str, Any] | None = None) -> Job:
        return self._finish(
            job, state=JobState.SUCCEEDED.value, result=result, error=None, token=None, finished_at=utcnow()
        )

    @staticmethod
    def complete_in(conn: Connection, done: Sequence[tuple[Job, dict[str, Any] | None]]) -> set[str]:
        """Complete leased jobs in the caller's transaction on ``conn`` (the same database: a worker stores
        results and completes their jobs in one commit), each fenced by its delivery token as :meth:`complete`
        is; returns the ids whose lease was lost (the job went to another worker, was cancelled or finished) —
        those are left as they are. Completed jobs are updated in place."""
        now = utcnow()
        wanted = {job.id: (job, result) for job, result in done}
        if not wanted:
            return set()
        query = select(T.c.id, T.c.token, T.c.state).where(T.c.id.in_(sorted(wanted)))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        held = {r.id for r in conn.execute(query)
                if r.state == JobState.RUNNING.value and r.token and r.token == wanted[r.id][0].token}
        if held:
            conn.execute(_COMPLETE_FENCED, [{"b_id": i, "b_token": wanted[i][0].token, "b_result": wanted[i][1],
                                             "b_now": now} for i in held])
            for i in held:
                job = wanted[i][0]
                job.state, job.result, job.token, job.finished_at = JobState.SUCCEEDED, wanted[i][1], None, now
        return set(wanted) - held

    def fail(self, job: Job, error: str, *, retry: bool = True, delay_seconds: float = 0.0) -> Job:
        now = utcnow()
        if retry and job.attempts < job.max_attempts:
            return self._finish(
                job,
                state=JobState.QUEUED.value,
                error=error,
                token=None,
                lease_owner=None,
                lease_expires_at=None,
                available_at=now + timedelta(seconds=max(delay_seconds, 0.0)),
            )
        state = JobState.DEAD if retry else JobState.FAILED
        return self._finish(job, state=state.value, error=error, token=None, finished_at=now)

    # -- management --------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        now = utcnow()
        with self._write() as conn:
            row = conn.execute(select(T).where(T.c.id == job_id)).mappings().first()
            if row is None:
                raise job_not_found(job_id)
            state = JobState(row["state"])
            if state == JobState.QUEUED:
                conn.execute(
                    update(T)
                    .where(T.c.id == job_id)
                    .values(
                        state=JobState.CANCELLED.value,
                        cancel_requested=True,
                        error="cancelled",
                        updated_at=now,
                        finished_at=now,
                    )
                )
            elif state == JobState.RUNNING:
                conn.execute(update(T).where(T.c.id == job_id).values(cancel_requested=True, updated_at=now))
            row = conn.execute(select(T).where(T.c.id == job_id)).mappings().one()
            return _row_to_job(row)

    def requeue(self, job_id: str) -> Job:
        now = utcnow()
        with self._write() as conn:
            row = conn.execute(select(T).where(T.c.id == job_id)).mappings().first()
            if row is None:
                raise job_not_found(job_id)
            if row["state"] not in {JobState.DEAD.value, JobState.FAILED.value, JobState.CANCELLED.value}:
                raise UsageError(
                    f"job {job_id} is {row['state']}; only dead, failed or cancelled jobs can be requeued",
                    hint="Wait for it to finish, or cancel it first.",
                )
            conn.execute(
                update(T)
                .where(T.c.id == job_id)
                .values(
                    state=JobState.QUEUED.value,
                    attempts=0,
                    token=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    cancel_requested=False,
                    error=None,
                    result=None,
                    available_at=now,
                    updated_at=now,
                    finished_at=None,
                )
            )
            return _row_to_job(conn.execute(select(T).where(T.c.id == job_id)).mappings().one())

    def get(self, job_id: str) -> Job:
        with self._read() as conn:
            row = conn.execute(select(T).where(T.c.id == job_id)).mappings().first()
        if row is None:
            raise job_not_found(job_id)
        return _row_to_job(row)

    def list(self, queue: str | None = None, state: JobState | None = None, limit: int = 100) -> builtins.list[Job]:
        query = select(T).order_by(T.c.seq.desc()).limit(max(1, min(limit, 10_000)))
        if queue:
            query = query.where(T.c.queue == queue)
        if state:
            query = query.where(T.c.state == JobState(state).value)
        with self._read() as conn:
            return [_row_to_job(r) for r in conn.execute(query).mappings()]

    def active_count(self, queue: str) -> int:
        with self._read() as conn:
            return int(conn.execute(
                select(func.count()).select_from(T)
                .where(T.c.queue == queue, T.c.state.in_([s.value for s in ACTIVE_STATES]))).scalar_one())

    def stats(self, queue: str) -> QueueStats:
        with self._read() as conn:
            rows = conn.execute(select(T.c.state, func.count()).where(T.c.queue == queue).group_by(T.c.state)).all()
            oldest = conn.scalar(select(func.min(T.c.created_at)).where(
                T.c.queue == queue, T.c.state == JobState.QUEUED.value))
        age = None
        if oldest is not None:
            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
            age = max(0.0, (utcnow() - oldest).total_seconds())
        return QueueStats(queue=queue, counts={s: int(n) for s, n in rows}, limit=self.limit,
                          oldest_queued_seconds=age)

    def queues(self) -> builtins.list[str]:
        with self._read() as conn:
            return sorted(r[0] for r in conn.execute(select(T.c.queue).distinct()))

    def ping(self) -> None:
        try:
            with self._read() as conn:
                conn.execute(select(func.count()).select_from(T).limit(1))
        except OperationalError as exc:
            raise BackendUnavailable(
                f"the embedded job queue is unavailable: {exc.orig}",
                hint="Run `medcycle init` to create the tables, or check database_url.",
            ) from exc
