"""The data catalog page (``/ui/data``): what we have, its distributions, and a look at the images.

Everything on the page follows one filter in the catalog's query language (``q``); a bad filter answers
400 with the parser's message and hint and nothing else. The sections:

* totals and breakdowns (source × modality × body part, manufacturer, year) from
  :func:`medcycle.catalog.summary.summarize`, drawn by ``static/js/catalog.js``;
* the distribution of one field (``field``): a histogram for numbers, bars for categories, a time
  histogram for dates, with a range form that rewrites the filter (``/ui/data/range``);
* series as a thumbnail grid (the middle matching instance of each, window preset ``preset`` on CT),
  whose images come from ``GET /v1/catalog/instances/{uid}/thumbnail.png`` (needs ``read-data``,
  audited there as ``image.view``);
* a page of matching instances.

Quarantined instances are left out and counted apart unless ``quarantined=1``; even then a quarantined
instance is never shown as a thumbnail (it may carry burned-in identifiers).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session
from starlette.responses import Response

from medcycle.api.deps import PlatformDep, SessionDep, requires
from medcycle.auth.roles import Permission, Principal
from medcycle.catalog.query import (
    FIELDS,
    And,
    Compare,
    Everything,
    Expr,
    FieldType,
    parse,
    run_query,
    select_matching,
    unparse,
)
from medcycle.catalog.render import Preset, parse_preset
from medcycle.catalog.sources import list_sources
from medcycle.catalog.summary import CatalogSummary, summarize
from medcycle.catalog.tables import IngestFileRow, IngestRunRow, InstanceRow, SeriesRow, SourceRow
from medcycle.errors import UsageError
from medcycle.objects.base import ObjectStore
from medcycle.web.render import renderer

router = APIRouter(prefix="/ui/data", include_in_schema=False)
Viewer = Annotated[Principal, requires(Permission.BROWSE)]  # the page lists items: not for annotators

PAGE_SIZE = 50  # instances per table page
GRID_SIZE = 24  # series per thumbnail page
THUMB_SIZE = 256  # pixels, longest side, as asked of the API (shown smaller, sharp on dense screens)
HIST_BINS = 30
DISTINCT_AS_BARS = 40  # a number field with at most this many values is drawn value by value
TOP_CATEGORIES = 30
RECENT_RUNS = 10
MAX_QUERY = 4096  # characters of filter in a page URL
DEFAULT_FIELD = "slice_thickness"
# Unique per row: a distribution of them says nothing.
IDENTIFIER_FIELDS = frozenset({"patient", "study", "series", "instance", "digest"})
EDA_FIELDS = tuple(name for name in FIELDS if name not in IDENTIFIER_FIELDS)
UNKNOWN = "(unknown)"
EXAMPLES = (
    'modality == "CT" and slice_thickness < 1.5',
    'body_part in ["chest", "abdomen"] and manufacturer contains "siemens"',
    'photometric == "MONOCHROME1"',
    'study_date >= "2020-01-01" and kvp is not null',
)


# -- parameters -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class View:
    """What the visitor asked for; :meth:`url` links to the page with some of it changed."""

    q: str = ""
    field: str = DEFAULT_FIELD
    preset: Preset = Preset.AUTO
    page: int = 1
    spage: int = 1
    quarantined: bool = False

    def params(self, **changes: Any) -> dict[str, str]:
        values = {"q": self.q, "field": self.field, "preset": self.preset.value, "page": self.page,
                  "spage": self.spage, "quarantined": self.quarantined, **changes}
        defaults = {"q": "", "field": DEFAULT_FIELD, "preset": Preset.AUTO.value, "page": 1, "spage": 1,
                    "quarantined": False}
        out: dict[str, str] = {}
        for key, value in values.items():
            if isinstance(value, Preset):
                value = value.value
            if value == defaults[key]:
                continue
            out[key] = "1" if value is True else str(value)
        return out

    def url(self, **changes: Any) -> str:
        query = urlencode(self.params(**changes))
        return f"/ui/data?{query}" if query else "/ui/data"


def _positive(name: str, value: str) -> int:
    try:
        number = int(value or "1")
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(f"{name} must be a whole number from 1, not {value!r}", hint="Use the page links.")
    return number


def _check_field(name: str) -> str:
    if name not in EDA_FIELDS:
        raise UsageError(f"cannot draw the distribution of {name!r}",
                         hint=f"Choose one of: {', '.join(EDA_FIELDS)}.")
    return name


def _check_query(q: str) -> str:
    if len(q) > MAX_QUERY:
        raise UsageError(f"query: longer than {MAX_QUERY} characters in a page address",
                         hint="Shorten the filter, or use `medcycle data query` for long ones.")
    return q


# -- distributions ----------------------------------------------------------------------------------
@dataclass(slots=True)
class Distribution:
    """The values of one field over the matching instances, ready to draw.

    ``kind`` is ``histogram`` (``x`` are bin starts, ``widths`` their widths), ``values`` (one bar per
    number), ``categories`` (the most common values; ``other`` counts the rest), ``dates`` (one entry per
    day, binned by the chart) or ``empty`` (no value at all).
    """

    field: str
    type: str
    description: str
    kind: str = "empty"
    x: list[Any] = dataclasses.field(default_factory=list)
    counts: list[int] = dataclasses.field(default_factory=list)
    widths: list[float] = dataclasses.field(default_factory=list)
    total: int = 0  # matching instances
    missing: int = 0  # of them without a value
    other: int = 0
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None

    @property
    def present(self) -> int:
        return self.total - self.missing

    def chart(self) -> dict[str, Any]:
        return {"field": self.field, "type": self.type, "kind": self.kind, "x": self.x, "counts": self.counts,
                "widths": self.widths}


def distribution(session: Session, tree: Expr, name: str, *, include_quarantined: bool = False) -> Distribution:
    """The distribution of field ``name`` over the instances matching ``tree`` (counts are instances)."""
    info = FIELDS[name]
    col = info.column
    out = Distribution(name, info.type.value, info.description)

    def matching(*columns: Any) -> Any:
        return select_matching(tree, *columns, include_quarantined=include_quarantined)

    if info.type is FieldType.NUMBER:
        _numbers(session, out, col, matching)
        return out
    total, present = session.execute(matching(func.count(), func.count(col))).one()
    out.total, out.missing = int(total), int(total) - int(present)
    if not present:
        return out
    if info.type is FieldType.DATE:
        rows = session.execute(matching(col, func.count()).where(col.is_not(None)).group_by(col).order_by(col))
        out.kind = "dates"
        for value, n in rows:
            out.x.append(value.isoformat() if isinstance(value, date) else str(value))
            out.counts.append(int(n))
        return out
    n = func.count()
    rows = session.execute(matching(col, n).where(col.is_not(None)).group_by(col).order_by(n.desc(), col)
                           .limit(TOP_CATEGORIES))
    out.kind = "categories"
    for value, count in rows:
        out.x.append(("true" if value else "false") if isinstance(value, bool) else str(value))
        out.counts.append(int(count))
    out.other = out.present - sum(out.counts)
    return out


def _numbers(session: Session, out: Distribution, col: Any, matching: Any) -> None:
    """Fill ``out`` for a number field: bars per value when there are few values, else a histogram.

    A field with few values (kVp, slice thickness) is counted value by value in one GROUP BY, nulls
    included, and its statistics follow from the groups. Otherwise the statistics come from one pass and
    the bins from one GROUP BY on the bin number, ``floor((v - min) / width)``.
    """
    few = session.scalars(matching(col).where(col.is_not(None)).distinct().limit(DISTINCT_AS_BARS + 1)).all()
    if len(few) <= DISTINCT_AS_BARS:
        groups = [(None if v is None else float(v), int(n))
                  for v, n in session.execute(matching(col, func.count()).group_by(col))]
        values = sorted((v, n) for v, n in groups if v is not None)
        out.total = sum(n for _, n in groups)
        out.missing = out.total - sum(n for _, n in values)
        if values:
            out.kind = "values"
            out.x, out.counts = [v for v, _ in values], [n for _, n in values]
            out.minimum, out.maximum = values[0][0], values[-1][0]
            out.mean = sum(v * n for v, n in values) / out.present
        return
    total, present, lo, hi, mean = session.execute(matching(
        func.count(), func.count(col), func.min(col), func.max(col), func.avg(col))).one()
    out.total, out.missing = int(total), int(total) - int(present)
    out.minimum, out.maximum, out.mean = float(lo), float(hi), float(mean)
    width = (out.maximum - out.minimum) / HIST_BINS
    scaled = (col - out.minimum) / width
    # SQLite's CAST truncates, which is floor for these non-negative values; PostgreSQL's rounds.
    postgres = session.get_bind().dialect.name == "postgresql"
    bucket = func.floor(scaled) if postgres else cast(scaled, Integer)
    counts = [0] * HIST_BINS
    for k, n in session.execute(matching(bucket, func.count()).where(col.is_not(None)).group_by(bucket)):
        counts[min(max(int(k), 0), HIST_BINS - 1)] += int(n)  # the maximum falls in bin HIST_BINS: the last
    out.kind = "histogram"
    out.x = [out.minimum + width * k for k in range(HIST_BINS)]
    out.widths = [width] * HIST_BINS
    out.counts = counts


def with_range(q: str, name: str, lo: float | None, hi: float | None) -> str:
    """``q`` with its bounds on ``name`` replaced by ``name >= lo and name <= hi`` (canonical text)."""
    tree = parse(q) if q.strip() else Everything()
    items: list[Expr] = [] if isinstance(tree, Everything) else list(tree.items) if isinstance(tree, And) else [tree]
    items = [item for item in items
             if not (isinstance(item, Compare) and item.field == name and item.op in ("<", "<=", ">", ">="))]
    for op, bound in ((">=", lo), ("<=", hi)):
        if bound is not None:
            items.append(Compare(name, op, int(bound) if bound == int(bound) else bound))
    if not items:
        return ""
    return unparse(items[0] if len(items) == 1 else And(tuple(items)))


def _bound(value: str) -> float | None:
    if not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise UsageError(f"{value!r} is not a number", hint="Give the range's ends as numbers, e.g. 0.5 and 2.5.")
    return round(number, 6)


# -- breakdowns -------------------------------------------------------------------------------------
def breakdown_charts(summary: CatalogSummary) -> dict[str, Any]:
    """The data ``catalog.js`` draws: a sunburst source → modality → body part, and bars by manufacturer and
    year, each with instances, series and bytes (the additive counts; parents are the sums of children)."""
    metrics = ("instances", "series", "bytes")
    nodes: dict[str, dict[str, Any]] = {}
    for g in summary.by_source_modality_body_part:
        path = [g.source, g.modality or UNKNOWN, g.body_part or UNKNOWN]
        for depth in range(1, 4):
            node_id = "/".join(path[:depth])
            node = nodes.setdefault(node_id, {"id": node_id, "label": path[depth - 1],
                                              "parent": "/".join(path[: depth - 1]), **dict.fromkeys(metrics, 0)})
            for m in metrics:
                node[m] += getattr(g, m)
    sunburst = {"ids": [n["id"] for n in nodes.values()], "labels": [n["label"] for n in nodes.values()],
                "parents": [n["parent"] for n in nodes.values()],
                **{m: [n[m] for n in nodes.values()] for m in metrics}}
    manufacturers = sorted(summary.by_manufacturer, key=lambda g: g.instances)
    return {
        "sunburst": sunburst,
        "manufacturer": {"labels": [g.manufacturer or UNKNOWN for g in manufacturers],
                         **{m: [getattr(g, m) for g in manufacturers] for m in metrics}},
        "year": {"labels": [str(g.year) if g.year is not None else UNKNOWN for g in summary.by_year],
                 **{m: [getattr(g, m) for g in summary.by_year] for m in metrics}},
    }


# -- series grid ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SeriesTile:
    uid: str
    source: str
    modality: str | None
    body_part: str | None
    manufacturer: str | None
    year: int | None
    instances: int  # matching this filter
    quarantined: int  # of them in quarantine (only counted when they are included)
    thumbnail: str | None  # the instance to show, None when nothing can be shown
    photometric: str | None
    reason: str | None  # why there is no thumbnail

    @property
    def is_ct(self) -> bool:
        return self.modality == "CT"


def series_page(session: Session, objects: ObjectStore, tree: Expr, *, page: int,
                include_quarantined: bool = False) -> tuple[int, list[SeriesTile]]:
    """The number of series with matching instances, and tile ``page`` of them (ordered by series uid)."""
    per_series = select_matching(tree, InstanceRow.series_uid, include_quarantined=include_quarantined)
    total = int(session.scalar(select(func.count()).select_from(per_series.distinct().subquery())) or 0)
    uids = list(session.scalars(per_series.group_by(InstanceRow.series_uid).order_by(InstanceRow.series_uid)
                                .limit(GRID_SIZE).offset((page - 1) * GRID_SIZE)))
    if not uids:
        return total, []
    members: dict[str, list[tuple[int, str, str, str | None, str]]] = defaultdict(list)
    stmt = select_matching(tree, InstanceRow.series_uid, InstanceRow.instance_number, InstanceRow.uid,
                           InstanceRow.digest, InstanceRow.photometric, InstanceRow.state,
                           include_quarantined=include_quarantined).where(InstanceRow.series_uid.in_(uids))
    for series_uid, number, uid, digest, photometric, state in session.execute(stmt):
        members[series_uid].append((number if number is not None else 0, uid, digest, photometric, state))
    series = {row.uid: row for row in session.scalars(select(SeriesRow).where(SeriesRow.uid.in_(uids)))}
    sources = dict(session.execute(select(SourceRow.id, SourceRow.name)).all())
    tiles = []
    for uid in uids:
        row = series[uid]
        found = sorted(members[uid])
        shown = [m for m in found if m[4] == "ok"]
        middle = shown[len(shown) // 2] if shown else None
        reason = None
        if middle is None:
            reason = "quarantined: not shown"
        elif not objects.exists(middle[2]):
            reason, middle = "image not in the object store", None
        tiles.append(SeriesTile(
            uid=uid, source=sources.get(row.source_id, row.source_id), modality=row.modality,
            body_part=row.body_part, manufacturer=row.manufacturer, year=row.year, instances=len(found),
            quarantined=len(found) - len(shown), thumbnail=middle[1] if middle else None,
            photometric=middle[3] if middle else None, reason=reason,
        ))
    return total, tiles


# -- ingest runs ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class IngestRun:
    source: str
    state: str
    actor: str
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]
    reasons: list[tuple[str, str, int]]  # (outcome, reason, files) for rejected and quarantined files


def recent_runs(session: Session, limit: int = RECENT_RUNS) -> list[IngestRun]:
    """The latest ingest runs with their counts, and why files were rejected or quarantined (reasons never
    hold identifiers)."""
    rows = session.execute(select(IngestRunRow, SourceRow.name).join(SourceRow, SourceRow.id == IngestRunRow.source_id)
                           .order_by(IngestRunRow.started_at.desc()).limit(limit)).all()
    ids = [run.id for run, _ in rows]
    reasons: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    if ids:
        n = func.count()
        stmt = (select(IngestFileRow.run_id, IngestFileRow.outcome, IngestFileRow.reason, n)
                .where(IngestFileRow.run_id.in_(ids), IngestFileRow.outcome.in_(("rejected", "quarantined")))
                .group_by(IngestFileRow.run_id, IngestFileRow.outcome, IngestFileRow.reason)
                .order_by(n.desc()))
        for run_id, outcome, reason, count in session.execute(stmt):
            reasons[run_id].append((outcome, reason or "no reason recorded", int(count)))
    return [IngestRun(name, run.state, run.actor, run.started_at, run.finished_at,
                      {k: int(v) for k, v in (run.counts or {}).items()}, reasons[run.id]) for run, name in rows]


def thumbnail_url(uid: str, preset: str) -> str:
    """The API's rendering of one instance (``read-data``; each load is audited as ``image.view``)."""
    return f"/v1/catalog/instances/{quote(uid)}/thumbnail.png?{urlencode({'preset': preset, 'size': THUMB_SIZE})}"


