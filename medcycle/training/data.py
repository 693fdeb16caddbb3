"""Read a pulled dataset version (or any folder with a ``manifest.csv``) as training samples.

Images, as float32 arrays in scanner units:

* DICOM through pydicom: the modality LUT (rescale slope/intercept, or a LUT sequence) is applied and
  MONOCHROME1 is inverted, so bright always means dense. A series (one file per slice) is stacked in
  slice order (position along the slice normal, else InstanceNumber) into ``(slices, rows, columns)``.
* NIfTI through nibabel: axes are read reversed, ``(k, j, i)``, so a volume converted from DICOM with the
  usual i = column, j = row convention lines up with the DICOM arrays.
* PNG/JPEG through Pillow, as grayscale.

Samples: one per image for 2D tasks, one per image series (or volume file) for 3D. Classification labels
come from the manifest's ``labels`` column. A segmentation sample's mask is, in this order:

1. the path in the manifest's ``mask`` column (``data.mask_column``), relative to the folder;
2. a sibling file of a one-file image: ``NAME_mask.nii.gz``, ``NAME.mask.png``, … next to ``NAME.dcm``;
3. the items of modality ``SEG`` (``data.mask_modality``) in the image's study: the study's one mask series
   (paired slice by slice with the image series for 2D tasks).

Masks are read as stored (no LUT, no inversion); any value above 0 is foreground when there is one class.
"""

from __future__ import annotations

import csv
import importlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medcycle.errors import UsageError, ValidationFailed
from medcycle.training.config import (
    Affine,
    Flip,
    Gamma,
    IntensityScale,
    IntensityShift,
    Noise,
    Rotate90,
    TaskKind,
    TrainingConfig,
    WindowIntensity,
)

F32 = NDArray[np.float32]
MANIFEST = "manifest.csv"
UNSPLIT = "unsplit"
MASK_SUFFIXES = ("_mask", ".mask", "_seg", ".seg")
MASK_EXTENSIONS = (".nii.gz", ".nii", ".png", ".dcm")


