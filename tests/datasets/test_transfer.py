"""pull / push / status: layout, subsets, hard links, resume, corruption, label-only versions, audit."""

from __future__ import annotations

import csv
import errno
import json
import os
from pathlib import Path

import pytest

from medcycle.auth import audit
from medcycle.datasets import labels, transfer, versions
from medcycle.datasets.layout import CARD_FILE, MANIFEST_CSV, MANIFEST_JSON
from medcycle.errors import BackendUnavailable, IntegrityError, NotFound, UsageError
from medcycle.objects.local import LocalObjectStore
from medcycle.platform import Platform
from tests.datasets.conftest import Catalog, labels_csv, use_remote


def image_files(dest: Path) -> list[Path]:
    return sorted(p for p in dest.rglob("*") if p.is_file() and p.parent != dest)


def test_pull_from_a_local_store_hard_links_a_training_layout(platform: Platform, frozen: str, tmp_path: Path) -> None:
    dest = tmp_path / "pull"
    report = transfer.pull(platform, frozen, dest, actor="alice")
    assert report.source == "local-store" and report.items == 96 and report.linked == 96
    assert report.fetched_bytes == 0 and report.copied == 0
    doc = json.loads((dest / MANIFEST_JSON).read_text())
    assert doc["version"] == report.version and doc["dataset"] == "cxr" and doc["tags"] == ["v1.0"]
    store = platform.objects
    assert isinstance(store, LocalObjectStore)
    for item in doc["items"]:
        path = dest / item["path"]
        assert item["path"].split("/")[:4] == [item["split"], item["patient"], item["study"], item["series"]]
        assert path.stat().st_ino == store.path_for(item["digest"]).stat().st_ino  # a hard link, no copy
        assert path.suffix in {".dcm", ".gz", ".png"}
    assert len(image_files(dest)) == 96
    rows = list(csv.DictReader((dest / MANIFEST_CSV).read_text().splitlines()))
    assert len(rows) == 96 and {"path", "split", "labels", "modality", "body_part", "manufacturer"} <= set(rows[0])
    assert {r["labels"] for r in rows} == {"normal", "pneumonia"}
    assert "## Composition" in (dest / CARD_FILE).read_text()
    with platform.session() as s:
        events = audit.query(s, action="dataset.pull")
    assert [(e.actor, e.outcome, e.target_id) for e in events] == [("alice", "ok", report.version)]

    again = transfer.pull(platform, frozen, dest)  # nothing to do
    assert again.unchanged == 96 and again.linked == again.fetched_objects == 0
    victim = dest / doc["items"][0]["path"]
    victim.unlink()
    victim.write_bytes(b"edited by hand")
    fixed = transfer.pull(platform, frozen, dest)
    assert fixed.linked == 1 and fixed.unchanged == 95
    assert victim.stat().st_ino == store.path_for(doc["items"][0]["digest"]).stat().st_ino


def test_pull_subsets_by_split_and_query(platform: Platform, frozen: str, tmp_path: Path) -> None:
    with platform.session() as s:
        version_id = versions.resolve(s, frozen).id
    manifest = versions.load_manifest(platform.objects, version_id)
    train = transfer.pull(platform, frozen, tmp_path / "train", split="train")
    expected = {i.uid for i in manifest.items if i.split == "train"}
    doc = json.loads((tmp_path / "train" / MANIFEST_JSON).read_text())
    assert {i["uid"] for i in doc["items"]} == expected and train.items == len(expected)
    assert {p.relative_to(tmp_path / "train").parts[0] for p in image_files(tmp_path / "train")} == {"train"}
    assert doc["subset"] == {"split": "train", "query": None} and doc["items_in_version"] == 96

    sub = transfer.pull(platform, frozen, tmp_path / "ct", query='modality == "CT"', split="test")
    doc = json.loads((tmp_path / "ct" / MANIFEST_JSON).read_text())
    want = {i.uid for i in manifest.items if i.split == "test" and i.modality == "CT"}
    assert want and {i["uid"] for i in doc["items"]} == want and sub.items == len(want)
    with pytest.raises(UsageError, match="no split 'holdout'"):
        transfer.pull(platform, frozen, tmp_path / "x", split="holdout")

    # pulling another subset into the same folder removes what the earlier pull wrote and is not wanted now
    transfer.pull(platform, frozen, tmp_path / "train", split="val")
    assert {p.relative_to(tmp_path / "train").parts[0] for p in image_files(tmp_path / "train")} == {"val"}
    (tmp_path / "train" / "notes.txt").write_text("mine")  # not ours: never touched
    transfer.pull(platform, frozen, tmp_path / "train", split="test")
    assert (tmp_path / "train" / "notes.txt").read_text() == "mine"