def equals(name: str, value: str) -> str:
    """The query ``name == "value"``, quoted and escaped by the query language itself."""
    return unparse(Compare(name, "==", value))


def _pages(total: int, size: int) -> int:
    return max(1, -(-total // size))


# -- routes -----------------------------------------------------------------------------------------
@router.get("")
def catalog_page(
    request: Request, platform: PlatformDep, session: SessionDep, principal: Viewer,
    q: str = "", field: str = DEFAULT_FIELD, preset: str = Preset.AUTO.value, page: str = "1", spage: str = "1",
    quarantined: str = "",
) -> Response:
    view = View(q=_check_query(q.strip()), field=_check_field(field), preset=parse_preset(preset),
                page=_positive("page", page), spage=_positive("spage", spage), quarantined=quarantined == "1")
    common: dict[str, Any] = {
        "view": view, "fields": FIELDS, "eda_fields": EDA_FIELDS, "examples": EXAMPLES,
        "presets": [p.value for p in Preset], "can_read": principal.can(Permission.READ_DATA),
    }
    render = renderer(request).render
    try:
        tree = parse(view.q)
    except UsageError as exc:
        return render(request, "catalog.html", principal=principal, active="data", status_code=400,
                      error=exc, **common)
    include = view.quarantined
    summary = summarize(session, view.q or None)
    eda = distribution(session, tree, view.field, include_quarantined=include)
    n_series, tiles = series_page(session, platform.objects, tree, page=view.spage, include_quarantined=include)
    table = run_query(session, tree, limit=PAGE_SIZE, offset=(view.page - 1) * PAGE_SIZE,
                      include_quarantined=include)
    return render(
        request, "catalog.html", principal=principal, active="data", error=None, **common,
        summary=summary, charts=breakdown_charts(summary), eda=eda, tiles=tiles, n_series=n_series,
        series_pages=_pages(n_series, GRID_SIZE), table=table, table_pages=_pages(table.total, PAGE_SIZE),
        page_size=PAGE_SIZE, grid_size=GRID_SIZE, thumbnail_url=thumbnail_url, equals=equals,
        sources=list_sources(session), runs=recent_runs(session),
    )


@router.get("/range")
def apply_range(
    principal: Viewer, q: str = "", field: str = DEFAULT_FIELD, lo: str = "", hi: str = "",
    preset: str = Preset.AUTO.value, quarantined: str = "",
) -> Response:
    """Rewrite the filter with ``lo <= field <= hi`` (the distribution's range form) and show the result."""
    name = _check_field(field)
    if FIELDS[name].type is not FieldType.NUMBER:
        raise UsageError(f"{name!r} is not a number field", hint="Ranges apply to number fields only.")
    low, high = _bound(lo), _bound(hi)
    if low is not None and high is not None and low > high:
        low, high = high, low
    view = View(q=with_range(_check_query(q), name, low, high), field=name, preset=parse_preset(preset),
                quarantined=quarantined == "1")
    return RedirectResponse(view.url(), status_code=303)
