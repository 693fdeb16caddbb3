"""What changed between two versions: items added and removed, labels changed, split moves."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class ItemState(NamedTuple):
    digest: str
    split: str | None
    labels: tuple[str, ...]


@dataclass
class VersionDiff:
    a: str  # version ids
    b: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    relabeled: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)
    moved: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    label_set: tuple[str | None, str | None] = (None, None)
    split_policy: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    added_bytes: int = 0

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.relabeled or self.moved)

    def summary(self) -> dict[str, Any]:
        moves = Counter(f"{old or '-'} -> {new or '-'}" for _, old, new in self.moved)
        return {
            "added": len(self.added), "removed": len(self.removed), "relabeled": len(self.relabeled),
            "moved": len(self.moved), "moves": dict(sorted(moves.items())), "added_bytes": self.added_bytes,
            "label_set_changed": self.label_set[0] != self.label_set[1],
            "split_policy_changed": self.split_policy[0] != self.split_policy[1],
        }

    def to_dict(self, limit: int = 1000) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "summary": self.summary(),
            "label_set": {"a": self.label_set[0], "b": self.label_set[1]},
            "split_policy": {"a": self.split_policy[0], "b": self.split_policy[1]},
            "added": self.added[:limit], "removed": self.removed[:limit],
            "relabeled": [{"uid": u, "from": list(o), "to": list(n)} for u, o, n in self.relabeled[:limit]],
            "moved": [{"uid": u, "from": o, "to": n} for u, o, n in self.moved[:limit]],
            "truncated": max(len(self.added), len(self.removed), len(self.relabeled), len(self.moved)) > limit,
        }


def diff_items(
    a: Mapping[str, ItemState], b: Mapping[str, ItemState], *, a_id: str = "", b_id: str = "",
    sizes: Mapping[str, int] | None = None,
) -> VersionDiff:
    """Compare two ``{instance uid: state}`` maps (``sizes`` gives bytes per digest, for added bytes)."""
    out = VersionDiff(a_id, b_id)
    out.added = sorted(set(b) - set(a))
    out.removed = sorted(set(a) - set(b))
    a_digests = {s.digest for s in a.values()}
    new_digests = {b[u].digest for u in out.added} - a_digests
    out.added_bytes = sum((sizes or {}).get(d, 0) for d in new_digests)
    for uid in sorted(set(a) & set(b)):
        old, new = a[uid], b[uid]
        if old.labels != new.labels:
            out.relabeled.append((uid, old.labels, new.labels))
        if old.split != new.split:
            out.moved.append((uid, old.split, new.split))
    return out
