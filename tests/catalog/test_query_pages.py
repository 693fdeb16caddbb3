"""``run_query``'s two page shapes (gather and sort; walk the uids) give the same rows, on both databases, and
the walk is taken for dense filters only."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import event

from medcycle.catalog import query as q
from medcycle.catalog.query import InstanceRow, run_query, select_in_uid_order, select_matching, unparse
from medcycle.platform import Platform
from medcycle.testing.catalog import CatalogFixture, make_catalog
from tests.catalog.test_query import HAND_WRITTEN, expected_uids, random_query


@pytest.fixture
def catalog(platform: Platform) -> tuple[CatalogFixture, list[dict[str, Any]]]:
    with platform.session() as s:
        fx = make_catalog(s, sources=3, patients=12, studies_per_patient=2, series_per_study=2,
                          instances_per_series=3, seed=11, quarantine_rate=0.15)
    with platform.session() as s:
        rows = [dict(r) for r in s.execute(q.select_instances(None, include_quarantined=True)).mappings()]
    return fx, rows


def page(platform: Platform, stmt: Any, limit: int, offset: int) -> list[str]:
    with platform.session(write=False) as s:
        return list(s.scalars(stmt.order_by(InstanceRow.uid).limit(limit).offset(offset)))


def test_both_page_shapes_give_the_same_pages(
    platform: Platform, catalog: tuple[CatalogFixture, list[dict[str, Any]]]
) -> None:
    _, rows = catalog
    rng = random.Random(77)
    texts = HAND_WRITTEN + [unparse(random_query(rng, rows)) for _ in range(60)]
    for text in texts:
        for include in (False, True):
            expected = sorted(expected_uids(rows, text, include_quarantined=include))
            walk = select_in_uid_order(text, include_quarantined=include)
            gather = select_matching(text, InstanceRow.uid, include_quarantined=include)
            for limit, offset in ((7, 0), (7, 5), (1000, 0)):
                want = expected[offset : offset + limit]
                assert page(platform, walk, limit, offset) == want, (text, include, limit, offset)
                assert page(platform, gather, limit, offset) == want, (text, include, limit, offset)


def test_run_query_walks_the_uids_for_dense_filters_only(
    sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One-image series: a filter matching a quarter of the catalog reads its first page in uid order (no sort of
    every match); one matching a few instances gathers them through the indexes. Same rows as the other shape."""
    with sqlite_platform.session() as s:
        make_catalog(s, sources=4, patients=300, studies_per_patient=1, series_per_study=1, instances_per_series=1,
                     seed=5, quarantine_rate=0.01)
    with sqlite_platform.session(write=False) as s:
        patient = s.scalar(q.select_matching(None, q.FIELDS["patient"].column).limit(1))
    dense, sparse = 'source == "clinic-a"', f'patient == "{patient}"'
    chosen: list[bool] = []
    decide = q._read_in_uid_order

    def spy(*args: Any) -> bool:
        chosen.append(decide(*args))
        return chosen[-1]

    monkeypatch.setattr(q, "_read_in_uid_order", spy)
    for text, walks in ((dense, True), (sparse, False)):
        chosen.clear()
        seen: list[tuple[str, Any]] = []

        def record(_c: Any, _cur: Any, statement: str, params: Any, *_a: Any) -> None:
            seen.append((statement, params))  # noqa: B023 - used within the iteration

        event.listen(sqlite_platform.engine, "before_cursor_execute", record)
        try:
            with sqlite_platform.session(write=False) as s:
                result = run_query(s, text, limit=10, offset=3)
        finally:
            event.remove(sqlite_platform.engine, "before_cursor_execute", record)
        assert chosen == ([walks] if result.total > 13 else [])
        with sqlite_platform.session(write=False) as s:
            expected = list(s.scalars(select_matching(text, InstanceRow.uid).order_by(InstanceRow.uid)))
        assert result.total == len(expected)
        assert [r["instance"] for r in result.rows] == expected[3:13]
        if walks:
            statement, params = next((st, p) for st, p in seen if "EXISTS" in st)
            with sqlite_platform.session(write=False) as s:
                plan = [str(r[-1]) for r in s.connection().exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {statement}", tuple(params))]
            assert not any("TEMP B-TREE" in p for p in plan), plan  # no sort of every match
