"""Label sets (minimal model until the labels layer exists): class labels per study, series or instance.

A label set is imported from CSV and never changed. Its id is the SHA-256 of its canonical JSON, which is
also stored as an object::

    {"format": "medcycle.label-set/1", "level": "study", "classes": ["normal", "pneumonia"],
     "labels": [["<study uid>", "normal"], ["<study uid>", "pneumonia"], …]}   # sorted pairs

A target may carry several labels (one row each). Importing the same labels twice gives the same set.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.catalog.tables import InstanceRow, SeriesRow, StudyRow
from medcycle.datasets.items import chunks, get_dataset
from medcycle.datasets.manifest import canonical_json
from medcycle.datasets.tables import LabelEntryRow, LabelSetRow
from medcycle.errors import NotFound, ValidationFailed
from medcycle.objects.base import ObjectStore, digest_bytes
from medcycle.objects.refs import add_ref
from medcycle.store.base import utcnow

LABEL_SET_FORMAT = "medcycle.label-set/1"
MAX_LABEL = 128
MAX_ERRORS_SHOWN = 10


class LabelLevel(StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


_HEADERS = {
    "study": LabelLevel.STUDY, "study_uid": LabelLevel.STUDY,
    "series": LabelLevel.SERIES, "series_uid": LabelLevel.SERIES,
    "instance": LabelLevel.INSTANCE, "instance_uid": LabelLevel.INSTANCE, "sop_instance_uid": LabelLevel.INSTANCE,
}
_TABLES = {LabelLevel.STUDY: StudyRow.uid, LabelLevel.SERIES: SeriesRow.uid, LabelLevel.INSTANCE: InstanceRow.uid}


@dataclass(frozen=True, slots=True)
class LabelSetInfo:
    id: str
    level: LabelLevel
    classes: tuple[str, ...]
    n_targets: int
    n_labels: int
    origin: str | None
    created_by: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "level": self.level.value, "classes": list(self.classes), "n_targets": self.n_targets,
                "n_labels": self.n_labels, "origin": self.origin, "created_by": self.created_by,
                "created_at": self.created_at.isoformat()}

    @classmethod
    def of(cls, row: LabelSetRow) -> LabelSetInfo:
        return cls(row.id, LabelLevel(row.level), tuple(row.classes), row.n_targets, row.n_labels, row.origin,
                   row.created_by, row.created_at)


def _bad(errors: list[str], origin: str) -> ValidationFailed:
    shown = "; ".join(errors[:MAX_ERRORS_SHOWN]) + (f"; and {len(errors) - MAX_ERRORS_SHOWN} more"
                                                     if len(errors) > MAX_ERRORS_SHOWN else "")
    return ValidationFailed(
        f"{origin} has {len(errors)} bad row(s): {shown}",
        hint="Fix the lines named and import again. The file needs a header such as `study,label` "
        "(or series,label / instance,label) and one pseudonymous uid and one class label per row.",
        errors=errors[:100],
    )


def _check_label(label: str) -> str | None:
    if not label:
        return "the label is empty"
    if len(label) > MAX_LABEL:
        return f"the label is longer than {MAX_LABEL} characters"
    if any(unicodedata.category(c).startswith("C") for c in label):
        return "the label contains control characters"
    if "|" in label:
        return "the label contains '|', which manifest.csv uses between the labels of one item"
    return None


def decode_labels_csv(data: bytes, *, origin: str = "the CSV file") -> str:
    """The text of a labels CSV read as UTF-8 (a byte order mark is dropped).

    Raises:
        ValidationFailed: naming the first line that is not UTF-8.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValidationFailed(
            f"{origin} is not UTF-8 text (line {line} holds a byte UTF-8 does not allow)",
            hint="Save the file as UTF-8 (in Excel: 'CSV UTF-8') and import it again.",
        ) from None


def parse_labels_csv(text: str, *, origin: str = "the CSV file") -> tuple[LabelLevel, list[tuple[int, str, str]]]:
    """Read ``uid,label`` rows under a header naming the level; returns the level and (line, uid, label) rows.

    Raises:
        ValidationFailed: naming each bad line (1-based, as an editor shows it).
    """
    level, pairs, errors = _parse(text, origin)
    if errors:
        raise _bad([e for _, e in errors], origin)
    return level, pairs


