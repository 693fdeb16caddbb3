"""The catalog's filter language: parsed by a tokenizer and a recursive-descent parser, never ``eval``.

A query is a boolean expression over the fields of a flattened instance view (:data:`FIELDS`)::

    modality == "CT" and source == "clinic-a" and slice_thickness < 1.5
    body_part in ["chest", "abdomen"] and not (manufacturer contains "siemens")
    study_date >= "2019-01-01" and kvp is not null

Grammar (keywords are case-insensitive; field names are exact)::

    query     := [or_expr]                       the empty query matches everything
    or_expr   := and_expr ("or" and_expr)*
    and_expr  := not_expr ("and" not_expr)*
    not_expr  := "not" not_expr | "(" or_expr ")" | predicate
    predicate := FIELD ("==" | "!=" | "<" | "<=" | ">" | ">=") literal
               | FIELD ["not"] "in" "[" [literal ("," literal)* [","]] "]"
               | FIELD "contains" STRING             case-insensitive substring
               | FIELD "is" ["not"] "null"
               | FIELD                               a boolean field on its own
    literal   := STRING | NUMBER | "true" | "false"  strings in "…" or '…' with \\ escapes;
                                                      dates are strings "YYYY-MM-DD" on date fields

Types are checked at parse time: ordering works on number and date fields only, ``contains`` on
string fields only, and every literal must match its field's type. Errors are
:class:`~medcycle.errors.UsageError` naming the 1-based column.

Missing values: a null field matches ``is null``, ``!=`` and ``not in`` (it differs from every value),
and nothing else; ``not`` is plain two-valued negation, so ``not (x == 1)`` is the same as ``x != 1``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Float,
    SQLColumnExpression,
    and_,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session

from medcycle.catalog.fields import (  # re-exported: the query API in one place
    FIELDS,
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_LIMIT,
    MAX_LIST,
    AnySelect,
    Field,
    FieldType,
    Level,
)
from medcycle.catalog.query_syntax import (
    And,
    Compare,
    Contains,
    Everything,
    Expr,
    InList,
    IsNull,
    Not,
    Or,
    Value,
    fields_used,
    parse,
    tokenize,
    unparse,
)
from medcycle.catalog.tables import InstanceRow, PatientRow, RollupCellRow, SeriesRow, SourceRow, StudyRow
from medcycle.errors import UsageError

__all__ = [
    "FIELDS", "MAX_CONDITIONS", "MAX_DEPTH", "MAX_LENGTH", "MAX_LIMIT", "MAX_LIST", "And", "AnySelect", "Compare",
    "Contains",
    "Everything", "Expr", "Field", "FieldType", "InList", "IsNull", "Level", "Not", "Or", "QueryResult", "Value",
    "compile_query", "count", "fields_used", "instance_free", "parse", "run_query", "select_in_uid_order",
    "select_instances", "select_matching", "select_series_matching", "tokenize", "unparse",
]

# -- compiler ---------------------------------------------------------------------------------------
_FLIP = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
_OPERATORS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
              ">=": operator.ge}


def _as_expr(expr: str | Expr | None) -> Expr:
    if expr is None:
        return Everything()
    return parse(expr) if isinstance(expr, str) else expr


def compile_query(expr: str | Expr | None) -> ColumnElement[bool]:
    """A WHERE clause over the tables of :func:`select_instances` (two-valued: nulls never leak)."""
    return _compile(_as_expr(expr), False)


def _bind(value: Value) -> Any:
    # Bind a float as a float whatever the column type, so "rows == 511.5" never becomes "rows = 512".
    return literal(value, Float()) if isinstance(value, float) else value


def _compile(node: Expr, negate: bool) -> ColumnElement[bool]:
    # Negation is pushed down to the leaves (De Morgan), so no SQL NOT ever meets a NULL and every
    # leaf says explicitly whether a missing value matches.
    if isinstance(node, Everything):
        return false() if negate else true()
    if isinstance(node, And | Or):
        parts = [_compile(item, negate) for item in node.items]
        return or_(*parts) if isinstance(node, And) == negate else and_(*parts)
    if isinstance(node, Not):
        return _compile(node.operand, not negate)
    info = FIELDS[node.field]
    col = info.column
    if isinstance(node, IsNull):
        return col.is_(None) if node.negated == negate else col.is_not(None)
    if info.type is FieldType.BOOLEAN:
        assert isinstance(node, Compare | InList)
        wanted = {bool(v) for v in ((node.value,) if isinstance(node, Compare) else node.values)}
        inverted = (node.op == "!=") if isinstance(node, Compare) else node.negated
        if inverted != negate:
            wanted = {True, False} - wanted
        flag = cast(ColumnElement[bool], col)
        return true() if len(wanted) == 2 else false() if not wanted else flag if True in wanted else not_(flag)
    if isinstance(node, Compare):
        op = _FLIP[node.op] if negate else node.op
        cond: ColumnElement[bool] = _OPERATORS[op](col, _bind(node.value))
        matches_null = (node.op == "!=") != negate
    elif isinstance(node, InList):
        inverted = node.negated != negate
        values = [_bind(v) for v in node.values]
        cond = col.not_in(values) if inverted else col.in_(values)
        matches_null = inverted
    else:
        cond = col.icontains(node.value, autoescape=True)
        if negate:
            cond = not_(cond)
        matches_null = negate
    return or_(col.is_(None), cond) if matches_null else cond


# -- running ----------------------------------------------------------------------------------------
def _join(stmt: AnySelect, levels: set[Level]) -> AnySelect:
    """Join instances to the tables ``levels`` need (inner joins along non-null foreign keys)."""
    if levels & {Level.SERIES, Level.STUDY, Level.PATIENT, Level.SOURCE}:
        stmt = stmt.join(SeriesRow, SeriesRow.uid == InstanceRow.series_uid)
    if levels & {Level.STUDY, Level.PATIENT}:
        stmt = stmt.join(StudyRow, StudyRow.uid == SeriesRow.study_uid)
    if Level.PATIENT in levels:
        stmt = stmt.join(PatientRow, PatientRow.id == StudyRow.patient_id)
    if Level.SOURCE in levels:
        stmt = stmt.join(SourceRow, SourceRow.id == SeriesRow.source_id)
    return stmt


def _where(stmt: AnySelect, tree: Expr, include_quarantined: bool) -> AnySelect:
    if not isinstance(tree, Everything):
        stmt = stmt.where(_compile(tree, False))
    if not include_quarantined:
        stmt = stmt.where(InstanceRow.state != "quarantined")
    return stmt


def select_instances(expr: str | Expr | None, *, include_quarantined: bool = False) -> AnySelect:
    """``SELECT`` every field of :data:`FIELDS` (labelled by field name) for the instances matching ``expr``.

    Joins instances → series → studies → patients and series → sources. Quarantined instances are
    left out unless ``include_quarantined``. Callers may ``.with_only_columns(...)``, ``.order_by(...)``
    or ``.limit(...)`` the result.
    """
    tree = _as_expr(expr)
    stmt: AnySelect = select(*(f.column.label(f.name) for f in FIELDS.values())).select_from(InstanceRow)
    return _where(_join(stmt, set(Level)), tree, include_quarantined)


def select_matching(expr: str | Expr | None, *columns: SQLColumnExpression[Any],
                    include_quarantined: bool = False) -> AnySelect:
    """``SELECT columns`` with only the joins that ``expr`` and ``columns`` need (for counts and ids).

    ``columns`` come from the catalog tables, e.g. ``select_matching(q, InstanceRow.uid, InstanceRow.digest)``;
    the tables they name are joined too.
    """
    tree = _as_expr(expr)
    levels = {FIELDS[name].level for name in fields_used(tree)}
    tables = {SeriesRow.__table__: Level.SERIES, StudyRow.__table__: Level.STUDY,
              PatientRow.__table__: Level.PATIENT, SourceRow.__table__: Level.SOURCE}
    stmt: AnySelect = select(*columns).select_from(InstanceRow)
    levels.update(tables[t] for t in stmt.get_final_froms() if t in tables)
    return _where(_join(stmt, levels), tree, include_quarantined)


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One page of matching instances: ``rows`` are dicts of the :data:`FIELDS` values; ``total`` counts all."""

    query: str
    total: int
    limit: int
    offset: int
    rows: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        rows = [{k: v.isoformat() if isinstance(v, date) else v for k, v in row.items()} for row in self.rows]
        return {"query": self.query, "total": self.total, "limit": self.limit, "offset": self.offset, "rows": rows}