def test_remote_pull_caches_and_label_only_versions_move_no_image_bytes(
    platform: Platform, catalog: Catalog, frozen: str, tmp_path: Path
) -> None:
    remote = use_remote(platform)
    first = transfer.pull(platform, frozen, tmp_path / "a", workers=4)
    assert first.source == "cache" and first.fetched_objects == first.objects == 96
    assert first.fetched_bytes == first.bytes_total and first.fetch_throughput > 0
    cache = transfer.open_cache(platform)
    some = json.loads((tmp_path / "a" / MANIFEST_JSON).read_text())["items"][0]
    assert (tmp_path / "a" / some["path"]).stat().st_ino == cache.path_for(some["digest"]).stat().st_ino

    with platform.session() as s:  # new labels only: same items, new label set
        labels.import_labels(s, platform.objects, "cxr", labels_csv(catalog.studies, set(catalog.studies[:4])))
        v2 = versions.freeze(s, platform.objects, "cxr", tag="relabel").version
        manifest_bytes = versions.resolve(s, "cxr@relabel").manifest_bytes
    remote.opened.clear()
    remote.bytes_read = 0
    second = transfer.pull(platform, "cxr@relabel", tmp_path / "a")
    assert second.fetched_objects == 0 and second.fetched_bytes == 0  # zero image bytes moved
    assert remote.opened == [v2.id] and remote.bytes_read == manifest_bytes  # only the manifest travelled
    assert second.unchanged == 96
    new = versions.load_manifest(platform.objects, v2.id)
    rows = csv.DictReader((tmp_path / "a" / MANIFEST_CSV).read_text().splitlines())
    assert {r["uid"]: r["labels"] for r in rows} == {i.uid: "|".join(i.labels) for i in new.items}
    assert json.loads((tmp_path / "a" / MANIFEST_JSON).read_text())["version"] == v2.id


def test_interrupted_pull_resumes_without_refetching(platform: Platform, frozen: str, tmp_path: Path) -> None:
    use_remote(platform, fail_after=30)
    with pytest.raises(BackendUnavailable):
        transfer.pull(platform, frozen, tmp_path / "d", workers=4)
    cache = transfer.open_cache(platform)
    with platform.session() as s:
        version_id = versions.resolve(s, frozen).id
        events = audit.query(s, action="dataset.pull")
    assert events[0].outcome == "failed" and events[0].details["error"] == "backend_unavailable"
    remote = use_remote(platform)
    manifest = versions.load_manifest(platform.objects, version_id)
    digests = {i.digest for i in manifest.items}
    done = {d for d in digests if cache.exists(d)}
    assert 0 < len(done) < len(digests)
    remote.opened.clear()
    report = transfer.pull(platform, frozen, tmp_path / "d", workers=4)
    assert set(remote.opened) == digests - done  # nothing that was complete is fetched again
    assert report.cached_objects == len(done) and report.fetched_objects == len(digests) - len(done)
    assert len(image_files(tmp_path / "d")) == 96  # nothing missing


def test_corrupt_objects_are_detected_and_named(platform: Platform, frozen: str, tmp_path: Path) -> None:
    with platform.session() as s:
        version_id = versions.resolve(s, frozen).id
    victim = sorted({i.digest for i in versions.load_manifest(platform.objects, version_id).items})[3]
    store = platform.objects
    assert isinstance(store, LocalObjectStore)
    path = store.path_for(victim)
    os.chmod(path, 0o644)
    path.write_bytes(b"bit rot" + path.read_bytes()[7:])
    with pytest.raises(IntegrityError) as err:  # straight from the local store
        transfer.pull(platform, frozen, tmp_path / "local")
    assert victim in err.value.message and err.value.details["digest"] == victim
    use_remote(platform)
    with pytest.raises(IntegrityError) as err:  # through the cache
        transfer.pull(platform, frozen, tmp_path / "remote", workers=4)
    assert victim in err.value.message
    assert not transfer.open_cache(platform).exists(victim)  # never cached


