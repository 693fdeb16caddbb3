"""What the run pages show, shaped for templates and charts.

The runs table's state lives in its URL (:class:`RunsView`): the filter, the project/status/hypothesis
choices, the chosen columns (``col=metrics.val_dice&col=params.lr``), the order and the page, so a view
can be bookmarked and shared. The project, status and hypothesis choices are folded into the filter
language (``status == "finished"``) and the listing is one call of
:func:`medcycle.experiments.query.list_runs` — a fixed number of queries however many runs match.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.errors import UsageError
from medcycle.experiments.query import RunSummary
from medcycle.experiments.runs import Series
from medcycle.experiments.tables import MetricSeriesRow, ProjectRow, RunParamRow, RunRow, RunTagRow

SPACES = ("params", "metrics", "tags")
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_SIZE = 50
MAX_QUERY = 4096  # characters of filter in a page address
MAX_COLUMNS = 24
MAX_KEYS = 300  # keys offered per space in the column chooser
DEFAULT_METRIC_COLUMNS = 4
DEFAULT_PARAM_COLUMNS = 3
LOG_PAGE = 32 * 1024  # characters of output per log page
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-/.:@]+$")
PALETTE = ("#0f6e7a", "#c08a2c", "#5b6fb0", "#2e9a62", "#8a5a9e", "#c4574f", "#4f8fa8", "#7a8b3a", "#b06b8f",
           "#3d4f86", "#d9822b", "#1c2b36")


# -- the filter language, written by us ------------------------------------------------------------------
def quote(value: str) -> str:
    """``value`` as a string literal of the run filter language."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def field_text(space: str, key: str) -> str:
    """``metrics.val/dice``, or ``params."model name"`` when the key needs quoting."""
    return f"{space}.{key}" if _PLAIN_KEY.match(key) else f"{space}.{quote(key)}"


def combined_filter(q: str, status: str, hypothesis: str) -> str:
    """The person's filter and the status/hypothesis choices as one expression."""
    parts = [f"({q})"] if q.strip() else []
    if status:
        parts.append(f"status == {quote(status)}")
    if hypothesis:
        parts.append(f"hypothesis == {quote(hypothesis)}")
    return " and ".join(parts)


# -- columns --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Column:
    """A params/metrics/tags column of the runs table; ``spec`` is how the URL names it."""

    space: str
    key: str

    @property
    def spec(self) -> str:
        return f"{self.space}.{self.key}"

    @property
    def field(self) -> str:
        return field_text(self.space, self.key)

    @property
    def numeric(self) -> bool:
        return self.space == "metrics"

    def value(self, run: RunSummary) -> Any:
        values: dict[str, Any] = getattr(run, self.space)
        return values.get(self.key)


def parse_column(spec: str) -> Column:
    space, _, key = spec.partition(".")
    if space not in SPACES or not key or len(key) > 256:
        raise UsageError(f"{spec!r} is not a column", hint="Columns are params.KEY, metrics.KEY or tags.KEY.")
    return Column(space, key)


def default_columns(runs: list[RunSummary]) -> list[Column]:
    """When none are chosen: the first few non-system metrics on the page, then params with more than one value
    on it (a param only some runs have is not counted as varying)."""
    metrics = sorted({k for r in runs for k in r.metrics if not k.startswith("system/")})
    keys = sorted({k for r in runs for k in r.params})
    varying = [k for k in keys if len({r.params[k] for r in runs if k in r.params}) > 1]
    return ([Column("metrics", k) for k in metrics[:DEFAULT_METRIC_COLUMNS]]
            + [Column("params", k) for k in varying[:DEFAULT_PARAM_COLUMNS]])


# -- the table's state ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunsView:
    q: str = ""
    project: str = ""
    status: str = ""
    hypothesis: str = ""
    cols: tuple[str, ...] = ()
    order: str = ""
    page: int = 1
    size: int = DEFAULT_SIZE

    @property
    def filter(self) -> str:
        return combined_filter(self.q, self.status, self.hypothesis)

    def pairs(self, **changes: Any) -> list[tuple[str, str]]:
        """Query-string pairs of this view with ``changes``; defaults left out, one ``col`` per column."""
        view = replace(self, **changes)
        out = [(k, str(v)) for k, v in (("q", view.q), ("project", view.project), ("status", view.status),
                                         ("hypothesis", view.hypothesis), ("order", view.order)) if v]
        out += [("col", c) for c in view.cols]
        if view.page != 1:
            out.append(("page", str(view.page)))
        if view.size != DEFAULT_SIZE:
            out.append(("size", str(view.size)))
        return out

    def url(self, **changes: Any) -> str:
        query = urlencode(self.pairs(**changes))
        return f"/ui/runs?{query}" if query else "/ui/runs"

    def hidden(self, *skip: str) -> list[tuple[str, str]]:
        """Pairs for a form's hidden fields, leaving out what the form itself sets (and the page)."""
        return [(k, v) for k, v in self.pairs(page=1) if k not in skip]

    def sort_state(self, field: str) -> str | None:
        name, _, direction = self.order.strip().rpartition(" ")
        if name == field and direction in ("asc", "desc"):
            return direction
        return None

    def sort_url(self, field: str) -> str:
        """Sort by ``field``: descending first (best metric on top), then ascending."""
        direction = "asc" if self.sort_state(field) == "desc" else "desc"
        return self.url(order=f"{field} {direction}", page=1)


