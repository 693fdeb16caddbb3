"""Ingest's bulk paths: batched catalog writes, kept worker processes, batch durability, pixel statistics."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from medcycle.catalog import ingest as ingest_module
from medcycle.catalog.ingest import ingest, worker_pool
from medcycle.catalog.pixels import pixel_stats
from medcycle.catalog.tables import IngestFileRow, InstanceRow, PatientRow, SeriesRow, StudyRow
from medcycle.objects import local
from medcycle.objects.local import LocalObjectStore
from medcycle.objects.tables import ObjectRefRow
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.testing.dicom import FakePatient, write_ct_series


def counts(platform: Platform) -> dict[str, int]:
    with platform.session() as s:
        def n(model: object) -> int:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)  # type: ignore[arg-type]

        return {
            "patients": n(PatientRow), "studies": n(StudyRow), "series": n(SeriesRow), "instances": n(InstanceRow),
            "refs": n(ObjectRefRow), "files": n(IngestFileRow),
            "series_sum": int(s.scalar(select(func.coalesce(func.sum(SeriesRow.n_instances), 0))) or 0),
            "series_bytes": int(s.scalar(select(func.coalesce(func.sum(SeriesRow.bytes), 0))) or 0),
            "instance_bytes": int(s.scalar(select(func.coalesce(func.sum(InstanceRow.bytes), 0))) or 0),
        }


def series_folder(root: Path, patients: int, slices: int) -> int:
    total = 0
    for i in range(patients):
        total += len(write_ct_series(root / f"s{i}", FakePatient(patient_id=f"MRN-B{i:04d}"), slices=slices,
                                     size=32, seed=100 + i))
    return total


def stored_objects_intact(platform: Platform) -> None:
    store = platform.objects
    assert isinstance(store, LocalObjectStore)
    with platform.session() as s:
        digests = list(s.scalars(select(InstanceRow.digest)))
    for digest in digests:
        assert hashlib.sha256(store.path_for(digest).read_bytes()).hexdigest() == digest
    assert list(store.tmp_dir.iterdir()) == []  # unnamed temp files: nothing left behind


@pytest.mark.parametrize("jobs", [1, 2])
def test_batches_write_the_same_catalog_as_file_by_file(platform: Platform, tmp_path: Path, jobs: int) -> None:
    """Several batches (first 100 outcomes, then more), series spread over batches, a duplicate file under
    another name in the same run: every count agrees with every other, as file-by-file writes had it."""
    src = tmp_path / "in"
    total = series_folder(src, patients=9, slices=30)  # 270 files: batches of 100 and 170
    shutil.copy(next((src / "s0").iterdir()), src / "s0" / "same-bytes-again.dcm")
    summary = ingest(platform, [src], source="b", jobs=jobs)
    assert summary.ingested == total and summary.duplicates == 1 and not summary.rejected
    c = counts(platform)
    assert c["instances"] == c["series_sum"] == c["refs"] == total and c["files"] == total
    assert c["series_bytes"] == c["instance_bytes"] == summary.bytes
    assert (c["patients"], c["studies"], c["series"]) == (9, 9, 9)
    stored_objects_intact(platform)
    again = ingest(platform, [src], source="b", jobs=jobs)
    assert again.ingested == 0 and again.duplicates == total + 1
    assert counts(platform) == c


def test_a_batch_that_meets_a_concurrent_writer_falls_back_to_one_outcome_at_a_time(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unit test of the fallback: another ingest committing the same rows between the batch's look-ups and
    its inserts cannot be staged deterministically, so the bulk write is made to fail as it then would."""
    calls = []

    def conflicted(self: object, outs: list[object]) -> list[str]:
        calls.append(len(outs))
        raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed: ingest_files.key"))

    monkeypatch.setattr(ingest_module.CatalogWriter, "_bulk", conflicted)
    src = tmp_path / "in"
    total = series_folder(src, patients=2, slices=6)
    summary = ingest(platform, [src], source="b")
    assert calls and summary.ingested == total
    c = counts(platform)
    assert c["instances"] == c["series_sum"] == c["refs"] == total


