"""A small frozen dataset version for tests that link runs to data."""

from __future__ import annotations

from medcycle.datasets import versions
from medcycle.datasets.items import create_dataset
from medcycle.platform import Platform
from medcycle.testing.catalog import make_catalog


def frozen_version(platform: Platform, name: str = "cxr") -> tuple[str, str]:
    """Freeze a dataset of a tiny synthetic catalog; returns ``("NAME@v1.0", version digest)``."""
    with platform.session() as s:
        make_catalog(s, sources=1, patients=2, studies_per_patient=1, series_per_study=1, instances_per_series=1,
                     objects=platform.objects, seed=3)
    with platform.session() as s:
        create_dataset(s, name, query="")
        result = versions.freeze(s, platform.objects, name, tag="v1.0")
    return f"{name}@v1.0", result.version.id
