"""A deployed worker: the serving worker plus the deployment's routing — canary share and shadow runs.

``python -m medcycle.serving.routing --generation N --name NAME`` is what the supervisor (and the Kubernetes
worker Deployment) runs. It loads and warms every version the deployment spec names, reports ready in its
status file, then serves until SIGTERM, after which it finishes the batch in hand and exits.

A worker keeps the spec it started with: a new spec is a new generation of workers (warmed before they take
over, see :mod:`medcycle.serving.supervisor`; on Kubernetes, new pods). Per batch, before the
:class:`~medcycle.serving.worker.ServingWorker` runs it:

* **canary**: a job for the deployed model (by name, without a pinned version) whose id falls in the canary
  share — a stable hash of the job id, so a redelivered job goes the same way — runs on the candidate; its
  result names the candidate version, as every result names the version that made it;
* the serving worker resolves each job's reference *now* (alias moves apply from the next batch) and runs it.

**Shadow**: after the batch, jobs of the deployed model that ran on the primary are run again on the shadow
version in a background thread, on a copy of the inputs; the outcome is only logged (agreement per case) and
counted. Nothing is written and nothing waits for it: when the shadow falls behind, jobs are skipped (counted).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import queue
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from medcycle.errors import MedcycleError
from medcycle.jobs.base import Job
from medcycle.serving.deploy import DeploymentSpec, deploy_dir, read_spec
from medcycle.serving.worker import ServingWorker
from medcycle.store.base import utcnow

if TYPE_CHECKING:
    from medcycle.platform import Platform
    from medcycle.serving.predictor import Predictor

log = logging.getLogger(__name__)
BUCKETS: Final = 10_000
SHADOW_BACKLOG: Final = 64


def bucket(job_id: str) -> int:
    """A stable number in [0, 10000) for a job id: the canary takes the jobs below its share."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big") % BUCKETS


def is_canary(job_id: str, percent: float) -> bool:
    return bucket(job_id) < round(percent * BUCKETS / 100)


def follows_deployment(requested: str, spec: DeploymentSpec) -> bool:
    """Whether a job's requested model is the deployed model's traffic (its name, an alias or the bare name —
    not a pinned version, which the client chose on purpose)."""
    from medcycle.models.registry import VERSION_RE

    name, _, which = requested.strip().partition("@")
    return name == spec.name and not VERSION_RE.match(which or "latest")


