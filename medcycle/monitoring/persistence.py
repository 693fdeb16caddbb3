"""The paging rule: a signal pages when it drifted in at least ``k`` of its last ``n`` tested windows.

A single drifting window is recorded (dashboards and reports show it) but pages nobody: under no shift
each signal flags a fraction α of windows by construction, and a person paged for each of those would soon
stop reading pages. A real shift keeps flagging, so it satisfies the rule within ``k`` windows of starting.
:meth:`Persistence.update` returns the signals whose rule has just become true (a new episode); an episode
ends once the rule no longer holds, and a later one pages again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping


class Persistence:
    def __init__(self, k: int, n: int, history: Mapping[str, Iterable[bool]] | None = None) -> None:
        self.k, self.n = k, n
        self.flags: dict[str, deque[bool]] = {}
        self.firing: set[str] = set()
        for name, flags in (history or {}).items():
            for flag in flags:
                self._push(name, flag)
            if self._holds(name):
                self.firing.add(name)

    def _push(self, name: str, flag: bool) -> None:
        self.flags.setdefault(name, deque(maxlen=self.n)).append(bool(flag))

    def _holds(self, name: str) -> bool:
        return sum(self.flags.get(name, ())) >= self.k

    def update(self, drifted: Mapping[str, bool]) -> list[str]:
        """Record one window's decisions; the signals that start paging with it."""
        started = []
        for name, flag in drifted.items():
            self._push(name, flag)
            holds = self._holds(name)
            if holds and name not in self.firing:
                started.append(name)
                self.firing.add(name)
            elif not holds:
                self.firing.discard(name)
        return sorted(started)

    def quiet(self, name: str) -> bool:
        """No drift at all in the last ``n`` windows of ``name`` (what resolves its alert)."""
        flags = self.flags.get(name)
        return flags is not None and len(flags) == self.n and not any(flags)
