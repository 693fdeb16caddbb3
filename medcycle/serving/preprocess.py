"""The training's evaluation transform, applied to arrays: serving preprocesses exactly as validation did.

:func:`medcycle.training.data.build_transform` composes *load files* → intensity mapping → resize → tensor.
Serving has arrays already, so :class:`EvalTransform` keeps every step after the loader — the same MONAI
objects built from the same config, not a re-implementation — and feeds them what the loader would have
produced: a channel-first float array (and, for segmentation, an empty mask the resize step expects).

A 2D model takes each slice of a volume as an image; a 3D model takes the volume.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from medcycle.errors import ValidationFailed

if TYPE_CHECKING:
    import torch

    from medcycle.training.config import TrainingConfig

F32 = NDArray[np.float32]


class EvalTransform:
    """``config``'s evaluation preprocessing as a callable on one image array.

    Args:
        config: the training config the model version was trained with.
        n_classes: its number of classes (masks, for segmentation).
    """

    def __init__(self, config: TrainingConfig, n_classes: int) -> None:
        from medcycle.training.data import build_transform, monai_module

        T = monai_module("transforms")
        full = build_transform(config, n_classes, train=False)
        steps = list(full.transforms)
        if not steps or not isinstance(steps[0], T.Lambda):  # the loader step is what arrays replace
            raise ValidationFailed("the training transform no longer starts with its file loader",
                                   hint="Update medcycle.serving.preprocess with medcycle.training.data.")
        self.compose: Any = T.Compose(steps[1:])
        self.segmentation = config.task.segmentation
        self.dims = config.task.spatial_dims
        self.size = tuple(config.input.size)

    def units(self, pixels: F32) -> list[F32]:
        """The model inputs of one case: its slices (2D model) or the volume (3D model)."""
        arr = np.asarray(pixels, dtype=np.float32)
        while arr.ndim > self.dims and arr.shape[0] == 1:
            arr = arr[0]
        if self.dims == 2:
            if arr.ndim == 2:
                return [arr]
            if arr.ndim == 3:
                return [arr[k] for k in range(arr.shape[0])]
        elif arr.ndim == 3:
            return [arr]
        raise ValidationFailed(f"an image of shape {arr.shape} does not fit a {self.dims}D model",
                               hint="Send volumes (a series, a 3D NIfTI) to 3D models and images or series to "
                                    "2D models.")

    def __call__(self, image: F32) -> torch.Tensor:
        """One unit (spatial array) → the model's input tensor ``(1, *input.size)``."""
        item: dict[str, Any] = {"image": np.asarray(image, dtype=np.float32)[None]}
        if self.segmentation:
            item["mask"] = np.zeros_like(item["image"])
        tensor: torch.Tensor = self.compose(item)["image"]
        return tensor
