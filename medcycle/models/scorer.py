"""A registered model version as active learning's scorer and pseudo-labels' predictor.

The labels layer takes a scorer (:mod:`medcycle.labels.active`) or a predictor (:mod:`medcycle.labels.pseudo`)
and never imports a model; this module, in the models layer (which may import every layer below it), is the
wiring the CLI (``medcycle labels active | pseudo``) and the API (``/v1/labels/active``) share.
:class:`ModelScorer` loads a registered model version the way ``medcycle evaluate`` does (its training config,
classes and weights: :func:`medcycle.evaluation.predict.load`), reads each item's image from the object store,
preprocesses it as validation did during training, and runs the network. It covers 2D models on instance items;
series and study items use their middle instance. :func:`images_only` and :func:`mask_modality` leave a model's
mask items (e.g. SEG) out of the candidates, the latter without loading the weights.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from medcycle.errors import NotFound, UsageError
from medcycle.labels import pseudo
from medcycle.labels.active import InputTransform
from medcycle.labels.model import Annotation

if TYPE_CHECKING:
    from medcycle.evaluation.predict import Loaded
    from medcycle.objects.base import ObjectStore
    from medcycle.platform import Platform

EXTENSIONS = {"dicom": ".dcm", "nifti": ".nii.gz", "png": ".png", "jpeg": ".jpg"}


class ModelScorer:
    """A registered 2D model version as active learning's scorer and pseudo-labels' predictor."""

    def __init__(self, platform: Platform, ref: str, *, level: str = "instance") -> None:
        from medcycle.evaluation.predict import load

        self.platform, self.level = platform, level
        self.loaded: Loaded = load(platform, ref)
        if self.loaded.config.task.spatial_dims != 2:
            raise UsageError(f"{self.loaded.version.ref} is a 3D model; only 2D models are wired here yet",
                             hint="Use a 2D model, or score items with your own scorer through the library.")
        self._images: dict[str, tuple[npt.NDArray[np.float32], tuple[int, ...]]] = {}  # network input, own shape

    @property
    def version(self) -> str:
        return self.loaded.version.ref

    @property
    def segmentation(self) -> bool:
        return bool(self.loaded.config.task.segmentation)

    @property
    def mask_modality(self) -> str:
        return self.loaded.config.data.mask_modality.upper()

    def images_only(self, session: Session, items: Sequence[str]) -> tuple[str, ...]:
        """``items`` without the masks (instances or series of the model's mask modality, e.g. SEG)."""
        return images_only(session, items, level=self.level, mask_modality=self.mask_modality)

    def _instance(self, session: Session, item: str) -> tuple[str, str, str]:
        from medcycle.catalog.tables import InstanceRow, SeriesRow

        stmt = (select(InstanceRow.uid, InstanceRow.digest, InstanceRow.format)
                .join(SeriesRow, SeriesRow.uid == InstanceRow.series_uid)
                .where(InstanceRow.state == "ok", or_(SeriesRow.modality.is_(None),
                                                      func.upper(SeriesRow.modality) != self.mask_modality)))
        if self.level == "instance":
            stmt = stmt.where(InstanceRow.uid == item)
        elif self.level == "series":
            stmt = stmt.where(InstanceRow.series_uid == item)
        else:
            stmt = stmt.where(SeriesRow.study_uid == item)
        rows = list(session.execute(stmt.order_by(InstanceRow.series_uid, InstanceRow.uid)))
        if not rows:
            raise NotFound(f"item {item!r} has no image in the catalog", hint="Score items of the catalog.")
        uid, digest, fmt = rows[len(rows) // 2]
        return str(uid), str(digest), str(fmt)

    def _load(self, items: Sequence[str]) -> None:
        from medcycle.training.data import build_transform, read_file

        todo = [i for i in items if i not in self._images]
        if not todo:
            return
        transform = build_transform(self.loaded.config, len(self.loaded.classes), train=False)
        with self.platform.session(write=False) as session, tempfile.TemporaryDirectory() as tmp:
            for item in todo:
                _uid, digest, fmt = self._instance(session, item)
                path = Path(tmp) / f"{len(self._images)}{EXTENSIONS.get(fmt, '')}"
                path.write_bytes(self.platform.objects.get(digest))
                shape = tuple(read_file(path).shape)
                out = transform({"key": item, "image": (str(path),), "mask": (), "label": -1})
                self._images[item] = (np.asarray(out["image"], dtype=np.float32), shape)

    def predict(self, items: Sequence[str], *, dropout: bool = False,
                transform: InputTransform | None = None) -> list[npt.NDArray[Any]]:
        import torch

        self._load(items)
        model = self.loaded.model
        model.eval()
        if dropout:
            for m in model.modules():
                if isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d | torch.nn.Dropout3d | torch.nn.AlphaDropout):
                    m.train()
        inputs = [self._images[i][0] for i in items]
        if transform is not None:
            inputs = [np.asarray(transform(x), dtype=np.float32) for x in inputs]
        out: list[npt.NDArray[Any]] = []
        with torch.inference_mode():
            for part in range(0, len(inputs), 32):
                logits = model(torch.from_numpy(np.stack(inputs[part:part + 32]))).float()
                out.extend(torch.softmax(logits, dim=1).numpy())
        model.eval()
        return out

    def features(self, items: Sequence[str]) -> npt.NDArray[Any]:
        """The model's output probabilities, average-pooled to 8×8 for a segmenter: what it sees, where."""
        import torch

        probs = self.predict(items)
        if not self.segmentation:
            return np.stack(probs)
        pooled = [torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(np.asarray(p)), 8).flatten().numpy()
                  for p in probs]
        return np.stack(pooled)

    def __call__(self, items: Sequence[str]) -> Mapping[str, Sequence[Annotation]]:
        """Pseudo-labels: class labels, or masks resized back to each item's own grid."""
        import torch

        probs = self.predict(items)
        classes = list(self.loaded.classes)
        out: dict[str, list[Annotation]] = {}
        for item, p in zip(items, probs, strict=True):
            if not self.segmentation:
                out[item] = pseudo.class_annotations(item, p, classes)
                continue
            shape = self._images[item][1][-2:]
            back = torch.nn.functional.interpolate(torch.from_numpy(np.asarray(p))[None], size=shape,
                                                   mode="bilinear", align_corners=False)[0].numpy()
            out[item] = pseudo.mask_annotations(item, back, classes)
        return out


