"""Command groups of the life-cycle stages that later releases fill in.

Each group exists now so that ``medcycle --help`` shows the whole cycle; invoking one says plainly
what it will do and exits with status 2 (nothing is pretended).
"""

from __future__ import annotations

import typer

STAGES: dict[str, str] = {
}


def _placeholder(name: str, summary: str) -> typer.Typer:
    sub = typer.Typer(help=f"{summary} (not available yet)", invoke_without_command=True)

    @sub.callback()
    def _explain(ctx: typer.Context) -> None:
        typer.echo(
            f"`medcycle {name}` is not available in this release. It will: {summary}\n"
            "See docs/architecture.md for the plan; `medcycle --help` lists what works today.",
            err=True,
        )
        raise typer.Exit(2)

    return sub


def register(app: typer.Typer) -> None:
    for name, summary in STAGES.items():
        app.add_typer(_placeholder(name, summary), name=name, help=f"{summary} (not available yet)")
