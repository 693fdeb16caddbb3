"""``fsck`` (verify every object, find missing referenced ones) and ``gc`` (drop unreferenced objects)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from medcycle.errors import NotFound
from medcycle.objects.base import ObjectInfo, ObjectStore
from medcycle.objects.refs import referenced_digests

Progress = Callable[[int], None]


@dataclass
class FsckReport:
    checked: int = 0
    bytes_checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "bytes_checked": self.bytes_checked,
            "corrupt": sorted(self.corrupt),
            "missing": sorted(self.missing),
        }


@dataclass
class GcReport:
    examined: int = 0
    deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    kept_recent: int = 0
    temp_files_removed: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "deleted": sorted(self.deleted),
            "bytes_freed": self.bytes_freed,
            "kept_recent": self.kept_recent,
            "temp_files_removed": self.temp_files_removed,
            "dry_run": self.dry_run,
        }


def fsck(store: ObjectStore, session: Session, *, progress: Progress | None = None) -> FsckReport:
    """Re-hash every stored object (in parallel) and check that every referenced object exists."""
    report = FsckReport()
    infos = list(store.list())

    def check(info: ObjectInfo) -> tuple[ObjectInfo, bool | None]:
        try:
            return info, store.verify(info.digest)
        except NotFound:
            return info, None  # vanished while we looked

    stored: set[str] = set()
    for info, good in store._parallel(check, infos):
        stored.add(info.digest)
        report.checked += 1
        report.bytes_checked += info.size
        if good is False:
            report.corrupt.append(info.digest)
        if progress:
            progress(1)
    report.missing = sorted(referenced_digests(session) - stored)
    return report


def gc(store: ObjectStore, session: Session, *, grace_seconds: float, dry_run: bool = False) -> GcReport:
    """Delete objects no row references and older than ``grace_seconds`` (uploads in flight are young)."""
    report = GcReport(dry_run=dry_run)
    keep = referenced_digests(session)
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_seconds)
    doomed: list[ObjectInfo] = []
    for info in store.list():
        report.examined += 1
        if info.digest in keep:
            continue
        if info.modified is not None and info.modified > cutoff:
            report.kept_recent += 1
            continue
        doomed.append(info)
    if not dry_run:
        results: list[bool] = store.delete_many(i.digest for i in doomed)
        for info, existed in zip(doomed, results, strict=True):
            if existed:
                report.deleted.append(info.digest)
                report.bytes_freed += info.size
        stale = getattr(store, "stale_temp_files", None)
        if stale is not None:
            for path in stale(grace_seconds):
                path.unlink(missing_ok=True)
                report.temp_files_removed += 1
    else:
        report.deleted = [i.digest for i in doomed]
        report.bytes_freed = sum(i.size for i in doomed)
    return report
