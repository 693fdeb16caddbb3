"""Bulk inserts below SQLAlchemy Core's per-row work, with the same conversions Core applies.

A catalog batch writes hundreds of rows per table; building each row's parameters in Core cost more than the
inserts themselves. :func:`insert_many` sends them as one ``executemany`` of tuples through the driver, each
value passed through the column type's bind processor as Core would, and falls back to Core where that is
not the same thing (another placeholder style, or a column left out that Core would fill with a default).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Table, insert

_InsertPlan = tuple[str, tuple[Callable[[Any], Any] | None, ...]] | None  # SQL, bind processors; None: use Core
_INSERTS: dict[tuple[type, str, str, tuple[str, ...]], _InsertPlan] = {}


def _insert_plan(dialect: Any, table: Table, columns: tuple[str, ...]) -> _InsertPlan:
    """The driver-level INSERT of ``columns`` into ``table`` and each column's bind processor (what Core applies to
    a value before the driver sees it); None where Core must insert (a placeholder style other than ``?``/``%s``,
    or a column left out that Core would fill with a Python-side default)."""
    key = (type(dialect), str(dialect.paramstyle), table.name, columns)
    if key in _INSERTS:
        return _INSERTS[key]
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(str(dialect.paramstyle))
    defaulted = [c.name for c in table.c if c.name not in columns and c.default is not None]
    plan: _InsertPlan = None
    if mark is not None and not defaulted and all(c in table.c for c in columns):
        quote = dialect.identifier_preparer.quote
        sql = (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} "
               f"({', '.join(quote(c) for c in columns)}) VALUES ({', '.join([mark] * len(columns))})")
        plan = (sql, tuple(table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns))
    _INSERTS[key] = plan
    return plan


def insert_many(conn: Connection, table: Table, values: list[dict[str, Any]]) -> None:
    """``conn.execute(insert(table), values)`` (every dict with the same keys, in the same order) as one executemany
    of tuples through the driver: Core's per-row work (building each row's parameters) cost more than the inserts
    themselves. The values go through the same bind processors as with Core."""
    columns = tuple(values[0])
    plan = _insert_plan(conn.dialect, table, columns)
    if plan is None:
        conn.execute(insert(table), values)
        return
    sql, processors = plan
    row = operator.itemgetter(*columns) if len(columns) > 1 else (lambda v: (v[columns[0]],))
    rows: list[tuple[Any, ...]] = [row(v) for v in values]
    if any(p is not None for p in processors):  # converted a column at a time (timestamps, dates)
        columns_of = list(zip(*rows, strict=True))
        for j, process in enumerate(processors):
            if process is not None:
                columns_of[j] = tuple(map(process, columns_of[j]))
        rows = list(zip(*columns_of, strict=True))
    conn.exec_driver_sql(sql, rows)
