"""``medcycle run card RUN``: print a run's experiment card, write its conclusions, post it to the chat.

Registered in :mod:`medcycle.cli.runs` as ``app.command("card")(card)``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from medcycle.cli.context import state
from medcycle.cli.output import JsonOpt, console, emit_json

FORMAT_HELP = "slack (Block Kit, also Mattermost/Rocket.Chat) or json (a generic document)."


def card(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id, id prefix (4+ characters) or unique name.")],
    conclusions: Annotated[str | None, typer.Option(
        "--conclusions", help="Write the conclusions first ('' clears them).")] = None,
    key_metric: Annotated[list[str] | None, typer.Option(
        "--key-metric", help="A metric the card headlines (repeat; with --conclusions).")] = None,
    post: Annotated[bool, typer.Option("--post", help="Post the card to the chat webhook.")] = False,
    url: Annotated[str | None, typer.Option(
        "--url", help="Webhook URL for --post (default: the chat_webhook_url setting).")] = None,
    format: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "slack",
    json: bool = JsonOpt,
) -> None:
    """A run's experiment card: key metrics, params, verdict, data, hypothesis and conclusions."""
    from medcycle.experiments import cards

    cli = state(ctx)
    platform = cli.platform()
    base = cards.default_base_url(platform.settings)
    if conclusions is not None:
        with platform.session() as session:
            cards.set_conclusions(session, run, conclusions, actor=cli.actor, key_metrics=key_metric, via="cli")
    target = cards.resolve_webhook(platform.settings, url) if post else None
    with platform.session(write=False) as session:
        built = cards.build_card(session, run, base_url=base)
    result = cards.post_card(built, target, format=format) if target else None
    if result is not None:
        from medcycle.auth import audit

        with platform.session() as session:
            audit.record(session, cli.actor, "run.card.post", target_kind="run", target_id=built.run_id, via="cli",
                         webhook=result.target, format=format, status=result.status)
    if json:
        emit_json({"card": built.to_dict(), "posted": result.to_dict() if result else None})
        return
    out = console()
    out.print(built.to_markdown(), markup=False, highlight=False)
    if result is not None:
        out.print(f"Posted as {result.format} to {result.target} (HTTP {result.status}).", markup=False)
