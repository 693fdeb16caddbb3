"""The inference worker: dynamic batches from the durable queue → OOD gate → model → results, idempotently.

One loop per process (``medcycle serve-worker``), scaled by running more processes; the API never computes.
For each batch (:mod:`medcycle.serving.batcher`), under leases renewed by a heartbeat thread
(:class:`medcycle.jobs.worker.Heartbeat`):

1. as soon as the batch is taken, its jobs' inputs are fetched from the object store and decoded in a
   thread pool (with the log's input statistics) — while the previous batch is still computing: ``run``
   takes the next batch in the background as it works on the current one (at most one batch ahead);
2. jobs past their deadline are dropped before any compute (status ``expired``);
3. each job's model reference is resolved *now* (a rollback applies from the next batch; a job in flight
   finishes on the version it started with) and that version's :class:`~.predictor.Predictor` is loaded
   once and cached;
4. the result keys (input digests + version + parameters) are looked up in one query: a stored result
   completes its job without compute — which is also what makes a redelivered job cheap;
5. the other jobs' cases are predicted together and their output files stored as objects;
6. webhooks are queued; then **one transaction** writes the batch's result rows (``ON CONFLICT DO
   NOTHING``), its prediction-log records and — with the embedded queue on the same database — completes
   its jobs, fenced by their delivery tokens (a lost lease is counted, never raised). With a Redis queue,
   or an ``after_store`` hook, the jobs complete one by one after that transaction commits.

Bad input found here (an image that does not decode, a volume sent to a 2D-only path) fails the job without
retry. After an unexpected error the batch's jobs are tried again one by one in the same hand, so one job that
trips a library fails alone; a job that fails alone too (or a whole batch, when the store or database is down)
is redelivered after :func:`retry_delay` — 1, 2, 4, 8 … s, at most a minute — until its attempts run out, and
then dead-lettered. A store or database outage of a quarter of a minute is ridden out with the default 5
attempts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from medcycle.errors import MedcycleError, NotFound, UsageError
from medcycle.jobs import processes
from medcycle.jobs.base import Job, JobCancelled, JobQueue, LeaseLost
from medcycle.jobs.worker import Heartbeat, default_worker_name
from medcycle.serving import cpu, results, webhooks
from medcycle.serving.batcher import Batch, DynamicBatcher
from medcycle.serving.case_outputs import case_outputs
from medcycle.serving.config import ServingSettings, load_serving_settings
from medcycle.serving.decode import decode_case
from medcycle.serving.metrics import ServingMetrics
from medcycle.serving.predictor import Prediction, Predictor, Prepared
from medcycle.serving.predlog import LogEntry, PredictionLog, input_statistics, log_predictions
from medcycle.serving.schemas import JobStatus, OutputKind, Params
from medcycle.serving.scratch import new_tag, remove_tagged, scratch_dir
from medcycle.serving.tables import ServingResultRow
from medcycle.serving.worker_state import Decoded, InHand, Outcome, ResultToWrite, ServingStats
from medcycle.store.base import utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from medcycle.platform import Platform

log = logging.getLogger(__name__)

#: Called with a batch's jobs once their results are stored and webhooks queued, before the jobs complete.
AfterStore = Callable[[Sequence[Job]], None]

RETRY_BASE_S = 1.0  # the first redelivery's delay after an unexpected failure; doubled for each delivery after
RETRY_MAX_S = 60.0


def retry_delay(attempts: int) -> float:
    """Seconds before a job that failed unexpectedly on its ``attempts``-th delivery is delivered again."""
    return min(RETRY_BASE_S * 2.0 ** max(attempts - 1, 0), RETRY_MAX_S)


class ServingWorker:
    """Takes inference jobs in dynamic batches and stores their results (see the module docstring).

    Args:
        platform: the platform (queue, object store, metadata store).
        settings: serving settings (default: loaded for the platform's home); the keyword arguments below
            override them.
        max_batch_images / max_delay_ms: the batcher's bounds.
        lease_seconds: lease per delivery (default: the platform's job lease); heartbeats every third of it.
        after_store: a hook called after results are stored, before jobs complete (tests, tracing); with it,
            jobs complete after the results' transaction instead of in it.
        prediction_log: where the batch's records go (default :func:`~.predlog.log_predictions`; None: nowhere).
        decode_threads: threads fetching and decoding inputs (default: the CPU count, 2 to 8).
        prefetch: whether :meth:`run` takes the next batch while the current one computes.
        beat_seconds: how often :meth:`run` writes this worker's row in the process registry
            (:mod:`medcycle.jobs.processes`: idle or busy, jobs in hand, device, loaded versions).
    """

    def __init__(self, platform: Platform, *, settings: ServingSettings | None = None,
                 max_batch_images: int | None = None, max_delay_ms: int | None = None,
                 lease_seconds: float | None = None, idle_wait_ms: int | None = None, device: str | None = None,
                 name: str | None = None, metrics: ServingMetrics | None = None, after_store: AfterStore | None = None,
                 prediction_log: PredictionLog | None = log_predictions, decode_threads: int | None = None,
                 prefetch: bool = True, beat_seconds: float = processes.BEAT_SECONDS) -> None:
        cfg = settings or load_serving_settings(platform.settings)
        self.cfg = cfg.model_copy(update={k: v for k, v in {
            "max_batch_images": max_batch_images, "max_delay_ms": max_delay_ms, "idle_wait_ms": idle_wait_ms,
            "device": device}.items() if v is not None})
        self.platform = platform
        self.jq: JobQueue = platform.jobs
        self.lease = lease_seconds or self.jq.lease_seconds
        if self.cfg.max_delay_ms / 1000 >= self.lease / 2:
            raise UsageError(f"max_delay_ms {self.cfg.max_delay_ms} is not well below the lease ({self.lease:g} s)",
                             hint="Keep the batching delay under half the lease (milliseconds, typically).")
        self.name = name or default_worker_name()
        self.metrics = metrics or ServingMetrics()
        self.batcher = DynamicBatcher(self.jq, self.cfg.queue, self.name, max_images=self.cfg.max_batch_images,
                                      max_delay_ms=self.cfg.max_delay_ms, idle_wait_ms=self.cfg.idle_wait_ms,
                                      lease_seconds=self.lease, metrics=self.metrics)
        self.after_store = after_store
        self.prediction_log = prediction_log
        self.prefetch = prefetch
        self.stats = ServingStats()
        self._predictors: OrderedDict[str, Predictor] = OrderedDict()
        self._loading = threading.RLock()
        threads = decode_threads or min(8, max(2, os.cpu_count() or 2))
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="medcycle-decode")
        self.beat_seconds = beat_seconds
        self.beacon: processes.Beacon | None = None
        self._in_hand: list[str] = []  # ids of the jobs of the batch being processed (the registry's "busy")

    # -- models --------------------------------------------------------------------------------------------
    def predictor(self, model_ref: str) -> Predictor:
        """The predictor of the version ``model_ref`` names now (loaded once per version, LRU-cached)."""
        from medcycle.models.registry import resolve

        with self.platform.session(write=False) as session:
            version_id = resolve(session, model_ref).id
        with self._loading:
            found = self._predictors.get(version_id)
            if found is None:
                name = model_ref.partition("@")[0].strip()
                found = Predictor.load(self.platform, version_id_ref(self.platform, version_id),
                                       header_rules=self.cfg.rules_for(name), device=self.cfg.device,
                                       max_batch=self.cfg.max_batch_images, forward_batch=self.cfg.forward_batch)
                found.warm()  # before its first batch: allocations, and the pass size measured (forward_batch 0)
                self._predictors[version_id] = found
                while len(self._predictors) > self.cfg.predictor_cache:
                    self._predictors.popitem(last=False)
                self._freeze_heap()
            else:
                self._predictors.move_to_end(version_id)
            return found

    def _freeze_heap(self) -> None:
        """In a worker's own process (one that applied its CPU share), with ``freeze_heap``: the objects alive now —
        modules, the loaded models — out of the garbage collector's full scans (:func:`.cpu.freeze_heap`)."""
        if self.cfg.freeze_heap and cpu.applied():
            frozen = cpu.freeze_heap()
            log.info("serving worker %s: %d objects frozen out of the collector's scans", self.name, frozen)

    # -- the loop ------------------------------------------------------------------------------------------
    def take(self) -> InHand | None:
        """The next batch, leased and heartbeated, its inputs already decoding and being made ready for the
        version each job's model names now (None: the queue stayed empty)."""
        batch = self.batcher.next_batch()
        if batch is None:
            return None
        beat = Heartbeat(self.jq, batch.jobs, max(self.lease / 3, 0.05), self.lease,
                         name="medcycle-serving-heartbeat")
        beat.start()
        now = utcnow()
        live = [job for job in batch.jobs if job.deadline is None or job.deadline > now]
        predictors: dict[str, Predictor | None] = {}
        for ref in {str((job.payload or {}).get("model", "")) for job in live}:
            try:
                predictors[ref] = self.predictor(ref)
            except MedcycleError:  # the batch's processing fails these jobs with the reason
                predictors[ref] = None
        decoding = {job.id: self._pool.submit(self._decode, job, predictors.get(str(job.payload.get("model", ""))))
                    for job in live}
        return InHand(batch, beat, decoding)

    def run_once(self) -> int:
        """Take and process at most one batch; returns how many jobs it held."""
        hand = self.take()
        if hand is None:
            return 0
        self.process(hand)
        return len(hand.batch.jobs)

    def run(self, stop: threading.Event, *, max_jobs: int | None = None) -> ServingStats:
        """Loop until ``stop`` is set (or ``max_jobs`` were taken). With ``prefetch``, the next batch is taken
        (and its inputs decoded) while the current one computes; a batch taken is always processed."""
        self.beacon = processes.Beacon(self.platform, processes.ProcessInfo(
            self.name, processes.ProcessKind.SERVING_WORKER, queue=self.cfg.queue, beat_seconds=self.beat_seconds),
            self._registry_status)
        self.beacon.start()
        try:
            return self._loop(stop, max_jobs)
        finally:
            self.beacon.close()

    def _registry_status(self) -> processes.Status:
        """What the process registry shows of this worker (called by its beacon's thread)."""
        jobs = list(self._in_hand)
        loaded = tuple(self._predictors.values())  # one C-level copy under the GIL
        devices = sorted({str(p.device) for p in loaded})
        details = {"device": ", ".join(devices) or self.cfg.device or "auto", "models": sorted(p.ref for p in loaded),
                   "jobs": len(jobs), "batches": self.stats.batches, "jobs_done": self.stats.jobs}
        return processes.Status("busy" if jobs else "idle", jobs[0] if jobs else None, details)

    def _loop(self, stop: threading.Event, max_jobs: int | None) -> ServingStats:
        taken = 0
        ahead: Future[InHand | None] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="medcycle-serving-take") as taker:
            while True:
                if ahead is not None:
                    hand, ahead = ahead.result(), None
                elif stop.is_set() or (max_jobs is not None and taken >= max_jobs):
                    break
                else:
                    hand = self._take_or_wait(stop)
                if hand is None:
                    continue
                taken += len(hand.batch.jobs)
                if self.prefetch and not stop.is_set() and (max_jobs is None or taken < max_jobs):
                    ahead = taker.submit(self._take_or_wait, stop)
                try:
                    self.process(hand)
                except MedcycleError as exc:  # the queue or database is unreachable: wait, then go on
                    log.warning("serving worker %s: %s", self.name, exc.message)
                    stop.wait(1.0)
        return self.stats

    def _take_or_wait(self, stop: threading.Event) -> InHand | None:
        try:
            return self.take()
        except MedcycleError as exc:  # the queue or database is unreachable: wait, then try again
            log.warning("serving worker %s: %s", self.name, exc.message)
            stop.wait(1.0)
            return None

    def _decode(self, job: Job, predictor: Predictor | None = None) -> Decoded:
        """A job's cases fetched and decoded (in the pool), made ready for ``predictor``, with what the log
        keeps of the first (statistics, header fields)."""
        from medcycle.monitoring.describe import header_fields

        payload = job.payload
        folder, tag = scratch_dir(), new_tag()
        try:
            cases = [decode_case(self.platform.objects, payload, i, folder, tag) for i in range(len(payload["cases"]))]
        finally:
            remove_tagged(folder, tag)
        prepared = None if predictor is None else [predictor.prepare(c.model_input()) for c in cases]
        logged = bool(cases) and self.prediction_log is not None
        return Decoded(cases, prepared, input_statistics(cases[0]) if logged else {},
                        header_fields(cases[0].header) if logged else {})

    def process(self, hand: InHand | Batch) -> None:
        """Compute, store and settle one batch (a :class:`Batch` not taken by :meth:`take` is taken over)."""
        if isinstance(hand, Batch):
            beat = Heartbeat(self.jq, hand.jobs, max(self.lease / 3, 0.05), self.lease,
                             name="medcycle-serving-heartbeat")
            beat.start()
            hand = InHand(hand, beat, {})
        batch = hand.batch
        self._in_hand = [job.id for job in batch.jobs]
        if self.beacon is not None:
            self.beacon.poke()
        try:
            self._process(hand)
        finally:
            self._in_hand = []
            if self.beacon is not None:
                self.beacon.poke()

    def _process(self, hand: InHand) -> None:
        batch = hand.batch
        s = self.stats
        s.batches += 1
        s.jobs += len(batch.jobs)
        s.batch_images.append(batch.images)
        s.reasons.append(batch.reason.value)
        outcomes: dict[str, Outcome] = {}
        try:
            try:
                self._handle(batch.jobs, hand, outcomes)
            except Exception:  # an unexpected failure: each job alone, so that one bad job fails alone
                if len(batch.jobs) == 1:
                    raise
                log.exception("batch of %d jobs failed; each job is tried alone", len(batch.jobs))
                outcomes.clear()
                hand.rows.clear()
                hand.logs.clear()
                for job in batch.jobs:
                    self._handle_alone(job, hand, outcomes)
        except Exception as exc:  # never the worker: the batch's jobs are retried (with backoff)
            log.exception("batch of %d jobs failed", len(batch.jobs))
            for job in batch.jobs:
                outcomes.setdefault(job.id, Outcome("retry", "retried", error=f"{type(exc).__name__}: {exc}"[:500]))
        finally:
            for future in hand.decoding.values():
                future.cancel()
            hand.beat.halt()  # the leases last well past the store; a beat racing it would only see a finished job
        settled = self._finish(hand, outcomes)
        for job in batch.jobs:
            if job.id not in settled:
                self._settle(job, outcomes.get(job.id), hand.dropped)

    def _handle_alone(self, job: Job, hand: InHand, outcomes: dict[str, Outcome]) -> None:
        """:meth:`_handle` of one job of a failed batch: what it adds to the batch's rows and log entries is kept
        only when it succeeds; an unexpected failure retries this job only."""
        rows, logs = len(hand.rows), len(hand.logs)
        try:
            self._handle([job], hand, outcomes)
        except Exception as exc:  # this job is retried; its batch-mates are not held back
            log.exception("job %s failed on its own", job.id)
            del hand.rows[rows:], hand.logs[logs:]
            outcomes[job.id] = Outcome("retry", "retried", error=f"{type(exc).__name__}: {exc}"[:500])

    def _finish(self, hand: InHand, outcomes: dict[str, Outcome]) -> set[str]:
        """Queue webhooks, then store the batch in one transaction; returns the jobs settled in it."""
        jobs = hand.batch.jobs
        for job in jobs:
            outcome = outcomes.get(job.id)
            if outcome is not None and outcome.action != "retry" and job.id not in hand.dropped:
                try:
                    webhooks.enqueue(self.platform, self.cfg, job)
                except MedcycleError as exc:
                    log.warning("webhook of job %s not queued: %s", job.id, exc.message)
        complete = [(job, outcomes[job.id].result) for job in jobs
                    if job.id in outcomes and outcomes[job.id].action == "complete" and job.id not in hand.dropped]
        settled: set[str] = set()
        try:
            settled = self._store(hand, outcomes, complete if self.after_store is None else [])
        except Exception as exc:  # results not stored: the jobs go back to the queue
            log.exception("results of a batch of %d jobs not stored", len(jobs))
            error = f"{type(exc).__name__}: {exc}"[:500]
            for job in jobs:
                outcomes[job.id] = Outcome("retry", "retried", error=error)
            return set()
        if self.after_store is not None:
            self.after_store(jobs)
        return settled

    def _store(self, hand: InHand, outcomes: dict[str, Outcome],
               complete: Sequence[tuple[Job, dict[str, Any] | None]]) -> set[str]:
        """One transaction: result rows (``ON CONFLICT DO NOTHING``), log records (computed ones only for rows
        this call wrote) and — when the queue shares the database — the jobs' completions; returns the jobs
        settled (completed or found lost) in it."""
        rows = [r for r in hand.rows if getattr(outcomes.get(r.job.id), "action", None) == "complete"]
        if not rows and not hand.logs and not complete:
            return set()
        settled: set[str] = set()
        with self.platform.session() as session:
            keys = results.save_many(session, [r.row for r in rows])
            written = {r.job.id for r in rows if r.row.key in keys}
            entries = [r.entry for r in rows if r.job.id in written] + [
                e for e in hand.logs if getattr(outcomes.get(e.job.id), "action", "retry") != "retry"]
            self._log_in(session, entries)
            if complete and results.shares_transaction(session, self.jq):
                lost = results.complete_jobs(session, complete)
                for job, _ in complete:
                    settled.add(job.id)
                    if job.id in lost:
                        self.stats.lost += 1
                        self.metrics.jobs.labels("lost").inc()
                        log.warning("job %s not settled: its lease was lost", job.id)
                    else:
                        self._count(job, outcomes[job.id])
        return settled

    def _settle(self, job: Job, outcome: Outcome | None, dropped: set[str]) -> None:
        if outcome is None or job.id in dropped:
            self.stats.lost += 1
            self.metrics.jobs.labels("cancelled" if outcome is None else "lost").inc()
            return
        try:
            if outcome.action == "complete":
                self.jq.complete(job, outcome.result)
            else:
                self.jq.fail(job, outcome.error or "failed", retry=outcome.action == "retry",
                             delay_seconds=retry_delay(job.attempts) if outcome.action == "retry" else 0.0)
        except (LeaseLost, JobCancelled) as exc:
            self.stats.lost += 1
            self.metrics.jobs.labels("lost").inc()
            log.warning("job %s not settled: %s", job.id, exc.message)
            return
        self._count(job, outcome)

    def _count(self, job: Job, outcome: Outcome) -> None:
        label = outcome.label
        setattr(self.stats, label, getattr(self.stats, label) + 1)
        self.metrics.jobs.labels(label).inc()
        if outcome.action == "complete" and job.created_at is not None:
            model = str((outcome.result or {}).get("model", ""))
            self.metrics.latency.labels(model).observe(max(0.0, (utcnow() - job.created_at).total_seconds()))

    # -- one batch -----------------------------------------------------------------------------------------
    def _handle(self, jobs: Sequence[Job], hand: InHand, outcomes: dict[str, Outcome]) -> None:
        now = utcnow()
        groups: dict[str, list[Job]] = {}
        for job in jobs:
            if job.deadline is not None and job.deadline <= now:
                outcomes[job.id] = Outcome("fail", "expired", error=results.DEADLINE_ERROR)
                self._log_failure(hand, job, str((job.payload or {}).get("model", "")), "timeout", None)
                continue
            groups.setdefault(str((job.payload or {}).get("model", "")), []).append(job)
        for ref, group in groups.items():
            self._run_group(ref, group, hand, outcomes)

    def _fail_all(self, jobs: Sequence[Job], outcomes: dict[str, Outcome], exc: MedcycleError) -> None:
        for job in jobs:
            outcomes[job.id] = Outcome("fail", "failed", error=exc.message[:500])

    def _run_group(self, ref: str, jobs: Sequence[Job], hand: InHand, outcomes: dict[str, Outcome]) -> None:
        try:
            predictor = self.predictor(ref)
        except (NotFound, UsageError) as exc:  # no such model or version, or it cannot be served
            self._fail_all(jobs, outcomes, exc)
            return
        params: dict[str, Params] = {}
        keys: dict[str, str] = {}
        for job in jobs:
            try:
                params[job.id] = Params.parse((job.payload or {}).get("params"))
            except UsageError as exc:
                outcomes[job.id] = Outcome("fail", "failed", error=exc.message)
                continue
            keys[job.id] = results.result_key(list(job.payload["inputs"]), predictor.version.id, params[job.id])
        with self.platform.session(write=False) as session:
            stored = results.find_many(session, keys.values())
            cached = {k: (row.status, list(row.cases)) for k, row in stored.items()}
        todo: list[Job] = []
        twins: list[tuple[Job, Job]] = []  # (job, the job in this batch computing the same key)
        first: dict[str, Job] = {}
        for job in jobs:
            if job.id not in keys:
                continue
            key = keys[job.id]
            if key in cached:
                status, cases = cached[key]
                outcomes[job.id] = Outcome("complete", "cached", {"result": key, "cached": True,
                                                                   "model": predictor.ref, "worker": self.name})
                hand.logs.append(_entry(job, predictor.ref, status, {"cases": cases}))
            elif key in first:
                twins.append((job, first[key]))
            else:
                first[key] = job
                todo.append(job)
        if todo:
            self._compute(predictor, todo, keys, params, hand, outcomes)
        computed = {r.job.id: r for r in hand.rows}
        for job, twin in twins:  # the same input, version and parameters twice in one batch: computed once
            done = outcomes.get(twin.id)
            if done is not None and done.action == "complete":
                outcomes[job.id] = Outcome("complete", "cached", {**(done.result or {}), "cached": True})
                row = computed.get(twin.id)
                status, cases = (row.row.status, list(row.row.cases)) if row is not None else ("done", [])
                hand.logs.append(_entry(job, predictor.ref, status, {"cases": cases}))
            elif done is not None:
                outcomes[job.id] = Outcome(done.action, done.label, done.result, done.error)

    def _decoded(self, hand: InHand, job: Job) -> Decoded:
        future = hand.decoding.get(job.id)
        return future.result() if future is not None else self._decode(job)

    def _compute(self, predictor: Predictor, jobs: Sequence[Job], keys: dict[str, str], params: dict[str, Params],
                 hand: InHand, outcomes: dict[str, Outcome]) -> None:
        started = time.perf_counter()
        decoded: dict[str, Decoded] = {}
        for job in jobs:
            if job.id in hand.dropped:
                continue
            try:
                decoded[job.id] = self._decoded(hand, job)
            except UsageError as exc:
                outcomes[job.id] = Outcome("fail", "failed", error=exc.message[:500])
                self._log_failure(hand, job, predictor.ref, "error", exc)
        ready = [job for job in jobs if job.id in decoded and job.id not in hand.dropped]
        inputs = [c.model_input(params[job.id]) for job in ready
                  for c in decoded[job.id].cases]
        prepared: list[Prepared | None] = []
        for job in ready:
            prepared.extend(decoded[job.id].prepared or [None] * len(decoded[job.id].cases))
        predictions = predictor.predict(inputs, prepared) if inputs else []
        elapsed = time.perf_counter() - started
        total = sum(c.images for job in ready for c in decoded[job.id].cases) or 1
        position = 0
        for job in ready:
            cases = decoded[job.id].cases
            preds = predictions[position:position + len(cases)]
            position += len(cases)
            share = elapsed * sum(c.images for c in cases) / total
            row = self._result_row(job, predictor, keys[job.id], params[job.id], decoded[job.id], preds, share)
            hand.rows.append(row)
            outcomes[job.id] = Outcome("complete", "refused" if row.row.status == JobStatus.REFUSED else "computed",
                                        {"result": row.row.key, "cached": False, "model": predictor.ref,
                                         "worker": self.name})
            self.stats.images += row.row.images
        self.metrics.compute.labels(predictor.ref).observe(time.perf_counter() - started)

    def _result_row(self, job: Job, predictor: Predictor, key: str, params: Params, decoded: Decoded,
                    preds: Sequence[Prediction], compute_s: float) -> ResultToWrite:
        """The job's result row (its output files stored as objects) and its prediction-log entry."""
        cases = decoded.cases
        summaries: list[dict[str, Any]] = []
        stored: list[dict[str, Any]] = []
        mask_digest = None
        for case, pred in zip(cases, preds, strict=True):
            summary = {"index": case.index, "kind": case.kind, **pred.to_dict(predictor.classes)}
            files, problems = case_outputs(case, pred, predictor, key, params)
            for f in files:
                info = self.platform.objects.put(f.data)
                entry = {"case": case.index, "kind": f.kind.value, "digest": info.digest,
                         "media_type": f.media_type, "size": info.size}
                stored.append(entry)
                if f.kind is OutputKind.NIFTI and mask_digest is None:
                    mask_digest = info.digest
            if problems:
                summary["output_problems"] = problems
            summaries.append(summary)
        status = JobStatus.REFUSED if preds and all(p.status == "refused" for p in preds) else JobStatus.DONE
        version = predictor.version
        row = ServingResultRow(
            key=key, status=status.value, model=version.model, model_version_id=version.id, model_ref=version.ref,
            weights_digest=version.weights_digest, task=predictor.task,
            inputs_digest=results.inputs_digest(list(job.payload["inputs"])), params=params.model_dump(mode="json"),
            images=sum(c.images for c in cases), cases=summaries, outputs=stored,
            compute_ms=round(compute_s * 1000, 3), job_id=job.id, created_at=utcnow())
        latency = (utcnow() - job.created_at).total_seconds() * 1000 if job.created_at else None
        first = next((i for i, p in enumerate(preds) if p.status == "ok"), 0)
        embedding = preds[first].embedding if preds else None
        details: dict[str, Any] = {"cases": summaries, "latency_ms": latency, "embedding": embedding,
                                   "mask_digest": mask_digest}
        if cases and first == 0:
            details.update(input_stats=decoded.stats, header=decoded.header)
        elif cases:
            details["decoded"] = cases[first]
        return ResultToWrite(job, row, _entry(job, predictor.ref, row.status, details))

    # -- the prediction log --------------------------------------------------------------------------------
    def _log_in(self, session: Session, entries: Sequence[LogEntry]) -> None:
        """The batch's records, in one savepoint; when the log refuses one, each goes alone (a record the log
        refuses must not lose the results)."""
        if self.prediction_log is None or not entries:
            return
        try:
            with session.begin_nested():
                self.prediction_log(session, entries)
            return
        except MedcycleError:
            pass
        for entry in entries:
            try:
                with session.begin_nested():
                    self.prediction_log(session, [entry])
            except MedcycleError as exc:
                log.warning("prediction log refused the record of job %s: %s", entry.job.id, exc.message)

    def _log_failure(self, hand: InHand, job: Job, model_ref: str, outcome: str, exc: MedcycleError | None) -> None:
        if self.prediction_log is None:
            return
        if "@v" not in model_ref:
            try:  # a job that never reached a version logs under the version its reference names now
                from medcycle.models.registry import resolve

                with self.platform.session(write=False) as session:
                    row = resolve(session, model_ref)
                    model_ref = f"{row.model}@v{row.version}"
            except MedcycleError:
                return
        details: dict[str, Any] = {}
        if exc is not None:
            details = {"error_class": type(exc).__name__, "error_message": exc.message}
        hand.logs.append(LogEntry(job, model_ref, outcome, details))

    def close(self) -> None:
        self._predictors.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _entry(job: Job, model_ref: str, status: str, details: dict[str, Any]) -> LogEntry:
    """A log entry; the log's outcome of a stored status (done → ok)."""
    return LogEntry(job, model_ref, {"done": "ok", "refused": "refused"}.get(status, status), details)


def version_id_ref(platform: Platform, version_id: str) -> str:
    """``NAME@vN`` of a version id (what the predictor loads: pinned, whatever aliases do)."""
    from medcycle.models.tables import ModelVersionRow

    with platform.session(write=False) as session:
        row = session.get(ModelVersionRow, version_id)
        if row is None:
            raise NotFound(f"model version {version_id} is gone", hint="See `medcycle model list`.")
        return f"{row.model}@v{row.version}"
