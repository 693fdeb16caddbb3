"""Label sets: immutable sets of chosen or consensus annotations under one schema version.

A label set is stored as one object whose SHA-256 is the set's id::

    {"format": "medcycle.labels.label-set/1",
     "schema": {"id": "<schema version digest>", "name": "chest-findings", "version": 2},
     "level": "instance", "classes": ["normal", "pneumothorax"],
     "items": ["<uid>", …],                     # every item the set covers, annotated or not (negatives)
     "annotations": [{"item", "kind", "label", "geometry", "mask", "score", "attributes"}, …]}   # sorted

Masks are referenced by the digest of their object; the schema version by its digest. Nothing about who
made the set or when is in the body, so the same labels always give the same id; which stored annotations
it was made from is kept in ``annotation_set_members`` (provenance). Resolving a set reads the body back
from the object store and verifies it, so it means the same thing forever, whatever came after it.

Dataset versions refer to labels by a label set id; :func:`dataset_labels` gives what a dataset version
needs from a set (its level, classes and ``(item, label)`` pairs, e.g. as the ``instance,label`` CSV that
``medcycle dataset labels import`` reads), and :func:`label_set_objects` every object a pull must fetch.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import Conflict, IntegrityError, NotFound, UsageError, ValidationFailed
from medcycle.labels import store
from medcycle.labels.item_agreement import item_agreement
from medcycle.labels.model import Annotation, Kind, Level
from medcycle.labels.schemas import SchemaInfo, canonical_json, resolve_schema
from medcycle.labels.tables import (
    AdjudicationRow,
    AnnotationRow,
    AnnotationSetMemberRow,
    AnnotationSetRow,
    LabelSchemaRow,
    TaskItemRow,
)
from medcycle.labels.tasks import ItemState, get_task_row, readings, ref_of
from medcycle.objects.base import ObjectStore, digest_bytes
from medcycle.objects.refs import add_ref
from medcycle.store.base import utcnow

SET_FORMAT = "medcycle.labels.label-set/1"
OWNER_KIND = "annotation_set"
HEX_RE = re.compile(r"^[0-9a-f]{6,64}$")


@dataclass(frozen=True, slots=True)
class LabelSetInfo:
    id: str
    schema: str  # NAME@N
    schema_id: str
    level: Level
    classes: tuple[str, ...]
    items: int
    annotations: int
    bytes: int
    origin: str | None
    created_by: str
    created_at: datetime
    created: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "schema": self.schema, "schema_id": self.schema_id, "level": self.level.value,
                "classes": list(self.classes), "items": self.items, "annotations": self.annotations,
                "bytes": self.bytes, "origin": self.origin, "created_by": self.created_by,
                "created_at": self.created_at.isoformat(), "created": self.created}

    @classmethod
    def of(cls, session: Session, row: AnnotationSetRow, *, created: bool = False) -> LabelSetInfo:
        schema = session.get_one(LabelSchemaRow, row.schema_id)
        return cls(row.id, f"{schema.name}@{schema.version}", row.schema_id, Level(row.level), tuple(row.classes),
                   row.n_items, row.n_annotations, row.bytes, row.origin, row.created_by, row.created_at, created)


# -- creating ------------------------------------------------------------------------------------------
def create_label_set(
    session: Session, objects: ObjectStore, annotation_ids: Sequence[str], *, schema: str,
    items: Sequence[str] | None = None, origin: str | None = None, actor: str = "system", via: str = "library",
) -> LabelSetInfo:
    """A label set of stored annotations under a schema version (``items`` defaults to the items annotated).

    Every annotation must use a class and kind of the schema version and be at its level; ``items`` must
    include every annotated item (items without annotations are recorded as labelled with nothing).
    """
    schema_row = resolve_schema(session, schema)
    info = SchemaInfo.of(schema_row)
    ids = sorted(set(annotation_ids))
    rows: list[AnnotationRow] = []
    for part in range(0, len(ids), 500):
        rows.extend(session.scalars(select(AnnotationRow).where(AnnotationRow.id.in_(ids[part:part + 500]))))
    missing = sorted(set(ids) - {r.id for r in rows})
    if missing:
        raise NotFound(f"{len(missing)} annotation(s) do not exist, e.g. {missing[0]}",
                       hint="Use ids of stored annotations (`medcycle labels annotations TASK ITEM`).")
    records = [store.AnnotationRecord.of(r) for r in rows]
    wrong_level = [r.id for r in records if r.level is not info.level]
    if wrong_level:
        raise ValidationFailed(f"{len(wrong_level)} annotation(s) are not at the {info.level.value} level of "
                               f"{info.ref}, e.g. {wrong_level[0]}", hint="A label set holds one level.")
    by_item: dict[str, list[tuple[str, Kind]]] = defaultdict(list)
    for r in records:
        by_item[r.item].append((r.label, r.kind))
    for item, pairs in sorted(by_item.items()):
        try:
            info.check_pairs(pairs)
        except ValidationFailed as exc:
            raise ValidationFailed(f"item {item}: {exc.message}", hint=exc.hint, **exc.details) from None
    covered = sorted(set(items) if items is not None else {r.item for r in records})
    outside = sorted({r.item for r in records} - set(covered))
    if outside:
        raise ValidationFailed(f"{len(outside)} annotated item(s) are not among the set's items, e.g. {outside[0]}",
                               hint="List every annotated item in items (or leave items out).")
    if not covered:
        raise UsageError("a label set needs at least one item", hint="Give annotations or items.")
    entries = sorted({canonical_json(r.content()) for r in records})
    body = canonical_json({"format": SET_FORMAT,
                           "schema": {"id": schema_row.id, "name": schema_row.name, "version": schema_row.version},
                           "level": info.level.value, "classes": list(info.class_names), "items": covered,
                           "annotations": [json.loads(e) for e in entries]})
    set_id = digest_bytes(body)
    existing = session.get(AnnotationSetRow, set_id)
    if existing is not None:
        return LabelSetInfo.of(session, existing)
    objects.put(body, expected_digest=set_id)
    row = AnnotationSetRow(id=set_id, schema_id=schema_row.id, level=info.level.value, classes=list(info.class_names),
                           n_items=len(covered), n_annotations=len(entries), bytes=len(body),
                           origin=(origin or "")[:256] or None, created_by=actor, created_at=utcnow())
    session.add(row)
    session.flush()
    for part in range(0, len(ids), 5000):
        session.execute(insert(AnnotationSetMemberRow), [{"set_id": set_id, "annotation_id": a}
                                                         for a in ids[part:part + 5000]])
    add_ref(session, set_id, OWNER_KIND, set_id, size=len(body))
    audit.record(session, actor, "labels.set.create", target_kind="label_set", target_id=set_id, via=via,
                 schema=info.ref, items=len(covered), annotations=len(entries), origin=row.origin)
    return LabelSetInfo.of(session, row, created=True)


def _final_annotations(
    session: Session, objects: ObjectStore, task_id: int, item: str, state: ItemState, kinds: Sequence[Kind],
) -> list[str]:
    """The annotation ids an item contributes: the adjudicated ones, or the most-agreeing reader's reading."""
    if state is ItemState.RESOLVED:
        return list(session.get_one(AdjudicationRow, (task_id, item)).annotation_ids or [])
    by_reader = readings(session, objects, task_id, item)
    chosen = sorted(by_reader)[0]
    result = item_agreement(by_reader, kinds)
    if result is not None:  # the medoid: highest mean agreement with the others, ties to the first name
        chosen = min(by_reader, key=lambda r: (-result.by_reader.get(r, 0.0), r))
    return [a.id for a in store.find(session, task_id=task_id, item=item, reader=chosen, stage=store.Stage.READ)]


