"""The labels API with real tokens of different users: annotators only ever see the items assigned to them,
blinded readers never see another reader's labels, seniors adjudicate, leads see all — refusals audited."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import update

from medcycle.api.app import create_app
from medcycle.api.routers import labels as labels_router
from medcycle.auth import audit
from medcycle.catalog.tables import InstanceRow
from medcycle.platform import Platform
from tests.labels.task_helpers import CLASS_SCHEMA, small_catalog, token_for

QUERY = 'modality != "none"'


def make_app(platform: Platform) -> FastAPI:
    app = create_app(platform, web=False)
    if "/v1/labels/tasks" not in {getattr(r, "path", "") for r in app.routes}:
        app.include_router(labels_router.router)  # until medcycle.api.app includes it
    return app


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(make_app(platform), raise_server_exceptions=False) as c:
        yield c


def denials(platform: Platform, actor: str) -> list[tuple[str, str | None, Any]]:
    with platform.session() as s:
        return [(e.action, e.target_id, e.details.get("item") or e.details.get("reader"))
                for e in audit.query(s, actor=actor) if e.outcome == "denied"]


def test_annotators_see_only_their_items_and_blinded_labels(client: TestClient, platform: Platform) -> None:
    uids = small_catalog(platform, patients=3, per_series=2)  # 6 instances
    lead = token_for(platform, "lead", "admin")
    eng = token_for(platform, "eng", "ml-engineer")
    ann, bob, cal = (token_for(platform, n, "annotator") for n in ("ann", "bob", "cal"))
    sue = token_for(platform, "sue", "annotator")
    vic = token_for(platform, "vic", "viewer")

    # set-up is for leads: schemas and tasks need write-data, reader flags need admin
    assert client.post("/v1/labels/schemas", json={"text": CLASS_SCHEMA}).status_code == 401
    assert client.post("/v1/labels/schemas", json={"text": CLASS_SCHEMA}, headers=ann).status_code == 403
    r = client.post("/v1/labels/schemas", json={"text": CLASS_SCHEMA, "origin": "chest.yaml"}, headers=eng)
    assert r.status_code == 201 and r.json()["ref"] == "chest@1"
    assert client.post("/v1/labels/schemas", json={"text": CLASS_SCHEMA}, headers=eng).status_code == 200
    r = client.post("/v1/labels/schemas", json={"text": "name: x\nclasses: [a, a]\n"}, headers=eng)
    assert r.status_code == 422 and "classes[1].name" in r.json()["error"]["message"]
    assert client.put("/v1/labels/readers/ann", json={"qualified": True}, headers=eng).status_code == 403
    for name in ("ann", "bob", "cal"):
        assert client.put(f"/v1/labels/readers/{name}", json={"qualified": True}, headers=lead).status_code == 200
    assert client.put("/v1/labels/readers/sue", json={"senior": True}, headers=lead).json()["senior"] is True
    body = {"schema": "chest", "query": QUERY, "readers_per_item": 2, "readers": ["ann", "bob", "cal"],
            "adjudication_threshold": 0.9, "seed": 3}
    assert client.post("/v1/labels/tasks", json=body, headers=ann).status_code == 403
    r = client.post("/v1/labels/tasks", json=body, headers=eng)
    assert r.status_code == 201, r.text
    t1 = r.json()
    assert (t1["ref"], t1["items"], t1["blinded"]) == ("T-1", 6, True)
    r = client.post("/v1/labels/tasks", json={**body, "readers": ["ann", "bob"], "blinded": False,
                                              "adjudication_threshold": None}, headers=eng)
    assert r.status_code == 201 and r.json()["ref"] == "T-2"

    # queues: your own only
    mine = client.get("/v1/labels/queue", params={"task": "T-1"}, headers=ann).json()
    assert len(mine) == 4 and {e["task"] for e in mine} == {"T-1"}  # 6 items x 2 readers / 3
    ann_items = {e["item"] for e in mine}
    r = client.get("/v1/labels/queue", params={"reader": "bob"}, headers=ann)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/labels/queue", params={"reader": "bob"}, headers=lead).status_code == 200
    assert client.get("/v1/labels/queue", headers=vic).status_code == 403
    bob_items = {e["item"] for e in client.get("/v1/labels/queue", params={"task": "T-1"}, headers=bob).json()}
    not_ann = sorted(set(uids) - ann_items)
    shared = sorted(ann_items & bob_items)
    assert len(not_ann) == 2 and shared

    # an item not assigned to you is answered like one that does not exist, and the attempt is audited
    for path in (f"/v1/labels/tasks/T-1/items/{not_ann[0]}", f"/v1/labels/tasks/T-1/items/{not_ann[0]}/annotations",
                 f"/v1/labels/tasks/T-1/items/{not_ann[0]}/image.png", "/v1/labels/tasks/T-1/items/2.25.0"):
        r = client.get(path, headers=ann)
        assert r.status_code == 404, path
        assert r.json()["error"]["message"].startswith("T-1 has no item") and "assigned to ann" in r.json()["error"][
            "message"]
    r = client.post(f"/v1/labels/tasks/T-1/items/{not_ann[0]}/annotations", json={"annotations": [
        {"label": "normal"}]}, headers=ann)
    assert r.status_code == 404

    # submitting: the reply of a blinded task does not tell whether the others agreed
    item = shared[0]
    r = client.post(f"/v1/labels/tasks/T-1/items/{item}/annotations",
                    json={"annotations": [{"label": "normal"}], "seconds": 20, "tool": "web"}, headers=ann)
    assert r.status_code == 201, r.text
    assert r.json()["item_state"] == "submitted" and r.json()["annotations"][0]["reader"] == "ann"
    r = client.post(f"/v1/labels/tasks/T-1/items/{item}/annotations", json={"annotations": [
        {"label": "pneumonia"}]}, headers=bob)
    assert (r.json()["item_state"], r.json()["agreement"]) == ("submitted", None)
    r = client.post(f"/v1/labels/tasks/T-1/items/{item}/annotations", json={"annotations": [{"label": "x"}]},
                    headers=ann)
    assert r.status_code == 409  # submitted once; annotations are immutable
    r = client.post(f"/v1/labels/tasks/T-1/items/{shared[-1] if len(shared) > 1 else sorted(ann_items)[0]}/"
                    "annotations", json={"annotations": [{"label": "normal", "kind": "box", "box": [1, 2]}]},
                    headers=ann)
    assert r.status_code == 422 and "annotations[0].box" in r.json()["error"]["message"]

    # blinded: a reader sees only their own labels; asking for another's is refused and audited
    got = client.get(f"/v1/labels/tasks/T-1/items/{item}/annotations", headers=ann).json()
    assert [(a["reader"], a["label"]) for a in got] == [("ann", "normal")]
    r = client.get(f"/v1/labels/tasks/T-1/items/{item}/annotations", params={"reader": "bob"}, headers=ann)
    assert r.status_code == 403 and "blinded" in r.json()["error"]["message"]
    view = client.get(f"/v1/labels/tasks/T-1/items/{item}", headers=ann).json()
    assert (view["role"], view["assignment"], view["state"], view["agreement"], view["readers"]) == (
        "reader", "submitted", None, None, [])
    assert [a["reader"] for a in view["annotations"]] == ["ann"]
    # leads see everything
    lead_view = client.get(f"/v1/labels/tasks/T-1/items/{item}", headers=eng).json()
    assert (lead_view["state"], lead_view["agreement"], lead_view["readers"]) == ("adjudication", 0.0, ["ann", "bob"])
    assert {a["reader"] for a in lead_view["annotations"]} == {"ann", "bob"}

    # tasks: a reader lists and opens only the tasks they are in, and sees only their own progress
    assert [t["ref"] for t in client.get("/v1/labels/tasks", headers=cal).json()] == ["T-1"]
    assert [t["ref"] for t in client.get("/v1/labels/tasks", headers=lead).json()] == ["T-2", "T-1"]
    assert client.get("/v1/labels/tasks/T-2", headers=cal).status_code == 404
    assert client.get("/v1/labels/tasks/T-9", headers=cal).status_code == 404
    assert client.get("/v1/labels/tasks/T-9", headers=eng).status_code == 404  # not a refusal: not audited
    shown = client.get("/v1/labels/tasks/T-1", headers=ann).json()
    assert [r["reader"] for r in shown["reader_progress"]] == ["ann"] and shown["item_states"] == {}
    assert len(client.get("/v1/labels/tasks/T-1", headers=eng).json()["reader_progress"]) == 3

    # unblinded: readers see each other's readings of the items they share
    t2_item = sorted({e["item"] for e in client.get("/v1/labels/queue", params={"task": "T-2"}, headers=ann).json()})[0]
    for who, label in ((ann, "normal"), (bob, "effusion")):
        r = client.post(f"/v1/labels/tasks/T-2/items/{t2_item}/annotations", json={"annotations": [{"label": label}]},
                        headers=who)
        assert r.status_code == 201
    assert r.json()["item_state"] == "complete"  # no threshold on T-2
    got = client.get(f"/v1/labels/tasks/T-2/items/{t2_item}/annotations", params={"reader": "bob"}, headers=ann)
    assert got.status_code == 200 and [a["label"] for a in got.json()] == ["effusion"]

    # adjudication: seniors and leads only; a senior sees every reading of a queued item
    assert client.get("/v1/labels/adjudications", headers=ann).status_code == 403
    queue = client.get("/v1/labels/adjudications", headers=sue).json()
    assert [(q["task"], q["item"], q["readers"]) for q in queue] == [("T-1", item, ["ann", "bob"])]
    senior_view = client.get(f"/v1/labels/tasks/T-1/items/{item}", headers=sue).json()
    assert senior_view["role"] == "adjudicator" and {a["reader"] for a in senior_view["annotations"]} == {"ann", "bob"}
    r = client.post(f"/v1/labels/tasks/T-1/items/{item}/adjudication", json={"choose_reader": "ann"}, headers=bob)
    assert r.status_code == 403 and "senior" in r.json()["error"]["message"]
    r = client.post(f"/v1/labels/tasks/T-1/items/{item}/adjudication",
                    json={"choose_reader": "bob", "note": "opacity"}, headers=sue)
    assert r.status_code == 200 and r.json()["decision"] == "reader:bob"
    assert client.get("/v1/labels/adjudications", headers=sue).json() == []

    # label sets: made by leads; their labels are data (read-data)
    r = client.post("/v1/labels/sets", json={"task": "T-1"}, headers=eng)
    assert r.status_code == 409 and "--partial" in r.json()["error"]["hint"]
    r = client.post("/v1/labels/sets", json={"task": "T-1", "partial": True}, headers=eng)
    assert r.status_code == 201 and r.json()["items"] == 1
    set_id = r.json()["id"]
    assert client.post("/v1/labels/sets", json={"task": "T-1", "partial": True}, headers=eng).status_code == 200
    assert [s["id"] for s in client.get("/v1/labels/sets", headers=vic).json()] == [set_id]
    assert client.get(f"/v1/labels/sets/{set_id}/dataset-labels", headers=ann).status_code == 403
    r = client.get(f"/v1/labels/sets/{set_id[:10]}/dataset-labels", params={"format": "csv"}, headers=eng)
    assert r.status_code == 200 and r.text == f"instance,label\n{item},pneumonia\n"

    # every refusal of the access rule is in the audit log, attributed
    got = denials(platform, "ann")
    assert ("labels.queue.read", None, "bob") in got
    assert ("labels.item.read", "T-1", not_ann[0]) in got and ("labels.annotations.read", "T-1", not_ann[0]) in got
    assert ("labels.image.view", "T-1", not_ann[0]) in got and ("labels.submit", "T-1", not_ann[0]) in got
    assert ("labels.item.read", "T-1", "2.25.0") in got
    assert ("labels.annotations.read", "T-1", item) in got  # another reader's labels in a blinded task
    assert {a for a, _, _ in denials(platform, "cal")} == {"labels.task.read"}
    assert denials(platform, "eng") == [] and denials(platform, "sue") == []


def test_an_annotator_sees_the_image_of_an_assigned_item(client: TestClient, platform: Platform) -> None:
    uids = small_catalog(platform, patients=1, per_series=2)
    lead = token_for(platform, "lead", "admin")
    ann = token_for(platform, "ann", "annotator")
    buf = io.BytesIO()
    Image.new("L", (40, 30), 128).save(buf, format="PNG")
    digest = platform.objects.put(buf.getvalue()).digest
    with platform.session() as s:
        s.execute(update(InstanceRow).where(InstanceRow.uid.in_(uids)).values(digest=digest, format="png"))
    client.post("/v1/labels/schemas", json={"text": CLASS_SCHEMA}, headers=lead)
    client.put("/v1/labels/readers/ann", json={"qualified": True}, headers=lead)
    assert client.post("/v1/labels/tasks", json={"schema": "chest", "query": QUERY}, headers=lead).status_code == 201
    r = client.get(f"/v1/labels/tasks/T-1/items/{uids[0]}/image.png", params={"size": 64}, headers=ann)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size[0] <= 64
    # the catalog's own thumbnail needs read-data, which annotators do not have
    assert client.get(f"/v1/catalog/instances/{uids[0]}/thumbnail.png", headers=ann).status_code == 403
    with platform.session() as s:
        views = [e for e in audit.query(s, actor="ann", action="image.view")]
    assert [(e.target_id, e.via, e.details["task"]) for e in views] == [(uids[0], "api", "T-1")]
