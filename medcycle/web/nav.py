"""The left navigation: every stage of the life cycle in order, then the admin pages.

A stage whose page is not built yet carries a :class:`Placeholder` that says what the page will show
and which CLI command group drives the stage; :mod:`medcycle.web.pages` renders it. When a stage gets a
real page, drop its placeholder here and register the page's route in its own module.
"""

from __future__ import annotations

from dataclasses import dataclass

from medcycle.auth.roles import Permission


@dataclass(frozen=True, slots=True)
class Placeholder:
    """What a stage page will show once built, and the CLI that drives the stage today or later."""

    summary: str
    will_show: tuple[str, ...]
    cli: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NavItem:
    key: str
    label: str
    href: str
    title: str
    permission: Permission = Permission.VIEW
    placeholder: Placeholder | None = None


STAGES: tuple[NavItem, ...] = (
    NavItem("overview", "Overview", "/", "Overview"),
    NavItem("hypotheses", "Hypotheses", "/ui/hypotheses", "Hypotheses"),  # medcycle.web.hypotheses
    NavItem("data", "Data", "/ui/data", "Data catalog"),  # medcycle.web.catalog
    NavItem(
        "labels", "Labels", "/ui/labels", "Labels",
        placeholder=Placeholder(
            summary="Annotations by our doctors, how well they agree, and the label sets built from them.",
            will_show=(
                "Labeling tasks and who reads which studies, with progress per reader",
                "Agreement between readers and consensus results",
                "Reader qualification against the gold standard",
                "Immutable label sets, and the studies active learning suggests labelling next",
            ),
            cli=("medcycle labels",),
        ),
    ),
    NavItem("datasets", "Datasets", "/ui/datasets", "Datasets"),  # medcycle.web.datasets
    NavItem(
        "experiments", "Experiments", "/ui/experiments", "Experiments",
        placeholder=Placeholder(
            summary="Tracked runs: code, parameters, data, metrics and artifacts, and how runs compare.",
            will_show=(
                "Runs with their commit and diff, parameters, dataset version and parent models",
                "Metric curves and side-by-side comparison of runs",
                "Pipelines that chain runs, and the experiment card of each run",
            ),
            cli=("medcycle run",),
        ),
    ),
    NavItem(
        "training", "Training", "/ui/training", "Training queue and agents",
        placeholder=Placeholder(
            summary="Queued training work and the agents on GPU machines that take it.",
            will_show=(
                "Training jobs waiting, running and finished, per queue",
                "Agents with their machine, GPUs, current job and last heartbeat",
                "Resource use of running jobs",
            ),
            cli=("medcycle run", "medcycle agent"),
        ),
    ),
    NavItem(
        "evaluation", "Evaluation", "/ui/evaluation", "Evaluation",
        placeholder=Placeholder(
            summary="Quality and robustness of each candidate model before it is released.",
            will_show=(
                "Suite results: metrics, reproducibility, stress, regression on past problem cases, "
                "out-of-distribution inputs",
                "Release gates and whether each candidate passed them",
                "Predictions set aside for visual review by doctors",
            ),
            cli=("medcycle evaluate",),
        ),
    ),
    NavItem(
        "models", "Models", "/ui/models", "Models",
        placeholder=Placeholder(
            summary="The model registry: versions, aliases such as production and staging, and lineage.",
            will_show=(
                "Model versions with the run, data and label versions that made them",
                "Aliases and their history, for fast rollback",
                "Each version's model card",
            ),
            cli=("medcycle model",),
        ),
    ),
    NavItem(
        "serving", "Serving", "/ui/serving", "Serving",
        placeholder=Placeholder(
            summary="Deployed models and the requests they answer.",
            will_show=(
                "Deployments with their model version, replicas and configuration",
                "Inference jobs: queued, running, finished, with latency",
                "One-step deploy and rollback of a deployment",
            ),
            cli=("medcycle deploy",),
        ),
    ),
    NavItem(
        "monitoring", "Monitoring", "/ui/monitoring", "Monitoring",
        placeholder=Placeholder(
            summary="How deployed models behave on real inputs, and when someone needs to look.",
            will_show=(
                "Reports three times a day: studies processed, errors, requests, prediction histograms",
                "Drift of inputs and predictions against each model's reference",
                "Alerts with their state and who took them, and predictions drawn over the studies",
            ),
            cli=("medcycle monitor",),
        ),
    ),
)

ADMIN: tuple[NavItem, ...] = (
    NavItem("admin-users", "Users & tokens", "/ui/admin/users", "Users and tokens", Permission.ADMIN),
    NavItem("admin-audit", "Audit log", "/ui/admin/audit", "Audit log", Permission.ADMIN),
    NavItem("admin-queues", "Queues", "/ui/admin/queues", "Queues", Permission.ADMIN),
    NavItem("admin-store", "Object store", "/ui/admin/store", "Object store", Permission.ADMIN),
)

BY_KEY: dict[str, NavItem] = {item.key: item for item in (*STAGES, *ADMIN)}
