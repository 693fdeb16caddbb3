"""Label schemas: which classes may be labelled, at which level, with which annotation kinds — versioned.

A schema is a YAML or JSON file::

    name: chest-findings
    description: Findings on frontal chest radiographs
    level: instance            # instance | series | study: what one item of a task is
    kinds: [box]               # the default kinds of classes given by name only
    multi_label: false         # may a reader give several class labels to one item?
    classes:
      - normal
      - name: pneumothorax
        kinds: [box, mask]
        description: Visible pleural line
        color: "#e6194b"

Adding a file whose content differs from every version of that name makes the next version (1, 2, 3 …);
adding the same content again returns the existing version. A version is immutable and stored as an object
(its id is the SHA-256 of the canonical body), so a label set made under ``chest-findings@1`` still means
exactly what it meant after ``@2`` and ``@3`` exist. A schema is named ``NAME`` (latest), ``NAME@N``,
``NAME@latest`` or by a prefix of its id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import NotFound, UsageError, ValidationFailed
from medcycle.labels.model import Annotation, Kind, Level
from medcycle.labels.tables import LabelSchemaRow
from medcycle.objects.base import ObjectStore, digest_bytes
from medcycle.objects.refs import add_ref
from medcycle.store.base import utcnow

SCHEMA_FORMAT = "medcycle.label-schema/1"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CLASS_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
HEX_RE = re.compile(r"^[0-9a-f]{6,64}$")
KNOWN_KEYS = {"name", "description", "level", "kinds", "multi_label", "classes"}
CLASS_KEYS = {"name", "kinds", "description", "color"}
OWNER_KIND = "label_schema"


def canonical_json(data: Any) -> bytes:
    """The one byte form digests are computed over (sorted keys, no whitespace, UTF-8)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class LabelClass:
    name: str
    kinds: tuple[Kind, ...]
    description: str | None = None
    color: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kinds": [k.value for k in self.kinds]}
        if self.description:
            out["description"] = self.description
        if self.color:
            out["color"] = self.color
        return out


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """One version of a schema."""

    id: str
    name: str
    version: int
    description: str | None
    level: Level
    multi_label: bool
    classes: tuple[LabelClass, ...]
    origin: str | None
    created_by: str
    created_at: datetime
    created: bool = False  # True when this call added the version

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def kinds(self) -> frozenset[Kind]:
        return frozenset(k for c in self.classes for k in c.kinds)

    def label_class(self, name: str) -> LabelClass | None:
        return next((c for c in self.classes if c.name == name), None)

    def check(self, annotations: Sequence[Annotation]) -> None:
        """Raise :class:`ValidationFailed` unless the annotations of one item fit this version."""
        self.check_pairs([(a.label, Kind(a.kind)) for a in annotations])

    def check_pairs(self, pairs: Sequence[tuple[str, Kind]]) -> None:
        """:meth:`check` on ``(label, kind)`` pairs of one item (no geometry needed)."""
        problems: list[str] = []
        for i, (label, kind) in enumerate(pairs):
            cls = self.label_class(label)
            if cls is None:
                problems.append(f"annotation {i + 1}: {label!r} is not a class of {self.ref} "
                                f"({', '.join(self.class_names)})")
            elif kind not in cls.kinds:
                problems.append(f"annotation {i + 1}: {label!r} may be a {'/'.join(k.value for k in cls.kinds)}, "
                                f"not a {kind.value}")
        n_class = sum(1 for _, kind in pairs if kind is Kind.CLASS)
        if not self.multi_label and n_class > 1:
            problems.append(f"{n_class} class labels given but {self.ref} allows one per item")
        if problems:
            raise ValidationFailed(f"the annotations do not fit schema {self.ref}: " + "; ".join(problems[:10]),
                                   hint=f"Use the classes and kinds of {self.ref} "
                                   f"(`medcycle labels schema show {self.ref}`).", problems=problems[:100])

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "version": self.version, "ref": self.ref,
                "description": self.description, "level": self.level.value, "multi_label": self.multi_label,
                "classes": [c.to_dict() for c in self.classes], "origin": self.origin, "created_by": self.created_by,
                "created_at": self.created_at.isoformat(), "created": self.created}

    @classmethod
    def of(cls, row: LabelSchemaRow, *, created: bool = False) -> SchemaInfo:
        classes = tuple(LabelClass(str(c["name"]), tuple(Kind(k) for k in c["kinds"]), c.get("description"),
                                   c.get("color")) for c in row.classes)
        return cls(row.id, row.name, row.version, row.description, Level(row.level), bool(row.multi_label), classes,
                   row.origin, row.created_by, row.created_at, created)