class DeployedWorker(ServingWorker):
    """A :class:`ServingWorker` that applies the deployment spec (see the module docstring)."""

    def __init__(self, platform: Platform, spec: DeploymentSpec | None, **kwargs: Any) -> None:
        super().__init__(platform, **kwargs)
        self.spec = spec
        self.routed: dict[str, int] = {"primary": 0, "canary": 0, "shadowed": 0, "shadow_skipped": 0}
        self._shadow_queue: queue.Queue[tuple[DeploymentSpec, dict[str, Any], str]] = queue.Queue(SHADOW_BACKLOG)
        self._shadow_predictors: dict[str, Predictor] = {}
        self._shadow_thread = threading.Thread(target=self._shadow_loop, name="medcycle-shadow", daemon=True)
        self._shadow_thread.start()

    def warm(self) -> dict[str, str]:
        """Load and warm every version the spec names, and the version a rollback of its alias would go back
        to (so a rollback never waits for a load); returns reference → version."""
        spec = self.spec
        out: dict[str, str] = {}
        refs = spec.refs() if spec is not None else []
        if spec is not None and (previous := rollback_target(self.platform, spec.model)) is not None:
            refs.append(previous)
        for ref in refs:
            predictor = self.predictor(ref)  # loaded and warmed (its forward pass size measured)
            out[ref] = predictor.ref
        return out

    def _handle(self, jobs: Sequence[Job], beat: Any, outcomes: dict[str, Any]) -> None:
        spec = self.spec
        shadowed: list[Job] = []
        for job in jobs:
            requested = str((job.payload or {}).get("model", ""))
            if spec is None or not follows_deployment(requested, spec):
                continue
            if spec.candidate and spec.canary_percent and is_canary(job.id, spec.canary_percent):
                # in memory only: the stored job still shows what the client asked for
                job.payload = {**job.payload, "model": spec.candidate}
                self.routed["canary"] += 1
                continue
            self.routed["primary"] += 1
            if spec.shadow:
                shadowed.append(job)
        super()._handle(jobs, beat, outcomes)
        for job in shadowed:
            outcome = outcomes.get(job.id)
            result = getattr(outcome, "result", None) or {}
            if getattr(outcome, "action", None) != "complete" or not result.get("result"):
                continue
            assert spec is not None and spec.shadow
            try:
                self._shadow_queue.put_nowait((spec, dict(job.payload), job.id))
            except queue.Full:
                self.routed["shadow_skipped"] += 1

    # -- shadow ------------------------------------------------------------------------------------------
    def _shadow_predictor(self, ref: str) -> Predictor:
        from medcycle.models.registry import resolve
        from medcycle.serving.predictor import Predictor
        from medcycle.serving.worker import version_id_ref

        with self.platform.session(write=False) as session:
            version_id = resolve(session, ref).id
        found = self._shadow_predictors.get(version_id)
        if found is None:
            found = Predictor.load(self.platform, version_id_ref(self.platform, version_id), device=self.cfg.device,
                                   header_rules=self.cfg.rules_for(ref.partition("@")[0]),
                                   max_batch=self.cfg.max_batch_images, forward_batch=self.cfg.forward_batch)
            found.warm()
            self._shadow_predictors = {version_id: found}  # one shadow at a time
        return found

    def _shadow_loop(self) -> None:
        while True:
            item = self._shadow_queue.get()
            try:
                self.shadow_run(*item)
            except Exception as exc:  # noqa: BLE001 - a shadow never affects serving; it is only logged
                log.warning("shadow run failed: %s: %s", type(exc).__name__, getattr(exc, "message", exc))
            finally:
                self._shadow_queue.task_done()

    def shadow_run(self, spec: DeploymentSpec, payload: dict[str, Any], job_id: str) -> dict[str, Any]:
        """Run the shadow version on a copy of a served job's inputs and log how it agrees; returns the summary."""
        from medcycle.serving import results
        from medcycle.serving.decode import decode_case
        from medcycle.serving.schemas import Params
        from medcycle.serving.scratch import new_tag, remove_tagged, scratch_dir

        assert spec.shadow
        shadow = self._shadow_predictor(spec.shadow)
        job = self.platform.jobs.get(job_id)
        key = (job.result or {}).get("result")
        with self.platform.session(write=False) as session:
            primary = results.find(session, str(key)) if key else None
            served = [dict(c) for c in primary.cases] if primary is not None else []
            served_by = primary.model_ref if primary is not None else "?"
        params = Params.parse(payload.get("params"))
        folder, tag = scratch_dir(), new_tag()
        try:
            cases = [decode_case(self.platform.objects, payload, i, folder, tag)
                     for i in range(len(payload.get("cases", [])))]
        finally:
            remove_tagged(folder, tag)
        predictions = shadow.predict([c.model_input(params) for c in cases])
        agree = 0
        for case, pred in zip(served, predictions, strict=False):
            mine = pred.to_dict(shadow.classes)
            if _finding(mine) == _finding(case):
                agree += 1
        summary = {"job": job_id, "served_by": served_by, "shadow": shadow.ref, "cases": len(predictions),
                   "agree": agree}
        self.routed["shadowed"] += 1
        log.info("shadow %s", json.dumps(summary, sort_keys=True))
        return summary

    def drain_shadow(self, timeout: float = 30.0) -> None:
        """Wait for queued shadow runs (tests, shutdown)."""
        done = threading.Event()

        def wait() -> None:
            self._shadow_queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        done.wait(timeout)


