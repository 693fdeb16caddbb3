"""What a serving worker keeps about its work: counters, a batch in hand and each job's outcome."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from medcycle.jobs.base import Job
from medcycle.jobs.worker import Heartbeat
from medcycle.serving.batcher import Batch
from medcycle.serving.decode import DecodedCase
from medcycle.serving.predictor import Prepared
from medcycle.serving.predlog import LogEntry
from medcycle.serving.tables import ServingResultRow


@dataclass
class ServingStats:
    batches: int = 0
    jobs: int = 0
    computed: int = 0
    cached: int = 0
    refused: int = 0
    expired: int = 0
    failed: int = 0
    retried: int = 0
    lost: int = 0
    images: int = 0
    batch_images: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    action: str  # complete | fail | retry
    label: str  # the metric outcome
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Decoded:
    cases: list[DecodedCase]
    prepared: list[Prepared] | None  # the cases made ready for the network (None: no predictor known yet)
    stats: dict[str, float]  # the prediction log's input statistics of the first case
    header: dict[str, Any]  # and its allow-listed header fields


@dataclass
class ResultToWrite:
    job: Job
    row: ServingResultRow
    entry: LogEntry


@dataclass
class InHand:
    """A batch taken from the queue: the heartbeat renewing its leases, its inputs decoding in the pool, and
    what its processing has to write (result rows, log entries)."""

    batch: Batch
    beat: Heartbeat
    decoding: dict[str, Future[Decoded]]
    rows: list[ResultToWrite] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)

    @property
    def dropped(self) -> set[str]:
        """Jobs whose lease was lost or that were cancelled: never settled by this worker."""
        return self.beat.dropped