# -- parsing ------------------------------------------------------------------------------------------
def _bad(origin: str, problems: list[str]) -> ValidationFailed:
    return ValidationFailed(
        f"{origin} is not a valid label schema: " + "; ".join(problems[:10]),
        hint="A schema needs `name` and a list of `classes` (names, or mappings with name and kinds: "
        "class, box, polygon, mask). See docs/labels.md.",
        problems=problems[:100],
    )


def _kinds(value: Any, where: str, problems: list[str]) -> tuple[Kind, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: give a list of kinds (class, box, polygon, mask)")
        return ()
    out: list[Kind] = []
    for k in value:
        try:
            kind = Kind(str(k).strip().lower())
        except ValueError:
            problems.append(f"{where}: {k!r} is not a kind (class, box, polygon, mask)")
            continue
        if kind not in out:
            out.append(kind)
    return tuple(out)


def parse_schema(data: Mapping[str, Any] | str | bytes, *, origin: str = "the schema") -> dict[str, Any]:
    """Check a schema (text of a YAML/JSON file, or a mapping) and return its canonical body.

    Raises:
        ValidationFailed: naming the file and each bad element (``classes[2].kinds``).
    """
    if isinstance(data, bytes | str):
        try:
            loaded = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "the text"
            raise _bad(origin, [f"{where}: not valid YAML or JSON ({getattr(exc, 'problem', exc)})"]) from None
    else:
        loaded = dict(data)
    if not isinstance(loaded, dict):
        raise _bad(origin, ["the file must hold a mapping with name and classes"])
    problems = [f"{k}: unknown key (known: {', '.join(sorted(KNOWN_KEYS))})" for k in loaded if k not in KNOWN_KEYS]
    name = loaded.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append("name: use letters, digits, '.', '_' or '-' (up to 128), e.g. chest-findings")
    description = loaded.get("description")
    if description is not None and not isinstance(description, str):
        problems.append("description: must be text")
    try:
        level = Level(str(loaded.get("level", "instance")).strip().lower())
    except ValueError:
        problems.append(f"level: {loaded.get('level')!r} is not one of instance, series, study")
        level = Level.INSTANCE
    multi = loaded.get("multi_label", False)
    if not isinstance(multi, bool):
        problems.append("multi_label: must be true or false")
    default_kinds = _kinds(loaded.get("kinds", ["class"]), "kinds", problems)
    raw_classes = loaded.get("classes")
    classes: list[dict[str, Any]] = []
    if not isinstance(raw_classes, list) or not raw_classes:
        problems.append("classes: give a non-empty list of classes")
        raw_classes = []
    for i, c in enumerate(raw_classes):
        where = f"classes[{i}]"
        entry = {"name": c} if isinstance(c, str) else c
        if not isinstance(entry, dict):
            problems.append(f"{where}: give a name or a mapping with name and kinds")
            continue
        problems.extend(f"{where}.{k}: unknown key (known: {', '.join(sorted(CLASS_KEYS))})"
                        for k in entry if k not in CLASS_KEYS)
        cname = entry.get("name")
        if not isinstance(cname, str) or not CLASS_RE.match(cname.strip()) or cname != cname.strip():
            problems.append(f"{where}.name: a class name is 1-128 printable characters without surrounding spaces")
            continue
        if any(x["name"] == cname for x in classes):
            problems.append(f"{where}.name: {cname!r} is listed twice")
            continue
        kinds = _kinds(entry["kinds"], f"{where}.kinds", problems) if "kinds" in entry else default_kinds
        out: dict[str, Any] = {"name": cname, "kinds": [k.value for k in kinds]}
        if entry.get("description") is not None:
            out["description"] = str(entry["description"])
        if entry.get("color") is not None:
            if not isinstance(entry["color"], str) or not COLOR_RE.match(entry["color"]):
                problems.append(f"{where}.color: give #rrggbb")
            else:
                out["color"] = entry["color"].lower()
        classes.append(out)
    if problems:
        raise _bad(origin, problems)
    return {"format": SCHEMA_FORMAT, "name": name, "description": description, "level": level.value,
            "multi_label": bool(multi), "classes": classes}


# -- storing and finding ------------------------------------------------------------------------------
def add_schema(
    session: Session, objects: ObjectStore, data: Mapping[str, Any] | str | bytes, *, origin: str | None = None,
    actor: str = "system", via: str = "library",
) -> SchemaInfo:
    """Store a schema file as the next version of its name (or return the identical existing version)."""
    body = parse_schema(data, origin=origin or "the schema")
    raw = canonical_json(body)
    schema_id = digest_bytes(raw)
    existing = session.get(LabelSchemaRow, schema_id)
    if existing is not None:
        return SchemaInfo.of(existing)
    objects.put(raw, expected_digest=schema_id)  # object first: a crash leaves garbage, never a dangling id
    last = session.scalar(select(func.max(LabelSchemaRow.version)).where(LabelSchemaRow.name == body["name"]))
    row = LabelSchemaRow(id=schema_id, name=body["name"], version=int(last or 0) + 1, description=body["description"],
                         level=body["level"], multi_label=body["multi_label"], classes=body["classes"],
                         origin=origin, created_by=actor, created_at=utcnow())
    session.add(row)
    session.flush()
    add_ref(session, schema_id, OWNER_KIND, schema_id, size=len(raw))
    audit.record(session, actor, "labels.schema.add", target_kind="label_schema", target_id=f"{row.name}@{row.version}",
                 via=via, schema=schema_id, classes=len(body["classes"]))
    return SchemaInfo.of(row, created=True)


def resolve_schema(session: Session, ref: str) -> LabelSchemaRow:
    """The version ``ref`` names: ``NAME`` / ``NAME@latest`` (newest), ``NAME@N``, or an id prefix (6+ hex)."""
    name, sep, which = (ref or "").partition("@")
    hint = "List schemas with `medcycle labels schema list`; add one with `medcycle labels schema add FILE`."
    if not sep and HEX_RE.match(name):
        rows = list(session.scalars(select(LabelSchemaRow).where(LabelSchemaRow.id.startswith(name)).limit(2)))
        if len(rows) == 1:
            return rows[0]
    if not NAME_RE.match(name):
        raise UsageError(f"{ref!r} does not name a label schema", hint="Write NAME, NAME@N or NAME@latest. " + hint)
    base = select(LabelSchemaRow).where(LabelSchemaRow.name == name)
    if not which or which == "latest":
        row = session.scalar(base.order_by(LabelSchemaRow.version.desc()).limit(1))
    elif which.lstrip("v").isdigit():
        row = session.scalar(base.where(LabelSchemaRow.version == int(which.lstrip("v"))))
    else:
        raise UsageError(f"{ref!r}: {which!r} is not a version number", hint="Write NAME@N, e.g. chest-findings@2.")
    if row is None:
        raise NotFound(f"label schema {ref!r} does not exist", hint=hint)
    return row


def get_schema(session: Session, ref: str) -> SchemaInfo:
    return SchemaInfo.of(resolve_schema(session, ref))


def list_schemas(session: Session, name: str | None = None) -> list[SchemaInfo]:
    """Every version (of ``name``, or of every schema), by name then newest version first."""
    stmt = select(LabelSchemaRow).order_by(LabelSchemaRow.name, LabelSchemaRow.version.desc())
    if name is not None:
        stmt = stmt.where(LabelSchemaRow.name == name)
    return [SchemaInfo.of(r) for r in session.scalars(stmt)]


def load_schema_body(objects: ObjectStore, schema_id: str) -> dict[str, Any]:
    """The stored body of a version, read back from the object store (verified against its id)."""
    body: dict[str, Any] = json.loads(objects.get(schema_id))
    return body
