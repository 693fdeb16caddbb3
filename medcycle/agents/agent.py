"""The agent: takes tasks from a queue one at a time and runs each through :mod:`medcycle.agents.executor`.

Queue semantics come from :mod:`medcycle.jobs` (priorities, leases, redelivery, dead letters, cancel). While a
task runs, a lease keeper renews the lease every third of it and looks for a cancel request every second;
a cancel (or a lost lease, or the agent being told to stop) stops the child. An agent killed outright takes
its child with it (``PR_SET_PDEATHSIG``); the job is handed to another agent once the lease expires, and the
fenced completion of :mod:`medcycle.jobs` lets only that agent finish it.

How each task ends:

==================  ==========================================================================
command exits 0     job ``succeeded`` with the result dict
command fails       job ``failed`` (not retried; ``medcycle jobs requeue`` retries it), result stored
timeout             as a failed command
cannot set up       job ``failed`` with the reason and hint (commit missing, diff does not apply)
store unreachable   job failed with retry (redelivered until ``job_max_attempts``, then ``dead``)
cancelled           job ``cancelled``; the child got SIGTERM, then SIGKILL after the grace period
agent stopping      job requeued at once (SIGTERM/Ctrl-C to the agent)
==================  ==========================================================================
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from medcycle.agents.executor import ExecOptions, Outcome, StopSignal, TaskOutcome, execute
from medcycle.agents.spec import TaskSpec
from medcycle.agents.submit import failure_error, record_refs
from medcycle.errors import BackendUnavailable, MedcycleError
from medcycle.jobs import processes
from medcycle.jobs.base import Job, JobCancelled, JobQueue, LeaseLost, check_queue_name
from medcycle.platform import Platform

log = logging.getLogger(__name__)
Say = Callable[[str], None]
CANCEL_POLL_S = 1.0
OUTAGE_WAIT_S = 5.0


@dataclass
class AgentStats:
    taken: int = 0
    finished: int = 0
    failed: int = 0
    cancelled: int = 0
    lost: int = 0
    requeued: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class LeaseKeeper(threading.Thread):
    """Renews ``job``'s lease and watches for a cancel or shutdown, setting ``stop`` when the task must end."""

    def __init__(self, jq: JobQueue, job: Job, lease: float, stop: StopSignal, shutdown: threading.Event) -> None:
        super().__init__(daemon=True, name=f"medcycle-lease-{job.id[:8]}")
        self.jq, self.job, self.lease, self.stop, self.shutdown = jq, job, lease, stop, shutdown
        self.done = threading.Event()

    def _beat(self) -> bool:
        try:
            self.jq.heartbeat(self.job, lease_seconds=self.lease)
        except JobCancelled:
            self.stop.set(Outcome.CANCELLED)
            return False
        except LeaseLost:
            self.stop.set(Outcome.LOST)
            return False
        except MedcycleError as exc:  # the backend hiccuped: the next beat may get through within the lease
            log.warning("heartbeat of task %s failed: %s", self.job.id, exc.message)
        return True

    def run(self) -> None:
        interval = max(self.lease / 3, 0.05)
        next_beat = time.monotonic() + interval
        while not self.done.wait(min(CANCEL_POLL_S, interval)):
            if self.shutdown.is_set():
                self.stop.set(Outcome.STOPPED)
            cancel = False
            if not self.stop.is_set():
                try:
                    cancel = self.jq.get(self.job.id).cancel_requested
                except MedcycleError:
                    cancel = False
            if cancel or time.monotonic() >= next_beat:
                if not self._beat():
                    return
                next_beat = time.monotonic() + interval


