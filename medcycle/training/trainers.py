"""One training loop for 2D classification, 2D segmentation and 3D segmentation, reported through a tracked run.

:func:`train` trains on a folder (a pulled version, or any folder with a ``manifest.csv``) and reports
everything to a :class:`~medcycle.experiments.sdk.Run`: the config as params and as ``config.json``, the
samples per split, the device, ``train/loss`` per step, the validation metrics per epoch, each new best
model (``checkpoint``, by digest), the final best model (``model``) and, for segmentation, a validation
image with its predicted mask. :func:`train_version` pulls a dataset version first and opens the run.

Determinism: ``run.seed`` seeds Python, NumPy and torch and asks for deterministic algorithms; the
shuffling generator, the augmentations' random states and the DataLoader workers are seeded from the
config's seed, and the network is initialised right after seeding. Two runs of one config on the same
hardware and software give the same weights (:func:`weights_digest`).

On CUDA (``device: auto`` with a GPU, or ``cuda``) the loop uses float16 autocast with gradient scaling
when ``amp`` is on; on CPU it runs in float32.
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medcycle.errors import UsageError
from medcycle.training.config import TrainingConfig
from medcycle.training.data import SampleSet, index, make_dataset, make_loader, monai_module
from medcycle.training.models import build_model, count_parameters, out_channels


@dataclass
class TrainResult:
    run_id: str
    task: str
    data_dir: str
    classes: list[str]
    samples: dict[str, Any]
    monitor: str
    best: float
    best_epoch: int
    epochs: int
    stopped_early: bool
    final: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    model_digest: str | None = None
    weights_digest: str = ""
    device: str = "cpu"
    amp: bool = False
    parameters: int = 0
    seconds: float = 0.0
    dataset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(choice: str) -> torch.device:
    """``auto`` → CUDA when a GPU is visible, else CPU; ``cuda`` without a GPU is an error."""
    has_cuda = torch.cuda.is_available()
    if choice == "cuda" and not has_cuda:
        raise UsageError("training.device is cuda but torch sees no GPU",
                         hint="Use device auto or cpu; check CUDA_VISIBLE_DEVICES, the driver (`nvidia-smi`) "
                              "and that torch was built with CUDA.")
    return torch.device("cuda" if choice in ("auto", "cuda") and has_cuda else "cpu")


def _global_torch_state() -> Callable[[], None]:
    """A function that puts back torch's process-wide settings a training run changes."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)

    def restore() -> None:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn

    return restore


def cpu_threads(configured: int | None) -> int:
    """``training.threads``, or torch's default capped at the cores less one (one is left for data loading and
    the tracking writer: OpenMP threads that outnumber free cores spin, and a step can get ten times slower)."""
    if configured:
        return configured
    cores = os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), cores - 1))


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the state dict's names, dtypes, shapes and bytes (independent of how it is serialised)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def log_weights(run: Any, model: torch.nn.Module, name: str, *, step: int, meta: Mapping[str, Any]) -> str:
    """Store ``model``'s state dict (``torch.save`` bytes) as a model artifact; returns its digest.

    Saved through memory rather than a named temp file: ``torch.save`` names the archive's root folder after
    the file, so equal weights saved under two temp names would get two digests.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    info = {"format": "torch.state_dict", "class": type(model).__name__, **meta}
    digest: str = run.log_artifact(buffer.getvalue(), f"{name}", kind="model", step=step, meta=info)
    return digest


def _optimizer(config: TrainingConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = config.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)


def _loss(config: TrainingConfig) -> torch.nn.Module:
    if config.task.segmentation:
        # Dice over the whole batch: images without foreground do not each pull towards "predict nothing".
        loss: torch.nn.Module = monai_module("losses").DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        return loss
    return torch.nn.CrossEntropyLoss()


def _target(config: TrainingConfig, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor:
    if config.task.segmentation:
        mask: torch.Tensor = batch["mask"]
        return mask.to(device, non_blocking=True)
    return torch.as_tensor(batch["label"], dtype=torch.long).to(device, non_blocking=True)


def _auroc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Macro one-vs-rest AUROC over the classes present with both positives and negatives (NaN if none)."""
    compute = monai_module("metrics").compute_roc_auc
    n = probs.shape[1]
    columns = [1] if n == 2 else list(range(n))
    scores = []
    for c in columns:
        y = (labels == c).float()
        if 0 < float(y.sum()) < len(y):
            scores.append(float(compute(probs[:, c], y)))
    return float(np.mean(scores)) if scores else math.nan


