"""Admission of inference requests: a full queue is answered 429 at once, and intakes run a few at a time.

Under overload most requests are refused, and a refusal must be fast (clients retry on ``Retry-After``).
Asking the queue for every request would put each refusal behind a thread hop and a database read that
compete with the intakes being accepted, so the answer of one look is shared: while a look is in flight
other requests wait for it instead of asking again, and a *full* answer is reused for ``hold_s`` (the
queue's own bound at enqueue stays exact either way); a request arriving while that answer holds is
refused before its token is checked (:meth:`Admission.refuse_if_known_full`, on the event loop). Intakes
(reading, de-identifying and storing an upload) run at most ``concurrency`` at a time: more threads would
only contend for the interpreter lock with the event loop that answers the refusals; and when ``waiting``
more already wait for a slot, the API itself is the bottleneck and a new request is answered 429 at once
rather than left waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

from medcycle.errors import QueueFull

T = TypeVar("T")


class Admission:
    def __init__(self, check: Callable[[], None], *, concurrency: int, waiting: int | None = None,
                 hold_s: float = 0.05) -> None:
        self._check = check
        self.waiting = waiting if waiting is not None else 2 * max(1, concurrency)
        self.hold_s = hold_s
        self._full: QueueFull | None = None
        self._until = 0.0
        self._inflight: asyncio.Future[QueueFull | None] | None = None
        self.limiter = CapacityLimiter(max(1, concurrency))

    def remember(self, refusal: QueueFull) -> None:
        """A refusal seen elsewhere (the enqueue's own bound): reused like one of :meth:`admit`'s."""
        self._full, self._until = refusal, time.monotonic() + self.hold_s

    def refuse_if_known_full(self) -> None:
        """Raise :class:`QueueFull` if a look in the last ``hold_s`` found the queue full (no look of its own)."""
        full = self._full
        if full is not None and time.monotonic() < self._until:
            raise _again(full)

    async def admit(self) -> None:
        """Return when the queue has room; raise :class:`QueueFull` when it has not."""
        self.refuse_if_known_full()
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_future()
            look = self._inflight
            try:
                outcome = await anyio.to_thread.run_sync(self._look)
            except BaseException as exc:
                self._inflight = None
                look.set_exception(exc)
                look.exception()  # retrieved: waiters re-raise it, nobody else needs to
                raise
            self._inflight = None
            look.set_result(outcome)
        else:
            outcome = await asyncio.shield(self._inflight)
        if outcome is not None:
            raise _again(outcome)

    def _look(self) -> QueueFull | None:
        try:
            self._check()
        except QueueFull as exc:
            self.remember(exc)
            return exc
        self._full = None
        return None

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func`` in a worker thread, at most ``concurrency`` at a time; a refusal it raises is remembered.

        Raises:
            QueueFull: ``waiting`` requests already wait for a slot (the API itself is the bottleneck: a
                request would wait in it instead of being told to come back).
        """
        stats = self.limiter.statistics()
        if stats.borrowed_tokens >= self.limiter.total_tokens and stats.tasks_waiting >= self.waiting:
            raise QueueFull(f"the intake is busy ({stats.borrowed_tokens} uploads in progress, "
                            f"{stats.tasks_waiting} waiting)", retry_after=1, queue="intake")
        try:
            return await anyio.to_thread.run_sync(lambda: func(*args, **kwargs), limiter=self.limiter)
        except QueueFull as exc:
            self.remember(exc)
            raise


def _again(refusal: QueueFull) -> QueueFull:
    """A new exception with the same answer (re-raising one object would grow its traceback each time)."""
    details = {k: v for k, v in refusal.details.items() if k != "retry_after"}
    return QueueFull(refusal.message, retry_after=refusal.retry_after, hint=refusal.hint, **details)
