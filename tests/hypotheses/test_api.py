"""The hypotheses router: permissions (view / train / owner-or-admin), every operation, one error shape."""

from __future__ import annotations

from fastapi.testclient import TestClient

from medcycle.auth import audit
from medcycle.platform import Platform
from tests.hypotheses.conftest import token_for

ERROR_KEYS = {"code", "message", "hint", "details"}


def test_hypotheses_api(client: TestClient, platform: Platform) -> None:
    eng = token_for(platform, "eng", "ml-engineer")
    eng2 = token_for(platform, "eng2", "ml-engineer")
    viewer = token_for(platform, "vi", "viewer")
    admin = token_for(platform, "boss", "admin")
    body = {"title": "Pneumothorax triage", "project": "chest-xr", "description": "ER radiographs"}

    r = client.post("/v1/hypotheses", json=body, headers=viewer)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/hypotheses").status_code == 401
    r = client.post("/v1/hypotheses", json=body, headers=eng)
    assert r.status_code == 201, r.text
    h1 = r.json()
    assert (h1["ref"], h1["owner"], h1["status"], len(h1["answers"])) == ("H-1", "eng", "proposed", 10)
    r = client.post("/v1/hypotheses", json={"title": "Bone age", "project": "msk"}, headers=eng2)
    assert r.status_code == 201
    r = client.post("/v1/hypotheses", json={"title": "", "project": "msk"}, headers=eng)
    assert r.status_code == 400 and set(r.json()["error"]) == ERROR_KEYS

    r = client.post("/v1/hypotheses/H-1/scores", json={"ice": {"impact": 8, "confidence": 5, "ease": 6},
                                                       "rice": {"reach": 400, "impact": 2, "confidence": 80,
                                                                "effort": 3}}, headers=eng)
    assert r.status_code == 200 and r.json()["ice"] == 240
    r = client.post("/v1/hypotheses/H-2/scores", json={"ice": {"impact": 11, "confidence": 0, "ease": 6}}, headers=eng)
    assert r.status_code == 422 and len(r.json()["error"]["details"]["problems"]) == 2
    r = client.post("/v1/hypotheses/H-2/scores", json={"rice": {"reach": 9000, "impact": 3, "confidence": 100,
                                                                "effort": 1}}, headers=eng)
    assert r.status_code == 200
    assert client.post("/v1/hypotheses/H-2/scores", json={"ice": {"impact": 1, "confidence": 1, "ease": 1}},
                       headers=viewer).status_code == 403

    r = client.put("/v1/hypotheses/H-1/answers/will_pay", json={"answer": "Hospitals pay per study",
                                                                "confidence": "low"}, headers=eng)
    assert r.status_code == 200 and r.json()["answered"] == 1
    assert client.put("/v1/hypotheses/H-1/answers/budget", json={"answer": "x"}, headers=eng).status_code == 400
    assert client.delete("/v1/hypotheses/H-1/answers/will_pay", headers=eng).json()["answered"] == 0

    # anyone who may view may vote, once each, changeably
    r = client.put("/v1/hypotheses/H-2/vote", json={"value": "up", "comment": "yes"}, headers=viewer)
    assert r.status_code == 200
    client.put("/v1/hypotheses/H-2/vote", json={"value": "down"}, headers=viewer)
    r = client.put("/v1/hypotheses/H-2/vote", json={"value": "up"}, headers=eng)
    assert r.json()["votes"]["score"] == 0 and len(r.json()["votes"]["cast"]) == 2
    assert client.delete("/v1/hypotheses/H-2/vote", headers=eng).json()["votes"]["score"] == -1

    assert client.post("/v1/hypotheses/H-1/decision", json={"decision": "go"}, headers=viewer).status_code == 403
    r = client.post("/v1/hypotheses/H-1/decision", json={"decision": "go", "by": "cmo", "note": "now"}, headers=eng)
    assert r.json()["decision"]["by"] == "cmo"

    r = client.post("/v1/hypotheses/H-1/links", json={"kind": "run", "target": "run-7"}, headers=eng)
    assert r.status_code == 201
    assert client.post("/v1/hypotheses/H-1/links", json={"kind": "run", "target": "run-7"},
                       headers=eng).status_code == 200  # already linked
    r = client.delete("/v1/hypotheses/H-1/links", params={"kind": "run", "target": "run-7"}, headers=eng)
    assert r.status_code == 200 and r.json()["links"] == []

    # status: explore needs train; close/reopen need the owner or an admin
    assert client.post("/v1/hypotheses/H-1/explore", json={}, headers=viewer).status_code == 403
    assert client.post("/v1/hypotheses/H-1/explore", json={"reason": "baseline"}, headers=eng).status_code == 200
    r = client.post("/v1/hypotheses/H-1/close", json={"verdict": "validated", "reason": "AUC 0.94"}, headers=eng2)
    assert r.status_code == 403 and "only its owner" in r.json()["error"]["message"]
    r = client.post("/v1/hypotheses/H-1/close", json={"verdict": "validated", "reason": "AUC 0.94"}, headers=eng)
    assert r.status_code == 200 and r.json()["status"] == "validated"
    r = client.post("/v1/hypotheses/H-2/close", json={"verdict": "validated", "reason": "x"}, headers=admin)
    assert r.status_code == 409 and "explore" in r.json()["error"]["hint"]
    assert client.post("/v1/hypotheses/H-2/close", json={"verdict": "killed", "reason": "no payer"},
                       headers=admin).status_code == 200
    assert client.post("/v1/hypotheses/H-2/vote", json={"value": "up"}, headers=viewer).status_code == 405
    assert client.put("/v1/hypotheses/H-2/vote", json={"value": "up"}, headers=viewer).status_code == 409
    r = client.post("/v1/hypotheses/H-2/reopen", json={"reason": ""}, headers=eng2)
    assert r.status_code == 400 and "reason is required" in r.json()["error"]["message"]
    r = client.post("/v1/hypotheses/H-2/reopen", json={"reason": "vendor interest"}, headers=eng2)
    assert r.status_code == 200 and [h["to"] for h in r.json()["history"]] == ["proposed", "killed", "exploring"]

    r = client.patch("/v1/hypotheses/H-2", json={"owner": "eng"}, headers=eng)
    assert r.json()["owner"] == "eng"

    # ranking
    assert [h["ref"] for h in client.get("/v1/hypotheses", headers=viewer).json()] == ["H-1", "H-2"]
    assert [h["ref"] for h in client.get("/v1/hypotheses?sort=rice", headers=viewer).json()] == ["H-2", "H-1"]
    listed = client.get("/v1/hypotheses?status=validated", headers=viewer).json()
    assert [(h["ref"], h["rank"], h["decision"]["decision"]) for h in listed] == [("H-1", 1, "go")]
    r = client.get("/v1/hypotheses?sort=age", headers=viewer)
    assert r.status_code == 400 and "ice, rice, votes" in r.json()["error"]["hint"]
    assert client.get("/v1/hypotheses/H-9", headers=viewer).status_code == 404
    assert client.get("/v1/hypotheses/questions", headers=viewer).json()[0]["key"] == "problem"

    with platform.session() as s:
        events = audit.query(s, action="hypothesis.", limit=1000)
    assert {e.via for e in events} == {"api"} and len(events) == 18