# -- reading files ------------------------------------------------------------------------------------
def _is_dicom(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith((".dcm", ".dicom", ".ima")):
        return True
    if name.endswith((".nii", ".nii.gz", ".png", ".jpg", ".jpeg")):
        return False
    with path.open("rb") as fh:
        return fh.read(132)[128:132] == b"DICM"


def _output_range(ds: Any, values: F32) -> tuple[float, float]:
    """The modality LUT's output range for the stored bit depth (MONOCHROME1 is inverted within it)."""
    bits = int(ds.get("BitsStored") or 0)
    if not bits or "ModalityLUTSequence" in ds:
        return float(values.min()), float(values.max())
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(ds.get("PixelRepresentation") or 0) else (0, 2**bits - 1)
    slope, intercept = float(ds.get("RescaleSlope") or 1.0), float(ds.get("RescaleIntercept") or 0.0)
    return lo * slope + intercept, hi * slope + intercept


def read_dicom(path: Path, *, raw: bool = False) -> F32:
    """Pixels of one DICOM file: ``(rows, columns)`` or ``(frames, rows, columns)``; modality LUT applied and
    MONOCHROME1 inverted unless ``raw``. Colour is averaged to gray."""
    import pydicom

    return dicom_pixels(pydicom.dcmread(path), raw=raw)


def dicom_pixels(ds: Any, *, raw: bool = False) -> F32:
    """:func:`read_dicom` of a dataset already read (with its pixel data)."""
    from pydicom.pixels.processing import apply_modality_lut

    arr = np.asarray(ds.pixel_array)
    if int(ds.get("SamplesPerPixel") or 1) > 1:
        arr = arr.mean(axis=-1)
    if raw:
        return arr.astype(np.float32)
    out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        lo, hi = _output_range(ds, out)
        out = (lo + hi) - out
    return out


def read_nifti(path: Path) -> F32:
    """A NIfTI image with its axes reversed: ``(k, j, i)`` (``(j, i)`` for 2D), scaling applied."""
    import nibabel as nib

    img: Any = nib.load(str(path))
    arr = np.asarray(img.get_fdata(dtype=np.float32))
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim > 3:
        raise ValidationFailed(f"{path.name} has {arr.ndim} dimensions; only 2D and 3D images can be read",
                               hint="Split 4D series into volumes before training.")
    return np.ascontiguousarray(arr.transpose(tuple(reversed(range(arr.ndim)))))


def read_raster(path: Path) -> F32:
    from PIL import Image

    with Image.open(path) as img:
        gray = img if img.mode in ("L", "I", "I;16", "I;16B", "I;16L", "F") else img.convert("L")
        return np.asarray(gray, dtype=np.float32)


def read_file(path: str | Path, *, raw: bool = False) -> F32:
    """One image file of any supported format (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"image {path} is missing",
                         hint="Pull the version again (`medcycle dataset pull NAME@TAG --to DIR`).")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(path)
    if name.endswith((".png", ".jpg", ".jpeg")):
        return read_raster(path)
    if _is_dicom(path):
        return read_dicom(path, raw=raw)
    raise ValidationFailed(f"cannot read {path.name}: not DICOM, NIfTI, PNG or JPEG", hint="Convert it first.")


def slice_order(paths: Sequence[str | Path]) -> list[str]:
    """DICOM slices sorted along the slice normal (ImagePositionPatient), else by InstanceNumber, else by name."""
    if len(paths) <= 1:
        return [str(p) for p in paths]
    import pydicom

    keys: list[tuple[float, float, str]] = []
    for p in paths:
        key = slice_key(pydicom.dcmread(p, stop_before_pixels=True)) if _is_dicom(Path(p)) else (0.0, 0.0)
        keys.append((*key, str(p)))
    return [k[2] for k in sorted(keys)]


def slice_key(ds: Any) -> tuple[float, float]:
    """A slice's place in its series: (position along the slice normal, InstanceNumber); 0 where unknown."""
    position = 0.0
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if ipp is not None and iop is not None and len(iop) == 6:
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        position = float(np.dot(normal, np.asarray(ipp, float)))
    return position, float(ds.get("InstanceNumber") or 0)


def read_volume(paths: Sequence[str | Path], *, raw: bool = False) -> F32:
    """The image of a sample: one file as it is, or slices (already in order) stacked to ``(slices, rows, cols)``."""
    if len(paths) == 1:
        return read_file(paths[0], raw=raw)
    planes = [read_file(p, raw=raw) for p in paths]
    shapes = {p.shape for p in planes}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValidationFailed(f"the slices of {Path(paths[0]).parent} differ in shape ({sorted(shapes)})",
                               hint="Every slice of a series must be 2D with the same rows and columns.")
    return np.stack(planes)


# -- the manifest -> samples ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sample:
    """One training example: image file(s), mask file(s) (segmentation) or class index (classification)."""

    key: str
    split: str
    image: tuple[str, ...]
    mask: tuple[str, ...] = ()
    label: int = -1
    study: str = ""
    source: str = ""

    def item(self) -> dict[str, Any]:
        return {"key": self.key, "image": self.image, "mask": self.mask, "label": self.label}


@dataclass
class SampleSet:
    root: Path
    task: TaskKind
    classes: list[str]
    splits: dict[str, list[Sample]]
    skipped: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> list[Sample]:
        samples = self.splits.get(name, [])
        if not samples:
            have = ", ".join(f"{k} ({len(v)})" for k, v in sorted(self.splits.items())) or "none"
            raise UsageError(f"split {name!r} of {self.root} has no samples for {self.task.value}; splits: {have}",
                             hint="Freeze the version with a split (`medcycle dataset freeze NAME --split "
                                  "train=0.7,val=0.15,test=0.15`) or set data.train_split / data.val_split.")
        return samples

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"classes": self.classes, "skipped": dict(self.skipped)}
        for name, samples in sorted(self.splits.items()):
            out[name] = len(samples)
            if not self.task.segmentation:
                counts = np.bincount([s.label for s in samples], minlength=len(self.classes))
                out[f"{name}_per_class"] = {c: int(n) for c, n in zip(self.classes, counts, strict=True)}
        return out


def read_manifest(root: Path) -> list[dict[str, str]]:
    path = root / MANIFEST
    if not path.is_file():
        raise UsageError(f"no {MANIFEST} in {root}",
                         hint=f"Pull a version there: `medcycle dataset pull NAME@TAG --to {root}`.")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "path" not in rows[0]:
        raise ValidationFailed(f"{path} has no 'path' column", hint="Use a manifest.csv written by a pull.")
    return rows


def _abs(root: Path, value: str) -> str:
    return str((root / value) if not Path(value).is_absolute() else Path(value))


