"""The reproducibility verdict of a run: can it be re-executed exactly from what was recorded?

A run is *reproducible* when none of these reasons holds:

- ``no code capture``: capture was switched off or has not arrived yet;
- ``not a git repository``: the code is not under version control;
- ``unpushed commit``: HEAD is on no remote branch, so another machine cannot check it out;
- ``dirty tree``: tracked files have uncommitted changes (the diff is recorded, see ``diff truncated``);
- ``diff truncated``: the uncommitted diff was larger than the capture limit and is incomplete;
- ``unseeded``: ``run.seed(...)`` was never called;
- ``data not versioned``: no dataset version was named, or the name did not resolve to a version digest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REPRODUCIBLE = "reproducible"
NOT_REPRODUCIBLE = "not reproducible"


def verdict_reasons(capture: Mapping[str, Any] | None, *, seeded: bool, dataset_digest: str | None) -> list[str]:
    """The reasons a run is not reproducible (empty when it is)."""
    reasons: list[str] = []
    git = capture.get("git") if capture else None
    if not capture:
        reasons.append("no code capture")
    elif not isinstance(git, Mapping) or not git.get("commit"):
        reasons.append("not a git repository")
    else:
        if not git.get("pushed"):
            reasons.append("unpushed commit")
        if git.get("dirty"):
            reasons.append("dirty tree")
            if git.get("diff_truncated"):
                reasons.append("diff truncated")
    if not seeded:
        reasons.append("unseeded")
    if not dataset_digest:
        reasons.append("data not versioned")
    return reasons


def verdict_of(reasons: list[str]) -> str:
    return NOT_REPRODUCIBLE if reasons else REPRODUCIBLE
