"""Shared helpers for tests that watch the process registry (serving workers, agents): read one process's row and
wait, with a deadline, until it shows a status."""

from __future__ import annotations

import time
from collections.abc import Callable

from medcycle.jobs import processes
from medcycle.platform import Platform


def registered(platform: Platform, kind: str, name: str) -> processes.ProcessView | None:
    """The registry's row of the process ``name`` of ``kind`` (``None`` while it has not registered)."""
    with platform.session(write=False) as session:
        found = [v for v in processes.list_processes(session, kind) if v.id == name]
    return found[0] if found else None


def wait_until(check: Callable[[], object], what: str, timeout: float = 30.0, step: float = 0.05) -> None:
    """Poll ``check`` until it is true; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(step)


def wait_for_status(platform: Platform, kind: str, name: str, status: str, timeout: float = 30.0,
                    **details: object) -> processes.ProcessView:
    """Wait until ``name`` shows ``status`` in the registry (and each of ``details``); return the row that did."""
    seen: list[processes.ProcessView] = []

    def shown() -> bool:
        row = registered(platform, kind, name)
        if row is None or row.status != status or any(row.details.get(k) != v for k, v in details.items()):
            return False
        seen.append(row)
        return True

    wait_until(shown, f"{name} to show {status} in the process registry", timeout)
    return seen[-1]
