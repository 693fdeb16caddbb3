"""``medcycle model …`` through the real root command, and the REST routes with real tokens and roles."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medcycle.api.app import create_app
from medcycle.auth import users
from medcycle.cli.errors import run
from medcycle.cli.main import app as cli_app
from medcycle.platform import Platform


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    h = tmp_path / "home"
    monkeypatch.setenv("MEDCYCLE_HOME", str(h))
    monkeypatch.setenv("MEDCYCLE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "200")
    return h


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(cli_app, ["model", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def ok_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_register_card_promote_rollback_from_the_command_line(home: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    for i in (1, 2):
        (tmp_path / f"w{i}.pt").write_bytes(f"weights {i}".encode())
    contract = tmp_path / "contract.json"
    contract.write_text(json.dumps({"input": {"modality": ["CR"]}, "output": {"classes": ["nodule"]}}))
    v1 = ok_json(capsys, "register", "nodules", "--weights", str(tmp_path / "w1.pt"), "--contract", str(contract))
    assert v1["ref"] == "nodules@v1" and v1["weights_bytes"] == 9
    code, _out, err = cli(capsys, "promote", "nodules@v1")
    assert code == 5 and "no gate report" in err and "medcycle evaluate" in err
    code, _out, err = cli(capsys, "promote", "nodules@v1", "--force")
    assert code == 2 and "--force needs --reason" in err
    assert ok_json(capsys, "promote", "nodules@v1", "--force", "--reason", "pilot")["to"] == "nodules@v1"
    ok_json(capsys, "register", "nodules", "--weights", str(tmp_path / "w2.pt"))
    ok_json(capsys, "promote", "nodules@v2", "--force", "--reason", "retrained")
    back = ok_json(capsys, "rollback", "nodules")
    assert (back["from"], back["to"], back["action"]) == ("nodules@v2", "nodules@v1", "rollback")
    assert [m["action"] for m in ok_json(capsys, "history", "nodules")] == ["force", "force", "rollback"]
    listed = ok_json(capsys, "list")
    assert listed == [{"name": "nodules", "task": None, "description": None, "versions": 2,
                       "latest": "nodules@v2", "aliases": {"production": "nodules@v1"}}]
    code, out, _err = cli(capsys, "card", "nodules@production", "--format", "json",
                          "--set", "intended_use=Second reader on adult chest radiographs.",
                          "--set", "out_of_scope_use=Children, CT, lateral views, unsupervised use.")
    assert code == 0 and json.loads(out)["intended_use"].startswith("Second reader")
    code, out, _err = cli(capsys, "card", "nodules@v1", "--format", "html", "--out", str(tmp_path / "card.html"))
    assert code == 0 and "<h1>Model card: nodules@v1</h1>" in (tmp_path / "card.html").read_text()
    code, _out, err = cli(capsys, "card", "nodules@v1", "--set", "metrics=1")
    assert code == 2 and "not a field people edit" in err
    code, _out, err = cli(capsys, "show", "nodules@v7")
    assert code == 4 and "has no version v7" in err
    assert ok_json(capsys, "lineage", "nodules@v1")["chain"][3]["id"] == "nodules@v1"


def token(platform: Platform, name: str, role: str) -> dict[str, str]:
    with platform.session() as s:
        users.create_user(s, name, role)
        secret = users.create_token(s, name).secret
    return {"Authorization": f"Bearer {secret}"}


def test_rest_routes_check_roles(platform: Platform) -> None:
    weights = [platform.objects.put(f"weights {i}".encode()).digest for i in (1, 2)]
    with TestClient(create_app(platform, web=False), raise_server_exceptions=False) as client:
        viewer, eng = token(platform, "vi", "viewer"), token(platform, "eng", "ml-engineer")
        r = client.post("/v1/models/nodules/versions", json={"weights_digest": weights[0]}, headers=viewer)
        assert r.status_code == 403
        contract = {"input": {"modality": ["CR"]}, "output": {"classes": ["nodule"]}}
        for digest in weights:
            r = client.post("/v1/models/nodules/versions", json={"weights_digest": digest, "contract": contract},
                            headers=eng)
            assert r.status_code == 201, r.text
        r = client.post("/v1/models/nodules/versions/v1/promote", json={}, headers=eng)
        assert r.status_code == 409 and "no gate report" in r.json()["error"]["message"]
        r = client.post("/v1/models/nodules/versions/v1/gate-reports", json={"passed": True}, headers=eng)
        assert r.status_code == 201
        r = client.patch("/v1/models/nodules/versions/v1/card", headers=eng,
                         json={"intended_use": "Second reader on adult chest radiographs.",
                               "out_of_scope_use": "Children, CT, lateral views, unsupervised use."})
        assert r.status_code == 200 and r.json()["problems"] == []
        assert client.post("/v1/models/nodules/versions/v1/promote", json={}, headers=viewer).status_code == 403
        r = client.post("/v1/models/nodules/versions/v1/promote", json={}, headers=eng)
        assert r.status_code == 200 and r.json()["to"] == "nodules@v1"
        r = client.post("/v1/models/nodules/versions/v2/promote", json={"force_reason": "canary"}, headers=eng)
        assert r.status_code == 200
        r = client.post("/v1/models/nodules/rollback", json={}, headers=eng)
        assert r.status_code == 200 and r.json()["to"] == "nodules@v1"
        r = client.get("/v1/models/nodules/versions/production", headers=viewer)
        assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["gate_reports"][0]["passed"] is True
        r = client.get("/v1/models/nodules/versions/v1/card?format=md", headers=viewer)
        assert r.status_code == 200 and r.text.startswith("# Model card: nodules@v1")
        assert client.get("/v1/models/nodules/versions/v9", headers=viewer).status_code == 404
        assert [m["action"] for m in client.get("/v1/models/nodules/history", headers=viewer).json()] == [
            "promote", "force", "rollback"]
