"""``medcycle run``: list/filter, show, compare, metrics, log, diff and sync of tracked runs.

Each command parses its input, calls one function of :mod:`medcycle.experiments` and prints the result.
"""

from __future__ import annotations

import math
import sys
from typing import Annotated, Any

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, err_console, human_bytes, table

app = typer.Typer(no_args_is_help=True, help="Experiment tracking: list, show, compare, metrics, log, diff, sync.")
RunArg = typer.Argument(help="Run id, id prefix (4+ characters) or unique name.")
FILTER_HELP = 'e.g. \'params.lr > 1e-3 and metrics.val_dice > 0.8 and tags.team == "chest"\'.'
ORDER_HELP = "e.g. 'metrics.val_dice desc' (default: started desc)."
COLUMNS_HELP = "Comma-separated params.X, metrics.Y, tags.Z to show (default: up to 4 metrics)."


def _num(value: float | None) -> str | None:
    if value is None:
        return None
    if not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"


@app.command("list")
def list_(
    ctx: typer.Context,
    filter: Annotated[str | None, typer.Option("--filter", "-f", help=FILTER_HELP)] = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project.")] = None,
    order: Annotated[str | None, typer.Option("--order", "-o", help=ORDER_HELP)] = None,
    columns: Annotated[str | None, typer.Option("--columns", "-c", help=COLUMNS_HELP)] = None,
    limit: Annotated[int, typer.Option(min=0, max=10_000, help="At most this many runs.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many runs.")] = 0,
    json: bool = JsonOpt,
) -> None:
    """Runs matching a filter, newest first, with their last metric values."""
    from medcycle.experiments.query import list_runs

    with state(ctx).platform().session() as session:
        result = list_runs(session, filter, project=project, order=order, limit=limit, offset=offset)
    if json:
        emit_json(result.to_dict())
        return
    wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    if wanted is None:
        keys = sorted({k for r in result.runs for k in r.metrics if not k.startswith("system/")})
        wanted = [f"metrics.{k}" for k in keys[:4]]

    def cell(run: Any, col: str) -> Any:
        space, _, key = col.partition(".")
        if space == "metrics":
            return _num(run.metrics.get(key))
        if space in ("params", "tags"):
            return getattr(run, space).get(key)
        return getattr(run, col, None)

    heads = ["id", "project", "name", "status", "started", "verdict", *wanted]
    table(f"Runs ({len(result.runs)} of {result.total})", heads,
          [(r.id[:8], r.project, r.name, r.status, r.started_at, r.verdict, *(cell(r, c) for c in wanted))
           for r in result.runs])


@app.command("show")
def show(ctx: typer.Context, run: Annotated[str, RunArg], json: bool = JsonOpt) -> None:
    """One run: attributes, verdict, params, metric summaries, artifacts and captured context."""
    from medcycle.experiments.runs import get_run

    with state(ctx).platform().session() as session:
        detail = get_run(session, run)
    if json:
        emit_json(detail.to_dict())
        return
    s = detail.summary
    git = detail.capture.get("git") or {}
    reasons = ", ".join(s.verdict_reasons)
    table(None, ["field", "value"], [
        ("run", f"{s.id} ({s.name})"), ("project", s.project), ("status", s.status),
        ("started", s.started_at), ("ended", s.ended_at), ("by", f"{s.created_by} on {detail.host}"),
        ("hypothesis", s.hypothesis), ("dataset", f"{s.dataset or '-'} → {(s.dataset_digest or 'unresolved')[:16]}"),
        ("verdict", s.verdict + (f" ({reasons})" if reasons else "")),
        ("commit", f"{git.get('commit') or '-'} on {git.get('branch') or '-'}"
                   + (" +dirty" if git.get("dirty") else "") + ("" if git.get("pushed") else " (not pushed)")),
        ("remote", git.get("remote")), ("seed", detail.seeds.get("seed")),
        ("packages", f"{(detail.capture.get('packages') or {}).get('count', '-')} "
                     f"(hash {(detail.packages_hash or '-')[:16]})"),
        ("output", human_bytes(detail.log_bytes)), ("tags", ", ".join(f"{k}={v}" for k, v in s.tags.items()) or None),
    ])
    if s.params:
        table("Params", ["param", "value"], list(s.params.items()))
    if detail.metrics:
        table("Metrics", ["metric", "last", "step", "min", "max", "points"],
              [(m.key, _num(m.last), m.last_step, _num(m.min), _num(m.max), m.count) for m in detail.metrics.values()])
    if detail.artifacts:
        table("Artifacts", ["name", "kind", "step", "size", "digest"],
              [(a.name, a.kind, a.step, human_bytes(a.size or 0), (a.digest or "missing")[:16])
               for a in detail.artifacts])


