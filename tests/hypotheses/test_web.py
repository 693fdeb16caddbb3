"""The hypothesis pages: the ranked table with sort links and badges, the detail page, voting from it."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from medcycle.auth import audit
from medcycle.hypotheses import decisions, lifecycle, links, register, scoring, votes
from medcycle.platform import Platform
from tests.hypotheses.conftest import token_for


def seed(platform: Platform) -> None:
    with platform.session() as s:
        a = register.create(s, "Pneumothorax triage", project="chest-xr", actor="eng")
        b = register.create(s, "Bone <age> & growth", project="msk", actor="eng")
        register.create(s, "Nodule follow-up", project="chest-ct", actor="eng")
        scoring.score(s, a.id, ice=scoring.ice(8, 5, 6), rice=scoring.rice(400, 2, 80, 3), actor="eng")
        scoring.score(s, b.id, ice=scoring.ice(2, 2, 2), rice=scoring.rice(9000, 3, 100, 1), actor="eng")
        votes.vote(s, b.id, "up", actor="ann")
        decisions.decide(s, a.id, "go", by="cmo", actor="eng")
        lifecycle.explore(s, a.id, actor="eng")
        lifecycle.close(s, 3, "killed", "no follow-up data", actor="eng")
        links.link(s, a.id, "run", "run-42", actor="eng")


def rows(html: str) -> list[str]:
    return re.findall(r'<a href="/ui/hypotheses/(H-\d+)">', html)


def test_ranked_table_sorts_filters_and_shows_scores_side_by_side(client: TestClient, platform: Platform) -> None:
    seed(platform)
    viewer = token_for(platform, "vi", "viewer")
    r = client.get("/ui/hypotheses", headers=viewer)
    assert r.status_code == 200, r.text
    html = r.text
    assert "<h1>Hypotheses</h1>" in html and "Not built yet" not in html and 'aria-current="page"' in html
    assert rows(html) == ["H-1", "H-2", "H-3"]  # ICE: 240, 8, unscored
    for header in (">ICE</a>", ">RICE</a>", ">Votes</a>", "<th>HiPPO</th>"):
        assert header in html
    assert 'href="/ui/hypotheses?sort=rice"' in html
    assert 'aria-sort="descending"><a href="/ui/hypotheses?sort=ice"' in html
    assert 'class="status state-running"' in html and 'class="status status-bad"' in html  # exploring, killed
    assert "Bone &lt;age&gt; &amp; growth" in html  # escaped
    assert rows(client.get("/ui/hypotheses?sort=rice", headers=viewer).text) == ["H-2", "H-1", "H-3"]
    assert rows(client.get("/ui/hypotheses?sort=votes", headers=viewer).text) == ["H-2", "H-1", "H-3"]
    assert rows(client.get("/ui/hypotheses?status=killed", headers=viewer).text) == ["H-3"]
    assert rows(client.get("/ui/hypotheses?project=msk", headers=viewer).text) == ["H-2"]
    assert "medcycle hypothesis add" not in html  # viewers cannot add
    bad = client.get("/ui/hypotheses?sort=age", headers=viewer)
    assert bad.status_code == 400 and "text/html" in bad.headers["content-type"]
    assert client.get("/ui/hypotheses").status_code == 303  # logged out: to the login page


def test_detail_page_and_voting(client: TestClient, platform: Platform) -> None:
    seed(platform)
    viewer = token_for(platform, "vi", "viewer")
    html = client.get("/ui/hypotheses/H-1", headers=viewer).text
    assert "<h1>Pneumothorax triage</h1>" in html
    for part in ("Is it an important and common problem?", "At what quality can rollout begin?", "240",
                 "8 × 5 × 6", "213.3", "cmo", "run-42", "exploring", 'data-testid="vote-form"'):
        assert part in html, part
    r = client.post("/ui/hypotheses/h1/vote", data={"value": "up", "comment": "seen weekly"}, headers=viewer)
    assert r.status_code == 303 and r.headers["location"] == "/ui/hypotheses/H-1#votes"
    html = client.get("/ui/hypotheses/H-1", headers=viewer).text
    assert "seen weekly" in html and "Change vote" in html and "Withdraw my vote" in html
    client.post("/ui/hypotheses/H-1/vote", data={"value": "retract"}, headers=viewer)
    assert "No votes yet." in client.get("/ui/hypotheses/H-1", headers=viewer).text
    killed = client.get("/ui/hypotheses/H-3", headers=viewer).text
    assert "Voting is closed" in killed and "no follow-up data" in killed and "vote-form" not in killed
    r = client.post("/ui/hypotheses/H-3/vote", data={"value": "up"}, headers=viewer)
    assert r.status_code == 409 and "votes are closed" in r.text
    assert client.get("/ui/hypotheses/H-99", headers=viewer).status_code == 404
    with platform.session() as s:
        assert [e.via for e in audit.query(s, action="hypothesis.vote", limit=10)][:2] == ["web", "web"]
