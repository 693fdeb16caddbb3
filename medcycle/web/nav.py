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
    NavItem("data", "Data", "/ui/data", "Data catalog", Permission.BROWSE),  # medcycle.web.catalog
    NavItem("labels", "Labels", "/ui/labels", "Labeling tasks", Permission.LABEL),  # medcycle.web.labels
    NavItem("datasets", "Datasets", "/ui/datasets", "Datasets"),  # medcycle.web.datasets
    NavItem("experiments", "Experiments", "/ui/runs", "Runs"),  # medcycle.web.runs
    NavItem("training", "Training", "/ui/training", "Training queue and agents"),  # medcycle.web.agents
    NavItem("evaluation", "Evaluation", "/ui/evaluation", "Evaluation"),  # medcycle.web.models
    NavItem("models", "Models", "/ui/models", "Models"),  # medcycle.web.models
    NavItem("serving", "Serving", "/ui/serving", "Serving"),  # medcycle.web.serving
    NavItem("monitoring", "Monitoring", "/ui/monitoring", "Monitoring"),  # medcycle.web.monitoring
)

ADMIN: tuple[NavItem, ...] = (
    NavItem("admin-users", "Users & tokens", "/ui/admin/users", "Users and tokens", Permission.ADMIN),
    NavItem("admin-audit", "Audit log", "/ui/admin/audit", "Audit log", Permission.ADMIN),
    NavItem("admin-queues", "Queues", "/ui/admin/queues", "Queues", Permission.ADMIN),
    NavItem("admin-store", "Object store", "/ui/admin/store", "Object store", Permission.ADMIN),
)

BY_KEY: dict[str, NavItem] = {item.key: item for item in (*STAGES, *ADMIN)}
