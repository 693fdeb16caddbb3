"""The catalog rollup: counts per group that database triggers keep in step with the catalog rows.

``data summary`` must answer in milliseconds at millions of instances, whatever their shape (a million
one-image radiographs or two thousand 500-slice CTs). Aggregating instances or series at query time
grows with the catalog; these tables do not — they hold one row per group:

* ``series.ok_instances``/``ok_bytes`` and ``quarantined_instances``/``quarantined_bytes``: the series'
  instances by state (every state but ``quarantined`` counts as ok, as in :mod:`medcycle.catalog.query`).
* ``catalog_rollup_cells``: per (source, modality, body part, manufacturer, year) — the finest grouping —
  the series with ok instances, their instances and bytes, and the quarantined instances and bytes.
  These add up, so every coarser breakdown is a sum over the cells (a few hundred rows).
* ``catalog_rollup_reach``: distinct patients and studies per group of each breakdown (``totals``,
  ``source`` × modality × body part, ``manufacturer``, ``year``). Distinct counts do not add up, so
  each breakdown has its own rows. A study is in a group while at least one of its series with ok
  instances is; a patient likewise through their studies.

Why triggers and not code in ingest: every writer — ingest, bulk loaders such as
:func:`medcycle.testing.catalog.make_catalog`, a future delete, a hand-written ``UPDATE`` — goes through
them, in the writer's own transaction, so the rollup cannot drift from the rows. The triggers are
installed by migration 0007 (:func:`install`); :func:`check` recomputes everything from the instances and
lists any difference (a test runs it after every kind of change), and :func:`rebuild` recomputes it.

How the triggers work: a change to an instance adds its delta to its series' four counts; a change to
those counts (or to a series' group keys) moves the series' contribution between cells. When a series
gains its first ok instance (or loses its last) its study and patient join (or leave) each of the four
groups it belongs to unless another counted series of the same study (patient) is already there — an
indexed look-up among the few series of one study (patient). Studies never move between patients: an
``UPDATE`` of ``studies.patient_id`` under counted series is refused.

Concurrency: SQLite has one writer at a time. On PostgreSQL every statement that writes patients,
studies, series or instances first takes one transaction-level advisory lock (:data:`PG_LOCK`), so
catalog writers take turns as they do on SQLite and the "is another series already there" look-ups
see every committed row (READ COMMITTED, the platform's isolation level); readers never wait. The
series triggers run ``BEFORE`` each row on PostgreSQL (``AFTER`` row triggers there run at the end of
the statement, when every row of a multi-row ``UPDATE`` has already changed) and ``AFTER`` each row on
SQLite (which runs them row by row).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from medcycle.errors import ConfigError

CELLS = "catalog_rollup_cells"
REACH = "catalog_rollup_reach"
#: The finest grouping: one cell per distinct value of these series columns.
CELL_KEYS: tuple[str, ...] = ("source_id", "modality", "body_part", "manufacturer", "year")
#: Breakdowns with their own distinct patient and study counts, by name → key columns.
BREAKDOWNS: Mapping[str, tuple[str, ...]] = {
    "totals": (),
    "source": ("source_id", "modality", "body_part"),
    "manufacturer": ("manufacturer",),
    "year": ("year",),
}
COUNT_COLUMNS = ("ok_instances", "ok_bytes", "quarantined_instances", "quarantined_bytes")
SERIES_KEYS = ("study_uid", *CELL_KEYS)  # what places a series in its groups
PG_LOCK = 0x6D6564636174  # "medcat": the advisory lock catalog writers take on PostgreSQL
_INT_KEYS = frozenset({"year"})
_HELD = "'quarantined'"


# -- keys -------------------------------------------------------------------------------------------
def encode_key(columns: Sequence[str], values: Sequence[Any]) -> str:
    """A group's primary-key text: each value length-prefixed (``7:SIEMENS``), ``~`` for none, ``|`` between.

    Length prefixes make the text unambiguous whatever the values contain; the SQL the triggers use
    (:func:`_sql_key`) writes exactly the same text.
    """
    if not columns:
        return "*"
    parts = []
    for name, value in zip(columns, values, strict=True):
        if value is None:
            parts.append("~")
        elif name in _INT_KEYS:
            parts.append(str(int(value)))
        else:
            parts.append(f"{len(str(value))}:{value}")
    return "|".join(parts)


def _sql_key(row: str, columns: Sequence[str]) -> str:
    if not columns:
        return "'*'"
    parts = []
    for name in columns:
        col = f"{row}.{name}" if row else name
        shown = f"CAST({col} AS TEXT)" if name in _INT_KEYS else f"CAST(length({col}) AS TEXT) || ':' || {col}"
        parts.append(f"(CASE WHEN {col} IS NULL THEN '~' ELSE {shown} END)")
    return " || '|' || ".join(parts)


def _null(column: str) -> str:
    return f"CAST(NULL AS {'INTEGER' if column in _INT_KEYS else 'VARCHAR'})"


# -- trigger bodies ----------------------------------------------------------------------------------
class _Sql:
    """The statements the triggers run, for one dialect (``sqlite`` or ``postgresql``)."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.same = "IS" if dialect == "sqlite" else "IS NOT DISTINCT FROM"
        self.differs = "IS NOT" if dialect == "sqlite" else "IS DISTINCT FROM"

    def same_keys(self) -> str:
        return " AND ".join(f"OLD.{k} {self.same} NEW.{k}" for k in SERIES_KEYS)

    def cell_add(self, row: str, sign: int, guard: str) -> list[str]:
        """Add (``sign`` 1) or take away (-1) the whole contribution of series ``row`` to its cell."""
        s = "" if sign > 0 else "-"
        stmts = [
            f"INSERT INTO {CELLS} (cell_key, {', '.join(CELL_KEYS)}, series, instances, bytes, quarantined, "
            f"quarantined_bytes) SELECT {_sql_key(row, CELL_KEYS)}, {', '.join(f'{row}.{k}' for k in CELL_KEYS)}, "
            f"{s}(CASE WHEN {row}.ok_instances > 0 THEN 1 ELSE 0 END), {s}{row}.ok_instances, {s}{row}.ok_bytes, "
            f"{s}{row}.quarantined_instances, {s}{row}.quarantined_bytes WHERE {guard} "
            f"ON CONFLICT (cell_key) DO UPDATE SET {self._add_counts(CELLS)}"
        ]
        if sign < 0:
            stmts.append(self._drop_empty_cell(row, guard))
        return stmts

    def cell_delta(self) -> list[str]:
        """Move a series' count changes (its keys unchanged) into its cell."""
        return [
            f"INSERT INTO {CELLS} (cell_key, {', '.join(CELL_KEYS)}, series, instances, bytes, quarantined, "
            f"quarantined_bytes) SELECT {_sql_key('NEW', CELL_KEYS)}, {', '.join(f'NEW.{k}' for k in CELL_KEYS)}, "
            "(CASE WHEN NEW.ok_instances > 0 THEN 1 ELSE 0 END) - (CASE WHEN OLD.ok_instances > 0 THEN 1 ELSE 0 END), "
            "NEW.ok_instances - OLD.ok_instances, NEW.ok_bytes - OLD.ok_bytes, "
            "NEW.quarantined_instances - OLD.quarantined_instances, NEW.quarantined_bytes - OLD.quarantined_bytes "
            f"WHERE 1 = 1 ON CONFLICT (cell_key) DO UPDATE SET {self._add_counts(CELLS)}",
            self._drop_empty_cell("NEW", "NEW.ok_instances = 0 AND NEW.quarantined_instances = 0"),
        ]

    @staticmethod
    def _add_counts(table: str) -> str:
        return ", ".join(f"{c} = {table}.{c} + excluded.{c}"
                         for c in ("series", "instances", "bytes", "quarantined", "quarantined_bytes"))

    @staticmethod
    def _drop_empty_cell(row: str, guard: str) -> str:
        return (f"DELETE FROM {CELLS} WHERE ({guard}) AND cell_key = {_sql_key(row, CELL_KEYS)} "
                "AND series = 0 AND quarantined = 0")

    def reach(self, row: str, sign: int, guard: str) -> list[str]:
        """Series ``row`` joins (``sign`` 1) or leaves (-1) its group in every breakdown; its study and
        patient come or go with it unless another counted series of theirs is in the same group."""
        stmts = []
        for name, keys in BREAKDOWNS.items():
            other_study, other_patient = self.lookups(row, keys)
            gkey = _sql_key(row, keys)
            values = ", ".join(f"{row}.{k}" if k in keys else _null(k) for k in CELL_KEYS)
            step = "1" if sign > 0 else "-1"
            stmts.append(
                f"INSERT INTO {REACH} (breakdown, gkey, {', '.join(CELL_KEYS)}, patients, studies) "
                f"SELECT '{name}', {gkey}, {values}, CASE WHEN {other_patient} THEN 0 ELSE {step} END, "
                f"CASE WHEN {other_study} THEN 0 ELSE {step} END WHERE {guard} "
                f"ON CONFLICT (breakdown, gkey) DO UPDATE SET patients = {REACH}.patients + excluded.patients, "
                f"studies = {REACH}.studies + excluded.studies")
            if sign < 0:
                stmts.append(f"DELETE FROM {REACH} WHERE ({guard}) AND breakdown = '{name}' AND gkey = {gkey} "
                             "AND studies = 0")
        return stmts

    def lookups(self, row: str, keys: Sequence[str]) -> tuple[str, str]:
        """Whether another counted series of the study (of the patient) of series ``row`` has its ``keys``:
        index look-ups among the few series of one study (patient)."""
        # On SQLite a unary + keeps the planner off ix_series_summary (source, modality, body part), which
        # without ANALYZE statistics it prefers to the far narrower study look-up.
        plus = "+" if self.dialect == "sqlite" else ""
        match = "".join(f" AND {plus}o.{k} {self.same} {row}.{k}" for k in keys)
        study = (f"EXISTS (SELECT 1 FROM series o WHERE o.study_uid = {row}.study_uid "
                 f"AND o.uid <> {row}.uid AND o.ok_instances > 0{match})")
        patient = (f"EXISTS (SELECT 1 FROM studies st JOIN series o ON o.study_uid = st.uid "
                   f"WHERE st.patient_id = (SELECT patient_id FROM studies WHERE uid = {row}.study_uid) "
                   f"AND o.uid <> {row}.uid AND o.ok_instances > 0{match})")
        return study, patient

    def contribution(self, row: str, sign: int) -> list[str]:
        counted = f"({row}.ok_instances > 0 OR {row}.quarantined_instances > 0)"
        return [*self.cell_add(row, sign, counted), *self.reach(row, sign, f"{row}.ok_instances > 0")]

    def instance_delta(self, row: str, sign: int) -> str:
        """Add (or take away) one instance to (from) its series' counts."""
        op = "+" if sign > 0 else "-"
        held = f"{row}.state = {_HELD}"
        return (f"UPDATE series SET "
                f"ok_instances = ok_instances {op} (CASE WHEN {held} THEN 0 ELSE 1 END), "
                f"ok_bytes = ok_bytes {op} (CASE WHEN {held} THEN 0 ELSE {row}.bytes END), "
                f"quarantined_instances = quarantined_instances {op} (CASE WHEN {held} THEN 1 ELSE 0 END), "
                f"quarantined_bytes = quarantined_bytes {op} (CASE WHEN {held} THEN {row}.bytes ELSE 0 END) "
                f"WHERE uid = {row}.series_uid")

    def instance_changed(self) -> str:
        return " OR ".join(f"OLD.{c} {self.differs} NEW.{c}" for c in ("state", "bytes", "series_uid"))