def label_set_from_task(
    session: Session, objects: ObjectStore, task: str | int, *, partial: bool = False, actor: str = "system",
    via: str = "library",
) -> LabelSetInfo:
    """The label set of a task's finished items under the task's schema version.

    Per item: the senior reader's decision where adjudicated; the single reader's reading with one reader
    per item; otherwise the reading of the reader who agrees most with the others (with three readers and
    class labels, that is the majority's). Unfinished items refuse the set unless ``partial``.
    """
    row = get_task_row(session, task)
    states = {uid: ItemState(s) for uid, s in session.execute(
        select(TaskItemRow.item_uid, TaskItemRow.state).where(TaskItemRow.task_id == row.id))}
    from medcycle.labels.honeypots import planted_items

    hidden = planted_items(session, row.id)  # honeypots stay out of a task's label set
    states = {u: s for u, s in states.items() if u not in hidden}
    done = sorted(u for u, s in states.items() if s in (ItemState.COMPLETE, ItemState.RESOLVED))
    pending = len(states) - len(done)
    if pending and not partial:
        waiting = sum(1 for s in states.values() if s is ItemState.ADJUDICATION)
        raise Conflict(f"{ref_of(row.id)} has {pending} unfinished item(s) ({waiting} awaiting adjudication)",
                       hint="Finish them, or pass --partial to make a set of the finished items only.",
                       pending=pending, adjudication=waiting)
    if not done:
        raise Conflict(f"{ref_of(row.id)} has no finished item yet", hint="Readers submit from their queues first.")
    kinds = sorted(SchemaInfo.of(session.get_one(LabelSchemaRow, row.schema_id)).kinds)
    ids = [a for uid in done for a in _final_annotations(session, objects, row.id, uid, states[uid], kinds)]
    return create_label_set(session, objects, ids, schema=row.schema_id, items=done,
                            origin=f"task {ref_of(row.id)}" + (" (partial)" if pending else ""), actor=actor, via=via)


