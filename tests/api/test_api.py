from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medcycle.api.app import create_app
from medcycle.auth import users
from medcycle.objects.local import LocalObjectStore
from medcycle.platform import Platform


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform, web=False), raise_server_exceptions=False) as c:
        yield c


def token_for(platform: Platform, name: str, role: str) -> dict[str, str]:
    with platform.session() as s:
        users.create_user(s, name, role)
        secret = users.create_token(s, name).secret
    return {"Authorization": f"Bearer {secret}"}


def assert_error_shape(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "hint", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_probes_and_metrics_need_no_token(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert {b["name"] for b in ready.json()["backends"]} == {"database", "objects", "jobs"}
    for path in ("/livez", "/readyz"):  # what load balancers and uptime checkers send
        head = client.head(path)
        assert head.status_code == 200 and head.content == b"", (path, head.status_code)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "medcycle_http_requests_total" in metrics.text


def test_metrics_show_queue_depth_and_age(client: TestClient, platform: Platform) -> None:
    platform.jobs.enqueue("inference", {"n": 1})
    text = client.get("/metrics").text
    assert 'medcycle_queue_jobs{queue="inference",state="queued"} 1.0' in text
    gauge = 'medcycle_queue_oldest_queued_seconds{queue="inference"}'
    age = [line for line in text.splitlines() if line.startswith(gauge)]
    assert len(age) == 1 and 0 <= float(age[0].split()[-1]) < 60


def test_token_required_and_one_error_shape(client: TestClient, platform: Platform) -> None:
    r = client.get("/v1/info")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_error_shape(r.json(), "unauthorized")
    assert "medcycle token create" in r.json()["error"]["hint"]
    r = client.get("/v1/info", headers={"Authorization": "Basic abc"})
    assert_error_shape(r.json(), "unauthorized")
    r = client.get("/v1/info", headers={"Authorization": "Bearer mct_nope_nope"})
    assert r.status_code == 401
    r = client.get("/v1/nowhere", headers=token_for(platform, "vi", "viewer"))
    assert r.status_code == 404
    assert_error_shape(r.json(), "not_found")


def test_roles_are_enforced(client: TestClient, platform: Platform) -> None:
    viewer = token_for(platform, "vera", "viewer")
    admin = token_for(platform, "root2", "admin")
    assert client.get("/v1/info", headers=viewer).status_code == 200
    r = client.get("/v1/users", headers=viewer)
    assert r.status_code == 403
    assert_error_shape(r.json(), "forbidden")
    r = client.post("/v1/users", headers=admin, json={"name": "newbie", "role": "annotator"})
    assert r.status_code == 201 and r.json()["role"] == "annotator"
    r = client.post("/v1/users", headers=admin, json={"name": "newbie", "role": "annotator"})
    assert r.status_code == 409
    assert_error_shape(r.json(), "conflict")
    r = client.post("/v1/users", headers=admin, json={"name": "xy", "role": "boss"})
    assert r.status_code == 422
    assert_error_shape(r.json(), "validation_failed")
    assert "role" in r.json()["error"]["message"]
    me = client.get("/v1/me", headers=viewer).json()
    assert me["name"] == "vera" and me["role"] == "viewer"
    audit = client.get("/v1/audit", headers=admin, params={"action": "user."}).json()
    assert any(e["target_id"] == "newbie" and e["actor"] == "root2" for e in audit)


def test_tokens_endpoint(client: TestClient, platform: Platform) -> None:
    viewer = token_for(platform, "tim", "viewer")
    made = client.post("/v1/tokens", headers=viewer, json={"name": "script"})
    assert made.status_code == 201
    secret = made.json()["token"]
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    assert client.post("/v1/tokens", headers=viewer, json={"user": "admin"}).status_code == 403
    listed = client.get("/v1/tokens", headers=viewer).json()
    assert {t["user"] for t in listed} == {"tim"} and all("token" not in t for t in listed)
    assert client.delete(f"/v1/tokens/{made.json()['id']}", headers=viewer).status_code == 200
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_objects_upload_download_and_audit(client: TestClient, platform: Platform) -> None:
    engineer = token_for(platform, "eng", "ml-engineer")
    annotator = token_for(platform, "ann", "annotator")
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    r = client.post("/v1/objects", headers=engineer, content=data)
    assert r.status_code == 201 and r.json() == {"digest": digest, "size": len(data)}
    r = client.post("/v1/objects", headers=engineer, content=b"x", params={"expected": "1" * 64})
    assert r.status_code == 500 and r.json()["error"]["code"] == "integrity_error"
    assert client.get(f"/v1/objects/{digest}", headers=annotator).status_code == 403
    got = client.get(f"/v1/objects/{digest}", headers=engineer)
    assert got.status_code == 200 and got.content == data and got.headers["x-medcycle-digest"] == digest
    assert client.head(f"/v1/objects/{digest}", headers=engineer).headers["content-length"] == str(len(data))
    r = client.get(f"/v1/objects/{'0' * 64}", headers=engineer)
    assert r.status_code == 404 and "fsck" in r.json()["error"]["hint"]
    r = client.get("/v1/objects/not-a-digest", headers=engineer)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    admin = token_for(platform, "boss", "admin")
    reads = client.get("/v1/audit", headers=admin, params={"action": "object.read"}).json()
    assert [(e["actor"], e["target_id"]) for e in reads] == [("eng", digest)]


def test_object_uploads_over_the_bound_are_refused_and_not_stored(tmp_path: Path) -> None:
    from medcycle.testing.platform import make_settings

    platform = Platform(make_settings(tmp_path / "home", auth_enabled=False, api_max_object_bytes=100_000))
    platform.init()
    try:
        client = TestClient(create_app(platform, web=False))
        before = sorted(info.digest for info in platform.objects.list())
        r = client.post("/v1/objects", content=os.urandom(100_001))  # Content-Length says so: refused unread
        assert r.status_code == 413 and "at most 100000" in r.json()["error"]["message"], r.text
        assert "api_max_object_bytes" in r.json()["error"]["hint"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: refused once the bound is passed
            for _ in range(30):
                yield os.urandom(8192)

        r = client.post("/v1/objects", content=chunks())
        assert r.status_code == 413 and "over 100000" in r.json()["error"]["message"], r.text
        assert sorted(info.digest for info in platform.objects.list()) == before
        assert client.post("/v1/objects", content=os.urandom(100_000)).status_code == 201  # at the bound: stored
    finally:
        platform.close()


def test_corrupt_object_download_is_cut_short(client: TestClient, platform: Platform) -> None:
    engineer = token_for(platform, "eng2", "ml-engineer")
    data = os.urandom(3 * 1024 * 1024)
    info = platform.objects.put(data)
    store = platform.objects
    assert isinstance(store, LocalObjectStore)
    path = store.path_for(info.digest)
    os.chmod(path, 0o644)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    # The last chunk is held back until the digest is checked: the client gets fewer bytes than promised.
    response = client.get(f"/v1/objects/{info.digest}", headers=engineer)
    assert int(response.headers["content-length"]) == len(data)
    assert len(response.content) < len(data)


def test_queue_admin_endpoints(client: TestClient, platform: Platform) -> None:
    engineer = token_for(platform, "ops", "ml-engineer")
    viewer = token_for(platform, "watcher", "viewer")
    job = platform.jobs.enqueue("inference", {"study": "s1"})
    queues = client.get("/v1/queues", headers=viewer).json()
    assert queues == [{"queue": "inference", "counts": {"queued": 1}, "limit": platform.jobs.limit}]
    listed = client.get("/v1/queues/inference/jobs", headers=viewer).json()
    assert [j["id"] for j in listed] == [job.id]
    assert client.get(f"/v1/queues/other/jobs/{job.id}", headers=viewer).status_code == 404
    assert client.post(f"/v1/queues/inference/jobs/{job.id}/cancel", headers=viewer).status_code == 403
    r = client.post(f"/v1/queues/inference/jobs/{job.id}/cancel", headers=engineer)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = client.post(f"/v1/queues/inference/jobs/{job.id}/requeue", headers=engineer)
    assert r.json()["state"] == "queued"
    r = client.get("/v1/queues/inference/jobs", headers=viewer, params={"state": "bogus"})
    assert r.status_code == 422


def test_auth_off_lets_local_users_in(platform: Platform) -> None:
    platform.settings = platform.settings.model_copy(update={"auth_enabled": False})
    with TestClient(create_app(platform, web=False)) as c:
        assert c.get("/v1/info").status_code == 200
        assert c.get("/v1/me").json() == {"name": "local", "role": "admin"}


def test_openapi_lists_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/objects", "/v1/users", "/v1/tokens", "/v1/audit", "/v1/queues", "/readyz"):
        assert path in spec["paths"]
