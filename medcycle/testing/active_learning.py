"""A synthetic segmentation task small enough to train on a CPU many times over: active learning end to end.

Images are ``size`` × ``size`` phantoms: one elliptical lesion (the target) of varying contrast on a noisy,
tilted background; one image in five also has a bright ring that is *not* a lesion (a distractor a model must
learn to leave alone). The model is a small dilated CNN with dropout (:class:`TinySegNet`), and
:class:`PhantomScorer` is the :class:`medcycle.labels.active.Scorer` around it. :func:`run_curve` is one
active-learning run: start from a few random labels, then repeatedly fine-tune, measure the Dice on a fixed
test set, and ask :func:`medcycle.labels.active.select_batch` for the next batch — the library's own code
path, with a fresh model version each round (so nothing stale comes from the score cache).

Used by ``tests/labels/test_active.py`` (a tiny configuration) and ``bench/active_learning.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from medcycle.errors import ValidationFailed
from medcycle.labels import policy
from medcycle.labels.active import InputTransform, MemoryCache, ScoreCache, select_batch

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Phantoms:
    images: F32  # (N, 1, S, S)
    masks: npt.NDArray[np.int64]  # (N, S, S)
    kinds: npt.NDArray[np.int64]  # 0 plain, 1 low contrast, 2 with a ring distractor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def phantom(rng: np.random.Generator, size: int = 48) -> tuple[F32, npt.NDArray[np.int64], int]:
    s = size / 48.0
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    img = rng.normal(0.0, rng.uniform(0.1, 0.3), (size, size)).astype(np.float32)
    img += rng.uniform(-0.3, 0.3) * (xx / size) + rng.uniform(-0.3, 0.3) * (yy / size)
    cy, cx = rng.uniform(12 * s, 36 * s, 2)
    ry, rx = rng.uniform(4 * s, 10 * s, 2)
    theta = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    mask = (u / rx) ** 2 + (v / ry) ** 2 <= 1
    contrast = rng.uniform(0.5, 1.2)
    img += contrast * mask
    kind = 0 if contrast > 0.7 else 1
    if rng.random() < 0.2:
        kind = 2
        dy, dx = cy, cx
        for _ in range(50):
            dy, dx = rng.uniform(9 * s, 39 * s, 2)
            if np.hypot(dy - cy, dx - cx) > 17 * s:
                break
        r = rng.uniform(5 * s, 8 * s)
        d = np.hypot(yy - dy, xx - dx)
        img += rng.uniform(0.8, 1.2) * ((d <= r) & (d >= r - 2.5 * s))
    return img.astype(np.float32), mask.astype(np.int64), kind


def phantoms(n: int, seed: int, size: int = 48) -> Phantoms:
    rng = np.random.default_rng(seed)
    made = [phantom(rng, size) for _ in range(n)]
    return Phantoms(np.stack([m[0] for m in made])[:, None], np.stack([m[1] for m in made]),
                    np.array([m[2] for m in made], dtype=np.int64))


class TinySegNet(torch.nn.Module):
    """3×3 convolutions dilated 1, 2, 4 (receptive field 15 px), dropout after the dilated ones, 1×1 head."""

    def __init__(self, width: int = 8, dropout: float = 0.25) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        channels = 1
        for d in (1, 2, 4):
            layers += [torch.nn.Conv2d(channels, width, 3, padding=d, dilation=d), torch.nn.ReLU()]
            if d > 1:
                layers.append(torch.nn.Dropout2d(dropout))
            channels = width
        self.body = torch.nn.Sequential(*layers)
        self.head = torch.nn.Conv2d(width, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x))
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """A 4×4 average-pooled map of the last hidden layer, flattened: where which structures are."""
        h = torch.nn.functional.adaptive_avg_pool2d(self.body(x), 4)
        return h.flatten(1)


def set_dropout(net: torch.nn.Module, on: bool) -> None:
    """Evaluation mode, with only the dropout layers switched on (MC-dropout) or off."""
    net.eval()
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d):
            m.train(on)


@dataclass
class PhantomScorer:
    """The active-learning :class:`~medcycle.labels.active.Scorer` over a network and an image per item."""

    net: TinySegNet
    images: dict[str, F32]
    model_version: str
    batch: int = 128
    calls: list[str] = field(default_factory=list)

    @property
    def version(self) -> str:
        return self.model_version

    def _inputs(self, items: Sequence[str], transform: InputTransform | None) -> list[F32]:
        return [np.asarray(transform(self.images[i]) if transform else self.images[i], dtype=np.float32)
                for i in items]

    def predict(self, items: Sequence[str], *, dropout: bool = False,
                transform: InputTransform | None = None) -> list[npt.NDArray[Any]]:
        self.calls.append("predict-dropout" if dropout else "predict")
        set_dropout(self.net, dropout)
        inputs = self._inputs(items, transform)
        out: list[npt.NDArray[Any]] = []
        with torch.inference_mode():
            for part in range(0, len(inputs), self.batch):
                x = torch.from_numpy(np.stack(inputs[part:part + self.batch]))
                out.extend(torch.softmax(self.net(x), dim=1).numpy())
        return out

    def features(self, items: Sequence[str]) -> npt.NDArray[Any]:
        self.calls.append("features")
        set_dropout(self.net, False)
        inputs = self._inputs(items, None)
        with torch.inference_mode():
            parts = [self.net.embed(torch.from_numpy(np.stack(inputs[p:p + self.batch]))).numpy()
                     for p in range(0, len(inputs), self.batch)]
        return np.concatenate(parts)


def dice_per_image(net: TinySegNet, data: Phantoms) -> npt.NDArray[np.float64]:
    """Foreground Dice of each image, empty masks as :mod:`medcycle.labels.policy` decides (both empty: 1 — a
    lesion-free image left clean; one empty: 0 — a false positive on it, or a lesion missed entirely)."""
    set_dropout(net, False)
    with torch.inference_mode():
        pred = torch.cat([net(torch.from_numpy(data.images[p:p + 256])).argmax(1)
                          for p in range(0, len(data), 256)]).numpy() == 1
    return masks_dice(pred, data.masks == 1)


def masks_dice(pred: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Dice of each pair of boolean masks ``(N, ...)``, with the project's empty-mask policy."""
    if pred.shape != truth.shape:
        raise ValidationFailed(f"predicted masks {pred.shape} and reference masks {truth.shape} differ in shape",
                               hint="Give one predicted mask per reference mask, on the same grid.")
    axes = tuple(range(1, pred.ndim))
    inter = (pred & truth).sum(axis=axes)
    total = pred.sum(axis=axes) + truth.sum(axis=axes)
    out: npt.NDArray[np.float64] = (2.0 * inter / np.maximum(total, 1)).astype(np.float64)
    for k in range(len(out)):
        fixed = policy.empty_overlap(not pred[k].any(), not truth[k].any())
        if fixed is not None:
            out[k] = fixed
    return out


