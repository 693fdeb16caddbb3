"""``medcycle audit``: query the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from medcycle.auth import audit
from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, emit_json, table
from medcycle.errors import UsageError

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    action: Annotated[str | None, typer.Option(help="Action prefix, e.g. 'object.'.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time, e.g. 2026-01-31T08:00:00+00:00.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    json: bool = JsonOpt,
) -> None:
    """Newest audit events first."""
    when = None
    if since:
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            raise UsageError(
                f"--since {since!r} is not an ISO time", hint="Use e.g. 2026-01-31T08:00:00+00:00."
            ) from None
        if when.tzinfo is None:
            raise UsageError("--since needs a timezone", hint="Append +00:00 for UTC.")
    with state(ctx).platform().session() as session:
        events = audit.query(session, actor=actor, action=action, since=when, limit=limit)
    if json:
        emit_json([e.to_dict() for e in events])
    else:
        table(
            "Audit log",
            ["#", "at", "actor", "action", "target", "outcome", "via"],
            [
                (e.seq, e.at, e.actor, e.action, f"{e.target_kind or ''} {e.target_id or ''}".strip(), e.outcome, e.via)
                for e in events
            ],
        )
