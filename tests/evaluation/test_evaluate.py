"""``medcycle evaluate``: gates on a real trained model — metrics, non-inferiority, regression, stress, OOD."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medcycle.cli.errors import run as run_cli
from medcycle.cli.main import app as cli_app
from medcycle.errors import ValidationFailed
from medcycle.evaluation.policy import load_policy, parse
from medcycle.evaluation.predict import load, predict
from medcycle.evaluation.run import evaluate, perturbation
from medcycle.models import registry
from medcycle.platform import Platform
from medcycle.testing.platform import make_settings
from medcycle.training.config import TrainingConfig, example, validate
from medcycle.training.demo_data import DemoData
from medcycle.training.demo_data import load as load_demo
from medcycle.training.trainers import train_version
from tests.training.conftest import pin_deid_key


def config(dataset: str, *, epochs: int, lr: float = 1e-3) -> TrainingConfig:
    data = example("classification-2d", dataset)
    data["training"] = {**data["training"], "threads": 1, "epochs": epochs, "early_stopping": None}
    data["optimizer"] = {**data["optimizer"], "lr": lr}
    data["model"] = {"name": "tiny-cnn", "width": 8, "depth": 2}
    data["input"] = {**data["input"], "size": [32, 32]}
    return validate(data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, demo: DemoData) -> tuple[Path, dict[str, str]]:
    """A home where nodules@v1 was trained for 6 epochs and nodules@v2 barely (a deliberately worse model), made
    once for the module; each test gets a copy of it (:func:`sqlite_platform`), so none sees another's changes."""
    root = tmp_path_factory.mktemp("evaluate-trained")
    p = Platform(make_settings(root / "home"))
    p.init()
    try:
        pin_deid_key(p)
        data = load_demo(p, demo.root, kinds=("xr",))["demo-xr"]
        options = {"journal_dir": root / "journals", "resources": False, "capture_output": False, "capture": False,
                   "flush_interval": 0.05}
        refs = {}
        for name, cfg in (("good", config(data, epochs=6)), ("bad", config(data, epochs=1, lr=1e-6))):
            result = train_version(p, cfg, dataset=data, run_options=options)
            with p.session() as s:
                refs[name] = registry.register(s, p.objects, "nodules", run_id=result.run_id).ref
    finally:
        p.close()
    return root / "home", {**refs, "data": data}


@pytest.fixture
def sqlite_platform(tmp_path: Path, trained: tuple[Path, dict[str, str]]) -> Iterator[Platform]:
    """This module's tests each run on their own copy of the trained home (SQLite file, objects, keys)."""
    home = tmp_path / "home"
    shutil.copytree(trained[0], home, symlinks=True)
    p = Platform(make_settings(home))
    p.init()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def models(trained: tuple[Path, dict[str, str]]) -> dict[str, str]:
    """nodules@v1 trained for 6 epochs; nodules@v2 barely trained (a deliberately worse model)."""
    return dict(trained[1])