# -- reading -------------------------------------------------------------------------------------------
def resolve_set_row(session: Session, ref: str) -> AnnotationSetRow:
    ref = (ref or "").strip().lower()
    if not HEX_RE.match(ref):
        raise UsageError(f"{ref!r} is not a label set id", hint="Give the id or its first 6+ hex characters.")
    rows = list(session.scalars(select(AnnotationSetRow).where(AnnotationSetRow.id.startswith(ref)).limit(2)))
    if not rows:
        raise NotFound(f"label set {ref} does not exist", hint="List label sets with `medcycle labels set list`.")
    if len(rows) > 1:
        raise UsageError(f"{ref!r} matches several label sets", hint="Give more characters of the id.")
    return rows[0]


def get_label_set(session: Session, ref: str) -> LabelSetInfo:
    return LabelSetInfo.of(session, resolve_set_row(session, ref))


def list_label_sets(session: Session) -> list[LabelSetInfo]:
    rows = session.scalars(select(AnnotationSetRow).order_by(AnnotationSetRow.created_at.desc(), AnnotationSetRow.id))
    return [LabelSetInfo.of(session, r) for r in rows]


@dataclass(frozen=True, slots=True)
class ResolvedLabelSet:
    """A label set read back from its object: the schema version, the items and the annotations."""

    info: LabelSetInfo
    schema: SchemaInfo
    items: tuple[str, ...]
    annotations: tuple[Annotation, ...]
    body: dict[str, Any]


def _body(objects: ObjectStore, set_id: str) -> dict[str, Any]:
    raw = objects.get(set_id)  # verified against the digest while it streams
    body: dict[str, Any] = json.loads(raw)
    if body.get("format") != SET_FORMAT:
        raise IntegrityError(f"label set {set_id} has unknown format {body.get('format')!r}",
                             hint="Upgrade medcycle to read label sets written by a newer release.")
    return body


def resolve_label_set(session: Session, objects: ObjectStore, ref: str) -> ResolvedLabelSet:
    """The set's content from its stored body (masks read from their objects); verified end to end."""
    info = get_label_set(session, ref)
    body = _body(objects, info.id)
    schema = SchemaInfo.of(session.get_one(LabelSchemaRow, body["schema"]["id"]))
    anns = []
    for e in body["annotations"]:
        kind = Kind(e["kind"])
        data = objects.get(e["mask"]) if e.get("mask") else None
        anns.append(Annotation(image=e["item"], label=e["label"], kind=kind,
                               geometry=store.geometry_from_json(kind, e.get("geometry"), data),
                               score=e.get("score"), attributes=dict(e.get("attributes") or {})))
    return ResolvedLabelSet(info, schema, tuple(body["items"]), tuple(anns), body)


@dataclass(frozen=True, slots=True)
class DatasetLabels:
    """What a dataset version references of a label set: its id, level, classes and ``(item, label)`` pairs.

    An item with a box of class ``nodule`` carries the label ``nodule``; geometry stays in the set's object.
    """

    label_set: str
    level: Level
    classes: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]  # sorted, unique
    items: tuple[str, ...]  # every item covered, labelled or not

    def to_csv(self) -> str:
        """The ``<level>,label`` CSV that ``medcycle dataset labels import`` reads (one row per pair)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([self.level.value, "label"])
        writer.writerows(self.pairs)
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {"label_set": self.label_set, "level": self.level.value, "classes": list(self.classes),
                "labels": [list(p) for p in self.pairs], "items": len(self.items)}


def dataset_labels(session: Session, objects: ObjectStore, ref: str) -> DatasetLabels:
    """The class labels per item a dataset version takes from a label set (read from the verified body)."""
    info = get_label_set(session, ref)
    body = _body(objects, info.id)
    pairs = sorted({(str(e["item"]), str(e["label"])) for e in body["annotations"]})
    return DatasetLabels(info.id, info.level, tuple(body["classes"]), tuple(pairs), tuple(body["items"]))


def label_set_objects(session: Session, ref: str) -> dict[str, int]:
    """Every object a machine needs to use the set: its body, its schema version and its masks (digest → size)."""
    row = resolve_set_row(session, ref)
    out = {row.id: row.bytes, row.schema_id: -1}
    stmt = (select(AnnotationRow.mask_digest).join(AnnotationSetMemberRow,
                                                    AnnotationSetMemberRow.annotation_id == AnnotationRow.id)
            .where(AnnotationSetMemberRow.set_id == row.id, AnnotationRow.mask_digest.is_not(None)).distinct())
    out.update({str(d): -1 for d in session.scalars(stmt)})
    return out