def _sibling_mask(image: Path) -> str | None:
    name = image.name
    for ext in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".dcm", ".dicom"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    for suffix in MASK_SUFFIXES:
        for ext in MASK_EXTENSIONS:
            candidate = image.with_name(f"{name}{suffix}{ext}")
            if candidate.is_file():
                return str(candidate)
    return None


def _labels(row: Mapping[str, str]) -> list[str]:
    return [x for x in (row.get("labels") or "").split("|") if x]


def index(root: str | Path, config: TrainingConfig) -> SampleSet:
    """The samples of the folder ``root`` per split, for ``config``'s task (see the module docstring).

    Raises:
        UsageError: no manifest, or a split has no samples.
        ValidationFailed: a label or mask problem the ``data.unlabelled`` / ``data.missing_mask`` policy says
            to stop on, or masks that cannot be paired unambiguously (the message names the study).
    """
    root = Path(root).expanduser().resolve()
    cfg = config.data
    task = config.task
    rows = read_manifest(root)
    mask_mod = cfg.mask_modality.upper()
    wanted = {m.upper() for m in cfg.image_modalities} if cfg.image_modalities else None

    def is_mask(r: Mapping[str, str]) -> bool:
        return (r.get("modality") or "").upper() == mask_mod

    images = [r for r in rows if not is_mask(r) and (wanted is None or (r.get("modality") or "").upper() in wanted)]
    units: list[list[dict[str, str]]]
    if task is TaskKind.SEGMENTATION_3D:
        by_series: dict[str, list[dict[str, str]]] = defaultdict(list)
        for r in images:
            by_series[r.get("series") or r.get("uid") or r["path"]].append(r)
        units = list(by_series.values())
    else:
        units = [[r] for r in images]
    skipped: dict[str, int] = defaultdict(int)
    if task.segmentation:
        classes = list(cfg.classes or ["foreground"])
        pairer = _MaskPairer(root, rows, is_mask, images, cfg.mask_column, task)
    else:
        found = sorted({lab for r in images for lab in _labels(r)})
        classes = list(cfg.classes or found)
        if len(classes) < 2:
            raise ValidationFailed(f"classification needs at least 2 classes; {root} has {found or 'no labels'}",
                                   hint="Import labels (`medcycle dataset labels import NAME labels.csv`) and "
                                        "freeze a new version, or list data.classes.")
    splits: dict[str, list[Sample]] = defaultdict(list)
    for unit in units:
        first = unit[0]
        paths = [_abs(root, r["path"]) for r in unit]
        paths = slice_order(paths) if len(paths) > 1 else paths
        split = first.get("split") or UNSPLIT
        key = first.get("series") if task is TaskKind.SEGMENTATION_3D else first.get("uid")
        sample = Sample(key=key or first["path"], split=split, image=tuple(paths), study=first.get("study", ""),
                        source=first.get("source", ""))
        if task.segmentation:
            mask = pairer.mask_for(unit, paths)
            if mask is None:
                if cfg.missing_mask == "error":
                    raise ValidationFailed(
                        f"no mask for {first['path']} (study {first.get('study') or '-'})",
                        hint=f"Give masks as items of modality {cfg.mask_modality} in the image's study, in a "
                             f"'{cfg.mask_column}' column of {MANIFEST}, or as NAME_mask.nii.gz beside the image; "
                             "or set data.missing_mask to skip or empty.")
                if cfg.missing_mask == "skip":
                    skipped["no mask"] += 1
                    continue
                mask = ()
            sample = replace(sample, mask=tuple(mask))
        else:
            hits = [lab for lab in _labels(first) if lab in classes]
            if len(hits) != 1:
                if len(hits) > 1:
                    raise ValidationFailed(f"{first['path']} has several classes ({'|'.join(hits)}); "
                                           "classification-2d needs one per image",
                                           hint="List only exclusive classes in data.classes.")
                if cfg.unlabelled == "error":
                    raise ValidationFailed(f"{first['path']} has no label among {classes}",
                                           hint="Label every image, or set data.unlabelled to skip.")
                skipped["unlabelled"] += 1
                continue
            sample = replace(sample, label=classes.index(hits[0]))
        splits[split].append(sample)
    return SampleSet(root, task, classes, dict(splits), dict(skipped))


