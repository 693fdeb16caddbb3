"""``medcycle monitor``: reports, drift, alerts, the schedule loop, references and the retention purge."""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from typing import Annotated, Any

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json, table
from medcycle.errors import UsageError
from medcycle.monitoring import alerts as alerts_mod
from medcycle.monitoring import drift as drift_mod
from medcycle.monitoring import log as plog
from medcycle.monitoring import notify, operations, report, schedule
from medcycle.monitoring import reference as reference_mod
from medcycle.store.base import utcnow

app = typer.Typer(no_args_is_help=True, help="Prediction log, scheduled reports, drift detection and alerts.")
alerts_app = typer.Typer(no_args_is_help=True, help="Alerts: list, acknowledge, silence.")
reference_app = typer.Typer(no_args_is_help=True, help="Drift references: capture, list.")
app.add_typer(alerts_app, name="alerts")
app.add_typer(reference_app, name="reference")
FormatOpt = typer.Option("--format", help="Chat message format: slack or json.")


def _since(text: str | None) -> datetime | None:
    """``8h``/``2d`` (ago) or an ISO time."""
    if not text:
        return None
    try:
        return utcnow() - alerts_mod.parse_duration(text)
    except UsageError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is neither a duration nor a time",
                         hint="Write e.g. 8h, 2d or 2024-05-01T06:00+00:00.") from None
    if value.tzinfo is None:
        raise UsageError(f"{text!r} has no time zone", hint="Add one, e.g. 2024-05-01T06:00+00:00.")
    return value


@app.command("report")
def report_(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="Start: 8h, 2d or an ISO time (default: the last report).")] = None,
    post: Annotated[bool, typer.Option("--post", help="Post a summary to the chat webhook.")] = False,
    url: Annotated[str | None, typer.Option(help="Webhook URL (default: the chat_webhook_url setting).")] = None,
    format_: Annotated[str, FormatOpt] = "slack",
    json: bool = JsonOpt,
) -> None:
    """Build a report (stored as HTML), optionally post it: for cron, or by hand."""
    platform = state(ctx).platform()
    done = report.generate(platform, since=_since(since), post=post, url=url, format=format_,
                           actor=state(ctx).actor)
    if json:
        emit_json(done.to_dict())
        return
    console().print(f"report [bold]{done.id}[/]: {done.summary['headline']}")
    console().print(f"  {platform.settings.resolved_public_url}{done.to_dict()['url']}")
    if done.posted:
        what = done.posted.get("error") or f"posted to {done.posted.get('target')} ({done.posted.get('status')})"
        console().print(f"  {what}")


@app.command("drift")
def drift_(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="A model version NAME@vN (default: every version with a "
                                                     "reference).")] = None,
    json: bool = JsonOpt,
) -> None:
    """Test the new complete windows of the prediction log against each version's reference."""
    results = drift_mod.evaluate(state(ctx).platform(), model_version=model)
    if json:
        emit_json([r.to_dict() for r in results])
        return
    table("Drift", ["model version", "new windows", "waiting", "drifting windows", "paged", "resolved"],
          [(r.model_version, r.windows, r.pending, ", ".join(f"{k} {v}" for k, v in r.drifted.items()) or None,
            ", ".join(p["signal"] for p in r.paged) or None, ", ".join(r.resolved) or None) for r in results])


