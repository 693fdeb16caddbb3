"""The catalog filter language: parser units, and queries on both databases checked against a Python oracle."""

from __future__ import annotations

import builtins
import random
import re
from datetime import date
from typing import Any

import pytest
from sqlalchemy import event, func

from medcycle.catalog import query as q
from medcycle.catalog.query import (
    FIELDS,
    And,
    Compare,
    Contains,
    Everything,
    Expr,
    FieldType,
    InList,
    IsNull,
    Not,
    Or,
    count,
    parse,
    run_query,
    select_instances,
    select_matching,
    unparse,
)
from medcycle.catalog.tables import InstanceRow
from medcycle.errors import UsageError
from medcycle.platform import Platform
from medcycle.testing.catalog import CatalogFixture, make_catalog

SPEC_FIELDS = [
    "source", "patient", "study", "series", "instance", "modality", "body_part", "body_part_raw", "laterality",
    "view_position", "manufacturer", "model", "year", "study_date", "sex", "age_band", "slice_thickness",
    "pixel_spacing", "kvp", "convolution_kernel", "field_strength", "photometric", "bits_stored", "rows", "columns",
    "frames", "transfer_syntax", "format", "bytes", "state", "p01", "p05", "p50", "p95", "p99", "mean", "std",
    "saturated_fraction", "air_fraction", "image_type",
]


def error_of(text: str) -> UsageError:
    with pytest.raises(UsageError) as info:
        parse(text)
    return info.value


# -- parser -----------------------------------------------------------------------------------------
def test_fields_cover_the_spec_and_are_documented() -> None:
    assert set(SPEC_FIELDS) <= set(FIELDS)
    for f in FIELDS.values():
        assert f.description and f.to_dict()["type"] in {t.value for t in FieldType}
    assert FIELDS["study_date"].type is FieldType.DATE
    assert FIELDS["slice_thickness"].type is FieldType.NUMBER
    assert FIELDS["modality"].type is FieldType.STRING


def test_empty_query_means_everything() -> None:
    assert parse("") == Everything()
    assert parse("  \n\t ") == Everything()


def test_the_example_from_the_issue() -> None:
    assert parse('modality == "CT" and source == "clinic-a" and slice_thickness < 1.5') == And((
        Compare("modality", "==", "CT"), Compare("source", "==", "clinic-a"), Compare("slice_thickness", "<", 1.5),
    ))


def test_precedence_not_over_and_over_or() -> None:
    a, b, c = (Compare("rows", "==", n) for n in (1, 2, 3))
    assert parse("rows == 1 or rows == 2 and rows == 3") == Or((a, And((b, c))))
    assert parse("rows == 1 and rows == 2 or rows == 3") == Or((And((a, b)), c))
    assert parse("not rows == 1 and rows == 2") == And((Not(a), b))
    assert parse("not (rows == 1 and rows == 2)") == Not(And((a, b)))
    assert parse("(rows == 1 or rows == 2) and rows == 3") == And((Or((a, b)), c))
    assert parse("not not rows == 1") == Not(Not(a))
    assert parse("((rows == 1))") == a


def test_keywords_are_case_insensitive() -> None:
    assert parse('modality == "CT" AND NOT rows > 5 Or kvp IS NOT NULL') == parse(
        'modality == "CT" and not rows > 5 or kvp is not null')


@pytest.mark.parametrize(("text", "expected"), [
    ('model == "O\'Brien"', "O'Brien"),
    ("model == 'say \"hi\"'", 'say "hi"'),
    (r'model == "a\"b\\c"', 'a"b\\c'),
    (r"model == 'it\'s'", "it's"),
    (r'model == "tab\there\nnew"', "tab\there\nnew"),
    (r'model == "caf\u00e9"', "café"),
    ('model == ""', ""),
    ('model == "and or not in"', "and or not in"),
])
def test_string_literals_and_escapes(text: str, expected: str) -> None:
    assert parse(text) == Compare("model", "==", expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("rows == 512", 512), ("kvp == 120.5", 120.5), ("p01 > -1024", -1024), ("std < 1e3", 1000.0),
    ("mean >= -.5", -0.5), ("bytes <= 2E+6", 2e6), ("rows != 0", 0),
])
def test_numbers(text: str, expected: float) -> None:
    node = parse(text)
    assert isinstance(node, Compare) and node.value == expected and type(node.value) is type(expected)


