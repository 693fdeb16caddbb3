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
"""

from __future__ import annotations

import gc
import importlib
import logging
import sys
import time
from typing import TYPE_CHECKING

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