def _parse(text: str, origin: str) -> tuple[LabelLevel, list[tuple[int, str, str]], list[tuple[int, str]]]:
    """The level, the good rows and the bad ones as (line, message); a bad header or no rows at all raise."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise _bad(["line 1: the file is empty"], origin) from None
    except csv.Error as exc:
        raise _bad([f"line 1: {exc}"], origin) from None
    target_cols = [i for i, h in enumerate(header) if h in _HEADERS]
    label_cols = [i for i, h in enumerate(header) if h in {"label", "class"}]
    if len(target_cols) != 1 or len(label_cols) != 1:
        wrong = f"line 1: header {','.join(header)!r} needs one of study/series/instance and a label column"
        if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
            sep = "semicolons" if ";" in header[0] else "tabs"
            wrong += f" (its columns are separated by {sep}: save the file with commas between columns)"
        raise _bad([wrong], origin)
    level = _HEADERS[header[target_cols[0]]]
    t, lab = target_cols[0], label_cols[0]
    pairs: list[tuple[int, str, str]] = []
    errors: list[tuple[int, str]] = []
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(t, lab):
                errors.append((line, f"line {line}: expected {len(header)} columns, found {len(row)}"))
                continue
            uid, label = row[t].strip(), row[lab].strip()
            if not uid:
                errors.append((line, f"line {line}: the {level.value} uid is empty"))
            elif problem := _check_label(label):
                errors.append((line, f"line {line}: {problem}"))
            else:
                pairs.append((line, uid, label))
    except csv.Error as exc:
        errors.append((reader.line_num, f"line {reader.line_num}: {exc}"))
    if not pairs and not errors:
        raise _bad(["the file has a header but no labels"], origin)
    return level, pairs, errors


def import_labels(
    session: Session, objects: ObjectStore, dataset: str, text: str, *, origin: str | None = None,
    actor: str = "system", via: str = "library",
) -> LabelSetInfo:
    """Import a CSV of class labels as an immutable label set and make it the dataset's current one.

    Every uid must exist in the catalog at the header's level; unknown uids are reported with their lines.
    """
    row = get_dataset(session, dataset)
    name = origin or "the CSV file"
    level, rows, errors = _parse(text, name)
    uids = sorted({u for _, u, _ in rows})
    known: set[str] = set()
    column = _TABLES[level]
    for part in chunks(uids):
        known.update(session.scalars(select(column).where(column.in_(part))))
    if len(known) != len(uids) or errors:
        errors += [(line, f"line {line}: no {level.value} {u!r} in the catalog") for line, u, _ in rows
                   if u not in known]
        raise _bad([e for _, e in sorted(errors)], name)
    unique = sorted({(u, label) for _, u, label in rows})
    classes = sorted({label for _, label in unique})
    body = canonical_json({"format": LABEL_SET_FORMAT, "level": level.value, "classes": classes,
                           "labels": [list(p) for p in unique]})
    label_set_id = digest_bytes(body)
    existing = session.get(LabelSetRow, label_set_id)
    if existing is None:
        objects.put(body, expected_digest=label_set_id)
        existing = LabelSetRow(id=label_set_id, level=level.value, classes=classes, n_targets=len(uids),
                               n_labels=len(unique), origin=origin, created_by=actor, created_at=utcnow())
        session.add(existing)
        session.flush()
        for pairs in chunks(unique, 5000):
            session.execute(insert(LabelEntryRow),
                            [{"label_set_id": label_set_id, "target_uid": u, "label": lab} for u, lab in pairs])
        add_ref(session, label_set_id, "label_set", label_set_id, size=len(body))
    row.label_set_id = label_set_id
    row.updated_at = utcnow()
    audit.record(session, actor, "dataset.labels.import", target_kind="dataset", target_id=dataset, via=via,
                 label_set=label_set_id, labels=len(unique))
    return LabelSetInfo.of(existing)


def get_label_set(session: Session, label_set_id: str) -> LabelSetInfo:
    row = session.get(LabelSetRow, label_set_id)
    if row is None:
        raise NotFound(f"label set {label_set_id} does not exist",
                       hint="Import labels with `medcycle dataset labels import NAME FILE.csv`.")
    return LabelSetInfo.of(row)


def labels_for(
    session: Session, label_set_id: str | None, targets: Iterable[tuple[str, str, str]]
) -> dict[str, tuple[str, ...]]:
    """Labels per instance uid for ``(instance, series, study)`` triples, read at the label set's level."""
    triples = list(targets)
    if label_set_id is None:
        return {}
    level = LabelLevel(session.get_one(LabelSetRow, label_set_id).level)
    index = {LabelLevel.INSTANCE: 0, LabelLevel.SERIES: 1, LabelLevel.STUDY: 2}[level]
    keys = sorted({t[index] for t in triples})
    found: dict[str, list[str]] = defaultdict(list)
    for part in chunks(keys):
        stmt = select(LabelEntryRow.target_uid, LabelEntryRow.label).where(
            LabelEntryRow.label_set_id == label_set_id, LabelEntryRow.target_uid.in_(part))
        for uid, label in session.execute(stmt):
            found[uid].append(label)
    return {t[0]: tuple(sorted(found[t[index]])) for t in triples if t[index] in found}
