"""Annotators only ever see the items assigned to them: item-level catalog metadata needs ``browse``."""

from __future__ import annotations

from fastapi.testclient import TestClient

from medcycle.api.app import create_app
from medcycle.auth import users
from medcycle.platform import Platform


def bearer(platform: Platform, name: str, role: str) -> dict[str, str]:
    with platform.session() as s:
        users.create_user(s, name, role)
        return {"Authorization": f"Bearer {users.create_token(s, name).secret}"}


def test_annotators_get_aggregates_but_no_item_listing(sqlite_platform: Platform) -> None:
    with TestClient(create_app(sqlite_platform, web=True), follow_redirects=False) as client:
        annotator, viewer = bearer(sqlite_platform, "ann", "annotator"), bearer(sqlite_platform, "vi", "viewer")
        assert client.get("/v1/catalog/summary", headers=annotator).status_code == 200
        for path in ("/v1/catalog/query", "/v1/catalog/instances/1.2.3", "/ui/data"):
            r = client.get(path, headers=annotator)
            assert r.status_code == 403, path
        assert "may not browse" in client.get("/v1/catalog/query", headers=annotator).json()["error"]["message"]
        assert client.get("/v1/catalog/query", headers=viewer).status_code == 200
        assert client.get("/v1/catalog/instances/1.2.3", headers=viewer).status_code == 404
