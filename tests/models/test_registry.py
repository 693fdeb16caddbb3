"""The model registry: lineage from a run, gates and cards before promotion, aliases, rollback, history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medcycle.auth import audit
from medcycle.errors import Conflict, NotFound, UsageError
from medcycle.experiments.sdk import start_run
from medcycle.models import cards, lineage, registry
from medcycle.platform import Platform

HUMAN = {"intended_use": "Second reader for nodules on adult PA chest radiographs.",
         "out_of_scope_use": "Children, lateral views, CT, any diagnosis without a radiologist.",
         "owners": "alice,bob", "licence": "internal"}


def trained_run(platform: Platform, tmp_path: Path, *, dataset: str | None, lr: float, auc: float) -> str:
    import torch

    torch.manual_seed(int(lr * 1e6))
    with start_run("chest", platform=platform, journal_dir=tmp_path / "journals", dataset=dataset, capture=False,
                   capture_output=False, resources=False, params={"lr": lr, "epochs": 3}) as run:
        run.log_metrics({"val/auroc": auc, "val/loss": 1 - auc}, step=3)
        run.log_model(torch.nn.Linear(4, 2))
    return run.id


@pytest.fixture
def two_versions(platform: Platform, tmp_path: Path) -> dict[str, Any]:
    from tests.experiments.datasets import frozen_version

    ref, digest = frozen_version(platform)
    first = trained_run(platform, tmp_path, dataset=ref, lr=1e-3, auc=0.81)
    second = trained_run(platform, tmp_path, dataset=ref, lr=3e-4, auc=0.86)
    with platform.session() as s:
        v1 = registry.register(s, platform.objects, "nodules", run_id=first, task="classification-2d",
                               contract={"input": {"modality": ["CR", "DX"]}, "output": {"classes": ["nodule"]}},
                               actor="alice")
        v2 = registry.register(s, platform.objects, "nodules", run_id=second, actor="alice",
                               contract=v1.contract)
    return {"dataset": (ref, digest), "runs": (first, second), "v1": v1, "v2": v2}


def test_a_version_records_where_it_came_from(platform: Platform, two_versions: dict[str, Any]) -> None:
    v1, v2 = two_versions["v1"], two_versions["v2"]
    ref, digest = two_versions["dataset"]
    assert (v1.ref, v2.ref) == ("nodules@v1", "nodules@v2")
    assert v1.run_id == two_versions["runs"][0] and v1.dataset_digest == digest and v1.dataset_ref == ref
    assert v1.metrics == {"val/auroc": 0.81, "val/loss": pytest.approx(0.19)} and v1.params["lr"] == 1e-3
    assert v1.weights_digest != v2.weights_digest and platform.objects.exists(v1.weights_digest)
    with platform.session() as s:
        assert registry.resolve(s, "nodules").id == v2.id  # bare name = latest
        assert registry.resolve(s, "nodules@1").id == v1.id
        for empty in ("nodules@", "nodules@ "):  # not "latest" by accident: a truncated reference is refused
            with pytest.raises(UsageError, match="nothing after '@'"):
                registry.resolve(s, empty)
        chain = lineage.of(s, "nodules@v1")["chain"]
    assert [c["stage"] for c in chain] == ["data", "labels", "run", "model", "aliases", "deployments"]
    assert chain[-1]["results"] == 0 and chain[-1]["detail"] is None  # never served
    assert chain[0]["id"] == digest and chain[2]["id"] == v1.run_id
    from medcycle.objects.maintenance import gc

    with platform.session() as s:  # the weights are referenced: gc keeps them even past the grace period
        gc(platform.objects, s, grace_seconds=0)
    assert platform.objects.exists(v1.weights_digest)


def test_lineage_reaches_the_deployments(platform: Platform, two_versions: dict[str, Any]) -> None:
    from medcycle.monitoring.tables import PredictionRow
    from medcycle.serving.tables import ServingResultRow
    from medcycle.store.base import new_id

    v1 = two_versions["v1"]
    with platform.session() as s:
        registry.promote(s, v1.ref, "production", actor="alice", force_reason="lineage test")
        for n, source in enumerate(["rest", "rest", "c-store"]):
            s.add(ServingResultRow(key=f"{n:064d}", status="done", model="nodules", model_version_id=v1.id,
                                   model_ref=v1.ref, weights_digest=v1.weights_digest, task="classification-2d",
                                   inputs_digest=f"{n:064d}", params={}, images=1, cases=[], outputs=[]))
            s.add(PredictionRow(id=new_id(), model="nodules", model_version=v1.ref, model_version_id=v1.id,
                                source=source, outcome="ok"))
    with platform.session(write=False) as s:
        chain = {c["stage"]: c for c in lineage.of(s, v1.ref)["chain"]}
        other = {c["stage"]: c for c in lineage.of(s, "nodules@v2")["chain"]}
    assert chain["aliases"]["id"] == "production"
    assert chain["aliases"]["moves"][0]["action"] == "force"  # a forced promotion
    deployed = chain["deployments"]
    assert deployed["results"] == 3 and deployed["predictions"] == {"rest": 2, "c-store": 1}
    assert "3 results stored" in deployed["detail"] and "c-store 1, rest 2" in deployed["detail"]
    assert other["deployments"]["results"] == 0 and other["aliases"]["moves"] == []


def test_promotion_needs_a_passing_gate_report_and_a_complete_card(
        platform: Platform, two_versions: dict[str, Any]) -> None:
    with platform.session() as s, pytest.raises(Conflict, match="no gate report") as info:
        registry.promote(s, "nodules@v1", "production", actor="alice")
    assert "medcycle evaluate" in (info.value.hint or "")
    with platform.session() as s:
        registry.record_gate_report(s, "nodules@v1", passed=False, summary={"failed": ["auroc"]}, policy="p.yaml")
    with platform.session() as s, pytest.raises(Conflict, match="failed its release gates"):
        registry.promote(s, "nodules@v1", "production", actor="alice")
    with platform.session() as s:
        registry.record_gate_report(s, "nodules@v1", passed=True, summary={}, policy="p.yaml")
    with platform.session() as s, pytest.raises(Conflict, match=r"card of nodules@v1 is incomplete.*intended_use"):
        registry.promote(s, "nodules@v1", "production", actor="alice")
    with platform.session() as s:
        cards.edit(s, "nodules@v1", HUMAN, actor="alice")
        move = registry.promote(s, "nodules@v1", "production", actor="alice")
    assert (move.from_ref, move.to_ref, move.action) == (None, "nodules@v1", "promote")
    with platform.session() as s:
        assert registry.resolve(s, "nodules@production").version == 1
        assert registry.list_models(s)[0]["aliases"] == {"production": "nodules@v1"}
        with pytest.raises(Conflict, match="already points"):
            registry.promote(s, "nodules@v1", "production", actor="alice")


def test_rollback_walks_the_alias_back_and_forced_promotions_are_audited(
        platform: Platform, two_versions: dict[str, Any]) -> None:
    with platform.session() as s:
        with pytest.raises(UsageError, match="needs a reason"):
            registry.promote(s, "nodules@v1", "production", force_reason="  ", actor="alice")
        registry.promote(s, "nodules@v1", "production", force_reason="first deployment, gates not written yet",
                         actor="alice")
        registry.promote(s, "nodules@v2", "production", force_reason="hotfix", actor="bob")
        back = registry.rollback(s, "nodules", "production", actor="carol", reason="false positives")
    assert (back.from_ref, back.to_ref, back.action) == ("nodules@v2", "nodules@v1", "rollback")
    with platform.session() as s:
        assert registry.resolve(s, "nodules@production").version == 1
        with pytest.raises(Conflict, match="no earlier version"):
            registry.rollback(s, "nodules", "production", actor="carol")
        registry.promote(s, "nodules@v2", "production", force_reason="fixed", actor="bob")
        assert registry.rollback(s, "nodules", actor="carol").to_ref == "nodules@v1"
        history = registry.alias_history(s, "nodules", "production")
        forced = audit.query(s, action="model.force")
    assert [m.action for m in history] == ["force", "force", "rollback", "force", "rollback"]
    assert [e.details["reason"] for e in forced] == ["fixed", "hotfix", "first deployment, gates not written yet"]
    with platform.session() as s:
        with pytest.raises(NotFound, match="no alias 'staging'"):
            registry.rollback(s, "nodules", "staging", actor="carol")
        with pytest.raises(UsageError, match="not a valid alias"):
            registry.promote(s, "nodules@v2", "latest", force_reason="x", actor="bob")


def test_the_card_validates_renders_and_shows_changes(platform: Platform, two_versions: dict[str, Any]) -> None:
    with platform.session() as s:
        card = cards.build(s, "nodules@v2")
        problems = cards.validate(card)
        assert any(p.startswith("(card): 'intended_use' is a required property") for p in problems)
        cards.edit(s, "nodules@v2", HUMAN, actor="alice")
        card = cards.build(s, "nodules@v2")
    assert cards.validate(card) == []
    assert card["model_details"]["owners"] == ["alice", "bob"]
    assert card["changes"]["previous"] == "nodules@v1" and card["changes"]["data_changed"] is False
    assert card["changes"]["metrics"]["val/auroc"]["delta"] == pytest.approx(0.05)
    assert card["changes"]["params"]["lr"] == {"before": 1e-3, "after": 3e-4}
    assert {s["name"] for s in card["software"]} >= {"medcycle", "torch", "numpy"}
    md = cards.markdown(card)
    assert "## Intended use" in md and "val/auroc: 0.81 → 0.86" in md
    page = cards.to_html(card)
    assert "<h2>Intended use</h2>" in page and "<table>" in page
    broken = {**card, "model_details": {**card["model_details"], "weights_digest": "xyz"}}
    assert any(p.startswith("model_details.weights_digest:") for p in cards.validate(broken))
    with platform.session() as s, pytest.raises(UsageError, match="not a field people edit"):
        cards.edit(s, "nodules@v2", {"metrics": "great"}, actor="alice")


def test_bad_references_say_what_to_do(platform: Platform, two_versions: dict[str, Any], tmp_path: Path) -> None:
    with platform.session() as s:
        with pytest.raises(NotFound, match="no model named 'other'") as info:
            registry.resolve(s, "other@v1")
        assert "model list" in (info.value.hint or "")
        with pytest.raises(NotFound, match="has no version v9"):
            registry.resolve(s, "nodules@v9")
        with pytest.raises(UsageError, match="not a valid model name"):
            registry.register(s, platform.objects, "Bad Name", weights_digest="a" * 64)
        with pytest.raises(NotFound, match="not in the object store"):
            registry.register(s, platform.objects, "nodules", weights_digest="a" * 64)
        with pytest.raises(NotFound, match="logged no model named 'best'"):
            registry.register(s, platform.objects, "nodules", run_id=two_versions["runs"][0], artifact="best")
        with pytest.raises(UsageError, match="either a run or a weights digest"):
            registry.register(s, platform.objects, "nodules")
