"""What a pull takes from a version (a split and/or catalog-query subset) and what it writes besides the
images: the catalog fields of every pulled item, rendered into ``manifest.json`` / ``manifest.csv``."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.catalog.tables import InstanceRow
from medcycle.datasets.manifest import Manifest, ManifestItem
from medcycle.datasets.splits import UNSPLIT
from medcycle.datasets.tables import DatasetVersionItemRow
from medcycle.errors import UsageError

CATALOG_FIELDS = ("body_part", "laterality", "view_position", "manufacturer", "model", "year", "study_date", "sex",
                  "age_band", "rows", "columns", "frames", "photometric", "bits_stored", "pixel_spacing",
                  "slice_thickness", "kvp", "convolution_kernel", "field_strength", "transfer_syntax")


def select_items(
    session: Session, version_id: str, manifest: Manifest, split: str | None, query: str | None
) -> list[ManifestItem]:
    """The manifest's items in ``split`` (when given) that match catalog ``query`` (when given)."""
    items = list(manifest.items)
    if split is not None:
        names = {i.split or UNSPLIT for i in items}
        if split not in names:
            raise UsageError(f"the version has no split {split!r}", hint=f"Splits: {', '.join(sorted(names))}.")
        items = [i for i in items if (i.split or UNSPLIT) == split]
    if query is not None:
        from medcycle.catalog.query import select_matching

        in_version = select(DatasetVersionItemRow.instance_uid).where(DatasetVersionItemRow.version_id == version_id)
        stmt = select_matching(query, InstanceRow.uid, include_quarantined=True).where(InstanceRow.uid.in_(in_version))
        wanted = set(session.scalars(stmt))
        items = [i for i in items if i.uid in wanted]
    return items


def catalog_fields(session: Session, version_id: str, uids: set[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Catalog fields (body part, scanner, geometry, …) of the pulled items, in one query."""
    from medcycle.catalog.query import FIELDS, select_matching

    fields = [f for f in CATALOG_FIELDS if f in FIELDS]
    columns = [InstanceRow.uid, *(FIELDS[f].column.label(f) for f in fields)]
    in_version = select(DatasetVersionItemRow.instance_uid).where(DatasetVersionItemRow.version_id == version_id)
    stmt = select_matching(None, *columns, include_quarantined=True).where(InstanceRow.uid.in_(in_version))
    out: dict[str, dict[str, Any]] = {}
    for uid, *values in session.execute(stmt):
        if uid in uids:
            out[uid] = {f: v.isoformat() if isinstance(v, date) else v for f, v in zip(fields, values, strict=True)}
    return out, fields
