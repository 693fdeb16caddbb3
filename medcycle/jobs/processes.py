"""A registry of live processes: serving workers and agents say who they are, where, and what they do.

Each long-running process keeps one row in ``processes``, written by a :class:`Beacon` thread: registered when
the process starts, then one UPSERT per beat (every few seconds) with its state (``idle`` or ``busy``), its
current job and its details (device or GPUs, loaded model versions, the medcycle version), and marked
``stopped`` when it exits. A process whose last beat is older than three beat intervals is *lost* (killed,
or its machine is gone). The web pages (``/ui/serving``, ``/ui/training``) list them, so an idle worker is seen
too, not only one holding a job.

Writes never block the work: they run in the beacon's thread, and a failed write is logged and ignored (the
next beat tries again). Works on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Float, Index, Integer, String, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from medcycle.store.base import Base, UTCDateTime, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from medcycle.platform import Platform

log = logging.getLogger(__name__)

#: A process is lost when it has not beaten for this many of its beat intervals.
STALE_BEATS = 3
#: Default seconds between beats.
BEAT_SECONDS = 5.0
#: Least seconds between two writes when :meth:`Beacon.poke` asks for beats more often (busy, idle, busy...).
MIN_GAP_SECONDS = 0.5
#: Rows of processes not seen for this long are deleted when a process registers.
FORGET_AFTER = timedelta(days=7)


class ProcessKind(StrEnum):
    SERVING_WORKER = "serving-worker"
    AGENT = "agent"
    SCP = "scp"
    API = "api"


class ProcessState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    STOPPED = "stopped"


#: What the pages show for a process whose beats stopped without a ``stopped`` mark.
LOST = "lost"


class ProcessRow(Base):
    __tablename__ = "processes"
    __table_args__ = (Index("ix_processes_kind_seen", "kind", "last_seen_at"),)

    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str | None] = mapped_column(String(128), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    current_job: Mapped[str | None] = mapped_column(String(256), nullable=True)
    beat_seconds: Mapped[float] = mapped_column(Float)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """Who a process is: its id (``HOST:PID`` or its ``--name``), kind, machine, pid and queue."""

    id: str
    kind: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    queue: str | None = None
    beat_seconds: float = BEAT_SECONDS


@dataclass(frozen=True, slots=True)
class ProcessView:
    """A registered process as the pages show it; ``status`` is its state, or ``lost`` when its beats stopped."""

    id: str
    kind: str
    host: str
    pid: int
    queue: str | None
    state: str
    status: str
    current_job: str | None
    details: dict[str, Any]
    started_at: datetime
    last_seen_at: datetime
    beat_seconds: float

    @property
    def live(self) -> bool:
        return self.status not in (LOST, ProcessState.STOPPED)


def _upsert(session: Session, values: dict[str, Any], update_columns: list[str]) -> None:
    """One INSERT ... ON CONFLICT (id) DO UPDATE of ``update_columns``."""
    stmt: Any
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(ProcessRow).values(**values)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(ProcessRow).values(**values)
    stmt = stmt.on_conflict_do_update(index_elements=["id"],
                                      set_={c: getattr(stmt.excluded, c) for c in update_columns})
    session.execute(stmt)


def _details(details: dict[str, Any] | None) -> dict[str, Any]:
    from medcycle import __version__

    return {"medcycle": __version__, **(details or {})}


def register(session: Session, info: ProcessInfo, *, state: str = ProcessState.STARTING,
             current_job: str | None = None, details: dict[str, Any] | None = None) -> None:
    """Register (or re-register, after a restart under the same name) a process, and forget processes not
    seen for :data:`FORGET_AFTER`."""
    now = utcnow()
    session.execute(delete(ProcessRow).where(ProcessRow.last_seen_at < now - FORGET_AFTER))
    values = {"id": info.id, "kind": str(info.kind), "host": info.host, "pid": info.pid, "queue": info.queue,
              "state": str(state), "current_job": current_job, "beat_seconds": info.beat_seconds,
              "details": _details(details), "started_at": now, "last_seen_at": now}
    _upsert(session, values, [k for k in values if k != "id"])


def beat(session: Session, info: ProcessInfo, *, state: str, current_job: str | None = None,
         details: dict[str, Any] | None = None) -> None:
    """One beat: a single UPSERT of the state, current job, details and ``last_seen_at`` (a process whose row
    is gone — forgotten, or its registration failed — is registered again)."""
    now = utcnow()
    values = {"id": info.id, "kind": str(info.kind), "host": info.host, "pid": info.pid, "queue": info.queue,
              "state": str(state), "current_job": current_job, "beat_seconds": info.beat_seconds,
              "details": _details(details), "started_at": now, "last_seen_at": now}
    _upsert(session, values, ["kind", "host", "pid", "queue", "state", "current_job", "beat_seconds", "details",
                              "last_seen_at"])


def mark_stopped(session: Session, process_id: str, *, details: dict[str, Any] | None = None) -> None:
    """The process exited cleanly: ``stopped``, no current job (``details``: its last ones, kept on its row)."""
    values: dict[str, Any] = {"state": ProcessState.STOPPED.value, "current_job": None, "last_seen_at": utcnow()}
    if details is not None:
        values["details"] = _details(details)
    session.execute(update(ProcessRow).where(ProcessRow.id == process_id).values(**values))


def _status(row: ProcessRow, now: datetime, stale_after_seconds: float | None) -> str:
    if row.state == ProcessState.STOPPED:
        return ProcessState.STOPPED.value
    limit = stale_after_seconds if stale_after_seconds is not None else STALE_BEATS * row.beat_seconds
    return LOST if (now - row.last_seen_at).total_seconds() > limit else row.state


def _view(row: ProcessRow, now: datetime, stale_after_seconds: float | None) -> ProcessView:
    return ProcessView(id=row.id, kind=row.kind, host=row.host, pid=row.pid, queue=row.queue, state=row.state,
                       status=_status(row, now, stale_after_seconds), current_job=row.current_job,
                       details=dict(row.details or {}), started_at=row.started_at, last_seen_at=row.last_seen_at,
                       beat_seconds=row.beat_seconds)


def list_processes(session: Session, kind: str | None = None, *, stale_after_seconds: float | None = None,
                   seen_within: timedelta | None = timedelta(days=1)) -> list[ProcessView]:
    """Registered processes (of ``kind``) seen within ``seen_within``: live ones first (busy, then idle), then
    lost, then stopped; most recently seen first within each. A process is lost when its last beat is older
    than ``stale_after_seconds`` (default: :data:`STALE_BEATS` of its own beat interval)."""
    query = select(ProcessRow)
    if kind is not None:
        query = query.where(ProcessRow.kind == str(kind))
    now = utcnow()
    if seen_within is not None:
        query = query.where(ProcessRow.last_seen_at >= now - seen_within)
    views = [_view(row, now, stale_after_seconds) for row in session.scalars(query)]
    order = {ProcessState.BUSY.value: 0, ProcessState.IDLE.value: 1, ProcessState.STARTING.value: 2,
             ProcessState.STOPPING.value: 3, LOST: 4, ProcessState.STOPPED.value: 5}
    views.sort(key=lambda v: v.last_seen_at, reverse=True)
    return sorted(views, key=lambda v: order.get(v.status, 6))


def list_live(session: Session, stale_after_seconds: float | None = None, kind: str | None = None
              ) -> list[ProcessView]:
    """The processes (of ``kind``) that beat recently and are not stopped."""
    return [v for v in list_processes(session, kind, stale_after_seconds=stale_after_seconds) if v.live]


@dataclass(frozen=True, slots=True)
class Status:
    """What a process reports at each beat."""

    state: str
    current_job: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Beacon(threading.Thread):
    """Registers a process, beats every ``info.beat_seconds`` with what ``status`` returns, and marks it stopped
    on :meth:`close`. :meth:`poke` beats at once (a state change shows without waiting for the next beat).

    Every write happens in this thread, in its own short transaction; a failure is logged (once per streak of
    failures) and ignored — the process's work never waits on or fails for its registry row::

        beacon = Beacon(platform, ProcessInfo("gpu-box-1", ProcessKind.AGENT), lambda: Status("idle"))
        beacon.start()
        try:
            ...  # the work, calling beacon.poke() when the state changes
        finally:
            beacon.close()
    """

    def __init__(self, platform: Platform, info: ProcessInfo, status: Callable[[], Status]) -> None:
        super().__init__(daemon=True, name=f"medcycle-beacon-{info.kind}")
        self.platform, self.info, self.status = platform, info, status
        self._halt = threading.Event()
        self._wake = threading.Event()
        self._failing = False
        self.beats = 0  # successful writes (register and beats)

    def _write(self, what: str, action: Callable[[Session], None]) -> bool:
        try:
            with self.platform.session() as session:
                action(session)
        except Exception as exc:  # noqa: BLE001 — never let the registry break or block the work
            if not self._failing:
                log.warning("process registry: could not %s %s: %s", what, self.info.id,
                            getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
            self._failing = True
            return False
        if self._failing:
            log.info("process registry: %s of %s written again", what, self.info.id)
        self._failing = False
        self.beats += 1
        return True

    def _report(self, first: bool) -> bool:
        try:
            now = self.status()
        except Exception:  # a status callback must not kill the beacon
            if not self._failing:
                log.exception("process registry: the status of %s failed", self.info.id)
            self._failing = True
            return False
        if first:
            return self._write("register", lambda s: register(s, self.info, state=now.state,
                                                              current_job=now.current_job, details=now.details))
        return self._write("beat", lambda s: beat(s, self.info, state=now.state, current_job=now.current_job,
                                                  details=now.details))

    def run(self) -> None:
        registered = self._report(first=True)
        gap = min(MIN_GAP_SECONDS, self.info.beat_seconds)
        while not self._halt.is_set():
            if self._wake.wait(self.info.beat_seconds) and self._halt.wait(gap):  # pokes: at most one write a gap
                break
            self._wake.clear()
            if self._halt.is_set():
                break
            registered = self._report(first=not registered) or registered

    def poke(self) -> None:
        """Beat now (from any thread; returns at once)."""
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop beating and mark the process stopped with its last details (waits at most ``timeout`` seconds
        for the thread)."""
        self._halt.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)
        try:
            last: dict[str, Any] | None = self.status().details
        except Exception:  # noqa: BLE001 — the stop mark goes without details
            last = None
        self._write("mark stopped", lambda s: mark_stopped(s, self.info.id, details=last))
