"""Datasets and their working sets: create, list, add and remove items, edit, delete.

The working set is mutable: it is what the next ``freeze`` captures. Items are catalog instances, chosen
by a catalog query (``modality == "CR" and source == "clinic-a"``) or by uids; a study or series uid
stands for all of its instances. Quarantined instances are never added.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.catalog.tables import InstanceRow, SeriesRow, StudyRow
from medcycle.datasets.tables import DatasetItemRow, DatasetRow, DatasetVersionRow
from medcycle.errors import Conflict, NotFound, UsageError
from medcycle.store.base import new_id, utcnow

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
BATCH = 500  # values per IN (...) clause
T = TypeVar("T")


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise UsageError(
            f"{name!r} is not a valid dataset name",
            hint="Use letters, digits, '.', '_' or '-' (up to 128 characters), e.g. chest-xr-pneumonia.",
        )
    return name


def chunks(values: Sequence[T], size: int = BATCH) -> Iterable[Sequence[T]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    name: str
    description: str | None
    items: int
    versions: int
    label_set: str | None
    latest_version: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    card_fields: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "items": self.items, "versions": self.versions,
            "label_set": self.label_set, "latest_version": self.latest_version, "created_by": self.created_by,
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
            "card_fields": self.card_fields,
        }


@dataclass(frozen=True, slots=True)
class ItemChange:
    """What an add or remove did to a working set."""

    dataset: str
    matched: int
    changed: int  # added or removed
    unchanged: int  # already present (add) or not present (remove)
    items: int  # working-set size afterwards

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "matched": self.matched, "changed": self.changed,
                "unchanged": self.unchanged, "items": self.items}


def get_dataset(session: Session, name: str) -> DatasetRow:
    row = session.scalar(select(DatasetRow).where(DatasetRow.name == name))
    if row is None:
        raise NotFound(f"dataset {name!r} does not exist", hint="List datasets with `medcycle dataset list`.")
    return row


def dataset_info(session: Session, row: DatasetRow) -> DatasetInfo:
    n_items = session.scalar(select(func.count()).where(DatasetItemRow.dataset_id == row.id)) or 0
    versions = session.scalars(select(DatasetVersionRow.id).where(DatasetVersionRow.dataset_id == row.id)
                               .order_by(DatasetVersionRow.seq.desc())).all()
    return DatasetInfo(
        name=row.name, description=row.description, items=int(n_items), versions=len(versions),
        label_set=row.label_set_id, latest_version=versions[0] if versions else None, created_by=row.created_by,
        created_at=row.created_at, updated_at=row.updated_at, card_fields=dict(row.card_fields or {}),
    )


def list_datasets(session: Session) -> list[DatasetInfo]:
    return [dataset_info(session, r) for r in session.scalars(select(DatasetRow).order_by(DatasetRow.name))]


def resolve_instances(session: Session, *, query: str | None = None, uids: Sequence[str] = ()) -> list[str]:
    """Instance uids chosen by a catalog query and/or uids (instance, series or study), sorted, unique.

    Raises:
        UsageError: neither a query nor uids given, or the query does not parse.
        NotFound: a uid names no instance, series or study (the error lists them).
    """
    if query is None and not uids:
        raise UsageError("choose items with a query or uids", hint='Pass --query \'modality == "CR"\' or --uid UID.')
    found: set[str] = set()
    if query is not None:
        from medcycle.catalog.query import select_matching

        found.update(session.scalars(select_matching(query, InstanceRow.uid)))
    wanted = sorted(set(uids))
    unknown: list[str] = []
    for part in chunks(wanted):
        ok_instances = InstanceRow.state != "quarantined"
        direct = set(session.scalars(select(InstanceRow.uid).where(InstanceRow.uid.in_(part))))
        found.update(session.scalars(select(InstanceRow.uid).where(InstanceRow.uid.in_(part), ok_instances)))
        rest = [u for u in part if u not in direct]
        if not rest:
            continue
        by_series = (select(InstanceRow.series_uid, InstanceRow.uid)
                     .where(InstanceRow.series_uid.in_(rest), ok_instances))
        by_study = (
            select(SeriesRow.study_uid, InstanceRow.uid)
            .join(SeriesRow, SeriesRow.uid == InstanceRow.series_uid)
            .where(SeriesRow.study_uid.in_(rest), ok_instances)
        )
        hit: set[str] = set()
        for parent, uid in [*session.execute(by_series), *session.execute(by_study)]:
            hit.add(parent)
            found.add(uid)
        known_parents = hit | set(session.scalars(select(SeriesRow.uid).where(SeriesRow.uid.in_(rest))))
        known_parents |= set(session.scalars(select(StudyRow.uid).where(StudyRow.uid.in_(rest))))
        unknown.extend(u for u in rest if u not in known_parents)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise NotFound(
            f"{len(unknown)} uid(s) name no instance, series or study in the catalog: {shown}",
            hint="Find uids with `medcycle data query EXPR`.",
            unknown=unknown[:100],
        )
    return sorted(found)


def _count(session: Session, row: DatasetRow) -> int:
    return int(session.scalar(select(func.count()).where(DatasetItemRow.dataset_id == row.id)) or 0)


def _present(session: Session, row: DatasetRow, uids: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for part in chunks(uids):
        out.update(session.scalars(select(DatasetItemRow.instance_uid).where(
            DatasetItemRow.dataset_id == row.id, DatasetItemRow.instance_uid.in_(part))))
    return out


def create_dataset(
    session: Session, name: str, *, description: str | None = None, query: str | None = None,
    uids: Sequence[str] = (), actor: str = "system", via: str = "library",
) -> DatasetInfo:
    """A new dataset, optionally filled from a catalog query and/or uids."""
    check_name(name)
    if session.scalar(select(DatasetRow.id).where(DatasetRow.name == name)) is not None:
        raise Conflict(f"dataset {name!r} already exists", hint=f"Add items with `medcycle dataset add {name} ...`.")
    now = utcnow()
    row = DatasetRow(id=new_id(), name=name, description=description, card_fields={}, created_by=actor,
                     created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    audit.record(session, actor, "dataset.create", target_kind="dataset", target_id=name, via=via)
    if query is not None or uids:
        add_items(session, name, query=query, uids=uids, actor=actor, via=via)
    return dataset_info(session, row)


def add_items(
    session: Session, name: str, *, query: str | None = None, uids: Sequence[str] = (),
    actor: str = "system", via: str = "library",
) -> ItemChange:
    row = get_dataset(session, name)
    matched = resolve_instances(session, query=query, uids=uids)
    present = _present(session, row, matched)
    new = [u for u in matched if u not in present]
    now = utcnow()
    for part in chunks(new, 5000):
        session.execute(insert(DatasetItemRow),
                        [{"dataset_id": row.id, "instance_uid": u, "added_at": now} for u in part])
    row.updated_at = now
    audit.record(session, actor, "dataset.add", target_kind="dataset", target_id=name, via=via, added=len(new))
    return ItemChange(name, len(matched), len(new), len(present), _count(session, row))


def remove_items(
    session: Session, name: str, *, query: str | None = None, uids: Sequence[str] = (),
    actor: str = "system", via: str = "library",
) -> ItemChange:
    """Remove items from the working set (frozen versions keep theirs)."""
    row = get_dataset(session, name)
    matched = resolve_instances(session, query=query, uids=uids)
    present = sorted(_present(session, row, matched))
    for part in chunks(present):
        session.execute(delete(DatasetItemRow).where(
            DatasetItemRow.dataset_id == row.id, DatasetItemRow.instance_uid.in_(part)))
    row.updated_at = utcnow()
    audit.record(session, actor, "dataset.remove", target_kind="dataset", target_id=name, via=via, removed=len(present))
    return ItemChange(name, len(matched), len(present), len(matched) - len(present), _count(session, row))


def working_set(session: Session, name: str) -> list[str]:
    row = get_dataset(session, name)
    stmt = select(DatasetItemRow.instance_uid).where(DatasetItemRow.dataset_id == row.id)
    return list(session.scalars(stmt.order_by(DatasetItemRow.instance_uid)))


def set_description(session: Session, name: str, description: str | None) -> None:
    row = get_dataset(session, name)
    row.description = description
    row.updated_at = utcnow()


def delete_dataset(session: Session, name: str, *, actor: str = "system", via: str = "library") -> None:
    """Delete a dataset that has no frozen version; a dataset with versions is refused."""
    row = get_dataset(session, name)
    n = session.scalar(select(func.count()).where(DatasetVersionRow.dataset_id == row.id)) or 0
    if n:
        raise Conflict(
            f"dataset {name!r} has {n} frozen version(s) and cannot be deleted",
            hint="Versions are immutable so that experiments stay reproducible; "
            f"empty the working set with `medcycle dataset remove {name} --query ''` instead.",
            versions=int(n),
        )
    session.execute(delete(DatasetItemRow).where(DatasetItemRow.dataset_id == row.id))
    session.delete(row)
    audit.record(session, actor, "dataset.delete", target_kind="dataset", target_id=name, via=via)
