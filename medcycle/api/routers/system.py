"""Probes, metrics and platform info."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from medcycle import __version__
from medcycle.api.deps import PlatformDep, requires
from medcycle.api.schemas import BackendOut, InfoOut, ReadyOut
from medcycle.auth.roles import Permission
from medcycle.platform import redact

router = APIRouter(tags=["system"])


@router.get("/livez", summary="The process is alive")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, summary="Every backend is reachable and migrated")
async def readyz(platform: PlatformDep) -> JSONResponse:
    health = await run_in_threadpool(platform.health)
    body = ReadyOut(ready=all(h.ok for h in health), backends=[BackendOut(**h.to_dict()) for h in health])
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.head("/livez", include_in_schema=False)
async def livez_head() -> Response:
    """``HEAD /livez``: load balancers and uptime checkers probe with HEAD."""
    return Response(status_code=200)


@router.head("/readyz", include_in_schema=False)
async def readyz_head(platform: PlatformDep) -> Response:
    """``HEAD /readyz``: the status of ``GET /readyz`` without its body."""
    health = await run_in_threadpool(platform.health)
    return Response(status_code=200 if all(h.ok for h in health) else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request, platform: PlatformDep) -> Response:
    return await run_in_threadpool(request.app.state.metrics.render, platform)


@router.get("/v1/info", response_model=InfoOut, dependencies=[requires(Permission.VIEW)])
def info(platform: PlatformDep) -> InfoOut:
    s = platform.settings
    return InfoOut(
        version=__version__,
        environment=s.environment.value,
        auth_enabled=s.auth_enabled,
        backends={
            "database": redact(s.resolved_database_url),
            "objects": s.resolved_object_store_url,
            "jobs": redact(s.queue_url),
        },
    )
