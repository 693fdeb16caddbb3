"""``medcycle pipeline``: run a pipeline file (locally or on agents), show a run, list runs, validate a file.

Each command parses its input, calls one function of :mod:`medcycle.pipelines` and prints the result.
``run`` exits 0 when every step succeeded or was a cache hit, 1 when a step failed (its dependants skipped).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, err_console, table
from medcycle.errors import UsageError
from medcycle.pipelines.state import RunDetail, RunStatus, StepInfo, StepState

app = typer.Typer(no_args_is_help=True, help="Pipelines: declarative DAGs of steps, cached on content digests.")
RunArg = typer.Argument(help="Pipeline run id, id prefix (4+ characters), or pipeline name (its latest run).")
FileArg = typer.Argument(help="The pipeline file (YAML).", show_default=False)
AGENT_PARALLEL = 4  # steps submitted at once by default: independent branches run on several agents

STATE_STYLE = {
    StepState.PENDING: "dim", StepState.RUNNING: "cyan", StepState.CACHED: "blue", StepState.SUCCEEDED: "green",
    StepState.FAILED: "red", StepState.SKIPPED: "yellow",
}


class ExecutorName(StrEnum):
    LOCAL = "local"
    AGENT = "agent"


def _seconds(value: float | None) -> str | None:
    return f"{value:.1f} s" if value is not None else None


def _outputs(step: StepInfo) -> str:
    return ", ".join(f"{k}={v['digest'][:12]}" for k, v in step.outputs.items()) or "-"


def _print_run(detail: RunDetail) -> None:
    r = detail.run
    out = console()
    style = "green" if r.status is RunStatus.SUCCEEDED else "red" if r.status is RunStatus.FAILED else "cyan"
    out.print(f"[bold]{r.pipeline}[/] run {r.id} · [{style}]{r.status.value}[/] · executor {r.executor}"
              + (f" (queue {r.queue})" if r.queue else "") + f" · {_seconds(r.seconds) or 'running'}")
    counts = ", ".join(f"{n} {s}" for s, n in r.counts.items() if n)
    out.print(f"{len(detail.steps)} steps: {counts}")
    table(None, ["step", "state", "needs", "key", "took", "outputs", "job", "run"],
          [(s.name, f"[{STATE_STYLE[s.state]}]{s.state.value}[/]", ", ".join(s.needs) or None,
            (s.cache_key or "")[:12] or None, None if s.cache_hit else _seconds(s.seconds), _outputs(s),
            (s.job_id or "")[:12] or None, (s.tracked_run_id or "")[:12] or None)
           for s in detail.steps])
    for s in detail.steps:
        if s.state is StepState.FAILED and s.error:
            out.print(f"[red]{s.name}[/]: {s.error}")
    if r.error and r.status is RunStatus.FAILED:
        err_console().print(f"[red]pipeline failed[/]: {r.error.splitlines()[0]}")


@app.command("run")
def run(
    ctx: typer.Context,
    file: Annotated[Path, FileArg],
    executor: Annotated[ExecutorName, typer.Option("--executor", "-e", help="Where steps execute.")] = (
        ExecutorName.LOCAL),
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="The agents' queue (--executor agent).")] = None,
    priority: Annotated[int, typer.Option(help="Queue priority of the steps (--executor agent).")] = 0,
    force: Annotated[list[str] | None, typer.Option(
        "--force", "-f", help="Execute this step even on a cache hit (repeatable; '*' for all).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="Override a declared param: KEY=VALUE (value as JSON, else text; repeatable).")] = None,
    parallel: Annotated[int | None, typer.Option(
        min=1, max=64, help="Steps executing at once (default: 1 locally, 4 on agents).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Run a pipeline: steps whose inputs, code and params are unchanged are cache hits; the rest execute."""
    from medcycle.pipelines.executors import Executor, LocalExecutor
    from medcycle.pipelines.runner import StepEvent, run_pipeline
    from medcycle.pipelines.spec import load_pipeline, parse_param_overrides

    cli = state(ctx)
    spec = load_pipeline(file, params=parse_param_overrides(param or []))
    platform = cli.platform()
    chosen: Executor
    if executor is ExecutorName.AGENT:
        if not queue:
            raise UsageError("--executor agent needs --queue NAME",
                             hint="Name the queue agents take, e.g. --queue gpu (`medcycle agent start --queue gpu`).")
        from medcycle.pipelines.agent import AgentExecutor

        chosen = AgentExecutor(platform, queue=queue, priority=priority)
    else:
        if queue:
            raise UsageError("--queue applies to --executor agent only", hint="Add --executor agent, or drop --queue.")
        chosen = LocalExecutor(platform, actor=cli.actor, via="cli")
    progress = err_console()

    def show(event: StepEvent) -> None:
        style = STATE_STYLE[event.state]
        progress.print(f"  {event.step:<24} [{style}]{event.state.value}[/]" + (f"  {event.detail}" if event.detail
                                                                                 else ""))

    progress.print(f"pipeline [bold]{spec.name}[/]: {len(spec.steps)} steps on {chosen.name}")
    parallel = parallel or (AGENT_PARALLEL if executor is ExecutorName.AGENT else 1)
    detail = run_pipeline(platform, spec, executor=chosen, force=force or [], parallel=parallel, actor=cli.actor,
                          via="cli", on_event=show)
    if json:
        emit_json(detail.to_dict())
    else:
        _print_run(detail)
    if detail.run.status is not RunStatus.SUCCEEDED:
        raise typer.Exit(1)


