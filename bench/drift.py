"""Drift detection: injected shifts must page within 5 batches; no-shift streams must never page.

    .venv/bin/python bench/drift.py [--quick] [--seeds 20] [--batches 1000] [--jobs 2]

A synthetic stream of phantom chest radiographs from the demo scanners (``medcycle.training.demo_data``:
four detectors with different gain, offset, noise, bit depth, gamma, MONOCHROME1 and modality LUT) goes
through what serving does for each study: the modality LUT, the input statistics the log keeps
(``medcycle.monitoring.describe``), and a small CNN (trained here on other phantoms to find the lesion)
whose penultimate features are taken with ``FeatureTap`` and whose lesion probability is the score. The
reference is 1,024 no-shift studies, calibrated by ``medcycle.monitoring.reference.build`` to the default
budget (one false page in 100,000 windows, page on 3 of 4 windows, windows of 32 studies).

* **Shifts** (300 batches × 32 studies, shift from batch 150): intensity × 1.15 (every detector's gain),
  a new scanner model (one site in four replaces its detector), blur σ = 1.5 (a new noise-reduction
  filter), and a population shift (lesion prevalence 50 % → 90 %). Target: a page within 5 batches of
  the shift, and none before it.
* **Control** (``--seeds`` × ``--batches`` no-shift batches, a fresh reference per seed). Target: no page.
* **Baseline**, on the same windows: per-column tests at p < 0.05 (chi-square on each categorical field,
  Kolmogorov–Smirnov on each input statistic and PCA component, a two-proportion test on the positive
  rate), alarming when any column drifts and paging on every alarm — the default of drift tools that take
  tabular inputs. Its false-page rate is the comparison.

Results are printed and written to ``bench/results/drift.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medcycle.monitoring.describe import image_statistics  # noqa: E402
from medcycle.monitoring.persistence import Persistence  # noqa: E402
from medcycle.monitoring.reference import Policy, Reference, build  # noqa: E402
from medcycle.monitoring.signals import CATEGORICAL, INTENSITY, Case, Cases  # noqa: E402
from medcycle.training.demo_data import SCANNERS, Scanner, chest_radiograph, stored_values  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "drift.json"
SIZE = 64
BATCH = 32
REFERENCE = 1024
NEW_SCANNER = Scanner("clinic-d", "Fabrikam Health", "DR-Nova", gain=1.4, offset=150, noise=45, bits=12, gamma=0.9)
SHIFTS = ("intensity x1.15", "new scanner model", "blur sigma 1.5", "population (prevalence 90%)")
DELAY_TARGET = 5


# -- the stream -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Shift:
    gain: float = 1.0
    new_scanner: float = 0.0
    blur: float = 0.0
    prevalence: float = 0.5


SHIFT_OF = {"none": Shift(), SHIFTS[0]: Shift(gain=1.15), SHIFTS[1]: Shift(new_scanner=0.25),
            SHIFTS[2]: Shift(blur=1.5), SHIFTS[3]: Shift(prevalence=0.9)}


def displayed(stored: np.ndarray, scanner: Scanner) -> np.ndarray:
    """What serving reads: the modality LUT applied, MONOCHROME1 inverted within the output range."""
    values = stored.astype(np.float64) * scanner.slope + scanner.intercept
    if scanner.monochrome1:
        lo, hi = scanner.intercept, (2**scanner.bits - 1) * scanner.slope + scanner.intercept
        values = (lo + hi) - values
    return values


def studies(n: int, rng: np.random.Generator, shift: Shift) -> tuple[list[np.ndarray], list[dict[str, str]], list[int]]:
    from scipy.ndimage import gaussian_filter

    images, headers, labels = [], [], []
    for _ in range(n):
        scanner = SCANNERS[int(rng.integers(len(SCANNERS)))]
        if shift.new_scanner and rng.random() < shift.new_scanner:
            scanner = NEW_SCANNER
        if shift.gain != 1.0:
            scanner = replace(scanner, gain=scanner.gain * shift.gain, offset=scanner.offset * shift.gain)
        lesion = bool(rng.random() < shift.prevalence)
        a, _mask, _box = chest_radiograph(SIZE, rng, lesion)
        values = displayed(stored_values(a, scanner, rng), scanner)
        if shift.blur:
            values = gaussian_filter(values, shift.blur)
        images.append(values)
        headers.append({"manufacturer": scanner.manufacturer, "device_model": scanner.model, "modality": "DX",
                        "body_part": "CHEST", "view_position": "PA"})
        labels.append(int(lesion))
    return images, headers, labels


def model_input(values: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(values, [1, 99])
    return np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


_MODELS: dict[int, Any] = {}


def train_model(seed: int) -> Any:
    """A tiny CNN (``medcycle.training.models.tiny_cnn``) that finds the lesion, trained once per process."""
    if seed in _MODELS:
        return _MODELS[seed]
    import torch

    from medcycle.training.models import tiny_cnn

    torch.manual_seed(seed)
    rng = np.random.default_rng(10_000 + seed)
    images, _h, labels = studies(1536, rng, Shift())
    x = torch.from_numpy(np.stack([model_input(v) for v in images])[:, None])
    y = torch.tensor(labels)
    model = tiny_cnn(2, (8, 16, 32), 2, 0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _epoch in range(6):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    model.eval()
    _MODELS[seed] = model
    return model


def cases_of(model: Any, n: int, rng: np.random.Generator, shift: Shift) -> list[Case]:
    import torch

    from medcycle.monitoring.embeddings import FeatureTap

    images, headers, _labels = studies(n, rng, shift)
    x = torch.from_numpy(np.stack([model_input(v) for v in images])[:, None])
    with torch.no_grad(), FeatureTap(model) as tap:
        probs = torch.softmax(model(x), dim=1).numpy()
    feats = tap.features()
    return [Case(h, image_statistics(v), feats[i], float(probs[i, 1]), bool(probs[i, 1] >= 0.5))
            for i, (v, h) in enumerate(zip(images, headers, strict=True))]


# -- the baseline: per-column p < 0.05 ----------------------------------------------------------------------------
class Baseline:
    def __init__(self, ref: list[Case], reference: Reference) -> None:
        self.pool = Cases.of(ref)
        emb = reference.signals.get("embedding")
        self.project = emb.project if emb is not None else None  # type: ignore[attr-defined]
        self.ref_proj = self.project(self.pool.embedding) if self.project and self.pool.embedding is not None else None

    def alarm(self, window: list[Case]) -> bool:
        from scipy.stats import chi2_contingency, ks_2samp

        w = Cases.of(window)
        for f in CATEGORICAL:
            ref_v, win_v = self.pool.categorical[f].astype(str), w.categorical[f].astype(str)
            cats = sorted(set(ref_v) | set(win_v))
            if len(cats) > 1:
                table = np.array([[np.sum(ref_v == c) for c in cats], [np.sum(win_v == c) for c in cats]])
                if chi2_contingency(table)[1] < 0.05:
                    return True
        for j in range(len(INTENSITY)):
            if ks_2samp(self.pool.stats[:, j], w.stats[:, j]).pvalue < 0.05:
                return True
        if self.ref_proj is not None and w.embedding is not None:
            proj = self.project(w.embedding)  # type: ignore[misc]
            for j in range(proj.shape[1]):
                if ks_2samp(self.ref_proj[:, j], proj[:, j]).pvalue < 0.05:
                    return True
        p0, p1, n0, n1 = self.pool.positive.mean(), w.positive.mean(), len(self.pool), len(w)
        pooled = (p0 * n0 + p1 * n1) / (n0 + n1)
        se = math.sqrt(max(pooled * (1 - pooled) * (1 / n0 + 1 / n1), 1e-12))
        from scipy.stats import norm

        return bool(2 * norm.sf(abs(p1 - p0) / se) < 0.05)


# -- runs ---------------------------------------------------------------------------------------------------------
def reference_for(model: Any, seed: int) -> tuple[list[Case], Reference]:
    ref_cases = cases_of(model, REFERENCE, np.random.default_rng([seed, 1]), Shift())
    return ref_cases, build(ref_cases, Policy(window=BATCH, seed=seed))


def run_stream(model: Any, reference: Reference, baseline: Baseline | None, seed: int, batches: int,
               shift_name: str, shift_at: int | None) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 2, SHIFTS.index(shift_name) + 1 if shift_name in SHIFTS else 0])
    persistence = Persistence(reference.policy.k, reference.policy.n)
    pages: list[tuple[int, str]] = []
    flags = dict.fromkeys(reference.signals, 0)
    baseline_alarms = baseline_before = 0
    for b in range(batches):
        shift = SHIFT_OF[shift_name] if shift_at is not None and b >= shift_at else Shift()
        window = cases_of(model, BATCH, rng, shift)
        results = reference.evaluate(window)
        for name, r in results.items():
            flags[name] += int(r.drift)
        pages += [(b, name) for name in persistence.update({n: r.drift for n, r in results.items()})]
        if baseline is not None and baseline.alarm(window):
            baseline_alarms += 1
            baseline_before += int(shift_at is None or b < shift_at)
    return {"pages": pages, "flags": flags, "baseline_alarms": baseline_alarms, "baseline_before": baseline_before,
            "batches": batches}


def control_seed(args: tuple[int, int, bool]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    seed, batches, with_baseline = args
    model = train_model(0)
    ref_cases, reference = reference_for(model, seed)
    baseline = Baseline(ref_cases, reference) if with_baseline else None
    out = run_stream(model, reference, baseline, seed, batches, "none", None)
    out.update(seed=seed, alpha=reference.alpha, thresholds=reference.thresholds)
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds x 200 control batches (a few minutes)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--batches", type=int, default=1000, help="control batches per seed")
    parser.add_argument("--shift-batches", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=1, help="processes for the control seeds")
    parser.add_argument("--baseline-seeds", type=int, default=2, help="control seeds that also run the baseline")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.batches = 3, 200
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = train_model(0)
    ref_cases, reference = reference_for(model, 0)
    print(f"model trained and reference of {REFERENCE} studies calibrated in {time.perf_counter() - t0:.0f} s: "
          f"signals {', '.join(reference.signals)}; per-window alpha {reference.alpha:.4f}; page on "
          f"{reference.policy.k} of {reference.policy.n} windows of {reference.policy.window}")
    baseline = Baseline(ref_cases, reference)
    shift_at = args.shift_batches // 2
    rows = []
    print(f"\n{'shift':30} {'first page':>10} {'delay':>6} {'signals':>24} {'pages before':>13} "
          f"{'baseline alarms before/after':>29}")
    for name in SHIFTS:
        t = time.perf_counter()
        rng_run = run_stream(model, reference, baseline, 0, args.shift_batches, name, shift_at)
        after = [(b, s) for b, s in rng_run["pages"] if b >= shift_at]
        first = (after[0][0], "+".join(s for b, s in after if b == after[0][0])) if after else None
        delay = None if first is None else first[0] - shift_at + 1
        pre = [p for p in rng_run["pages"] if p[0] < shift_at]
        rows.append({"shift": name, "first_page_batch": first[0] if first else None, "delay_batches": delay,
                     "signal": first[1] if first else None, "pages_before_shift": len(pre),
                     "signals_paged": sorted({s for _b, s in after}),
                     "baseline_alarms_before": rng_run["baseline_before"],
                     "baseline_alarms_after": rng_run["baseline_alarms"] - rng_run["baseline_before"],
                     "seconds": round(time.perf_counter() - t, 1)})
        print(f"{name:30} {first[0] if first else '-':>10} {delay if delay else '-':>6} "
              f"{first[1] if first else '-':>24} {len(pre):>13} {rng_run['baseline_before']:>14}/{shift_at}")
    t = time.perf_counter()
    jobs = [(seed, args.batches, seed < args.baseline_seeds) for seed in range(args.seeds)]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            control = list(pool.map(control_seed, jobs))
    else:
        control = [control_seed(j) for j in jobs]
    windows = args.seeds * args.batches
    false_pages = sum(len(c["pages"]) for c in control)
    flag_rate = {n: sum(c["flags"].get(n, 0) for c in control) / windows for n in reference.signals}
    base_windows = sum(c["batches"] for c in control if c["seed"] < args.baseline_seeds)
    base_alarms = sum(c["baseline_alarms"] for c in control if c["seed"] < args.baseline_seeds)
    print(f"\ncontrol: {args.seeds} seeds x {args.batches} batches ({windows} windows, "
          f"{time.perf_counter() - t:.0f} s): {false_pages} page(s)")
    print("  single-window flags per signal (calibrated alpha "
          f"{np.mean([c['alpha'] for c in control]):.4f}): "
          + ", ".join(f"{n} {r:.4f}" for n, r in flag_rate.items()))
    if base_windows:
        print(f"  baseline (p < 0.05 per column, page on every alarm): {base_alarms} false pages in {base_windows} "
              f"windows ({base_alarms / base_windows:.1%}); medcycle: {false_pages} in {windows} "
              f"— {'no' if not false_pages else f'{base_alarms / base_windows / (false_pages / windows):.0f}x fewer'}"
              " false pages")
    checks = [(f"every shift pages within {DELAY_TARGET} batches",
               all(r["delay_batches"] is not None and r["delay_batches"] <= DELAY_TARGET for r in rows)),
              ("no page before any shift", all(r["pages_before_shift"] == 0 for r in rows)),
              (f"no page in the no-shift control ({windows} windows)", false_pages == 0)]
    for text, ok in checks:
        print(f"[{'met ' if ok else 'MISS'}] {text}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "drift", "at": datetime.now(UTC).isoformat(), "machine": platform.platform(),
        "seeds": args.seeds, "batches": args.batches, "batch": BATCH, "reference": REFERENCE,
        "policy": reference.policy.to_dict(), "alpha": reference.alpha, "shifts": rows,
        "control": {"windows": windows, "false_pages": false_pages, "flag_rate": flag_rate,
                    "pages": [(c["seed"], b, s) for c in control for b, s in c["pages"]]},
        "baseline": {"windows": base_windows, "false_pages": base_alarms}, "checks": dict(checks),
    }, indent=2, default=str))
    return 0 if all(ok for _t, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
