"""The app with the hypotheses API router and web pages, as ``medcycle.api.app`` / ``medcycle.web`` will wire them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medcycle.api.app import create_app
from medcycle.api.routers import hypotheses as hypotheses_router
from medcycle.auth import users
from medcycle.platform import Platform
from medcycle.web import hypotheses as hypotheses_pages


def make_app(platform: Platform) -> FastAPI:
    app = create_app(platform, web=True)
    paths = {getattr(r, "path", "") for r in app.routes}
    if "/v1/hypotheses" not in paths:
        app.include_router(hypotheses_router.router)  # until medcycle.api.app includes it
    if "/ui/hypotheses/{ref}" not in paths:
        # until medcycle.web mounts it: our page goes before the stage placeholder at the same path
        before = len(app.router.routes)
        app.include_router(hypotheses_pages.router)
        ours = app.router.routes[before:]
        del app.router.routes[before:]
        app.router.routes[0:0] = ours
    return app


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(make_app(platform), raise_server_exceptions=False, follow_redirects=False) as c:
        yield c


def token_for(platform: Platform, name: str, role: str) -> dict[str, str]:
    with platform.session() as s:
        users.create_user(s, name, role)
        secret = users.create_token(s, name).secret
    return {"Authorization": f"Bearer {secret}"}