# -- install / uninstall -------------------------------------------------------------------------------
_PATIENT_MOVE = ("medcycle: a study with counted series cannot move to another patient "
                 "(the catalog rollup counts patients through their studies)")


def _sqlite_ddl() -> Iterator[str]:
    q = _Sql("sqlite")

    def trigger(name: str, event: str, when: str | None, body: list[str]) -> str:
        cond = f" WHEN {when}" if when else ""
        return f"CREATE TRIGGER {name} {event}{cond} BEGIN {'; '.join(body)}; END"

    yield trigger("trg_instances_rollup_insert", "AFTER INSERT ON instances", None, [q.instance_delta("NEW", 1)])
    yield trigger("trg_instances_rollup_delete", "AFTER DELETE ON instances", None, [q.instance_delta("OLD", -1)])
    yield trigger("trg_instances_rollup_update", "AFTER UPDATE OF state, bytes, series_uid ON instances",
                  q.instance_changed(), [q.instance_delta("OLD", -1), q.instance_delta("NEW", 1)])
    counts = ", ".join(COUNT_COLUMNS)
    yield trigger("trg_series_rollup_counts", f"AFTER UPDATE OF {counts} ON series", q.same_keys(), q.cell_delta())
    yield trigger("trg_series_rollup_join", f"AFTER UPDATE OF {counts} ON series",
                  f"{q.same_keys()} AND OLD.ok_instances = 0 AND NEW.ok_instances > 0",
                  q.reach("NEW", 1, "1 = 1"))
    yield trigger("trg_series_rollup_leave", f"AFTER UPDATE OF {counts} ON series",
                  f"{q.same_keys()} AND OLD.ok_instances > 0 AND NEW.ok_instances = 0",
                  q.reach("OLD", -1, "1 = 1"))
    yield trigger("trg_series_rollup_move", f"AFTER UPDATE OF {', '.join(SERIES_KEYS)} ON series",
                  f"NOT ({q.same_keys()})", [*q.contribution("OLD", -1), *q.contribution("NEW", 1)])
    yield trigger("trg_series_rollup_insert", "AFTER INSERT ON series",
                  "NEW.ok_instances > 0 OR NEW.quarantined_instances > 0", q.contribution("NEW", 1))
    yield trigger("trg_series_rollup_delete", "AFTER DELETE ON series",
                  "OLD.ok_instances > 0 OR OLD.quarantined_instances > 0", q.contribution("OLD", -1))
    yield trigger("trg_studies_rollup_patient", "BEFORE UPDATE OF patient_id ON studies",
                  "OLD.patient_id IS NOT NEW.patient_id AND EXISTS (SELECT 1 FROM series "
                  "WHERE study_uid = OLD.uid AND ok_instances > 0)",
                  [f"SELECT RAISE(ABORT, '{_PATIENT_MOVE}')"])


