"""Shared set-up for the labeling-task tests: a small catalog, schemas, readers and API tokens."""

from __future__ import annotations

from sqlalchemy import select

from medcycle.auth import users
from medcycle.catalog.tables import InstanceRow, SeriesRow
from medcycle.labels import readers, schemas
from medcycle.platform import Platform
from medcycle.testing.catalog import make_catalog

CLASS_SCHEMA = """\
name: chest
description: Frontal chest radiographs
level: instance
classes: [normal, pneumonia, effusion]
"""

BOX_SCHEMA = """\
name: findings
level: instance
kinds: [box]
classes:
  - nodule
  - name: normal
    kinds: [class]
"""

MASK_SCHEMA = """\
name: lesions
level: instance
kinds: [mask]
classes: [lesion]
"""


def small_catalog(platform: Platform, *, patients: int = 4, per_series: int = 3, seed: int = 3,
                  objects: bool = False) -> list[str]:
    """``patients`` x 1 study x 1 series x ``per_series`` instances; returns the instance uids (sorted)."""
    with platform.session() as s:
        make_catalog(s, sources=1, patients=patients, studies_per_patient=1, series_per_study=1,
                     instances_per_series=per_series, seed=seed, objects=platform.objects if objects else None)
    with platform.session() as s:
        return sorted(s.scalars(select(InstanceRow.uid)))


def series_uids(platform: Platform) -> list[str]:
    with platform.session() as s:
        return sorted(s.scalars(select(SeriesRow.uid)))


def add_schema(platform: Platform, text: str) -> schemas.SchemaInfo:
    with platform.session() as s:
        return schemas.add_schema(s, platform.objects, text, origin="schema.yaml", actor="lead")


def qualify(platform: Platform, *names: str, senior: bool = False, qualified: bool = True) -> None:
    with platform.session() as s:
        for name in names:
            readers.set_reader(s, name, qualified=qualified, senior=senior, actor="lead")


def token_for(platform: Platform, name: str, role: str) -> dict[str, str]:
    with platform.session() as s:
        users.create_user(s, name, role)
        secret = users.create_token(s, name).secret
    return {"Authorization": f"Bearer {secret}"}
