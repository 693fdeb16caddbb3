"""The local store's deferred durability: what ``sync`` flushes, and what a crash before it leaves visible."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from medcycle.objects import local
from medcycle.objects.local import LocalObjectStore


class Flushes:
    """Records the inode of every file or folder fsynced and the device of every ``syncfs``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, syncfs: bool, fail: bool = False) -> None:
        self.fsynced: list[tuple[int, int]] = []
        self.syncfs: list[int] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            st = os.fstat(fd)
            self.fsynced.append((st.st_dev, st.st_ino))
            real_fsync(fd)

        def fake_syncfs(fd: int) -> int:
            self.syncfs.append(os.fstat(fd).st_dev)
            if fail:
                ctypes.set_errno(errno.EIO)
                return -1
            os.sync()  # what syncfs does for this file system, and more
            return 0

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(local, "_SYNCFS", fake_syncfs if syncfs else None)


def blobs(n: int, size: int = 3000) -> list[bytes]:
    return [os.urandom(size) for _ in range(n)]


def inode(path: Path | str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


needs_unnamed = pytest.mark.skipif(not local._UNNAMED, reason="deferred puts need O_TMPFILE (Linux)")


@needs_unnamed
def test_sync_flushes_a_batch_with_one_syncfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushes = Flushes(monkeypatch, syncfs=True)
    store = LocalObjectStore(tmp_path / "objects", defer_sync=True)
    infos = [store.put(b) for b in blobs(local.SYNCFS_FROM + 3)]
    assert flushes.fsynced == [] and flushes.syncfs == []  # nothing waited for while putting
    store.sync()
    assert flushes.syncfs == [os.stat(store.root).st_dev]  # one flush of the store's file system
    assert flushes.fsynced == []
    store.sync()  # nothing pending
    assert len(flushes.syncfs) == 1
    for info in infos:
        assert store.verify(info.digest)


@needs_unnamed
def test_without_syncfs_every_file_and_new_folder_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushes = Flushes(monkeypatch, syncfs=False)
    store = LocalObjectStore(tmp_path / "objects", defer_sync=True)
    infos = [store.put(b) for b in blobs(20)]
    assert flushes.fsynced == []
    store.sync()
    fsynced = set(flushes.fsynced)
    assert len(flushes.fsynced) == len(fsynced), "a file or folder was fsynced twice in one batch"
    for info in infos:
        path = store.path_for(info.digest)
        assert inode(path) in fsynced  # the bytes
        assert inode(path.parent) in fsynced  # its name
        assert inode(path.parent.parent) in fsynced  # the new shard folder's name (all shards here are new)
    assert inode(store.data_dir) in fsynced


@needs_unnamed
def test_a_few_pending_files_are_fsynced_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushes = Flushes(monkeypatch, syncfs=True)
    store = LocalObjectStore(tmp_path / "objects", defer_sync=True)
    info = store.put(b"one small object")
    store.sync()
    assert flushes.syncfs == []
    assert inode(store.path_for(info.digest)) in flushes.fsynced


@needs_unnamed
def test_a_long_batch_is_synced_before_descriptors_run_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushes = Flushes(monkeypatch, syncfs=True)
    monkeypatch.setattr(local, "MAX_PENDING", local.SYNCFS_FROM + 1)
    store = LocalObjectStore(tmp_path / "objects", defer_sync=True)
    before = len(os.listdir("/proc/self/fd"))
    infos = [store.put(b) for b in blobs(3 * local.MAX_PENDING + 1)]
    assert len(flushes.syncfs) == 3  # each time the bound was reached
    assert len(os.listdir("/proc/self/fd")) - before <= local.MAX_PENDING
    assert flushes.fsynced == []
    store.close()  # syncs the rest: one file, fsynced
    assert len(flushes.syncfs) == 3
    assert inode(store.path_for(infos[-1].digest)) in flushes.fsynced
    assert len(os.listdir("/proc/self/fd")) == before


@needs_unnamed
def test_a_failed_flush_is_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Flushes(monkeypatch, syncfs=True, fail=True)
    store = LocalObjectStore(tmp_path / "objects", defer_sync=True)
    for b in blobs(local.SYNCFS_FROM):
        store.put(b)
    with pytest.raises(OSError, match="syncfs") as err:
        store.sync()
    assert err.value.errno == errno.EIO


@needs_unnamed
def test_a_file_system_sync_covers_puts_that_keep_nothing_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk writers' mode: stores put with fsync off (nothing pending, nothing waited for) and one
    FileSystemSync, opened before the puts, flushes their file system."""
    flushes = Flushes(monkeypatch, syncfs=True)
    store = LocalObjectStore(tmp_path / "objects", defer_sync=True, fsync=False)
    fs_sync = store.file_system_sync()
    assert fs_sync is not None
    before = len(os.listdir("/proc/self/fd"))
    infos = [store.put(b) for b in blobs(10)]
    assert len(os.listdir("/proc/self/fd")) == before  # no descriptor kept for a later sync
    store.sync()
    assert flushes.syncfs == [] and flushes.fsynced == []  # the store itself waits for nothing
    with fs_sync:
        fs_sync()
    assert flushes.syncfs == [os.stat(store.root).st_dev]
    assert len(os.listdir("/proc/self/fd")) == before - 1  # its own descriptor, closed
    with pytest.raises(ValueError, match="closed"):
        fs_sync()
    for info in infos:
        assert store.verify(info.digest)


@needs_unnamed
def test_a_file_system_sync_raises_a_failed_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Flushes(monkeypatch, syncfs=True, fail=True)
    store = LocalObjectStore(tmp_path / "objects", defer_sync=True, fsync=False)
    fs_sync = store.file_system_sync()
    assert fs_sync is not None
    store.put(b"an object")
    with fs_sync, pytest.raises(OSError, match="syncfs") as err:
        fs_sync()
    assert err.value.errno == errno.EIO


def test_no_file_system_sync_without_syncfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Flushes(monkeypatch, syncfs=False)
    assert LocalObjectStore(tmp_path / "objects").file_system_sync() is None


def test_syncfs_reports_the_file_system_flushed(tmp_path: Path) -> None:
    """The real syncfs(2), where this system has it (Linux 5.8+): it returns, and the file is intact."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    fd = os.open(path, os.O_RDONLY)
    try:
        done = local.syncfs(fd)
    finally:
        os.close(fd)
    assert done == (local._SYNCFS is not None)
    if sys.platform.startswith("linux"):
        assert done == (tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (5, 8))


@pytest.mark.parametrize("defer", [False, True])
def test_putting_stored_bytes_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, defer: bool) -> None:
    store = LocalObjectStore(tmp_path / "objects", defer_sync=defer)
    data = os.urandom(40_000)
    info = store.put(data)
    store.sync()
    path = store.path_for(info.digest)
    before = os.stat(path)

    def no_write(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an existing object was written again")

    monkeypatch.setattr(local, "unnamed_file", no_write)
    monkeypatch.setattr(tempfile, "mkstemp", no_write)
    monkeypatch.setattr(local, "link_unnamed", no_write)
    for source in (data, bytearray(data), memoryview(data)):
        assert store.put(source) == info
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_removed_shard_folder_is_made_again(tmp_path: Path) -> None:
    """Shard folders are remembered once made; one removed since (an emptied store) is made again."""
    store = LocalObjectStore(tmp_path / "objects", defer_sync=True)
    data = b"shard"
    info = store.put(data)
    store.sync()
    store.delete(info.digest)
    store.path_for(info.digest).parent.rmdir()
    store.path_for(info.digest).parent.parent.rmdir()
    assert store.put(data) == info
    store.sync()
    assert store.get(info.digest) == data


@needs_unnamed
def test_kill_before_sync_leaves_only_complete_objects(tmp_path: Path) -> None:
    """kill -9 after many deferred puts and in the middle of another, before any sync: every object
    visible is complete and verifies; the interrupted one is not there, and no temp file is left."""
    root = tmp_path / "objects"
    marker = tmp_path / "started"
    count = 200
    script = textwrap.dedent(
        f"""
        import hashlib, time
        from pathlib import Path
        from medcycle.objects.local import LocalObjectStore

        store = LocalObjectStore(Path({str(root)!r}), defer_sync=True)
        for i in range({count}):
            store.put(hashlib.sha256(str(i).encode()).digest() * (100 + i))

        class Slow:
            def __init__(self):
                self.sent = 0
            def read(self, k=-1):
                if self.sent == 4 * 1024 * 1024:
                    Path({str(marker)!r}).write_text("x")
                if self.sent >= 4 * 1024 * 1024:
                    time.sleep(0.05)
                if self.sent >= 512 * 1024 * 1024:
                    return b""
                self.sent += 1024 * 1024
                return b"\\x09" * (1024 * 1024)
        store.put(Slow())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the writer exited before it was killed"
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    store = LocalObjectStore(root)
    expected = {
        hashlib.sha256(data).hexdigest()
        for data in (hashlib.sha256(str(i).encode()).digest() * (100 + i) for i in range(count))
    }
    assert {info.digest for info in store.list()} == expected  # and not the interrupted one
    assert all(store.verify(digest) for digest in expected)
    assert list(store.tmp_dir.iterdir()) == []  # unnamed temp files: nothing left behind