SQLITE_TRIGGERS = (
    "trg_instances_rollup_insert", "trg_instances_rollup_delete", "trg_instances_rollup_update",
    "trg_series_rollup_counts", "trg_series_rollup_join", "trg_series_rollup_leave", "trg_series_rollup_move",
    "trg_series_rollup_insert", "trg_series_rollup_delete", "trg_studies_rollup_patient",
)
_PG_LOCKED = ("patients", "studies", "series", "instances")


def _plpgsql(name: str, body: list[str], result: str) -> str:
    statements = "".join(f"  {s};\n" for s in body)
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
            f"{statements}  RETURN {result};\nEND $$")


def _postgresql_ddl() -> Iterator[str]:
    q = _Sql("postgresql")
    yield _plpgsql("medcycle_catalog_lock", [f"PERFORM pg_advisory_xact_lock({PG_LOCK})"], "NULL")
    for table in _PG_LOCKED:
        yield (f"CREATE TRIGGER trg_{table}_catalog_lock BEFORE INSERT OR UPDATE OR DELETE ON {table} "
               "FOR EACH STATEMENT EXECUTE FUNCTION medcycle_catalog_lock()")
    yield _plpgsql("medcycle_rollup_instance", [
        f"IF TG_OP <> 'INSERT' THEN {q.instance_delta('OLD', -1)}; END IF",
        f"IF TG_OP <> 'DELETE' THEN {q.instance_delta('NEW', 1)}; END IF",
    ], "NULL")
    yield ("CREATE TRIGGER trg_instances_rollup AFTER INSERT OR DELETE ON instances "
           "FOR EACH ROW EXECUTE FUNCTION medcycle_rollup_instance()")
    yield (f"CREATE TRIGGER trg_instances_rollup_update AFTER UPDATE OF state, bytes, series_uid ON instances "
           f"FOR EACH ROW WHEN ({q.instance_changed()}) EXECUTE FUNCTION medcycle_rollup_instance()")
    unchanged = " AND ".join(f"OLD.{c} = NEW.{c}" for c in COUNT_COLUMNS)
    join = ";\n    ".join(q.reach("NEW", 1, "1 = 1"))
    leave = ";\n    ".join(q.reach("OLD", -1, "1 = 1"))
    yield _plpgsql("medcycle_rollup_series", [
        "IF TG_OP = 'INSERT' THEN\n    " + ";\n    ".join(q.contribution("NEW", 1)) + ";\n    RETURN NEW;\n  END IF",
        "IF TG_OP = 'DELETE' THEN\n    " + ";\n    ".join(q.contribution("OLD", -1)) + ";\n    RETURN OLD;\n  END IF",
        f"IF {q.same_keys()} THEN\n    IF {unchanged} THEN RETURN NEW; END IF;\n    "
        + ";\n    ".join(q.cell_delta())
        + f";\n    IF OLD.ok_instances = 0 AND NEW.ok_instances > 0 THEN\n    {join};\n    END IF;\n"
        + f"    IF OLD.ok_instances > 0 AND NEW.ok_instances = 0 THEN\n    {leave};\n    END IF;\n"
        + "    RETURN NEW;\n  END IF",
        *q.contribution("OLD", -1),
        *q.contribution("NEW", 1),
    ], "NEW")
    yield ("CREATE TRIGGER trg_series_rollup BEFORE INSERT OR DELETE OR UPDATE OF "
           f"{', '.join((*COUNT_COLUMNS, *SERIES_KEYS))} ON series "
           "FOR EACH ROW EXECUTE FUNCTION medcycle_rollup_series()")
    yield _plpgsql("medcycle_rollup_refuse_patient_move", [
        "IF EXISTS (SELECT 1 FROM series WHERE study_uid = OLD.uid AND ok_instances > 0) THEN "
        f"RAISE EXCEPTION '{_PATIENT_MOVE}' USING ERRCODE = 'integrity_constraint_violation'; END IF",
    ], "NEW")
    yield ("CREATE TRIGGER trg_studies_rollup_patient BEFORE UPDATE OF patient_id ON studies FOR EACH ROW "
           "WHEN (OLD.patient_id IS DISTINCT FROM NEW.patient_id) "
           "EXECUTE FUNCTION medcycle_rollup_refuse_patient_move()")


