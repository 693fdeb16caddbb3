"""``medcycle train …`` and ``medcycle demo data``: parsing, --json output, exit codes and hints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer

from medcycle.cli.errors import run
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.testing.platform import TEST_SECRET
from medcycle.training.config import example


def make_app() -> typer.Typer:
    """The real root command: ``train`` and ``demo data`` are wired in ``medcycle.cli.main``."""
    from medcycle.cli.main import app

    return app


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)
    h = tmp_path / "home"
    monkeypatch.setenv("MEDCYCLE_HOME", str(h))
    monkeypatch.setenv("MEDCYCLE_ENVIRONMENT", "test")
    monkeypatch.setenv("MEDCYCLE_SECRET_KEY", TEST_SECRET)
    with Platform(load_settings()) as p:
        p.init()
    return h


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(make_app(), list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_example_and_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = cli(capsys, "train", "models", "--json")
    assert code == 0 and {m["name"] for m in json.loads(out)} >= {"tiny-cnn", "densenet-small", "basic-unet"}
    code, out, _ = cli(capsys, "train", "example", "segmentation-3d", "--dataset", "ct@v2")
    assert code == 0 and json.loads(out) == example("segmentation-3d", "ct@v2")
    config = tmp_path / "cls.json"
    assert cli(capsys, "train", "example", "classification-2d", "-o", str(config))[0] == 0
    code, out, _ = cli(capsys, "train", "check", str(config), "--set", "training.epochs=2", "--json")
    assert code == 0 and json.loads(out)["training"]["epochs"] == 2
    code, out, err = cli(capsys, "train", "check", str(config), "--set", "model.name=resnet")
    assert code == 2 and "model.name: 'resnet' is not one of" in err and "Hint:" in err
    code, _, err = cli(capsys, "train", "example", "detection-2d")
    assert code == 2 and "unknown task 'detection-2d'" in err


def test_demo_data_then_train_run(home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("monai", reason="the train extra (torch, monai) is not installed")
    code, out, err = cli(capsys, "demo", "data", "--to", str(tmp_path / "demo"), "--radiographs", "24",
                         "--volumes", "0", "--size", "32", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["radiographs"] == 24 and made["datasets"] == {"demo-xr": "demo-xr@v1"}

    config = tmp_path / "cls.json"
    config.write_text(json.dumps(example("classification-2d", "nope@v1")))
    quick = ["--set", "training.epochs=1", "--set", "input.size=[32, 32]", "--set", "training.threads=1"]
    code, out, err = cli(capsys, "train", "run", str(config), "--dataset", "demo-xr@v1", *quick, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["dataset"] == "demo-xr@v1" and result["epochs"] == 1 and len(result["model_digest"]) == 64
    assert "epoch 1/1" in err and "val/auroc" in err
    assert Path(result["data_dir"]).is_relative_to(home / "pulls" / "demo-xr")

    code, _, err = cli(capsys, "train", "run", str(config), *quick)  # the config's own dataset: unknown
    assert code == 4 and "nope" in err