def test_every_operator() -> None:
    for op in ("==", "!=", "<", "<=", ">", ">="):
        assert parse(f"kvp {op} 120") == Compare("kvp", op, 120)
        assert parse(f'study_date {op} "2020-02-29"') == Compare("study_date", op, date(2020, 2, 29))
    assert parse('modality in ["CT", "MR"]') == InList("modality", ("CT", "MR"))
    assert parse('modality not in ["CT",]') == InList("modality", ("CT",), negated=True)
    assert parse("rows in []") == InList("rows", ())
    assert parse('manufacturer contains "SIEM"') == Contains("manufacturer", "SIEM")
    assert parse("kvp is null") == IsNull("kvp")
    assert parse("kvp is not null") == IsNull("kvp", negated=True)
    assert parse("quarantined") == Compare("quarantined", "==", True)
    assert parse("quarantined == false") == Compare("quarantined", "==", False)
    assert parse("quarantined != true") == Compare("quarantined", "!=", True)


def test_positions_are_recorded() -> None:
    node = parse('modality == "CT" and   rows > 3')
    assert isinstance(node, And)
    assert [item.column for item in node.items if isinstance(item, Compare)] == [1, 24]


@pytest.mark.parametrize(("text", "message", "hint"), [
    ('modalty == "CT"', "query: unknown field 'modalty' at column 1", "Did you mean 'modality'?"),
    ('modality == "CT" and bodypart == "chest"', "unknown field 'bodypart' at column 22", "'body_part'"),
    ('modality < "CT"', "'<' cannot order the string field 'modality' at column 10", "number and date"),
    ("quarantined > true", "cannot order the boolean field", None),
    ('year == "2020"', "'year' is a number field but \"2020\" is a string at column 9", "without quotes"),
    ("modality == 3", "'modality' is a string field but 3 is a number at column 13", None),
    ("modality == true", "is a string field but true is a boolean", None),
    ("study_date < 2020", "'study_date' is a date field but 2020 is a number", None),
    ('study_date < "2020-13-01"', '"2020-13-01" is not a date at column 14', "YYYY-MM-DD"),
    ('study_date < "2020-1-1"', "is not a date", "YYYY-MM-DD"),
    ('rows contains "5"', "'contains' needs a string field; 'rows' is a number at column 6", None),
    ("manufacturer contains 5", "expected a string after 'contains', found '5' at column 23", None),
    ("modality == null", "null is not a value to compare with at column 13", "modality is null"),
    ('modality = "CT"', "unexpected character '=' at column 10", "Use =="),
    ('modality == "CT" && rows > 1', "unexpected character '&' at column 18", "Use and"),
    ('modality == "CT', "unterminated string at column 13", None),
    (r'model == "a\qb"', "unknown escape '\\q' in a string at column 12", None),
    ("rows == 5x", "malformed number", None),
    ("rows == 1.2.3", "malformed number", None),
    ('modality "CT"', "expected an operator after 'modality', found \"CT\" at column 10", None),
    ('"CT" == modality', "expected a field name, found \"CT\" at column 1", "Write the field first"),
    ('modality == "CT" and', "expected a field name, found end of query at column 21", None),
    ('modality == "CT" rows > 1', "unexpected 'rows' at column 18", "and / or"),
    ('(modality == "CT"', "expected ')' to close the '(' at column 1, found end of query at column 18", None),
    ('modality == "CT")', "unexpected ')' at column 17", None),
    ('modality in "CT"', "expected '[' to start the list after in, found \"CT\" at column 13", None),
    ('modality in ["CT" "MR"]', "expected ',' or ']' in the list, found \"MR\" at column 19", None),
    ('modality not ["CT"]', "expected 'in' after 'not', found '[' at column 14", None),
    ("kvp is 3", "expected 'null' after 'is', found '3' at column 8", "is not null"),
    ("kvp ==", "expected a value, found end of query at column 7", None),
    ("columns >= rows", "expected a value, found 'rows' at column 12", "two fields"),
    ("rows > 1 and ()", "expected a field name, found ')' at column 15", None),
    ("modality $ 1", "unexpected character '$' at column 10", None),
])
def test_errors_point_at_the_column(text: str, message: str, hint: str | None) -> None:
    err = error_of(text)
    assert message in err.message
    assert err.message.startswith("query: ")
    assert err.details["column"] == int(err.message.rsplit("column ", 1)[1])
    if hint is not None:
        assert err.hint is not None and hint in err.hint


