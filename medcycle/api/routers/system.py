"""Probes, metrics and platform info."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from medcycle import __version__
from medcycle.api.deps import PlatformDep, requires
from medcycle.api.schemas import BackendOut, InfoOut, ReadyOut
from medcycle.auth.roles import Permission
from medcycle.platform import BackendHealth, Platform, redact

router = APIRouter(tags=["system"])


def _health(platform: Platform) -> list[BackendHealth]:
    """The backends, and the deployment's workers when a supervisor runs on this machine for this home
    (a model loaded and warm; a crash loop says why)."""
    from medcycle.serving.deploy import deployment_health

    health = platform.health()
    try:
        workers = deployment_health(platform.settings)
    except OSError as exc:  # the deployment folder unreadable: say so rather than fail the probe
        workers = BackendHealth("workers", "deployment", False, f"status unreadable ({type(exc).__name__})")
    return health if workers is None else [*health, workers]


@router.get("/livez", summary="The process is alive")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, summary="Every backend is reachable and migrated (and, "
            "under `medcycle deploy`, a worker is ready)")
async def readyz(platform: PlatformDep) -> JSONResponse:
    health = await run_in_threadpool(_health, platform)
    body = ReadyOut(ready=all(h.ok for h in health), backends=[BackendOut(**h.to_dict()) for h in health])
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.head("/livez", include_in_schema=False)
async def livez_head() -> Response:
    """``HEAD /livez``: load balancers and uptime checkers probe with HEAD."""
    return Response(status_code=200)


@router.head("/readyz", include_in_schema=False)
async def readyz_head(platform: PlatformDep) -> Response:
    """``HEAD /readyz``: the status of ``GET /readyz`` without its body."""
    health = await run_in_threadpool(_health, platform)
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