@torch.no_grad()
def evaluate(config: TrainingConfig, model: torch.nn.Module, loader: Any, device: torch.device, amp: bool,
             classes: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
    """Validation metrics, and one example (image, predicted mask) for segmentation.

    Classification: ``val/loss``, ``val/accuracy``, ``val/auroc`` (macro one-vs-rest). Segmentation:
    ``val/loss`` and ``val/dice`` (mean over images and foreground classes, by the evaluation's convention: an
    image whose class is absent from both truth and prediction counts 1, a false positive on an image without
    the class counts 0 — so the best epoch is not one that marks lesions on healthy images), plus
    ``val/dice/<class>`` with several classes.
    """
    model.eval()
    loss_fn = _loss(config)
    losses: list[float] = []
    logits_all: list[torch.Tensor] = []
    labels_all: list[torch.Tensor] = []
    example: dict[str, Any] = {}
    dice = None
    if config.task.segmentation:
        dice = monai_module("metrics").DiceMetric(include_background=False, reduction="mean_batch",
                                                  ignore_empty=False)
        one_hot = monai_module("networks.utils").one_hot
    n_out = out_channels(config, classes)
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        y = _target(config, batch, device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            out = model(x)
            losses.append(float(loss_fn(out, y)) * len(x))
        if dice is not None:
            pred = out.float().argmax(dim=1, keepdim=True)
            dice(y_pred=one_hot(pred, n_out), y=one_hot(y.long(), n_out))
            if not example or (float(example["mask"].sum()) == 0 and float(y.sum()) > 0):
                k = int(torch.argmax(y.flatten(1).sum(1)))
                example = {"image": x[k, 0].float().cpu(), "mask": y[k, 0].cpu(), "pred": pred[k, 0].cpu()}
        else:
            logits_all.append(out.float().cpu())
            labels_all.append(y.cpu())
    total = len(loader.dataset)
    metrics = {"val/loss": sum(losses) / max(1, total)}
    if dice is not None:
        per_class = dice.aggregate()
        values = [float(v) for v in torch.as_tensor(per_class).flatten()]
        finite = [v for v in values if math.isfinite(v)]
        metrics["val/dice"] = float(np.mean(finite)) if finite else math.nan
        if len(values) > 1:
            metrics.update({f"val/dice/{c}": v for c, v in zip(classes, values, strict=False)})
    else:
        logits, labels = torch.cat(logits_all), torch.cat(labels_all)
        probs = torch.softmax(logits, dim=1)
        metrics["val/accuracy"] = float((probs.argmax(1) == labels).float().mean())
        metrics["val/auroc"] = _auroc(probs, labels)
    return metrics, example


@torch.no_grad()
def recalibrate_batch_norm(model: torch.nn.Module, loader: Any, device: torch.device, amp: bool) -> bool:
    """Recompute every batch-norm layer's running statistics as the plain average over ``loader`` (train mode,
    no gradients), so validation uses statistics of the current weights; returns whether there were any."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return False
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass
    model.train()
    for batch in loader:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            model(batch["image"].to(device, non_blocking=True))
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    return True


def _better(value: float, best: float | None, minimise: bool, min_delta: float) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if minimise else value > best + min_delta


EpochCallback = Callable[[int, dict[str, float]], None]


def train(config: TrainingConfig, data_dir: str | Path, run: Any, *, samples: SampleSet | None = None,
          on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train ``config`` on the folder ``data_dir``, reporting to ``run`` (a tracked run; not ended here).

    ``on_epoch(epoch, metrics)`` is called after each epoch's validation (e.g. to print progress).

    Raises:
        UsageError: a split is empty, ``device: cuda`` without a GPU, …
        ValidationFailed: images, labels or masks that cannot be used (the message names the file).
    """
    started = time.monotonic()
    t = config.training
    samples = samples or index(data_dir, config)
    train_set, val_set = samples.split(config.data.train_split), samples.split(config.data.val_split)
    restore = _global_torch_state()
    torch.set_num_threads(cpu_threads(t.threads))
    try:
        run.seed(t.seed, deterministic=t.deterministic)
        device = resolve_device(t.device)
        amp = t.amp and device.type == "cuda"
        n_classes = len(samples.classes)
        loaders = [make_loader(config, make_dataset(config, part, n_classes, train=is_train), train=is_train,
                               seed=t.seed, pin_memory=device.type == "cuda")
                   for part, is_train in ((train_set, True), (val_set, False))]
        torch.manual_seed(t.seed)  # the network's initial weights depend on the seed only
        model = build_model(config, out_channels(config, samples.classes)).to(device)
        result = TrainResult(run_id=run.id, task=config.task.value, data_dir=str(samples.root),
                             classes=samples.classes, samples=samples.summary(), monitor=config.monitor,
                             best=math.nan, best_epoch=-1, epochs=0, stopped_early=False, final={},
                             device=str(device), amp=amp, parameters=count_parameters(model))
        run.log_params({**config.params(), "runtime": {"device": str(device), "amp": amp,
                                                       "threads": torch.get_num_threads(),
                                                       "parameters": result.parameters},
                        "samples": samples.summary(), "data_dir": str(samples.root)})
        run.log_artifact(config.model_dump_json(indent=2).encode(), "config.json", meta={"what": "training config"})
        _loop(config, model, loaders[0], loaders[1], device, amp, samples.classes, run, result, on_epoch)
    finally:
        restore()  # threads and determinism flags as the caller had them
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _loop(config: TrainingConfig, model: torch.nn.Module, train_loader: Any, val_loader: Any,
          device: torch.device, amp: bool, classes: list[str], run: Any, result: TrainResult,
          on_epoch: EpochCallback | None) -> None:
    t = config.training
    optimizer = _optimizer(config, model)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs)
                 if config.optimizer.scheduler == "cosine" else None)
    loss_fn = _loss(config)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    monitor = config.monitor
    minimise = monitor.endswith("loss")
    min_delta = t.early_stopping.min_delta if t.early_stopping else 0.0
    best: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_example: dict[str, Any] = {}
    stale, step = 0, 0
    for epoch in range(t.epochs):
        epoch_start = time.monotonic()
        model.train()
        losses = []
        for batch in train_loader:
            x = batch["image"].to(device, non_blocking=True)
            y = _target(config, batch, device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            value = float(loss.detach())
            losses.append(value)
            run.log_metric("train/loss", value, step=step)
            step += 1
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        if t.bn_recalibration:
            recalibrate_batch_norm(model, train_loader, device, amp)
        metrics, example = evaluate(config, model, val_loader, device, amp, classes)
        metrics.update({"train/epoch_loss": float(np.mean(losses)), "lr": lr,
                        "epoch_seconds": time.monotonic() - epoch_start})
        run.log_metrics(metrics, step=epoch)
        result.history.append({"epoch": epoch, **metrics})
        result.epochs = epoch + 1
        result.final = {k: v for k, v in metrics.items() if k.startswith("val/")}
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if _better(metrics[monitor], best, minimise, min_delta):
            best, stale = metrics[monitor], 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            best_example = example
            result.best, result.best_epoch = best, epoch
            if t.checkpoints == "best":
                log_weights(run, model, "checkpoint", step=epoch, meta={"epoch": epoch, monitor: best})
        else:
            stale += 1
        run.flush(timeout=0)  # this epoch's points are on disk even if the process dies now
        if t.early_stopping is not None and stale >= t.early_stopping.patience:
            result.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to("cpu")
    result.weights_digest = weights_digest(model)
    result.model_digest = log_weights(run, model, "model", step=max(result.best_epoch, 0), meta={
        "epoch": result.best_epoch, monitor: result.best, "weights_digest": result.weights_digest,
        "task": config.task.value, "classes": classes, "input_size": config.input.size})
    run.log_metrics({f"best/{monitor.removeprefix('val/')}": result.best, "best/epoch": result.best_epoch},
                    step=max(result.best_epoch, 0))
    run.set_tags({"weights_digest": result.weights_digest, "best_epoch": result.best_epoch})
    if config.task.segmentation and config.tracking.log_images and best_example:
        run.log_image("val/prediction", best_example["image"], mask=best_example["pred"],
                      step=max(result.best_epoch, 0))
        run.log_image("val/truth", best_example["image"], mask=best_example["mask"], step=max(result.best_epoch, 0))


def train_version(platform: Any, config: TrainingConfig, *, dataset: str | None = None, dest: Path | None = None,
                  run_options: Mapping[str, Any] | None = None, on_epoch: EpochCallback | None = None
                  ) -> TrainResult:
    """Pull the config's dataset version (or ``dataset``), open a tracked run on ``platform`` and train.

    ``data.path`` without a dataset trains on that folder as it is (the run then names no dataset version).
    The version is pulled to ``dest`` (default ``HOME/pulls/<dataset>/<version id prefix>``); a pull of a
    version already there only checks it. ``run_options`` go to ``start_run`` (e.g. ``journal_dir``).
    """
    from medcycle.datasets import transfer, versions
    from medcycle.experiments.sdk import start_run

    ref = dataset or config.data.dataset
    if ref is None and config.data.path is None:
        raise UsageError("the config names no dataset", hint="Pass --dataset NAME@TAG or set data.dataset.")
    if ref is not None:
        with platform.session() as session:
            info = versions.version_info(session, versions.resolve(session, ref))
        folder = Path(dest) if dest else platform.settings.home / "pulls" / info.dataset / info.id[:16]
        transfer.pull(platform, ref, folder, actor="training", via="training")
    else:
        assert config.data.path is not None
        folder = Path(config.data.path)
    tracking = config.tracking
    # the code is where the command runs (the entry script is medcycle's own console script)
    options = {"platform": platform, "code_path": Path.cwd(), **(run_options or {})}
    with start_run(tracking.project, name=tracking.name, hypothesis=tracking.hypothesis, dataset=ref,
                   tags={"task": config.task.value, **tracking.tags}, **options) as run:
        result = train(config, folder, run, on_epoch=on_epoch)
        result.dataset = ref
    return result
