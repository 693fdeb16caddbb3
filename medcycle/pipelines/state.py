"""Reading pipeline runs back: list them, show one with its steps and graph.

A run is named by its id, an id prefix of at least 4 hex characters, or a pipeline name (its latest run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medcycle.errors import NotFound, UsageError
from medcycle.pipelines.tables import PipelineRunRow, PipelineStepRow

MIN_PREFIX = 4
MAX_LIMIT = 1000


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    CACHED = "cached"  # a cache hit: outputs reused, nothing executed
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # something it needs failed or was skipped

    @property
    def finished(self) -> bool:
        return self in {StepState.CACHED, StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED}

    @property
    def ok(self) -> bool:
        return self in {StepState.CACHED, StepState.SUCCEEDED}


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None


@dataclass(frozen=True, slots=True)
class StepInfo:
    name: str
    position: int
    needs: list[str]
    state: StepState
    cache_key: str | None
    cache_hit: bool
    forced: bool
    inputs: dict[str, Any]
    outputs: dict[str, Any]  # key -> {"path", "digest"}
    command: list[str]
    job_id: str | None
    tracked_run_id: str | None
    exit_code: int | None
    log_digest: str | None
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None

    @property
    def seconds(self) -> float | None:
        return _seconds(self.started_at, self.ended_at)

    @classmethod
    def from_row(cls, row: PipelineStepRow) -> StepInfo:
        return cls(name=row.name, position=row.position, needs=list(row.needs), state=StepState(row.state),
                   cache_key=row.cache_key, cache_hit=row.cache_hit, forced=row.forced, inputs=dict(row.inputs),
                   outputs=dict(row.outputs), command=list(row.command), job_id=row.job_id,
                   tracked_run_id=row.tracked_run_id, exit_code=row.exit_code, log_digest=row.log_digest,
                   started_at=row.started_at, ended_at=row.ended_at, error=row.error)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "position": self.position, "needs": self.needs, "state": self.state.value,
                "cache_key": self.cache_key, "cache_hit": self.cache_hit, "forced": self.forced,
                "inputs": self.inputs, "outputs": self.outputs, "command": self.command, "job_id": self.job_id,
                "run_id": self.tracked_run_id, "exit_code": self.exit_code, "log_digest": self.log_digest,
                "started_at": _iso(self.started_at), "ended_at": _iso(self.ended_at), "seconds": self.seconds,
                "error": self.error}


@dataclass(frozen=True, slots=True)
class RunSummary:
    id: str
    pipeline: str
    project: str | None
    status: RunStatus
    executor: str
    queue: str | None
    source: str | None
    spec_digest: str
    forced: list[str]
    created_by: str
    started_at: datetime
    ended_at: datetime | None
    error: str | None
    counts: dict[str, int] = field(default_factory=dict)  # steps per state

    @property
    def seconds(self) -> float | None:
        return _seconds(self.started_at, self.ended_at)

    @property
    def executed(self) -> int:
        return self.counts.get(StepState.SUCCEEDED, 0) + self.counts.get(StepState.FAILED, 0)

    @classmethod
    def from_row(cls, row: PipelineRunRow, counts: dict[str, int]) -> RunSummary:
        return cls(id=row.id, pipeline=row.pipeline, project=row.project, status=RunStatus(row.status),
                   executor=row.executor, queue=row.queue, source=row.source, spec_digest=row.spec_digest,
                   forced=list(row.forced), created_by=row.created_by, started_at=row.started_at,
                   ended_at=row.ended_at, error=row.error, counts=counts)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "pipeline": self.pipeline, "project": self.project, "status": self.status.value,
                "executor": self.executor, "queue": self.queue, "source": self.source,
                "spec_digest": self.spec_digest, "forced": self.forced, "created_by": self.created_by,
                "started_at": _iso(self.started_at), "ended_at": _iso(self.ended_at), "seconds": self.seconds,
                "error": self.error, "counts": {s.value: self.counts.get(s.value, 0) for s in StepState}}


@dataclass(frozen=True, slots=True)
class RunDetail:
    run: RunSummary
    steps: list[StepInfo]
    spec: dict[str, Any]

    @property
    def edges(self) -> list[tuple[str, str]]:
        """``(needed step, step)`` pairs."""
        return [(need, s.name) for s in self.steps for need in s.needs]

    def step(self, name: str) -> StepInfo:
        for s in self.steps:
            if s.name == name:
                return s
        raise NotFound(f"run {self.run.id[:12]} has no step {name!r}",
                       hint=f"Its steps are: {', '.join(s.name for s in self.steps)}.")

    def to_dict(self) -> dict[str, Any]:
        return {**self.run.to_dict(), "steps": [s.to_dict() for s in self.steps],
                "edges": [list(e) for e in self.edges], "spec": self.spec}


def resolve_run(session: Session, ref: str) -> PipelineRunRow:
    """The run ``ref`` names: a full id, an id prefix (at least 4 characters) or a pipeline (its latest run)."""
    ref = ref.strip()
    row = session.get(PipelineRunRow, ref) if len(ref) == 32 else None
    if row is not None:
        return row
    candidates: list[PipelineRunRow] = []
    if len(ref) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in ref):
        candidates = list(session.scalars(select(PipelineRunRow).where(PipelineRunRow.id.startswith(ref)).limit(11)))
    if len(candidates) > 1:
        ids = ", ".join(c.id[:12] for c in candidates[:10])
        raise UsageError(f"{ref!r} names {len(candidates)} pipeline runs ({ids})",
                         hint="Give more characters of the run id.")
    if candidates:
        return candidates[0]
    latest = session.scalar(select(PipelineRunRow).where(PipelineRunRow.pipeline == ref)
                            .order_by(PipelineRunRow.started_at.desc(), PipelineRunRow.id).limit(1))
    if latest is None:
        raise NotFound(f"no pipeline run {ref!r}",
                       hint="List runs with `medcycle pipeline list`; name one by id, id prefix or pipeline name.")
    return latest


def _counts(session: Session, run_ids: list[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {r: {} for r in run_ids}
    if not run_ids:
        return out
    stmt = (select(PipelineStepRow.run_id, PipelineStepRow.state, func.count())
            .where(PipelineStepRow.run_id.in_(run_ids)).group_by(PipelineStepRow.run_id, PipelineStepRow.state))
    for run_id, state, n in session.execute(stmt):
        out[run_id][state] = int(n)
    return out


def list_runs(session: Session, *, pipeline: str | None = None, limit: int = 50, offset: int = 0) -> list[RunSummary]:
    """Runs, newest first, with how many steps ended in each state."""
    if not 0 <= limit <= MAX_LIMIT or offset < 0:
        raise UsageError(f"limit must be 0-{MAX_LIMIT} and offset at least 0", hint="e.g. --limit 50")
    stmt = select(PipelineRunRow).order_by(PipelineRunRow.started_at.desc(), PipelineRunRow.id)
    if pipeline:
        stmt = stmt.where(PipelineRunRow.pipeline == pipeline)
    rows = list(session.scalars(stmt.limit(limit).offset(offset)))
    counts = _counts(session, [r.id for r in rows])
    return [RunSummary.from_row(r, counts[r.id]) for r in rows]


def get_run(session: Session, ref: str) -> RunDetail:
    row = resolve_run(session, ref)
    steps = [StepInfo.from_row(s) for s in session.scalars(
        select(PipelineStepRow).where(PipelineStepRow.run_id == row.id).order_by(PipelineStepRow.position))]
    counts: dict[str, int] = {}
    for s in steps:
        counts[s.state.value] = counts.get(s.state.value, 0) + 1
    return RunDetail(RunSummary.from_row(row, counts), steps, dict(row.spec))