def images_only(session: Session, items: Sequence[str], *, level: str, mask_modality: str | None) -> tuple[str, ...]:
    """``items`` without the masks: instances or series of ``mask_modality`` (e.g. SEG); study items stay."""
    from medcycle.catalog.tables import InstanceRow, SeriesRow

    if level == "study" or mask_modality is None:
        return tuple(items)
    column = InstanceRow.uid if level == "instance" else SeriesRow.uid
    masks: set[str] = set()
    for part in range(0, len(items), 500):
        stmt = (select(column).select_from(InstanceRow).join(SeriesRow, SeriesRow.uid == InstanceRow.series_uid)
                .where(column.in_(items[part:part + 500]), func.upper(SeriesRow.modality) == mask_modality.upper()))
        masks.update(session.scalars(stmt))
    return tuple(i for i in items if i not in masks)


def mask_modality(session: Session, objects: ObjectStore, model: str) -> str | None:
    """The mask modality of a model version's training config, without loading its weights (``None``: the
    version has no training run, so no config to say)."""
    from medcycle.experiments.runs import get_run
    from medcycle.models.registry import resolve
    from medcycle.training.config import TrainingConfig

    row = resolve(session, model)
    if row.run_id is None:
        return None
    run = get_run(session, row.run_id)
    art = next((a for a in reversed(run.artifacts) if a.name == "config.json" and a.digest), None)
    if art is None or art.digest is None:
        return None
    return TrainingConfig.model_validate_json(objects.get(art.digest)).data.mask_modality.upper()
