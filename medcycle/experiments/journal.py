"""The local crash-safe journal of a run and the background writer that drains it into a sink.

Every write of a run goes first to memory (about a microsecond per metric point), then, in groups, to
an append-only journal file that is fsync'd (every ``flush_interval`` seconds and on
:meth:`RunWriter.flush`), then in batches to a :class:`Sink` — the local metadata store or a remote
server — every ``deliver_interval`` seconds, on ``flush()``, and whenever 4 MiB are waiting. A ``kill -9``
loses at most what was logged after the last flush; what the journal holds is replayed by
``medcycle run sync`` and applied exactly once (see :mod:`medcycle.experiments.ingest`).
When the sink is unreachable the run goes on *offline*: the journal grows, the writer retries with
backoff, and on reconnection (or ``sync``) everything is sent in order.

Layout of one journal: ``JOURNALS/<run_id>/`` holding ``journal.mcj`` (records), ``meta.json``,
``blobs/<digest>`` (small objects staged until uploaded) and ``lock`` (held by the live process, so
``sync`` never replays a journal that is still being written).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from medcycle.errors import BackendUnavailable, IntegrityError, MedcycleError, NotFound, UsageError
from medcycle.experiments.records import FILE_MAGIC, Kind, Record, metrics_record, read_frames
from medcycle.objects.base import CHUNK

log = logging.getLogger("medcycle.experiments")

JOURNAL_FILE = "journal.mcj"
META_FILE = "meta.json"
MAX_BATCH_RECORDS = 512
MAX_BATCH_BYTES = 32 * 1024 * 1024
MAX_PENDING_BYTES = 256 * 1024 * 1024  # beyond this, pending records are re-read from the journal
MAX_LOG_RECORD = 1024 * 1024
WAKE_POINTS = 65_536  # buffered points that wake the writer before its interval
DELIVER_BYTES = 4 * 1024 * 1024  # journaled bytes that are sent at once, without waiting for deliver_interval


class Sink(Protocol):
    """Where a run's records end up: the local store (:class:`~medcycle.experiments.ingest.LocalSink`) or a
    server (:class:`~medcycle.experiments.remote.HttpSink`). ``apply`` must be idempotent per sequence number."""

    target: str

    def apply(self, run_id: str, records: list[Record]) -> int: ...

    def applied_seq(self, run_id: str) -> int: ...

    def has_object(self, digest: str) -> bool: ...

    def put_object(self, path: Path, digest: str) -> None: ...

    def close(self) -> None: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """One run's journal folder. The creating process holds its lock until :meth:`close`."""

    def __init__(self, path: Path, fh: BinaryIO, lock_fd: int) -> None:
        self.path = path
        self._fh = fh
        self._lock_fd = lock_fd

    @property
    def run_id(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, root: Path, run_id: str, target: str) -> Journal:
        path = root / run_id
        (path / "blobs").mkdir(parents=True, exist_ok=False)
        os.chmod(root, 0o700)
        lock_fd = _try_lock(path)
        if lock_fd is None:
            raise BackendUnavailable(f"journal {path} is locked by another process")
        meta = {"run_id": run_id, "target": target, "pid": os.getpid(), "created_at": time.time()}
        (path / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
        fh = (path / JOURNAL_FILE).open("ab")
        fh.write(FILE_MAGIC)
        fh.flush()
        os.fsync(fh.fileno())
        _fsync_dir(path)
        _fsync_dir(root)
        return cls(path, fh, lock_fd)

    @classmethod
    def open_idle(cls, path: Path) -> Journal | None:
        """An existing journal whose writer is gone (for ``sync``), or ``None`` while a process holds it."""
        lock_fd = _try_lock(path)
        if lock_fd is None:
            return None
        fh = (path / JOURNAL_FILE).open("ab")
        return cls(path, fh, lock_fd)

    def meta(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def append(self, frames: list[bytes], *, sync: bool = True) -> None:
        self._fh.write(b"".join(frames))
        self._fh.flush()
        if sync:
            os.fsync(self._fh.fileno())

    def records(self, after_seq: int = 0, offset: int = 0) -> Iterator[tuple[Record, int]]:
        """Intact records with ``seq > after_seq``, each with the file offset just past it."""
        with (self.path / JOURNAL_FILE).open("rb") as fh:
            if offset:
                fh.seek(offset)
            elif fh.read(len(FILE_MAGIC)) != FILE_MAGIC:
                return
            for record, end in read_frames(fh):
                if record.seq > after_seq:
                    yield record, end

    def stage_blob(self, data: bytes) -> tuple[str, int, Path]:
        """Keep ``data`` durably in the journal until the sink has it; returns digest, size and path."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.path / "blobs" / digest
        if not final.exists():
            tmp = final.with_suffix(".tmp")
            with tmp.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        return digest, len(data), final

    def stage_file(self, source: Path) -> tuple[str, int, Path]:
        """Copy ``source`` into the journal while hashing it (one streamed pass), so the file can change or
        vanish right after it was logged; returns digest, size and the staged path."""
        fd, tmp_name = tempfile.mkstemp(prefix="stage-", dir=self.path / "blobs")
        tmp = Path(tmp_name)
        h, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            final = tmp.with_name(h.hexdigest())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return h.hexdigest(), size, final

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def _try_lock(path: Path) -> int | None:
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


Series = tuple["array[int]", "array[float]", "array[float]"]


class RunWriter:
    """Buffers a run's writes, journals them in fsync'd groups and drains them to ``sink`` on a thread."""

    def __init__(self, journal: Journal, sink: Sink, *, flush_interval: float = 0.5, deliver_interval: float = 2.0,
                 max_log_bytes: int = 64 * 1024 * 1024) -> None:
        self.journal = journal
        self.sink = sink
        self.run_id = journal.run_id
        self.flush_interval = flush_interval
        self.deliver_interval = max(deliver_interval, flush_interval)
        self._last_delivery = 0.0
        self.max_log_bytes = max_log_bytes
        self.lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._wake = threading.Event()
        # Buffers (under self.lock).
        self.series: dict[str, Series] = {}
        self.points = 0
        self._queue: list[Record] = []
        self._logs: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._log_at: dict[str, float] = {}
        self._log_total = 0
        # Writer-thread state.
        self._seq = 0
        self._pending: list[Record] = []
        self._pending_bytes = 0
        self._spilled = False
        self._acked = 0
        self._acked_offset = 0
        self._read_offset = 0
        self._retry_at = 0.0
        self._backoff = 0.0
        self._last_error: str | None = None
        self.offline = False
        # Flush generations (under self._cond).
        self._requested = 0
        self._journaled = 0
        self._acked_gen = 0
        self._error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=f"medcycle-run-{self.run_id[:8]}", daemon=True)
        self._thread.start()

    # -- producer side (any thread) ------------------------------------------------------------------
    def put(self, record: Record) -> None:
        """Queue a record (not metric points). Its body must be JSON without NaN: checked here, in the caller's
        thread, so that a bad value is the caller's error and never the writer's."""
        try:
            json.dumps(record.body, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"cannot record {record.kind.name.lower()}: {exc}",
                             hint="Pass JSON-serialisable values (no NaN or infinity in metadata).") from None
        with self.lock:
            self._queue.append(record)
        self._wake.set()

    def new_series(self, key: str) -> Series:
        """Buffers of a key seen for the first time in this group (caller holds :attr:`lock`)."""
        entry: Series = (array("q"), array("d"), array("d"))
        self.series[key] = entry
        return entry

    def wake(self) -> None:
        self._wake.set()

    def write_log(self, stream: str, text: str) -> None:
        with self.lock:
            if self._log_total >= self.max_log_bytes:
                return
            self._log_total += len(text)
            if self._log_total >= self.max_log_bytes:
                text += f"\n[medcycle: output capture stopped after {self.max_log_bytes} bytes]\n"
            self._logs[stream].append(text)
            self._log_at.setdefault(stream, time.time())

    def flush(self, timeout: float | None = None) -> bool:
        """Make everything written so far durable in the journal, then wait for the sink (up to ``timeout``).

        Returns whether the sink has it all (False while offline). Raises when the journal cannot be written.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._requested += 1
            gen = self._requested
        self._wake.set()
        with self._cond:
            while self._journaled < gen and self._error is None and self._thread.is_alive():
                self._cond.wait(0.1)
            if self._error is not None:
                raise MedcycleError(f"the journal of run {self.run_id} cannot be written: {self._error}",
                                    hint="Check free space and permissions of the journal folder.")
            while self._acked_gen < gen and not self.offline and self._thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(0.1 if left is None else min(left, 0.1))
            return self._acked_gen >= gen

    def close(self, timeout: float = 30.0) -> bool:
        """Journal everything, try the sink once more, stop the thread; returns whether all was delivered."""
        with self._cond:
            self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        delivered = not self._pending and not self._spilled and self._error is None
        self.journal.close()
        return delivered

    @property
    def error(self) -> str | None:
        return self._last_error

    # -- the writer thread ---------------------------------------------------------------------------
    def _take(self) -> list[Record]:
        with self.lock:
            queue, self._queue = self._queue, []
            series, self.series, self.points = self.series, {}, 0
            logs = {s: parts for s, parts in self._logs.items() if parts}
            self._logs = {"stdout": [], "stderr": []}
            log_at, self._log_at = self._log_at, {}
        end = [r for r in queue if r.kind is Kind.END]
        out = [r for r in queue if r.kind is not Kind.END]
        if series:
            out.append(metrics_record(series))
        for stream, parts in logs.items():
            text = "".join(parts)
            for i in range(0, len(text), MAX_LOG_RECORD):
                out.append(Record(Kind.LOG, {"stream": stream, "text": text[i:i + MAX_LOG_RECORD],
                                             "at": log_at.get(stream, time.time())}))
        return out + end

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            with self._cond:
                gen, closing = self._requested, self._closing
            try:
                self._journal_batch(self._take())
            except Exception as exc:  # noqa: BLE001 - reported to every flush() caller
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                log.error("run %s: cannot write its journal: %s", self.run_id, exc)
                return
            with self._cond:
                self._journaled = max(self._journaled, gen)
                self._cond.notify_all()
                waiting = gen > self._acked_gen  # someone called flush()
            now = time.monotonic()
            if (closing or waiting or self._spilled or self._pending_bytes >= DELIVER_BYTES
                    or now - self._last_delivery >= self.deliver_interval):
                self._last_delivery = now
                self._drain(force=closing)
            with self._cond:
                if not self._pending and not self._spilled:
                    self._acked_gen = max(self._acked_gen, gen)
                self._cond.notify_all()
                if closing:
                    return

    def _journal_batch(self, batch: list[Record]) -> None:
        if not batch:
            return
        frames = []
        for record in batch:
            self._seq += 1
            record.seq = self._seq
            frames.append(record.encode())
        self.journal.append(frames)
        if self._spilled:
            return
        self._pending.extend(batch)
        self._pending_bytes += sum(r.weight for r in batch)
        if self._pending_bytes > MAX_PENDING_BYTES:
            self._pending, self._pending_bytes, self._spilled = [], 0, True

    def _next_batch(self) -> list[Record]:
        if self._spilled:
            batch: list[Record] = []
            size = 0
            for record, end in self.journal.records(self._acked, self._acked_offset):
                batch.append(record)
                size += record.weight
                self._read_offset = end
                if len(batch) >= MAX_BATCH_RECORDS or size >= MAX_BATCH_BYTES:
                    break
            return batch
        size, n = 0, 0
        for record in self._pending:
            size += record.weight
            n += 1
            if n >= MAX_BATCH_RECORDS or size >= MAX_BATCH_BYTES:
                break
        return self._pending[:n]

    def _drain(self, *, force: bool = False) -> None:
        while True:
            if not force and time.monotonic() < self._retry_at:
                return
            try:
                batch = self._next_batch()
                if not batch:
                    self._spilled = False
                    return
                for record in batch:
                    upload_objects(self.sink, record)
                acked = self.sink.apply(self.run_id, batch)
            except Exception as exc:  # noqa: BLE001 - any failure means "offline": keep the journal, retry later
                self._went_offline(exc)
                return
            if self.offline:
                log.warning("run %s: back online, sending what was journaled", self.run_id)
            self.offline, self._backoff, self._last_error = False, 0.0, None
            self._acked = max(self._acked, acked)
            if self._spilled:
                self._acked_offset = self._read_offset
            else:
                done = [r for r in self._pending if r.seq <= self._acked]
                self._pending = self._pending[len(done):]
                self._pending_bytes -= sum(r.weight for r in done)

    def _went_offline(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if message != self._last_error:
            log.warning("run %s: the store is unavailable (%s); continuing offline, the journal keeps every "
                        "write (`medcycle run sync` replays it)", self.run_id, message.splitlines()[0])
        self._last_error = message
        self.offline = True
        self._backoff = min(30.0, max(0.5, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff
        with self._cond:
            self._cond.notify_all()


def upload_objects(sink: Sink, record: Record) -> None:
    """Upload the objects ``record`` refers to that the sink lacks; a vanished or changed source file marks
    the record's object missing (the record is still applied) instead of blocking the run."""
    objects = record.body.get("_objects")
    if not objects:
        return
    for obj in objects:
        digest, path = obj["digest"], Path(obj["path"])
        if sink.has_object(digest):
            continue
        try:
            if not path.is_file():
                raise NotFound(f"{path} is gone")
            sink.put_object(path, digest)
        except (NotFound, IntegrityError) as exc:
            log.warning("run artifact %s could not be uploaded (%s); it is recorded as missing", path, exc.message)
            record.body["missing"] = True
    record.body.pop("_objects", None)