def test_push_and_status(platform: Platform, frozen: str, tmp_path: Path) -> None:
    remote = use_remote(platform)
    before = transfer.status(platform, frozen)
    assert before.missing_locally == before.objects == 96 and not before.complete and before.missing_in_store == []
    transfer.pull(platform, frozen, tmp_path / "p")
    after = transfer.status(platform, frozen, to=tmp_path / "p")
    assert after.complete and after.folder == {"present": 96, "missing": 0, "different": 0}
    victims = sorted(json.loads((tmp_path / "p" / MANIFEST_JSON).read_text())["items"], key=lambda i: i["uid"])[:3]
    (tmp_path / "p" / victims[0]["path"]).unlink()
    assert transfer.status(platform, frozen, to=tmp_path / "p").folder == {"present": 95, "missing": 1, "different": 0}
    for v in victims:  # the store loses objects that this machine still has in its cache
        remote.inner.delete(v["digest"])
    lost = transfer.status(platform, frozen)
    assert set(lost.missing_in_store) == {v["digest"] for v in victims}
    pushed = transfer.push(platform, frozen, workers=4)
    assert pushed.ok and pushed.uploaded_objects == 3 and pushed.present == pushed.objects - 3
    assert all(remote.inner.exists(v["digest"]) for v in victims)
    assert transfer.push(platform, frozen).uploaded_objects == 0


def test_pull_copies_across_file_systems(platform: Platform, frozen: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr("medcycle.datasets.layout.os.link", no_link)
    report = transfer.pull(platform, frozen, tmp_path / "c", split="val")
    assert report.copied == report.items > 0 and report.linked == 0
    store = platform.objects
    assert isinstance(store, LocalObjectStore)
    for item in json.loads((tmp_path / "c" / MANIFEST_JSON).read_text())["items"]:
        path = tmp_path / "c" / item["path"]
        assert path.read_bytes() == store.path_for(item["digest"]).read_bytes()
        assert path.stat().st_ino != store.path_for(item["digest"]).stat().st_ino
    again = transfer.pull(platform, frozen, tmp_path / "c", split="val")  # copies are checked by content
    assert again.unchanged == report.items and again.copied == 0


@pytest.mark.parametrize("remote", [False, True])
def test_an_object_missing_from_the_store_is_named(
    platform: Platform, frozen: str, tmp_path: Path, remote: bool
) -> None:
    """An object deleted from a local store ended the pull in an internal error (FileNotFoundError, exit 70)."""
    from medcycle.errors import NotFound

    with platform.session() as s:
        version_id = versions.resolve(s, frozen).id
    victim = sorted({i.digest for i in versions.load_manifest(platform.objects, version_id).items})[5]
    store = platform.objects
    assert isinstance(store, LocalObjectStore)
    store.path_for(victim).unlink()
    if remote:
        use_remote(platform)
    for verify in (False, True):
        with pytest.raises(NotFound) as err:
            transfer.pull(platform, frozen, tmp_path / f"out-{verify}", verify=verify)
        assert victim in err.value.message and "fsck" in (err.value.hint or "")


def test_pull_into_a_folder_that_cannot_be_made(platform: Platform, frozen: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError) as err:
        transfer.pull(platform, frozen, blocker / "below")
    assert "cannot make the folder" in err.value.message


def test_status_of_a_folder_that_is_a_file(platform: Platform, frozen: str, tmp_path: Path) -> None:
    """`status --to FILE` ended in an internal error (NotADirectoryError); pull refused the same path clearly."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError) as err:
        transfer.status(platform, frozen, to=blocker)
    assert "not a folder" in err.value.message
    folder = transfer.status(platform, frozen, to=tmp_path / "absent").folder
    assert folder is not None and folder["present"] == 0


def test_a_pull_refused_before_it_starts_is_audited_and_leaves_no_folder(
    platform: Platform, frozen: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """"Every pull writes an audit event": an unknown version or an unusable --to wrote none."""
    dest = tmp_path / "new" / "data"
    with pytest.raises(NotFound):
        transfer.pull(platform, "cxr@nope", dest, actor="alice")
    with pytest.raises(NotFound):
        transfer.pull(platform, "nope@v1", dest, actor="alice")
    assert not (tmp_path / "new").exists()  # not even an empty folder
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"keep me")
    with pytest.raises(UsageError, match="exists and is not a folder"):
        transfer.pull(platform, frozen, a_file, actor="alice")
    assert a_file.read_bytes() == b"keep me"
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # Tests run as root, which may write anywhere: the folder is made to look read-only to this process.
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
    with pytest.raises(UsageError, match="cannot write into") as err:
        transfer.pull(platform, frozen, locked / "sub", actor="alice")
    assert "folder you can write to" in (err.value.hint or "") and list(locked.iterdir()) == []
    with platform.session() as s:
        events = audit.query(s, action="dataset.pull")
        version_id = versions.resolve(s, frozen).id
    got = [(e.actor, e.outcome, e.target_id, e.details["error"], e.details["dest"]) for e in reversed(events)]
    assert got == [
        ("alice", "failed", "cxr@nope", "not_found", str(dest)),
        ("alice", "failed", "nope@v1", "not_found", str(dest)),
        ("alice", "failed", version_id, "bad_request", str(a_file)),
        ("alice", "failed", version_id, "bad_request", str(locked / "sub")),
    ]
