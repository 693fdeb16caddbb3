"""Balanced, deterministic assignment of items to readers.

Each item gets ``n`` different readers. Items are taken in order; for each, the ``n`` readers with the
fewest items so far are chosen, ties broken first by how few items a candidate already shares with the
readers chosen for this item (so every pair of readers overlaps on some items — what a reader × reader
agreement matrix needs), then by a seeded random order. Choosing the least-loaded readers keeps every
reader within one item of every other at all times: loads are always two neighbouring numbers.

Each reader's queue is then put in its own seeded random order (reading order effects average out).
The same items, readers, ``n`` and seed always give the same assignment.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from medcycle.errors import UsageError


def balanced_assignment(
    items: Sequence[str], readers: Sequence[str], n: int, *, seed: int = 0
) -> dict[str, tuple[str, ...]]:
    """``item → readers`` (``n`` distinct readers each), balanced to within one item per reader.

    Raises:
        UsageError: ``n`` < 1, fewer readers than ``n``, or a reader or item listed twice.
    """
    if n < 1:
        raise UsageError(f"readers per item must be at least 1, got {n}", hint="Pass --readers-per-item 1 or more.")
    if len(set(readers)) != len(readers):
        raise UsageError("a reader is listed twice", hint="Name each reader once.")
    if len(set(items)) != len(items):
        raise UsageError("an item is listed twice", hint="Give each item once.")
    if len(readers) < n:
        raise UsageError(f"{n} readers per item need at least {n} qualified readers, found {len(readers)}",
                         hint="Qualify more readers (`medcycle labels reader set NAME --qualified`) "
                         "or lower --readers-per-item.")
    rng = random.Random(seed)
    pool = sorted(readers)
    load = dict.fromkeys(pool, 0)
    shared: dict[tuple[str, str], int] = defaultdict(int)
    out: dict[str, tuple[str, ...]] = {}
    for item in items:
        tiebreak = {r: rng.random() for r in pool}
        chosen: list[str] = []
        for _ in range(n):
            best = min((r for r in pool if r not in chosen),
                       key=lambda r: (load[r], sum(shared[(min(r, c), max(r, c))] for c in chosen), tiebreak[r]))
            chosen.append(best)
        for r in chosen:
            load[r] += 1
        for i, a in enumerate(chosen):
            for b in chosen[i + 1:]:
                shared[(min(a, b), max(a, b))] += 1
        out[item] = tuple(chosen)
    return out


def queue_order(assignment: dict[str, tuple[str, ...]], *, seed: int = 0) -> dict[tuple[str, str], int]:
    """``(item, reader) → position`` in the reader's queue: each reader's items in a seeded random order."""
    per_reader: dict[str, list[str]] = defaultdict(list)
    for item, readers in assignment.items():
        for r in readers:
            per_reader[r].append(item)
    out: dict[tuple[str, str], int] = {}
    for reader in sorted(per_reader):
        items = sorted(per_reader[reader])
        random.Random(f"{seed}:{reader}").shuffle(items)
        out.update({(item, reader): i for i, item in enumerate(items)})
    return out
