"""The fast paths of pull: unnamed cache files, folders made meanwhile, batched progress, and their fallbacks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from medcycle.datasets import fetch, transfer, versions
from medcycle.datasets.layout import MANIFEST_JSON
from medcycle.errors import IntegrityError
from medcycle.objects.local import LocalObjectStore
from medcycle.platform import Platform
from tests.datasets.conftest import use_remote


def cache_files(platform: Platform) -> list[Path]:
    root = transfer.open_cache(platform).data_dir
    return sorted(p for p in root.rglob("*") if p.is_file())


def corrupt_one(platform: Platform, ref: str) -> str:
    with platform.session() as s:
        version_id = versions.resolve(s, ref).id
    victim = sorted({i.digest for i in versions.load_manifest(platform.objects, version_id).items})[5]
    store = platform.objects
    while not isinstance(store, LocalObjectStore):  # behind the tests' remote wrapper
        store = store.inner  # type: ignore[attr-defined]
    path = store.path_for(victim)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    return victim


@pytest.mark.parametrize("stream", [True, False])
def test_remote_pull_fills_the_cache_with_whole_read_only_objects(
    platform: Platform, frozen: str, tmp_path: Path, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a network store objects are copied into the cache; from a store that hands out read-only files on
    the cache's file system they are hashed and hard-linked (store, cache and folder share one inode)."""
    monkeypatch.setattr(fetch, "LINK_FROM", 0)  # the test objects are a few KiB
    remote = use_remote(platform, stream=stream)
    report = transfer.pull(platform, frozen, tmp_path / "d", workers=4)
    files = cache_files(platform)
    assert report.fetched_objects == report.objects == len(files) - 1  # and the version's manifest
    assert report.fetched_linked == (0 if stream else report.objects)
    assert not [p for p in files if p.name.endswith(".part") or p.name.startswith(".")]  # no temp names left
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        assert transfer.layout.hash_file(path) == path.name
    store = remote.inner
    assert isinstance(store, LocalObjectStore)
    for item in json.loads((tmp_path / "d" / MANIFEST_JSON).read_text())["items"]:
        pulled = (tmp_path / "d" / item["path"]).stat()
        assert stat.S_IMODE(pulled.st_mode) == 0o444
        if stream:
            assert pulled.st_nlink == 2  # the cache's object, hard-linked
        else:
            assert pulled.st_nlink == 3 and pulled.st_ino == store.path_for(item["digest"]).stat().st_ino


def test_without_unnamed_files_objects_are_fetched_through_named_temp_files(
    platform: Platform, frozen: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where O_TMPFILE is missing (other systems, some file systems) a pull still works, leaves no temp file
    and names a corrupt object without ever caching it."""
    monkeypatch.setattr(fetch, "unnamed_file", lambda _folder: None)
    use_remote(platform, stream=True)
    report = transfer.pull(platform, frozen, tmp_path / "d", workers=4)
    assert report.fetched_objects == report.objects == 96
    assert not [p for p in cache_files(platform) if p.name.endswith(".part")]
    victim = corrupt_one(platform, frozen)
    transfer.open_cache(platform).delete(victim)
    with pytest.raises(IntegrityError) as err:
        transfer.pull(platform, frozen, tmp_path / "e", workers=4)
    assert victim in err.value.message
    assert not transfer.open_cache(platform).exists(victim)
    assert not [p for p in cache_files(platform) if p.name.endswith(".part")]


@pytest.mark.parametrize("remote", ["no", "files", "stream"])
def test_a_failed_pull_into_an_empty_folder_leaves_it_empty(
    platform: Platform, frozen: str, tmp_path: Path, remote: str
) -> None:
    """The layout's folders are made while objects move; when an object turns out corrupt they go again."""
    victim = corrupt_one(platform, frozen)
    if remote != "no":
        use_remote(platform, stream=remote == "stream")
    dest = tmp_path / "empty"
    with pytest.raises(IntegrityError) as err:
        transfer.pull(platform, frozen, dest, workers=4)
    assert victim in err.value.message
    assert list(dest.iterdir()) == []


def test_progress_increments_add_up_to_the_announced_totals(platform: Platform, frozen: str, tmp_path: Path) -> None:
    use_remote(platform)
    events: list[transfer.TransferEvent] = []
    report = transfer.pull(platform, frozen, tmp_path / "d", workers=4, progress=events.append)
    for phase in ("fetch", "link"):
        start = [e for e in events if e.phase == phase and e.start]
        steps = [e for e in events if e.phase == phase and not e.start]
        assert len(start) == 1 and steps
        assert sum(e.objects for e in steps) == start[0].objects
        assert sum(e.bytes for e in steps) == start[0].bytes
    assert next(e for e in events if e.phase == "fetch" and e.start).bytes == report.fetched_bytes
    assert report.fetched_linked == 0  # objects under LINK_FROM (these are a few KiB) are copied