def test_worker_processes_are_kept_and_set_up_per_ingest(platform: Platform, tmp_path: Path) -> None:
    """Two ingests with jobs=2 use the same worker processes; each call's objects land in its own store."""
    src = tmp_path / "in"
    total = series_folder(src, patients=2, slices=5)
    pool = worker_pool(2)
    ingest(platform, [src], source="b", jobs=2)
    pids = sorted(pool._processes)
    other_home = tmp_path / "other-home"
    other = Platform(load_settings(home=other_home, environment="development"))
    other.init()
    try:
        summary = ingest(other, [src], source="b", jobs=2)
        assert summary.ingested == total
        assert worker_pool(2) is pool and sorted(pool._processes) == pids
        stored_objects_intact(other)
        assert counts(other)["instances"] == total
    finally:
        other.close()


def test_torn_objects_from_a_crash_before_the_batch_sync_are_repaired(platform: Platform, tmp_path: Path) -> None:
    """Objects are fsynced per batch, not per put: a machine crash can leave one torn under its final name
    while its rows were never committed. The re-run stores the right bytes over it."""
    src = tmp_path / "in"
    total = series_folder(src, patients=1, slices=4)
    first_home = tmp_path / "first"
    first = Platform(load_settings(home=first_home, environment="development"))
    first.init()
    try:
        ingest(first, [src], source="b")
        with first.session() as s:
            sizes = {str(d): int(b) for d, b in s.execute(select(InstanceRow.digest, InstanceRow.bytes))}
    finally:
        first.close()
    store = platform.objects
    assert isinstance(store, LocalObjectStore)
    for k, (digest, size) in enumerate(sorted(sizes.items())):  # what a crash left: cut short, or zero-filled
        path = store.path_for(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(size if k % 2 else size // 3))
    summary = ingest(platform, [src], source="b")
    assert summary.ingested == total
    stored_objects_intact(platform)


def test_the_writer_makes_each_batch_durable_before_its_rows(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where syncfs is available, the workers' puts wait for no fsync and the writer flushes the store's file
    system once per catalog batch, before that batch's rows are committed."""
    src = tmp_path / "in"
    total = series_folder(src, patients=2, slices=4)  # 8 files: catalog batches of 3, 3 and 2
    monkeypatch.setattr(ingest_module, "BATCH", 3)
    monkeypatch.setattr(ingest_module, "MAX_BATCH", 3)
    rows_at_flush: list[int] = []
    fsynced: set[str] = set()
    real_fsync = os.fsync

    def fake_syncfs(fd: int) -> int:
        rows_at_flush.append(counts(platform)["instances"])
        os.sync()  # what syncfs does for this file system, and more
        return 0

    def fsync(fd: int) -> None:
        fsynced.add(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(local, "_SYNCFS", fake_syncfs)
    monkeypatch.setattr(os, "fsync", fsync)
    summary = ingest(platform, [src], source="b", jobs=1)
    assert summary.ingested == total
    assert rows_at_flush == [0, 3, 6]  # each flush came before its batch's rows
    store = platform.objects
    assert isinstance(store, LocalObjectStore)
    assert not [path for path in fsynced if path.startswith(str(store.root))]  # no put waited for the disk
    stored_objects_intact(platform)


def test_without_syncfs_each_task_fsyncs_its_own_objects(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in"
    total = series_folder(src, patients=1, slices=5)
    fsynced: set[tuple[int, int]] = set()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        fsynced.add((st.st_dev, st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(local, "_SYNCFS", None)
    monkeypatch.setattr(os, "fsync", fsync)
    assert ingest(platform, [src], source="b", jobs=1).ingested == total
    store = platform.objects
    assert isinstance(store, LocalObjectStore)
    with platform.session() as s:
        digests = list(s.scalars(select(InstanceRow.digest)))
    assert len(digests) == total
    for digest in digests:
        st = store.path_for(digest).stat()
        assert (st.st_dev, st.st_ino) in fsynced


@pytest.mark.parametrize(
    ("values", "kwargs"),
    [
        (np.random.default_rng(1).integers(-1024, 3000, (64, 64)).astype(np.int16), {"hounsfield": True}),
        (np.random.default_rng(2).normal(size=(50, 40)) * 100, {}),
        (np.random.default_rng(3).integers(0, 4096, (30, 30)).astype(np.uint16),
         {"bits_stored": 12, "monochrome1": True}),
        (np.random.default_rng(4).integers(0, 256, (20, 20, 3)).astype(np.uint8), {"bits_stored": 8}),
        (np.array([np.nan, 1.0, np.inf, 2.0, -np.inf, 7.0]), {}),
    ],
)
def test_pixel_stats_match_numpy_percentiles(values: np.ndarray, kwargs: dict[str, object]) -> None:
    """Integers stay integers and percentiles come from one partial sort: the numbers are numpy's own."""
    stats = pixel_stats(values, **kwargs)  # type: ignore[arg-type]
    assert stats is not None
    flat = values.astype(np.float64).reshape(-1)
    flat = flat[np.isfinite(flat)]
    if kwargs.get("monochrome1"):
        flat = 4095 - flat
    expected = np.percentile(flat, [1, 5, 50, 95, 99])
    got = [stats.p01, stats.p05, stats.p50, stats.p95, stats.p99]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)
    assert stats.mean == pytest.approx(flat.mean(), rel=1e-12) and stats.std == pytest.approx(flat.std(), rel=1e-9)


def test_pixel_stats_of_large_images_use_an_even_sample() -> None:
    big = np.arange(2048 * 2048, dtype=np.int32).reshape(2048, 2048)
    stats = pixel_stats(big)
    assert stats is not None
    assert stats.p50 == pytest.approx(big.size / 2, rel=0.001) and stats.mean == pytest.approx(big.size / 2, rel=0.001)


def test_insert_many_writes_what_core_insert_writes(platform: Platform) -> None:
    """The driver-level executemany of the bulk writer stores the same values as Core's insert (dates, timestamps,
    nulls, reserved column names), on each database."""
    from datetime import UTC, date, datetime

    from sqlalchemy import Table, insert

    from medcycle.catalog.tables import SourceRow
    from medcycle.store.bulk import insert_many

    def table(model: object) -> Table:
        return model.__table__  # type: ignore[attr-defined,no-any-return]

    now = datetime(2024, 5, 6, 7, 8, 9, 0, tzinfo=UTC)  # no microseconds: formats that drop ".000000" would differ
    with platform.session() as s:
        s.add(SourceRow(id="src1", name="src1", deid_profile={}, created_at=now))
        s.flush()
        conn = s.connection()
        for via in ("core", "fast"):
            patients = [{"id": f"{via}-p{i}", "sex": "F" if i else None, "created_at": now} for i in range(3)]
            studies = [{"uid": f"{via}-s{i}", "patient_id": f"{via}-p{i}", "source_id": "src1",
                        "study_date": date(2001, 2, 3) if i else None, "age_band": None, "created_at": now}
                       for i in range(3)]
            instances = [{"uid": f"{via}-i{i}", "digest": "d" * 64, "format": "dicom", "state": "ok", "rows": 512,
                          "columns": 256, "bytes": 2**40 + i, "mean": 0.5, "created_at": now} for i in range(2)]
            series = [{"uid": f"{via}-se", "study_uid": f"{via}-s0", "source_id": "src1", "n_instances": 0,
                       "bytes": 0, "created_at": now}]
            for model, values in ((PatientRow, patients), (StudyRow, studies), (SeriesRow, series)):
                if via == "core":
                    conn.execute(insert(table(model)), values)
                else:
                    insert_many(conn, table(model), values)
            for value in instances:
                value["series_uid"] = f"{via}-se"
            if via == "core":
                conn.execute(insert(table(InstanceRow)), instances)
            else:
                insert_many(conn, table(InstanceRow), instances)

    def rows(model: object, key: str, via: str) -> list[tuple[object, ...]]:
        with platform.session() as s:
            found = s.scalars(select(model).where(getattr(model, key).like(f"{via}-%")).order_by(getattr(model, key)))
            return [tuple(getattr(r, c.key) if c.key != key else getattr(r, c.key).split("-", 1)[1]
                          for c in table(model).c) for r in found]

    for model, key in ((PatientRow, "id"), (StudyRow, "uid"), (SeriesRow, "uid"), (InstanceRow, "uid")):
        core, fast = rows(model, key, "core"), rows(model, key, "fast")
        assert len(fast) == (3 if model in (PatientRow, StudyRow) else 1 if model is SeriesRow else 2)
        normalise = [tuple(v.replace("core-", "fast-") if isinstance(v, str) else v for v in r) for r in core]
        assert fast == normalise
    with platform.session() as s:
        stored = s.scalar(select(StudyRow).where(StudyRow.uid == "fast-s1"))
        assert stored is not None and stored.created_at == now and stored.study_date == date(2001, 2, 3)
