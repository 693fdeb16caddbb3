"""The ``medcycle`` command: a root with global options and one sub-app per domain."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from typer import _click as click  # typer's own copy of click: its command classes
from typer.core import TyperGroup

from medcycle.cli import serving as serving_cli
from medcycle.cli import stages, system
from medcycle.cli.context import CliState
from medcycle.cli.errors import run


@dataclass(frozen=True, slots=True)
class _Lazy:
    """A command imported when it is used: ``attr`` of ``module`` is a sub-app (``typer.Typer``), a command
    function, or (``factory``) a function that returns the sub-app."""

    module: str
    attr: str
    help: str | None = None
    factory: bool = False

    def load(self, name: str) -> click.Command:
        found: Any = getattr(importlib.import_module(self.module), self.attr)
        if self.factory:
            found = found()
        # Registered on a throwaway root as on the real one, so the command is what `add_typer` / `command`
        # make there (a sub-app of one command stays a group; no completion options).
        root = typer.Typer(add_completion=False)
        root.callback()(_nothing)
        if isinstance(found, typer.Typer):
            root.add_typer(found, name=name, help=self.help)
        else:
            root.command(name)(found)
        command: click.Command = typer.main.get_command(root).commands[name]  # type: ignore[attr-defined]
        return command


def _nothing() -> None:
    """The throwaway root's callback (a root with a callback is always a group)."""


#: The domain commands, in the order ``--help`` lists them. Each imports its domain (SQLAlchemy models, numpy,
#: MONAI, ...) only when used, so ``medcycle data summary`` does not pay for labels, monitoring and training.
LAZY: dict[str, _Lazy] = {
    "demo": _Lazy("medcycle.cli.system", "demo_app", "The main job on embedded defaults; `demo data` writes demo data.",
                  factory=True),
    "hypothesis": _Lazy("medcycle.cli.hypotheses", "app",
                        "Hypotheses: questions, ICE/RICE, votes, the HiPPO's call, status, links."),
    "train": _Lazy("medcycle.training.cli", "app", "MONAI training on dataset versions, tracked as runs."),
    "run": _Lazy("medcycle.cli.runs", "app", "Experiment tracking: list, show, compare, metrics, log, diff, sync."),
    "data": _Lazy("medcycle.cli.data", "app", "Ingest with de-identification; the catalog: sources, summary, query."),
    "dataset": _Lazy("medcycle.cli.datasets", "app",
                     "Versioned datasets: items, labels, splits, versions, cards, pull/push."),
    "store": _Lazy("medcycle.cli.store", "app", "Object store: put, get, stat, list, fsck, gc."),
    "backup": _Lazy("medcycle.cli.backup", "app", "Consistent backups of the database and objects; restore."),
    "user": _Lazy("medcycle.cli.users", "user_app", "Users and roles."),
    "token": _Lazy("medcycle.cli.users", "token_app", "API tokens (shown once, stored hashed)."),
    "audit": _Lazy("medcycle.cli.audit", "app", "The audit log of data reads and privileged changes."),
    "evaluate": _Lazy("medcycle.cli.evaluate", "evaluate"),
    "serve-worker": _Lazy("medcycle.cli.serve_worker", "worker"),
    "model": _Lazy("medcycle.cli.models", "app",
                   "Model registry: versions, aliases, model cards, promotion, rollback."),
    "agent": _Lazy("medcycle.cli.agents", "app", "Agents that take queued tasks and run them on this machine."),
    "pipeline": _Lazy("medcycle.cli.pipelines", "app",
                      "Pipelines: declarative DAGs of steps, cached on content digests; run locally or on agents."),
    "labels": _Lazy("medcycle.cli.labels", "app",
                    "Labeling: schemas, readers, tasks, queues, adjudication, label sets."),
    "jobs": _Lazy("medcycle.cli.jobs", "app", "Durable job queues: list, show, cancel, requeue."),
    "monitor": _Lazy("medcycle.cli.monitor", "app", "Prediction log, scheduled reports, drift detection and alerts."),
}


class _LazyGroup(TyperGroup):
    """The root group: the commands registered on ``app`` plus :data:`LAZY`, each imported on first use."""

    lazy: dict[str, _Lazy] = LAZY

    def list_commands(self, ctx: click.Context) -> list[str]:
        eager = super().list_commands(ctx)
        return [*eager, *(name for name in self.lazy if name not in eager)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in self.lazy:
            found = self.lazy[cmd_name].load(cmd_name)
            self.add_command(found, cmd_name)
        return found


app = typer.Typer(
    name="medcycle",
    help="medcycle: the whole life cycle of medical-imaging ML in one tool.",
    cls=_LazyGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option(help="Home folder (MEDCYCLE_HOME).", show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file (MEDCYCLE_CONFIG).", show_default=False)] = None,
    database_url: Annotated[str | None, typer.Option(help="Metadata store URL.", show_default=False)] = None,
    object_store_url: Annotated[str | None, typer.Option(help="Object store URL.", show_default=False)] = None,
    queue_url: Annotated[str | None, typer.Option(help="Job queue URL.", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug logs.")] = False,
) -> None:
    overrides = {
        "home": home,
        "database_url": database_url,
        "object_store_url": object_store_url,
        "queue_url": queue_url,
    }
    if verbose:
        overrides["log_level"] = "DEBUG"
    ctx.obj = CliState(
        config_file=config, overrides={k: v for k, v in overrides.items() if v is not None}, verbose=verbose
    )
    ctx.call_on_close(ctx.obj.close)


system.register(app)
serving_cli.register(app)
stages.register(app)


def main() -> None:
    raise SystemExit(run(app))
