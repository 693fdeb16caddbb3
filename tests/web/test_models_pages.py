"""Model registry pages: list, versions with promote/rollback forms (deploy only), version lineage and card,
gate reports on the evaluation page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medcycle.api.app import create_app
from medcycle.models import cards, registry
from medcycle.platform import Platform
from tests.web.test_pages import issue_token, make_platform

HUMAN = {"intended_use": "Second reader on adult PA chest radiographs.",
         "out_of_scope_use": "Children, CT, lateral views, any use without a radiologist."}


@pytest.fixture
def registry_platform(tmp_path: Path) -> Iterator[Platform]:
    platform = make_platform(tmp_path / "home")
    platform.init()
    weights = [platform.objects.put(f"weights {i}".encode()).digest for i in (1, 2)]
    contract = {"input": {"modality": ["CR"]}, "output": {"classes": ["normal", "nodule"]}}
    with platform.session() as s:
        for digest in weights:
            registry.register(s, platform.objects, "nodules", weights_digest=digest, contract=contract,
                              task="classification-2d", actor="eng")
        registry.record_gate_report(s, "nodules@v1", passed=True, policy="gates.yaml",
                                    summary={"gates": [{"name": "metrics", "passed": True, "reasons": []}]})
        registry.record_gate_report(s, "nodules@v2", passed=False, policy="gates.yaml",
                                    summary={"gates": [{"name": "stress", "passed": False,
                                                        "reasons": ["noise 0.1: auroc drops 0.2"]}]})
        cards.edit(s, "nodules@v1", HUMAN, actor="eng")
        registry.pin_case(s, "nodules", "1.2.3.4", "nodule", reason="missed by v0", actor="eng")
    try:
        yield platform
    finally:
        platform.close()


def login(platform: Platform, name: str, role: str) -> TestClient:
    client = TestClient(create_app(platform), follow_redirects=False)
    r = client.post("/login", data={"token": issue_token(platform, name, role), "next": "/"})
    assert r.status_code == 303
    return client


def test_pages_show_versions_lineage_card_and_reports(registry_platform: Platform) -> None:
    with login(registry_platform, "vi", "viewer") as viewer:
        listing = viewer.get("/ui/models").text
        assert 'href="/ui/models/nodules"' in listing and "nodules@v2" in listing
        detail = viewer.get("/ui/models/nodules").text
        assert 'data-testid="versions"' in detail and "not evaluated" not in detail
        assert "1.2.3.4" in detail and "missed by v0" in detail
        assert 'data-testid="promote-v1"' not in detail  # a viewer gets no promote form
        version = viewer.get("/ui/models/nodules/v1").text
        assert 'data-testid="lineage"' in version and "<h2>Intended use</h2>" in version
        assert "Second reader on adult PA chest radiographs." in version and "Incomplete" not in version
        v2 = viewer.get("/ui/models/nodules/v2").text
        assert "Incomplete" in v2 and "intended_use" in v2 and "noise 0.1: auroc drops 0.2" in v2
        evaluation = viewer.get("/ui/evaluation").text
        assert evaluation.count('href="/ui/models/nodules/v') == 2 and "failed" in evaluation
        assert viewer.post("/ui/models/nodules/v1/promote", data={"alias": "production"}).status_code == 403
        assert viewer.get("/ui/models/nodules/v9").status_code == 404


def test_promote_and_roll_back_from_the_page(registry_platform: Platform) -> None:
    with login(registry_platform, "ops", "ml-engineer") as ops:
        assert 'data-testid="promote-v1"' in ops.get("/ui/models/nodules").text
        r = ops.post("/ui/models/nodules/v1/promote", data={"alias": "production"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/models/nodules#history"
        r = ops.post("/ui/models/nodules/v2/promote", data={"alias": "production"})
        assert r.status_code == 409 and "failed its release gates" in r.text  # an HTML error page says why
        r = ops.post("/ui/models/nodules/v2/promote", data={"alias": "production", "reason": "hotfix"})
        assert r.status_code == 303
        page = ops.get("/ui/models/nodules").text
        assert 'data-testid="rollback-production"' in page and "hotfix" in page
        r = ops.post("/ui/models/nodules/rollback", data={"alias": "production", "reason": "false positives"})
        assert r.status_code == 303
    with registry_platform.session() as s:
        assert registry.resolve(s, "nodules@production").version == 1
        assert [m.action for m in registry.alias_history(s, "nodules")] == ["promote", "force", "rollback"]
