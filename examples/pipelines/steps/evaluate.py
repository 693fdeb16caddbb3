"""A stand-in for evaluation: the share of test images whose size lies within tolerance × spread of the mean."""

from __future__ import annotations

import argparse
import json

from common import items, note_execution


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("model")
    parser.add_argument("--tolerance", type=float, default=2.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    note_execution("evaluate")
    with open(args.model) as fh:
        model = json.load(fh)
    rows = items(args.data, "test") or items(args.data)
    inside = [abs(float(r["bytes"]) - model["mean"]) <= args.tolerance * model["spread"] for r in rows]
    metrics = {"version": model["version"], "n": len(rows), "within": sum(inside) / len(rows) if rows else 0.0}
    print(json.dumps(metrics, sort_keys=True))  # noqa: T201 - a step script: stdout is its log
    with open(args.out, "w") as fh:
        json.dump(metrics, fh, sort_keys=True)


if __name__ == "__main__":
    main()
