"""The API server process: what ``medcycle serve`` sets up before uvicorn takes requests.

Two interpreter settings decide how fast a loaded API answers, beside its own code:

* **The cyclic garbage collector.** The API process holds about a quarter of a million long-lived objects
  (modules, the app, SQLAlchemy's and pydantic's tables). Requests allocate, and every so often a full
  collection walks all of them: 100–270 ms, measured, with the interpreter lock held — every request in
  flight, a refusal answered on the event loop included, waits it out. :func:`prepare` first does what the
  first requests would do lazily (the database opened, the intake's de-identification tables and modules
  loaded), then collects once and freezes what is alive (:func:`gc.freeze`): later collections walk only what
  requests made. Objects frozen are still freed by reference counting; only a reference cycle among them
  outlives its last use — they are the process's own long-lived state. Setting ``api_freeze_heap``.
* **The switch interval.** An intake (reading, de-identifying and storing an upload) runs in a thread; the event
  loop answering other requests must take the interpreter lock from it, and waits up to the switch interval
  each time — several times a request. ``api_switch_interval_ms`` (default 0.5; Python's is 5) hands the lock
  over sooner: in short overload runs beside two workers, refusals took 7.7 / 20.8 ms (p50 / p99) with 5 ms and
  5.6 / 11.5 ms with 0.5 ms.

Neither is done by :func:`medcycle.api.app.create_app`: an app made in a test process must not freeze that
process's objects.

The server parses HTTP with uvicorn's httptools protocol, which puts no bound on a request's head: one
connection sending a header of many megabytes held them all in memory until it closed. :func:`http_protocol`
is that protocol with a bound (``api_max_header_kib``): a request whose request line and headers run over it
is answered 431 and its connection closed.
"""

from __future__ import annotations

import functools
import gc
import importlib
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, cast

from medcycle.errors import MedcycleError

if TYPE_CHECKING:
    from medcycle.platform import Platform

log = logging.getLogger(__name__)


def warm(platform: Platform) -> None:
    """Load what the first requests would load lazily: the database connection and its dialect, the job queue,
    the intake's modules and the de-identification profile's tables. An unreachable database is logged, not
    raised (``/readyz`` reports it)."""
    from medcycle.catalog.deid_tables import basic_profile

    for module in ("medcycle.serving.intake", "medcycle.catalog.deid_fast"):  # the intake, its de-identification
        importlib.import_module(module)
    basic_profile()
    try:
        platform.jobs.ping()
        with platform.session(write=False):
            pass
    except MedcycleError as exc:
        log.warning("API warm-up: %s", exc.message)


def prepare(platform: Platform) -> dict[str, float]:
    """Set the switch interval and, with ``api_freeze_heap``, warm up and freeze the heap (see the module
    docstring); returns what it did: the interval (ms), objects frozen and the seconds taken."""
    settings = platform.settings
    sys.setswitchinterval(settings.api_switch_interval_ms / 1000)
    done: dict[str, float] = {"switch_interval_ms": settings.api_switch_interval_ms, "frozen": 0.0, "seconds": 0.0}
    if settings.api_freeze_heap:
        started = time.perf_counter()
        warm(platform)
        gc.collect()
        gc.freeze()
        done.update(frozen=float(gc.get_freeze_count()), seconds=time.perf_counter() - started)
        log.info("API heap frozen: %d objects out of the collector's scans (%.2f s)", gc.get_freeze_count(),
                 done["seconds"])
    return done


class _HeadTooLarge(Exception):
    """Raised from the parser's callback when a complete head runs over the bound (see :func:`http_protocol`)."""


class _GuardedParser:
    """httptools' parser, whose ``feed_data`` answers an over-long head with 431 instead of letting uvicorn answer
    the callback's error as an invalid request (400, logged as a warning)."""

    def __init__(self, parser: Any, refuse: Any) -> None:
        self._parser, self._refuse = parser, refuse

    def feed_data(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except Exception as exc:
            if not isinstance(exc.__context__, _HeadTooLarge):
                raise
            self._refuse()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


@functools.cache
def http_protocol(max_head_bytes: int) -> type[Any]:
    """uvicorn's httptools protocol with a bound on each request's head (request line and headers) of
    ``max_head_bytes``: a head that runs over it is answered 431 and the connection closed.

    httptools keeps a header's bytes until the header is complete and offers no bound of its own. A complete head
    is measured when its headers are complete (the request line's target and each header's name and value, as
    received). One still incomplete is bounded by what was read: a chunk read while a request's head is
    incomplete, and still incomplete after it, is all head (the chunk in which the request began is left out,
    since it may end an earlier, pipelined request's body), so a connection holds at most the bound and two
    chunks (asyncio reads 256 KiB at most) before it is refused.
    """
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.parser = cast(Any, _GuardedParser(self.parser, self._refuse_head))
            self._head_bytes = 0
            self._in_head = True  # until a request's headers are complete
            self._requests = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._requests += 1
            self._head_bytes = 0
            self._in_head = True

        def on_headers_complete(self) -> None:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > max_head_bytes:
                raise _HeadTooLarge
            self._in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            in_head, requests = self._in_head, self._requests
            super().data_received(data)
            if not self._in_head or self.transport.is_closing():
                return
            if in_head and requests == self._requests:  # all of this chunk was the same request's head
                self._head_bytes += len(data)
            if self._head_bytes > max_head_bytes:
                self._refuse_head()

        def _refuse_head(self) -> None:
            if self.transport.is_closing():
                return
            msg = (f"Request line and headers over {max_head_bytes // 1024} KiB (setting api_max_header_kib): "
                   "send fewer or smaller headers.").encode("ascii")
            content = [STATUS_LINE[431]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend([b"content-type: text/plain; charset=utf-8\r\n",
                            b"content-length: " + str(len(msg)).encode("ascii") + b"\r\n",
                            b"connection: close\r\n", b"\r\n", msg])
            self.transport.write(b"".join(content))
            self.transport.close()
            log.info("request refused: its head ran over %d bytes", max_head_bytes)

    return BoundedHttpToolsProtocol
