"""Object store contract on the local-folder and memory backends (S3 has its own module)."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medcycle.errors import IntegrityError, NotFound, UsageError
from medcycle.objects.base import ObjectStore
from medcycle.objects.factory import open_object_store
from medcycle.objects.local import LocalObjectStore
from medcycle.objects.memory import MemoryObjectStore


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects", workers=4)
    return MemoryObjectStore()


def flip_byte(store: ObjectStore, digest: str, offset: int = 0) -> None:
    if isinstance(store, LocalObjectStore):
        path = store.path_for(digest)
        os.chmod(path, 0o644)
        data = bytearray(path.read_bytes())
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        assert isinstance(store, MemoryObjectStore)
        store.corrupt(digest, offset)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=300_000))
def test_put_get_verify_round_trip(store: ObjectStore, data: bytes) -> None:
    info = store.put(data)
    assert info.digest == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert store.get(info.digest) == data
    assert store.verify(info.digest)
    assert store.exists(info.digest)
    assert store.stat(info.digest).size == len(data)
    again = store.put(io.BytesIO(data))
    assert again.digest == info.digest
    assert sum(1 for i in store.list() if i.digest == info.digest) == 1


def test_flipped_byte_is_caught_on_read_and_verify(store: ObjectStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    info = store.put(data)
    flip_byte(store, info.digest, offset=2 * 1024 * 1024)
    with pytest.raises(IntegrityError) as err:
        store.get(info.digest)
    assert info.digest in err.value.message
    assert err.value.hint
    assert store.verify(info.digest) is False


def test_a_read_to_the_end_after_a_partial_read_is_whole_and_verified(store: ObjectStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    info = store.put(data)
    with store.open(info.digest) as fh:  # a buffered first read, then the rest in one (readall)
        assert fh.read(100) + fh.read() == data
    flip_byte(store, info.digest, offset=len(data) - 3)
    with store.open(info.digest) as fh:
        assert len(fh.read(100)) == 100
        with pytest.raises(IntegrityError):
            fh.read()


def test_get_to_path_is_atomic_and_verified(store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    info = store.put(data)
    dest = tmp_path / "out" / "file.bin"
    assert store.get_to_path(info.digest, dest).size == len(data)
    assert dest.read_bytes() == data
    flip_byte(store, info.digest, offset=10)
    bad = tmp_path / "out" / "bad.bin"
    with pytest.raises(IntegrityError):
        store.get_to_path(info.digest, bad)
    assert not bad.exists()
    assert not list(bad.parent.glob(".bad.bin.*"))  # no partial file left behind


def test_missing_and_malformed_digests(store: ObjectStore) -> None:
    absent = "0" * 64
    with pytest.raises(NotFound) as err:
        store.get(absent)
    assert "medcycle store fsck" in (err.value.hint or "")
    assert store.exists(absent) is False
    assert store.delete(absent) is False
    with pytest.raises(UsageError):
        store.get("../../etc/passwd")
    with pytest.raises(UsageError):
        store.stat("ABC")


def test_expected_digest_mismatch_stores_nothing(store: ObjectStore) -> None:
    with pytest.raises(IntegrityError):
        store.put(b"hello", expected_digest="1" * 64)
    assert list(store.list()) == []


def test_batch_operations_run_in_parallel(store: ObjectStore, tmp_path: Path) -> None:
    blobs = [os.urandom(10_000 + i) for i in range(50)]
    infos = store.put_many(blobs)
    assert [i.size for i in infos] == [len(b) for b in blobs]
    outs = store.get_many_to_paths([(i.digest, tmp_path / f"o{n}") for n, i in enumerate(infos)])
    assert len(outs) == 50
    assert all((tmp_path / f"o{n}").read_bytes() == b for n, b in enumerate(blobs))
    assert all(store.delete_many([i.digest for i in infos[:10]]))
    assert len(list(store.list())) == 40


def test_put_streams_from_path_and_file(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    info = store.put(src)
    with src.open("rb") as fh:
        assert store.put(fh).digest == info.digest
    with store.open(info.digest) as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == info.digest
    with pytest.raises(NotFound):
        store.put(tmp_path / "nope.bin")


def test_factory_picks_backends(tmp_path: Path) -> None:
    assert isinstance(open_object_store(str(tmp_path / "a")), LocalObjectStore)
    assert isinstance(open_object_store((tmp_path / "b").as_uri()), LocalObjectStore)
    assert isinstance(open_object_store("memory://"), MemoryObjectStore)
    from medcycle.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        open_object_store("ftp://x/y")
    assert "s3://" in (err.value.hint or "")


def test_local_put_memory_is_bounded(tmp_path: Path) -> None:
    """A 200 MiB put from a stream must not hold the object in memory (peak RSS grows far less)."""
    script = textwrap.dedent(
        f"""
        import resource, sys
        from pathlib import Path
        from medcycle.objects.local import LocalObjectStore

        class Zeros:
            def __init__(self, n): self.left = n
            def read(self, k=-1):
                k = self.left if k < 0 else min(k, self.left)
                self.left -= k
                return bytes(k)
        store = LocalObjectStore(Path({str(tmp_path / "objects")!r}), fsync=False)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        info = store.put(Zeros(200 * 1024 * 1024))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(info.size, (after - before) // 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    size, grown_mib = (int(x) for x in out.stdout.split())
    assert size == 200 * 1024 * 1024
    assert grown_mib < 50, f"put grew RSS by {grown_mib} MiB for a 200 MiB object"


def test_kill_during_large_put_leaves_nothing_visible(tmp_path: Path) -> None:
    """kill -9 in the middle of a large put: no object appears; a retry succeeds."""
    root = tmp_path / "objects"
    marker = tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from medcycle.objects.local import LocalObjectStore

        class Slow:
            def __init__(self):
                self.sent = 0
            def read(self, k=-1):
                if self.sent >= 512 * 1024 * 1024:
                    return b""
                if self.sent == 8 * 1024 * 1024:
                    Path({str(marker)!r}).write_text("x")
                if self.sent >= 8 * 1024 * 1024:
                    time.sleep(0.05)
                self.sent += 1024 * 1024
                return b"\\x07" * (1024 * 1024)
        LocalObjectStore(Path({str(root)!r})).put(Slow())
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
    assert list(store.list()) == []
    assert store.stale_temp_files(0)  # the partial temp file is there, invisible to readers
    info = store.put(b"\x07" * (16 * 1024 * 1024))
    assert store.verify(info.digest)
    assert [i.digest for i in store.list()] == [info.digest]
