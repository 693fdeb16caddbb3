"""``summarize`` against sums over the rows themselves, on SQLite and PostgreSQL; the rollup it reads
(kept by triggers) against recomputation after every kind of change; and ``make_catalog``."""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from medcycle.catalog import rollup
from medcycle.catalog.query import parse, select_instances
from medcycle.catalog.summary import CatalogSummary, summarize
from medcycle.catalog.tables import (
    InstanceRow,
    PatientRow,
    RollupCellRow,
    RollupReachRow,
    SeriesRow,
    SourceRow,
    StudyRow,
)
from medcycle.errors import UsageError
from medcycle.platform import Platform
from medcycle.testing.catalog import CatalogFixture, make_catalog, source_name
from medcycle.testing.platform import make_settings
from medcycle.testing.sql import statements
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
    for expr in FILTERS:
        tree = parse(expr)
        with platform.session() as s:
            summary = summarize(s, expr)
        assert summary.query == expr
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


# -- the rollup the fast path reads ----------------------------------------------------------------------
def assert_rollup_exact(platform: Platform) -> None:
    """The rollup equals a recomputation from the rows, and the fast summary equals the instance-level one."""
    with platform.session() as s:
        report = rollup.check(s)
        assert report.ok, report.differences
        fast = summarize(s).to_dict()
        slow = summarize(s, "instance is not null").to_dict()
    assert fast == {**slow, "query": None}
    check_against(summarize_once(platform), all_rows(platform))


def summarize_once(platform: Platform) -> CatalogSummary:
    with platform.session(write=False) as s:
        return summarize(s)


def add_instance(s: Session, series_uid: str, uid: str, size: int, state: str = "ok") -> None:
    s.add(InstanceRow(uid=uid, series_uid=series_uid, digest=uid.ljust(64, "0")[:64], format="dicom", state=state,
                      bytes=size))
    s.flush()


def test_rollup_follows_every_kind_of_change(platform: Platform,
                                             catalog: tuple[CatalogFixture, list[dict[str, Any]]]) -> None:
    """Inserts, quarantine and release, size changes, deletes, instances and series moving, series keys
    changing one row and many rows at a time: after each, the rollup is exactly a recomputation."""
    assert_rollup_exact(platform)
    with platform.session() as s:
        series = list(s.scalars(select(SeriesRow.uid).order_by(SeriesRow.uid)))
        studies = list(s.scalars(select(StudyRow.uid).order_by(StudyRow.uid)))
        source_id = s.scalars(select(SourceRow.id).order_by(SourceRow.name)).first()
        assert source_id is not None
        # A new patient, study and series through the ORM, as ingest writes them.
        for row in (PatientRow(id="p-new"), StudyRow(uid="st-new", patient_id="p-new", source_id=source_id)):
            s.add(row)
            s.flush()
        s.add(SeriesRow(uid="se-new", study_uid="st-new", source_id=source_id, modality="US", body_part=None,
                        manufacturer="Acme | 3:x", year=None))
        s.flush()
        add_instance(s, "se-new", "i-new-1", 100)
        add_instance(s, "se-new", "i-new-2", 50, state="quarantined")
    assert_rollup_exact(platform)
    with platform.session() as s:  # quarantine a whole series (many rows), release one, resize one
        s.execute(update(InstanceRow).where(InstanceRow.series_uid == series[0]).values(state="quarantined"))
        first = s.scalars(select(InstanceRow.uid).where(InstanceRow.series_uid == series[0])).first()
        s.execute(update(InstanceRow).where(InstanceRow.uid == first).values(state="ok", bytes=7))
    assert_rollup_exact(platform)
    with platform.session() as s:  # instances move between series; a series loses all of them
        s.execute(update(InstanceRow).where(InstanceRow.series_uid == series[1]).values(series_uid=series[2]))
        s.execute(delete(InstanceRow).where(InstanceRow.series_uid == series[3]))
    assert_rollup_exact(platform)
    with platform.session() as s:  # keys change: one series, then every series of a study at once
        s.execute(update(SeriesRow).where(SeriesRow.uid == series[4]).values(modality=None, year=1999))
        s.execute(update(SeriesRow).where(SeriesRow.study_uid == studies[0]).values(body_part="knee-ish"))
        s.execute(update(SeriesRow).where(SeriesRow.study_uid == studies[1])
                  .values(manufacturer="Other", source_id=source_id))
    assert_rollup_exact(platform)
    with platform.session() as s:  # a series moves to another study (of another patient), then one is deleted
        s.execute(update(SeriesRow).where(SeriesRow.uid == series[5]).values(study_uid="st-new"))
        s.execute(delete(InstanceRow).where(InstanceRow.series_uid == series[6]))
        s.execute(delete(SeriesRow).where(SeriesRow.uid == series[6]))
    assert_rollup_exact(platform)
    with platform.session() as s:  # everything goes
        s.execute(delete(InstanceRow))
    with platform.session() as s:
        assert s.scalar(select(func.count()).select_from(RollupCellRow)) == 0
        assert s.scalar(select(func.count()).select_from(RollupReachRow)) == 0
    assert_rollup_exact(platform)


