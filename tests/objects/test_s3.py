"""Object store contract on a real S3 server (SeaweedFS on loopback, or ``MEDCYCLE_TEST_S3_ENDPOINT``)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from medcycle.errors import BackendUnavailable, ConfigError, IntegrityError, NotFound
from medcycle.objects.base import ObjectStore, digest_file
from medcycle.objects.factory import open_object_store
from medcycle.objects.s3 import S3ObjectStore
from medcycle.settings import load_settings
from medcycle.testing.s3 import S3Service
from medcycle.testing.services import free_port

pytestmark = pytest.mark.integration


MiB = 1024 * 1024


@pytest.fixture
def store(s3_service: S3Service, s3_bucket: str) -> Iterator[S3ObjectStore]:
    # Small parts so that multipart uploads happen with test-sized objects.
    s = s3_service.store(s3_bucket, "team/objects", workers=4, part_size=8 * MiB, single_put_limit=16 * MiB)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def shared_store(s3_service: S3Service) -> Iterator[S3ObjectStore]:
    """One bucket for the property test, whose examples cannot use function-scoped fixtures."""
    bucket = s3_service.make_bucket()
    s = s3_service.store(bucket, "prop")
    try:
        yield s
    finally:
        s.close()
        s3_service.remove_bucket(bucket)


def keys(service: S3Service, bucket: str) -> list[str]:
    client = service.client()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))
    finally:
        client.close()


def count_calls(store: S3ObjectStore, operation: str) -> list[int]:
    """Record the thread id of every ``operation`` request the store's client makes."""
    threads: list[int] = []

    def record(**_: Any) -> None:
        threads.append(threading.get_ident())

    store.client.meta.events.register(f"before-call.s3.{operation}", record)
    return threads


def write_random_file(path: Path, size: int, seed: int = 0) -> str:
    """Write ``size`` seeded random bytes in 1 MiB pieces (never all in memory); return their digest."""
    rng = random.Random(seed)
    h = hashlib.sha256()
    with path.open("wb") as fh:
        left = size
        while left:
            piece = rng.randbytes(min(MiB, left))
            fh.write(piece)
            h.update(piece)
            left -= len(piece)
    return h.hexdigest()