class _MaskPairer:
    """Finds each image's mask: manifest column, sibling file, or the mask series of its study."""

    def __init__(self, root: Path, rows: list[dict[str, str]], is_mask: Callable[[Mapping[str, str]], bool],
                 images: list[dict[str, str]], column: str, task: TaskKind) -> None:
        self.root, self.column, self.task = root, column, task
        self.masks: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))  # study → series → paths
        for r in rows:
            if is_mask(r):
                self.masks[r.get("study", "")][r.get("series") or r["path"]].append(_abs(root, r["path"]))
        self.series: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for r in images:
            self.series[r.get("study", "")][r.get("series") or r["path"]].append(_abs(root, r["path"]))
        self._sorted: dict[tuple[str, str], list[str]] = {}

    def _ordered(self, kind: str, study: str, series: str, paths: list[str]) -> list[str]:
        key = (f"{kind}:{study}", series)
        if key not in self._sorted:
            self._sorted[key] = slice_order(paths)
        return self._sorted[key]

    def mask_for(self, unit: list[dict[str, str]], paths: list[str]) -> tuple[str, ...] | None:
        given = [r.get(self.column) or "" for r in unit]
        if any(given):
            return (_abs(self.root, next(g for g in given if g)),)
        if len(paths) == 1 and (sibling := _sibling_mask(Path(paths[0]))) is not None:
            return (sibling,)
        study = unit[0].get("study", "")
        masks = self.masks.get(study)
        if not masks:
            return None
        image_series = self.series[study]
        if len(masks) > 1:
            raise ValidationFailed(
                f"study {study} has {len(masks)} mask series: cannot tell which belongs to {unit[0]['path']}",
                hint=f"Keep one mask series per study, or give each image's mask in a '{self.column}' column.")
        (mask_series, mask_paths), = masks.items()
        mask_paths = self._ordered("mask", study, mask_series, mask_paths)
        if self.task is TaskKind.SEGMENTATION_3D:
            if len(image_series) > 1:
                raise ValidationFailed(f"study {study} has {len(image_series)} image series and one mask series",
                                       hint="Choose the series with data.image_modalities, or use a mask column.")
            return tuple(mask_paths)
        if len(image_series) > 1:
            raise ValidationFailed(f"study {study} has {len(image_series)} image series and one mask series",
                                   hint="Choose the series with data.image_modalities, or use a mask column.")
        series_key = unit[0].get("series") or unit[0]["path"]
        ordered = self._ordered("image", study, series_key, image_series[series_key])
        if len(mask_paths) != len(ordered):
            raise ValidationFailed(f"study {study}: {len(ordered)} image(s) but {len(mask_paths)} mask(s)",
                                   hint="A 2D mask series needs one mask per image (slice).")
        return (mask_paths[ordered.index(paths[0])],)


# -- MONAI transforms -------------------------------------------------------------------------------------
def monai_module(name: str) -> Any:
    """``monai.<name>``, imported on use (MONAI re-exports its API implicitly, which strict typing cannot see)."""
    return importlib.import_module(f"monai.{name}")


class LoadSample:
    """``{"image": paths, "mask": paths, "label": int}`` → channel-first float arrays ``(1, *spatial)``.

    Segmentation masks become class indices (0 background, 1…K); an empty ``mask`` gives all background.
    """

    def __init__(self, task: TaskKind, n_classes: int) -> None:
        self.task, self.n_classes = task, n_classes

    def _spatial(self, arr: F32, what: str, source: str) -> F32:
        dims = self.task.spatial_dims
        while arr.ndim > dims and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != dims:
            raise ValidationFailed(f"{what} {Path(source).name} has shape {arr.shape}; {self.task.value} needs "
                                   f"{dims}D images", hint="Choose the task that fits the data, or other items.")
        return arr

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        image = self._spatial(read_volume(item["image"]), "image", item["image"][0])
        out: dict[str, Any] = {"key": item["key"], "label": item["label"], "image": image[None]}
        if self.task.segmentation:
            if item["mask"]:
                mask = self._spatial(read_volume(item["mask"], raw=True), "mask", item["mask"][0])
                if mask.shape != image.shape:
                    raise ValidationFailed(f"mask {Path(item['mask'][0]).name} has shape {mask.shape}, its image "
                                           f"{image.shape}", hint="Masks must have their image's geometry.")
                mask = (mask > 0).astype(np.float32) if self.n_classes == 1 else np.rint(mask).astype(np.float32)
                if mask.max() > self.n_classes:
                    raise ValidationFailed(f"mask {Path(item['mask'][0]).name} has value {int(mask.max())} but "
                                           f"only {self.n_classes} classes are named",
                                           hint="List every mask value's name in data.classes.")
            else:
                mask = np.zeros_like(image)
            out["mask"] = mask[None]
        return out