def pages(total: int, size: int) -> int:
    return max(1, -(-total // size))


def positive(name: str, value: str) -> int:
    try:
        number = int(value or "1")
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(f"{name} must be a whole number from 1, not {value!r}", hint="Use the page links.")
    return number


def page_size(value: str) -> int:
    try:
        size = int(value or DEFAULT_SIZE)
    except ValueError:
        size = 0
    if size not in PAGE_SIZES:
        raise UsageError(f"{value!r} runs per page is not offered",
                         hint=f"Choose one of: {', '.join(str(s) for s in PAGE_SIZES)}.")
    return size


@dataclass(frozen=True, slots=True)
class Choices:
    """What the filter and column controls offer (a fixed number of indexed queries)."""

    projects: list[str]
    hypotheses: list[str]
    params: list[str]
    metrics: list[str]
    tags: list[str]


def choices(session: Session) -> Choices:
    def keys(column: Any) -> list[str]:
        return list(session.scalars(select(column).distinct().order_by(column).limit(MAX_KEYS)))

    hypotheses = list(session.scalars(select(RunRow.hypothesis).where(RunRow.hypothesis.is_not(None)).distinct()
                                      .order_by(RunRow.hypothesis).limit(MAX_KEYS)))
    return Choices(projects=keys(ProjectRow.name), hypotheses=[h for h in hypotheses if h],
                   params=keys(RunParamRow.key), metrics=keys(MetricSeriesRow.key), tags=keys(RunTagRow.key))


# -- values ---------------------------------------------------------------------------------------------
def number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:.4g}"
    return str(value)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def numeric(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# -- charts ---------------------------------------------------------------------------------------------
def series_chart(series: Series, *, by_time: bool = False) -> dict[str, Any]:
    """One series as the charts draw it: x (steps, or UNIX times for resources), y (null where not finite)."""
    return {"key": series.key, "count": series.count, "downsampled": series.downsampled,
            "x": list(series.times) if by_time else list(series.steps),
            "y": [v if math.isfinite(v) else None for v in series.values]}


# -- logs and diffs -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LogPage:
    text: str
    page: int  # 1 is the tail (newest output)
    pages: int
    total: int  # characters in the whole log
    start: int
    end: int


def log_page(text: str, page: int, size: int = LOG_PAGE) -> LogPage:
    """Page ``page`` of ``text`` counted from its end, cut at line breaks where one is near."""
    n = pages(len(text), size)
    page = min(page, n)
    end = len(text) - (page - 1) * size
    start = max(0, end - size)
    if start > 0:
        newline = text.find("\n", start, min(end, start + 2048))
        if newline != -1:
            start = newline + 1
    if end < len(text):
        newline = text.find("\n", end, min(len(text), end + 2048))
        end = newline + 1 if newline != -1 else end
    return LogPage(text[start:end], page, n, len(text), start, end)


def diff_lines(text: str, limit: int) -> tuple[list[tuple[str, str]], bool]:
    """Lines of a unified diff with a class each (add, del, hunk, meta or ''), at most ``limit`` lines."""
    out: list[tuple[str, str]] = []
    lines = text.splitlines()
    for line in lines[:limit]:
        if line.startswith(("+++", "---", "diff ", "index ", "new file", "deleted file", "similarity", "rename ")):
            kind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = ""
        out.append((kind, line))
    return out, len(lines) > limit


def diff_of_diffs(a: str, b: str, name_a: str, name_b: str, limit: int) -> tuple[list[tuple[str, str]], bool]:
    """How run B's uncommitted changes differ from run A's: a unified diff of the two patches."""
    lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), fromfile=f"{name_a} (captured diff)",
                                      tofile=f"{name_b} (captured diff)", lineterm="", n=2))
    return diff_lines("\n".join(lines), limit)