class Agent:
    """Runs tasks from ``queue`` on this machine (see the module docstring).

    Args:
        platform: the store and the queue backend.
        options: how tasks run here (work folder, environment mode, GPUs, ...).
        lease_seconds: lease per delivery (default: setting ``job_lease_seconds``).
        say: one line per task event, for the agent's console.
        beat_seconds: how often :meth:`run` writes this agent's row in the process registry
            (:mod:`medcycle.jobs.processes`: idle or busy, its current task, its GPUs).
    """

    def __init__(self, platform: Platform, queue: str, options: ExecOptions, *, lease_seconds: float | None = None,
                 wait_ms: int = 1000, say: Say | None = None, beat_seconds: float = processes.BEAT_SECONDS) -> None:
        self.platform, self.queue, self.options = platform, check_queue_name(queue), options
        self.jq = platform.jobs
        self.lease = lease_seconds or self.jq.lease_seconds
        self.wait_ms = wait_ms
        self.say = say or log.info
        self.shutdown = threading.Event()
        self.stats = AgentStats()
        self.beat_seconds = beat_seconds
        self.beacon: processes.Beacon | None = None
        self.current: Job | None = None  # the task running now (the registry's "busy")
        if not options.name or options.name == "agent":
            options.name = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def name(self) -> str:
        return self.options.name

    def run(self, *, max_tasks: int | None = None) -> AgentStats:
        """Take and run tasks until ``shutdown`` is set or ``max_tasks`` were taken."""
        self.say(f"agent {self.name} waiting on queue {self.queue!r} (lease {self.lease:g} s)")
        self.beacon = processes.Beacon(self.platform, processes.ProcessInfo(
            self.name, processes.ProcessKind.AGENT, queue=self.queue, beat_seconds=self.beat_seconds),
            self._registry_status)
        self.beacon.start()
        try:
            return self._loop(max_tasks)
        finally:
            self.beacon.close()

    def _registry_status(self) -> processes.Status:
        """What the process registry shows of this agent (called by its beacon's thread)."""
        job = self.current
        o = self.options
        details = {"gpus": o.gpus, "env_mode": str(o.env_mode), "docker": o.docker, **self.stats.to_dict()}
        if job is not None:
            details["task_name"] = str((job.payload or {}).get("name") or "")
        return processes.Status("busy" if job is not None else "idle", job.id if job is not None else None, details)

    def _loop(self, max_tasks: int | None) -> AgentStats:
        while not self.shutdown.is_set() and (max_tasks is None or self.stats.taken < max_tasks):
            try:
                jobs = self.jq.take(self.queue, self.name, max_jobs=1, wait_ms=self.wait_ms, lease_seconds=self.lease)
            except BackendUnavailable as exc:  # the queue is down: wait for it rather than exit
                self.say(f"agent {self.name}: the queue is unavailable ({exc.message}); retrying in {OUTAGE_WAIT_S:g}s")
                self.shutdown.wait(OUTAGE_WAIT_S)
                continue
            for job in jobs:
                self.stats.taken += 1
                self.current = job
                if self.beacon is not None:
                    self.beacon.poke()
                try:
                    self.run_job(job)
                finally:
                    self.current = None
                    if self.beacon is not None:
                        self.beacon.poke()
        return self.stats

    def run_job(self, job: Job) -> Outcome | None:
        """Run one leased job to its end and settle it; returns how it ended (None: could not run)."""
        try:
            spec = TaskSpec.from_payload(job.payload)
        except MedcycleError as exc:
            bad = f"{exc.message} ({exc.hint})"
            self._settle(job, lambda: self.jq.fail(job, bad, retry=False), "failed")
            return None
        self.say(f"task {job.id}: {' '.join(spec.command)} (attempt {job.attempts}, priority {job.priority})")
        stop = StopSignal()
        keeper = LeaseKeeper(self.jq, job, self.lease, stop, self.shutdown)
        keeper.start()
        try:
            outcome = execute(self.platform, spec, job.id, self.options, stop)
        except MedcycleError as exc:
            keeper.done.set()
            keeper.join()
            if stop.is_set():  # cancelled or lost while setting up: the queue already knows
                self._count(stop.reason or Outcome.LOST)
                return stop.reason
            retry = isinstance(exc, BackendUnavailable)
            message = exc.message + (f" — {exc.hint}" if exc.hint else "")
            self.say(f"task {job.id}: could not run: {message}")
            self._settle(job, lambda: self.jq.fail(job, message, retry=retry), "requeued" if retry else "failed")
            return None
        except Exception as exc:  # a bug must fail the task, never kill the agent
            keeper.done.set()
            keeper.join()
            log.exception("task %s failed inside the agent", job.id)
            bug = f"agent error: {type(exc).__name__}: {exc}"
            self._settle(job, lambda: self.jq.fail(job, bug), "requeued")
            return None
        keeper.done.set()
        keeper.join()
        self._finish(job, outcome)
        return outcome.outcome

    def _finish(self, job: Job, done: TaskOutcome) -> None:
        result = done.result
        record_refs(self.platform, job.id, done.digests)
        summary = f"exit {result.get('exit_code')}, run {result.get('run_id') or '-'}, {result.get('seconds', 0):.1f} s"
        if done.outcome is Outcome.FINISHED:
            self.say(f"task {job.id}: finished ({summary})")
            self._settle(job, lambda: self.jq.complete(job, result), "finished")
        elif done.outcome in (Outcome.FAILED, Outcome.TIMED_OUT):
            digest = self.platform.objects.put(json.dumps(result, sort_keys=True, default=str).encode()).digest
            record_refs(self.platform, job.id, [digest])
            message = failure_error(done.error or done.outcome.value, digest)
            self.say(f"task {job.id}: {done.error} ({summary})")
            self._settle(job, lambda: self.jq.fail(job, message, retry=False), "failed")
        elif done.outcome is Outcome.STOPPED:
            self.say(f"task {job.id}: stopped with the agent; requeued")
            self._settle(job, lambda: self.jq.fail(job, "the agent running it stopped", retry=True), "requeued")
        else:  # cancelled or lost: the queue settled the job already
            self.say(f"task {job.id}: {done.outcome.value} ({summary})")
            self._count(done.outcome)

    def _count(self, outcome: Outcome) -> None:
        if outcome is Outcome.CANCELLED:
            self.stats.cancelled += 1
        else:
            self.stats.lost += 1

    def _settle(self, job: Job, action: Callable[[], Job], counter: str) -> None:
        try:
            action()
        except (LeaseLost, JobCancelled) as exc:
            self.stats.lost += 1
            self.say(f"task {job.id}: not settled here: {exc.message}")
            return
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
