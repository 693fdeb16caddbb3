"""Shared by the example's steps: reading a pulled dataset version, and a note of each real execution."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def items(folder: str, split: str | None = None) -> list[dict[str, str]]:
    """The rows of a pulled version's manifest.csv (``medcycle dataset pull`` layout), optionally one split."""
    with (Path(folder) / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r for r in rows if split is None or r["split"] == split]


def note_execution(step: str) -> None:
    """Append the step's name to $PIPELINE_TRACE when it is set: a record of what really executed."""
    trace = os.environ.get("PIPELINE_TRACE")
    if trace:
        with open(trace, "a") as fh:
            fh.write(step + "\n")