def test_a_study_with_counted_series_cannot_change_patient(
    platform: Platform, catalog: tuple[CatalogFixture, list[dict[str, Any]]],
) -> None:
    with platform.session() as s:
        study, patient = s.execute(select(StudyRow.uid, StudyRow.patient_id).order_by(StudyRow.uid)).first() or ("", "")
        other = s.scalars(select(PatientRow.id).where(PatientRow.id != patient)).first()
    with pytest.raises(DBAPIError, match="cannot move to another patient"), platform.session() as s:
        s.execute(update(StudyRow).where(StudyRow.uid == study).values(patient_id=other))
    assert_rollup_exact(platform)


def test_check_reports_drift_and_rebuild_repairs_it(platform: Platform,
                                                   catalog: tuple[CatalogFixture, list[dict[str, Any]]]) -> None:
    with platform.session() as s:
        victim = s.scalars(select(SeriesRow.uid).where(SeriesRow.ok_instances > 0).order_by(SeriesRow.uid)).first()
        s.execute(text(f"UPDATE {rollup.CELLS} SET instances = instances + 5"))
        s.execute(update(SeriesRow).where(SeriesRow.uid == victim).values(ok_bytes=SeriesRow.ok_bytes + 1))
    with platform.session() as s:
        report = rollup.check(s)
    assert not report.ok
    assert any(f"series {victim}" in d for d in report.differences)
    assert any(rollup.CELLS in d for d in report.differences)
    assert report.to_dict()["ok"] is False and report.series_checked == 90
    with platform.session() as s:
        rollup.rebuild(s.connection())
    assert_rollup_exact(platform)


@pytest.mark.parametrize("value", [None, "", "CT", "a|b", "3:xyz", "~", "Ünïcødé ✓", "x" * 128])
def test_group_keys_are_the_same_in_python_and_sql(platform: Platform, value: str | None) -> None:
    with platform.session() as s:
        source_id = make_catalog(s, sources=1, patients=1, studies_per_patient=1, series_per_study=1).source_ids[0]
        short = None if value is None else value[:16]  # modality is at most 16 characters
        s.execute(update(SeriesRow).values(modality=short, manufacturer=value))
    with platform.session() as s:
        keys = set(s.scalars(select(RollupCellRow.cell_key)))
        body_part, year = s.execute(select(SeriesRow.body_part, SeriesRow.year)).one()
    assert keys == {rollup.encode_key(rollup.CELL_KEYS, [source_id, short, body_part, value, year])}
    assert_rollup_exact(platform)


def test_key_encoding_is_unambiguous() -> None:
    cols = ("modality", "manufacturer")
    seen = {rollup.encode_key(cols, v) for v in [("a|b", "c"), ("a", "b|c"), (None, "c"), ("~", "c"), ("", "c")]}
    assert len(seen) == 5
    assert rollup.encode_key((), ()) == "*"
    assert rollup.encode_key(("year",), (2019,)) == "2019"


