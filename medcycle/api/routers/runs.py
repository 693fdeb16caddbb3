"""Runs: list/filter, show, metric series (downsampled for charts), logs, code diff, compare, and the
batch ingest endpoint the remote SDK writes through (``POST /v1/runs/{id}/records``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth import audit
from medcycle.auth.roles import Permission, Principal
from medcycle.errors import NotFound, UsageError
from medcycle.experiments import compare, ingest, query, runs
from medcycle.experiments.records import decode_frames
from medcycle.experiments.schemas import AppliedOut, AssembleIn, ObjectOut, assemble

router = APIRouter(prefix="/v1/runs", tags=["runs"])
Viewer = Annotated[Principal, requires(Permission.VIEW)]
Trainer = Annotated[Principal, requires(Permission.TRAIN)]
MAX_BODY = 64 * 1024 * 1024  # the SDK sends batches of at most 32 MiB


@router.get("")
def list_runs(
    session: SessionDep,
    _: Viewer,
    filter: Annotated[str | None, Query(description="e.g. params.lr > 1e-3 and metrics.val_dice > 0.8")] = None,
    project: str | None = None,
    order: str | None = None,
    limit: Annotated[int, Query(ge=0, le=query.MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    return query.list_runs(session, filter, project=project, order=order, limit=limit, offset=offset).to_dict()


@router.get("/compare")
def compare_runs(
    session: SessionDep,
    platform: PlatformDep,
    _: Viewer,
    run: Annotated[list[str], Query(description="Run ids (2 or more)")],
) -> dict[str, Any]:
    return compare.compare_runs(session, run, platform.objects).to_dict()


@router.post("/objects/assemble", response_model=ObjectOut)
def assemble_parts(body: AssembleIn, platform: PlatformDep, session: SessionDep, principal: Trainer) -> ObjectOut:
    """Join uploaded parts into the whole file's object (the remote SDK's resumable upload)."""
    info = assemble(platform.objects, body)
    audit.record(session, principal, "object.write", target_kind="object", target_id=info.digest, via="api",
                 size=info.size, parts=len(body.parts))
    return ObjectOut(digest=info.digest, size=info.size)


@router.get("/{run}")
def show_run(run: str, session: SessionDep, _: Viewer) -> dict[str, Any]:
    return runs.get_run(session, run).to_dict()


@router.get("/{run}/metrics")
def metrics(
    run: str,
    session: SessionDep,
    _: Viewer,
    key: Annotated[list[str] | None, Query(description="Metric keys (default: all)")] = None,
    max_points: Annotated[int | None, Query(ge=8, le=1_000_000, description="Downsample each series")] = None,
) -> dict[str, Any]:
    series = runs.metric_history(session, run, key, max_points)
    return {"run": runs.resolve_run(session, run).id, "series": {k: s.to_dict() for k, s in series.items()}}


@router.get("/{run}/log")
def log(
    run: str, session: SessionDep, _: Viewer, stream: str | None = None, tail: Annotated[int | None, Query(ge=0)] = None
) -> Response:
    return Response(runs.read_log(session, run, stream=stream, tail_bytes=tail), media_type="text/plain; charset=utf-8")


@router.get("/{run}/diff")
def diff(run: str, session: SessionDep, platform: PlatformDep, _: Viewer) -> Response:
    data = runs.read_diff(session, platform.objects, run)
    if data is None:
        raise NotFound(f"run {run} has no uncommitted diff", hint="Its tree was clean or capture was off.")
    return Response(data, media_type="text/x-diff")


@router.get("/{run_id}/applied", response_model=AppliedOut)
def applied(run_id: str, session: SessionDep, _: Trainer) -> AppliedOut:
    return AppliedOut(run_id=run_id, applied_seq=ingest.applied_seq(session, run_id))


@router.post("/{run_id}/records", response_model=AppliedOut)
async def records(run_id: str, request: Request, session: SessionDep, principal: Trainer) -> AppliedOut:
    """Apply a batch of journal records (binary frames); replays are skipped, so retries are safe."""
    ingest.check_run_id(run_id)
    declared = request.headers.get("content-length", "")
    too_big = UsageError(f"a record batch is limited to {MAX_BODY} bytes", hint="Send smaller batches.")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise too_big
    batch, _ = decode_frames(bytes(body))
    for record in batch:
        record.body.pop("_objects", None)
    done = await run_in_threadpool(ingest.apply_records, session, run_id, batch, actor=principal.name)
    return AppliedOut(run_id=run_id, applied_seq=done)