@app.command("check")
def check_(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """One round of the schedule loop without reports: drift, alert rules, notifications."""
    result = schedule.tick(state(ctx).platform())
    if json:
        emit_json(result)
        return
    console().print(result)


@app.command("schedule")
def schedule_(
    ctx: typer.Context,
    no_post: Annotated[bool, typer.Option("--no-post", help="Record reports and alerts, post nothing.")] = False,
) -> None:
    """Run the monitoring loop: reports at the report times, drift and alerts every few minutes."""
    platform = state(ctx).platform()
    from medcycle.monitoring.sentry import init_sentry

    init_sentry(platform.settings, component="monitor")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    schedule.run(platform, stop=stop, post=not no_post, echo=lambda m: console().print(m))


@app.command("purge")
def purge_(
    ctx: typer.Context,
    days: Annotated[float | None, typer.Option(help="Keep this many days (default: prediction_retention_days).")]
    = None,
    json: bool = JsonOpt,
) -> None:
    """Delete prediction records older than the retention period."""
    platform = state(ctx).platform()
    keep = days if days is not None else plog.retention_days(platform.settings)
    with platform.session() as session:
        removed = plog.purge(session, older_than_days=keep)
    if json:
        emit_json({"removed": removed, "older_than_days": keep})
    else:
        console().print(f"removed {removed} prediction record(s) older than {keep:g} days")


@app.command("log")
def log_(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", help="Only this model version (NAME@vN).")] = None,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    outcome: Annotated[str | None, typer.Option(help="ok, error, timeout or refused.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    json: bool = JsonOpt,
) -> None:
    """The newest prediction records."""
    with state(ctx).platform().session(write=False) as session:
        rows = plog.recent(session, model_version=model, source=source, outcome=outcome, limit=limit)
        data = [{"id": r.id, "at": r.at, "model_version": r.model_version, "source": r.source,
                 "outcome": r.outcome, "predicted": r.predicted, "score": r.score, "latency_ms": r.latency_ms,
                 "ood_score": r.ood_score, "error_class": r.error_class} for r in rows]
    if json:
        emit_json(data)
        return
    table("Predictions", ["at", "model version", "source", "outcome", "predicted", "score", "latency ms", "id"],
          [(d["at"], d["model_version"], d["source"], d["outcome"], d["predicted"],
            None if d["score"] is None else f"{d['score']:.3f}",
            None if d["latency_ms"] is None else f"{d['latency_ms']:.0f}", d["id"]) for d in data])


# -- alerts -------------------------------------------------------------------------------------------------
@alerts_app.command("list")
def alerts_list(
    ctx: typer.Context,
    state_: Annotated[str | None, typer.Option("--state", help="open, acknowledged or resolved.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    json: bool = JsonOpt,
) -> None:
    """Alerts, newest first, with whether a silence holds them back."""
    with state(ctx).platform().session(write=False) as session:
        active = alerts_mod.silences(session)
        data = [alerts_mod.to_dict(r, active=active) for r in alerts_mod.list_alerts(session, state=state_,
                                                                                      limit=limit)]
    if json:
        emit_json(data)
        return
    table("Alerts", ["id", "severity", "state", "title", "count", "last", "silenced until"],
          [(a["id"], a["severity"], a["state"], a["title"], a["count"], a["last_at"], a["silenced_until"])
           for a in data])


@alerts_app.command("ack")
def alerts_ack(ctx: typer.Context, alert_id: Annotated[str, typer.Argument(help="The alert's id.")],
               json: bool = JsonOpt) -> None:
    """Acknowledge an alert: someone took the case; it is not sent again unless it escalates."""
    with state(ctx).platform().session() as session:
        row = alerts_mod.acknowledge(session, alert_id, actor=state(ctx).actor, via="cli")
        data = alerts_mod.to_dict(row)
    if json:
        emit_json(data)
    else:
        console().print(f"acknowledged [bold]{data['title']}[/]")


@alerts_app.command("silence")
def alerts_silence(
    ctx: typer.Context,
    pattern: Annotated[str, typer.Argument(help="An alert key or shell pattern, e.g. 'drift:chest@v3:*', or an "
                                                "alert id.")],
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d, 1w.")] = "1d",
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (required, audited).")] = "",
    json: bool = JsonOpt,
) -> None:
    """Stop sending alerts whose key matches PATTERN for a while (they are still recorded)."""
    with state(ctx).platform().session() as session:
        row = alerts_mod.silence(session, alerts_mod.pattern_of(session, pattern),
                                 duration=alerts_mod.parse_duration(duration), reason=reason, actor=state(ctx).actor,
                                 via="cli")
        data = alerts_mod.silence_dict(row)
    if json:
        emit_json(data)
    else:
        console().print(f"silenced [bold]{data['pattern']}[/] until {data['until']}")


@alerts_app.command("send")
def alerts_send(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Webhook URL (default: the chat_webhook_url setting).")] = None,
    format_: Annotated[str, FormatOpt] = "slack",
    json: bool = JsonOpt,
) -> None:
    """Evaluate the alert rules and send what is due now (the schedule loop does this every few minutes)."""
    platform = state(ctx).platform()
    with platform.session() as session:
        operations.check(session, rules=operations.Rules.from_settings(platform.settings))
        sent = notify.send_due(session, platform.settings, url=url, format=format_)
    if json:
        emit_json(sent.to_dict())
    else:
        console().print(f"{sent.alerts} alert(s) in {sent.groups} group(s) due"
                        + (f"; {sent.skipped}" if sent.skipped else f"; {len(sent.posted)} message(s) posted"))


# -- references ---------------------------------------------------------------------------------------------
@reference_app.command("capture")
def reference_capture(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model version: NAME@vN or NAME@ALIAS.")],
    on: Annotated[str, typer.Option("--on", help="The dataset version, NAME@TAG.")],
    split: Annotated[str, typer.Option(help="Split(s) to use, comma-separated.")] = "val",
    window: Annotated[int, typer.Option(help="Predictions per drift window.")] = reference_mod.DEFAULT_WINDOW,
    persist: Annotated[str, typer.Option(help="Page when a signal drifts in K of N windows (K/N).")] = "3/4",
    budget: Annotated[float, typer.Option(help="False pages allowed per window.")] = reference_mod.DEFAULT_BUDGET,
    json: bool = JsonOpt,
) -> None:
    """Compute and store a model version's drift reference from a dataset version's validation split."""
    try:
        k, n = (int(x) for x in persist.split("/"))
    except ValueError:
        raise UsageError(f"--persist {persist!r} is not K/N", hint="E.g. --persist 3/4.") from None
    policy = reference_mod.Policy(window=window, k=k, n=n, budget=budget)
    captured = reference_mod.capture(state(ctx).platform(), model, on, split=split, policy=policy,
                                     actor=state(ctx).actor, via="cli", log=lambda m: console().print(f"[dim]{m}[/]"))
    if json:
        emit_json(captured.to_dict())
        return
    console().print(f"reference of [bold]{captured.model_version}[/] from {captured.cases} cases of {captured.dataset} "
                    f"({captured.split}): signals {', '.join(captured.summary['signals'])}; per-window α "
                    f"{captured.summary['alpha']:.4f}")


@reference_app.command("list")
def reference_list(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """The newest reference of every model version."""
    with state(ctx).platform().session(write=False) as session:
        rows = reference_mod.references(session)
        data: list[dict[str, Any]] = [{"id": r.id, "model_version": r.model_version, "dataset": r.dataset_ref,
                                       "split": r.split,
                 "cases": r.cases, "window": r.window, "signals": r.summary.get("signals"),
                 "created_at": r.created_at} for r in rows]
    if json:
        emit_json(data)
        return
    table("Drift references", ["model version", "dataset", "split", "cases", "window", "signals", "captured"],
          [(d["model_version"], d["dataset"], d["split"], d["cases"], d["window"],
            ", ".join(d["signals"] or []), d["created_at"]) for d in data])