def _augmentations(config: TrainingConfig, keys: list[str]) -> list[Any]:
    T = monai_module("transforms")

    dims = config.task.spatial_dims
    seg = "mask" in keys
    plane = (0, 1) if dims == 2 else (1, 2)
    out: list[Any] = []
    for aug in config.augment:
        if isinstance(aug, Flip):
            out.append(T.RandFlipd(keys, prob=aug.prob, spatial_axis=[a % dims for a in aug.axes]))
        elif isinstance(aug, Rotate90):
            out.append(T.RandRotate90d(keys, prob=aug.prob, max_k=aug.max_k, spatial_axes=plane))
        elif isinstance(aug, Affine):
            rotate = np.deg2rad(aug.rotate_deg)
            out.append(T.RandAffined(
                keys, prob=aug.prob, rotate_range=(rotate,) if dims == 2 else (rotate, 0.0, 0.0),
                scale_range=(aug.scale,) * dims, translate_range=[aug.translate * s for s in config.input.size],
                mode=("bilinear", "nearest") if seg else "bilinear",
                padding_mode=("border", "zeros") if seg else "border"))
        elif isinstance(aug, Noise):
            out.append(T.RandGaussianNoised("image", prob=aug.prob, std=aug.std))
        elif isinstance(aug, IntensityScale):
            out.append(T.RandScaleIntensityd("image", factors=aug.factor, prob=aug.prob))
        elif isinstance(aug, IntensityShift):
            out.append(T.RandShiftIntensityd("image", offsets=aug.offset, prob=aug.prob))
        elif isinstance(aug, Gamma):
            out.append(T.RandAdjustContrastd("image", prob=aug.prob, gamma=(aug.low, aug.high)))
    return out


def build_transform(config: TrainingConfig, n_classes: int, *, train: bool) -> Any:
    """The MONAI ``Compose``: load, normalise intensities to [0, 1], resize to ``input.size`` (images: area,
    masks: nearest), then — for training — the configured augmentations; tensors out, without metadata.
    Percentile scaling is :class:`medcycle.training.intensity.PercentileScaled`: MONAI's
    ``ScaleIntensityRangePercentilesd``, the same values, from one partial selection."""
    import torch

    from medcycle.training.intensity import PercentileScaled
    T = monai_module("transforms")

    seg = config.task.segmentation
    keys = ["image", "mask"] if seg else ["image"]
    size = tuple(config.input.size)
    intensity = config.input.intensity
    steps: list[Any] = [T.Lambda(LoadSample(config.task, n_classes))]  # a MONAI transform: CacheDataset caches it
    if isinstance(intensity, WindowIntensity):
        low = intensity.center - intensity.width / 2
        steps.append(T.ScaleIntensityRanged("image", a_min=low, a_max=low + intensity.width, b_min=0.0, b_max=1.0,
                                            clip=True))
    else:
        steps.append(PercentileScaled("image", lower=intensity.lower, upper=intensity.upper, b_min=0.0, b_max=1.0,
                                      clip=True))
    steps.append(T.Resized("image", spatial_size=size, mode="area"))
    if seg:
        steps.append(T.Resized("mask", spatial_size=size, mode="nearest"))
    steps.append(T.EnsureTyped(keys, dtype=torch.float32, track_meta=False))
    if train:
        steps.extend(_augmentations(config, keys))
        steps.append(T.EnsureTyped(keys, dtype=torch.float32, track_meta=False))
    return T.Compose(steps)


def make_dataset(config: TrainingConfig, samples: Iterable[Sample], n_classes: int, *, train: bool) -> Any:
    """A MONAI (cache) dataset of ``samples``: decoding, normalising and resizing happen once when cached."""
    md = monai_module("data")

    data = [s.item() for s in samples]
    transform = build_transform(config, n_classes, train=train)
    if config.data.cache:
        return md.CacheDataset(data, transform, cache_rate=1.0, num_workers=None, progress=False)
    return md.Dataset(data, transform)


def make_loader(config: TrainingConfig, dataset: Any, *, train: bool, seed: int, pin_memory: bool = False) -> Any:
    """A MONAI DataLoader: shuffled with a seeded generator when training, workers seeded from it."""
    import torch
    md = monai_module("data")

    generator = torch.Generator().manual_seed(seed)
    return md.DataLoader(dataset, batch_size=config.training.batch_size, shuffle=train,
                      num_workers=config.training.num_workers, generator=generator, pin_memory=pin_memory,
                      drop_last=False)
