"""Pull from a store whose objects are read-only files on the cache's file system: verified, then linked."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from medcycle.datasets import fetch, transfer, versions
from medcycle.errors import BackendUnavailable, IntegrityError
from medcycle.objects.local import LocalObjectStore
from medcycle.platform import Platform
from tests.datasets.conftest import use_remote


@pytest.fixture(autouse=True)
def link_small_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test catalog's objects are a few KiB: link them too (pull copies objects under 1 MiB)."""
    monkeypatch.setattr(fetch, "LINK_FROM", 0)


def store_of(platform: Platform) -> LocalObjectStore:
    store = platform.objects
    while not isinstance(store, LocalObjectStore):  # behind the tests' remote wrapper
        store = store.inner  # type: ignore[attr-defined]
    return store


def digests(platform: Platform, ref: str) -> list[str]:
    with platform.session() as s:
        version_id = versions.resolve(s, ref).id
    return sorted({i.digest for i in versions.load_manifest(platform.objects, version_id).items})


def test_a_read_only_object_that_rotted_is_named_and_never_linked(
    platform: Platform, frozen: str, tmp_path: Path
) -> None:
    victim = digests(platform, frozen)[7]
    path = store_of(platform).path_for(victim)
    os.chmod(path, 0o644)
    path.write_bytes(b"bit rot" + path.read_bytes()[7:])
    os.chmod(path, 0o444)  # still read-only, so pull takes the linking path
    use_remote(platform)
    dest = tmp_path / "d"
    with pytest.raises(IntegrityError) as err:
        transfer.pull(platform, frozen, dest, workers=4)
    assert victim in err.value.message and err.value.details["digest"] == victim
    assert not transfer.open_cache(platform).exists(victim)
    assert list(dest.iterdir()) == []


def test_writable_objects_are_copied_not_linked(platform: Platform, frozen: str, tmp_path: Path) -> None:
    """A store object someone made writable could change under the cache: it is copied (and verified)."""
    victim = digests(platform, frozen)[2]
    store = store_of(platform)
    os.chmod(store.path_for(victim), 0o644)
    use_remote(platform)
    report = transfer.pull(platform, frozen, tmp_path / "d", workers=4)
    assert report.fetched_objects == report.objects and report.fetched_linked == report.objects - 1
    cached = transfer.open_cache(platform).path_for(victim).stat()
    assert cached.st_ino != store.path_for(victim).stat().st_ino and cached.st_nlink == 2  # cache + folder
    other = digests(platform, frozen)[3]
    assert transfer.open_cache(platform).path_for(other).stat().st_ino == store.path_for(other).stat().st_ino


def test_an_interrupted_linking_pull_resumes(platform: Platform, frozen: str, tmp_path: Path) -> None:
    wanted = set(digests(platform, frozen))
    use_remote(platform, fail_after=20)
    with pytest.raises(BackendUnavailable):
        transfer.pull(platform, frozen, tmp_path / "d", workers=4)
    cache = transfer.open_cache(platform)
    done = {d for d in wanted if cache.exists(d)}
    assert 0 < len(done) < len(wanted)
    remote = use_remote(platform)
    report = transfer.pull(platform, frozen, tmp_path / "d", workers=4)
    assert set(remote.opened) == wanted - done
    assert report.cached_objects == len(done) and report.fetched_linked == len(wanted) - len(done)


def test_a_cache_on_another_file_system_gets_copies(platform: Platform, frozen: str) -> None:
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no tmpfs at /dev/shm to put the cache on")
    root = Path(tempfile.mkdtemp(prefix="medcycle-test-cache-", dir="/dev/shm"))
    try:
        cache = fetch.PullCache(root, fsync=False)
        if os.stat(cache.data_dir).st_dev == os.stat(store_of(platform).data_dir).st_dev:
            pytest.skip("/dev/shm is on the same file system as the test's store")
        remote = use_remote(platform)
        fetcher = fetch.Fetcher(remote, cache)
        digest = digests(platform, frozen)[0]
        size, linked = fetcher.fetch(digest)
        assert not linked and size == store_of(platform).stat(digest).size
        assert cache.path_for(digest).stat().st_nlink == 1
        assert cache.path_for(digest).read_bytes() == store_of(platform).path_for(digest).read_bytes()
    finally:
        shutil.rmtree(root, ignore_errors=True)
