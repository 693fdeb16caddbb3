"""Active learning vs random labeling on a synthetic segmentation task that trains on a CPU, several seeds.

    .venv/bin/python bench/active_learning.py [--quick] [--seeds 5] [--strategies random,entropy,...]
                                              [--fraction 0.95] [--threads 1] [--out FILE]

**The task** mimics a medical labeling pool: most cases are easy and redundant, a minority are hard. Each
image (40×40) holds one elliptical lesion on a noisy background with a gentle tilt and two broad, faint
"anatomy" bumps that are not lesions. 85% of lesions are large (radius 4–8 px) and bright (contrast 0.9–1.4);
15% are small (radius 1.7–2.7 px) and faint (contrast 0.5–0.75) — the cases a model misses until it has seen
some. Pool 400 images per seed, a fixed test set of 200 with the same mix. The model: a small dilated CNN
with dropout (``medcycle.testing.active_learning.TinySegNet``, width 12).

**The protocol**, fixed before measuring: every run starts from the same 10 random labels per seed (runs
are paired) and the same initial weights, trains 150 Adam steps, then per round: measures the mean per-image
test Dice, asks the library (``medcycle.labels.active.select_batch``, a new model version each round) for
the next 5 items, and fine-tunes the same network 30 more steps (warm start; the same budget per round for
every strategy), up to 70 labels. The **target Dice** is a fixed fraction (``--fraction``, 0.95) of the Dice
of the *full-pool model* of that seed — the same network trained on all 400 labels for as many steps as a
whole run takes.

**Strategies** are the library's, with its default aggregation of pixel uncertainty (``top1%``: the mean
of the 1% most uncertain pixels; ``@mean`` variants rank by the whole-image mean for comparison) and the
uncertainty-then-diversity hybrid (``+div``: k-center greedy on the features among the 3 × batch most
uncertain). Nothing is tuned per strategy.

**Reported**: per strategy, the mean test Dice at every label count (95% t-interval over seeds), and the
labels needed to first reach the target (linearly interpolated between the rounds around the crossing; a
run that never reaches it within 70 labels counts as 75 and is marked ``>``, which understates what it
needed), with bootstrap 95% intervals, and the paired saving against random
``1 - mean(labels) / mean(labels of random)`` with its bootstrap 95% interval over seeds. The claim checked
(issue: labels) is that an uncertainty strategy reaches the target with >= 25% fewer labels than random.
Results are printed and written to ``bench/results/active_learning.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
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
ALL = ("random", "entropy", "mc-dropout", "tta", "coreset", "entropy+div", "entropy@top1%")
QUICK = ("random", "entropy", "tta")
FRACTION = 0.95  # target Dice = FRACTION × the full-pool model's Dice, fixed before any measurement


@dataclass(frozen=True, slots=True)
class Config:
    pool: int = 400
    test: int = 200
    size: int = 40
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
    test_seed: int = 99

    @property
    def total_steps(self) -> int:
        return self.first_steps + self.steps * ((self.max_labels - self.start) // self.step)


def lesion_image(rng: np.random.Generator, size: int, hard: bool) -> tuple[npt.NDArray[np.float32],
                                                                             npt.NDArray[np.int64]]:
    s = size / 40.0
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    img = rng.normal(0.0, rng.uniform(0.15, 0.25), (size, size)).astype(np.float32)
    img += rng.uniform(-0.3, 0.3) * (xx / size) + rng.uniform(-0.3, 0.3) * (yy / size)
    for _ in range(2):  # broad anatomy that is not a lesion
        by, bx = rng.uniform(0, size, 2)
        sd = rng.uniform(5, 9) * s
        img += rng.uniform(0.2, 0.4) * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * sd**2))
    cy, cx = rng.uniform(8 * s, 32 * s, 2)
    ry, rx = rng.uniform(1.7, 2.7, 2) * s if hard else rng.uniform(4, 8, 2) * s
    theta = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    mask = (u / rx) ** 2 + (v / ry) ** 2 <= 1
    img += (rng.uniform(0.5, 0.75) if hard else rng.uniform(0.9, 1.4)) * mask
    return img.astype(np.float32), mask.astype(np.int64)


def lesion_set(n: int, seed: int, config: Config) -> Phantoms:
    """``n`` images, a ``hard_fraction`` of them (rounded, at random positions) small and faint."""
    rng = np.random.default_rng(seed)
    hard = np.zeros(n, dtype=np.int64)
    hard[rng.choice(n, round(n * config.hard_fraction), replace=False)] = 1
    made = [lesion_image(rng, config.size, bool(h)) for h in hard]
    return Phantoms(np.stack([m[0] for m in made])[:, None], np.stack([m[1] for m in made]), hard)


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
    hard_picked: list[int] = field(default_factory=list)  # hard cases among the labelled, per round
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
                "dice_hard": self.dice_hard, "hard_labelled": self.hard_picked, "seconds": self.seconds}


def strategy_options(name: str, config: Config) -> tuple[str, dict[str, Any]]:
    """``entropy+div`` → the hybrid; ``entropy@mean`` → whole-image mean aggregation."""
    base, opts = name, dict[str, Any]()
    if base.endswith("+div"):
        base, opts["diversity"] = base[:-4], config.diversity
    if "@" in base:
        base, opts["aggregate"] = base.split("@", 1)
    return base, opts


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
        out.dice_hard.append(float(d[test.kinds == 1].mean()))
        out.hard_picked.append(int(sum(pool.kinds[index[n]] for n in labelled)))
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
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = Config(fraction=args.fraction, **({"max_labels": 50} if args.quick else {}))
    seeds = list(range(args.seeds if args.seeds is not None else (2 if args.quick else 5)))
    chosen = args.strategies.split(",") if args.strategies else list(QUICK if args.quick else ALL)
    if "random" not in chosen:
        chosen.insert(0, "random")
    cap = config.max_labels + config.step
    print(f"pool {config.pool} ({config.hard_fraction:.0%} small faint lesions), test {config.test}, "
          f"{config.size}x{config.size}; labels {config.start} + {config.step}/round to {config.max_labels}; "
          f"{config.first_steps} + {config.steps} steps/round; target = {config.fraction} x full-pool Dice; "
          f"seeds {seeds}; threads {args.threads}; load {os.getloadavg()[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    full = {}
    for seed in seeds:
        full[seed] = full_pool_dice(seed, config)
        print(f"  seed {seed} full-pool model ({config.total_steps} steps): Dice {full[seed]:.3f} -> target "
              f"{config.fraction * full[seed]:.3f}", flush=True)
    runs: dict[str, list[Run]] = {s: [] for s in chosen}
    for seed in seeds:
        for strategy in chosen:
            r = run(strategy, seed, config)
            runs[strategy].append(r)
            print(f"  seed {seed} {strategy:13} {r.seconds:5.1f} s  Dice " + " ".join(f"{d:.3f}" for d in r.dice)
                  + f"  hard labelled {r.hard_picked[-1]}", flush=True)
        partial = args.out.with_suffix(".partial.json")  # what a run cut short leaves behind
        partial.parent.mkdir(parents=True, exist_ok=True)
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
    print("hard cases labelled by the end (mean): "
          + ", ".join(f"{s} {np.mean([r.hard_picked[-1] for r in runs[s]]):.1f}" for s in chosen))

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
        "torch": torch.__version__, "threads": args.threads, "quick": args.quick, "seeds": seeds,
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
