"""Versioned datasets: working sets, immutable versions (manifest digests), label sets, patient-level
splits, diffs, dataset cards, and pull/push/status of versions between the object store and a machine.

Operations take a SQLAlchemy session (and the object store where they write objects); ``pull``, ``push``
and ``status`` take the :class:`~medcycle.platform.Platform`. Import the operation modules directly::

    from medcycle.datasets import items, labels, versions, transfer
"""

from medcycle.datasets.manifest import Manifest, ManifestItem
from medcycle.datasets.splits import LeakageReport, SplitPolicy, check_leakage, folds_policy, ratios_policy

__all__ = [
    "LeakageReport",
    "Manifest",
    "ManifestItem",
    "SplitPolicy",
    "check_leakage",
    "folds_policy",
    "ratios_policy",
]
