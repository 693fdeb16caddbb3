"""Every module that declares tables. Alembic's env and the tests import them all through here."""

from __future__ import annotations

import importlib

TABLE_MODULES = (
    "medcycle.auth.tables",
    "medcycle.catalog.tables",
    "medcycle.datasets.tables",
    "medcycle.experiments.tables",
    "medcycle.hypotheses.tables",
    "medcycle.jobs.processes",
    "medcycle.jobs.tables",
    "medcycle.labels.tables",
    "medcycle.models.tables",
    "medcycle.monitoring.tables",
    "medcycle.objects.tables",
    "medcycle.pipelines.tables",
    "medcycle.serving.dicom_tables",
    "medcycle.serving.tables",
)


def import_all_tables() -> None:
    for name in TABLE_MODULES:
        importlib.import_module(name)