def train(net: TinySegNet, opt: torch.optim.Optimizer, data: Phantoms, idx: Sequence[int], steps: int,
          rng: np.random.Generator, batch: int = 16) -> None:
    """``steps`` Adam steps of cross-entropy on random batches of the labelled images ``idx``."""
    net.train()
    images, masks = torch.from_numpy(data.images), torch.from_numpy(data.masks)
    chosen = np.asarray(idx)
    for _ in range(steps):
        pick = rng.choice(chosen, size=batch, replace=len(chosen) < batch)
        loss = torch.nn.functional.cross_entropy(net(images[pick]), masks[pick])
        opt.zero_grad()
        torch.autograd.backward(loss)
        opt.step()


@dataclass(frozen=True, slots=True)
class CurveConfig:
    pool: int = 240
    test: int = 120
    size: int = 48
    start: int = 8
    step: int = 8
    max_labels: int = 96
    first_steps: int = 150
    steps: int = 60
    mc_samples: int = 6
    width: int = 8
    lr: float = 3e-3
    test_seed: int = 99


@dataclass(frozen=True, slots=True)
class Curve:
    strategy: str
    seed: int
    labels: tuple[int, ...]
    dice: tuple[float, ...]  # mean test Dice after training on that many labels
    dice_by_kind: tuple[tuple[float, ...], ...]  # per round: plain, low contrast, ring
    picked: tuple[str, ...]  # every labelled item, in the order labelled
    scored: int  # items scored by a model over the run

    def labels_to(self, target: float) -> int | None:
        """The fewest labels at which the test Dice reached ``target`` (``None``: not within the run)."""
        return next((n for n, d in zip(self.labels, self.dice, strict=True) if d >= target), None)

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "seed": self.seed, "labels": list(self.labels), "dice": list(self.dice),
                "dice_by_kind": [list(x) for x in self.dice_by_kind], "scored": self.scored}


def run_curve(strategy: str, seed: int, config: CurveConfig = CurveConfig(), *,
              cache: ScoreCache | None = None) -> Curve:
    """One active-learning run; the pool and the first labels depend on ``seed`` only (paired across strategies)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pool = phantoms(config.pool, 1000 + seed, config.size)
    test = phantoms(config.test, config.test_seed, config.size)
    names = [f"p{seed}-{i:04d}" for i in range(len(pool))]
    index = {n: i for i, n in enumerate(names)}
    labelled = [names[i] for i in rng.choice(len(pool), config.start, replace=False)]
    train_rng = np.random.default_rng(10_000 + seed)
    net = TinySegNet(config.width)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    train(net, opt, pool, [index[n] for n in labelled], config.first_steps, train_rng)
    cache = cache if cache is not None else MemoryCache()
    images = {n: pool.images[i] for n, i in index.items()}
    counts, dices, kinds, scored, rnd = [], [], [], 0, 0
    while True:
        d = dice_per_image(net, test)
        counts.append(len(labelled))
        dices.append(float(d.mean()))
        kinds.append(tuple(float(d[test.kinds == k].mean()) if (test.kinds == k).any() else float("nan")
                           for k in range(3)))
        if len(labelled) >= config.max_labels:
            break
        scorer = PhantomScorer(net, images, f"phantom-s{seed}-r{rnd}")
        batch = select_batch(names, min(config.step, config.max_labels - len(labelled)), strategy, scorer=scorer,
                             labelled=labelled, cache=cache, seed=seed * 1000 + rnd, mc_samples=config.mc_samples)
        scored += batch.scored
        labelled += list(batch.items)
        rnd += 1
        train(net, opt, pool, [index[n] for n in labelled], config.steps, train_rng)
    return Curve(strategy, seed, tuple(counts), tuple(dices), tuple(kinds), tuple(labelled), scored)
