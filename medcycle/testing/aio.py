"""Running a coroutine from a synchronous test, whatever the calling thread's event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_coroutine(make: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
    """``asyncio.run(make())`` in a thread of its own, its result returned and its exception raised here.

    In the full suite the browser tests' Playwright (a session fixture of its synchronous API) keeps an event loop
    running in the main thread, where ``asyncio.run`` refuses to start; the coroutine is made in the new thread too,
    so none is left un-awaited if it cannot run.
    """
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=go, name="medcycle-test-coroutine", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"the coroutine did not finish within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