PG_TRIGGERS = (*((f"trg_{t}_catalog_lock", t) for t in _PG_LOCKED), ("trg_instances_rollup", "instances"),
               ("trg_instances_rollup_update", "instances"), ("trg_series_rollup", "series"),
               ("trg_studies_rollup_patient", "studies"))
PG_FUNCTIONS = ("medcycle_catalog_lock", "medcycle_rollup_instance", "medcycle_rollup_series",
                "medcycle_rollup_refuse_patient_move")


def trigger_ddl(dialect: str) -> list[str]:
    """The ``CREATE`` statements of the rollup's triggers (and functions) for ``dialect``."""
    if dialect == "sqlite":
        return list(_sqlite_ddl())
    if dialect == "postgresql":
        return list(_postgresql_ddl())
    raise ConfigError(f"the catalog rollup has no triggers for the {dialect} database",
                      hint="medcycle's metadata store runs on SQLite or PostgreSQL: point database_url at one.")


def install(conn: Connection) -> None:
    """Create the triggers (migration 0007). The tables and series columns must exist."""
    for stmt in trigger_ddl(conn.dialect.name):
        conn.exec_driver_sql(stmt)


def uninstall(conn: Connection) -> None:
    """Drop the triggers (and PostgreSQL functions) that :func:`install` created."""
    if conn.dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
    else:
        for name, table in PG_TRIGGERS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        for name in PG_FUNCTIONS:
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}()")


