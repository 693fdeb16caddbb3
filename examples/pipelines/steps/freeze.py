"""Freeze DATASET's working set into a version and write {"dataset", "version", "items"} to OUT.

Freezing content identical to an existing version returns that version, so OUT keeps the same bytes and the
steps after this one stay cache hits until the data really changes.
"""

from __future__ import annotations

import json
import os
import sys

from common import note_execution

from medcycle import Platform, load_settings
from medcycle.datasets import versions


def main(dataset: str, out: str) -> None:
    note_execution("freeze")
    platform = Platform(load_settings())  # the MEDCYCLE_* variables the executor sets name the platform
    run = os.environ.get("MEDCYCLE_PIPELINE_RUN", "")[:12]
    try:
        with platform.session() as session:
            result = versions.freeze(session, platform.objects, dataset, actor=f"pipeline:{run}", via="pipeline")
    finally:
        platform.close()
    info = result.version
    print(f"{dataset}: {'new version' if result.created else 'unchanged'} v{info.seq} ({info.id[:12]})")  # noqa: T201
    with open(out, "w") as fh:
        json.dump({"dataset": dataset, "version": info.id, "items": info.n_items}, fh, sort_keys=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
