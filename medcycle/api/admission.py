"""Admission of inference requests: a full queue is answered 429 at once, and intakes run a few at a time.

Under overload most requests are refused, and a refusal must be fast (clients retry on ``Retry-After``).
Asking the queue for every request would put each refusal behind a thread hop and a database read that
compete with the intakes being accepted, so the answer of one look is shared: while a look is in flight
other requests wait for it instead of asking again, and a *full* answer is reused (the queue's own bound at
enqueue stays exact either way). For ``hold_s`` it is reused as it is; after that, up to ``stale_s``, a
request is still refused from it at once while a look in the background refreshes it — so under a sustained
overload no refusal waits for a look, yet a slot that opens is seen within about ``hold_s``. A request
arriving while such an answer holds is refused before its token is checked
(:meth:`Admission.refuse_if_known_full`, on the event loop); only an answer older than ``stale_s`` (a quiet
spell) makes a request wait for a look of its own. A look that finds room says how many places are left,
and a request admitted holds one of them (:meth:`Admission.reserve`) until its intake has queued the job or
failed: when as many uploads are already being taken in as there are places, the next request is refused
at once instead of reading, de-identifying and storing its upload only to find the queue full at enqueue
(a late refusal that costs the CPU the workers need). Room is reused for ``room_s`` too, while the requests
admitted since the look (and the uploads then in intake) have not used up the places it found: workers only
free places, so for the uploads it admits such an answer is never more generous than a new look would be (jobs
queued meanwhile by other paths — another API process, STOW-RS, a requeue — may take places too; the enqueue's
bound then refuses, after the intake). A look answers only if no refusal was seen since it started. Intakes
(reading, de-identifying and storing an upload) run at most ``concurrency`` at a time: more threads would only
contend for the interpreter lock with the event loop that answers the refusals; and when ``waiting`` more
already wait for a slot, the API itself is the bottleneck and a new request is answered 429 at once rather
than left waiting. Large uploads (``large=True``) have a lane of their own (``large_concurrency``): a zip of a
CT series taken in for seconds does not hold up the radiographs behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

from medcycle.errors import QueueFull

T = TypeVar("T")

log = logging.getLogger(__name__)


class Slot:
    """A place in the queue held by an admitted request while its intake runs; released on exit (once)."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission._pending -= 1
            self._admission = None

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class Admission:
    """``check()`` returns the places left in the queue (``None``: unbounded) or raises :class:`QueueFull`."""

    def __init__(self, check: Callable[[], int | None], *, concurrency: int, large_concurrency: int | None = None,
                 waiting: int | None = None, hold_s: float = 0.05, stale_s: float = 1.0, room_s: float = 0.25) -> None:
        self._check = check
        self.waiting = waiting if waiting is not None else 2 * max(1, concurrency)
        self.hold_s = hold_s
        self.stale_s = max(stale_s, hold_s)
        self.room_s = room_s
        self._full: QueueFull | None = None
        self._seen = 0.0  # monotonic time of the look (or refusal) that found the queue full
        self._room: _Room | None = None  # the last look that found room, while nothing since found the queue full
        self._inflight: asyncio.Future[QueueFull | int | None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._pending = 0  # admitted requests whose intake has not ended: each holds a place
        self._reserved = 0  # places reserved since start (a counter: what a room answer has given out since)
        self.limiter = CapacityLimiter(max(1, concurrency))
        self.large_limiter = self.limiter if large_concurrency is None else CapacityLimiter(max(1, large_concurrency))

    @property
    def pending(self) -> int:
        """Admitted requests still being taken in (each holds one of the places the last look found)."""
        return self._pending

    def remember(self, refusal: QueueFull) -> None:
        """A refusal seen elsewhere (the enqueue's own bound): reused like one of :meth:`admit`'s."""
        self._full, self._seen, self._room = refusal, time.monotonic(), None

    def refuse_if_known_full(self) -> None:
        """Raise :class:`QueueFull` if a look in the last ``stale_s`` found the queue full (no look of its own;
        past ``hold_s`` a look starts in the background, for the requests after this one)."""
        full = self._full
        if full is None:
            return
        age = time.monotonic() - self._seen
        if age >= self.stale_s:
            return
        if age >= self.hold_s:
            self._refresh()
        raise _again(full)

    async def admit(self) -> None:
        """Return when the queue has room; raise :class:`QueueFull` when it has not."""
        self.refuse_if_known_full()
        if self._known_room():
            return
        outcome = await self._shared_look()
        if isinstance(outcome, QueueFull):
            raise _again(outcome)
        if outcome is not None and self._pending >= outcome:
            raise QueueFull(f"the queue is full: {self._pending} uploads are being taken in for its last "
                            f"{outcome} place{'s' if outcome != 1 else ''}", retry_after=1)

    async def reserve(self) -> Slot:
        """:meth:`admit`, then hold a place until the returned slot is released (use it as ``with slot:``)."""
        await self.admit()
        self._pending += 1
        self._reserved += 1
        return Slot(self)

    def _known_room(self) -> bool:
        """Whether the last look that found room is younger than ``room_s`` and its places are not all taken:
        by the uploads in intake when it started and by every place reserved since it started."""
        room = self._room
        if room is None or time.monotonic() - room.started >= self.room_s:
            return False
        return room.places is None or room.pending + self._reserved - room.reserved < room.places

    async def _shared_look(self) -> QueueFull | int | None:
        """One look at the queue in a worker thread, shared by every request that arrives while it runs."""
        loop = asyncio.get_running_loop()
        if self._inflight is not None and self._inflight.get_loop() is loop:
            return await asyncio.shield(self._inflight)
        # (a look of another event loop — an app served again by a new loop, as in tests — is not waited for)
        self._inflight = loop.create_future()
        look = self._inflight
        room = _Room(time.monotonic(), None, self._pending, self._reserved)
        try:
            outcome = await anyio.to_thread.run_sync(self._look)
        except BaseException as exc:
            self._inflight = None
            self._room = None
            look.set_exception(exc)
            look.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        self._inflight = None
        if not isinstance(outcome, QueueFull) and (self._full is None or self._seen < room.started):
            # room, and no refusal seen since the look started (one seen since is newer than this answer)
            room.places = outcome
            self._full, self._room = None, room
        look.set_result(outcome)
        return outcome

    def _refresh(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop: the answer simply ages until a request looks itself
            return
        self._background = {t for t in self._background if t.get_loop() is loop and not t.done()}
        if self._background or (self._inflight is not None and self._inflight.get_loop() is loop):
            return
        task = loop.create_task(self._look_in_background())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _look_in_background(self) -> None:
        try:
            await self._shared_look()
        except Exception as exc:  # noqa: BLE001 - the next request looks itself and answers the error
            log.warning("admission: a background look at the queue failed: %s", exc)
            self._full = None

    def _look(self) -> QueueFull | int | None:
        try:
            places = self._check()
        except QueueFull as exc:
            self.remember(exc)
            return exc
        return places

    async def run(self, func: Callable[..., T], *args: Any, large: bool = False, **kwargs: Any) -> T:
        """``func`` in a worker thread, at most ``concurrency`` at a time (``large_concurrency`` for a large
        upload, in a lane of its own); a refusal it raises is remembered.

        Raises:
            QueueFull: ``waiting`` requests already wait for a slot of the lane (the API itself is the bottleneck:
                a request would wait in it instead of being told to come back).
        """
        limiter = self.large_limiter if large else self.limiter
        stats = limiter.statistics()
        if stats.borrowed_tokens >= limiter.total_tokens and stats.tasks_waiting >= self.waiting:
            raise QueueFull(f"the intake is busy ({stats.borrowed_tokens} {'large ' if large else ''}uploads in "
                            f"progress, {stats.tasks_waiting} waiting)", retry_after=1, queue="intake")
        try:
            return await anyio.to_thread.run_sync(lambda: func(*args, **kwargs), limiter=limiter)
        except QueueFull as exc:
            self.remember(exc)
            raise


@dataclass
class _Room:
    """A look that found room: when it started, the places it found (None: unbounded), and the uploads in intake
    and the places reserved so far (:attr:`Admission._reserved`) when it started."""

    started: float
    places: int | None
    pending: int
    reserved: int


def _again(refusal: QueueFull) -> QueueFull:
    """A new exception with the same answer (re-raising one object would grow its traceback each time)."""
    details = {k: v for k, v in refusal.details.items() if k != "retry_after"}
    return QueueFull(refusal.message, retry_after=refusal.retry_after, hint=refusal.hint, **details)
