"""The inference worker: dynamic batches from the durable queue → OOD gate → model → results, idempotently.

One loop per process (``medcycle serve-worker``), scaled by running more processes; the API never computes.
For each batch (:mod:`medcycle.serving.batcher`), under leases renewed by a heartbeat thread:

1. jobs past their deadline are dropped before any compute (status ``expired``);
2. each job's model reference is resolved *now* (a rollback applies from the next batch; a job in flight
   finishes on the version it started with) and that version's :class:`~.predictor.Predictor` is loaded
   once and cached;
3. the result key (input digests + version + parameters) is looked up: a stored result completes the job
   without compute — which is also what makes a redelivered job (its worker killed mid-batch) cheap;
4. the other jobs' cases are decoded and predicted together, outputs stored as objects, and the result row
   written with ``ON CONFLICT DO NOTHING`` together with the prediction-log record in one transaction;
5. webhooks are queued, then jobs completed with fenced tokens (a lost lease is counted, never raised).

Bad input found here (an image that does not decode, a volume sent to a 2D-only path) fails the job without
retry; an unexpected error fails the batch's jobs *with* retry, so they are redelivered until their attempts
run out and then dead-lettered.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcycle.errors import MedcycleError, NotFound, UsageError
from medcycle.jobs.base import Job, JobCancelled, JobQueue, LeaseLost
from medcycle.jobs.worker import default_worker_name
from medcycle.serving import outputs as out
from medcycle.serving import results, webhooks
from medcycle.serving.batcher import Batch, DynamicBatcher
from medcycle.serving.config import ServingSettings, load_serving_settings
from medcycle.serving.decode import DecodedCase, decode_case
from medcycle.serving.metrics import ServingMetrics
from medcycle.serving.predictor import CaseInput, Prediction, Predictor
from medcycle.serving.predlog import PredictionLog, log_prediction
from medcycle.serving.schemas import JobStatus, OutputKind, Params
from medcycle.serving.tables import ServingResultRow
from medcycle.store.base import utcnow

if TYPE_CHECKING:
    from medcycle.platform import Platform

log = logging.getLogger(__name__)

#: Called with a batch's jobs once their results are stored and webhooks queued, before the jobs complete.
AfterStore = Callable[[Sequence[Job]], None]


@dataclass
class ServingStats:
    batches: int = 0
    jobs: int = 0
    computed: int = 0
    cached: int = 0
    refused: int = 0
    expired: int = 0
    failed: int = 0
    retried: int = 0
    lost: int = 0
    images: int = 0
    batch_images: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


@dataclass
class _Outcome:
    action: str  # complete | fail | retry
    label: str  # the metric outcome
    result: dict[str, Any] | None = None
    error: str | None = None


class _Heartbeat(threading.Thread):
    """Renews the leases of the jobs in hand until stopped; a lost or cancelled job is marked dropped."""

    def __init__(self, jq: JobQueue, jobs: Sequence[Job], interval: float, lease: float) -> None:
        super().__init__(daemon=True, name="medcycle-serving-heartbeat")
        self.jq, self.jobs, self.interval, self.lease = jq, list(jobs), interval, lease
        self.stop = threading.Event()
        self.dropped: set[str] = set()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            for job in self.jobs:
                if job.id in self.dropped:
                    continue
                try:
                    self.jq.heartbeat(job, lease_seconds=self.lease)
                except (LeaseLost, JobCancelled) as exc:
                    log.warning("job %s: %s", job.id, exc.message)
                    self.dropped.add(job.id)
                except MedcycleError as exc:  # backend hiccup: try again next beat
                    log.warning("heartbeat for job %s failed: %s", job.id, exc.message)


class ServingWorker:
    """Takes inference jobs in dynamic batches and stores their results (see the module docstring).

    Args:
        platform: the platform (queue, object store, metadata store).
        settings: serving settings (default: loaded for the platform's home); the keyword arguments below
            override them.
        max_batch_images / max_delay_ms: the batcher's bounds.
        lease_seconds: lease per delivery (default: the platform's job lease); heartbeats every third of it.
        after_store: a hook called after results are stored, before jobs complete (tests, tracing).
        prediction_log: where each job's record goes (default :func:`~.predlog.log_prediction`; None: nowhere).
    """

    def __init__(self, platform: Platform, *, settings: ServingSettings | None = None,
                 max_batch_images: int | None = None, max_delay_ms: int | None = None,
                 lease_seconds: float | None = None, idle_wait_ms: int | None = None, device: str | None = None,
                 name: str | None = None, metrics: ServingMetrics | None = None, after_store: AfterStore | None = None,
                 prediction_log: PredictionLog | None = log_prediction) -> None:
        cfg = settings or load_serving_settings(platform.settings)
        self.cfg = cfg.model_copy(update={k: v for k, v in {
            "max_batch_images": max_batch_images, "max_delay_ms": max_delay_ms, "idle_wait_ms": idle_wait_ms,
            "device": device}.items() if v is not None})
        self.platform = platform
        self.jq = platform.jobs
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
        self.stats = ServingStats()
        self._predictors: OrderedDict[str, Predictor] = OrderedDict()

    # -- models --------------------------------------------------------------------------------------------
    def predictor(self, model_ref: str) -> Predictor:
        """The predictor of the version ``model_ref`` names now (loaded once per version, LRU-cached)."""
        from medcycle.models.registry import resolve

        with self.platform.session(write=False) as session:
            version_id = resolve(session, model_ref).id
        found = self._predictors.get(version_id)
        if found is None:
            name = model_ref.partition("@")[0].strip()
            found = Predictor.load(self.platform, version_id_ref(self.platform, version_id),
                                   header_rules=self.cfg.rules_for(name), device=self.cfg.device,
                                   max_batch=self.cfg.max_batch_images)
            self._predictors[version_id] = found
            while len(self._predictors) > self.cfg.predictor_cache:
                self._predictors.popitem(last=False)
        else:
            self._predictors.move_to_end(version_id)
        return found

    # -- the loop ------------------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Take and process at most one batch; returns how many jobs it held."""
        batch = self.batcher.next_batch()
        if batch is None:
            return 0
        self.process(batch)
        return len(batch.jobs)

    def run(self, stop: threading.Event, *, max_jobs: int | None = None) -> ServingStats:
        """Loop until ``stop`` is set (or ``max_jobs`` were taken)."""
        taken = 0
        while not stop.is_set() and (max_jobs is None or taken < max_jobs):
            try:
                taken += self.run_once()
            except MedcycleError as exc:  # the queue or database is unreachable: wait, then try again
                log.warning("serving worker %s: %s", self.name, exc.message)
                stop.wait(1.0)
        return self.stats

    def process(self, batch: Batch) -> None:
        s = self.stats
        s.batches += 1
        s.jobs += len(batch.jobs)
        s.batch_images.append(batch.images)
        s.reasons.append(batch.reason.value)
        beat = _Heartbeat(self.jq, batch.jobs, max(self.lease / 3, 0.05), self.lease)
        beat.start()
        outcomes: dict[str, _Outcome] = {}
        try:
            self._handle(batch.jobs, beat, outcomes)
        except Exception as exc:  # an unexpected failure fails its batch (retried), never the worker
            log.exception("batch of %d jobs failed", len(batch.jobs))
            for job in batch.jobs:
                outcomes.setdefault(job.id, _Outcome("retry", "retried", error=f"{type(exc).__name__}: {exc}"[:500]))
        finally:
            beat.stop.set()
            beat.join()
        for job in batch.jobs:
            if job.id not in outcomes:  # cancelled while decoding: nothing to settle
                continue
            if outcomes[job.id].action != "retry" and job.id not in beat.dropped:
                try:
                    webhooks.enqueue(self.platform, self.cfg, job)
                except MedcycleError as exc:
                    log.warning("webhook of job %s not queued: %s", job.id, exc.message)
        if self.after_store is not None:
            self.after_store(batch.jobs)
        for job in batch.jobs:
            self._settle(job, outcomes.get(job.id), beat.dropped)

    def _settle(self, job: Job, outcome: _Outcome | None, dropped: set[str]) -> None:
        if outcome is None or job.id in dropped:
            self.stats.lost += 1
            self.metrics.jobs.labels("cancelled" if outcome is None else "lost").inc()
            return
        try:
            if outcome.action == "complete":
                self.jq.complete(job, outcome.result)
            else:
                self.jq.fail(job, outcome.error or "failed", retry=outcome.action == "retry",
                             delay_seconds=0.5 if outcome.action == "retry" else 0.0)
        except (LeaseLost, JobCancelled) as exc:
            self.stats.lost += 1
            self.metrics.jobs.labels("lost").inc()
            log.warning("job %s not settled: %s", job.id, exc.message)
            return
        label = outcome.label
        setattr(self.stats, label, getattr(self.stats, label) + 1)
        self.metrics.jobs.labels(label).inc()
        if outcome.action == "complete" and job.created_at is not None:
            model = str((outcome.result or {}).get("model", ""))
            self.metrics.latency.labels(model).observe(max(0.0, (utcnow() - job.created_at).total_seconds()))

    # -- one batch -----------------------------------------------------------------------------------------
    def _handle(self, jobs: Sequence[Job], beat: _Heartbeat, outcomes: dict[str, _Outcome]) -> None:
        now = utcnow()
        groups: dict[str, list[Job]] = {}
        for job in jobs:
            if job.deadline is not None and job.deadline <= now:
                outcomes[job.id] = _Outcome("fail", "expired", error=results.DEADLINE_ERROR)
                self._log_failure(job, str((job.payload or {}).get("model", "")), "timeout", None)
                continue
            groups.setdefault(str((job.payload or {}).get("model", "")), []).append(job)
        for ref, group in groups.items():
            self._run_group(ref, group, beat, outcomes)

    def _fail_all(self, jobs: Sequence[Job], outcomes: dict[str, _Outcome], exc: MedcycleError) -> None:
        for job in jobs:
            outcomes[job.id] = _Outcome("fail", "failed", error=exc.message[:500])

    def _run_group(self, ref: str, jobs: Sequence[Job], beat: _Heartbeat, outcomes: dict[str, _Outcome]) -> None:
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
                outcomes[job.id] = _Outcome("fail", "failed", error=exc.message)
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
                outcomes[job.id] = _Outcome("complete", "cached", {"result": key, "cached": True,
                                                                   "model": predictor.ref})
                self._log(job, predictor.ref, status, {"cases": cases})
            elif key in first:
                twins.append((job, first[key]))
            else:
                first[key] = job
                todo.append(job)
        if todo:
            self._compute(predictor, todo, keys, params, beat, outcomes)
        for job, twin in twins:  # the same input, version and parameters twice in one batch: computed once
            done = outcomes.get(twin.id)
            if done is not None and done.action == "complete":
                outcomes[job.id] = _Outcome("complete", "cached", {**(done.result or {}), "cached": True})
                with self.platform.session(write=False) as session:
                    row = results.find(session, keys[job.id])
                    summary = (row.status, list(row.cases)) if row is not None else ("done", [])
                self._log(job, predictor.ref, summary[0], {"cases": summary[1]})
            elif done is not None:
                outcomes[job.id] = _Outcome(done.action, done.label, done.result, done.error)

    def _compute(self, predictor: Predictor, jobs: Sequence[Job], keys: dict[str, str], params: dict[str, Params],
                 beat: _Heartbeat, outcomes: dict[str, _Outcome]) -> None:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="medcycle-serving-") as tmp:
            decoded: dict[str, list[DecodedCase]] = {}
            for job in jobs:
                if job.id in beat.dropped:
                    continue
                try:
                    decoded[job.id] = [decode_case(self.platform.objects, job.payload, i, Path(tmp) / job.id)
                                       for i in range(len(job.payload["cases"]))]
                except UsageError as exc:
                    outcomes[job.id] = _Outcome("fail", "failed", error=exc.message[:500])
                    self._log_failure(job, predictor.ref, "error", exc)
            ready = [job for job in jobs if job.id in decoded and job.id not in beat.dropped]
            inputs = [CaseInput(c.pixels, c.header, c.spacing, params[job.id]) for job in ready
                      for c in decoded[job.id]]
            predictions = predictor.predict(inputs) if inputs else []
            elapsed = time.perf_counter() - started
            total = sum(c.images for job in ready for c in decoded[job.id]) or 1
            position = 0
            rows: list[tuple[Job, ServingResultRow, dict[str, Any]]] = []
            for job in ready:
                cases = decoded[job.id]
                preds = predictions[position:position + len(cases)]
                position += len(cases)
                share = elapsed * sum(c.images for c in cases) / total
                rows.append(self._result_row(job, predictor, keys[job.id], params[job.id], cases, preds, share))
            self._store(predictor, rows)  # one transaction for the batch's results and log records
            for job, row, _ in rows:
                outcomes[job.id] = _Outcome("complete", "refused" if row.status == JobStatus.REFUSED else "computed",
                                            {"result": row.key, "cached": False, "model": predictor.ref})
                self.stats.images += row.images
        self.metrics.compute.labels(predictor.ref).observe(time.perf_counter() - started)

    def _result_row(self, job: Job, predictor: Predictor, key: str, params: Params, cases: Sequence[DecodedCase],
                    preds: Sequence[Prediction], compute_s: float
                    ) -> tuple[Job, ServingResultRow, dict[str, Any]]:
        """The job's result row (its output files stored as objects) and what the prediction log needs."""
        summaries: list[dict[str, Any]] = []
        stored: list[dict[str, Any]] = []
        mask_digest = None
        for case, pred in zip(cases, preds, strict=True):
            summary = {"index": case.index, "kind": case.kind, **pred.to_dict(predictor.classes)}
            files, problems = self._outputs(case, pred, predictor, key, params)
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
        return job, row, {"cases": summaries, "latency_ms": latency, "decoded": cases[0] if cases else None,
                          "mask_digest": mask_digest}

    def _store(self, predictor: Predictor, rows: Sequence[tuple[Job, ServingResultRow, dict[str, Any]]]) -> None:
        """Write result rows (``ON CONFLICT DO NOTHING``) and, for rows this call wrote, their log records."""
        if not rows:
            return
        with self.platform.session() as session:
            for job, row, details in rows:
                if results.save(session, row):
                    self._log_in(session, job, predictor.ref, row.status, details)

    # -- outputs -------------------------------------------------------------------------------------------
    def _outputs(self, case: DecodedCase, pred: Prediction, predictor: Predictor, key: str, params: Params
                 ) -> tuple[list[out.Output], list[str]]:
        if pred.status != "ok":
            return [], []
        version = predictor.version
        ref = version.ref
        files: list[out.Output] = []
        problems: list[str] = []
        finding = pred.finding or {}
        image = finding.get("image")
        if pred.mask is not None:
            found = ", ".join(finding.get("classes") or []) or "nothing found"
            caption = f"{found} ({finding.get('components', 0)} components) | {ref}"
        else:
            caption = f"{finding.get('class')} {float(finding.get('score') or 0):.2f} | {ref}"
        case_key = f"{key}:{case.index}"
        try:
            if pred.mask is not None and params.wants(OutputKind.NIFTI):
                files.append(out.Output(OutputKind.NIFTI, out.nifti_mask(pred.mask, case.affine, case.spacing)))
            rgb = None
            if params.wants(OutputKind.PNG) or (case.datasets and params.wants(OutputKind.SC)):
                rgb = out.overlay_rgb(case.pixels, pred.mask, caption, image=image)
            if rgb is not None and params.wants(OutputKind.PNG):
                files.append(out.Output(OutputKind.PNG, out.png(rgb)))
            if pred.mask is not None and params.wants(OutputKind.SEG) and case.datasets:
                if case.grid is None:
                    problems.append("seg: the series has no regular grid (multi-frame, uneven or missing geometry)")
                else:
                    files.append(out.Output(OutputKind.SEG, out.dicom_seg(
                        case.datasets, pred.mask, predictor.classes, model=version.model,
                        version=f"v{version.version}", key=case_key)))
            if rgb is not None and case.datasets and params.wants(OutputKind.SC):
                k = out.slice_of_interest(case.pixels, pred.mask, image)
                ref_ds = case.datasets[min(k, len(case.datasets) - 1)]
                files.append(out.Output(OutputKind.SC, out.dicom_sc(
                    ref_ds, rgb, model=version.model, version=f"v{version.version}", key=case_key,
                    description="segmentation" if pred.mask is not None else "classification")))
        except UsageError as exc:
            problems.append(exc.message)
        return files, problems

    # -- the prediction log --------------------------------------------------------------------------------
    def _log_in(self, session: Any, job: Job, model_ref: str, outcome: str, details: dict[str, Any]) -> None:
        if self.prediction_log is None:
            return
        outcome = {"done": "ok", "refused": "refused"}.get(outcome, outcome)
        try:
            with session.begin_nested():  # a record the log refuses must not lose the result
                self.prediction_log(session, job, model_ref, outcome, details)
        except MedcycleError as exc:
            log.warning("prediction log refused the record of job %s: %s", job.id, exc.message)

    def _log(self, job: Job, model_ref: str, outcome: str, details: dict[str, Any]) -> None:
        if self.prediction_log is None:
            return
        with self.platform.session() as session:
            self._log_in(session, job, model_ref, outcome, details)

    def _log_failure(self, job: Job, model_ref: str, outcome: str, exc: MedcycleError | None) -> None:
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
        self._log(job, model_ref, outcome, details)

    def close(self) -> None:
        self._predictors.clear()


def version_id_ref(platform: Platform, version_id: str) -> str:
    """``NAME@vN`` of a version id (what the predictor loads: pinned, whatever aliases do)."""
    from medcycle.models.tables import ModelVersionRow

    with platform.session(write=False) as session:
        row = session.get(ModelVersionRow, version_id)
        if row is None:
            raise NotFound(f"model version {version_id} is gone", hint="See `medcycle model list`.")
        return f"{row.model}@v{row.version}"