def test_unknown_field_hint_lists_the_fields() -> None:
    err = error_of('modalty == "CT"')
    assert err.hint is not None and err.hint.startswith("Fields: source, patient, study")
    assert "slice_thickness" in err.hint


def test_no_code_is_ever_executed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the query language must never evaluate code")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(builtins, "compile", refuse)
    monkeypatch.setattr(builtins, "__import__", refuse)  # would also catch lazy imports inside parse
    for text in ('__import__("os").system("touch /tmp/pwned")', "open('/etc/passwd')", "modality.__class__",
                 "rows == __import__", "[x for x in ()]", "lambda: 1", "rows == 1; import os"):
        with pytest.raises(UsageError):
            parse(text)
    # Code inside a string literal is only ever data.
    payload = "__import__('os').system('id')"
    assert parse(f'model == "{payload}"') == Compare("model", "==", payload)


def test_limits() -> None:
    deep = "not " * (q.MAX_DEPTH + 1) + "rows == 1"
    assert "nesting deeper" in error_of(deep).message
    assert "nesting deeper" in error_of("(" * 100 + "rows == 1" + ")" * 100).message
    assert "longer than" in error_of("rows == 1 or " * 10_000 + "rows == 1").message
    parse("(" * 30 + "rows == 1" + ")" * 30)
    assert "more than" in error_of("rows in [" + "1," * (q.MAX_LIST + 1) + "]").message


@pytest.mark.parametrize("text", [
    'modality == "CT" and source == "clinic-a" and slice_thickness < 1.5',
    'not (body_part in ["chest", "head"] or manufacturer contains "o\'b\\"x") and kvp is not null',
    'study_date >= "2019-01-01" and (quarantined or rows != 512) and model not in ["a\\\\b", "c\\nd"]',
    "quarantined == false or p50 > -100.25 and std <= 1e-3",
])
def test_unparse_round_trips(text: str) -> None:
    tree = parse(text)
    assert parse(unparse(tree)) == tree
    assert unparse(parse(unparse(tree))) == unparse(tree)


# -- against the database, with a Python oracle -----------------------------------------------------
def oracle(node: Expr, row: dict[str, Any]) -> bool:
    """The documented semantics, independently: a null matches only `is null`, `!=` and `not in`."""
    if isinstance(node, Everything):
        return True
    if isinstance(node, And):
        return all(oracle(i, row) for i in node.items)
    if isinstance(node, Or):
        return any(oracle(i, row) for i in node.items)
    if isinstance(node, Not):
        return not oracle(node.operand, row)
    value = row[node.field]
    if isinstance(node, IsNull):
        return (value is None) != node.negated
    if isinstance(node, InList):
        return node.negated if value is None else (value in node.values) != node.negated
    if isinstance(node, Contains):
        return value is not None and node.value.lower() in value.lower()
    if value is None:
        return node.op == "!="
    ops = {"==": value == node.value, "!=": value != node.value}
    if node.op in ops:
        return ops[node.op]
    return {"<": value < node.value, "<=": value <= node.value, ">": value > node.value,
            ">=": value >= node.value}[node.op]


@pytest.fixture
def catalog(platform: Platform) -> tuple[CatalogFixture, list[dict[str, Any]]]:
    with platform.session() as s:
        fx = make_catalog(s, sources=3, patients=12, studies_per_patient=2, series_per_study=2,
                          instances_per_series=3, seed=11, quarantine_rate=0.15)
    with platform.session() as s:
        rows = [dict(r) for r in s.execute(select_instances(None, include_quarantined=True)).mappings()]
    assert len(rows) == fx.instances == 144
    return fx, rows


def matching_uids(platform: Platform, text: str, *, include_quarantined: bool = False) -> set[str]:
    with platform.session() as s:
        return set(s.scalars(select_matching(text, InstanceRow.uid, include_quarantined=include_quarantined)))


def expected_uids(rows: list[dict[str, Any]], text: str, *, include_quarantined: bool = False) -> set[str]:
    tree = parse(text)
    return {r["instance"] for r in rows if (include_quarantined or not r["quarantined"]) and oracle(tree, r)}


