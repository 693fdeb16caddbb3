"""The datasets router: permissions, one error shape, create/freeze/log/show/diff/card/manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medcycle.api.app import create_app
from medcycle.api.routers import datasets as datasets_router
from medcycle.auth import audit, users
from medcycle.platform import Platform
from tests.datasets.conftest import Catalog, labels_csv


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    app: FastAPI = create_app(platform, web=False)
    if not any(getattr(r, "path", "").startswith("/v1/datasets") for r in app.routes):
        app.include_router(datasets_router.router)  # until medcycle.api.app includes it
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def token_for(platform: Platform, name: str, role: str) -> dict[str, str]:
    with platform.session() as s:
        users.create_user(s, name, role)
        secret = users.create_token(s, name).secret
    return {"Authorization": f"Bearer {secret}"}


def test_datasets_api(client: TestClient, platform: Platform, catalog: Catalog) -> None:
    eng = token_for(platform, "eng", "ml-engineer")
    viewer = token_for(platform, "vi", "viewer")
    r = client.post("/v1/datasets", json={"name": "cxr", "query": 'modality in ["CT", "MR"]'}, headers=viewer)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = client.post("/v1/datasets", json={"name": "cxr", "query": 'modality in ["CT", "MR"]'}, headers=eng)
    assert r.status_code == 201, r.text
    n_items = r.json()["items"]
    r = client.post("/v1/datasets", json={"name": "cxr"}, headers=eng)
    assert r.status_code == 409 and set(r.json()["error"]) == {"code", "message", "hint", "details"}
    r = client.post("/v1/datasets/cxr/labels?origin=l.csv", content=labels_csv(catalog.studies).encode(),
                    headers={**eng, "Content-Type": "text/csv"})
    assert r.status_code == 201 and r.json()["level"] == "study"
    r = client.post("/v1/datasets/cxr/labels", content=b"study,label\nnope,x\n", headers=eng)
    assert r.status_code == 422 and "line 2" in r.json()["error"]["message"]
    r = client.post("/v1/datasets/cxr/versions", json={"tag": "v1.0", "split": "train=0.8,test=0.2",
                                                        "stratify": ["label"]}, headers=eng)
    assert r.status_code == 201, r.text
    v1 = r.json()["version"]
    assert v1["items"] == n_items and v1["tags"] == ["v1.0"]
    r = client.post("/v1/datasets/cxr/items", json={"query": 'modality == "CR"'}, headers=eng)
    assert r.status_code == 200 and r.json()["changed"] > 0
    r = client.post("/v1/datasets/cxr/versions", json={"folds": 3, "split": "a=0.5,b=0.5"}, headers=eng)
    assert r.status_code == 400
    r = client.post("/v1/datasets/cxr/versions", json={}, headers=eng)
    assert r.status_code == 201 and r.json()["changes"]["added"] > 0

    assert [v["seq"] for v in client.get("/v1/datasets/cxr/versions", headers=viewer).json()] == [2, 1]
    assert client.get("/v1/datasets/cxr/versions/v1.0", headers=viewer).json()["id"] == v1["id"]
    assert client.get("/v1/datasets/cxr/versions/nope", headers=viewer).status_code == 404
    diff = client.get("/v1/datasets/cxr/diff", params={"a": "v1.0", "b": "v2"}, headers=viewer).json()
    assert diff["summary"]["added"] == r.json()["changes"]["added"] and diff["summary"]["removed"] == 0
    assert client.get("/v1/datasets", headers=viewer).json()[0]["versions"] == 2
    assert client.get("/v1/datasets/cxr", headers=viewer).json()["label_set"]

    r = client.patch("/v1/datasets/cxr/card", json={"fields": {"motivation": "Triage"}}, headers=eng)
    assert r.status_code == 200 and r.json() == {"motivation": "Triage"}
    md = client.get("/v1/datasets/cxr/versions/v1.0/card", params={"format": "md"}, headers=viewer)
    assert md.headers["content-type"].startswith("text/markdown") and "Triage" in md.text
    html = client.get("/v1/datasets/cxr/versions/v1.0/card", params={"format": "html"}, headers=viewer)
    assert html.text.startswith("<!doctype html>")
    card = client.get("/v1/datasets/cxr/versions/v1.0/card", params={"frozen": True}, headers=viewer).json()
    assert card["human"]["motivation"] is None
    assert client.get("/v1/datasets/cxr/versions/v1/card", params={"format": "pdf"}, headers=viewer).status_code == 422

    assert client.get("/v1/datasets/cxr/versions/v1.0/manifest", headers=viewer).status_code == 403
    manifest = client.get("/v1/datasets/cxr/versions/v1.0/manifest", headers=eng)
    assert manifest.status_code == 200 and hashlib.sha256(manifest.content).hexdigest() == v1["id"]
    with platform.session() as s:
        assert [e.actor for e in audit.query(s, action="dataset.manifest.read")] == ["eng"]
        assert {e.action for e in audit.query(s, action="dataset.")} >= {"dataset.create", "dataset.freeze"}
    assert client.delete("/v1/datasets/cxr", headers=eng).status_code == 409


def test_card_edit_over_the_limit_is_a_422(client: TestClient, platform: Platform) -> None:
    """PATCH /v1/datasets/NAME/card stored any length; the web form alone held the limit."""
    eng = token_for(platform, "eng", "ml-engineer")
    assert client.post("/v1/datasets", json={"name": "cxr", "query": ""}, headers=eng).status_code == 201
    r = client.patch("/v1/datasets/cxr/card", json={"fields": {"motivation": "m" * 20_001}}, headers=eng)
    assert r.status_code == 422, r.text[:300]
    error = r.json()["error"]
    assert error["code"] == "validation_failed" and "motivation: longer than 20,000" in error["message"]
    assert error["hint"] and error["details"]["fields"] == ["motivation"]
    r = client.patch("/v1/datasets/cxr/card", json={"fields": {"licence": "CC0\u0000"}}, headers=eng)
    assert r.status_code == 422 and "U+0000" in r.json()["error"]["message"]
    assert client.get("/v1/datasets/cxr", headers=eng).json()["card_fields"] == {}
