"""Adding a hypothesis to the register and editing its title, description, project and owner."""

from __future__ import annotations

from sqlalchemy.orm import Session

from medcycle.auth import audit
from medcycle.errors import UsageError
from medcycle.hypotheses import inputs
from medcycle.hypotheses.inputs import ref_of
from medcycle.hypotheses.lifecycle import append_history
from medcycle.hypotheses.lookup import TARGET_KIND, get_hypothesis, record_change
from medcycle.hypotheses.tables import HypothesisRow
from medcycle.hypotheses.vocabulary import Status
from medcycle.store.base import utcnow


def create(
    session: Session,
    title: str,
    *,
    project: str,
    description: str | None = None,
    owner: str | None = None,
    actor: str = "system",
    via: str = "library",
) -> HypothesisRow:
    """Register a hypothesis (status ``proposed``); the owner defaults to whoever adds it."""
    actor = inputs.name(actor, "actor")
    now = utcnow()
    row = HypothesisRow(
        title=inputs.line(title, "title", max_len=inputs.TITLE_MAX),
        description=inputs.text(description, "description"),
        project=inputs.line(project, "project", max_len=inputs.PROJECT_MAX),
        owner=inputs.name(owner or actor, "owner"),
        status=Status.PROPOSED.value,
        status_changed_at=now,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()  # assigns the id
    append_history(session, row, "status", None, Status.PROPOSED.value, "registered", actor)
    audit.record(session, actor, "hypothesis.create", target_kind=TARGET_KIND, target_id=ref_of(row.id), via=via,
                 title=row.title, project=row.project, owner=row.owner)
    session.flush()
    return row


def edit(
    session: Session,
    ref: str | int,
    *,
    title: str | None = None,
    description: str | None = None,
    project: str | None = None,
    owner: str | None = None,
    actor: str = "system",
    via: str = "library",
) -> HypothesisRow:
    """Change the given fields (``description=""`` clears the description)."""
    if title is None and description is None and project is None and owner is None:
        raise UsageError("nothing to change", hint="Give a new title, description, project or owner.")
    actor = inputs.name(actor, "actor")
    row = get_hypothesis(session, ref, for_update=True)
    changed: dict[str, tuple[str | None, str | None]] = {}
    if title is not None:
        changed["title"] = (row.title, inputs.line(title, "title", max_len=inputs.TITLE_MAX))
    if description is not None:
        changed["description"] = (row.description, inputs.text(description, "description"))
    if project is not None:
        changed["project"] = (row.project, inputs.line(project, "project", max_len=inputs.PROJECT_MAX))
    if owner is not None:
        changed["owner"] = (row.owner, inputs.name(owner, "owner"))
    changed = {field: (old, new) for field, (old, new) in changed.items() if old != new}
    if not changed:
        return row
    for field, (_, new) in changed.items():
        setattr(row, field, new)
    record_change(session, row, actor, "edit", via=via,
                  changes={field: {"from": old, "to": new} for field, (old, new) in changed.items()})
    return row
