"""Pipeline runs: list (newest first, per-state step counts) and show (steps, states, cache keys, graph edges)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from medcycle.api.deps import SessionDep, requires
from medcycle.auth.roles import Permission, Principal
from medcycle.pipelines.state import MAX_LIMIT, get_run, list_runs

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"])
Viewer = Annotated[Principal, requires(Permission.VIEW)]


@router.get("/runs")
def list_pipeline_runs(
    session: SessionDep,
    _: Viewer,
    pipeline: Annotated[str | None, Query(max_length=128, description="Only runs of this pipeline")] = None,
    limit: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> dict[str, Any]:
    runs = list_runs(session, pipeline=pipeline, limit=limit, offset=offset)
    return {"runs": [r.to_dict() for r in runs], "limit": limit, "offset": offset}


@router.get("/runs/{run}")
def show_pipeline_run(run: str, session: SessionDep, _: Viewer) -> dict[str, Any]:
    """A run by id, id prefix, or pipeline name (its latest run)."""
    return get_run(session, run).to_dict()
