"""A serving worker as its own process, for the kill -9 tests: ``python -m tests.serving.core_worker_proc``.

Settings come from ``MEDCYCLE_*`` like any medcycle process. ``--pause-file PATH``: after the first batch's
results are stored (and before its jobs complete) write PATH and sleep — the worst moment to be killed.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from medcycle.jobs.base import Job
from medcycle.platform import Platform
from medcycle.serving.worker import ServingWorker
from medcycle.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pause-file", type=Path)
    parser.add_argument("--max-jobs", type=int)
    parser.add_argument("--max-batch-images", type=int, default=16)
    args = parser.parse_args()

    def pause(jobs: Sequence[Job]) -> None:
        args.pause_file.write_text("\n".join(j.id for j in jobs))
        time.sleep(600)  # killed here

    with Platform(load_settings()) as platform:
        worker = ServingWorker(platform, max_batch_images=args.max_batch_images, max_delay_ms=200, idle_wait_ms=50,
                               after_store=pause if args.pause_file else None)
        worker.run(threading.Event(), max_jobs=args.max_jobs)


if __name__ == "__main__":
    main()