HAND_WRITTEN = [
    "",
    'modality == "CT"',
    'modality == "CT" and source == "clinic-a" and slice_thickness < 1.5',
    'modality != "CT"',
    'not modality == "CT"',
    'body_part in ["chest", "head"]',
    'body_part not in ["chest", "head"]',
    'not body_part in ["chest", "head"]',
    "body_part is null",
    "kvp is not null and kvp >= 120",
    "not (kvp < 120)",
    "kvp != 120",
    'manufacturer contains "siemens"',
    'manufacturer contains "SIEMENS" or model contains "ingen"',
    'not manufacturer contains "e"',
    'study_date >= "2018-01-01" and study_date < "2021-06-30"',
    "study_date is null or year > 2020",
    "quarantined",
    "not quarantined",
    'state == "quarantined"',
    'image_type contains "\\\\primary"',
    'modality in [] or rows in [512, 2048]',
    'sex == "F" and age_band in ["40-49", "50-59"]',
    "p50 > 100 and std < 1000 or air_fraction >= 0.3",
    'field_strength == 3 or convolution_kernel == "B30f"',
    'pixel_spacing < 0.2 and view_position in ["PA", "AP"]',
    'transfer_syntax == "1.2.840.10008.1.2.1" and format != "dicom"',
    'photometric == "MONOCHROME1" and bits_stored == 12',
    "frames == 1 and bytes > 1000000 and columns >= 2000",
    'manufacturer contains "%" or manufacturer contains "_"',
]


def test_queries_match_the_oracle(platform: Platform, catalog: tuple[CatalogFixture, list[dict[str, Any]]]) -> None:
    _, rows = catalog
    for text in HAND_WRITTEN:
        for include in (False, True):
            expected = expected_uids(rows, text, include_quarantined=include)
            assert matching_uids(platform, text, include_quarantined=include) == expected, text


def random_query(rng: random.Random, rows: list[dict[str, Any]], depth: int = 0) -> Expr:
    if depth < 3 and rng.random() < 0.45:
        kind = rng.choice(["and", "or", "not"])
        if kind == "not":
            return Not(random_query(rng, rows, depth + 1))
        items = tuple(random_query(rng, rows, depth + 1) for _ in range(rng.randint(2, 3)))
        return And(items) if kind == "and" else Or(items)
    name = rng.choice([n for n in FIELDS if n not in ("instance", "digest")])
    info = FIELDS[name]
    seen = [r[name] for r in rows]
    value = rng.choice(seen)
    if value is None or rng.random() < 0.1:
        return IsNull(name, negated=rng.random() < 0.5)
    if info.type is FieldType.BOOLEAN:
        return Compare(name, rng.choice(["==", "!="]), rng.random() < 0.5)
    if info.type is FieldType.STRING:
        choice = rng.random()
        if choice < 0.3:
            start = rng.randrange(len(value))
            needle = value[start:start + rng.randint(1, 4)]
            return Contains(name, needle.upper() if rng.random() < 0.5 else needle)
        if choice < 0.6:
            values = tuple(sorted({v for v in rng.sample(seen, 3) if v is not None}))
            return InList(name, values, negated=rng.random() < 0.5)
        return Compare(name, rng.choice(["==", "!="]), value)
    return Compare(name, rng.choice(["==", "!=", "<", "<=", ">", ">="]), value)


def test_random_queries_match_the_oracle(platform: Platform,
                                         catalog: tuple[CatalogFixture, list[dict[str, Any]]]) -> None:
    _, rows = catalog
    rng = random.Random(2024)
    nonempty = 0
    for _ in range(120):
        tree = random_query(rng, rows)
        text = unparse(tree)
        assert parse(text) == tree
        include = rng.random() < 0.3
        expected = expected_uids(rows, text, include_quarantined=include)
        assert matching_uids(platform, text, include_quarantined=include) == expected, text
        nonempty += bool(expected) and len(expected) < len(rows)
    assert nonempty > 30  # the generator makes selective queries, not only all-or-nothing ones


