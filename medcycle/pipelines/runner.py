"""One run of a pipeline: walk the graph, reuse cached results, execute the rest, record every state change.

For each step, in topological order, once everything it needs has finished:

1. **skip** it if something it needs failed or was skipped (independent branches go on);
2. **plan** it: hash its code files, resolve its datasets to immutable version ids (when it is about to run,
   so a step after a ``freeze`` step sees the new version), take the digests of the outputs it reads, render
   its command, compute its cache key (:mod:`medcycle.pipelines.keys`);
3. **hit**: a cache entry with that key whose output objects all still exist → state ``cached``, outputs
   reused, nothing executed;
4. otherwise **execute** it on the executor (up to ``parallel`` at once), then record ``succeeded`` (and a
   cache entry) or ``failed`` with the error.

States are committed as they change, so ``medcycle pipeline show`` and the web page follow a run live. A run
re-started after a fix finds the steps that succeeded before in the cache and executes only what is left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import sqlalchemy.exc

from medcycle.auth import audit
from medcycle.datasets.manifest import digest_of
from medcycle.errors import MedcycleError, UsageError
from medcycle.objects.refs import add_ref
from medcycle.pipelines import keys
from medcycle.pipelines.executors import Executor, LocalExecutor, StepResult, StepTask
from medcycle.pipelines.references import OutputRef, ParamRef, Ref, param_text, render
from medcycle.pipelines.spec import INPUTS_DIR, PipelineSpec, StepSpec
from medcycle.pipelines.state import RunDetail, RunStatus, StepState, get_run
from medcycle.pipelines.tables import PipelineRunRow, PipelineStepRow, StepCacheRow
from medcycle.platform import Platform
from medcycle.store.base import new_id, utcnow

log = logging.getLogger(__name__)

CACHE_OWNER = "pipeline_cache"
RUN_OWNER = "pipeline_run"
FORCE_ALL = "*"


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A step changed state (for progress output)."""

    step: str
    state: StepState
    detail: str | None = None


EventSink = Callable[[StepEvent], None]


@dataclass(frozen=True, slots=True)
class Planned:
    task: StepTask
    record: dict[str, Any]  # what the key was computed from, stored with the step


def run_pipeline(
    platform: Platform, spec: PipelineSpec, *, executor: Executor | None = None, force: Iterable[str] = (),
    parallel: int = 1, actor: str = "system", via: str = "library", on_event: EventSink | None = None,
) -> RunDetail:
    """Run ``spec``; returns the finished run. A failed step is a failed run, not an exception.

    Args:
        executor: where steps execute (default: :class:`~medcycle.pipelines.executors.LocalExecutor`).
        force: steps to execute even on a cache hit (``*`` for all). Their dependants re-run only if the
            forced step's outputs come out different.
        parallel: how many steps may execute at once.
    """
    forced = list(dict.fromkeys(force))
    for name in forced:
        if name != FORCE_ALL:
            spec.step(name)  # raises with the list of steps
    if parallel < 1:
        raise UsageError("parallel must be at least 1", hint="e.g. --parallel 2")
    executor = executor or LocalExecutor(platform, actor=actor, via=via)
    executor.prepare(spec)
    return _Run(platform, spec, executor, forced, parallel, actor, via, on_event).run()


