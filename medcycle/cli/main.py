"""The ``medcycle`` command: a root with global options and one sub-app per domain."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medcycle.cli import agents as agents_cli
from medcycle.cli import audit as audit_cli
from medcycle.cli import backup as backup_cli
from medcycle.cli import data as data_cli
from medcycle.cli import datasets as datasets_cli
from medcycle.cli import evaluate as evaluate_cli
from medcycle.cli import hypotheses as hypotheses_cli
from medcycle.cli import jobs as jobs_cli
from medcycle.cli import labels as labels_cli
from medcycle.cli import models as models_cli
from medcycle.cli import monitor as monitor_cli
from medcycle.cli import pipelines as pipelines_cli
from medcycle.cli import runs as runs_cli
from medcycle.cli import serve_worker as serve_worker_cli
from medcycle.cli import serving as serving_cli
from medcycle.cli import stages, store, system, users
from medcycle.cli.context import CliState
from medcycle.cli.errors import run
from medcycle.training import cli as training_cli

app = typer.Typer(
    name="medcycle",
    help="medcycle: the whole life cycle of medical-imaging ML in one tool.",
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
app.add_typer(
    hypotheses_cli.app,
    name="hypothesis",
    help="Hypotheses: questions, ICE/RICE, votes, the HiPPO's call, status, links.",
)
app.add_typer(training_cli.app, name="train", help="MONAI training on dataset versions, tracked as runs.")
app.add_typer(runs_cli.app, name="run", help="Experiment tracking: list, show, compare, metrics, log, diff, sync.")
app.add_typer(data_cli.app, name="data", help="Ingest with de-identification; the catalog: sources, summary, query.")
app.add_typer(
    datasets_cli.app, name="dataset", help="Versioned datasets: items, labels, splits, versions, cards, pull/push."
)
app.add_typer(store.app, name="store", help="Object store: put, get, stat, list, fsck, gc.")
app.add_typer(backup_cli.app, name="backup", help="Consistent backups of the database and objects; restore.")
app.add_typer(users.user_app, name="user", help="Users and roles.")
app.add_typer(users.token_app, name="token", help="API tokens (shown once, stored hashed).")
app.add_typer(audit_cli.app, name="audit", help="The audit log of data reads and privileged changes.")
app.command("evaluate")(evaluate_cli.evaluate)
app.command("serve-worker")(serve_worker_cli.worker)
app.add_typer(models_cli.app, name="model", help="Model registry: versions, aliases, model cards, promotion, rollback.")
app.add_typer(agents_cli.app, name="agent", help="Agents that take queued tasks and run them on this machine.")
app.add_typer(
    pipelines_cli.app, name="pipeline",
    help="Pipelines: declarative DAGs of steps, cached on content digests; run locally or on agents.",
)
app.add_typer(
    labels_cli.app, name="labels", help="Labeling: schemas, readers, tasks, queues, adjudication, label sets."
)
app.add_typer(jobs_cli.app, name="jobs", help="Durable job queues: list, show, cancel, requeue.")
serving_cli.register(app)
app.add_typer(monitor_cli.app, name="monitor", help="Prediction log, scheduled reports, drift detection and alerts.")
stages.register(app)


def main() -> None:
    raise SystemExit(run(app))