# -- recomputation -------------------------------------------------------------------------------------
_SERIES_COUNTS = {
    "ok_instances": "count(*) FILTER (WHERE i.state <> 'quarantined')",
    "ok_bytes": "coalesce(sum(i.bytes) FILTER (WHERE i.state <> 'quarantined'), 0)",
    "quarantined_instances": "count(*) FILTER (WHERE i.state = 'quarantined')",
    "quarantined_bytes": "coalesce(sum(i.bytes) FILTER (WHERE i.state = 'quarantined'), 0)",
}


def _recounted_series() -> str:
    """Each series' four counts recomputed from its instances (series without instances: zeros)."""
    per = ", ".join(f"{expr} AS {name}" for name, expr in _SERIES_COUNTS.items())
    zero = ", ".join(f"coalesce(c.{n}, 0) AS {n}" for n in _SERIES_COUNTS)
    return (f"SELECT s.uid, {zero} FROM series s LEFT JOIN (SELECT i.series_uid, {per} FROM instances i "
            "GROUP BY i.series_uid) c ON c.series_uid = s.uid")


def _recounted_cells() -> str:
    keys = ", ".join(CELL_KEYS)
    return (f"SELECT {_sql_key('', CELL_KEYS)} AS cell_key, {keys}, "
            "sum(CASE WHEN ok_instances > 0 THEN 1 ELSE 0 END) AS series, sum(ok_instances) AS instances, "
            "sum(ok_bytes) AS bytes, sum(quarantined_instances) AS quarantined, "
            f"sum(quarantined_bytes) AS quarantined_bytes FROM series GROUP BY {keys} "
            "HAVING sum(ok_instances) > 0 OR sum(quarantined_instances) > 0")


