"""Probes, metrics and platform info."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from medcycle import __version__
from medcycle.api.deps import PlatformDep, requires
from medcycle.api.schemas import BackendOut, InfoOut, ReadyOut
from medcycle.auth.roles import Permission
from medcycle.platform import BackendHealth, Platform, redact

router = APIRouter(tags=["system"])


#: How long ``/readyz`` waits for a backend's check. A frozen Redis or database answers a connected socket with
#: silence: a check that waited for the client's own socket timeout (30 s for the queue) would outlast every
#: probe's timeout and hold a thread of the API per probe.
READY_TIMEOUT_S = 2.0


def _workers_health(platform: Platform) -> BackendHealth | None:
    """The deployment's workers when a supervisor runs on this machine for this home (a model loaded and warm;
    a crash loop says why)."""
    from medcycle.serving.deploy import deployment_health

    try:
        return deployment_health(platform.settings)
    except OSError as exc:  # the deployment folder unreadable: say so rather than fail the probe
        return BackendHealth("workers", "deployment", False, f"status unreadable ({type(exc).__name__})")


def _settle(future: Future[BackendHealth | None], check: Callable[[], BackendHealth | None]) -> None:
    try:
        future.set_result(check())
    except BaseException as exc:  # noqa: BLE001 - reported by the probe as the check's failure
        future.set_exception(exc)


class HealthChecks:
    """The backends' checks of one API process, each bounded by :data:`READY_TIMEOUT_S`. A check still running
    when the next probe comes is waited on again, not started a second time, so a backend that hangs holds one
    thread, not one per probe (nor one of the API's pool)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._running: dict[str, tuple[Future[BackendHealth | None], float]] = {}
        self._lock = threading.Lock()

    def _start(self, name: str, check: Callable[[], BackendHealth | None]) -> tuple[Future[BackendHealth | None],
                                                                                    float]:
        with self._lock:
            running = self._running.get(name)
            if running is None or running[0].done():
                running = self._running[name] = (Future(), time.monotonic())
                # a daemon thread: a check hung on a frozen backend must not hold up the process's exit
                threading.Thread(target=_settle, args=(running[0], check), name=f"medcycle-health-{name}",
                                 daemon=True).start()
            return running

    async def run(self) -> list[BackendHealth]:
        timeout = READY_TIMEOUT_S
        checks: list[tuple[str, Callable[[], BackendHealth | None]]] = [
            *self.platform.health_checks(), ("workers", partial(_workers_health, self.platform))]
        waiting = [(name, *self._start(name, check)) for name, check in checks]
        await asyncio.wait([asyncio.wrap_future(f) for _, f, _ in waiting], timeout=timeout)
        out = []
        for name, future, started in waiting:
            if future.done():
                error = future.exception()
                found = (BackendHealth(name, name, False, f"the check failed ({type(error).__name__})")
                         if error is not None else future.result())
                if found is not None:
                    out.append(found)
            else:
                url = {"database": redact(self.platform.settings.resolved_database_url),
                       "objects": self.platform.settings.resolved_object_store_url,
                       "jobs": redact(self.platform.settings.queue_url)}.get(name, name)
                out.append(BackendHealth(name, url, False,
                                         f"no answer for {time.monotonic() - started:.1f} s (a probe waits "
                                         f"{timeout:g} s): the backend is hung or unreachable"))
        return out


def _checks(request: Request, platform: Platform) -> HealthChecks:
    checks = getattr(request.app.state, "health_checks", None)
    if checks is None or checks.platform is not platform:
        checks = request.app.state.health_checks = HealthChecks(platform)
    return checks


@router.get("/livez", summary="The process is alive")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, summary="Every backend is reachable and migrated (and, "
            "under `medcycle deploy`, a worker is ready)")
async def readyz(request: Request, platform: PlatformDep) -> JSONResponse:
    health = await _checks(request, platform).run()
    body = ReadyOut(ready=all(h.ok for h in health), backends=[BackendOut(**h.to_dict()) for h in health])
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.head("/livez", include_in_schema=False)
async def livez_head() -> Response:
    """``HEAD /livez``: load balancers and uptime checkers probe with HEAD."""
    return Response(status_code=200)


@router.head("/readyz", include_in_schema=False)
async def readyz_head(request: Request, platform: PlatformDep) -> Response:
    """``HEAD /readyz``: the status of ``GET /readyz`` without its body."""
    health = await _checks(request, platform).run()
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
