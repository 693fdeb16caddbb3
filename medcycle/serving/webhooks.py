"""Webhook callbacks, durable: each is a job on the webhook queue, delivered at least once with backoff.

A worker enqueues the delivery (idempotency key = the inference job's id, so a redelivered job does not
call twice) once the job's outcome is stored and before it completes the job; the sender posts only once the
inference job has finished, so a receiver that reads the job back sees it done (while the job still runs —
e.g. redelivered after its worker died — the delivery is retried with the backoff below).
The body is the job as ``GET /v1/jobs/{id}`` answers it, signed with
``X-Medcycle-Signature: sha256=<HMAC of the body under the platform's secret key>``. A non-2xx answer or a
network error is retried after ``webhook_backoff_s`` doubling per attempt (at most 5 minutes); after
``webhook_attempts`` deliveries the webhook job is dead-lettered (``medcycle jobs list`` shows it,
``medcycle jobs requeue`` resends it).

Jobs that end outside a worker's batch — past their deadline before a worker took them, cancelled,
dead-lettered after their leases ran out or their attempts — would get none from a worker: each sender looks
for such jobs every few seconds (:meth:`WebhookSender.sweep`) and queues their webhooks too, so every job that
asked for one gets it whatever its outcome.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from medcycle.errors import MedcycleError, NotFound
from medcycle.jobs.base import Job, JobCancelled, JobState, LeaseLost
from medcycle.jobs.worker import default_worker_name
from medcycle.serving.config import ServingSettings

if TYPE_CHECKING:
    import httpx

    from medcycle.platform import Platform

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 300.0
SIGNATURE_HEADER = "X-Medcycle-Signature"
#: How often a sender looks for jobs the queue ended without a worker, how many of each state it reads (newest
#: first), and how long ago such a job may have ended to still get its webhook.
SWEEP_S = 5.0
SWEEP_LIMIT = 200
SWEEP_LOOKBACK_S = 3600.0
#: The outcomes a job may reach outside a worker's batch (expired in the queue, cancelled, dead-lettered).
ENDED_BY_QUEUE = (JobState.FAILED, JobState.DEAD, JobState.CANCELLED)


def enqueue(platform: Platform, cfg: ServingSettings, job: Job) -> None:
    """Queue the webhook of inference ``job`` (when it asked for one); idempotent per job."""
    url = (job.payload or {}).get("webhook")
    if not url:
        return
    platform.jobs.enqueue(cfg.webhook_queue, {"job": job.id, "url": url}, idempotency_key=f"webhook:{job.id}",
                          max_attempts=cfg.webhook_attempts)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Delivers queued webhooks until stopped (one thread per worker process is plenty)."""

    def __init__(self, platform: Platform, cfg: ServingSettings, *, name: str | None = None,
                 client: httpx.Client | None = None) -> None:
        import httpx

        self.platform, self.cfg = platform, cfg
        self.name = name or f"webhooks:{default_worker_name()}"
        self.client = client or httpx.Client(timeout=cfg.webhook_timeout_s, trust_env=False, follow_redirects=False)
        self.sent = 0
        self.failed = 0
        self.sweep_s = SWEEP_S
        self._next_sweep = 0.0
        self._swept: set[str] = set()

    def sweep(self) -> int:
        """Queue the webhooks of inference jobs that ended without a worker (see the module); idempotent per job
        (a job whose webhook is queued or sent already is not sent again). Returns how many it queued (or found
        queued)."""
        from medcycle.serving.results import DEADLINE_ERROR
        from medcycle.store.base import utcnow

        since = utcnow() - timedelta(seconds=SWEEP_LOOKBACK_S)
        seen = 0
        for state in ENDED_BY_QUEUE:
            for job in self.platform.jobs.list(self.cfg.queue, state, limit=SWEEP_LIMIT):
                if job.id in self._swept:
                    continue
                # a failed job's webhook was queued by its worker, unless the queue failed it (its deadline)
                by_queue = job.state is not JobState.FAILED or (job.error or "").startswith(DEADLINE_ERROR)
                if by_queue and (job.payload or {}).get("webhook") and (job.finished_at is None
                                                                        or job.finished_at >= since):
                    enqueue(self.platform, self.cfg, job)
                    seen += 1
                self._swept.add(job.id)
        if len(self._swept) > 100_000:  # bounded; a job looked at again only finds its webhook queued already
            self._swept.clear()
        return seen

    def run_once(self, wait_ms: int = 200) -> int:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.sweep_s
            self.sweep()
        # One delivery at a time: a sender that took 16 and posted them one by one to a slow receiver let the
        # later ones' leases run out, and another sender (every worker runs one) took and posted them again.
        jobs = self.platform.jobs.take(self.cfg.webhook_queue, self.name, max_jobs=1, wait_ms=wait_ms)
        for job in jobs:
            self._deliver(job)
        return len(jobs)

    def _lease_s(self) -> float:
        """A lease that outlasts one POST: httpx's timeout bounds each of connect, write and read."""
        return 4 * self.cfg.webhook_timeout_s + 5.0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except MedcycleError as exc:  # backend hiccup: keep the thread alive, try again
                log.warning("webhook sender: %s", exc.message)
                stop.wait(1.0)
            except Exception:  # one bad delivery must not end every later one: log it, keep the thread alive
                log.exception("webhook sender: unexpected error")
                stop.wait(1.0)

    def _backoff(self, attempts: int) -> float:
        return float(min(MAX_BACKOFF_S, self.cfg.webhook_backoff_s * 2.0 ** max(0, attempts - 1)))

    def _deliver(self, hook: Job) -> None:
        import httpx

        from medcycle.serving.results import job_out

        jq = self.platform.jobs
        try:
            try:
                target = jq.get(str(hook.payload["job"]))
            except NotFound:
                jq.fail(hook, "the inference job no longer exists", retry=False)
                return
            if not target.state.finished:
                jq.fail(hook, "inference job not finished yet", delay_seconds=self._backoff(hook.attempts))
                return
            body = json.dumps(job_out(self.platform, target).model_dump(mode="json"), sort_keys=True).encode()
            secret = self.platform.settings.secret_key.get_secret_value()
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, body),
                       "User-Agent": "medcycle-serving"}
            hook = jq.heartbeat(hook, lease_seconds=self._lease_s())  # LeaseLost: another sender has it now
            try:
                response = self.client.post(str(hook.payload["url"]), content=body, headers=headers)
                ok, why = response.is_success, f"HTTP {response.status_code}"
            except httpx.InvalidURL:  # no retry can deliver it (a URL queued before intake checked it so)
                log.warning("webhook for job %s has a URL that cannot be requested; failed without retry", target.id)
                jq.fail(hook, "the webhook URL cannot be requested", retry=False)
                return
            except httpx.HTTPError as exc:
                ok, why = False, type(exc).__name__
            if ok:
                jq.complete(hook, {"status": why})
                self.sent += 1
            else:
                self.failed += 1
                log.warning("webhook for job %s failed (%s), attempt %d", target.id, why, hook.attempts)
                jq.fail(hook, f"webhook answered {why}", delay_seconds=self._backoff(hook.attempts))
        except (LeaseLost, JobCancelled) as exc:
            log.warning("webhook job %s: %s", hook.id, exc.message)

    def close(self) -> None:
        self.client.close()
