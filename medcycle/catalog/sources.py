"""Sources: where data comes from, under which licence, and with which de-identification options."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.catalog.deid import DeidOptions
from medcycle.catalog.tables import SourceRow
from medcycle.errors import Conflict, NotFound, UsageError
from medcycle.store.base import new_id, utcnow

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def check_source_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise UsageError(
            f"{name!r} is not a valid source name",
            hint="Use letters, digits, '.', '_' or '-' (up to 128), e.g. clinic-a or ct-scanner-2.",
        )
    return name


def get_source(session: Session, name: str) -> SourceRow:
    row = session.scalar(select(SourceRow).where(SourceRow.name == name))
    if row is None:
        raise NotFound(f"source {name!r} does not exist", hint="List sources with `medcycle data sources`.")
    return row


def ensure_source(session: Session, name: str, options: DeidOptions, **fields: str | None) -> SourceRow:
    """The source named ``name``, created with ``options`` if new.

    A source keeps one de-identification profile for life: ingesting with other options is refused,
    so every object of a source was treated the same way (what its dataset card states).
    """
    check_source_name(name)
    row = session.scalar(select(SourceRow).where(SourceRow.name == name))
    profile = options.to_dict()
    if row is None:
        row = SourceRow(
            id=new_id(),
            name=name,
            deid_profile=profile,
            created_at=utcnow(),
            **{k: v for k, v in fields.items() if v is not None},
        )
        session.add(row)
        session.flush()
        return row
    if row.deid_profile and row.deid_profile != profile:
        raise Conflict(
            f"source {name!r} was ingested with other de-identification options",
            hint="Use the same options as before, or ingest under a new source name.",
            existing=row.deid_profile,
            requested=profile,
        )
    for key, value in fields.items():
        if value is not None:
            setattr(row, key, value)
    return row


def list_sources(session: Session) -> list[SourceRow]:
    return list(session.scalars(select(SourceRow).order_by(SourceRow.name)))