def instance_free(expr: str | Expr | None) -> bool:
    """Whether ``expr`` uses no instance-level field: it then matches whole series (less quarantined ones)."""
    return all(FIELDS[name].level is not Level.INSTANCE for name in fields_used(_as_expr(expr)))


def _series_joins(stmt: AnySelect, levels: set[Level]) -> AnySelect:
    """Join series (in ``stmt``'s FROM) to the tables above it that ``levels`` need."""
    if levels & {Level.STUDY, Level.PATIENT}:
        stmt = stmt.join(StudyRow, StudyRow.uid == SeriesRow.study_uid)
    if Level.PATIENT in levels:
        stmt = stmt.join(PatientRow, PatientRow.id == StudyRow.patient_id)
    if Level.SOURCE in levels:
        stmt = stmt.join(SourceRow, SourceRow.id == SeriesRow.source_id)
    return stmt


def select_series_matching(expr: str | Expr | None, *columns: SQLColumnExpression[Any]) -> AnySelect:
    """``SELECT columns`` over the series matching ``expr``, which must be :func:`instance_free`, with only
    the joins it needs. Each series stands for all its instances: the counts the rollup triggers keep on
    it (``ok_instances``, ``quarantined_instances`` and their bytes) say how many."""
    tree = _as_expr(expr)
    if not instance_free(tree):
        raise UsageError("this filter names instance fields; it cannot be answered per series",
                         hint="Use select_matching, which reads the instances.")
    levels = {FIELDS[name].level for name in fields_used(tree)}
    stmt = _series_joins(select(*columns).select_from(SeriesRow), levels)
    return stmt if isinstance(tree, Everything) else stmt.where(_compile(tree, False))


