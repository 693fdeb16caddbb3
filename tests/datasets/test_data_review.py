"""Datasets review: pulls into places they must not go."""

from __future__ import annotations

from pathlib import Path

import pytest

from medcycle.datasets import transfer
from medcycle.errors import UsageError
from medcycle.objects.local import LocalObjectStore
from medcycle.platform import Platform


def test_pull_into_the_object_store_or_the_cache_is_refused(platform: Platform, frozen: str) -> None:
    """`dataset pull REF --to $MEDCYCLE_HOME/objects` succeeded: manifest.json, DATASET_CARD.md and the
    <split>/<patient>/... tree were written among the store's content-addressed objects."""
    assert isinstance(platform.objects, LocalObjectStore)
    for dest in (platform.objects.root, platform.objects.root / "sha256" / "x",
                 Path(platform.settings.resolved_cache_dir) / "pulled"):
        with pytest.raises(UsageError, match="inside this machine's object store or cache") as err:
            transfer.pull(platform, frozen, dest)
        assert err.value.hint and "outside" in err.value.hint
    assert not (platform.objects.root / "manifest.json").exists()
    assert not (platform.objects.root / "sha256" / "x").exists()
