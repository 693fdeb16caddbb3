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


def test_status_finds_a_copied_file_changed_in_place(platform: Platform, frozen: str, tmp_path: Path) -> None:
    """A pulled copy (not a hard link: another file system, or copied by the user) edited in place keeps its size;
    `dataset status --to` counted it as present (sizes only) and said the folder was complete."""
    import os
    import shutil

    transfer.pull(platform, frozen, tmp_path / "linked")
    shutil.copytree(tmp_path / "linked", tmp_path / "copy")  # copies, as a pull across file systems makes
    victim = next(p for p in sorted((tmp_path / "copy").rglob("*.dcm")))
    os.chmod(victim, 0o644)
    data = victim.read_bytes()
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    report = transfer.status(platform, frozen, to=tmp_path / "copy")
    assert report.folder is not None and report.folder["different"] == 1
    assert transfer.status(platform, frozen, to=tmp_path / "linked").folder == {
        "present": report.folder["present"] + 1, "missing": 0, "different": 0}
