"""A stand-in for training: fit the mean and spread of image sizes on the train split, 'epochs' times.

Deterministic on purpose: the same dataset version and params give the same model bytes. It is tracked
like any training script (``medcycle.start_run``); the pipeline links the step to that run.
"""

from __future__ import annotations

import argparse
import json
import statistics

from common import items, note_execution

import medcycle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("version")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    note_execution("train")
    with open(args.version) as fh:
        frozen = json.load(fh)
    with open(f"{args.data}/manifest.json") as fh:
        pulled = json.load(fh)["version"]
    if pulled != frozen["version"]:
        raise SystemExit(f"pulled version {pulled[:12]} is not the frozen one {frozen['version'][:12]}")
    rows = items(args.data, "train") or items(args.data)
    sizes = [float(r["bytes"]) for r in rows]
    with medcycle.start_run("demo-xr-baseline", dataset=f"{frozen['dataset']}@{pulled}", params={"epochs": args.epochs},
                            capture=False, resources=False) as run:
        for epoch in range(args.epochs):
            seen = sizes[: max(1, len(sizes) * (epoch + 1) // args.epochs)]
            mean, spread = statistics.fmean(seen), statistics.pstdev(seen) or 1.0
            run.log_metrics({"mean": mean, "spread": spread}, step=epoch)
            print(f"epoch {epoch + 1}/{args.epochs}: mean {mean:.1f} spread {spread:.1f}")  # noqa: T201
    with open(args.out, "w") as fh:
        json.dump({"version": pulled, "mean": mean, "spread": spread, "n": len(sizes)}, fh, sort_keys=True)


if __name__ == "__main__":
    main()