def test_gates_on_a_trained_model(sqlite_platform: Platform, models: dict[str, str]) -> None:
    p = sqlite_platform
    policy = parse({"metrics": {"auroc": {"min": 0.6}}, "regression": True, "bootstrap": {"resamples": 300},
                    "non_inferiority": {"against": "production", "metric": "auroc", "margin": 0.05},
                    "stress": {"noise": [0.2], "jpeg": [20], "max_drop": {"auroc": 0.6}},
                    "ood": {"false_alarm_rate": 0.1}}, "policy.yaml")
    good = evaluate(p, models["good"], models["data"], policy)
    assert good.passed, [g.to_dict() for g in good.gates if not g.passed]
    names = [g.name for g in good.gates]
    assert names == ["metrics", "non_inferiority", "regression", "stress", "ood"]
    assert good.gates[1].data["skipped"].startswith("nodules@production does not exist")
    assert good.metrics["auroc"]["ci_low"] <= good.metrics["auroc"]["value"] <= good.metrics["auroc"]["ci_high"]
    curves = good.gates[3].data["curves"]
    assert [c["level"] for c in curves["noise"]] == [0.2] and curves["jpeg"][0]["auroc"] is not None
    with p.session() as s:  # the gate report is recorded: promotion is possible once the card is complete
        reports = registry.gate_reports(s, models["good"])
        assert reports[0].passed and reports[0].summary["suites"]["stress"]["curves"] == curves
        registry.promote(s, models["good"], "production", force_reason="card not written in this test", actor="t")

    # a deliberately worse model fails non-inferiority against production on the same cases
    worse = evaluate(p, models["bad"], models["data"], policy)
    ni = next(g for g in worse.gates if g.name == "non_inferiority")
    assert not worse.passed and not ni.passed and ni.data["against"] == models["good"]
    assert ni.data["difference"]["value"] < 0 and "crosses the margin 0.05" in ni.reasons[0]

    # a pinned case the model gets wrong fails the regression suite, and names the case
    loaded_model = load(p, models["good"])
    folder = p.settings.home / "pulls" / "evaluation" / good.dataset_digest[:16]
    preds = predict(loaded_model, folder, "test")
    wrong_answer = {p_.key: loaded_model.classes[1 - int(np.argmax(p_.probs))] for p_ in preds}
    case = preds[0].key
    with p.session() as s:
        registry.pin_case(s, "nodules", case, wrong_answer[case], reason="test: pinned with the other class")
    broken = evaluate(p, models["good"], models["data"], parse({"regression": True}, "r.yaml"))
    reg = broken.gates[-1]
    assert not broken.passed and reg.name == "regression" and case in reg.reasons[0]


def test_cli_exit_codes_and_reports(sqlite_platform: Platform, models: dict[str, str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDCYCLE_HOME", str(sqlite_platform.settings.home))
    monkeypatch.setenv("MEDCYCLE_DATABASE_URL", sqlite_platform.settings.resolved_database_url)
    monkeypatch.setenv("MEDCYCLE_DEID_KEY_FILE", str(sqlite_platform.settings.resolved_deid_key_file))
    passing, failing = tmp_path / "pass.yaml", tmp_path / "fail.yaml"
    passing.write_text("metrics: {auroc: {min: 0.6}}\nbootstrap: {resamples: 100}\n")
    failing.write_text("metrics: {auroc: {min: 0.99}}\nbootstrap: {resamples: 100}\n")
    code = run_cli(cli_app, ["evaluate", models["good"], "--on", models["data"], "--policy", str(passing),
                             "--out", str(tmp_path / "out"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["passed"] and out["report_id"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["passed"] is True
    assert "<table>" in (tmp_path / "out" / "report.html").read_text()
    code = run_cli(cli_app, ["evaluate", models["good"], "--on", models["data"], "--policy", str(failing)])
    captured = capsys.readouterr()
    assert code == 1 and "auroc" in captured.out and "< 0.99" in captured.out


@pytest.mark.parametrize(("doc", "words"), [
    ({"metrix": {}}, "unknown key"),
    ({"metrics": {"auroc": 0.8}}, "min|max|min_ci_low"),
    ({"operating_point": {"threshold": 0.5, "sensitivity": 0.9}}, "exactly one"),
    ({"non_inferiority": {"metric": "auroc"}}, "needs margin"),
    ({"stress": {"gamma": [1]}}, "stress takes"),
    ({"stress": {"noise": 0.1}}, "list of levels"),
    ({"ood": {"paths": "x"}}, "ood takes"),
])
def test_bad_policies_are_refused(doc: dict[str, Any], words: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match=words) as info:
        parse(doc, "gates.yaml")
    assert "gates.yaml" in info.value.message and info.value.hint
    bad = tmp_path / "bad.yaml"
    bad.write_text("metrics: [\n")
    with pytest.raises(ValidationFailed, match="not valid YAML"):
        load_policy(bad)


@pytest.mark.parametrize("kind", ["noise", "blur", "contrast", "resolution", "jpeg"])
def test_perturbations_keep_shape_and_range_and_change_the_image(kind: str) -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.8, (1, 32, 32)).astype(np.float32)
    image[:, 8:24, 8:24] = 0.9
    level = {"noise": 0.1, "blur": 1.5, "contrast": 0.5, "resolution": 0.5, "jpeg": 10}[kind]
    out = perturbation(kind, level)(image)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and not np.allclose(out, image, atol=1e-3)
