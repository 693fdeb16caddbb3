"""Storing annotations: immutable rows, masks as objects by digest with the geometry they were drawn on.

An annotation row records the item (catalog uid at the task's level), the reader, the round, the stage
(``read``, ``adjudication``, ``import``, ``model``), the kind and class, the geometry, the tool or model
version, the time the reader spent on the item and any score/attributes. Its id is the SHA-256 of that
content, so a retried submission stores nothing twice.

Geometry as stored (JSON)::

    box      {"x0": 10, "y0": 12, "x1": 40, "y1": 30, "z": 5}        # z only for a slice of a volume
    polygon  {"points": [[x, y], …], "z": null}
    mask     {"encoding": "npy+zlib", "shape": [S, R, C], "dtype": "uint8", "spacing": [3.0, 0.7, 0.7],
              "origin": […] | null, "direction": […] | null, "z": null}   # bytes: the object mask_digest

A mask's object is the ``.npy`` serialisation of its array compressed with zlib — the same array always gives
the same bytes and therefore the same digest, and reading it back checks the digest.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.errors import IntegrityError, NotFound, UsageError, ValidationFailed
from medcycle.labels.model import Annotation, Box, Geometry, Kind, Level, Mask, Polygon
from medcycle.labels.schemas import canonical_json
from medcycle.labels.tables import AnnotationRow
from medcycle.objects.base import ObjectStore, digest_bytes
from medcycle.objects.refs import add_ref
from medcycle.store.base import utcnow

MASK_ENCODING = "npy+zlib"
OWNER_KIND = "annotation"
MAX_MASK_BYTES = 1 << 30  # 1 GiB uncompressed: a 1024 x 1024 x 1024 uint8 volume


class Stage(StrEnum):
    READ = "read"  # a reader's reading in a task
    ADJUDICATION = "adjudication"  # a senior reader's resolution of a disagreement
    IMPORT = "import"  # brought in from a labeling tool's file
    MODEL = "model"  # a pseudo-label, reader ``model:<version>``


@dataclass(frozen=True, slots=True)
class AnnotationRecord:
    """A stored annotation (the row, without the mask's array; :func:`load` gives the model object)."""

    id: str
    item: str
    level: Level
    task_id: int | None
    reader: str
    round: int
    stage: Stage
    kind: Kind
    label: str
    geometry: dict[str, Any] | None
    mask_digest: str | None
    tool: str | None
    seconds: float | None
    score: float | None
    attributes: dict[str, Any]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "item": self.item, "level": self.level.value,
                "task": f"T-{self.task_id}" if self.task_id is not None else None, "reader": self.reader,
                "round": self.round, "stage": self.stage.value, "kind": self.kind.value, "label": self.label,
                "geometry": self.geometry, "mask_digest": self.mask_digest, "tool": self.tool,
                "seconds": self.seconds, "score": self.score, "attributes": self.attributes,
                "created_at": self.created_at.isoformat()}

    def content(self) -> dict[str, Any]:
        """What a label set keeps of it: the statement, not who made it or when."""
        return {"item": self.item, "kind": self.kind.value, "label": self.label, "geometry": self.geometry,
                "mask": self.mask_digest, "score": self.score, "attributes": self.attributes}

    @classmethod
    def of(cls, row: AnnotationRow) -> AnnotationRecord:
        return cls(row.id, row.item_uid, Level(row.level), row.task_id, row.reader, row.round, Stage(row.stage),
                   Kind(row.kind), row.label, row.geometry, row.mask_digest, row.tool, row.seconds, row.score,
                   dict(row.attributes or {}), row.created_at)


# -- masks ------------------------------------------------------------------------------------------------
def encode_mask(mask: Mask) -> tuple[bytes, dict[str, Any]]:
    """The object bytes of a mask and the geometry JSON that goes with them."""
    arr = np.ascontiguousarray(mask.array)
    if arr.nbytes > MAX_MASK_BYTES:
        raise ValidationFailed(f"a {arr.shape} mask of {arr.dtype} is larger than 1 GiB",
                               hint="Store one mask per structure, or a smaller integer type.")
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    geometry = {"encoding": MASK_ENCODING, "shape": list(arr.shape), "dtype": arr.dtype.str,
                "spacing": _floats(mask.spacing), "origin": _floats(mask.origin),
                "direction": _floats(mask.direction), "z": mask.z}
    return zlib.compress(buf.getvalue(), 6), geometry


