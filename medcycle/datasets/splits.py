"""Patient-level, stratified, seeded splits, and the leakage check.

The unit of assignment is the patient, never the image: every image of a patient lands in the same split.
Patients that share an image (the same object digest under two pseudonyms, e.g. a study sent twice) are
joined into one group first, so neither patients nor images can leak between splits by construction.

Groups are stratified by label and/or source and assigned in a seeded shuffle to the split whose share is
furthest below target, both within the stratum and overall (small strata therefore still spread out).
A new version made with the same policy keeps every earlier patient in its earlier split and only assigns
new patients, so adding data never moves a validation patient into training.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from medcycle.errors import UsageError

SPLIT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")
UNLABELED = "(unlabeled)"
UNSPLIT = "unsplit"  # the folder name pull uses for items of a version without a split


class SplitKind(StrEnum):
    NONE = "none"
    RATIOS = "ratios"
    FOLDS = "folds"


class Stratify(StrEnum):
    LABEL = "label"
    SOURCE = "source"


class SplitItem(Protocol):
    @property
    def patient(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def labels(self) -> tuple[str, ...]: ...


class SplitAssigned(Protocol):
    @property
    def patient(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def split(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class SplitPolicy:
    """How a version's items are split. Stored in the manifest (and so part of the version id)."""

    kind: SplitKind = SplitKind.NONE
    splits: tuple[tuple[str, float], ...] = ()
    stratify: tuple[Stratify, ...] = ()
    seed: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.splits)

    def to_dict(self) -> dict[str, Any]:
        if self.kind is SplitKind.NONE:
            return {"kind": SplitKind.NONE.value}
        return {
            "kind": self.kind.value,
            "unit": "patient",
            "splits": [[name, fraction] for name, fraction in self.splits],
            "stratify": [s.value for s in self.stratify],
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SplitPolicy:
        if not data or data.get("kind", "none") == SplitKind.NONE.value:
            return cls()
        return cls(
            kind=SplitKind(data["kind"]),
            splits=tuple((str(n), float(f)) for n, f in data["splits"]),
            stratify=tuple(Stratify(s) for s in data.get("stratify", ())),
            seed=int(data.get("seed", 0)),
        )

    def describe(self) -> str:
        if self.kind is SplitKind.NONE:
            return "no split"
        parts = ", ".join(f"{n} {f:.0%}" for n, f in self.splits) if self.kind is SplitKind.RATIOS else (
            f"{len(self.splits)} folds")
        strat = f", stratified by {' and '.join(s.value for s in self.stratify)}" if self.stratify else ""
        return f"patient-level: {parts}{strat}, seed {self.seed}"


def parse_stratify(value: str | Sequence[str] | None) -> tuple[Stratify, ...]:
    if not value:
        return ()
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    out: list[Stratify] = []
    for name in names:
        try:
            s = Stratify(name)
        except ValueError:
            raise UsageError(f"cannot stratify by {name!r}",
                             hint="Stratify by label, source or label,source.") from None
        if s not in out:
            out.append(s)
    return tuple(out)


def ratios_policy(spec: str | Mapping[str, float], *, stratify: Sequence[Stratify] = (), seed: int = 0) -> SplitPolicy:
    """A policy from ``"train=0.7,val=0.15,test=0.15"`` (fractions or percentages) or a mapping."""
    pairs: list[tuple[str, float]] = []
    if isinstance(spec, str):
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            name, sep, value = part.partition("=")
            try:
                pairs.append((name.strip(), float(value)))
            except ValueError:
                sep = ""
            if not sep:
                raise UsageError(f"bad split {part!r}", hint="Write splits as train=0.7,val=0.15,test=0.15.")
    else:
        pairs = [(str(k), float(v)) for k, v in spec.items()]
    names = [n for n, _ in pairs]
    if len(pairs) < 2 or len(set(names)) != len(names):
        raise UsageError("a split needs at least two distinct names", hint="Example: train=0.8,test=0.2.")
    for name, fraction in pairs:
        if not SPLIT_NAME_RE.match(name):
            raise UsageError(f"{name!r} is not a split name", hint="Use lowercase letters, digits, - and _.")
        if not fraction > 0:
            raise UsageError(f"split {name!r} has fraction {fraction}", hint="Every fraction must be above 0.")
    total = sum(f for _, f in pairs)
    if abs(total - 100) < 1e-6:
        pairs = [(n, f / 100) for n, f in pairs]
    elif abs(total - 1) > 1e-6:
        raise UsageError(f"split fractions add up to {total:g}", hint="Make them add up to 1 (or to 100 percent).")
    return SplitPolicy(SplitKind.RATIOS, tuple(pairs), tuple(stratify), seed)


def folds_policy(k: int, *, stratify: Sequence[Stratify] = (), seed: int = 0) -> SplitPolicy:
    if not 2 <= k <= 100:
        raise UsageError(f"{k} folds is not possible", hint="Use between 2 and 100 folds.")
    return SplitPolicy(SplitKind.FOLDS, tuple((f"fold-{i}", 1 / k) for i in range(k)), tuple(stratify), seed)


class _Groups:
    """Union-find over patients, joined when they share an image digest."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def assign_splits(
    items: Iterable[SplitItem], policy: SplitPolicy, previous: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Assign every patient of ``items`` to a split of ``policy``; returns ``{patient: split}``.

    Args:
        items: the version's items (patient, digest, source and labels are read).
        policy: ratios or folds; a policy of kind ``none`` assigns nothing.
        previous: earlier ``{patient: split}`` made with the same policy; those patients keep their split.
    """
    if policy.kind is SplitKind.NONE:
        return {}
    groups = _Groups()
    first_patient_of: dict[str, str] = {}
    labels_of: dict[str, set[str]] = defaultdict(set)
    sources_of: dict[str, set[str]] = defaultdict(set)
    for item in items:
        groups.find(item.patient)
        other = first_patient_of.setdefault(item.digest, item.patient)
        if other != item.patient:
            groups.union(other, item.patient)
        labels_of[item.patient].update(item.labels or (UNLABELED,))
        sources_of[item.patient].add(item.source)
    members: dict[str, list[str]] = defaultdict(list)
    for patient in sorted(groups.parent):
        members[groups.find(patient)].append(patient)

    names = policy.names
    fraction = dict(policy.splits)
    previous = {p: s for p, s in (previous or {}).items() if s in fraction}

    def stratum(group: list[str]) -> str:
        parts: list[str] = []
        for s in policy.stratify:
            values: set[str] = set()
            for p in group:
                values |= labels_of[p] if s is Stratify.LABEL else sources_of[p]
            parts.append("|".join(sorted(values)))
        return " / ".join(parts)

    strata: dict[str, list[str]] = defaultdict(list)
    for root in sorted(members):
        strata[stratum(members[root])].append(root)

    total: Counter[str] = Counter()
    per_stratum: dict[str, Counter[str]] = defaultdict(Counter)
    out: dict[str, str] = {}
    fresh: dict[str, list[str]] = defaultdict(list)
    for key, roots in strata.items():
        for root in roots:
            kept = Counter(previous[p] for p in members[root] if p in previous)
            if kept:
                split = max(names, key=lambda n: (kept[n], -names.index(n)))
                _place(root, split, members, per_stratum[key], total, out)
            else:
                fresh[key].append(root)

    for key in sorted(fresh):
        roots = fresh[key]
        random.Random(f"{policy.seed}/{key}").shuffle(roots)  # str seeds are hashed with SHA-512: stable
        local = per_stratum[key]
        for root in roots:
            split = _most_behind(names, fraction, local, total, len(members[root]))
            _place(root, split, members, local, total, out)
    return out


def _most_behind(
    names: Sequence[str], fraction: Mapping[str, float], local: Counter[str], total: Counter[str], weight: int
) -> str:
    """The split furthest below its share, in the stratum plus overall, once ``weight`` patients are added."""
    n_local, n_total = sum(local.values()) + weight, sum(total.values()) + weight

    def score(name: str) -> tuple[float, int]:
        deficit = fraction[name] * n_local - local[name] + fraction[name] * n_total - total[name]
        return deficit, -names.index(name)

    return max(names, key=score)


def _place(
    root: str, split: str, members: Mapping[str, list[str]], local: Counter[str], total: Counter[str],
    out: dict[str, str],
) -> None:
    for patient in members[root]:
        out[patient] = split
    local[split] += len(members[root])
    total[split] += len(members[root])


@dataclass
class LeakageReport:
    """Patients and images found in more than one split (both must be empty for a clean version)."""

    patients: dict[str, list[str]] = field(default_factory=dict)
    images: dict[str, list[str]] = field(default_factory=dict)
    duplicate_images: int = 0  # the same digest twice within one split (not a leak, but worth knowing)

    @property
    def ok(self) -> bool:
        return not self.patients and not self.images

    def to_dict(self, limit: int = 100) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "patients_in_several_splits": len(self.patients),
            "images_in_several_splits": len(self.images),
            "duplicate_images_within_a_split": self.duplicate_images,
            "patients": [{"patient": p, "splits": s} for p, s in sorted(self.patients.items())[:limit]],
            "images": [{"digest": d, "splits": s} for d, s in sorted(self.images.items())[:limit]],
        }


def check_leakage(items: Iterable[SplitAssigned]) -> LeakageReport:
    """Report every patient and every image digest that appears in two or more splits."""
    by_patient: dict[str, set[str]] = defaultdict(set)
    by_digest: dict[str, set[str]] = defaultdict(set)
    seen: Counter[tuple[str, str]] = Counter()
    for item in items:
        if item.split is None:
            continue
        by_patient[item.patient].add(item.split)
        by_digest[item.digest].add(item.split)
        seen[(item.digest, item.split)] += 1
    return LeakageReport(
        patients={p: sorted(s) for p, s in by_patient.items() if len(s) > 1},
        images={d: sorted(s) for d, s in by_digest.items() if len(s) > 1},
        duplicate_images=sum(n - 1 for n in seen.values() if n > 1),
    )


def class_balance(items: Iterable[Any]) -> dict[str, dict[str, int]]:
    """``{split: {label: images}}``; unlabeled images count under ``(unlabeled)``."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for item in items:
        split = item.split or UNSPLIT
        for label in item.labels or (UNLABELED,):
            out[split][label] += 1
    return {s: dict(sorted(c.items())) for s, c in sorted(out.items())}
