"""Training configs: examples validate, files load as JSON/TOML/YAML, errors name the field and what to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medcycle.errors import UsageError, ValidationFailed
from medcycle.training.config import (
    MODELS,
    PercentileIntensity,
    TaskKind,
    TrainingConfig,
    apply_overrides,
    example,
    load_config,
    validate,
)


def errors_of(data: Any) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        validate(data, origin="config t.json")
    assert info.value.hint and "docs/training.md" in info.value.hint
    assert info.value.message.startswith("config t.json is not valid")
    return list(info.value.details["errors"])


@pytest.mark.parametrize("task", [t.value for t in TaskKind])
def test_examples_validate_and_fill_defaults(task: str) -> None:
    config = validate(example(task, "demo@v1"))
    assert config.task.value == task and config.data.dataset == "demo@v1"
    assert config.training.deterministic and config.training.device == "auto" and config.training.amp
    assert config.monitor == ("val/auroc" if task == "classification-2d" else "val/dice")
    assert validate(config.params()) == config  # the recorded params are a complete config


def test_a_minimal_config_gets_every_default() -> None:
    config = validate({"task": "classification-2d", "input": {"size": [64, 64]}, "model": {"name": "tiny-cnn"}})
    assert config.input.intensity == PercentileIntensity(kind="percentile", lower=1.0, upper=99.0)
    assert config.optimizer.name == "adam" and config.training.epochs == 10 and config.augment == []
    assert config.model.size() == MODELS[config.model.name][1]


def test_errors_name_each_field_and_what_is_allowed() -> None:
    errors = errors_of({
        "task": "classification-2d",
        "input": {"size": [64, 64], "intensity": {"kind": "hu"}},
        "model": {"name": "resnet9000"},
        "optimizer": {"lrr": 0.1},
        "augment": [{"name": "flip", "prob": 2}, {"name": "mixup"}, {"prob": 0.5}],
        "trainin": {},
    })
    assert "input.intensity: 'hu' is not one of window, percentile" in errors
    assert "model.name: 'resnet9000' is not one of tiny-cnn, densenet-small, densenet121, basic-unet, unet" in errors
    assert any(e.startswith("optimizer.lrr: unknown field (did you mean 'lr'?); fields here: lr,") for e in errors)
    assert any(e.startswith("trainin: unknown field (did you mean 'training'?)") for e in errors)
    assert "augment[0].prob: Input should be less than or equal to 1 (got 2)" in errors
    assert any(e.startswith("augment[1]: 'mixup' is not one of flip, rotate90, affine") for e in errors)
    assert any(e.startswith("augment[2]: needs 'name' (one of flip,") for e in errors)


@pytest.mark.parametrize(("change", "message"), [
    ({"task": "segmentation-2d"}, "model 'densenet-small' does not serve segmentation-2d; use one of basic-unet, unet"),
    ({"input": {"size": [64, 64, 64]}}, "input.size has 3 values; classification-2d needs 2 ([H, W])"),
    ({"model": {"name": "densenet121", "width": 4}}, "model 'densenet121' has a fixed size"),
    ({"training": {"monitor": "val/dice"}}, "training.monitor 'val/dice' is not a metric of classification-2d"),
    ({"augment": [{"name": "flip", "axes": [2]}]}, "augment[0] (flip): axes must be spatial axes from -2 to 1"),
    ({"input": {"size": [64, 4]}}, "input.size: must be 2 or 3 sizes, each from 8 to 1024 pixels"),
    ({"input": {"size": [64, 64], "intensity": {"kind": "percentile", "lower": 99, "upper": 1}}},
     "lower (99.0) must be below upper (1.0)"),
    ({"data": {"classes": ["a", "a"]}}, "data.classes: must be a non-empty list of distinct"),
    ({"training": {"epochs": 0}}, "training.epochs: Input should be greater than or equal to 1 (got 0)"),
])
def test_inconsistent_configs_are_refused(change: dict[str, Any], message: str) -> None:
    data = example("classification-2d")
    data.update(change)
    errors = errors_of(data)
    assert any(message in e for e in errors), errors


def test_unet_sizes_must_divide_and_leave_room() -> None:
    data = example("segmentation-2d")
    data["input"]["size"] = [40, 40]
    assert any("must be divisible by 16 for basic-unet" in e for e in errors_of(data))
    data = example("segmentation-3d")
    data["input"]["size"] = [16, 16, 16]
    assert any("leaves one voxel at the bottom of basic-unet" in e for e in errors_of(data))


def test_files_load_as_json_toml_and_yaml(tmp_path: Path) -> None:
    data = example("classification-2d", "demo-xr@v1")
    (tmp_path / "c.json").write_text(json.dumps(data))
    toml = tmp_path / "c.toml"
    toml.write_text('task = "classification-2d"\n[input]\nsize = [32, 32]\n[model]\nname = "tiny-cnn"\n'
                    '[training]\nepochs = 2\n[[augment]]\nname = "flip"\n')
    assert load_config(tmp_path / "c.json") == validate(data)
    loaded = load_config(toml, ["training.epochs=3", "data.dataset=x@v2", "optimizer.lr=1e-2"])
    assert loaded.training.epochs == 3 and loaded.data.dataset == "x@v2" and loaded.optimizer.lr == 0.01
    assert loaded.augment[0].name == "flip"
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("task: classification-2d\ninput: {size: [32, 32]}\nmodel: {name: tiny-cnn}\n")
    try:
        import yaml  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="PyYAML is not installed"):
            load_config(yaml_file)
    else:
        assert load_config(yaml_file).model.name.value == "tiny-cnn"


def test_file_problems_are_explained(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist") as missing:
        load_config(tmp_path / "nope.json")
    assert missing.value.hint and "medcycle train example" in missing.value.hint
    (tmp_path / "bad.json").write_text("{\"task\": ")
    with pytest.raises(ValidationFailed, match="not valid JSON"):
        load_config(tmp_path / "bad.json")
    (tmp_path / "c.ini").write_text("x")
    with pytest.raises(UsageError, match="unknown config format"):
        load_config(tmp_path / "c.ini")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValidationFailed, match="must be a mapping"):
        load_config(tmp_path / "list.json")
    with pytest.raises(UsageError, match="is not KEY=VALUE"):
        apply_overrides({}, ["epochs"])
    with pytest.raises(UsageError, match="is not a section"):
        apply_overrides({"task": "x"}, ["task.kind=1"])


def test_a_config_holds_only_data() -> None:
    """Nothing in a config is evaluated: strings that look like code stay strings or are refused."""
    data = example("classification-2d")
    data["model"]["name"] = "__import__('os').system('true')"
    assert any(e.startswith("model.name:") for e in errors_of(data))
    data = example("classification-2d")
    data["tracking"]["name"] = "$(rm -rf /)"
    config = validate(data)
    assert config.tracking.name == "$(rm -rf /)"
    assert isinstance(config, TrainingConfig)