def test_run_query_pages_with_totals(platform: Platform, catalog: tuple[CatalogFixture, list[dict[str, Any]]]) -> None:
    fx, rows = catalog
    text = 'modality in ["CT", "MR", "CR"]'
    expected = sorted(expected_uids(rows, text))
    with platform.session() as s:
        first = run_query(s, text, limit=5)
        second = run_query(s, text, limit=5, offset=5)
        beyond = run_query(s, text, limit=5, offset=len(expected))
        everything = run_query(s, None, limit=1000)
        assert count(s, text) == len(expected)
        assert count(s, "") == fx.instances - fx.quarantined
        assert count(s, "", include_quarantined=True) == fx.instances
    assert first.total == second.total == beyond.total == len(expected)
    assert [r["instance"] for r in first.rows + second.rows] == expected[:10]
    assert beyond.rows == []
    assert set(first.rows[0]) == set(FIELDS)
    assert everything.total == len(everything.rows) == fx.instances - fx.quarantined
    assert everything.query == ""
    by_uid = {r["instance"]: r for r in rows}
    for row in everything.rows:
        assert row == by_uid[row["instance"]]
        assert isinstance(row["quarantined"], bool) and row["quarantined"] is False
    data = first.to_dict()
    assert data["total"] == len(expected) and data["query"] == text
    assert all(isinstance(r["study_date"], str | None) for r in data["rows"])


def test_numbers_compare_exactly_on_integer_columns(
    platform: Platform, catalog: tuple[CatalogFixture, list[dict[str, Any]]],
) -> None:
    _, rows = catalog
    for text in ("rows == 511.5", "rows > 511.5", "rows in [511.5]", "bytes > 3000000000", "bytes < 3e9",
                 "kvp == 120", "year != 2015.5"):
        assert matching_uids(platform, text) == expected_uids(rows, text), text
    assert matching_uids(platform, "rows < 512.5") == matching_uids(platform, "rows <= 512")


def test_run_query_rejects_bad_paging(platform: Platform) -> None:
    with platform.session() as s:
        with pytest.raises(UsageError, match="limit"):
            run_query(s, "", limit=-1)
        with pytest.raises(UsageError, match="limit"):
            run_query(s, "", limit=q.MAX_LIMIT + 1)
        with pytest.raises(UsageError, match="offset"):
            run_query(s, "", offset=-3)
        with pytest.raises(UsageError, match="unknown field"):
            run_query(s, "nope == 1")
        assert run_query(s, "").total == 0


def test_quarantined_instances_are_left_out_unless_asked(
    platform: Platform, catalog: tuple[CatalogFixture, list[dict[str, Any]]],
) -> None:
    fx, _ = catalog
    assert fx.quarantined > 0
    assert matching_uids(platform, "quarantined") == set()
    assert len(matching_uids(platform, "quarantined", include_quarantined=True)) == fx.quarantined
    with platform.session() as s:
        states = set(s.scalars(select_instances("", include_quarantined=False).with_only_columns(InstanceRow.state)))
        assert states == {"ok"}
        assert count(s, 'state == "quarantined"', include_quarantined=True) == fx.quarantined


def test_select_matching_joins_only_what_it_needs(platform: Platform,
                                                  catalog: tuple[CatalogFixture, list[dict[str, Any]]]) -> None:
    fx, rows = catalog
    plain = str(select_matching("rows > 1", func.count()))
    assert "JOIN" not in plain
    joined = str(select_matching('source == "clinic-a" and sex == "F"', func.count()))
    assert "JOIN sources" in joined and "JOIN patients" in joined
    with platform.session() as s:
        labelled = s.execute(select_matching(None, InstanceRow.uid, FIELDS["source"].column.label("source"))).all()
    assert {u: src for u, src in labelled} == {r["instance"]: r["source"] for r in rows if not r["quarantined"]}
    assert {r["source"] for r in rows} == set(fx.sources)


