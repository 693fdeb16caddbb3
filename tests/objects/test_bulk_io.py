"""Bulk paths of the object stores: ``copy_into`` (a pull's fetch) and the local store's ``defer_sync`` puts."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from medcycle.errors import IntegrityError
from medcycle.objects.base import MAP_FROM, ObjectStore
from medcycle.objects.local import LocalObjectStore
from medcycle.objects.memory import MemoryObjectStore


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects", workers=4)
    return MemoryObjectStore()


def damage(store: ObjectStore, digest: str, offset: int) -> None:
    if isinstance(store, LocalObjectStore):
        path = store.path_for(digest)
        os.chmod(path, 0o644)
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        assert isinstance(store, MemoryObjectStore)
        store.corrupt(digest, offset)


@pytest.mark.parametrize("size", [0, 1000, 3 * 1024 * 1024 + 7, MAP_FROM + 12345])  # small, several chunks, mapped
def test_copy_into_writes_the_verified_bytes(store: ObjectStore, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    info = store.put(data)
    target = tmp_path / "copy"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        assert store.copy_into(info.digest, fd) == size
    finally:
        os.close(fd)
    assert target.read_bytes() == data


@pytest.mark.parametrize("size", [5000, MAP_FROM + 1])
def test_copy_into_names_a_corrupt_object(store: ObjectStore, tmp_path: Path, size: int) -> None:
    info = store.put(os.urandom(size))
    damage(store, info.digest, size // 2)
    fd = os.open(tmp_path / "copy", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(IntegrityError) as err:
            store.copy_into(info.digest, fd)
    finally:
        os.close(fd)
    assert info.digest in err.value.message and err.value.details["digest"] == info.digest


def test_deferred_puts_are_readable_at_once_and_durable_after_sync(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects", defer_sync=True)
    blobs = [os.urandom(n) for n in (0, 10, 70_000, 2 * 1024 * 1024)]
    infos = [store.put(b) for b in blobs]
    (tmp_path / "src").write_bytes(b"from a file")
    infos.append(store.put(tmp_path / "src"))  # a streamed source takes the same path
    store.sync()
    store.sync()  # nothing pending: a no-op
    for info, data in zip(infos, [*blobs, b"from a file"], strict=True):
        assert store.get(info.digest) == data
        assert stat.S_IMODE(store.path_for(info.digest).stat().st_mode) == 0o444
    assert list(store.tmp_dir.iterdir()) == []  # unnamed temp files: nothing to clean up, ever
    assert store.put(blobs[2]).digest == infos[2].digest  # storing existing bytes is still a no-op


def test_deferred_put_repairs_an_object_torn_by_a_crash(tmp_path: Path) -> None:
    """Before ``sync`` a crash of the machine can leave an object torn under its name; the next deferred
    put of the same bytes finds it damaged (wrong size, or right size and wrong bytes) and replaces it."""
    store = LocalObjectStore(tmp_path / "objects", defer_sync=True)
    for torn in (lambda b: b[: len(b) // 2], lambda b: bytes(len(b))):  # cut short; zero-filled
        data = os.urandom(50_000)
        digest = hashlib.sha256(data).hexdigest()
        path = store.path_for(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(torn(data))
        assert store.put(data).digest == digest
        store.sync()
        assert path.read_bytes() == data and store.verify(digest)


def test_a_durable_store_trusts_what_it_finds(tmp_path: Path) -> None:
    """Without defer_sync every object was fsynced before it got its name: an existing one is not re-read."""
    store = LocalObjectStore(tmp_path / "objects")
    data = b"x" * 1000
    digest = hashlib.sha256(data).hexdigest()
    path = store.path_for(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not it")
    store.put(data)
    assert path.read_bytes() == b"not it"  # and fsck / a verified read name it, as before
    assert not store.verify(digest)
