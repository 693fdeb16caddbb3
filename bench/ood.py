"""The out-of-distribution gate on real and synthetic images, against a baseline, in one run.

    .venv/bin/python bench/ood.py [--quick] [--far 0.05] [--seed N]

In distribution: synthetic chest radiographs on every demo scanner profile plus random crops of the real
chest CR of pydicom-data. Out of distribution: the tibia CR and crops of it, CT / MR / US / NM / SEG /
secondary-capture files of pydicom and pydicom-data, synthetic metal canisters (with a chest header) and
natural images from scikit-image (see ``medcycle.testing.ood``). The image-statistics layer is fitted on one
in-distribution set, calibrated to the false-alarm rate ``--far`` on a second and judged on a third (so the
false-alarm rate printed is measured, not assumed). The baseline is the same detector on the nine pixel
statistics the catalog records at ingest (percentiles, mean, std, saturated and air fractions), i.e. what
a drift tool on intensity statistics would see. Then the whole gate (header rules first) on every case.

Targets (issue: evaluation): AUROC >= 0.95, >= 95% of OOD flagged at <= 5% false alarms, and no canister
ever passes the gate. Results are printed and written to ``bench/results/ood.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medcycle.catalog.pixels import pixel_stats  # noqa: E402
from medcycle.evaluation import ood  # noqa: E402
from medcycle.evaluation.metrics import auroc  # noqa: E402
from medcycle.testing import ood as cases  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "ood.json"
CHEST_RULES = {"modality": ["CR", "DX"], "body_part": ["CHEST"], "photometric": ["MONOCHROME1", "MONOCHROME2"],
               "view_position": ["PA", "AP"], "allow_missing": ["view_position"]}


def stats_features(case: cases.Case) -> np.ndarray:
    pixels = np.asarray(case.pixels, dtype=np.float64)
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels = pixels[..., :3].mean(axis=-1)
    st = pixel_stats(pixels, monochrome1=case.monochrome1)
    assert st is not None
    v = np.array(list(st.to_dict().values()))
    return v


def judge(name: str, feature: Any, train: list[cases.Case], val: list[cases.Case], test: list[cases.Case],
          out: list[cases.Case], far: float) -> dict[str, Any]:
    det = ood.ImageStatsDetector.fit([feature(c) for c in train], max_components=min(20, len(feature(train[0]))))
    det.threshold = ood.calibrate([det.score(feature(c)) for c in val], far)
    s_in = np.array([det.score(feature(c)) for c in test])
    s_out = np.array([det.score(feature(c)) for c in out])
    y = np.r_[np.zeros(s_in.size), np.ones(s_out.size)].astype(np.int64)
    kinds = sorted({c.kind for c in out})
    return {
        "detector": name,
        "auroc": auroc(y, np.r_[s_in, s_out], 0.5),
        "ood_flagged": float(np.mean(s_out > det.threshold)),
        "false_alarms": float(np.mean(s_in > det.threshold)),
        "flagged_by_kind": {k: float(np.mean([s > det.threshold for c, s in zip(out, s_out, strict=True)
                                              if c.kind == k])) for k in kinds},
        "missed": [c.name for c, s in zip(out, s_out, strict=True) if s <= det.threshold],
        "_det": det,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sets (about 30 s)")
    parser.add_argument("--far", type=float, default=0.05, help="false-alarm rate to calibrate to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_syn, n_real, n_canisters = (60, 30, 20) if args.quick else (240, 120, 100)
    t0 = time.perf_counter()
    train = cases.in_distribution(n_syn, n_real, args.seed)
    val = cases.in_distribution(n_syn // 2, n_real // 2, args.seed + 1000)
    test = cases.in_distribution(n_syn // 2, n_real // 2, args.seed + 2000)
    out = cases.out_of_distribution(20 if not args.quick else 8, n_canisters, args.seed + 3000)
    print(f"cases: train {len(train)}, calibrate {len(val)}, held-out {len(test)} in distribution; "
          f"{len(out)} out ({', '.join(sorted({c.kind for c in out}))}) — made in {time.perf_counter() - t0:.1f} s")

    def image_features(c: cases.Case) -> np.ndarray:
        return ood.features(c.pixels, monochrome1=c.monochrome1)

    rows = [judge("image statistics (medcycle)", image_features, train, val, test, out, args.far),
            judge("ingest pixel statistics (baseline)", stats_features, train, val, test, out, args.far)]
    print(f"\n{'detector':38} {'AUROC':>7} {'OOD flagged':>12} {'false alarms':>13}   flagged by kind")
    for r in rows:
        by_kind = ", ".join(f"{k} {v:.0%}" for k, v in r["flagged_by_kind"].items())
        print(f"{r['detector']:38} {r['auroc']:7.3f} {r['ood_flagged']:12.1%} {r['false_alarms']:13.1%}   {by_kind}")
    ours = rows[0]
    gate = ood.OODGate(ood.HeaderRules.from_dict(CHEST_RULES), ours["_det"])
    canisters = [c for c in out if c.kind == "canister"]
    passed = [c.name for c in canisters if gate.check(header=c.header, pixels=c.pixels).ok]
    layers: dict[str, int] = {}
    for c in out:
        d = gate.check(header=c.header, pixels=c.pixels)
        layers[d.layer or "passed"] = layers.get(d.layer or "passed", 0) + 1
    print(f"\nwhole gate on the OOD cases: refused by layer {layers}; canisters passing the gate: "
          f"{len(passed)} of {len(canisters)}")
    checks = [("AUROC >= 0.95", ours["auroc"] >= 0.95),
              (f">= 95% of OOD flagged at {args.far:.0%} calibrated false alarms", ours["ood_flagged"] >= 0.95),
              ("measured false alarms <= 5% + sampling slack (<= 8%)", ours["false_alarms"] <= 0.08),
              ("no canister passes the gate", not passed)]
    for text, ok in checks:
        print(f"[{'met ' if ok else 'MISS'}] {text}")
    if ours["missed"]:
        print("missed:", ", ".join(ours["missed"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "ood", "at": datetime.now(UTC).isoformat(), "machine": platform.platform(),
        "quick": args.quick, "far": args.far,
        "detectors": [{k: v for k, v in r.items() if k != "_det"} for r in rows],
        "gate_layers": layers, "canisters_passing": passed, "checks": dict(checks),
    }, indent=2))
    return 0 if all(ok for _t, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
