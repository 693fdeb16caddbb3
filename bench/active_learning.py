"""Active learning vs random labeling on a synthetic segmentation task that trains on a CPU, several seeds.

    .venv/bin/python bench/active_learning.py [--quick] [--seeds 5] [--strategies random,entropy,...]
        [--normal-fraction 0.7] [--pool 1000] [--test 500] [--lesions-only] [--max-labels 70]
        [--fraction 0.95] [--first-seed 0] [--test-seed 99] [--threads 1] [--jobs 1] [--out FILE]

**The task** mimics a medical labeling pool. Real pools are dominated by normal studies — the enriched
public segmentation challenge sets of chest radiographs are (most of their images have nothing to
segment), and screening or triage worklists far more so — and among the
abnormal studies most findings are conspicuous and a minority subtle. Each image (40×40) is a noisy
background with a gentle tilt and two broad, faint "anatomy" bumps that are not lesions. A share
``--normal-fraction`` (default 0.7, the conservative end of those sets) holds nothing else: a normal study,
an empty mask. The others hold one elliptical lesion: 85% large (radius 4–8 px) and bright (contrast
0.9–1.4), 15% small (radius 1.7–2.7 px) and faint (contrast 0.5–0.75) — the cases a model misses until it
has seen some. Pool 1000 images per seed (300 with a lesion, 45 of them hard; labels are the scarce thing,
not images), a fixed test set of 500 with the same mix (seed 99). The model: a small dilated CNN with
dropout (``medcycle.testing.active_learning.TinySegNet``, width 12). Per-image Dice follows the project's
empty-mask policy (``medcycle.labels.policy``): a normal study left clean scores 1, a false positive on it
0, a lesion missed entirely 0.

**The first design** (``--lesions-only``: every image holds a lesion, pool 400, test 200; the draws are
exactly the first design's) measured entropy at +15% [−3%, +28%]: the claim not met. It
understated what active learning is for: with no normals, every random label is a lesion to learn from,
so random is a strong baseline that no real pool offers.

**The protocol**, fixed before measuring (the design choices above were made by reasoning about real pools;
pilot runs used seeds 100–102 and test seed 98, never the reported seeds or test set): every run starts
from the same 10 random labels per seed (runs are paired) and the same initial weights, trains 150 Adam
steps, then per round: measures the mean per-image test Dice, asks the library
(``medcycle.labels.active.select_batch``, a new model version each round) for the next 5 items, and
fine-tunes the same network 30 more steps (warm start; the same budget per round for every strategy), up
to 70 labels. The **target Dice** is a fixed fraction (``--fraction``, 0.95) of the Dice of the *full-pool
model* of that seed — the same network trained on every pool label for as many steps as a whole run takes.

**Strategies** are the library's, with its default aggregation of pixel uncertainty (``foreground``: the
mean over the probable foreground, 0 where the model sees none; ``entropy@top1%`` ranks by the mean of the
1% most uncertain pixels, ``@mean`` by the whole-image mean, for comparison) and the
uncertainty-then-diversity hybrid (``+div``: k-center greedy on the features among the 3 × batch most
uncertain). Nothing is tuned per strategy.

**Reported**: per strategy, the mean test Dice at every label count (95% t-interval over seeds), the Dice on
the hard lesions, on all lesion images and on the normal studies, and the labels needed to first reach the
target (linearly interpolated between the rounds around the crossing; a run that never reaches it within
70 labels counts as 75 and is marked ``>``, which understates what it needed), with bootstrap 95%
intervals, and the paired saving against random ``1 - mean(labels) / mean(labels of random)`` with its
bootstrap 95% interval over seeds. The claim checked (issue: labels) is that an uncertainty strategy
reaches the target with >= 25% fewer labels than random. Results are printed and written to
``bench/results/active_learning.json``. ``--jobs N`` runs N runs at once in separate processes (every run
seeds its own generators: the numbers do not depend on it).

**Measured** (5 seeds; docs/labels.md has the tables). This design: labels to target random 29.2, entropy
20.7 (+29% [+11%, +43%] fewer), entropy + diversity 19.8 (+32% [+10%, +45%]), core-set 18.1 (+38% [+21%,
+48%]), TTA 30.1 (−3%), MC-dropout 46.2 (−58%): the 25% is met on the mean, but the intervals reach down to
+10%, and core-set — no uncertainty — does best, so much of the gain is not labelling normal studies the
model already leaves clean. The first design (``--lesions-only``): random 31.9, entropy 27.3 (+15% [−3%,
+28%]), MC-dropout +7%, TTA +8%, core-set −20%, entropy + diversity +11%: not met.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from medcycle.labels.active import InputTransform, MemoryCache, select_batch  # noqa: E402
from medcycle.testing.active_learning import (  # noqa: E402
    Phantoms,
    PhantomScorer,
    TinySegNet,
    dice_per_image,
    train,
)

RESULTS = ROOT / "bench" / "results" / "active_learning.json"
UNCERTAINTY = ("entropy", "margin", "mc-dropout", "tta")
ALL = ("random", "entropy", "mc-dropout", "tta", "coreset", "entropy+div")  # + entropy@top1% in the first design
QUICK = ("random", "entropy", "tta")
FRACTION = 0.95  # target Dice = FRACTION × the full-pool model's Dice, fixed before any measurement
NORMAL_FRACTION = 0.7  # lesion-free studies in pool and test set (see the docstring for why)
POOL, TEST = 1000, 500
TEST_SEED = 99  # the test set of the reported runs (pilot runs use another)
LESIONS_ONLY = {"normal_fraction": 0.0, "pool": 400, "test": 200}  # the first design (--lesions-only)
HARD, NORMAL = 1, 2  # Phantoms.kinds: 0 a large bright lesion, 1 a small faint one, 2 no lesion


@dataclass(frozen=True, slots=True)
class Config:
    pool: int = POOL
    test: int = TEST
    size: int = 40
    normal_fraction: float = NORMAL_FRACTION
    hard_fraction: float = 0.15
    start: int = 10
    step: int = 5
    max_labels: int = 70
    first_steps: int = 150
    steps: int = 30
    mc_samples: int = 6
    width: int = 12
    lr: float = 3e-3
    diversity: float = 3.0
    fraction: float = FRACTION
    test_seed: int = TEST_SEED

    @property
    def total_steps(self) -> int:
        return self.first_steps + self.steps * ((self.max_labels - self.start) // self.step)


def lesion_image(rng: np.random.Generator, size: int, hard: bool, lesion: bool = True) -> tuple[
        npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """One image and its mask; ``lesion=False``: the same background and anatomy, no lesion (a normal study)."""
    s = size / 40.0
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    img = rng.normal(0.0, rng.uniform(0.15, 0.25), (size, size)).astype(np.float32)
    img += rng.uniform(-0.3, 0.3) * (xx / size) + rng.uniform(-0.3, 0.3) * (yy / size)
    for _ in range(2):  # broad anatomy that is not a lesion
        by, bx = rng.uniform(0, size, 2)
        sd = rng.uniform(5, 9) * s
        img += rng.uniform(0.2, 0.4) * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * sd**2))
    if not lesion:
        return img, np.zeros((size, size), dtype=np.int64)
    cy, cx = rng.uniform(8 * s, 32 * s, 2)
    ry, rx = rng.uniform(1.7, 2.7, 2) * s if hard else rng.uniform(4, 8, 2) * s
    theta = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    mask = (u / rx) ** 2 + (v / ry) ** 2 <= 1
    img += (rng.uniform(0.5, 0.75) if hard else rng.uniform(0.9, 1.4)) * mask
    return img.astype(np.float32), mask.astype(np.int64)


def lesion_set(n: int, seed: int, config: Config) -> Phantoms:
    """``n`` images: a ``normal_fraction`` of them (rounded, at random positions) without a lesion (kind 2), and
    of the others a ``hard_fraction`` (rounded) with a small faint lesion (kind 1); the rest kind 0. Without
    normals the draws are exactly those of the lesions-only design (its numbers stay reproducible)."""
    rng = np.random.default_rng(seed)
    kinds = np.zeros(n, dtype=np.int64)
    normals = round(n * config.normal_fraction)
    if normals:
        kinds[rng.choice(n, normals, replace=False)] = NORMAL
    lesions = np.flatnonzero(kinds != NORMAL)
    kinds[lesions[rng.choice(len(lesions), round(len(lesions) * config.hard_fraction), replace=False)]] = HARD
    made = [lesion_image(rng, config.size, k == HARD, k != NORMAL) for k in kinds]
    return Phantoms(np.stack([m[0] for m in made])[:, None], np.stack([m[1] for m in made]), kinds)


class StackedScorer(PhantomScorer):
    """The phantom scorer, with each test-time augmentation applied once to all inputs stacked along the
    channel axis (the same flips and rotations of the spatial axes; one MONAI call instead of one per item)."""

    def _inputs(self, items: Sequence[str], transform: InputTransform | None) -> list[npt.NDArray[np.float32]]:
        if transform is None or not items:
            return super()._inputs(items, None)
        stacked = np.asarray(transform(np.concatenate([self.images[i] for i in items])), dtype=np.float32)
        return [stacked[k:k + 1] for k in range(len(items))]


@dataclass
class Run:
    strategy: str
    seed: int
    labels: list[int] = field(default_factory=list)
    dice: list[float] = field(default_factory=list)
    dice_hard: list[float] = field(default_factory=list)
    dice_lesion: list[float] = field(default_factory=list)  # test images with a lesion
    clean_normal: list[float] = field(default_factory=list)  # lesion-free test images left clean (their Dice)
    hard_picked: list[int] = field(default_factory=list)  # hard cases among the labelled, per round
    normal_picked: list[int] = field(default_factory=list)  # lesion-free images among the labelled, per round
    seconds: float = 0.0

    def labels_to(self, target: float) -> float | None:
        """Labels at which the learning curve first reaches ``target``, linearly interpolated between the two
        rounds around the crossing (``None``: not within the run)."""
        for k, (n, d) in enumerate(zip(self.labels, self.dice, strict=True)):
            if d >= target:
                if k == 0:
                    return float(n)
                n0, d0 = self.labels[k - 1], self.dice[k - 1]
                return n0 + (target - d0) / (d - d0) * (n - n0)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "seed": self.seed, "labels": self.labels, "dice": self.dice,
                "dice_hard": self.dice_hard, "dice_lesion": self.dice_lesion, "clean_normal": self.clean_normal,
                "hard_labelled": self.hard_picked, "normal_labelled": self.normal_picked, "seconds": self.seconds}


def strategy_options(name: str, config: Config) -> tuple[str, dict[str, Any]]:
    """``entropy+div`` → the hybrid; ``entropy@mean`` → whole-image mean aggregation."""
    base, opts = name, dict[str, Any]()
    if base.endswith("+div"):
        base, opts["diversity"] = base[:-4], config.diversity
    if "@" in base:
        base, opts["aggregate"] = base.split("@", 1)
    return base, opts


def make_config(args: argparse.Namespace) -> Config:
    """The configuration of a run from the command line (``--lesions-only``: the first design's defaults)."""
    base = dict(LESIONS_ONLY) if args.lesions_only else {}
    for key in ("normal_fraction", "pool", "test", "max_labels"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    if args.quick and args.max_labels is None:
        base["max_labels"] = 50
    config = Config(fraction=args.fraction, test_seed=args.test_seed, **base)
    if not 0 <= config.normal_fraction < 1:
        raise ValueError(f"--normal-fraction {config.normal_fraction} is outside [0, 1) (e.g. 0.7)")
    if not 0 < config.fraction <= 1:
        raise ValueError(f"--fraction {config.fraction} is outside (0, 1] (e.g. 0.95)")
    lesions = config.pool - round(config.pool * config.normal_fraction)
    if lesions < 1 or config.test - round(config.test * config.normal_fraction) < 1:
        raise ValueError("pool and test set need images with a lesion: raise --pool/--test or lower "
                         "--normal-fraction")
    if config.max_labels < config.start + config.step or config.max_labels > config.pool:
        raise ValueError(f"--max-labels {config.max_labels} must be between {config.start + config.step} and "
                         f"the pool size {config.pool}")
    return config


def data(seed: int, config: Config) -> tuple[Phantoms, Phantoms]:
    return lesion_set(config.pool, 1000 + seed, config), lesion_set(config.test, config.test_seed, config)


def full_pool_dice(seed: int, config: Config) -> float:
    """The reference: the same network trained on every pool label, for as many steps as a whole run."""
    pool, test = data(seed, config)
    torch.manual_seed(seed)
    net = TinySegNet(config.width)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    train(net, opt, pool, list(range(len(pool))), config.total_steps, np.random.default_rng(10_000 + seed))
    return float(dice_per_image(net, test).mean())


def run(strategy: str, seed: int, config: Config) -> Run:
    """One active-learning run; the pool, the first labels and the initial weights depend on ``seed`` only."""
    t0 = time.perf_counter()
    pool, test = data(seed, config)
    base, opts = strategy_options(strategy, config)
    rng = np.random.default_rng(seed)
    names = [f"s{seed}-{i:04d}" for i in range(len(pool))]
    index = {n: i for i, n in enumerate(names)}
    labelled = [names[i] for i in rng.choice(len(pool), config.start, replace=False)]
    torch.manual_seed(seed)
    net = TinySegNet(config.width)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    train_rng = np.random.default_rng(10_000 + seed)
    train(net, opt, pool, [index[n] for n in labelled], config.first_steps, train_rng)
    images = {n: pool.images[i] for n, i in index.items()}
    cache, out, rnd = MemoryCache(), Run(strategy, seed), 0
    while True:
        d = dice_per_image(net, test)
        out.labels.append(len(labelled))
        out.dice.append(float(d.mean()))
        out.dice_hard.append(float(d[test.kinds == HARD].mean()))
        out.dice_lesion.append(float(d[test.kinds != NORMAL].mean()))
        out.clean_normal.append(float(d[test.kinds == NORMAL].mean()) if (test.kinds == NORMAL).any() else math.nan)
        picked = pool.kinds[[index[n] for n in labelled]]
        out.hard_picked.append(int((picked == HARD).sum()))
        out.normal_picked.append(int((picked == NORMAL).sum()))
        if len(labelled) >= config.max_labels:
            break
        scorer = StackedScorer(net, images, f"lesions-s{seed}-r{rnd}")
        batch = select_batch(names, config.step, base, scorer=scorer, labelled=labelled, cache=cache,
                             seed=seed * 1000 + rnd, mc_samples=config.mc_samples, **opts)
        labelled += list(batch.items)
        rnd += 1
        train(net, opt, pool, [index[n] for n in labelled], config.steps, train_rng)
    out.seconds = time.perf_counter() - t0
    return out


def _job(job: tuple[str | None, int], config: Config, threads: int) -> float | Run:
    """The full-pool reference (strategy ``None``) or one run, in a worker process."""
    torch.set_num_threads(threads)
    strategy, seed = job
    return full_pool_dice(seed, config) if strategy is None else run(strategy, seed, config)


def run_all(jobs: list[tuple[str | None, int]], config: Config, workers: int, threads: int) -> Iterator[float | Run]:
    """The results of ``jobs`` in order, computed by ``workers`` processes (1: in this one). Every job seeds
    its own generators, so the results do not depend on how many run at once."""
    if workers <= 1:
        yield from (_job(j, config, threads) for j in jobs)
        return
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
        futures = [ex.submit(_job, j, config, threads) for j in jobs]
        yield from (f.result() for f in futures)


# -- statistics -------------------------------------------------------------------------------------------
def t_interval(values: list[float]) -> tuple[float, float, float]:
    from scipy import stats

    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def bootstrap(fn: Any, n: int, rng: np.random.Generator, reps: int = 10_000) -> tuple[float, float]:
    """95% percentile interval of ``fn(indices)`` over seeds resampled with replacement (paired)."""
    values = [fn(rng.integers(0, n, n)) for _ in range(reps)]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"2 seeds, {', '.join(QUICK)}, up to 50 labels")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; 2 with --quick)")
    parser.add_argument("--strategies", default=None, help=f"comma-separated (default: {','.join(ALL)})")
    parser.add_argument("--fraction", type=float, default=FRACTION,
                        help="target Dice as a fraction of the full-pool model's Dice (fixed up front)")
    parser.add_argument("--normal-fraction", type=float, default=None,
                        help=f"share of lesion-free images in pool and test set (default {NORMAL_FRACTION})")
    parser.add_argument("--pool", type=int, default=None, help=f"pool images per seed (default {POOL})")
    parser.add_argument("--test", type=int, default=None, help=f"test images (default {TEST})")
    parser.add_argument("--lesions-only", action="store_true",
                        help="the first design: every image holds a lesion, pool 400, test 200 (options given "
                             "explicitly still win)")
    parser.add_argument("--max-labels", type=int, default=None, help="labels at which a run stops (default 70; "
                        "50 with --quick)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed, first-seed + 1, ... (the reported runs use 0; pilot on others)")
    parser.add_argument("--test-seed", type=int, default=TEST_SEED,
                        help=f"seed of the test set (reported: {TEST_SEED}; pilot on another)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (the machine is shared)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be at least 1")
    try:
        config = make_config(args)
    except ValueError as e:
        parser.error(str(e))
    seeds = list(range(args.first_seed, args.first_seed + (args.seeds if args.seeds is not None
                                                            else (2 if args.quick else 5))))
    chosen = args.strategies.split(",") if args.strategies else list(QUICK if args.quick else ALL)
    if "random" not in chosen:
        chosen.insert(0, "random")
    cap = config.max_labels + config.step
    print(f"pool {config.pool} ({config.normal_fraction:.0%} without a lesion; of the lesions "
          f"{config.hard_fraction:.0%} small and faint), test {config.test} (seed {config.test_seed}), "
          f"{config.size}x{config.size}; labels {config.start} + {config.step}/round to {config.max_labels}; "
          f"{config.first_steps} + {config.steps} steps/round; target = {config.fraction} x full-pool Dice; "
          f"seeds {seeds}; threads {args.threads} x {args.jobs} processes; load {os.getloadavg()[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    jobs: list[tuple[str | None, int]] = [(None, seed) for seed in seeds]
    jobs += [(strategy, seed) for seed in seeds for strategy in chosen]
    full: dict[int, float] = {}
    runs: dict[str, list[Run]] = {s: [] for s in chosen}
    partial = args.out.with_suffix(".partial.json")  # what a run cut short leaves behind
    partial.parent.mkdir(parents=True, exist_ok=True)
    for (strategy, seed), result in zip(jobs, run_all(jobs, config, args.jobs, args.threads), strict=True):
        if isinstance(result, float):
            full[seed] = result
            print(f"  seed {seed} full-pool model ({config.total_steps} steps): Dice {result:.3f} -> target "
                  f"{config.fraction * result:.3f}", flush=True)
            continue
        assert strategy is not None
        runs[strategy].append(result)
        print(f"  seed {seed} {strategy:13} {result.seconds:5.1f} s  Dice " + " ".join(f"{d:.3f}" for d in result.dice)
              + f"  hard labelled {result.hard_picked[-1]}"
              + (f", lesion-free {result.normal_picked[-1]}" if config.normal_fraction else ""), flush=True)
        partial.write_text(json.dumps({"full_pool_dice": full, "runs": {s: [r.to_dict() for r in rs]
                                                                        for s, rs in runs.items()}}))
    elapsed = time.perf_counter() - t0
    labels = runs["random"][0].labels

    print(f"\nmean test Dice by labels (95% t-interval over {len(seeds)} seeds); {elapsed / 60:.1f} min in all; "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'labels':>7} " + " ".join(f"{s[:19]:>19}" for s in chosen))
    for k, n in enumerate(labels):
        cells = []
        for s in chosen:
            m, lo, hi = t_interval([r.dice[k] for r in runs[s]])
            cells.append(f"{m:.3f} [{lo:.3f},{hi:.3f}]" if not math.isnan(lo) else f"{m:.3f}")
        print(f"{n:7d} " + " ".join(f"{c:>19}" for c in cells))
    print(f"hard cases labelled by the end (mean; test set: {int((data(seeds[0], config)[1].kinds == HARD).sum())} "
          "hard): " + ", ".join(f"{s} {np.mean([r.hard_picked[-1] for r in runs[s]]):.1f}" for s in chosen))
    if config.normal_fraction > 0:
        print("lesion-free images labelled by the end (mean): "
              + ", ".join(f"{s} {np.mean([r.normal_picked[-1] for r in runs[s]]):.1f}" for s in chosen))
    for what, key in (("hard lesions", "dice_hard"), ("images with a lesion", "dice_lesion"),
                      ("lesion-free images left clean", "clean_normal")):
        if key == "clean_normal" and config.normal_fraction == 0:
            continue
        print(f"test Dice on {what} at {labels[len(labels) // 3]} / {labels[2 * len(labels) // 3]} labels (mean): "
              + ", ".join(f"{s} " + " / ".join(f"{np.mean([getattr(r, key)[k] for r in runs[s]]):.3f}"
                                               for k in (len(labels) // 3, 2 * len(labels) // 3)) for s in chosen))

    rng = np.random.default_rng(0)
    targets = {seed: config.fraction * full[seed] for seed in seeds}
    print(f"\nlabels to reach {config.fraction} x full-pool Dice (targets "
          + ", ".join(f"{targets[s]:.3f}" for s in seeds) + f"; '>' = not reached by {config.max_labels}, "
          f"counted as {cap}):")
    need = {s: [(r.labels_to(targets[r.seed]), r) for r in runs[s]] for s in chosen}
    rand = np.array([n if n is not None else cap for n, _ in need["random"]], dtype=float)
    rows: dict[str, Any] = {}
    for s in chosen:
        x = np.array([n if n is not None else cap for n, _ in need[s]], dtype=float)
        per_seed = " ".join(f">{config.max_labels}" if n is None else f"{n:.1f}" for n, _ in need[s])
        lo, hi = bootstrap(lambda i, x=x: x[i].mean(), len(seeds), rng)
        row: dict[str, Any] = {"per_seed": x.tolist(), "censored": [n is None for n, _ in need[s]],
                               "mean": float(x.mean()), "ci95": [lo, hi]}
        line = f"  {s:13} mean {x.mean():6.1f} [{lo:5.1f}, {hi:5.1f}]   seeds: {per_seed}"
        if s != "random":
            saving = 1 - x.mean() / rand.mean()
            slo, shi = bootstrap(lambda i, x=x, r=rand: 1 - x[i].mean() / r[i].mean(), len(seeds), rng)
            row.update({"saving_vs_random": float(saving), "saving_ci95": [slo, shi]})
            line += f"   fewer labels than random: {saving:+.0%} [{slo:+.0%}, {shi:+.0%}]"
        rows[s] = row
        print(line)

    candidates = [s for s in chosen if strategy_options(s, config)[0] in UNCERTAINTY]
    best = max(candidates, key=lambda s: rows[s]["saving_vs_random"], default=None)
    checks = []
    if best is not None:
        r = rows[best]
        checks.append((f"an uncertainty strategy ({best}, the best of {len(candidates)}) reaches {config.fraction} x "
                       f"full-pool Dice with >= 25% fewer labels than random (mean {r['saving_vs_random']:+.0%}, "
                       f"95% CI [{r['saving_ci95'][0]:+.0%}, {r['saving_ci95'][1]:+.0%}])",
                       r["saving_vs_random"] >= 0.25))
        checks.append(("... and the lower end of its 95% interval is above 0 (better than random beyond seed noise)",
                       r["saving_ci95"][0] > 0))
    print()
    for text, ok in checks:
        print(f"[{'met ' if ok else 'MISS'}] {text}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "active_learning", "at": datetime.now(UTC).isoformat(), "machine": platform.platform(),
        "torch": torch.__version__, "threads": args.threads, "jobs": args.jobs, "quick": args.quick, "seeds": seeds,
        "load_average": os.getloadavg(), "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "minutes": elapsed / 60, "full_pool_dice": {str(k): v for k, v in full.items()},
        "targets": {str(k): v for k, v in targets.items()},
        "runs": {s: [r.to_dict() for r in rs] for s, rs in runs.items()}, "labels_to_target": rows,
        "checks": dict(checks),
    }, indent=2))
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    return 0 if all(ok for _t, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