def rollback_target(platform: Platform, ref: str) -> str | None:
    """The version ``medcycle model rollback`` would point the alias of ``ref`` at (None: no alias or no earlier
    version), from the alias's recorded moves: promotions push, rollbacks pop, a removal empties."""
    from medcycle.models.registry import VERSION_RE, alias_history

    name, _, alias = ref.strip().partition("@")
    if not alias or alias == "latest" or VERSION_RE.match(alias):
        return None
    with platform.session(write=False) as session:
        moves = alias_history(session, name, alias)
    stack: list[str] = []
    for move in moves:
        if move.action == "rollback":
            if stack:
                stack.pop()
        elif move.action == "remove":
            stack.clear()
        elif move.to_ref is not None:
            stack.append(move.to_ref)
    return stack[-2] if len(stack) >= 2 else None


def _finding(case: dict[str, Any]) -> Any:
    """What two predictions of a case are compared on: the class (classification) or the classes found."""
    finding = case.get("finding") or {}
    return case.get("status"), finding.get("class"), tuple(finding.get("classes") or ())


# -- the process -----------------------------------------------------------------------------------------
def write_worker_status(folder: Path, name: str, data: dict[str, Any]) -> None:
    path = folder / "workers" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({**data, "pid": os.getpid(), "at": utcnow().isoformat()}), encoding="utf-8")
    os.replace(tmp, path)


def serve(worker: ServingWorker, stop: threading.Event, *, webhooks: bool = True) -> None:
    """Run ``worker`` until ``stop``, with the webhook sender in a thread beside it (as ``medcycle serve-worker``
    runs one): a deployed worker is what delivers the webhooks of the jobs it finishes."""
    from medcycle.serving.webhooks import WebhookSender

    sender = WebhookSender(worker.platform, worker.cfg) if webhooks else None
    thread = None
    if sender is not None:
        thread = threading.Thread(target=sender.run, args=(stop,), daemon=True, name="medcycle-webhooks")
        thread.start()
    try:
        worker.run(stop)
    finally:
        stop.set()
        if thread is not None and sender is not None:
            thread.join(timeout=5)
            sender.close()


def main(argv: list[str] | None = None) -> int:
    from medcycle.platform import Platform
    from medcycle.serving import cpu
    from medcycle.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m medcycle.serving.routing", description=__doc__.split("\n")[0])
    parser.add_argument("--generation", type=int, default=0, help="the deployment generation this worker serves")
    parser.add_argument("--name", default=None, help="worker name (default: host:pid)")
    parser.add_argument("--local-workers", type=int, default=1,
                        help="workers sharing this machine's cores (the supervisor passes its count; a pod runs one)")
    parser.add_argument("--no-webhooks", action="store_true",
                        help="do not deliver webhooks from this worker (another process does)")
    args = parser.parse_args(argv)
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    folder = deploy_dir(settings)
    with Platform(settings) as platform:
        try:
            spec = read_spec(settings)
        except MedcycleError as exc:
            log.error("the deployment spec cannot be read: %s", exc.message)
            return 3
        worker = DeployedWorker(platform, spec, name=args.name)
        share = cpu.apply(threads=worker.cfg.cpu_threads, workers=max(1, args.local_workers),
                          priority=worker.cfg.worker_priority, keep_memory=worker.cfg.keep_freed_memory)
        log.info("worker %s: %s", worker.name, share.describe())
        name = args.name or worker.name.replace(":", "-")
        try:
            versions = worker.warm()
        except MedcycleError as exc:
            write_worker_status(folder, name, {"generation": args.generation, "state": "failed",
                                               "reason": exc.message})
            log.error("worker %s cannot load its models: %s", name, exc.message)
            return 3
        write_worker_status(folder, name, {"generation": args.generation, "state": "ready", "versions": versions})
        log.info("worker %s ready (generation %d): %s", name, args.generation, versions)
        try:
            serve(worker, stop, webhooks=not args.no_webhooks)
        finally:
            worker.drain_shadow(5.0)
            worker.close()
            (folder / "workers" / f"{name}.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
