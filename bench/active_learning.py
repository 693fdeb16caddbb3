"""Active learning vs random labeling on a synthetic segmentation task that trains on a CPU, several seeds.

    .venv/bin/python bench/active_learning.py [--quick] [--seeds 5] [--strategies random,entropy,...]
                                              [--target 0.92] [--threads 1] [--pool 240] [--out FILE]

The task (``medcycle.testing.active_learning``): 48×48 phantoms, one elliptical lesion of varying contrast
on a noisy tilted background, a non-lesion bright ring in one image in five; a pool of 240 images to label
and a fixed test set of 120. The model: a small dilated CNN with dropout. Each run starts from 8 random
labels (the same 8 and the same pool for every strategy of a seed: runs are paired), then, until 96
labels: fine-tune (Adam, 60 steps of 16), measure the mean test Dice, and ask the library
(``medcycle.labels.active.select_batch``) for the next 8 items — scored by the run's current model, a new
model version each round. The strategies are the library's: random, entropy, margin, MC-dropout (BALD),
test-time-augmentation variance (MONAI flips and rotations), core-set (k-center greedy).

Reported: per strategy, the mean test Dice at every label count (with a 95% t-interval over seeds), the
area under that learning curve, and the labels needed to first reach each target Dice, with its bootstrap
95% interval and the paired reduction against random (bootstrap over seeds). A run that never reaches a
target within 96 labels counts as 104 (the next step) and is marked ``>``: this understates what it would
have needed, which favours whichever strategy failed to reach it. The claim checked (issue: labels) is that
an uncertainty strategy reaches the target Dice with >= 25% fewer labels than random. Results are printed
and written to ``bench/results/active_learning.json``. Nothing is tuned per strategy; every run has the
same training budget per round.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medcycle.testing.active_learning import Curve, CurveConfig, run_curve  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "active_learning.json"
UNCERTAINTY = ("entropy", "margin", "mc-dropout", "tta")
ALL = ("random", "entropy", "margin", "mc-dropout", "tta", "coreset")


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval (scipy's t quantile)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def bootstrap(fn: Any, n_seeds: int, rng: np.random.Generator, reps: int = 10_000) -> tuple[float, float]:
    """95% percentile interval of ``fn(indices)`` over seeds resampled with replacement."""
    values = [fn(rng.integers(0, n_seeds, n_seeds)) for _ in range(reps)]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def labels_needed(curve: Curve, target: float, cap: int) -> tuple[int, bool]:
    n = curve.labels_to(target)
    return (cap, True) if n is None else (n, False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, random / entropy / MC-dropout (a few minutes)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; 2 with --quick)")
    parser.add_argument("--strategies", default=None, help=f"comma-separated (default: {','.join(ALL)})")
    parser.add_argument("--target", type=float, default=0.92, help="the target Dice of the claim")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--pool", type=int, default=None, help="unlabelled pool size (default 240)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds if args.seeds is not None else (2 if args.quick else 5)))
    chosen = args.strategies.split(",") if args.strategies else (
        ["random", "entropy", "mc-dropout"] if args.quick else list(ALL))
    if "random" not in chosen:
        chosen.insert(0, "random")
    config = CurveConfig() if args.pool is None else replace(CurveConfig(), pool=args.pool)
    cap = config.max_labels + config.step
    targets = sorted({0.90, args.target, 0.94})
    print(f"pool {config.pool}, test {config.test}, {config.size}x{config.size}; labels {config.start} + "
          f"{config.step}/round to {config.max_labels}; {config.steps} steps/round; seeds {seeds}; "
          f"threads {args.threads}")
    curves: dict[str, list[Curve]] = {s: [] for s in chosen}
    t0 = time.perf_counter()
    for seed in seeds:
        for strategy in chosen:
            t = time.perf_counter()
            c = run_curve(strategy, seed, config)
            curves[strategy].append(c)
            print(f"  seed {seed} {strategy:10} {time.perf_counter() - t:6.1f} s  Dice "
                  + " ".join(f"{d:.3f}" for d in c.dice), flush=True)
    elapsed = time.perf_counter() - t0
    labels = curves["random"][0].labels

    print(f"\nmean test Dice by labels (95% t-interval over {len(seeds)} seeds); {elapsed / 60:.1f} min in all")
    print(f"{'labels':>8} " + " ".join(f"{s:>19}" for s in chosen))
    for k, n in enumerate(labels):
        cells = []
        for s in chosen:
            m, lo, hi = t_interval([c.dice[k] for c in curves[s]])
            cells.append(f"{m:.3f} [{lo:.3f},{hi:.3f}]" if not math.isnan(lo) else f"{m:.3f}")
        print(f"{n:8d} " + " ".join(f"{c:>19}" for c in cells))
    aulc = {s: [float(np.mean(c.dice)) for c in curves[s]] for s in chosen}
    print("area under the curve (mean Dice over rounds): "
          + ", ".join(f"{s} {np.mean(v):.3f}" for s, v in aulc.items()))

    rng = np.random.default_rng(0)
    summary: dict[str, Any] = {}
    for target in targets:
        print(f"\nlabels to reach Dice {target:.2f} ('>' = not reached by {config.max_labels}, counted as {cap}):")
        need = {s: [labels_needed(c, target, cap) for c in curves[s]] for s in chosen}
        rand = np.array([n for n, _ in need["random"]], dtype=float)
        rows = {}
        for s in chosen:
            x = np.array([n for n, _ in need[s]], dtype=float)
            per_seed = " ".join(f">{config.max_labels}" if cens else str(n) for n, cens in need[s])
            lo, hi = bootstrap(lambda i, x=x: x[i].mean(), len(seeds), rng)
            row: dict[str, Any] = {"per_seed": [n for n, _ in need[s]], "censored": [c for _, c in need[s]],
                                   "mean": float(x.mean()), "ci95": [lo, hi]}
            line = f"  {s:10} mean {x.mean():6.1f} [{lo:5.1f}, {hi:5.1f}]   seeds: {per_seed}"
            if s != "random":
                red = 1 - x.mean() / rand.mean()
                rlo, rhi = bootstrap(lambda i, x=x, r=rand: 1 - x[i].mean() / r[i].mean(), len(seeds), rng)
                row.update({"reduction_vs_random": float(red), "reduction_ci95": [rlo, rhi]})
                line += f"   fewer labels than random: {red:+.0%} [{rlo:+.0%}, {rhi:+.0%}]"
            rows[s] = row
            print(line)
        summary[f"{target:.2f}"] = rows

    main_rows = summary[f"{args.target:.2f}"]
    best = max((s for s in chosen if s in UNCERTAINTY), key=lambda s: main_rows[s]["reduction_vs_random"],
               default=None)
    checks = []
    if best is not None:
        r = main_rows[best]
        checks.append((f"an uncertainty strategy ({best}) reaches Dice {args.target:.2f} with >= 25% fewer labels "
                       f"than random (mean {r['reduction_vs_random']:+.0%}, 95% CI [{r['reduction_ci95'][0]:+.0%}, "
                       f"{r['reduction_ci95'][1]:+.0%}])", r["reduction_vs_random"] >= 0.25))
        checks.append(("... and the lower end of its 95% interval is above 0 (better than random beyond seed noise)",
                       r["reduction_ci95"][0] > 0))
    print()
    for text, ok in checks:
        print(f"[{'met ' if ok else 'MISS'}] {text}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "active_learning", "at": datetime.now(UTC).isoformat(), "machine": platform.platform(),
        "torch": torch.__version__, "threads": args.threads, "quick": args.quick, "seeds": seeds,
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__}, "minutes": elapsed / 60,
        "curves": {s: [c.to_dict() for c in cs] for s, cs in curves.items()},
        "area_under_curve": {s: float(np.mean(v)) for s, v in aulc.items()}, "labels_to_target": summary,
        "checks": dict(checks),
    }, indent=2))
    return 0 if all(ok for _t, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