def _floats(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def decode_mask(data: bytes, geometry: Mapping[str, Any]) -> Mask:
    if geometry.get("encoding") != MASK_ENCODING:
        raise IntegrityError(f"unknown mask encoding {geometry.get('encoding')!r}",
                             hint="Upgrade medcycle to read masks written by a newer release.")
    arr = np.load(io.BytesIO(zlib.decompress(data)), allow_pickle=False)
    if list(arr.shape) != list(geometry["shape"]):
        raise IntegrityError(f"a stored mask has shape {arr.shape}, its geometry says {geometry['shape']}",
                             hint="Run `medcycle store fsck`; restore the object from a backup.")

    def opt(key: str) -> tuple[float, ...] | None:
        v = geometry.get(key)
        return None if v is None else tuple(float(x) for x in v)

    return Mask(arr, spacing=opt("spacing"), origin=opt("origin"), direction=opt("direction"), z=geometry.get("z"))


# -- geometry <-> JSON ------------------------------------------------------------------------------------
def geometry_json(geometry: Geometry | None) -> dict[str, Any] | None:
    """Box and polygon coordinates as stored (masks go through :func:`encode_mask`)."""
    if geometry is None:
        return None
    if isinstance(geometry, Box):
        return {"x0": geometry.x0, "y0": geometry.y0, "x1": geometry.x1, "y1": geometry.y1, "z": geometry.z}
    if isinstance(geometry, Polygon):
        return {"points": [[x, y] for x, y in geometry.points], "z": geometry.z}
    raise UsageError("masks are stored as objects", hint="Use encode_mask for masks.")


def geometry_from_json(
    kind: Kind, geometry: Mapping[str, Any] | None, mask_bytes: bytes | None = None
) -> Geometry | None:
    if kind is Kind.CLASS:
        return None
    if geometry is None:
        raise IntegrityError(f"a stored {kind.value} annotation has no geometry", hint="Run `medcycle store fsck`.")
    if kind is Kind.BOX:
        return Box(geometry["x0"], geometry["y0"], geometry["x1"], geometry["y1"], geometry.get("z"))
    if kind is Kind.POLYGON:
        return Polygon(tuple((float(x), float(y)) for x, y in geometry["points"]), geometry.get("z"))
    if mask_bytes is None:
        raise IntegrityError("a mask annotation was read without its mask object", hint="Read it with load().")
    return decode_mask(mask_bytes, geometry)


# -- saving and loading -----------------------------------------------------------------------------------
def save(
    session: Session, objects: ObjectStore, annotations: Sequence[Annotation], *, item: str, level: Level | str,
    reader: str, task_id: int | None = None, round: int = 1, stage: Stage | str = Stage.READ, tool: str | None = None,
    seconds: float | None = None,
) -> list[AnnotationRecord]:
    """Store annotations of one item by one reader; an identical annotation already stored is returned as is.

    ``seconds`` is the time the reader spent on the item for this submission (kept on each annotation and on
    the assignment). Masks go to the object store first, then the rows, then the object references.
    """
    if seconds is not None and (not math.isfinite(seconds) or seconds < 0):
        raise ValidationFailed(f"time spent {seconds} is not a non-negative number of seconds",
                               hint="Give the seconds the reader spent on the item.")
    if round < 1:
        raise ValidationFailed(f"round {round} is not a positive number", hint="Rounds count from 1.")
    level, stage = Level(level), Stage(stage)
    out: list[AnnotationRecord] = []
    for a in annotations:
        if a.image != item:
            raise ValidationFailed(f"an annotation of {a.image!r} was given for item {item!r}",
                                   hint="Submit each item's annotations with that item.")
        mask_digest = None
        geometry: dict[str, Any] | None
        if isinstance(a.geometry, Mask):
            data, geometry = encode_mask(a.geometry)
            mask_digest = objects.put(data).digest
            size: int | None = len(data)
        else:
            geometry, size = geometry_json(a.geometry), None
        content = {"item": item, "level": level.value, "task": task_id, "reader": reader, "round": round,
                   "stage": stage.value, "kind": Kind(a.kind).value, "label": a.label, "geometry": geometry,
                   "mask": mask_digest, "tool": tool, "seconds": seconds, "score": a.score,
                   "attributes": a.attributes}
        try:
            annotation_id = digest_bytes(canonical_json(content))
        except (TypeError, ValueError) as exc:
            raise ValidationFailed(f"an annotation of {item!r} has values that are not plain JSON: {exc}",
                                   hint="Attributes must be text, numbers, true/false, lists or mappings.") from None
        row = session.get(AnnotationRow, annotation_id)
        if row is None:
            row = AnnotationRow(id=annotation_id, item_uid=item, level=level.value, task_id=task_id, reader=reader,
                                round=round, stage=stage.value, kind=Kind(a.kind).value, label=a.label,
                                geometry=geometry, mask_digest=mask_digest, tool=tool, seconds=seconds, score=a.score,
                                attributes=dict(a.attributes), created_at=utcnow())
            session.add(row)
            session.flush()
            if mask_digest is not None:
                add_ref(session, mask_digest, OWNER_KIND, annotation_id, size=size)
        out.append(AnnotationRecord.of(row))
    return out


def get(session: Session, annotation_id: str) -> AnnotationRecord:
    row = session.get(AnnotationRow, annotation_id)
    if row is None:
        raise NotFound(f"annotation {annotation_id} does not exist",
                       hint="List an item's annotations with `medcycle labels annotations TASK ITEM`.")
    return AnnotationRecord.of(row)


def load(objects: ObjectStore, record: AnnotationRecord) -> Annotation:
    """The model object of a stored annotation (a mask's array read from the store and verified)."""
    data = objects.get(record.mask_digest) if record.mask_digest else None
    return Annotation(image=record.item, label=record.label, kind=record.kind,
                      geometry=geometry_from_json(record.kind, record.geometry, data), reader=record.reader,
                      score=record.score, attributes=dict(record.attributes))


def find(
    session: Session, *, task_id: int | None = None, item: str | None = None, reader: str | None = None,
    stage: Stage | None = None,
) -> list[AnnotationRecord]:
    """Stored annotations matching every filter given, oldest first."""
    stmt = select(AnnotationRow).order_by(AnnotationRow.created_at, AnnotationRow.id)
    if task_id is not None:
        stmt = stmt.where(AnnotationRow.task_id == task_id)
    if item is not None:
        stmt = stmt.where(AnnotationRow.item_uid == item)
    if reader is not None:
        stmt = stmt.where(AnnotationRow.reader == reader)
    if stage is not None:
        stmt = stmt.where(AnnotationRow.stage == stage.value)
    return [AnnotationRecord.of(r) for r in session.scalars(stmt)]


# -- annotations from JSON (API bodies and CLI files) -----------------------------------------------------
def _number_list(value: Any, where: str, n: int | None = None) -> list[float]:
    if not isinstance(value, list) or (n is not None and len(value) != n) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ValidationFailed(f"{where}: expected {n or 'a list of'} numbers", hint="See docs/labels.md.")
    return [float(v) for v in value]


def _mask_array(entry: Mapping[str, Any], where: str, base_dir: Path | None) -> np.ndarray[Any, Any]:
    if "mask_npy_b64" in entry:
        try:
            raw = base64.b64decode(str(entry["mask_npy_b64"]), validate=True)
        except (binascii.Error, ValueError):
            raise ValidationFailed(f"{where}.mask_npy_b64: not base64", hint="Send the .npy bytes, base64-encoded.") \
                from None
        source: io.BytesIO | Path = io.BytesIO(raw)
    elif "mask_file" in entry:
        if base_dir is None:
            raise ValidationFailed(f"{where}.mask_file: files are read only from the command line",
                                   hint="Send mask_npy_b64 (the .npy bytes, base64-encoded) instead.")
        source = (base_dir / str(entry["mask_file"])).resolve()
        if not source.is_file():
            raise ValidationFailed(f"{where}.mask_file: {source} does not exist",
                                   hint="Give a .npy path relative to the annotations file.")
    else:
        raise ValidationFailed(f"{where}: a mask needs mask_file (.npy) or mask_npy_b64",
                               hint="Save the array with numpy.save and point to it.")
    try:
        return np.asarray(np.load(source, allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise ValidationFailed(f"{where}: the mask is not a readable .npy array ({exc})",
                               hint="Save it with numpy.save(path, array) (no pickled objects).") from None


def annotation_from_dict(
    entry: Mapping[str, Any], *, item: str, reader: str | None = None, where: str = "annotation",
    base_dir: Path | None = None,
) -> Annotation:
    """One annotation from its JSON form (see docs/labels.md); errors name ``where`` and the field."""
    if not isinstance(entry, Mapping):
        raise ValidationFailed(f"{where}: expected a mapping with label and kind", hint="See docs/labels.md.")
    label = entry.get("label")
    if not isinstance(label, str) or not label:
        raise ValidationFailed(f"{where}.label: give the class name", hint="Use a class of the task's schema.")
    try:
        kind = Kind(str(entry.get("kind", "class")))
    except ValueError:
        raise ValidationFailed(f"{where}.kind: {entry.get('kind')!r} is not class, box, polygon or mask",
                               hint="Choose one of class, box, polygon, mask.") from None
    z = entry.get("z")
    if z is not None and (not isinstance(z, int) or isinstance(z, bool) or z < 0):
        raise ValidationFailed(f"{where}.z: a slice index is a non-negative whole number", hint="Count from 0.")
    geometry: Geometry | None = None
    if kind is Kind.BOX:
        x0, y0, x1, y1 = _number_list(entry.get("box"), f"{where}.box", 4)
        geometry = Box(x0, y0, x1, y1, z)
    elif kind is Kind.POLYGON:
        pts = entry.get("points")
        if not isinstance(pts, list):
            raise ValidationFailed(f"{where}.points: give [[x, y], …]", hint="At least 3 points.")
        points = [_number_list(p, f"{where}.points[{i}]", 2) for i, p in enumerate(pts)]
        geometry = Polygon(tuple((p[0], p[1]) for p in points), z)
    elif kind is Kind.MASK:
        arr = _mask_array(entry, where, base_dir)

        def opt(key: str) -> tuple[float, ...] | None:
            v = entry.get(key)
            return None if v is None else tuple(_number_list(v, f"{where}.{key}"))

        geometry = Mask(arr, spacing=opt("spacing"), origin=opt("origin"), direction=opt("direction"), z=z)
    score = entry.get("score")
    if score is not None and (not isinstance(score, int | float) or isinstance(score, bool)
                              or not math.isfinite(score)):
        raise ValidationFailed(f"{where}.score: give a number", hint="A model's confidence, e.g. 0.87.")
    attributes = entry.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise ValidationFailed(f"{where}.attributes: give a mapping", hint='e.g. {"occluded": true}.')
    return Annotation(image=item, label=label, kind=kind, geometry=geometry, reader=reader,
                      score=None if score is None else float(score), attributes=dict(attributes))


def annotations_from_list(
    entries: Any, *, item: str, reader: str | None = None, base_dir: Path | None = None, where: str = "annotations",
) -> list[Annotation]:
    if not isinstance(entries, list):
        raise ValidationFailed(f"{where}: expected a list of annotations", hint="See docs/labels.md.")
    return [annotation_from_dict(e, item=item, reader=reader, where=f"{where}[{i}]", base_dir=base_dir)
            for i, e in enumerate(entries)]
