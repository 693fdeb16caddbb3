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

ROUTERS = (
    system.router,
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
    inference.router,
    dicomweb.router,
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
