"""A minimal queue worker for kill tests, the same for every backend::

    python -m medcycle.testing.job_worker --queue-url URL [--database-url URL] --queue NAME \\
        --worker NAME --work-seconds S --lease-seconds L --count N --results-file F

It takes one job at a time, "works" ``S`` seconds while heartbeating, completes the job and appends its
id as one line to ``F`` (flushed and fsynced, so a line written is a completion that happened). It
exits 0 after ``N`` completions, 1 when ``--timeout`` passes first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from medcycle.jobs.base import Job, JobCancelled, JobQueue, LeaseLost
from medcycle.jobs.factory import open_job_queue
from medcycle.settings import load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m medcycle.testing.job_worker", description=__doc__)
    p.add_argument("--queue-url", required=True, help="`embedded` or redis://host:6379/0[?key_prefix=...]")
    p.add_argument("--database-url", default=None, help="metadata store URL (needed by the embedded queue)")
    p.add_argument("--queue", required=True)
    p.add_argument("--worker", required=True, help="worker (consumer) name")
    p.add_argument("--work-seconds", type=float, default=0.0)
    p.add_argument("--lease-seconds", type=float, default=1.0)
    p.add_argument("--count", type=int, default=1, help="exit after this many completed jobs")
    p.add_argument("--results-file", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    return p


def work(jq: JobQueue, job: Job, seconds: float, lease_seconds: float) -> None:
    """Hold ``job`` for ``seconds``, heartbeating three times per lease (raises LeaseLost/JobCancelled)."""
    end = time.monotonic() + seconds
    beat = max(lease_seconds / 3, 0.01)
    while (remaining := end - time.monotonic()) > 0:
        time.sleep(min(beat, remaining))
        jq.heartbeat(job, lease_seconds=lease_seconds)


def record(path: Path, job_id: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(job_id + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings(
        queue_url=args.queue_url, database_url=args.database_url, job_lease_seconds=args.lease_seconds
    )
    engine = None
    if args.database_url:
        from medcycle.store.engine import create_engine_for

        engine = create_engine_for(args.database_url)
    jq = open_job_queue(settings, engine)
    done = 0
    stop_at = time.monotonic() + args.timeout
    try:
        while done < args.count and time.monotonic() < stop_at:
            for job in jq.take(args.queue, args.worker, wait_ms=500, lease_seconds=args.lease_seconds):
                try:
                    work(jq, job, args.work_seconds, args.lease_seconds)
                    jq.complete(job, {"worker": args.worker})
                except (LeaseLost, JobCancelled) as exc:
                    sys.stderr.write(f"{args.worker}: gave up job {job.id}: {exc.message}\n")
                    continue
                record(args.results_file, job.id)
                done += 1
    finally:
        jq.close()
        if engine is not None:
            engine.dispose()
    return 0 if done >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