# -- plans: selective queries read through indexes ----------------------------------------------------------
def executed(platform: Platform, fn: Any) -> list[tuple[str, Any]]:
    """The statements (and their parameters) ``fn(session)`` runs."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        seen.append((statement, parameters))

    event.listen(platform.engine, "before_cursor_execute", record)
    try:
        with platform.session(write=False) as s:
            fn(s)
    finally:
        event.remove(platform.engine, "before_cursor_execute", record)
    return [(statement, params) for statement, params in seen if statement.lstrip().upper().startswith("SELECT")]


SELECTIVE = {
    "source x modality x body part": ('source == "clinic-b" and modality == "MR" and body_part == "head" '
                                      "and field_strength == 3.0"),
    "patient": 'patient == "{patient}"',
    "study": 'study == "{study}"',
    "series": 'series == "{series}"',
    "instance": 'instance == "{instance}"',
    "digest": 'digest == "{digest}"',
    "series of one study, by state": 'study == "{study}" and not quarantined',
}


@pytest.mark.parametrize("name", list(SELECTIVE))
def test_selective_queries_use_indexes(sqlite_platform: Platform, name: str) -> None:
    """Every statement ``data query`` runs for a selective filter (the count; the page: its rows, of the uids
    a subquery picks) searches indexes: no table is scanned, so the cost follows the matches, not the catalog."""
    with sqlite_platform.session() as s:
        make_catalog(s, sources=3, patients=30, seed=4, quarantine_rate=0.1)
        row = s.execute(select_instances(None)).mappings().first()
        assert row is not None
    expr = SELECTIVE[name].format(**row)
    statements = executed(sqlite_platform, lambda s: run_query(s, expr, limit=50))
    assert len(statements) == 2  # the count, then the page
    with sqlite_platform.session(write=False) as s:
        for statement, params in statements:
            plan = plan_of(s, statement, params)
            scans = [p for p in plan if p.startswith("SCAN") and p != "SCAN CONSTANT ROW"]
            assert not scans, (statement, plan)
    if name == "source x modality x body part":  # the page's uids come from two indexes, no instance row
        page = statements[1][0]
        with sqlite_platform.session(write=False) as s:
            plan = plan_of(s, page, statements[1][1])
        assert any("ix_series_summary" in p for p in plan), plan
        assert any("COVERING INDEX ix_instances_series_state" in p for p in plan), plan


def plan_of(session: Any, statement: str, params: Any) -> list[str]:
    rows = session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", tuple(params))
    return [str(r[-1]) for r in rows]


def test_series_level_filters_are_counted_from_the_series(
    platform: Platform, catalog: tuple[CatalogFixture, list[dict[str, Any]]],
) -> None:
    _, rows = catalog
    expr = 'modality == "CT" and year >= 2014 and sex != "F"'
    assert q.instance_free(expr) and not q.instance_free(f"{expr} and rows > 10")
    statements = executed(platform, lambda s: count(s, expr))
    assert len(statements) == 1 and not re.search(r"\binstances\b", statements[0][0])
    with platform.session() as s:
        assert count(s, expr) == len(expected_uids(rows, expr))
        assert count(s, expr, include_quarantined=True) == len(expected_uids(rows, expr, include_quarantined=True))
        with pytest.raises(UsageError, match="instance fields"):
            q.select_series_matching("rows > 1", func.count())


def test_many_conditions_are_a_query_error_not_a_database_failure(platform: Platform) -> None:
    """About 500 conditions (`a or b or …`, well under the length limit) made SQLite fail with "Expression tree
    is too large", reported as 'the metadata store failed … run medcycle doctor'. The parser now caps the
    conditions below what SQLite and PostgreSQL take, with a hint; as many as the cap allows still run."""
    from medcycle.catalog.summary import summarize

    with platform.session() as s:
        make_catalog(s, sources=1, patients=2, studies_per_patient=1, series_per_study=1, instances_per_series=2,
                     seed=3)
    most = " or ".join(['modality == "CT"'] * q.MAX_CONDITIONS)
    rows = " and ".join(["rows > 1"] * q.MAX_CONDITIONS)
    with platform.session() as s:
        assert run_query(s, most).total >= 0
        assert run_query(s, rows).total >= 0
        summarize(s, rows)
    err = error_of(" or ".join(['modality == "CT"'] * (q.MAX_CONDITIONS + 1)))
    assert f"more than {q.MAX_CONDITIONS} conditions" in err.message and "in [" in (err.hint or "")
    err = error_of(" and ".join(["rows > 1"] * 500))
    assert "conditions" in err.message


@pytest.mark.parametrize("text", [r'modality == "C\0T"', r'manufacturer contains "\u0000"',
                                  'modality in ["a", "b\x00"]'])
def test_a_nul_character_in_a_string_is_a_query_error(platform: Platform, text: str) -> None:
    """PostgreSQL refuses NUL in text (psycopg DataError, shown as a store failure), and SQLite's LIKE stops at it,
    so `contains "\\0"` matched every row there. No catalog value holds NUL: the literal is refused."""
    assert "NUL" in error_of(text).message
    with platform.session() as s, pytest.raises(UsageError, match="NUL"):
        run_query(s, text)
