"""Prometheus metrics of a serving worker, in a registry of its own (no globals): batches, waits, outcomes.

* ``medcycle_serving_batch_images`` / ``_batch_jobs``: size of each dispatched batch, in images and in jobs.
* ``medcycle_serving_dispatch_total{reason}``: why a batch closed — ``full`` (max images reached) or
  ``timeout`` (the delay ran out first).
* ``medcycle_serving_queue_wait_seconds``: enqueue → taken by a worker.
* ``medcycle_serving_latency_seconds{model}``: enqueue → result stored (per model version).
* ``medcycle_serving_compute_seconds{model}``: decode + preprocess + network + outputs, per batch.
* ``medcycle_serving_jobs_total{outcome}``: done, cached, refused, expired, failed, retried, cancelled, lost.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
TIME_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.batch_images = Histogram("medcycle_serving_batch_images", "Images/slices per dispatched batch",
                                      buckets=SIZE_BUCKETS, registry=r)
        self.batch_jobs = Histogram("medcycle_serving_batch_jobs", "Jobs per dispatched batch", buckets=SIZE_BUCKETS,
                                    registry=r)
        self.dispatch = Counter("medcycle_serving_dispatch", "Batches dispatched, by reason (full/timeout)",
                                ["reason"], registry=r)
        self.queue_wait = Histogram("medcycle_serving_queue_wait_seconds", "Enqueue to take", buckets=TIME_BUCKETS,
                                    registry=r)
        self.latency = Histogram("medcycle_serving_latency_seconds", "Enqueue to stored result", ["model"],
                                 buckets=TIME_BUCKETS, registry=r)
        self.compute = Histogram("medcycle_serving_compute_seconds", "Decode, inference and outputs per batch",
                                 ["model"], buckets=TIME_BUCKETS, registry=r)
        self.jobs = Counter("medcycle_serving_jobs", "Jobs by outcome", ["outcome"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (tests and the bench read counters and histogram sums/counts)."""
        found = self.registry.get_sample_value(name, labels or {})
        return float(found or 0.0)
