"""Links from a hypothesis to the runs that test it and the dataset versions it is tested on.

* ``run`` — a run id, kept as a string (the tracking layer calls :func:`link` when a run names a hypothesis).
* ``dataset`` — a fixed version, ``NAME@TAG`` or ``NAME@vN``. When the datasets layer is installed the
  reference is resolved and its version digest stored beside it (so a moved or deleted tag cannot change
  what the link means, and two spellings of one version are one link); without it the string is kept.

Linking twice is harmless (the existing link is returned).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medcycle.errors import NotFound, UsageError
from medcycle.hypotheses import inputs
from medcycle.hypotheses.inputs import ref_of
from medcycle.hypotheses.lookup import get_hypothesis, record_change
from medcycle.hypotheses.tables import HypothesisLinkRow
from medcycle.hypotheses.vocabulary import LinkKind, parse
from medcycle.store.base import utcnow

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
DATASET_REF_RE = re.compile(r"^[^@\s]{1,128}@[^@\s]{1,64}$")
MOVING_REFS = frozenset({"latest"})
DATASETS_MODULE = "medcycle.datasets.versions"


@dataclass(frozen=True, slots=True)
class Link:
    kind: LinkKind
    target: str
    digest: str | None
    note: str | None
    by: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "target": self.target, "digest": self.digest, "note": self.note,
                "by": self.by, "at": self.at.isoformat()}


def _of(row: HypothesisLinkRow) -> Link:
    return Link(LinkKind(row.kind), row.target, row.digest, row.note, row.created_by, row.created_at)


def _datasets() -> ModuleType | None:
    """The datasets layer's version module, or None where it is not part of this installation."""
    try:
        return importlib.import_module(DATASETS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name and DATASETS_MODULE.startswith(exc.name):
            return None
        raise


def resolve_dataset(session: Session, ref: str) -> str | None:
    """The version digest ``NAME@TAG`` names, or None when the datasets layer is absent."""
    module = _datasets()
    if module is None:
        return None
    return str(module.resolve(session, ref).id)


def _target(session: Session, kind: LinkKind, target: str) -> tuple[str, str | None]:
    value = (target or "").strip()
    if kind == LinkKind.RUN:
        if not RUN_ID_RE.match(value):
            raise UsageError(f"{target!r} is not a run id",
                             hint="Give the run's id as `medcycle run list` shows it (letters, digits, . _ : -).")
        return value, None
    if not DATASET_REF_RE.match(value) or value.rpartition("@")[2] in MOVING_REFS:
        raise UsageError(f"{target!r} does not name a fixed dataset version",
                         hint="Write NAME@TAG or NAME@vN (not NAME or NAME@latest), e.g. chest-xr@v1.0.")
    return value, resolve_dataset(session, value)


def link(
    session: Session,
    ref: str | int,
    kind: LinkKind | str,
    target: str,
    *,
    note: str | None = None,
    actor: str = "system",
    via: str = "library",
) -> tuple[Link, bool]:
    """Link a run or dataset version; returns the link and whether it is new."""
    chosen = parse(LinkKind, kind, "link kind")
    actor = inputs.name(actor, "actor")
    why = inputs.text(note, "note")
    row = get_hypothesis(session, ref, for_update=True)
    value, digest = _target(session, chosen, target)
    same = select(HypothesisLinkRow).where(HypothesisLinkRow.hypothesis_id == row.id,
                                           HypothesisLinkRow.kind == chosen.value)
    existing = session.scalar(same.where(HypothesisLinkRow.target == value))
    if existing is None and digest is not None:
        existing = session.scalar(same.where(HypothesisLinkRow.digest == digest))
    if existing is not None:
        return _of(existing), False
    new = HypothesisLinkRow(hypothesis_id=row.id, kind=chosen.value, target=value, digest=digest, note=why,
                            created_by=actor, created_at=utcnow())
    session.add(new)
    record_change(session, row, actor, "link", via=via, kind=chosen.value, target=value, digest=digest)
    return _of(new), True


def unlink(
    session: Session, ref: str | int, kind: LinkKind | str, target: str, *, actor: str = "system",
    via: str = "library",
) -> None:
    """Remove a link."""
    chosen = parse(LinkKind, kind, "link kind")
    actor = inputs.name(actor, "actor")
    row = get_hypothesis(session, ref, for_update=True)
    existing = session.scalar(select(HypothesisLinkRow).where(
        HypothesisLinkRow.hypothesis_id == row.id, HypothesisLinkRow.kind == chosen.value,
        HypothesisLinkRow.target == target.strip()))
    if existing is None:
        raise NotFound(f"{ref_of(row.id)} has no {chosen.value} link to {target!r}",
                       hint=f"See its links with `medcycle hypothesis show {ref_of(row.id)}`.")
    session.delete(existing)
    record_change(session, row, actor, "unlink", via=via, kind=chosen.value, target=existing.target)


def links(session: Session, hypothesis_id: int) -> list[Link]:
    """The links of one hypothesis, oldest first."""
    rows = session.scalars(select(HypothesisLinkRow).where(HypothesisLinkRow.hypothesis_id == hypothesis_id)
                           .order_by(HypothesisLinkRow.seq))
    return [_of(r) for r in rows]


def linked_to(session: Session, kind: LinkKind | str, target: str) -> list[str]:
    """The hypotheses (``H-<id>``) linked to a run id or a dataset reference/digest, for pages of those."""
    chosen = parse(LinkKind, kind, "link kind")
    stmt = select(HypothesisLinkRow.hypothesis_id).where(
        HypothesisLinkRow.kind == chosen.value,
        (HypothesisLinkRow.target == target) | (HypothesisLinkRow.digest == target),
    ).distinct().order_by(HypothesisLinkRow.hypothesis_id)
    return [ref_of(h) for h in session.scalars(stmt)]
