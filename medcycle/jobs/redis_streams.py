"""Scale-out job queue on Redis Streams consumer groups (``queue_url = redis://host:6379/0``).

Layout under the key prefix ``P`` (default ``medcycle:``; ``?key_prefix=...`` in the URL changes it)::

    P job:<id>              hash: the Job fields (payload/result JSON, times epoch ms) + its stream entry
    P q{<queue>}s:<prio>    one stream per priority in use, consumer group ``workers``; entry = {job: <id>}
    P q{<queue>}bands       sorted set of the priorities in use, taken highest first
    P q{<queue>}st:<state>  sorted set of the queue's job ids per state (score = enqueue sequence)
    P q{<queue>}all         every job id of the queue (score = enqueue sequence)
    P q{<queue>}idem        hash idempotency key -> job id
    P q{<queue>}delayed     retries waiting for ``delay_seconds`` (score = due time)
    P q{<queue>}deadlines   queued jobs with a deadline (score = deadline)
    P q{<queue>}bell        one-entry stream rung on every XADD: idle workers block on it with XREAD
    P queues, P seq         queue names; the global enqueue sequence (orders ``list``)

Every state change is one Lua script, so the job hash, the per-state sets and the stream (XADD/XACK/XDEL)
never disagree, and time is the Redis server's clock (``TIME``), not the callers'.

* ``take`` runs one script: promote due retries, fail queued jobs past their deadline, then per band
  (highest priority first) XAUTOCLAIM entries idle longer than the lease (redelivery) and XREADGROUP
  ``COUNT n`` on ``>`` (new jobs). Each entry is handed out only if the hash agrees: a claimed entry whose
  job still holds a (longer) lease goes back to its owner; cancelled, expired and exhausted jobs are
  settled and acked instead. A delivery increments ``attempts`` and writes a fresh ``token``. When the
  batch is not full the caller blocks on the bell (XREAD, at most 250 ms at a time) and tries again.
* ``heartbeat``/``complete``/``fail`` compare the token in the hash inside the script: a stale worker gets
  :class:`LeaseLost` (or :class:`JobCancelled`). Heartbeat resets the entry's idle time with
  ``XCLAIM ... JUSTID`` by the owning consumer and moves ``lease_expires_at``.
* Past ``max_attempts`` a redelivery ends the job ``dead`` (entry acked and deleted); ``requeue`` XADDs
  it again with ``attempts = 0``.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.commands.core import Script

from medcycle.errors import BackendUnavailable, ConfigError, QueueFull, UsageError
from medcycle.jobs import redis_lua as lua
from medcycle.jobs.base import (
    Job,
    JobCancelled,
    JobQueue,
    JobState,
    LeaseLost,
    QueueStats,
    check_queue_name,
    job_not_found,
)

DEFAULT_PREFIX = "medcycle:"
WAKE_SLICE_S = 0.25  # longest single block while waiting: expired leases and due retries are seen this often

def _split_url(url: str) -> tuple[str, str | None]:
    """Take ``key_prefix`` out of the URL's query (redis-py would refuse it)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "key_prefix"), None)
    rest = urlencode([(k, v) for k, v in query if k != "key_prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


def _ms_to_dt(value: str | None) -> datetime | None:
    return None if value in (None, "") else datetime.fromtimestamp(int(value or 0) / 1000, tz=UTC)


def _dt_to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        raise UsageError(
            "a job deadline must be timezone-aware", hint="Use datetime.now(UTC) + timedelta(...)."
        )
    return math.floor(value.timestamp() * 1000)


def _to_json(value: dict[str, Any], what: str) -> str:
    if not isinstance(value, dict):
        raise UsageError(f"a job {what} must be a JSON object", hint="Pass a dict of ids and parameters.")
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the job {what} is not JSON: {exc}", hint="Pass ids and plain values.") from exc


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def _job(h: dict[str, str], *, with_token: bool = False) -> Job:
    result = h.get("result")
    return Job(
        id=h["id"],
        queue=h["queue"],
        state=JobState(h["state"]),
        payload=json.loads(h["payload"]),
        priority=int(h.get("priority", 0)),
        attempts=int(h.get("attempts", 0)),
        max_attempts=int(h.get("max_attempts", 0)),
        idempotency_key=h.get("idempotency_key"),
        result=json.loads(result) if result else None,
        error=h.get("error"),
        token=h.get("token") if with_token else None,
        lease_owner=h.get("lease_owner"),
        lease_expires_at=_ms_to_dt(h.get("lease_expires_at")),
        deadline=_ms_to_dt(h.get("deadline")),
        cancel_requested=h.get("cancel_requested") == "1",
        created_at=_ms_to_dt(h.get("created_at")),
        updated_at=_ms_to_dt(h.get("updated_at")),
        finished_at=_ms_to_dt(h.get("finished_at")),
    )


class RedisJobQueue(JobQueue):
    """Job queues on Redis Streams; see the module docstring for the key layout and the algorithms.

    Args:
        url: ``redis://[:password@]host:6379/0`` (``rediss://``, ``unix://`` too); an optional
            ``key_prefix=...`` query parameter overrides ``key_prefix``.
        lease_seconds: default lease of a delivery.
        max_attempts: default deliveries before a job goes ``dead``.
        limit: queued + running jobs per queue before ``enqueue`` raises ``QueueFull``.
        key_prefix: prefix of every key (isolates deployments and tests sharing one Redis).
    """

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = 30.0,
        max_attempts: int = 5,
        limit: int = 10_000,
        key_prefix: str = DEFAULT_PREFIX,
    ) -> None:
        redis_url, url_prefix = _split_url(url)
        self.url = _redact(url)
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.limit = limit
        self.prefix = url_prefix if url_prefix is not None else key_prefix
        try:
            self._r: redis.Redis = redis.Redis.from_url(
                redis_url,
                decode_responses=True,
                socket_connect_timeout=5,
                socket_timeout=30,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise ConfigError(
                f"queue_url {self.url!r} is not a Redis URL: {exc}", hint="Use redis://host:6379/0."
            ) from exc
        scripts = {
            "enqueue": lua.LUA_ENQUEUE,
            "take": lua.LUA_TAKE,
            "heartbeat": lua.LUA_HEARTBEAT,
            "complete": lua.LUA_COMPLETE,
            "fail": lua.LUA_FAIL,
            "cancel": lua.LUA_CANCEL,
            "requeue": lua.LUA_REQUEUE,
        }
        self._scripts: dict[str, Script] = {
            name: self._r.register_script(lua.LUA_PRELUDE + body) for name, body in scripts.items()
        }

    # -- plumbing ----------------------------------------------------------------------------------
    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BackendUnavailable(
                f"Redis at {self.url} is unreachable: {exc}",
                hint="Start Redis (`redis-server`) or fix queue_url (MEDCYCLE_QUEUE_URL); "
                "run `medcycle doctor` to check.",
            ) from exc

    def _run(self, name: str, *args: str | int) -> Any:
        with self._guard():
            return self._scripts[name](keys=[], args=[self.prefix, *args])

    def _jkey(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _qkey(self, queue: str, suffix: str) -> str:
        return f"{self.prefix}q{{{queue}}}{suffix}"

    def _lease_ms(self, lease_seconds: float | None) -> int:
        lease = lease_seconds or self.lease_seconds
        if lease <= 0:
            raise UsageError("lease_seconds must be positive")
        return max(1, math.ceil(lease * 1000))

    def _answer(self, job: Job, reply: list[Any], *, with_token: bool = False) -> Job:
        """Turn a script's ``{'ok', fields}`` into a Job, or raise what the other answers mean."""
        kind = reply[0]
        if kind == "ok":
            return _job(_pairs(reply[1]), with_token=with_token)
        if kind == "missing":
            raise job_not_found(job.id)
        if kind == "cancelled" or (kind == "lost" and reply[1] == JobState.CANCELLED.value):
            raise JobCancelled(f"job {job.id} was cancelled", hint="Stop working on it.", job_id=job.id)
        self._lost(job, reply)

    @staticmethod
    def _lost(job: Job, reply: list[Any]) -> NoReturn:
        raise LeaseLost(
            f"the lease on job {job.id} was lost (now {reply[1]}, held by {reply[2] or 'nobody'})",
            hint="Another worker took the job after the lease expired; heartbeat more often than the lease.",
            job_id=job.id,
        )

    @staticmethod
    def _token(job: Job) -> str:
        if not job.token:
            raise UsageError(f"job {job.id} is not a leased job", hint="Only jobs returned by take() can be.")
        return job.token

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
        attempts = max_attempts or self.max_attempts
        if attempts < 1:
            raise UsageError("max_attempts must be at least 1")
        reply = self._run(
            "enqueue",
            queue,
            uuid.uuid4().hex,
            _to_json(payload, "payload"),
            int(priority),
            idempotency_key or "",
            attempts,
            "" if deadline is None else _dt_to_ms(deadline),
            self.limit,
        )
        if reply[0] == "full":
            raise QueueFull(
                f"queue {queue!r} is full ({reply[1]} of {self.limit} jobs waiting or running)",
                retry_after=max(1, round(self.lease_seconds / 10)),
                queue=queue,
            )
        return _job(_pairs(reply[1]))

    # -- consumer side -----------------------------------------------------------------------------
    def take(
        self,
        queue: str,
        worker: str,
        *,
        max_jobs: int = 1,
        wait_ms: int = 0,
        lease_seconds: float | None = None,
    ) -> list[Job]:
        check_queue_name(queue)
        if max_jobs < 1:
            raise UsageError("max_jobs must be at least 1")
        if not worker:
            raise UsageError("a worker name is required", hint="Pass a stable name such as host-pid.")
        lease_ms = self._lease_ms(lease_seconds)
        # An entry is reclaimed once idle for the shorter of the queue's lease and this taker's; the job's
        # own lease_expires_at then decides (a longer lease sends the entry back to its owner).
        min_idle = min(lease_ms, self._lease_ms(None))
        end = time.monotonic() + max(wait_ms, 0) / 1000
        bell = self._qkey(queue, "bell")
        taken: list[Job] = []
        while True:
            want = max_jobs - len(taken)
            tokens = [uuid.uuid4().hex for _ in range(want)]
            last, rows = self._run("take", queue, worker, want, lease_ms, min_idle, *tokens)
            taken += [_job(_pairs(row), with_token=True) for row in rows]
            remaining = end - time.monotonic()
            if len(taken) >= max_jobs or remaining <= 0:
                return taken
            block_ms = max(1, int(min(remaining, WAKE_SLICE_S) * 1000))
            with self._guard():
                self._r.xread({bell: last}, count=1, block=block_ms)

    def heartbeat(self, job: Job, *, lease_seconds: float | None = None) -> Job:
        token = self._token(job)
        reply = self._run("heartbeat", job.id, token, self._lease_ms(lease_seconds))
        return self._answer(job, reply, with_token=True)

    def complete(self, job: Job, result: dict[str, Any] | None = None) -> Job:
        token = self._token(job)
        encoded = "" if result is None else _to_json(result, "result")
        return self._answer(job, self._run("complete", job.id, token, encoded))

    def fail(self, job: Job, error: str, *, retry: bool = True, delay_seconds: float = 0.0) -> Job:
        token = self._token(job)
        delay_ms = max(0, math.ceil(delay_seconds * 1000))
        return self._answer(job, self._run("fail", job.id, token, str(error), int(retry), delay_ms))

    # -- management --------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        reply = self._run("cancel", job_id)
        if reply[0] == "missing":
            raise job_not_found(job_id)
        return _job(_pairs(reply[1]))

    def requeue(self, job_id: str) -> Job:
        reply = self._run("requeue", job_id)
        if reply[0] == "missing":
            raise job_not_found(job_id)
        if reply[0] == "state":
            raise UsageError(
                f"job {job_id} is {reply[1]}; only dead, failed or cancelled jobs can be requeued",
                hint="Wait for it to finish, or cancel it first.",
            )
        return _job(_pairs(reply[1]))

    def get(self, job_id: str) -> Job:
        with self._guard():
            raw = self._r.hgetall(self._jkey(job_id))
        fields = {str(k): str(v) for k, v in raw.items()}
        if not fields:
            raise job_not_found(job_id)
        return _job(fields)

    def _load(self, ids: list[str]) -> list[Job]:
        with self._guard():
            pipe = self._r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self._jkey(job_id))
            rows: list[dict[str, str]] = pipe.execute()
        return [_job(row) for row in rows if row]

    def active_count(self, queue: str) -> int:
        with self._guard():
            pipe = self._r.pipeline(transaction=False)
            pipe.zcard(self._qkey(queue, f"st:{JobState.QUEUED.value}"))
            pipe.zcard(self._qkey(queue, f"st:{JobState.RUNNING.value}"))
            queued, running = pipe.execute()
        return int(queued) + int(running)

    def stats(self, queue: str) -> QueueStats:
        states = list(JobState)
        with self._guard():
            pipe = self._r.pipeline(transaction=False)
            for st in states:
                pipe.zcard(self._qkey(queue, f"st:{st.value}"))
            pipe.zrange(self._qkey(queue, f"st:{JobState.QUEUED.value}"), 0, 0)  # lowest sequence = oldest
            pipe.time()
            *counts, first, (now_s, now_us) = pipe.execute()
            created = self._r.hget(self._jkey(str(first[0])), "created_at") if first else None
        found = {st.value: int(n) for st, n in zip(states, counts, strict=True) if n}
        age = None
        if created is not None:
            age = max(0.0, (int(now_s) * 1000 + int(now_us) // 1000 - int(created)) / 1000)
        return QueueStats(queue=queue, counts=found, limit=self.limit, oldest_queued_seconds=age)

    def queues(self) -> list[str]:
        with self._guard():
            names = self._r.smembers(f"{self.prefix}queues")
        return sorted(str(name) for name in names)

    def ping(self) -> None:
        with self._guard():
            self._r.ping()

    def close(self) -> None:
        self._r.close()

    def list(self, queue: str | None = None, state: JobState | None = None, limit: int = 100) -> list[Job]:
        limit = max(1, min(limit, 10_000))
        suffix = f"st:{JobState(state).value}" if state else "all"
        names = [queue] if queue else self.queues()
        scored: list[tuple[str, float]] = []
        with self._guard():
            for name in names:
                found: Any = self._r.zrevrange(self._qkey(name, suffix), 0, limit - 1, withscores=True)
                scored += [(str(job_id), float(score)) for job_id, score in found]
        scored.sort(key=lambda item: item[1], reverse=True)
        return self._load([job_id for job_id, _ in scored[:limit]])
