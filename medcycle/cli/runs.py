"""``medcycle run``: list/filter, show, compare, metrics, log, diff and sync of tracked runs; enqueue and reproduce.

Each command parses its input, calls one function of :mod:`medcycle.experiments` (``enqueue`` and ``reproduce``:
:mod:`medcycle.agents`) and prints the result.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, err_console, human_bytes, table

app = typer.Typer(no_args_is_help=True,
                  help="Experiment tracking: list, show, compare, metrics, log, diff, sync, enqueue, reproduce.")
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


def _pairs(items: list[str] | None, what: str, *, parse: bool) -> dict[str, Any]:
    """``KEY=VALUE`` items as a dict; with ``parse`` a value that is JSON (``3``, ``true``, ``[1]``) is decoded."""
    import json as json_lib

    from medcycle.errors import UsageError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {item!r} is not KEY=VALUE", hint=f"E.g. {what} lr=0.01.")
        parsed: Any = value
        if parse:
            try:
                parsed = json_lib.loads(value)
            except ValueError:
                parsed = value
        out[key.strip()] = parsed
    return out


@app.command("enqueue")
def enqueue(
    ctx: typer.Context,
    queue: Annotated[str, typer.Option("--queue", "-q", help="Queue the agents take from.", show_default=False)],
    args: Annotated[list[str] | None, typer.Argument(
        help="A training config (.json/.toml/.yaml), or a command after `--`.", show_default=False)] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    project: Annotated[str | None, typer.Option(help="Project of the task (a config's tracking.project).")] = None,
    hypothesis: Annotated[str | None, typer.Option(help="Hypothesis it tests, e.g. H-3.")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="Dataset version NAME@TAG the agent pulls "
                                                      "(MEDCYCLE_DATASET_<NAME>); repeatable.")] = None,
    output: Annotated[list[str] | None, typer.Option(help="File or folder (relative to the working directory) "
                                                     "stored by digest after the run; repeatable.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="KEY=VALUE in MEDCYCLE_PARAMS; repeatable.")] = None,
    env_var: Annotated[list[str] | None, typer.Option("--env-var", help="KEY=VALUE set for the command; "
                                                      "repeatable.")] = None,
    include: Annotated[list[Path] | None, typer.Option(help="An untracked file that must travel with the task; "
                                                       "repeatable.")] = None,
    name: Annotated[str | None, typer.Option(help="A label for the task.")] = None,
    timeout: Annotated[float | None, typer.Option(min=1, help="Stop the command after this many seconds.")] = None,
    seed: Annotated[int | None, typer.Option(help="Exposed as MEDCYCLE_SEED.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Enqueueing the same key again returns the first "
                                                        "task.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Queue a training config or a command for an agent; the code (commit, diff, unpushed commits) travels."""
    from medcycle.agents.enqueue import enqueue as enqueue_task

    done = enqueue_task(
        state(ctx).platform(), args or [], queue=queue, cwd=Path.cwd(), priority=priority,
        idempotency_key=idempotency_key, project=project, hypothesis=hypothesis, datasets=dataset or [],
        outputs=output or [], params=_pairs(param, "--param", parse=True),
        env={k: str(v) for k, v in _pairs(env_var, "--env-var", parse=False).items()}, include=include or [],
        name=name, timeout_s=timeout, seed=seed)
    if json:
        emit_json(done.to_dict())
        return
    cap, code = done.capture, done.capture.code
    parts = []
    if code is not None and code.commit:
        parts.append(f"commit {code.commit[:12]}" + (f" on {code.branch}" if code.branch else ""))
        parts += ["+diff"] * bool(code.diff_digest)
        parts += [f"+bundle of unpushed commits ({human_bytes(cap.bundle_bytes)})"] * bool(code.bundle_digest)
    parts += [f"+{len(cap.untracked)} untracked file(s)"] * bool(cap.untracked)
    err_console().print(f"queued on {queue!r} (priority {priority}): {' '.join(done.spec.command)}\n"
                        f"   code: {', '.join(parts) or 'none'}\n"
                        f"   watch: medcycle jobs show {done.job.id}")
    sys.stdout.write(done.job.id + "\n")


@app.command("reproduce")
def reproduce(
    ctx: typer.Context,
    run: Annotated[str, RunArg],
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Run it on an agent of this queue (and wait) "
                                              "instead of here.")] = None,
    tolerance: Annotated[float, typer.Option(min=0, help="Largest |Δ| of a final metric value that counts as "
                                             "equal.")] = 1e-6,
    timeout: Annotated[float, typer.Option(min=1, help="With --queue: how long to wait for the task.")] = 86_400.0,
    workdir: Annotated[Path | None, typer.Option(help="Where to rebuild the tree here (default HOME/agent).")]
    = None,
    ignore: Annotated[list[str] | None, typer.Option(help="Metrics (globs) not compared; repeatable (default: "
                                                     "system/* and *seconds*).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Re-execute a finished run from its capture and compare final metrics; exit 1 when any |Δ| > tolerance."""
    from medcycle.agents.executor import ExecOptions, settings_env
    from medcycle.agents.reproduce import DEFAULT_IGNORE
    from medcycle.agents.reproduce import reproduce as reproduce_run

    cli = state(ctx)
    platform = cli.platform()
    errout = sys.stderr.buffer

    def echo(data: bytes) -> None:
        errout.write(data)
        errout.flush()

    options = ExecOptions(workdir=(workdir or platform.settings.home / "agent").expanduser(), name="reproduce",
                          child_env=settings_env(platform.settings, cli.config_file), echo=echo, actor=cli.actor)
    report = reproduce_run(platform, run, tolerance=tolerance, queue=queue, timeout=timeout, options=options,
                           ignore=DEFAULT_IGNORE if ignore is None else ignore)
    if json:
        emit_json(report.to_dict())
    else:
        table(f"Run {report.original[:12]} re-run as {(report.reproduction or '-')[:12]} "
              f"(exit {report.exit_code}, tolerance {tolerance:g})", ["metric", "original", "reproduced", "Δ", "ok"],
              [(m.key, _num(m.original), _num(m.reproduced), _num(m.delta), m.within) for m in report.metrics])
        if report.ignored:
            err_console().print(f"not compared: {', '.join(report.ignored)}")
        for warning in report.warnings:
            err_console().print(f"warning: {warning}")
        console().print("reproduced within tolerance" if report.ok else
                        f"NOT reproduced: {', '.join(m.key for m in report.differing) or 'the re-run failed'}")
    if not report.ok:
        raise typer.Exit(1)


from medcycle.cli.run_card import card as _card  # noqa: E402  (the card command lives in its own module)

app.command("card")(_card)
