"""``summarize``: what data do we have, how much, from which sources.

Totals (patients, studies, series, instances, bytes) and breakdowns by source × modality × body
part, by manufacturer and by year. Without a filter the counts come from GROUP BYs over the series
table and its denormalised ``n_instances``/``bytes`` (no instance scan, so it stays fast at a million
instances); with a filter they come from the filtered instance view of :mod:`medcycle.catalog.query`.

Quarantined instances are never in the counts; they are totalled apart (``quarantined``).

As at ingest, ``SeriesRow.n_instances`` and ``SeriesRow.bytes`` count every instance of the series,
quarantined ones included; the fast path subtracts the quarantined ones, which it finds by
``instances.state`` (an index on that column keeps this from scanning every instance). A series with
nothing but quarantined instances is left out, as are its study and patient when nothing else of
them remains.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sqlalchemy import CompoundSelect, func, literal, select, union_all
from sqlalchemy.orm import Session

from medcycle.catalog.query import AnySelect, Everything, Expr, parse, select_matching
from medcycle.catalog.tables import InstanceRow, SeriesRow, SourceRow, StudyRow


@dataclass(frozen=True, slots=True, kw_only=True)
class Counts:
    """Distinct patients, studies and series, and instances and their bytes (quarantined excluded)."""

    patients: int = 0
    studies: int = 0
    series: int = 0
    instances: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceGroup(Counts):
    source: str
    modality: str | None
    body_part: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ManufacturerGroup(Counts):
    manufacturer: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class YearGroup(Counts):
    year: int | None


@dataclass(frozen=True, slots=True)
class CatalogSummary:
    """The answer to "what do we have"; groups are sorted by their keys (missing values last)."""

    query: str | None
    totals: Counts
    quarantined: int  # instances in quarantine (matching the query, if any)
    quarantined_bytes: int
    by_source_modality_body_part: list[SourceGroup]
    by_manufacturer: list[ManufacturerGroup]
    by_year: list[YearGroup]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "totals": self.totals.to_dict(),
            "quarantined": self.quarantined,
            "quarantined_bytes": self.quarantined_bytes,
            "by_source_modality_body_part": [g.to_dict() for g in self.by_source_modality_body_part],
            "by_manufacturer": [g.to_dict() for g in self.by_manufacturer],
            "by_year": [g.to_dict() for g in self.by_year],
        }


_KEYS = ("source_id", "modality", "body_part", "manufacturer", "year")
_GROUPINGS = {"totals": (), "source": ("source_id", "modality", "body_part"), "manufacturer": ("manufacturer",),
              "year": ("year",)}
_COUNTS = ("patients", "studies", "series", "instances", "bytes")
_Groups = dict[tuple[Any, ...], dict[str, int]]


def summarize(session: Session, expr: str | None = None) -> CatalogSummary:
    """Totals and breakdowns of the catalog, or of the instances matching ``expr``.

    One statement: the matching data is reduced to one row per series (its keys, patient, study,
    instance count and bytes), folded to one row per (keys, study) in a materialised CTE, then grouped
    four ways over that CTE. Without a filter the per-series rows come straight from the series table.
    """
    tree = parse(expr) if expr else Everything()
    groups: dict[str, _Groups] = {name: {} for name in _GROUPINGS}
    for row in session.execute(_statement(tree)):
        name = row[0]
        keys = tuple(row[1 + _KEYS.index(k)] for k in _GROUPINGS[name])
        groups[name][keys] = {k: int(row[6 + i] or 0) for i, k in enumerate(_COUNTS)}
    q_count, q_bytes = _quarantined(session, tree)
    names = dict(session.execute(select(SourceRow.id, SourceRow.name)).all())
    by_source = [SourceGroup(source=names.get(k[0], k[0]), modality=k[1], body_part=k[2], **c)
                 for k, c in _sorted(groups["source"])]
    return CatalogSummary(
        query=None if isinstance(tree, Everything) else expr,
        totals=Counts(**groups["totals"].get((), {})),
        quarantined=q_count,
        quarantined_bytes=q_bytes,
        by_source_modality_body_part=by_source,
        by_manufacturer=[ManufacturerGroup(manufacturer=k[0], **c) for k, c in _sorted(groups["manufacturer"])],
        by_year=[YearGroup(year=k[0], **c) for k, c in _sorted(groups["year"])],
    )


def _sorted(groups: _Groups) -> list[tuple[tuple[Any, ...], dict[str, int]]]:
    return sorted(groups.items(), key=lambda item: tuple((v is None, v if v is not None else 0) for v in item[0]))


def _per_series(tree: Expr) -> AnySelect:
    """One row per series with matching instances: its group keys, study, instances and bytes."""
    keys = [getattr(SeriesRow, k) for k in _KEYS]
    if isinstance(tree, Everything):  # denormalised counts less the (few) quarantined instances
        held = (
            select(InstanceRow.series_uid, func.count().label("n"), func.sum(InstanceRow.bytes).label("bytes"))
            .where(InstanceRow.state == "quarantined")
            .group_by(InstanceRow.series_uid)
            .subquery("held")
        )
        instances = SeriesRow.n_instances - func.coalesce(held.c.n, 0)
        return (
            select(*keys, SeriesRow.study_uid, instances.label("instances"),
                   (SeriesRow.bytes - func.coalesce(held.c.bytes, 0)).label("bytes"))
            .outerjoin(held, held.c.series_uid == SeriesRow.uid)
            .where(instances > 0)
        )
    matched = (
        select_matching(tree, InstanceRow.series_uid, func.count().label("instances"),
                        func.sum(InstanceRow.bytes).label("bytes"))
        .group_by(InstanceRow.series_uid)
        .subquery("matched")
    )
    return (
        select(*keys, SeriesRow.study_uid, matched.c.instances, matched.c.bytes)
        .select_from(matched)
        .join(SeriesRow, SeriesRow.uid == matched.c.series_uid)
    )


def _statement(tree: Expr) -> CompoundSelect[Any]:
    # Series of one study mostly share their keys, so the per-series rows are first folded into one row
    # per (keys, study): the four groupings then count distinct values over far fewer rows.
    per_series = _per_series(tree).subquery("per_series")
    s = per_series.c
    folded = [s[k] for k in (*_KEYS, "study_uid")]
    grouped = (
        select(*folded, func.count().label("series"), func.sum(s.instances).label("instances"),
               func.sum(s.bytes).label("bytes"))
        .group_by(*folded)
        .subquery("grouped")
    )
    per_study = (
        select(grouped, StudyRow.patient_id)
        .join(StudyRow, StudyRow.uid == grouped.c.study_uid)
        .cte("per_study")
        .prefix_with("MATERIALIZED")
    )
    c = per_study.c
    aggregates = (
        func.count(func.distinct(c.patient_id)),
        func.count(func.distinct(c.study_uid)),
        func.sum(c.series),
        func.sum(c.instances),
        func.sum(c.bytes),
    )
    parts = []
    for name, grouping in _GROUPINGS.items():
        keys = [c[k] if k in grouping else literal(None, c[k].type) for k in _KEYS]
        part = select(literal(name), *keys, *aggregates).select_from(per_study)
        parts.append(part.group_by(*(c[k] for k in grouping)) if grouping else part)
    return union_all(*parts)


def _quarantined(session: Session, tree: Expr) -> tuple[int, int]:
    stmt = select_matching(tree, func.count(), func.coalesce(func.sum(InstanceRow.bytes), 0),
                           include_quarantined=True).where(InstanceRow.state == "quarantined")
    n, size = session.execute(stmt).one()
    return int(n), int(size)