def select_in_uid_order(expr: str | Expr | None, *, include_quarantined: bool = False) -> AnySelect:
    """``SELECT instances.uid`` of the instances matching ``expr``, shaped to be read in uid order.

    The conditions above the instance level go into a correlated ``EXISTS`` over the instance's own series
    (and its study, patient, source), so the instances are the outer loop: with ``ORDER BY uid LIMIT n``
    the database walks the uid index and stops after ``n`` matches instead of gathering every match and
    sorting it. Matches the same rows as :func:`select_matching`; which is faster depends on how dense the
    matches are (see :func:`run_query`).
    """
    tree = _as_expr(expr)
    levels = {FIELDS[name].level for name in fields_used(tree)} - {Level.INSTANCE}
    stmt: AnySelect = select(InstanceRow.uid)
    if not levels:
        return _where(stmt, tree, include_quarantined)
    above = _series_joins(select(literal_column("1")).select_from(SeriesRow), levels)
    above = above.where(SeriesRow.uid == InstanceRow.series_uid, _compile(tree, False))
    stmt = stmt.where(above.exists())
    return _where(stmt, Everything(), include_quarantined)


def count(session: Session, expr: str | Expr | None, *, include_quarantined: bool = False) -> int:
    """How many instances match ``expr``.

    A filter on series, study, patient and source fields only is counted from the matching series' own
    instance counts, so it never visits the instances: a selective filter reads a few index entries and
    series rows, and even "everything" reads only the series.
    """
    tree = _as_expr(expr)
    if instance_free(tree):
        n = SeriesRow.ok_instances + SeriesRow.quarantined_instances if include_quarantined else SeriesRow.ok_instances
        return int(session.scalar(select_series_matching(tree, func.sum(n))) or 0)
    stmt = select_matching(tree, func.count(), include_quarantined=include_quarantined)
    return int(session.scalar(stmt) or 0)


def _catalog_shape(session: Session) -> tuple[int, int]:
    """Instances (any state) and series with ok instances in the whole catalog, from the rollup cells (a few
    hundred rows, whatever the catalog's size)."""
    c = RollupCellRow
    n, series = session.execute(select(func.coalesce(func.sum(c.instances + c.quarantined), 0),
                                       func.coalesce(func.sum(c.series), 0))).one()
    return int(n), int(series)


def _read_in_uid_order(session: Session, tree: Expr, total: int, wanted: int) -> bool:
    """Whether a page of ``wanted`` rows (offset + limit) of the ``total`` matches is better read by walking the
    instances in uid order than by gathering every match and sorting it.

    Instance uids are pseudonyms (hashes), so matches are spread evenly over uid order: the walk visits about
    ``wanted * N / total`` instances of the N in the catalog, each tested against the filter. Gathering visits
    every match through the filter's indexes: for a filter above the instance level that is a read of each
    matching series (``total * S / N`` of the S series; the series' instances then come from a covering
    index), for one on instance fields every match. The walk is taken when it visits fewer rows.
    """
    if isinstance(tree, Everything) or total <= wanted:
        return False
    n, series = _catalog_shape(session)
    if n <= 0:
        return False
    walk = wanted * n / total
    gather = total * series / n if instance_free(tree) else total
    return walk < gather


def run_query(session: Session, expr: str | Expr | None, *, limit: int = 1000, offset: int = 0,
              include_quarantined: bool = False) -> QueryResult:
    """Matching instances ordered by instance uid, ``limit`` rows from ``offset``, with the total count.

    The page's uids are read in whichever of two shapes visits fewer rows for this filter on this catalog
    (:func:`_read_in_uid_order`); both give the same rows.
    """
    if not 0 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit {limit} is out of range", hint=f"Use a limit from 0 to {MAX_LIMIT}; page with offset.")
    if offset < 0:
        raise UsageError(f"offset {offset} is negative", hint="Use an offset of 0 or more.")
    tree = _as_expr(expr)
    total = count(session, tree, include_quarantined=include_quarantined)
    rows: list[dict[str, Any]] = []
    if limit and offset < total:
        # Page over the uids with only the joins the filter needs, then read the full rows of that page:
        # sorting narrow rows and joining 5 tables for `limit` rows beats joining them for every match.
        if _read_in_uid_order(session, tree, total, offset + limit):
            page = select_in_uid_order(tree, include_quarantined=include_quarantined)
        else:
            page = select_matching(tree, InstanceRow.uid, include_quarantined=include_quarantined)
        page = page.order_by(InstanceRow.uid).limit(limit).offset(offset)
        stmt = select_instances(None, include_quarantined=True).where(InstanceRow.uid.in_(page.scalar_subquery()))
        rows = [dict(row) for row in session.execute(stmt.order_by(InstanceRow.uid)).mappings()]
    text = expr if isinstance(expr, str) else unparse(tree)
    return QueryResult(query=text, total=total, limit=limit, offset=offset, rows=rows)
