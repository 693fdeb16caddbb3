"""Declarative training configs: pydantic models read from JSON, TOML or YAML — data only, never code.

A config names the task, the dataset version, how images become tensors, the augmentations (from a
fixed whitelist), the network (from a fixed registry of MONAI networks) and the optimisation. Nothing in
a config is evaluated: there are no expressions, imports or class paths, so a clinical site can load a
config it received without running anything it did not install. Every field is documented in
``docs/training.md`` (a test fails when one is not).

::

    {"task": "classification-2d",
     "data": {"dataset": "demo-xr@v1", "image_modalities": ["DX"], "classes": ["normal", "lesion"]},
     "input": {"size": [64, 64], "intensity": {"kind": "percentile", "lower": 1, "upper": 99}},
     "augment": [{"name": "flip", "prob": 0.5}],
     "model": {"name": "densenet-small"},
     "optimizer": {"name": "adam", "lr": 0.003},
     "training": {"epochs": 12, "batch_size": 16, "seed": 0}}

Errors name the field and what is allowed (``optimizer.lrr: unknown field (did you mean 'lr'?); …``).
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medcycle.errors import UsageError, ValidationFailed

CONFIG_SUFFIXES = (".json", ".toml", ".yaml", ".yml")


class TaskKind(StrEnum):
    CLASSIFICATION_2D = "classification-2d"
    SEGMENTATION_2D = "segmentation-2d"
    SEGMENTATION_3D = "segmentation-3d"

    @property
    def spatial_dims(self) -> int:
        return 3 if self is TaskKind.SEGMENTATION_3D else 2

    @property
    def segmentation(self) -> bool:
        return self is not TaskKind.CLASSIFICATION_2D


class ModelName(StrEnum):
    TINY_CNN = "tiny-cnn"
    DENSENET_SMALL = "densenet-small"
    DENSENET121 = "densenet121"
    BASIC_UNET = "basic-unet"
    UNET = "unet"


#: Which tasks each network serves, and (width, depth) defaults; ``None``: the size is fixed.
MODELS: dict[ModelName, tuple[frozenset[TaskKind], tuple[int, int] | None, str]] = {
    ModelName.TINY_CNN: (frozenset({TaskKind.CLASSIFICATION_2D}), (8, 3),
                         "a 7×7 stem and `depth`−1 MONAI residual units of width·2^i (stride 2), average pooling"),
    ModelName.DENSENET_SMALL: (frozenset({TaskKind.CLASSIFICATION_2D}), (8, 3),
                               "MONAI DenseNet: init features 2·width, growth rate width, `depth` blocks of 2 layers"),
    ModelName.DENSENET121: (frozenset({TaskKind.CLASSIFICATION_2D}), None, "MONAI DenseNet121 (fixed size)"),
    ModelName.BASIC_UNET: (frozenset({TaskKind.SEGMENTATION_2D, TaskKind.SEGMENTATION_3D}), (8, 5),
                           "MONAI BasicUNet: features (w, w, 2w, 4w, 8w, w); 4 down-samplings (depth is 5)"),
    ModelName.UNET: (frozenset({TaskKind.SEGMENTATION_2D, TaskKind.SEGMENTATION_3D}), (8, 4),
                     "MONAI UNet: `depth` levels of width·2^i, one residual unit each"),
}

#: Metrics a trainer reports on the validation split, per task; the first is the default to monitor.
METRICS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.CLASSIFICATION_2D: ("val/auroc", "val/accuracy", "val/loss"),
    TaskKind.SEGMENTATION_2D: ("val/dice", "val/loss"),
    TaskKind.SEGMENTATION_3D: ("val/dice", "val/loss"),
}

Prob = Annotated[float, Field(ge=0.0, le=1.0, description="Probability that the augmentation is applied.")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Model):
    dataset: str | None = Field(None, description="Dataset version to pull and read, `NAME@TAG` (or `--dataset`).")
    path: Path | None = Field(None, description="A folder with a `manifest.csv` to read instead of pulling.")
    train_split: str = Field("train", description="Split to train on.")
    val_split: str = Field("val", description="Split to validate on after every epoch.")
    classes: list[str] | None = Field(
        None, description="Classification: label names in class-index order (default: sorted labels found). "
        "Segmentation: names of mask values 1, 2, … (default `[\"foreground\"]`).")
    image_modalities: list[str] | None = Field(None, description="Only items of these modalities are images.")
    mask_modality: str = Field("SEG", description="Items of this modality are masks, paired with the images "
                               "of their study.")
    mask_column: str = Field("mask", description="manifest.csv column holding a mask path (used when filled).")
    missing_mask: Literal["error", "skip", "empty"] = Field(
        "error", description="Segmentation, an image without a mask: stop, leave it out, or use an empty mask.")
    unlabelled: Literal["error", "skip"] = Field(
        "skip", description="Classification, an image with no known class label: stop, or leave it out.")
    cache: bool = Field(True, description="Keep decoded, normalised, resized images in memory between epochs.")

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or len(set(v)) != len(v) or not all(c.strip() for c in v)):
            raise ValueError("must be a non-empty list of distinct, non-empty names")
        return v


class WindowIntensity(_Model):
    kind: Literal["window"] = Field(description="`window`: a fixed window in scanner units (CT: HU).")
    center: float = Field(description="Window centre, e.g. -600 for lung, 40 for soft tissue (HU).")
    width: float = Field(gt=0, description="Window width, e.g. 1500 for lung, 400 for soft tissue (HU).")


class PercentileIntensity(_Model):
    kind: Literal["percentile"] = Field(description="`percentile`: per-image percentiles (any modality).")
    lower: float = Field(1.0, ge=0, lt=100, description="Percentile mapped to 0.")
    upper: float = Field(99.0, gt=0, le=100, description="Percentile mapped to 1.")

    @model_validator(mode="after")
    def _order(self) -> PercentileIntensity:
        if self.lower >= self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self


Intensity = Annotated[WindowIntensity | PercentileIntensity, Field(discriminator="kind")]


class InputConfig(_Model):
    size: list[int] = Field(description="Spatial size every image is resized to (whatever its spacing): "
                            "`[H, W]` for 2D tasks, `[D, H, W]` for 3D.")
    intensity: Intensity = Field(default_factory=lambda: PercentileIntensity(kind="percentile"),
                                 description="How intensities are mapped to [0, 1] (clipped).")

    @field_validator("size")
    @classmethod
    def _size(cls, v: list[int]) -> list[int]:
        if not 2 <= len(v) <= 3 or any(s < 8 or s > 1024 for s in v):
            raise ValueError("must be 2 or 3 sizes, each from 8 to 1024 pixels")
        return v


class Flip(_Model):
    name: Literal["flip"] = Field(description="Random flip (image and mask).")
    prob: Prob = 0.5
    axes: list[int] = Field(default_factory=lambda: [-1], description="Spatial axes to flip (-1: left-right).")


class Rotate90(_Model):
    name: Literal["rotate90"] = Field(description="Random in-plane rotation by k·90° (image and mask).")
    prob: Prob = 0.5
    max_k: int = Field(3, ge=1, le=3, description="Largest number of quarter turns.")


class Affine(_Model):
    name: Literal["affine"] = Field(description="Random rotation, scaling and translation (image and mask).")
    prob: Prob = 0.5
    rotate_deg: float = Field(10.0, ge=0, le=180, description="Largest rotation, degrees (in-plane for 3D).")
    scale: float = Field(0.1, ge=0, le=0.5, description="Largest relative zoom in or out.")
    translate: float = Field(0.05, ge=0, le=0.5, description="Largest shift, as a fraction of the size.")


class Noise(_Model):
    name: Literal["noise"] = Field(description="Additive Gaussian noise (image only).")
    prob: Prob = 0.2
    std: float = Field(0.02, gt=0, le=1, description="Noise standard deviation (intensities are in [0, 1]).")


class IntensityScale(_Model):
    name: Literal["intensity_scale"] = Field(description="Multiply intensities by 1 ± factor (image only).")
    prob: Prob = 0.5
    factor: float = Field(0.1, gt=0, le=1, description="Largest relative change.")


class IntensityShift(_Model):
    name: Literal["intensity_shift"] = Field(description="Add ± offset to intensities (image only).")
    prob: Prob = 0.5
    offset: float = Field(0.1, gt=0, le=1, description="Largest shift.")


class Gamma(_Model):
    name: Literal["gamma"] = Field(description="Random gamma (contrast) in [low, high] (image only).")
    prob: Prob = 0.3
    low: float = Field(0.7, gt=0, le=1, description="Smallest gamma.")
    high: float = Field(1.5, ge=1, le=5, description="Largest gamma.")


Augmentation = Annotated[Flip | Rotate90 | Affine | Noise | IntensityScale | IntensityShift | Gamma,
                         Field(discriminator="name")]
AUGMENTATIONS = ("flip", "rotate90", "affine", "noise", "intensity_scale", "intensity_shift", "gamma")


class ModelConfig(_Model):
    name: ModelName = Field(description="A network of the registry (`medcycle train models`).")
    width: int | None = Field(None, ge=2, le=256, description="Channels of the first level (default per network).")
    depth: int | None = Field(None, ge=1, le=6, description="Levels / stages (default per network).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability.")

    def size(self) -> tuple[int, int]:
        """(width, depth) with the network's defaults filled in (``(0, 0)`` for fixed-size networks)."""
        defaults = MODELS[self.name][1] or (0, 0)
        return (self.width or defaults[0], self.depth or defaults[1])


