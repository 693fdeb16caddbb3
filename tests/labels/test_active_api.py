"""Active learning through the REST API: the next batch by every strategy from a model version's cached scores,
a scoring run that fills the cache with a real registered model, and the 4xx answers that say what to do."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medcycle.labels import active, strategies
from medcycle.models import registry
from medcycle.platform import Platform
from tests.labels.task_helpers import CLASS_SCHEMA, add_schema, qualify, small_catalog, token_for
from tests.labels.test_api import make_app
from tests.training.conftest import demo, loaded, run_options  # noqa: F401 - fixtures

QUERY = 'modality != "none"'


@dataclass
class ImageScorer:
    """A segmenter whose foreground probability is a sigmoid of each pixel damped towards the left edge (so
    flips and rotations change the output: TTA variance is not zero); dropout passes rescale it at random."""

    images: dict[str, np.ndarray[Any, Any]]
    version: str
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def predict(self, items: Sequence[str], *, dropout: bool = False,
                transform: active.InputTransform | None = None) -> list[np.ndarray[Any, Any]]:
        out = []
        for i in items:
            x = self.images[i]
            x = transform(x) if transform else x
            p = 1 / (1 + np.exp(-x[0])) * np.linspace(0.3, 1.0, x.shape[-1])[None, :]
            if dropout:
                p = p * self.rng.uniform(0.3, 1.0)
            out.append(np.stack([1 - p, p]))
        return out

    def features(self, items: Sequence[str]) -> np.ndarray[Any, Any]:
        return np.array([[float(self.images[i].mean()), float(self.images[i][0, 0].mean())] for i in items])


def register_model(platform: Platform, name: str = "seg") -> str:
    """A registered model version (weights only: the API never loads it when it ranks from the cache)."""
    with platform.session() as s:
        digest = platform.objects.put(b"weights of " + name.encode()).digest
        return registry.register(s, platform.objects, name, weights_digest=digest, actor="lead").ref


@pytest.fixture
def world(platform: Platform) -> Iterator[tuple[TestClient, list[str], dict[str, str], dict[str, str]]]:
    uids = small_catalog(platform, patients=3, per_series=3)  # 9 instances
    add_schema(platform, CLASS_SCHEMA)
    qualify(platform, "ann")
    lead, ann = token_for(platform, "lead", "admin"), token_for(platform, "ann", "annotator")
    with TestClient(make_app(platform), raise_server_exceptions=False) as c:
        yield c, uids, lead, ann


def images_for(uids: Sequence[str]) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(5)
    levels = np.linspace(-5, 4, len(uids))
    return {u: (lv + rng.normal(0, 1.5, (1, 6, 6))).astype(np.float64) for u, lv in zip(uids, levels, strict=True)}


def test_every_strategy_builds_the_next_batch_from_a_model_versions_cached_scores(
        world: tuple[TestClient, list[str], dict[str, str], dict[str, str]], platform: Platform) -> None:
    c, uids, lead, ann = world
    version = register_model(platform)
    assert version == "seg@v1"
    scorer = ImageScorer(images_for(uids), version)
    with platform.session() as s:  # the scoring run, through the SDK
        cache = active.SqlCache(s)
        for strategy in ("entropy", "margin", "tta"):
            run = active.score_items(scorer, uids, strategy, cache)
            assert list(run.measures.values()) == [{"scored": 9, "cached": 0}]
        run = active.score_items(scorer, uids, "mc_dropout", cache, mc_samples=4, features=True)
        assert run.measures == {"mc-dropout:bald:t=4": {"scored": 9, "cached": 0},
                                "features": {"scored": 9, "cached": 0}}
        again = active.score_items(scorer, uids, "entropy", cache)
        assert again.measures == {"entropy": {"scored": 0, "cached": 9}}  # cached per model version
    listed = c.get("/v1/labels/active/scores", params={"model": "seg"}, headers=lead)
    assert listed.status_code == 200 and listed.json() == {"model_version": "seg@v1", "measures": {
        "entropy": 9, "margin": 9, "tta:variance:flip0,flip1,rot90,rot180,rot270": 9, "mc-dropout:bald:t=4": 9,
        "features": 9}}

    body = {"schema": "chest", "query": QUERY, "size": 3, "model": "seg@v1"}
    # the API ranks exactly as the library does when it scores afresh (a new cache, the same model)
    fresh = active.select_batch(uids, 3, "entropy", scorer=ImageScorer(images_for(uids), version),
                                cache=active.MemoryCache())
    r = c.post("/v1/labels/active/batches", json={**body, "strategy": "entropy"}, headers=lead)
    assert r.status_code == 201, r.text
    b = r.json()
    assert b["ref"] == "B-1" and b["strategy"] == "entropy" and b["model_version"] == "seg@v1"
    assert b["items"] == list(fresh.items) and b["scores"] == pytest.approx(list(fresh.scores))
    assert b["scored"] == 0 and b["measure"] == "entropy" and b["candidates"] == 9
    expected = {u: strategies.entropy(p, "foreground") for u, p in zip(uids, scorer.predict(uids), strict=True)}
    assert b["items"] == sorted(uids, key=lambda u: (-expected[u], u))[:3]

    mc = c.post("/v1/labels/active/batches", json={**body, "strategy": "mc_dropout", "mc_samples": 4}, headers=lead)
    assert mc.status_code == 201, mc.text
    with platform.session() as s:
        bald = active.SqlCache(s).get("seg@v1", "mc-dropout:bald:t=4", uids)
    assert mc.json()["measure"] == "mc-dropout:bald:t=4" and mc.json()["params"] == {"mc_samples": 4}
    assert mc.json()["candidates"] == 9  # B-1 is no task yet: its items are still offered
    assert mc.json()["items"] == sorted(uids, key=lambda u: (-bald[u], u))[:3]
    for strategy in ("margin", "tta", "coreset"):
        r = c.post("/v1/labels/active/batches", json={**body, "strategy": strategy}, headers=lead)
        assert r.status_code == 201, (strategy, r.text)
        assert len(r.json()["items"]) == 3 and r.json()["scored"] == 0
        assert len(set(r.json()["items"])) == 3
    hybrid = c.post("/v1/labels/active/batches", json={**body, "strategy": "entropy", "diversity": 2}, headers=lead)
    assert hybrid.status_code == 201, hybrid.text
    assert hybrid.json()["params"] == {"diversity": 2.0} and hybrid.json()["items"][0] == b["items"][0]
    assert set(hybrid.json()["items"]) <= set(sorted(uids, key=lambda u: (-expected[u], u))[:6])

    # the batch becomes the next labeling task; its items are not offered again
    t = c.post("/v1/labels/active/batches/B-1/task", json={"schema": "chest"}, headers=lead)
    assert t.status_code == 201 and t.json()["items"] == 3 and t.json()["readers"] == ["ann"]
    nxt = c.post("/v1/labels/active/batches", json={**body, "strategy": "entropy"}, headers=lead).json()
    assert nxt["candidates"] == 6 and nxt["labelled"] == 3 and not set(nxt["items"]) & set(b["items"])
    assert nxt["items"] == sorted(set(uids) - set(b["items"]), key=lambda u: (-expected[u], u))[:3]
    assert c.post("/v1/labels/active/batches", json={**body, "strategy": "entropy"}, headers=ann).status_code == 403
    assert c.get("/v1/labels/active/scores", params={"model": "seg"}, headers=ann).status_code == 403


def test_clear_errors_say_what_to_do(world: tuple[TestClient, list[str], dict[str, str], dict[str, str]],
                                     platform: Platform) -> None:
    c, uids, lead, _ann = world
    body = {"schema": "chest", "query": QUERY, "size": 2}

    def error(payload: dict[str, Any], status: int) -> dict[str, str]:
        r = c.post("/v1/labels/active/batches", json={**body, **payload}, headers=lead)
        assert r.status_code == status, r.text
        out: dict[str, str] = r.json()["error"]
        return out

    e = error({"strategy": "vibes", "model": "seg"}, 400)
    assert "not a strategy" in e["message"] and "mc-dropout" in e["hint"] and "coreset" in e["hint"]
    e = error({"strategy": "entropy"}, 400)
    assert "give \"model\"" in e["message"] and "--model" in e["hint"] and "/v1/labels/active/scores" in e["hint"]
    r = c.post("/v1/labels/active/batches", json={**body, "strategy": "tta", "model": "nope@v1"}, headers=lead)
    assert r.status_code == 404
    version = register_model(platform)
    e = error({"strategy": "entropy", "model": version}, 409)  # registered, never scored
    assert "seg@v1 has no cached 'entropy' scores for 9 of 9 items" in e["message"]
    assert "medcycle labels active score --model seg@v1 --strategy entropy" in e["hint"]
    assert "POST /v1/labels/active/scores" in e["hint"] and "score_items" in e["hint"]
    scorer = ImageScorer(images_for(uids), version)
    with platform.session() as s:
        active.score_items(scorer, uids[:5], "mc-dropout", active.SqlCache(s), mc_samples=4)
    e = error({"strategy": "mc_dropout", "model": version, "mc_samples": 4}, 409)
    assert "for 4 of 9 items" in e["message"]  # a partial cache is not silently ranked
    e = error({"strategy": "mc_dropout", "model": version, "mc_samples": 8}, 409)  # another measure
    assert "'mc-dropout:bald:t=8'" in e["message"]
    e = error({"strategy": "coreset", "model": version}, 409)
    assert "'features'" in e["message"] and "--strategy coreset" in e["hint"]
    e = error({"strategy": "entropy", "model": version, "aggregate": "median"}, 400)
    assert "not a way to aggregate" in e["message"] and "top1%" in e["hint"]
    assert error({"strategy": "entropy", "model": version, "diversity": 0.5}, 422)
    r = c.post("/v1/labels/active/scores", json={"schema": "chest", "query": QUERY, "strategy": "random",
                                                 "model": version}, headers=lead)
    assert r.status_code == 400 and "random picks need no scores" in r.json()["error"]["message"]
    assert c.get("/v1/labels/active/scores", params={"model": "nope"}, headers=lead).status_code == 404


# -- a real registered model: the scoring run through the API ----------------------------------------------
DEMO_SCHEMA = """\
name: demo
level: instance
classes: [lesion, normal]
"""


def test_a_scoring_run_through_the_api_fills_the_cache_the_next_batch_ranks_by(
        sqlite_platform: Platform, loaded: dict[str, str], run_options: dict[str, object],  # noqa: F811
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import os

    from medcycle.cli.errors import run as run_cli
    from medcycle.training.config import example, validate
    from medcycle.training.trainers import train_version
    from tests.labels.test_cli import make_app as make_cli

    platform = sqlite_platform
    data = example("classification-2d", loaded["demo-xr"])
    data["training"] = {**data["training"], "threads": 1, "epochs": 1, "early_stopping": None}
    data["model"] = {"name": "tiny-cnn", "width": 8, "depth": 2, "dropout": 0.2}
    data["input"] = {**data["input"], "size": [32, 32]}
    result = train_version(platform, validate(data), dataset=loaded["demo-xr"], run_options=run_options)
    with platform.session() as s:
        model = registry.register(s, platform.objects, "nodules", run_id=result.run_id).ref
    add_schema(platform, DEMO_SCHEMA)
    qualify(platform, "ann")
    lead = token_for(platform, "lead", "admin")
    where = {"schema": "demo", "dataset": loaded["demo-xr"], "model": model}
    with TestClient(make_app(platform), raise_server_exceptions=False) as c:
        r = c.post("/v1/labels/active/batches", json={**where, "strategy": "mc_dropout", "mc_samples": 3}, headers=lead)
        assert r.status_code == 409 and "active score" in r.json()["error"]["hint"]
        r = c.post("/v1/labels/active/scores", json={**where, "strategy": "mc_dropout", "mc_samples": 3,
                                                     "features": True}, headers=lead)
        assert r.status_code == 200, r.text
        run = r.json()
        n = run["items"]
        assert n > 5 and run["model_version"] == model
        assert run["measures"] == {"mc-dropout:bald:t=3": {"scored": n, "cached": 0},
                                   "features": {"scored": n, "cached": 0}}
        b = c.post("/v1/labels/active/batches", json={**where, "strategy": "mc-dropout", "mc_samples": 3, "size": 4},
                   headers=lead)
        assert b.status_code == 201, b.text
        assert b.json()["scored"] == 0 and len(b.json()["items"]) == 4 and b.json()["candidates"] == n
        assert b.json()["scores"] == sorted(b.json()["scores"], reverse=True)
        core = c.post("/v1/labels/active/batches", json={**where, "strategy": "coreset", "size": 3}, headers=lead)
        assert core.status_code == 201 and core.json()["scored"] == 0
        # score: true runs the model in the request for what is missing
        tta = c.post("/v1/labels/active/batches", json={**where, "strategy": "tta", "size": 2, "score": True},
                     headers=lead)
        assert tta.status_code == 201, tta.text
        assert tta.json()["scored"] == tta.json()["candidates"] and len(tta.json()["items"]) == 2
        cached = c.get("/v1/labels/active/scores", params={"model": model}, headers=lead).json()["measures"]
        assert cached["mc-dropout:bald:t=3"] == n and cached["features"] == n
        assert cached["tta:variance:flip0,flip1,rot90,rot180,rot270"] == tta.json()["candidates"]

    # the CLI: a scoring run, then a batch from the cache alone (the model is not loaded)
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(platform.settings.home))
    if platform.settings.database_url:
        monkeypatch.setenv("MEDCYCLE_DATABASE_URL", platform.settings.database_url)

    def cli(*args: str) -> dict[str, Any]:
        code = run_cli(make_cli(), ["labels", "active", *args, "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        parsed: dict[str, Any] = json.loads(out.out)
        return parsed

    where_cli = ["--schema", "demo", "--dataset", loaded["demo-xr"], "--model", model]
    scored = cli("score", *where_cli, "--strategy", "margin")
    assert scored["measures"] == {"margin": {"scored": n, "cached": 0}} and scored["items"] == n
    batch = cli("next", *where_cli, "--strategy", "margin", "--cached", "--size", "3")
    assert batch["scored"] == 0 and len(batch["items"]) == 3 and batch["measure"] == "margin"
    assert batch["candidates"] == n and batch["ref"] == "B-4"  # recorded batches that are no task stay offered
