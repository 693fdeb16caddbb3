"""``summarize`` against sums over the rows themselves, on SQLite and PostgreSQL; and ``make_catalog``."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from sqlalchemy import func, select, update

from medcycle.catalog.query import parse, select_instances
from medcycle.catalog.summary import CatalogSummary, summarize
from medcycle.catalog.tables import InstanceRow, PatientRow, SeriesRow, SourceRow, StudyRow
from medcycle.errors import UsageError
from medcycle.platform import Platform
from medcycle.testing.catalog import CatalogFixture, make_catalog, source_name
from tests.catalog.test_query import oracle

COUNT_KEYS = ("patients", "studies", "series", "instances", "bytes")


def expected_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "patients": len({r["patient"] for r in rows}),
        "studies": len({r["study"] for r in rows}),
        "series": len({r["series"] for r in rows}),
        "instances": len(rows),
        "bytes": sum(r["bytes"] for r in rows),
    }


def expected_groups(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, int]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r)
    return {k: expected_counts(v) for k, v in groups.items()}


def actual_groups(groups: list[Any], keys: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, int]]:
    out = {}
    for g in groups:
        data = g.to_dict()
        out[tuple(data[k] for k in keys)] = {k: data[k] for k in COUNT_KEYS}
    return out


def check_against(summary: CatalogSummary, rows: list[dict[str, Any]]) -> None:
    ok = [r for r in rows if not r["quarantined"]]
    held = [r for r in rows if r["quarantined"]]
    assert summary.totals.to_dict() == expected_counts(ok)
    assert summary.quarantined == len(held)
    assert summary.quarantined_bytes == sum(r["bytes"] for r in held)
    src_keys = ("source", "modality", "body_part")
    assert actual_groups(summary.by_source_modality_body_part, src_keys) == expected_groups(ok, src_keys)
    assert actual_groups(summary.by_manufacturer, ("manufacturer",)) == expected_groups(ok, ("manufacturer",))
    assert actual_groups(summary.by_year, ("year",)) == expected_groups(ok, ("year",))


@pytest.fixture
def catalog(platform: Platform) -> tuple[CatalogFixture, list[dict[str, Any]]]:
    with platform.session() as s:
        fx = make_catalog(s, sources=3, patients=15, studies_per_patient=2, series_per_study=3,
                          instances_per_series=2, seed=5, quarantine_rate=0.2)
    return fx, all_rows(platform)


def all_rows(platform: Platform) -> list[dict[str, Any]]:
    with platform.session() as s:
        return [dict(r) for r in s.execute(select_instances(None, include_quarantined=True)).mappings()]


def test_summary_equals_sums_over_the_rows(platform: Platform,
                                           catalog: tuple[CatalogFixture, list[dict[str, Any]]]) -> None:
    fx, rows = catalog
    with platform.session() as s:
        summary = summarize(s)
    check_against(summary, rows)
    assert summary.query is None
    assert summary.totals.instances == fx.instances - fx.quarantined
    assert summary.totals.bytes == fx.bytes
    assert summary.quarantined == fx.quarantined > 0
    assert summary.quarantined_bytes == fx.quarantined_bytes
    assert summary.totals.patients == fx.patients
    assert {g.source for g in summary.by_source_modality_body_part} == set(fx.sources)
    assert sum(g.instances for g in summary.by_year) == summary.totals.instances


def test_fast_path_equals_the_filtered_path(platform: Platform,
                                            catalog: tuple[CatalogFixture, list[dict[str, Any]]]) -> None:
    with platform.session() as s:
        fast = summarize(s)
        slow = summarize(s, "instance is not null")
        blank = summarize(s, "   ")
    assert slow.query == "instance is not null"
    assert fast.to_dict() == {**slow.to_dict(), "query": None} == blank.to_dict()


FILTERS = [
    'modality == "CT"',
    'source == "clinic-b" and body_part in ["chest", "head"]',
    "year >= 2016 and not quarantined",
    'manufacturer contains "e" or kvp is null',
    "quarantined",  # quarantined instances are only ever counted apart
    "rows > 100000",  # nothing matches
]


def test_filtered_summary_equals_sums_over_matching_rows(
    platform: Platform, catalog: tuple[CatalogFixture, list[dict[str, Any]]],
) -> None:
    _, rows = catalog
    for text in FILTERS:
        tree = parse(text)
        with platform.session() as s:
            summary = summarize(s, text)
        assert summary.query == text
        check_against(summary, [r for r in rows if oracle(tree, r)])


def test_fully_quarantined_series_drop_out(platform: Platform,
                                           catalog: tuple[CatalogFixture, list[dict[str, Any]]]) -> None:
    _, rows = catalog
    with platform.session() as s:
        before = summarize(s)
        victim = s.scalars(select(SeriesRow.uid).order_by(SeriesRow.uid).limit(1)).one()
        s.execute(update(InstanceRow).where(InstanceRow.series_uid == victim).values(state="quarantined"))
    rows = all_rows(platform)
    with platform.session() as s:
        after = summarize(s)
    check_against(after, rows)
    assert after.totals.series == before.totals.series - 1
    assert after.quarantined > before.quarantined


def test_empty_catalog(platform: Platform) -> None:
    with platform.session() as s:
        for summary in (summarize(s), summarize(s, 'modality == "CT"')):
            assert summary.totals.to_dict() == dict.fromkeys(COUNT_KEYS, 0)
            assert summary.quarantined == summary.quarantined_bytes == 0
            assert summary.by_source_modality_body_part == summary.by_manufacturer == summary.by_year == []


def test_to_dict_shape(platform: Platform, catalog: tuple[CatalogFixture, list[dict[str, Any]]]) -> None:
    with platform.session() as s:
        data = summarize(s).to_dict()
    assert set(data) == {"query", "totals", "quarantined", "quarantined_bytes", "by_source_modality_body_part",
                         "by_manufacturer", "by_year"}
    first = data["by_source_modality_body_part"][0]
    assert set(first) == {"source", "modality", "body_part", *COUNT_KEYS}
    assert set(data["by_year"][0]) == {"year", *COUNT_KEYS}
    # Sorted by key, missing values last.
    years = [g["year"] for g in data["by_year"]]
    assert years == sorted(years, key=lambda y: (y is None, y or 0))


def test_bad_filter_is_a_usage_error(platform: Platform) -> None:
    with platform.session() as s, pytest.raises(UsageError, match="unknown field 'modalty'"):
        summarize(s, 'modalty == "CT"')


# -- make_catalog -------------------------------------------------------------------------------------
def test_make_catalog_sizes_and_invariants(platform: Platform) -> None:
    with platform.session() as s:
        fx = make_catalog(s, sources=2, patients=5, studies_per_patient=3, series_per_study=2,
                          instances_per_series=4, seed=1, quarantine_rate=0.25)
    assert (fx.patients, fx.studies, fx.series, fx.instances) == (5, 15, 30, 120)
    assert fx.sources == (source_name(0), source_name(1)) == ("clinic-a", "clinic-b")
    with platform.session() as s:
        assert s.scalar(select(func.count()).select_from(PatientRow)) == 5
        assert s.scalar(select(func.count()).select_from(StudyRow)) == 15
        assert s.scalar(select(func.count()).select_from(InstanceRow)) == 120
        assert s.scalar(select(func.count()).where(InstanceRow.state == "quarantined")) == fx.quarantined
        # The series' denormalised counts cover all its instances, quarantined ones included (as at ingest).
        per_series = dict(s.execute(select(InstanceRow.series_uid, func.count()).group_by(InstanceRow.series_uid))
                          .all())
        size = dict(s.execute(select(InstanceRow.series_uid, func.sum(InstanceRow.bytes))
                              .group_by(InstanceRow.series_uid)).all())
        for uid, n, nbytes in s.execute(select(SeriesRow.uid, SeriesRow.n_instances, SeriesRow.bytes)):
            assert (n, nbytes) == (per_series[uid], size[uid])
        # A second call with another seed reuses the sources and adds disjoint rows.
        more = make_catalog(s, sources=3, patients=2, seed=2)
        assert s.scalar(select(func.count()).select_from(SourceRow)) == 3
        assert s.scalar(select(func.count()).select_from(InstanceRow)) == 120 + more.instances


def test_make_catalog_is_deterministic(platform: Platform, tmp_path: Any) -> None:
    with platform.session() as s:
        make_catalog(s, patients=3, seed=9)
        first = sorted(s.execute(select(InstanceRow.uid, InstanceRow.digest, InstanceRow.bytes, InstanceRow.p50)))
    from medcycle.testing.platform import make_settings

    other = Platform(make_settings(tmp_path / "other"))
    other.init()
    try:
        with other.session() as s:
            make_catalog(s, patients=3, seed=9)
            second = sorted(s.execute(select(InstanceRow.uid, InstanceRow.digest, InstanceRow.bytes,
                                             InstanceRow.p50)))
    finally:
        other.close()
    assert [tuple(r) for r in first] == [tuple(r) for r in second]


def test_make_catalog_stores_objects(platform: Platform) -> None:
    with platform.session() as s:
        fx = make_catalog(s, patients=2, studies_per_patient=1, series_per_study=1, instances_per_series=2,
                          objects=platform.objects)
        rows = s.execute(select(InstanceRow.digest, InstanceRow.bytes)).all()
    assert len(rows) == fx.instances == 4
    for digest, size in rows:
        assert platform.objects.stat(digest).size == size
        assert len(platform.objects.get(digest)) == size