class OptimizerConfig(_Model):
    name: Literal["adam", "adamw", "sgd"] = Field("adam", description="Optimiser.")
    lr: float = Field(1e-3, gt=0, le=10, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 penalty (decoupled for adamw).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (sgd only).")
    scheduler: Literal["none", "cosine"] = Field("none", description="`cosine`: cosine decay over the epochs.")


class EarlyStopping(_Model):
    patience: int = Field(5, ge=1, description="Stop after this many epochs without improvement.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")


class TrainingLoopConfig(_Model):
    epochs: int = Field(10, ge=1, le=10_000, description="Passes over the training split.")
    batch_size: int = Field(8, ge=1, le=4096, description="Images per step.")
    seed: int = Field(0, ge=0, lt=2**32, description="Seeds Python, NumPy, torch, the augmentations and the "
                      "shuffling (recorded in the run).")
    deterministic: bool = Field(True, description="Deterministic algorithms (same seed → same weights on the "
                                "same hardware and software).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto`: CUDA when a GPU exists.")
    amp: bool = Field(True, description="Mixed precision (float16 autocast + gradient scaling) on CUDA; "
                      "ignored on CPU.")
    threads: int | None = Field(None, ge=1, le=256, description="CPU threads for torch (default: torch's choice, "
                                "at most the cores less one).")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes (seeded).")
    monitor: str | None = Field(None, description="Validation metric that picks the best epoch "
                                "(default: val/auroc for classification, val/dice for segmentation).")
    early_stopping: EarlyStopping | None = Field(None, description="Stop when `monitor` stops improving.")
    bn_recalibration: bool = Field(True, description="Before each validation, recompute batch-norm statistics over "
                                   "the training split (no gradients): small datasets otherwise validate with "
                                   "stale statistics. No effect on networks without batch norm.")
    checkpoints: Literal["best", "none"] = Field(
        "best", description="`best`: store each new best model by digest as it happens; the final best model "
        "is always stored.")


class TrackingConfig(_Model):
    project: str = Field("training", description="Tracking project.")
    name: str | None = Field(None, description="Run name (default `run-<id>`).")
    hypothesis: str | None = Field(None, description="Hypothesis the run tests, e.g. `H-3`.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags on the run.")
    log_images: bool = Field(True, description="Segmentation: log a validation image with its predicted mask.")


class TrainingConfig(_Model):
    """A whole training config; see ``docs/training.md`` for every field."""

    version: Literal[1] = Field(1, description="Config format version.")
    task: TaskKind = Field(description="classification-2d, segmentation-2d or segmentation-3d.")
    data: DataConfig = Field(default_factory=lambda: DataConfig(), description="What to read.")
    input: InputConfig = Field(description="How images become tensors.")
    augment: list[Augmentation] = Field(default_factory=list, description="Training augmentations, in order.")
    model: ModelConfig = Field(description="The network.")
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(), description="Optimisation.")
    training: TrainingLoopConfig = Field(default_factory=lambda: TrainingLoopConfig(), description="The loop.")
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig(), description="Where runs go.")

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        dims = self.task.spatial_dims
        if len(self.input.size) != dims:
            raise ValueError(f"input.size has {len(self.input.size)} values; {self.task.value} needs {dims} "
                             f"({'[D, H, W]' if dims == 3 else '[H, W]'})")
        tasks, defaults, _ = MODELS[self.model.name]
        if self.task not in tasks:
            fits = ", ".join(m.value for m, (t, _, _) in MODELS.items() if self.task in t)
            raise ValueError(f"model {self.model.name.value!r} does not serve {self.task.value}; use one of {fits}")
        if defaults is None and (self.model.width is not None or self.model.depth is not None):
            raise ValueError(f"model {self.model.name.value!r} has a fixed size: leave out width and depth "
                             "(densenet-small takes them)")
        depth = self.model.size()[1]
        if self.model.name is ModelName.BASIC_UNET and self.model.depth not in (None, 5):
            raise ValueError("basic-unet always has depth 5; use unet to choose the depth")
        factor = {ModelName.BASIC_UNET: 16, ModelName.UNET: 2 ** (depth - 1)}.get(self.model.name, 1)
        if any(s % factor for s in self.input.size):
            raise ValueError(f"input.size {self.input.size} must be divisible by {factor} for "
                             f"{self.model.name.value} of depth {depth}")
        if factor > 1 and math.prod(s // factor for s in self.input.size) < 2:
            raise ValueError(f"input.size {self.input.size} leaves one voxel at the bottom of "
                             f"{self.model.name.value} of depth {depth} (instance norm needs more); "
                             "use a larger size or a shallower network")
        if self.model.name is ModelName.TINY_CNN and min(self.input.size) < 2**depth:
            raise ValueError(f"input.size {self.input.size} is too small for tiny-cnn of depth {depth}")
        for i, aug in enumerate(self.augment):
            if isinstance(aug, Flip) and any(not -dims <= a < dims for a in aug.axes):
                raise ValueError(f"augment[{i}] (flip): axes must be spatial axes from {-dims} to {dims - 1}")
        if self.task.segmentation and self.data.classes is not None and len(self.data.classes) > 20:
            raise ValueError("data.classes: at most 20 foreground classes")
        monitor = self.training.monitor
        if monitor is not None and monitor not in METRICS[self.task]:
            raise ValueError(f"training.monitor {monitor!r} is not a metric of {self.task.value}; "
                             f"use one of {', '.join(METRICS[self.task])}")
        return self

    @property
    def monitor(self) -> str:
        return self.training.monitor or METRICS[self.task][0]

    def params(self) -> dict[str, Any]:
        """The config as JSON-ready data (what a run records as its params)."""
        return self.model_dump(mode="json")


_UNIONS: dict[str, type[_Model]] = {"flip": Flip, "rotate90": Rotate90, "affine": Affine, "noise": Noise,
                                    "intensity_scale": IntensityScale, "intensity_shift": IntensityShift,
                                    "gamma": Gamma, "window": WindowIntensity, "percentile": PercentileIntensity}


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config section a field holds (also inside ``X | None`` and ``list[X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if (found := _section(arg)) is not None:
            return found
    return None


def _walk(loc: tuple[int | str, ...]) -> tuple[str, type[BaseModel] | None]:
    """The dotted location (union tags left out) and the config section it ends in."""
    where, previous = "", ""
    node: type[BaseModel] | None = TrainingConfig
    parent: type[BaseModel] | None = None
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        elif part in _UNIONS and previous in ("augment", "intensity", "[]"):
            node = _UNIONS[part]  # the tag pydantic puts in the location: augment[0].flip.prob → augment[0].prob
        else:
            where += f".{part}" if where else part
            parent = node
            info = node.model_fields.get(part) if node is not None else None
            node = _section(info.annotation) if info is not None else None
        previous = "[]" if isinstance(part, int) else part
    return where, parent


def _describe(error: Any) -> str:
    loc = tuple(error["loc"])
    where, section = _walk(loc)
    prefix = f"{where}: " if where else ""
    kind = error["type"]
    if kind == "extra_forbidden":
        field = str(loc[-1])
        allowed = sorted(section.model_fields) if section is not None else []
        close = difflib.get_close_matches(field, allowed, n=1, cutoff=0.5)
        return f"{prefix}unknown field" + (f" (did you mean {close[0]!r}?)" if close else "") + (
            f"; fields here: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return f"{prefix}required"
    message = str(error["msg"])
    ctx = error.get("ctx", {})
    if kind in ("enum", "literal_error"):
        expected = str(ctx.get("expected", "")).replace(" or ", ", ").replace("'", "")
        message = f"{error['input']!r} is not one of {expected}"
    elif kind == "union_tag_invalid":
        tag = str(ctx["discriminator"]).strip("'")
        message = f"{error['input'].get(tag)!r} is not one of {str(ctx['expected_tags']).replace(chr(39), '')}"
    elif kind == "union_tag_not_found":
        tag = str(ctx["discriminator"]).strip("'")
        choices = AUGMENTATIONS if tag == "name" else ("window", "percentile")
        message = f"needs {tag!r} (one of {', '.join(choices)})"
    elif kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif not isinstance(error.get("input"), dict | list):
        message = f"{message} (got {error.get('input')!r})"
    return f"{prefix}{message}"


def validate(data: Any, *, origin: str = "the config") -> TrainingConfig:
    """A :class:`TrainingConfig` from parsed data.

    Raises:
        ValidationFailed: one line per problem, naming the field (``optimizer.lr: …``).
    """
    if not isinstance(data, dict):
        raise ValidationFailed(f"{origin} must be a mapping of sections (task, data, input, model, …)",
                               hint="See docs/training.md or `medcycle train example classification-2d`.")
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ValidationFailed(
            f"{origin} is not valid ({len(lines)} error{'s' if len(lines) > 1 else ''}):\n  " + "\n  ".join(lines),
            hint="Every field is described in docs/training.md; `medcycle train check CONFIG` checks a config.",
            errors=lines,
        ) from None


def parse_text(text: str, suffix: str, *, origin: str = "the config") -> Any:
    """Parse config text as JSON, TOML or YAML (safe loader: plain data only)."""
    suffix = suffix.lower()
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped,unused-ignore]
            except ImportError:
                raise UsageError(f"{origin} is YAML but PyYAML is not installed",
                                 hint="`pip install pyyaml`, or write the config as JSON or TOML.") from None
            return yaml.safe_load(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValidationFailed(f"{origin} is not valid {suffix[1:].upper()}: {exc}",
                               hint="Fix the syntax at the position given.") from None
    except Exception as exc:
        if type(exc).__module__.startswith("yaml"):
            raise ValidationFailed(f"{origin} is not valid YAML: {exc}", hint="Fix the syntax.") from None
        raise
    raise UsageError(f"{origin}: unknown config format {suffix!r}",
                     hint=f"Name the file with one of {', '.join(CONFIG_SUFFIXES)}.")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["training.epochs=3", "data.dataset=demo-xr@v1"]`` applied to parsed config data (values as JSON,
    else as text)."""
    out: dict[str, Any] = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"override {item!r} is not KEY=VALUE", hint="e.g. --set training.epochs=3")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"override {item!r}: {part!r} is not a section", hint="Set a field of a section.")
            node = child
        node[parts[-1]] = value
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainingConfig:
    """Read and validate a config file (``.json``, ``.toml``, ``.yaml``/``.yml``), with ``KEY=VALUE`` overrides.

    Raises:
        UsageError: the file is missing or of an unknown format.
        ValidationFailed: the file does not parse, or a field is wrong (every problem is listed).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist",
                         hint="Write one (`medcycle train example classification-2d > cls.json`).")
    data = parse_text(path.read_text(encoding="utf-8"), path.suffix, origin=f"config {path.name}")
    if overrides:
        if not isinstance(data, dict):
            return validate(data, origin=f"config {path.name}")
        data = apply_overrides(data, overrides)
    return validate(data, origin=f"config {path.name}")


def example(task: TaskKind | str, dataset: str | None = None) -> dict[str, Any]:
    """A config for ``task`` whose defaults reach a meaningful score on the demo data in minutes on 2 CPU cores."""
    task = TaskKind(task)
    flip: dict[str, Any] = {"name": "flip", "prob": 0.5}
    if task is TaskKind.CLASSIFICATION_2D:
        body: dict[str, Any] = {
            "data": {"dataset": dataset or "demo-xr@v1", "image_modalities": ["DX"], "classes": ["normal", "lesion"]},
            "input": {"size": [64, 64], "intensity": {"kind": "percentile", "lower": 1, "upper": 99}},
            "augment": [flip, {"name": "intensity_scale", "prob": 0.3, "factor": 0.1}],
            "model": {"name": "densenet-small", "width": 8, "depth": 3},
            "optimizer": {"name": "adam", "lr": 0.003},
            "training": {"epochs": 12, "batch_size": 16, "early_stopping": {"patience": 5}},
        }
    elif task is TaskKind.SEGMENTATION_2D:
        body = {
            "data": {"dataset": dataset or "demo-xr@v1", "image_modalities": ["DX"], "classes": ["lesion"]},
            "input": {"size": [64, 64], "intensity": {"kind": "percentile", "lower": 1, "upper": 99}},
            "augment": [flip],
            "model": {"name": "basic-unet", "width": 8},
            "optimizer": {"name": "adam", "lr": 0.005},
            "training": {"epochs": 12, "batch_size": 8},
        }
    else:
        body = {
            "data": {"dataset": dataset or "demo-ct@v1", "image_modalities": ["CT"], "classes": ["nodule"]},
            "input": {"size": [16, 32, 32], "intensity": {"kind": "window", "center": -300, "width": 1400}},
            "augment": [flip],
            "model": {"name": "basic-unet", "width": 8},
            "optimizer": {"name": "adam", "lr": 0.005},
            "training": {"epochs": 20, "batch_size": 2},
        }
    return {"task": task.value, **body, "tracking": {"project": "demo-training"}}