# -- the contract ---------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(data=st.binary(min_size=0, max_size=200_000), kind=st.sampled_from(["bytes", "stream", "path"]))
def test_put_get_verify_round_trip(
    shared_store: S3ObjectStore, data: bytes, kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if kind == "bytes":
        info = shared_store.put(data)
    elif kind == "stream":
        info = shared_store.put(io.BytesIO(data))
    else:
        path = tmp_path_factory.mktemp("src") / "blob"
        path.write_bytes(data)
        info = shared_store.put(path)
    assert info.digest == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert shared_store.get(info.digest) == data
    assert shared_store.verify(info.digest)
    assert shared_store.stat(info.digest).size == len(data)
    assert sum(1 for i in shared_store.list() if i.digest == info.digest) == 1


def test_key_layout_and_metadata(store: S3ObjectStore, s3_service: S3Service, s3_bucket: str) -> None:
    info = store.put(b"layout")
    d = info.digest
    assert keys(s3_service, s3_bucket) == [f"team/objects/sha256/{d[:2]}/{d}"]
    head = store.client.head_object(Bucket=s3_bucket, Key=store.key_for(d))
    assert head["Metadata"]["sha256"] == d
    assert store.url == f"s3://{s3_bucket}/team/objects"


def test_large_object_streams_through_multipart(store: S3ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    digest = write_random_file(src, 40 * MiB + 123)
    parts = count_calls(store, "UploadPart")
    tracemalloc.start()
    try:
        info = store.put(src)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        out = tmp_path / "out" / "big.bin"
        store.get_to_path(digest, out)
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.digest == digest
    assert info.size == 40 * MiB + 123
    assert len(parts) == 6  # 40 MiB in 8 MiB parts: a multipart upload
    etag = store.client.head_object(Bucket=store.bucket, Key=store.key_for(digest))["ETag"]
    assert etag.strip('"').endswith("-6")
    assert digest_file(out) == (digest, info.size)
    # Streaming: neither direction holds the 40 MiB object (parts in flight are read from disk lazily).
    assert put_peak < 20 * MiB, put_peak
    assert get_peak < 8 * MiB, get_peak


def test_large_stream_is_spooled_then_uploaded(store: S3ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    digest = write_random_file(src, 20 * MiB, seed=1)
    spool = tmp_path / "spool"
    spool.mkdir()
    store.spool_dir = spool
    with src.open("rb") as fh:
        info = store.put(fh)
    assert info.digest == digest
    assert store.verify(digest)
    assert list(spool.iterdir()) == []  # the spool file is gone


def test_flipped_byte_is_caught_on_read_and_verify(store: S3ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 17)
    info = store.put(data)
    damaged = bytearray(data)
    damaged[2 * MiB] ^= 0x01
    store.client.put_object(Bucket=store.bucket, Key=store.key_for(info.digest), Body=bytes(damaged))
    with pytest.raises(IntegrityError) as err:
        store.get(info.digest)
    assert info.digest in err.value.message
    assert err.value.details["digest"] == info.digest
    assert err.value.hint
    assert store.verify(info.digest) is False
    dest = tmp_path / "out.bin"
    with pytest.raises(IntegrityError):
        store.get_to_path(info.digest, dest)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left either


def test_missing_object_is_not_found(store: S3ObjectStore, tmp_path: Path) -> None:
    digest = hashlib.sha256(b"never stored").hexdigest()
    for call in (
        lambda: store.get(digest),
        lambda: store.stat(digest),
        lambda: store.open(digest),
        lambda: store.get_to_path(digest, tmp_path / "x"),
    ):
        with pytest.raises(NotFound) as err:
            call()
        assert digest in err.value.message
        assert err.value.hint
    assert store.exists(digest) is False
    assert store.delete(digest) is False


def test_wrong_credentials_are_refused_by_the_server(s3_service: S3Service, s3_bucket: str) -> None:
    for access, secret in ((s3_service.access_key, "wrong-secret"), ("unknown-key", s3_service.secret_key)):
        client = s3_service.client(access_key=access, secret_key=secret, max_attempts=1)
        try:
            with pytest.raises(ClientError) as err:
                client.list_objects_v2(Bucket=s3_bucket)
            assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        finally:
            client.close()


def test_wrong_credentials_are_a_clear_config_error(
    store: S3ObjectStore, s3_service: S3Service, s3_bucket: str
) -> None:
    info = store.put(b"guarded")
    client = s3_service.client(secret_key="wrong-secret", max_attempts=1)
    bad = S3ObjectStore(client, s3_bucket, "team/objects")
    try:
        for call in (
            lambda: bad.put(b"intruder"),
            lambda: bad.get(info.digest),
            lambda: bad.stat(info.digest),
            lambda: list(bad.list()),
            bad.check,
        ):
            with pytest.raises(ConfigError) as err:
                call()
            assert "refused" in err.value.message
            assert "MEDCYCLE_S3_SECRET_ACCESS_KEY" in (err.value.hint or "")
            assert "wrong-secret" not in str(err.value)
    finally:
        bad.close()
    assert [i.digest for i in store.list()] == [info.digest]


def test_missing_bucket_is_a_config_error(s3_service: S3Service) -> None:
    s = s3_service.store("medcycle-no-such-bucket", "")
    try:
        for call in (lambda: s.put(b"x"), lambda: s.stat("0" * 64), lambda: list(s.list()), s.check):
            with pytest.raises(ConfigError) as err:
                call()
            assert "medcycle-no-such-bucket" in err.value.message
            assert "Create the bucket" in (err.value.hint or "")
    finally:
        s.close()


def test_unreachable_endpoint_is_backend_unavailable(s3_service: S3Service) -> None:
    down = S3Service(f"http://127.0.0.1:{free_port()}", s3_service.access_key, s3_service.secret_key)
    client = down.client(max_attempts=1, connect_timeout=1.0)
    s = S3ObjectStore(client, "bucket", "")
    try:
        with pytest.raises(BackendUnavailable) as err:
            s.stat("0" * 64)
        assert "cannot reach" in err.value.message
        assert "MEDCYCLE_S3_ENDPOINT_URL" in (err.value.hint or "")
    finally:
        s.close()


def test_put_many_and_get_many_to_paths_run_in_parallel(store: S3ObjectStore, tmp_path: Path) -> None:
    blobs = [os.urandom(64 * 1024 + i) for i in range(40)]
    paths = []
    for i, blob in enumerate(blobs[:20]):
        p = tmp_path / "src" / f"{i}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(blob)
        paths.append(p)
    put_threads = count_calls(store, "PutObject")
    get_threads = count_calls(store, "GetObject")
    infos = store.put_many([*paths, *blobs[20:30], *(io.BytesIO(b) for b in blobs[30:])])
    assert [i.digest for i in infos] == [hashlib.sha256(b).hexdigest() for b in blobs]
    pairs = [(i.digest, tmp_path / "dst" / f"{n}.bin") for n, i in enumerate(infos)]
    got = store.get_many_to_paths(pairs)
    assert [g.size for g in got] == [len(b) for b in blobs]
    assert all(dest.read_bytes() == blob for (_, dest), blob in zip(pairs, blobs, strict=True))
    assert len(put_threads) == 40
    assert len(set(put_threads)) > 1
    assert len(set(get_threads)) > 1


def test_list_returns_only_this_stores_digests(store: S3ObjectStore, s3_service: S3Service, s3_bucket: str) -> None:
    store.list_page_size = 7  # several pages
    infos = store.put_many([f"object {i}".encode() for i in range(20)])
    client = store.client
    d = infos[0].digest
    client.put_object(Bucket=s3_bucket, Key="team/objects/sha256/ab/not-a-digest", Body=b"x")
    client.put_object(Bucket=s3_bucket, Key=f"team/objects/sha256/zz/{d}", Body=b"x")  # wrong shard
    client.put_object(Bucket=s3_bucket, Key=f"other/sha256/{d[:2]}/{d}", Body=b"x")  # other prefix
    listed = {i.digest: i for i in store.list()}
    assert set(listed) == {i.digest for i in infos}
    assert all(listed[i.digest].size == i.size and listed[i.digest].modified for i in infos)


def test_delete(store: S3ObjectStore) -> None:
    info = store.put(b"to be deleted")
    assert store.delete(info.digest) is True
    assert store.delete(info.digest) is False
    assert not store.exists(info.digest)
    assert list(store.list()) == []
    with pytest.raises(NotFound):
        store.get(info.digest)
    assert store.delete_many([store.put(b"a").digest, store.put(b"b").digest]) == [True, True]


def test_put_is_idempotent(store: S3ObjectStore, s3_service: S3Service, s3_bucket: str, tmp_path: Path) -> None:
    puts = count_calls(store, "PutObject")
    data = os.urandom(100_000)
    src = tmp_path / "same.bin"
    src.write_bytes(data)
    first = store.put(data)
    assert store.put(data) == first
    assert store.put(io.BytesIO(data)) == first
    assert store.put(src) == first
    assert store.put(src, expected_digest=first.digest) == first
    assert len(puts) == 1  # existing objects are not sent again
    assert len(keys(s3_service, s3_bucket)) == 1


def test_wrong_size_object_is_replaced(store: S3ObjectStore) -> None:
    data = os.urandom(50_000)
    info = store.put(data)
    store.client.put_object(Bucket=store.bucket, Key=store.key_for(info.digest), Body=data[:100])
    assert store.verify(info.digest) is False
    store.put(data)
    assert store.verify(info.digest)


def test_expected_digest_mismatch_stores_nothing(store: S3ObjectStore) -> None:
    with pytest.raises(IntegrityError):
        store.put(b"actual bytes", expected_digest=hashlib.sha256(b"other bytes").hexdigest())
    assert list(store.list()) == []


@pytest.mark.parametrize("change", ["rewritten", "appended"])
def test_file_changed_after_hashing_is_refused(
    store: S3ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    # The file changes between hashing and sending: the server checks x-amz-checksum-sha256.
    src = tmp_path / "changing.bin"
    src.write_bytes(b"old content")
    real_digest_file = digest_file

    def hash_then_change(path: Path) -> tuple[str, int]:
        result = real_digest_file(path)
        if change == "rewritten":
            path.write_bytes(b"new content")
        else:
            with path.open("ab") as fh:
                fh.write(b" and more")
        return result

    monkeypatch.setattr("medcycle.objects.s3.digest_file", hash_then_change)
    claimed = hashlib.sha256(b"old content").hexdigest()
    with pytest.raises(IntegrityError) as err:
        store.put(src)
    assert claimed in err.value.message
    assert list(store.list()) == []


def test_file_changed_during_multipart_upload_is_removed(store: S3ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    digest = write_random_file(src, 20 * MiB, seed=3)

    def touch(**_: Any) -> None:
        st = src.stat()
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    store.client.meta.events.register("before-call.s3.CompleteMultipartUpload", touch)
    with pytest.raises(IntegrityError) as err:
        store.put(src)
    assert "changed while it was being stored" in err.value.message
    assert not store.exists(digest)


@pytest.mark.parametrize("failing", ["UploadPart", "CompleteMultipartUpload"])
def test_failed_multipart_upload_leaves_nothing(store: S3ObjectStore, tmp_path: Path, failing: str) -> None:
    src = tmp_path / "big.bin"
    digest = write_random_file(src, 20 * MiB, seed=2)
    calls = count_calls(store, failing)

    def fail(**_: Any) -> None:
        if len(calls) >= 2 or failing == "CompleteMultipartUpload":
            raise RuntimeError("injected failure")

    store.client.meta.events.register(f"before-call.s3.{failing}", fail)
    with pytest.raises(RuntimeError, match="injected failure"):
        store.put(src)
    store.client.meta.events.unregister(f"before-call.s3.{failing}", fail)
    assert not store.exists(digest)
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket)
    assert uploads.get("Uploads", []) == []  # aborted, no parts left behind
    assert store.put(src).digest == digest  # and a retry succeeds


def test_open_object_store_from_settings(s3_service: S3Service, s3_bucket: str, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", **s3_service.settings_overrides(s3_bucket, "via/settings"))
    s = open_object_store(settings.resolved_object_store_url, settings)
    try:
        assert isinstance(s, ObjectStore)
        assert isinstance(s, S3ObjectStore)
        info = s.put(b"through the factory")
        assert s.get(info.digest) == b"through the factory"
        assert s.url == f"s3://{s3_bucket}/via/settings"
        s.check()
    finally:
        s.close()


def test_kill_during_large_put_leaves_nothing_visible(
    s3_service: S3Service, s3_bucket: str, tmp_path: Path
) -> None:
    """kill -9 of a process in the middle of a multipart upload: no object appears; a retry succeeds."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    src = tmp_path / "big.bin"
    with src.open("wb") as fh:
        for i in range(48):
            fh.write(bytes([i]) * MiB)
    marker = tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from medcycle.testing.s3 import S3Service

        service = S3Service({s3_service.endpoint_url!r}, {s3_service.access_key!r}, {s3_service.secret_key!r})
        store = service.store({s3_bucket!r}, "killed", workers=1, part_size=8 * 1024 * 1024,
                              single_put_limit=8 * 1024 * 1024)
        real = store.client.upload_part

        def slow_upload_part(**kw):
            Path({str(marker)!r}).write_text("x")
            time.sleep(0.5)
            return real(**kw)

        store.client.upload_part = slow_upload_part
        store.put(Path({str(src)!r}))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the uploader exited before it was killed"
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    store = s3_service.store(s3_bucket, "killed", workers=2, part_size=8 * MiB, single_put_limit=8 * MiB)
    try:
        assert list(store.list()) == []
        digest, size = digest_file(src)
        assert not store.exists(digest)
        info = store.put(src)
        assert (info.digest, info.size) == (digest, size)
        assert store.verify(digest)
    finally:
        store.close()
