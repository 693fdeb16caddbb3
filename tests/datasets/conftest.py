"""Fixtures for dataset tests: a small synthetic catalog with real objects, labels, and a 'remote' store."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.catalog.tables import SourceRow, StudyRow
from medcycle.datasets import labels, versions
from medcycle.datasets.items import create_dataset
from medcycle.datasets.splits import ratios_policy
from medcycle.errors import BackendUnavailable
from medcycle.objects.base import ObjectInfo, ObjectStore, Source
from medcycle.platform import Platform
from medcycle.store.base import new_id, utcnow
from medcycle.testing.catalog import CatalogFixture, make_catalog, source_name


class RemoteStore(ObjectStore):
    """Wraps a store so it is not a LocalObjectStore (pull goes through the cache), counting what is read.

    It hands out the inner store's open files, as a folder store behind another front would (pull may link
    them); with ``stream`` it hands out the bytes in memory instead, as a network store (S3) would.
    ``fail_after`` makes every open after the first N fail, like a network that drops mid-pull.
    """

    def __init__(self, inner: ObjectStore, *, fail_after: int | None = None, stream: bool = False) -> None:
        super().__init__(workers=4)
        self.inner = inner
        self.url = f"remote+{inner.url}"
        self.fail_after = fail_after
        self.stream = stream
        self.opened: list[str] = []
        self.bytes_read = 0
        self._lock = threading.Lock()

    def put(self, source: Source, *, expected_digest: str | None = None) -> ObjectInfo:
        return self.inner.put(source, expected_digest=expected_digest)

    def _open_raw(self, digest: str) -> tuple[BinaryIO, int]:
        with self._lock:
            if self.fail_after is not None and len(self.opened) >= self.fail_after:
                raise BackendUnavailable("simulated network failure")
            raw, size = self.inner._open_raw(digest)
            self.opened.append(digest)
            self.bytes_read += size
        if self.stream:
            with raw:
                return io.BytesIO(raw.read()), size
        return raw, size

    def stat(self, digest: str) -> ObjectInfo:
        return self.inner.stat(digest)

    def delete(self, digest: str) -> bool:
        return self.inner.delete(digest)

    def list(self) -> Iterator[ObjectInfo]:
        return self.inner.list()


def use_remote(platform: Platform, *, fail_after: int | None = None, stream: bool = False) -> RemoteStore:
    inner = platform.objects
    while isinstance(inner, RemoteStore):
        inner = inner.inner
    remote = RemoteStore(inner, fail_after=fail_after, stream=stream)
    platform.__dict__["objects"] = remote
    return remote


@dataclass
class Catalog:
    fixture: CatalogFixture
    studies: list[str]


def add_sources(session: Session, n: int = 2) -> None:
    """The sources make_catalog uses, with licences and de-identification profiles of their own."""
    for i in range(n):
        session.add(SourceRow(id=new_id(), name=source_name(i), description=f"site {i + 1}",
                              licence=("CC-BY-4.0", "research-only")[i % 2], consent_basis="research waiver",
                              created_at=utcnow(),
                              deid_profile={"profile": "PS3.15 basic", "retain_longitudinal_dates_modified": True,
                                            "retain_device_identity": i == 0}))
    session.flush()


def seed_home_catalog(patients: int, instances_per_series: int = 1) -> list[str]:
    """A one-source catalog of ``patients`` one-series studies in the home the settings name (a CLI test's home,
    initialised); its study UIDs, sorted."""
    from medcycle.settings import load_settings

    with Platform(load_settings()) as p, p.session() as s:
        add_sources(s, 1)
        make_catalog(s, sources=1, patients=patients, studies_per_patient=1, series_per_study=1,
                     instances_per_series=instances_per_series, objects=p.objects, seed=3)
        s.flush()
        return sorted(s.scalars(select(StudyRow.uid)))


@pytest.fixture
def catalog(platform: Platform) -> Catalog:
    """12 patients x 2 studies x 2 series x 2 instances = 96 instances, with stored objects, on 2 sources."""
    with platform.session() as s:
        add_sources(s)
        fx = make_catalog(s, sources=2, patients=12, studies_per_patient=2, series_per_study=2,
                          instances_per_series=2, objects=platform.objects, seed=7)
    with platform.session() as s:
        studies = sorted(s.scalars(select(StudyRow.uid)))
    return Catalog(fx, studies)


def labels_csv(studies: list[str], flip: set[str] | None = None) -> str:
    """``study,label``: every third study is 'pneumonia' (flipped for the uids in ``flip``)."""
    rows = ["study,label"]
    for i, uid in enumerate(studies):
        label = "pneumonia" if i % 3 == 0 else "normal"
        if flip and uid in flip:
            label = "normal" if label == "pneumonia" else "pneumonia"
        rows.append(f"{uid},{label}")
    return "\n".join(rows) + "\n"


@pytest.fixture
def frozen(platform: Platform, catalog: Catalog) -> str:
    """Dataset 'cxr' with every instance, study labels, a 60/20/20 split, frozen and tagged v1.0."""
    with platform.session() as s:
        create_dataset(s, "cxr", query="", description="test dataset")
        labels.import_labels(s, platform.objects, "cxr", labels_csv(catalog.studies), origin="labels.csv")
        versions.freeze(s, platform.objects, "cxr", tag="v1.0", policy=ratios_policy("train=0.6,val=0.2,test=0.2"))
    return "cxr@v1.0"