@app.command("compare")
def compare(ctx: typer.Context, runs: Annotated[list[str], typer.Argument(help="Two or more runs.")],
            all_params: Annotated[bool, typer.Option("--all", help="Show equal params too.")] = False,
            json: bool = JsonOpt) -> None:
    """Param differences, final metrics and code/environment differences of several runs."""
    from medcycle.experiments.compare import compare_runs

    platform = state(ctx).platform()
    with platform.session() as session:
        result = compare_runs(session, runs, platform.objects)
    if json:
        emit_json(result.to_dict())
        return
    heads = [f"{r['id'][:8]} {r['name']}" for r in result.runs]
    shown = result.params if all_params else {k: result.params[k] for k in result.differing_params}
    table("Params" + ("" if all_params else " that differ"), ["param", *heads], [(k, *v) for k, v in shown.items()])
    table("Final metrics (last / best)", ["metric", *heads],
          [(k, *(None if m is None else f"{_num(m['last'])} (min {_num(m['min'])}, max {_num(m['max'])})" for m in v))
           for k, v in result.metrics.items() if not k.startswith("system/")])
    table("Context that differs", ["what", *heads],
          [(k, *(str(x)[:16] if x is not None else None for x in result.context[k])) for k in result.differing_context])
    if result.packages:
        table("Packages that differ", ["package", *heads], [(k, *v) for k, v in result.packages.items()])


@app.command("metrics")
def metrics(ctx: typer.Context, run: Annotated[str, RunArg],
            key: Annotated[list[str] | None, typer.Option("--key", "-k", help="Metric key (repeatable).")] = None,
            max_points: Annotated[int | None, typer.Option(help="Downsample each series to ~N points.")] = None,
            json: bool = JsonOpt) -> None:
    """A run's metric series (steps, times, values)."""
    from medcycle.experiments.runs import metric_history

    with state(ctx).platform().session() as session:
        series = metric_history(session, run, key, max_points)
    if json:
        emit_json({k: s.to_dict() for k, s in series.items()})
        return
    for k, s in series.items():
        table(f"{k} ({s.count} points{', downsampled' if s.downsampled else ''})", ["step", "value"],
              list(zip(s.steps, (_num(v) for v in s.values), strict=True)))


@app.command("log")
def log(ctx: typer.Context, run: Annotated[str, RunArg],
        stream: Annotated[str | None, typer.Option(help="stdout or stderr (default both, interleaved).")] = None,
        tail: Annotated[int | None, typer.Option(help="Only the last N bytes.")] = None) -> None:
    """Print the run's captured stdout/stderr."""
    from medcycle.experiments.runs import read_log

    with state(ctx).platform().session() as session:
        text = read_log(session, run, stream=stream, tail_bytes=tail)
    sys.stdout.write(text)


@app.command("diff")
def diff(ctx: typer.Context, run: Annotated[str, RunArg]) -> None:
    """Print the uncommitted diff captured with the run (apply it with `git apply`)."""
    from medcycle.experiments.runs import read_diff

    platform = state(ctx).platform()
    with platform.session() as session:
        data = read_diff(session, platform.objects, run)
    if data is None:
        err_console().print("the run's tree was clean (or capture was off): no diff")
        return
    sys.stdout.buffer.write(data)


@app.command("sync")
def sync(
    ctx: typer.Context,
    runs: Annotated[list[str] | None, typer.Argument(help="Only these runs (id prefixes).", show_default=False)] = None,
    server: Annotated[str | None, typer.Option(help="Deliver to this server instead of the local store.")] = None,
    token: Annotated[str | None, typer.Option(help="API token for --server.")] = None,
    any_target: Annotated[bool, typer.Option("--any-target", help="Also journals written for another store.")] = False,
    json: bool = JsonOpt,
) -> None:
    """Deliver journals of offline or crashed runs (each record exactly once); crashed runs end as `crashed`."""
    from medcycle.experiments.journal import Sink
    from medcycle.experiments.sync import sync_journals

    cli = state(ctx)
    settings = cli.settings()
    sink: Sink
    if server:
        from medcycle.experiments.remote import HttpSink

        sink = HttpSink(server, token)
    else:
        from medcycle.experiments.ingest import LocalSink

        sink = LocalSink(cli.platform())
    try:
        results = sync_journals(settings.home / "journals", sink, runs=runs,
                                target=None if any_target else sink.target)
    finally:
        sink.close()
    if json:
        emit_json([r.to_dict() for r in results])
    elif not results:
        console().print("nothing to sync")
    else:
        table("Sync", ["run", "outcome", "records", "crashed", "detail"],
              [(r.run_id[:12], r.outcome, r.sent, r.crashed, r.detail) for r in results])
    if any(r.outcome == "failed" for r in results):
        raise typer.Exit(1)