@app.command("show")
def show(ctx: typer.Context, run: Annotated[str, RunArg], json: bool = JsonOpt) -> None:
    """One run: every step's state, cache key, timing, outputs, job and tracked run."""
    from medcycle.pipelines.state import get_run

    with state(ctx).platform().session(write=False) as session:
        detail = get_run(session, run)
    if json:
        emit_json(detail.to_dict())
    else:
        _print_run(detail)


@app.command("list")
def list_(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only runs of this pipeline.")] = None,
    limit: Annotated[int, typer.Option(min=0, max=1000, help="At most this many runs.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many runs.")] = 0,
    json: bool = JsonOpt,
) -> None:
    """Pipeline runs, newest first, with how many steps were cache hits, executed, failed or skipped."""
    from medcycle.pipelines.state import list_runs

    with state(ctx).platform().session(write=False) as session:
        runs = list_runs(session, pipeline=pipeline, limit=limit, offset=offset)
    if json:
        emit_json([r.to_dict() for r in runs])
        return
    table("Pipeline runs", ["run", "pipeline", "status", "executor", "cached", "succeeded", "failed", "skipped",
                            "started", "took", "by"],
          [(r.id[:12], r.pipeline, r.status.value, r.executor, r.counts.get("cached", 0),
            r.counts.get("succeeded", 0), r.counts.get("failed", 0), r.counts.get("skipped", 0), r.started_at,
            _seconds(r.seconds), r.created_by) for r in runs])


@app.command("validate")
def validate(
    file: Annotated[Path, FileArg],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Override a param: KEY=VALUE.")] = None,
    json: bool = JsonOpt,
) -> None:
    """Check a pipeline file (fields, references, cycles) and print its steps in the order they run."""
    from medcycle.pipelines.spec import load_pipeline, parse_param_overrides

    spec = load_pipeline(file, params=parse_param_overrides(param or []))
    if json:
        emit_json(spec.to_dict())
        return
    console().print(f"[bold]{spec.name}[/]: {len(spec.steps)} steps, valid")
    table(None, ["step", "needs", "datasets", "outputs", "cache"],
          [(s.name, ", ".join(s.needs) or None, ", ".join(s.datasets) or None, ", ".join(s.outputs.values()) or None,
            s.cache) for s in spec.steps])
