"""Penultimate-layer features of a network, taken with hooks while it runs (no second forward pass).

:class:`FeatureTap` hooks the input of one layer — the one a model version's contract names
(``embedding_layer``, a module name as ``model.named_modules()`` lists it), else the network's last layer
that has weights: the ``Linear`` head of a classifier, the final convolution of a segmentation network —
and, unless ``outputs=False``, the network's output. Feature maps (segmentation) are averaged over their
spatial axes, so every image gives one vector. Serving (:class:`medcycle.serving.predictor.Predictor`) and
:func:`medcycle.monitoring.reference.capture` use the same tap on the same layer, so live and reference
features agree::

    with FeatureTap(model) as tap:
        logits = model(x)
    features = tap.features()  # (batch, channels)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from medcycle.errors import ValidationFailed

if TYPE_CHECKING:
    import torch


def last_weighted_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The last leaf module (in registration order) that owns a ``weight`` parameter."""
    found = None
    for module in model.modules():
        if not list(module.children()) and getattr(module, "weight", None) is not None:
            found = module
    if found is None:
        raise ValidationFailed(f"{type(model).__name__} has no layer with weights to take features from",
                               hint="Embeddings need a network whose last layer is Linear or a convolution.")
    return found


def embedding_layer(model: torch.nn.Module, contract: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """The layer whose input is the embedding: the contract's ``embedding_layer``, else the last weighted one."""
    name = (contract or {}).get("embedding_layer")
    if not name:
        return last_weighted_layer(model)
    modules = dict(model.named_modules())
    if not isinstance(name, str) or name not in modules:
        near = [n for n in modules if n and not list(modules[n].children())][-3:]
        raise ValidationFailed(f"the contract's embedding_layer {name!r} is not a layer of {type(model).__name__}",
                               hint=f"Name a module as model.named_modules() lists it (the last ones: "
                                    f"{', '.join(near) or 'none'}), or drop embedding_layer to use the head's input.")
    found: torch.nn.Module = modules[name]
    return found


class FeatureTap:
    """Collects the penultimate features (and outputs) of every forward pass while the ``with`` block runs.

    Args:
        model: the network.
        layer: the layer whose input is taken (default :func:`last_weighted_layer`).
        outputs: also keep the network's outputs (:meth:`outputs`); serving, which has them anyway, says False.
    """

    def __init__(self, model: torch.nn.Module, *, layer: torch.nn.Module | None = None, outputs: bool = True) -> None:
        self.layer = layer if layer is not None else last_weighted_layer(model)
        self.model = model
        self.keep_outputs = outputs
        self._features: list[npt.NDArray[np.float64]] = []
        self._outputs: list[npt.NDArray[np.float64]] = []
        self._handles: list[Any] = []

    def _pre(self, _module: Any, inputs: tuple[Any, ...]) -> None:
        x = inputs[0].detach().float()
        if x.ndim > 2:
            x = x.mean(dim=tuple(range(2, x.ndim)))
        self._features.append(x.cpu().numpy().astype(np.float64))

    def _post(self, _module: Any, _inputs: tuple[Any, ...], output: Any) -> None:
        self._outputs.append(output.detach().float().cpu().numpy().astype(np.float64))

    def __enter__(self) -> FeatureTap:
        self._handles = [self.layer.register_forward_pre_hook(self._pre)]
        if self.keep_outputs:
            self._handles.append(self.model.register_forward_hook(self._post))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def features(self) -> npt.NDArray[np.float64]:
        """Every case's features so far, in order: ``(cases, channels)``."""
        if not self._features:
            return np.zeros((0, 0))
        return np.concatenate(self._features)

    def take(self) -> npt.NDArray[np.float64]:
        """:meth:`features` so far, forgetting them (and the outputs): a long-lived tap's next batch starts empty."""
        out = self.features()
        self._features, self._outputs = [], []
        return out

    def outputs(self) -> list[npt.NDArray[np.float64]]:
        """The network's outputs, one array per forward pass."""
        return list(self._outputs)
