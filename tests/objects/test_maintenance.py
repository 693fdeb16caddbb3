"""fsck and gc against a real metadata store (SQLite and PostgreSQL)."""

from __future__ import annotations

import os

from medcycle.objects.local import LocalObjectStore
from medcycle.objects.maintenance import fsck, gc
from medcycle.objects.refs import add_ref, referenced_digests, remove_refs
from medcycle.platform import Platform


def test_fsck_reports_corrupt_and_missing(platform: Platform) -> None:
    store = platform.objects
    assert isinstance(store, LocalObjectStore)
    good = store.put(os.urandom(4096))
    bad = store.put(os.urandom(4096))
    gone = store.put(os.urandom(4096))
    with platform.session() as s:
        for info in (good, bad, gone):
            add_ref(s, info.digest, "test", "t1")
    store.delete(gone.digest)
    path = store.path_for(bad.digest)
    os.chmod(path, 0o644)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with platform.session() as s:
        report = fsck(store, s)
    assert not report.ok
    assert report.checked == 2
    assert report.corrupt == [bad.digest]
    assert report.missing == [gone.digest]


def test_gc_keeps_referenced_and_recent_objects(platform: Platform) -> None:
    store = platform.objects
    kept = store.put(b"referenced")
    orphan = store.put(b"orphan")
    with platform.session() as s:
        add_ref(s, kept.digest, "test", "a")
        add_ref(s, kept.digest, "test", "a")  # idempotent
        assert referenced_digests(s) == {kept.digest}
    with platform.session() as s:
        recent = gc(store, s, grace_seconds=3600)
    assert recent.deleted == [] and recent.kept_recent == 1
    with platform.session() as s:
        dry = gc(store, s, grace_seconds=0, dry_run=True)
    assert dry.deleted == [orphan.digest] and store.exists(orphan.digest)
    with platform.session() as s:
        done = gc(store, s, grace_seconds=0)
    assert done.deleted == [orphan.digest]
    assert store.exists(kept.digest) and not store.exists(orphan.digest)
    with platform.session() as s:
        assert remove_refs(s, "test", "a") == 1
    with platform.session() as s:
        assert gc(store, s, grace_seconds=0).deleted == [kept.digest]
