"""``medcycle run sync``: deliver journals that were not (fully) delivered — offline runs and crashed ones.

For each journal folder whose writer is gone (its lock is free), the records after the sink's
``applied_seq`` are sent in batches, with the objects they refer to; the store skips anything it already
has, so a sync interrupted halfway and run again writes everything exactly once. A journal without an end
record belongs to a process that died: the run is ended as ``crashed`` at the journal's last write.
Delivered journals are removed. Journals still held by a live process are left alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcycle.errors import MedcycleError
from medcycle.experiments.journal import JOURNAL_FILE, MAX_BATCH_BYTES, MAX_BATCH_RECORDS, Journal, Sink, upload_objects
from medcycle.experiments.records import Kind, Record


@dataclass(frozen=True, slots=True)
class SyncResult:
    run_id: str
    outcome: str  # synced, live, skipped, failed, empty
    sent: int = 0
    crashed: bool = False
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "outcome": self.outcome, "sent": self.sent, "crashed": self.crashed,
                "detail": self.detail}


def pending_journals(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / JOURNAL_FILE).is_file())


def sync_journals(root: Path, sink: Sink, *, runs: list[str] | None = None,
                  target: str | None = None) -> list[SyncResult]:
    """Replay every idle journal under ``root`` (or those of ``runs``) into ``sink``.

    Args:
        target: when given, only journals written for this target (``meta.json``) are replayed; others are
            reported as ``skipped`` — a journal of a remote server is not pushed into a local database by mistake.
    """
    results = []
    for path in pending_journals(root):
        if runs and not any(path.name.startswith(r) for r in runs):
            continue
        journal = Journal.open_idle(path)
        if journal is None:
            results.append(SyncResult(path.name, "live", detail="a running process is writing it"))
            continue
        try:
            written_for = journal.meta().get("target")
            if target is not None and written_for not in (None, target):
                results.append(SyncResult(path.name, "skipped", detail=f"written for {written_for}"))
                journal.close()
                continue
            results.append(_sync_one(journal, sink))
        except MedcycleError as exc:
            journal.close()
            results.append(SyncResult(path.name, "failed", detail=str(exc)))
    return results


def _sync_one(journal: Journal, sink: Sink) -> SyncResult:
    run_id = journal.run_id
    last_seq, ended, has_start = 0, False, False
    for record, _ in journal.records():
        last_seq = record.seq
        ended |= record.kind is Kind.END
        has_start |= record.kind is Kind.START
    if last_seq == 0 or (not has_start and sink.applied_seq(run_id) == 0):
        journal.remove()
        return SyncResult(run_id, "empty", detail="nothing was journaled")
    crashed = False
    if not ended:
        mtime = os.stat(journal.path / JOURNAL_FILE).st_mtime
        end = Record(Kind.END, {"status": "crashed", "ended_at": min(mtime, time.time())}, seq=last_seq + 1)
        journal.append([end.encode()])
        crashed = True
    done = sink.applied_seq(run_id)
    sent = 0
    batch: list[Record] = []
    size = 0
    for record, _ in journal.records(after_seq=done):
        batch.append(record)
        size += record.weight
        if len(batch) >= MAX_BATCH_RECORDS or size >= MAX_BATCH_BYTES:
            sent += _send(sink, run_id, batch)
            batch, size = [], 0
    if batch:
        sent += _send(sink, run_id, batch)
    journal.remove()
    return SyncResult(run_id, "synced", sent=sent, crashed=crashed)


def _send(sink: Sink, run_id: str, batch: list[Record]) -> int:
    for record in batch:
        upload_objects(sink, record)
    sink.apply(run_id, batch)
    return len(batch)