class _Run:
    def __init__(self, platform: Platform, spec: PipelineSpec, executor: Executor, forced: list[str],
                 parallel: int, actor: str, via: str, on_event: EventSink | None) -> None:
        self.platform = platform
        self.spec = spec
        self.executor = executor
        self.forced = set(s.name for s in spec.steps) if FORCE_ALL in forced else set(forced)
        self.parallel = parallel
        self.actor = actor
        self.via = via
        self.emit = on_event or (lambda _e: None)
        self.id = new_id()
        self.states: dict[str, StepState] = {s.name: StepState.PENDING for s in spec.steps}
        self.outputs: dict[str, dict[str, dict[str, str]]] = {}  # step -> key -> {"path", "digest"}
        self.tasks: dict[str, StepTask] = {}
        self.first_error: str | None = None

    # -- recording ----------------------------------------------------------------------------------
    def _create(self) -> None:
        spec_data = self.spec.to_dict()
        with self.platform.session() as s:
            s.add(PipelineRunRow(id=self.id, pipeline=self.spec.name, project=self.spec.project,
                                 spec_digest=digest_of(spec_data), spec=spec_data, source=self.spec.source[-1024:],
                                 status=RunStatus.RUNNING.value, executor=self.executor.name,
                                 queue=self.executor.queue, forced=sorted(self.forced), created_by=self.actor,
                                 started_at=utcnow()))
            s.flush()
            for i, step in enumerate(self.spec.steps):
                s.add(PipelineStepRow(run_id=self.id, name=step.name, position=i, needs=list(step.needs),
                                      state=StepState.PENDING.value, cache_hit=False,
                                      forced=step.name in self.forced, inputs={}, outputs={},
                                      command=list(step.command)))
            audit.record(s, self.actor, "pipeline.run", target_kind="pipeline_run", target_id=self.id, via=self.via,
                         pipeline=self.spec.name, executor=self.executor.name)

    def _update(self, name: str, state: StepState, detail: str | None = None, **values: Any) -> None:
        with self.platform.session() as s:
            row = s.get_one(PipelineStepRow, (self.id, name))
            row.state = state.value
            for key, value in values.items():
                setattr(row, key, value)
            if state is StepState.FAILED and self.first_error is None:
                self.first_error = f"step {name!r} failed: {values.get('error') or 'unknown error'}"
        self.states[name] = state
        self.emit(StepEvent(name, state, detail))

    def _finish(self, interrupted: bool = False) -> None:
        failed = any(st in (StepState.FAILED, StepState.SKIPPED) for st in self.states.values())
        status = RunStatus.FAILED if failed or interrupted else RunStatus.SUCCEEDED
        with self.platform.session() as s:
            row = s.get_one(PipelineRunRow, self.id)
            row.status = status.value
            row.ended_at = utcnow()
            row.error = "interrupted" if interrupted else self.first_error

    # -- the walk -----------------------------------------------------------------------------------
    def run(self) -> RunDetail:
        self._create()
        running: dict[Future[StepResult], str] = {}
        pending = [s.name for s in self.spec.steps]
        pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="pipeline-step")
        try:
            while pending or running:
                self._advance(pending, running, pool)
                if not running:
                    for name in pending:  # cannot happen with a validated graph; never spin
                        self._update(name, StepState.SKIPPED, error="unreachable", ended_at=utcnow())
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    self._completed(running.pop(future), future)
        except BaseException:  # Ctrl-C or a store failure: stop the executions, record what happened
            self.executor.stop()
            pool.shutdown(wait=True, cancel_futures=True)
            for name, st in self.states.items():
                if st is StepState.RUNNING:
                    self._safe_fail(name, "interrupted")
            self._finish(interrupted=True)
            raise
        pool.shutdown(wait=True)
        self._finish()
        with self.platform.session(write=False) as s:
            return get_run(s, self.id)

    def _safe_fail(self, name: str, error: str) -> None:
        try:
            self._update(name, StepState.FAILED, error=error, ended_at=utcnow())
        except Exception:  # already failing: record what we can
            log.exception("could not record step %s as failed", name)

    def _advance(self, pending: list[str], running: dict[Future[StepResult], str], pool: ThreadPoolExecutor) -> None:
        """Settle every pending step that can be settled now; start executions while there is room."""
        progressed = True
        while progressed:
            progressed = False
            for name in list(pending):
                step = self.spec.step(name)
                needed = [self.states[n] for n in step.needs]
                blocked = [n for n in step.needs if self.states[n] in (StepState.FAILED, StepState.SKIPPED)]
                if blocked:
                    pending.remove(name)
                    progressed = True
                    self._update(name, StepState.SKIPPED, f"{blocked[0]} {self.states[blocked[0]].value}",
                                 error=f"not run: {blocked[0]!r} {self.states[blocked[0]].value}",
                                 ended_at=utcnow())
                    continue
                if not all(st.ok for st in needed) or len(running) >= self.parallel:
                    continue
                pending.remove(name)
                progressed = True
                task = self._settle(step)
                if task is not None:
                    running[pool.submit(self.executor.execute, task)] = name

    def _settle(self, step: StepSpec) -> StepTask | None:
        """Plan the step and take it from the cache when possible; returns the task when it must execute."""
        try:
            planned = self._plan(step)
        except MedcycleError as exc:
            self._update(step.name, StepState.FAILED, error=str(exc), started_at=utcnow(), ended_at=utcnow())
            return None
        task = planned.task
        columns = {"cache_key": task.key, "inputs": planned.record, "command": list(task.command)}
        if step.cache and step.name not in self.forced and (hit := self._lookup(task.key)) is not None:
            now = utcnow()
            self.outputs[step.name] = hit.outputs
            self._update(step.name, StepState.CACHED, f"key {task.key[:12]}", cache_hit=True, outputs=hit.outputs,
                         job_id=hit.job_id, tracked_run_id=hit.tracked_run_id, log_digest=hit.log_digest,
                         started_at=now, ended_at=now, **columns)
            self._count_hit(task.key)
            return None
        self._update(step.name, StepState.RUNNING, f"on {self.executor.name}", started_at=utcnow(), **columns)
        self.tasks[step.name] = task
        return task

    def _plan(self, step: StepSpec) -> Planned:
        from medcycle.datasets.versions import resolve, split_ref

        root = self.spec.code_root
        files = keys.code_files(root, step.files, step.command)
        file_digests = keys.code_digests(root, files)
        code = keys.code_digest(file_digests)
        datasets: dict[str, str] = {}
        dataset_record: dict[str, dict[str, str]] = {}
        if step.datasets:
            with self.platform.session(write=False) as s:
                for ref in step.datasets:
                    name, _ = split_ref(ref)
                    version = resolve(s, ref).id
                    datasets[name] = f"{name}@{version}"
                    dataset_record[name] = {"ref": ref, "version": version}
        inputs: dict[str, str] = {}  # work-folder path -> digest
        key_inputs: dict[str, str] = {}  # STEP.KEY -> digest
        wanted = [(r.step, r.key) for r in step.output_refs]
        wanted += [(n, k) for n in step.listed_needs for k in self.spec.step(n).outputs]
        for dep, key in dict.fromkeys(wanted):
            out = self.outputs[dep][key]
            inputs[f"{INPUTS_DIR}/{dep}/{out['path']}"] = out["digest"]
            key_inputs[f"{dep}.{key}"] = out["digest"]
        params = self.spec.step_params(step)

        def resolve_ref(ref: Ref) -> str:
            if isinstance(ref, OutputRef):
                return f"{INPUTS_DIR}/{ref.step}/{self.outputs[ref.step][ref.key]['path']}"
            assert isinstance(ref, ParamRef)
            return param_text(params[ref.name])

        command = tuple(render(arg, resolve_ref) for arg in step.command)
        env = {k: render(v, resolve_ref) for k, v in step.env.items()}
        environment = step.environment or self.spec.environment
        key = keys.cache_key(command=command, params=params, env=env, environment=environment, code=code,
                             datasets={n: d["version"] for n, d in dataset_record.items()}, inputs=key_inputs,
                             outputs=step.outputs)
        task = StepTask(run_id=self.id, pipeline=self.spec.name, project=self.spec.project or self.spec.name,
                        step=step.name, key=key, command=command, code_root=root, files=tuple(files), inputs=inputs,
                        datasets=datasets, params=params, env=env, outputs=dict(step.outputs),
                        timeout_s=step.timeout_s)
        record = {"code": code, "files": file_digests, "datasets": dataset_record, "steps": key_inputs,
                  "params": params, "env": env, "environment": environment}
        return Planned(task, record)

    # -- the cache ----------------------------------------------------------------------------------
    def _lookup(self, key: str) -> StepCacheRow | None:
        with self.platform.session(write=False) as s:
            row = s.get(StepCacheRow, key)
            if row is None:
                return None
            s.expunge(row)
        digests = [o["digest"] for o in row.outputs.values()]
        if not all(self.platform.objects.exists(d) for d in digests):
            log.warning("cache entry %s lists objects that are gone; executing again", key[:12])
            return None
        return row

    def _count_hit(self, key: str) -> None:
        with self.platform.session() as s:
            row = s.get(StepCacheRow, key)
            if row is not None:
                row.hits += 1
                row.last_hit_at = utcnow()

    def _store(self, step: StepSpec, key: str, result: StepResult, outputs: dict[str, dict[str, str]],
               seconds: float) -> None:
        digests = [o["digest"] for o in outputs.values()] + ([result.log_digest] if result.log_digest else [])
        with self.platform.session() as s:
            for digest in digests:
                add_ref(s, digest, RUN_OWNER, self.id)
        if not step.cache:
            return
        values = {"pipeline": self.spec.name, "step": step.name, "outputs": outputs, "log_digest": result.log_digest,
                  "run_id": self.id, "job_id": result.job_id, "tracked_run_id": result.run_id, "seconds": seconds}
        try:
            with self.platform.session() as s:
                row = s.get(StepCacheRow, key)
                if row is None:
                    s.add(StepCacheRow(key=key, hits=0, created_at=utcnow(), **values))
                else:  # a forced re-execution replaces the entry
                    for name, value in values.items():
                        setattr(row, name, value)
                    row.created_at = utcnow()
                s.flush()
                for digest in digests:
                    add_ref(s, digest, CACHE_OWNER, key)
        except sqlalchemy.exc.IntegrityError:  # another run stored the same key at the same moment
            log.info("cache entry %s was stored concurrently", key[:12])

    # -- completion ---------------------------------------------------------------------------------
    def _completed(self, name: str, future: Future[StepResult]) -> None:
        step = self.spec.step(name)
        with self.platform.session(write=False) as s:
            started = s.get_one(PipelineStepRow, (self.id, name)).started_at or utcnow()
        try:
            result = future.result()
        except MedcycleError as exc:
            result = StepResult(None, error=str(exc))
        except Exception as exc:  # an executor bug fails the step, not the whole run
            log.exception("executor failed on step %s", name)
            result = StepResult(None, error=f"{type(exc).__name__}: {exc}")
        ended = utcnow()
        common = {"exit_code": result.exit_code, "log_digest": result.log_digest, "job_id": result.job_id,
                  "tracked_run_id": result.run_id, "ended_at": ended}
        missing = [p for p in step.outputs.values() if p not in result.outputs]
        if result.ok and missing:
            result = StepResult(result.exit_code, result.outputs, result.log_digest, result.job_id, result.run_id,
                                error=f"the command did not write declared output(s): {', '.join(missing)}")
        if not result.ok:
            self._update(name, StepState.FAILED, result.error, error=result.error or "failed", **common)
            return
        outputs = {key: {"path": path, "digest": result.outputs[path]} for key, path in step.outputs.items()}
        self.outputs[name] = outputs
        self._store(step, self.tasks[name].key, result, outputs, (ended - started).total_seconds())
        self._update(name, StepState.SUCCEEDED, None, outputs=outputs, **common)
