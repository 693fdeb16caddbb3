"""Run a registered model version on a pulled dataset version, case by case, as training preprocessed it.

A version registered from a training run carries everything needed: the run's ``config.json`` artifact (the
exact preprocessing and network), its class list (``samples.classes`` in the run's params) and the weights by
digest. :func:`load` rebuilds the network; :func:`predict` reads a split of a pulled folder with the same
MONAI transforms as validation during training, optionally perturbed (the stress suite), and returns one
:class:`CasePrediction` per case with the catalog fields that serve as factors.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from medcycle.errors import UsageError, ValidationFailed

if TYPE_CHECKING:
    import torch

    from medcycle.models.registry import VersionInfo
    from medcycle.platform import Platform
    from medcycle.training.config import TrainingConfig

FACTOR_FIELDS = ("source", "manufacturer", "model", "modality", "body_part", "patient_sex", "age_band",
                 "view_position", "study_year")
Perturb = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


@dataclass
class Loaded:
    version: VersionInfo
    config: TrainingConfig
    classes: list[str]
    model: torch.nn.Module


@dataclass(frozen=True, slots=True)
class CasePrediction:
    key: str
    label: int  # classification: the true class index; segmentation: -1
    probs: tuple[float, ...] = ()  # classification: class probabilities
    dice: float | None = None  # segmentation: Dice of the foreground against the mask
    factors: dict[str, str | None] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # segmentation: dice, hd95, asd, nsd (surface.py)
    spacing: tuple[float, ...] | None = None  # segmentation: mm per voxel at the network's input size
    split: str = ""
    preview: bytes | None = None  # PNG of the input with truth and prediction drawn (``render=True``)


def _classes(params: dict[str, Any]) -> list[str] | None:
    value = params.get("samples.classes", params.get("samples", {}).get("classes") if isinstance(
        params.get("samples"), dict) else None)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return [str(c) for c in value] if isinstance(value, list) and value else None


def describe(platform: Platform, ref: str) -> tuple[VersionInfo, TrainingConfig, list[str]]:
    """Model version ``ref`` with its training config and classes, without loading its weights."""
    from medcycle.experiments.runs import get_run
    from medcycle.models.registry import info, resolve
    from medcycle.training.config import TrainingConfig

    with platform.session(write=False) as session:
        version = info(session, resolve(session, ref))
        if version.run_id is None:
            raise ValidationFailed(f"{version.ref} was registered without a run: its preprocessing is unknown",
                                   hint="Register versions from training runs (medcycle model register NAME --run "
                                        "RUN) to evaluate or serve them.")
        run = get_run(session, version.run_id)
    config_art = next((a for a in reversed(run.artifacts) if a.name == "config.json" and a.digest), None)
    if config_art is None or config_art.digest is None:
        raise ValidationFailed(f"run {version.run_id} of {version.ref} stored no config.json",
                               hint="Train with `medcycle train run CONFIG`, which records the config.")
    config = TrainingConfig.model_validate_json(platform.objects.get(config_art.digest))
    classes = _classes(run.to_dict().get("params", {}))
    if classes is None:
        raise ValidationFailed(f"run {version.run_id} recorded no class list", hint="Retrain with medcycle train.")
    return version, config, classes


def load(platform: Platform, ref: str) -> Loaded:
    """The network of model version ``ref`` with its training config and classes, on the CPU, in eval mode."""
    import torch

    from medcycle.training.models import build_model, out_channels

    version, config, classes = describe(platform, ref)
    model = build_model(config, out_channels(config, classes))
    state = torch.load(io.BytesIO(platform.objects.get(version.weights_digest)), map_location="cpu",
                       weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValidationFailed(f"the weights of {version.ref} do not fit its training config: {exc}",
                               hint="Register the model the run logged (artifact 'model').") from exc
    model.eval()
    return Loaded(version, config, classes, model)


def _factors(root: Path) -> dict[str, dict[str, str | None]]:
    from medcycle.training.data import read_manifest

    out: dict[str, dict[str, str | None]] = {}
    for row in read_manifest(root):
        key = row.get("uid") or row.get("series") or row["path"]
        out[key] = {f: (row.get(f) or None) for f in FACTOR_FIELDS if f in row}
        series = row.get("series")
        if series and series not in out:
            out[series] = out[key]
    return out


def source_spacing(paths: Sequence[str]) -> tuple[tuple[float, ...], tuple[int, ...]] | None:
    """Voxel size (mm) and shape of an image as the training readers give it (``(rows, cols)`` or
    ``(slices, rows, cols)``), from the DICOM or NIfTI header; None for rasters, which carry no spacing."""
    first = Path(paths[0])
    name = first.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img: Any = nib.load(str(first))
            zooms = [float(z) for z in img.header.get_zooms()[:3]]
            shape = [int(n) for n in img.shape[:3]]
            while len(shape) > 2 and shape[-1] == 1:
                shape, zooms = shape[:-1], zooms[:-1]
            return tuple(reversed(zooms)), tuple(reversed(shape))
        if name.endswith((".png", ".jpg", ".jpeg")):
            return None
        import pydicom

        ds = pydicom.dcmread(str(first), stop_before_pixels=True)
        pixel = getattr(ds, "PixelSpacing", None) or getattr(ds, "ImagerPixelSpacing", None)  # radiographs: detector
        if not pixel:
            return None
        row, col = (float(v) for v in pixel)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        slices = len(paths) if len(paths) > 1 else frames
        if slices > 1:
            thick = float(getattr(ds, "SpacingBetweenSlices", 0) or getattr(ds, "SliceThickness", 0) or 1.0)
            return (thick, row, col), (slices, int(ds.Rows), int(ds.Columns))
        return (row, col), (int(ds.Rows), int(ds.Columns))
    except Exception:  # noqa: BLE001 - no readable spacing: distances are then in voxels
        return None


def _input_spacing(paths: Sequence[str], size: Sequence[int], dims: int) -> tuple[float, ...] | None:
    found = source_spacing(paths)
    if found is None:
        return None
    spacing, shape = found
    spacing, shape = spacing[-dims:], shape[-dims:]
    if len(spacing) != dims or len(shape) != dims:
        return None
    return tuple(s * n / m for s, n, m in zip(spacing, shape, size, strict=True))


def predict(loaded: Loaded, data_dir: str | Path, split: str, *, perturb: Perturb | None = None,
            keys: Sequence[str] | None = None, tolerance: float = 1.0, render: bool = False,
            spacing: Sequence[float] | None = None) -> list[CasePrediction]:
    """One prediction per case of ``split`` (or of ``keys`` only) in the pulled folder ``data_dir``.

    Segmentation cases carry Dice, HD95, ASD and NSD (at ``tolerance`` mm) of the prediction against the
    mask at the network's input size, in mm from the image header's spacing scaled to that size (or
    ``spacing`` when given, else voxels). ``render`` adds a PNG preview of each case (the gallery's).
    """
    import torch

    from medcycle.evaluation.gallery import preview
    from medcycle.evaluation.surface import case_metrics
    from medcycle.training.data import index, make_dataset, make_loader

    root = Path(data_dir)
    samples = index(root, loaded.config)
    if samples.classes != loaded.classes and not loaded.config.task.segmentation:
        missing = sorted(set(samples.classes) - set(loaded.classes))
        if missing:
            raise ValidationFailed(f"{root} has classes the model does not know: {', '.join(missing)}",
                                   hint=f"The model predicts {', '.join(loaded.classes)}.")
        samples.classes = loaded.classes
    chosen = samples.split(split)
    if keys is not None:
        wanted = set(keys)
        chosen = [s for s in chosen if s.key in wanted]
    if not chosen:
        raise UsageError(f"no cases to evaluate in split {split!r} of {root}", hint="Check --split and the pull.")
    factors = _factors(root)
    dataset = make_dataset(loaded.config, chosen, len(loaded.classes), train=False)
    loader = make_loader(loaded.config, dataset, train=False, seed=0)
    out: list[CasePrediction] = []
    seg = loaded.config.task.segmentation
    i = 0
    with torch.no_grad():
        for batch in loader:
            x = batch["image"]
            if perturb is not None:
                x = torch.stack([torch.from_numpy(np.ascontiguousarray(perturb(img.numpy()), dtype=np.float32))
                                 for img in x])
            logits = loaded.model(x).float()
            for k in range(len(x)):
                sample = chosen[i]
                i += 1
                f = factors.get(sample.key, {"source": sample.source or None})
                image = x[k].numpy() if render else None
                if seg:
                    pred = (logits[k].argmax(dim=0) > 0).numpy()
                    truth = (batch["mask"][k, 0] > 0).numpy()
                    size = tuple(int(n) for n in pred.shape)
                    sp = tuple(float(v) for v in spacing) if spacing is not None else _input_spacing(
                        sample.image, size, len(size))
                    values = case_metrics(pred, truth, sp, tolerance=tolerance)
                    png = preview(image, truth=truth, pred=pred) if image is not None else None
                    out.append(CasePrediction(sample.key, -1, dice=values["dice"], factors=f, metrics=values,
                                              spacing=sp, split=split, preview=png))
                else:
                    probs = torch.softmax(logits[k], dim=0).tolist()
                    png = preview(image) if image is not None else None
                    out.append(CasePrediction(sample.key, sample.label, probs=tuple(probs), factors=f, split=split,
                                              preview=png))
    return out
