"""The fixed registry of networks a config may name (MONAI implementations), built from ``ModelConfig``.

A config can only choose a name and a size (``width``, ``depth``, ``dropout``); it never names a class or
module, so loading a config runs no code it brings. :data:`medcycle.training.config.MODELS` says which
task each network serves.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from medcycle.training.config import MODELS, ModelName, TaskKind, TrainingConfig


def out_channels(config: TrainingConfig, classes: list[str]) -> int:
    """Output channels: one logit per class (classification) or per mask value incl. background (segmentation)."""
    return len(classes) + 1 if config.task.segmentation else len(classes)


def build_model(config: TrainingConfig, n_out: int) -> torch.nn.Module:
    """The network of ``config.model`` for 1-channel input of ``config.input.size``, ``n_out`` outputs.

    Classification networks map ``(B, 1, H, W)`` to logits ``(B, n_out)``; segmentation networks map
    ``(B, 1, *spatial)`` to logits ``(B, n_out, *spatial)``.
    """
    from medcycle.training.data import monai_module

    nets = monai_module("networks.nets")
    m = config.model
    dims = config.task.spatial_dims
    width, depth = m.size()
    levels = tuple(width * 2**i for i in range(depth))
    net: Any
    if m.name is ModelName.TINY_CNN:
        net = tiny_cnn(dims, levels, n_out, m.dropout)
    elif m.name is ModelName.DENSENET_SMALL:
        net = nets.DenseNet(spatial_dims=dims, in_channels=1, out_channels=n_out, init_features=2 * width,
                            growth_rate=width, block_config=(2,) * depth, dropout_prob=m.dropout)
    elif m.name is ModelName.DENSENET121:
        net = nets.DenseNet121(spatial_dims=dims, in_channels=1, out_channels=n_out, dropout_prob=m.dropout)
    elif m.name is ModelName.BASIC_UNET:
        net = nets.BasicUNet(spatial_dims=dims, in_channels=1, out_channels=n_out,
                             features=(width, width, 2 * width, 4 * width, 8 * width, width), dropout=m.dropout)
    elif m.name is ModelName.UNET:
        net = nets.UNet(spatial_dims=dims, in_channels=1, out_channels=n_out, channels=levels,
                        strides=(2,) * (depth - 1), num_res_units=1, dropout=m.dropout)
    else:  # pragma: no cover - the config's enum admits nothing else
        raise AssertionError(m.name)
    module: torch.nn.Module = net
    return module


def tiny_cnn(dims: int, channels: tuple[int, ...], n_out: int, dropout: float) -> torch.nn.Module:
    """A 7×7 stride-2 stem, then MONAI residual units (stride 2, batch norm, ReLU) of ``channels[1:]``, global
    average pooling and a linear layer: ``(B, 1, *spatial)`` → logits ``(B, n_out)``."""
    from medcycle.training.data import monai_module

    blocks = monai_module("networks.blocks")
    layers: list[torch.nn.Module] = [blocks.Convolution(spatial_dims=dims, in_channels=1, out_channels=channels[0],
                                                        strides=2, kernel_size=7, norm="BATCH", act="RELU")]
    for previous, width in itertools.pairwise(channels):
        layers.append(blocks.ResidualUnit(spatial_dims=dims, in_channels=previous, out_channels=width, strides=2,
                                          subunits=2, norm="BATCH", act="RELU"))
    pool = torch.nn.AdaptiveAvgPool2d(1) if dims == 2 else torch.nn.AdaptiveAvgPool3d(1)
    return torch.nn.Sequential(*layers, pool, torch.nn.Flatten(), torch.nn.Dropout(dropout),
                               torch.nn.Linear(channels[-1], n_out))


def describe() -> list[dict[str, Any]]:
    """The registry, for ``medcycle train models``."""
    return [{"name": name.value, "tasks": sorted(t.value for t in tasks),
             "width": size[0] if size else None, "depth": size[1] if size else None, "about": about}
            for name, (tasks, size, about) in MODELS.items()]


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["TaskKind", "build_model", "count_parameters", "describe", "out_channels"]