def _recounted_reach() -> str:
    parts = []
    for name, keys in BREAKDOWNS.items():
        values = ", ".join(f"se.{k}" if k in keys else f"{_null(k)} AS {k}" for k in CELL_KEYS)
        group = (f" GROUP BY {', '.join(f'se.{k}' for k in keys)}" if keys else "") + " HAVING count(*) > 0"
        parts.append(f"SELECT '{name}' AS breakdown, {_sql_key('se', keys)} AS gkey, {values}, "
                     "count(DISTINCT st.patient_id) AS patients, count(DISTINCT se.study_uid) AS studies "
                     "FROM series se JOIN studies st ON st.uid = se.study_uid WHERE se.ok_instances > 0" + group)
    return " UNION ALL ".join(parts)


def rebuild(conn: Connection) -> None:
    """Recompute the series counts and both rollup tables from the instances (migration 0007's backfill,
    and the repair when :func:`check` reports a difference). Runs in the caller's transaction."""
    sets = ", ".join(f"{n} = (SELECT {e} FROM instances i WHERE i.series_uid = series.uid)"
                     for n, e in _SERIES_COUNTS.items())
    differs = " OR ".join(f"{n} <> (SELECT {e} FROM instances i WHERE i.series_uid = series.uid)"
                          for n, e in _SERIES_COUNTS.items())
    conn.exec_driver_sql(f"UPDATE series SET {sets} WHERE {differs}")
    conn.exec_driver_sql(f"DELETE FROM {CELLS}")
    conn.exec_driver_sql(f"INSERT INTO {CELLS} (cell_key, {', '.join(CELL_KEYS)}, series, instances, bytes, "
                         f"quarantined, quarantined_bytes) {_recounted_cells()}")
    conn.exec_driver_sql(f"DELETE FROM {REACH}")
    conn.exec_driver_sql(f"INSERT INTO {REACH} (breakdown, gkey, {', '.join(CELL_KEYS)}, patients, studies) "
                         f"{_recounted_reach()}")


@dataclass
class RollupCheck:
    """What :func:`check` found: every difference between the rollup and a recomputation."""

    series_checked: int = 0
    cells_checked: int = 0
    groups_checked: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "series_checked": self.series_checked, "cells_checked": self.cells_checked,
                "groups_checked": self.groups_checked, "differences": list(self.differences)}


def check(session: Session, *, limit: int = 100) -> RollupCheck:
    """Recompute the series counts, cells and reach from the catalog rows and compare (a full scan:
    for ``fsck`` and tests). At most ``limit`` differences are listed."""
    report = RollupCheck()

    def differ(what: str) -> None:
        if len(report.differences) < limit:
            report.differences.append(what)

    cols = ", ".join(f"s.{n}" for n in COUNT_COLUMNS)
    stored = {r[0]: tuple(r[1:]) for r in session.execute(text(f"SELECT s.uid, {cols} FROM series s"))}
    for uid, *counts in session.execute(text(_recounted_series())):
        report.series_checked += 1
        if stored.get(uid) != tuple(counts):
            differ(f"series {uid}: stored {dict(zip(COUNT_COLUMNS, stored.get(uid, ()), strict=False))}, "
                   f"recomputed {dict(zip(COUNT_COLUMNS, counts, strict=True))}")
    for table, query, key_cols in ((CELLS, _recounted_cells(), ("cell_key",)),
                                   (REACH, _recounted_reach(), ("breakdown", "gkey"))):
        want = _rows_by_key(session, query, key_cols)
        have = _rows_by_key(session, f"SELECT * FROM {table}", key_cols)
        if table == CELLS:
            report.cells_checked = len(have)
        else:
            report.groups_checked = len(have)
        for key in sorted(set(want) | set(have), key=repr):
            if want.get(key) != have.get(key):
                differ(f"{table} {key}: stored {have.get(key)}, recomputed {want.get(key)}")
        for key, row in have.items():  # the key text must be the one the values encode
            name = row.get("breakdown", "cell")
            columns = CELL_KEYS if name == "cell" else BREAKDOWNS[name]
            if key[-1] != encode_key(columns, [row[c] for c in columns]):
                differ(f"{table} {key}: key text does not encode its values")
    return report


def _rows_by_key(session: Session, query: str, key_cols: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    out = {}
    keys = {"cell_key", "breakdown", "gkey", *CELL_KEYS}
    for row in session.execute(text(query)).mappings():
        values = {k: v if k in keys or v is None else int(v) for k, v in row.items()}
        out[tuple(values[k] for k in key_cols)] = values
    return out
