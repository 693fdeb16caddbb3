"""docs/training.md: every config field and command is documented, the examples match the code and run."""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from medcycle.training import cli as training_cli
from medcycle.training import config as cfg

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"
SECTIONS: dict[str, type[BaseModel]] = {
    "data": cfg.DataConfig, "input": cfg.InputConfig, "input.intensity": cfg.WindowIntensity,
    "model": cfg.ModelConfig, "optimizer": cfg.OptimizerConfig, "training": cfg.TrainingLoopConfig,
    "training.early_stopping": cfg.EarlyStopping, "tracking": cfg.TrackingConfig,
}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_config_field_is_documented() -> None:
    text = DOC.read_text()
    sections: list[tuple[str, type[BaseModel]]] = [*SECTIONS.items(), ("input.intensity", cfg.PercentileIntensity)]
    missing = [f"{prefix}.{name}" for prefix, model in sections for name in model.model_fields
               if f"`{prefix}.{name}`" not in text]
    missing += [f"`{name}`" for name in cfg.TrainingConfig.model_fields if f"`{name}`" not in text]
    augmentations: tuple[type[BaseModel], ...] = typing.get_args(typing.get_args(cfg.Augmentation)[0])
    for aug in augmentations:
        name = typing.get_args(aug.model_fields["name"].annotation)[0]
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), "")
        missing += [f"augment {name}.{n}" for n in aug.model_fields if n != "name" and f"`{n}`" not in row]
    missing += [f"model {m.value}" for m in cfg.ModelName if f"| `{m.value}` |" not in text]
    assert not missing, f"document these in docs/training.md: {missing}"


def test_every_command_is_documented() -> None:
    text = DOC.read_text()
    commands = [f"medcycle train {c.name}" for c in training_cli.app.registered_commands]
    commands += [f"medcycle demo {c.name}" for c in training_cli.demo_app.registered_commands]
    assert len(commands) == 5
    assert not [c for c in commands if f"`{c}" not in text]


def test_the_config_examples_are_the_real_ones() -> None:
    shown = json.loads(blocks("json")[0])
    assert shown == cfg.example("classification-2d")
    assert cfg.validate(tomllib.loads(blocks("toml")[0])).model.name.value == "densenet-small"


def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the examples' homes go under tmp_path
    for key in list(os.environ):
        if key.startswith("MEDCYCLE_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize("marker", ["train_version(", "plain-torch"])
def test_python_examples_run(marker: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                             tmp_path: Path) -> None:
    pytest.importorskip("monai", reason="the train extra (torch, monai) is not installed")
    _clean_env(monkeypatch, tmp_path)
    example = next(b for b in blocks("python") if marker in b)
    source = example.replace('config["training"].update({"epochs": 3,', 'config["training"].update({"epochs": 2,')
    from medcycle.training.trainers import _global_torch_state

    restore = _global_torch_state()  # run.seed() in the example turns on deterministic algorithms process-wide
    try:
        exec(compile(source, str(DOC), "exec"), {"__name__": "docs_example"})
    finally:
        restore()
    out = capsys.readouterr().out
    if marker == "plain-torch":
        assert re.search(r"run \w+: val/accuracy [01]\.\d\d, model [0-9a-f]{64}", out), out
    else:
        assert re.search(r"val/auroc \d\.\d{3} at epoch \d, model [0-9a-f]{64}", out), out
