"""``create_app(platform)``: the REST API and the web UI in one ASGI app."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from medcycle import __version__
from medcycle.api.errors import install_error_handlers
from medcycle.api.metrics import ApiMetrics, install_metrics
from medcycle.api.routers import (
    catalog,
    datasets,
    hypotheses,
    inference,
    labels,
    labels_active,
    labels_qualification,
    models,
    monitoring,
    objects,
    pipelines,
    queues,
    run_cards,
    runs,
    system,
    users,
)
from medcycle.platform import Platform
from medcycle.serving import dicomweb

log = logging.getLogger(__name__)

# A request is matched against the routes in this order, one by one (1–2 µs each here): the hot paths of a
# serving deployment — probes and metrics, job submission and polling, DICOMweb intake — come first, so that a
# 429 under overload does not first try the hundred-odd routes of the rest of the API. No two routers share a
# path, so the order decides nothing else.
ROUTERS = (
    system.router,
    inference.router,
    dicomweb.router,
    users.router,
    objects.router,
    queues.router,
    catalog.router,
    datasets.router,
    hypotheses.router,
    runs.router,
    run_cards.router,
    pipelines.router,
    labels.router,
    labels_qualification.router,
    labels_active.router,
    models.router,
    monitoring.router,
)


def create_app(platform: Platform, *, migrate: bool = True, web: bool = True) -> FastAPI:
    """Build the app for ``platform``. Migrations are applied here unless ``migrate`` is False."""
    if migrate:
        platform.migrate()
    app = FastAPI(
        title="medcycle",
        version=__version__,
        description="The medcycle REST API. Authenticate with `Authorization: Bearer <token>`.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.platform = platform
    app.state.metrics = ApiMetrics()
    from medcycle.monitoring.metrics import MonitoringCollector
    from medcycle.monitoring.sentry import init_sentry

    app.state.metrics.registry.register(MonitoringCollector(platform))
    init_sentry(platform.settings, component="api")
    install_error_handlers(app)
    install_metrics(app, app.state.metrics)
    for router in ROUTERS:
        app.include_router(router)
    if web:
        from medcycle.web import mount_web

        mount_web(app, platform)
    return app
