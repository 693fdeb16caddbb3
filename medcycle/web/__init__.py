"""The web UI: server-rendered pages over the library, mounted on the API's app.

Pages live at ``/`` and ``/ui/...``, the login form at ``/login``, static files at ``/static/...``;
none of these collide with the API (``/v1/...``, ``/livez``, ``/readyz``, ``/metrics``, ``/docs``).
Each module holds one page group and only calls library functions and renders:

* :mod:`medcycle.web.pages` — the overview and the life-cycle stage pages
* :mod:`medcycle.web.hypotheses` — the ranked hypothesis register
* :mod:`medcycle.web.catalog` — the data catalog; :mod:`medcycle.web.datasets` — datasets, versions, cards
* :mod:`medcycle.web.labels` — labeling tasks, a reader's queue, labeling an item, review, agreement
* :mod:`medcycle.web.runs` — tracked runs: the table, one run, compare (:mod:`~medcycle.web.runs_compare`)
  and the experiment card (:mod:`~medcycle.web.runs_card`)
* :mod:`medcycle.web.pipelines` — pipeline DAGs and their runs
* :mod:`medcycle.web.agents` — training tasks per queue and the agents running them (cancel a task)
* :mod:`medcycle.web.serving` — deployments and aliases, workers holding jobs, the inference queue, recent jobs
* :mod:`medcycle.web.models` — the model registry, version lineage and cards, gate reports (evaluation)
* :mod:`medcycle.web.admin` — users and tokens, audit log, queues, object store
* :mod:`medcycle.web.auth_views` — log in with an API token, log out
* :mod:`medcycle.web.assets` — our CSS/JS and plotly.js from the installed package
* :mod:`medcycle.web.render` — the Jinja2 environment; :mod:`medcycle.web.errors` — HTML errors
"""

from __future__ import annotations

from fastapi import FastAPI

from medcycle.platform import Platform

__all__ = ["mount_web"]


def mount_web(app: FastAPI, platform: Platform) -> None:
    """Add the web UI's routes, static files and HTML error pages to ``app``."""
    from medcycle.web import (
        admin,
        agents,
        assets,
        auth_views,
        catalog,
        datasets,
        hypotheses,
        labels,
        models,
        monitoring,
        pages,
        pipelines,
        runs,
        serving,
    )
    from medcycle.web.errors import install_page_error_handlers
    from medcycle.web.render import Renderer

    app.state.web_renderer = Renderer(auth_enabled=platform.settings.auth_enabled)
    for router in (
        auth_views.router, labels.router, pages.router, hypotheses.router, catalog.router, datasets.router, runs.router,
        pipelines.router, agents.router, models.router, serving.router, monitoring.router, admin.router,
        assets.router,
    ):
        app.include_router(router)
    app.mount("/static", assets.static_files(), name="static")
    install_page_error_handlers(app)