def test_summary_without_a_filter_reads_only_the_rollup(platform: Platform,
                                                        catalog: tuple[CatalogFixture, list[dict[str, Any]]]) -> None:
    with statements(platform.engine) as seen, platform.session(write=False) as s:
        summarize(s)
    tables = [set(re.findall(r"\bFROM\s+(\w+)", q)) for q in seen if "FROM" in q]
    # The rollup in one statement (one snapshot), then the source names.
    assert tables == [{rollup.CELLS, rollup.REACH}, {"sources"}]


def test_backfill_of_a_catalog_written_before_the_rollup(platform: Platform) -> None:
    """What migration 0007 does on an existing catalog: rows written with no triggers (zero counts, empty
    rollup), then ``rebuild`` and ``install``: exact, and the triggers follow later writes."""
    with platform.session() as s:
        rollup.uninstall(s.connection())
        fx = make_catalog(s, sources=2, patients=6, studies_per_patient=2, series_per_study=2,
                          instances_per_series=3, seed=11, quarantine_rate=0.3)
        assert s.scalar(select(func.count()).select_from(RollupCellRow)) == 0
        assert not rollup.check(s).ok
        rollup.rebuild(s.connection())
        rollup.install(s.connection())
    assert_rollup_exact(platform)
    assert summarize_once(platform).totals.instances == fx.instances - fx.quarantined
    with platform.session() as s:
        make_catalog(s, sources=2, patients=2, seed=12)
    assert_rollup_exact(platform)


def test_concurrent_writers_on_postgresql_take_turns(tmp_path: Path, postgres_url: str) -> None:
    """Two transactions give the first ok instance to two series (in different cells) of one study: the
    second waits for the first (the advisory lock), then sees its series, so the study is counted once."""
    p = Platform(make_settings(tmp_path / "home", database_url=postgres_url))
    p.init()
    try:
        with p.session() as s:
            make_catalog(s, sources=1, patients=1, studies_per_patient=1, series_per_study=2, instances_per_series=1)
            a, b = s.scalars(select(SeriesRow.uid).order_by(SeriesRow.uid))
            s.execute(delete(InstanceRow))
            # Different cells, so the writers share no rollup row that would make them wait anyway.
            s.execute(update(SeriesRow).where(SeriesRow.uid == b).values(body_part="elsewhere"))
        first = p.sessions()
        add_instance(first, a, "i-first", 10)  # holds the lock until it commits
        done = threading.Event()

        def second() -> None:
            with p.session() as s:
                add_instance(s, b, "i-second", 20)
            done.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert not done.wait(0.5), "the second writer must wait for the first"
        first.commit()
        first.close()
        thread.join(10)
        assert done.is_set()
        with p.session() as s:
            assert rollup.check(s).ok
            totals = summarize(s).totals
        assert (totals.patients, totals.studies, totals.series, totals.instances) == (1, 1, 2, 2)
    finally:
        p.close()


def test_trigger_lookups_use_the_study_and_patient_indexes(sqlite_platform: Platform) -> None:
    """The "another series of this study (patient) in the group?" look-ups stay index searches among a
    few rows; a scan here made bulk loads quadratic."""
    sql = rollup._Sql("sqlite")
    with sqlite_platform.session() as s:
        make_catalog(s, sources=2, patients=20)
        for keys in rollup.BREAKDOWNS.values():
            study, patient = sql.lookups("r", keys)
            plan = [str(row[-1]) for row in s.execute(text(
                f"EXPLAIN QUERY PLAN SELECT {study}, {patient} FROM series r WHERE r.uid = 'x'"))]
            assert not [p for p in plan if p.startswith("SCAN")], plan
            assert sum("ix_series_study_uid" in p for p in plan) == 2, plan
            assert any("ix_studies_patient_id" in p for p in plan), plan
