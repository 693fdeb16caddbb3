"""What ``pull``, ``push`` and ``status`` report: progress events while they run, and a report at the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TransferEvent:
    """Progress: ``start`` announces a phase's totals; otherwise the counts are increments."""

    phase: str  # fetch, link, upload, check
    objects: int
    bytes: int
    start: bool = False


Progress = Callable[[TransferEvent], None]


class Tally:
    """Progress increments gathered on the calling thread and reported every ``STEP`` seconds and at the end:
    an event per object costs more than placing a small object, and a bar cannot show more anyway."""

    STEP = 0.1

    def __init__(self, phase: str, emit: Progress) -> None:
        self.phase, self.emit = phase, emit
        self.objects = self.bytes = 0
        self.due = time.monotonic() + self.STEP

    def add(self, size: int) -> None:
        self.objects += 1
        self.bytes += size
        if self.objects >= 4096 or time.monotonic() >= self.due:
            self.flush()

    def flush(self) -> None:
        if self.objects:
            self.emit(TransferEvent(self.phase, self.objects, self.bytes))
            self.objects = self.bytes = 0
        self.due = time.monotonic() + self.STEP


@dataclass
class PullReport:
    dataset: str
    version: str
    ref: str
    dest: str
    items: int = 0
    objects: int = 0
    bytes_total: int = 0
    fetched_objects: int = 0
    fetched_bytes: int = 0
    fetched_linked: int = 0  # of the fetched objects, linked (not copied) from a store on this file system
    cached_objects: int = 0  # already in the local cache (or the store is local)
    linked: int = 0
    copied: int = 0
    unchanged: int = 0
    removed: int = 0
    manifest_bytes: int = 0
    seconds: float = 0.0
    source: str = "cache"  # cache, or local-store when linking straight from a local object store

    @property
    def fetch_throughput(self) -> float:
        """Bytes per second fetched from the object store (0 when nothing was fetched)."""
        return self.fetched_bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def throughput(self) -> float:
        """Bytes of the version materialised per second, however they got there."""
        return self.bytes_total / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fetch_throughput": self.fetch_throughput, "throughput": self.throughput}


@dataclass
class PushReport:
    dataset: str
    version: str
    objects: int = 0
    present: int = 0
    uploaded_objects: int = 0
    uploaded_bytes: int = 0
    missing: list[str] = field(default_factory=list)  # in neither the store nor the cache
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class StatusReport:
    dataset: str
    version: str
    items: int = 0
    objects: int = 0
    bytes_total: int = 0
    local: int = 0  # objects on this machine (cache, or the local store)
    missing_locally: int = 0
    missing_bytes: int = 0
    missing_in_store: list[str] = field(default_factory=list)
    folder: dict[str, int] | None = None  # with --to: present, missing, different

    @property
    def complete(self) -> bool:
        folder_ok = self.folder is None or (self.folder["missing"] == 0 and self.folder["different"] == 0)
        return self.missing_locally == 0 and folder_ok

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}
