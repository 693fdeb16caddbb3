"""The run filter language and run listings with last metric values.

A filter is a boolean expression over run attributes, params, metrics (last values) and tags::

    params.lr > 1e-3 and metrics.val_dice > 0.8 and tags.team == "chest"
    status == "finished" and max(metrics.val/auc) >= 0.9 and not (params.optimizer in ["sgd", "rmsprop"])
    hypothesis == "H-3" and started >= "2026-01-01" and verdict == "reproducible"
    params."model name" contains "densenet" and tags.reviewed is not null

Grammar (keywords are case-insensitive)::

    query     := [or_expr]
    or_expr   := and_expr ("or" and_expr)*
    and_expr  := not_expr ("and" not_expr)*
    not_expr  := "not" not_expr | "(" or_expr ")" | predicate
    predicate := field ("==" | "!=" | "<" | "<=" | ">" | ">=") literal
               | field ["not"] "in" "[" [literal ("," literal)*] "]"
               | field "contains" STRING | field "is" ["not"] "null"
    field     := ATTRIBUTE | ("params" | "metrics" | "tags") "." KEY | ("min" | "max") "(" "metrics" "." KEY ")"
    KEY       := characters from [A-Za-z0-9_-/.:@] | a quoted string
    literal   := STRING | NUMBER | "true" | "false"

``metrics.K`` is the last logged value of the series; ``min(…)``/``max(…)`` its extremes. A param
compared with a number uses its numeric value (``"1e-3"`` logged as text counts too); with a string, its
text. Ordering (``<`` …) works on numbers and on the dates ``started`` and ``ended`` (``"YYYY-MM-DD"`` or
an ISO time). A missing value matches ``is null``, ``!=`` and ``not in`` and nothing else; ``not`` is
plain negation. The text is parsed by hand — never evaluated.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, not_, or_, select, true
from sqlalchemy.orm import Session

from medcycle.errors import UsageError
from medcycle.experiments.tables import MetricSeriesRow, ProjectRow, RunParamRow, RunRow, RunTagRow

MAX_LENGTH = 16_384
MAX_DEPTH = 64
MAX_LIMIT = 10_000
KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "is", "null", "true", "false"})
SPACES = ("params", "metrics", "tags")
_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<path>(?:params|metrics|tags)\.(?:[A-Za-z0-9_\-/.:@]+|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'))
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?![A-Za-z0-9_.])
  | (?P<op>==|!=|<=|>=|<|>)
  | (?P<punct>[()\[\],])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}

#: Run attributes a filter can name: (column, type). Types: s string, d date/time.
ATTRIBUTES: dict[str, tuple[Any, str]] = {
    "id": (RunRow.id, "s"), "name": (RunRow.name, "s"), "project": (ProjectRow.name, "s"),
    "status": (RunRow.status, "s"), "hypothesis": (RunRow.hypothesis, "s"), "dataset": (RunRow.dataset_ref, "s"),
    "dataset_digest": (RunRow.dataset_digest, "s"), "user": (RunRow.created_by, "s"), "host": (RunRow.host, "s"),
    "verdict": (RunRow.verdict, "s"), "started": (RunRow.started_at, "d"), "ended": (RunRow.ended_at, "d"),
}
Value = str | float | bool | datetime


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # path string number op punct word keyword end
    text: str
    column: int


@dataclass(frozen=True, slots=True)
class Field:
    space: str  # attr params metrics tags
    key: str
    agg: str = "last"  # for metrics: last min max


@dataclass(frozen=True, slots=True)
class Pred:
    field: Field
    op: str  # == != < <= > >= in notin contains null notnull
    values: tuple[Value, ...] = ()


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # and or not
    items: tuple[Expr, ...] = field(default=())


Expr = Pred | BoolOp | None


def _error(message: str, column: int, hint: str | None = None) -> UsageError:
    return UsageError(f"filter: {message} at column {column}",
                      hint=hint or "See the filter language in docs/experiments.md.", column=column)


def _unquote(text: str, column: int) -> str:
    out, i = [], 1
    while i < len(text) - 1:
        ch = text[i]
        if ch == "\\":
            esc = text[i + 1]
            if esc not in _ESCAPES:
                raise _error(f"unknown escape '\\{esc}'", column + i, 'Escapes are \\\\, \\", \\\', \\n and \\t.')
            out.append(_ESCAPES[esc])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            hint = {"=": "Use == to compare.", "&": "Use and.", "|": "Use or.", "!": "Use != or not."}.get(ch)
            if ch in "\"'":
                hint = f"Close the string with {ch}."
            raise _error(f"unexpected character {ch!r}", pos + 1, hint)
        kind = m.lastgroup or ""
        if kind != "ws":
            word = m.group()
            if kind == "word" and word.lower() in KEYWORDS:
                kind, word = "keyword", word.lower()
            tokens.append(Token(kind, word, pos + 1))
        pos = m.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        self.pos += 1
        return self.tokens[self.pos - 1]

    def keyword(self, word: str) -> bool:
        return self.tok.kind == "keyword" and self.tok.text == word

    def expect(self, text: str, what: str) -> Token:
        if self.tok.text != text:
            raise _error(f"expected {what}, found {self.tok.text or 'the end'!r}", self.tok.column)
        return self.take()

    def parse(self) -> Expr:
        if self.tok.kind == "end":
            return None
        expr = self.or_expr()
        if self.tok.kind != "end":
            raise _error(f"unexpected {self.tok.text!r}", self.tok.column, "Combine conditions with and / or.")
        return expr

    def or_expr(self) -> Expr:
        items = [self.and_expr()]
        while self.keyword("or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_expr(self) -> Expr:
        items = [self.not_expr()]
        while self.keyword("and"):
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def not_expr(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _error(f"nesting deeper than {MAX_DEPTH}", self.tok.column)
        try:
            if self.keyword("not"):
                self.take()
                return BoolOp("not", (self.not_expr(),))
            if self.tok.text == "(":
                self.take()
                expr = self.or_expr()
                self.expect(")", "')'")
                return expr
            return self.predicate()
        finally:
            self.depth -= 1

    def field(self) -> Field:
        tok = self.take()
        if tok.kind == "path":
            space, _, key = tok.text.partition(".")
            if key[:1] in "\"'":
                key = _unquote(key, tok.column + len(space) + 1)
            return Field(space, key)
        if tok.kind == "word" and tok.text.lower() in ("min", "max") and self.tok.text == "(":
            self.take()
            inner = self.take()
            if inner.kind != "path" or not inner.text.startswith("metrics."):
                raise _error(f"{tok.text}() takes a metric, e.g. {tok.text}(metrics.val_dice)", inner.column)
            self.expect(")", "')'")
            key = inner.text.partition(".")[2]
            return Field("metrics", _unquote(key, inner.column) if key[:1] in "\"'" else key, tok.text.lower())
        if tok.kind == "word" and tok.text in ATTRIBUTES:
            return Field("attr", tok.text)
        names = list(ATTRIBUTES) + [f"{s}.KEY" for s in SPACES]
        close = difflib.get_close_matches(tok.text, list(ATTRIBUTES) + list(SPACES), n=1)
        hint = f"Fields: {', '.join(names)}." + (f" Did you mean {close[0]!r}?" if close else "")
        raise _error(f"expected a field, found {tok.text or 'the end'!r}", tok.column, hint)

    def predicate(self) -> Pred:
        start = self.tok.column
        f = self.field()
        op = self.take()
        if op.kind == "op":
            return self.typed(Pred(f, op.text, (self.literal(f),)), start)
        if op.kind == "keyword" and op.text in ("in", "not"):
            negated = op.text == "not"
            if negated:
                if not self.keyword("in"):
                    raise _error("expected 'in' after 'not'", self.tok.column)
                self.take()
            self.expect("[", "'[' to start a list")
            values: list[Value] = []
            while self.tok.text != "]":
                values.append(self.literal(f))
                if self.tok.text == ",":
                    self.take()
                elif self.tok.text != "]":
                    raise _error(f"expected ',' or ']', found {self.tok.text!r}", self.tok.column)
            self.take()
            return self.typed(Pred(f, "notin" if negated else "in", tuple(values)), start)
        if op.kind == "keyword" and op.text == "contains":
            lit = self.take()
            if lit.kind != "string" or f.space == "metrics":
                raise _error("'contains' needs a text field and a string", lit.column)
            return Pred(f, "contains", (_unquote(lit.text, lit.column),))
        if op.kind == "keyword" and op.text == "is":
            negated = self.keyword("not")
            if negated:
                self.take()
            if not self.keyword("null"):
                raise _error("expected 'null' after 'is'", self.tok.column, "Write `is null` or `is not null`.")
            self.take()
            return Pred(f, "notnull" if negated else "null")
        raise _error(f"expected an operator, found {op.text or 'the end'!r}", op.column,
                     "Operators: == != < <= > >= in, not in, contains, is null, is not null.")

    def literal(self, f: Field) -> Value:
        tok = self.take()
        if tok.kind == "number":
            return float(tok.text)
        if tok.kind == "string":
            return _unquote(tok.text, tok.column)
        if tok.kind == "keyword" and tok.text in ("true", "false"):
            return tok.text == "true"
        hint = f"Write `{f.key} is null`." if tok.text == "null" else 'Values are "text", numbers or true/false.'
        raise _error(f"expected a value, found {tok.text or 'the end'!r}", tok.column, hint)

    def typed(self, pred: Pred, column: int) -> Pred:
        """Check and convert the literals of ``pred`` for its field."""
        f, values = pred.field, pred.values
        ordering = pred.op in ("<", "<=", ">", ">=")
        if f.space == "metrics" and not all(isinstance(v, float) for v in values):
            raise _error(f"metrics.{f.key} is a number; compare it with numbers", column)
        if f.space == "attr" and ATTRIBUTES[f.key][1] == "d":
            return Pred(f, pred.op, tuple(_as_time(v, column) for v in values))
        if ordering and not isinstance(values[0], float):
            raise _error(f"{pred.op!r} orders numbers and dates only", column, "Use ==, !=, in or contains on text.")
        if f.space in ("attr", "tags"):
            return Pred(f, pred.op, tuple(v if isinstance(v, str) else _text_of(v) for v in values))
        return pred


def _text_of(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _as_time(value: Value, column: int) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise _error(f"{value!r} is not a date", column, 'Write dates as "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM".')


def parse(text: str | None) -> Expr:
    """Parse and type-check a filter; the empty filter gives ``None`` (everything)."""
    if text is None:
        return None
    if len(text) > MAX_LENGTH:
        raise UsageError(f"filter: longer than {MAX_LENGTH} characters", hint="Simplify the filter.")
    return _Parser(text).parse()


# -- compiling to SQL ----------------------------------------------------------------------------
def _cmp(col: Any, op: str, value: Any) -> ColumnElement[bool]:
    ops: dict[str, Any] = {"==": col.__eq__, "!=": col.__ne__, "<": col.__lt__, "<=": col.__le__,
                           ">": col.__gt__, ">=": col.__ge__}
    result: ColumnElement[bool] = ops[op](value)
    return result


def _positive(col: Any, pred: Pred) -> ColumnElement[bool]:
    """The condition on a present value (the caller handles missing ones)."""
    if pred.op in ("in", "notin"):
        return col.in_(list(pred.values)) if pred.values else false()
    if pred.op == "contains":
        return col.icontains(pred.values[0], autoescape=True)  # type: ignore[no-any-return]
    return _cmp(col, "==" if pred.op == "!=" else pred.op, pred.values[0])


def compile_filter(expr: Expr) -> ColumnElement[bool]:
    """A two-valued WHERE clause over ``runs`` (joined to ``projects``); never lets a NULL through."""
    if expr is None:
        return true()
    if isinstance(expr, BoolOp):
        parts = [compile_filter(item) for item in expr.items]
        return not_(parts[0]) if expr.op == "not" else and_(*parts) if expr.op == "and" else or_(*parts)
    f, op = expr.field, expr.op
    negative = op in ("!=", "notin")
    if f.space == "attr":
        col = ATTRIBUTES[f.key][0]
        if op in ("null", "notnull"):
            return col.is_(None) if op == "null" else col.is_not(None)  # type: ignore[no-any-return]
        cond = and_(col.is_not(None), _positive(col, expr))
        return not_(cond) if negative else cond
    table: Any
    if f.space == "params":
        table = RunParamRow
        numeric = any(isinstance(v, float) for v in expr.values)
        if any(isinstance(v, bool) for v in expr.values):
            expr = Pred(f, op, tuple(_text_of(v) if isinstance(v, bool) else v for v in expr.values))
        col = table.value_num if numeric else table.value
        if numeric and any(isinstance(v, str) for v in expr.values):
            raise UsageError(f"filter: params.{f.key} is compared with both numbers and text",
                             hint="Compare a param with numbers or with strings, not both.")
    elif f.space == "metrics":
        table = MetricSeriesRow
        col = {"last": table.last_value, "min": table.min_value, "max": table.max_value}[f.agg]
    else:
        table, col = RunTagRow, RunTagRow.value
    has_key = and_(table.run_id == RunRow.id, table.key == f.key)
    if op in ("null", "notnull"):
        present = exists(select(1).where(has_key, col.is_not(None) if f.space == "metrics" else true()))
        return not_(present) if op == "null" else present
    cond = exists(select(1).where(has_key, col.is_not(None), _positive(col, expr)))
    return not_(cond) if negative else cond


# -- listing --------------------------------------------------------------------------------------
@dataclass(slots=True)
class RunSummary:
    """One row of a run listing: attributes, every param and tag, and the last value of every metric."""

    id: str
    project: str
    name: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    created_by: str
    hypothesis: str | None
    dataset: str | None
    dataset_digest: str | None
    verdict: str
    verdict_reasons: list[str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "project": self.project, "name": self.name, "status": self.status,
                "started_at": self.started_at.isoformat(), "ended_at": self.ended_at.isoformat() if self.ended_at
                else None, "duration": self.duration, "created_by": self.created_by, "hypothesis": self.hypothesis,
                "dataset": self.dataset, "dataset_digest": self.dataset_digest, "verdict": self.verdict,
                "verdict_reasons": list(self.verdict_reasons), "params": dict(self.params),
                "metrics": {k: v if v is None or math.isfinite(v) else None for k, v in self.metrics.items()},
                "tags": dict(self.tags)}


@dataclass(frozen=True, slots=True)
class RunList:
    filter: str
    total: int
    limit: int
    offset: int
    runs: list[RunSummary]

    def to_dict(self) -> dict[str, Any]:
        return {"filter": self.filter, "total": self.total, "limit": self.limit, "offset": self.offset,
                "runs": [r.to_dict() for r in self.runs]}

    def to_records(self) -> list[dict[str, Any]]:
        """Flat rows (``params.lr``, ``metrics.val_dice``, ``tags.team`` …) for a DataFrame."""
        rows = []
        for r in self.runs:
            row: dict[str, Any] = {k: v for k, v in r.to_dict().items() if k not in ("params", "metrics", "tags")}
            row.update({f"params.{k}": v for k, v in r.params.items()})
            row.update({f"metrics.{k}": v for k, v in r.metrics.items()})
            row.update({f"tags.{k}": v for k, v in r.tags.items()})
            rows.append(row)
        return rows

    def to_pandas(self) -> Any:
        """A pandas DataFrame of :meth:`to_records` (pandas must be installed)."""
        import importlib

        try:
            pd = importlib.import_module("pandas")
        except ImportError as exc:
            raise UsageError("pandas is not installed", hint="pip install pandas, or use to_records().") from exc
        return pd.DataFrame.from_records(self.to_records())


def _order(order: str | None) -> tuple[Any, bool, Field | None]:
    text = (order or "started desc").strip()
    parts = text.rsplit(None, 1)
    desc = parts[-1].lower() == "desc" if len(parts) == 2 and parts[-1].lower() in ("asc", "desc") else False
    name = parts[0] if len(parts) == 2 and parts[-1].lower() in ("asc", "desc") else text
    if name in ATTRIBUTES:
        return ATTRIBUTES[name][0], desc, None
    tokens = tokenize(name)
    if (len(tokens) == 2 and tokens[0].kind == "path") or name.startswith(("min(", "max(")):
        return None, desc, _Parser(name).field()
    raise UsageError(f"cannot order by {name!r}",
                     hint="Order by an attribute (started, name, status, …), metrics.KEY or params.KEY, "
                          "optionally followed by asc or desc.")


def list_runs(session: Session, filter: str | None = None, *, project: str | None = None,
              order: str | None = None, limit: int = 100, offset: int = 0) -> RunList:
    """Runs matching ``filter`` (in ``project``), ordered (default newest first), with params, tags and last values."""
    if not 0 <= limit <= MAX_LIMIT or offset < 0:
        raise UsageError(f"limit must be 0-{MAX_LIMIT} and offset ≥ 0", hint="Page with --limit and --offset.")
    where = compile_filter(parse(filter))
    base = select(RunRow.id).join(ProjectRow, ProjectRow.id == RunRow.project_id).where(where)
    if project is not None:
        base = base.where(ProjectRow.name == project)
    col, desc, by = _order(order)
    page = base.add_columns(func.count().over().label("total"))  # the filter is evaluated once
    if by is not None:
        table: Any = MetricSeriesRow if by.space == "metrics" else RunParamRow if by.space == "params" else RunTagRow
        sub = select(table).where(table.key == by.key).subquery()
        page = page.outerjoin(sub, sub.c.run_id == RunRow.id)
        col = (sub.c[{"last": "last_value", "min": "min_value", "max": "max_value"}[by.agg]]
               if by.space == "metrics" else sub.c.value_num if by.space == "params" else sub.c.value)
    page = page.order_by((col.desc() if desc else col.asc()).nulls_last(), RunRow.id).limit(limit).offset(offset)
    rows = session.execute(page).all()
    ids = [row[0] for row in rows]
    if rows:
        total = int(rows[0][1])
    elif offset == 0 and limit > 0:
        total = 0
    else:  # an empty page past the end (or limit 0): count on its own
        total = int(session.scalar(select(func.count()).select_from(base.subquery())) or 0)
    return RunList(filter=filter or "", total=total, limit=limit, offset=offset, runs=summaries(session, ids))


def summaries(session: Session, ids: list[str]) -> list[RunSummary]:
    """Listing rows of the runs ``ids``, in that order (four queries, however many runs)."""
    if not ids:
        return []
    out: dict[str, RunSummary] = {}
    rows = session.execute(
        select(RunRow.id, ProjectRow.name, RunRow.name, RunRow.status, RunRow.started_at, RunRow.ended_at,
               RunRow.created_by, RunRow.hypothesis, RunRow.dataset_ref, RunRow.dataset_digest, RunRow.verdict,
               RunRow.verdict_reasons).join(ProjectRow, ProjectRow.id == RunRow.project_id).where(RunRow.id.in_(ids)))
    for r in rows:
        out[r[0]] = RunSummary(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], list(r[11] or []))
    for run_id, key, text in session.execute(
            select(RunParamRow.run_id, RunParamRow.key, RunParamRow.value).where(RunParamRow.run_id.in_(ids))):
        out[run_id].params[key] = text
    for run_id, key, last in session.execute(
            select(MetricSeriesRow.run_id, MetricSeriesRow.key, MetricSeriesRow.last_value)
            .where(MetricSeriesRow.run_id.in_(ids))):
        out[run_id].metrics[key] = last
    for run_id, key, text in session.execute(
            select(RunTagRow.run_id, RunTagRow.key, RunTagRow.value).where(RunTagRow.run_id.in_(ids))):
        out[run_id].tags[key] = text
    for summary in out.values():
        summary.params = dict(sorted(summary.params.items()))
        summary.metrics = dict(sorted(summary.metrics.items()))
        summary.tags = dict(sorted(summary.tags.items()))
    return [out[i] for i in ids if i in out]
